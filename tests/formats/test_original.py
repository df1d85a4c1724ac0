"""A .pth written by jitckpt loads in the original resume code unchanged."""

import argparse

import pytest
import torch

import jitckpt
from tests.helpers import load_golden_torch, original_resume


@pytest.mark.parametrize("via", [None, ".ckpt", ".safetensors"])
def test_written_pth_passes_original_resume_code(golden, tmp_path, via):
    source = golden if via is None else jitckpt.convert(golden, tmp_path / f"mid{via}")
    path = jitckpt.convert(source, tmp_path / "resumed.pth") if via else jitckpt.convert(
        golden, tmp_path / "out.pth", to="pth")
    arch = jitckpt.load(golden, lazy=True).arch
    resumed = original_resume(path, arch)
    golden_dict = load_golden_torch()
    assert resumed["start_epoch"] == 2
    assert resumed["args"] == golden_dict["args"]
    for (name, param), ema1, ema2 in zip(resumed["model"].named_parameters(), resumed["ema1"], resumed["ema2"]):
        assert torch.equal(param, golden_dict["model"][name])
        assert torch.equal(ema1, golden_dict["model_ema1"][name]) and torch.equal(ema2, golden_dict["model_ema2"][name])
    optimizer = resumed["optimizer"]
    assert [len(g["params"]) for g in optimizer.param_groups] == [33, 23]
    state = optimizer.state[optimizer.param_groups[1]["params"][0]]  # net.in_context_posemb
    assert torch.equal(state["exp_avg"], golden_dict["optimizer"]["state"][33]["exp_avg"])
    assert float(state["step"]) == 6.0


def test_written_pth_loads_with_weights_only_and_mmap(golden, tmp_path):
    path = jitckpt.convert(golden, tmp_path / "x.pth", to="pth")
    with torch.serialization.safe_globals([argparse.Namespace]):
        loaded = torch.load(path, weights_only=True, mmap=True)
    assert set(loaded) == {"model", "optimizer", "epoch", "args", "model_ema1", "model_ema2", "jitckpt"}
    assert all(t.data_ptr() % 64 == 0 for t in loaded["model"].values())  # storages aligned as torch writes them


def test_golden_is_read_without_unsafe_loading(golden, monkeypatch):
    """jitckpt reads .pth files with its own allowlisting unpickler; torch.load is never asked to unpickle freely."""
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real_load(*a, **k))
    ckpt = jitckpt.load(golden)
    assert all(call.get("weights_only") is True for call in calls)
    golden_dict = load_golden_torch()  # the reference reader: weights_only=True with Namespace allowlisted
    assert all(torch.equal(ckpt.model[k], v) for k, v in golden_dict["model"].items())
