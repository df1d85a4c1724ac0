"""Lightning callbacks that keep the original JiT training behaviour and checkpoints.

May import: errors, compat, storage, tensors, torchfile, layouts, schema, formats, api, model, evaluation, lightning.
"""

from __future__ import annotations

import os
from typing import Any

import lightning as L

from .checkpoint import JiTModelCheckpoint, checkpoint_from_run
from .ema import EMACallback
from .fid import FIDEvaluationCallback
from .lr_scheduler import LearningRateSchedulerCallback, lr_at
from .metric_logger import MetricLoggerCallback

__all__ = [
    "EMACallback", "FIDEvaluationCallback", "JiTModelCheckpoint", "LearningRateSchedulerCallback", "MetricLoggerCallback",
    "checkpoint_from_run", "create_default_callbacks", "lr_at",
]


def create_default_callbacks(
    ema_decay1: float = 0.9999,
    ema_decay2: float = 0.9996,
    save_dir: str | os.PathLike = "./checkpoints",
    eval_freq: int = 40,
    img_size: int = 256,
    epochs: int = 600,
    num_images: int = 50000,
    eval_batch_size: int = 256,
    num_classes: int = 1000,
    lr_schedule: str = "constant",
    warmup_epochs: int = 5,
    enable_fid_eval: bool = False,
    min_lr: float = 0.0,
    save_last_freq: int = 5,
    save_milestone_freq: int = 100,
    log_freq: int = 100,
    save_lightning: bool = False,
    args: dict[str, Any] | None = None,
    fid_stats: str | os.PathLike | None = None,
    ref_dir: str | os.PathLike | None = None,
    inception_weights: str | os.PathLike | None = None,
) -> list[L.Callback]:
    """EMA, checkpointing, LR schedule and console logging, configured as the original run.

    With ``enable_fid_eval=True``, also FID / IS every ``eval_freq`` epochs on
    EMA 1 (``num_images`` images in batches of ``eval_batch_size``), against
    ``fid_stats`` or ``ref_dir`` (neither: the original's ``fid_stats/jit_in{img_size}_stats.npz``, looked
    for when training starts), with the Inception weights at ``inception_weights``.
    """
    fid = [FIDEvaluationCallback(eval_freq, num_images, eval_batch_size, num_classes, img_size, True, 1, fid_stats,
                                 ref_dir, inception_weights)] if enable_fid_eval else []
    return [  # the order of the original loop's epoch end: save, then evaluate
        EMACallback(ema_decay1, ema_decay2),
        JiTModelCheckpoint(save_dir, save_last_freq, save_milestone_freq, save_lightning=save_lightning, args=args),
        LearningRateSchedulerCallback(lr_schedule, warmup_epochs, min_lr, epochs),
        MetricLoggerCallback(log_freq),
    ] + fid
