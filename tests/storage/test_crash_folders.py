"""Folder writes (a DCP directory, a diffusers export) SIGKILLed at random moments: the target is the old folder
or the complete new one, never a mix, and the next write removes what the killed writer left."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import GOLDEN

# Kills per kind (JITCKPT_CRASH_KILLS=N scales them for a longer campaign). A DCP write starts torch
# (about 2 s), so each of its kills costs four times a diffusers one: it gets fewer.
KILLS = {"dcp": 6, "diffusers": 10}
SCALE = int(os.environ.get("JITCKPT_CRASH_KILLS", "20")) / 20
COMMANDS = {
    "dcp": lambda src, out: ["convert", str(src), "-o", str(out), "--to", "dcp", "--shards", "2", "--force"],
    "diffusers": lambda src, out: ["export", str(src), "-o", str(out), "--layout", "diffusers", "--diffusers-names",
                                   "split", "--no-samples", "--force"],
}


def digest(folder: Path) -> dict[str, str]:
    """Every file of a folder (relative path -> SHA-256); the model card's and metadata's dates aside."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def write(args: list[str], cwd: Path, kill_after: float | None = None) -> int:
    proc = subprocess.Popen([sys.executable, "-m", "jitckpt", *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    if kill_after is not None:
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
    return proc.wait(timeout=120)


@pytest.mark.parametrize("kind", COMMANDS)
def test_random_kills_of_a_folder_write_leave_old_or_new(tmp_path, kind):
    target = tmp_path / "target"
    other = tmp_path / "other.pth"  # the old folder is written from another source: old and new differ
    subprocess.run([sys.executable, "-m", "jitckpt", "convert", str(GOLDEN), "-o", str(other), "--drop-optimizer"],
                   check=True, capture_output=True)
    assert write(COMMANDS[kind](GOLDEN, target), tmp_path) == 0
    new = digest(target)
    started = time.perf_counter()
    assert write(COMMANDS[kind](other, target), tmp_path) == 0
    seconds = time.perf_counter() - started
    old = digest(target)
    assert old != new
    rng = random.Random(f"folders-{kind}")
    outcomes = {"old": 0, "new": 0}
    for _ in range(max(1, round(KILLS[kind] * SCALE))):
        write(COMMANDS[kind](GOLDEN, target), tmp_path, kill_after=rng.uniform(0.0, seconds))
        now = digest(target)
        assert now in (old, new), "torn folder: neither the old one nor the new one"
        outcomes["old" if now == old else "new"] += 1
        strays = [p.name for p in tmp_path.iterdir() if p.name not in ("target", "other.pth")]
        assert all(name.startswith(".target.jitckpt-") and name.endswith(".tmp") for name in strays), strays
        assert write(COMMANDS[kind](other, target), tmp_path) == 0  # the next write cleans up and restores old
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
        assert digest(target) == old
    print(f"{kind}: {outcomes}")
