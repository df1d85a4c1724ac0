"""Reading the zip files of ``torch.save`` without running pickled code.

The archive structure is checked by :mod:`jitckpt.torchfile.archive`, ``data.pkl`` is
interpreted by :mod:`jitckpt.torchfile.decoder` with the allowlist below, and every
tensor becomes a :class:`~jitckpt.tensors.lazy.TensorRef` into its storage entry,
bounds-checked against it and carrying the entry's CRC-32, so a checkpoint of
any size is understood by reading its few-kilobyte pickle.
"""

from __future__ import annotations

import codecs
import argparse
import collections
import pathlib
from typing import Any

from ..errors import FormatError, render
from ..tensors.lazy import DTYPES, STORAGE_TO_DTYPE, TensorRef
from ..tensors.regions import Checksum
from .bounds import cheap_to_hash
from .decoder import DICT_TYPES, Unpickler, build_fields
from .archive import ZIP_MAGIC, Archive, read_archive

MAX_DIMS = 64
_SMALL_ENTRY = 64


class _Storage:
    """A storage named by the pickle: its dtype, its zip entry key and its element count."""

    def __init__(self, dtype: str, key: str, numel: int) -> None:
        self.dtype, self.key, self.numel = dtype, key, numel


class _StorageType:
    def __init__(self, dtype: str) -> None:
        self.dtype = dtype


class _PendingTensor:
    def __init__(self, storage: _Storage, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride


class AttributeDict(dict[Any, Any]):
    """Lightning's ``AttributeDict`` read as plain data (a dict; no attribute magic)."""


def _is_int(value: Any) -> bool:
    return type(value) is int


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                    hooks: Any = None, metadata: Any = None) -> _PendingTensor:
    """``torch._utils._rebuild_tensor_v2`` with every argument's type checked; builds nothing."""
    if not isinstance(storage, _Storage):
        raise ValueError("the tensor's storage is not a storage")
    if not (_is_int(offset) and type(size) is tuple and type(stride) is tuple and len(size) == len(stride)
            and len(size) <= MAX_DIMS and all(map(_is_int, size + stride))):
        raise ValueError("tensor offset, size and stride must be integers")
    if offset < 0 or min(size + stride, default=0) < 0:
        raise ValueError("negative tensor offset, size or stride")
    if type(requires_grad) is not bool or not (hooks is None or type(hooks) in DICT_TYPES and not hooks):
        raise ValueError("unexpected tensor flags or backward hooks")
    if metadata is not None and not (type(metadata) is dict and not metadata):
        raise ValueError("tensor metadata is not supported")
    return _PendingTensor(storage, offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any = False, hooks: Any = None, state: Any = None) -> Any:
    if not isinstance(data, _PendingTensor):
        raise ValueError("a parameter's data is not a tensor")
    return data  # a Parameter's payload is its tensor; requires_grad is training state


def _encode(text: Any, encoding: Any = "latin1") -> bytes:
    """``_codecs.encode``: how protocol 2 pickles ``bytes``."""
    if type(text) is not str or encoding != "latin1":
        raise ValueError("bytes must be pickled as latin1 text")
    encoded: bytes = codecs.encode(text, encoding)  # what the pickle's _codecs.encode names
    return encoded


MAX_PATH_CHARS = 4096


def _ordered_dict(*args: Any) -> collections.OrderedDict[Any, Any]:
    """``collections.OrderedDict()`` (its items follow by SETITEMS), or of a list of key/value pairs."""
    if not args:
        return collections.OrderedDict()
    if len(args) == 1 and type(args[0]) is list and all(type(p) in (list, tuple) and len(p) == 2 for p in args[0]):
        return collections.OrderedDict((cheap_to_hash(k), v) for k, v in args[0])
    raise ValueError("OrderedDict takes no arguments or a list of pairs")


def _counter(*args: Any) -> dict[Any, Any]:
    """``collections.Counter`` read as the plain dict of its counts."""
    if not args:
        return {}
    if len(args) == 1 and type(args[0]) is dict:
        return dict(args[0])
    raise ValueError("Counter takes no arguments or a dict")


def _members(args: tuple[Any, ...], what: str) -> list[Any]:
    if not args:
        return []
    if len(args) == 1 and type(args[0]) in (list, tuple):
        return [cheap_to_hash(member) for member in args[0]]
    raise ValueError(f"{what} takes no arguments or a list")


def _set(*args: Any) -> set[Any]:
    return set(_members(args, "set"))


def _frozenset(*args: Any) -> frozenset[Any]:
    return frozenset(_members(args, "frozenset"))


def _slice(*args: Any) -> slice:
    if not 1 <= len(args) <= 3 or not all(a is None or type(a) in (int, float) for a in args):
        raise ValueError("slice takes one to three numbers or None")
    return slice(*args)


def _complex(*args: Any) -> complex:
    if len(args) > 2 or not all(type(a) in (int, float) for a in args):
        raise ValueError("complex takes two numbers")
    return complex(*args)


