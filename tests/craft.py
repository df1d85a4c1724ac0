"""Build torch zips and safetensors files by hand, for inputs that torch and safetensors would never write."""

from __future__ import annotations

import collections
import json
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import torch

from jitckpt.torchfile import write as torchzip
from tests.helpers import load_golden_torch

REBUILD = torchzip._Global("torch._utils", "_rebuild_tensor_v2")


class RawTensor:
    """A tensor in a crafted pickle: storage key, storage class, element count, offset, size, stride."""

    def __init__(self, key: Any, numel: Any, offset: Any = 0, size: Any = (), stride: Any = (),
                 storage: str = "FloatStorage") -> None:
        self.key, self.numel, self.offset, self.size, self.stride, self.storage = key, numel, offset, size, stride, storage


class _StorageRef:
    def __init__(self, tensor: RawTensor) -> None:
        self.tensor = tensor


class _Pickler(torchzip._TorchPickler):
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, RawTensor):
            return REBUILD, (_StorageRef(obj), obj.offset, obj.size, obj.stride, False, collections.OrderedDict())
        return super().reducer_override(obj)

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _StorageRef):
            t = obj.tensor
            return ("storage", torchzip._Global("torch", t.storage), t.key, "cpu", t.numel)
        return super().persistent_id(obj)


def pickle_bytes(tree: Any) -> bytes:
    """Protocol-2 pickle of ``tree``; RawTensors become storage references (real tensors are not allowed)."""
    import io

    buffer = io.BytesIO()
    _Pickler(buffer).dump(tree)
    return buffer.getvalue()


def write_torch_zip(path: Path, pkl: bytes, storages: dict[str, bytes] | None = None, folder: str = "archive",
                    extra: dict[str, bytes] | None = None, compress_pickle: bool = False) -> Path:
    """A torch-layout zip: data.pkl, byteorder, version and the storages' entries."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{folder}/data.pkl", pkl, compress_type=zipfile.ZIP_DEFLATED if compress_pickle else None)
        zf.writestr(f"{folder}/byteorder", "little")
        for key, data in (storages or {}).items():
            zf.writestr(f"{folder}/data/{key}", data)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
        zf.writestr(f"{folder}/version", "3\n")
    return Path(path)


def golden_with(path: Path, **changes: Any) -> Path:
    """The golden checkpoint with top-level entries replaced, saved by torch.save."""
    tree = load_golden_torch()
    tree.update(changes)
    torch.save(tree, path)
    return Path(path)


def flip_bit(path: Path, offset: int, out: Path) -> Path:
    data = bytearray(Path(path).read_bytes())
    data[offset] ^= 0x10
    Path(out).write_bytes(bytes(data))
    return Path(out)


def write_safetensors(path: Path, header: Any, data: bytes, length: int | None = None) -> Path:
    """A safetensors file with this header (JSON-encoded unless bytes) and data; ``length`` overrides the field."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    Path(path).write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)
    return Path(path)


def opcodes(*parts: bytes) -> bytes:
    """A protocol-2 pickle from raw opcode bytes."""
    return pickle.PROTO + b"\x02" + b"".join(parts) + pickle.STOP
