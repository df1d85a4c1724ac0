"""An optimizer whose grouping is unknown or ambiguous: nothing is attached by guess, the rest still works."""

import dataclasses
import json
import os

import pytest
from typer.testing import CliRunner

import jitckpt
from jitckpt.cli import app
from jitckpt.errors import SchemaError
from jitckpt.layouts import groupings
from jitckpt.inspection.summary import summarize
from tests.seed_port import EPOCH, GLOBAL_STEP, port_pth_dict, save, train


@pytest.fixture(scope="module")
def run():
    return train()


def unknown_grouping(tmp_path, run):
    """The port's file with one parameter moved between groups: sizes no known grouping has."""
    positional = run.optimizer.state_dict()
    positional["param_groups"][0]["params"].append(positional["param_groups"][1]["params"].pop())
    return save(port_pth_dict(run, optimizer=positional), tmp_path / "unknown.pth")


def test_unknown_grouping_reads_with_the_optimizer_kept_aside(tmp_path, run):
    path = unknown_grouping(tmp_path, run)
    ckpt = jitckpt.load(path)
    assert ckpt.optimizer is None  # nothing attached by guess
    assert "fit no known grouping" in ckpt.unmapped_optimizer.reason
    assert ckpt.epoch == EPOCH and ckpt.global_step == GLOBAL_STEP and ckpt.model_ema1 is not None
    info = summarize(path)
    assert info["optimizer"]["mappable"] is False and info["optimizer"]["grouping"] is None
    assert "sizes [24, 32]" in info["optimizer"]["unmappable_reason"]
    assert [g["size"] for g in info["optimizer"]["param_groups"]] == [24, 32] and info["optimizer"]["step"] == 2
    table = CliRunner().invoke(app, ["inspect", str(path)])
    assert table.exit_code == 0
    flat = " ".join(table.stdout.split())
    assert "present but unmappable" in flat and "fit no known grouping" in flat and "--drop-optimizer" in flat
    as_json = json.loads(CliRunner().invoke(app, ["inspect", str(path), "--json"]).stdout)
    assert as_json["optimizer"]["mappable"] is False and as_json["optimizer"]["unmappable_reason"]


@pytest.mark.parametrize("target", ["out.pth", "out.ckpt", "out.safetensors"])
def test_convert_refuses_with_one_line_offering_drop_optimizer(tmp_path, run, target):
    path = unknown_grouping(tmp_path, run)
    result = CliRunner().invoke(app, ["convert", str(path), "-o", str(tmp_path / target)])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert str(path) in result.stderr and "--drop-optimizer" in result.stderr and "fit no known grouping" in result.stderr
    assert "drop_optimizer=True" not in result.stderr  # the CLI's user reads the CLI's terms
    assert not (tmp_path / target).exists() and sorted(os.listdir(tmp_path)) == ["unknown.pth"]
    with pytest.raises(SchemaError, match="drop_optimizer=True"):
        jitckpt.convert(path, tmp_path / target)
    result = CliRunner().invoke(app, ["convert", str(path), "-o", str(tmp_path / target), "--drop-optimizer"])
    assert result.exit_code == 0, result.output
    back = jitckpt.load(tmp_path / target)
    assert back.optimizer is None and back.unmapped_optimizer is None and back.model_ema2 is not None
    assert back.epoch == EPOCH and back.global_step == GLOBAL_STEP
    assert summarize(tmp_path / target)["optimizer"] is None


def test_weights_only_export_and_the_api_work_without_the_optimizer(tmp_path, run):
    path = unknown_grouping(tmp_path, run)
    out = jitckpt.convert(path, tmp_path / "ema1.safetensors", weights="ema1")
    assert jitckpt.load(out).is_weights_only
    ckpt = jitckpt.load(path, lazy=True)
    with pytest.raises(SchemaError, match="pass drop_optimizer=True") as refused:
        jitckpt.save(ckpt, tmp_path / "x.ckpt")
    assert "--drop-optimizer" not in str(refused.value)  # the API's user reads the API's terms
    assert not (tmp_path / "x.ckpt").exists()
    jitckpt.save(ckpt, tmp_path / "x.ckpt", drop_optimizer=True)
    assert jitckpt.load(tmp_path / "x.ckpt").optimizer is None
    assert ckpt.unmapped_optimizer is not None  # the checkpoint given to save is left as it was


def test_verify_checks_the_unmapped_moments_too(tmp_path, run):
    path = unknown_grouping(tmp_path, run)
    tensors = [name for name, _ in jitckpt.api.iter_tensors(jitckpt.load(path, lazy=True))]
    assert "optimizer/#0/exp_avg" in tensors
    result = CliRunner().invoke(app, ["verify", str(path)])
    assert result.exit_code == 0 and "intact" in result.stdout
    assert CliRunner().invoke(app, ["verify", str(path), str(path)]).exit_code == 0


def test_an_ambiguous_grouping_is_not_guessed_and_drop_optimizer_converts(tmp_path, run, monkeypatch):
    twin = dataclasses.replace(groupings.SEED_PORT, name="seed port twin")
    monkeypatch.setattr(groupings, "GROUPINGS", groupings.GROUPINGS + (twin,))
    path = save(port_pth_dict(run), tmp_path / "port.pth")
    ckpt = jitckpt.load(path, lazy=True)
    assert ckpt.optimizer is None and "more than one known grouping" in ckpt.unmapped_optimizer.reason
    assert summarize(path)["optimizer"]["mappable"] is False
    result = CliRunner().invoke(app, ["convert", str(path), "-o", str(tmp_path / "out.pth")])
    assert result.exit_code == 2 and "--drop-optimizer" in result.stderr and not (tmp_path / "out.pth").exists()
    result = CliRunner().invoke(app, ["convert", str(path), "-o", str(tmp_path / "out.pth"), "--drop-optimizer"])
    assert result.exit_code == 0 and "without the optimizer" in result.stdout
    assert jitckpt.load(tmp_path / "out.pth").optimizer is None
