"""FSDP2 (ModelParallelStrategy) with two CPU processes: the EMA lives on shards, and
consolidated it equals the EMA of the same run without sharding (DDP, same data and noise)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import jitckpt
from jitckpt.model.jit import JiT

SCRIPT = Path(__file__).with_name("fsdp_train.py")


def run(tmp_path, mode, *extra):
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parents[2])}
    result = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), mode, *map(str, extra)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(tmp_path / f"{mode}.pt")


def test_fsdp2_ema_on_shards_equals_unsharded_ema(tmp_path, inception_weights):
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    rng = np.random.default_rng(2)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(ref_dir / f"{i}.png")
    sharded, plain = run(tmp_path, "fsdp", inception_weights, ref_dir), run(tmp_path, "ddp")
    assert sharded["sharded"] and not plain["sharded"]
    assert sum(sharded["local_sizes"]) < sum(plain["local_sizes"])  # each rank holds part of the EMA
    for key in ("ema1", "ema2", "raw"):  # reduce-scatter and all-reduce sum in different orders
        for name, tensor in plain[key].items():
            torch.testing.assert_close(sharded[key][name], tensor, rtol=0, atol=1e-8)
    saved = jitckpt.load(tmp_path / "fsdp" / "checkpoint-last.pth")  # gathered full state, original format
    assert saved.epoch == 1 and saved.global_step == 6
    assert all(torch.equal(saved.model_ema1[n], t) for n, t in sharded["ema1"].items())
    assert all(torch.equal(saved.model[n], t) for n, t in sharded["raw"].items())
    assert jitckpt.load(tmp_path / "ddp" / "checkpoint-last.pth", lazy=True).optimizer["param_groups"][1]["params"] \
        == saved.optimizer["param_groups"][1]["params"]
    # swap_ema on DTensor parameters: the sharded network computes what an unsharded one holding EMA 1 does,
    # and its raw weights are back, bit for bit, afterwards
    net = JiT(saved.arch)
    net.load_state_dict({n.removeprefix("net."): t for n, t in sharded["ema1"].items()})
    with torch.no_grad():
        expected = net(*sharded["probe"])
    torch.testing.assert_close(sharded["swapped"], expected, rtol=0, atol=1e-5)
    assert all(torch.equal(sharded["after_swap"][n], t) for n, t in sharded["raw"].items())
    # FIDEvaluationCallback under FSDP2 (uneven batches per process): scored every epoch on rank zero
    assert [h["epoch"] for h in sharded["fid"]] == [0, 1]
    assert all(h["fid"] > 0 and h["inception_score"] > 0 for h in sharded["fid"])
