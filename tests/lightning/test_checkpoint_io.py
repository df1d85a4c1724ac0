"""JiTCheckpointIO: Lightning resumes from any format with no intermediate file, and saves any format."""

import os
import signal
import subprocess
import sys

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import AsyncCheckpointIO

import jitckpt
from jitckpt.callbacks import EMACallback, JiTModelCheckpoint, LearningRateSchedulerCallback
from jitckpt.lightning import JiTAsyncCheckpointIO, JiTCheckpointIO, JiTLightningModule
from tests.callbacks.test_resume import TRACE, Recorder, loader
from tests.helpers import FIXTURES, original_resume

FORMATS = {"pth": ".pth", "safetensors": ".safetensors", "ckpt": ".ckpt", "dcp": ".dcp"}


def trainer_for(tmp_path, callbacks, max_epochs=3, checkpointing=False, plugins=None):
    return L.Trainer(max_epochs=max_epochs, accelerator="cpu", logger=False, enable_checkpointing=checkpointing,
                     enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                     default_root_dir=tmp_path, deterministic=True, plugins=plugins)


def _module():
    golden = jitckpt.load(FIXTURES / "checkpoint-last.pth", lazy=True)
    return JiTLightningModule.from_args(golden.args, arch=golden.arch)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_fit_resumes_from_each_format_through_the_plugin(golden, tmp_path, fmt):
    source = golden if fmt == "pth" else jitckpt.convert(golden, tmp_path / f"golden{FORMATS[fmt]}", to=fmt)
    before = sorted(os.listdir(tmp_path))
    module, ema, record = _module(), EMACallback(0.9999, 0.9996), Recorder()
    lr = LearningRateSchedulerCallback("cosine", warmup_epochs=1, min_lr=0.0, epochs=3)
    trainer = trainer_for(tmp_path / "run", [ema, lr, record], plugins=[JiTCheckpointIO()])
    trainer.fit(module, loader(), ckpt_path=str(source))
    assert record.epochs == [2] and trainer.global_step == 9 and record.adam_steps == [6.0, 7.0, 8.0]
    assert record.lrs[0] == 7.8125e-06 and record.lrs[-1] == TRACE["resumed_epoch2_last_lr"][0]
    assert sorted(p for p in os.listdir(tmp_path) if p != "run") == before  # nothing written beside the source
    golden_ema = jitckpt.load(golden).model_ema1
    key = "net.final_layer.linear.weight"
    assert not torch.equal(ema.get_ema_state_dict(module, 1)[key], golden_ema[key])  # continued, and moved


def _run(tmp_path, max_epochs, ckpt_path=None, callbacks=(), plugins=None):
    torch.manual_seed(0)
    module = JiTLightningModule.from_args(jitckpt.load(FIXTURES / "checkpoint-last.pth", lazy=True).args,
                                          arch=jitckpt.load(FIXTURES / "checkpoint-last.pth", lazy=True).arch,
                                          seed=3)
    ema = EMACallback()
    trainer = trainer_for(tmp_path, [ema, LearningRateSchedulerCallback("cosine", 1, 0.0, 4), *callbacks],
                          max_epochs=max_epochs, plugins=plugins)
    trainer.fit(module, loader(), ckpt_path=ckpt_path)
    return module, ema


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """An uninterrupted 4-epoch run, and the checkpoint-last.pth of the same run stopped after 2 epochs."""
    tmp = tmp_path_factory.mktemp("interrupted")
    straight, straight_ema = _run(tmp / "a", 4)
    _run(tmp / "b", 2, callbacks=[JiTModelCheckpoint(tmp / "b", save_last_freq=1)])
    return straight, straight_ema, tmp / "b" / "checkpoint-last.pth"


@pytest.mark.parametrize("fmt", ["pth", "safetensors", "ckpt"])
def test_interrupted_and_resumed_through_the_plugin_equals_uninterrupted(interrupted, tmp_path, fmt):
    straight, straight_ema, last = interrupted
    source = jitckpt.convert(last, tmp_path / f"last{FORMATS[fmt]}", to=fmt) if fmt != "pth" else last
    resumed, resumed_ema = _run(tmp_path / "c", 4, ckpt_path=str(source), plugins=[JiTCheckpointIO()])
    assert all(torch.equal(a, b) for a, b in zip(straight.parameters(), resumed.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(straight_ema.ema1 + straight_ema.ema2,
                                                 resumed_ema.ema1 + resumed_ema.ema2))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".ckpt"])
