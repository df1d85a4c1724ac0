"""Run by test_dcp_lightning.py: FSDP2 (ModelParallelStrategy) runs of the tiny JiT that save and resume
through Lightning's own distributed checkpoints.

``python dcp_train.py OUT DEVICES SCENARIO...``; each scenario is ``NAME:MAX_EPOCHS[:CKPT_PATH]``: a fresh
Trainer (DDP for a NAME starting with ``ddp``, else FSDP2; saving full files for a NAME starting with ``file``) fits from the golden weights (or resumes from CKPT_PATH) and ModelCheckpoint writes a distributed
checkpoint at the end of every epoch into OUT/NAME/. After each, rank zero saves the gathered EMAs, raw
weights, optimizer step and epoch to OUT/NAME.pt. A scenario that fails writes its error to OUT/NAME.err.
"""

import sys
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import jitckpt  # noqa: E402
from jitckpt.callbacks import EMACallback  # noqa: E402
from jitckpt.lightning import JiTLightningModule  # noqa: E402


def fit(out: Path, devices: int, name: str, max_epochs: int, ckpt_path: str | None) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.strategies import ModelParallelStrategy

    golden = jitckpt.load(ROOT / "tests" / "fixtures" / "original" / "checkpoint-last.pth", lazy=True)
    torch.manual_seed(0)
    module = JiTLightningModule.from_args(golden.args, arch=golden.arch)
    module.net.load_state_dict({k[len("net."):]: v.to_torch() for k, v in golden.model.items()})
    data = torch.load(ROOT / "tests" / "fixtures" / "original" / "train_data.pt")
    loader = DataLoader(TensorDataset(data["images"], data["labels"]), batch_size=4 // devices, shuffle=False,
                        drop_last=True)
    ema = EMACallback(0.9, 0.5)
    saver = ModelCheckpoint(dirpath=out / name, save_top_k=-1, every_n_epochs=1)
    strategy = "ddp" if name.startswith("ddp") else ModelParallelStrategy(
        data_parallel_size=devices, tensor_parallel_size=1, save_distributed_checkpoint=not name.startswith("file"))
    trainer = L.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=devices, logger=False, strategy=strategy,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[ema, saver])
    try:
        trainer.fit(module, loader, ckpt_path=ckpt_path)
    except Exception as exc:  # the test asserts on the message
        if trainer.global_rank == 0:
            (out / f"{name}.err").write_text(f"{type(exc).__name__}: {exc}")
        return
    full = {v: ema.consolidated_state_dict(module, v) for v in (1, 2)}
    raw = {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach() for n, p in module.named_parameters()}
    optimizer = trainer.optimizers[0]
    steps = {float(s["step"]) for s in optimizer.state.values()}
    if trainer.global_rank == 0:
        torch.save({"ema1": full[1], "ema2": full[2], "raw": raw, "steps": steps, "epoch": trainer.current_epoch,
                    "global_step": trainer.global_step}, out / f"{name}.pt")


if __name__ == "__main__":
    out, devices = Path(sys.argv[1]), int(sys.argv[2])
    for scenario in sys.argv[3:]:
        name, epochs, *ckpt = scenario.split(":", 2)
        fit(out, devices, name, int(epochs), ckpt[0] if ckpt else None)
