"""Lightning callbacks that keep the original JiT training behaviour and checkpoints."""

from __future__ import annotations

import os
from typing import Any

import lightning as L

from ..errors import JiTCheckpointError
from .checkpoint import JiTModelCheckpoint, checkpoint_from_run
from .ema import EMACallback
from .lr_scheduler import LearningRateSchedulerCallback, lr_at
from .metric_logger import MetricLoggerCallback

__all__ = [
    "EMACallback", "JiTModelCheckpoint", "LearningRateSchedulerCallback", "MetricLoggerCallback",
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
) -> list[L.Callback]:
    """EMA, checkpointing, LR schedule and console logging, configured as the original run.

    ``enable_fid_eval=True`` is refused until ``FIDEvaluationCallback`` exists,
    rather than silently training without evaluation.
    """
    if enable_fid_eval:
        raise JiTCheckpointError(
            "enable_fid_eval=True: FIDEvaluationCallback is not available in this version of jitckpt; "
            "train with enable_fid_eval=False and score checkpoints separately"
        )
    return [
        EMACallback(ema_decay1, ema_decay2),
        JiTModelCheckpoint(save_dir, save_last_freq, save_milestone_freq, save_lightning=save_lightning, args=args),
        LearningRateSchedulerCallback(lr_schedule, warmup_epochs, min_lr, epochs),
        MetricLoggerCallback(log_freq),
    ]