def _bytearray(*args: Any) -> bytearray:
    """``bytearray`` of the bytes the pickle holds (never of a size: ``bytearray(n)`` would allocate n bytes)."""
    if not args:
        return bytearray()
    if len(args) == 1 and type(args[0]) is bytes:
        return bytearray(args[0])
    if len(args) == 2 and type(args[0]) is str and args[1] in ("latin-1", "latin1"):
        return bytearray(codecs.encode(args[0], "latin1"))
    raise ValueError("bytearray takes the bytes it holds")


def _path(flavour: type) -> Any:
    def build(*parts: Any) -> str:
        """A path read as its text (``pathlib`` objects are never built from a file's arguments)."""
        if not all(type(p) is str for p in parts) or sum(map(len, parts)) > MAX_PATH_CHARS:
            raise ValueError(f"a path is made of at most {MAX_PATH_CHARS} characters of text")
        return str(flavour(*parts))
    return build


def _defaultdict(*_factory: Any) -> dict[Any, Any]:
    return {}  # read as a plain dict: its factory is never kept


ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("collections", "Counter"): _counter,
    ("collections", "defaultdict"): _defaultdict,
    ("builtins", "set"): _set,
    ("builtins", "frozenset"): _frozenset,
    ("builtins", "slice"): _slice,
    ("builtins", "complex"): _complex,
    ("builtins", "bytearray"): _bytearray,
    ("_codecs", "encode"): _encode,
    ("argparse", "Namespace"): argparse.Namespace,
    ("pathlib", "PosixPath"): _path(pathlib.PurePosixPath),
    ("pathlib", "WindowsPath"): _path(pathlib.PureWindowsPath),
    ("pathlib", "PurePosixPath"): _path(pathlib.PurePosixPath),
    ("pathlib", "PureWindowsPath"): _path(pathlib.PureWindowsPath),
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("lightning.fabric.utilities.data", "AttributeDict"): AttributeDict,
    ("lightning_fabric.utilities.data", "AttributeDict"): AttributeDict,
    ("pytorch_lightning.utilities.parsing", "AttributeDict"): AttributeDict,
}
ALLOWED.update({("torch", storage): _StorageType(dtype) for storage, dtype in STORAGE_TO_DTYPE.items()})


def _state_dict_metadata(inst: Any, state: Any) -> None:
    """A state dict's BUILD: ``{'_metadata': {...}}`` (module versions), which nothing of jitckpt uses:
    checked and dropped, never set as an attribute."""
    if type(state) is not dict or set(state) != {"_metadata"} or type(state["_metadata"]) not in DICT_TYPES:
        raise ValueError("state other than _metadata")


def _no_state(inst: Any, state: Any) -> None:
    raise ValueError("state")


# The record types NEWOBJ may create and how BUILD completes each (see Unpickler).
_BUILDABLE = {argparse.Namespace: build_fields, AttributeDict: _no_state,
              collections.OrderedDict: _state_dict_metadata}


def is_torch_zip(head: bytes) -> bool:
    return head.startswith(ZIP_MAGIC)


def read_tree(path: str, start: int = 0, length: int | None = None) -> Any:
    """Unpickle a ``torch.save`` zip safely; tensors come back as TensorRefs into ``path``.

    ``start`` and ``length`` select a zip embedded in a larger file (see :func:`read_archive`).
    """
    archive = read_archive(path, start, length)
    prefix = _archive_folder(archive)
    byteorder = archive.entries.get(prefix + "byteorder")
    if byteorder is not None and archive.read(byteorder.name, _SMALL_ENTRY).strip() not in (b"little", b""):
        raise FormatError(f"{path}: big-endian torch files are not supported")
    version = next((prefix + n for n in ("version", ".data/version") if prefix + n in archive.entries), None)
    if version is None:
        raise FormatError(f"{path}: a zip file, but not a torch checkpoint (no version record)")
    archive.read(version, _SMALL_ENTRY)
    data = archive.read(prefix + "data.pkl", archive.entries[prefix + "data.pkl"].size)
    storages: dict[str, _Storage] = {}

    def persistent_load(pid: Any) -> _Storage:
        if not (type(pid) is tuple and len(pid) == 5 and pid[0] == "storage"):
            raise FormatError(f"{path}: unsupported persistent id in pickle")
        _, storage_type, key, location, numel = pid
        if not (isinstance(storage_type, _StorageType) and type(key) is str and type(location) is str
                and _is_int(numel) and numel >= 0):
            raise FormatError(f"{path}: malformed storage reference in pickle")
        storage = storages.setdefault(key, _Storage(storage_type.dtype, key, numel))
        if (storage.dtype, storage.numel) != (storage_type.dtype, numel):
            raise FormatError(f"{path}: storage {render(key, 40)} is named with two different types or sizes")
        return storage

    tree = Unpickler(data, path, ALLOWED, persistent_load, _BUILDABLE, DICT_TYPES + (AttributeDict,)).load()
    return _Resolver(path, prefix, archive).resolve(tree, "")


