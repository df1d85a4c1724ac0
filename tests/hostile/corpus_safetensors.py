"""Structural attacks on safetensors files: the length field, the JSON header, the offsets, the metadata.

Every attack rewrites only the 8-byte length and the header of a base (the
tensor bytes stay where they are), so an item is a single byte edit. The
attacks that touch jitckpt's ``__metadata__`` run on the jitckpt-written base;
the layout attacks run on both it and the foreign (checksum-less) base, where
only structural validation can catch them.
"""

from __future__ import annotations

import copy
import json
import struct
from typing import Callable, Iterator

from .bases import Base, safetensors_header
from .items import CorpusItem, Edit, Patched

CATEGORY = "safetensors_structure"
DEEP = 100_000
Header = dict
DataInserts = tuple[tuple[int, bytes], ...]  # (offset in the data section, bytes to insert there)


def safetensors_attacks(bases: dict[str, Base]) -> Iterator[CorpusItem]:
    """Every structural attack, on the jitckpt base (all) and the foreign base (layout ones)."""
    for key, attacks in (("safetensors", {**_LAYOUT, **_METADATA}), ("foreign", _LAYOUT)):
        base = bases[key]
        length, header = safetensors_header(base.path)
        for name, attack in attacks.items():
            yield _item(base, name, length, attack(copy.deepcopy(header)))
        for name, field in _LENGTH_FIELD.items():
            yield CorpusItem(name=f"safetensors/{key}/{name}", category=CATEGORY, suffix=".safetensors",
                             source=Patched(base.path, (Edit(0, 8, struct.pack("<Q", field(length, base))),)),
                             reference=base.path)
        yield _variant(base, length, copy.deepcopy(header))
    yield _stripped_checksums(bases["safetensors"])


def _stripped_checksums(base: Base) -> CorpusItem:
    """jitckpt's own file with its checksums removed: readable, but it must say it is unchecked."""
    length, header = safetensors_header(base.path)
    header["__metadata__"].pop("jitckpt.checksums", None)
    item = _item(base, "metadata-checksums-removed", length, _dump(header))
    item.undetectable, item.content_same = True, True
    return item


def _item(base: Base, name: str, length: int, result: bytes | tuple[bytes, DataInserts]) -> CorpusItem:
    """An item replacing ``base``'s length and header by ``result`` (plus insertions into the data)."""
    text, inserts = result if isinstance(result, tuple) else (result, ())
    text += b" " * (-len(text) % 8)
    data_start = 8 + length
    edits = (Edit(0, data_start, struct.pack("<Q", len(text)) + text),
             *(Edit(data_start + at, data_start + at, filler) for at, filler in inserts))
    return CorpusItem(name=f"safetensors/{base.name}/{name}", category=CATEGORY, suffix=".safetensors",
                      source=Patched(base.path, edits), reference=base.path)


def _variant(base: Base, length: int, header: Header) -> CorpusItem:
    """Header entries listed in reverse offset order: still a valid file (the library sorts by offset)."""
    meta = header.pop("__metadata__", None)
    entries = list(header.items())[::-1]
    reordered = dict(([("__metadata__", meta)] if meta is not None else []) + entries)
    item = _item(base, "entries-not-in-offset-order", length, _dump(reordered))
    item.valid_variant, item.content_same = True, True
    return item


def _dump(header: Header) -> bytes:
    return json.dumps(header, separators=(",", ":")).encode()


def _tensors(header: Header) -> list[str]:
    """Tensor keys in data order."""
    keys = [k for k in header if k != "__metadata__"]
    return sorted(keys, key=lambda k: header[k]["data_offsets"][0])


def _set(header: Header, index: int, field: str, value: object) -> bytes:
    header[_tensors(header)[index]][field] = value
    return _dump(header)


def _shift(header: Header, index: int, start: int, end: int) -> bytes:
    entry = header[_tensors(header)[index]]
    entry["data_offsets"] = [entry["data_offsets"][0] + start, entry["data_offsets"][1] + end]
    return _dump(header)


def _gap(header: Header) -> tuple[bytes, DataInserts]:
    """8 zero bytes inserted before the second tensor, every later offset moved: a hole in the data."""
    keys = _tensors(header)
    hole_at = header[keys[1]]["data_offsets"][0]
    for key in keys[1:]:
        header[key]["data_offsets"] = [o + 8 for o in header[key]["data_offsets"]]
    return _dump(header), ((hole_at, bytes(8)),)


def _duplicate_key(header: Header) -> bytes:
    """The first tensor's key twice in the JSON text, the second claiming another dtype."""
    first = _tensors(header)[0]
    text = _dump(header)
    twin = {**header[first], "dtype": "I32"}
    extra = json.dumps({first: twin}, separators=(",", ":"))[1:-1]
    return text[:-1] + b"," + extra.encode() + b"}"


def _invalid_utf8(header: Header) -> bytes:
    text = bytearray(_dump(header))
    at = text.index(_tensors(header)[0].encode())
    text[at] = 0xFF
    return bytes(text)


