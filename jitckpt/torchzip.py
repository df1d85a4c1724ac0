"""Reading and writing the zip files of ``torch.save`` without running pickled code.

The reader unpickles ``data.pkl`` with an allowlist of globals (containers,
``argparse.Namespace``, torch's tensor rebuild functions and storage types) and
turns every tensor into a :class:`~jitckpt.tensors.TensorRef` pointing into the
zip, so a checkpoint of any size is understood by reading its few-kilobyte
pickle. The writer streams each tensor's bytes into its zip entry (64-byte
aligned, as torch writes them), so the output is loadable by ``torch.load``
(``weights_only=True`` with ``argparse.Namespace`` allowed) and memory stays flat.
"""

from __future__ import annotations

import argparse
import collections
import io
import pathlib
import pickle
import struct
import zipfile
from typing import Any, BinaryIO, Callable

from .errors import FormatError, UnsafePickleError
from .tensors import DTYPES, STORAGE_TO_DTYPE, TensorRef, contiguous_strides, is_tensor, iter_tensor_bytes, nbytes_of, shape_of, dtype_name

ZIP_MAGIC = b"PK\x03\x04"
_ALIGNMENT = 64
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")

Progress = Callable[[int], None]


class _Storage:
    """A storage named by the pickle: its dtype and the zip entry holding its bytes."""

    def __init__(self, dtype: str, key: str, numel: int) -> None:
        self.dtype, self.key, self.numel = dtype, key, numel


class _StorageType:
    def __init__(self, dtype: str) -> None:
        self.dtype = dtype


def _rebuild_tensor(storage: _Storage, offset: int, size: Any, stride: Any, *_rest: Any) -> "_PendingTensor":
    return _PendingTensor(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data: Any, *_rest: Any) -> Any:
    return data  # a Parameter's payload is its tensor; requires_grad is training state


class _PendingTensor:
    def __init__(self, storage: _Storage, offset: int, shape: tuple, stride: tuple) -> None:
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride


class _AttributeDict(dict):
    """Stand-in for Lightning's ``AttributeDict`` (a plain dict with attribute access)."""


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("argparse", "Namespace"): argparse.Namespace,
    ("pathlib", "PosixPath"): pathlib.PurePosixPath,
    ("pathlib", "WindowsPath"): pathlib.PureWindowsPath,
    ("pathlib", "PurePosixPath"): pathlib.PurePosixPath,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("lightning.fabric.utilities.data", "AttributeDict"): _AttributeDict,
    ("lightning_fabric.utilities.data", "AttributeDict"): _AttributeDict,
    ("pytorch_lightning.utilities.parsing", "AttributeDict"): _AttributeDict,
}
_ALLOWED.update({("torch", storage): _StorageType(dtype) for storage, dtype in STORAGE_TO_DTYPE.items()})


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused to load: the pickle asks for the global '{module}.{name}', which is not on "
                "jitckpt's allowlist of checkpoint types (nothing in the file was run)"
            ) from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise FormatError(f"unsupported persistent id in pickle: {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise FormatError(f"unsupported storage type in pickle: {storage_type!r:.80}")
        return _Storage(storage_type.dtype, str(key), int(numel))


def is_torch_zip(head: bytes) -> bool:
    return head.startswith(ZIP_MAGIC)


def read_tree(path: str) -> Any:
    """Unpickle a ``torch.save`` zip safely; tensors come back as TensorRefs into ``path``."""
    try:
        with zipfile.ZipFile(path) as zf, open(path, "rb") as raw:
            names = zf.namelist()
            pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pkl) != 1:
                raise FormatError(f"{path}: a zip file, but not a torch checkpoint (no data.pkl)")
            prefix = pkl[0][: -len("data.pkl")]
            byteorder = prefix + "byteorder"
            if byteorder in names and zf.read(byteorder).strip() not in (b"little", b""):
                raise FormatError(f"{path}: big-endian torch files are not supported")
            data = zf.read(pkl[0])
            entries = {info.filename: info for info in zf.infolist()}
            file_size = raw.seek(0, io.SEEK_END)
            tree = _SafeUnpickler(io.BytesIO(data)).load()
            offsets: dict[str, int] = {}
            return _resolve(tree, path, prefix, entries, offsets, raw, file_size)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, struct.error) as exc:
        raise FormatError(f"{path}: corrupt or truncated torch zip file ({exc})") from None
    except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(f"{path}: corrupt pickle in torch zip file ({type(exc).__name__}: {exc})") from None


