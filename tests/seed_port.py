"""The seed Lightning port's files, built as the port writes them (issue 8), and other tools' optimizers.

The port's ``JiTModelCheckpoint`` ``.pth`` is ``{'model', 'epoch', 'global_step',
'optimizer', 'model_ema1', 'model_ema2', 'hyper_parameters'}`` (no ``args``);
its ``.ckpt`` is what ``Trainer.save_checkpoint`` writes, with no EMA at all.
Its AdamW groups: names without ``bias`` or ``norm`` (weight decay), then those
with (none), each in ``named_parameters()`` order, trainable parameters only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from lightning.fabric.utilities.data import AttributeDict
from torch import nn

from jitckpt.formats.lightning import build_loops
from jitckpt.layouts.arch import Arch
from tests.helpers import jit_shaped_module

# JiT-T/4-like: small, custom (not an official variant), in_context_start = depth // 3
ARCH = Arch(depth=3, hidden_size=48, num_heads=4, patch_size=4, bottleneck_dim=8, in_context_len=4,
            in_context_start=1, num_classes=10, img_size=16)
WEIGHT_DECAY = 0.05
LR = 2.5e-5
EPOCH, GLOBAL_STEP = 3, 40


def port_hparams(**changes: object) -> AttributeDict:
    """The port's ``JiTLightningModule`` arguments, as Lightning's ``AttributeDict``."""
    hparams = AttributeDict(
        model_name="JiT-T/4", img_size=16, num_classes=10, attn_dropout=0.0, proj_dropout=0.0, learning_rate=LR,
        base_lr=5e-5, weight_decay=WEIGHT_DECAY, ema_decay1=0.9999, ema_decay2=0.9996, P_mean=-0.8, P_std=0.8,
        noise_scale=1.0, t_eps=0.05, label_drop_prob=0.1, sampling_method="heun", num_sampling_steps=50,
        cfg_scale=2.9, cfg_interval=(0.1, 1.0),
    )
    hparams.update(changes)
    return hparams


def port_param_groups(model: nn.Module, weight_decay: float = WEIGHT_DECAY) -> list[dict]:
    """The port's grouping, by name: no 'bias' / 'norm' (decay), then 'bias' / 'norm' (no decay)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if "bias" in name or "norm" in name else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@dataclass
class Run:
    """A trained tiny model: its weights, EMAs, AdamW and the moments recorded by parameter name."""

    model: nn.Module
    optimizer: torch.optim.AdamW
    ema1: dict
    ema2: dict
    moments: dict[str, dict[str, torch.Tensor]]


def train(groups: Callable[[nn.Module], list[dict]] = port_param_groups, steps: int = 2, seed: int = 0,
          arch: Arch = ARCH) -> Run:
    """``steps`` AdamW steps (betas 0.9, 0.95) over a JiT-shaped module with random gradients."""
    torch.manual_seed(seed)
    model = jit_shaped_module(arch)
    optimizer = torch.optim.AdamW(groups(model), lr=LR, betas=(0.9, 0.95))
    for _ in range(steps):
        for param in model.parameters():
            param.grad = torch.randn_like(param) if param.requires_grad else None
        optimizer.step()
    state = model.state_dict()
    ema1 = {k: v.clone() + 0.001 for k, v in state.items()}
    ema2 = {k: v.clone() - 0.001 for k, v in state.items()}
    moments = {name: {k: v.clone() for k, v in optimizer.state[param].items()}
               for name, param in model.named_parameters() if param in optimizer.state}
    return Run(model, optimizer, ema1, ema2, moments)


def port_pth_dict(run: Run, **changes: object) -> dict:
    """What the port's ``JiTModelCheckpoint`` saves."""
    tree = {"model": run.model.state_dict(), "epoch": EPOCH, "global_step": GLOBAL_STEP,
            "optimizer": run.optimizer.state_dict(), "model_ema1": run.ema1, "model_ema2": run.ema2,
            "hyper_parameters": port_hparams()}
    tree.update(changes)
    return tree


def port_ckpt_dict(run: Run, **changes: object) -> dict:
    """What ``Trainer.save_checkpoint`` writes for the port: its EMA callback has no state, so no EMA."""
    tree = {
        "epoch": EPOCH,
        "global_step": GLOBAL_STEP,
        "pytorch-lightning_version": "2.1.0",
        "state_dict": run.model.state_dict(),
        "loops": build_loops(EPOCH, GLOBAL_STEP, GLOBAL_STEP // (EPOCH + 1)),  # as Lightning's end-of-epoch save
        "callbacks": {"LearningRateMonitor": {"lrs": [LR]}},
        "optimizer_states": [run.optimizer.state_dict()],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": port_hparams(),
    }
    tree.update(changes)
    return tree


def save(tree: dict, path: Path) -> Path:
    torch.save(tree, path)
    return path


def port_pth(tmp_path: Path, run: Run | None = None, name: str = "port.pth") -> Path:
    return save(port_pth_dict(run or train()), tmp_path / name)


def port_ckpt(tmp_path: Path, run: Run | None = None, name: str = "port.ckpt") -> Path:
    return save(port_ckpt_dict(run or train()), tmp_path / name)


__all__ = ["ARCH", "EPOCH", "GLOBAL_STEP", "LR", "WEIGHT_DECAY", "Run", "port_ckpt",
           "port_ckpt_dict", "port_hparams", "port_param_groups", "port_pth", "port_pth_dict", "save", "train"]
