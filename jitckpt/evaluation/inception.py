"""torch-fidelity's InceptionV3 feature extractor, from a local weights file only.

torch-fidelity downloads its weights when given no path and unpickles a given
path freely; here the weights are read safely (``weights_only=True``), checked
against the architecture, and handed over as a plain state dict, so nothing is
downloaded mid-run and no pickled code runs. Without a path, the file
torch-fidelity itself keeps in torch's hub cache is used when it is there.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from ..errors import JiTCheckpointError, render
from .fetch import WEIGHTS_NAME, WEIGHTS_SHA256, WEIGHTS_URL, hub_weights_path  # noqa: F401 (re-exported)

ENV_VAR = "JITCKPT_INCEPTION_WEIGHTS"
FEATURES = ("2048", "logits_unbiased")  # pool3 features for FID, logits for IS


def weights_path(path: str | os.PathLike | None) -> Path:
    """The Inception weights file; a clear error, naming every way to give one, if there is none.

    ``path``, else ``$JITCKPT_INCEPTION_WEIGHTS``, else the file torch-fidelity
    keeps in torch's hub cache (:func:`~jitckpt.evaluation.fetch.hub_weights_path`)
    when it is there. Nothing is downloaded.
    """
    chosen = path or os.environ.get(ENV_VAR)
    if not chosen:
        cached = hub_weights_path()
        if cached.is_file():
            return cached
        raise JiTCheckpointError(
            f"no Inception weights: pass --inception-weights PATH (or set {ENV_VAR}), or put torch-fidelity's "
            f"{WEIGHTS_NAME} in torch's hub cache ({str(cached)!r}, where torch-fidelity keeps it), or run "
            f"`jitckpt fetch-inception` once to download it there; jitckpt never downloads during a run"
        )
    chosen = Path(chosen)
    if not chosen.is_file():
        raise JiTCheckpointError(f"Inception weights {str(chosen)!r}: no such file")
    return chosen


def load_extractor(path: str | os.PathLike | None, device: torch.device | str = "cpu",
                   features: tuple[str, ...] = FEATURES) -> torch.nn.Module:
    """torch-fidelity's ``FeatureExtractorInceptionV3`` with the weights at ``path``, on ``device``."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    source = weights_path(path)
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle with code, or not a torch file at all
        reason = str(exc).replace("\x1b[1m", "").replace("\x1b[0m", "")
        reason = reason.split("WeightsUnpickler error: ")[-1].splitlines()[0].split(". Please")[0] if reason \
            else type(exc).__name__
        raise JiTCheckpointError(f"Inception weights {str(source)!r} cannot be read safely ({render(reason, 200)[1:-1]}); "
                                 "give torch-fidelity's InceptionV3 weights (jitckpt fetch-inception)") from None
    if not isinstance(state, dict) or "fc.weight" not in state or "Mixed_7c.branch_pool.conv.weight" not in state:
        raise JiTCheckpointError(f"{str(source)!r} is not an InceptionV3 state dict in torch-fidelity's layout")
    with tempfile.TemporaryDirectory() as folder:
        plain = Path(folder) / "inception.pth"
        torch.save({k: v for k, v in state.items() if torch.is_tensor(v)}, plain)  # tensors only: safe to unpickle
        try:
            extractor = FeatureExtractorInceptionV3("inception-v3-compat", list(features),
                                                    feature_extractor_weights_path=str(plain))
        except RuntimeError as exc:
            raise JiTCheckpointError(f"{str(source)!r} does not fit torch-fidelity's InceptionV3 "
                                 f"({render(str(exc).splitlines()[0], 120)[1:-1]})") from None
    extractor.has_logits = bool(state["fc.weight"].abs().sum() > 0)  # converted FID-only weights have none
    return extractor.to(device)


@torch.no_grad()
def extract(extractor: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(2048-d pool features, unbiased logits) of uint8 images ``(N, 3, H, W)``, as float64 on the CPU."""
    pool, logits = extractor(images.to(next(extractor.parameters()).device))
    return pool.double().cpu(), logits.double().cpu()


def write_random_weights(path: str | os.PathLike, seed: int = 0) -> Path:
    """Save an InceptionV3 of torch-fidelity's exact architecture with random weights to ``path``.

    For showing and testing the mechanics of evaluation without the published
    weights: the loading code runs unchanged, the scores mean nothing. Convolutions
    get a variance-preserving init and the classifier small weights, so features
    and logits still differ between images.
    """
    from .fid_helper import fidelity_skeleton

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = fidelity_skeleton()
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        torch.nn.init.normal_(model.get_parameter("fc.weight"), std=0.05)
    finally:
        torch.random.set_rng_state(generator_state)
    from ..storage.atomic import atomic_output

    with atomic_output(path, force=True) as handle:
        torch.save(model.state_dict(), handle)
    return Path(path)
