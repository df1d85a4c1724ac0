"""The facts of every format, in the registry's order: a table that loads nothing, so that the command line's
help and messages can list the formats without importing the readers (``jitckpt.formats`` builds the registry
from it, and each format module takes its facts from its row)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class FormatFacts:
    """What a format is called, what its outputs' names end in (the first is the default), how it is stored
    (a file or a folder) and how ``convert`` writes it (``none``: another command does)."""

    name: str
    module: str  # the module of jitckpt.formats that reads (and writes) it, or "package.module:object"
    suffixes: tuple[str, ...]
    label: str
    description: str
    kind: Literal["file", "folder"]
    writes: Literal["file", "folder", "none"]
    converts_to: str = "pth"  # what ``convert`` writes from this format when told nothing (``-o`` nor ``--to``)


FORMAT_TABLE: tuple[FormatFacts, ...] = (
    FormatFacts("pth", "original", (".pth", ".pt"), "original JiT .pth",  # .bin is not ours to claim
                "original JiT .pth (torch.save of model, optimizer, epoch, args, model_ema1, model_ema2)",
                "file", "file", converts_to="ckpt"),
    FormatFacts("ckpt", "lightning", (".ckpt",), "Lightning .ckpt",
                "Lightning .ckpt (trainer.fit(..., ckpt_path=...) resumes from it)", "file", "file"),
    FormatFacts("safetensors", "safetensors", (".safetensors",), "safetensors",
                "safetensors: full training state (pickle-free) or a weights-only export", "file", "file"),
    FormatFacts("dcp", "dcp", (".dcp",), "DCP directory",  # a folder's name: -o run.dcp, or any name with --to dcp
                "torch.distributed.checkpoint directory (FSDP2 / ModelParallelStrategy sharded checkpoint)",
                "folder", "folder"),
    FormatFacts("export", "export", (), "jitckpt export folder",
                "jitckpt export folder (model.safetensors + config.json: one set of weights, for inference)",
                "folder", "none"),
    FormatFacts("diffusers", "diffusers", (), "diffusers folder",
                "diffusers folder (model_index.json, transformer/config.json and diffusion_pytorch_model.safetensors: "
                "one set of weights, for inference)", "folder", "none"),
)


WEIGHTS_ONLY_TO = "safetensors"  # what a weights-only conversion writes when told nothing


def facts(name: str) -> FormatFacts:
    return next(row for row in FORMAT_TABLE if row.name == name)


def writable() -> list[str]:
    """The formats ``convert`` and ``save`` write, in the table's order."""
    return [row.name for row in FORMAT_TABLE if row.writes != "none"]


def either(items: list[str]) -> str:
    """``a, b or c``."""
    return ", ".join(items[:-1]) + f" or {items[-1]}" if len(items) > 1 else "".join(items)


def folder_writable() -> list[str]:
    """The formats ``convert`` writes as folders (the ones ``--shards`` and ``-o FOLDER`` apply to)."""
    return [name for name in writable() if facts(name).writes == "folder"]


def suffix_list() -> str:
    """``.pth, .ckpt, .safetensors or .dcp``: the names an output may end in (each format's first suffix)."""
    return either([facts(name).suffixes[0] for name in writable()])


def file_suffixes() -> str:
    """``.pth, .ckpt or .safetensors``: the suffixes of the formats stored as one file."""
    return either([row.suffixes[0] for row in FORMAT_TABLE if row.kind == "file"])


def folder_labels() -> str:
    """``DCP directory, jitckpt export folder or diffusers folder``."""
    return either([row.label for row in FORMAT_TABLE if row.kind == "folder"])


def default_targets() -> str:
    """``.pth -> .ckpt, others -> .pth``: what ``convert`` writes when told nothing, in words."""
    special = [row for row in FORMAT_TABLE if row.converts_to != "pth" and row.suffixes]
    return ", ".join(f"{row.suffixes[0]} -> {facts(row.converts_to).suffixes[0]}" for row in special) + \
        ", others -> " + facts("pth").suffixes[0]