def _archive_folder(archive: Archive) -> str:
    """The folder all entries live in (``archive/``), from its one ``data.pkl``."""
    pickles = [n for n in archive.entries if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        what = "no data.pkl" if not pickles else f"{len(pickles)} data.pkl entries"
        raise FormatError(f"{archive.path}: a zip file, but not a torch checkpoint ({what})")
    prefix = pickles[0][: -len("data.pkl")]
    stray = next((n for n in archive.entries if not n.startswith(prefix)), None)
    if stray is not None:
        raise FormatError(f"{archive.path}: entry {render(stray, 80)} lies outside the archive folder {prefix!r}")
    return prefix


_CONTAINERS = (dict, list, tuple, set, frozenset, argparse.Namespace, slice)


def _children(obj: Any) -> list[Any]:
    """The values a container holds (keys included)."""
    if isinstance(obj, dict):
        return [*obj.keys(), *obj.values()]
    if isinstance(obj, argparse.Namespace):
        return list(vars(obj).values())
    if isinstance(obj, slice):
        return [obj.start, obj.stop, obj.step]
    return list(obj)


class _Resolver:
    """Replaces pending tensors by TensorRefs named by their place in the tree."""

    def __init__(self, path: str, prefix: str, archive: Archive) -> None:
        self.path, self.prefix, self.archive = path, prefix, archive
        self.done: dict[int, Any] = {}

    def resolve(self, obj: Any, where: str) -> Any:
        if isinstance(obj, _PendingTensor):
            return self._tensor(obj, where)
        if isinstance(obj, (_Storage, _StorageType)):
            raise FormatError(f"{self.path}: a bare storage at {render(where or 'the top', 80)}; checkpoints hold tensors")
        if not isinstance(obj, _CONTAINERS):
            return obj  # a leaf: nothing to resolve, nothing to remember
        if id(obj) in self.done:
            return self.done[id(obj)]
        if isinstance(obj, dict):
            items = [(self._key(k, where), self._child(v, where, k)) for k, v in obj.items()]
            obj.clear()
            obj.update(items)
        elif isinstance(obj, list):
            obj[:] = [self._child(v, where, i) for i, v in enumerate(obj)]
        elif isinstance(obj, tuple):
            obj = tuple(self._child(v, where, i) for i, v in enumerate(obj))
        elif isinstance(obj, argparse.Namespace):
            for k, v in vars(obj).items():
                setattr(obj, k, self.resolve(v, _join(where, k)))
        elif isinstance(obj, _CONTAINERS) and any(isinstance(c, (_PendingTensor, _Storage, _StorageType))
                                                  for c in _children(obj)):
            raise FormatError(f"{self.path}: a tensor inside a {type(obj).__name__} at {render(where, 80)}")
        self.done[id(obj)] = obj
        return obj

    def _child(self, value: Any, where: str, key: Any) -> Any:
        """A child resolved; its place is named (a string built) only for what needs one."""
        if not isinstance(value, (_CONTAINERS, _PendingTensor, _Storage, _StorageType)):
            return value
        return self.resolve(value, _join(where, key))

    def _key(self, key: Any, where: str) -> Any:
        if isinstance(key, (_PendingTensor, _Storage, _StorageType)):
            raise FormatError(f"{self.path}: a tensor used as a dict key at {render(where or 'the top', 80)}")
        return key

    def _tensor(self, pending: _PendingTensor, where: str) -> TensorRef:
        storage = pending.storage
        entry = self.archive.entries.get(f"{self.prefix}data/{storage.key}")
        if entry is None:
            raise FormatError(f"{self.path}: the data of tensor {render(where, 80)} (entry data/{storage.key:.40}) "
                              "is missing (truncated file?)")
        itemsize = DTYPES[storage.dtype][0]
        if entry.size != storage.numel * itemsize:
            raise FormatError(f"{self.path}: entry {render(entry.name, 80)} holds {entry.size} bytes, its storage "
                              f"needs {storage.numel * itemsize}")
        ref = TensorRef(self.path, entry.offset + pending.offset * itemsize, storage.dtype, pending.shape,
                        pending.stride, name=where, checksum=Checksum(entry.offset, entry.size, entry.crc))
        if pending.offset * itemsize + ref.span > entry.size:
            raise FormatError(f"{self.path}: tensor {render(where, 80)} reaches past the end of its storage")
        if ref.nbytes > max(ref.span, itemsize):
            raise FormatError(f"{self.path}: tensor {render(where, 80)} repeats its storage's bytes (zero or "
                              "overlapping strides); checkpoints never hold such views")
        return ref


def _join(where: str, key: Any) -> str:
    text = key[:200] if isinstance(key, str) else render(key, 200)
    return f"{where}/{text}" if where else text
