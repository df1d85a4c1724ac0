"""storage.crc32: the same CRC-32 as zlib from whichever implementation serves, and only checked ones serve."""

import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

from jitckpt.storage import crc32 as fastcrc
from tests.craft import flip_bit


@pytest.fixture
def fresh(monkeypatch):
    """The module as if not yet used in this process; the test sets IMPLEMENTATIONS and the environment first."""
    monkeypatch.setattr(fastcrc, "_loaded", False)
    monkeypatch.setattr(fastcrc, "_fast", None)
    monkeypatch.setattr(fastcrc, "implementation", "zlib")
    monkeypatch.delenv("JITCKPT_CRC32", raising=False)
    return monkeypatch


def _buffers():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (1 << 20) + 4099, dtype=np.uint8).tobytes()
    for size in (0, 1, 9, 4095, 4096, 65537, len(data)):
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


def test_the_wheel_serves_where_it_is_installed(fresh):
    pytest.importorskip("isal")
    assert fastcrc.name() == "isal"


def test_a_row_that_passes_the_known_answer_serves_and_agrees_with_zlib(fresh):
    fresh.setattr(fastcrc, "IMPLEMENTATIONS", (("gone", "no_such_module", "crc32"), ("stdlib", "zlib", "crc32")))
    assert fastcrc.name() == "stdlib"  # the missing module was skipped, the next row loaded
    _check_against_zlib()


def test_a_function_with_the_wrong_answer_is_never_used(fresh):
    # adler32 has crc32's signature and gives other answers: the known-answer check must turn it down
    fresh.setattr(fastcrc, "IMPLEMENTATIONS", (("adler", "zlib", "adler32"),))
    assert fastcrc.name() == "zlib"
    assert fastcrc.crc32(b"x" * 10000) == zlib.crc32(b"x" * 10000)


def test_missing_modules_and_names_leave_zlib(fresh):
    fresh.setattr(fastcrc, "IMPLEMENTATIONS", (("gone", "no_such_module", "crc32"), ("nosym", "zlib", "no_such")))
    assert fastcrc.name() == "zlib"
    _check_against_zlib()


def test_a_value_that_is_not_an_integer_gets_zlibs_error():
    with pytest.raises(TypeError):
        fastcrc.crc32(b"x" * 10000, 5.0)


def test_the_environment_forces_zlib(fresh):
    fresh.setenv("JITCKPT_CRC32", "zlib")
    assert fastcrc.name() == "zlib"


def test_verify_says_the_same_with_the_wheel_and_with_zlib_and_finds_a_flipped_bit(golden, tmp_path):
    from jitckpt.torchfile.archive import read_archive

    entry = max(read_archive(str(golden)).entries.values(), key=lambda e: e.size)
    bad = flip_bit(golden, entry.offset + entry.size - 1, tmp_path / "bad.pth")
    said = {}
    for implementation in ("default", "zlib"):
        env = {k: v for k, v in os.environ.items() if k != "JITCKPT_CRC32"}
        if implementation == "zlib":
            env["JITCKPT_CRC32"] = "zlib"
        run = lambda path: subprocess.run([sys.executable, "-m", "jitckpt", "verify", str(path)],  # noqa: E731
                                          capture_output=True, text=True, env=env)
        good, damaged = run(golden), run(bad)
        assert (good.returncode, damaged.returncode) == (0, 1), (good.stderr, damaged.stderr)
        assert good.stdout.startswith("intact:") and damaged.stdout.startswith("damaged:")
        assert "CRC-32 mismatch" in damaged.stdout
        said[implementation] = (good.stdout, damaged.stdout)
    assert said["default"] == said["zlib"]
