"""Files in the layout of the authors' released JiT weights: ``{"model", "model_ema1", "model_ema2"}`` only."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from jitckpt.layouts.arch import expected_shapes, official
from tests.helpers import load_golden_torch

SECTIONS = ("model", "model_ema1", "model_ema2")


def official_released(path: Path, name: str, img_size: int, dtype: torch.dtype = torch.bfloat16) -> Path:
    """A released-layout file of the official variant ``name`` at ``img_size`` px (1000 classes), all zeros.

    Every tensor has the real key and shape, but all are views of one zero
    storage the size of the largest, so even JiT-H/16 (953 M parameters per
    section) takes 17 MB on disk: reading and ``inspect`` only see the pickle's
    shapes, dtypes and storage bounds.
    """
    shapes = expected_shapes(official(name, img_size, 1000))
    storage = torch.zeros(max(math.prod(s) for s in shapes.values()), dtype=dtype)
    state = {key: storage[: math.prod(shape)].view(shape) for key, shape in shapes.items()}
    torch.save({section: dict(state) for section in SECTIONS}, path)
    return path


def tiny_released(path: Path) -> Path:
    """The golden checkpoint's weights in the released layout: no args, epoch or optimizer (a custom JiT)."""
    golden = load_golden_torch()
    torch.save({section: golden[section] for section in SECTIONS}, path)
    return path


def main(argv: list[str]) -> None:
    """``python -m tests.released official JiT-L/16 256 OUT`` or ``python -m tests.released tiny OUT``:
    write such a file (the README's examples use both)."""
    kind, *rest = argv
    if kind == "official" and len(rest) == 3:
        out = Path(rest[2])
        out.parent.mkdir(parents=True, exist_ok=True)
        official_released(out, rest[0], int(rest[1]))
    elif kind == "tiny" and len(rest) == 1:
        out = tiny_released(Path(rest[0]))
    else:
        raise SystemExit("usage: python -m tests.released official NAME IMG_SIZE OUT | tiny OUT")
    print(f"wrote {out}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
