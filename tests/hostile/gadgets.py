"""Hostile pickle fragments, each pushing exactly one value onto the unpickler's stack.

A gadget that would run code if its globals were resolved for real leaves a
canary file (``touch CANARY``, ``open('CANARY', 'w')``) in the working folder
of the process that reads it; the runner fails any run after which the canary
exists. Every gadget takes ``m``, the first memo index it may use, so that it
never overwrites the memo of the pickle it is spliced into.
"""

from __future__ import annotations

from typing import Callable

from . import pickles as P
from .items import CANARY

CMD = f"touch {CANARY}"
CODE = f"open({CANARY!r}, 'w').close()"
DEEP = 100_000
EXT_CODES = {"EXT1": 0xF1, "EXT2": 0xF1F1, "EXT4": 0x0F1F1F1F}
Gadget = Callable[[int], bytes]


def inner_pickle() -> bytes:
    """A complete malicious pickle: ``os.system('touch CANARY')``."""
    return P.program(P.call(P.g("os", "system"), P.s(CMD)))


def _popen_argv() -> bytes:
    return P.lst(P.s("touch"), P.s(CANARY))


def _reduce(module: str, name: str, arg: Callable[[], bytes]) -> Gadget:
    return lambda m: P.call(P.g(module, name), arg())


def _getattr_chain(builtins: str) -> Gadget:
    """``getattr(__import__('os'), 'system')('touch CANARY')``."""
    def gadget(m: int) -> bytes:
        system = P.call(P.g(builtins, "getattr"), P.call(P.g(builtins, "__import__"), P.s("os")), P.s("system"))
        return system + P.tup(P.s(CMD)) + P.REDUCE
    return gadget


def _stack_global(module: str, name: str, arg: bytes) -> Gadget:
    """STACK_GLOBAL with module and name fetched back from the memo."""
    def gadget(m: int) -> bytes:
        names = P.s(module) + P.put(m) + P.POP + P.s(name) + P.put(m + 1) + P.POP
        return names + P.get(m) + P.get(m + 1) + P.STACK_GLOBAL + P.tup(arg) + P.REDUCE
    return gadget


def _ext(opcode: str) -> Gadget:
    """EXT1/EXT2/EXT4 with a code the reading process registers for ``os.system``."""
    width, byte = {"EXT1": (1, b"\x82"), "EXT2": (2, b"\x83"), "EXT4": (4, b"\x84")}[opcode]
    raw = byte + EXT_CODES[opcode].to_bytes(width, "little")
    return lambda m: raw + P.tup(P.s(CMD)) + P.REDUCE


def _namespace() -> bytes:
    return P.call(P.g("argparse", "Namespace"))


def _ordered_dict(*pairs: bytes) -> bytes:
    return P.call(P.g("collections", "OrderedDict"), P.lst(*pairs))


def _storage_id(*values: bytes) -> bytes:
    return P.tup(*values) + P.BINPERSID


def _float_storage(key: str = "0", numel: int = 768) -> bytes:
    return _storage_id(P.s("storage"), P.g("torch", "FloatStorage"), P.s(key), P.s("cpu"), P.i(numel))


def _rebuild(storage: bytes, hooks: bytes) -> bytes:
    return P.call(P.g("torch._utils", "_rebuild_tensor_v2"), storage, P.i(0), P.tup(P.i(768)), P.tup(P.i(1)),
                  P.FALSE, hooks)


def _torch_load_unsafe() -> bytes:
    """``functools.partial(torch.load, weights_only=False)``: the kwargs set by BUILD, as REDUCE cannot pass them."""
    state = P.tup(P.g("torch", "load"), P.tup(), P.dct((P.s("weights_only"), P.FALSE)), P.NONE)
    return P.call(P.g("functools", "partial"), P.g("torch", "load")) + state + P.BUILD


