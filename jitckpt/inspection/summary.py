"""What ``jitckpt inspect`` shows: a summary built from headers and metadata only.

Reading is lazy (TensorRefs), so a 19 GB checkpoint is summarised by reading
its pickle or JSON header; torch is never imported.
"""

from __future__ import annotations

import os
from typing import Any

from .. import formats
from ..layouts import describe
from ..layouts.arch import count_params
from ..model.protocol import resolve_sampling
from ..layouts.groupings import grouping_of
from ..schema import JiTCheckpoint, optimizer_step
from ..tensors.anytensor import dtype_name, is_tensor, shape_of

# The training args worth showing; the rest is in --json.
KEY_ARGS = (
    "model", "img_size", "class_num", "epochs", "warmup_epochs", "batch_size", "blr", "lr", "min_lr",
    "lr_schedule", "weight_decay", "ema_decay1", "ema_decay2", "P_mean", "P_std", "noise_scale", "t_eps",
    "label_drop_prob", "sampling_method", "num_sampling_steps", "cfg", "interval_min", "interval_max",
)
ARCH_FIELDS = (
    "depth", "hidden_size", "num_heads", "patch_size", "bottleneck_dim", "in_context_len", "in_context_start",
    "num_classes", "img_size",
)
SECTION_LABELS = {"model": "raw", "model_ema1": "ema1", "model_ema2": "ema2"}


def summarize(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON-able description of the checkpoint at ``path``."""
    name, ckpt = formats.read(path)
    arch = ckpt.arch
    info: dict[str, Any] = {
        "path": str(path),
        "format": name,
        "format_description": formats.get(name).DESCRIPTION,
        "file_size": formats.size_on_disk(path),
        "schema_version": ckpt.source_version,
        "epoch": ckpt.epoch,
        "global_step": ckpt.global_step,
        "variant": arch.variant if arch else None,
        "layout": ckpt.layout,
        "naming": ckpt.naming,
        "key_prefix": ckpt.key_prefix,
        "layout_description": describe(ckpt.layout, ckpt.naming, ckpt.key_prefix),
    }
    info.update({f: getattr(arch, f) if arch else None for f in ARCH_FIELDS})
    info["num_params"] = count_params({k: shape_of(v) for k, v in ckpt.model.items()})
    info["sections"] = {label: getattr(ckpt, section) is not None for section, label in SECTION_LABELS.items()}
    info["optimizer"] = _optimizer_info(ckpt)
    info["dtypes"] = {
        SECTION_LABELS[s]: sorted({dtype_name(t) for t in state.values()})
        for s, state in ckpt.sections().items()
    }
    optimizer = ckpt.optimizer if ckpt.unmapped_optimizer is None else ckpt.unmapped_optimizer.positional
    if optimizer is not None:
        info["dtypes"]["optimizer"] = sorted(
            {dtype_name(v) for st in optimizer.get("state", {}).values() for v in st.values() if is_tensor(v)}
        )
    info["checksummed"] = all(getattr(t, "checksummed", False) for t in ckpt.model.values())
    info["weights"] = ckpt.extra.get("weights")
    info["args"] = {k: ckpt.args[k] for k in KEY_ARGS if k in ckpt.args}
    info["all_args"] = ckpt.args
    plan = resolve_sampling(arch, ckpt.args)  # exactly what eval and sample use without flags
    info["sampling"] = plan.to_dict()
    info["protocol"] = plan.protocol.to_dict() if plan.protocol is not None else None
    info["warnings"] = list(ckpt.warnings) + list(plan.warnings)
    return info


def _optimizer_info(ckpt: JiTCheckpoint) -> dict[str, Any] | None:
    """Step, groups and grouping of the optimizer; an unmappable one is present with the reason, unnamed."""
    unmapped = ckpt.unmapped_optimizer
    state = ckpt.optimizer if unmapped is None else unmapped.positional
    if state is None:
        return None
    known = grouping_of(state, ckpt.arch) if unmapped is None and ckpt.arch is not None else None
    return {
        "step": optimizer_step(state),
        "params_with_state": len(state.get("state", {})),
        "param_groups": [
            {k: v for k, v in g.items() if k in ("lr", "weight_decay", "betas", "eps")} | {"size": len(g["params"])}
            for g in state["param_groups"]
        ],
        "mappable": unmapped is None,
        "grouping": known.name if known is not None else None,
        "unmappable_reason": unmapped.reason if unmapped is not None else None,
    }
