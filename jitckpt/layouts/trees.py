"""The tree layouts: one row per way a file arranges JiT's parts, and where each part lives in it.

A container reader turns its bytes into a tree of plain data (dicts, lists, scalars, lazy tensor
references); :func:`recognise` finds the row that fits it (every ``requires`` path present, no ``excludes``
path; the most specific row when several fit) and :meth:`Match.get` hands out the parts: ``model``,
``model_ema1``, ``model_ema2``, ``optimizer``, ``epoch``, ``global_step``, ``args`` (the original's
``Namespace``) and ``hparams`` (another tool's hyper-parameters, mapped onto the original's args).

A path is a tuple of steps: a dict key, a list index, or a key ending in ``*`` that matches any key
starting with what precedes it (Lightning names a callback's state ``EMACallback{...}`` when it has
arguments). ``family`` names the reader that builds a checkpoint from a match: ``original`` (the
original's dict and its relatives, through the schema's version-0 migration) or ``lightning`` (Lightning's
checkpoint dict: loops, callbacks, hyper-parameters).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..tensors.anytensor import is_tensor
from ..errors import FormatError

Path = tuple[Any, ...]
PARTS = ("model", "model_ema1", "model_ema2", "optimizer", "epoch", "global_step", "args", "hparams")

# Where EMACallback puts the EMAs inside a sharded (torch.distributed.checkpoint) checkpoint's state_dict:
# under keys no module parameter can have, as DTensors beside the parameters they follow.
SHARDED_EMA_PREFIXES = {"ema1": "jitckpt:ema1/", "ema2": "jitckpt:ema2/"}
EMA_CALLBACK = "EMACallback"


@dataclass(frozen=True)
class TreeLayout:
    """One arrangement of a checkpoint's parts in a tree (see the module docstring)."""

    name: str
    label: str
    family: str
    requires: tuple[Path, ...] = ()
    requires_any: tuple[Path, ...] = ()  # at least one of these present
    excludes: tuple[Path, ...] = ()
    flat_tensors: bool = False  # the tree itself is a state dict: every value a tensor
    parts: dict[str, tuple[Path, ...]] = field(default_factory=dict)

    @property
    def specificity(self) -> int:
        return len(self.requires) + bool(self.requires_any) + self.flat_tensors


_LIGHTNING_PARTS: dict[str, tuple[Path, ...]] = {
    "model": (("state_dict",),),
    "model_ema1": (("callbacks", EMA_CALLBACK + "*", "ema1"),),
    "model_ema2": (("callbacks", EMA_CALLBACK + "*", "ema2"),),
    "optimizer": (("optimizer_states", 0),),
    "epoch": (("epoch",),),
    "global_step": (("global_step",),),
    "hparams": (("hyper_parameters",),),
}
_ORIGINAL_PARTS: dict[str, tuple[Path, ...]] = {
    "model": (("model",),), "model_ema1": (("model_ema1",),), "model_ema2": (("model_ema2",),),
    "optimizer": (("optimizer",),), "epoch": (("epoch",),), "args": (("args",),),
}
# What Fabric scripts and hand-written loops call the parts (and a plain dcp.save of them).
_LOOP_PARTS: dict[str, tuple[Path, ...]] = {
    "model": (("model",), ("state_dict",), ("module",), ("net",), ("app", "model")),
    "model_ema1": (("model_ema1",), ("ema1",), ("ema", "ema1"), ("ema", "model_ema1")),
    "model_ema2": (("model_ema2",), ("ema2",), ("ema", "ema2"), ("ema", "model_ema2")),
    "optimizer": (("optimizer",), ("optim",), ("optimizer_0",), ("app", "optimizer"), ("app", "optim")),
    "epoch": (("epoch",),),
    "global_step": (("global_step",), ("step",)),
    "args": (("args",),),
}