def _deep_in_header(header: Header) -> bytes:
    return b'{"deep":' + b"[" * DEEP + b"]" * DEEP + b"," + _dump(header)[1:]


def _meta(key: str, value: object) -> Callable[[Header], bytes]:
    def attack(header: Header) -> bytes:
        header.setdefault("__metadata__", {})[key] = value
        return _dump(header)
    return attack


def _whole_meta(value: object) -> Callable[[Header], bytes]:
    def attack(header: Header) -> bytes:
        header["__metadata__"] = value
        return _dump(header)
    return attack


_LAYOUT: dict[str, Callable[[Header], object]] = {
    "header-not-json": lambda h: b"x" * len(_dump(h)),
    "header-not-an-object": lambda h: b"[1, 2, 3]",
    "header-empty-object": lambda h: b"{}",
    "header-invalid-utf8": _invalid_utf8,
    "header-nul-padding": lambda h: _dump(h) + b"\x00" * 8,
    "header-trailing-garbage": lambda h: _dump(h) + b" x",
    "header-deep-nesting": _deep_in_header,
    "offsets-negative": lambda h: _shift(h, 0, -4, -4),
    "offsets-overlap-previous": lambda h: _shift(h, 1, -4, -4),
    "offsets-run-into-next": lambda h: _shift(h, 0, 0, 4),
    "offsets-past-data": lambda h: _shift(h, -1, 8, 8),
    "offsets-reversed": lambda h: _set(h, 0, "data_offsets", h[_tensors(h)[0]]["data_offsets"][::-1]),
    "offsets-gap-between-tensors": _gap,
    "offsets-as-strings": lambda h: _set(h, 0, "data_offsets", [str(o) for o in h[_tensors(h)[0]]["data_offsets"]]),
    "offsets-as-floats": lambda h: _set(h, 0, "data_offsets", [float(o) for o in h[_tensors(h)[0]]["data_offsets"]]),
    "offsets-huge": lambda h: _set(h, -1, "data_offsets", [2**63, 2**64 + 4]),
    "span-not-dtype-times-shape": lambda h: _set(h, 0, "shape", [*h[_tensors(h)[0]]["shape"][:-1], 47]),
    "shape-negative": lambda h: _set(h, 0, "shape", [-1, *h[_tensors(h)[0]]["shape"][1:]]),
    "shape-as-strings": lambda h: _set(h, 0, "shape", [str(d) for d in h[_tensors(h)[0]]["shape"]]),
    "shape-huge-zero-product": lambda h: _set(h, 0, "shape", [0, 2**62]),
    "dtype-unknown": lambda h: _set(h, 0, "dtype", "Q4"),
    "dtype-lowercase": lambda h: _set(h, 0, "dtype", "f32"),
    "dtype-missing": lambda h: _set(h, 0, "dtype", None),
    "duplicate-tensor-key": _duplicate_key,
    "metadata-not-a-map": _whole_meta(["format", "pt"]),
    "metadata-value-not-a-string": _meta("format", {"nested": True}),
}

_METADATA: dict[str, Callable[[Header], object]] = {
    "metadata-args-deep-nesting": _meta("jitckpt.args", "[" * DEEP + "]" * DEEP),
    "metadata-optimizer-deep-nesting": _meta("jitckpt.optimizer", '{"a":' * DEEP + "1" + "}" * DEEP),
    "metadata-epoch-is-int": _meta("jitckpt.epoch", 1),
    "metadata-args-is-object": _meta("jitckpt.args", {"model": "JiT-T/4"}),
    "metadata-epoch-5000-digits": _meta("jitckpt.epoch", "7" * 5000),
    "metadata-epoch-nan": _meta("jitckpt.epoch", "NaN"),
    "metadata-epoch-infinity": _meta("jitckpt.epoch", "1e400"),
    "metadata-epoch-negative": _meta("jitckpt.epoch", "-1"),
    "metadata-epoch-string": _meta("jitckpt.epoch", '"abc"'),
    "metadata-epoch-not-json": _meta("jitckpt.epoch", "{"),
    "metadata-args-a-list": _meta("jitckpt.args", "[1, 2]"),
    "metadata-schema-version-x": _meta("jitckpt.schema_version", "x"),
    "metadata-arch-a-string": _meta("jitckpt.arch", '"JiT-B/16"'),
    "metadata-kind-unknown": _meta("jitckpt.kind", "banana"),
    "metadata-checksums-garbage": _meta("jitckpt.checksums", "not json"),
}

_LENGTH_FIELD: dict[str, Callable[[int, Base], int]] = {
    "length-one-short": lambda n, base: n - 1,
    "length-one-long": lambda n, base: n + 1,
    "length-past-file": lambda n, base: base.path.stat().st_size,
    "length-huge": lambda n, base: 2**63,
    "length-max": lambda n, base: 2**64 - 1,
    "length-zero": lambda n, base: 0,
}
