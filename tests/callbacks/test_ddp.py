"""DDP with two CPU processes: identical EMAs on both ranks, one writer per file, no hang."""

import os
import subprocess
import sys
from pathlib import Path

import torch

import jitckpt

SCRIPT = Path(__file__).with_name("ddp_train.py")


def test_ddp_two_cpu_processes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parents[2])}
    result = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert rank0["global_step"] == rank1["global_step"] == 6  # 12 images, 2 ranks x batch 2
    assert all(torch.equal(a, b) for a, b in zip(rank0["params"], rank1["params"]))
    for key in ("ema1", "ema2"):
        assert all(torch.equal(a, b) for a, b in zip(rank0[key], rank1[key]))
    names = sorted(Path(p).name for p in rank0["written"])
    assert names == ["checkpoint-1.pth", "checkpoint-last.ckpt", "checkpoint-last.ckpt",
                     "checkpoint-last.pth", "checkpoint-last.pth"]  # epochs 0 and 1
    assert rank1["written"] == []  # only rank zero writes
    saved = jitckpt.load(tmp_path / "ckpt" / "checkpoint-last.pth")
    assert saved.epoch == 1 and saved.global_step == 6
    assert all(torch.equal(saved.model_ema1[n], e) for n, e in zip(saved.model, rank0["ema1"]))
