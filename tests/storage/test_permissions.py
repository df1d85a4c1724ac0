"""Permission bits of what jitckpt writes: the replaced file's, else what the umask gives a new file."""

import os
import stat
import subprocess
import sys

import pytest

import jitckpt
from jitckpt.storage.atomic import atomic_output

PATHS = pytest.mark.parametrize("fallback", [False, True], ids=["o_tmpfile", "fallback"])


@pytest.fixture
def umask():
    """Set the process umask for the test, restoring it afterwards."""
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@PATHS
@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664), (0o027, 0o640)])
def test_a_new_file_gets_what_the_umask_allows(tmp_path, monkeypatch, umask, fallback, mask, expected):
    if fallback:
        monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    umask(mask)
    with atomic_output(tmp_path / "x.bin") as handle:
        handle.write(b"new")
    assert _mode(tmp_path / "x.bin") == expected


@PATHS
@pytest.mark.parametrize("existing", [0o600, 0o640, 0o444, 0o755])
def test_a_replaced_file_keeps_its_permission_bits(tmp_path, monkeypatch, umask, fallback, existing):
    if fallback:
        monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    umask(0o022)
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    os.chmod(target, existing)
    with atomic_output(target, force=True) as handle:
        handle.write(b"new")
    assert target.read_bytes() == b"new" and _mode(target) == existing


def test_set_id_bits_of_the_replaced_file_are_not_carried_over(tmp_path, umask):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    os.chmod(target, 0o4750)
    with atomic_output(target, force=True) as handle:
        handle.write(b"new")
    assert _mode(target) == 0o750


def test_a_private_checkpoint_converted_over_itself_stays_private(golden, tmp_path, umask):
    umask(0o022)
    target = tmp_path / "private.safetensors"
    jitckpt.convert(golden, target)
    os.chmod(target, 0o600)
    jitckpt.convert(golden, target, force=True)
    assert _mode(target) == 0o600


def test_the_cli_honours_the_callers_umask(golden, tmp_path):
    out = tmp_path / "out.ckpt"
    result = subprocess.run(["sh", "-c", f'umask 077 && exec "$0" -m jitckpt convert "$1" -o "$2"', sys.executable,
                             str(golden), str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert _mode(out) == 0o600


def _modes(folder):
    return _mode(folder), {entry.name: _mode(entry.path) for entry in os.scandir(folder)}


def test_a_new_dcp_folder_and_its_files_get_what_the_umask_allows(golden, tmp_path, umask):
    umask(0o077)
    jitckpt.convert(golden, tmp_path / "run.dcp")
    folder, files = _modes(tmp_path / "run.dcp")
    assert folder == 0o700 and files and set(files.values()) == {0o600}


def test_a_replaced_dcp_folder_keeps_its_permission_bits_and_its_files_theirs(golden, tmp_path, umask):
    umask(0o022)
    target = tmp_path / "run.dcp"
    jitckpt.convert(golden, target)
    names = sorted(os.listdir(target))
    os.chmod(target, 0o750)
    for index, name in enumerate(names):
        os.chmod(target / name, (0o640, 0o600)[index % 2])
    before = _modes(target)
    jitckpt.convert(golden, target, force=True, shards=1)
    assert _modes(target) == before
    jitckpt.convert(golden, target, force=True, shards=2)  # a shard file the old folder lacked: the umask's
    folder, files = _modes(target)
    assert folder == 0o750 and all(files[n] == before[1][n] for n in names if n in files)
    assert all(mode == 0o644 for n, mode in files.items() if n not in before[1])
