"""Lazy, file-backed tensors and the dtype table shared by every format.

A :class:`TensorRef` names bytes inside a file (offset, dtype, shape, strides)
without reading them. Readers produce them so that inspecting and converting a
19 GB checkpoint never holds it in memory; :meth:`TensorRef.to_torch` reads one
tensor when a caller really needs it. Nothing here imports torch at module level.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterator

from .io import start_writeback

CHUNK_BYTES = 8 << 20  # 8 MiB: large enough for full disk speed, small for RSS
COPY_BYTES = 64 << 20  # per in-kernel copy call; bounds the gap between progress updates

# dtype name -> (itemsize in bytes, safetensors code, legacy torch storage class)
DTYPES: dict[str, tuple[int, str, str]] = {
    "float64": (8, "F64", "DoubleStorage"),
    "float32": (4, "F32", "FloatStorage"),
    "float16": (2, "F16", "HalfStorage"),
    "bfloat16": (2, "BF16", "BFloat16Storage"),
    "int64": (8, "I64", "LongStorage"),
    "int32": (4, "I32", "IntStorage"),
    "int16": (2, "I16", "ShortStorage"),
    "int8": (1, "I8", "CharStorage"),
    "uint8": (1, "U8", "ByteStorage"),
    "bool": (1, "BOOL", "BoolStorage"),
}
STORAGE_TO_DTYPE = {storage: name for name, (_, _, storage) in DTYPES.items()}
SAFETENSORS_TO_DTYPE = {code: name for name, (_, code, _) in DTYPES.items()}


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Row-major strides, in elements, of a tensor of ``shape``."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


@dataclass(frozen=True)
class TensorRef:
    """A tensor stored in ``path``: element 0 at byte ``offset``, strides in elements.

    ``span`` is how many bytes from ``offset`` the file must hold (the storage
    extent the strides reach); the reader checks it against the file size.
    """

    path: str
    offset: int
    dtype: str
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        return DTYPES[self.dtype][0]

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize

    @property
    def is_contiguous(self) -> bool:
        if self.numel <= 1:
            return True
        return all(
            size == 1 or have == want
            for size, have, want in zip(self.shape, self.stride, contiguous_strides(self.shape))
        )

    @property
    def span(self) -> int:
        if self.numel == 0:
            return 0
        last = sum((size - 1) * step for size, step in zip(self.shape, self.stride))
        return (last + 1) * self.itemsize

    def iter_bytes(self, chunk: int = CHUNK_BYTES) -> Iterator[memoryview]:
        """Yield the tensor's bytes in row-major order, at most ``chunk`` at a time.

        Chunks are views of one reused buffer: use each before asking for the next.
        """
        if not self.is_contiguous:
            yield memoryview(_tensor_bytes(self.to_torch().contiguous()))
            return
        buffer = memoryview(bytearray(min(chunk, self.nbytes)))
        fd = os.open(self.path, os.O_RDONLY)
        try:
            done = 0
            while done < self.nbytes:
                want = min(len(buffer), self.nbytes - done)
                got = os.preadv(fd, [buffer[:want]], self.offset + done)
                if got <= 0:
                    raise _truncated(self.path)
                done += got
                yield buffer[:got]
        finally:
            os.close(fd)

    def copy_to(self, handle: BinaryIO, progress: Callable[[int], None] | None = None) -> None:
        """Append the tensor's bytes to ``handle`` with in-kernel copies where possible."""
        copy_range = getattr(os, "copy_file_range", None)
        if copy_range is None or not self.is_contiguous:
            return _write_chunks(self.iter_bytes(), handle, progress)
        handle.flush()
        start = handle.tell()
        src = os.open(self.path, os.O_RDONLY)
        try:
            done = 0
            while done < self.nbytes:
                try:
                    got = copy_range(src, handle.fileno(), min(COPY_BYTES, self.nbytes - done),
                                     self.offset + done, start + done)
                except OSError:  # filesystem or kernel without it: plain reads and writes
                    handle.seek(start + done)
                    return _write_chunks(_skip(self.iter_bytes(), done), handle, progress)
                if got <= 0:
                    raise _truncated(self.path)
                start_writeback(handle.fileno(), start + done, got)
                done += got
                if progress is not None:
                    progress(got)
        finally:
            os.close(src)
        handle.seek(start + self.nbytes)

    def read_span(self) -> bytes:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            data = os.pread(fd, self.span, self.offset)
        finally:
            os.close(fd)
        if len(data) != self.span:
            raise _truncated(self.path)
        return data

    def to_torch(self) -> Any:
        """Read the tensor into memory as a ``torch.Tensor`` (a private copy)."""
        import torch

        dtype = getattr(torch, self.dtype)
        if self.numel == 0:
            return torch.empty(self.shape, dtype=dtype)
        flat = torch.frombuffer(bytearray(self.read_span()), dtype=dtype)
        if self.is_contiguous:
            return flat.reshape(self.shape)
        return flat.as_strided(self.shape, self.stride).clone()


def _truncated(path: str) -> Exception:
    from .errors import FormatError

    return FormatError(f"{path}: file is truncated (tensor data ends early)")


def _write_chunks(chunks: Iterator, handle: BinaryIO, progress: Callable[[int], None] | None) -> None:
    for chunk in chunks:
        handle.write(chunk)
        if progress is not None:
            progress(len(chunk))


def _skip(chunks: Iterator[memoryview], count: int) -> Iterator[memoryview]:
    """The bytes of ``chunks`` after the first ``count``."""
    for chunk in chunks:
        if count >= len(chunk):
            count -= len(chunk)
            continue
        yield chunk[count:]
        count = 0


def write_tensor(tensor: Any, handle: BinaryIO, progress: Callable[[int], None] | None = None) -> None:
    """Append a TensorRef's or torch tensor's row-major bytes to ``handle``."""
    if isinstance(tensor, TensorRef):
        tensor.copy_to(handle, progress)
    else:
        _write_chunks(iter_tensor_bytes(tensor), handle, progress)


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
    data = memoryview(_tensor_bytes(tensor))
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]


def to_torch(tensor: Any) -> Any:
    return tensor.to_torch() if isinstance(tensor, TensorRef) else tensor


def _tensor_bytes(tensor: Any) -> bytes:
    import torch

    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    if flat.numel() == 0:
        return b""
    return flat.view(torch.uint8).numpy().tobytes()


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
