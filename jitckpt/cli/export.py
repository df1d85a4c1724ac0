"""``export``: publishable weights in the Hugging Face layout (see :mod:`jitckpt.publishing.export`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..formats.options import EXPORT_DTYPES, EXPORT_LAYOUTS
from ..formats import is_checkpoint_folder
from ..storage.atomic_folder import writable_folder_target
from .console import echo, errors, warn

LAYOUT_HELP = "; ".join(f"{name}: {what}" for name, what in EXPORT_LAYOUTS.items())  # from the one table


def export(
    ckpt: str = typer.Argument(..., metavar="CKPT", help="Checkpoint to export (any format), or its URL."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder to write (model.safetensors, config.json, "
                                                          "README.md, samples.png)."),
    ema: str = typer.Option("1", "--ema", help="1, 2 or raw: which weights."),
    all_emas: bool = typer.Option(False, "--all-emas", help="Write ema1/, ema2/ and raw/ side by side."),
    eval_json: Optional[Path] = typer.Option(None, "--eval-json", help="The result of `jitckpt eval --json` for "
                                                                      "these weights: scores for the model card."),
    license: Optional[str] = typer.Option(None, "--license", help="The license named in the model card."),
    no_samples: bool = typer.Option(False, "--no-samples", help="Do not draw samples.png."),
    force: bool = typer.Option(False, "--force", help="Replace OUTPUT if it exists."),
    layout: str = typer.Option("hf", "--layout", help=LAYOUT_HELP),
    dtype: str = typer.Option("keep", "--dtype", help="Stored precision: " + ", ".join(EXPORT_DTYPES) +
                                                     " (keep: the source's; training files are float32)."),
    diffusers_names: str = typer.Option("fused", "--diffusers-names",
                                        help="diffusers layout: fused (attn.qkv) or split (attn.to_q/to_k/to_v) "
                                             "attention weights."),
    class_names: Optional[Path] = typer.Option(None, "--class-names",
                                               help="diffusers layout: a text file of class names, one a line "
                                                    "(model_index.json's id2label)."),
) -> None:
    """Export one set of weights for inference users: weights, config, model card and samples."""
    from ..evaluation import weights_name

    with errors():
        weights_name(ema)
        writable_folder_target(output, force, is_checkpoint_folder, ckpt)  # before the checkpoint and torch load
        from ..publishing.export import export as run_export

        folders = run_export(ckpt, output, weights_name(ema), all_emas=all_emas, eval_json=eval_json,
                             license=license, samples=not no_samples, force=force, on_warning=warn, layout=layout,
                             dtype=dtype, diffusers_names=diffusers_names, class_names=class_names)
        files = EXPORT_LAYOUTS[layout].split(" (")[0]
        for folder in folders:
            echo(f"wrote {folder} ({files}{', samples.png' if not no_samples else ''})")
