"""The terminal side of the CLI: consoles, safe printing, the one-line error handler, progress, signals.

Every string that comes from a file, a path, an exception or the command line
goes through :func:`printable` and is printed as a :class:`rich.text.Text`, never
parsed as markup: only the fixed labels (``error:``, ``same``, ``present``) are
styled. Control characters and bidi overrides are shown escaped (``\\x1b``,
``\\u202e``), so a value can neither drive the terminal nor span two lines.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
import traceback
from contextlib import contextmanager
from types import FrameType
from typing import Any, Callable, Iterator, Optional, Tuple, Union

import typer
from rich.console import Console
from rich.text import Text

EXIT_DIFFERENT = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
PROGRESS_MIN_BYTES = 16 << 20
LARGE_JOB = {"bytes": 1 << 30, "images": 1000}  # work that gets a line at every tenth off a terminal
LOG_EVERY_S = 30.0
QUIET_S = 2.0  # off a terminal, no line before the job has run this long

# Neither console parses markup, emoji codes or highlights: what is printed is what was given.
out = Console(soft_wrap=True, markup=False, emoji=False, highlight=False)  # one line per value, copy-pastable
err = Console(stderr=True, soft_wrap=True, markup=False, emoji=False, highlight=False)
state = {"debug": False}

# C0 controls (newline and tab included), DEL, C1 controls, line and paragraph separators,
# bidi embeddings, overrides and isolates, and lone surrogates (undecodable bytes of a file name).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

Part = Union[str, Tuple[str, str], Text]


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _SHORT.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(value: object) -> str:
    """``str(value)`` with every control, line-breaking or bidi character escaped.

    Example:
        >>> printable("a\\x1b]0;pwned\\x07 b\\u202e")
        'a\\\\x1b]0;pwned\\\\x07 b\\\\u202e'
    """
    return _UNSAFE.sub(_escape, str(value))


def text(*parts: Part) -> Text:
    """One line of output: strings verbatim (escaped), ``(string, style)`` pairs styled, Text as is."""
    line = Text()
    for part in parts:
        if isinstance(part, Text):
            line.append_text(part)
        elif isinstance(part, tuple):
            line.append(printable(part[0]), style=part[1])
        else:
            line.append(printable(part))
    return line


def echo(*parts: Part) -> None:
    """Print one line on stdout (see :func:`text`)."""
    out.print(text(*parts))


def show(block: Any) -> None:
    """Print a table (or another block) on stdout; off a terminal, without the spaces that pad its lines."""
    if out.is_terminal:
        out.print(block)
        return
    with out.capture() as captured:
        out.print(block)
    out.file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def warn(message: object) -> None:
    """Print ``warning: MESSAGE`` on stderr."""
    err.print(text(("warning:", "yellow"), " ", str(message)))


def present(flag: bool) -> Text:
    """``present`` in green or ``absent`` in yellow."""
    return text(("present", "green") if flag else ("absent", "yellow"))


def size(n: float) -> str:
    """Bytes in decimal units, as ``ls -h --si`` shows them: ``3.1 MB``."""
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000 or unit == "TB":
            break
    return f"{n:.1f} {unit}"


def error_message(exc: BaseException) -> str:
    """What the one error line says about ``exc`` (unescaped).

    An ``OSError`` reads ``FILENAME: STRERROR`` when it names a file (``A -> B:``
    for two), else its strerror or message; anything else its message, with the
    remedies it offers in the CLI's terms (``--force``, not ``force=True``).
    """
    from ..errors import JiTCheckpointError, in_cli_terms

    if isinstance(exc, OSError) and not isinstance(exc, JiTCheckpointError):
        reason = exc.strerror or (str(exc.args[0]) if len(exc.args) == 1 else str(exc)) or type(exc).__name__
        names = [_filename(f) for f in (exc.filename, exc.filename2) if f is not None]
        return f"{' -> '.join(names)}: {reason}" if names else reason
    return in_cli_terms(str(exc)) or type(exc).__name__


def _filename(name: object) -> str:
    return os.fsdecode(name) if isinstance(name, (str, bytes, os.PathLike)) else str(name)


MAX_ERROR_CHARS = 2000  # a message quoting a key from a file (up to 16 MiB) is cut to this


def print_error(message: object) -> None:
    """Print ``error: MESSAGE`` on stderr, always one line, at most :data:`MAX_ERROR_CHARS` characters."""
    line = printable(message)  # escaped first: the cut bounds what reaches the terminal
    if len(line) > MAX_ERROR_CHARS:
        line = line[:MAX_ERROR_CHARS - 3] + "..."
    err.print(Text.assemble(("error:", "red"), " ", line))


class Terminated(SystemExit):
    """Raised in the main thread on SIGTERM, so ``finally`` blocks and context managers clean up."""

    code: int  # always 128 + the signal number (see _on_sigterm), never a message or None


@contextmanager
def errors() -> Iterator[None]:
    """Turn bad input into one line on stderr and a non-zero exit (a traceback with ``--debug``).

    ``JiTCheckpointError`` and ``OSError`` exit 2, Ctrl-C prints ``error: interrupted``
    and exits 130, SIGTERM (see :func:`install_signal_handlers`) prints
    ``error: terminated`` and exits 143. Wrap a command's whole body in it.
    """
    from ..errors import JiTCheckpointError

    try:
        yield
    except (JiTCheckpointError, OSError) as exc:
        if state["debug"]:
            raise
        print_error(error_message(exc))
        raise typer.Exit(EXIT_ERROR) from None
    except (RecursionError, MemoryError) as exc:  # a bound jitckpt missed: still one line, never a traceback
        if state["debug"]:
            raise
        what = "nests deeper" if isinstance(exc, RecursionError) else "needs more memory"
        print_error(f"the input {what} than jitckpt can handle; no checkpoint needs that (--debug for the trace)")
        raise typer.Exit(EXIT_ERROR) from None
    except KeyboardInterrupt:
        if state["debug"]:
            traceback.print_exc()
        print_error("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Terminated as exc:
        if state["debug"]:
            traceback.print_exc()
        print_error("terminated")
        raise typer.Exit(exc.code) from None


def _on_sigterm(signum: int, frame: Optional[FrameType]) -> None:
    """Raise :class:`Terminated` (exit 128 + signum); a second SIGTERM ends the process at once."""
    signal.signal(signum, signal.SIG_DFL)
    raise Terminated(128 + signum)


def install_signal_handlers() -> None:
    """Make SIGTERM unwind the stack like Ctrl-C does, unless SIGTERM is already handled or ignored."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


