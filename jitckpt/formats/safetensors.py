"""``.safetensors``: the full training state without pickle, or one set of weights.

Full state: every tensor under a prefixed key (``model/``, ``model_ema1/``,
``model_ema2/``, ``optimizer/<param>/<slot>``, ``extra/``) and the rest as JSON
strings in the header metadata (``jitckpt.*``). Weights-only: one set of
weights (raw, EMA 1 or EMA 2) under its plain ``net.`` keys, loadable by any
safetensors consumer. The header is parsed here directly, so reading is lazy
and needs no torch; writing streams tensor by tensor.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, BinaryIO, Callable

from ..errors import FormatError
from ..schema import SECTIONS, JiTCheckpoint, from_file_payload
from ..tensors import DTYPES, SAFETENSORS_TO_DTYPE, TensorRef, contiguous_strides, dtype_name, is_tensor, nbytes_of, shape_of, write_tensor
from . import _jsontree

NAME = "safetensors"
SUFFIXES = (".safetensors",)
LABEL = "safetensors"
DESCRIPTION = "safetensors: full training state (pickle-free) or a weights-only export"

KIND_KEY = "jitckpt.kind"
MAX_HEADER = 100 << 20  # the safetensors library's own limit on header size


def detect_head(head: bytes, file_size: int) -> bool:
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 2 <= length <= min(MAX_HEADER, file_size - 8) and head[8:9] == b"{"


def read_header(path: str) -> tuple[dict[str, TensorRef], dict[str, str]]:
    """The tensors (as TensorRefs, in header order) and the string metadata of ``path``."""
    with open(path, "rb") as f:
        head = f.read(8)
        size = f.seek(0, 2)
        if len(head) < 8:
            raise FormatError(f"{path}: truncated safetensors file (no header)")
        (length,) = struct.unpack("<Q", head)
        if length > min(MAX_HEADER, size - 8):
            raise FormatError(f"{path}: corrupt or truncated safetensors file (header of {length} bytes)")
        f.seek(8)
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, ValueError) as exc:
            raise FormatError(f"{path}: corrupt safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise FormatError(f"{path}: corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    base, tensors, end = 8 + length, {}, 0
    for key, info in header.items():
        try:
            dtype = SAFETENSORS_TO_DTYPE[info["dtype"]]
            shape = tuple(int(s) for s in info["shape"])
            start, stop = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"{path}: tensor {key!r} has an unsupported or malformed header entry") from None
        ref = TensorRef(path, base + start, dtype, shape, contiguous_strides(shape))
        if stop - start != ref.nbytes or stop < start:
            raise FormatError(f"{path}: tensor {key!r} has {stop - start} bytes, its shape needs {ref.nbytes}")
        end = max(end, stop)
        tensors[key] = ref
    if base + end > size:
        raise FormatError(f"{path}: truncated safetensors file ({size} bytes, tensors need {base + end})")
    return tensors, metadata


def read(path: str) -> JiTCheckpoint:
    tensors, meta = read_header(path)
    kind = meta.get(KIND_KEY)

    def field(name: str, default: Any = None) -> Any:
        text = meta.get(f"jitckpt.{name}")
        return default if text is None else _jsontree.decode(text, tensors)

    if kind != "training-state":  # a weights-only export, ours or anyone's
        if not tensors:
            raise FormatError(f"{path}: safetensors file holds no tensors")
        which = meta.get("jitckpt.weights")
        extra = {"weights": which} if which else {}
        payload = {"model": tensors, "epoch": field("epoch"), "args": field("args", {}),
                   "arch": field("arch"), "global_step": field("global_step"), "extra": extra}
        return from_file_payload(payload, int(meta.get("jitckpt.schema_version", 1)))
    payload: dict[str, Any] = {name: _section(tensors, name + "/") for name in SECTIONS}
    optimizer = field("optimizer")
    if optimizer is not None:
        for name, state in optimizer["state"].items():
            state.update(_section(tensors, f"optimizer/{name}/") or {})
    payload.update(
        optimizer=optimizer, epoch=field("epoch"), global_step=field("global_step"),
        arch=field("arch"), args=field("args", {}), extra=field("extra", {}),
    )
    return from_file_payload(payload, int(meta.get("jitckpt.schema_version", 1)))


def _section(tensors: dict, prefix: str) -> dict | None:
    found = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    return found or None


def training_state(ckpt: JiTCheckpoint) -> tuple[dict[str, Any], dict[str, str]]:
    """Flat tensors and string metadata for the full state of ``ckpt``."""
    tensors: dict[str, Any] = {}
    for name, state in ckpt.sections().items():
        tensors.update({f"{name}/{k}": v for k, v in state.items()})
    meta = {"format": "pt", KIND_KEY: "training-state", "jitckpt.schema_version": str(ckpt.schema_version)}
    if ckpt.optimizer is not None:
        scalars = {"state": {}, "param_groups": ckpt.optimizer["param_groups"]}
        for name, state in ckpt.optimizer["state"].items():
            scalars["state"][name] = {}
            for slot, value in state.items():
                if is_tensor(value):
                    tensors[f"optimizer/{name}/{slot}"] = value
                else:
                    scalars["state"][name][slot] = value
        meta["jitckpt.optimizer"] = _jsontree.encode(scalars, tensors, "extra/optimizer")
    for name in ("epoch", "global_step", "args", "extra"):
        meta[f"jitckpt.{name}"] = _jsontree.encode(getattr(ckpt, name), tensors, f"extra/{name}")
    meta["jitckpt.arch"] = json.dumps(ckpt.arch.to_dict() if ckpt.arch else None)
    return tensors, meta


def weights_export(ckpt: JiTCheckpoint, which: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Flat tensors (plain ``net.`` keys) and metadata for the weights ``which`` of ``ckpt``."""
    tensors = dict(ckpt.weights(which))
    meta = {"format": "pt", KIND_KEY: "weights", "jitckpt.weights": which,
            "jitckpt.schema_version": str(ckpt.schema_version),
            "jitckpt.arch": json.dumps(ckpt.arch.to_dict() if ckpt.arch else None),
            "jitckpt.epoch": json.dumps(ckpt.epoch), "jitckpt.global_step": json.dumps(ckpt.global_step),
            "jitckpt.args": _jsontree.encode(ckpt.args, {}, "args")}
    return tensors, meta


def write_tensors(tensors: dict[str, Any], metadata: dict[str, str], handle: BinaryIO,
                  progress: Callable[[int], None] | None = None) -> None:
    """Write a safetensors file: JSON header (8-byte aligned), then each tensor's bytes in order."""
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for key, tensor in tensors.items():
        size = nbytes_of(tensor)
        header[key] = {"dtype": DTYPES[dtype_name(tensor)][1], "shape": list(shape_of(tensor)),
                       "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    handle.write(struct.pack("<Q", len(text)) + text)
    for tensor in tensors.values():
        write_tensor(tensor, handle, progress)


def write(ckpt: JiTCheckpoint, handle: BinaryIO, path: Path, progress: Callable[[int], None] | None = None,
          weights: str | None = None) -> None:
    tensors, meta = weights_export(ckpt, weights) if weights else training_state(ckpt)
    write_tensors(tensors, meta, handle, progress)
