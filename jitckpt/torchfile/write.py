"""Writing the zip files of ``torch.save`` without importing torch.

The writer streams each tensor's bytes into its zip entry (64-byte aligned, as
torch writes them), so the output is loadable by ``torch.load``
(``weights_only=True`` with ``argparse.Namespace`` allowed) and memory stays
flat. Each entry's CRC-32 is computed from the source in a second thread; a
source tensor whose file records a CRC-32 for exactly its bytes is checked
against it on the way, so a conversion never launders corrupt data.
(Reading is :mod:`jitckpt.torchfile.read`.)

A file jitckpt writes names only globals that torch's ``weights_only`` loader
accepts by default, plus ``argparse.Namespace`` (:data:`WRITABLE_GLOBALS`):
:func:`write_tree` first turns the tree into such plain data (dict subclasses
into dicts, paths into strings, frozensets into sets, slices into tuples; see
:func:`plain_tree`), and the pickler refuses any other global with a
:class:`~jitckpt.errors.SchemaError` before a byte reaches the file.
"""

from __future__ import annotations

import argparse
import codecs
import collections
import io
import pathlib
import pickle
import struct
from concurrent.futures import Future, ThreadPoolExecutor
from types import FunctionType
from typing import Any, BinaryIO, Callable

from ..errors import SchemaError, render
from ..compat import python_pickler
from .decoder import MAX_PICKLE_BYTES
from ..storage.crc32 import crc32
from ..storage.writeback import SeekableOutput
from ..tensors.anytensor import dtype_name, is_tensor, nbytes_of, shape_of, write_tensor_crc
from ..tensors.lazy import DTYPES, contiguous_strides
from .archive import ZIP_MAGIC

_ALIGNMENT = 64
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")

Progress = Callable[[int], None]


def archive_name(path: Any) -> str:
    """The folder name inside the zip; torch uses the file's stem."""
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in pathlib.Path(path).stem)
    return stem or "archive"


