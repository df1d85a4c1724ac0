"""Run by test_fsdp.py: two CPU processes train the tiny JiT with EMACallback, sharded (FSDP2) or not (DDP).

Rank zero saves the consolidated EMAs and raw weights to OUT/{mode}.pt.
"""

import sys
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import jitckpt  # noqa: E402
from jitckpt.callbacks import EMACallback, JiTModelCheckpoint  # noqa: E402
from jitckpt.lightning import JiTLightningModule  # noqa: E402


def main(out: Path, mode: str) -> None:
    from lightning.pytorch.strategies import ModelParallelStrategy

    golden = jitckpt.load(ROOT / "tests" / "fixtures" / "original" / "checkpoint-last.pth", lazy=True)
    torch.manual_seed(0)
    module = JiTLightningModule.from_args(golden.args, arch=golden.arch)
    module.net.load_state_dict({k[len("net."):]: v.to_torch() for k, v in golden.model.items()})
    data = torch.load(ROOT / "tests" / "fixtures" / "original" / "train_data.pt")
    loader = DataLoader(TensorDataset(data["images"], data["labels"]), batch_size=2, shuffle=False, drop_last=True)
    ema = EMACallback(0.9, 0.5)
    strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1) if mode == "fsdp" else "ddp"
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy=strategy, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[ema, JiTModelCheckpoint(out / mode, save_last_freq=1)])
    trainer.fit(module, loader)
    sharded = any(hasattr(p, "device_mesh") for p in module.parameters())
    local_sizes = [e.numel() for e in ema.ema1]
    full = {v: ema.consolidated_state_dict(module, v) for v in (1, 2)}
    raw = {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach() for n, p in module.named_parameters()}
    if trainer.global_rank == 0:
        torch.save({"ema1": full[1], "ema2": full[2], "raw": raw, "sharded": sharded, "local_sizes": local_sizes},
                   out / f"{mode}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
