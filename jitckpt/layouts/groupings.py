"""The optimizer param groupings known to jitckpt, and telling from the evidence which one a state uses.

An AdamW ``state_dict()`` numbers the parameters through its groups; the
numbers mean nothing without the list of names the groups were built from.
Tools build their groups differently (:data:`GROUPINGS`), so a positional
state is mapped to names only when the evidence in it fits exactly one known
grouping: the number of groups and their sizes, which groups have no weight
decay, and the shape of every moment against its parameter's shape by name.
Otherwise nothing is attached by guess: the state is kept aside, unmapped,
with the reason (:class:`UnmappedOptimizer`).

Everything here works on names and shapes, so it runs without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from ..errors import DROP_OPTIMIZER, SchemaError
from ..tensors.anytensor import is_tensor, shape_of
from .arch import Arch, Shape, expected_shapes, trainable_names


@dataclass(frozen=True)
class Grouping:
    """One way of splitting a JiT's parameters into AdamW param groups.

    ``group_of(name, shape)`` gives a parameter's group; within a group the
    parameters keep ``named_parameters()`` order. ``decays[i]`` says whether
    group ``i`` is built with the run's weight decay (False: always 0).
    ``frozen`` says whether the parameters without gradient (``pos_embed``)
    are in the groups too, as with ``AdamW(model.parameters())``.
    """

    name: str
    description: str
    group_of: Callable[[str, Shape], int]
    decays: tuple[bool, ...]
    frozen: bool = False

    def names(self, arch: Arch) -> list[list[str]]:
        """The parameter names of each group, in the order the optimizer numbers them."""
        shapes = expected_shapes(arch)
        groups: list[list[str]] = [[] for _ in self.decays]
        for name in shapes if self.frozen else trainable_names(arch):
            groups[self.group_of(name, shapes[name])].append(name)
        return groups


ORIGINAL = Grouping(
    "original", "misc.add_weight_decay: 1-D parameters and biases without weight decay, then the rest",
    lambda name, shape: 0 if len(shape) == 1 or name.endswith(".bias") else 1, (False, True))
SEED_PORT = Grouping(
    "seed port", "the seed Lightning port: names without 'bias' or 'norm' with weight decay, then those with",
    lambda name, shape: 1 if "bias" in name or "norm" in name else 0, (True, False))
SINGLE = Grouping("single group", "every parameter in one group: AdamW(model.parameters())",
                  lambda name, shape: 0, (True,), frozen=True)
SINGLE_TRAINABLE = Grouping("single group of trainable parameters",
                            "AdamW(p for p in model.parameters() if p.requires_grad)", lambda name, shape: 0, (True,))

# The groupings a positional optimizer state is matched against, in the order they are reported.
GROUPINGS: tuple[Grouping, ...] = (ORIGINAL, SEED_PORT, SINGLE, SINGLE_TRAINABLE)


@dataclass
class UnmappedOptimizer:
    """An optimizer state present in a file whose parameters cannot be named with certainty.

    ``positional`` is the state as read (``{'state': {index: ...}, 'param_groups': [...]}``),
    ``reason`` says why it fits no known grouping, or more than one.
    """

    positional: dict
    reason: str


def identify(positional: Mapping, arch: Arch, groupings: Sequence[Grouping] | None = None) -> Grouping | str:
    """The one grouping of ``groupings`` (default :data:`GROUPINGS`) the evidence fits, or why none does.

    Raises :class:`SchemaError` when the state is malformed whatever the grouping
    (indices that are not integers or repeat).
    """
    groups, state = _indices(positional)
    candidates = GROUPINGS if groupings is None else groupings
    misfits = {g.name: _misfit(g, groups, state, positional["param_groups"], arch) for g in candidates}
    fits = [g for g in candidates if misfits[g.name] is None]
    if len(fits) == 1:
        return fits[0]
    sizes = [len(g) for g in groups]
    if fits:
        return (f"optimizer has param groups of sizes {sizes}, which fit more than one known grouping "
                f"({', '.join(g.name for g in fits)}); no moment can be given a parameter name with certainty")
    why = "; ".join(f"{name}: {text}" for name, text in misfits.items())
    return f"optimizer has param groups of sizes {sizes}, which fit no known grouping of this model ({why})"


def to_named(positional: Mapping, arch: Arch, grouping: Grouping) -> dict:
    """``positional`` keyed by parameter name through ``grouping``; a SchemaError if the evidence does not fit."""
    groups, state = _indices(positional)
    misfit = _misfit(grouping, groups, state, positional["param_groups"], arch)
    if misfit is not None:
        raise SchemaError(f"optimizer does not fit the {grouping.name} grouping: {misfit}")
    stray = set(state) - {i for g in groups for i in g}
    if stray:
        raise SchemaError(f"optimizer has state for parameter indices {sorted(stray)[:5]} in no group")
    named_state, named_groups = {}, []
    for indices, names, group in zip(groups, grouping.names(arch), positional["param_groups"]):
        for index, name in zip(indices, names):
            if index in state:
                named_state[name] = dict(state[index])
        named_groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": names})
    return {"state": named_state, "param_groups": named_groups}


def grouping_of(named: Mapping, arch: Arch) -> Grouping | None:
    """The known grouping whose groups hold exactly the names of ``named``'s groups, if any."""
    held = [list(g["params"]) for g in named["param_groups"]]
    return next((g for g in GROUPINGS if g.names(arch) == held), None)


