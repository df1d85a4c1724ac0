"""``jitckpt train --resume`` on the golden checkpoint with a tiny ImageFolder."""

import numpy as np
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

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "-m", "jitckpt", "train", "--resume", str(golden), "--data_path", str(image_folder),
         "--output_dir", str(tmp_path / "out"), "--batch_size", "4", "--num_workers", "0", "--accelerator", "cpu",
         "--logger", "csv"], capture_output=True, text=True, cwd=root, env={**os.environ, "PYTHONPATH": root})
    assert result.returncode == 0, result.stderr
    for noise in ("litlogger", "LeafSpec", "log_every_n_steps"):
        assert noise not in result.stdout + result.stderr


def test_quieting_lightning_keeps_real_warnings():
    import warnings

    from jitckpt.training import quiet_lightning_noise

    quiet_lightning_noise()
    with pytest.warns(UserWarning, match="a real problem"):
        warnings.warn("a real problem")
