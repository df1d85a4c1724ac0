"""``MetricLoggerCallback``: the original console lines and the loss in the logger."""

from __future__ import annotations

import datetime
import time
from collections import deque
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info


class SmoothedValue:
    """A window median and a global average, as the original ``misc.SmoothedValue``.

    Values may be device tensors: they are kept as they are and read only when
    a figure is asked for, so updating costs no host sync.
    """

    def __init__(self, window: int = 20) -> None:
        self.values: deque = deque(maxlen=window)
        self.total: Any = 0.0
        self.count = 0

    def update(self, value: Any) -> None:
        self.values.append(value)
        self.total = self.total + value
        self.count += 1

    @property
    def median(self) -> float:
        return float(torch.stack([torch.as_tensor(v, dtype=torch.float64).cpu() for v in self.values]).median())

    @property
    def global_avg(self) -> float:
        return float(self.total) / max(self.count, 1)


class MetricLoggerCallback(L.Callback):
    """Every ``log_freq`` batches (and at the last), prints the original's line::

        Epoch: [2]  [ 0/3]  eta: 0:00:01  lr: 0.000008  loss: 0.5123 (0.5123)  time: 0.1032

    (loss as window median and epoch average, seconds per iteration, time left
    in the epoch) on rank zero, and logs the loss to the logger.
    """

    def __init__(self, log_freq: int = 100) -> None:
        self.log_freq = log_freq
        self.lines: list[str] = []

    def original_args(self) -> dict[str, Any]:
        """The original's args this callback was configured with (read by ``run_args``)."""
        return {"log_freq": self.log_freq}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.loss, self.iter_time = SmoothedValue(), SmoothedValue()
        self._tick = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        now = time.perf_counter()
        self.iter_time.update(now - self._tick)
        self._tick = now
        self.loss.update(loss.detach())
        # not on the progress bar: showing it would read the value back every step (a host sync)
        pl_module.log("train_loss", loss.detach(), on_step=True, on_epoch=True, batch_size=1)
        total = trainer.num_training_batches
        last = batch_idx + 1 == total
        if batch_idx % self.log_freq and not last:
            return
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        eta = datetime.timedelta(seconds=int(self.iter_time.global_avg * (total - batch_idx - 1)))
        width = len(str(total))
        line = (f"Epoch: [{trainer.current_epoch}]  [{batch_idx:>{width}}/{total}]  eta: {eta}  lr: {lr:.6f}  "
                f"loss: {self.loss.median:.4f} ({self.loss.global_avg:.4f})  time: {self.iter_time.global_avg:.4f}")
        self.lines.append(line)
        rank_zero_info(line)
