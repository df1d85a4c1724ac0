"""A fork server for the hostile corpus: ``python -m tests.hostile.worker``.

It imports ``jitckpt.cli`` (and, with ``JITCKPT_HOSTILE_TORCH=1``, torch) once, then
reads one JSON job per line on stdin and answers one JSON result per line on
stdout. Each job runs in a fresh ``fork()`` of this process: its own process
group and working folder, fds 1 and 2 redirected to files, an address-space
limit of (this process's size + ``headroom``), and a timeout after which the
whole group is killed. The Typer app runs in-process, so a run costs a fork,
not a Python start-up (~0.3 s) and imports.
"""

from __future__ import annotations

import copyreg
import json
import os
import resource
import signal
import sys
import time
import traceback
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _vm_size() -> int:
    """Virtual size of this process in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * _PAGE


def _run_app(argv: list[str]) -> int:
    """Run ``jitckpt ARGV`` in this process; its exit code (1 and a traceback on an uncaught exception)."""
    from jitckpt.cli import app

    try:
        app(argv, prog_name="jitckpt", standalone_mode=True)
        return 0
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except BaseException:  # noqa: BLE001 - the point is to see every escape
        try:
            traceback.print_exc()
        except BaseException:  # noqa: BLE001 - e.g. MemoryError while formatting
            os.write(2, b"Traceback (most recent call last):\n  <unprintable>\nMemoryError\n")
        return 1


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this child if its worker dies (an interrupted test run leaves no orphan)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child(job: dict[str, Any], limit: int) -> None:
    """In the forked child: isolate, limit, redirect, run, and leave with ``os._exit``."""
    code = 1
    try:
        _die_with_parent()
        os.setpgid(0, 0)
        os.chdir(job["cwd"])
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for module, name, ext_code in job.get("extensions", ()):
            copyreg.add_extension(module, name, ext_code)
        code = _run_app(job["argv"]) if job["argv"] is not None else 0
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001
                pass
        os._exit(code)


def _kill_group(pid: int, reaped: bool) -> None:
    """Kill the run's process group (its own process and anything a gadget started).

    Before the child is reaped its pid is still ours, so a child that had not yet
    made its own group is killed by pid; after, only the group is signalled (a
    group id is not reused while any member lives, a bare pid may be).
    """
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        if not reaped:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _wait(pid: int, timeout: float) -> tuple[int, Any, bool]:
    """(wait status, rusage, timed out) of ``pid``, killing its group after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            _kill_group(pid, reaped=True)  # stray grandchildren of a run that executed something
            return status, usage, False
        if time.monotonic() > deadline:
            _kill_group(pid, reaped=False)
            _, status, usage = os.wait4(pid, 0)
            return status, usage, True
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def _fork_run(job: dict[str, Any], limit: int) -> tuple[int, Any, bool]:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(job, limit)
    return _wait(pid, float(job["timeout"]))


def _baseline_rss_kb() -> int:
    """Peak RSS of a forked child that does nothing: what every run starts from.

    (Not this process's RSS: a child does not inherit the resident pages of
    shared libraries, so its RSS starts lower.)
    """
    job = {"argv": None, "cwd": os.getcwd(), "stdout": os.devnull, "stderr": os.devnull, "timeout": 30}
    _, usage, _ = _fork_run(job, resource.RLIM_INFINITY)
    return usage.ru_maxrss


def run_job(job: dict[str, Any], baseline_kb: int = 0) -> dict[str, Any]:
    """Run one job in a forked child; what happened, as a JSON-able dict."""
    limit = _vm_size() + int(job["headroom"])
    started = time.monotonic()
    status, usage, timed_out = _fork_run(job, limit)
    return {
        "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "timed_out": timed_out,
        "seconds": round(time.monotonic() - started, 3),
        "rss_growth_mb": round(max(0, usage.ru_maxrss - baseline_kb) / 1024, 1),
        "limit_mb": limit >> 20,
    }


_WARM_MODULES = ("jitckpt.api", "jitckpt.inspection.summary", "jitckpt.inspection.integrity", "jitckpt.formats", "rich.table")


def _preload(with_torch: bool) -> None:
    """Import once what every run would import (the point of a fork server), and build the click command."""
    import importlib

    import typer

    from jitckpt.cli import app

    for name in _WARM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # a module renamed by a rewrite: the run imports what it needs itself
            pass
    typer.main.get_command(app)  # typer's first command build imports pydantic (~0.1 s)
    _warm_up()
    if with_torch:
        import torch  # noqa: F401 - a comparison may import it; its 3 GB of address space belongs in the baseline


def _warm_up() -> None:
    """One throwaway run (output to /dev/null): the first call of a Typer app costs ~50 ms more than the next."""
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        _run_app(["inspect", os.path.join(os.devnull, "missing.pth")])
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def main() -> None:
    _preload(with_torch=os.environ.get("JITCKPT_HOSTILE_TORCH") == "1")
    baseline = _baseline_rss_kb()
    print(json.dumps({"ready": os.getpid(), "baseline_rss_mb": baseline >> 10}), flush=True)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(run_job(json.loads(line), baseline)), flush=True)


if __name__ == "__main__":
    main()