class _Global:
    """A global named in the pickle (``torch._utils._rebuild_tensor_v2``, ``torch.FloatStorage``)
    without importing its module: torch is not needed to write a torch file."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args: Any) -> Any:  # pickle requires reduce functions to be callable
        raise TypeError(f"{self.module}.{self.name} is only a name for pickling")


_REBUILD_TENSOR = _Global("torch._utils", "_rebuild_tensor_v2")
_ORDERED_DICT = _Global("collections", "OrderedDict")

# The only globals a pickle jitckpt writes may name (Python 3 spellings; protocol 2 writes
# builtins as __builtin__, which torch maps back): all in torch.load(weights_only=True)'s
# default allowlist, but argparse.Namespace, which the original's args need.
WRITABLE_GLOBALS: frozenset[tuple[str, str]] = frozenset({
    ("torch._utils", "_rebuild_tensor_v2"), ("collections", "OrderedDict"), ("collections", "Counter"),
    ("builtins", "set"), ("builtins", "bytearray"), ("builtins", "complex"), ("_codecs", "encode"),
    ("argparse", "Namespace"),
} | {("torch", storage) for _, _, storage in DTYPES.values()})


class _TensorToWrite:
    def __init__(self, key: str, tensor: Any) -> None:
        self.key, self.tensor = key, tensor


def _check_global(module: str, name: str) -> None:
    if (module, name) not in WRITABLE_GLOBALS:
        raise SchemaError(f"refusing to write {module}.{name} into a torch file: torch.load(weights_only=True) "
                          "could not read it back; only plain data, tensors and argparse.Namespace can be written")


_PythonPickler: Any = python_pickler()


class _TorchPickler(_PythonPickler):  # type: ignore[misc]  # the Python pickler: _Global writes its own opcode
    """Protocol 2, as ``torch.save``; every global it names is checked against :data:`WRITABLE_GLOBALS`."""

    dispatch = dict(_PythonPickler.dispatch)

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file, protocol=2)
        self.tensors: list[_TensorToWrite] = []

    def _save_global_name(self, obj: _Global) -> None:
        _check_global(obj.module, obj.name)
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[_Global] = _save_global_name

    def save_global(self, obj: Any, name: str | None = None) -> None:
        qualname = name or getattr(obj, "__qualname__", None) or getattr(obj, "__name__", repr(obj))
        # typeshed's pickle lacks whichmodule; qualname is text for whatever pickle names by reference
        _check_global(pickle.whichmodule(obj, qualname), qualname)  # type: ignore[attr-defined, arg-type]
        super().save_global(obj, name)

    dispatch[FunctionType] = save_global  # the base class's table holds its own save_global

    def _save_bytes(self, obj: bytes) -> None:
        """``bytes`` as torch's loader reads them: ``_codecs.encode`` (protocol 2 writes ``b''`` as ``bytes()``)."""
        self.save_reduce(codecs.encode, (str(obj, "latin1"), "latin1"), obj=obj)

    dispatch[bytes] = _save_bytes

    def reducer_override(self, obj: Any) -> Any:
        if is_tensor(obj):
            entry = _TensorToWrite(str(len(self.tensors)), obj)
            self.tensors.append(entry)
            shape = shape_of(obj)
            return _REBUILD_TENSOR, (entry, 0, shape, contiguous_strides(shape), False, _OrderedDictArg())
        return NotImplemented

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _TensorToWrite):
            dtype = dtype_name(obj.tensor)
            itemsize, _, storage = DTYPES[dtype]
            return ("storage", _Global("torch", storage), obj.key, "cpu", nbytes_of(obj.tensor) // itemsize)
        return None


class _OrderedDictArg:
    """An empty ``collections.OrderedDict()`` (the backward hooks slot), pickled by name."""

    def __reduce__(self) -> tuple[_Global, tuple[()]]:
        return _ORDERED_DICT, ()


_PLAIN_LEAVES = (type(None), bool, int, float, str, bytes, bytearray, complex)
_ALLOWED_DICTS = (collections.OrderedDict, collections.Counter)  # named by torch's allowlist; kept


def plain_tree(obj: Any) -> Any:
    """``obj`` as data that ``torch.load(weights_only=True)`` reads (with ``argparse.Namespace`` allowed).

    Dict subclasses (Lightning's ``AttributeDict``, ``defaultdict``, ...) become
    dicts (``OrderedDict`` and ``Counter`` stay), list and tuple subclasses
    (``torch.Size``, named tuples) lists and tuples, frozensets sets, slices
    ``(start, stop, step)`` tuples, paths strings, subclasses of numbers and
    strings their base type. Tensors are kept, and so is sharing (an object
    met twice is converted once). Anything else is a :class:`SchemaError`
    naming where it is in the tree.
    """
    return _Plain().convert(obj, "")


class _Plain:
    def __init__(self) -> None:
        self.memo: dict[int, Any] = {}

    def convert(self, obj: Any, where: str) -> Any:
        kind = type(obj)
        if kind in _PLAIN_LEAVES or is_tensor(obj):
            return obj
        if id(obj) in self.memo:
            return self.memo[id(obj)]
        if isinstance(obj, (dict, list, argparse.Namespace)):  # registered before filling: cycles stay cycles
            out: Any = (argparse.Namespace() if isinstance(obj, argparse.Namespace) else [] if isinstance(obj, list)
                        else kind() if kind in _ALLOWED_DICTS else {})
            self.memo[id(obj)] = out
            if isinstance(obj, list):
                out.extend(self.convert(v, _at(where, i)) for i, v in enumerate(obj))
            elif isinstance(obj, dict):
                items = [(self.key(k, where), self.convert(v, _at(where, k))) for k, v in obj.items()]
                for k, v in items:  # item by item: Counter.update would add, dict.update skips OrderedDict's order
                    out[k] = v
            else:
                for k, v in vars(obj).items():
                    setattr(out, k, self.convert(v, _at(where, k)))
            return out
        self.memo[id(obj)] = out = self._other(obj, kind, where)
        return out

    def _other(self, obj: Any, kind: type, where: str) -> Any:
        if isinstance(obj, tuple):
            return tuple(self.convert(v, _at(where, i)) for i, v in enumerate(obj))
        if isinstance(obj, (set, frozenset)):
            items = [self.convert(v, _at(where, i)) for i, v in enumerate(obj)]
            try:
                return set(items)
            except TypeError:  # an element became unhashable (a frozenset inside): keep them as a list
                return items
        if isinstance(obj, slice):
            return tuple(self.convert(v, _at(where, p)) for p, v in
                         (("start", obj.start), ("stop", obj.stop), ("step", obj.step)))
        if isinstance(obj, pathlib.PurePath):
            return str(obj)
        base: type[Any]  # int, float, str, bytes: obj becomes the value of its plain base type
        for base in (int, float, str, bytes):
            if isinstance(obj, base):
                return base(obj)
        raise SchemaError(f"cannot write {where or 'the checkpoint'!r}: it holds a {kind.__module__}."
                          f"{kind.__qualname__}, which is not plain data (torch.load(weights_only=True) could "
                          "not read it back)")

    def key(self, key: Any, where: str) -> Any:
        value = self.convert(key, where)
        return tuple(value) if isinstance(value, (set, list)) else value  # keys stay hashable


def _at(where: str, key: Any) -> str:
    text = key[:200] if isinstance(key, str) else render(key, 200)
    return f"{where}/{text}" if where else text


def write_tree(tree: Any, handle: SeekableOutput, archive: str = "archive", progress: Progress | None = None) -> None:
    """``torch.save`` ``tree`` into ``handle`` (seekable), streaming each tensor's bytes.

    Tensors may be lazy or torch tensors; both are written contiguous.
    Shared tensors are not deduplicated (every leaf gets its own storage).
    The tree goes through :func:`plain_tree` first, and nothing is written
    when it holds anything else (a :class:`SchemaError`).
    """
    buffer = io.BytesIO()
    pickler = _TorchPickler(buffer)
    pickler.dump(plain_tree(tree))
    if buffer.tell() > MAX_PICKLE_BYTES:  # what jitckpt writes, jitckpt must read back
        raise SchemaError(f"the checkpoint's data besides its tensors pickles to {buffer.tell()} bytes, more than "
                          f"the {MAX_PICKLE_BYTES} a checkpoint's pickle may have; write it as .safetensors")
    with _ZipWriter(handle) as zf:
        zf.add_bytes(f"{archive}/data.pkl", buffer.getvalue())
        for name, payload in ((".format_version", b"1"), (".storage_alignment", b"64"), ("byteorder", b"little")):
            zf.add_bytes(f"{archive}/{name}", payload)
        for entry in pickler.tensors:
            zf.add_tensor(f"{archive}/data/{entry.key}", entry.tensor, progress)
        zf.add_bytes(f"{archive}/version", b"3\n")
        zf.add_bytes(f"{archive}/.data/serialization_id", b"0" * 40)


class EmbeddedOutput:
    """The rest of a seekable file, addressed from ``origin``: an archive written through it counts its
    offsets from there (``torch.distributed.checkpoint`` stores each item as such an embedded archive)."""

    def __init__(self, handle: BinaryIO, origin: int) -> None:
        self.handle, self.origin = handle, origin

    def tell(self) -> int:
        return self.handle.tell() - self.origin

    def seek(self, offset: int) -> int:
        return self.handle.seek(self.origin + offset) - self.origin

    def write(self, data: Any) -> int:
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()

    def fileno(self) -> int:
        return self.handle.fileno()


_U32 = 0xFFFFFFFF
_ZIP64_LIMIT = _U32  # sizes and offsets from here on need zip64 records (a test lowers it)


class _ZipWriter:
    """A stored (uncompressed) zip written as torch writes it: entries 64-byte aligned.

    Tensor data goes with in-kernel copies while a second thread computes each
    entry's CRC-32 from the source; the CRCs are patched into the local headers
    and written in the central directory when the archive closes.
    """

    def __init__(self, handle: SeekableOutput) -> None:
        self.handle = handle
        self.entries: list[tuple[bytes, int, int, Any]] = []  # name, header offset, size, crc or future
        self.crc_pool = ThreadPoolExecutor(max_workers=1)

    def __enter__(self) -> "_ZipWriter":
        return self

    def __exit__(self, kind: Any, *_exc: Any) -> None:
        try:
            if kind is None:
                self._finish()
        finally:
            self.crc_pool.shutdown(wait=True, cancel_futures=True)

    def _local_header(self, name: bytes, size: int) -> int:
        """Write the local header of an entry of ``size`` bytes; return its offset."""
        offset = self.handle.tell()
        zip64 = size >= _ZIP64_LIMIT
        extra = struct.pack("<HHQQ", 0x0001, 16, size, size) if zip64 else b""
        start = offset + _LOCAL_HEADER.size + len(name) + len(extra) + 4
        pad = -start % _ALIGNMENT
        extra += struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # 'FB' padding field, as torch writes
        stored = _U32 if zip64 else size
        self.handle.write(_LOCAL_HEADER.pack(ZIP_MAGIC, 45 if zip64 else 20, 0, 0, 0, _DOS_DATE, 0, stored, stored,
                                             len(name), len(extra)) + name + extra)
        return offset

    def add_bytes(self, name: str, data: bytes) -> None:
        raw = name.encode()
        offset = self._local_header(raw, len(data))
        self.handle.write(data)
        self.entries.append((raw, offset, len(data), crc32(data)))

    def add_tensor(self, name: str, tensor: Any, progress: Progress | None = None) -> None:
        raw = name.encode()
        size = nbytes_of(tensor)
        offset = self._local_header(raw, size)
        crc = write_tensor_crc(tensor, self.handle, progress, self.crc_pool)
        self.entries.append((raw, offset, size, crc))

    def _finish(self) -> None:
        handle = self.handle
        end = handle.tell()
        directory = io.BytesIO()
        for name, offset, size, crc in self.entries:
            crc = crc.result() if isinstance(crc, Future) else crc
            handle.seek(offset + 14)
            handle.write(struct.pack("<L", crc))
            big_size, big_offset = size >= _ZIP64_LIMIT, offset >= _ZIP64_LIMIT
            extra = b""
            if big_size or big_offset:
                fields = (struct.pack("<QQ", size, size) if big_size else b"") + (
                    struct.pack("<Q", offset) if big_offset else b"")
                extra = struct.pack("<HH", 0x0001, len(fields)) + fields
            stored = _U32 if big_size else size
            directory.write(_CENTRAL_HEADER.pack(
                b"PK\x01\x02", 45, 45 if extra else 20, 0, 0, 0, _DOS_DATE, crc, stored, stored, len(name),
                len(extra), 0, 0, 0, 0, _U32 if big_offset else offset) + name + extra)
        handle.seek(end)
        central = directory.getvalue()
        handle.write(central)
        count, cd_end = len(self.entries), end + len(central)
        if count >= 0xFFFF or end >= _ZIP64_LIMIT or len(central) >= _ZIP64_LIMIT:
            handle.write(struct.pack("<4sQHHLLQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(central), end))
            handle.write(struct.pack("<4sLQL", b"PK\x06\x07", 0, cd_end, 1))
            count, size_field, offset_field = min(count, 0xFFFF), min(len(central), _U32), min(end, _U32)
        else:
            size_field, offset_field = len(central), end
        handle.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, size_field, offset_field, 0))


_DOS_DATE = 0x21  # 1980-01-01, the earliest DOS date (torch writes no timestamps either)
_CENTRAL_HEADER = struct.Struct("<4s6H3L5H2L")
