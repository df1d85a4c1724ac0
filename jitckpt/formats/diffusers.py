"""diffusers folders: ``model_index.json``, ``transformer/`` (``config.json`` and the weights), ``scheduler/``.

What JiT users download today: the Hub re-hosts (BiliSakura/JiT-diffusers, one folder per variant such as
``JiT-B-16/``) and what diffusers' ``JiTTransformer2DModel.save_pretrained`` writes. The weights are
``diffusion_pytorch_model.safetensors`` or its sharded form (``diffusion_pytorch_model.safetensors.index.json``
with ``weight_map`` naming ``diffusion_pytorch_model-0000K-of-0000N.safetensors`` files), under diffusers'
names (fused or split attention: :mod:`jitckpt.layouts.names`). A ``transformer/`` folder alone reads too.
The architecture comes from ``config.json`` (:mod:`jitckpt.layouts.configs`) and is checked against the
tensor shapes. A folder holds one set of weights: it reads as weights only, and which EMA they were, when
``conversion_metadata.json`` or jitckpt's metadata says so, is kept. Written by ``jitckpt export --layout
diffusers`` (:mod:`jitckpt.publishing.export`); read-only as a format.
"""

from __future__ import annotations

import os
import re
from typing import Any

from .table import facts
from ..errors import FormatError, SchemaError, render
from ..storage import sources
from ..layouts import to_canonical
from ..layouts.configs import TRANSFORMER_CLASS, arch_fields, is_transformer_config
from ..layouts.arch import Arch, infer_arch, variant_name
from ..schema import JiTCheckpoint, from_file_payload
from ..tensors.anytensor import shape_of
from ..tensors.lazy import TensorRef
from . import export, safetensors
from ._jsonfile import read_json, try_json

FACTS = facts("diffusers")
NAME, SUFFIXES, LABEL, DESCRIPTION = FACTS.name, FACTS.suffixes, FACTS.label, FACTS.description
KIND, WRITES = FACTS.kind, FACTS.writes  # written by jitckpt export --layout diffusers
MODEL_INDEX, TRANSFORMER, SCHEDULER = "model_index.json", "transformer", "scheduler"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
INDEX_FILE = WEIGHTS_FILE + ".index.json"
CONVERSION_METADATA = "conversion_metadata.json"
SHARD_NAME = re.compile(r"diffusion_pytorch_model-(\d{5})-of-(\d{5})\.safetensors")
MAX_SHARDS = 10_000
# What conversion scripts call the weights they took (Bili-Sakura's converters: model, ema1, ema2).
_WEIGHT_NAMES = {"model": "raw", "raw": "raw", "ema1": "ema1", "ema2": "ema2", "model_ema1": "ema1",
                 "model_ema2": "ema2"}
ARCH_CHECKED = ("depth", "hidden_size", "num_heads", "patch_size", "bottleneck_dim", "in_context_len",
                "num_classes", "img_size", "mlp_hidden_dim")


def transformer_dir(path: str | os.PathLike[str]) -> str | None:
    """The folder holding the transformer's config and weights: ``path/transformer`` of a pipeline folder, or
    ``path`` itself when it is a transformer folder; None when ``path`` is neither."""
    path = str(path)
    if not sources.is_dir(path):
        return None
    if sources.is_file(sources.join(path, MODEL_INDEX)) and sources.is_dir(sources.join(path, TRANSFORMER)):
        return sources.join(path, TRANSFORMER)
    has_weights = any(sources.exists(sources.join(path, n)) for n in (WEIGHTS_FILE, INDEX_FILE))
    if has_weights and is_transformer_config(try_json(sources.join(path, CONFIG_FILE))):
        return path
    return None


def detect_folder(path: str | os.PathLike[str]) -> bool:
    return transformer_dir(path) is not None


is_diffusers_dir = detect_folder


def read(path: str) -> JiTCheckpoint:
    folder = transformer_dir(path)
    if folder is None:
        raise FormatError(f"{path}: not a diffusers folder (no model_index.json with transformer/, nor a "
                          f"transformer folder with {CONFIG_FILE} and {WEIGHTS_FILE})")
    if folder != path:
        _check_model_index(sources.join(path, MODEL_INDEX))
    config_path = sources.join(folder, CONFIG_FILE)
    config = read_json(config_path)
    if not is_transformer_config(config):
        raise FormatError(f"{config_path}: not a config of diffusers' JiTTransformer2DModel")
    tensors, meta, where = read_weights(folder)
    try:
        fields = arch_fields(config)
    except SchemaError as exc:
        raise SchemaError(str(exc).replace("config.json", config_path, 1)) from None
    arch = checked_arch(fields, tensors, config_path, where)
    payload = safetensors.weights_payload(tensors, meta, where)
    which = payload["extra"].get("weights") or _conversion_weights(path)
    if which is not None:
        payload["extra"] = {**payload["extra"], "weights": which}
    payload.update(arch=arch, layout=NAME)
    ckpt = from_file_payload(payload, safetensors.version(where, meta))
    what = f"the {which} weights" if which else "one set of weights (which one its files do not say)"
    ckpt.warnings.append(f"{path} is a diffusers folder of {what} only: no optimizer, no other weights")
    return ckpt


