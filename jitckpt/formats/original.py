"""The original JiT ``.pth``: ``torch.save`` of ``misc.save_model``'s dict.

Layout: ``model``, ``optimizer`` (AdamW ``state_dict()`` over the groups of
``misc.add_weight_decay``: no decay first, then decay), ``epoch``, ``args``
(an ``argparse.Namespace``), ``model_ema1``, ``model_ema2``. Files jitckpt
writes add one key, ``jitckpt``, with the schema version, global step,
architecture and extra; the original resume code ignores it. A bare state dict
is read as a weights-only checkpoint. The seed port's ``.pth`` (``global_step``
and ``hyper_parameters`` instead of ``args``, its own optimizer grouping) is
read through the same migration (:func:`jitckpt.schema._v0_to_v1`).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
from pathlib import Path
from typing import Any, BinaryIO

from ..torchfile import read as torchread, write as torchzip
from .table import facts
from ..errors import FormatError
from ..layouts import recognise
from ..schema import META_KEY, ORIGINAL_KEYS, JiTCheckpoint, from_file_payload, original_positional

FACTS = facts("pth")
NAME, SUFFIXES, LABEL, DESCRIPTION = FACTS.name, FACTS.suffixes, FACTS.label, FACTS.description
KIND, WRITES = FACTS.kind, FACTS.writes


WEIGHTS_ONLY = "weights_only"  # in the jitckpt key: model_ema1 and model_ema2 are copies of model


def from_tree(tree: Any, path: str) -> JiTCheckpoint:
    if not isinstance(tree, dict):
        raise FormatError(f"{path}: holds a {type(tree).__name__}, not a checkpoint dict")
    meta = tree.get(META_KEY)
    if not isinstance(meta, dict):
        return from_file_payload(dict(tree), 0)
    rest = {k: v for k, v in tree.items() if k not in ORIGINAL_KEYS and k != META_KEY}
    extra = dict(meta.get("extra") or {})
    if rest:
        extra["original"] = rest
    payload = {k: tree[k] for k in ORIGINAL_KEYS if k in tree}
    if meta.get(WEIGHTS_ONLY) is True:  # the copies are there for the original's resume code, not data of ours
        payload.pop("model_ema1", None)
        payload.pop("model_ema2", None)
    match = recognise(tree)
    payload.update(global_step=meta.get("global_step"), arch=meta.get("arch"), extra=extra,
                   layout=match.layout.name if match else None)
    return from_file_payload(payload, meta.get("schema_version", 1))


def read(path: str) -> JiTCheckpoint:
    return from_tree(torchread.read_tree(path), path)


def to_tree(ckpt: JiTCheckpoint) -> dict[str, Any]:
    """The dict the original ``misc.save_model`` would have saved, plus the ``jitckpt`` key.

    A checkpoint of one set of weights (no EMAs, no optimizer) is written as the released files are: the
    weights as ``model``, ``model_ema1`` and ``model_ema2`` (one storage, shared), so that the original's
    resume block, which reads both EMAs even to evaluate, takes it.
    """
    if ckpt.is_weights_only:
        ckpt = dataclasses.replace(ckpt, model_ema1=ckpt.model, model_ema2=ckpt.model)
    tree: dict[str, Any] = {"model": collections.OrderedDict(ckpt.model)}
    if ckpt.optimizer is not None:  # always the original grouping: what the original resume code builds
        tree["optimizer"] = original_positional(ckpt)
    if ckpt.epoch is not None:
        tree["epoch"] = ckpt.epoch
    tree["args"] = argparse.Namespace(**ckpt.args)
    for name in ("model_ema1", "model_ema2"):
        if getattr(ckpt, name) is not None:
            tree[name] = collections.OrderedDict(getattr(ckpt, name))
    extra = dict(ckpt.extra)
    tree.update(extra.pop("original", {}))
    tree[META_KEY] = {
        "schema_version": ckpt.schema_version,
        "global_step": ckpt.global_step,
        "arch": ckpt.arch.to_dict() if ckpt.arch else None,
        "extra": extra,
    }
    if ckpt.model_ema1 is ckpt.model and ckpt.model_ema2 is ckpt.model:
        tree[META_KEY][WEIGHTS_ONLY] = True
    return tree


def _with_provenance(extra: dict[str, Any], which: str | None) -> dict[str, Any]:
    """``extra`` recording which weights a weights-only file holds, when that is known (nothing is invented)."""
    return {**extra, "weights": which} if which is not None else {k: v for k, v in extra.items() if k != "weights"}


def write(ckpt: JiTCheckpoint, handle: BinaryIO, path: Path, progress: torchzip.Progress | None = None,
          weights: str | None = None) -> None:
    """The original layout; with ``weights`` ('raw', 'ema1', 'ema2') those weights alone (see :func:`to_tree`)."""
    if weights:
        chosen = ckpt.weights(weights)
        ckpt = dataclasses.replace(ckpt, model=chosen, model_ema1=None, model_ema2=None, optimizer=None,
                                   unmapped_optimizer=None, extra=_with_provenance(ckpt.extra, ckpt.provenance(weights)))
    tree = to_tree(ckpt)
    torchzip.write_tree(tree, handle, archive=torchzip.archive_name(path), progress=progress)
