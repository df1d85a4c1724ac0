"""DDP with two CPU processes: identical EMAs on both ranks, one writer per file, no hang."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import jitckpt

SCRIPT = Path(__file__).with_name("ddp_train.py")


def test_ddp_two_cpu_processes(tmp_path, inception_weights):
    rng = np.random.default_rng(3)
    (tmp_path / "ref").mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "ref" / f"{i}.png")
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parents[2])}
    result = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), str(inception_weights), str(tmp_path / "ref")],
                            env=env, capture_output=True, text=True, timeout=600)
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
    assert [h["epoch"] for h in rank0["fid_history"]] == [0, 1] and rank1["fid_history"] == []  # rank zero scores
    assert all(h["fid"] > 0 for h in rank0["fid_history"])
    saved = jitckpt.load(tmp_path / "ckpt" / "checkpoint-last.pth")
    assert saved.epoch == 1 and saved.global_step == 6
    assert all(torch.equal(saved.model_ema1[n], e) for n, e in zip(saved.model, rank0["ema1"]))
