"""``jitckpt train`` with the original's evaluation flags: --online_eval during training, --evaluate_gen alone."""

import csv

import numpy as np
import pytest
from typer.testing import CliRunner

from jitckpt.cli import app
from tests.helpers import sha256
from tests.training.test_train_cli import image_folder  # noqa: F401 (a fixture)

runner = CliRunner()


@pytest.fixture
def fid_stats(tmp_path):
    path = tmp_path / "stats.npz"
    np.savez(path, mu=np.zeros(2048), sigma=np.eye(2048))
    return path


def test_online_eval_logs_fid_during_training(golden, image_folder, fid_stats,  # noqa: F811
                                              inception_weights, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, [
        "train", "--resume", str(golden), "--data_path", str(image_folder), "--output-dir", str(out),
        "--epochs", "3", "--batch_size", "4", "--num-workers", "0", "--accelerator", "cpu",
        "--online_eval", "--eval_freq", "1", "--num_images", "10", "--gen-bsz", "10", "--num_sampling_steps", "2",
        "--fid-stats", str(fid_stats), "--inception_weights", str(inception_weights),
    ])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((next((out / "logs").rglob("metrics.csv"))).open()))
    fids = [float(r["fid"]) for r in rows if r.get("fid")]
    assert len(fids) == 1 and np.isfinite(fids[0])  # one epoch trained, scored at its end
    import jitckpt

    args = jitckpt.load(out / "checkpoint-last.pth", lazy=True).args
    assert args["online_eval"] is True and (args["num_images"], args["gen_bsz"], args["eval_freq"]) == (10, 10, 1)


def test_evaluate_gen_scores_the_checkpoint_without_training(golden, fid_stats, inception_weights, tmp_path):
    before = sha256(golden)
    out = tmp_path / "out"
    result = runner.invoke(app, [
        "train", "--evaluate_gen", "--resume", str(golden), "--output-dir", str(out), "--accelerator", "cpu",
        "--num-images", "10", "--gen_bsz", "10", "--num-sampling-steps", "2",
        "--fid_stats", str(fid_stats), "--inception-weights", str(inception_weights),
    ])
    assert result.exit_code == 0, result.output
    assert "FID" in result.output and "Inception Score" in result.output
    assert not out.exists() and sha256(golden) == before  # nothing trained, nothing written


def test_evaluate_gen_needs_resume(tmp_path):
    result = runner.invoke(app, ["train", "--evaluate-gen", "--output-dir", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--resume" in result.stderr
