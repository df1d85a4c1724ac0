"""What ``jitckpt train --resume`` makes of a checkpoint that jitckpt's Lightning module cannot resume as it is.

Files of other tools differ in what they hold: the seed port's ``.ckpt`` has no
EMA, its optimizer uses another grouping; the authors' released weights have no
optimizer and no epoch; an optimizer whose grouping cannot be identified is
unusable. :func:`plan_resume` decides, for each, how training continues, and
says so: the EMAs start from the raw weights with a warning, the optimizer
starts fresh only when asked (``--drop-optimizer``) or when the file has none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..api import save
from ..errors import DROP_OPTIMIZER, JiTCheckpointError, SchemaError
from ..layouts.groupings import ORIGINAL, adamw_group_defaults, grouping_of
from ..model.loading import require_arch
from ..schema import JiTCheckpoint



@dataclass
class ResumePlan:
    """How to resume: a Lightning checkpoint to fit from, or (no epoch known) weights to start from.

    ``ckpt_path`` is None when training starts at epoch 0 from ``weights`` (the
    released files: no epoch, no optimizer). ``warnings`` are for the user.
    """

    ckpt_path: Path | str | None = None  # a str: a URL
    checkpoint: JiTCheckpoint | None = None  # what to restore from ckpt_path (read through JiTCheckpointIO)
    weights: JiTCheckpoint | None = None
    warnings: list[str] = field(default_factory=list)


def plan_resume(saved: JiTCheckpoint, source: Path | str, source_format: str, scratch: Path | None,
                args: Mapping[str, Any], drop_optimizer: bool = False, sharded: bool = False) -> ResumePlan:
    """Decide how to resume from ``saved`` (read from ``source``).

    Without ``scratch`` nothing is written: ``ckpt_path`` is the source and
    ``checkpoint`` what JiTCheckpointIO restores for it. With ``scratch`` a
    source Lightning cannot take as it is is converted there (``sharded``: the
    run shards its parameters (FSDP2), and resumes from a DCP directory)."""
    plan = ResumePlan()
    if saved.unmapped_optimizer is not None:
        if not drop_optimizer:
            raise JiTCheckpointError(f"{source}: {saved.unmapped_optimizer.reason}; pass {DROP_OPTIMIZER} to resume "
                                     "with a fresh optimizer")
        plan.warnings.append(f"{source}: its optimizer state is dropped ({saved.unmapped_optimizer.reason}); "
                             "AdamW starts fresh")
    elif drop_optimizer and saved.optimizer is not None:
        plan.warnings.append(f"{source}: its optimizer state is dropped (--drop-optimizer); AdamW starts fresh")
        saved.optimizer = None
    missing = [n for n in ("model_ema1", "model_ema2") if getattr(saved, n) is None]
    if missing:
        plan.warnings.append(f"{source} holds no {' and no '.join(missing)}: "
                             f"{'both EMAs start' if len(missing) == 2 else 'it starts'} from its raw weights")
        for name in missing:
            setattr(saved, name, dict(saved.model))
    if saved.epoch is None:  # released weights: train from them, from epoch 0
        plan.warnings.append(f"{source} says no epoch (released weights?): training starts at epoch 0 from its "
                             "weights and EMAs, with a fresh optimizer")
        plan.weights = saved
        return plan
    if saved.optimizer is None:
        if saved.unmapped_optimizer is None and not drop_optimizer:
            plan.warnings.append(f"{source} holds no optimizer state: AdamW starts fresh")
        saved.optimizer = fresh_optimizer(saved, args)
        saved.unmapped_optimizer = None
    if scratch is None:
        plan.ckpt_path, plan.checkpoint = source, saved
        return plan
    # Under FSDP2 Lightning takes a full .ckpt's AdamW state as numbered in named_parameters() order, which is
    # not JiT's grouping: a sharded run resumes from a DCP directory instead, where the state is keyed by name.
    wanted = "dcp" if sharded else "ckpt"
    usable = source_format == wanted and not missing and (
        sharded or grouping_of(saved.optimizer, require_arch(saved)) is ORIGINAL)
    plan.ckpt_path = source if usable else save(saved, scratch / f"resume.{wanted}", wanted)
    return plan


def fresh_optimizer(ckpt: JiTCheckpoint, args: Mapping[str, Any]) -> dict:
    """An AdamW state with no moments over the original groups (what ``JiTLightningModule`` builds)."""
    lr = args.get("lr") or args.get("blr") or 0.0
    decays = (0.0, float(args.get("weight_decay") or 0.0))
    return {"state": {}, "param_groups": [
        {"lr": lr, "weight_decay": decay, **adamw_group_defaults(), "params": list(names)}
        for names, decay in zip(ORIGINAL.names(require_arch(ckpt)), decays)]}


def load_weights(module: Any, callbacks: list, weights: JiTCheckpoint) -> None:
    """Put ``weights``' raw weights into ``module`` and its EMAs into the EMA callback, before ``fit``."""
    from ..callbacks.ema import EMACallback
    from ..tensors.anytensor import to_torch

    module.load_state_dict({k: to_torch(v) for k, v in weights.model.items()}, strict=True)
    for ema in (cb for cb in callbacks if isinstance(cb, EMACallback)):
        ema1, ema2 = weights.model_ema1, weights.model_ema2
        if ema1 is None or ema2 is None:  # plan_resume fills both; other weights may lack them
            raise SchemaError("the weights to start from need both model_ema1 and model_ema2 for the EMACallback")
        ema.load_state_dict({"ema1": {k: to_torch(v) for k, v in ema1.items()},
                             "ema2": {k: to_torch(v) for k, v in ema2.items()}})
