"""The original ``main_jit.py`` arguments: their defaults, and args recovered from Lightning hyper-parameters.

Lightning modules (jitckpt's ``JiTLightningModule``, the seed port's) name some
training settings differently from the original's argparse flags.
:data:`HPARAM_TO_ARG` is the one table between the two; every other
hyper-parameter keeps its own name.
"""

from __future__ import annotations

from typing import Any, Mapping

from .arch import _OFFICIAL as OFFICIAL_NAMES

# main_jit.get_args_parser() defaults (the original launch scripts rely on them)
ORIGINAL_DEFAULTS: dict[str, Any] = {
    "model": "JiT-B/16", "img_size": 256, "attn_dropout": 0.0, "proj_dropout": 0.0,
    "epochs": 200, "warmup_epochs": 5, "batch_size": 128, "lr": None, "blr": 5e-5, "min_lr": 0.0,
    "lr_schedule": "constant", "weight_decay": 0.0, "ema_decay1": 0.9999, "ema_decay2": 0.9996,
    "P_mean": -0.8, "P_std": 0.8, "noise_scale": 1.0, "t_eps": 5e-2, "label_drop_prob": 0.1,
    "seed": 0, "start_epoch": 0, "num_workers": 12, "pin_mem": True,
    "sampling_method": "heun", "num_sampling_steps": 50, "cfg": 1.0, "interval_min": 0.0, "interval_max": 1.0,
    "num_images": 50000, "eval_freq": 40, "online_eval": False, "evaluate_gen": False, "gen_bsz": 256,
    "data_path": "./data/imagenet", "class_num": 1000, "output_dir": "./output_dir", "resume": "",
    "save_last_freq": 5, "log_freq": 100, "device": "cuda",
}

# hyper-parameter name (JiTLightningModule's or another tool's) -> original arg; the rest keep their names
HPARAM_TO_ARG: dict[str, str] = {
    "model_name": "model",  # JiTLightningModule, seed port
    "num_classes": "class_num",  # JiTLightningModule, seed port
    "learning_rate": "lr",  # JiTLightningModule, seed port
    "base_lr": "blr",  # seed port
    "cfg_scale": "cfg",  # JiTLightningModule, seed port
}
CFG_INTERVAL = "cfg_interval"  # a (min, max) pair -> interval_min, interval_max
# JiTLightningModule's arguments that carry an original arg, under the module's own names
MODULE_HPARAMS = (
    "model_name", "img_size", "num_classes", "attn_dropout", "proj_dropout", "learning_rate", "blr",
    "weight_decay", "ema_decay1", "ema_decay2", "P_mean", "P_std", "noise_scale", "t_eps", "label_drop_prob",
    "sampling_method", "num_sampling_steps", "cfg_scale",
)


def args_from_hparams(hparams: Any) -> dict[str, Any]:
    """Original-style args from Lightning hyper-parameters (jitckpt's module or another tool's).

    Names go through :data:`HPARAM_TO_ARG`; ``cfg_interval`` becomes
    ``interval_min`` / ``interval_max``. A hyper-parameter with no counterpart
    among the original args is left out (the file's hyper-parameters are kept
    whole in the checkpoint's ``extra``).

    Example:
        >>> args_from_hparams({"model_name": "JiT-B/16", "base_lr": 5e-5, "cfg_interval": (0.1, 1.0)})
        {'model': 'JiT-B/16', 'blr': 5e-05, 'interval_min': 0.1, 'interval_max': 1.0}
    """
    if not isinstance(hparams, Mapping):
        return {}
    args = {}
    for name, value in hparams.items():
        arg = HPARAM_TO_ARG.get(name, name)
        if arg in ORIGINAL_DEFAULTS:
            args[arg] = value
    interval = hparams.get(CFG_INTERVAL)
    if isinstance(interval, (tuple, list)) and len(interval) == 2:
        args["interval_min"], args["interval_max"] = interval
    return args


def hparams_from_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """``JiTLightningModule`` constructor arguments for original-style training args."""
    hparams = {name: args[HPARAM_TO_ARG.get(name, name)] for name in MODULE_HPARAMS
               if HPARAM_TO_ARG.get(name, name) in args}
    if "interval_min" in args and "interval_max" in args:
        hparams[CFG_INTERVAL] = (args["interval_min"], args["interval_max"])
    return hparams


def args_from_module(pl_module: Any, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Original-style args for a :class:`JiTLightningModule`: defaults, then its hyper-parameters, then ``extra``."""
    hparams = {k: v for k, v in dict(pl_module.hparams).items() if k not in ("arch", "compile")}
    args = {**ORIGINAL_DEFAULTS, **args_from_hparams(hparams)}
    # a custom architecture claims no official variant's name (its dimensions are in the checkpoint's arch)
    name = hparams.get("model_name")
    args["model"] = pl_module.arch.variant or (name if name and name not in OFFICIAL_NAMES else None)
    args["img_size"], args["class_num"] = pl_module.arch.img_size, pl_module.arch.num_classes
    if getattr(pl_module, "absolute_lr", None) is not None:
        args["lr"] = pl_module.absolute_lr
    if args.get("batch_size") is None:  # the module was given none: the data module's or the loader's (per device)
        try:
            trainer = getattr(pl_module, "trainer", None)
        except RuntimeError:  # Lightning's module not attached to a trainer
            trainer = None
        batch = getattr(getattr(trainer, "datamodule", None), "batch_size", None)
        if batch is None:
            batch = getattr(getattr(trainer, "train_dataloader", None), "batch_size", None)
        args["batch_size"] = batch
    for name, value in (extra or {}).items():  # an unset (None) extra arg does not hide a known value
        if value is not None or args.get(name) is None:
            args[name] = value
    return args
