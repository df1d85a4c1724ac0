"""Nested Python data with tensors as JSON text plus a flat dict of tensors.

Used where a format stores structure as text (safetensors metadata): tensors
become ``{"__tensor__": key}``, tuples, sets, Namespaces and non-string dict
keys are tagged so that decoding gives back exactly what was encoded. The
other plain data an honest ``torch.save`` holds is stored as a torch file
written by jitckpt would hold it: frozensets as sets, slices as
``(start, stop, step)`` tuples, paths as strings.
"""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import Any

from ..errors import FormatError, SchemaError
from ..tensors.anytensor import is_tensor


def encode(obj: Any, tensors: dict[str, Any], prefix: str) -> str:
    """JSON text for ``obj``; its tensors are added to ``tensors`` under ``prefix/<path>``."""
    return json.dumps(_encode(obj, tensors, prefix))


MAX_DEPTH = 100


def decode(text: str, tensors: dict[str, Any]) -> Any:
    """The value ``encode`` gave ``text`` for; a :class:`FormatError` for anything malformed or nested too deeply."""
    try:
        value = json.loads(text)
        _check_depth(value)
        return _decode(value, tensors)
    except RecursionError:
        raise FormatError("corrupt metadata (nested too deeply)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"corrupt metadata ({type(exc).__name__}: {str(exc)[:200]})") from None


def _check_depth(value: Any) -> None:
    """Refuse JSON nested deeper than MAX_DEPTH, without recursion (decoding recurses)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"nested more than {MAX_DEPTH} levels deep")
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children)


def _encode(obj: Any, tensors: dict[str, Any], path: str) -> Any:
    if is_tensor(obj):
        tensors[path] = obj
        return {"__tensor__": path}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, argparse.Namespace):
        return {"__namespace__": _encode(vars(obj), tensors, path)}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, (set, frozenset)):
        return {"__set__": [_encode(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, slice):
        return _encode((obj.start, obj.stop, obj.step), tensors, path)
    if isinstance(obj, pathlib.PurePath):
        return str(obj)
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, f"{path}/{k}") for k, v in obj.items()}
        return {"__items__": [[_encode(k, tensors, path), _encode(v, tensors, f"{path}/{i}")]
                              for i, (k, v) in enumerate(obj.items())]}
    raise SchemaError(f"cannot store {type(obj).__name__} at {path!r} outside a pickle")


def _decode(obj: Any, tensors: dict[str, Any]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__set__" in obj:
        items = [_decode(v, tensors) for v in obj["__set__"]]
        try:
            return set(items)
        except TypeError:  # a set of sets (frozensets, as written): keep the elements as a list
            return items
    if "__namespace__" in obj:
        return argparse.Namespace(**_decode(obj["__namespace__"], tensors))
    if "__items__" in obj:
        return {_key(_decode(k, tensors)): _decode(v, tensors) for k, v in obj["__items__"]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def _key(key: Any) -> Any:
    """A decoded dict key: a set (a frozenset key, as written) becomes a tuple, so that it stays hashable."""
    return tuple(key) if isinstance(key, (set, list)) else key
