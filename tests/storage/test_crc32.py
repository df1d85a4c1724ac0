"""fastcrc: the same CRC-32 as zlib from whichever implementation serves, and only checked ones serve."""

import ctypes
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

from jitckpt.storage import crc32 as fastcrc
from tests.craft import flip_bit

ZLIB_SO = "libz.so.1"  # the system zlib: its crc32 has libdeflate_crc32's signature, so it exercises the same path


def _loadable(name: str) -> bool:
    try:
        ctypes.CDLL(name)
        return True
    except OSError:
        return False


@pytest.fixture
def fresh(monkeypatch):
    """fastcrc as if not yet used in this process; the test sets LIBRARIES and the environment first."""
    monkeypatch.setattr(fastcrc, "_loaded", False)
    monkeypatch.setattr(fastcrc, "_fast", None)
    monkeypatch.setattr(fastcrc, "implementation", "zlib")
    monkeypatch.delenv("JITCKPT_CRC32", raising=False)
    return monkeypatch


def _buffers():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (1 << 20) + 4099, dtype=np.uint8).tobytes()
    for size in (0, 1, 9, fastcrc.SMALL_BYTES - 1, fastcrc.SMALL_BYTES, 65537, len(data)):
        piece = data[:size]
        yield piece, piece
        yield bytearray(piece), piece
        yield memoryview(bytearray(data))[3:3 + size], data[3:3 + size]  # a writable view that starts unaligned
        yield memoryview(piece), piece  # read-only: handed to zlib
        yield np.frombuffer(bytearray(piece), dtype=np.uint8), piece
    strided = memoryview(bytearray(data))[::2]  # not contiguous: zlib refuses it as it always did
    yield strided, None


def _check_against_zlib():
    for data, plain in _buffers():
        if plain is None:
            with pytest.raises((TypeError, ValueError, BufferError)):
                fastcrc.crc32(data)
            continue
        assert fastcrc.crc32(data) == zlib.crc32(plain)
        assert fastcrc.crc32(data, 0x12345678) == zlib.crc32(plain, 0x12345678)  # continues a running CRC


def test_the_implementation_in_use_agrees_with_zlib():
    _check_against_zlib()


@pytest.mark.skipif(not _loadable(ZLIB_SO), reason="no system libz.so.1 to load through ctypes")
def test_a_library_that_passes_the_known_answer_serves_and_agrees_with_zlib(fresh):
    fresh.setattr(fastcrc, "LIBRARIES", (("system zlib", ("no-such-lib.so.9", ZLIB_SO), "crc32"),))
    assert fastcrc.name() == "system zlib"  # the missing name was skipped, the next one loaded
    _check_against_zlib()


@pytest.mark.skipif(not _loadable(ZLIB_SO), reason="no system libz.so.1 to load through ctypes")
def test_a_function_with_the_wrong_answer_is_never_used(fresh):
    # adler32 has crc32's signature and gives other answers: the known-answer check must turn it down
    fresh.setattr(fastcrc, "LIBRARIES", (("adler", (ZLIB_SO,), "adler32"), ("gone", ("no-such-lib.so.9",), "crc")))
    assert fastcrc.name() == "zlib"
    assert fastcrc.crc32(b"x" * 10000) == zlib.crc32(b"x" * 10000)


def test_missing_libraries_and_symbols_leave_zlib(fresh):
    fresh.setattr(fastcrc, "LIBRARIES", (("gone", ("no-such-lib.so.9",), "crc"), ("nosym", (ZLIB_SO,), "no_such")))
    assert fastcrc.name() == "zlib"
    _check_against_zlib()


def test_a_value_that_is_not_an_integer_gets_zlibs_error():
    with pytest.raises(TypeError):
        fastcrc.crc32(b"x" * 10000, 5.0)


def test_the_environment_forces_zlib(fresh):
    fresh.setenv("JITCKPT_CRC32", "zlib")
    assert fastcrc.name() == "zlib"


@pytest.mark.parametrize("implementation", ["default", "zlib"])
def test_verify_finds_a_flipped_bit_with_either_implementation(golden, tmp_path, implementation):
    from jitckpt.torchfile.archive import read_archive

    entry = max(read_archive(str(golden)).entries.values(), key=lambda e: e.size)
    assert entry.size >= fastcrc.SMALL_BYTES  # checked by the fast function, where there is one
    bad = flip_bit(golden, entry.offset + entry.size - 1, tmp_path / "bad.pth")
    env = {k: v for k, v in os.environ.items() if k != "JITCKPT_CRC32"}
    if implementation == "zlib":
        env["JITCKPT_CRC32"] = "zlib"
    run = lambda path: subprocess.run([sys.executable, "-m", "jitckpt", "verify", str(path)],  # noqa: E731
                                      capture_output=True, text=True, env=env)
    good, damaged = run(golden), run(bad)
    assert (good.returncode, damaged.returncode) == (0, 1), (good.stderr, damaged.stderr)
    assert good.stdout.startswith("intact:") and damaged.stdout.startswith("damaged:")
    assert "CRC-32 mismatch" in damaged.stdout
