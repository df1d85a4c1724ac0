"""Running the corpus: every input through ``inspect``, ``convert`` and ``verify``, each in its own process.

:class:`WorkerPool` keeps fork servers (:mod:`tests.hostile.worker`) with
jitckpt imported; :func:`run_corpus` gives each item its own folder, writes
its bytes there, runs each command with its own working folder (where a
gadget's canary would land), records what came out, and deletes the folder.
Nothing outlives :func:`run_corpus` or a ``with WorkerPool()`` block.

Memory: a forked ``jitckpt inspect`` needs ~45 MB of address space and its
worker ~100 MB; importing torch adds ~3.2 GB of address space (and ~300 MB
resident), which ``verify A B`` does when it describes a difference. So the
comparisons run in workers that imported torch before forking, everything
else in light workers (a fork of a torch-holding process costs ~25 ms more),
and every run may grow its worker's address space by ``HEADROOM_BYTES``:
2.1 GB in all for a light run, far above what a legitimate run uses, far
below what a bomb takes.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .items import CANARY, CorpusItem

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 30.0
HEADROOM_BYTES = 2 << 30  # address space a run may add to its forked worker's
OUTPUT_CAP = 64 << 10
TORCH_COMMANDS = {"verify_ref"}  # a comparison that finds a difference imports torch to describe it


class WorkerPool:
    """``size`` light fork servers and ``size`` holding torch; :meth:`run` is thread-safe."""

    def __init__(self, size: int = 2, timeout: float = TIMEOUT_S, headroom: int = HEADROOM_BYTES) -> None:
        self.size, self.timeout, self.headroom = size, timeout, headroom
        self._procs: list[subprocess.Popen] = []
        self._idle: dict[bool, queue.Queue[subprocess.Popen]] = {False: queue.Queue(), True: queue.Queue()}
        try:
            kinds = [False] * size + [True] * size
            self._procs = [self._start(with_torch) for with_torch in kinds]
            for with_torch, proc in zip(kinds, self._procs):
                ready = proc.stdout.readline()
                if not ready.startswith('{"ready"'):
                    raise RuntimeError(f"hostile worker did not start: {ready!r}")
                self._idle[with_torch].put(proc)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _start(with_torch: bool) -> subprocess.Popen:
        env = {**os.environ, "JITCKPT_HOSTILE_TORCH": "1" if with_torch else "0"}
        return subprocess.Popen([sys.executable, "-m", "tests.hostile.worker"], cwd=REPO, env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def run(self, argv: list[str], cwd: Path, stdout: Path, stderr: Path,
            extensions: Iterable[tuple[str, str, int]] = (), with_torch: bool = False) -> dict[str, Any]:
        """Run ``jitckpt ARGV`` in ``cwd``; the worker's result dict (exit, signal, timed_out, ...)."""
        job = {"argv": argv, "cwd": str(cwd), "stdout": str(stdout), "stderr": str(stderr),
               "timeout": self.timeout, "headroom": self.headroom, "extensions": [list(e) for e in extensions]}
        idle = self._idle[with_torch]
        proc = idle.get()
        try:
            proc.stdin.write(json.dumps(job) + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"hostile worker {proc.pid} died (exit {proc.poll()})")
            return json.loads(line)
        finally:
            idle.put(proc)

    def close(self) -> None:
        """Stop every worker: end of input, then a kill for any that lingers."""
        for proc in self._procs:
            try:
                proc.stdin.close()
            except OSError:
                pass
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        self._procs = []

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()


@dataclass
class Outcome:
    """What one command did with one input."""

    command: str
    exit: int | None
    signal: int | None
    timed_out: bool
    seconds: float
    rss_growth_mb: float
    limit_mb: int
    stdout: str
    stderr: str
    canary: bool
    input_changed: bool = False
    with_torch: bool = False
    leftovers: list[str] = field(default_factory=list)
    output_sha256: str | None = None


