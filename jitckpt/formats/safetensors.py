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
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO, Callable

from .table import facts
from ..errors import FormatError, render
from ..storage import sources
from ..schema import SECTIONS, JiTCheckpoint, from_file_payload
from ..tensors.anytensor import dtype_name, is_tensor, nbytes_of, shape_of, write_tensor_crc
from ..tensors.lazy import DTYPES, SAFETENSORS_TO_DTYPE, TensorRef, contiguous_strides
from . import _checksums, _jsontree

FACTS = facts("safetensors")
NAME, SUFFIXES, LABEL, DESCRIPTION = FACTS.name, FACTS.suffixes, FACTS.label, FACTS.description
KIND, WRITES = FACTS.kind, FACTS.writes

KIND_KEY = "jitckpt.kind"
MAX_HEADER = 16 << 20  # JiT-H/16's full training state needs 0.4 MB (the safetensors library allows 100 MB)
MAX_TENSORS = 65_536  # JiT-H/16's full training state holds about 2,300
MAX_FIELD_BYTES = 4 << 20  # one jitckpt.* JSON field of the metadata (the optimizer's is the largest: ~50 KB)


def detect_head(head: bytes, file_size: int) -> bool:
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 2 <= length <= min(MAX_HEADER, file_size - 8) and head[8:9] == b"{"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        twice = ""
        for key, _ in pairs:
            if key in seen:
                twice = key
                break
            seen.add(key)
        raise ValueError(f"the key {render(twice, 80)} appears twice")
    return out


def _parse_header(path: str) -> tuple[dict[str, Any], int, int]:
    """(header JSON object, where the data area starts, its size), all bounds checked."""
    with sources.Reader(path) as reader:
        size = sources.size(path)
        head = reader.pread(8, 0)
        if len(head) < 8:
            raise FormatError(f"{path}: truncated safetensors file (no header)")
        (length,) = struct.unpack("<Q", head)
        if length > min(MAX_HEADER, size - 8):
            raise FormatError(f"{path}: corrupt or truncated safetensors file (header of {length} bytes "
                              f"in a file of {size})")
        text = reader.pread(length, 8)
    if not text.startswith(b"{"):
        raise FormatError(f"{path}: corrupt safetensors header (it does not start with '{{')")
    try:
        header = json.loads(text.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise FormatError(f"{path}: corrupt safetensors header (nested too deeply)") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"{path}: corrupt safetensors header ({str(exc)[:200]})") from None
    if not isinstance(header, dict):
        raise FormatError(f"{path}: corrupt safetensors header (not a JSON object)")
    return header, 8 + length, size - 8 - length


def _is_index(value: Any) -> bool:
    return type(value) is int and 0 <= value < 1 << 63


def read_header(path: str) -> tuple[dict[str, TensorRef], dict[str, str]]:
    """The tensors (as TensorRefs, in header order) and the string metadata of ``path``.

    As strict as the safetensors library: the offsets are integers, in order,
    without gaps or overlaps, exactly covering the data area, and each span is
    dtype x shape. A file jitckpt wrote carries CRC-32s (checked here for the
    header, and whenever a tensor's bytes are read).
    """
    header, base, data_size = _parse_header(path)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise FormatError(f"{path}: corrupt safetensors header (__metadata__ is not a map of strings)")
    spans: list[tuple[int, int, str]] = []
    tensors: dict[str, TensorRef] = {}
    if len(header) > MAX_TENSORS:
        raise FormatError(f"{path}: its header lists {len(header)} tensors, more than the {MAX_TENSORS} a checkpoint "
                          "needs")
    for key, info in header.items():
        try:
            dtype = SAFETENSORS_TO_DTYPE[info["dtype"]]
            shape, (start, stop) = tuple(info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"{path}: tensor {key!r} has an unsupported or malformed header entry") from None
        if not (all(map(_is_index, shape)) and _is_index(start) and _is_index(stop) and start <= stop):
            raise FormatError(f"{path}: tensor {key!r} has a malformed shape or data_offsets")
        tensors[key] = TensorRef(path, base + start, dtype, shape, contiguous_strides(shape), name=key)
        if stop - start != tensors[key].nbytes:
            raise FormatError(f"{path}: tensor {key!r} has {stop - start} bytes, its shape needs {tensors[key].nbytes}")
        spans.append((start, stop, key))
    end = 0
    for start, stop, key in sorted(spans):
        if start != end:
            raise FormatError(f"{path}: tensor {key!r} starts at byte {start} of the data, not {end} "
                              "(overlapping or misplaced data_offsets)")
        end = stop
    if end != data_size:
        what = "truncated" if end > data_size else "corrupt"
        raise FormatError(f"{path}: {what} safetensors file (the tensors cover {end} bytes of a {data_size}-byte "
                          "data area)")
    _checksums.attach(path, header, metadata, tensors)
    return tensors, metadata