def _billion_laughs(m: int, levels: int = 100) -> bytes:
    """A list of two references to the previous level, ``levels`` deep: 2**levels leaves when walked."""
    out = P.EMPTY_LIST + P.put(m) + P.POP
    for k in range(1, levels + 1):
        out += P.lst(P.get(m + k - 1), P.get(m + k - 1)) + P.put(m + k) + P.POP
    return out + P.get(m + levels)


def _self_namespace(m: int) -> bytes:
    return _namespace() + P.put(m) + P.dct((P.s("me"), P.get(m))) + P.BUILD


def _laughing_namespace(m: int) -> bytes:
    return _namespace() + P.dct((P.s("model"), P.s("JiT-T/4")), (P.s("laughs"), _billion_laughs(m))) + P.BUILD


def _huge_length(opcode: bytes, width: int, claimed: int) -> Gadget:
    """A counted opcode whose length field claims ``claimed`` bytes; two follow."""
    return lambda m: opcode + claimed.to_bytes(width, "little") + b"xx"


# Gadgets that would run code (a canary appears if any of their globals is really resolved).
CODE_GADGETS: dict[str, Gadget] = {
    "reduce-os-system": _reduce("os", "system", lambda: P.s(CMD)),
    "reduce-posix-system": _reduce("posix", "system", lambda: P.s(CMD)),
    "reduce-subprocess-popen": _reduce("subprocess", "Popen", _popen_argv),
    "reduce-builtins-eval": _reduce("builtins", "eval", lambda: P.s(CODE)),
    "reduce-builtins-exec": _reduce("builtins", "exec", lambda: P.s(CODE)),
    "reduce-py2-builtin-eval": _reduce("__builtin__", "eval", lambda: P.s(CODE)),
    "reduce-py2-builtin-exec": _reduce("__builtin__", "exec", lambda: P.s(CODE)),
    "reduce-builtins-getattr-import": _getattr_chain("builtins"),
    "reduce-py2-builtin-getattr-import": _getattr_chain("__builtin__"),
    "stack-global-memo-os-system": _stack_global("os", "system", P.s(CMD)),
    "stack-global-memo-builtins-eval": _stack_global("builtins", "eval", P.s(CODE)),
    "inst-os-system": lambda m: P.MARK + P.s(CMD) + b"ios\nsystem\n",
    "inst-subprocess-popen": lambda m: P.MARK + _popen_argv() + b"isubprocess\nPopen\n",
    "obj-os-system": lambda m: P.MARK + P.g("os", "system") + P.s(CMD) + P.OBJ,
    "obj-subprocess-popen": lambda m: P.MARK + P.g("subprocess", "Popen") + _popen_argv() + P.OBJ,
    "newobj-namespace-hostile-args": lambda m: (P.g("argparse", "Namespace")
                                                + P.tup(P.call(P.g("os", "system"), P.s(CMD))) + P.NEWOBJ),
    "newobj-ex-ordereddict-hostile-kwargs": lambda m: (
        P.g("collections", "OrderedDict") + P.tup() + P.dct((P.s("x"), P.call(P.g("builtins", "eval"), P.s(CODE))))
        + P.NEWOBJ_EX),
    "build-namespace-setstate-eval": lambda m: (_namespace() + P.dct((P.s("__setstate__"), P.g("builtins", "eval")))
                                                + P.BUILD + P.s(CODE) + P.BUILD),
    "ext1-os-system": _ext("EXT1"),
    "ext2-os-system": _ext("EXT2"),
    "ext4-os-system": _ext("EXT4"),
    "torch-load-from-bytes": lambda m: P.call(P.g("torch.storage", "_load_from_bytes"), P.b(inner_pickle())),
    "torch-rebuild-from-type-v2-os-system": lambda m: P.call(
        P.g("torch._tensor", "_rebuild_from_type_v2"), P.g("os", "system"), P.g("builtins", "object"),
        P.tup(P.s(CMD)), P.EMPTY_DICT),
    "rebuild-parameter-data-is-os-system-call": lambda m: P.call(
        P.g("torch._utils", "_rebuild_parameter"), P.call(P.g("os", "system"), P.s(CMD)), P.FALSE, _ordered_dict()),
    "numpy-reconstruct-object-array": lambda m: (
        P.call(P.g("numpy.core.multiarray", "_reconstruct"), P.g("numpy", "ndarray"), P.tup(P.i(0)), P.b(b"b"))
        + P.tup(P.i(1), P.tup(P.i(1)), P.call(P.g("numpy", "dtype"), P.s("O8"), P.FALSE, P.TRUE), P.FALSE,
                P.lst(P.call(P.g("os", "system"), P.s(CMD)))) + P.BUILD),
    "functools-partial-os-system": lambda m: P.call(P.call(P.g("functools", "partial"), P.g("os", "system"),
                                                           P.s(CMD))),
    "copyreg-reconstructor-popen": lambda m: P.call(P.g("copyreg", "_reconstructor"), P.g("subprocess", "Popen"),
                                                    P.g("subprocess", "Popen"), _popen_argv()),
    "pickle-in-pickle-loads": lambda m: P.call(P.g("pickle", "loads"), P.b(inner_pickle())),
    "pickle-in-pickle-c-loads": lambda m: P.call(P.g("_pickle", "loads"), P.b(inner_pickle())),
    "pickle-in-pickle-torch-load": lambda m: (_torch_load_unsafe()
                                              + P.tup(P.call(P.g("io", "BytesIO"), P.b(inner_pickle()))) + P.REDUCE),
    "persid-tuple-holds-os-system-call": lambda m: _storage_id(
        P.s("storage"), P.call(P.g("os", "system"), P.s(CMD)), P.s("0"), P.s("cpu"), P.i(1)),
}

