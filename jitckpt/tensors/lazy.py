"""Lazy, file-backed tensors and the dtype table shared by every format.

A :class:`TensorRef` names bytes inside a file (offset, dtype, shape, strides)
without reading them. Readers produce them so that inspecting and converting a
19 GB checkpoint never holds it in memory; :meth:`TensorRef.to_torch` reads one
tensor when a caller really needs it. Nothing here imports torch at module level.
"""

from __future__ import annotations

import abc
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ..storage import sources
from ..storage.crc32 import crc32
from ..storage.writeback import SeekableOutput, start_writeback
from .regions import CHUNK_BYTES as CHUNK_BYTES, Checksum as Checksum, damaged, region_crc, truncated, verify_region

WRITEBACK_BYTES = 1 << 20  # chunks at least this large get their writeback started as soon as written
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


class LazyTensor(abc.ABC):
    """A tensor whose bytes stay where they are stored until asked for: the one interface of every lazy tensor.

    A :class:`TensorRef` holds its bytes at one place in one file; a
    :class:`~jitckpt.tensors.sharded.ShardedTensor` is composed of pieces, each a
    lazy tensor of its own. Reading any of them verifies the stored checksums.
    """

    dtype: str
    shape: tuple[int, ...]
    name: str

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
    @abc.abstractmethod
    def checksummed(self) -> bool:
        """True when the stored checksums cover every byte of this tensor."""

    @abc.abstractmethod
    def verify(self) -> None:
        """Check the stored checksums of the bytes holding this tensor."""

    @abc.abstractmethod
    def iter_bytes(self, chunk: int = CHUNK_BYTES) -> Iterator[memoryview]:
        """The tensor's row-major bytes, at most ``chunk`` at a time, checked on the way."""

    @abc.abstractmethod
    def copy_to(self, handle: SeekableOutput, progress: Callable[[int], None] | None = None) -> None:
        """Append the tensor's row-major bytes to ``handle``."""

    @abc.abstractmethod
    def to_torch(self) -> Any:
        """The tensor read into memory (a private ``torch.Tensor``)."""

    @abc.abstractmethod
    def stored_pieces(self) -> list["TensorRef"]:
        """The file-backed pieces it is stored in (itself, for a :class:`TensorRef`)."""

    def crc32(self) -> int:
        """The CRC-32 of the tensor's row-major bytes."""
        crc = 0
        for block in self.iter_bytes():
            crc = crc32(block, crc)
        return crc

    def read_span(self) -> bytes:
        """The tensor's row-major bytes, checked."""
        return b"".join(bytes(block) for block in self.iter_bytes())


