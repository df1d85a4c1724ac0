"""The original ``main_jit.py`` arguments: their defaults, and args recovered from a Lightning run."""

from __future__ import annotations

from typing import Any, Mapping

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


def args_from_module(pl_module: Any, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Original-style args for a :class:`JiTLightningModule`: defaults, then its hyper-parameters, then ``extra``."""
    from .formats.lightning import args_from_hparams

    hparams = {k: v for k, v in dict(pl_module.hparams).items() if k not in ("arch", "compile")}
    args = {**ORIGINAL_DEFAULTS, **args_from_hparams(hparams)}
    args["model"] = pl_module.arch.variant or hparams.get("model_name") or args["model"]
    args["img_size"], args["class_num"] = pl_module.arch.img_size, pl_module.arch.num_classes
    if getattr(pl_module, "absolute_lr", None) is not None:
        args["lr"] = pl_module.absolute_lr
    args.update(extra or {})
    return args
