"""Operations on a tensor of either kind: a lazy :class:`~jitckpt.tensors.TensorRef` or a ``torch.Tensor``.

Readers hand out TensorRefs, materialised checkpoints hold torch tensors; the
writers, the schema's checks and comparisons take either through these, and
import torch only when a torch tensor is really there.
"""

from __future__ import annotations

import sys
from typing import Any, BinaryIO, Callable, Iterator

from .fastcrc import crc32
from .tensors import CHUNK_BYTES, TensorRef, torch_bytes, write_chunks


def write_tensor(tensor: Any, handle: BinaryIO, progress: Callable[[int], None] | None = None) -> None:
    """Append a TensorRef's or torch tensor's row-major bytes to ``handle``."""
    if isinstance(tensor, TensorRef):
        tensor.copy_to(handle, progress)
    else:
        write_chunks(iter_tensor_bytes(tensor), handle, progress)


def dtype_name(tensor: Any) -> str:
    """``'float32'`` for a TensorRef or a torch tensor."""
    if isinstance(tensor, TensorRef):
        return tensor.dtype
    return str(tensor.dtype).removeprefix("torch.")


def shape_of(tensor: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in tensor.shape)


def nbytes_of(tensor: Any) -> int:
    if isinstance(tensor, TensorRef):
        return tensor.nbytes
    return tensor.numel() * tensor.element_size()


def is_tensor(value: Any) -> bool:
    """True for TensorRefs and torch tensors, without importing torch."""
    if isinstance(value, TensorRef):
        return True
    torch = sys.modules.get("torch")  # a torch tensor exists only if torch was imported
    return torch is not None and isinstance(value, torch.Tensor)


def iter_tensor_bytes(tensor: Any, chunk: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Row-major bytes of a TensorRef or a torch tensor, in chunks."""
    if isinstance(tensor, TensorRef):
        yield from tensor.iter_bytes(chunk)
        return
    data = torch_bytes(tensor)
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]


def crc_of(tensor: Any) -> int:
    """The CRC-32 of a TensorRef's (verified) or a torch tensor's row-major bytes."""
    if isinstance(tensor, TensorRef):
        return tensor.crc32()
    return crc32(torch_bytes(tensor))


def to_torch(tensor: Any) -> Any:
    return tensor.to_torch() if isinstance(tensor, TensorRef) else tensor


_STRUCT_CODES = {"float64": "d", "float32": "f", "float16": "e", "int64": "q", "int32": "i", "int16": "h",
                 "int8": "b", "uint8": "B", "bool": "?"}


def scalar_value(tensor: Any) -> float | int | bool:
    """The value of a one-element tensor, read without torch for a TensorRef."""
    if not isinstance(tensor, TensorRef):
        return tensor.item()
    if tensor.numel != 1:
        raise ValueError(f"tensor of shape {tensor.shape} is not a scalar")
    import struct

    data = tensor.read_span()[: tensor.itemsize]
    if tensor.dtype == "bfloat16":  # the top half of a float32
        return struct.unpack("<f", b"\0\0" + data)[0]
    return struct.unpack("<" + _STRUCT_CODES[tensor.dtype], data)[0]
