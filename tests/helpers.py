"""Test helpers: modules with JiT's exact parameter names and the original resume code."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch
from torch import nn

from jitckpt.layouts.arch import FROZEN_KEYS, Arch, expected_shapes

FIXTURES = Path(__file__).parent / "fixtures" / "original"
GOLDEN = FIXTURES / "checkpoint-last.pth"


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def jit_shaped_module(arch: Arch) -> nn.Module:
    """A module whose ``state_dict()`` has exactly the Denoiser's keys and shapes (random values).

    Parameters are registered in the original order, so ``named_parameters()``
    yields them as the original ``Denoiser`` does.
    """
    root = nn.Module()
    for key, shape in expected_shapes(arch).items():
        *path, leaf = key.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        module.register_parameter(leaf, nn.Parameter(torch.randn(shape) * 0.02, requires_grad=key not in FROZEN_KEYS))
    return root


def add_weight_decay(model: nn.Module, weight_decay: float) -> list[dict]:
    """The original ``util/misc.add_weight_decay``: no-decay group first, then decay."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if len(param.shape) == 1 or name.endswith(".bias"):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def original_resume(path: Path, arch: Arch, weight_decay: float = 0.05, lr: float = 1.5625e-05) -> dict:
    """The resume path of the original ``main_jit.py``, unchanged but for ``.cuda()``.

    Returns what it built: model, EMA lists, optimizer and ``start_epoch``.
    """
    model = jit_shaped_module(arch)
    optimizer = torch.optim.AdamW(add_weight_decay(model, weight_decay), lr=lr, betas=(0.9, 0.95))
    with torch.serialization.safe_globals([argparse.Namespace]):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(checkpoint["model"])
    ema_params1 = [checkpoint["model_ema1"][name] for name, _ in model.named_parameters()]
    ema_params2 = [checkpoint["model_ema2"][name] for name, _ in model.named_parameters()]
    optimizer.load_state_dict(checkpoint["optimizer"])
    start_epoch = checkpoint["epoch"] + 1
    assert isinstance(checkpoint["args"], argparse.Namespace)
    return {"model": model, "ema1": ema_params1, "ema2": ema_params2, "optimizer": optimizer,
            "start_epoch": start_epoch, "args": checkpoint["args"]}


def load_golden_torch() -> dict:
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(GOLDEN, map_location="cpu", weights_only=True)
