"""Resuming and saving through JiTCheckpointIO on a model of JiT-B/16's size, on this CPU.

(a) From ``trainer.fit(ckpt_path=old.pth)`` to the first training step: with
    ``JiTCheckpointIO`` (the .pth read in place) against converting it to a
    ``.ckpt`` first (``jitckpt.convert``, a durable write) and fitting from that,
    each in a fresh process, ``sync`` before each, median of ``--repeats``.
(b) How long the training thread is blocked by a save of the full training
    state (``trainer.save_checkpoint``, original ``.pth``): ``JiTCheckpointIO``,
    Lightning's ``AsyncCheckpointIO(JiTCheckpointIO())`` (a fresh clone of the
    tensors, then a background write) and ``JiTAsyncCheckpointIO`` (a copy into
    buffers kept between saves); the first save and the median of the next
    ``--repeats``, in one process; the background write is awaited between saves
    and not counted.

Usage: python benchmarks/checkpoint_io.py [--workdir DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from convert import build_checkpoint  # noqa: E402


class FirstStep(Exception):
    """Raised at the first training batch: the time to get there is what (a) measures."""


def _trainer(plugins: list, callbacks: list, root: Path):
    import lightning as L

    return L.Trainer(max_epochs=101, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks, plugins=plugins,
                     default_root_dir=root)


def _module_and_data(src: Path):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    import jitckpt
    from jitckpt.lightning import JiTLightningModule

    saved = jitckpt.load(src, lazy=True)
    module = JiTLightningModule.from_args(saved.args, arch=saved.arch)
    images = torch.zeros(2, 3, 256, 256, dtype=torch.uint8)
    return module, DataLoader(TensorDataset(images, torch.zeros(2, dtype=torch.long)), batch_size=1)


def time_to_first_step(src: Path, mode: str, work: Path) -> float:
    """Seconds from the start of the resume (conversion included) to the first training batch."""
    import lightning as L

    import jitckpt
    from jitckpt.callbacks import EMACallback
    from jitckpt.lightning import JiTCheckpointIO

    class Stop(L.Callback):
        def on_train_batch_start(self, *args):
            raise FirstStep

    module, data = _module_and_data(src)
    start = time.perf_counter()
    if mode == "plugin":
        trainer, ckpt_path = _trainer([JiTCheckpointIO()], [EMACallback(), Stop()], work), src
    else:
        ckpt_path = jitckpt.convert(src, work / "converted.ckpt", force=True)
        trainer = _trainer([], [EMACallback(), Stop()], work)
    try:
        trainer.fit(module, data, ckpt_path=str(ckpt_path))
    except FirstStep:
        return time.perf_counter() - start
    raise SystemExit("training ended before its first step")


def blocked_by_save(src: Path, work: Path, repeats: int) -> dict[str, tuple[float, float]]:
    """Seconds the training thread spends in trainer.save_checkpoint: (first save, median of the next
    ``repeats``), synchronous, with Lightning's AsyncCheckpointIO and with JiTAsyncCheckpointIO."""
    import lightning as L
    from lightning.pytorch.plugins.io import AsyncCheckpointIO

    from jitckpt.callbacks import EMACallback
    from jitckpt.lightning import JiTAsyncCheckpointIO, JiTCheckpointIO

    results = {}
    for name, io in (("sync", JiTCheckpointIO()), ("Lightning async", AsyncCheckpointIO(JiTCheckpointIO())),
                     ("jitckpt async", JiTAsyncCheckpointIO())):
        times: list[float] = []
        stem = name.replace(" ", "-")

        class Save(L.Callback):
            def on_train_batch_start(self, trainer, *args):
                for i in range(repeats + 1):
                    os.sync()
                    start = time.perf_counter()
                    trainer.save_checkpoint(work / f"{stem}-{i}.pth")
                    times.append(time.perf_counter() - start)
                    if name != "sync":  # let the background write finish before the next measurement
                        trainer.strategy.checkpoint_io._executor.submit(lambda: None).result()
                raise FirstStep

        module, data = _module_and_data(src)
        trainer = _trainer([io], [EMACallback(), Save()], work)
        try:
            trainer.fit(module, data, ckpt_path=str(src))
        except FirstStep:
            pass
        io.teardown()
        results[name] = (times[0], statistics.median(times[1:]))
        for i in range(repeats + 1):
            (work / f"{stem}-{i}.pth").unlink(missing_ok=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=3, metavar=("SRC", "MODE", "WORK"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        print(time_to_first_step(Path(opts.child[0]), opts.child[1], Path(opts.child[2])))
        return
    work = opts.workdir or Path(tempfile.mkdtemp(prefix="jitckpt-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / "checkpoint-last.pth"
    try:
        if not src.exists():
            build_checkpoint(src, 12)
        print(f"JiT-B/16 training checkpoint {src.stat().st_size / 1e9:.2f} GB, median of {opts.repeats}, "
              f"{time.strftime('%Y-%m-%d')}")
        first = {}
        for mode in ("convert first", "plugin"):
            walls = []
            for _ in range(opts.repeats):
                os.sync()
                done = subprocess.run([sys.executable, __file__, "--child", str(src), mode.split()[0], str(work)],
                                      capture_output=True, text=True, check=True)
                walls.append(float(done.stdout.strip().splitlines()[-1]))
                (work / "converted.ckpt").unlink(missing_ok=True)
            first[mode] = statistics.median(walls)
            print(f"(a) resume to first step, {mode:14} {first[mode]:7.2f} s", flush=True)
        print(f"(a) plugin / convert first: {first['plugin'] / first['convert first']:.2f}x")
        blocked = blocked_by_save(src, work, opts.repeats)
        for name, (first_save, later) in blocked.items():
            print(f"(b) training blocked by a save, {name:16} first {first_save:6.2f} s, then {later:6.2f} s "
                  f"({later / blocked['sync'][1]:.2f}x sync)")
    finally:
        if opts.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
