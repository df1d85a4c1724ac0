"""The pristine base files of the corpus, and a map of each one's regions.

Bases: the golden original ``.pth``, its jitckpt conversions to ``.ckpt`` and
``.safetensors``, and a safetensors file written by the safetensors library
(no jitckpt checksums). A :class:`Layout` names the byte ranges of a base
(local headers, tensor data, central directory, ...) so that damage can be
aimed at every region, and knows which bytes carry no content (timestamps,
alignment padding): damage there leaves the checkpoint the same.
"""

from __future__ import annotations

import json
import shutil
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import GOLDEN

_LOCAL = struct.Struct("<4s5H3L2H")
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_EOCD_SIZE = 22
# Byte ranges (relative to a record's start) whose damage leaves the content a reader sees unchanged.
# A local header only locates its entry's bytes (signature, name and extra lengths); its copies of
# flags, method, CRC, sizes and name are torch's and the central directory's business, not the data's.
_LOCAL_BENIGN = ((4, 26),)
# In the central directory: versions, flags, timestamps, disk number, attributes (not CRC, sizes, offsets, names).
_CENTRAL_BENIGN = ((4, 10), (12, 16), (34, 42))
# Entries that hold no checkpoint content (torch's bookkeeping); byteorder is content: it changes how bytes read.
_CONTENT_FREE_ENTRIES = ("/.data/serialization_id", "/.format_version", "/.storage_alignment", "/version")


@dataclass(frozen=True)
class Base:
    """A pristine base file: its path, its family name and its suffix."""

    name: str
    path: Path

    @property
    def suffix(self) -> str:
        return self.path.suffix

    @property
    def is_safetensors(self) -> bool:
        return self.suffix == ".safetensors"


@dataclass
class Layout:
    """Named byte ranges of a file, and the bytes whose damage changes no content."""

    size: int
    regions: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    benign: set[int] = field(default_factory=set)

    def add(self, region: str, start: int, end: int) -> None:
        if end > start:
            self.regions.setdefault(region, []).append((start, end))

    def mark_benign(self, start: int, end: int) -> None:
        self.benign.update(range(start, end))


def make_bases(folder: Path) -> dict[str, Base]:
    """Write the four bases into ``folder``; keys: pth, ckpt, safetensors, foreign."""
    import jitckpt

    folder.mkdir(parents=True, exist_ok=True)
    pth = folder / "golden.pth"
    shutil.copyfile(GOLDEN, pth)
    ckpt = Path(jitckpt.convert(pth, folder / "golden.ckpt"))
    sft = Path(jitckpt.convert(pth, folder / "golden.safetensors"))
    foreign = folder / "foreign.safetensors"
    _write_foreign(foreign)
    return {"pth": Base("pth", pth), "ckpt": Base("ckpt", ckpt), "safetensors": Base("safetensors", sft),
            "foreign": Base("foreign", foreign)}


def _write_foreign(path: Path) -> None:
    """The golden's raw weights saved by the safetensors library itself (no jitckpt metadata)."""
    from safetensors.torch import save_file

    from tests.helpers import load_golden_torch

    model = {k: v.contiguous() for k, v in load_golden_torch()["model"].items()}
    save_file(model, str(path))


def layout(base: Base) -> Layout:
    """The regions of ``base``, parsed from its bytes."""
    data = base.path.read_bytes()
    return safetensors_layout(data) if base.is_safetensors else zip_layout(base.path, data)


def zip_layout(path: Path, data: bytes) -> Layout:
    """Regions of a torch zip: data.pkl, local headers, tensor data, other entries, central directory, EOCD."""
    out = Layout(len(data))
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        cd_offset = zf.start_dir
    for info in infos:
        start = info.header_offset
        name_len, extra_len = _LOCAL.unpack_from(data, start)[-2:]
        data_start = start + _LOCAL.size + name_len + extra_len
        out.add("local_header", start, data_start)
        for lo, hi in _LOCAL_BENIGN:
            out.mark_benign(start + lo, start + hi)
        out.mark_benign(start + _LOCAL.size, data_start)  # the local copy of the name, and the extra fields
        region = "data_pkl" if info.filename.endswith("/data.pkl") else (
            "tensor_data" if "/data/" in info.filename else "other_entry")
        out.add(region, data_start, data_start + info.compress_size)
        if info.filename.endswith(_CONTENT_FREE_ENTRIES):
            out.mark_benign(data_start, data_start + info.compress_size)
    eocd = data.rfind(b"PK\x05\x06")
    out.add("central_directory", cd_offset, eocd)
    _mark_central_benign(out, data, cd_offset, eocd)
    out.add("eocd", eocd, eocd + _EOCD_SIZE)
    return out


def _mark_central_benign(out: Layout, data: bytes, start: int, end: int) -> None:
    pos = start
    while pos + _CENTRAL.size <= end and data[pos: pos + 4] == b"PK\x01\x02":
        fields = _CENTRAL.unpack_from(data, pos)
        name_len, extra_len, comment_len = fields[10], fields[11], fields[12]
        for lo, hi in _CENTRAL_BENIGN:
            out.mark_benign(pos + lo, pos + hi)
        pos += _CENTRAL.size + name_len + extra_len + comment_len


def safetensors_layout(data: bytes) -> Layout:
    """Regions of a safetensors file: the 8-byte length, the JSON header, the tensor data."""
    (length,) = struct.unpack_from("<Q", data)
    out = Layout(len(data))
    out.add("length_field", 0, 8)
    out.add("json_header", 8, 8 + length)
    out.add("tensor_data", 8 + length, len(data))
    return out


def safetensors_header(path: Path) -> tuple[int, dict]:
    """(header length, parsed header) of a safetensors file."""
    data = path.read_bytes()
    (length,) = struct.unpack_from("<Q", data)
    return length, json.loads(data[8: 8 + length])


def header_equivalent(original: bytes, damaged: bytes) -> bool:
    """True if two safetensors headers parse to the same values (metadata JSON strings included)."""
    try:
        return _deep_parse(json.loads(original)) == _deep_parse(json.loads(damaged))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False


def _deep_parse(value: object) -> object:
    if isinstance(value, dict):
        return {k: _deep_parse(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_parse(v) for v in value]
    if isinstance(value, str) and value[:1] in "[{\"0123456789-tfn":
        try:
            return _deep_parse(json.loads(value))
        except ValueError:
            return value
    return value
