"""A :class:`~.denoiser.Denoiser` from a checkpoint: the weights chosen, sampled with the settings resolved.

:func:`from_pretrained` is the one call for a folder or file: it reads through :func:`jitckpt.load` (every
check of the checked path) and returns the network with the sampling protocol it was saved with.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch

from ..api import load
from ..errors import SchemaError
from ..layouts.arch import Arch
from ..schema import JiTCheckpoint
from ..tensors.anytensor import to_torch
from .denoiser import DiffusionConfig, Denoiser
from .protocol import SamplingPlan, resolve_sampling


@dataclass
class SamplingSettings:
    """What to sample: which weights, how many images, and the sampler's settings.

    A sampler setting left None comes from the checkpoint (its args, else the
    paper's protocol for an official variant, else the training defaults: see
    :func:`jitckpt.model.protocol.resolve_sampling`); one set here overrides it.
    """

    weights: str = "ema1"
    num_images: int = 50000
    batch_size: int = 256
    method: str | None = None
    steps: int | None = None
    cfg: float | None = None
    interval_min: float | None = None
    interval_max: float | None = None
    seed: int = 0
    noise_scale: float | None = None

    def flags(self) -> dict[str, Any]:
        """The sampler settings given here (not None), by :data:`jitckpt.model.protocol.SETTINGS` name."""
        given = {"method": self.method, "steps": self.steps, "cfg": self.cfg, "interval_min": self.interval_min,
                 "interval_max": self.interval_max, "noise_scale": self.noise_scale}
        return {k: v for k, v in given.items() if v is not None}


def sampling_plan(ckpt: JiTCheckpoint, settings: SamplingSettings) -> SamplingPlan:
    """The sampler settings ``ckpt`` is sampled with, those ``settings`` gives overriding, each with its source."""
    return resolve_sampling(ckpt.arch, ckpt.args, settings.flags())


def sampler_config(ckpt: JiTCheckpoint, settings: SamplingSettings) -> DiffusionConfig:
    """The Denoiser's configuration: the checkpoint's training args with :func:`sampling_plan`'s six settings."""
    return replace(DiffusionConfig.from_args(ckpt.args), **sampling_plan(ckpt, settings).as_args())


def report_warnings(messages: tuple[str, ...] | list[str], on_warning: Callable[[str], None] | None) -> None:
    """Hand each message to ``on_warning``, or to :func:`warnings.warn` without one."""
    for message in messages:
        if on_warning is None:
            warnings.warn(message, UserWarning, stacklevel=3)
        else:
            on_warning(message)


def require_arch(ckpt: JiTCheckpoint) -> Arch:
    """``ckpt.arch``; a :class:`SchemaError` when the checkpoint does not say its architecture."""
    if ckpt.arch is None:
        raise SchemaError("this checkpoint does not say its architecture, so no network can be built for it")
    return ckpt.arch


def build_denoiser(ckpt: JiTCheckpoint, settings: SamplingSettings, device: torch.device | str = "cpu") -> Denoiser:
    """The Denoiser of ``ckpt`` with the chosen weights loaded (an error if that set is absent)."""
    state = ckpt.weights(settings.weights)
    denoiser = Denoiser(require_arch(ckpt), sampler_config(ckpt, settings))
    denoiser.load_state_dict({k: to_torch(v) for k, v in state.items()})
    return denoiser.to(device).eval()


def from_pretrained(name: str | os.PathLike, device: torch.device | str = "cpu", revision: str | None = None,
                    cache_dir: str | os.PathLike | None = None) -> Denoiser:
    """The :class:`~.denoiser.Denoiser` of a ``jitckpt export`` folder: its weights, and the
    sampling protocol it was exported with, ready to ``generate`` (any checkpoint works too: its EMA 1).

    ``name`` is a local folder or file, a URL (``https://...``, ``hf://org/repo``, any fsspec address), or a
    Hugging Face Hub repo id (``org/name``, with ``huggingface_hub`` installed: fetched into the Hub's cache,
    ``revision`` and ``cache_dir`` as ``PyTorchModelHubMixin`` takes them)."""
    from .hub import resolve_pretrained

    ckpt = load(resolve_pretrained(name, revision, cache_dir), lazy=True)
    return build_denoiser(ckpt, SamplingSettings(ckpt.extra.get("weights") or "ema1"), device)
