"""Export folders (``jitckpt export``): one set of weights, the configuration that builds the network, the card.

The Hugging Face layout ``PyTorchModelHubMixin`` uses: ``model.safetensors``
(the chosen weights under the network's own keys, with jitckpt's checksums and
the training args in its metadata, the sampling protocol included), ``config.json``
and ``README.md``. Read-only as a format: a folder holds one set of weights, no
optimizer and no second EMA, and a checkpoint read from it says so.
"""

from __future__ import annotations

import os

from .table import facts
from ..errors import FormatError
from ..storage import sources
from ..schema import JiTCheckpoint
from . import safetensors
from ._jsonfile import try_json

FACTS = facts("export")
NAME, SUFFIXES, LABEL, DESCRIPTION = FACTS.name, FACTS.suffixes, FACTS.label, FACTS.description
KIND, WRITES = FACTS.kind, FACTS.writes
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"
MARK = "jitckpt_export"  # the config.json key that says jitckpt wrote the folder (its format version)
CONFIG_DIGEST_KEY = "jitckpt.config_sha256"  # in the weights' metadata: the SHA-256 of config.json


def detect_folder(path: str | os.PathLike[str]) -> bool:
    config = try_json(sources.join(path, CONFIG_FILE)) if sources.is_dir(path) else None
    return isinstance(config, dict) and MARK in config and sources.is_file(sources.join(path, WEIGHTS_FILE))


def recorded_files(path: str) -> list[tuple[str, str]]:
    """(file, SHA-256 recorded for it) of the folder's JSON files whose digest its weights' metadata records."""
    _, meta = safetensors.read_header(sources.join(path, WEIGHTS_FILE))
    digest = meta.get(CONFIG_DIGEST_KEY)
    return [(sources.join(path, CONFIG_FILE), digest)] if digest else []


def read(path: str) -> JiTCheckpoint:
    ckpt = safetensors.read(sources.join(path, WEIGHTS_FILE))
    if not ckpt.is_weights_only or "weights" not in ckpt.extra:
        raise FormatError(f"{path}: {WEIGHTS_FILE} is not a weights-only export")
    ckpt.warnings.append(f"{path} is an export of the {ckpt.extra['weights']} weights only: no optimizer, "
                         "no other weights")
    return ckpt


is_export_dir = detect_folder
