"""Reference statistics (``mu``, ``sigma``) in the format of the original ``fid_stats/*.npz``, and the scores."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import JiTCheckpointError, render
from ..storage.atomic import atomic_output

FEATURE_DIM = 2048
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".JPEG", ".PNG", ".JPG")


DEFAULT_STATS = "fid_stats/jit_in{img_size}_stats.npz"  # where the original looks, relative to where it runs


def default_stats_path(img_size: int) -> Path:
    """The statistics file the original uses for ``img_size``: ``fid_stats/jit_in{img_size}_stats.npz``, relative."""
    return Path(DEFAULT_STATS.format(img_size=img_size))


def find_default_stats(img_size: int) -> Path | None:
    """:func:`default_stats_path` when that file exists in the working directory, else None."""
    path = default_stats_path(img_size)
    return path if path.is_file() else None


def load_stats(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``mu`` (2048,) and ``sigma`` (2048, 2048) from an npz, as float64; one clear error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise JiTCheckpointError(f"FID statistics {str(path)!r}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "mu" not in data or "sigma" not in data:
                keys = ", ".join(render(k, 40) for k in data.files[:5]) + (", ..." if len(data.files) > 5 else "")
                raise JiTCheckpointError(f"{str(path)!r} has no 'mu' and 'sigma' arrays (it holds {keys}): not FID "
                                         "statistics")
            mu, sigma = np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64)
    except (ValueError, OSError) as exc:
        raise JiTCheckpointError(f"{str(path)!r} is not a readable npz file ({render(str(exc), 100)[1:-1]})") from None
    if mu.shape != (FEATURE_DIM,) or sigma.shape != (FEATURE_DIM, FEATURE_DIM):
        raise JiTCheckpointError(
            f"{str(path)!r}: mu {mu.shape} / sigma {sigma.shape}, expected ({FEATURE_DIM},) / ({FEATURE_DIM}, {FEATURE_DIM})"
        )
    return {"mu": mu, "sigma": sigma}


def stats_of(features: torch.Tensor) -> dict[str, np.ndarray]:
    """FID statistics of (N, 2048) features, with torch-fidelity's own estimator."""
    from torch_fidelity.metric_fid import fid_features_to_statistics

    if features.shape[0] < 2:
        raise JiTCheckpointError("FID statistics need at least 2 images")
    stats = fid_features_to_statistics(features.double())
    return {"mu": np.asarray(stats["mu"], np.float64), "sigma": np.asarray(stats["sigma"], np.float64)}


def save_stats(path: str | os.PathLike, stats: dict[str, np.ndarray], force: bool = False) -> Path:
    """Write ``mu`` and ``sigma`` (float64) as an npz, atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, mu=stats["mu"], sigma=stats["sigma"])
    with atomic_output(path, force=force) as handle:
        handle.write(buffer.getvalue())
    return Path(path)


def fid(stats: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> float:
    """Fréchet Inception Distance between two sets of statistics (torch-fidelity's formula)."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    as64 = lambda s: {"mu": s["mu"].astype(np.float64), "sigma": s["sigma"].astype(np.float64)}  # noqa: E731
    return float(fid_statistics_to_metric(as64(stats), as64(reference), verbose=False)[KEY_METRIC_FID])


def inception_score(logits: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """(mean, std) of the Inception Score over ``splits`` splits (torch-fidelity's estimator)."""
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    result = isc_features_to_metric(logits, splits=min(splits, logits.shape[0]))
    return float(result[KEY_METRIC_ISC_MEAN]), float(result[KEY_METRIC_ISC_STD])


def image_files(folder: str | os.PathLike) -> list[Path]:
    """Every image under ``folder`` (an image folder or an ImageFolder tree), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise JiTCheckpointError(f"image folder {str(folder)!r}: no such folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise JiTCheckpointError(f"image folder {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES[:5])})")
    return files


def iter_image_batches(files: list[Path], img_size: int | None, batch_size: int) -> Iterator[torch.Tensor]:
    """uint8 ``(B, 3, H, W)`` batches; ``img_size`` center-crops as the original ``prepare_ref.py`` does."""
    from PIL import Image

    from .images import center_crop_arr

    for start in range(0, len(files), batch_size):
        batch = []
        for path in files[start : start + batch_size]:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
                if img_size is not None:
                    image = center_crop_arr(image, img_size)
                batch.append(torch.from_numpy(np.array(image)).permute(2, 0, 1))
        yield torch.stack(batch)
