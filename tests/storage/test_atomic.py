"""Atomic writes: the target holds the old file or the new one, never a torn one."""

import errno
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest

import jitckpt
import jitckpt.storage.atomic
import jitckpt.storage.temp
from jitckpt.errors import JiTCheckpointError, OutputError
from jitckpt.storage.atomic import atomic_output
from tests.helpers import sha256

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
    with pytest.raises(OutputError, match="already exists; pass force=True to overwrite it") as refused:
        with atomic_output(target) as handle:
            handle.write(b"new")
    assert "--force" not in str(refused.value)  # the Python API's terms; the CLI says --force
    assert target.read_bytes() == b"old"


# --- temporary files: named after their writer, locked, removed once their writer is gone ---

STEPS = ["synced", "linked", "renamed"]
PATHS = pytest.mark.parametrize("fallback", [False, True], ids=["o_tmpfile", "fallback"])


def temp_re(name: str, pid: int | str = "[0-9]+") -> re.Pattern:
    return re.compile(rf"\.{re.escape(name)}\.jitckpt-{pid}-[0-9a-f]{{12}}\.tmp")


def is_locked(path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@pytest.fixture
def no_tmpfile(monkeypatch, fallback):
    """Run the test on the path without O_TMPFILE when ``fallback``."""
    if fallback:
        monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    return fallback


@pytest.fixture
def steps(monkeypatch):
    """The commit steps an atomic_output passes, in order."""
    seen = []
    monkeypatch.setattr(jitckpt.storage.temp, "on_commit_step", lambda step: seen.append(step))
    return seen


@PATHS
def test_temporary_file_names_its_writer_and_is_locked_until_committed(tmp_path, monkeypatch, no_tmpfile):
    target = tmp_path / "x.bin"
    seen = {}

    def hook(step):
        temps = [name for name in os.listdir(tmp_path) if name != "x.bin"]
        seen[step] = temps
        for name in temps:
            assert temp_re("x.bin", os.getpid()).fullmatch(name), name
            assert is_locked(tmp_path / name), f"{name} is not locked by its writer at {step}"

    monkeypatch.setattr(jitckpt.storage.temp, "on_commit_step", hook)
    with atomic_output(target) as handle:
        handle.write(b"new")
        # without O_TMPFILE the file has its name from the start; with it, none yet
        assert len(os.listdir(tmp_path)) == (1 if no_tmpfile else 0)
    assert list(seen) == STEPS
    assert [len(seen[step]) for step in STEPS] == [1 if no_tmpfile else 0, 1, 0]
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["x.bin"]


@PATHS
def test_temporary_file_of_a_live_writer_is_kept_and_of_a_dead_one_removed(tmp_path, no_tmpfile):
    target = tmp_path / "x.bin"
    live = tmp_path / ".x.bin.jitckpt-4242-0123456789ab.tmp"
    dead = tmp_path / ".x.bin.jitckpt-4243-ba9876543210.tmp"
    live.write_bytes(b"half of a write in progress")
    dead.write_bytes(b"what a killed writer left")
    fd = os.open(live, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another writer, alive
    try:
        with atomic_output(target, force=True) as handle:
            handle.write(b"one")
        assert sorted(os.listdir(tmp_path)) == sorted([live.name, "x.bin"])
        assert live.read_bytes() == b"half of a write in progress"
    finally:
        os.close(fd)  # that writer is gone now
    with atomic_output(target, force=True) as handle:
        handle.write(b"two")
    assert os.listdir(tmp_path) == ["x.bin"] and target.read_bytes() == b"two"


def test_cleanup_touches_only_the_exact_temporary_names_of_that_target(tmp_path):
    name = "w[1]+.bin"  # regex characters in the name must match only themselves
    target = tmp_path / name
    elsewhere = tmp_path / "sub"
    elsewhere.mkdir()
    (elsewhere / "precious").write_bytes(b"keep")
    kept = [
        f".{name}.jitckpt-12-0123456789ab.tmp.bak",
        f"{name}.jitckpt-12-0123456789ab.tmp",       # not hidden
        f"..{name}.jitckpt-12-0123456789ab.tmp",
        f".w1+.bin.jitckpt-12-0123456789ab.tmp",     # another target
        f".w[1]+.binx.jitckpt-12-0123456789ab.tmp",
        f".{name}.jitckpt-12-0123456789AB.tmp",      # upper-case hex
        f".{name}.jitckpt-12-0123456789a.tmp",       # 11 digits
        f".{name}.jitckpt-x12-0123456789ab.tmp",
        f".{name}.jitckpt--0123456789ab.tmp",
        f".{name}.01234567.tmp",                     # older jitckpt's names
        f".{name}.tmp",
        "unrelated.txt",
    ]
    for other in kept:
        (tmp_path / other).write_bytes(b"not mine")
    (tmp_path / f".{name}.jitckpt-13-0123456789ab.tmp").symlink_to(elsewhere / "precious")
    (tmp_path / f".{name}.jitckpt-14-0123456789ab.tmp").mkdir()
    stale = tmp_path / f".{name}.jitckpt-15-0123456789ab.tmp"
    stale.write_bytes(b"stale")
    before = sorted(set(os.listdir(tmp_path)) - {stale.name})
    with atomic_output(target) as handle:
        handle.write(b"new")
    assert sorted(os.listdir(tmp_path)) == sorted(before + [name])
    assert (elsewhere / "precious").read_bytes() == b"keep"
    assert all((tmp_path / other).read_bytes() == b"not mine" for other in kept)


def test_long_target_name_gets_a_temporary_name_that_fits_and_is_cleaned(tmp_path, monkeypatch):
    name = "a" * 240 + ".safetensors"  # 252 bytes: a suffix of 30 would not fit in 255
    sibling = "a" * 240 + ".safetensorz"
    target = tmp_path / name
    named = []
    monkeypatch.setattr(jitckpt.storage.temp, "on_commit_step",
                        lambda step: named.extend(n for n in os.listdir(tmp_path) if step == "linked" and n.endswith(".tmp")))
    with atomic_output(target) as handle:
        handle.write(b"new")
    assert len(named) == 1 and len(named[0].encode()) <= 255
    # a killed writer's file of that name goes at the next write; one of a sibling's stays
    stale = tmp_path / named[0].replace(f"-{os.getpid()}-", "-99999-")
    stale.write_bytes(b"stale")
    monkeypatch.setattr(jitckpt.storage.temp, "on_commit_step", None)
    with atomic_output(tmp_path / sibling) as handle:
        handle.write(b"sibling")
    assert stale.exists()
    with atomic_output(target, force=True) as handle:
        handle.write(b"newer")
    assert sorted(os.listdir(tmp_path)) == sorted([name, sibling])


def test_writer_that_loses_a_race_with_a_cleaner_takes_another_name(tmp_path, monkeypatch):
    """Without O_TMPFILE a file exists before its writer locks it: if a cleaner got there first, retry."""
    monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    real_lock = jitckpt.storage.atomic.lock
    lost = []

    def lock(fd):
        if not lost:
            lost.append(fd)
            return False  # as if a cleaner held it
        return real_lock(fd)

    monkeypatch.setattr(jitckpt.storage.atomic, "lock", lock)
    with atomic_output(tmp_path / "x.bin") as handle:
        handle.write(b"new")
    assert lost and os.listdir(tmp_path) == ["x.bin"]


# --- the commit: its steps, and a target that appears meanwhile ---

@PATHS
def test_target_that_appears_during_the_write_is_not_overwritten_without_force(tmp_path, no_tmpfile):
    target = tmp_path / "x.bin"
    with pytest.raises(OutputError, match="already exists"):
        with atomic_output(target) as handle:
            handle.write(b"new")
            target.write_bytes(b"someone else's")
    assert target.read_bytes() == b"someone else's" and os.listdir(tmp_path) == ["x.bin"]


@PATHS
def test_commit_steps_are_reported_in_order(tmp_path, no_tmpfile, steps):
    with atomic_output(tmp_path / "x.bin") as handle:
        handle.write(b"new")
    assert steps == STEPS


# --- errors: the caller's pass through; the output's name the target and say what to do ---

@pytest.mark.parametrize("error", [JiTCheckpointError("bad source"), FileNotFoundError(errno.ENOENT, "gone", "src.pth"),
                                   KeyboardInterrupt()], ids=["jitckpt", "oserror", "interrupt"])
@PATHS
def test_exceptions_from_the_block_pass_through_unchanged(tmp_path, no_tmpfile, error):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    with pytest.raises(type(error)) as caught:
        with atomic_output(target, force=True) as handle:
            handle.write(b"half")
            raise error
    assert caught.value is error
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["x.bin"]


def _fail_opens_in(folder, code):
    real_open = os.open

    def fake(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR) and str(path).startswith(str(folder)):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)
    return fake


def _fail(code):
    def fake(*args, **kwargs):
        raise OSError(code, os.strerror(code), *[str(a) for a in args[:1] if isinstance(a, (str, os.PathLike))])
    return fake


FAILURES = {  # where it fails, errno, what the message must say
    "create-EACCES": ("open", errno.EACCES, "Permission denied (the folder is not writable"),
    "create-EROFS": ("open", errno.EROFS, "Read-only file system (the filesystem is mounted read-only"),
    "create-EDQUOT": ("open", errno.EDQUOT, "quota"),
    "sync-ENOSPC": ("fsync", errno.ENOSPC, "No space left on device (free space or write elsewhere)"),
    "sync-EIO": ("fsync", errno.EIO, "Input/output error (the disk reported an I/O error"),
    "rename-EACCES": ("replace", errno.EACCES, "Permission denied"),
    "rename-EBUSY": ("replace", errno.EBUSY, "Device or resource busy (check the output folder"),
}


@pytest.mark.parametrize("case", list(FAILURES))
@PATHS
def test_output_errors_name_the_target_and_leave_the_folder_as_it_was(tmp_path, monkeypatch, no_tmpfile, case):
    where, code, says = FAILURES[case]
    target = tmp_path / "out.ckpt"
    target.write_bytes(b"old")
    fake = _fail_opens_in(tmp_path, code) if where == "open" else _fail(code)
    if where == "open":
        monkeypatch.setattr(os, "open", fake)
    with pytest.raises(OutputError) as caught:
        with atomic_output(target, force=True) as handle:
            handle.write(b"new")
            monkeypatch.setattr(os, where, fake)  # the data is written; now the commit fails
    message = str(caught.value)
    assert message.startswith(f"cannot write {str(target)!r}: ") and says in message, message
    assert ".tmp" not in message and "jitckpt-" not in message
    monkeypatch.undo()
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.ckpt"]


CHILD = """
import json, os, sys, jitckpt
from jitckpt.errors import OutputError
{setup}
try:
    jitckpt.convert({golden!r}, {target!r}, force=True)
    result = {{"error": None}}
except OutputError as exc:
    result = {{"error": str(exc)}}
folder = os.path.dirname({target!r})
result["listing"] = sorted(os.listdir(folder))
result["old"] = open({target!r}, "rb").read() == b"old"
print(json.dumps(result))
"""


def run_child(golden, target, setup="", wrap=()):
    code = CHILD.format(setup=textwrap.dedent(setup), golden=str(golden), target=str(target))
    out = subprocess.run([*wrap, sys.executable, "-c", code], capture_output=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr.decode()
    return json.loads(out.stdout)


def test_real_write_error_file_too_large(golden, tmp_path):
    """The kernel refuses a write past RLIMIT_FSIZE (EFBIG), in copy_file_range and in write alike."""
    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / "out.ckpt"
    target.write_bytes(b"old")
    result = run_child(golden, target, setup="""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    """)
    assert result["error"].startswith(f"cannot write {str(target)!r}: File too large ("), result
    assert result["listing"] == ["out.ckpt"] and result["old"]


def _namespace_works() -> bool:
    try:
        return subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


needs_mounts = pytest.mark.skipif(not _namespace_works(), reason="needs unshare -m and mount (root)")


@needs_mounts
def test_real_full_disk(golden, tmp_path):
    """A 1 MB tmpfs, mounted in a private mount namespace, cannot take the 3 MB checkpoint."""
    folder = tmp_path / "full"
    folder.mkdir()
    target = folder / "out.ckpt"
    result = run_child(golden, target, setup=f"open({str(target)!r}, 'wb').write(b'old')",
                       wrap=["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {folder} && exec \"$0\" \"$@\""])
    assert result["error"] == f"cannot write {str(target)!r}: No space left on device (free space or write elsewhere)"
    assert result["listing"] == ["out.ckpt"] and result["old"]


@needs_mounts
def test_real_read_only_folder(golden, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    target = folder / "out.ckpt"
    target.write_bytes(b"old")
    result = run_child(golden, target,
                       wrap=["unshare", "-m", "sh", "-c", f"mount -o bind,ro {folder} {folder} && exec \"$0\" \"$@\""])
    assert result["error"].startswith(f"cannot write {str(target)!r}: Read-only file system ("), result
    assert result["listing"] == ["out.ckpt"] and result["old"]
    assert os.listdir(folder) == ["out.ckpt"] and target.read_bytes() == b"old"
