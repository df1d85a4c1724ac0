"""Mutations of the header of a safetensors file jitckpt wrote, field by field and value type by value type, and
random flips of its header bytes: each is refused with one error, or reads to exactly the original content."""

from __future__ import annotations

import json
import random
import struct

import pytest

import jitckpt
from jitckpt.errors import JiTCheckpointError

VALUES = [None, True, 0, -1, 1 << 70, 1.5, "", "x", "F16", [], [1], [[1]], {}, {"a": 1}]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    from tests.helpers import GOLDEN

    folder = tmp_path_factory.mktemp("mutations")
    full = jitckpt.convert(GOLDEN, folder / "full.safetensors")
    weights = jitckpt.convert(GOLDEN, folder / "ema.safetensors", weights="ema1")
    return {p: (p.read_bytes(), jitckpt.load(p)) for p in (full, weights)}


def _split(data: bytes) -> tuple[dict, bytes]:
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]), data[8 + length:]


def _join(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


def _mutations(header: dict):
    """(what, mutated header): every field of every entry and of the metadata, set to every value type, removed,
    and, for the metadata, each JSON-string value with one character changed."""
    for key, entry in header.items():
        if key == "__metadata__":
            for field, value in entry.items():
                yield f"metadata {field} removed", {**header, key: {k: v for k, v in entry.items() if k != field}}
                for new in VALUES:
                    yield f"metadata {field}={new!r}", {**header, key: {**entry, field: new}}
                if isinstance(value, str) and value:
                    i = len(value) // 2
                    yield f"metadata {field} edited", {**header, key: {**entry, field: value[:i] + "~" + value[i + 1:]}}
            continue
        for field in ("dtype", "shape", "data_offsets"):
            yield f"{key} {field} removed", {**header, key: {k: v for k, v in entry.items() if k != field}}
            for new in VALUES:
                yield f"{key} {field}={new!r}", {**header, key: {**entry, field: new}}
        yield f"{key} removed", {k: v for k, v in header.items() if k != key}
        break  # one tensor entry stands for the rest: the fields are checked alike


def _same(a, b) -> bool:
    return a == b and jitckpt.compare(a, b) == []


def assert_refused_or_unchanged(target, data: bytes, original, what: str) -> None:
    """``data`` written at ``target`` is refused with a JiTCheckpointError, or reads to ``original`` exactly."""
    target.write_bytes(data)
    try:
        read = jitckpt.load(target)
    except JiTCheckpointError:
        return
    assert _same(read, original), f"{target.name}: {what} read with changed content"


def test_every_header_mutation_is_refused_or_harmless(written, tmp_path):
    for path, (data, original) in written.items():
        header, body = _split(data)
        for what, mutated in _mutations(header):
            assert_refused_or_unchanged(tmp_path / path.name, _join(mutated, body), original, what)


def test_random_flips_in_the_header_are_refused_or_harmless(written, tmp_path):
    rng = random.Random(0)
    for path, (data, original) in written.items():
        (length,) = struct.unpack("<Q", data[:8])
        for _ in range(300):
            where = rng.randrange(0, 8 + length)
            flipped = bytearray(data)
            flipped[where] ^= 1 << rng.randrange(8)
            assert_refused_or_unchanged(tmp_path / path.name, bytes(flipped), original, f"a flip at byte {where}")


def test_a_removed_checksum_record_does_not_let_changed_data_through(written, tmp_path):
    for path, (data, original) in written.items():
        header, body = _split(data)
        header["__metadata__"] = {k: v for k, v in header["__metadata__"].items() if k != "jitckpt.checksums"}
        changed = bytearray(body)
        changed[len(changed) // 2] ^= 0x40
        target = tmp_path / path.name
        target.write_bytes(_join(header, bytes(changed)))
        with pytest.raises(JiTCheckpointError, match="checksum record .* is gone"):
            jitckpt.load(target)
