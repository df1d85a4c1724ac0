"""CRC-32 (the checksum of zip entries, as zlib computes it) of byte buffers, as fast as this machine allows.

zlib's ``crc32`` goes a byte at a time through tables: about 2.3 GB/s a core on
this project's machines, slower than the disk cache a 19 GB checkpoint is read
from. ``isal`` (Intel's ISA-L, wheels for Linux and macOS on x86-64 and arm64, a
dependency of jitckpt) computes the same CRC with the processor's carry-less
multiply: 13.0 GB/s, 5.6x zlib, and 1.4x ``zlib-ng``'s (``benchmarks/crc32.py``,
2026-12-07). It is used when it imports and passes a known answer on first use;
otherwise zlib serves. Both release the GIL while they run.
``JITCKPT_CRC32=zlib`` in the environment (any case) forces zlib; other values change nothing.
"""

from __future__ import annotations

import os
import zlib
from importlib import import_module
from typing import Any, BinaryIO, Callable, Optional

# zlib-compatible ``crc32(data, value)`` functions from wheels, as (label, module, attribute): the first that
# imports and gives the known answers serves.
IMPLEMENTATIONS: tuple[tuple[str, str, str], ...] = (("isal", "isal.isal_zlib", "crc32"),)
_KNOWN = (b"123456789", 0xCBF43926)  # the CRC-32 check value of the standard catalogue

_fast: Optional[Callable[[Any, int], int]] = None
_loaded = False
implementation = "zlib"


def _load() -> None:
    """Find and check the fast function once, in the first caller's thread."""
    global _fast, _loaded, implementation
    try:
        if os.environ.get("JITCKPT_CRC32", "").lower() != "zlib":
            _fast, implementation = _find() or (None, "zlib")
    finally:
        _loaded = True  # threads that race the first call each load it once: the same answer


def _find() -> Optional[tuple[Callable[[Any, int], int], str]]:
    data, answer = _KNOWN
    for label, module, attribute in IMPLEMENTATIONS:
        try:
            function = getattr(import_module(module), attribute)
            if function(data, 0) == answer and function(data[4:], function(data[:4], 0)) == answer:
                return function, label
        except Exception:  # a missing or broken wheel (ImportError, a missing name, a crash on the known answer)
            continue
    return None


def crc32(data: Any, value: int = 0) -> int:
    """The CRC-32 of the bytes of ``data`` (bytes or a contiguous buffer), continuing from ``value``.

    Example:
        >>> hex(crc32(b"123456789"))
        '0xcbf43926'
        >>> crc32(b"6789", crc32(b"12345")) == crc32(b"123456789")
        True
    """
    if not _loaded:
        _load()
    if _fast is not None and type(value) is int:  # else zlib says what is wrong
        return _fast(data, value)
    return zlib.crc32(data, value)


def name() -> str:
    """Which implementation :func:`crc32` uses here: ``'isal'`` or ``'zlib'``."""
    if not _loaded:
        _load()
    return implementation


__all__ = ["IMPLEMENTATIONS", "crc32", "name"]


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """The SHA-256 of a whole file (local or remote) as hex, read ``chunk_size`` bytes at a time (the one file
    digest jitckpt computes: provenance records, downloads, the config.json of an export). OSError on a local
    file it cannot read."""
    import hashlib

    from . import sources

    hasher, offset = hashlib.sha256(), 0
    with sources.Reader(str(path)) as reader:
        while chunk := reader.pread(chunk_size, offset):
            hasher.update(chunk)
            offset += len(chunk)
    return hasher.hexdigest()


def hash_stream(handle: BinaryIO, hasher: Any, chunk_size: int = 1 << 20) -> str:
    """``hasher`` (a hashlib object) fed the rest of ``handle``, ``chunk_size`` bytes at a time; its hex digest."""
    while chunk := handle.read(chunk_size):
        hasher.update(chunk)
    return str(hasher.hexdigest())
