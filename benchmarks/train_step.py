"""A training step of a small JiT with and without jitckpt's callbacks, in one run.

Two figures: (1) the time spent inside the callbacks' per-batch hooks, from
Lightning's SimpleProfiler, as a fraction of the training-batch time of the
same run (precise: it does not depend on two runs drifting alike); (2) the
median wall time of a step without callbacks and with EMACallback,
LearningRateSchedulerCallback, MetricLoggerCallback (log_freq 100) and
JiTModelCheckpoint, runs interleaved (noisy on a shared 2-core machine); and (3) the same with the
original's random stream (``random_stream="original"``: the flips drawn and applied in the step).

Usage: python benchmarks/train_step.py [--steps 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from jitckpt.callbacks import create_default_callbacks
from jitckpt.lightning import JiTLightningModule
from jitckpt.layouts.arch import Arch

ARCH = Arch(depth=6, hidden_size=192, num_heads=3, patch_size=4, bottleneck_dim=32, in_context_len=8,
            in_context_start=2, num_classes=10, img_size=32)


class StepTimer(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, *args) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:
        self.times.append(time.perf_counter() - self.start)


def train_one_epoch(steps: int, callbacks: list, profiler=None, random_stream: str = "per_batch") -> None:
    """One epoch of ``steps`` batches of 8 random images, from a fixed seed."""
    torch.manual_seed(0)
    module = JiTLightningModule(arch=ARCH.to_dict(), img_size=32, num_classes=10, learning_rate=1e-4,
                                random_stream=random_stream)
    images = torch.randint(0, 256, (steps * 8, 3, 32, 32), dtype=torch.uint8)
    loader = DataLoader(TensorDataset(images, torch.randint(0, 10, (steps * 8,))), batch_size=8, drop_last=True)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, profiler=profiler, callbacks=callbacks)
    trainer.fit(module, loader)


def jitckpt_callbacks(folder: str) -> list:
    return create_default_callbacks(save_dir=folder, epochs=1, warmup_epochs=1, save_last_freq=1)


def hook_fraction(steps: int, folder: str) -> tuple[float, float, dict[str, float]]:
    """(seconds in training batches, seconds in callback batch hooks, per hook) from SimpleProfiler."""
    from lightning.pytorch.profilers import SimpleProfiler

    profiler = SimpleProfiler(dirpath=folder, filename="profile")  # its report goes to a file
    train_one_epoch(steps, jitckpt_callbacks(folder), profiler)
    durations = profiler.recorded_durations
    batch = sum(durations["run_training_batch"])
    hooks = {k: sum(v) for k, v in durations.items() if k.startswith("[Callback]") and "batch" in k
             and any(name in k for name in ("EMACallback", "LearningRate", "MetricLogger", "JiTModelCheckpoint"))}
    return batch, sum(hooks.values()), hooks


def median_step(with_callbacks: bool, steps: int, folder: str, random_stream: str = "per_batch") -> float:
    timer = StepTimer()
    train_one_epoch(steps, (jitckpt_callbacks(folder) if with_callbacks else []) + [timer],
                    random_stream=random_stream)
    return statistics.median(timer.times[5:])  # skip warm-up steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    opts = parser.parse_args()
    warnings.filterwarnings("ignore")
    params = sum(p.numel() for p in JiTLightningModule(arch=ARCH.to_dict(), img_size=32, num_classes=10).parameters())
    bare, full, original = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(opts.repeats):  # interleaved, so drift hits all alike
            bare.append(median_step(False, opts.steps, folder))
            full.append(median_step(True, opts.steps, folder))
            original.append(median_step(True, opts.steps, folder, random_stream="original"))
        batch, in_hooks, hooks = hook_fraction(opts.steps, folder)
    bare_s, full_s = statistics.median(bare), statistics.median(full)
    print(f"training step, JiT depth 6 / width 192 / 32 px ({params / 1e6:.2f} M parameters), batch 8, CPU, "
          f"median step of {opts.steps} x {opts.repeats} runs, {time.strftime('%Y-%m-%d')}")
    print(f"without callbacks: {bare_s * 1e3:7.1f} ms")
    print(f"with callbacks:    {full_s * 1e3:7.1f} ms")
    original_s = statistics.median(original)
    print(f"with callbacks and the original's random stream (flips in the step): {original_s * 1e3:7.1f} ms "
          f"({original_s / full_s:.3f}x the per-batch stream's step)")
    print(f"callbacks' overhead, wall-time difference: {(full_s - bare_s) / bare_s * 100:+.1f}% of the step")
    print(f"time inside the callbacks' batch hooks (profiler): {in_hooks / opts.steps * 1e3:.2f} ms a step, "
          f"{in_hooks / batch * 100:.1f}% of the training-batch time")
    for name, seconds in sorted(hooks.items(), key=lambda kv: -kv[1]):
        print(f"  {name:60} {seconds / opts.steps * 1e3:6.2f} ms a step")


if __name__ == "__main__":
    main()
