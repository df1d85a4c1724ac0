"""Images from any checkpoint, with the original label layout and quantisation.

Labels are class-balanced as the original lays them out (class ``i`` repeated
``num_images / num_classes`` times). Image batch ``b`` (a fixed slice of that
list) draws its noise from a generator seeded with ``(seed, b)``, so the images
do not depend on how many processes share the work.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..api import load
from ..errors import JiTCheckpointError
from ..model.denoiser import DiffusionConfig, Denoiser
from ..model.protocol import SamplingPlan, resolve_sampling
from ..schema import JiTCheckpoint
from ..anytensor import to_torch
from . import WEIGHT_CHOICES, weights_name  # noqa: F401 (re-exported: where callers found them)


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


def build_denoiser(ckpt: JiTCheckpoint, settings: SamplingSettings, device: torch.device | str = "cpu") -> Denoiser:
    """The Denoiser of ``ckpt`` with the chosen weights loaded (an error if that set is absent)."""
    state = ckpt.weights(settings.weights)
    denoiser = Denoiser(ckpt.arch, sampler_config(ckpt, settings))
    denoiser.load_state_dict({k: to_torch(v) for k, v in state.items()})
    return denoiser.to(device).eval()


def class_labels(num_images: int, num_classes: int) -> np.ndarray:
    """The original layout: class ``i`` repeated ``num_images / num_classes`` times."""
    if num_images <= 0 or num_images % num_classes:
        raise JiTCheckpointError(
            f"--num-images {num_images} must be a positive multiple of the class count {num_classes} "
            "(the same number of images for every class)"
        )
    return np.arange(num_classes).repeat(num_images // num_classes)


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] to uint8 exactly as the original before writing PNGs: round(clip(x * 255))."""
    x = ((images.float() + 1) / 2).cpu() * 255
    return torch.clamp(x, 0, 255).round().to(torch.uint8)


def batches_for_rank(num_images: int, batch_size: int, rank: int, world: int) -> list[int]:
    """Indices of the global image batches that process ``rank`` of ``world`` generates."""
    count = (num_images + batch_size - 1) // batch_size
    return list(range(rank, count, world))


def generate_batches(denoiser: Denoiser, labels: np.ndarray, settings: SamplingSettings, rank: int = 0,
                     world: int = 1) -> Iterator[tuple[int, torch.Tensor]]:
    """(global batch index, uint8 images) for this process's share of ``labels``."""
    device = next(denoiser.parameters()).device
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    for index in batches_for_rank(len(labels), settings.batch_size, rank, world):
        chunk = labels[index * settings.batch_size : (index + 1) * settings.batch_size]
        generator = torch.Generator(device=device).manual_seed(hash((settings.seed, index)) & (2**63 - 1))
        with autocast:
            images = denoiser.generate(torch.as_tensor(chunk, device=device), generator)
        yield index, quantize(images)


def save_pngs(folder: str | os.PathLike, first_id: int, images: torch.Tensor) -> None:
    """PNG files ``00000.png``, ... as the original names them."""
    from PIL import Image

    folder = Path(folder)
    for offset, image in enumerate(images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{first_id + offset:05d}.png")


def checkpoint_for_sampling(path: str | os.PathLike, settings: SamplingSettings) -> JiTCheckpoint:
    """Read ``path`` lazily and check that the chosen weights exist before any work."""
    ckpt = load(path, lazy=True)
    ckpt.weights(settings.weights)
    return ckpt


def sample_grid(path: str | os.PathLike, labels: list[int], settings: SamplingSettings, output: str | os.PathLike,
                force: bool = False, device: torch.device | str = "cpu",
                on_warning: Callable[[str], None] | None = None) -> dict[str, Any]:
    """One sample per label from ``path``, tiled in a near-square grid, written as a PNG (atomically).

    Returns what was done: ``output``, ``weights``, ``classes``, ``seed``,
    ``sampling`` (the settings used with their sources, as :func:`sampling_plan`)
    and ``protocol`` (the paper's protocol row for the model, or None).
    A warning (sampler settings from the training defaults) goes to
    ``on_warning``, or :func:`warnings.warn`, before sampling.
    """
    import io as _io

    from PIL import Image

    from ..io import atomic_output, check_output_path

    check_output_path(output, force)
    ckpt = checkpoint_for_sampling(path, settings)
    bad = [c for c in labels if not 0 <= c < ckpt.arch.num_classes]
    if not labels or bad:
        raise JiTCheckpointError(f"classes must be in 0..{ckpt.arch.num_classes - 1}; got {bad or 'none'}")
    plan = sampling_plan(ckpt, settings)
    report_warnings(plan.warnings, on_warning)
    denoiser = build_denoiser(ckpt, settings, device)
    settings = replace(settings, num_images=len(labels), batch_size=len(labels))
    (_, images), = generate_batches(denoiser, np.asarray(labels), settings)
    columns = int(np.ceil(np.sqrt(len(labels))))
    rows = int(np.ceil(len(labels) / columns))
    size = ckpt.arch.img_size
    grid = torch.zeros(3, rows * size, columns * size, dtype=torch.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[:, r * size : (r + 1) * size, c * size : (c + 1) * size] = image
    buffer = _io.BytesIO()
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    with atomic_output(output, force=force) as handle:
        handle.write(buffer.getvalue())
    return {"output": str(output), "weights": settings.weights, "classes": list(labels), "seed": settings.seed,
            "sampling": plan.to_dict(with_sources=True),
            "protocol": plan.protocol.to_dict() if plan.protocol is not None else None}
