"""Integrity of one checkpoint file: structure, every checksum, every tensor reachable.

``check_file`` is what ``jitckpt verify FILE`` runs after copying a checkpoint
between machines: it reads every byte once (at disk speed) and reports the
damaged tensors by name instead of stopping at the first.
"""

from __future__ import annotations

import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from . import formats
from .schema import JiTCheckpoint
from .tensors import TensorRef, region_crc
from .ziparchive import read_archive

THREADS = 2  # zlib releases the GIL: two threads keep two cores busy


@dataclass
class IntegrityReport:
    """What :func:`check_file` found.

    ``damaged`` lists one readable line per damaged tensor or entry (at most
    ``limit`` of them); empty means intact. ``checksummed`` is False for a
    safetensors file written by another tool (it carries no checksums, so only
    its structure could be checked).
    """

    path: str
    format: str
    tensors: int = 0
    checked_bytes: int = 0
    checksummed: bool = True
    damaged: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.damaged


def check_file(path: str | os.PathLike, limit: int = 10,
               progress: Callable[[int], None] | None = None) -> IntegrityReport:
    """Check ``path`` whole. Raises ``FormatError`` when its structure is broken.

    Reading the checkpoint checks its structure, every bound and that every
    tensor is reachable and fits the schema; then every checksummed region is
    read once and its CRC-32 compared: every zip entry of a torch file, every
    tensor of a safetensors file jitckpt wrote. ``progress`` is called with the
    bytes of each region checked.
    """
    path = str(path)
    name, ckpt = formats.read(path)
    refs = list(_tensor_refs(ckpt))
    names: dict[int, list[str]] = defaultdict(list)
    for ref in refs:
        if ref.checksum is not None:
            names[ref.checksum.start].append(ref.name)
    if name in ("pth", "ckpt"):
        regions = [(e.offset, e.size, e.crc, e.name) for e in read_archive(path).entries.values()]
    else:
        unique = {ref.checksum: ref.name for ref in refs if ref.checksum is not None}
        regions = [(c.start, c.length, c.crc, label) for c, label in unique.items()]
    report = IntegrityReport(path, name, tensors=len(refs), checksummed=bool(regions) or not refs)
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        computed = pool.map(lambda region: region_crc(path, region[0], region[1]), regions)
        for (start, length, crc, label), actual in zip(regions, computed):
            report.checked_bytes += length
            if progress is not None:
                progress(length)
            if actual != crc and len(report.damaged) < limit:
                tensors = ", ".join(names.get(start, [])) or label
                report.damaged.append(f"{tensors}: CRC-32 mismatch (recorded {crc:08x}, computed {actual:08x})")
    return report


def _tensor_refs(ckpt: JiTCheckpoint) -> Iterator[TensorRef]:
    """Every TensorRef the checkpoint holds, in sections, optimizer state and extra."""
    stack: list[Any] = [ckpt.sections(), ckpt.optimizer, ckpt.extra]
    seen: set[int] = set()
    while stack:
        obj = stack.pop()
        if isinstance(obj, TensorRef):
            if id(obj) not in seen:
                seen.add(id(obj))
                yield obj
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple)):
            stack.extend(obj)
