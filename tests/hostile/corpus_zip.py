"""Structural attacks on torch zips: bad tensor geometry, lying zip records, odd entries, zip bombs.

Each is built from the golden ``.pth``, either by patching its bytes in place
(zip records) or by re-zipping its entries with one change (a patched
``data.pkl``, a moved, duplicated, compressed or missing entry). The golden
stays the ``verify`` reference: such a file must never be called the same.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

from . import pickles as P
from .bases import Base
from .items import CorpusItem, Edit, Entry, Lazy, Patched, Raw, Rezipped, write_zip

_CENTRAL = struct.Struct("<4s6H3L5H2L")
CATEGORY = "zip_structure"


# Damage only to tensor entries' bytes or local headers, which `inspect` never reads.
TENSOR_BYTES_ONLY = {"data-crc-wrong", "local-extra-length-huge", "local-name-differs", "local-signature-broken"}
# Still valid: torch reads a zip without a byteorder record as little-endian (files of old torch versions).
VALID_VARIANTS = {"no-byteorder"}


def zip_attacks(bases: dict[str, Base]) -> Iterator[CorpusItem]:
    """Every structural zip attack on the golden ``.pth``."""
    golden = bases["pth"].path
    for name, source in [*_geometry(golden), *_records(golden), *_entries(golden), *_bombs(golden)]:
        yield CorpusItem(name=f"zip/{name}", category=CATEGORY, suffix=".pth", source=source, reference=golden,
                         tensor_bytes_only=name in TENSOR_BYTES_ONLY, valid_variant=name in VALID_VARIANTS,
                         content_same=name in VALID_VARIANTS)


# ----------------------------------------------------------------------------- data.pkl geometry


def with_pickle(golden: Path, patch: Callable[[bytes], bytes]) -> Rezipped:
    """The golden re-zipped with its ``data.pkl`` replaced by ``patch(data.pkl)``."""
    return Rezipped(golden, partial(_replace_pickle, patch=patch))


def _replace_pickle(entries: list[Entry], patch: Callable[[bytes], bytes]) -> list[Entry]:
    for entry in entries:
        if entry.name.endswith("/data.pkl"):
            entry.data = patch(entry.data)
    return entries


def _site_patch(data: bytes, field: str, value: bytes, index: int = 0) -> bytes:
    """Replace one argument of the first tensor rebuild: ``offset``, ``size.N``, ``stride.N`` or ``persid.N``."""
    site = P.tensor_site(data)
    kind, _, pos = field.partition(".")
    op = getattr(site, kind) if not pos else getattr(site, kind)[int(pos)]
    return P.replace(data, op, value)


def _all_sizes_as_strings(data: bytes) -> bytes:
    site = P.tensor_site(data)
    values = [str(op.arg) for op in site.size]
    return P.replace_span(data, site.size[0], site.size[-1], b"".join(P.s(v) for v in values))


_GEOMETRY: dict[str, Callable[[bytes], bytes]] = {
    "negative-storage-offset": partial(_site_patch, field="offset", value=P.i(-1)),
    "negative-storage-offset-huge": partial(_site_patch, field="offset", value=P.i(-(2**40))),
    "negative-stride": partial(_site_patch, field="stride.1", value=P.i(-48)),
    "size-huge": partial(_site_patch, field="size.0", value=P.i(2**40)),
    "offset-at-storage-end": partial(_site_patch, field="offset", value=P.i(768)),
    "offset-one-past": partial(_site_patch, field="offset", value=P.i(1)),
    "size-runs-past-storage": partial(_site_patch, field="size.1", value=P.i(17)),
    "stride-runs-past-storage": partial(_site_patch, field="stride.1", value=P.i(49)),
    "numel-exceeds-entry": partial(_site_patch, field="persid.4", value=P.i(769)),
    "numel-huge": partial(_site_patch, field="persid.4", value=P.i(2**62)),
    "numel-negative": partial(_site_patch, field="persid.4", value=P.i(-1)),
    "storage-key-as-int": partial(_site_patch, field="persid.2", value=P.i(0)),
    "storage-offset-as-string": partial(_site_patch, field="offset", value=P.s("0")),
    "storage-numel-as-string": partial(_site_patch, field="persid.4", value=P.s("768")),
    "storage-offset-as-float": partial(_site_patch, field="offset", value=P.f(0.0)),
    "sizes-as-strings": _all_sizes_as_strings,
    "stride-as-float": partial(_site_patch, field="stride.0", value=P.f(768.0)),
    "unknown-storage-type": partial(_site_patch, field="persid.1", value=P.g("torch", "FooStorage")),
    "storage-type-not-a-storage": partial(_site_patch, field="persid.1", value=P.g("collections", "OrderedDict")),
    "storage-key-traversal": partial(_site_patch, field="persid.2", value=P.s("../../../../etc/passwd")),
    "storage-key-to-data-pkl": partial(_site_patch, field="persid.2", value=P.s("../data.pkl")),
    "storage-key-with-nul": partial(_site_patch, field="persid.2", value=P.s("0\x00")),
    "storage-key-missing-entry": partial(_site_patch, field="persid.2", value=P.s("999999")),
}


def _geometry(golden: Path) -> Iterator[tuple[str, object]]:
    for name, patch in _GEOMETRY.items():
        yield name, with_pickle(golden, patch)


# ----------------------------------------------------------------------------- zip records, patched in place


def central_entries(data: bytes) -> dict[str, tuple[int, int]]:
    """name -> (offset of its central-directory record, offset of its local header)."""
    eocd = data.rfind(b"PK\x05\x06")
    (cd_offset,) = struct.unpack_from("<L", data, eocd + 16)
    found, pos = {}, cd_offset
    while data[pos: pos + 4] == b"PK\x01\x02":
        fields = _CENTRAL.unpack_from(data, pos)
        name = data[pos + _CENTRAL.size: pos + _CENTRAL.size + fields[10]].decode()
        found[name] = (pos, fields[16])
        pos += _CENTRAL.size + fields[10] + fields[11] + fields[12]
    return found


def _u32(offset: int, value: int) -> Edit:
    return Edit(offset, offset + 4, struct.pack("<L", value & 0xFFFFFFFF))


def _u16(offset: int, value: int) -> Edit:
    return Edit(offset, offset + 2, struct.pack("<H", value & 0xFFFF))


def _records(golden: Path) -> Iterator[tuple[str, object]]:
    data = golden.read_bytes()
    eocd = data.rfind(b"PK\x05\x06")
    count, cd_size, cd_offset = struct.unpack_from("<HLL", data, eocd + 10)
    entries = central_entries(data)
    names = list(entries)
    pkl = next(n for n in names if n.endswith("/data.pkl"))
    d0, d1, d2 = (next(n for n in names if n.endswith(f"/data/{k}")) for k in (0, 1, 2))
    edits: dict[str, tuple[Edit, ...]] = {
        "cd-size-plus-one": (_u32(eocd + 12, cd_size + 1),),
        "cd-size-minus-one": (_u32(eocd + 12, cd_size - 1),),
        "cd-size-huge": (_u32(eocd + 12, 0xFFFFFFF0),),
        "cd-offset-plus-one": (_u32(eocd + 16, cd_offset + 1),),
        "cd-offset-minus-one": (_u32(eocd + 16, cd_offset - 1),),
        "cd-offset-zero": (_u32(eocd + 16, 0),),
        "cd-offset-past-file": (_u32(eocd + 16, len(data) + 4096),),
        "cd-count-one-less": (_u16(eocd + 8, count - 1), _u16(eocd + 10, count - 1)),
        "cd-count-one-more": (_u16(eocd + 8, count + 1), _u16(eocd + 10, count + 1)),
        "eocd-comment-length-lies": (_u16(eocd + 20, 200),),
        "data-entry-offset-past-file": (_u32(entries[d0][0] + 42, len(data) + 100),),
        "data-entry-offset-huge": (_u32(entries[d0][0] + 42, 0xFFFFFFF0),),
        "data-entry-size-past-file": (_u32(entries[d2][0] + 20, 0x7FFFFFFF), _u32(entries[d2][0] + 24, 0x7FFFFFFF)),
        "data-entry-size-into-next": (_u32(entries[d0][0] + 20, 3072 + 64), _u32(entries[d0][0] + 24, 3072 + 64)),
        "entries-overlap": (_u32(entries[d1][0] + 42, entries[d0][1]),),
        "local-extra-length-huge": (_u16(entries[d0][1] + 28, 0xFFFF),),
        "local-name-differs": (Edit(entries[d0][1] + 30 + len(d0) - 1, entries[d0][1] + 30 + len(d0), b"X"),),
        "local-signature-broken": (Edit(entries[d1][1], entries[d1][1] + 4, b"PK\x09\x09"),),
        "pkl-encrypted-flag": (_u16(entries[pkl][0] + 8, 1), _u16(entries[pkl][1] + 6, 1)),
        "pkl-method-deflate-but-stored": (_u16(entries[pkl][0] + 10, 8), _u16(entries[pkl][1] + 8, 8)),
        "data-crc-wrong": (_u32(entries[d0][0] + 16, 0x12345678), _u32(entries[d0][1] + 14, 0x12345678)),
        "pkl-crc-wrong": (_u32(entries[pkl][0] + 16, 0x12345678), _u32(entries[pkl][1] + 14, 0x12345678)),
    }
    for name, patch in edits.items():
        yield name, Patched(golden, patch)


# ----------------------------------------------------------------------------- entries, re-zipped


def _move_storage_out(entries: list[Entry]) -> list[Entry]:
    for entry in entries:
        if entry.name.endswith("/data/0"):
            entry.name = "other/data/0"
    return entries


def _add_foreign_folder_entry(entries: list[Entry]) -> list[Entry]:
    return entries + [Entry("other/readme.txt", b"an entry outside the archive folder\n")]


def _duplicate(entries: list[Entry], suffix: str, data: bytes | None = None, first: bool = False) -> list[Entry]:
    original = next(e for e in entries if e.name.endswith(suffix))
    twin = Entry(original.name, data if data is not None else bytes(len(original.data)))
    return [twin, *entries] if first else [*entries, twin]


def _second_pickle_other_folder(entries: list[Entry]) -> list[Entry]:
    pkl = next(e for e in entries if e.name.endswith("/data.pkl"))
    return entries + [Entry("evil/data.pkl", P.set_top_key(pkl.data, "epoch", P.i(99))), Entry("evil/byteorder", b"little")]


def _duplicate_pickle(entries: list[Entry]) -> list[Entry]:
    """A second ``data.pkl`` of the same name, saying epoch 99: which one wins?"""
    pkl = next(e for e in entries if e.name.endswith("/data.pkl"))
    return [*entries, Entry(pkl.name, P.set_top_key(pkl.data, "epoch", P.i(99)))]


def _edit_entry(entries: list[Entry], suffix: str, change: Callable[[Entry], Entry | None]) -> list[Entry]:
    out = []
    for entry in entries:
        kept = change(entry) if entry.name.endswith(suffix) else entry
        if kept is not None:
            out.append(kept)
    return out


def _compress(entry: Entry) -> Entry:
    return Entry(entry.name, entry.data, zipfile.ZIP_DEFLATED)


def _shorten(entry: Entry) -> Entry:
    return Entry(entry.name, entry.data[:-4])


_ENTRIES: dict[str, Callable[[list[Entry]], list[Entry]]] = {
    "storage-moved-to-second-folder": _move_storage_out,
    "entry-in-second-folder": _add_foreign_folder_entry,
    "duplicate-storage-entry-after": partial(_duplicate, suffix="/data/0"),
    "duplicate-storage-entry-before": partial(_duplicate, suffix="/data/0", first=True),
    "two-data-pkl-same-name": _duplicate_pickle,
    "two-data-pkl-two-folders": _second_pickle_other_folder,
    "no-data-pkl": partial(_edit_entry, suffix="/data.pkl", change=lambda e: None),
    "no-byteorder": partial(_edit_entry, suffix="/byteorder", change=lambda e: None),
    "big-endian-byteorder": partial(_edit_entry, suffix="/byteorder", change=lambda e: Entry(e.name, b"big")),
    "deflate-data-pkl": partial(_edit_entry, suffix="/data.pkl", change=_compress),
    "deflate-storage": partial(_edit_entry, suffix="/data/0", change=_compress),
    "storage-entry-short": partial(_edit_entry, suffix="/data/0", change=_shorten),
    "storage-entry-empty": partial(_edit_entry, suffix="/data/1", change=lambda e: Entry(e.name, b"")),
    "directory-entry-named-like-storage": partial(
        _edit_entry, suffix="/data/2", change=lambda e: Entry(e.name + "/", b"")),
}


def _entries(golden: Path) -> Iterator[tuple[str, object]]:
    for name, transform in _ENTRIES.items():
        yield name, Rezipped(golden, transform)
    yield "empty-zip", Raw(write_zip([]))


# ----------------------------------------------------------------------------- zip bombs


def _zeros_deflated(total: int, prefix: bytes = b"") -> tuple[bytes, int, int]:
    """(deflate stream, CRC-32, size) of ``prefix`` followed by ``total`` zero bytes."""
    squeeze = zlib.compressobj(1, zlib.DEFLATED, -15)  # level 1: fast; still ~200:1 on zeros
    crc, chunk = zlib.crc32(prefix), bytes(1 << 20)
    parts = [squeeze.compress(prefix)]
    for _ in range(total >> 20):
        parts.append(squeeze.compress(chunk))
        crc = zlib.crc32(chunk, crc)
    parts.append(squeeze.flush())
    return b"".join(parts), crc, len(prefix) + (total >> 20 << 20)


def _bomb_zip(golden: Path, victim: str, zeros: int, keep_prefix: bool) -> bytes:
    """The golden's entries with ``victim`` replaced by a deflated bomb of ``zeros`` zero bytes."""
    with zipfile.ZipFile(golden) as zf:
        entries = [(info.filename, zf.read(info)) for info in zf.infolist()]
    out = _RawZip()
    for name, data in entries:
        if name.endswith(victim):
            out.add_deflated(name, *_zeros_deflated(zeros, data if keep_prefix else b""))
        else:
            out.add_stored(name, data)
    return out.finish()


