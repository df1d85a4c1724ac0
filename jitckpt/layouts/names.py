"""The namings of JiT's tensors: one row per scheme, mapped onto (and back from) the canonical ``net.`` keys.

A key is first freed of wrapper prefixes (DDP's ``module.``, ``torch.compile``'s ``_orig_mod.`` anywhere; a
training module's ``model.``, ``denoiser.``, ``model_without_ddp.``, a pipeline's ``transformer.`` in front);
then the naming whose signature keys are all present (the most specific one when several are) renames it
onto the original ``Denoiser``'s names; a bare network's keys gain ``net.``. A fusion gathers tensors a
naming keeps apart (diffusers' ``to_q``/``to_k``/``to_v``) into the one the original fuses (``qkv``), along
dimension 0 in that order, lazily. Two source keys that land on one canonical key are an error naming both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, TypeVar

from ..tensors.anytensor import concat_rows, dtype_name, shape_of, split_rows
from ..errors import KeyMappingError

V = TypeVar("V")

CANONICAL_PREFIX = "net."
# Segments that wrappers insert anywhere in a key; never part of JiT's own names.
WRAPPER_SEGMENTS = frozenset({"module", "_orig_mod"})
# Attributes under which a training module or pipeline may hold the Denoiser or its network.
CONTAINER_PREFIXES = ("model.", "denoiser.", "model_without_ddp.", "transformer.")
# First segment of every key of a bare JiT network (no ``net.`` yet), in the original's names.
JIT_TOP_LEVEL = (
    "pos_embed", "in_context_posemb", "t_embedder.", "y_embedder.", "x_embedder.", "blocks.", "final_layer.",
)


@dataclass(frozen=True)
class Fusion:
    """Tensors ``parts`` (foreign name templates) stored apart, which the original keeps as ``canonical``.

    Templates are key prefixes relative to the network; ``{n}`` stands for a block index. Each part is
    followed by the same suffix (``weight``, ``bias``) as the fused tensor.
    """

    canonical: str
    parts: tuple[str, ...]


@dataclass(frozen=True)
class Naming:
    """One way of naming a JiT network's tensors.

    ``renames`` pairs a canonical prefix template with the foreign one (relative to the network, ``{n}`` a
    block index); ``signature`` holds foreign key templates that only this naming has, all present in a
    state dict it names.
    """

    name: str
    label: str
    signature: tuple[str, ...] = ()
    renames: tuple[tuple[str, str], ...] = ()
    fusions: tuple[Fusion, ...] = ()


_DIFFUSERS_RENAMES = (
    ("blocks.{n}.adaLN_modulation.1.", "blocks.{n}.adaLN_modulation."),
    ("final_layer.norm_final.", "norm_final."),
    ("final_layer.linear.", "linear_final."),
    ("final_layer.adaLN_modulation.1.", "adaLN_modulation_final."),
)

NAMINGS: tuple[Naming, ...] = (
    Naming("jit", "the original JiT names (net.blocks.N.attn.qkv, final_layer.*)"),
    Naming("diffusers", "diffusers JiTTransformer2DModel names (fused attention: attn.qkv)",
           signature=("adaLN_modulation_final.weight",), renames=_DIFFUSERS_RENAMES),
    Naming("diffusers-split", "diffusers JiTTransformer2DModel names (split attention: attn.to_q, to_k, to_v)",
           signature=("adaLN_modulation_final.weight", "blocks.{n}.attn.to_q.weight"),
           renames=_DIFFUSERS_RENAMES + (
               ("blocks.{n}.attn.proj.", "blocks.{n}.attn.to_out.0."),
               ("blocks.{n}.attn.q_norm.", "blocks.{n}.attn.norm_q."),
               ("blocks.{n}.attn.k_norm.", "blocks.{n}.attn.norm_k."),
           ),
           fusions=(Fusion("blocks.{n}.attn.qkv.", ("blocks.{n}.attn.to_q.", "blocks.{n}.attn.to_k.",
                                                    "blocks.{n}.attn.to_v.")),)),
)
NAMING_NAMES = tuple(n.name for n in NAMINGS)


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile(re.escape(template).replace(re.escape("{n}"), r"(?P<n>\d+)"))


def _fill(template: str, match: re.Match[str]) -> str:
    return template.replace("{n}", match.group("n")) if "{n}" in template else template


def strip_wrappers(key: str) -> str:
    """``key`` without wrapper segments and container prefixes (``net.`` kept where it is)."""
    stripped = ".".join(part for part in key.split(".") if part not in WRAPPER_SEGMENTS)
    changed = True
    while changed and not stripped.startswith(CANONICAL_PREFIX):
        changed = False
        for prefix in CONTAINER_PREFIXES:
            if stripped.startswith(prefix):
                stripped, changed = stripped[len(prefix):], True
    return stripped


def canonical_key(key: str) -> str:
    """The canonical ``net.`` key for ``key`` in the original's names (returned unchanged if not a JiT key)."""
    stripped = strip_wrappers(key)
    if stripped.startswith(JIT_TOP_LEVEL):
        return CANONICAL_PREFIX + stripped
    return stripped


def _bare(key: str) -> str:
    stripped = strip_wrappers(key)
    return stripped[len(CANONICAL_PREFIX):] if stripped.startswith(CANONICAL_PREFIX) else stripped


