"""A bounded pickle interpreter that builds plain data only and runs nothing.

It understands the opcodes that torch's ``weights_only`` loader understands
(protocol 2, as ``torch.save`` writes) and nothing more: the opcodes that
import by computed name, call arbitrary classes or use the extension registry
(STACK_GLOBAL, INST, OBJ, NEWOBJ_EX, EXT1/2/4, ...) are refused. A global is
looked up in the caller's allowlist, never imported: REDUCE calls only the
caller's own builder functions (each checks its arguments and returns inert
data), NEWOBJ creates only the record types the caller declares, and BUILD
applies only where a record type declares how (``buildable``), never on a
container, never to a name the record's class defines.

Resources are bounded so that a small file cannot take much memory or time: the
pickle's size, the objects it creates, the memo (entries and indices), the MARK
nesting, the size of anything hashed (a dict key, a set member), and, once
loaded, the tree itself: no cycle, at most :data:`~.bounds.MAX_DEPTH` levels, and at most
:data:`~.bounds.MAX_EXPANDED_BYTES` when every shared reference is counted each time it is
used (what a consumer would materialise: a repr, a JSON text, a converted tree).
"""

from __future__ import annotations

import collections
import pickle
import struct
import sys
from typing import Any, Callable, Mapping

from ..errors import FormatError, UnsafePickleError, render
from ..compat import py2_names
from .bounds import check_tree, small_key

_PY2_NAMES, _PY2_MODULES = py2_names()  # how protocol 2 pickles spell Python 3's names

MAX_PICKLE_BYTES = 16 << 20  # a JiT-H/16 training checkpoint's pickle is a few hundred KB
MAX_OBJECTS = 1_000_000  # objects the pickle may create (each opcode creates at most one)
MAX_DECODED_BYTES = 96 << 20  # the memory those objects take, as sys.getsizeof counts it, plus container slots
MAX_MEMO = 1 << 20  # memo entries, and the largest memo index
MAX_MARKS = 10_000  # MARKs open at once
MAX_STRING = 1 << 24

_BUILDABLE_KEY_PREFIX = "__"  # BUILD may never set dunder attributes (__class__, __dict__, __reduce__...)


class _Mark:
    """The value MARK pushes (kept on a separate stack, as CPython does)."""


