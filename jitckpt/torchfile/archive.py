"""A strict reader of the stored (uncompressed) zip archives that ``torch.save`` writes.

Only the central directory and the local headers are read; an entry is a
byte range of the file plus the CRC-32 the archive records for it. Everything
is bounds-checked before any byte of an entry is touched, as strictly as
torch's own reader: one end record that really ends the file, a central
directory that ends where the end records begin, no compressed or encrypted
entries, no two entries with one name, every entry's local header and bytes
inside the file and before the central directory.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import DamagedError, FormatError
from ..storage import sources
from ..storage.crc32 import crc32

ZIP_MAGIC = b"PK\x03\x04"  # a local file header: how every zip, and so every torch file, starts

MAX_ENTRIES = 1 << 20  # a JiT-H/16 training checkpoint has a few thousand
MAX_CENTRAL_DIRECTORY = 128 << 20
HEADER_BATCH = 128  # local headers asked for at once: 16 per connection of a remote file
_EOCD = struct.Struct("<4s4H2LH")  # end of central directory
_EOCD64 = struct.Struct("<4sQ2H2L4Q")  # zip64 end of central directory
_LOCATOR = struct.Struct("<4sLQL")  # zip64 end of central directory locator
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_LOCAL = struct.Struct("<4s5H3L2H")
_MAX_COMMENT = 0xFFFF
_U16, _U32 = 0xFFFF, 0xFFFFFFFF


@dataclass(frozen=True)
class Entry:
    """One member of the archive: its bytes are ``[offset, offset + size)`` of the file."""

    name: str
    offset: int
    size: int
    crc: int


@dataclass(frozen=True)
class Archive:
    path: str
    file_size: int
    entries: dict[str, Entry]  # in central-directory order

    def read(self, name: str, limit: int) -> bytes:
        """The bytes of entry ``name`` (at most ``limit`` of them allowed), CRC-checked."""
        entry = self.entries[name]
        if entry.size > limit:
            raise FormatError(f"{self.path}: entry {name!r} is {entry.size} bytes, more than the {limit} allowed")
        data = sources.read_bytes(self.path, entry.size, entry.offset)
        if len(data) != entry.size:
            raise FormatError(f"{self.path}: file is truncated (entry {name!r} ends early)")
        if crc32(data) != entry.crc:
            raise DamagedError(f"{self.path}: entry {name!r} is damaged (its CRC-32 does not match); "
                               "the file is corrupt, use a good copy")
        return data


def _bad(path: str, what: str) -> FormatError:
    return FormatError(f"{path}: corrupt or truncated torch zip file ({what})")


class _Window:
    """Reads of ``[start, start + length)`` of an open file, addressed from the window's start."""

    def __init__(self, reader: sources.Reader, start: int, length: int) -> None:
        self.reader, self.start, self.length = reader, start, length

    def pread(self, n: int, offset: int) -> bytes:
        n = max(0, min(n, self.length - offset))
        return self.reader.pread(n, self.start + offset) if offset >= 0 else b""

    def pread_many(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        """:meth:`pread` of each ``(n, offset)``; a remote file's at once (see ``sources.Reader.pread_many``)."""
        inside = [(max(0, min(n, self.length - offset)), self.start + offset) for n, offset in ranges if offset >= 0]
        if len(inside) != len(ranges):
            return [self.pread(n, offset) for n, offset in ranges]
        return self.reader.pread_many(inside)


def read_archive(path: str, start: int = 0, length: int | None = None) -> Archive:
    """Parse and check the archive structure of ``path`` (reads no entry data).

    With ``start`` and ``length`` the archive is that byte range of the file (a
    ``torch.save`` embedded in a larger file, as ``torch.distributed.checkpoint``
    writes them); its offsets count from ``start``, the entries' from the file's start.
    """
    with sources.Reader(path) as reader:
        file_size = sources.size(path)
        if length is None:
            length = file_size - start
        if start < 0 or length < 0 or start + length > file_size:
            raise _bad(path, f"the archive's bytes [{start}, {start + length}) run past the file's end")
        window = _Window(reader, start, length)
        size = length
        cd_offset, cd_size, count, end_start = _find_end(path, window, size)
        if count > MAX_ENTRIES or cd_size > MAX_CENTRAL_DIRECTORY:
            raise _bad(path, f"{count} entries in a central directory of {cd_size} bytes is more than allowed")
        if cd_offset + cd_size != end_start:
            raise _bad(path, "the central directory's size or offset field is damaged")
        directory = window.pread(cd_size, cd_offset)
        if len(directory) != cd_size:
            raise _bad(path, "central directory cut short")
        central = list(_parse_central(path, directory, count, cd_offset).items())
        entries: dict[str, Entry] = {}
        # the local headers a batch at a time, a remote file's over several connections (not a round trip
        # each), each batch checked before the next is asked for: a damaged file costs one batch
        for first in range(0, len(central), HEADER_BATCH):
            batch = central[first:first + HEADER_BATCH]
            heads = window.pread_many([(_LOCAL.size + len(name.encode("utf-8")), header)
                                       for name, (header, _, _) in batch])
            for (name, (header, n, crc)), head in zip(batch, heads):
                entries[name] = Entry(name, start + _data_offset(path, name, head, header, n, cd_offset), n, crc)
    return Archive(path, file_size, entries)


def _find_end(path: str, window: _Window, size: int) -> tuple[int, int, int, int]:
    """(central directory offset, its size, entry count, where the end records start)."""
    # The record without a comment (what torch writes) ends the file: 22 bytes decide it, which is the same
    # answer as the search below (the last candidate there is this one) without reading 64 KiB of a remote file.
    tail_start = max(0, size - _EOCD.size)
    tail = window.pread(size - tail_start, tail_start)
    if not (len(tail) == _EOCD.size and tail.startswith(b"PK\x05\x06") and tail[20:22] == b"\0\0"):
        tail_start = max(0, size - (_EOCD.size + _MAX_COMMENT))
        tail = window.pread(size - tail_start, tail_start)
    at = tail.rfind(b"PK\x05\x06")
    # the real end record is the one whose comment runs exactly to the end of the file
    while at >= 0 and not (at + _EOCD.size <= len(tail)
                           and at + _EOCD.size + struct.unpack_from("<H", tail, at + 20)[0] == len(tail)):
        at = tail.rfind(b"PK\x05\x06", 0, at)
    if at < 0:
        raise _bad(path, "no end-of-central-directory record")
    _, disk, cd_disk, here, count, cd_size, cd_offset, _comment = _EOCD.unpack_from(tail, at)
    eocd_start = tail_start + at
    if disk != 0 or cd_disk != 0 or here != count:
        raise _bad(path, "multi-disk archives are not checkpoints")
    locator = window.pread(_LOCATOR.size, eocd_start - _LOCATOR.size) if eocd_start >= _LOCATOR.size else b""
    if not locator.startswith(b"PK\x06\x07"):
        if _U16 in (here, count) or _U32 in (cd_size, cd_offset):
            raise _bad(path, "zip64 locator missing")
        return cd_offset, cd_size, count, eocd_start
    _, _, eocd64_offset, disks = _LOCATOR.unpack(locator)
    if disks != 1 or eocd64_offset + _EOCD64.size > eocd_start - _LOCATOR.size:
        raise _bad(path, "damaged zip64 locator")
    record = window.pread(_EOCD64.size, eocd64_offset)
    sig, _, _, _, disk, cd_disk, here, count64, size64, offset64 = _EOCD64.unpack(record)
    if sig != b"PK\x06\x06" or disk != 0 or cd_disk != 0 or here != count64:
        raise _bad(path, "damaged zip64 end record")
    # the 32-bit fields must say the same wherever they are not saturated
    if any(short not in (limit, long & limit) for short, long, limit in
           ((count, count64, _U16), (cd_size, size64, _U32), (cd_offset, offset64, _U32))):
        raise _bad(path, "the central directory's size or offset field is damaged")
    return offset64, size64, count64, eocd64_offset


def _parse_central(path: str, directory: bytes, count: int, cd_offset: int) -> dict[str, tuple[int, int, int]]:
    """Entry name -> (local header offset, size, CRC-32), in directory order."""
    entries: dict[str, tuple[int, int, int]] = {}
    pos = 0
    for _ in range(count):
        if pos + _CENTRAL.size > len(directory):
            raise _bad(path, "central directory cut short")
        (sig, _made, _need, flags, method, _time, _date, crc, csize, usize, name_len, extra_len, comment_len,
         _disk, _internal, _external, offset) = _CENTRAL.unpack_from(directory, pos)
        if sig != b"PK\x01\x02":
            raise _bad(path, "damaged central directory entry")
        start = pos + _CENTRAL.size
        end = start + name_len + extra_len + comment_len
        if end > len(directory):
            raise _bad(path, "central directory entry runs past the directory")
        raw_name = directory[start:start + name_len]
        extra = directory[start + name_len:start + name_len + extra_len]
        pos = end
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad(path, f"entry name {raw_name[:60]!r} is not UTF-8") from None
        if flags & 0x1:
            raise FormatError(f"{path}: entry {name!r} is encrypted; torch never writes that")
        if method != 0:
            raise FormatError(f"{path}: entry {name!r} is compressed (method {method}); torch never writes "
                              "compressed entries, so this is not a torch checkpoint (or a zip bomb)")
        usize, csize, offset = _zip64_fields(path, name, extra, usize, csize, offset)
        if usize != csize:
            raise _bad(path, f"entry {name!r} has two different sizes")
        if name in entries:
            raise FormatError(f"{path}: two entries are named {name!r}; torch never writes that")
        if offset + _LOCAL.size + name_len + usize > cd_offset:
            raise _bad(path, f"entry {name!r} lies outside the archive's data area")
        entries[name] = (offset, usize, crc)
    if pos != len(directory):
        raise _bad(path, "the central directory's entry count field is damaged")
    return entries


def _zip64_fields(path: str, name: str, extra: bytes, usize: int, csize: int, offset: int) -> tuple[int, int, int]:
    """Sizes and offset, taken from the zip64 extra field where the 32-bit fields are saturated."""
    wanted = [f for f, v in (("usize", usize), ("csize", csize), ("offset", offset)) if v == _U32]
    if not wanted:
        return usize, csize, offset
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4:pos + 4 + length]
        if tag == 0x0001:
            if len(body) < 8 * len(wanted):
                break
            values = dict(zip(wanted, struct.unpack_from(f"<{len(wanted)}Q", body)))
            return values.get("usize", usize), values.get("csize", csize), values.get("offset", offset)
        pos += 4 + length
    raise _bad(path, f"entry {name!r} lacks its zip64 sizes")


def _data_offset(path: str, name: str, header: bytes, header_offset: int, size: int, cd_offset: int) -> int:
    """Where the entry's bytes start, after its local header (``header``: the bytes at ``header_offset``, as
    long as a header naming it), checked; they must end before the directory."""
    expected = name.encode("utf-8")
    if len(header) != _LOCAL.size + len(expected):
        raise _bad(path, f"local header of {name!r} cut short")
    sig, _need, flags, method, _time, _date, _crc, _csize, _usize, name_len, extra_len = _LOCAL.unpack_from(header)
    if sig != b"PK\x03\x04" or method != 0 or flags & 0x1:
        raise _bad(path, f"bad local header for {name!r}")
    if name_len != len(expected) or header[_LOCAL.size:] != expected:
        raise _bad(path, f"local header of {name!r} names another entry")
    data: int = header_offset + _LOCAL.size + name_len + extra_len
    if data + size > cd_offset:
        raise _bad(path, f"entry {name!r} runs past the archive's data area")
    return data


def starts_as_zip(path: str) -> bool:
    """True when ``path`` starts as a zip (a torch file, or a corrupt one); reads 4 bytes."""
    return sources.read_bytes(path, 4) == ZIP_MAGIC
