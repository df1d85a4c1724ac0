"""``evaluate``: sample from a checkpoint and score FID / IS, on one process or many (Lightning Fabric).

Every process generates its share of the image batches; rank zero gathers
the Inception features in batch order and scores them. Images go to the
feature extractor as uint8 in memory; PNGs are written only when asked.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import JiTCheckpointError
from ..model.loading import require_arch
from ..schema import JiTCheckpoint
from . import check_one_reference
from .inception import extract, load_extractor, weights_path
from .provenance import inception_record, protocol_notes, reference_record
from .sampling import (SamplingSettings, build_denoiser, checkpoint_for_sampling, class_labels, generate_batches,
                       report_warnings, sampling_plan, save_pngs)
from .stats import fid, find_default_stats, image_files, inception_score, iter_image_batches, load_stats, stats_of


def reference_stats(fid_stats: str | os.PathLike | None, ref_dir: str | os.PathLike | None, extractor: Any,
                    img_size: int | None, batch_size: int = 64,
                    progress: Callable[[int], None] | None = None) -> dict | None:
    """Statistics from an npz, or computed from a folder of reference images (``progress`` hears of each batch's
    image count); None without either."""
    check_one_reference(fid_stats, ref_dir)
    if fid_stats is not None:
        return load_stats(fid_stats)
    if ref_dir is not None:
        features = []
        for batch in iter_image_batches(image_files(ref_dir), img_size, batch_size):
            features.append(extract(extractor, batch)[0])
            if progress is not None:
                progress(len(batch))
        return stats_of(torch.cat(features))
    return None


def _work(rank: int, world: int, ckpt: JiTCheckpoint, settings: SamplingSettings, extractor: Any,
          save_images: str | None, device: torch.device, progress: Callable[[int], None] | None) -> dict[int, tuple]:
    """This process's batches: {global batch index: (pool features, logits)} (empty tuples without an extractor)."""
    labels = class_labels(settings.num_images, require_arch(ckpt).num_classes)
    denoiser = build_denoiser(ckpt, settings, device)
    score = extractor is not None
    out = {}
    for index, images in generate_batches(denoiser, labels, settings, rank, world):
        if save_images is not None:
            save_pngs(save_images, index * settings.batch_size, images)
        out[index] = extract(extractor, images) if score else ()
        if progress is not None:
            progress(len(images))
    return out


def scores_of_features(parts: dict[int, tuple], reference: dict | None,
                       has_logits: bool = True) -> dict[str, float | None]:
    """FID (with a reference) and IS (with logits) of features keyed by batch index, taken in batch order."""
    pool = torch.cat([parts[i][0] for i in sorted(parts)])
    result: dict[str, float | None] = {"inception_score_mean": None, "inception_score_std": None}
    if has_logits:
        logits = torch.cat([parts[i][1] for i in sorted(parts)])
        result["inception_score_mean"], result["inception_score_std"] = inception_score(logits)
    if reference is not None:
        result["fid"] = fid(stats_of(pool), reference)
    return result


def _fabric_worker(fabric: Any, path: str, settings: SamplingSettings, inception_weights: str | None,
                   score: bool, save_images: str | None, fid_stats: str | None, ref_dir: str | None) -> dict | None:
    # each process reads the checkpoint's header itself: Fabric rebuilds the arguments it hands over,
    # which the frozen TensorRefs of a lazy checkpoint do not allow
    ckpt = checkpoint_for_sampling(path, settings)
    extractor = load_extractor(inception_weights, fabric.device) if score else None
    parts = _work(fabric.global_rank, fabric.world_size, ckpt, settings, extractor, save_images, fabric.device, None)
    gathered: list[dict[int, tuple]] = [{} for _ in range(fabric.world_size)]  # each replaced by a rank's parts
    torch.distributed.all_gather_object(gathered, parts)
    result = None
    if fabric.global_rank == 0 and extractor is not None:  # an extractor exactly when scoring
        merged = {k: v for part in gathered for k, v in part.items()}
        reference = reference_stats(fid_stats, ref_dir, extractor, require_arch(ckpt).img_size)
        result = scores_of_features(merged, reference, bool(extractor.has_logits))
    # every process leaves together: one exiting while another still holds the process
    # group can abort the other (seen with gloo as "terminate called without an active exception")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    return result