def _resolve(obj: Any, path: str, prefix: str, entries: dict, offsets: dict, raw: BinaryIO, size: int) -> Any:
    """Replace pending tensors by TensorRefs, checking each lies inside its zip entry."""
    if isinstance(obj, _PendingTensor):
        st = obj.storage
        name = f"{prefix}data/{st.key}"
        if name not in offsets:
            info = entries.get(name)
            if info is None:
                raise FormatError(f"{path}: tensor data entry {name!r} is missing (truncated file?)")
            if info.compress_type != zipfile.ZIP_STORED:
                raise FormatError(f"{path}: entry {name!r} is compressed; torch never writes that")
            offsets[name] = _data_offset(raw, info)
            itemsize = DTYPES[st.dtype][0]
            if info.file_size < st.numel * itemsize or offsets[name] + info.file_size > size:
                raise FormatError(f"{path}: tensor data entry {name!r} is shorter than its storage")
        ref = TensorRef(path, offsets[name] + obj.offset * DTYPES[st.dtype][0], st.dtype, obj.shape, obj.stride)
        if obj.offset * DTYPES[st.dtype][0] + ref.span > entries[name].file_size:
            raise FormatError(f"{path}: a tensor reaches past the end of its storage {name!r}")
        return ref
    if isinstance(obj, dict):
        items = [(k, _resolve(v, path, prefix, entries, offsets, raw, size)) for k, v in obj.items()]
        obj.clear()
        obj.update(items)
        return obj
    if isinstance(obj, list):
        return [_resolve(v, path, prefix, entries, offsets, raw, size) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve(v, path, prefix, entries, offsets, raw, size) for v in obj)
    if isinstance(obj, argparse.Namespace):
        for k, v in vars(obj).items():
            setattr(obj, k, _resolve(v, path, prefix, entries, offsets, raw, size))
        return obj
    if isinstance(obj, (_Storage, _StorageType)):
        raise FormatError(f"{path}: bare storages are not supported in a checkpoint")
    return obj


def _data_offset(raw: BinaryIO, info: zipfile.ZipInfo) -> int:
    raw.seek(info.header_offset)
    header = raw.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size or header[:4] != ZIP_MAGIC:
        raise FormatError(f"corrupt zip: bad local header for {info.filename!r}")
    fields = _LOCAL_HEADER.unpack(header)
    name_len, extra_len = fields[-2], fields[-1]
    return info.header_offset + _LOCAL_HEADER.size + name_len + extra_len


# ----------------------------------------------------------------------------- writing


def archive_name(path: Any) -> str:
    """The folder name inside the zip; torch uses the file's stem."""
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in pathlib.Path(path).stem)
    return stem or "archive"


class _TensorToWrite:
    def __init__(self, key: str, tensor: Any) -> None:
        self.key, self.tensor = key, tensor


def write_tree(tree: Any, handle: BinaryIO, archive: str = "archive", progress: Progress | None = None) -> None:
    """``torch.save`` ``tree`` into ``handle`` (seekable), streaming each tensor's bytes.

    Tensors may be TensorRefs or torch tensors; both are written contiguous.
    Shared tensors are not deduplicated (every leaf gets its own storage).
    """
    import torch

    tensors: list[_TensorToWrite] = []

    class Pickler(pickle.Pickler):
        def reducer_override(self, obj: Any) -> Any:
            if is_tensor(obj):
                entry = _TensorToWrite(str(len(tensors)), obj)
                tensors.append(entry)
                shape = shape_of(obj)
                return (
                    torch._utils._rebuild_tensor_v2,
                    (entry, 0, shape, contiguous_strides(shape), False, collections.OrderedDict()),
                )
            return NotImplemented

        def persistent_id(self, obj: Any) -> Any:
            if isinstance(obj, _TensorToWrite):
                dtype = dtype_name(obj.tensor)
                storage_type = getattr(torch, DTYPES[dtype][2])
                numel = nbytes_of(obj.tensor) // DTYPES[dtype][0]
                return ("storage", storage_type, obj.key, "cpu", numel)
            return None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(tree)
    with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        _write_entry(zf, f"{archive}/data.pkl", [buffer.getvalue()], len(buffer.getvalue()))
        for name, payload in ((".format_version", b"1"), (".storage_alignment", b"64"), ("byteorder", b"little")):
            _write_entry(zf, f"{archive}/{name}", [payload], len(payload))
        for entry in tensors:
            size = nbytes_of(entry.tensor)
            _write_entry(zf, f"{archive}/data/{entry.key}", iter_tensor_bytes(entry.tensor), size, progress)
        _write_entry(zf, f"{archive}/version", [b"3\n"], 2)
        _write_entry(zf, f"{archive}/.data/serialization_id", [b"0" * 40], 40)


def _write_entry(zf: zipfile.ZipFile, name: str, chunks: Any, size: int, progress: Progress | None = None) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    info.file_size = size
    zip64 = size * 1.05 > zipfile.ZIP64_LIMIT
    start = zf.fp.tell() + _LOCAL_HEADER.size + len(name.encode()) + (20 if zip64 else 0)
    pad = (-(start + 4)) % _ALIGNMENT  # 4 bytes of extra-field header precede the padding
    info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # 'FB' padding field, as torch writes
    with zf.open(info, "w", force_zip64=zip64) as out:
        for chunk in chunks:
            out.write(chunk)
            if progress is not None:
                progress(len(chunk))