@dataclass(frozen=True)
class TensorRef(LazyTensor):
    """A tensor stored in ``path``: element 0 at byte ``offset``, strides in elements.

    ``span`` is how many bytes from ``offset`` the file must hold (the storage
    extent the strides reach); the reader checks it against its storage. ``name``
    says where the file keeps it (for messages); ``checksum``, when the file
    records one, is verified whenever the bytes are read.
    """

    path: str
    offset: int
    dtype: str
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    name: str = field(default="", compare=False)
    checksum: Checksum | None = field(default=None, compare=False)

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

    @property
    def checksummed(self) -> bool:
        """True when the file records a checksum for the bytes of this tensor."""
        return self.checksum is not None

    @property
    def checksum_is_own(self) -> bool:
        """True when the recorded checksum covers exactly this tensor's bytes."""
        c = self.checksum
        return c is not None and self.is_contiguous and c.start == self.offset and c.length == self.nbytes

    def iter_bytes(self, chunk: int = CHUNK_BYTES) -> Iterator[memoryview]:
        """Yield the tensor's bytes in row-major order, at most ``chunk`` at a time, checksum-verified.

        Chunks are views of one reused buffer: use each before asking for the next.
        The last chunk is yielded only once the checksum matched, so a consumer
        that received every byte received checked bytes.
        """
        if not self.is_contiguous:
            yield torch_bytes(self.to_torch().contiguous())
            return
        own = self.checksum_is_own
        if not own:
            self.verify()
        elif self.nbytes == 0:
            self._check_crc(0)
        buffer = memoryview(bytearray(min(chunk, self.nbytes)))
        with sources.Reader(self.path) as reader:
            done, crc = 0, 0
            while done < self.nbytes:
                want = min(len(buffer), self.nbytes - done)
                got = reader.readinto(buffer[:want], self.offset + done)
                if got <= 0:
                    raise truncated(self.path)
                done += got
                if own:
                    crc = crc32(buffer[:got], crc)
                    if done == self.nbytes:
                        self._check_crc(crc)
                yield buffer[:got]

    def crc32(self) -> int:
        """The CRC-32 of the tensor's row-major bytes, the file's own checksum verified on the way."""
        if not self.is_contiguous:
            return crc32(torch_bytes(self.to_torch().contiguous()))
        if not self.checksum_is_own:
            self.verify()
        crc = region_crc(self.path, self.offset, self.nbytes)
        if self.checksum_is_own:
            self._check_crc(crc)
        return crc

    def verify(self) -> None:
        """Check the recorded checksum of the bytes holding this tensor (no-op without one)."""
        if self.checksum is not None:
            verify_region(self.path, self.checksum, self.name)

    def _check_crc(self, crc: int) -> None:
        assert self.checksum is not None
        if crc != self.checksum.crc:
            raise damaged(self.path, self.name, self.checksum.crc, crc)

    def copy_to(self, handle: SeekableOutput, progress: Callable[[int], None] | None = None) -> None:
        """Append the tensor's bytes to ``handle`` with in-kernel copies where possible."""
        copy_range = getattr(os, "copy_file_range", None)
        if copy_range is None or not self.is_contiguous or sources.is_url(self.path):
            return write_chunks(self.iter_bytes(), handle, progress)
        handle.flush()
        start = handle.tell()
        origin = getattr(handle, "origin", 0)  # an archive embedded in a larger file counts from there
        src = os.open(sources.local(self.path), os.O_RDONLY)
        try:
            done = 0
            while done < self.nbytes:
                try:
                    got = copy_range(src, handle.fileno(), min(COPY_BYTES, self.nbytes - done),
                                     self.offset + done, origin + start + done)
                except OSError:  # filesystem or kernel without it: plain reads and writes
                    # (a full disk fails again there, through the handle, which names the target)
                    handle.seek(start + done)
                    return write_chunks(_skip(self.iter_bytes(), done), handle, progress)
                if got <= 0:
                    raise truncated(self.path)
                start_writeback(handle.fileno(), origin + start + done, got)
                done += got
                if progress is not None:
                    progress(got)
        finally:
            os.close(src)
        handle.seek(start + self.nbytes)

    def read_span(self) -> bytes:
        """The bytes from element 0 to the last element the strides reach, checksum-verified."""
        own = self.checksum_is_own
        if not own:
            self.verify()
        data = sources.read_bytes(self.path, self.span, self.offset)
        if len(data) != self.span:
            raise truncated(self.path)
        if own:
            self._check_crc(crc32(data))
        return data

    def read_into(self, target: memoryview) -> None:
        """Read a contiguous tensor's ``nbytes`` into ``target``, checksum-verified."""
        own = self.checksum_is_own
        if not own:
            self.verify()
        with sources.Reader(self.path) as reader:
            done, crc = 0, 0
            while done < self.nbytes:
                got = reader.readinto(target[done:self.nbytes], self.offset + done)
                if got <= 0:
                    raise truncated(self.path)
                if own:
                    crc = crc32(target[done:done + got], crc)
                done += got
        if own:
            self._check_crc(crc)

    def stored_pieces(self) -> list["TensorRef"]:
        return [self]

    def to_torch(self) -> Any:
        """Read the tensor into memory as a ``torch.Tensor`` (a private copy)."""
        import torch

        dtype = getattr(torch, self.dtype)
        if self.numel == 0:
            return torch.empty(self.shape, dtype=dtype)
        if self.is_contiguous:  # straight from the file into the tensor's memory: one copy
            out = torch.empty(self.shape, dtype=dtype)
            self.read_into(memoryview(out.reshape(-1).view(torch.uint8).numpy()))  # type: ignore[arg-type, unused-ignore]
            return out
        flat = torch.frombuffer(bytearray(self.read_span()), dtype=dtype)
        if self.is_contiguous:
            return flat.reshape(self.shape)
        return flat.as_strided(self.shape, self.stride).clone()


def write_chunks(chunks: Iterator[memoryview], handle: SeekableOutput, progress: Callable[[int], None] | None) -> None:
    """Append ``chunks`` to ``handle``; on a real file, writeback of each chunk starts at once.

    Without that hint, gigabytes of dirty pages pile up and the kernel throttles
    the writer (measured: 0.45 GB/s instead of disk speed) until the final fsync.
    """
    try:
        fd, origin = handle.fileno(), getattr(handle, "origin", 0)
    except (OSError, ValueError, AttributeError):  # an in-memory buffer: nothing to hint
        fd = None
    for chunk in chunks:
        handle.write(chunk)
        if fd is not None and len(chunk) >= WRITEBACK_BYTES:
            handle.flush()
            start_writeback(fd, origin + handle.tell() - len(chunk), len(chunk))
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


def torch_bytes(tensor: Any) -> memoryview:
    """The row-major bytes of a torch tensor: a view of its memory when it is contiguous on the CPU (no copy)."""
    import torch

    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    if flat.numel() == 0:
        return memoryview(b"")
    return memoryview(flat.view(torch.uint8).numpy())


def iter_refs(tree: Any) -> Iterator[LazyTensor]:
    """Every distinct lazy tensor in nested dicts, lists and tuples (each object once), without recursion."""
    stack: list[Any] = [tree]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if isinstance(node, LazyTensor):
            if id(node) not in seen:
                seen.add(id(node))
                yield node
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
