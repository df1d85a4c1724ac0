"""Images from any checkpoint, with the original label layout and quantisation.

Labels are class-balanced as the original lays them out (class ``i`` repeated
``num_images / num_classes`` times). Image batch ``b`` (a fixed slice of that
list) draws its noise from a generator seeded with ``(seed, b)``, so the images
do not depend on how many processes share the work.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..api import load
from ..model.loading import (  # noqa: F401 (re-exported: where callers found them)
    SamplingSettings, build_denoiser, report_warnings, require_arch, sampler_config, sampling_plan)
from ..errors import JiTCheckpointError
from ..model.denoiser import Denoiser
from ..schema import JiTCheckpoint
from . import WEIGHT_CHOICES, check_balanced, weights_name  # noqa: F401 (re-exported: where callers found them)


def class_labels(num_images: int, num_classes: int) -> np.ndarray:
    """The original layout: class ``i`` repeated ``num_images / num_classes`` times."""
    check_balanced(num_images, num_classes)
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
                     world: int = 1, lockstep: bool = False) -> Iterator[tuple[int, torch.Tensor]]:
    """(global batch index, uint8 images) for this process's share of ``labels``.

    With ``lockstep`` every process runs as many batches as the busiest one (a process short of one samples
    a batch it throws away): a sharded model (FSDP2) gathers its parameters in collectives at every forward,
    which all processes must join.
    """
    device = next(denoiser.parameters()).device
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    mine = batches_for_rank(len(labels), settings.batch_size, rank, world)
    rounds = len(batches_for_rank(len(labels), settings.batch_size, 0, world)) if lockstep else len(mine)
    for turn in range(rounds):
        index = mine[turn] if turn < len(mine) else None
        start = (index or 0) * settings.batch_size
        chunk = labels[start : start + settings.batch_size]
        generator = torch.Generator(device=device).manual_seed(hash((settings.seed, index or 0)) & (2**63 - 1))
        with autocast:
            images = denoiser.generate(torch.as_tensor(chunk, device=device), generator)
        if index is not None:
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

    from ..storage.atomic import atomic_output, check_output_path

    check_output_path(output, force)
    ckpt = checkpoint_for_sampling(path, settings)
    arch = require_arch(ckpt)
    bad = [c for c in labels if not 0 <= c < arch.num_classes]
    if not labels or bad:
        raise JiTCheckpointError(f"classes must be in 0..{arch.num_classes - 1}; got {bad or 'none'}")
    plan = sampling_plan(ckpt, settings)
    report_warnings(plan.warnings, on_warning)
    denoiser = build_denoiser(ckpt, settings, device)
    settings = replace(settings, num_images=len(labels), batch_size=len(labels))
    (_, images), = generate_batches(denoiser, np.asarray(labels), settings)
    columns = int(np.ceil(np.sqrt(len(labels))))
    rows = int(np.ceil(len(labels) / columns))
    size = arch.img_size
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