def regroup(named: Mapping, arch: Arch, grouping: Grouping = ORIGINAL) -> dict:
    """``named`` with its parameters in ``grouping``'s groups, each with the settings it had.

    A target group takes the settings (lr, weight decay, betas, ...) of the
    source groups its parameters were in; a :class:`SchemaError` when those
    differ, or when a parameter with state has no place in ``grouping``, since
    the result would not be the same optimizer. A parameter without state and
    without a place (``pos_embed`` in ``AdamW(model.parameters())``) is left out.
    """
    if grouping_of(named, arch) is grouping:
        return dict(named)
    settings: dict[str, dict] = {}
    for group in named["param_groups"]:
        for name in group["params"]:
            settings[name] = {k: v for k, v in group.items() if k != "params"}
    targets = grouping.names(arch)
    outside = sorted(set(settings) - {n for names in targets for n in names} - _stateless(named))
    if outside:
        raise SchemaError(f"optimizer holds {outside[0]!r}, which the {grouping.name} grouping does not train; "
                          f"convert to .safetensors to keep the optimizer as it is, or drop it with {DROP_OPTIMIZER}")
    groups = []
    for index, names in enumerate(targets):
        found = [settings[n] for n in names if n in settings]
        if not found or any(s != found[0] for s in found):
            what = "none of its parameters is in the optimizer" if not found else "its parameters had different settings"
            raise SchemaError(f"the optimizer cannot be written in the {grouping.name} grouping (group {index}: {what}); "
                              f"convert to .safetensors to keep it as it is, or drop it with {DROP_OPTIMIZER}")
        groups.append({**found[0], "params": list(names)})
    return {"state": dict(named["state"]), "param_groups": groups}


def _stateless(named: Mapping) -> set[str]:
    return {n for g in named["param_groups"] for n in g["params"] if not named["state"].get(n)}


# ----------------------------------------------------------------------------- evidence


def _indices(positional: Mapping) -> tuple[list[list[int]], Mapping]:
    groups = [list(g["params"]) for g in positional["param_groups"]]
    state = positional.get("state", {})
    if not all(type(i) is int for g in groups for i in g) or not all(type(k) is int for k in state):
        raise SchemaError("optimizer state is malformed (parameter indices that are not integers)")
    flat = [i for g in groups for i in g]
    if len(set(flat)) != len(flat):
        raise SchemaError("optimizer state is malformed (a parameter index appears twice in its param groups)")
    return groups, state


def _misfit(grouping: Grouping, groups: list[list[int]], state: Mapping, param_groups: Sequence[Mapping],
            arch: Arch) -> str | None:
    """Why the evidence does not fit ``grouping``; None when it does."""
    expected = grouping.names(arch)
    if len(groups) != len(expected):
        sizes = [len(n) for n in expected]
        return f"1 group of {sizes[0]}" if len(sizes) == 1 else f"{len(sizes)} groups of sizes {sizes}"
    if [len(g) for g in groups] != [len(n) for n in expected]:
        return f"sizes {[len(n) for n in expected]}"
    decays = [g.get("weight_decay") for g in param_groups]
    if len(set(map(repr, decays))) > 1:  # the run told its groups apart: the no-decay ones must have none
        for index, (builds_decay, decay) in enumerate(zip(grouping.decays, decays)):
            if not builds_decay and decay != 0:
                return f"group {index} would have no weight decay, but has {decay!r}"
    shapes = expected_shapes(arch)
    for indices, names in zip(groups, expected):
        for index, name in zip(indices, names):
            for slot, value in (state.get(index) or {}).items():
                shape = shape_of(value) if is_tensor(value) else ()
                if shape not in ((), shapes[name]):
                    return f"parameter {index} would be {name} of shape {shapes[name]}, but its {slot} has shape {shape}"
    return None


# The original's optimizer: torch.optim.AdamW(param_groups, lr=args.lr, betas=(0.9, 0.95)).
ORIGINAL_BETAS = (0.9, 0.95)


def adamw_group_defaults() -> dict[str, Any]:
    """Every hyper-parameter of an AdamW param group but ``lr``, ``weight_decay`` and ``params``, as the
    installed torch's AdamW holds them with the original's betas (asked of a live AdamW, so a key that a torch
    release adds is there too: ``torch.distributed.checkpoint.load`` wants every key the destination holds)."""
    import torch

    probe = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], betas=ORIGINAL_BETAS)
    return {k: v for k, v in probe.param_groups[0].items() if k not in ("params", "lr", "weight_decay")}
