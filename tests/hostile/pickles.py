"""Pickles at the opcode level: a tiny assembler and surgery on an existing pickle.

The hostile corpus needs pickles that no ``pickle.dumps`` would write (gadgets,
memo bombs, 100,000 nesting levels, ints where torch writes strings), and it
needs to change one value inside the golden checkpoint's ``data.pkl`` while
leaving every other byte as torch wrote it. Protocol-2 pickles (what
``torch.save`` writes) have no frames, so an opcode can be replaced by a
sequence of a different length without touching anything else.
"""

from __future__ import annotations

import pickle
import pickletools
import struct
from dataclasses import dataclass

PROTO2 = b"\x80\x02"
STOP = pickle.STOP
MARK = pickle.MARK
TUPLE1, TUPLE2, TUPLE3 = pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3
REDUCE, BUILD, SETITEM, APPEND, POP = pickle.REDUCE, pickle.BUILD, pickle.SETITEM, pickle.APPEND, pickle.POP
EMPTY_DICT, EMPTY_LIST, EMPTY_TUPLE = pickle.EMPTY_DICT, pickle.EMPTY_LIST, pickle.EMPTY_TUPLE
NONE, FALSE, TRUE = pickle.NONE, pickle.NEWFALSE, pickle.NEWTRUE
LIST, TUPLE, DICT = pickle.LIST, pickle.TUPLE, pickle.DICT
STACK_GLOBAL, NEWOBJ, NEWOBJ_EX, OBJ = pickle.STACK_GLOBAL, pickle.NEWOBJ, pickle.NEWOBJ_EX, pickle.OBJ
BINPERSID = pickle.BINPERSID
_PUTS = {"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"}
_TUPLES = {"TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_TUPLE"}


# ----------------------------------------------------------------------------- assembler


def s(text: str) -> bytes:
    """BINUNICODE: push ``text``."""
    raw = text.encode("utf-8", "surrogatepass")
    return pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw


def b(data: bytes) -> bytes:
    """BINBYTES: push ``data``."""
    return pickle.BINBYTES + struct.pack("<I", len(data)) + data


def i(value: int) -> bytes:
    """The shortest int opcode torch's pickler would use for ``value`` (LONG1/LONG4 for huge ones)."""
    if 0 <= value < 256:
        return pickle.BININT1 + bytes([value])
    if 0 <= value < 65536:
        return pickle.BININT2 + struct.pack("<H", value)
    if -(2**31) <= value < 2**31:
        return pickle.BININT + struct.pack("<i", value)
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    if len(raw) < 256:
        return pickle.LONG1 + bytes([len(raw)]) + raw
    return pickle.LONG4 + struct.pack("<i", len(raw)) + raw


def f(value: float) -> bytes:
    """BINFLOAT: push ``value``."""
    return pickle.BINFLOAT + struct.pack(">d", value)


def g(module: str, name: str) -> bytes:
    """GLOBAL: push ``module.name`` (the text opcode torch writes)."""
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def put(index: int) -> bytes:
    """LONG_BINPUT: store the stack top at memo ``index``."""
    return pickle.LONG_BINPUT + struct.pack("<I", index)


def get(index: int) -> bytes:
    """LONG_BINGET: push memo ``index``."""
    return pickle.LONG_BINGET + struct.pack("<I", index)


def tup(*items: bytes) -> bytes:
    """A tuple of the values the ``items`` push."""
    return MARK + b"".join(items) + TUPLE


def lst(*items: bytes) -> bytes:
    """A list of the values the ``items`` push."""
    return MARK + b"".join(items) + LIST


def dct(*pairs: tuple[bytes, bytes]) -> bytes:
    """A dict of the (key, value) pairs the opcodes push."""
    return MARK + b"".join(k + v for k, v in pairs) + DICT


def call(func: bytes, *args: bytes) -> bytes:
    """REDUCE: push ``func(*args)``."""
    return func + tup(*args) + REDUCE


def program(value: bytes) -> bytes:
    """A whole protocol-2 pickle whose result is what ``value`` pushes."""
    return PROTO2 + value + STOP


# ----------------------------------------------------------------------------- surgery


@dataclass(frozen=True)
class Op:
    """One opcode of a pickle: its name, argument and byte range ``[pos, end)``."""

    name: str
    arg: object
    pos: int
    end: int


