"""``train``: the Lightning counterpart of the original ``main_jit.py``, with its flags."""

from __future__ import annotations

import os
from typing import Any, Optional, cast

import typer

from ..layouts.arch import VARIANTS
from ..layouts.args import ORIGINAL_DEFAULTS
from ..model.protocol import METHODS, SETTINGS
from ..training import LOGGERS, check_resume_flags
from ..model.protocol import RANGES as PROTOCOL_RANGES
from . import checks
from ..storage import sources
from .console import errors, warn


# The range of each numeric flag, checked as the command line is read (before anything loads or is created).
_AT_LEAST_ONE = ("img_size", "epochs", "batch_size", "class_num", "save_last_freq", "log_freq", "eval_freq",
                 "num_images", "gen_bsz")
_FRACTIONS = ("attn_dropout", "proj_dropout", "ema_decay1", "ema_decay2", "t_eps", "label_drop_prob")
_NOT_NEGATIVE = ("warmup_epochs", "lr", "blr", "min_lr", "weight_decay", "P_std", "seed", "num_workers")
RANGES: dict[str, dict[str, float]] = {
    **{name: {"min": 1} for name in _AT_LEAST_ONE}, **{name: {"min": 0.0, "max": 1.0} for name in _FRACTIONS},
    **{name: {"min": 0} for name in _NOT_NEGATIVE},
    **{arg: {"min": PROTOCOL_RANGES[setting][0], "max": PROTOCOL_RANGES[setting][1]}
       for setting, arg in SETTINGS.items() if setting in PROTOCOL_RANGES},
}
RANGES["num_images"]["max"] = 10_000_000  # 200x the protocol's 50,000: a larger count is a typo
CHOICES = {"sampling_method": METHODS, "lr_schedule": ("constant", "cosine"), "model": VARIANTS}




def _opt(name: str, help: str, *extra: str) -> Any:
    """An option spelled with dashes that also accepts the original underscore spelling; its help ends with the
    original's default, taken from :data:`jitckpt.layouts.args.ORIGINAL_DEFAULTS` (the one copy)."""
    dashed = "--" + name.replace("_", "-")
    spellings = [dashed] + ([f"--{name}"] if f"--{name}" != dashed else []) + list(extra)
    default = ORIGINAL_DEFAULTS.get(name)
    if default not in (None, "") and "(default" not in help:
        help = f"{help.rstrip('.')} (default {default})."
    bounds = RANGES.get(name, {})
    return typer.Option(None, *spellings, help=help, show_default=False, min=bounds.get("min"), max=bounds.get("max"),
                        callback=checks.choice(CHOICES[name]) if name in CHOICES else checks.finite)


