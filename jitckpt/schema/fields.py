"""Plain fields of a checkpoint: the training args as JSON-able data, and whole numbers checked into range.

Every message names the field by a bounded rendering of its path.
"""

from __future__ import annotations

import argparse
import pathlib
from typing import Any, Mapping

from ..errors import SchemaError, render


def plain_args(args: Any) -> dict[str, Any]:
    """Training args as JSON-able data (the original pickles an ``argparse.Namespace``).

    Values must be plain data: numbers, strings, None, paths (kept as strings),
    and lists, tuples, sets, frozensets (all kept as lists; sets sorted where
    they can be), slices (``[start, stop, step]``) or string-keyed mappings of
    those; anything else is a :class:`SchemaError` naming the arg.
    """
    if args is None:
        return {}
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    if not isinstance(args, Mapping):
        raise SchemaError(f"args must be a Namespace or a mapping, not {describe(args)}")
    return {_arg_name(k, ("args",)): _plain(v, ("args", k)) for k, v in args.items()}


_MAX_INT = 1 << 64
Where = tuple[Any, ...]  # the path of a value inside args, rendered only when an error names it


def _where(path: Where) -> str:
    """``args.lr`` / ``args.sizes[2]``: a bounded rendering of a path (each part cut to 40 characters)."""
    text = str(path[0])
    for part in path[1:]:
        text += f"[{part}]" if isinstance(part, int) else f".{render(part, 40)[1:-1] if isinstance(part, str) else part}"
    return text


def _arg_name(key: Any, where: Where) -> str:
    if not isinstance(key, str):
        raise SchemaError(f"{_where(where)} has a key that is not a string: {describe(key)}")
    return key


def _plain(value: Any, where: Where) -> Any:
    if value is None or isinstance(value, (bool, str, float)):
        return value
    if isinstance(value, int):
        if abs(value) >= _MAX_INT:
            raise SchemaError(f"{_where(where)} holds an integer too large for a training setting")
        return int(value)
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, (*where, i)) for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        items = [_plain(v, (*where, i)) for i, v in enumerate(value)]
        try:
            return sorted(items)
        except TypeError:  # mixed types: keep the order the file gave
            return items
    if isinstance(value, slice):
        return [_plain(v, (*where, part)) for part, v in
                (("start", value.start), ("stop", value.stop), ("step", value.step))]
    if isinstance(value, Mapping):
        return {_arg_name(k, where): _plain(v, (*where, k)) for k, v in value.items()}
    raise SchemaError(f"{_where(where)} holds {describe(value)}, not plain data")


def describe(value: Any) -> str:
    """A short, safe description of a value for an error message."""
    if isinstance(value, (bool, float)) or value is None:
        return repr(value)
    if isinstance(value, int):
        return f"the integer {value}" if abs(value) < 10**30 else "a huge integer"
    if isinstance(value, str):
        return f"the string {render(value, 60)}"
    return f"a {type(value).__name__}"


def checked_int(name: str, value: Any, high: int = (1 << 63) - 1) -> int | None:
    """``value`` as a field's integer in ``[0, high]`` (None stays None); else a SchemaError naming the field."""
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= high:
        raise SchemaError(f"{name} must be a whole number from 0 to {high}, but the file holds {describe(value)}")
    return value
