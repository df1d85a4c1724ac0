"""Checks of option values that Typer's ranges cannot express, run as the command line is read (before
anything loads): finite numbers, choices, and the forms of Lightning's --devices."""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import typer

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
PRECISIONS = ("64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "transformer-engine",
              "64", "32", "16", "bf16")  # Lightning's accepted spellings


def finite(value: Any) -> Any:
    """A float option's value, refused when it is NaN or infinite (a range lets NaN through)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def choice(options: tuple[str, ...]) -> Callable[[Optional[str]], Optional[str]]:
    def check(value: Optional[str]) -> Optional[str]:
        if value is not None and value not in options:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(options)}")
        return value
    return check


def not_under_a_file(path: str, flag: str) -> None:
    """An output folder to be made at ``path``: refused at once when a file stands at it or above it."""
    from pathlib import Path

    from ..errors import OutputError

    for place in (Path(path), *Path(path).parents):
        if place.exists():
            if not place.is_dir():
                raise OutputError(f"{flag} {path!r}: {str(place)!r} is a file, not a folder")
            return


def devices(value: str) -> str:
    """Lightning's --devices: auto, a count of at least 1, or a comma-separated list of device indices."""
    parts = value.split(",")
    if value == "auto" or (value.isdigit() and int(value) >= 1) or (
            len(parts) > 1 and all(p.strip().isdigit() for p in parts)):
        return value
    raise typer.BadParameter(f"{value!r}: give auto, a count of at least 1, or a list of device indices like 0,1")