@contextmanager
def progress(total: int, label: str, unit: str = "bytes") -> Iterator[Optional[Callable[[int], None]]]:
    """Progress on stderr (bytes of big files, or images with their rate); yields the advance callback.

    On a terminal, a bar. Piped into a log, where a bar is noise, one line at every tenth of a large job
    (:data:`LARGE_JOB`) and every :data:`LOG_EVERY_S` seconds of any, each with the rate and the time left,
    from :data:`QUIET_S` seconds on: a job done sooner prints nothing, and the first estimate rests on a
    measured rate, not on the first chunk's.
    """
    if not err.is_terminal:
        yield _progress_lines(total, label, unit)
        return
    if unit == "bytes" and total < PROGRESS_MIN_BYTES:
        yield None
        return
    from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TaskProgressColumn,
                               TextColumn, TimeRemainingColumn, TransferSpeedColumn)

    columns = [DownloadColumn(), TransferSpeedColumn()] if unit == "bytes" else [
        MofNCompleteColumn(), TaskProgressColumn(), TextColumn("{task.fields[rate]}", markup=False)]
    with Progress(TextColumn("{task.description}", style="progress.description", markup=False), BarColumn(),
                  *columns, TimeRemainingColumn(), console=err, transient=True) as bar:
        task = bar.add_task(printable(label), total=total, rate="")
        started = time.perf_counter()

        def advance(n: int) -> None:
            bar.advance(task, n)
            done = bar.tasks[0].completed
            bar.update(task, rate=f"{done / max(time.perf_counter() - started, 1e-9):.2f} {unit}/s")

        yield advance


def _progress_lines(total: int, label: str, unit: str) -> Callable[[int], None]:
    """The advance callback that writes :func:`progress`'s lines for a log."""
    started = last = time.perf_counter()
    state = {"done": 0, "tenth": -1}  # a large job's first step gets a line too: the estimate, up front
    large = total >= LARGE_JOB.get(unit, 0)

    def advance(n: int) -> None:
        nonlocal last
        state["done"] += n
        now, done = time.perf_counter(), state["done"]
        tenth = done * 10 // max(total, 1)
        if now - started < QUIET_S or not ((large and tenth > state["tenth"]) or now - last >= LOG_EVERY_S):
            return
        state["tenth"], last = tenth, now
        rate = done / max(now - started, 1e-9)
        left = (total - done) / rate if rate else 0.0
        amount = f"{size(done)} of {size(total)}" if unit == "bytes" else f"{done} of {total} {unit}"
        rate_text = f"{size(int(rate))}/s" if unit == "bytes" else f"{rate:.2f} {unit}/s"
        err.print(Text(printable(f"{label}: {amount} ({100 * done // max(total, 1)}%), {rate_text}, "
                                 f"about {_duration(left)} left")))

    return advance


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


__all__ = ["EXIT_DIFFERENT", "EXIT_ERROR", "EXIT_INTERRUPTED", "Terminated", "echo", "err", "error_message",
           "errors", "install_signal_handlers", "out", "present", "print_error", "printable", "progress", "show", "size",
           "state", "text", "warn"]
