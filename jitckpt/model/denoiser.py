"""The JiT denoiser: x-prediction trained with a v-loss, sampled by an ODE with CFG.

The maths of the original ``Denoiser`` (logit-normal t, label dropout to the
null class, Euler / Heun steps with the last step Euler, classifier-free
guidance inside an interval of t), written so that a Lightning module can use
the same functions on its own ``net``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import JiTCheckpointError
from ..layouts.args import ORIGINAL_DEFAULTS
from ..layouts.arch import Arch, official
from .jit import JiT


@dataclass
class DiffusionConfig:
    """Training noise and sampling settings, named as the original's args (defaults: ``main_jit.py``'s).

    Which sampling settings a checkpoint is evaluated with is decided by
    :func:`jitckpt.model.protocol.resolve_sampling`, not by these defaults.
    """

    P_mean: float = ORIGINAL_DEFAULTS["P_mean"]
    P_std: float = ORIGINAL_DEFAULTS["P_std"]
    noise_scale: float = ORIGINAL_DEFAULTS["noise_scale"]
    t_eps: float = ORIGINAL_DEFAULTS["t_eps"]
    label_drop_prob: float = ORIGINAL_DEFAULTS["label_drop_prob"]
    sampling_method: str = ORIGINAL_DEFAULTS["sampling_method"]
    num_sampling_steps: int = ORIGINAL_DEFAULTS["num_sampling_steps"]
    cfg: float = ORIGINAL_DEFAULTS["cfg"]
    interval_min: float = ORIGINAL_DEFAULTS["interval_min"]
    interval_max: float = ORIGINAL_DEFAULTS["interval_max"]

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> "DiffusionConfig":
        return cls(**{f.name: args[f.name] for f in fields(cls) if f.name in args})


def diffusion_loss(net: nn.Module, x: torch.Tensor, labels: torch.Tensor, cfg: DiffusionConfig,
                   num_classes: int, drop_labels: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """The original training loss for images ``x`` in [-1, 1] (random t, noise and label dropout).

    Random draws come from ``generator`` when given (else the global RNG).
    """
    if drop_labels:
        drop = torch.rand(labels.shape[0], device=labels.device, generator=generator) < cfg.label_drop_prob
        labels = torch.where(drop, torch.full_like(labels, num_classes), labels)
    t = torch.sigmoid(torch.randn(x.size(0), device=x.device, generator=generator) * cfg.P_std + cfg.P_mean)
    t = t.view(-1, *([1] * (x.ndim - 1)))
    e = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator) * cfg.noise_scale
    z = t * x + (1 - t) * e
    v = (x - z) / (1 - t).clamp_min(cfg.t_eps)
    x_pred = net(z, t.flatten(), labels)
    v_pred = (x_pred - z) / (1 - t).clamp_min(cfg.t_eps)
    return ((v - v_pred) ** 2).mean(dim=(1, 2, 3)).mean()


def _velocity(net: nn.Module, z: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, cfg: DiffusionConfig,
              num_classes: int) -> torch.Tensor:
    """Guided velocity; conditional and unconditional halves go through the network as one batch."""
    both = net(torch.cat([z, z]), torch.cat([t, t]).flatten(), torch.cat([labels, torch.full_like(labels, num_classes)]))
    x_cond, x_uncond = both.chunk(2)
    v_cond = (x_cond - z) / (1.0 - t).clamp_min(cfg.t_eps)
    v_uncond = (x_uncond - z) / (1.0 - t).clamp_min(cfg.t_eps)
    low, high = cfg.interval_min, cfg.interval_max
    in_interval = (t < high) & ((low == 0) | (t > low))
    scale = torch.where(in_interval, cfg.cfg, 1.0)
    return v_uncond + scale * (v_cond - v_uncond)


@torch.no_grad()
def generate(net: nn.Module, labels: torch.Tensor, cfg: DiffusionConfig, num_classes: int, img_size: int,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample images in [-1, 1] for ``labels``: ``num_sampling_steps`` ODE steps from noise, the last Euler.

    The starting noise comes from ``generator`` when given (else the global RNG).
    """
    if cfg.sampling_method not in ("euler", "heun"):
        raise JiTCheckpointError(f"unknown sampling method {cfg.sampling_method!r}; choose euler or heun")
    bsz, device = labels.size(0), labels.device
    z = cfg.noise_scale * torch.randn(bsz, 3, img_size, img_size, device=device, generator=generator)
    steps = torch.linspace(0.0, 1.0, cfg.num_sampling_steps + 1, device=device)
    steps = steps.view(-1, 1, 1, 1, 1).expand(-1, bsz, -1, -1, -1)

    def euler(z: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
        return z + (t_next - t) * _velocity(net, z, t, labels, cfg, num_classes)

    def heun(z: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
        v_t = _velocity(net, z, t, labels, cfg, num_classes)
        v_next = _velocity(net, z + (t_next - t) * v_t, t_next, labels, cfg, num_classes)
        return z + (t_next - t) * (0.5 * (v_t + v_next))

    step = heun if cfg.sampling_method == "heun" else euler
    for i in range(cfg.num_sampling_steps - 1):
        z = step(z, steps[i], steps[i + 1])
    return euler(z, steps[-2], steps[-1])


class Denoiser(nn.Module):
    """The original ``Denoiser``: ``net`` (so state-dict keys are ``net.``), loss and sampling."""

    def __init__(self, arch: Arch, config: DiffusionConfig | None = None, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        self.net = JiT(arch, attn_drop, proj_drop)
        self.arch = arch
        self.config = config or DiffusionConfig()

    @classmethod
    def from_args(cls, args: Mapping[str, Any], arch: Arch | None = None) -> "Denoiser":
        """Build as the original ``Denoiser(args)`` would (``args.model`` an official variant unless ``arch``)."""
        arch = arch or official(args["model"], args.get("img_size", 256), args.get("class_num", 1000))
        return cls(arch, DiffusionConfig.from_args(args), args.get("attn_dropout", 0.0), args.get("proj_dropout", 0.0))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return diffusion_loss(self.net, x, labels, self.config, self.arch.num_classes, drop_labels=self.training)

    def generate(self, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return generate(self.net, labels, self.config, self.arch.num_classes, self.arch.img_size, generator)
