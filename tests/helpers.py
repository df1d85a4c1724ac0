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


def sparse_jit_b16_checkpoint(path: Path) -> int:
    """An original-format JiT-B/16 training checkpoint (model, two EMAs, AdamW moments: 2.63 GB) whose tensor
    bytes are holes: ``torch.save`` under ``skip_data`` writes the structure and skips the data, so it costs
    milliseconds and a few MB of disk, and untouched ``torch.empty`` pages no memory. Its size in bytes."""
    from jitckpt.layouts.groupings import ORIGINAL

    arch = Arch(12, 768, 12, 16, 128, 32, 4, 1000, 256)
    shapes = expected_shapes(arch)
    no_decay, decay = ORIGINAL.names(arch)
    names = no_decay + decay
    ema = lambda: {k: nn.Parameter(torch.empty(s), requires_grad=False) for k, s in shapes.items()}  # noqa: E731
    state = {i: {"step": torch.tensor(1000.0), "exp_avg": torch.empty(shapes[n]),
                 "exp_avg_sq": torch.empty(shapes[n])} for i, n in enumerate(names)}
    groups = [{"weight_decay": 0.0, "lr": 1e-4, "betas": (0.9, 0.95), "params": list(range(len(no_decay)))},
              {"weight_decay": 0.05, "lr": 1e-4, "betas": (0.9, 0.95), "params": list(range(len(no_decay), len(names)))}]
    args = argparse.Namespace(model="JiT-B/16", img_size=256, class_num=1000, epochs=600, batch_size=128, blr=5e-5)
    with torch.serialization.skip_data():
        torch.save({"model": {k: torch.empty(s) for k, s in shapes.items()}, "epoch": 99, "args": args,
                    "optimizer": {"state": state, "param_groups": groups}, "model_ema1": ema(), "model_ema2": ema()},
                   path)
    return path.stat().st_size