class Unpickler:
    """Interpret ``data`` with the ``allowed`` globals ((module, name) -> object).

    ``persistent_load`` resolves BINPERSID ids; ``buildable`` maps each record type
    whose instances BUILD may complete to the function that applies a state to one
    (it checks the state and raises ValueError on a bad one); NEWOBJ creates only instances of those types.
    ``protocol4`` also accepts the opcodes ``pickle.dump`` writes at protocol 4 (FRAME, MEMOIZE,
    SHORT_BINUNICODE, and STACK_GLOBAL, whose names must be allowlisted strings like GLOBAL's):
    ``torch.distributed.checkpoint`` writes its ``.metadata`` that way.
    Any error is a :class:`FormatError` (or :class:`UnsafePickleError`) naming ``path``.
    """

    def __init__(self, data: bytes, path: str, allowed: Mapping[tuple[str, str], Any],
                 persistent_load: Callable[[Any], Any], buildable: Mapping[type, Callable[[Any, Any], None]] = {},
                 dict_types: tuple[type, ...] = (dict,), protocol4: bool = False) -> None:
        if len(data) > MAX_PICKLE_BYTES:
            raise FormatError(f"{path}: its pickle is {len(data)} bytes, more than the {MAX_PICKLE_BYTES} "
                              "a checkpoint needs")
        self.data, self.path, self.allowed = memoryview(data), path, allowed
        self.persistent_load, self.buildable, self.dict_types = persistent_load, buildable, dict_types
        self.allowed_values = {id(v) for v in allowed.values()}
        self.pos, self.objects, self.allocated = 0, 0, 0
        self.hashed: dict[int, Any] = {}  # dict keys already found cheap to hash, by id (kept alive: ids stay theirs)
        self.stack: list[Any] = []
        self.marks: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.dispatch = _DISPATCH_4 if protocol4 else _DISPATCH

    # ------------------------------------------------------------------ reading

    def _take(self, n: int) -> memoryview:
        end = self.pos + n
        if end > len(self.data):
            raise FormatError(f"{self.path}: corrupt pickle (it ends in the middle of an opcode)")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def _line(self) -> str:
        end = bytes(self.data[self.pos:self.pos + 512]).find(b"\n")
        if end < 0:
            raise FormatError(f"{self.path}: corrupt pickle (unterminated global name)")
        line = bytes(self._take(end + 1)[:-1])
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{self.path}: corrupt pickle (global name is not UTF-8)") from None

    def _push(self, value: Any) -> None:
        self.objects += 1
        if self.objects > MAX_OBJECTS:
            raise FormatError(f"{self.path}: its pickle creates more than {MAX_OBJECTS} objects; "
                              "no checkpoint needs that many")
        self._allocate(sys.getsizeof(value))
        self.stack.append(value)

    def _allocate(self, size: int) -> None:
        self.allocated += size
        if self.allocated > MAX_DECODED_BYTES:
            raise FormatError(f"{self.path}: its pickle builds more than {MAX_DECODED_BYTES >> 20} MiB of objects; "
                              "no checkpoint needs that much")

    def _pop(self) -> Any:
        if not self.stack:
            raise FormatError(f"{self.path}: corrupt pickle (stack underflow)")
        return self.stack.pop()

    def _top(self) -> Any:
        if not self.stack:
            raise FormatError(f"{self.path}: corrupt pickle (stack underflow)")
        return self.stack[-1]

    def _pop_mark(self) -> list[Any]:
        if not self.marks:
            raise FormatError(f"{self.path}: corrupt pickle (no MARK)")
        items, self.stack = self.stack, self.marks.pop()
        return items

    def _refuse(self, what: str) -> UnsafePickleError:
        return UnsafePickleError(f"refused to load {self.path}: the pickle asks for {what}, which is not on "
                                 "jitckpt's allowlist of checkpoint types (nothing in the file was run)")

    # ------------------------------------------------------------------ the loop

    def load(self) -> Any:
        dispatch = self.dispatch
        data = self.data
        while True:
            if self.pos >= len(data):
                raise FormatError(f"{self.path}: corrupt pickle (no STOP opcode)")
            code = data[self.pos]
            self.pos += 1
            handler = dispatch.get(code)
            if handler is None:
                name = _OPCODE_NAMES.get(code)
                if name is None:
                    raise FormatError(f"{self.path}: corrupt pickle (unknown opcode 0x{code:02x})")
                raise UnsafePickleError(f"refused to load {self.path}: the pickle uses the opcode {name}, which "
                                        "checkpoints never need (nothing in the file was run)")
            if handler is _stop:
                if self.marks or len(self.stack) != 1:
                    raise FormatError(f"{self.path}: corrupt pickle (unbalanced stack at STOP)")
                root = self.stack.pop()
                check_tree(root, self.path)
                return root
            handler(self)


def _stop(u: Unpickler) -> None:  # handled in the loop; here for the table
    raise AssertionError


def _proto(u: Unpickler) -> None:
    if u._take(1)[0] > pickle.HIGHEST_PROTOCOL:
        raise FormatError(f"{u.path}: corrupt pickle (unsupported protocol)")


def _global(u: Unpickler) -> None:
    _lookup(u, u._line(), u._line())


def _stack_global(u: Unpickler) -> None:
    name, module = u._pop(), u._pop()
    if type(module) is not str or type(name) is not str:
        raise FormatError(f"{u.path}: corrupt pickle (STACK_GLOBAL of a non-string name)")
    _lookup(u, module, name)


def _lookup(u: Unpickler, module: str, name: str) -> None:
    module, name = _PY2_NAMES.get((module, name), (module, name))
    module = _PY2_MODULES.get(module, module)
    try:
        u._push(u.allowed[(module, name)])
    except KeyError:
        raise u._refuse(f"the global '{module}.{name}'") from None


def _is_allowed(u: Unpickler, obj: Any) -> bool:
    return id(obj) in u.allowed_values


def _reduce(u: Unpickler) -> None:
    args, func = u._pop(), u._pop()
    if not _is_allowed(u, func) or not callable(func) or isinstance(func, type):
        raise u._refuse(f"a call of {type(func).__name__} object")
    if type(args) is not tuple:
        raise FormatError(f"{u.path}: corrupt pickle (REDUCE arguments are not a tuple)")
    try:
        result = func(*args)
    except (TypeError, ValueError, OverflowError) as exc:
        raise FormatError(f"{u.path}: corrupt pickle ({getattr(func, '__name__', 'a builder')!s:.60}: "
                          f"{str(exc)[:200]})") from None
    u._push(result)