def commands(item: CorpusItem, input_name: str) -> dict[str, list[str]]:
    """The commands an item goes through: argv by command name."""
    out_name = "out.pth" if item.is_safetensors else "out.safetensors"
    runs = {"inspect": ["inspect", input_name], "convert": ["convert", input_name, "-o", out_name],
            "verify": ["verify", input_name]}
    if item.compare_to is not None:
        runs["verify_ref"] = ["verify", input_name, str(item.compare_to)]
    return runs


def run_item(pool: WorkerPool, item: CorpusItem, folder: Path) -> dict[str, Outcome]:
    """Run every command on ``item`` inside ``folder`` (created here, deleted before returning)."""
    input_name = "input" + item.suffix
    folder.mkdir(parents=True)
    try:
        (folder / input_name).write_bytes(item.render())
        outcomes = {}
        for command, argv in commands(item, input_name).items():
            run_dir = folder / command
            outcome = _run_command(pool, item, command, argv, run_dir, input_name, command in TORCH_COMMANDS)
            if not outcome.with_torch and _failed_to_import_torch(outcome):
                shutil.rmtree(run_dir)  # a light worker cannot map torch under its limit: run it where torch is
                outcome = _run_command(pool, item, command, argv, run_dir, input_name, True)
            outcomes[command] = outcome
        return outcomes
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_command(pool: WorkerPool, item: CorpusItem, command: str, argv: list[str], run_dir: Path,
                 input_name: str, with_torch: bool) -> Outcome:
    """One command on the item's input, in ``run_dir`` (created here, with a link to the input)."""
    run_dir.mkdir()
    os.link(run_dir.parent / input_name, run_dir / input_name)
    out, err = run_dir.parent / f"{command}.stdout", run_dir.parent / f"{command}.stderr"
    before = _identity(run_dir / input_name)
    raw = pool.run(argv, run_dir, out, err, item.extensions, with_torch=with_torch)
    outcome = _observe(command, raw, run_dir, input_name, out, err, argv)
    outcome.input_changed = _identity(run_dir / input_name) != before
    outcome.with_torch = with_torch
    return outcome


def _failed_to_import_torch(o: Outcome) -> bool:
    """A run that imported torch and could not map it under a light worker's address-space limit."""
    return "Traceback" in o.stderr and ("failed to map segment" in o.stderr or
                                        ("ImportError" in o.stderr and "torch" in o.stderr))


def _identity(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime) of ``path``: changes if a command rewrote or replaced its input."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _observe(command: str, raw: dict[str, Any], run_dir: Path, input_name: str, out: Path, err: Path,
             argv: list[str]) -> Outcome:
    produced = argv[3] if command == "convert" else None
    canary = any(run_dir.glob(f"*{CANARY}*")) or any(run_dir.parent.glob(f"*{CANARY}*"))
    names = sorted(p.name for p in run_dir.iterdir() if p.name not in (input_name, CANARY))
    digest = None
    if produced and raw["exit"] == 0 and (run_dir / produced).is_file():
        digest = hashlib.sha256((run_dir / produced).read_bytes()).hexdigest()
        names.remove(produced)
    return Outcome(command=command, stdout=_read(out), stderr=_read(err), canary=canary, leftovers=names,
                   output_sha256=digest, **raw)


def _read(path: Path) -> str:
    """A run's output: whole, or its first and last ``OUTPUT_CAP / 2`` bytes (a traceback ends at the end)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(0)
            if size <= OUTPUT_CAP:
                data = f.read()
            else:
                head = f.read(OUTPUT_CAP // 2)
                f.seek(size - OUTPUT_CAP // 2)
                data = head + b"\n[...]\n" + f.read()
    except FileNotFoundError:
        return ""
    return data.decode("utf-8", "replace")


def run_corpus(pool: WorkerPool, items: list[CorpusItem], root: Path,
               progress: Callable[[int], None] | None = None) -> list[dict[str, Outcome]]:
    """Run every item (two at a time, one per worker); outcomes in item order. ``root`` is left empty."""
    root.mkdir(parents=True, exist_ok=True)

    def one(index: int) -> dict[str, Outcome]:
        result = run_item(pool, items[index], root / f"{index:05d}")
        if progress:
            progress(index)
        return result

    with ThreadPoolExecutor(max_workers=pool.size) as executor:
        return list(executor.map(one, range(len(items))))
