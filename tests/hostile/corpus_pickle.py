"""Hostile pickles in torch zips: every gadget in three placements, wrong payload types, broken pickles.

Placements of a gadget:

- ``top``: the whole ``data.pkl`` is the gadget (a zip laid out as ``torch.save``
  lays it out: ``archive/data.pkl``, ``byteorder``, ``version``, all stored);
- ``dict``: the golden checkpoint with ``args`` (or, for every other gadget
  that builds no Namespace, ``model``) set to the gadget by a late SETITEM;
- ``rebuild``: the golden checkpoint with the first tensor's ``requires_grad``
  argument of ``_rebuild_tensor_v2`` replaced by the gadget.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable, Iterator

from . import pickles as P
from .bases import Base
from .corpus_zip import with_pickle
from .gadgets import CODE_GADGETS, LOGIC_GADGETS, Gadget, extensions_for
from .items import CorpusItem, Raw, torch_zip

MEMO_BASE = 100_000  # above every memo index the golden's pickle uses
PLACEMENTS = ("top", "dict", "rebuild")


def pickle_attacks(bases: dict[str, Base]) -> Iterator[CorpusItem]:
    """Gadgets in every placement, then wrong payload types and broken pickles in the golden."""
    golden = bases["pth"].path
    gadgets = {**CODE_GADGETS, **LOGIC_GADGETS}
    for index, (name, gadget) in enumerate(gadgets.items()):
        for placement in PLACEMENTS:
            key = "args" if "namespace" in name or index % 2 == 0 else "model"  # a Namespace belongs in args
            yield placed(golden, name, gadget, placement, key=key)
    for name, patch in {**PAYLOAD_TYPES, **BROKEN}.items():
        category = "payload_type" if name in PAYLOAD_TYPES else "pickle_broken"
        valid = name in VALID_VARIANTS
        yield CorpusItem(name=f"pickle/{name}", category=category, suffix=".pth", source=with_pickle(golden, patch),
                         reference=golden, valid_variant=valid, content_same=valid)


def placed(golden: Path, name: str, gadget: Gadget, placement: str, key: str = "args") -> CorpusItem:
    """The item for ``gadget`` in ``placement`` (``dict`` sets ``key`` of the golden's top-level dict)."""
    value = gadget(MEMO_BASE)
    if placement == "top":
        source: object = Raw(torch_zip(P.program(value)))
        label = "top"
    elif placement == "dict":
        source = with_pickle(golden, partial(P.set_top_key, key=key, value=value))
        label = f"dict-{key}"
    else:
        source = with_pickle(golden, partial(_in_rebuild, value=value))
        label = "rebuild"
    return CorpusItem(name=f"pickle/{label}/{name}", category="pickle_gadget", suffix=".pth", source=source,
                      extensions=extensions_for(name))


def _in_rebuild(data: bytes, value: bytes) -> bytes:
    """The first tensor rebuild's ``requires_grad`` argument replaced by ``value``."""
    return P.replace(data, P.tensor_site(data).requires_grad, value)


def _in_optimizer(data: bytes, key: str, value: bytes) -> bytes:
    return P.set_nested_key(data, P.memo_of_key_value(data, "optimizer"), key, value)


def _namespace_with(*pairs: tuple[bytes, bytes]) -> bytes:
    return P.call(P.g("argparse", "Namespace")) + P.dct(*pairs) + P.BUILD


def _jitckpt_meta(*pairs: tuple[bytes, bytes]) -> bytes:
    return P.dct((P.s("schema_version"), P.i(1)), *pairs)


def repdigit(digit: int, count: int) -> int:
    """``digit`` repeated ``count`` times (``int(str)`` refuses more than 4300 digits)."""
    return digit * (10**count - 1) // 9


def _top(key: str, value: bytes) -> Callable[[bytes], bytes]:
    return partial(P.set_top_key, key=key, value=value)


PAYLOAD_TYPES: dict[str, Callable[[bytes], bytes]] = {
    "epoch-abc": _top("epoch", P.s("abc")),
    "epoch-negative": _top("epoch", P.i(-1)),
    "epoch-5000-digits": _top("epoch", P.i(repdigit(7, 5000))),
    "epoch-float": _top("epoch", P.f(1.5)),
    "epoch-bool": _top("epoch", P.TRUE),
    "epoch-a-list": _top("epoch", P.lst(P.i(1))),
    "schema-version-x": _top("jitckpt", P.dct((P.s("schema_version"), P.s("x")))),
    "schema-version-huge": _top("jitckpt", P.dct((P.s("schema_version"), P.i(10**30)))),
    "arch-a-string": _top("jitckpt", _jitckpt_meta((P.s("arch"), P.s("JiT-B/16")))),
    "global-step-abc": _top("jitckpt", _jitckpt_meta((P.s("global_step"), P.s("abc")))),
    "args-a-list": _top("args", P.lst(P.i(1), P.i(2))),
    "args-an-int": _top("args", P.i(3)),
    "args-holds-a-set": _top("args", _namespace_with((P.s("x"), P.call(P.g("builtins", "set"), P.lst(P.i(1)))))),
    "args-holds-a-class": _top("args", _namespace_with((P.s("model"), P.g("collections", "OrderedDict")))),
    "args-holds-a-storage-type": _top("args", _namespace_with((P.s("model"), P.g("torch", "FloatStorage")))),
    "args-non-string-key": _top("args", _namespace_with((P.i(1), P.s("x")))),
    "args-5000-digit-int": _top("args", _namespace_with((P.s("epochs"), P.i(repdigit(9, 5000))))),
    "model-a-list": _top("model", P.lst(P.i(1))),
    "model-non-string-key": _top("model", P.dct((P.i(1), P.i(2)))),
    "model-value-not-a-tensor": _top("model", P.dct((P.s("net.pos_embed"), P.s("not a tensor")))),
    "param-groups-a-dict": partial(_in_optimizer, key="param_groups", value=P.dct((P.s("a"), P.i(1)))),
    "param-groups-list-of-ints": partial(_in_optimizer, key="param_groups", value=P.lst(P.i(1), P.i(2))),
    "optimizer-state-a-list": partial(_in_optimizer, key="state", value=P.lst(P.i(1))),
}


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


# Bytes after STOP: never written by torch, but ignored by torch.load and pickle too; a reader may do the same.
VALID_VARIANTS = {"pickle-trailing-garbage"}

BROKEN: dict[str, Callable[[bytes], bytes]] = {
    "pickle-truncated-half": _truncated,
    "pickle-no-stop": lambda data: data[:-1],
    "pickle-empty": lambda data: b"",
    "pickle-trailing-garbage": lambda data: data + b"garbage after STOP",
    "pickle-two-results": lambda data: data[:-1] + P.s("second value") + P.STOP,
}
