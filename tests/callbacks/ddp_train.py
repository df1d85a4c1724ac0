"""Run by test_ddp.py: two CPU processes (gloo) train the tiny JiT with jitckpt's callbacks.

Each rank writes its EMAs and the files its JiTModelCheckpoint wrote to OUT/rank{r}.pt. Given an
Inception weights file and a reference folder, FIDEvaluationCallback scores every epoch too.
"""

import sys
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import jitckpt  # noqa: E402
from jitckpt.callbacks import (  # noqa: E402
    EMACallback, FIDEvaluationCallback, JiTModelCheckpoint, LearningRateSchedulerCallback,
)
from jitckpt.lightning import JiTLightningModule  # noqa: E402


def main(out: Path, inception: str | None, ref_dir: str | None) -> None:
    golden = jitckpt.load(ROOT / "tests" / "fixtures" / "original" / "checkpoint-last.pth", lazy=True)
    torch.manual_seed(0)
    module = JiTLightningModule.from_args(golden.args, arch=golden.arch)
    data = torch.load(ROOT / "tests" / "fixtures" / "original" / "train_data.pt")
    loader = DataLoader(TensorDataset(data["images"], data["labels"]), batch_size=2, shuffle=False, drop_last=True)
    ema = EMACallback()
    saver = JiTModelCheckpoint(out / "ckpt", save_last_freq=1, save_milestone_freq=1, save_lightning=True)
    callbacks = [ema, saver, LearningRateSchedulerCallback("cosine", 1, 0.0, 2)]
    fid = None
    if inception:
        fid = FIDEvaluationCallback(eval_freq=1, num_images=10, batch_size=5, num_classes=10, img_size=16,
                                    ref_dir=ref_dir, inception_weights=inception, steps=1)
        callbacks.append(fid)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=callbacks)
    trainer.fit(module, loader)
    torch.save({"ema1": ema.ema1, "ema2": ema.ema2, "written": [str(p) for p in saver.written],
                "params": [p.detach() for p in module.parameters()], "global_step": trainer.global_step,
                "fid_history": fid.history if fid else None},
               out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), *(sys.argv[2:4] if len(sys.argv) > 3 else (None, None)))
