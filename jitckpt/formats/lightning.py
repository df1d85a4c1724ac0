"""The Lightning ``.ckpt`` of ``JiTLightningModule`` with jitckpt's callbacks.

``state_dict`` holds the canonical ``net.`` keys, ``optimizer_states`` the
positional AdamW state (written over the original groups, as ``JiTLightningModule``
builds them; read over whichever known grouping its evidence fits), the two
EMAs live in the ``EMACallback`` entry of ``callbacks`` (a file without one,
such as the seed port's, has no EMAs), and ``loops`` is built so that
``trainer.fit(..., ckpt_path=...)`` resumes at ``epoch + 1`` with
``global_step`` restored (without ``loops`` Lightning restarts at epoch 0).
What jitckpt does not map (other callbacks, schedulers, hyper-parameters) is
kept in ``extra['lightning']`` and written back unchanged.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, BinaryIO

from ..torchfile import read as torchread, write as torchzip
from .table import facts
from ..errors import FormatError, render
from ..layouts import recognise
from ..layouts.trees import EMA_CALLBACK as EMA_CALLBACK, key_for  # re-exported (dcp, dcp_write)
from ..schema import META_KEY, JiTCheckpoint, checked_int, from_file_payload, original_positional
from ..layouts.args import args_from_hparams, hparams_from_args as hparams_from_args  # noqa: F401 (re-exported)

FACTS = facts("ckpt")
NAME, SUFFIXES, LABEL, DESCRIPTION = FACTS.name, FACTS.suffixes, FACTS.label, FACTS.description
KIND, WRITES = FACTS.kind, FACTS.writes

VERSION_KEY = "pytorch-lightning_version"
_VERSION = re.compile(r"\d{1,4}(\.\d{1,6}){0,3}([a-z0-9.+-]{0,40})")  # what packaging.version parses
_MAPPED = ("state_dict", "optimizer_states", "epoch", "global_step", META_KEY)


def ema_entry(callbacks: dict[str, Any]) -> str | None:
    """The key of EMACallback's state among a checkpoint's callbacks (None if it has none)."""
    key: str | None = key_for(callbacks, EMA_CALLBACK + "*")
    return key


def from_tree(tree: Any, path: str) -> JiTCheckpoint:
    if not isinstance(tree, dict) or not isinstance(tree.get("state_dict"), dict):
        raise FormatError(f"{path}: not a Lightning checkpoint (no state_dict)")
    meta: Any = tree.get(META_KEY) if isinstance(tree.get(META_KEY), dict) else {}  # jitckpt's entry, as decoded
    version = tree.get(VERSION_KEY)
    if version is not None and not (isinstance(version, str) and _VERSION.fullmatch(version)):
        raise FormatError(f"{path}: {VERSION_KEY} is {render(version, 60)}, not a Lightning version")
    rest = {k: v for k, v in tree.items() if k not in _MAPPED}
    callbacks = dict(rest.get("callbacks") or {})
    payload: dict[str, Any] = {"model": tree["state_dict"]}
    entry = ema_entry(callbacks)
    if entry is not None:
        ema_state = dict(callbacks[entry])
        payload["model_ema1"] = ema_state.pop("ema1", None)
        payload["model_ema2"] = ema_state.pop("ema2", None)
        callbacks[entry] = ema_state
        rest["callbacks"] = callbacks
    optimizers = tree.get("optimizer_states") or []
    if len(optimizers) > 1:
        raise FormatError(f"{path}: {len(optimizers)} optimizers; a JiT run has one AdamW")
    if optimizers:
        payload["optimizer"] = optimizers[0]
    epoch = _last_completed_epoch(tree)
    if tree.get("epoch") != epoch:  # Lightning's own count (see above), kept for an exact round trip
        rest["epoch"] = tree.get("epoch")
    hparams = tree.get("hyper_parameters")
    arch = meta.get("arch") or (hparams.get("arch") if isinstance(hparams, dict) else None)  # Lightning's own save
    payload.update(epoch=epoch, global_step=tree.get("global_step"), arch=arch)
    for unknown in meta.get("unknown", ()) if isinstance(meta.get("unknown"), list) else ():
        if unknown in ("epoch", "global_step"):  # the source said nothing; Lightning needed a number
            payload[unknown] = None
    payload["args"] = meta["args"] if "args" in meta else args_from_hparams(tree.get("hyper_parameters"))
    payload["extra"] = {**(meta.get("extra") or {}), "lightning": rest}
    match = recognise(tree)
    payload["layout"] = match.layout.name if match is not None else None
    return from_file_payload(payload, meta.get("schema_version", 1))


def _last_completed_epoch(tree: dict[str, Any]) -> int | None:
    """The last epoch whose training finished (the original's ``epoch``).

    Lightning's own ``epoch`` is ``trainer.current_epoch``: the finished epoch in
    an end-of-epoch checkpoint, but one more after ``fit`` returns. The loop
    progress tells them apart: ``processed`` counts epochs whose training ran.
    """
    try:
        processed = tree["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]
    except (KeyError, TypeError, IndexError):
        return tree.get("epoch")
    processed = checked_int("loops' processed epochs", processed)
    return processed - 1 if processed else None


def read(path: str) -> JiTCheckpoint:
    return from_tree(torchread.read_tree(path), path)


def hyper_parameters(ckpt: JiTCheckpoint) -> dict[str, Any]:
    """``JiTLightningModule`` constructor arguments equivalent to the checkpoint's args and architecture."""
    hparams = hparams_from_args(ckpt.args)
    if "model_name" not in hparams and ckpt.arch is not None and ckpt.arch.variant:
        hparams["model_name"] = ckpt.arch.variant
    if ckpt.arch is not None:
        hparams["arch"] = ckpt.arch.to_dict()
    return hparams


def build_loops(epoch: int, global_step: int, steps_in_epoch: int) -> dict[str, Any]:
    """Lightning's loop progress as saved at the end of epoch ``epoch`` (0-based).

    ``fit_loop.epoch_progress`` says ``epoch + 1`` epochs were processed and
    ``epoch`` completed, which is what Lightning's own end-of-epoch checkpoint
    holds; the optimizer-step progress restores ``trainer.global_step``.
    """

    def progress(total: int, current: int, *fields: str) -> dict[str, Any]:
        return {"total": {f: total for f in fields}, "current": {f: current for f in fields}}

    done = ("ready", "started", "processed", "completed")
    epochs = progress(epoch + 1, epoch + 1, *done)
    epochs["total"]["completed"] = epochs["current"]["completed"] = epoch
    batches = progress(global_step, steps_in_epoch, *done)
    batches["is_last_batch"] = True
    idle_batches = {**progress(0, 0, *done), "is_last_batch": False}
    return {
        "fit_loop": {
            "state_dict": {},
            "epoch_loop.state_dict": {"_batches_that_stepped": global_step},
            "epoch_loop.batch_progress": batches,
            "epoch_loop.scheduler_progress": progress(0, 0, "ready", "completed"),
            "epoch_loop.automatic_optimization.state_dict": {},
            "epoch_loop.automatic_optimization.optim_progress": {
                "optimizer": {
                    "step": progress(global_step, steps_in_epoch, "ready", "completed"),
                    "zero_grad": progress(global_step, steps_in_epoch, "ready", "started", "completed"),
                }
            },
            "epoch_loop.manual_optimization.state_dict": {},
            "epoch_loop.manual_optimization.optim_step_progress": progress(0, 0, "ready", "completed"),
            "epoch_loop.val_loop.state_dict": {},
            "epoch_loop.val_loop.batch_progress": idle_batches,
            "epoch_progress": epochs,
        },
        "validate_loop": {"state_dict": {}, "batch_progress": idle_batches},
        "test_loop": {"state_dict": {}, "batch_progress": idle_batches},
        "predict_loop": {"state_dict": {}, "batch_progress": progress(0, 0, *done)},
    }


def to_tree(ckpt: JiTCheckpoint) -> dict[str, Any]:
    extra = dict(ckpt.extra)
    rest = dict(extra.pop("lightning", {}))
    epoch = ckpt.epoch if ckpt.epoch is not None else 0
    step = ckpt.global_step or 0
    steps_in_epoch = step // (epoch + 1) if step and step % (epoch + 1) == 0 else 0
    callbacks = dict(rest.pop("callbacks", {}) or {})
    entry = ema_entry(callbacks) or EMA_CALLBACK
    ema_state = dict(callbacks.get(entry) or {})
    ema_state.setdefault("ema_decay1", ckpt.args.get("ema_decay1", 0.9999))
    ema_state.setdefault("ema_decay2", ckpt.args.get("ema_decay2", 0.9996))
    for key, section in (("ema1", ckpt.model_ema1), ("ema2", ckpt.model_ema2)):
        if section is not None:
            ema_state[key] = dict(section)
    callbacks[entry] = ema_state
    tree: dict[str, Any] = {
        "epoch": rest.pop("epoch", epoch),
        "global_step": step,
        VERSION_KEY: rest.pop(VERSION_KEY, None) or _lightning_version(),
        "state_dict": dict(ckpt.model),
        "loops": rest.pop("loops", None) or build_loops(epoch, step, steps_in_epoch),
        "callbacks": callbacks,
        "optimizer_states": [original_positional(ckpt)] if ckpt.optimizer is not None else [],  # as JiTLightningModule groups
        "lr_schedulers": rest.pop("lr_schedulers", []),
        "hyper_parameters": rest.pop("hyper_parameters", None) or hyper_parameters(ckpt),
    }
    tree.update(rest)
    tree[META_KEY] = {
        "schema_version": ckpt.schema_version,
        "arch": ckpt.arch.to_dict() if ckpt.arch else None,
        "args": ckpt.args,
        "extra": extra,
    }
    unknown = [name for name in ("epoch", "global_step") if getattr(ckpt, name) is None]
    if unknown:  # released weights have no epoch: the 0 written for Lightning must not read back as one
        tree[META_KEY]["unknown"] = unknown
    return tree


def write(ckpt: JiTCheckpoint, handle: BinaryIO, path: Path, progress: torchzip.Progress | None = None,
          weights: str | None = None) -> None:
    if weights:
        raise FormatError("a weights-only export is written as .safetensors or .pth, not as a Lightning .ckpt")
    torchzip.write_tree(to_tree(ckpt), handle, archive=torchzip.archive_name(path), progress=progress)


def _lightning_version() -> str:
    from importlib import metadata  # not at import time: it costs 20 ms of every command's start

    for dist in ("lightning", "pytorch-lightning"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "2.0.0"