# Gadgets that run nothing (NEWOBJ calls only __new__; hooks and attributes set are never called while
# loading) but attack the reader's logic, memory or time.
LOGIC_GADGETS: dict[str, Gadget] = {
    "newobj-subprocess-popen": lambda m: P.g("subprocess", "Popen") + P.tup(_popen_argv()) + P.NEWOBJ,
    "newobj-ex-subprocess-popen": lambda m: (P.g("subprocess", "Popen") + P.tup(_popen_argv())
                                             + P.dct((P.s("shell"), P.FALSE)) + P.NEWOBJ_EX),
    "build-ordereddict-reduce-eval": lambda m: (P.call(P.g("collections", "OrderedDict"))
                                                + P.tup(P.NONE, P.dct((P.s("__reduce__"), P.g("builtins", "eval"))))
                                                + P.BUILD),
    "rebuild-tensor-hooks-hold-os-system": lambda m: _rebuild(
        _float_storage(), _ordered_dict(P.tup(P.i(0), P.g("os", "system")))),
    "rebuild-parameter-with-state-setstate-eval": lambda m: P.call(
        P.g("torch._utils", "_rebuild_parameter_with_state"), _rebuild(_float_storage(), _ordered_dict()), P.FALSE,
        _ordered_dict(), P.dct((P.s("__setstate__"), P.g("builtins", "eval")))),
    "newobj-on-rebuild-function": lambda m: P.g("torch._utils", "_rebuild_tensor_v2") + P.EMPTY_TUPLE + P.NEWOBJ,
    "build-namespace-slot-class": lambda m: (_namespace() + P.tup(P.NONE, P.dct(
        (P.s("__class__"), P.g("collections", "OrderedDict")))) + P.BUILD),
    "build-namespace-slot-dict": lambda m: _namespace() + P.tup(P.NONE, P.dct((P.s("__dict__"), P.i(5)))) + P.BUILD,
    "build-namespace-setstate-allowlisted": lambda m: (
        _namespace() + P.dct((P.s("__setstate__"), P.g("collections", "OrderedDict"))) + P.BUILD + P.EMPTY_LIST
        + P.BUILD),
    "build-ordereddict-class": lambda m: (P.call(P.g("collections", "OrderedDict"))
                                          + P.dct((P.s("__class__"), P.g("argparse", "Namespace"))) + P.BUILD),
    "rebuild-tensor-storage-is-a-class": lambda m: _rebuild(P.g("collections", "OrderedDict"), _ordered_dict()),
    "rebuild-parameter-data-is-a-class": lambda m: P.call(P.g("torch._utils", "_rebuild_parameter"),
                                                          P.g("argparse", "Namespace"), P.FALSE, _ordered_dict()),
    "rebuild-from-type-v2-allowlisted-func": lambda m: P.call(
        P.g("torch._tensor", "_rebuild_from_type_v2"), P.g("collections", "OrderedDict"),
        P.g("argparse", "Namespace"), P.tup(), P.dct((P.s("__class__"), P.g("collections", "OrderedDict")))),
    "persid-text": lambda m: b"Pstorage\n",
    "persid-not-a-tuple": lambda m: P.i(7) + P.BINPERSID,
    "persid-list": lambda m: P.lst(P.s("storage")) + P.BINPERSID,
    "persid-six-items": lambda m: _storage_id(P.s("storage"), P.g("torch", "FloatStorage"), P.s("0"), P.s("cpu"),
                                              P.i(768), P.s("extra")),
    "persid-unknown-kind": lambda m: _storage_id(P.s("module"), P.g("torch", "FloatStorage"), P.s("0"), P.s("cpu"),
                                                 P.i(768)),
    "persid-bare-storage": lambda m: _float_storage(),
    "memo-put-1e8": lambda m: P.s("x") + P.put(100_000_000),
    "memo-put-3e8": lambda m: P.s("x") + P.put(300_000_000),
    "memo-many-puts": lambda m: P.s("x") + b"".join(P.put(m + k) for k in range(1_000_000)),
    "memo-get-undefined": lambda m: P.get(m + 12345),
    "deep-lists-mark": lambda m: P.MARK * DEEP + P.LIST * DEEP,
    "deep-lists-append": lambda m: P.EMPTY_LIST * DEEP + P.APPEND * (DEEP - 1),
    "deep-tuples-mark": lambda m: P.MARK * DEEP + P.TUPLE * DEEP,
    "deep-dicts-setitem": lambda m: (P.EMPTY_DICT + P.s("a")) * DEEP + P.EMPTY_DICT + P.SETITEM * DEEP,
    "self-referencing-list": lambda m: P.EMPTY_LIST + P.put(m) + P.get(m) + P.APPEND,
    "self-referencing-dict": lambda m: P.EMPTY_DICT + P.put(m) + P.s("self") + P.get(m) + P.SETITEM,
    "self-referencing-namespace": _self_namespace,
    "billion-laughs-list": _billion_laughs,
    "billion-laughs-in-namespace": _laughing_namespace,
    "binunicode8-claims-1TB": _huge_length(b"\x8d", 8, 1 << 40),
    "binbytes8-claims-1TB": _huge_length(b"\x8e", 8, 1 << 40),
    "binunicode-claims-4GB": _huge_length(b"X", 4, 0xFFFFFFFF),
    "long4-claims-2GB": _huge_length(b"\x8b", 4, 0x7FFFFFFF),
    "string-invalid-utf8": lambda m: b"X" + (2).to_bytes(4, "little") + b"\xff\xfe",
    "unknown-opcode": lambda m: b"\xff",
    "frame-length-lies": lambda m: b"\x95" + (1 << 62).to_bytes(8, "little") + P.NONE,
}


def extensions_for(name: str) -> tuple[tuple[str, str, int], ...]:
    """The copyreg extensions an EXT gadget needs registered in the reading process."""
    for opcode, code in EXT_CODES.items():
        if name.startswith(opcode.lower()):
            return (("os", "system", code),)
    return ()
