"""Operations on a tensor of either kind: a :class:`~jitckpt.tensors.lazy.LazyTensor` or a ``torch.Tensor``.

Readers hand out lazy tensors, materialised checkpoints hold torch tensors; the
writers, the schema's checks and comparisons take either through these, and
import torch only when a torch tensor is really there.
"""

from __future__ import annotations

import math
import sys
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from ..storage import sources
from ..storage.crc32 import crc32
from ..storage.writeback import SeekableOutput
from .lazy import CHUNK_BYTES, DTYPES, LazyTensor, TensorRef, torch_bytes, write_chunks


@dataclass(frozen=True)
class Cast:
    """``source`` (a tensor of either kind) converted to ``dtype`` only when its bytes are asked for, so that
    a writer holds one converted tensor at a time. Rounds as ``torch.Tensor.to`` does (to nearest, even)."""

    source: Any
    dtype: str

    @property
    def shape(self) -> tuple[int, ...]:
        return shape_of(self.source)

    def to_torch(self) -> Any:
        import torch

        return to_torch(self.source).to(getattr(torch, self.dtype))


def cast(tensor: Any, dtype: str | None) -> Any:
    """``tensor`` as ``dtype`` (lazily), or unchanged when it already is, or ``dtype`` is None."""
    if dtype is None or dtype_name(tensor) == dtype:
        return tensor
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}")
    return Cast(tensor, dtype)


def write_tensor(tensor: Any, handle: SeekableOutput, progress: Callable[[int], None] | None = None) -> None:
    """Append a TensorRef's or torch tensor's row-major bytes to ``handle``."""
    if isinstance(tensor, Cast):
        tensor = tensor.to_torch()
    if isinstance(tensor, LazyTensor):
        tensor.copy_to(handle, progress)
    else:
        write_chunks(iter_tensor_bytes(tensor), handle, progress)


def write_tensor_crc(tensor: Any, handle: SeekableOutput, progress: Callable[[int], None] | None,
                     pool: Executor) -> "int | Future[int]":
    """Append ``tensor``'s bytes to ``handle`` and give their CRC-32 (a Future of it from ``pool``).

    From a local file the CRC is computed by ``pool``, reading the source beside the in-kernel copy; from a
    remote one it is computed from the bytes as they pass, so that each is transferred once."""
    if isinstance(tensor, LazyTensor) and any(sources.is_url(piece.path) for piece in tensor.stored_pieces()):
        crc = 0

        def summed() -> Iterator[memoryview]:
            nonlocal crc
            for chunk in tensor.iter_bytes():
                crc = crc32(chunk, crc)
                yield chunk

        write_chunks(summed(), handle, progress)
        return crc
    pending = pool.submit(crc_of, tensor) if isinstance(tensor, LazyTensor) else crc_of(tensor)
    write_tensor(tensor, handle, progress)
    return pending


def dtype_name(tensor: Any) -> str:
    """``'float32'`` for a TensorRef or a torch tensor."""
    if isinstance(tensor, (LazyTensor, Cast)):
        return tensor.dtype
    return str(tensor.dtype).removeprefix("torch.")


def shape_of(tensor: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in tensor.shape)


def nbytes_of(tensor: Any) -> int:
    if isinstance(tensor, LazyTensor):
        return tensor.nbytes
    if isinstance(tensor, Cast):
        return math.prod(tensor.shape) * DTYPES[tensor.dtype][0]
    nbytes: int = tensor.numel() * tensor.element_size()
    return nbytes


def is_tensor(value: Any) -> bool:
    """True for TensorRefs and torch tensors, without importing torch."""
    if isinstance(value, (LazyTensor, Cast)):
        return True
    torch = sys.modules.get("torch")  # a torch tensor exists only if torch was imported
    return torch is not None and isinstance(value, torch.Tensor)


def iter_tensor_bytes(tensor: Any, chunk: int = CHUNK_BYTES) -> Iterator[memoryview]:
    """Row-major bytes of a TensorRef or a torch tensor, in chunks."""
    if isinstance(tensor, Cast):
        tensor = tensor.to_torch()
    if isinstance(tensor, LazyTensor):
        yield from tensor.iter_bytes(chunk)
        return
    data = torch_bytes(tensor)
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]


def crc_of(tensor: Any) -> int:
    """The CRC-32 of a TensorRef's (verified) or a torch tensor's row-major bytes."""
    if isinstance(tensor, Cast):
        tensor = tensor.to_torch()
    if isinstance(tensor, LazyTensor):
        return tensor.crc32()
    return crc32(torch_bytes(tensor))


def to_torch(tensor: Any) -> Any:
    return tensor.to_torch() if isinstance(tensor, (LazyTensor, Cast)) else tensor


Scalar = float | int | bool  # a one-element tensor's value
_STRUCT_CODES = {"float64": "d", "float32": "f", "float16": "e", "int64": "q", "int32": "i", "int16": "h",
                 "int8": "b", "uint8": "B", "bool": "?"}


def scalar_value(tensor: Any) -> Scalar:
    """The value of a one-element tensor, read without torch for a TensorRef."""
    if not isinstance(tensor, LazyTensor):
        item: Scalar = tensor.item()
        return item
    if tensor.numel != 1:
        raise ValueError(f"tensor of shape {tensor.shape} is not a scalar")
    import struct

    data = tensor.read_span()[: tensor.itemsize]
    if tensor.dtype == "bfloat16":  # the top half of a float32
        widened: float = struct.unpack("<f", b"\0\0" + data)[0]
        return widened
    value: Scalar = struct.unpack("<" + _STRUCT_CODES[tensor.dtype], data)[0]
    return value


def concat_rows(parts: list[Any], name: str) -> Any:
    """``parts`` stacked along dimension 0, as one tensor: lazily (a sharded reference) when all are TensorRefs.

    The caller checks that every part has the same shape past dimension 0.
    """
    if all(isinstance(p, LazyTensor) for p in parts):
        from .sharded import Piece, assemble

        rows = sum(p.shape[0] for p in parts)
        offsets, start = [], 0
        for part in parts:
            offsets.append(Piece(part, (start,) + (0,) * (len(part.shape) - 1)))
            start += part.shape[0]
        return assemble(name, parts[0].dtype, (rows,) + tuple(parts[0].shape[1:]), offsets, parts[0].stored_pieces()[0].path)
    import torch

    return torch.cat([to_torch(p) for p in parts], dim=0)


def split_rows(tensor: Any, count: int) -> list[Any]:
    """``tensor`` cut into ``count`` equal slabs along dimension 0; a file-backed contiguous one stays lazy."""
    rows = shape_of(tensor)[0]
    if rows % count:
        raise ValueError(f"{rows} rows do not split into {count} equal parts")
    step = rows // count
    if type(tensor) is TensorRef and tensor.is_contiguous:
        import dataclasses

        row_bytes = tensor.nbytes // rows if rows else 0
        return [dataclasses.replace(tensor, offset=tensor.offset + i * step * row_bytes,
                                    shape=(step,) + tensor.shape[1:], stride=tensor.stride) for i in range(count)]
    full = to_torch(tensor)
    return [full[i * step:(i + 1) * step] for i in range(count)]
