"""Byte ranges of a file and the CRC-32s it records for them: read in chunks, checked once per file version.

May be used by any lazy tensor; knows nothing of dtypes or shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..storage import sources
from ..storage.crc32 import crc32

CHUNK_BYTES = 8 << 20  # 8 MiB: large enough for full disk speed, small for RSS


@dataclass(frozen=True)
class Checksum:
    """The CRC-32 that the file records for its bytes ``[start, start + length)``.

    For a torch zip it is the storage entry's (which may hold more than one
    tensor's bytes); for a safetensors file jitckpt wrote, the tensor's own.
    """

    start: int
    length: int
    crc: int


def truncated(path: str) -> Exception:
    from ..errors import FormatError

    return FormatError(f"{path}: file is truncated (tensor data ends early)")


def damaged(path: str, name: str, stored: int, computed: int) -> Exception:
    """The error for bytes whose CRC-32 is not the one the file records."""
    from ..errors import DamagedError

    return DamagedError(f"{path}: tensor {name!r} is damaged: its bytes do not match the file's CRC-32 "
                       f"(recorded {stored:08x}, computed {computed:08x}); the file is corrupt, use a good copy")


_verified: set[tuple[Any, ...]] = set()  # regions already checked, keyed with the file's identity and mtime


def region_crc(path: str, start: int, length: int) -> int:
    """The CRC-32 of ``length`` bytes of ``path`` from ``start``, read in chunks."""
    buffer = memoryview(bytearray(min(CHUNK_BYTES, max(length, 1))))
    with sources.Reader(path) as reader:
        return reader_region_crc(reader, buffer, start, length)


def reader_region_crc(reader: sources.Reader, buffer: memoryview, start: int, length: int) -> int:
    """The CRC-32 of ``length`` bytes of the file ``reader`` reads from ``start``, read through ``buffer``."""
    crc, done = 0, 0
    while done < length:
        got = reader.readinto(buffer[:min(len(buffer), length - done)], start + done)
        if got <= 0:
            raise truncated(reader.path)
        crc = crc32(buffer[:got], crc)
        done += got
    return crc


def verify_region(path: str, checksum: Checksum, name: str) -> None:
    """Check the CRC-32 of a region (a storage shared by views is checked once per file version)."""
    key = (sources.identity(path), checksum)
    if key in _verified:
        return
    crc = region_crc(path, checksum.start, checksum.length)
    if crc != checksum.crc:
        raise damaged(path, name, checksum.crc, crc)
    _verified.add(key)
