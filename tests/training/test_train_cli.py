"""``jitckpt train --resume`` on the golden checkpoint with a tiny ImageFolder."""

import numpy as np
import torch
import pytest
from PIL import Image
from typer.testing import CliRunner

import jitckpt
from jitckpt.cli import app
from tests.helpers import sha256

runner = CliRunner()


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        folder = tmp_path / "data" / "train" / cls
        folder.mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return tmp_path / "data"


def test_train_resumes_original_checkpoint_with_original_flag_spellings(golden, image_folder, tmp_path):
    before = sha256(golden)
    out = tmp_path / "out"
    result = runner.invoke(app, [
        "train", "--resume", str(golden), "--data_path", str(image_folder), "--output-dir", str(out),
        "--epochs", "3", "--batch_size", "4", "--num-workers", "0", "--accelerator", "cpu", "--log_freq", "1",
        "--logger", "none",
    ])
    assert result.exit_code == 0, result.output
    assert sha256(golden) == before  # converted on the fly, the source untouched
    saved = jitckpt.load(out / "checkpoint-last.pth", lazy=True)
    assert saved.epoch == 2 and saved.global_step == 9  # resumed at epoch 2: 3 more steps
    assert saved.args["lr"] == 1.5625e-05 and saved.args["lr_schedule"] == "cosine"  # from the checkpoint
    assert saved.args["batch_size"] == 4 and saved.arch == jitckpt.load(golden, lazy=True).arch
    assert (out / "checkpoint-last.ckpt").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".resume-")]


def test_train_resume_refuses_architecture_flags(golden, tmp_path):
    result = runner.invoke(app, ["train", "--resume", str(golden), "--model", "JiT-B/16", "--output-dir",
                                 str(tmp_path / "o")])
    assert result.exit_code == 2 and "come from the checkpoint" in result.stderr


def test_train_missing_data_folder_is_one_line(golden, tmp_path):
    result = runner.invoke(app, ["train", "--resume", str(golden), "--data-path", str(tmp_path / "nope"),
                                 "--output-dir", str(tmp_path / "o"), "--accelerator", "cpu", "--logger", "none"])
    assert result.exit_code == 2 and "no training folder" in result.stderr
    assert not (tmp_path / "o").exists()  # inputs are checked before anything is created


