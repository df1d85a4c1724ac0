"""Writing a diffusers folder: what ``JiTPipeline.from_pretrained`` and ``JiTTransformer2DModel`` load.

``model_index.json`` (``JiTPipeline``, its scheduler, ``id2label`` when class names are given),
``transformer/config.json`` (diffusers' config keys, :mod:`jitckpt.layouts.configs`),
``transformer/diffusion_pytorch_model.safetensors`` (the weights under diffusers PR #13098's names, fused
``attn.qkv`` or split ``to_q``/``to_k``/``to_v``, with jitckpt's checksums and the training args in its
metadata), ``scheduler/scheduler_config.json`` and ``conversion_metadata.json`` (which weights, from what).
The caller (``jitckpt export --layout diffusers``) places the folder atomically and adds the model card.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from .options import DIFFUSERS_NAMES
from ..layouts import from_canonical
from ..layouts.configs import config_from_arch
from ..storage.atomic_folder import OutputFolder
from ..errors import SchemaError
from ..schema import JiTCheckpoint
from . import diffusers
from .export import CONFIG_DIGEST_KEY
from .safetensors import write_tensors

DIFFUSERS_VERSION = "0.36.0"  # the release the Hub re-hosts were written for
PIPELINE_CLASS = "JiTPipeline"
SCHEDULER = {  # diffusers' FlowMatchEulerDiscreteScheduler, as JiTPipeline's tests build it (its defaults)
    "_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": DIFFUSERS_VERSION,
    "num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False, "base_shift": 0.5,
    "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096, "invert_sigmas": False,
    "shift_terminal": None, "use_karras_sigmas": False, "use_exponential_sigmas": False,
    "use_beta_sigmas": False, "time_shift_type": "exponential", "stochastic_sampling": False,
}


def _json_text(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def _json_file(folder: OutputFolder, name: str, value: Any) -> None:
    with folder.file(name) as handle:
        handle.write(_json_text(value))


def write_folder(ckpt: JiTCheckpoint, tensors: Mapping[str, Any], metadata: dict[str, str], folder: OutputFolder,
                 names: str = "fused", id2label: Mapping[int, str] | None = None,
                 provenance: Mapping[str, Any] | None = None) -> None:
    """Write the diffusers files of ``tensors`` (one set of weights, canonical ``net.`` keys) into ``folder``."""
    if ckpt.arch is None:
        raise SchemaError("checkpoint has no architecture")
    transformer = folder.subfolder(diffusers.TRANSFORMER)
    config = config_from_arch(ckpt.arch.to_dict(), attention_dropout=ckpt.args.get("attn_dropout", 0.0),
                              dropout=ckpt.args.get("proj_dropout", 0.0))
    text = _json_text({**config, "_diffusers_version": DIFFUSERS_VERSION})
    metadata = {**metadata, CONFIG_DIGEST_KEY: hashlib.sha256(text).hexdigest()}  # verify checks config.json too
    with transformer.file(diffusers.WEIGHTS_FILE) as handle:
        write_tensors(from_canonical(tensors, DIFFUSERS_NAMES[names]), metadata, handle)
    with transformer.file(diffusers.CONFIG_FILE) as handle:
        handle.write(text)
    index: dict[str, Any] = {"_class_name": PIPELINE_CLASS, "_diffusers_version": DIFFUSERS_VERSION,
                             "scheduler": ["diffusers", SCHEDULER["_class_name"]],
                             "transformer": ["diffusers", config["_class_name"]]}
    if id2label is not None:
        index["id2label"] = {str(k): v for k, v in id2label.items()}
    _json_file(folder, diffusers.MODEL_INDEX, index)
    _json_file(folder.subfolder(diffusers.SCHEDULER), "scheduler_config.json", SCHEDULER)
    _json_file(folder, diffusers.CONVERSION_METADATA, dict(provenance or {}))
