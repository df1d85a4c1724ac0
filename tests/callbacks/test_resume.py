"""Resuming the golden original checkpoint under Lightning, and checkpoints written while training."""

import json

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

import jitckpt
from jitckpt.callbacks import EMACallback, JiTModelCheckpoint, LearningRateSchedulerCallback, MetricLoggerCallback
from jitckpt.lightning import JiTLightningModule
from tests.helpers import FIXTURES, load_golden_torch, original_resume

TRACE = json.loads((FIXTURES / "lr_trace.json").read_text())


def loader():
    data = torch.load(FIXTURES / "train_data.pt")
    return DataLoader(TensorDataset(data["images"], data["labels"]), batch_size=4, shuffle=False, drop_last=True)


class Recorder(L.Callback):
    """Epochs started, LR and AdamW step at each optimizer step, raw weights after each step."""

    def __init__(self):
        self.epochs, self.lrs, self.adam_steps, self.raw = [], [], [], []

    def on_train_epoch_start(self, trainer, pl_module):
        self.epochs.append(trainer.current_epoch)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lrs.append(optimizer.param_groups[0]["lr"])
        state = optimizer.state.get(optimizer.param_groups[0]["params"][0], {})
        self.adam_steps.append(float(state["step"]) if "step" in state else 0.0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.raw.append([p.detach().clone() for p in pl_module.parameters()])


def trainer_for(tmp_path, callbacks, max_epochs=3, **kwargs):
    return L.Trainer(max_epochs=max_epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                     default_root_dir=tmp_path, deterministic=True, **kwargs)


def test_golden_resumes_at_epoch_2_with_lr_optimizer_and_both_emas(golden, tmp_path):
    ckpt_path = jitckpt.convert(golden)
    args = jitckpt.load(golden, lazy=True)
    module = JiTLightningModule.from_args(args.args, arch=args.arch)
    ema, record = EMACallback(0.9999, 0.9996), Recorder()
    lr = LearningRateSchedulerCallback("cosine", warmup_epochs=1, min_lr=0.0, epochs=3)
    trainer = trainer_for(tmp_path, [ema, lr, record])
    trainer.fit(module, loader(), ckpt_path=str(ckpt_path))

    assert record.epochs == [2] and trainer.global_step == 9
    assert record.lrs[0] == 7.8125e-06 and record.lrs[-1] == TRACE["resumed_epoch2_last_lr"][0]
    assert record.adam_steps == [6.0, 7.0, 8.0]
    optimizer = trainer.optimizers[0]
    assert {float(s["step"]) for s in optimizer.state.values()} == {9.0}
    golden_dict = load_golden_torch()
    names = [n for n, _ in module.named_parameters()]
    for version, decay in ((1, 0.9999), (2, 0.9996)):
        expected = [golden_dict[f"model_ema{version}"][n].clone() for n in names]
        for raw in record.raw:  # the original update, by hand, with the raw weights after each step
            for e, r in zip(expected, raw):
                e.mul_(decay).add_(r, alpha=1 - decay)
        got = ema.get_ema_state_dict(module, version)
        for name, want in zip(names, expected):  # lerp and mul/add round differently: a few ulps
            torch.testing.assert_close(got[name], want, rtol=1e-6, atol=1e-7)
        # final_layer.linear gets gradients from the first step; zero-initialised adaLN gates keep others still
        key = "net.final_layer.linear.weight"
        assert not torch.equal(got[key], golden_dict[f"model_ema{version}"][key])
        assert not torch.equal(got[key], module.net.final_layer.linear.weight)


def test_model_checkpoint_files_resume_in_original_code_and_match_lightning_ckpt(tmp_path):
    torch.manual_seed(0)
    golden = jitckpt.load(FIXTURES / "checkpoint-last.pth", lazy=True)
    module = JiTLightningModule.from_args(golden.args, arch=golden.arch)
    ema = EMACallback()
    saver = JiTModelCheckpoint(tmp_path / "out", save_last_freq=1, save_milestone_freq=2, save_lightning=True)
    trainer = trainer_for(tmp_path, [ema, saver, LearningRateSchedulerCallback("cosine", 1, 0.0, 3),
                                     MetricLoggerCallback(log_freq=1)])
    trainer.fit(module, loader())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "checkpoint-2.pth", "checkpoint-last.ckpt", "checkpoint-last.pth"]

    resumed = original_resume(tmp_path / "out" / "checkpoint-last.pth", golden.arch)
    assert resumed["start_epoch"] == 3 and resumed["args"].model == "JiT-T/4"
    for (name, param), e1, e2 in zip(module.named_parameters(), resumed["ema1"], resumed["ema2"]):
        assert torch.equal(resumed["model"].state_dict()[name], param.detach())
        assert torch.equal(e1, ema.get_ema_state_dict(module, 1)[name])
        assert torch.equal(e2, ema.get_ema_state_dict(module, 2)[name])
    live = trainer.optimizers[0].state_dict()
    saved = resumed["optimizer"].state_dict()
    assert all(torch.equal(saved["state"][i][k], live["state"][i][k]) for i in live["state"] for k in live["state"][i])

    from_pth = jitckpt.load(tmp_path / "out" / "checkpoint-last.pth", lazy=True)
    from_ckpt = jitckpt.load(tmp_path / "out" / "checkpoint-last.ckpt", lazy=True)
    from_ckpt.args = from_pth.args  # the .ckpt keeps hyper-parameters, the .pth the full original args
    assert (from_ckpt.epoch, from_ckpt.global_step) == (2, 9)
    assert jitckpt.compare(from_pth, from_ckpt) == []


def _run(tmp_path, max_epochs, ckpt_path=None, saver=None):
    torch.manual_seed(0)
    golden = jitckpt.load(FIXTURES / "checkpoint-last.pth", lazy=True)
    module = JiTLightningModule.from_args(golden.args, arch=golden.arch, seed=3)
    ema = EMACallback()
    callbacks = [ema, LearningRateSchedulerCallback("cosine", 1, 0.0, 4)] + ([saver] if saver else [])
    trainer = trainer_for(tmp_path, callbacks, max_epochs=max_epochs)
    trainer.fit(module, loader(), ckpt_path=ckpt_path)
    return module, ema


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path):
    straight, straight_ema = _run(tmp_path / "a", 4)
    saver = JiTModelCheckpoint(tmp_path / "b", save_last_freq=1, save_lightning=True)
    _run(tmp_path / "b", 2, saver=saver)
    resumed, resumed_ema = _run(tmp_path / "c", 4, ckpt_path=str(tmp_path / "b" / "checkpoint-last.ckpt"))
    for (name, a), b in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name
    for version in (1, 2):
        sa = straight_ema.get_ema_state_dict(straight, version)
        sb = resumed_ema.get_ema_state_dict(resumed, version)
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # and the same from the original-format file, converted
    converted = jitckpt.convert(tmp_path / "b" / "checkpoint-last.pth", tmp_path / "b" / "from-pth.ckpt")
    again, again_ema = _run(tmp_path / "d", 4, ckpt_path=str(converted))
    assert all(torch.equal(a, b) for a, b in zip(straight.parameters(), again.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(straight_ema.ema1, again_ema.ema1))
