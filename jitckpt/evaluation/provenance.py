"""What an evaluation records so that its FID can be reproduced: files by SHA-256, and the protocol it follows.

A reported FID depends on the sampler settings, the weights, the number of
images, the reference statistics and the Inception network; the result of
``evaluate`` names each, with the SHA-256 of the two files (streamed, so a
large file costs no memory), and says where a run departs from the paper's
protocol for its model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import JiTCheckpointError
from ..storage.crc32 import sha256_file as file_digest
from ..model.protocol import SamplingPlan

CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike, chunk_size: int = CHUNK) -> str:
    """The SHA-256 of the file at ``path`` as hex (:func:`jitckpt.storage.crc32.sha256_file`), a JiTCheckpointError
    naming it when it cannot be read."""
    try:
        return file_digest(path, chunk_size)
    except OSError as exc:
        raise JiTCheckpointError(f"cannot read {str(path)!r} to record its SHA-256: {exc.strerror or exc}") from None


def reference_record(fid_stats: str | os.PathLike | None, ref_dir: str | os.PathLike | None,
                     ref_images: int | None = None) -> dict[str, Any] | None:
    """``{"fid_stats": path, "sha256": ...}``, or ``{"ref_dir": path, "images": n}``; None without a reference."""
    if fid_stats is not None:
        return {"fid_stats": str(fid_stats), "sha256": sha256_file(fid_stats)}
    if ref_dir is not None:
        return {"ref_dir": str(ref_dir), "images": ref_images}
    return None


def inception_record(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path": ..., "sha256": ...}`` of the Inception weights file actually used."""
    return {"path": str(path), "sha256": sha256_file(path)}


def protocol_notes(plan: SamplingPlan, num_images: int, fid_stats: str | os.PathLike | None) -> list[str]:
    """Warnings where a run that samples with the paper's protocol scores differently from it."""
    row = plan.protocol
    if row is None or plan.source != "protocol":
        return []
    notes = []
    if num_images != row.num_images:
        notes.append(f"the paper's protocol for {row.variant} at {row.img_size} px scores {row.num_images} images; "
                     f"this run scores {num_images}, so its FID is not comparable with the paper's")
    if fid_stats is None or Path(fid_stats).name != Path(row.fid_stats).name:
        against = "no statistics file" if fid_stats is None else repr(Path(fid_stats).name)
        notes.append(f"the paper's protocol for {row.variant} at {row.img_size} px scores against "
                     f"{row.fid_stats}; this run uses {against}")
    return notes
