"""``export``: publishable weights in the Hugging Face layout (see :mod:`jitckpt.export`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .console import echo, errors, warn


def export(
    ckpt: Path = typer.Argument(..., help="Checkpoint to export (any format)."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder to write (model.safetensors, config.json, "
                                                          "README.md, samples.png)."),
    ema: str = typer.Option("1", "--ema", help="1, 2 or raw: which weights."),
    all_emas: bool = typer.Option(False, "--all-emas", help="Write ema1/, ema2/ and raw/ side by side."),
    eval_json: Optional[Path] = typer.Option(None, "--eval-json", help="The result of `jitckpt eval --json` for "
                                                                      "these weights: scores for the model card."),
    license: Optional[str] = typer.Option(None, "--license", help="The license named in the model card."),
    no_samples: bool = typer.Option(False, "--no-samples", help="Do not draw samples.png."),
    force: bool = typer.Option(False, "--force", help="Replace OUTPUT if it exists."),
) -> None:
    """Export one set of weights for inference users: weights, config, model card and samples."""
    from ..evaluation.sampling import weights_name
    from ..export import export as run_export

    with errors():
        folders = run_export(ckpt, output, weights_name(ema), all_emas=all_emas, eval_json=eval_json,
                             license=license, samples=not no_samples, force=force, on_warning=warn)
        for folder in folders:
            echo(f"wrote {folder} (model.safetensors, config.json, README.md"
                 f"{', samples.png' if not no_samples else ''})")
