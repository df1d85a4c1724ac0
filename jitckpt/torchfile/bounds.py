"""Bounds on what a decoded pickle built: cheap hashing of keys, and the tree check (cycles, depth, and the
bytes the tree expands to when every shared reference is counted each time it is used).

Used by :mod:`jitckpt.torchfile.decoder` while and after it decodes.
"""

from __future__ import annotations

from typing import Any

from ..errors import FormatError

MAX_DEPTH = 100  # containers inside containers; a Lightning checkpoint needs about 8
MAX_EXPANDED_BYTES = 64 << 20  # the tree with every shared reference expanded, in (approximate) bytes
MAX_HASHED = 4096  # values inside one dict key or set member (shared references counted each time)


def cheap_to_hash(value: Any) -> Any:
    """``value``, once it is known to be cheap to hash (at most :data:`MAX_HASHED` values inside it, shared
    references counted each time): Python hashes a tuple by walking all of it, so a shared tuple tree used
    as a dict key or set member would take exponential time. A ValueError otherwise."""
    seen, pending = 0, [value]
    while pending:
        item = pending.pop()
        seen += 1
        if seen > MAX_HASHED:
            raise ValueError(f"a dict key or set member holding more than {MAX_HASHED} values")
        if type(item) is tuple or type(item) is frozenset:
            pending.extend(item)
    return value


def small_key(value: Any, path: str) -> Any:
    """:func:`cheap_to_hash` as a FormatError naming ``path``."""
    try:
        return cheap_to_hash(value)
    except ValueError as exc:
        raise FormatError(f"{path}: corrupt pickle ({exc})") from None


_LEAF_BYTES = {type(None): 16, bool: 28, int: 32, float: 24, complex: 32}


def _children(obj: Any) -> list[Any] | None:
    """The values a container or record holds (dict keys included); None for a leaf."""
    if isinstance(obj, dict):
        return [*dict.keys(obj), *dict.values(obj)]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, slice):
        return [obj.start, obj.stop, obj.step]
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        return list(vars(obj).values())  # a record: its fields, read from its own dict (never shadowed)
    return None


def _own_bytes(obj: Any, children: list[Any] | None) -> int:
    if children is not None:
        return 64 + 16 * len(children)
    if isinstance(obj, str):
        return 49 + 4 * len(obj)  # stored at up to 4 bytes a character, and a NUL renders as 4 (\\x00)
    if isinstance(obj, (bytes, bytearray)):
        return 33 + 4 * len(obj)
    return _LEAF_BYTES.get(type(obj), 64)


def check_tree(root: Any, path: str) -> None:
    """Refuse cycles, nesting deeper than :data:`MAX_DEPTH` and trees that expand, every shared reference
    counted each time it is used, past :data:`MAX_EXPANDED_BYTES`; without recursion, each node once.

    After this, code that walks the tree recursively (a repr, JSON, a conversion) is safe: its depth, and
    the bytes it could materialise, are bounded.
    """
    if _children(root) is None:
        return
    sizes: dict[int, int] = {}  # id -> expanded bytes, of finished containers (leaves are summed at once)
    on_path: set[int] = set()  # the containers being walked: the current one's ancestors
    # (container, its children that are containers, or None before it is opened; its own bytes and leaves')
    stack: list[tuple[Any, list[Any] | None, int]] = [(root, None, 0)]
    while stack:
        obj, containers, own = stack[-1]
        if containers is None:
            if id(obj) in sizes:
                stack.pop()
                continue
            found = _children(obj) or []
            if id(obj) in on_path:
                raise FormatError(f"{path}: the pickle holds a structure that contains itself")
            on_path.add(id(obj))
            if len(on_path) > MAX_DEPTH:
                raise FormatError(f"{path}: the pickle nests containers more than {MAX_DEPTH} levels deep")
            containers, own = [], _own_bytes(obj, found)
            for child in found:
                if _children(child) is None:
                    own += _own_bytes(child, None)
                else:
                    containers.append(child)
            stack[-1] = (obj, containers, own)
            stack.extend((child, None, 0) for child in containers if id(child) not in sizes)
            continue
        size = own + sum(sizes[id(c)] for c in containers)
        if size > MAX_EXPANDED_BYTES:
            raise FormatError(f"{path}: the pickle's structure expands to more than {MAX_EXPANDED_BYTES >> 20} MiB "
                              "through shared references; no checkpoint needs that")
        sizes[id(obj)] = size
        on_path.discard(id(obj))
        stack.pop()
