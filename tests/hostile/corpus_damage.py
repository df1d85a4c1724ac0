"""Damaged copies of the bases: truncations at many offsets and bit flips in every region.

Every item keeps its base as oracle: a command that accepts the damaged file
must behave exactly as on the base (same ``inspect`` output, byte-identical
conversion), ``verify`` may call it intact only if no content changed.
"""

from __future__ import annotations

import json
import random
from typing import Iterator

from .bases import Base, Layout, header_equivalent, layout
from .items import CorpusItem, Edit, Patched


def truncations(base: Base, count: int, rng: random.Random) -> Iterator[CorpusItem]:
    """``base`` cut after 1 and 8 bytes, 1 byte short, once inside every region, and at ``count`` random offsets.

    With ``count`` > 0 (the full corpus) every region's first and last byte are cut points too.
    """
    lay = layout(base)
    cuts = {1, 8, lay.size - 1}
    for region, spans in lay.regions.items():
        start, end = rng.choice(spans)
        cuts.add(rng.randrange(start, end))
        if count:
            cuts.update({start, end - 1})
    cuts.update(rng.randrange(1, lay.size) for _ in range(count))
    for cut in sorted(c for c in cuts if 0 < c < lay.size):
        yield CorpusItem(
            name=f"truncate/{base.name}/at-{cut}-{_region_at(lay, cut)}",
            category="truncation", suffix=base.suffix,
            source=Patched(base.path, (Edit(cut, lay.size),)), oracle=base.path,
        )


def bit_flips(base: Base, per_region: int, rng: random.Random) -> Iterator[CorpusItem]:
    """Up to ``per_region`` distinct items per region of ``base``, each flipping 1-3 seeded-random bits in it."""
    lay = layout(base)
    data = base.path.read_bytes()
    for region, spans in sorted(lay.regions.items()):
        seen: set[tuple[tuple[int, int], ...]] = set()
        for n in range(per_region):
            bits = 1 if n < 2 else rng.randint(2, 3)
            flips = tuple(sorted({_random_bit(spans, rng) for _ in range(bits)}))
            if flips not in seen:  # a small region (the 8-byte length field) repeats itself
                seen.add(flips)
                yield _flip_item(base, lay, data, region, list(flips))


def _random_bit(spans: list[tuple[int, int]], rng: random.Random) -> tuple[int, int]:
    """(byte offset, bit) inside a random span of the region, spans weighted by size."""
    start, end = rng.choices(spans, weights=[e - s for s, e in spans])[0]
    return rng.randrange(start, end), rng.randrange(8)


def _flip_item(base: Base, lay: Layout, data: bytes, region: str, flips: list[tuple[int, int]]) -> CorpusItem:
    damaged = bytearray(data)
    for offset, bit in flips:
        damaged[offset] ^= 1 << bit
    offsets = sorted({offset for offset, _ in flips})
    edits = tuple(Edit(o, o + 1, bytes([damaged[o]])) for o in offsets)
    same, undetectable = _judge_flip(base, lay, data, bytes(damaged), region, offsets)
    label = "+".join(f"{o}.{b}" for o, b in flips)
    return CorpusItem(
        name=f"flip/{base.name}/{region}/{label}", category="bit_flip", suffix=base.suffix,
        source=Patched(base.path, edits), oracle=base.path, content_same=same, undetectable=undetectable,
    )


def _judge_flip(base: Base, lay: Layout, data: bytes, damaged: bytes, region: str,
                offsets: list[int]) -> tuple[bool, bool]:
    """(content unchanged, undetectable by design) for a flip of ``offsets`` in ``region``."""
    if not base.is_safetensors:
        return all(o in lay.benign for o in offsets), False
    if region == "tensor_data":
        return False, base.name == "foreign"  # only jitckpt's checksums can see it
    if region != "json_header":
        return False, False
    start, end = lay.regions["json_header"][0]
    if header_equivalent(data[start:end], damaged[start:end]):
        return True, False
    return False, base.name == "foreign" and _same_tensors(data[start:end], damaged[start:end])


def _same_tensors(original: bytes, damaged: bytes) -> bool:
    """True if a damaged header still parses and only its ``__metadata__`` changed (no checksum covers it)."""
    try:
        before, after = json.loads(original), json.loads(damaged)
    except (ValueError, UnicodeDecodeError):
        return False
    if not isinstance(after, dict):
        return False
    before.pop("__metadata__", None)
    meta = after.pop("__metadata__", None)
    return before == after and isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())


def _region_at(lay: Layout, offset: int) -> str:
    for region, spans in lay.regions.items():
        if any(start <= offset < end for start, end in spans):
            return region
    return "between"
