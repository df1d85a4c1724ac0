"""FSDP2 (ModelParallelStrategy) with two CPU processes: the EMA lives on shards, and
consolidated it equals the EMA of the same run without sharding (DDP, same data and noise)."""

import os
import subprocess
import sys
from pathlib import Path

import torch

import jitckpt

SCRIPT = Path(__file__).with_name("fsdp_train.py")


def run(tmp_path, mode):
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parents[2])}
    result = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), mode], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(tmp_path / f"{mode}.pt")


def test_fsdp2_ema_on_shards_equals_unsharded_ema(tmp_path):
    sharded, plain = run(tmp_path, "fsdp"), run(tmp_path, "ddp")
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
