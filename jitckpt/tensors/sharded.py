"""A tensor stored in pieces (the shards of a ``torch.distributed.checkpoint``), read as one.

:func:`assemble` checks that the pieces tile the full tensor exactly (no gap,
no overlap, each inside it, each of the right shape and dtype) and returns a
:class:`ShardedTensor`: a :class:`~jitckpt.tensors.lazy.LazyTensor` composed of its pieces, whose bytes are
theirs. When every piece is a slab along dimension 0 (as FSDP2 shards), the
full tensor's row-major bytes are the pieces' bytes in order, so writing it
copies each piece straight from its file (in-kernel where the platform can),
with memory flat at any size. Other layouts are assembled in memory, one
tensor at a time. Each piece's own checksum is verified whenever it is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ..errors import FormatError
from ..storage.writeback import SeekableOutput
from .lazy import CHUNK_BYTES, LazyTensor, TensorRef, torch_bytes, write_chunks

MAX_PIECES = 1 << 16  # pieces of one tensor (one per writing rank, or a few)


@dataclass(frozen=True)
class Piece:
    """One stored piece: ``ref`` holds it, ``offsets`` says where it starts in the full tensor."""

    ref: LazyTensor
    offsets: tuple[int, ...]


@dataclass(frozen=True)
class ShardedTensor(LazyTensor):
    """A tensor whose row-major bytes are assembled from ``pieces`` (see the module docstring); ``where``
    names what holds them (a DCP folder), for messages."""

    dtype: str
    shape: tuple[int, ...]
    pieces: tuple[Piece, ...]
    where: str = field(default="", compare=False)
    name: str = field(default="", compare=False)

    @property
    def is_slabs(self) -> bool:
        """True when each piece spans every dimension but the first: the bytes are the pieces' in order."""
        return all(p.ref.shape[1:] == self.shape[1:] for p in self.pieces)

    @property
    def checksummed(self) -> bool:
        return all(p.ref.checksummed for p in self.pieces)

    def verify(self) -> None:
        for piece in self.pieces:
            piece.ref.verify()

    def iter_bytes(self, chunk: int = CHUNK_BYTES) -> Iterator[memoryview]:
        if self.is_slabs:
            for piece in self.pieces:
                yield from piece.ref.iter_bytes(chunk)
            return
        data = torch_bytes(self.to_torch())
        for start in range(0, len(data), chunk):
            yield data[start:start + chunk]

    def copy_to(self, handle: SeekableOutput, progress: Callable[[int], None] | None = None) -> None:
        if not self.is_slabs:
            return write_chunks(self.iter_bytes(), handle, progress)
        for piece in self.pieces:
            piece.ref.copy_to(handle, progress)

    def stored_pieces(self) -> list[TensorRef]:
        return [stored for piece in self.pieces for stored in piece.ref.stored_pieces()]

    def to_torch(self) -> Any:
        import torch

        full = torch.empty(self.shape, dtype=getattr(torch, self.dtype))
        for piece in self.pieces:
            where = tuple(slice(o, o + n) for o, n in zip(piece.offsets, piece.ref.shape))
            full[where] = piece.ref.to_torch()
        return full


def assemble(name: str, dtype: str, shape: tuple[int, ...], pieces: list[Piece], where: str) -> LazyTensor:
    """The full tensor ``name`` from its stored ``pieces``; a FormatError naming it and ``where`` unless they
    tile it exactly. One piece that is the whole tensor is returned as it is."""
    if len(pieces) > MAX_PIECES:
        raise FormatError(f"{where}: tensor {name!r} is stored in {len(pieces)} pieces, more than {MAX_PIECES}")
    for piece in pieces:
        ref = piece.ref
        if ref.dtype != dtype:
            raise FormatError(f"{where}: a piece of tensor {name!r} is {ref.dtype}, the tensor {dtype}")
        if len(ref.shape) != len(shape) or len(piece.offsets) != len(shape) or any(
                o + n > s for o, n, s in zip(piece.offsets, ref.shape, shape)):
            raise FormatError(f"{where}: a piece of tensor {name!r} of shape {ref.shape} at {piece.offsets} lies "
                              f"outside its shape {shape}")
    kept = sorted((p for p in pieces if p.ref.numel), key=lambda p: p.offsets)
    _check_tiling(name, shape, kept, where)
    if len(kept) == 1 and kept[0].ref.shape == shape:
        return kept[0].ref
    return ShardedTensor(dtype=dtype, shape=shape, pieces=tuple(kept), where=where, name=name)


MAX_GRID_PIECES = 256  # pieces of one tensor not cut along dimension 0 alone (tensor parallelism cuts in a few)


def _check_tiling(name: str, shape: tuple[int, ...], pieces: list[Piece], where: str) -> None:
    """The pieces (sorted by offsets) cover ``shape`` exactly: linear for slabs along dimension 0 (FSDP2's
    sharding), pairwise, so for at most :data:`MAX_GRID_PIECES` pieces, otherwise."""
    covered = sum(p.ref.numel for p in pieces)
    if shape and all(p.ref.shape[1:] == shape[1:] and not any(p.offsets[1:]) for p in pieces):
        end = 0
        for piece in pieces:
            if piece.offsets[0] < end:
                raise FormatError(f"{where}: tensor {name!r}: the pieces at {piece.offsets} and before overlap")
            end = piece.offsets[0] + piece.ref.shape[0]
    elif len(pieces) > MAX_GRID_PIECES:
        raise FormatError(f"{where}: tensor {name!r} is cut into {len(pieces)} pieces along more than its first "
                          f"dimension, more than the {MAX_GRID_PIECES} jitckpt checks")
    else:
        _check_no_overlap(name, shape, pieces, where)
    if covered != math.prod(shape):
        raise FormatError(f"{where}: tensor {name!r}: its pieces cover {covered} of its {math.prod(shape)} "
                          "elements (a shard is missing)")


def _check_no_overlap(name: str, shape: tuple[int, ...], pieces: list[Piece], where: str) -> None:
    for i, a in enumerate(pieces):
        end = a.offsets[0] + a.ref.shape[0] if shape else 0
        for b in pieces[i + 1:]:
            if shape and b.offsets[0] >= end:
                break  # sorted by offsets: no later piece reaches back into a
            if all(ao < bo + bn and bo < ao + an
                   for ao, an, bo, bn in zip(a.offsets, a.ref.shape, b.offsets, b.ref.shape)):
                raise FormatError(f"{where}: tensor {name!r}: the pieces at {a.offsets} and {b.offsets} overlap")
