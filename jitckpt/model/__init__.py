"""The JiT architecture: its variants and how to read them off a state dict."""


def from_pretrained(folder, device="cpu"):
    """The :class:`~jitckpt.model.denoiser.Denoiser` of a ``jitckpt export`` folder: its weights, and the
    sampling protocol it was exported with, ready to ``generate`` (any checkpoint works too: its EMA 1)."""
    from ..api import load
    from ..evaluation.sampling import SamplingSettings, build_denoiser

    ckpt = load(folder, lazy=True)
    return build_denoiser(ckpt, SamplingSettings(ckpt.extra.get("weights") or "ema1"), device)
