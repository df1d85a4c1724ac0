"""The authors' released weights (model and two EMAs only): read, inspected with the paper's protocol, converted."""

import json
import re

import pytest
import torch
from typer.testing import CliRunner

import jitckpt
from jitckpt.cli import app
from jitckpt.layouts.arch import VARIANTS
from tests.released import official_released, tiny_released

runner = CliRunner()
README_CFG = {"JiT-B/16": 3.0, "JiT-B/32": 3.0, "JiT-L/16": 2.4, "JiT-L/32": 2.5, "JiT-H/16": 2.2, "JiT-H/32": 2.3}


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def inspect_json(path) -> dict:
    result = run("inspect", path, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("px", [256, 512])
def test_released_file_of_every_official_variant_inspects_with_the_protocol(tmp_path, name, px):
    path = official_released(tmp_path / "checkpoint-last.pth", name, px)
    ckpt = jitckpt.load(path, lazy=True)
    assert ckpt.arch.variant == name and ckpt.arch.img_size == px and ckpt.arch.num_classes == 1000  # from shapes
    assert ckpt.args == {} and ckpt.epoch is None and ckpt.optimizer is None
    info = inspect_json(path)
    assert (info["variant"], info["img_size"], info["epoch"], info["optimizer"]) == (name, px, None, None)
    assert info["sections"] == {"raw": True, "ema1": True, "ema2": True} and info["args"] == {}
    assert info["sampling"] == {"method": "heun", "steps": 50, "cfg": README_CFG[name], "interval_min": 0.1,
                                "interval_max": 1.0, "noise_scale": {256: 1.0, 512: 2.0}[px], "source": "protocol"}
    assert info["protocol"]["num_images"] == 50000
    assert info["protocol"]["fid_stats"] == f"fid_stats/jit_in{px}_stats.npz"
    assert not any("training defaults" in w for w in info["warnings"])


def test_released_table_shows_the_protocol_in_one_row(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # the row unfolded
    path = official_released(tmp_path / "checkpoint-last.pth", "JiT-L/16", 256)
    result = run("inspect", path)
    assert result.exit_code == 0, result.output
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("sampling")]
    assert "heun, 50 steps, cfg 2.4 in [0.1, 1.0], noise scale 1.0" in row
    assert "the paper's protocol for JiT-L/16 at 256 px: 50000 images against fid_stats/jit_in256_stats.npz" in row
    assert re.search(r"optimizer +absent", result.stdout) and result.stderr == ""


def test_checkpoint_with_args_reports_its_own_settings(golden, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    info = inspect_json(golden)
    assert info["sampling"] == {"method": "heun", "steps": 5, "cfg": 2.0, "interval_min": 0.1, "interval_max": 1.0,
                                "noise_scale": 1.0, "source": "args"}
    assert info["protocol"] is None
    result = run("inspect", golden)
    assert "(from the checkpoint's training args)" in result.stdout and result.stderr.count("warning") == 1


def test_custom_released_file_warns_that_the_defaults_are_used(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    path = tiny_released(tmp_path / "tiny.pth")
    info = inspect_json(path)
    assert info["variant"] is None and info["protocol"] is None
    assert info["sampling"] == {"method": "heun", "steps": 50, "cfg": 1.0, "interval_min": 0.0, "interval_max": 1.0,
                                "noise_scale": 1.0, "source": "defaults"}
    assert any("original training defaults" in w and "not an official variant" in w for w in info["warnings"])
    result = run("inspect", path)
    assert "(from the original training defaults)" in result.stdout
    assert "warning: the checkpoint has no sampling settings" in result.stderr


def test_released_file_converts_and_exports_weights_only(tmp_path):
    path = tiny_released(tmp_path / "tiny.pth")
    for target in ("full.safetensors", "full.ckpt", "back.pth"):
        assert run("convert", path, "-o", tmp_path / target).exit_code == 0
        assert run("verify", path, tmp_path / target).exit_code == 0  # "no epoch" survives even a .ckpt
        info = inspect_json(tmp_path / target)
        assert info["epoch"] is None and info["global_step"] is None
        assert info["optimizer"] is None and info["sampling"]["source"] == "defaults"
    export = tmp_path / "ema2.safetensors"
    result = run("convert", path, "-o", export, "--weights", "ema2", "--weights-only")
    assert result.exit_code == 0, result.output
    exported, source = jitckpt.load(export).model, jitckpt.load(path).model_ema2
    assert exported.keys() == source.keys()
    for key, value in source.items():  # the ema2 weights themselves, not merely their names
        assert exported[key].dtype == value.dtype and torch.equal(exported[key], value), key
    assert inspect_json(export)["weights"] == "ema2"
