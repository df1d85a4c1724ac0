"""Atomic writes: the target holds the old file or the new one, never a torn one."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

import jitckpt
from jitckpt.errors import OutputError
from jitckpt.io import atomic_output
from tests.helpers import sha256

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("suffix", [".pth", ".ckpt", ".safetensors"])
def test_writer_killed_mid_write_leaves_previous_file_and_nothing_else(golden, tmp_path, suffix):
    target = tmp_path / f"out{suffix}"
    jitckpt.convert(golden, target)
    before = sha256(target)
    listing = sorted(os.listdir(tmp_path))
    child = textwrap.dedent(f"""
        import sys, time, jitckpt
        ckpt = jitckpt.load({str(golden)!r}, lazy=True)
        calls = []
        def progress(n):
            calls.append(n)
            if len(calls) == 50:  # well inside the tensor data
                print("writing", flush=True)
                time.sleep(60)
        jitckpt.save(ckpt, {str(target)!r}, force=True, progress=progress)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.stdout.readline().strip() == b"writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert sha256(target) == before
    assert sorted(os.listdir(tmp_path)) == listing  # no partial or temporary file left


def test_exception_mid_write_leaves_nothing(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(target, force=True) as handle:
            handle.write(b"new, half")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["x.bin"]


def test_completed_write_replaces_target(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    with atomic_output(target, force=True) as handle:
        handle.write(b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["x.bin"]


def test_refuses_existing_target_without_force(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    with pytest.raises(OutputError, match="already exists"):
        with atomic_output(target) as handle:
            handle.write(b"new")
    assert target.read_bytes() == b"old"