def evaluate(path: str | os.PathLike, settings: SamplingSettings, inception_weights: str | os.PathLike | None = None,
             fid_stats: str | os.PathLike | None = None, ref_dir: str | os.PathLike | None = None,
             save_images: str | os.PathLike | None = None, devices: int = 1, num_nodes: int = 1,
             accelerator: str = "auto", score: bool = True,
             progress: Callable[[int], None] | None = None,
             on_warning: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Generate ``settings.num_images`` images from ``path`` and score them.

    Without ``fid_stats`` or ``ref_dir``, the statistics are
    ``fid_stats/jit_in{img_size}_stats.npz`` in the working directory when that
    file exists, as the original finds them; without ``inception_weights`` (or
    ``$JITCKPT_INCEPTION_WEIGHTS``), torch-fidelity's file in torch's hub cache.

    Returns FID (with ``fid_stats`` or ``ref_dir``), Inception Score mean and
    std, and what reproduces them: the checkpoint, the weights, the number of
    images, the sampler settings with the source of each (``sampling``, as
    :func:`~jitckpt.evaluation.sampling.sampling_plan`), the paper's protocol
    row for the model (``protocol``, or None), the reference (``reference``:
    the statistics file and its SHA-256, or the image folder), the Inception
    weights file and its SHA-256 (``inception_weights``), seed, processes, time
    and ``warnings``. Inputs are checked (weights present, image count,
    reference, Inception weights) before anything is generated; warnings (sampler
    settings from the training defaults, a run that departs from the protocol)
    go to ``on_warning``, or :func:`warnings.warn`, before sampling starts.
    """
    started = time.perf_counter()
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():  # never a silent fall back to the CPU
        raise JiTCheckpointError(f"--accelerator {accelerator}: no GPU is visible here (torch.cuda.is_available() "
                                 "is False); give --accelerator cpu or auto")
    ckpt = checkpoint_for_sampling(path, settings)
    arch = require_arch(ckpt)
    class_labels(settings.num_images, arch.num_classes)
    plan = sampling_plan(ckpt, settings)
    check_one_reference(fid_stats, ref_dir)
    if score and fid_stats is None and ref_dir is None:
        fid_stats = find_default_stats(arch.img_size)  # where the original looks; None if it is not there
    provenance: dict[str, Any] = {"reference": None, "inception_weights": None}
    notes = list(plan.warnings)
    if score:
        if fid_stats is None and ref_dir is None and not load_extractor(inception_weights).has_logits:
            raise JiTCheckpointError("nothing to score: without --fid-stats or --ref-dir there is no FID, and these "
                                     "Inception weights have no classifier, so no Inception Score; add "
                                     "--fid-stats STATS.npz or --ref-dir IMAGES (or weights with a classifier)")
        if fid_stats is None and ref_dir is None:  # said before sampling, never a silent gap in the results
            notes.append("no reference statistics (--fid-stats, --ref-dir, or the original's "
                         f"fid_stats/jit_in{arch.img_size}_stats.npz in the working directory): FID is not computed, "
                         "only the Inception Score")
        provenance["inception_weights"] = inception_record(weights_path(inception_weights))
        ref_images = len(image_files(ref_dir)) if ref_dir is not None else None
        provenance["reference"] = reference_record(fid_stats, ref_dir, ref_images)
        notes += protocol_notes(plan, settings.num_images, fid_stats)
    if save_images is not None:
        Path(save_images).mkdir(parents=True, exist_ok=True)
    images_s = None if save_images is None else str(save_images)
    weights_s = None if inception_weights is None else str(inception_weights)
    stats_s, ref_s = (None if p is None else str(p) for p in (fid_stats, ref_dir))
    if devices * num_nodes > 1:
        from lightning.fabric import Fabric

        if score:
            load_extractor(weights_s)  # fail here, not in the workers
            if fid_stats is not None:
                load_stats(fid_stats)
        # one node: Fabric spawns the workers; several nodes: each node runs this command under a
        # launcher (torchrun, SLURM) and Fabric joins the processes it finds
        strategy = "ddp_spawn" if num_nodes == 1 else "ddp"
        fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy)
        if fabric.global_rank == 0:
            report_warnings(notes, on_warning)
        # launch hands *args on to the function; its stub types the function as taking the Fabric alone
        result = fabric.launch(_fabric_worker, str(path), settings, weights_s, score,  # type: ignore[arg-type]
                               images_s, stats_s, ref_s) or {}
        if strategy == "ddp" and fabric.global_rank != 0:
            return {"main_process": False}
    else:
        device = torch.device("cuda" if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else "cpu")
        extractor = load_extractor(weights_s, device) if score else None
        reference = reference_stats(stats_s, ref_s, extractor, arch.img_size) if score else None
        report_warnings(notes, on_warning)
        parts = _work(0, 1, ckpt, settings, extractor, images_s, device, progress)
        # an extractor exactly when scoring
        result = scores_of_features(parts, reference, bool(extractor.has_logits)) if extractor is not None else {}
    return {**result, "main_process": True, "checkpoint": str(path), "weights": settings.weights, "num_images": settings.num_images,
            "method": plan.method, "steps": plan.steps, "cfg": plan.cfg, "interval": [plan.interval_min, plan.interval_max],
            "noise_scale": plan.noise_scale, "sampling": plan.to_dict(with_sources=True),
            "protocol": plan.protocol.to_dict() if plan.protocol is not None else None, **provenance,
            "seed": settings.seed, "devices": devices * num_nodes, "warnings": notes,
            "seconds": time.perf_counter() - started}