def _field(meta: dict[str, str], tensors: dict[str, TensorRef], name: str, default: Any = None) -> Any:
    text = meta.get(f"jitckpt.{name}")
    if text is not None and len(text) > MAX_FIELD_BYTES:
        raise FormatError(f"its metadata field jitckpt.{name} holds {len(text)} characters, more than the "
                          f"{MAX_FIELD_BYTES} a checkpoint needs")
    return default if text is None else _jsontree.decode(text, tensors)


def weights_payload(tensors: dict[str, TensorRef], meta: dict[str, str], path: str) -> dict[str, Any]:
    """The schema payload of one set of weights (a weights-only export, ours or anyone's), with what its
    metadata says of where they came from."""
    if not tensors:
        raise FormatError(f"{path}: safetensors file holds no tensors")
    which = meta.get("jitckpt.weights")
    return {"model": tensors, "epoch": _field(meta, tensors, "epoch"), "args": _field(meta, tensors, "args", {}),
            "arch": _field(meta, tensors, "arch"), "global_step": _field(meta, tensors, "global_step"),
            "extra": {"weights": which} if which else {}}


def read(path: str) -> JiTCheckpoint:
    tensors, meta = read_header(path)
    kind = meta.get(KIND_KEY)

    def field(name: str, default: Any = None) -> Any:
        return _field(meta, tensors, name, default)

    if kind != "training-state":
        return from_file_payload(weights_payload(tensors, meta, path), version(path, meta))
    payload: dict[str, Any] = {name: _section(tensors, name + "/") for name in SECTIONS}
    optimizer = field("optimizer")
    if optimizer is not None:
        for name, state in optimizer["state"].items():
            state.update(_section(tensors, f"optimizer/{name}/") or {})
    payload.update(
        optimizer=optimizer, epoch=field("epoch"), global_step=field("global_step"),
        arch=field("arch"), args=field("args", {}), extra=field("extra", {}),
    )
    return from_file_payload(payload, version(path, meta))


def version(path: str, meta: dict[str, str]) -> int:
    """The schema version a file's metadata records (1 when it records none)."""
    text = meta.get("jitckpt.schema_version", "1")
    if not (text.isascii() and text.isdigit() and len(text) < 10):
        raise FormatError(f"{path}: schema version {text[:40]!r} is not a whole number")
    return int(text)


def _section(tensors: dict[str, Any], prefix: str) -> dict[str, Any] | None:
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
    meta = {"format": "pt", KIND_KEY: "weights",
            "jitckpt.schema_version": str(ckpt.schema_version),
            "jitckpt.arch": json.dumps(ckpt.arch.to_dict() if ckpt.arch else None),
            "jitckpt.epoch": json.dumps(ckpt.epoch), "jitckpt.global_step": json.dumps(ckpt.global_step),
            "jitckpt.args": _jsontree.encode(ckpt.args, {}, "args")}
    provenance = ckpt.provenance(which)
    if provenance is not None:  # one set of weights that never said which records nothing: nothing is invented
        meta["jitckpt.weights"] = provenance
    return tensors, meta


def write_tensors(tensors: dict[str, Any], metadata: dict[str, str], handle: BinaryIO,
                  progress: Callable[[int], None] | None = None) -> None:
    """Write a safetensors file: JSON header (8-byte aligned), then each tensor's bytes in order.

    The header records every tensor's CRC-32 (:mod:`._checksums`): it is written
    with placeholders, the CRCs are computed from the sources in a second thread
    while the bytes are copied (a source's own checksum verified on the way),
    and the header is rewritten in place with the values, at the same length.
    """
    header: dict[str, Any] = {"__metadata__": {k: v for k, v in metadata.items() if k != _checksums.KEY}}
    offset = 0
    for key, tensor in tensors.items():
        size = nbytes_of(tensor)
        header[key] = {"dtype": DTYPES[dtype_name(tensor)][1], "shape": list(shape_of(tensor)),
                       "data_offsets": [offset, offset + size]}
        offset += size
    header_value = _checksums.header_crc(header)

    def header_bytes(crcs: dict[str, int]) -> bytes:
        header["__metadata__"][_checksums.KEY] = _checksums.encode(header_value, crcs)
        text = json.dumps(header, separators=(",", ":")).encode()
        return struct.pack("<Q", len(text) + (-len(text) % 8)) + text + b" " * (-len(text) % 8)

    placeholder = header_bytes(dict.fromkeys(tensors, _checksums.PLACEHOLDER))
    handle.write(placeholder)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = {}
        for key, tensor in tensors.items():
            pending[key] = write_tensor_crc(tensor, handle, progress, pool)
        crcs = {key: value.result() if isinstance(value, Future) else value for key, value in pending.items()}
    final = header_bytes(crcs)
    assert len(final) == len(placeholder)
    end = handle.tell()
    handle.seek(0)
    handle.write(final)
    handle.seek(end)


def write(ckpt: JiTCheckpoint, handle: BinaryIO, path: Path, progress: Callable[[int], None] | None = None,
          weights: str | None = None) -> None:
    tensors, meta = weights_export(ckpt, weights) if weights else training_state(ckpt)
    write_tensors(tensors, meta, handle, progress)
