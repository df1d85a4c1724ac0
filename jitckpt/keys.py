"""Mapping state-dict keys from wrapped modules onto the canonical ``net.`` keys.

The mapping is data: prefixes that wrappers add (DDP's ``module.``,
``torch.compile``'s ``_orig_mod.``, a LightningModule or Denoiser attribute)
are stripped, and a bare JiT state dict gains ``net.``. Two source keys that
land on one canonical key are an error naming both.
"""

from __future__ import annotations

from typing import Mapping, TypeVar

from .errors import KeyMappingError

V = TypeVar("V")

CANONICAL_PREFIX = "net."
# Segments that wrappers insert anywhere in a key; never part of JiT's own names.
WRAPPER_SEGMENTS = frozenset({"module", "_orig_mod"})
# Attributes under which a training module may hold the Denoiser or its network.
CONTAINER_PREFIXES = ("model.", "denoiser.", "model_without_ddp.")
# First segment of every key of a bare JiT network (no ``net.`` yet).
JIT_TOP_LEVEL = (
    "pos_embed", "in_context_posemb", "t_embedder.", "y_embedder.", "x_embedder.", "blocks.", "final_layer.",
)


def canonical_key(key: str) -> str:
    """The canonical ``net.`` key for ``key`` (returned unchanged if it is not a JiT key)."""
    stripped = ".".join(part for part in key.split(".") if part not in WRAPPER_SEGMENTS)
    changed = True
    while changed and not stripped.startswith(CANONICAL_PREFIX):
        changed = False
        for prefix in CONTAINER_PREFIXES:
            if stripped.startswith(prefix):
                stripped, changed = stripped[len(prefix) :], True
    if stripped.startswith(JIT_TOP_LEVEL):
        return CANONICAL_PREFIX + stripped
    return stripped


def normalize_keys(state: Mapping[str, V], what: str = "state dict") -> dict[str, V]:
    """Map every key of ``state`` onto its canonical key, keeping order.

    Raises :class:`KeyMappingError` when two keys map onto one, naming both.
    """
    out: dict[str, V] = {}
    origin: dict[str, str] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise KeyMappingError(f"{what}: key {key!r} is not a string")
        new = canonical_key(key)
        if new in out:
            raise KeyMappingError(
                f"{what}: keys {origin[new]!r} and {key!r} both map to {new!r}; "
                "keep one of them (is this a state dict saved from two wrappers at once?)"
            )
        out[new] = value
        origin[new] = key
    return out

# Where EMACallback puts the EMAs inside a sharded (torch.distributed.checkpoint) checkpoint's state_dict:
# under keys no module parameter can have, as DTensors beside the parameters they follow.
SHARDED_EMA_PREFIXES = {"ema1": "jitckpt:ema1/", "ema2": "jitckpt:ema2/"}