def test_model_checkpoint_writes_each_format_through_the_plugin(tmp_path, suffix):
    module = _module()
    saver = ModelCheckpoint(dirpath=tmp_path / "out", filename="step{step}", save_top_k=-1, every_n_epochs=1,
                            auto_insert_metric_name=False)
    saver.FILE_EXTENSION = suffix
    trainer = trainer_for(tmp_path, [EMACallback(), saver], max_epochs=2, plugins=[JiTCheckpointIO()],
                          checkpointing=True)
    trainer.fit(module, loader())
    files = sorted((tmp_path / "out").iterdir())
    assert [f.name for f in files] == [f"step3{suffix}", f"step6{suffix}"]
    last = files[-1]
    if suffix == ".pth":  # the original resume code
        resumed = original_resume(last, module.arch)
        assert resumed["start_epoch"] == 2
        assert all(torch.equal(resumed["model"].state_dict()[n], p.detach()) for n, p in module.named_parameters())
    elif suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(last), "pt") as f:
            assert torch.equal(f.get_tensor("model/net.final_layer.linear.weight"), module.net.final_layer.linear.weight)
    else:  # Lightning without the plugin
        plain = trainer_for(tmp_path / "plain", [EMACallback()], max_epochs=3)
        plain.fit(_module(), loader(), ckpt_path=str(last))
        assert plain.global_step == 9
    assert jitckpt.load(last).global_step == 6


WRAPPERS = {"lightning": lambda: AsyncCheckpointIO(JiTCheckpointIO()), "jitckpt": lambda: JiTAsyncCheckpointIO()}


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
def test_async_save_writes_the_state_of_the_step_it_was_asked_at(tmp_path, wrapper):
    """The snapshot is taken on the training thread: training goes on while the file is written."""
    module = _module()
    sync_dir, async_dir = tmp_path / "sync", tmp_path / "async"

    class SaveBoth(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step in (2, 4):  # twice: the second save reuses the first's buffers
                step = trainer.global_step
                checkpoint = trainer._checkpoint_connector.dump_checkpoint()
                JiTCheckpointIO().save_checkpoint(checkpoint, sync_dir / f"step{step}.pth")
                trainer.strategy.checkpoint_io.save_checkpoint(checkpoint, async_dir / f"step{step}.pth")

    io = WRAPPERS[wrapper]()
    trainer = trainer_for(tmp_path, [EMACallback(), SaveBoth()], max_epochs=2, plugins=[io])
    trainer.fit(module, loader())
    assert trainer.global_step == 6
    for step in (2, 4):
        a, b = jitckpt.load(sync_dir / f"step{step}.pth"), jitckpt.load(async_dir / f"step{step}.pth")
        assert jitckpt.compare(a, b) == [] and a.global_step == step
    assert not torch.equal(a.model["net.final_layer.linear.weight"], module.net.final_layer.linear.weight)


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
def test_an_async_write_error_fails_the_run_with_one_clear_message(tmp_path, monkeypatch, wrapper):
    from jitckpt import api
    from jitckpt.errors import OutputError

    def full_disk(*args, **kwargs):
        raise OutputError(f"cannot write {str(args[1])!r}: No space left on device (free space or write elsewhere)")

    monkeypatch.setattr(api, "save", full_disk)
    saver = ModelCheckpoint(dirpath=tmp_path / "out", filename="last", every_n_epochs=1)
    saver.FILE_EXTENSION = ".pth"
    trainer = trainer_for(tmp_path, [EMACallback(), saver], max_epochs=2,
                          plugins=[WRAPPERS[wrapper]()], checkpointing=True)
    with pytest.raises(OutputError, match=r"^cannot write '.*last.pth': No space left on device"):
        trainer.fit(_module(), loader())


KILL_DURING_SAVE = r"""
import os, signal, sys
from pathlib import Path
import torch
sys.path.insert(0, sys.argv[3])
import jitckpt
from jitckpt.lightning import JiTCheckpointIO
from jitckpt.storage import temp
checkpoint = torch.load(sys.argv[1], weights_only=False)
def die(step):
    if step == "synced":
        os.kill(os.getpid(), signal.SIGKILL)
temp.on_commit_step = die
JiTCheckpointIO().save_checkpoint(checkpoint, sys.argv[2])
"""


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".ckpt"])
def test_a_kill_during_a_save_leaves_the_previous_file_intact(golden, tmp_path, suffix):
    previous = jitckpt.convert(golden, tmp_path / f"last{suffix}", to=suffix[1:])
    before = previous.read_bytes()
    lightning_dict = tmp_path / "dict.pt"
    torch.save(JiTCheckpointIO().load_checkpoint(golden), lightning_dict)
    done = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, str(lightning_dict), str(previous),
                           str(FIXTURES.parents[2])], capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL
    assert previous.read_bytes() == before
