"""Other tools' architecture configs, mapped onto the original ``JiT`` constructor's dimensions.

One row per config layout: diffusers' ``JiTTransformer2DModel`` (``transformer/config.json``: ``num_layers``,
``num_attention_heads``, ``sample_size``, ...) and the earlier Hub wrapper that names an official variant
(``model_type: "JiT-B/16"``, ``num_class_embeds``). The result is a plain dict of the fields of
:class:`jitckpt.layouts.arch.Arch`; the caller builds and checks the architecture. A config describing a
network the original cannot be (no class embedding, other than 3 input channels) is refused in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import SchemaError

IN_CHANNELS = 3  # JiT works on RGB pixels
DEFAULT_MLP_RATIO = 4.0


@dataclass(frozen=True)
class ConfigLayout:
    """A config layout: ``fields`` maps the original's dimension names onto the config's keys."""

    name: str
    signature: tuple[str, ...]
    fields: tuple[tuple[str, str], ...]


DIFFUSERS = ConfigLayout(
    "diffusers",
    signature=("num_layers", "num_attention_heads", "hidden_size"),
    fields=(("depth", "num_layers"), ("hidden_size", "hidden_size"), ("num_heads", "num_attention_heads"),
            ("patch_size", "patch_size"), ("bottleneck_dim", "bottleneck_dim"),
            ("in_context_len", "in_context_len"), ("in_context_start", "in_context_start"),
            ("num_classes", "num_classes"), ("img_size", "sample_size")),
)
CONFIG_LAYOUTS = (DIFFUSERS,)
# diffusers' JiTTransformer2DModel defaults (those of JiT-B/16 at 256 px), for keys a config leaves out.
DIFFUSERS_DEFAULTS: dict[str, Any] = {
    "sample_size": 256, "patch_size": 16, "in_channels": 3, "hidden_size": 768, "num_layers": 12,
    "num_attention_heads": 12, "mlp_ratio": DEFAULT_MLP_RATIO, "attention_dropout": 0.0, "dropout": 0.0,
    "num_classes": 1000, "bottleneck_dim": 128, "in_context_len": 32, "in_context_start": 4, "norm_eps": 1e-6,
}
TRANSFORMER_CLASS = "JiTTransformer2DModel"


def _whole(name: str, value: Any, low: int = 0) -> int:
    if type(value) is not int or not low <= value < 1 << 24:
        raise SchemaError(f"config.json: {name} must be a whole number from {low} to {(1 << 24) - 1}, "
                          f"not {str(value)[:40]!r}")
    return value


def arch_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``Arch`` fields a diffusers transformer config describes; a SchemaError for what JiT cannot be."""
    full = {**DIFFUSERS_DEFAULTS, **config}
    if full.get("in_channels") != IN_CHANNELS:
        raise SchemaError(f"config.json: in_channels={str(full.get('in_channels'))[:20]}: a JiT variant jitckpt's "
                          f"model cannot represent (the original JiT denoises {IN_CHANNELS}-channel RGB pixels)")
    if full.get("num_classes") in (None, 0):
        raise SchemaError("config.json: num_classes is 0 or null: an unconditional variant jitckpt's model cannot "
                          "represent (the original JiT has a class embedding)")
    out: dict[str, Any] = {field: _whole(key, full[key], 0 if field.startswith("in_context") else 1)
                           for field, key in DIFFUSERS.fields}
    if out["in_context_len"] and out["in_context_start"] >= out["depth"]:
        raise SchemaError(f"config.json: in_context_start={out['in_context_start']} is not below "
                          f"num_layers={out['depth']}: the in-context tokens would join no block")
    ratio = full.get("mlp_ratio")
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0 < ratio < 64:
        raise SchemaError(f"config.json: mlp_ratio must be a positive number, not {str(ratio)[:40]!r}")
    width = int(out["hidden_size"] * ratio * 2 / 3)
    out["mlp_hidden_dim"] = None if width == int(out["hidden_size"] * 4 * 2 / 3) else width
    return out


def config_from_arch(arch_dict: Mapping[str, Any], attention_dropout: float = 0.0,
                     dropout: float = 0.0) -> dict[str, Any]:
    """``transformer/config.json`` for an architecture (``Arch.to_dict()``), in diffusers' key names."""
    config: dict[str, Any] = {"_class_name": TRANSFORMER_CLASS}
    for field, key in DIFFUSERS.fields:
        config[key] = arch_dict[field]
    hidden, width = arch_dict["hidden_size"], arch_dict.get("mlp_hidden_dim")
    config.update(in_channels=IN_CHANNELS, mlp_ratio=DEFAULT_MLP_RATIO if width is None else width * 3 / 2 / hidden,
                  attention_dropout=attention_dropout, dropout=dropout, norm_eps=1e-6)
    return config


def is_transformer_config(config: Any) -> bool:
    """True for a config of diffusers' JiT transformer (by class name, or by its signature keys)."""
    if not isinstance(config, dict):
        return False
    if "_class_name" in config:
        return config["_class_name"] == TRANSFORMER_CLASS
    return all(k in config for k in DIFFUSERS.signature) and "bottleneck_dim" in config