class _RawZip:
    """A minimal zip writer that accepts pre-deflated entries (zipfile cannot)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.central: list[bytes] = []
        self.pos = 0

    def _add(self, name: str, payload: bytes, method: int, crc: int, size: int) -> None:
        raw = name.encode()
        header = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, len(payload), size, len(raw), 0)
        self.central.append(_CENTRAL.pack(b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, crc, len(payload), size,
                                          len(raw), 0, 0, 0, 0, 0, self.pos) + raw)
        self.parts += [header, raw, payload]
        self.pos += len(header) + len(raw) + len(payload)

    def add_stored(self, name: str, data: bytes) -> None:
        self._add(name, data, 0, zlib.crc32(data), len(data))

    def add_deflated(self, name: str, stream: bytes, crc: int, size: int) -> None:
        self._add(name, stream, 8, crc, size)

    def finish(self) -> bytes:
        directory = b"".join(self.central)
        end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(self.central), len(self.central), len(directory),
                          self.pos, 0)
        return b"".join(self.parts) + directory + end


def _bombs(golden: Path) -> Iterator[tuple[str, object]]:
    yield "byteorder-bomb-50MB", Lazy(partial(_bomb_zip, golden, "/byteorder", 50 << 20, keep_prefix=False))
    yield "data-pkl-bomb-512MB", Lazy(partial(_bomb_zip, golden, "/data.pkl", 512 << 20, keep_prefix=True))
