"""Export folders (``jitckpt export``): one set of weights, the configuration that builds the network, the card.

The Hugging Face layout ``PyTorchModelHubMixin`` uses: ``model.safetensors``
(the chosen weights under the network's own keys, with jitckpt's checksums and
the training args in its metadata, the sampling protocol included), ``config.json``
and ``README.md``. Read-only as a format: a folder holds one set of weights, no
optimizer and no second EMA, and a checkpoint read from it says so.
"""

from __future__ import annotations

import json
import os

from ..errors import FormatError
from ..schema import JiTCheckpoint
from . import safetensors

NAME = "export"
SUFFIXES: tuple[str, ...] = ()
LABEL = "jitckpt export folder"
DESCRIPTION = "jitckpt export folder (model.safetensors + config.json: one set of weights, for inference)"
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"
MARK = "jitckpt_export"  # the config.json key that says jitckpt wrote the folder (its format version)


def is_export_dir(path: str | os.PathLike) -> bool:
    config = os.path.join(path, CONFIG_FILE)
    if not (os.path.isdir(path) and os.path.isfile(config) and os.path.isfile(os.path.join(path, WEIGHTS_FILE))):
        return False
    try:
        with open(config, "rb") as f:
            return MARK in json.loads(f.read(1 << 20))
    except (OSError, ValueError):
        return False


def read(path: str) -> JiTCheckpoint:
    ckpt = safetensors.read(os.path.join(path, WEIGHTS_FILE))
    if not ckpt.is_weights_only or "weights" not in ckpt.extra:
        raise FormatError(f"{path}: {WEIGHTS_FILE} is not a weights-only export")
    ckpt.warnings.append(f"{path} is an export of the {ckpt.extra['weights']} weights only: no optimizer, "
                         "no other weights")
    return ckpt
