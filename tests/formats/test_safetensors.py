"""safetensors: pickle-free full state, and weights-only exports any consumer can use."""

import json
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import jitckpt
from tests.helpers import jit_shaped_module, load_golden_torch


def test_full_state_opens_with_safe_open_and_holds_no_pickle(golden, tmp_path):
    path = jitckpt.convert(golden, tmp_path / "state.safetensors")
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    assert b"\x80\x02" not in data[: 8 + length] and not data.startswith(b"PK")
    meta = header["__metadata__"]
    assert meta["jitckpt.kind"] == "training-state" and json.loads(meta["jitckpt.epoch"]) == 1
    golden_dict = load_golden_torch()
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        assert torch.equal(f.get_tensor("model_ema2/net.blocks.2.mlp.w3.weight"),
                           golden_dict["model_ema2"]["net.blocks.2.mlp.w3.weight"])
    assert len([k for k in keys if k.startswith("optimizer/")]) == 56 * 3


@pytest.mark.parametrize("which,section", [("raw", "model"), ("ema1", "model_ema1"), ("ema2", "model_ema2")])
def test_weights_only_export_is_usable_without_jitckpt(golden, tmp_path, which, section):
    path = jitckpt.convert(golden, tmp_path / f"{which}.safetensors", weights=which)
    weights = load_file(str(path))  # a consumer that knows nothing of jitckpt
    arch = jitckpt.load(golden, lazy=True).arch
    module = jit_shaped_module(arch)
    module.load_state_dict(weights, strict=True)
    golden_dict = load_golden_torch()
    assert all(torch.equal(weights[k], v) for k, v in golden_dict[section].items())
    back = jitckpt.load(path)
    assert back.is_weights_only and back.extra["weights"] == which and back.epoch == 1


def test_foreign_safetensors_with_wrapped_keys_reads_as_weights(golden, tmp_path):
    from safetensors.torch import save_file

    golden_dict = load_golden_torch()
    save_file({f"module.{k}": v.contiguous() for k, v in golden_dict["model"].items()}, str(tmp_path / "w.safetensors"))
    ckpt = jitckpt.load(tmp_path / "w.safetensors")
    assert list(ckpt.model) == list(golden_dict["model"]) or set(ckpt.model) == set(golden_dict["model"])
    for key, value in golden_dict["model"].items():  # each wrapped key's tensor, under its canonical name
        assert ckpt.model[key].dtype == value.dtype and torch.equal(ckpt.model[key], value), key
    assert ckpt.model_ema1 is None and ckpt.optimizer is None
