"""The original per-iteration learning-rate schedule as a Lightning callback."""

from __future__ import annotations

import math
from typing import Any

import lightning as L

from ..errors import JiTCheckpointError

SCHEDULES = ("constant", "cosine")


def lr_at(epoch: float, lr: float, warmup_epochs: float, lr_schedule: str = "constant", min_lr: float = 0.0,
          epochs: float = 600) -> float:
    """The original ``util/lr_sched.adjust_learning_rate`` value at fractional ``epoch``.

    Linear warmup from 0 over ``warmup_epochs``, then constant ``lr`` or a
    half-cycle cosine from ``lr`` down to ``min_lr`` at ``epochs``.
    """
    if epoch < warmup_epochs:
        return lr * epoch / warmup_epochs
    if lr_schedule == "constant":
        return lr
    if lr_schedule == "cosine":
        return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / (epochs - warmup_epochs)))
    raise JiTCheckpointError(f"unknown lr_schedule {lr_schedule!r}; choose one of: {', '.join(SCHEDULES)}")


class LearningRateSchedulerCallback(L.Callback):
    """Sets every param group's LR before each optimizer step, as the original loop does.

    The position is ``epoch + step_in_epoch / steps_per_epoch`` counted in
    optimizer steps, so under gradient accumulation the LR changes once per
    optimizer step, and after a resume it continues from the restored epoch.
    A group's ``lr_scale`` multiplies its LR. The base LR is ``lr`` if given,
    else the optimizer's constructor LR (the absolute LR of the run).
    """

    def __init__(self, lr_schedule: str = "constant", warmup_epochs: float = 5, min_lr: float = 0.0,
                 epochs: int = 600, lr: float | None = None) -> None:
        if lr_schedule not in SCHEDULES:
            raise JiTCheckpointError(f"unknown lr_schedule {lr_schedule!r}; choose one of: {', '.join(SCHEDULES)}")
        self.lr_schedule, self.warmup_epochs, self.min_lr, self.epochs, self.lr = lr_schedule, warmup_epochs, min_lr, epochs, lr
        self.last_lr: float | None = None

    def original_args(self) -> dict[str, Any]:
        """The original's args this callback was configured with (read by ``run_args``)."""
        found: dict[str, Any] = dict(epochs=self.epochs, warmup_epochs=self.warmup_epochs,
                                     lr_schedule=self.lr_schedule, min_lr=self.min_lr)
        if self.lr is not None:
            found["lr"] = self.lr
        return found

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        accumulate = trainer.accumulate_grad_batches
        if batch_idx % accumulate:
            return  # inside an accumulation window: the step's LR is already set
        steps_per_epoch = math.ceil(trainer.num_training_batches / accumulate)
        position = trainer.current_epoch + (batch_idx // accumulate) / steps_per_epoch
        for optimizer in trainer.optimizers:
            base = self.lr if self.lr is not None else optimizer.defaults["lr"]
            lr = lr_at(position, base, self.warmup_epochs, self.lr_schedule, self.min_lr, self.epochs)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
        self.last_lr = lr
        pl_module.log("lr", lr, on_step=True, on_epoch=False, prog_bar=True, batch_size=1, rank_zero_only=True)