def train(
    model: Optional[str] = _opt("model", "Official variant, e.g. JiT-B/16."),
    img_size: Optional[int] = _opt("img_size", "Image size."),
    attn_dropout: Optional[float] = _opt("attn_dropout", "Attention dropout."),
    proj_dropout: Optional[float] = _opt("proj_dropout", "Projection dropout."),
    epochs: Optional[int] = _opt("epochs", "Epochs."),
    warmup_epochs: Optional[int] = _opt("warmup_epochs", "Warmup epochs."),
    batch_size: Optional[int] = _opt("batch_size", "Batch size per device."),
    lr: Optional[float] = _opt("lr", "Absolute LR (default blr x effective batch / 256)."),
    blr: Optional[float] = _opt("blr", "Base LR."),
    min_lr: Optional[float] = _opt("min_lr", "Minimum LR of the cosine schedule."),
    lr_schedule: Optional[str] = _opt("lr_schedule", "constant or cosine."),
    weight_decay: Optional[float] = _opt("weight_decay", "Weight decay."),
    ema_decay1: Optional[float] = _opt("ema_decay1", "EMA 1 decay."),
    ema_decay2: Optional[float] = _opt("ema_decay2", "EMA 2 decay."),
    P_mean: Optional[float] = _opt("P_mean", "Logit-normal mean of t."),
    P_std: Optional[float] = _opt("P_std", "Logit-normal std of t."),
    noise_scale: Optional[float] = _opt("noise_scale", "Noise scale."),
    t_eps: Optional[float] = _opt("t_eps", "Clamp of 1 - t."),
    label_drop_prob: Optional[float] = _opt("label_drop_prob", "Label dropout for CFG."),
    seed: Optional[int] = _opt("seed", "Random seed."),
    num_workers: Optional[int] = _opt("num_workers", "Data loader workers."),
    sampling_method: Optional[str] = _opt("sampling_method", "heun or euler."),
    num_sampling_steps: Optional[int] = _opt("num_sampling_steps", "Sampling steps."),
    cfg: Optional[float] = _opt("cfg", "Classifier-free guidance scale."),
    interval_min: Optional[float] = _opt("interval_min", "CFG interval min."),
    interval_max: Optional[float] = _opt("interval_max", "CFG interval max."),
    data_path: Optional[str] = _opt("data_path", "Dataset root holding train/."),
    class_num: Optional[int] = _opt("class_num", "Number of classes."),
    output_dir: Optional[str] = _opt("output_dir", "Where checkpoints and logs go."),
    resume: Optional[str] = _opt("resume", "Checkpoint (any format) or folder holding checkpoint-last.pth."),
    save_last_freq: Optional[int] = _opt("save_last_freq", "Save checkpoint-last every N epochs."),
    log_freq: Optional[int] = _opt("log_freq", "Console line every N batches."),
    online_eval: Optional[bool] = typer.Option(None, "--online-eval", "--online_eval", show_default=False,
                                               help="FID / IS of EMA 1 during training (needs --fid-stats)."),
    eval_freq: Optional[int] = _opt("eval_freq", "With --online-eval: every N epochs, and at the last."),
    num_images: Optional[int] = _opt("num_images", "Images generated per evaluation."),
    gen_bsz: Optional[int] = _opt("gen_bsz", "Generation batch size per device."),
    evaluate_gen: bool = typer.Option(False, "--evaluate-gen", "--evaluate_gen",
                                      help="Only score EMA 1 of the --resume checkpoint, print the scores, exit."),
    fid_stats: Optional[str] = _opt("fid_stats", "Reference statistics (npz with mu, sigma) for FID."),
    inception_weights: Optional[str] = _opt("inception_weights", "Inception weights file (default: "
                                            "$JITCKPT_INCEPTION_WEIGHTS, else torch-fidelity's in torch's hub cache)."),
    devices: str = typer.Option("auto", "--devices", callback=checks.devices,
                                help="Lightning devices (a count, a list, or auto)."),
    num_nodes: int = typer.Option(1, "--num-nodes", "--num_nodes", min=1, help="Number of nodes."),
    strategy: str = typer.Option("auto", "--strategy", help="Lightning strategy: auto, ddp, fsdp2 (ModelParallelStrategy: sharded checkpoints), ..."),
    precision: str = typer.Option("32-true", "--precision", callback=checks.choice(checks.PRECISIONS),
                                  help="Lightning precision, e.g. bf16-mixed."),
    accumulate_grad_batches: int = typer.Option(1, "--accumulate-grad-batches", "--accumulate_grad_batches", min=1,
                                                help="Micro-batches per optimizer step."),
    accelerator: str = typer.Option("auto", "--accelerator", callback=checks.choice(checks.ACCELERATORS),
                                    help="cpu, gpu or auto."),
    logger: str = typer.Option("csv", "--logger", callback=checks.choice(LOGGERS), help="csv, tensorboard or none."),
    drop_optimizer: bool = typer.Option(False, "--drop-optimizer", "--drop_optimizer",
                                        help="Resume with a fresh AdamW when the checkpoint's optimizer state "
                                             "cannot be mapped onto the parameters."),
    async_save: bool = typer.Option(False, "--async-save", "--async_save",
                                    help="Write checkpoints in a background thread while training goes on."),
) -> None:
    """Train JiT with Lightning, or resume a run from any checkpoint (the original main_jit.py flags work)."""
    given = dict(locals())  # the flags, taken before any other local exists
    with errors():
        overrides = {k: v for k, v in given.items() if k in ORIGINAL_DEFAULTS and k != "resume"}
        check_resume_flags(resume, overrides, evaluate_gen)
        if resume is not None and not sources.is_url(resume) and not os.path.exists(resume):  # before Lightning
            from ..errors import JiTCheckpointError

            raise JiTCheckpointError(f"--resume {resume!r}: no such file or folder")
        if resume is None:  # the network must be buildable: the image size a multiple of the patch size
            from ..layouts.arch import official

            official(model or ORIGINAL_DEFAULTS["model"], img_size or ORIGINAL_DEFAULTS["img_size"])
        if data_path is not None or (resume is None and not evaluate_gen):
            from ..evaluation.images import training_folder

            training_folder(data_path if data_path is not None else ORIGINAL_DEFAULTS["data_path"])
        if output_dir is not None:
            checks.not_under_a_file(output_dir, "--output-dir")
        from ..training.run import train as run_training

        if evaluate_gen:  # the original's evaluation-only run
            from pathlib import Path

            from ..training.run import evaluate_gen as run_evaluation
            from .evaluation import _result_table

            result = run_evaluation(resume, overrides, fid_stats, inception_weights, accelerator, warn=warn,
                                    devices=int(devices) if devices.isdigit() else 1, num_nodes=num_nodes)
            _result_table(Path(cast(str, resume)), result)  # run_evaluation refused a missing --resume
            return
        run_training(overrides, resume=resume, logger=logger, drop_optimizer=drop_optimizer, warn=warn,
                     fid_stats=fid_stats, inception_weights=inception_weights, async_save=async_save,
                     trainer_options={
            "devices": int(devices) if devices.isdigit() else devices, "num_nodes": num_nodes, "strategy": strategy,
            "precision": precision, "accumulate_grad_batches": accumulate_grad_batches, "accelerator": accelerator})
