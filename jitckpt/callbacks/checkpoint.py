"""``JiTModelCheckpoint``: original-format checkpoints written during Lightning training."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Mapping, cast

import lightning as L

from ..api import save
from ..compat import dump_checkpoint, saves_distributed_checkpoint
from ..storage.atomic import atomic_output
from ..schema import META_KEY, SCHEMA_VERSION, JiTCheckpoint, optimizer_to_named
from ..torchfile.write import archive_name, write_tree
from ..layouts.args import args_from_module
from .ema import find_ema_callback


def writes_through_plugin(trainer: L.Trainer) -> bool:
    """True when the trainer's CheckpointIO is a JiTCheckpointIO (possibly inside AsyncCheckpointIO)."""
    from ..lightning.checkpoint_io import JiTCheckpointIO

    io = getattr(trainer.strategy, "checkpoint_io", None)
    return isinstance(io, JiTCheckpointIO) or isinstance(getattr(io, "checkpoint_io", None), JiTCheckpointIO)


def is_sharded(pl_module: Any) -> bool:
    """True when parameters are FSDP2 shards (DTensors)."""
    return any(hasattr(p, "device_mesh") for p in pl_module.parameters())


def run_args(trainer: L.Trainer, pl_module: Any, args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The original-style args of the run in progress.

    The module's hyper-parameters, then what the trainer's callbacks were
    configured with (epochs, warmup, LR schedule and min LR, EMA decays,
    save / log / evaluation frequencies), then ``args``.
    """
    found: dict[str, Any] = {}
    for cb in getattr(trainer, "callbacks", None) or []:
        if callable(getattr(cb, "original_args", None)):  # each of jitckpt's callbacks says what it was given
            found.update(cb.original_args())
    if "epochs" not in found and getattr(trainer, "max_epochs", None) not in (None, -1):
        found["epochs"] = trainer.max_epochs
    return args_from_module(pl_module, {**found, **(args or {})})


def checkpoint_from_run(trainer: L.Trainer, pl_module: Any, args: Mapping[str, Any] | None = None) -> JiTCheckpoint:
    """The state of a running ``JiTLightningModule`` as a :class:`JiTCheckpoint`.

    Unsharded, tensors are not copied. Under FSDP2 the full state is gathered
    to the CPU, which is a collective: every rank must call this.
    """
    ema = find_ema_callback(trainer)
    emas: dict[str, dict[str, Any]] = {}
    optimizer: dict[str, Any] | None
    if is_sharded(pl_module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model, optimizer = get_state_dict(pl_module, trainer.optimizers, options=options)
        if ema is not None:
            emas = {f"model_ema{v}": {k: t.cpu() for k, t in ema.consolidated_state_dict(pl_module, v).items()}
                    for v in (1, 2)}
    else:
        model = {k: v.detach() for k, v in pl_module.state_dict().items()}
        if ema is not None and ema.ema1:
            emas = {"model_ema1": dict(zip(ema.names, ema.ema1)), "model_ema2": dict(zip(ema.names, ema.ema2))}
        optimizer = optimizer_to_named(trainer.optimizers[0].state_dict(), pl_module.arch) if trainer.optimizers else None
    return JiTCheckpoint(model=model, optimizer=optimizer, epoch=trainer.current_epoch, global_step=trainer.global_step,
                         arch=pl_module.arch, args=run_args(trainer, pl_module, args),
                         model_ema1=emas.get("model_ema1"), model_ema2=emas.get("model_ema2"))


class JiTModelCheckpoint(L.Callback):
    """Saves ``checkpoint-last.pth`` and milestones in the original format, as ``main_jit.py`` does.

    At the end of epoch ``e`` (0-based): ``checkpoint-last.pth`` when
    ``e % save_last_freq == 0`` or ``e`` is the last epoch; ``checkpoint-{e}.pth``
    when ``e % save_milestone_freq == 0 and e > 0``. Files are written by rank
    zero, atomically, and load in the original ``main_jit.py --resume``. With
    ``save_lightning=True`` a Lightning ``checkpoint-last.ckpt`` is written beside
    the last one. ``args`` adds to the training args stored in the file.

    Under FSDP2 with Lightning's distributed checkpoints (``ModelParallelStrategy``'s
    default) nothing is gathered: every rank writes its own shards (its EMA
    shards included) into Lightning's distributed checkpoint ``{name}.dcp``, a
    folder put in place atomically once complete, which ``trainer.fit(ckpt_path=...)``
    resumes from on any number of ranks; with ``sharded_pth=True`` (the default)
    rank zero then converts it to ``{name}.pth``, streaming, so the original
    code can resume too. (With ``save_distributed_checkpoint=False`` the full
    state is gathered to rank zero, as before.)
    """

    def __init__(self, dirpath: str | os.PathLike = "./checkpoints", save_last_freq: int = 5,
                 save_milestone_freq: int = 100, save_lightning: bool = False,
                 args: Mapping[str, Any] | None = None, sharded_pth: bool = True) -> None:
        self.dirpath = Path(dirpath)
        self.save_last_freq, self.save_milestone_freq = save_last_freq, save_milestone_freq
        self.save_lightning = save_lightning
        self.sharded_pth = sharded_pth
        self.args = dict(args or {})
        self.written: list[Path] = []

    def original_args(self) -> dict[str, Any]:
        """The original's args this callback was configured with (read by ``run_args``)."""
        return {"save_last_freq": self.save_last_freq}

    def targets(self, epoch: int, max_epochs: int | None) -> list[str]:
        """File names due at the end of ``epoch``."""
        names = []
        if epoch % self.save_last_freq == 0 or (max_epochs is not None and epoch + 1 == max_epochs):
            names.append("checkpoint-last")
        if epoch % self.save_milestone_freq == 0 and epoch > 0:
            names.append(f"checkpoint-{epoch}")
        return names

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        """Lightning's own ``.ckpt`` files of the run carry the same args and architecture as its ``.pth``.

        ``pl_module`` is a ``JiTLightningModule``, or any module with its ``arch`` (as :func:`checkpoint_from_run`)."""
        checkpoint.setdefault(META_KEY, {"schema_version": SCHEMA_VERSION, "arch": pl_module.arch.to_dict(),
                                         "args": run_args(trainer, pl_module, self.args), "extra": {}})

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        names = self.targets(trainer.current_epoch, trainer.max_epochs)
        if not names:
            return
        sharded = is_sharded(pl_module)
        if sharded and saves_distributed_checkpoint(trainer.strategy):
            return self._save_sharded(trainer, names)
        if not sharded and writes_through_plugin(trainer):
            return self._save_through_plugin(trainer, names)
        lightning_state = None
        if self.save_lightning and "checkpoint-last" in names and not sharded:
            lightning_state = dump_checkpoint(trainer)  # all ranks
        ckpt = checkpoint_from_run(trainer, pl_module, self.args) if sharded else None  # a collective
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            ckpt = ckpt or checkpoint_from_run(trainer, pl_module, self.args)
            for name in names:
                self.written.append(save(ckpt, self.dirpath / f"{name}.pth", "pth", force=True))
            if lightning_state is not None:
                target = self.dirpath / "checkpoint-last.ckpt"
                with atomic_output(target, force=True) as handle:
                    write_tree(lightning_state, handle, archive=archive_name(target))
                self.written.append(target)
        trainer.strategy.barrier("JiTModelCheckpoint")

    def _save_through_plugin(self, trainer: L.Trainer, names: list[str]) -> None:
        """The trainer's JiTCheckpointIO writes every file from one dump of the state (in the background under
        an async wrapper), on rank zero."""
        targets = [self.dirpath / f"{name}.pth" for name in names]
        if self.save_lightning and "checkpoint-last" in names:
            targets.append(self.dirpath / "checkpoint-last.ckpt")
        checkpoint = dump_checkpoint(trainer)  # every rank
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            io = trainer.strategy.checkpoint_io
            if hasattr(io, "save_checkpoints"):
                io.save_checkpoints(checkpoint, targets)
            else:  # Lightning's AsyncCheckpointIO around a JiTCheckpointIO
                for target in targets:
                    io.save_checkpoint(checkpoint, target)
            self.written.extend(targets)
        trainer.strategy.barrier("JiTModelCheckpoint")

    def _save_sharded(self, trainer: L.Trainer, names: list[str]) -> None:
        """Every rank writes its shards into ``{name}.dcp``; rank zero puts it in place and converts it."""
        from ..api import convert
        from ..storage.atomic_folder import AtomicFolder

        for name in names:
            target = self.dirpath / f"{name}.dcp"
            if trainer.is_global_zero:
                self.dirpath.mkdir(parents=True, exist_ok=True)
            # rank zero holds the temporary folder; every rank writes its shards into it
            folder = AtomicFolder(target, force=True) if trainer.is_global_zero else None
            with folder if folder is not None else contextlib.nullcontext():
                # every rank gets rank zero's value, and rank zero always has a folder: a str on every rank
                temp = Path(cast(str, trainer.strategy.broadcast(str(folder.path) if folder is not None else None)))
                trainer.save_checkpoint(temp, weights_only=False)  # Lightning's distributed checkpoint, every rank
            if trainer.is_global_zero:
                self.written.append(target)
                if self.sharded_pth:
                    self.written.append(convert(target, self.dirpath / f"{name}.pth", "pth", force=True))
            trainer.strategy.barrier("JiTModelCheckpoint")
