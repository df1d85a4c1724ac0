"""The original's random stream, replayed: every number ``main_jit.py`` draws on a rank, in its order.

The original seeds its one CPU generator with ``seed + rank``, builds the model
(whose initialisation draws), and then, for each epoch, draws the DataLoader
iterator's base seed; for each batch, one ``torch.rand(1)`` per image for
``RandomHorizontalFlip`` (in the main process with ``num_workers=0``; otherwise in
worker ``i % num_workers``, whose generator is seeded ``base_seed + worker_id``),
then, in the denoiser's forward, the label drop, ``t`` and the noise.

:class:`OriginalStream` holds that generator apart from torch's global one, so
that nothing Lightning does (prefetching the next batch, seeding its workers,
its own draws) moves it: the flips are drawn and applied in the training step,
in the original's order, and the forward draws from the same generator.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import JiTCheckpointError

RANDOM_STREAMS = ("per_batch", "original")  # what JiTLightningModule and JiTDataModule take
FLIP_PROBABILITY = 0.5  # torchvision's RandomHorizontalFlip default, as the original uses it


def check_random_stream(name: str) -> str:
    """``name`` if it is one of :data:`RANDOM_STREAMS`; a one-line error otherwise."""
    if name not in RANDOM_STREAMS:
        raise JiTCheckpointError(f"random_stream {name!r}: choose {' or '.join(RANDOM_STREAMS)}")
    return name


class OriginalStream:
    """The generator of one rank of the original, positioned where the original's training loop starts."""

    def __init__(self, seed: int, rank: int, build_model: Any) -> None:
        """``build_model()`` constructs the network as the original does (its initialisation's draws are
        replayed here on a scratch copy, from ``seed + rank``)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + rank)
            build_model()
            state = torch.get_rng_state()
        self.generator = torch.Generator()
        self.generator.set_state(state)
        self.workers: list[torch.Generator] = []
        self.seed = seed + rank
        self._accelerator: torch.Generator | None = None

    def start_epoch(self, num_workers: int) -> None:
        """What creating the DataLoader iterator draws: its base seed (and the workers' generators from it)."""
        base_seed = int(torch.empty((), dtype=torch.int64).random_(generator=self.generator).item())
        self.workers = [torch.Generator().manual_seed(base_seed + worker) for worker in range(num_workers)]

    def flips(self, batch_index: int, count: int) -> torch.Tensor:
        """Which of the batch's ``count`` images ``RandomHorizontalFlip`` flips (bool, one per image)."""
        generator = self.workers[batch_index % len(self.workers)] if self.workers else self.generator
        return torch.tensor([bool(torch.rand(1, generator=generator) < FLIP_PROBABILITY) for _ in range(count)])

    def forward_generator(self, device: torch.device) -> torch.Generator:
        """Where the forward's draws come from: the CPU stream, or on a GPU the device's own generator, which
        ``torch.manual_seed`` seeded and the CPU-side initialisation never touched."""
        if device.type == "cpu":
            return self.generator
        if self._accelerator is None:
            self._accelerator = torch.Generator(device=device).manual_seed(self.seed)
        return self._accelerator


def flip_images(images: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """``images`` (B, C, H, W) with the chosen ones mirrored left to right, as PIL's ``FLIP_LEFT_RIGHT``."""
    return torch.where(flips.view(-1, 1, 1, 1).to(images.device), images.flip(-1), images)