TREE_LAYOUTS: tuple[TreeLayout, ...] = (
    TreeLayout("released", "released weights (model and two EMAs, no optimizer)", "original",
               requires=(("model",), ("model_ema1",)), excludes=(("optimizer",),), parts=_ORIGINAL_PARTS),
    TreeLayout("original", "the original JiT dict (misc.save_model: model, optimizer, epoch, args, EMAs)",
               "original", requires=(("model",), ("args",)), parts=_ORIGINAL_PARTS),
    TreeLayout("seed-port", "the seed port's dict (hyper_parameters and global_step instead of args)", "original",
               requires=(("model",), ("hyper_parameters",)),
               parts={**_ORIGINAL_PARTS, "global_step": (("global_step",),), "hparams": (("hyper_parameters",),)}),
    TreeLayout("loop", "a training loop's dict (model, optimizer, EMAs, epoch, step)", "original",
               requires=(("model",), ("optimizer",)), excludes=(("args",),), parts=_LOOP_PARTS),
    TreeLayout("weights-under-key", "weights (and perhaps more) under a top-level key (model, module, net, app)",
               "original", requires_any=(("model",), ("module",), ("net",), ("app", "model")), parts=_LOOP_PARTS),
    TreeLayout("state-dict", "a plain state dict (weights only)", "original", flat_tensors=True,
               parts={"model": ((),)}),
    TreeLayout("lightning", "Lightning's checkpoint dict (state_dict, optimizer_states, callbacks)", "lightning",
               requires=(("state_dict",),), parts=_LIGHTNING_PARTS),
    TreeLayout("lightning-sharded", "Lightning's sharded checkpoint (state_dict, optimizer_0, meta.pt)", "lightning",
               requires=(("state_dict",), ("optimizer_0",)),
               parts={**_LIGHTNING_PARTS, "optimizer": (("optimizer_0",),)}),
)
LAYOUT_NAMES = tuple(row.name for row in TREE_LAYOUTS)


def key_for(node: dict, step: str) -> Any:
    """The key of ``node`` a ``Name*`` step names (``Name`` or ``Name{...}``, as Lightning keys a callback's
    state), or None; more than one is a FormatError."""
    found = [k for k in node if isinstance(k, str) and k.split("{")[0] == step[:-1]]
    if len(found) > 1:
        raise FormatError(f"checkpoint holds {len(found)} {step[:-1]} states; expected one")
    return found[0] if found else None


def _step(node: Any, step: Any) -> tuple[bool, Any]:
    if isinstance(step, str) and step.endswith("*") and isinstance(node, dict):
        key = key_for(node, step)
        return (True, node[key]) if key is not None else (False, None)
    if isinstance(node, dict):
        return (step in node, node.get(step))
    if isinstance(node, (list, tuple)) and isinstance(step, int):
        return (0 <= step < len(node), node[step] if 0 <= step < len(node) else None)
    return False, None


def get_path(tree: Any, path: Path) -> tuple[bool, Any]:
    """(whether ``path`` exists in ``tree``, the value there)."""
    node = tree
    for step in path:
        present, node = _step(node, step)
        if not present:
            return False, None
    return True, node


def _fits(row: TreeLayout, tree: Any) -> bool:
    if not isinstance(tree, dict):
        return False
    if row.flat_tensors and not (tree and all(is_tensor(v) for v in tree.values())):
        return False
    return (all(get_path(tree, p)[0] for p in row.requires)
            and (not row.requires_any or any(get_path(tree, p)[0] for p in row.requires_any))
            and not any(get_path(tree, p)[0] for p in row.excludes))


@dataclass(frozen=True)
class Match:
    """A tree recognised as ``layout``: :meth:`get` gives a part, :attr:`found` the path each part was at."""

    layout: TreeLayout
    tree: Any
    found: dict[str, Path]

    def get(self, part: str, default: Any = None) -> Any:
        if part not in self.found:
            return default
        return get_path(self.tree, self.found[part])[1]

    @property
    def used_keys(self) -> set[Any]:
        """The top-level keys the located parts live under."""
        return {path[0] for path in self.found.values() if path}


def recognise(tree: Any, rows: tuple[TreeLayout, ...] = TREE_LAYOUTS) -> Match | None:
    """The most specific row of ``rows`` that fits ``tree`` (the first of equals), with its parts located."""
    best: TreeLayout | None = None
    for row in rows:
        if _fits(row, tree) and (best is None or row.specificity > best.specificity):
            best = row
    if best is None:
        return None
    found: dict[str, Path] = {}
    for part, paths in best.parts.items():
        for path in paths:
            present, value = get_path(tree, path)
            if present and value is not None:
                found[part] = path
                break
    return Match(best, tree, found)