def wrapper_of(keys: Any) -> str | None:
    """The wrapper prefix the first key carries before the network's names (``transformer.``, ``module.net.``),
    or None when it carries none but ``net.``."""
    for key in keys:
        if isinstance(key, str):
            bare = _bare(key)
            prefix = key[: len(key) - len(bare)] if key.endswith(bare) else ""
            return prefix if prefix not in ("", CANONICAL_PREFIX) else None
    return None


def naming_of(keys: Any) -> Naming:
    """The most specific naming whose signature ``keys`` (any wrapping) all match; the original's otherwise."""
    bare = [_bare(k) for k in keys if isinstance(k, str)]
    best = NAMINGS[0]
    for naming in NAMINGS[1:]:
        patterns = [_pattern(t) for t in naming.signature]
        if all(any(p.fullmatch(k) for k in bare) for p in patterns) and len(naming.signature) > len(best.signature):
            best = naming
    return best


def _renamed(key: str, pairs: list[tuple[re.Pattern[str], str]]) -> str:
    for pattern, template in pairs:
        match = pattern.match(key)
        if match:
            return _fill(template, match) + key[match.end():]
    return key


def to_canonical(state: Mapping[str, V], what: str = "state dict") -> tuple[dict[str, Any], Naming]:
    """``state`` under the canonical keys, in order, with the naming it was recognised by.

    Raises :class:`KeyMappingError` when two keys map onto one (naming both), or when a fused tensor's
    parts are not all there or do not stack.
    """
    for key in state:
        if not isinstance(key, str):
            raise KeyMappingError(f"{what}: key {_short(key)} is not a string")
    naming = naming_of(state)
    renames = [(_pattern(foreign), canonical) for canonical, foreign in naming.renames]
    fusions = [(_pattern(part), i, fusion) for fusion in naming.fusions for i, part in enumerate(fusion.parts)]
    out: dict[str, Any] = {}
    origin: dict[str, str] = {}
    gathered: dict[str, list[Any]] = {}
    for key, value in state.items():
        bare = _bare(key)
        fused = next(((m, i, f) for p, i, f in fusions if (m := p.match(bare))), None)
        if fused is not None:
            match, index, fusion = fused
            new = CANONICAL_PREFIX + _fill(fusion.canonical, match) + bare[match.end():]
            if new in out and new not in gathered:
                _collision(what, origin[new], key, new)
            parts = gathered.setdefault(new, [None] * len(fusion.parts))
            if new not in out:
                out[new], origin[new] = parts, key  # keeps the fused tensor where its first part stood
            if parts[index] is not None:
                _collision(what, parts[index][0], key, new)
            parts[index] = (key, value)
            continue
        new = canonical_key(_renamed(bare, renames)) if naming.renames else canonical_key(key)
        if new in out:
            _collision(what, origin[new], key, new)
        out[new], origin[new] = value, key
    for new, parts in gathered.items():
        if any(p is None for p in parts):
            have = ", ".join(repr(p[0]) for p in parts if p is not None)
            raise KeyMappingError(f"{what}: {have} without the rest of the tensors that make {new!r}")
        out[new] = _fuse(new, parts, what)
    return out, naming


def _collision(what: str, first: str, second: str, new: str) -> None:
    raise KeyMappingError(f"{what}: keys {first!r} and {second!r} both map to {new!r}; keep one of them (is this "
                          "a state dict saved from two wrappers, or in two namings, at once?)")


def _fuse(name: str, parts: list[tuple[str, Any]], what: str) -> Any:
    """The parts (equal in shape and dtype: q, k and v are one width each) stacked along dimension 0."""
    shapes = {shape_of(t) for _, t in parts}
    dtypes = {dtype_name(t) for _, t in parts}
    if len(shapes) != 1 or len(dtypes) != 1 or not next(iter(shapes)):
        listed = ", ".join(f"{k!r} {dtype_name(t)} {shape_of(t)}" for k, t in parts)
        raise KeyMappingError(f"{what}: {listed} must have one shape and dtype to make {name!r}")
    return concat_rows([t for _, t in parts], name)


def normalize_keys(state: Mapping[str, V], what: str = "state dict") -> dict[str, Any]:
    """:func:`to_canonical` without the naming."""
    return to_canonical(state, what)[0]


def from_canonical(state: Mapping[str, Any], naming: str | Naming, prefix: str = "") -> dict[str, Any]:
    """``state`` (canonical ``net.`` keys) under ``naming``'s names, with ``prefix`` before each, in order.

    A fused tensor is split along dimension 0 into its parts (lazily where the tensor is file-backed).
    """
    row = naming if isinstance(naming, Naming) else get(naming)
    renames = [(_pattern(canonical), foreign) for canonical, foreign in row.renames]
    splits = [(_pattern(f.canonical), f) for f in row.fusions]
    out: dict[str, Any] = {}
    for key, value in state.items():
        bare = key[len(CANONICAL_PREFIX):] if key.startswith(CANONICAL_PREFIX) else key
        split = next(((m, f) for p, f in splits if (m := p.match(bare))), None)
        if split is not None:
            match, fusion = split
            pieces = split_rows(value, len(fusion.parts))
            for template, piece in zip(fusion.parts, pieces):
                out[prefix + _fill(template, match) + bare[match.end():]] = piece
            continue
        out[prefix + _renamed(bare, renames)] = value
    return out


def get(name: str) -> Naming:
    """The naming called ``name``; a KeyMappingError listing the known ones otherwise."""
    for naming in NAMINGS:
        if naming.name == name:
            return naming
    raise KeyMappingError(f"unknown naming {name!r}; choose one of: {', '.join(NAMING_NAMES)}")


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, (int, float, bool, type(None))) else type(value).__name__
    return text[:60]