def _check_model_index(where: str) -> None:
    """``model_index.json`` is a JSON object whose transformer, when named, is JiT's (``[library, class]``)."""
    index = read_json(where)
    if not isinstance(index, dict):
        raise FormatError(f"{where}: not a JSON object (a pipeline's model index)")
    entry = index.get(TRANSFORMER)
    if entry is not None and not (isinstance(entry, list) and len(entry) == 2 and entry[1] == TRANSFORMER_CLASS):
        raise FormatError(f"{where}: its transformer is {render(entry, 80)}, not diffusers' {TRANSFORMER_CLASS}")


def read_weights(folder: str) -> tuple[dict[str, TensorRef], dict[str, str], str]:
    """(tensors by the file's names, the first file's metadata, what to name in messages) of a transformer
    folder: the single weights file, or every shard its index names, each checked against the index."""
    single, index_path = sources.join(folder, WEIGHTS_FILE), sources.join(folder, INDEX_FILE)
    if not sources.exists(index_path):
        if not sources.is_file(single):
            raise FormatError(f"{single}: missing or not a regular file")
        found, meta = safetensors.read_header(single)
        return found, meta, single
    weight_map = _weight_map(read_json(index_path), index_path)
    shards: dict[str, list[str]] = {}
    for key, name in weight_map.items():
        shards.setdefault(name, []).append(key)
    tensors: dict[str, TensorRef] = {}
    first_meta: dict[str, str] | None = None
    for name, keys in sorted(shards.items()):
        shard = sources.join(folder, name)
        if not sources.is_file(shard):
            raise FormatError(f"{shard}: shard named by {INDEX_FILE} is missing or not a regular file")
        found, meta = safetensors.read_header(shard)
        first_meta = meta if first_meta is None else first_meta
        absent = [k for k in keys if k not in found]
        if absent:
            raise FormatError(f"{shard}: holds no tensor {render(absent[0], 80)}, which {INDEX_FILE} places there")
        stray = [k for k in found if weight_map.get(k) != name]
        if stray:
            raise FormatError(f"{shard}: holds {render(stray[0], 80)}, which {INDEX_FILE} does not place there")
        tensors.update(found)
    return {k: tensors[k] for k in weight_map}, first_meta or {}, index_path


def _weight_map(index: Any, where: str) -> dict[str, str]:
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise FormatError(f"{where}: no weight_map (a map of tensor names to shard files)")
    names = set()
    for key, name in weight_map.items():
        if not isinstance(name, str) or not SHARD_NAME.fullmatch(name):
            raise FormatError(f"{where}: tensor {render(key, 80)} is placed in {str(name)[:80]!r}, not a shard file "
                              "name (diffusion_pytorch_model-0000K-of-0000N.safetensors)")
        names.add(name)
    if len(names) > MAX_SHARDS:
        raise FormatError(f"{where}: names {len(names)} shard files, more than {MAX_SHARDS}")
    return weight_map


def checked_arch(fields: dict[str, Any], tensors: dict[str, TensorRef], config_path: str, where: str) -> Arch:
    """The architecture ``config.json`` describes, once it agrees with what the tensor shapes say."""
    canonical, _ = to_canonical(tensors, "model")
    seen, _ = infer_arch({k: shape_of(v) for k, v in canonical.items()},
                         in_context_start=fields["in_context_start"])
    differ = [f for f in ARCH_CHECKED if fields[f] != getattr(seen, f)]
    if differ:
        said = ", ".join(f"{f}={fields[f]}" for f in differ)
        have = ", ".join(f"{f}={getattr(seen, f)}" for f in differ)
        raise SchemaError(f"{config_path} says {said}, but the tensors of {where} have {have}")
    arch = Arch(**fields)
    return Arch(**{**arch.to_dict(), "variant": variant_name(arch)})


def recorded_files(path: str) -> list[tuple[str, str]]:
    """(file, SHA-256 recorded for it) of the folder's JSON files whose digest its weights' metadata records
    (what ``jitckpt export --layout diffusers`` writes: ``transformer/config.json``)."""
    folder = transformer_dir(path)
    if folder is None:
        return []
    _, meta, _ = read_weights(folder)
    digest = meta.get(export.CONFIG_DIGEST_KEY)
    return [(sources.join(folder, CONFIG_FILE), digest)] if digest else []


def _conversion_weights(path: str) -> str | None:
    """Which weights ``conversion_metadata.json`` (written by the Hub converters) says were converted."""
    record = try_json(sources.join(path, CONVERSION_METADATA))
    value = record.get("weights") if isinstance(record, dict) else None
    return _WEIGHT_NAMES.get(value) if isinstance(value, str) else None
