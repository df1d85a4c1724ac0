"""Crash injection: SIGKILL a real conversion of a 262 MB checkpoint at random moments
and at each step of the commit, then check that the target is the old file or the
complete new one, and that the next write to it leaves nothing stray in the folder.

By default each format gets ``JITCKPT_CRASH_KILLS`` (20) random kills on the
``O_TMPFILE`` path and ``JITCKPT_CRASH_FALLBACK_KILLS`` (10, or half the former
when that is more) on the path without it, plus a kill at each commit step.
Raise the variables for a bigger campaign; ``JITCKPT_CRASH_SEED`` picks other
kill times.

Writers are forked from a helper process that has imported jitckpt once, so a
kill costs no interpreter start and lands, nearly always, while data is moving.
The campaign runs in ``/dev/shm`` when it has room: what a SIGKILL leaves does
not depend on the filesystem, and a hundred 262 MB writes would otherwise go to
the shared disk and double the run time. ``JITCKPT_CRASH_DIR`` runs it in another
folder, e.g. on the filesystem whose behaviour you want to check.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import torch

import jitckpt
from jitckpt.layouts.arch import expected_shapes, official
from tests.helpers import GOLDEN

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FORMATS = ("pth", "ckpt", "safetensors")
KILLS = int(os.environ.get("JITCKPT_CRASH_KILLS", "20"))
FALLBACK_KILLS = int(os.environ.get("JITCKPT_CRASH_FALLBACK_KILLS", str(max(10, KILLS // 2))))
SEED = os.environ.get("JITCKPT_CRASH_SEED", "0")
STEPS = ["synced", "linked", "renamed"]

# The helper: reads one job (JSON) per line, forks a writer for it and says "started";
# then on "kill" or "wait" kills it (or not) and reaps it, and says its exit code.
# Only the helper reaps its writers, so the pid it kills cannot have been reused.
ZYGOTE = textwrap.dedent("""
    import json, os, signal, sys, traceback
    import jitckpt, jitckpt.storage.temp

    def write(job):
        if job["fallback"]:
            del os.O_TMPFILE  # as on a filesystem without it: a named temporary file from the start
        steps = []
        def hook(step):
            steps.append(step)
            if step == job["kill_at"]:
                os.kill(os.getpid(), signal.SIGKILL)
        jitckpt.storage.temp.on_commit_step = hook
        jitckpt.convert(job["source"], job["target"], to=job["fmt"], force=True)
        with open(job["log"], "w") as log:
            json.dump(steps, log)

    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.dup2(os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
                write(job)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        print("started", flush=True)
        if sys.stdin.readline().strip() == "kill":
            os.kill(pid, signal.SIGKILL)  # a no-op if it has finished: it is not reaped yet
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
""")


class Writers:
    """Runs conversions in writers forked from the helper, and kills them."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
        self.count = 0

    def run(self, source: Path, target: Path, fmt: str, fallback: bool = False, *,
            kill_after: float | None = None, kill_at: str | None = None) -> tuple[int, str]:
        """Write ``target``; SIGKILL the writer ``kill_after`` seconds in, or at commit step ``kill_at``.

        Returns the writer's exit code (``-SIGKILL`` if the kill landed) and its log
        (the commit steps it passed, or its traceback).
        """
        self.count += 1
        log = self.logs / f"{self.count}.log"
        job = {"source": str(source), "target": str(target), "fmt": fmt, "fallback": fallback,
               "kill_at": kill_at, "log": str(log)}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline() == "started\n", "the helper process died"
        if kill_after is not None:
            time.sleep(kill_after)
        self.proc.stdin.write("kill\n" if kill_after is not None else "wait\n")
        self.proc.stdin.flush()
        code = int(self.proc.stdout.readline())
        return code, log.read_text() if log.exists() else ""

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="session")
def crash_root() -> Iterator[Path]:
    """A private folder for the campaign, removed at the end of the session."""
    base = os.environ.get("JITCKPT_CRASH_DIR")
    if base is None and os.path.isdir("/dev/shm") and shutil.disk_usage("/dev/shm").free > 4 << 30:
        base = "/dev/shm"
    root = Path(tempfile.mkdtemp(prefix="jitckpt-crash-", dir=base))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def writers(crash_root: Path) -> Iterator[Writers]:
    logs = crash_root / "logs"
    logs.mkdir()
    helper = Writers(logs)
    yield helper
    helper.close()


@pytest.fixture
def folder(crash_root: Path, request) -> Iterator[Path]:
    """An empty folder for one test's target, removed after it (it holds hundreds of MB)."""
    path = crash_root / re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def big_source(crash_root: Path) -> Path:
    """A weights-only JiT-B/16 state dict in float16: 262 MB, written once per session."""
    path = crash_root / "jit-b16-weights.pth"
    generator = torch.Generator().manual_seed(0)
    state = {key: torch.randn(shape, generator=generator).to(torch.float16)
             for key, shape in expected_shapes(official("JiT-B/16", 256, 1000)).items()}
    torch.save(state, path)
    return path


