"""``jitckpt train``: the Lightning counterpart of the original ``main_jit.py``.

Arguments use the original names and defaults. Resuming takes the
architecture and training args from the checkpoint (any format; converted to
a temporary Lightning checkpoint, the source untouched) unless overridden.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

from ..formats import read as read_checkpoint
from ..errors import JiTCheckpointError
from . import LOGGERS, check_resume_flags
from ..layouts.arch import official
from .resume import load_weights, plan_resume
from ..layouts.args import ORIGINAL_DEFAULTS


def resolve_resume(path: str | os.PathLike) -> Path | str:
    """A checkpoint file or folder (or its URL, returned as it is), or the original's ``--resume`` folder holding ``checkpoint-last`` with any
    suffix a format claims (``.pth`` first, then ``.ckpt``, ``.safetensors``, a ``.dcp`` directory)."""
    from ..formats import folder_format, named_in_folder
    from ..storage import sources

    if sources.is_url(path):  # a remote file or folder: read where it is, as it is
        return str(path)
    path = Path(path)
    if folder_format(path) is not None:
        return path
    if path.is_dir():
        candidates = named_in_folder(path)
        for candidate in candidates:
            if candidate.is_file() or folder_format(candidate) is not None:
                return candidate
        raise JiTCheckpointError(f"{str(path)!r} holds no checkpoint to resume from (looked for "
                                 f"{', '.join(c.name for c in candidates)})")
    if not path.exists():
        raise JiTCheckpointError(f"{str(path)!r}: no such checkpoint to resume from")
    return path


def evaluate_gen(resume: str | os.PathLike | None, overrides: Mapping[str, Any],
                 fid_stats: str | os.PathLike | None = None, inception_weights: str | os.PathLike | None = None,
                 accelerator: str = "auto", devices: int = 1, num_nodes: int = 1,
                 warn: Callable[[str], None] = print) -> dict[str, Any]:
    """The original's ``--evaluate_gen``: score EMA 1 of the checkpoint ``resume`` (file or folder); nothing is trained.

    ``num_images`` and ``gen_bsz`` (original defaults 50000 and 256) set the
    sample; ``sampling_method``, ``num_sampling_steps``, ``cfg``,
    ``interval_min`` / ``interval_max`` and ``seed`` override the checkpoint's
    sampler settings when given. Returns :func:`jitckpt.evaluation.evaluate`'s result.
    """
    from ..evaluation.evaluate import evaluate
    from ..evaluation.sampling import SamplingSettings

    check_resume_flags(resume, {}, evaluate_gen=True)
    assert resume is not None  # refused just above
    get = {k: v for k, v in overrides.items() if v is not None}.get
    settings = SamplingSettings("ema1", get("num_images", ORIGINAL_DEFAULTS["num_images"]),
                                get("gen_bsz", ORIGINAL_DEFAULTS["gen_bsz"]), get("sampling_method"),
                                get("num_sampling_steps"), get("cfg"), get("interval_min"), get("interval_max"),
                                get("seed", 0))
    return evaluate(resolve_resume(resume), settings, inception_weights, fid_stats, devices=devices,
                    num_nodes=num_nodes, accelerator=accelerator, on_warning=warn)


def train(overrides: Mapping[str, Any], resume: str | os.PathLike | None = None,
          trainer_options: Mapping[str, Any] | None = None, logger: str = "csv", drop_optimizer: bool = False,
          warn: Callable[[str], None] = print, fid_stats: str | os.PathLike | None = None,
          inception_weights: str | os.PathLike | None = None, async_save: bool = False) -> Any:
    """Train (or resume) a JiT with Lightning; returns the finished ``Trainer``.

    ``overrides`` are original-style args (``model``, ``img_size``, ``epochs``,
    ``data_path``, ...); unset ones come from the checkpoint when resuming,
    then from the original defaults. ``trainer_options`` go to ``L.Trainer``.
    What a resume from another tool's file cannot keep (EMAs, an unidentifiable
    optimizer with ``drop_optimizer``) is said through ``warn`` (see :mod:`jitckpt.training.resume`).
    With ``online_eval``, FID / IS of EMA 1 every ``eval_freq`` epochs (and at
    the last), ``num_images`` images in batches of ``gen_bsz``, sampled with the
    run's ``cfg``, interval and steps, against ``fid_stats`` with the Inception
    weights at ``inception_weights``; scores go to the logger as ``fid`` and
    ``inception_score``. (``evaluate_gen`` is :func:`evaluate_gen`.)
    Checkpoints are read and written through :class:`~jitckpt.lightning.JiTCheckpointIO`
    (the resume source in place, no copy); ``async_save`` writes them in the
    background (:class:`~jitckpt.lightning.JiTAsyncCheckpointIO`). Under FSDP2 Lightning's DCP path applies.
    """
    from ..lightning import JiTDataModule

    check_logger(logger)
    check_strategy((trainer_options or {}).get("strategy", "auto"))
    source, arch, args, source_format, saved = None, None, dict(ORIGINAL_DEFAULTS), None, None
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if resume:
        source = resolve_resume(resume)
        source_format, saved = read_checkpoint(source)  # lazy: nothing but the header is read
        arch, args = saved.arch, {**args, **saved.args}
    check_resume_flags(resume, overrides)
    args.update(overrides)
    if saved is not None and saved.epoch is not None and saved.epoch + 1 >= args["epochs"]:
        raise JiTCheckpointError(f"nothing to train: {source} finished epoch {saved.epoch} (epochs count from 0) "
                                 f"and --epochs is {args['epochs']}; give --epochs {saved.epoch + 2} or more to "
                                 "train on")
    # evaluation during training is this command's choice, not inherited from the checkpoint's run
    args["online_eval"], args["evaluate_gen"] = bool(overrides.get("online_eval")), False
    arch = arch or official(args["model"], args["img_size"], args["class_num"])
    data = JiTDataModule(args["data_path"], arch.img_size, args["batch_size"], args["num_workers"], args["pin_mem"],
                         random_stream="original")
    data.check()  # inputs first: a failed start leaves no output folder behind
    output_dir = Path(args["output_dir"])
    created = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _train(args, arch, source, source_format, saved, output_dir, trainer_options, logger, drop_optimizer,
                      warn, fid_stats, inception_weights, async_save, data)
    except BaseException:
        if created:  # a run that failed before writing anything leaves no folder behind
            _remove_empty_folders(output_dir)
        raise


def _remove_empty_folders(folder: Path) -> None:
    """Remove ``folder`` and the folders in it, bottom up, as long as no file is anywhere in them."""
    if any(files for _, _, files in os.walk(folder)):
        return
    for root, _, _ in sorted(os.walk(folder), key=lambda entry: -len(entry[0])):
        with contextlib.suppress(OSError):
            os.rmdir(root)


def _train(args: dict, arch: Any, source: Path | str | None, source_format: str | None, saved: Any, output_dir: Path,
           trainer_options: Mapping[str, Any] | None, logger: str, drop_optimizer: bool, warn: Callable[[str], None],
           fid_stats: Any, inception_weights: Any, async_save: bool, data: Any) -> Any:
    """The body of :func:`train` once its inputs are checked and ``output_dir`` exists."""
    import lightning as L
    from ..callbacks import create_default_callbacks
    from ..lightning import JiTAsyncCheckpointIO, JiTCheckpointIO, JiTLightningModule

    L.seed_everything(args["seed"], workers=True, verbose=False)

    options = dict(trainer_options or {})
    if options.get("strategy") in STRATEGY_ALIASES:
        options["strategy"] = STRATEGY_ALIASES[options["strategy"]](options)
    on_terminal = sys.stdout.isatty()  # elsewhere (a log, a pipe) the per-step lines say it all
    module = JiTLightningModule.from_args(args, arch=arch, learning_rate=args.get("lr"), seed=args["seed"],
                                          random_stream="original")
    callbacks = create_default_callbacks(
        args["ema_decay1"], args["ema_decay2"], output_dir, args["eval_freq"], arch.img_size, args["epochs"],
        lr_schedule=args["lr_schedule"], warmup_epochs=args["warmup_epochs"], min_lr=args["min_lr"],
        save_last_freq=args["save_last_freq"], log_freq=args["log_freq"], save_lightning=True, args=args,
        enable_fid_eval=args["online_eval"], num_images=args["num_images"], eval_batch_size=args["gen_bsz"],
        num_classes=arch.num_classes, fid_stats=fid_stats, inception_weights=inception_weights,
    )
    from lightning.pytorch.strategies import ModelParallelStrategy

    sharded = isinstance(options.get("strategy"), ModelParallelStrategy)
    scratch = tempfile.TemporaryDirectory(dir=output_dir, prefix=".resume-") if source is not None and sharded \
        else contextlib.nullcontext()
    with scratch as scratch_dir:
        plan = None
        if source is not None:  # without sharding read in place by JiTCheckpointIO: no copy
            assert source_format is not None  # read with the source
            plan = plan_resume(saved, source, source_format, Path(scratch_dir) if scratch_dir else None, args,
                               drop_optimizer, sharded)
            for line in plan.warnings:
                warn(line)
            if plan.weights is not None:
                load_weights(module, callbacks, plan.weights)
        if not sharded:  # ModelParallelStrategy reads and writes DCP itself
            checkpoint_io = JiTCheckpointIO({str(source): plan.checkpoint} if plan and plan.checkpoint else None)
            options["plugins"] = [JiTAsyncCheckpointIO(checkpoint_io) if async_save else checkpoint_io]
        trainer = _fit(args, output_dir, callbacks, logger, options, on_terminal, module, data,
                       plan.ckpt_path if plan else None)
    return trainer


def _fit(args: Mapping[str, Any], output_dir: Path, callbacks: list, logger: str, options: dict, on_terminal: bool,
         module: Any, data: Any, ckpt_path: Path | str | None) -> Any:
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import RichProgressBar

    from lightning.pytorch.utilities import rank_zero_info

    quiet_lightning_noise()
    # Lightning gives each CPU process cores / processes threads; the original keeps torch's default, and the
    # thread count decides how a gradient's sums are split, so its last bits: keep the original's
    os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    # One line instead of Lightning's model summary (whose FLOPs column reads 0 for a model without an example input)
    counts = [(p.numel(), p.requires_grad) for p in module.parameters()]
    rank_zero_info(f"model: {module.arch.describe()}; {sum(n for n, _ in counts):,} parameters, "
                   f"{sum(n for n, grad in counts if grad):,} trainable")
    rank_zero_info(fidelity_line(options, args))
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        trainer = L.Trainer(
            max_epochs=args["epochs"], default_root_dir=output_dir, enable_checkpointing=False,
            enable_model_summary=False,
            # the original's --log_freq (its TensorBoard scalars), or every batch of a smaller set
            log_every_n_steps=max(1, min(args["log_freq"], data.batches_per_epoch())),
            callbacks=callbacks + ([_progress_bar(RichProgressBar)()] if on_terminal else []),
            enable_progress_bar=on_terminal, logger=_logger(logger, output_dir), use_distributed_sampler=False,
            **options,
        )
    except (MisconfigurationException, TypeError, ValueError) as exc:  # devices, strategy, precision it refuses
        raise JiTCheckpointError(f"Lightning refused these settings: {str(exc).splitlines()[0]}") from None
    trainer.fit(module, datamodule=data, ckpt_path=str(ckpt_path) if ckpt_path else None)
    return trainer


def fidelity_line(options: Mapping[str, Any], args: Mapping[str, Any]) -> str:
    """Whether this run follows the original's random stream bit for bit, and if not, why (one line)."""
    import torch

    reasons = []
    accelerator = options.get("accelerator", "auto")
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        reasons.append("it runs on a GPU, whose kernels are not deterministic (and where the original autocasts "
                       "to bf16)")
    if options.get("precision", "32-true") not in ("32-true", "32", 32):
        reasons.append(f"--precision {options['precision']} (the original computes in float32 on a CPU)")
    if options.get("accumulate_grad_batches", 1) != 1:
        reasons.append("--accumulate-grad-batches (the original steps after every batch)")
    if not isinstance(options.get("strategy", "auto"), str) or "fsdp" in str(options.get("strategy")):
        reasons.append("FSDP reduces gradients in another order than the original's DDP")
    stream = (f"the original's random stream (seed {args['seed']} + rank, its sampler's order, its flips and "
              f"noise in its order; {args['batch_size']} images per process, {args['num_workers']} workers)")
    if reasons:
        return f"fidelity: {stream}, but not bit for bit: " + "; ".join(reasons)
    return f"fidelity: {stream}: the tensors match a run of the original's main_jit.py bit for bit"