def _newobj(u: Unpickler) -> None:
    args, cls = u._pop(), u._pop()
    if not (_is_allowed(u, cls) and isinstance(cls, type) and cls in u.buildable) or type(args) is not tuple or args:
        raise u._refuse(f"the creation of a {getattr(cls, '__name__', type(cls).__name__)!s:.60} object")
    record_type: Any = cls
    u._push(record_type.__new__(record_type))  # a record type of the caller's: no __init__ runs


def _build(u: Unpickler) -> None:
    state, inst = u._pop(), u._top()
    if state is None or (type(state) is dict and not state):
        return
    apply = u.buildable.get(type(inst))
    if apply is None:
        raise u._refuse(f"state for a {type(inst).__name__} object")
    try:
        apply(inst, state)
    except ValueError as exc:
        raise u._refuse(f"{str(exc)[:120]} of a {type(inst).__name__} object") from None


def build_fields(inst: Any, state: Any) -> None:
    """The BUILD of a record with free fields (``argparse.Namespace``): a dict of string keys, none a dunder
    and none a name its class defines (so no field shadows a method)."""
    if type(state) is not dict:
        raise ValueError(f"a {type(state).__name__} as the state")
    for key in state:
        if type(key) is not str or key.startswith(_BUILDABLE_KEY_PREFIX) or hasattr(type(inst), key):
            raise ValueError(f"the attribute {render(key, 60)}")
    inst.__dict__.update(state)


def _extend(u: Unpickler, items: list[Any]) -> None:
    target = u._top()
    if type(target) is not list:
        raise FormatError(f"{u.path}: corrupt pickle (APPEND to a {type(target).__name__})")
    u._allocate(8 * len(items))
    target.extend(items)


def _append(u: Unpickler) -> None:
    _extend(u, [u._pop()])


def _appends(u: Unpickler) -> None:
    _extend(u, u._pop_mark())