def test_an_unknown_strategy_is_one_line_listing_lightnings_names_before_any_work(golden, image_folder, tmp_path):
    result = runner.invoke(app, ["train", "--resume", str(golden), "--data-path", str(image_folder),
                                 "--output-dir", str(tmp_path / "o"), "--strategy", "bogus", "--accelerator", "cpu"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "--strategy 'bogus'" in result.stderr and "ddp_spawn" in result.stderr and "fsdp2" in result.stderr
    assert not (tmp_path / "o").exists()


def test_tensorboard_without_its_package_is_one_line_before_any_work(golden, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorboard", "tensorboardX") else real(name, *a))
    result = runner.invoke(app, ["train", "--resume", str(golden), "--output-dir", str(tmp_path / "o"),
                                 "--logger", "tensorboard"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert '.[tensorboard]' in result.stderr and not (tmp_path / "o").exists()


def test_train_prints_jitckpt_lines_not_lightnings_noise(golden, image_folder, tmp_path):
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run(
        [sys.executable, "-m", "jitckpt", "train", "--resume", str(golden), "--data_path", str(image_folder),
         "--output_dir", str(tmp_path / "out"), "--batch_size", "4", "--num_workers", "0", "--accelerator", "cpu",
         "--logger", "csv"], capture_output=True, text=True, cwd=root, env={**os.environ, "PYTHONPATH": root})
    assert result.returncode == 0, result.stderr
    for noise in ("litlogger", "LeafSpec", "log_every_n_steps", "FLOPs", "Total params"):
        assert noise not in result.stdout + result.stderr
    assert "; 151,224 parameters, 150,456 trainable" in result.stdout + result.stderr  # one line, not a summary


def test_the_progress_bar_shows_the_lr_readably_and_no_version_number(monkeypatch):
    from lightning.pytorch.callbacks import RichProgressBar
    from lightning.pytorch.callbacks.progress import progress_bar

    from jitckpt.training.run import _progress_bar

    monkeypatch.setattr(progress_bar.ProgressBar, "get_metrics", lambda self, trainer, module: {
        "v_num": 3, "lr": 5e-05, "loss": 0.5})
    assert _progress_bar(RichProgressBar)().get_metrics(None, None) == {"lr": "5.00e-05", "loss": 0.5}


def test_the_data_module_speaks_python_and_the_command_line_its_flags(tmp_path):
    from typer.testing import CliRunner

    from jitckpt.cli import app
    from jitckpt.errors import JiTCheckpointError
    from jitckpt.lightning import JiTDataModule

    with pytest.raises(JiTCheckpointError, match=r"data_path='.*nowhere' must hold train/<class>/<images>"):
        JiTDataModule(data_path=str(tmp_path / "nowhere")).check()
    result = CliRunner().invoke(app, ["train", "--data_path", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "--data-path '" in result.stderr and "data_path=" not in result.stderr


def test_quieting_lightning_keeps_real_warnings():
    import warnings

    from jitckpt.training.run import quiet_lightning_noise

    quiet_lightning_noise()
    with pytest.warns(UserWarning, match="a real problem"):
        warnings.warn("a real problem")


def test_train_under_fsdp2_resumes_from_a_dcp_directory_and_writes_one(golden, image_folder, tmp_path):
    """Two CPU processes: --strategy fsdp2 shards over both (each sees half the data), --resume takes a DCP
    directory, and JiTModelCheckpoint writes checkpoint-last.dcp from every rank plus its .pth."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    source = jitckpt.convert(golden, tmp_path / "golden.dcp")
    out = tmp_path / "out"
    jit = str(Path(sys.executable).parent / "jitckpt")
    done = subprocess.run([jit, "train", "--resume", str(source), "--strategy", "fsdp2", "--devices", "2",
                           "--accelerator", "cpu", "--data_path", str(image_folder), "--output_dir", str(out),
                           "--batch_size", "2", "--num_workers", "0", "--logger", "none"],
                          capture_output=True, text=True, timeout=300, env={**os.environ})
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-last.dcp", "checkpoint-last.pth"]
    sharded, full = jitckpt.load(out / "checkpoint-last.dcp"), jitckpt.load(out / "checkpoint-last.pth")
    assert (sharded.epoch, sharded.global_step) == (2, 6 + 12 // (2 * 2))  # 12 images, 2 per rank, 2 ranks
    assert jitckpt.compare(sharded, full) == []
    before = jitckpt.load(golden)
    weight = "net.blocks.0.mlp.w12.weight"  # trained on: the weights and EMA 2 moved on from the source's
    assert not torch.equal(before.model[weight], sharded.model[weight])
    assert not torch.equal(before.model_ema2[weight], sharded.model_ema2[weight])


def test_train_resume_reads_the_source_in_place_and_writes_only_its_outputs(golden, image_folder, tmp_path):
    """No converted copy of the source: the plugin reads it in place. With --async-save the files are the same."""
    beside = sorted(p.name for p in golden.parent.iterdir())
    runs = {}
    for name, extra in (("sync", []), ("async", ["--async-save"])):
        out = tmp_path / name
        seen: set = set()

        class Watch:  # every name that appears in the output folder while training runs
            def __init__(self):
                import threading

                self.stop = threading.Event()
                self.thread = threading.Thread(target=self.run, daemon=True)

            def run(self):
                while not self.stop.is_set():
                    if out.exists():
                        seen.update(p.name for p in out.iterdir())
                    self.stop.wait(0.005)

        watch = Watch()
        watch.thread.start()
        result = runner.invoke(app, ["train", "--resume", str(golden), "--data_path", str(image_folder),
                                     "--output_dir", str(out), "--batch_size", "4", "--num_workers", "0",
                                     "--accelerator", "cpu", "--logger", "none", *extra])
        watch.stop.set()
        watch.thread.join()
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in out.iterdir()) == ["checkpoint-last.ckpt", "checkpoint-last.pth"]
        assert not any("resume" in n for n in seen), seen  # no converted copy, not even for a moment
        runs[name] = jitckpt.load(out / "checkpoint-last.pth")
    assert sorted(p.name for p in golden.parent.iterdir()) == sorted(beside + ["async", "sync"])
    assert runs["sync"].global_step == runs["async"].global_step == 9
    differ = {k for k in runs["sync"].args if runs["sync"].args[k] != runs["async"].args.get(k)}
    assert differ == {"output_dir"}
    runs["async"].args = runs["sync"].args
    assert jitckpt.compare(runs["sync"], runs["async"]) == []


def test_train_resumes_from_a_run_folder_holding_only_a_dcp_directory(golden, image_folder, tmp_path):
    """The candidates in a --resume folder come from the format registry, directories included."""
    from jitckpt.training.run import resolve_resume

    run = tmp_path / "run"
    run.mkdir()
    jitckpt.convert(golden, run / "checkpoint-last.dcp")
    assert resolve_resume(run) == run / "checkpoint-last.dcp"
    out = tmp_path / "out"
    result = runner.invoke(app, ["train", "--resume", str(run), "--data_path", str(image_folder), "--output-dir",
                                 str(out), "--epochs", "3", "--batch_size", "4", "--num-workers", "0",
                                 "--accelerator", "cpu", "--logger", "none"])
    assert result.exit_code == 0, result.output
    saved = jitckpt.load(out / "checkpoint-last.pth", lazy=True)
    assert saved.epoch == 2 and saved.global_step == 9
    (run / "checkpoint-last.dcp").rename(run / "other.dcp")
    with pytest.raises(jitckpt.JiTCheckpointError, match="checkpoint-last.pth, .*checkpoint-last.dcp"):
        resolve_resume(run)


def test_train_help_shows_the_defaults_of_the_one_table():
    import typer.main

    from jitckpt.cli import app
    from jitckpt.layouts.args import ORIGINAL_DEFAULTS

    command = typer.main.get_command(app).commands["train"]
    shown = 0
    for param in command.params:
        name = param.name
        if getattr(param, "help", None) is not None and ORIGINAL_DEFAULTS.get(name) not in (None, "", False, True):
            assert f"(default {ORIGINAL_DEFAULTS[name]})" in (param.help or ""), name
            shown += 1
    assert shown >= 24  # every flag of the original with a default (booleans and paths aside)