def temp_pattern(target: Path) -> re.Pattern[str]:
    """jitckpt's temporary names for ``target``: ``.{name}.jitckpt-{pid}-{hex}.tmp``."""
    return re.compile(rf"\.{re.escape(target.name)}\.jitckpt-[0-9]+-[0-9a-f]+\.tmp")


def file_sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Reference:
    sha: str  # of an unkilled conversion's output
    size: int
    seconds: float  # how long an unkilled conversion takes (the faster of two)


_references: dict[str, Reference] = {}


def reference(writers: Writers, big_source: Path, fmt: str) -> Reference:
    """Run unkilled conversions to ``fmt`` (once per session) and measure them.

    Both paths write the same bytes (the kills at the commit steps check that on
    the fallback path) and take about as long.
    """
    if fmt not in _references:
        target = big_source.parent / f"reference-{fmt}" / f"target.{fmt}"  # the name goes into the file
        target.parent.mkdir()
        times, shas = [], set()
        for _ in range(2):
            started = time.monotonic()
            code, log = writers.run(big_source, target, fmt)
            times.append(time.monotonic() - started)
            assert code == 0, log
            assert json.loads(log) == STEPS
            shas.add(file_sha(target))
        assert len(shas) == 1, "two conversions of one source differ"
        _references[fmt] = Reference(shas.pop(), target.stat().st_size, min(times))
        shutil.rmtree(target.parent)
    return _references[fmt]


_golden: list[jitckpt.JiTCheckpoint] = []


def write_old(target: Path, fmt: str) -> str:
    """One normal write to ``target`` (the golden checkpoint in ``fmt``); the folder then holds it alone."""
    if not _golden:
        _golden.append(jitckpt.load(GOLDEN))  # in memory: saving it takes 10-20 ms
    jitckpt.save(_golden[0], target, fmt, force=True)
    assert os.listdir(target.parent) == [target.name], "the write left something beside the target"
    return file_sha(target)


def check_after_kill(target: Path, old_sha: str, new: Reference) -> str:
    """The target is the old file or the complete new one; anything else there is a temporary of jitckpt."""
    pattern = temp_pattern(target)
    strays = [name for name in os.listdir(target.parent) if name != target.name]
    assert all(pattern.fullmatch(name) for name in strays), f"unexpected files: {strays}"
    assert len(strays) <= 1, strays
    size = target.stat().st_size
    if size == new.size and file_sha(target) == new.sha:
        return "new"
    assert file_sha(target) == old_sha, f"torn target: {size} bytes, neither the old file nor the new one"
    return "old"


@pytest.mark.parametrize("fallback", [False, True], ids=["o_tmpfile", "fallback"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_random_kills_leave_old_or_new_and_next_write_cleans(writers, big_source, folder, fmt, fallback):
    new = reference(writers, big_source, fmt)
    target = folder / f"target.{fmt}"
    old_sha = write_old(target, fmt)
    rng = random.Random(f"{SEED}-{fmt}-{fallback}")
    tally = {"killed": 0, "old": 0, "new": 0, "temp left": 0}
    for _ in range(FALLBACK_KILLS if fallback else KILLS):
        code, log = writers.run(big_source, target, fmt, fallback, kill_after=rng.uniform(0.0, new.seconds))
        assert code in (0, -signal.SIGKILL), log
        tally["killed"] += code == -signal.SIGKILL
        tally["temp left"] += len(os.listdir(folder)) > 1
        tally[check_after_kill(target, old_sha, new)] += 1
        old_sha = write_old(target, fmt)  # removes what the killed writer left
    print(f"{fmt} {'fallback' if fallback else 'O_TMPFILE'} ({new.seconds:.2f} s a write): {tally}")


@pytest.mark.parametrize("fallback", [False, True], ids=["o_tmpfile", "fallback"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_kill_at_each_commit_step(writers, big_source, folder, fmt, fallback):
    new = reference(writers, big_source, fmt)
    target = folder / f"target.{fmt}"
    # Without O_TMPFILE the file is named from the start, so "linked" is the moment of
    # "synced", and the rename is the same code on both paths.
    for step in ["synced"] if fallback else STEPS:
        old_sha = write_old(target, fmt)
        code, log = writers.run(big_source, target, fmt, fallback, kill_at=step)
        assert code == -signal.SIGKILL, log
        outcome = check_after_kill(target, old_sha, new)
        strays = [name for name in os.listdir(folder) if name != target.name]
        if step == "renamed":
            assert outcome == "new" and strays == []
        else:
            assert outcome == "old"
            # the unnamed file of the fast path vanishes with its writer; a named one stays
            assert len(strays) == (0 if step == "synced" and not fallback else 1), (step, strays)
            if strays:  # complete and fsynced: the very bytes that were about to replace the target
                assert file_sha(folder / strays[0]) == new.sha
        write_old(target, fmt)
