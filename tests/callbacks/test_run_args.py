"""The args a run saves describe that run, in its .pth and in Lightning's own .ckpt (issue 9, point 16)."""

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

import jitckpt
from jitckpt.callbacks import create_default_callbacks
from jitckpt.lightning import JiTLightningModule
from jitckpt.layouts.arch import Arch
from tests.helpers import FIXTURES

CUSTOM = Arch(depth=2, hidden_size=32, num_heads=2, patch_size=4, bottleneck_dim=8, in_context_len=2,
              in_context_start=1, num_classes=10, img_size=16)


def test_saved_args_are_the_runs_in_pth_and_ckpt(tmp_path):
    torch.manual_seed(0)
    data = torch.load(FIXTURES / "train_data.pt")
    loader = DataLoader(TensorDataset(data["images"], data["labels"]), batch_size=4, shuffle=False,
                        drop_last=True)
    # no batch_size given to the module: the saved one is the loader's
    module = JiTLightningModule(arch=CUSTOM.to_dict(), img_size=16, num_classes=10, learning_rate=1e-4)
    callbacks = create_default_callbacks(0.999, 0.99, tmp_path / "out", epochs=2, warmup_epochs=1,
                                         lr_schedule="cosine", min_lr=1e-6, save_last_freq=1, log_freq=1,
                                         save_lightning=True)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                        default_root_dir=tmp_path)
    trainer.fit(module, loader)
    trainer.save_checkpoint(tmp_path / "lightning.ckpt")

    pth = jitckpt.load(tmp_path / "out" / "checkpoint-last.pth", lazy=True)
    args = pth.args
    assert (args["epochs"], args["warmup_epochs"], args["batch_size"]) == (2, 1, 4)
    assert (args["lr_schedule"], args["min_lr"]) == ("cosine", 1e-6)
    assert (args["ema_decay1"], args["ema_decay2"]) == (0.999, 0.99)
    assert args["lr"] == 1e-4
    assert args["model"] is None  # a custom architecture claims no official variant
    assert (args["img_size"], args["class_num"]) == (16, 10) and pth.arch.to_dict() == CUSTOM.to_dict()
    ckpt = jitckpt.load(tmp_path / "lightning.ckpt", lazy=True)
    assert ckpt.args == args
    assert not [d for d in jitckpt.compare(pth, ckpt) if d.startswith("args")]
    assert jitckpt.compare(pth, jitckpt.load(tmp_path / "out" / "checkpoint-last.ckpt", lazy=True)) == []
