"""The seed port's own files (issue 8, part 1): its .pth and its EMA-less .ckpt read, inspect and convert."""

import argparse
import json

import pytest
import torch
from typer.testing import CliRunner

import jitckpt
from jitckpt.cli import app
from jitckpt.layouts.groupings import ORIGINAL, SEED_PORT, grouping_of
from jitckpt.inspection.summary import summarize
from jitckpt.tensors.anytensor import to_torch
from tests.helpers import original_resume
from tests.seed_port import ARCH, EPOCH, GLOBAL_STEP, LR, WEIGHT_DECAY, port_ckpt, port_pth, train

SAFE = [argparse.Namespace]  # what the original's args need beyond torch's default allowlist


@pytest.fixture(scope="module")
def run():
    return train()


def assert_moments_by_name(ckpt, run):
    """Every AdamW moment of ``ckpt`` is the one the optimizer held for that very parameter."""
    assert set(ckpt.optimizer["state"]) == set(run.moments)
    for name, recorded in run.moments.items():
        state = ckpt.optimizer["state"][name]
        for slot in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(to_torch(state[slot]), recorded[slot]), (name, slot)


def test_port_pth_inspects_with_its_grouping_step_and_hyper_parameters(tmp_path, run):
    path = port_pth(tmp_path, run)
    info = summarize(path)
    assert info["format"] == "pth" and info["epoch"] == EPOCH and info["global_step"] == GLOBAL_STEP
    assert info["sections"] == {"raw": True, "ema1": True, "ema2": True}
    opt = info["optimizer"]
    assert opt["mappable"] and opt["grouping"] == "seed port" and opt["unmappable_reason"] is None
    assert [g["size"] for g in opt["param_groups"]] == [23, 33] and opt["step"] == 2
    assert [g["weight_decay"] for g in opt["param_groups"]] == [WEIGHT_DECAY, 0.0]
    args = info["all_args"]
    assert {k: args[k] for k in ("model", "class_num", "lr", "blr", "cfg", "interval_min", "interval_max")} == {
        "model": "JiT-T/4", "class_num": 10, "lr": LR, "blr": 5e-5, "cfg": 2.9, "interval_min": 0.1,
        "interval_max": 1.0}
    assert args["num_sampling_steps"] == 50 and "learning_rate" not in args and "cfg_interval" not in args
    table = CliRunner().invoke(app, ["inspect", str(path)])
    assert table.exit_code == 0, table.output
    flat = " ".join(table.stdout.split())  # the table wraps long rows at the terminal's width
    assert "groups of 23, 33; the seed port grouping" in flat and f"global step {GLOBAL_STEP} " in flat
    as_json = CliRunner().invoke(app, ["inspect", str(path), "--json"])
    assert json.loads(as_json.stdout)["optimizer"]["grouping"] == "seed port"


def test_port_pth_keeps_its_hyper_parameters_and_what_has_no_counterpart(tmp_path, run):
    from tests.seed_port import port_hparams, port_pth_dict, save

    path = save(port_pth_dict(run, hyper_parameters=port_hparams(scheduler_name="warmup")), tmp_path / "p.pth")
    ckpt = jitckpt.load(path, lazy=True)
    assert "scheduler_name" not in ckpt.args
    kept = ckpt.extra["original"]["hyper_parameters"]
    assert kept["scheduler_name"] == "warmup" and kept["cfg_interval"] == (0.1, 1.0)
    assert "global_step" not in ckpt.extra["original"]  # it is the field, not extra


def test_port_pth_to_safetensors_puts_every_moment_under_its_parameter(tmp_path, run):
    out = jitckpt.convert(port_pth(tmp_path, run), tmp_path / "port.safetensors")
    ckpt = jitckpt.load(out)
    assert_moments_by_name(ckpt, run)
    assert grouping_of(ckpt.optimizer, ckpt.arch) is SEED_PORT  # lossless: the port's groups, by name
    assert ckpt.global_step == GLOBAL_STEP and ckpt.epoch == EPOCH
    assert summarize(out)["optimizer"]["grouping"] == "seed port"