def _progress_bar(base: Any) -> Any:
    """Lightning's rich bar without its ``v_num``, and the LR in a form that shows small values (``5.00e-05``,
    where the bar's three decimals read ``0.000``)."""

    class ProgressBar(base):  # type: ignore[misc, valid-type]
        def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
            items = dict(super().get_metrics(trainer, pl_module))
            items.pop("v_num", None)
            if isinstance(items.get("lr"), float):
                items["lr"] = f"{items['lr']:.2e}"
            return items

    return ProgressBar


def _fsdp2(options: Mapping[str, Any]) -> Any:
    """Lightning's ModelParallelStrategy as pure FSDP2: every process a data-parallel rank (its own default
    makes the processes of a node tensor-parallel, which JiT does not use)."""
    from lightning.pytorch.strategies import ModelParallelStrategy

    devices = options.get("devices", 1)
    if not isinstance(devices, int):
        raise JiTCheckpointError("--strategy fsdp2 needs --devices N (how many processes per node)")
    return ModelParallelStrategy(data_parallel_size=devices * int(options.get("num_nodes", 1)), tensor_parallel_size=1)


# Strategy names jitckpt accepts besides Lightning's own: FSDP2 is Lightning's ModelParallelStrategy.
STRATEGY_ALIASES: dict[str, Callable[[Mapping[str, Any]], Any]] = {"fsdp2": _fsdp2, "model_parallel": _fsdp2}


