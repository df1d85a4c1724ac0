"""Run by test_fsdp.py: two CPU processes train the tiny JiT with EMACallback, sharded (FSDP2) or not (DDP).

Rank zero saves the consolidated EMAs and raw weights to OUT/{mode}.pt, with the network's output on a fixed
input inside ``swap_ema`` and the raw weights after it. With an Inception weights file and a reference folder
(argv 3 and 4), FIDEvaluationCallback scores each epoch with EMA 1 on both processes.
"""

import sys
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import jitckpt  # noqa: E402
from jitckpt.callbacks import EMACallback, FIDEvaluationCallback, JiTModelCheckpoint  # noqa: E402
from jitckpt.lightning import JiTLightningModule  # noqa: E402


def main(out: Path, mode: str, inception: str | None = None, ref_dir: str | None = None) -> None:
    from lightning.pytorch.strategies import ModelParallelStrategy
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    fe.FeatureExtractorInceptionV3.INPUT_IMAGE_SIZE = 75  # as the evaluation tests shrink it, to stay fast

    golden = jitckpt.load(ROOT / "tests" / "fixtures" / "original" / "checkpoint-last.pth", lazy=True)
    torch.manual_seed(0)
    module = JiTLightningModule.from_args(golden.args, arch=golden.arch)
    module.net.load_state_dict({k[len("net."):]: v.to_torch() for k, v in golden.model.items()})
    data = torch.load(ROOT / "tests" / "fixtures" / "original" / "train_data.pt")
    loader = DataLoader(TensorDataset(data["images"], data["labels"]), batch_size=2, shuffle=False, drop_last=True)
    ema = EMACallback(0.9, 0.5)
    # 3 batches (4, 4 and 2 images): the two processes sample 2 and 1, so FSDP2 needs them in lockstep
    fid = [FIDEvaluationCallback(eval_freq=1, num_images=10, batch_size=4, num_classes=10, img_size=16,
                                 ref_dir=ref_dir, inception_weights=inception, steps=2)] if inception else []
    strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1) if mode == "fsdp" else "ddp"
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy=strategy, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[ema, JiTModelCheckpoint(out / mode, save_last_freq=1)] + fid)
    trainer.fit(module, loader)
    sharded = any(hasattr(p, "device_mesh") for p in module.parameters())
    local_sizes = [e.numel() for e in ema.ema1]
    full = {v: ema.consolidated_state_dict(module, v) for v in (1, 2)}
    raw = {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach() for n, p in module.named_parameters()}
    generator = torch.Generator().manual_seed(5)
    x, t, y = torch.randn(3, 3, 16, 16, generator=generator), torch.rand(3, generator=generator), torch.tensor([1, 2, 3])
    with torch.no_grad(), ema.swap_ema(module, 1):
        swapped = module.net(x, t, y)
    after = {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach() for n, p in module.named_parameters()}
    history = fid[0].history if fid else []
    if trainer.global_rank == 0:
        torch.save({"ema1": full[1], "ema2": full[2], "raw": raw, "sharded": sharded, "local_sizes": local_sizes,
                    "probe": (x, t, y), "swapped": swapped, "after_swap": after, "fid": history}, out / f"{mode}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], *sys.argv[3:5])
