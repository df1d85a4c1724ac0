"""CRC-32 (the checksum of zip entries, as zlib computes it) of byte buffers, as fast as this machine allows.

zlib's ``crc32`` goes a byte at a time through tables: about 2.5 GB/s a core on
this project's machines, slower than the disk cache a 19 GB checkpoint is read
from. libdeflate computes the same CRC with the processor's carry-less multiply,
about 12 GB/s a core, and is a system library on most Linux machines (Debian and
Ubuntu install it with libtiff). It is used when it loads and passes a known
answer on first use; otherwise zlib serves. Both release the GIL while they run.
``JITCKPT_CRC32=zlib`` in the environment (any case) forces zlib; other values change nothing.
"""

from __future__ import annotations

import os
import zlib
from typing import Any, BinaryIO, Callable, Optional

# Shared libraries with a zlib-compatible ``crc(value, pointer, length)`` function, by name as the dynamic
# loader finds them (no search of the current folder, no ``ldconfig`` run): the first that loads serves.
LIBRARIES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("libdeflate", ("libdeflate.so.0", "libdeflate.so", "libdeflate.0.dylib", "libdeflate.dylib"), "libdeflate_crc32"),
)
SMALL_BYTES = 4096  # below this the foreign call's overhead outweighs its speed: zlib
_KNOWN = (b"123456789", 0xCBF43926)  # the CRC-32 check value of the standard catalogue

_fast: Optional[Callable[[int, Any, int], int]] = None
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


def _find() -> Optional[tuple[Callable[[int, Any, int], int], str]]:
    import ctypes

    for label, names, symbol in LIBRARIES:
        for soname in names:
            try:
                function = getattr(ctypes.CDLL(soname), symbol)
            except (OSError, AttributeError):
                continue
            function.restype = ctypes.c_uint32
            function.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t]
            data, answer = _KNOWN
            if function(0, data, len(data)) == answer and function(function(0, data[:4], 4), data[4:], 5) == answer:
                return _fast_call(ctypes, function), label
    return None


def _fast_call(ctypes: Any, function: Callable[..., int]) -> Callable[[int, Any, int], int]:
    def call(value: int, data: Any, length: int) -> int:
        if isinstance(data, bytes):
            return function(value, data, length)
        # A writable buffer (bytearray, its memoryviews, numpy memory) is passed in place.
        return function(value, (ctypes.c_char * length).from_buffer(data), length)

    return call


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
    length = len(data) if isinstance(data, bytes) else memoryview(data).nbytes
    if _fast is not None and length >= SMALL_BYTES and isinstance(value, int):  # else zlib says what is wrong
        try:
            return _fast(value, data, length)
        except (TypeError, ValueError):  # a read-only or non-contiguous buffer: zlib reads those
            pass
    return zlib.crc32(data, value)


def name() -> str:
    """Which implementation :func:`crc32` uses here: ``'libdeflate'`` or ``'zlib'``."""
    if not _loaded:
        _load()
    return implementation


__all__ = ["LIBRARIES", "crc32", "name"]


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """The SHA-256 of a whole file as hex, read ``chunk_size`` bytes at a time (the one file digest jitckpt
    computes: provenance records, downloads, the config.json of an export). OSError on a file it cannot read."""
    import hashlib

    with open(path, "rb") as handle:
        return hash_stream(handle, hashlib.sha256(), chunk_size)


def hash_stream(handle: BinaryIO, hasher: Any, chunk_size: int = 1 << 20) -> str:
    """``hasher`` (a hashlib object) fed the rest of ``handle``, ``chunk_size`` bytes at a time; its hex digest."""
    while chunk := handle.read(chunk_size):
        hasher.update(chunk)
    return str(hasher.hexdigest())