def ops(data: bytes) -> list[Op]:
    """The opcodes of ``data`` with their byte ranges."""
    raw = [(op.name, arg, pos) for op, arg, pos in pickletools.genops(data)]
    ends = [pos for _, _, pos in raw[1:]] + [len(data)]
    return [Op(name, arg, pos, end) for (name, arg, pos), end in zip(raw, ends)]


def replace(data: bytes, op: Op, new: bytes) -> bytes:
    """``data`` with the bytes of ``op`` replaced by ``new``."""
    return data[: op.pos] + new + data[op.end:]


def replace_span(data: bytes, first: Op, last: Op, new: bytes) -> bytes:
    """``data`` with the ops from ``first`` to ``last`` (inclusive) replaced by ``new``."""
    return data[: first.pos] + new + data[last.end:]


def before_stop(data: bytes, payload: bytes) -> bytes:
    """``data`` with ``payload`` inserted just before its final STOP."""
    assert data.endswith(STOP)
    return data[:-1] + payload + STOP


def set_top_key(data: bytes, key: str, value: bytes) -> bytes:
    """Make ``data``'s top-level dict map ``key`` to what ``value`` pushes (a late SETITEM)."""
    return before_stop(data, s(key) + value + SETITEM)


def set_nested_key(data: bytes, memo: int, key: str, value: bytes) -> bytes:
    """Set ``key`` in the dict stored at memo ``memo`` (GET, SETITEM, POP before STOP)."""
    return before_stop(data, get(memo) + s(key) + value + SETITEM + POP)


def memo_of_key_value(data: bytes, key: str) -> int:
    """The memo index of the dict that is the value of ``key`` (the first BINUNICODE ``key``)."""
    seq = ops(data)
    for n, op in enumerate(seq):
        if op.name == "BINUNICODE" and op.arg == key:
            rest = [o for o in seq[n + 1: n + 4] if o.name not in _PUTS]
            if rest and rest[0].name == "EMPTY_DICT":
                after = seq[seq.index(rest[0]) + 1]
                if after.name in _PUTS:
                    return int(after.arg)
    raise ValueError(f"no dict value under {key!r}")


@dataclass(frozen=True)
class TensorSite:
    """Where one ``_rebuild_tensor_v2`` call of a torch pickle keeps its arguments.

    ``persid`` holds the value ops of the storage id (``'storage'``, the storage
    type, the key, the location, the element count); ``size`` and ``stride``
    hold one op per dimension.
    """

    persid: tuple[Op, ...]
    offset: Op
    size: tuple[Op, ...]
    stride: tuple[Op, ...]
    requires_grad: Op


def tensor_site(data: bytes, index: int = 0) -> TensorSite:
    """The arguments of the ``index``-th tensor rebuild in ``data``."""
    seq = ops(data)
    persids = [n for n, op in enumerate(seq) if op.name == "BINPERSID"]
    at = persids[index]
    values = _values_back(seq, at - 1)
    n = at + 1
    offset = seq[n]
    size, n = _tuple_forward(seq, n + 1)
    stride, n = _tuple_forward(seq, n)
    return TensorSite(tuple(values), offset, tuple(size), tuple(stride), seq[n])


def _skip_puts(seq: list[Op], n: int, step: int) -> int:
    while seq[n].name in _PUTS:
        n += step
    return n


def _values_back(seq: list[Op], n: int) -> list[Op]:
    """The single-op values of the MARK ... TUPLE that ends at or before ``n``."""
    n = _skip_puts(seq, n, -1)
    assert seq[n].name == "TUPLE", seq[n]
    values: list[Op] = []
    n -= 1
    while seq[n].name != "MARK":
        if seq[n].name not in _PUTS:
            values.append(seq[n])
        n -= 1
    return values[::-1]


def _tuple_forward(seq: list[Op], n: int) -> tuple[list[Op], int]:
    """The element ops of the small tuple starting at ``n``, and the index after it (and its PUT)."""
    n = _skip_puts(seq, n, 1)
    items: list[Op] = []
    if seq[n].name == "MARK":
        n += 1
    while seq[n].name not in _TUPLES:
        items.append(seq[n])
        n += 1
    return items, _skip_puts(seq, n + 1, 1)
