"""``example``: the toolkit's main job, end to end, on the bundled checkpoint and a generated image folder."""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any

import typer

from .console import echo, errors, out


def example(
    ctx: typer.Context,
    folder: Path = typer.Argument(Path("jitckpt-example"), metavar="FOLDER", help="Folder to run the example in."),
    force: bool = typer.Option(False, "--force", help="Overwrite files left there by an earlier run."),
) -> None:
    """Run the main job on the bundled tiny original checkpoint: inspect, convert, verify, then resume
    training for one epoch on a generated image folder, sample a grid and score an FID."""
    from . import example_steps as job
    from ..errors import OutputError
    from ..evaluation.inception import write_random_weights

    started = time.perf_counter()
    with errors():
        source = folder / "checkpoint-last.pth"
        if source.exists() and not force:
            raise OutputError(f"{str(source)!r} already exists; pass --force to start the example afresh")
        folder.mkdir(parents=True, exist_ok=True)
        job.copy_bundled_checkpoint(source)
        commands = job.steps(folder, force)
        for argv in commands:
            if argv[0] == "train":
                images = job.write_image_folder(folder / "data" / "train")
                out.print()
                echo(f"wrote {folder / 'data' / 'train'} ({images} generated {job.IMAGE_PIXELS}x{job.IMAGE_PIXELS} "
                     f"images in {job.CLASSES} classes, an ImageFolder tree)")
            if argv[0] == "fid-stats":
                write_random_weights(folder / "inception-random.pth")
                out.print()
                echo(f"wrote {folder / 'inception-random.pth'}: an InceptionV3 with RANDOM weights, so that nothing "
                     "is downloaded; the FID and Inception Score below show the mechanics, not image quality")
            _run(ctx.find_root().command, argv)
    out.print()
    echo(f"example done in {time.perf_counter() - started:.0f} s; everything it wrote is in {folder}/")


def _run(app: Any, argv: list[str]) -> None:
    """Run one ``jitckpt`` command line through ``app`` (the root command) in this process, as typed; stop the
    example if it fails."""
    out.print()
    echo((f"$ jitckpt {shlex.join(argv)}", "bold"))
    code = app.main(argv, prog_name="jitckpt", standalone_mode=False)
    if code:
        raise typer.Exit(code)