@pytest.mark.parametrize("via", [None, "ckpt", "safetensors"])
def test_port_pth_to_original_pth_resumes_in_the_original_code(tmp_path, run, via):
    source = port_pth(tmp_path, run)
    if via:
        source = jitckpt.convert(source, tmp_path / f"mid.{via}")
    out = jitckpt.convert(source, tmp_path / "out.pth")
    with torch.serialization.safe_globals(SAFE):
        raw = torch.load(out, weights_only=True)
    assert [len(g["params"]) for g in raw["optimizer"]["param_groups"]] == [len(n) for n in ORIGINAL.names(ARCH)]
    assert [g["weight_decay"] for g in raw["optimizer"]["param_groups"]] == [0.0, WEIGHT_DECAY]
    resumed = original_resume(out, ARCH, weight_decay=WEIGHT_DECAY, lr=LR)
    assert resumed["start_epoch"] == EPOCH + 1
    assert resumed["args"].model == "JiT-T/4" and resumed["args"].lr == LR
    optimizer = resumed["optimizer"]
    for name, param in resumed["model"].named_parameters():
        assert torch.equal(param, run.model.state_dict()[name])
        if name in run.moments:  # the moment landed on the parameter it belongs to
            for slot in ("exp_avg", "exp_avg_sq", "step"):
                assert torch.equal(optimizer.state[param][slot], run.moments[name][slot]), (name, slot)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.0, WEIGHT_DECAY]
    for (name, _), ema1, ema2 in zip(resumed["model"].named_parameters(), resumed["ema1"], resumed["ema2"]):
        assert torch.equal(ema1, run.ema1[name]) and torch.equal(ema2, run.ema2[name])
    back = jitckpt.load(out)
    assert back.global_step == GLOBAL_STEP and grouping_of(back.optimizer, ARCH) is ORIGINAL
    assert_moments_by_name(back, run)
    assert jitckpt.compare(jitckpt.load(port_pth(tmp_path, run, "again.pth"), lazy=True), back) == []


def test_port_ckpt_reads_without_emas_and_converts(tmp_path, run):
    path = port_ckpt(tmp_path, run)
    ckpt = jitckpt.load(path)
    assert ckpt.model_ema1 is None and ckpt.model_ema2 is None
    assert ckpt.epoch == EPOCH and ckpt.global_step == GLOBAL_STEP
    assert ckpt.args["model"] == "JiT-T/4" and ckpt.args["lr"] == LR and ckpt.args["interval_min"] == 0.1
    assert_moments_by_name(ckpt, run)
    info = summarize(path)
    assert info["sections"] == {"raw": True, "ema1": False, "ema2": False}
    assert info["optimizer"]["grouping"] == "seed port"
    table = CliRunner().invoke(app, ["inspect", str(path)])
    flat = " ".join(table.stdout.split())
    assert table.exit_code == 0 and "EMA 1 absent EMA 2 absent" in flat
    for target in ("out.pth", "out.safetensors", "out.ckpt"):
        out = jitckpt.convert(path, tmp_path / target)
        back = jitckpt.load(out)
        assert back.model_ema1 is None and back.model_ema2 is None and back.global_step == GLOBAL_STEP
        assert_moments_by_name(back, run)
    with torch.serialization.safe_globals(SAFE):
        raw = torch.load(tmp_path / "out.ckpt", weights_only=True)
    assert [len(g["params"]) for g in raw["optimizer_states"][0]["param_groups"]] == [33, 23]  # JiTLightningModule's


def test_weights_only_export_of_the_port_files(tmp_path, run):
    for source in (port_pth(tmp_path, run), port_ckpt(tmp_path, run)):
        out = jitckpt.convert(source, tmp_path / f"{source.name}-raw.safetensors", weights="raw")
        assert jitckpt.load(out).is_weights_only