def _set_items(u: Unpickler, items: list[Any]) -> None:
    target = u._top()
    if type(target) not in u.dict_types:
        raise FormatError(f"{u.path}: corrupt pickle (SETITEM on a {type(target).__name__})")
    if len(items) % 2:
        raise FormatError(f"{u.path}: corrupt pickle (odd SETITEMS)")
    u._allocate(48 * (len(items) // 2))  # a dict's slot and hash entry
    try:
        for i in range(0, len(items), 2):
            key = items[i]
            if id(key) not in u.hashed:
                u.hashed[id(key)] = small_key(key, u.path)
            target[key] = items[i + 1]
    except TypeError:
        raise FormatError(f"{u.path}: corrupt pickle (unhashable dict key)") from None


def _setitem(u: Unpickler) -> None:
    value, key = u._pop(), u._pop()
    _set_items(u, [key, value])


def _setitems(u: Unpickler) -> None:
    _set_items(u, u._pop_mark())


def _mark(u: Unpickler) -> None:
    if len(u.marks) >= MAX_MARKS:
        raise FormatError(f"{u.path}: its pickle nests more than {MAX_MARKS} levels deep")
    u.marks.append(u.stack)
    u.stack = []


def _tuple(u: Unpickler) -> None:
    u._push(tuple(u._pop_mark()))


def _tuple_n(n: int) -> Callable[[Unpickler], None]:
    def handler(u: Unpickler) -> None:
        if len(u.stack) < n:
            raise FormatError(f"{u.path}: corrupt pickle (stack underflow)")
        items = tuple(u.stack[-n:])
        del u.stack[-n:]
        u._push(items)
    return handler


def _constant(value: Callable[[], Any]) -> Callable[[Unpickler], None]:
    return lambda u: u._push(value())


def _struct(fmt: str) -> Callable[[Unpickler], None]:
    layout = struct.Struct(fmt)
    return lambda u: u._push(layout.unpack(u._take(layout.size))[0])


def _long1(u: Unpickler) -> None:
    n = u._take(1)[0]
    u._push(int.from_bytes(u._take(n), "little", signed=True))


def _binunicode(u: Unpickler) -> None:
    (n,) = struct.unpack("<I", u._take(4))
    if n > MAX_STRING:
        raise FormatError(f"{u.path}: corrupt pickle (a string of {n} bytes)")
    try:
        u._push(str(u._take(n), "utf-8", "surrogatepass"))
    except UnicodeDecodeError:
        raise FormatError(f"{u.path}: corrupt pickle (a string that is not UTF-8)") from None


def _short_binstring(u: Unpickler) -> None:
    n = u._take(1)[0]
    try:
        u._push(str(u._take(n), "ascii"))
    except UnicodeDecodeError:
        raise FormatError(f"{u.path}: corrupt pickle (a string that is not ASCII)") from None


def _binpersid(u: Unpickler) -> None:
    u._push(u.persistent_load(u._pop()))


def _get(fmt: str) -> Callable[[Unpickler], None]:
    layout = struct.Struct(fmt)

    def handler(u: Unpickler) -> None:
        (index,) = layout.unpack(u._take(layout.size))
        try:
            u._push(u.memo[index])
        except KeyError:
            raise FormatError(f"{u.path}: corrupt pickle (memo entry {index} is not set)") from None
    return handler


def _put(fmt: str) -> Callable[[Unpickler], None]:
    layout = struct.Struct(fmt)

    def handler(u: Unpickler) -> None:
        (index,) = layout.unpack(u._take(layout.size))
        if index >= MAX_MEMO or (index not in u.memo and len(u.memo) >= MAX_MEMO):
            raise FormatError(f"{u.path}: its pickle uses memo index {index}; the limit is {MAX_MEMO}")
        u.memo[index] = u._top()
    return handler


_DISPATCH: dict[int, Callable[[Unpickler], None]] = {
    pickle.PROTO[0]: _proto, pickle.STOP[0]: _stop, pickle.GLOBAL[0]: _global, pickle.REDUCE[0]: _reduce,
    pickle.NEWOBJ[0]: _newobj, pickle.BUILD[0]: _build, pickle.APPEND[0]: _append, pickle.APPENDS[0]: _appends,
    pickle.SETITEM[0]: _setitem, pickle.SETITEMS[0]: _setitems, pickle.MARK[0]: _mark, pickle.TUPLE[0]: _tuple,
    pickle.TUPLE1[0]: _tuple_n(1), pickle.TUPLE2[0]: _tuple_n(2), pickle.TUPLE3[0]: _tuple_n(3),
    pickle.NONE[0]: _constant(lambda: None), pickle.NEWFALSE[0]: _constant(lambda: False),
    pickle.NEWTRUE[0]: _constant(lambda: True), pickle.EMPTY_TUPLE[0]: _constant(tuple),
    pickle.EMPTY_LIST[0]: _constant(list), pickle.EMPTY_DICT[0]: _constant(dict),
    pickle.EMPTY_SET[0]: _constant(set), pickle.BININT[0]: _struct("<i"), pickle.BININT1[0]: _struct("<B"),
    pickle.BININT2[0]: _struct("<H"), pickle.BINFLOAT[0]: _struct(">d"), pickle.LONG1[0]: _long1,
    pickle.BINUNICODE[0]: _binunicode, pickle.SHORT_BINSTRING[0]: _short_binstring,
    pickle.BINPERSID[0]: _binpersid, pickle.BINGET[0]: _get("<B"), pickle.LONG_BINGET[0]: _get("<I"),
    pickle.BINPUT[0]: _put("<B"), pickle.LONG_BINPUT[0]: _put("<I"),
}


def _frame(u: Unpickler) -> None:
    u._take(8)  # a length hint for buffered readers; the bytes follow in place


def _memoize(u: Unpickler) -> None:
    if len(u.memo) >= MAX_MEMO:
        raise FormatError(f"{u.path}: its pickle memoizes more than {MAX_MEMO} objects")
    u.memo[len(u.memo)] = u._top()


def _short_binunicode(u: Unpickler) -> None:
    n = u._take(1)[0]
    try:
        u._push(str(u._take(n), "utf-8", "surrogatepass"))
    except UnicodeDecodeError:
        raise FormatError(f"{u.path}: corrupt pickle (a string that is not UTF-8)") from None


_DISPATCH_4 = {**_DISPATCH, pickle.FRAME[0]: _frame, pickle.MEMOIZE[0]: _memoize,
               pickle.SHORT_BINUNICODE[0]: _short_binunicode, pickle.STACK_GLOBAL[0]: _stack_global}
_OPCODE_NAMES = {
    code[0]: name for name, code in vars(pickle).items()
    if name.isupper() and isinstance(code, bytes) and len(code) == 1 and name not in ("HIGHEST_PROTOCOL",)
}

# Containers the CPython pickler builds with SETITEMS besides dict (an OrderedDict via REDUCE).
DICT_TYPES: tuple[type, ...] = (dict, collections.OrderedDict, collections.Counter)
