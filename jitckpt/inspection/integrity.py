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
from typing import TYPE_CHECKING, Callable, Iterator

from ..storage.crc32 import sha256_file
from ..tensors.lazy import LazyTensor, iter_refs
from ..storage import sources
from ..tensors.regions import reader_region_crc
from ..torchfile.archive import read_archive, starts_as_zip

if TYPE_CHECKING:
    from ..schema import JiTCheckpoint

THREADS = 2  # the CRC releases the GIL: two threads keep two cores busy (a third was not faster)
READ_BYTES = 1 << 20  # per read: small enough that the CRC finds the bytes still in cache (measured: 8 MiB is slower)


@dataclass
class IntegrityReport:
    """What :func:`check_file` found.

    ``damaged`` lists one readable line per damaged tensor or entry (at most
    ``limit`` of them; ``damaged_total`` counts them all); empty means intact.
    ``checksummed`` is False for a safetensors file written by another tool (it
    carries no checksums, so only its structure could be checked).
    """

    path: str
    format: str
    tensors: int = 0
    checked_bytes: int = 0
    checksummed: bool = True
    damaged: list[str] = field(default_factory=list)
    damaged_total: int = 0

    @property
    def intact(self) -> bool:
        return not self.damaged


def check_file(path: str | os.PathLike, limit: int = 10,
               progress: Callable[[int], None] | None = None) -> IntegrityReport:
    """Check ``path`` whole. Raises ``FormatError`` when its structure is broken.

    Reading the checkpoint checks its structure, every bound and that every
    tensor is reachable and fits the schema; then every checksummed region is
    read once and its CRC-32 compared: every zip entry of a torch file, every
    tensor of a safetensors file jitckpt wrote, every stored piece of a DCP
    directory's tensors. ``progress`` is called with the bytes of each region checked.
    """
    from .. import formats

    path = str(path)
    # Structure first, then the CRCs on every core: overlapping the two was measured slower (the parse,
    # holding the GIL, stalls the CRC threads between their reads).
    name, ckpt = formats.read(path)
    tensors = list(_tensor_refs(ckpt))
    refs = [piece for ref in tensors for piece in ref.stored_pieces()]
    if name == "dcp":  # every piece the directory stores, also those the schema does not map
        from ..formats.dcp import stored_tensors

        refs = stored_tensors(path)
    if sources.is_file(path) and starts_as_zip(path):  # every zip entry: the tensors and the pickle itself
        regions = [(path, e.offset, e.size, e.crc, e.name) for e in read_archive(path).entries.values()]
    else:
        unique = {(ref.path, ref.checksum): ref.name for ref in refs if ref.checksum is not None}
        regions = [(file, c.start, c.length, c.crc, label) for (file, c), label in unique.items()]
    computed = _crcs(regions, progress)
    names: dict[tuple[str, int], list[str]] = defaultdict(list)
    for ref in refs:
        if ref.checksum is not None:
            names[(ref.path, ref.checksum.start)].append(ref.name)
    report = IntegrityReport(path, name, tensors=len(tensors), checksummed=bool(regions) or not refs)
    for file, recorded in getattr(formats.get(name), "recorded_files", lambda _: [])(path):
        digest = sha256_file(file)
        if digest != recorded:
            report.damaged_total += 1
            report.damaged.append(f"{os.path.basename(file)}: SHA-256 mismatch (recorded {recorded[:16]}..., "
                                  f"computed {digest[:16]}...)")
    for (file, start, length, crc, label), actual in zip(regions, computed):
        report.checked_bytes += length
        if actual == crc:
            continue
        report.damaged_total += 1
        if len(report.damaged) < limit:
            tensors_here = ", ".join(names.get((file, start), [])) or label
            report.damaged.append(f"{tensors_here}: CRC-32 mismatch (recorded {crc:08x}, computed {actual:08x})")
    return report


def _crcs(regions: list[tuple[str, int, int, int, str]], progress: Callable[[int], None] | None) -> list[int]:
    """The CRC-32 of each (file, start, length, ...) region, by THREADS threads that each read a contiguous
    share of the bytes."""
    total = sum(r[2] for r in regions) or 1
    shares: list[list[int]] = [[] for _ in range(THREADS)]
    done = 0
    for index, region in enumerate(regions):
        shares[min(THREADS - 1, done * THREADS // total)].append(index)
        done += region[2]
    results = [0] * len(regions)

    def work(share: list[int]) -> None:
        buffer = memoryview(bytearray(READ_BYTES))
        opened: dict[str, sources.Reader] = {}
        try:
            for index in share:
                file, start, length = regions[index][:3]
                if file not in opened:
                    opened[file] = sources.Reader(file)
                results[index] = reader_region_crc(opened[file], buffer, start, length)
                if progress is not None:
                    progress(length)
        finally:
            for reader in opened.values():
                reader.close()

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        list(pool.map(work, shares))
    return results


def _tensor_refs(ckpt: JiTCheckpoint) -> Iterator[LazyTensor]:
    """Every TensorRef the checkpoint holds, in sections, optimizer state and extra."""
    return iter_refs([ckpt.sections(), ckpt.optimizer, ckpt.extra,
                      ckpt.unmapped_optimizer.positional if ckpt.unmapped_optimizer else None])
