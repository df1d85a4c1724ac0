"""The ``.metadata`` file of a ``torch.distributed.checkpoint`` (DCP) directory: read safely, written for torch.

DCP writes ``.metadata`` with a plain ``pickle.dump`` of its ``Metadata``
dataclass and reads it back with ``pickle.load``, so a directory from someone
else can run code when torch opens it. Here the pickle goes through the
project's bounded interpreter with an allowlist that names each DCP record
class and maps it onto a local, inert record: nothing is imported, nothing
from the file is called. The result is a :class:`Layout`: for each item its
kind (tensor: dtype, full size and chunks; or bytes), where each stored piece
lies (file, offset, length), and the item's path in the nested state dict.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ..errors import FormatError, render
from ..tensors.lazy import DTYPES
from ..torchfile.decoder import DICT_TYPES, Unpickler, build_fields

METADATA_FILE = ".metadata"
LIGHTNING_META = "meta.pt"  # Lightning's file for everything but the module and optimizers (read and written)
MAX_METADATA_BYTES = 64 << 20  # JiT-H/16's full training state needs a few MB
MAX_DIMS = 16
MAX_CHUNKS = 4096  # stored pieces of one tensor (one per writing rank, or a few per rank)
MAX_PATH_STEPS = 32  # steps of an item's path in the nested state dict (Lightning's need about 6)
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,254}")  # a shard file beside .metadata, no path


@dataclass(frozen=True)
class Chunk:
    """A stored piece of a tensor: ``sizes`` elements per dimension, starting at ``offsets`` in the full tensor."""

    offsets: tuple[int, ...]
    sizes: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.sizes)


@dataclass(frozen=True)
class TensorItem:
    dtype: str
    size: tuple[int, ...]
    chunks: tuple[Chunk, ...]


@dataclass(frozen=True)
class Location:
    """Where one stored piece lies: ``length`` bytes at ``offset`` of ``file`` (a name in the directory)."""

    file: str
    offset: int
    length: int


@dataclass
class Layout:
    """What ``.metadata`` says. ``items`` maps each flattened key to its TensorItem (None for a bytes item);
    ``locations`` maps (key, chunk offsets or None) to the piece's Location; ``paths`` gives each key's
    path in the nested state dict (DCP's ``planner_data``)."""

    items: dict[str, TensorItem | None]
    locations: dict[tuple[str, tuple[int, ...] | None], Location]
    paths: dict[str, tuple[str | int, ...]]


class _Record:
    """An inert stand-in for one DCP dataclass: BUILD gives it plain attributes, nothing else."""

    def field(self, name: str, default: Any = None) -> Any:
        return self.__dict__.get(name, default)


class _Metadata(_Record): pass  # noqa: E701
class _TensorStorageMetadata(_Record): pass  # noqa: E701
class _ChunkStorageMetadata(_Record): pass  # noqa: E701
class _BytesStorageMetadata(_Record): pass  # noqa: E701
class _MetadataIndex(_Record): pass  # noqa: E701
class _StorageInfo(_Record): pass  # noqa: E701
class _StorageMeta(_Record): pass  # noqa: E701


class _TensorProperties(_Record): pass  # noqa: E701


def _build_properties(inst: Any, state: Any) -> None:
    """DCP pickles TensorProperties as (dtype, layout, requires_grad, memory_format, pin_memory)."""
    if type(state) is not tuple or len(state) > 8:
        raise ValueError("TensorProperties state other than its tuple")
    inst.__dict__["dtype"] = state[0] if state else None
    inst.__dict__["layout"] = state[1] if len(state) > 1 else None


def _size(dims: Any = ()) -> tuple[Any, ...]:
    if type(dims) not in (tuple, list) or len(dims) > MAX_DIMS:
        raise ValueError(f"a size of at most {MAX_DIMS} dimensions")
    return tuple(dims)


def _path(separator: str) -> Any:
    def build(*parts: Any) -> str:
        if not all(type(p) is str for p in parts) or sum(map(len, parts)) > 4096:
            raise ValueError("a path is made of at most 4096 characters of text")
        return separator.join(parts)
    return build


_DCP = "torch.distributed.checkpoint.metadata"
ALLOWED: dict[tuple[str, str], Any] = {
    (_DCP, "Metadata"): _Metadata,
    (_DCP, "TensorStorageMetadata"): _TensorStorageMetadata,
    (_DCP, "TensorProperties"): _TensorProperties,
    (_DCP, "ChunkStorageMetadata"): _ChunkStorageMetadata,
    (_DCP, "BytesStorageMetadata"): _BytesStorageMetadata,
    (_DCP, "MetadataIndex"): _MetadataIndex,
    (_DCP, "StorageMeta"): _StorageMeta,
    (_DCP, "_MEM_FORMAT_ENCODING"): lambda value: value,
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"): _StorageInfo,
    ("torch.serialization", "_get_layout"): lambda name: name,
    ("torch", "Size"): _size,
    ("pathlib", "PosixPath"): _path("/"),
    ("pathlib", "WindowsPath"): _path("\\"),
}
ALLOWED.update({("torch", name): name for name in DTYPES})  # a dtype reads as its name
# The records NEWOBJ may create, and how BUILD fills each in (fields never named as the class's own).
_RECORDS: dict[type, Any] = {cls: build_fields for cls in (_Metadata, _TensorStorageMetadata, _ChunkStorageMetadata,
                                                          _BytesStorageMetadata, _MetadataIndex, _StorageInfo,
                                                          _StorageMeta)}
_RECORDS[_TensorProperties] = _build_properties


def parse(data: bytes, path: str) -> Layout:
    """The layout ``.metadata`` (its bytes ``data``, at ``path``) describes; one FormatError if it is wrong."""
    if len(data) > MAX_METADATA_BYTES:
        raise FormatError(f"{path}: {len(data)} bytes, more than the {MAX_METADATA_BYTES} a checkpoint's needs")
    root = Unpickler(data, path, ALLOWED, _no_persistent_ids(path), _RECORDS, DICT_TYPES, protocol4=True).load()
    if not isinstance(root, _Metadata):
        raise FormatError(f"{path}: not torch.distributed.checkpoint metadata (it holds a {type(root).__name__})")
    items_in = _mapping(root.field("state_dict_metadata"), "state_dict_metadata", path)
    items: dict[str, TensorItem | None] = {}
    for key, record in items_in.items():
        if type(key) is not str:
            raise FormatError(f"{path}: an item key is a {type(key).__name__}, not a string")
        if isinstance(record, _BytesStorageMetadata):
            items[key] = None
        elif isinstance(record, _TensorStorageMetadata):
            items[key] = _tensor_item(key, record, path)
        else:
            raise FormatError(f"{path}: item {render(key, 80)} is a {type(record).__name__}, not tensor or bytes metadata")
    locations = {}
    for index, info in _mapping(root.field("storage_data"), "storage_data", path).items():
        if not isinstance(index, _MetadataIndex) or not isinstance(info, _StorageInfo):
            raise FormatError(f"{path}: storage_data holds a {type(index).__name__} -> {type(info).__name__}")
        key = index.field("fqn")
        if key not in items:
            raise FormatError(f"{path}: stored bytes for {render(key, 80)}, which is not an item")
        offsets = index.field("offset")
        where = (key, _dims(offsets, f"{render(key, 80)}'s chunk offset", path) if offsets is not None else None)
        locations[where] = _location(key, info, path)
    paths = {}
    for key, route in _mapping(root.field("planner_data") or {}, "planner_data", path).items():
        if key in items and isinstance(route, tuple) and route and all(type(p) in (str, int) for p in route):
            if len(route) > MAX_PATH_STEPS:
                raise FormatError(f"{path}: item {render(key, 80)} is placed {len(route)} levels deep, more than the "
                                  f"{MAX_PATH_STEPS} a checkpoint needs")
            paths[key] = route
    return Layout(items, locations, paths)


def no_shared_bytes(locations: dict[tuple[str, tuple[int, ...] | None], Location], files: dict[str, Any],
                    path: str) -> None:
    """Refuse two stored pieces whose bytes overlap, in the same file (``files`` gives each name's identity:
    two names linked to one file are one file): DCP writes each piece once, so a reused range could only make
    a small directory expand into a large checkpoint (and hide which piece a damaged byte belongs to)."""
    by_file: dict[Any, list[tuple[int, int, str]]] = {}
    for (key, _), where in locations.items():
        by_file.setdefault(files[where.file], []).append((where.offset, where.length, key))
    for spans in by_file.values():
        spans.sort()
        for (start, length, key), (following, _, other) in zip(spans, spans[1:]):
            if start + length > following:
                raise FormatError(f"{path}: the stored pieces of {render(key, 60)} and {render(other, 60)} share "
                                  "bytes; each piece must have its own")


def _no_persistent_ids(path: str) -> Any:
    def refuse(pid: Any) -> Any:
        raise FormatError(f"{path}: persistent id in DCP metadata; torch never writes that")
    return refuse


def _mapping(value: Any, what: str, path: str) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise FormatError(f"{path}: {what} is a {type(value).__name__}, not a dict")
    return value


def _dims(value: Any, what: str, path: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or len(value) > MAX_DIMS or not all(type(v) is int and v >= 0 for v in value):
        raise FormatError(f"{path}: {what} must be at most {MAX_DIMS} non-negative integers, not {render(value, 80)}")
    return value


def _tensor_item(key: str, record: _TensorStorageMetadata, path: str) -> TensorItem:
    properties = record.field("properties")
    dtype = properties.field("dtype") if isinstance(properties, _TensorProperties) else None
    if dtype not in DTYPES:
        raise FormatError(f"{path}: tensor {render(key, 80)} has dtype {render(dtype, 40)}, which jitckpt does not know")
    if properties.field("layout") not in (None, "torch.strided"):
        raise FormatError(f"{path}: tensor {render(key, 80)} is not a strided (dense) tensor")
    size = _dims(record.field("size"), f"{render(key, 80)}'s size", path)
    chunks = []
    listed = record.field("chunks") or []
    if not isinstance(listed, (list, tuple)) or len(listed) > MAX_CHUNKS:
        raise FormatError(f"{path}: tensor {render(key, 80)} lists its chunks as {render(listed, 40)}, not a list of "
                          f"at most {MAX_CHUNKS}")
    for chunk in listed:
        if not isinstance(chunk, _ChunkStorageMetadata):
            raise FormatError(f"{path}: tensor {render(key, 80)} lists a {type(chunk).__name__} as a chunk")
        offsets = _dims(chunk.field("offsets"), f"{render(key, 80)}'s chunk offsets", path)
        sizes = _dims(chunk.field("sizes"), f"{render(key, 80)}'s chunk sizes", path)
        if len(offsets) != len(size) or len(sizes) != len(size) or any(
                o + s > n for o, s, n in zip(offsets, sizes, size)):
            raise FormatError(f"{path}: tensor {render(key, 80)}: a chunk at {offsets} of {sizes} lies outside its "
                              f"size {size}")
        chunks.append(Chunk(offsets, sizes))
    return TensorItem(dtype, size, tuple(chunks))


def _location(key: str, info: _StorageInfo, path: str) -> Location:
    name, offset, length = info.field("relative_path"), info.field("offset"), info.field("length")
    if type(name) is not str or not _FILE_NAME.fullmatch(name) or name == METADATA_FILE:
        raise FormatError(f"{path}: {render(key, 80)} is stored in {render(name, 80)}, which is not a file name in the "
                          "checkpoint's directory")
    if type(offset) is not int or type(length) is not int or offset < 0 or length < 0:
        raise FormatError(f"{path}: {render(key, 80)} has a bad offset or length ({render(offset, 40)}, {render(length, 40)})")
    if info.field("transform_descriptors"):
        raise FormatError(f"{path}: {render(key, 80)} is stored transformed (compressed or encrypted), which jitckpt "
                          "does not read")
    return Location(name, offset, length)


def write(layout: Layout, handle: Any) -> None:
    """Pickle ``layout`` as torch's own ``Metadata`` (``torch.distributed.checkpoint.load`` reads it)."""
    import pickle

    import torch
    from torch.distributed.checkpoint import metadata as m
    from ..compat import dcp_storage_info

    StorageInfo = dcp_storage_info()

    state_dict_metadata: dict[str, Any] = {}
    for key, item in layout.items.items():
        if item is None:
            state_dict_metadata[key] = m.BytesStorageMetadata()
            continue
        chunks = [m.ChunkStorageMetadata(torch.Size(c.offsets), torch.Size(c.sizes)) for c in item.chunks]
        properties = m.TensorProperties(dtype=getattr(torch, item.dtype))
        state_dict_metadata[key] = m.TensorStorageMetadata(properties, torch.Size(item.size), chunks)
    storage_data = {}
    for (key, offsets), where in layout.locations.items():
        index = m.MetadataIndex(key, torch.Size(offsets) if offsets is not None else None)
        storage_data[index] = StorageInfo(relative_path=where.file, offset=where.offset, length=where.length)
    metadata = m.Metadata(state_dict_metadata=state_dict_metadata, planner_data=dict(layout.paths),
                          storage_data=storage_data)
    pickle.dump(metadata, handle)
