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

import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from .. import __version__
from . import checkpoints, evaluation, example, export, train
from ..formats.table import FORMAT_TABLE, either
from .console import EXIT_DIFFERENT, EXIT_ERROR, EXIT_INTERRUPTED, echo, install_signal_handlers, print_error, state


class _OneLineErrors(TyperGroup):
    """The command group, whose usage errors (a missing option, a value out of range, an unknown command) are
    one ``error:`` line naming the command, exit 2, as every other error: never click's three-line usage."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, windows_expand_args: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except typer.TyperException as exc:
            code = _usage_error(exc)
        except typer.Abort:  # Ctrl-C while click itself was reading input
            print_error("interrupted")
            code = EXIT_INTERRUPTED
        sys.exit(code if isinstance(code, int) else 0)


class _NamedCommand(TyperCommand):
    """A command whose usage errors name it: click's parser raises some (an option missing its value) without
    the command's context, and the line would otherwise point at the top-level help."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # click's Context, vendored inside typer
        try:
            return super().parse_args(ctx, args)
        except typer.TyperException as exc:
            if getattr(exc, "ctx", False) is None:
                exc.ctx = ctx  # type: ignore[attr-defined]  # click's UsageError carries the context it names
            raise


def _usage_error(exc: typer.TyperException) -> int:
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError":  # a bare ``jitckpt`` shows the help (our text, not a file's)
        print(exc.format_message())
        return EXIT_ERROR
    where = ctx.command_path if ctx is not None else "jitckpt"
    message = exc.format_message().rstrip(".")
    print_error(f"{where}: {message[:1].lower()}{message[1:]} (see {where} --help)")
    return int(getattr(exc, "exit_code", EXIT_ERROR)) or EXIT_ERROR

# -h is --help for the group and, inherited through the context, for every command. The help is
# click's plain layout (rich_markup_mode=None): Typer's rich layout shows a flag as "--json <bool>".
app = typer.Typer(
    cls=_OneLineErrors,
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


COMMANDS: dict[str, Any] = {
    "inspect": checkpoints.inspect, "convert": checkpoints.convert, "verify": checkpoints.verify, "train": train.train,
    "eval": evaluation.evaluate_command, "fid-stats": evaluation.fid_stats_command,
    "fid-helper-weights": evaluation.fid_helper_weights, "fetch-inception": evaluation.fetch_inception,
    "fetch-stats": evaluation.fetch_stats_command,
    "sample": evaluation.sample, "export": export.export, "example": example.example,
}


def _summary(function: Any) -> str:
    """The first sentence of a command's docstring, whole (click would cut it at 45 characters)."""
    paragraph = " ".join((function.__doc__ or "").strip().split("\n\n")[0].split())
    return paragraph.split(". ")[0].rstrip(".") + "."


for _name, _function in COMMANDS.items():
    app.command(_name, short_help=_summary(_function), cls=_NamedCommand)(_function)


def run() -> None:
    """Console-script entry point: SIGTERM unwinds like Ctrl-C, so temporary files are removed."""
    install_signal_handlers()
    app(prog_name="jitckpt")


__all__ = ["EXIT_DIFFERENT", "EXIT_ERROR", "app", "run"]