def check_strategy(strategy: Any) -> None:
    """Refuse a strategy name neither Lightning's registry nor :data:`STRATEGY_ALIASES` knows, in one line
    listing them (Lightning's own refusal is a traceback after the output folder exists)."""
    from lightning.pytorch.strategies import StrategyRegistry

    if not isinstance(strategy, str):
        return  # a Strategy object: Lightning judges it
    names = ["auto", *STRATEGY_ALIASES, *StrategyRegistry.available_strategies()]
    if strategy.lower() not in names:
        raise JiTCheckpointError(f"--strategy {strategy!r} is not a strategy; choose one of {', '.join(names)}")


# Lightning's lines that say nothing about this run: an advertisement, and a deprecation inside Lightning itself.
NOISE_LOG_LINES = ("litlogger",)
NOISE_WARNINGS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(word in record.getMessage() for word in NOISE_LOG_LINES)


def quiet_lightning_noise() -> None:
    """Hide Lightning's advertisement and its own internal deprecation warning; every other warning stays."""
    for pattern in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in log.filters):
            log.addFilter(_DropNoise())


def check_logger(kind: str) -> None:
    """A one-line error for an unknown logger, or for TensorBoard without its package (before any work starts)."""
    import importlib.util

    if kind not in LOGGERS:
        raise JiTCheckpointError(f"unknown logger {kind!r}; choose {', '.join(LOGGERS)}")
    if kind == "tensorboard" and not any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")):
        raise JiTCheckpointError("--logger tensorboard needs the tensorboard package: pip install "
                                 "'jitckpt[tensorboard]' (from a checkout: pip install -e \".[tensorboard]\")")


def _logger(kind: str, output_dir: Path) -> Any:
    """The Lightning logger ``kind`` names (already checked by :func:`check_logger`)."""
    from lightning.pytorch import loggers

    if kind == "none":
        return False
    make = loggers.TensorBoardLogger if kind == "tensorboard" else loggers.CSVLogger
    return make(output_dir, name="logs")

