"""``jitckpt train --resume`` from other tools' files: the seed port's .pth and .ckpt, released weights,
an optimizer whose grouping cannot be identified."""

import pytest
import torch
from typer.testing import CliRunner

import jitckpt
from jitckpt.cli import app
from jitckpt.schema import optimizer_step
from tests.released import tiny_released
from tests.seed_port import EPOCH, GLOBAL_STEP, LR, port_ckpt, port_pth, port_pth_dict, save, train
from tests.training.test_train_cli import image_folder  # noqa: F401  (fixture: 12 images in 2 classes)

STEPS_PER_EPOCH = 3  # 12 images, batch 4


@pytest.fixture(scope="module")
def run():
    return train()


def resume(path, data, out, *flags):
    result = CliRunner().invoke(app, [
        "train", "--resume", str(path), "--data_path", str(data), "--output-dir", str(out), "--batch_size", "4",
        "--num-workers", "0", "--accelerator", "cpu", "--logger", "none", *flags])
    return result


def max_gap(a, b):
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_port_pth_continues_its_step_count_learning_rate_and_both_emas(run, image_folder, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    result = resume(port_pth(tmp_path, run), image_folder, out, "--epochs", str(EPOCH + 2))
    assert result.exit_code == 0, result.output
    saved = jitckpt.load(out / "checkpoint-last.pth")
    assert saved.epoch == EPOCH + 1 and saved.global_step == GLOBAL_STEP + STEPS_PER_EPOCH
    assert optimizer_step(saved.optimizer) == 2 + STEPS_PER_EPOCH  # AdamW went on from the port's 2 steps
    assert saved.args["lr"] == LR
    assert max_gap(saved.model_ema1, run.ema1) < 1e-5 and max_gap(saved.model_ema2, run.ema2) < 1e-4
    assert max_gap(saved.model_ema1, saved.model) > 5e-4  # continued, not restarted from the raw weights
    assert "warning" not in result.stderr


def test_port_ckpt_warns_that_the_emas_start_from_the_raw_weights(run, image_folder, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    result = resume(port_ckpt(tmp_path, run), image_folder, out, "--epochs", str(EPOCH + 2))
    assert result.exit_code == 0, result.output
    assert "holds no model_ema1 and no model_ema2: both EMAs start from its raw weights" in result.stderr
    saved = jitckpt.load(out / "checkpoint-last.pth")
    assert saved.epoch == EPOCH + 1 and saved.global_step == GLOBAL_STEP + STEPS_PER_EPOCH
    assert optimizer_step(saved.optimizer) == 2 + STEPS_PER_EPOCH
    raw = run.model.state_dict()
    assert max_gap(saved.model_ema1, raw) < 1e-5 and max_gap(saved.model_ema1, run.ema1) > 5e-4


def test_released_weights_train_from_epoch_zero_with_a_fresh_optimizer(image_folder, tmp_path):  # noqa: F811
    released = jitckpt.load(tiny_released(tmp_path / "released.pth"))
    out = tmp_path / "out"
    result = resume(tmp_path / "released.pth", image_folder, out, "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert "says no epoch" in result.stderr and "fresh optimizer" in result.stderr
    saved = jitckpt.load(out / "checkpoint-last.pth")
    assert saved.epoch == 1 and saved.global_step == 2 * STEPS_PER_EPOCH
    assert optimizer_step(saved.optimizer) == 2 * STEPS_PER_EPOCH  # AdamW from scratch
    assert max_gap(saved.model_ema1, released.model_ema1) < 1e-5


def test_unmappable_optimizer_needs_drop_optimizer(run, image_folder, tmp_path):  # noqa: F811
    positional = run.optimizer.state_dict()
    positional["param_groups"][0]["params"].append(positional["param_groups"][1]["params"].pop())
    path = save(port_pth_dict(run, optimizer=positional), tmp_path / "unknown.pth")
    out = tmp_path / "out"
    refused = resume(path, image_folder, out, "--epochs", str(EPOCH + 2))
    assert refused.exit_code == 2 and "--drop-optimizer" in refused.stderr
    assert refused.stderr.count("\n") == 1 and not (out / "checkpoint-last.pth").exists()
    result = resume(path, image_folder, out, "--epochs", str(EPOCH + 2), "--drop-optimizer")
    assert result.exit_code == 0, result.output
    assert "optimizer state is dropped" in result.stderr
    saved = jitckpt.load(out / "checkpoint-last.pth")
    assert saved.epoch == EPOCH + 1 and optimizer_step(saved.optimizer) == STEPS_PER_EPOCH
    assert max_gap(saved.model_ema1, run.ema1) < 1e-5
    assert torch.equal(saved.model["net.pos_embed"], run.model.state_dict()["net.pos_embed"])
