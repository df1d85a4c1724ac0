"""The ``jitckpt`` command line: a thin Typer layer over :mod:`jitckpt.api`.

Errors print one line (``error: ...``) and exit 2; ``--debug`` shows the
traceback instead. ``verify`` exits 1 when checkpoints differ or a file is
damaged; Ctrl-C exits 130, SIGTERM 143, after cleaning up.

One module per command family: :mod:`.checkpoints` (inspect, convert, verify),
:mod:`.example`, :mod:`.export`, :mod:`.train`, :mod:`.evaluation` (eval, fid-stats, fid-helper-weights,
fetch-inception, sample); :mod:`.console` prints, safely. Importing this package imports no torch.

May import: every other wing.
"""

from __future__ import annotations

import typer

from .. import __version__
from . import checkpoints, evaluation, example, export, train
from ..formats.table import FORMAT_TABLE, either
from .console import EXIT_DIFFERENT, EXIT_ERROR, echo, install_signal_handlers, state

# -h is --help for the group and, inherited through the context, for every command. The help is
# click's plain layout (rich_markup_mode=None): Typer's rich layout shows a flag as "--json <bool>".
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Inspect, convert and verify JiT checkpoints: " + either([row.label for row in FORMAT_TABLE]) + ".",
)


def _print_version(value: bool) -> None:
    """``--version``: print the version and exit 0, before click asks for a command."""
    if value:
        echo(f"jitckpt {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", callback=_print_version,
                                 is_eager=True),
) -> None:
    state["debug"] = debug


app.command()(checkpoints.inspect)
app.command()(checkpoints.convert)
app.command()(checkpoints.verify)
app.command()(train.train)
app.command("eval")(evaluation.evaluate_command)
app.command("fid-stats")(evaluation.fid_stats_command)
app.command("fid-helper-weights")(evaluation.fid_helper_weights)
app.command("fetch-inception")(evaluation.fetch_inception)
app.command()(evaluation.sample)
app.command()(export.export)
app.command()(example.example)


def run() -> None:
    """Console-script entry point: SIGTERM unwinds like Ctrl-C, so temporary files are removed."""
    install_signal_handlers()
    app(prog_name="jitckpt")


__all__ = ["EXIT_DIFFERENT", "EXIT_ERROR", "app", "run"]
