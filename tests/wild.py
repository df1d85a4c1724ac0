"""Files in the layouts JiT weights are found in today, built from the golden example's EMA 1 with torch and
the safetensors library alone, as the tools that write them do (nothing of jitckpt's layout table is used:
the renames below are written out from the public sources, so a wrong row in the table fails the tests).

- diffusers PR #13098 (``JiTTransformer2DModel``), first revision: keys without ``net.``, ``blocks.N.
  adaLN_modulation.1`` -> ``blocks.N.adaLN_modulation``, ``final_layer.norm_final`` -> ``norm_final``,
  ``final_layer.linear`` -> ``linear_final``, ``final_layer.adaLN_modulation.1`` -> ``adaLN_modulation_final``;
- its later revision: ``attn.qkv`` split into ``attn.to_q/to_k/to_v`` (dimension 0, in that order),
  ``attn.proj`` -> ``attn.to_out.0``, ``attn.q_norm/k_norm`` -> ``attn.norm_q/norm_k``;
- BiliSakura/JiT-diffusers' folders (``model_index.json``, ``transformer/``, ``scheduler/``,
  ``conversion_metadata.json``) and diffusers' sharded weights (``...safetensors.index.json``);
- the earlier Hub wrapper's ``transformer.``-prefixed original names; azula's and ByteDance-Seed's plain
  EMA-1 state dict without ``net.``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.helpers import load_golden_torch

# The golden example's architecture in diffusers' config keys (depth 3, hidden 48, 4 heads, patch 4, ...).
GOLDEN_CONFIG = {
    "_class_name": "JiTTransformer2DModel", "_diffusers_version": "0.36.0", "sample_size": 16, "patch_size": 4,
    "in_channels": 3, "hidden_size": 48, "num_layers": 3, "num_attention_heads": 4, "mlp_ratio": 4.0,
    "attention_dropout": 0.0, "dropout": 0.0, "num_classes": 10, "bottleneck_dim": 8, "in_context_len": 4,
    "in_context_start": 1, "norm_eps": 1e-6,
}
MODEL_INDEX = {"_class_name": "JiTPipeline", "_diffusers_version": "0.36.0",
               "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
               "transformer": ["diffusers", "JiTTransformer2DModel"]}
SCHEDULER = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.36.0",
             "num_train_timesteps": 1000, "shift": 1.0}


def ema1() -> dict[str, torch.Tensor]:
    """The golden example's EMA 1 under its canonical ``net.`` keys."""
    return dict(load_golden_torch()["model_ema1"])


def diffusers_names(state: dict[str, torch.Tensor], split: bool = False) -> dict[str, torch.Tensor]:
    """``state`` (``net.`` keys) renamed as diffusers' JiTTransformer2DModel names it."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("net.")
        key = re.sub(r"^blocks\.(\d+)\.adaLN_modulation\.1\.", r"blocks.\1.adaLN_modulation.", key)
        key = key.replace("final_layer.norm_final.", "norm_final.").replace("final_layer.linear.", "linear_final.")
        key = key.replace("final_layer.adaLN_modulation.1.", "adaLN_modulation_final.")
        if split and ".attn.qkv." in key:
            for part, chunk in zip(("to_q", "to_k", "to_v"), torch.chunk(value, 3, dim=0)):
                out[key.replace(".attn.qkv.", f".attn.{part}.")] = chunk.contiguous()
            continue
        if split:
            key = key.replace(".attn.proj.", ".attn.to_out.0.")
            key = key.replace(".attn.q_norm.", ".attn.norm_q.").replace(".attn.k_norm.", ".attn.norm_k.")
        out[key] = value.contiguous()
    return out


def write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def diffusers_folder(root: Path, split: bool = False, shards: int = 1, weights: str | None = "ema1",
                     config: dict | None = None, pipeline: bool = True) -> Path:
    """A diffusers folder of the golden EMA 1 as ``save_pretrained`` and the Hub converters lay it out."""
    transformer = root / "transformer" if pipeline else root
    state = diffusers_names(ema1(), split)
    write_json(transformer / "config.json", config or GOLDEN_CONFIG)
    if shards == 1:
        save_file(state, str(transformer / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
    else:
        keys = list(state)
        weight_map = {}
        for i in range(shards):
            name = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
            part = {k: state[k] for k in keys[i::shards]}
            save_file(part, str(transformer / name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(part, name))
        total = sum(v.numel() * v.element_size() for v in state.values())
        write_json(transformer / "diffusion_pytorch_model.safetensors.index.json",
                   {"metadata": {"total_size": total}, "weight_map": weight_map})
    if pipeline:
        write_json(root / "model_index.json", MODEL_INDEX)
        write_json(root / "scheduler" / "scheduler_config.json", SCHEDULER)
        if weights is not None:
            write_json(root / "conversion_metadata.json", {"source_checkpoint": "checkpoint-last.pth",
                                                           "weights": weights, "variant_name": "JiT-T-4"})
    return root


def split_qkv_file(path: Path) -> Path:
    """One safetensors file in the split-attention names (diffusers PR #13098's later revision)."""
    save_file(diffusers_names(ema1(), split=True), str(path), metadata={"format": "pt"})
    return path


def transformer_prefixed_file(path: Path) -> Path:
    """The earlier Hub wrapper's file: the original names under ``transformer.`` instead of ``net.``."""
    save_file({"transformer." + k.removeprefix("net."): v.contiguous() for k, v in ema1().items()}, str(path))
    return path


def plain_ema_pth(path: Path) -> Path:
    """azula's / ByteDance-Seed's ``jit.pth``: ``state["model_ema1"]`` with ``net.`` removed, ``torch.save``d."""
    torch.save({k.replace("net.", ""): v for k, v in ema1().items()}, path)
    return path


def main(argv: list[str]) -> None:
    """``python -m tests.wild diffusers OUT [--split] [--shards N]``, ``python -m tests.wild split-qkv OUT``,
    ``python -m tests.wild transformer-prefixed OUT`` or ``python -m tests.wild plain-ema OUT``: write such a
    file or folder of the golden example's EMA 1 (the docs' examples use them)."""
    kind, out, *rest = argv
    if kind == "diffusers":
        shards = int(rest[rest.index("--shards") + 1]) if "--shards" in rest else 1
        diffusers_folder(Path(out), split="--split" in rest, shards=shards)
    else:
        {"split-qkv": split_qkv_file, "transformer-prefixed": transformer_prefixed_file,
         "plain-ema": plain_ema_pth}[kind](Path(out))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
