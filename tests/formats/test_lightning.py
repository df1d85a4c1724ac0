"""A .ckpt converted from the golden .pth resumes under ``trainer.fit(..., ckpt_path=...)``.

The training module and EMACallback of jitckpt come later; here a small
LightningModule of the tests' own, with JiT's parameter names and the original
AdamW groups, checks the layout: epoch, global step, optimizer and EMA state.
"""

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

import jitckpt
from jitckpt.formats.lightning import EMA_CALLBACK
from tests.helpers import FIXTURES, add_weight_decay, jit_shaped_module, load_golden_torch


class ShapedModule(L.LightningModule):
    def __init__(self, arch, lr):
        super().__init__()
        self.net = jit_shaped_module(arch).net
        self.lr = lr
        self.epochs_started, self.steps_seen = [], []

    def on_train_epoch_start(self):
        self.epochs_started.append(self.current_epoch)

    def on_train_batch_start(self, batch, batch_idx):
        self.steps_seen.append(self.global_step)

    def training_step(self, batch, batch_idx):
        images, _ = batch
        scale = images.float().mean() / 255
        return sum((p**2).mean() for p in self.parameters() if p.requires_grad) * scale

    def configure_optimizers(self):
        return torch.optim.AdamW(add_weight_decay(self, 0.05), lr=self.lr, betas=(0.9, 0.95))


class EMAStateReceiver(L.Callback):
    """Stands in for jitckpt's EMACallback: receives the state saved under its key."""

    state_key = EMA_CALLBACK

    def __init__(self):
        self.loaded = None

    def load_state_dict(self, state_dict):
        self.loaded = state_dict


def test_converted_ckpt_resumes_at_next_epoch_with_state(golden, tmp_path):
    ckpt_path = jitckpt.convert(golden)  # old.pth -> old.ckpt beside it
    assert ckpt_path == golden.with_suffix(".ckpt")
    data = torch.load(FIXTURES / "train_data.pt")
    loader = DataLoader(TensorDataset(data["images"], data["labels"]), batch_size=4, shuffle=False, drop_last=True)
    arch = jitckpt.load(golden, lazy=True).arch
    module, receiver = ShapedModule(arch, lr=1.5625e-05), EMAStateReceiver()
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[receiver],
                        default_root_dir=tmp_path)
    trainer.fit(module, loader, ckpt_path=str(ckpt_path))

    assert module.epochs_started == [2]
    assert module.steps_seen == [6, 7, 8] and trainer.global_step == 9
    optimizer = trainer.optimizers[0]
    assert {float(s["step"]) for s in optimizer.state.values()} == {9.0}
    golden_dict = load_golden_torch()
    for version in ("ema1", "ema2"):  # both EMAs reach the callback whole, every tensor bit for bit
        loaded, expected = receiver.loaded[version], golden_dict[f"model_{version}"]
        assert set(loaded) == set(expected), version
        for key, value in expected.items():
            assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value), (version, key)
    assert receiver.loaded["ema_decay1"] == 0.9999 and receiver.loaded["ema_decay2"] == 0.9996

    # and what Lightning itself saves after the resumed epoch reads back as epoch 2, step 9
    trainer.save_checkpoint(tmp_path / "after.ckpt")
    after = jitckpt.load(tmp_path / "after.ckpt")
    assert (after.epoch, after.global_step) == (2, 9)
    assert after.optimizer["state"]["net.in_context_posemb"]["step"] == 9
    assert all(torch.equal(after.model[k], v) for k, v in module.state_dict().items())


def test_optimizer_state_reaches_the_right_parameters(golden, tmp_path):
    """Resuming loads the saved AdamW moments onto the parameters they belong to."""
    ckpt_path = jitckpt.convert(golden, tmp_path / "resume.ckpt")
    arch = jitckpt.load(golden, lazy=True).arch
    module = ShapedModule(arch, lr=1.5625e-05)
    seen = {}

    class Capture(L.Callback):
        def on_train_start(self, trainer, pl_module):
            opt = trainer.optimizers[0]
            named = dict(pl_module.named_parameters())
            seen.update({name: opt.state[p]["exp_avg"].clone() for name, p in named.items() if p in opt.state})

    data = torch.load(FIXTURES / "train_data.pt")
    loader = DataLoader(TensorDataset(data["images"], data["labels"]), batch_size=4, drop_last=True)
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Capture()],
                        default_root_dir=tmp_path)
    trainer.fit(module, loader, ckpt_path=str(ckpt_path))
    named = jitckpt.load(golden).optimizer["state"]
    assert len(seen) == 56
    assert all(torch.equal(seen[name], named[name]["exp_avg"]) for name in seen)
