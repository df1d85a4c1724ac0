"""``FIDEvaluationCallback``: FID and Inception Score during training, with an EMA swapped in."""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from ..errors import JiTCheckpointError
from ..evaluation.evaluate import reference_stats, scores_of_features
from ..evaluation.inception import extract, load_extractor, weights_path
from ..evaluation.sampling import SamplingSettings, class_labels, generate_batches
from ..evaluation.stats import default_stats_path, find_default_stats, load_stats
from .ema import find_ema_callback
from .ema_sharding import is_dtensor


class FIDEvaluationCallback(L.Callback):
    """Scores FID / IS at the end of epoch ``e`` when ``e % eval_freq == 0`` or ``e`` is the last epoch.

    Every rank generates its share of ``num_images`` class-balanced images
    (with EMA ``ema_version`` swapped in when ``use_ema``, the raw weights back
    afterwards); rank zero scores them with torch-fidelity against
    ``fid_stats`` (npz) or ``ref_dir`` (images); with neither, the original's
    ``fid_stats/jit_in{img_size}_stats.npz`` in the working directory when it
    exists. Without ``inception_weights`` (or ``$JITCKPT_INCEPTION_WEIGHTS``),
    torch-fidelity's file in torch's hub cache is used; nothing is downloaded.
    Scores go to the logger as ``fid`` and ``inception_score``. Inputs are
    checked when training starts; a failure during evaluation raises, it is
    never skipped silently. Subclass and extend ``_evaluate(trainer, pl_module, epoch)`` to add metrics.
    """

    def __init__(self, eval_freq: int = 40, num_images: int = 50000, batch_size: int = 256, num_classes: int = 1000,
                 img_size: int = 256, use_ema: bool = True, ema_version: int = 1,
                 fid_stats: str | os.PathLike | None = None, ref_dir: str | os.PathLike | None = None,
                 inception_weights: str | os.PathLike | None = None, method: str | None = None,
                 steps: int | None = None, cfg: float | None = None, seed: int = 0) -> None:
        self.eval_freq, self.num_images, self.batch_size = eval_freq, num_images, batch_size
        self.num_classes, self.img_size, self.use_ema, self.ema_version = num_classes, img_size, use_ema, ema_version
        self.fid_stats, self.ref_dir, self.inception_weights = fid_stats, ref_dir, inception_weights
        self.settings = SamplingSettings(f"ema{ema_version}" if use_ema else "raw", num_images, batch_size, method,
                                         steps, cfg, None, None, seed)
        self.history: list[dict[str, Any]] = []
        self._extractor: torch.nn.Module | None = None
        self._reference: dict | None = None

    def original_args(self) -> dict[str, Any]:
        """The original's args this callback was configured with (read by ``run_args``)."""
        return {"online_eval": True, "eval_freq": self.eval_freq, "num_images": self.num_images,
                "gen_bsz": self.batch_size}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        class_labels(self.num_images, self.num_classes)
        if self.fid_stats is None and self.ref_dir is None:
            found = find_default_stats(self.img_size)  # where the original looks, relative to the working directory
            if found is None:
                raise JiTCheckpointError(
                    f"FIDEvaluationCallback needs fid_stats (npz) or ref_dir (reference images): none given, and no "
                    f"{default_stats_path(self.img_size)} (the original's statistics file) in {os.getcwd()!r}")
            self.fid_stats = found.resolve()
            rank_zero_info(f"FIDEvaluationCallback: reference statistics {found} (found in the working directory)")
        weights_path(self.inception_weights)
        if self.fid_stats is not None:
            load_stats(self.fid_stats)
        if self.use_ema and find_ema_callback(trainer) is None:
            raise JiTCheckpointError("FIDEvaluationCallback(use_ema=True) needs an EMACallback among the callbacks")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if epoch % self.eval_freq and epoch + 1 != trainer.max_epochs:
            return
        try:
            metrics = self._evaluate(trainer, pl_module, epoch)
        except Exception as exc:
            raise JiTCheckpointError(f"FID evaluation at epoch {epoch} failed: {exc}") from exc
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        if trainer.is_global_zero and metrics:
            self.history.append({"epoch": epoch, **metrics})
            rank_zero_info(f"Epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)

    def _evaluate(self, trainer: L.Trainer, pl_module: Any, epoch: int) -> dict[str, float]:
        """Generate this rank's images, gather features on rank zero, return its scores (empty elsewhere).

        ``pl_module`` is a ``JiTLightningModule``, or any module with its ``diffusion`` and ``generate``."""
        device = pl_module.device
        if self._extractor is None:
            self._extractor = load_extractor(self.inception_weights, "cpu")
            self._reference = reference_stats(self.fid_stats, self.ref_dir, self._extractor, self.img_size)
        extractor = self._extractor.to(device)
        labels = class_labels(self.num_images, self.num_classes)
        settings = self.settings
        was_training = pl_module.training
        pl_module.eval()
        saved = pl_module.diffusion
        pl_module.diffusion = replace(saved, **{k: v for k, v in (("sampling_method", settings.method),
                                                                  ("num_sampling_steps", settings.steps),
                                                                  ("cfg", settings.cfg)) if v is not None})
        ema = find_ema_callback(trainer) if self.use_ema else None
        if self.use_ema and ema is None:
            raise JiTCheckpointError("FIDEvaluationCallback(use_ema=True) needs an EMACallback among the callbacks")
        swap = ema.swap_ema(pl_module, self.ema_version) if ema is not None else contextlib.nullcontext()
        try:
            with swap:
                parts = {index: extract(extractor, images) for index, images in
                         generate_batches(pl_module, labels, settings, trainer.global_rank, trainer.world_size,
                                                  lockstep=any(is_dtensor(p) for p in pl_module.parameters()))}
        finally:
            pl_module.diffusion = saved
            pl_module.train(was_training)
            self._extractor = extractor.to("cpu")
        if trainer.world_size > 1:
            gathered: list[dict[int, tuple]] = [{} for _ in range(trainer.world_size)]  # each becomes a rank's parts
            torch.distributed.all_gather_object(gathered, parts)
            parts = {k: v for part in gathered for k, v in part.items()}
        if not trainer.is_global_zero:
            return {}
        scores = scores_of_features(parts, self._reference, bool(extractor.has_logits))
        found = {"fid": scores.get("fid")}
        if scores["inception_score_mean"] is not None:
            found.update(inception_score=scores["inception_score_mean"], inception_score_std=scores["inception_score_std"])
        metrics = {k: float(v) for k, v in found.items() if v is not None}
        cfg = self.settings.cfg if self.settings.cfg is not None else pl_module.diffusion.cfg
        return {**metrics, **original_metric_names(metrics, cfg, self.img_size)}


def original_metric_names(metrics: dict[str, float], cfg: float, img_size: int) -> dict[str, float]:
    """The same scores under the names the original's ``log_writer`` used (``fid_cfg2.9_res256``), for old dashboards."""
    names = {"fid": f"fid_cfg{cfg}_res{img_size}", "inception_score": f"is_cfg{cfg}_res{img_size}"}
    return {names[k]: v for k, v in metrics.items() if k in names}
