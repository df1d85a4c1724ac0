"""``JiTCheckpoint``: the one in-memory form every format is read into and written from.

Version 1 holds model, two optional EMAs, the AdamW state keyed by parameter
name, epoch, global step, architecture, training args and ``extra`` (what a
source format carried that the schema has no field for). Files of the original
JiT code carry no version; they are version 0 and go through ``MIGRATIONS``.

May import: errors, tensors, layouts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, cast, overload

from ..errors import DamagedError, SchemaError, render
from .fields import checked_int as checked_int, describe, plain_args as plain_args  # noqa: F401 (re-exported)
from ..layouts import recognise, to_canonical, wrapper_of
from ..layouts.arch import Arch, check_shapes, expected_shapes, infer_arch
from ..layouts.groupings import ORIGINAL, Grouping, UnmappedOptimizer, identify, regroup, to_named
from ..layouts.args import args_from_hparams
from ..tensors.anytensor import is_tensor, scalar_value, shape_of

SCHEMA_VERSION = 1
SECTIONS = ("model", "model_ema1", "model_ema2")
# Keys of the original ``misc.save_model`` dict; anything else is kept in ``extra``.
ORIGINAL_KEYS = ("model", "optimizer", "epoch", "args", "model_ema1", "model_ema2")
META_KEY = "jitckpt"  # the one key jitckpt adds to files it writes
MAX_EPOCH = (1 << 31) - 1

StateDict = dict[str, Any]
# AdamW's state keyed by parameter name: ``{'state': {name: {slot: tensor or number}},
# 'param_groups': [{lr, weight_decay, betas, ..., 'params': [names]}]}`` (the positional form has indices).
OptimizerState = dict[str, Any]
# The training args as plain JSON-able data (:func:`~jitckpt.schema.fields.plain_args`): string keys; numbers,
# strings, None, lists and string-keyed dicts of those, as the original's ``argparse.Namespace`` held them.
TrainingArgs = dict[str, Any]


@dataclass
class JiTCheckpoint:
    """A JiT training checkpoint, independent of any file format.

    Tensors are ``torch.Tensor`` or lazy :class:`~jitckpt.tensors.lazy.TensorRef`.
    ``optimizer`` is ``{'state': {name: {...}}, 'param_groups': [{..., 'params': [names]}]}``.
    A file's positional optimizer state that fits no known grouping (or several)
    is not guessed at: ``optimizer`` is None and ``unmapped_optimizer`` holds the
    state as read with the reason; writing the full state then needs
    ``drop_optimizer=True`` (see :func:`jitckpt.save`).
    ``epoch`` is the last completed epoch (training resumes at ``epoch + 1``).
    """

    model: StateDict
    model_ema1: StateDict | None = None
    model_ema2: StateDict | None = None
    optimizer: OptimizerState | None = None
    epoch: int | None = None
    global_step: int | None = None
    arch: Arch | None = None
    args: TrainingArgs = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    warnings: list[str] = field(default_factory=list, compare=False, repr=False)
    source_version: int | None = field(default=None, compare=False, repr=False)  # as read from the file
    unmapped_optimizer: UnmappedOptimizer | None = field(default=None, compare=False, repr=False)
    layout: str | None = field(default=None, compare=False, repr=False)  # the tree layout row it was read by
    naming: str | None = field(default=None, compare=False, repr=False)  # the naming of the model's keys
    key_prefix: str | None = field(default=None, compare=False, repr=False)  # a wrapper's, before the names

    def sections(self) -> dict[str, StateDict]:
        """The weight sets present, by name: ``model`` and whichever EMAs exist."""
        return {name: getattr(self, name) for name in SECTIONS if getattr(self, name) is not None}

    def weights(self, which: str) -> StateDict:
        """The weights ``'raw'``, ``'ema1'`` or ``'ema2'``; an error if that set is absent.

        A weights-only export of EMA 1 holds those weights as its ``model``:
        asking it for ``'ema1'`` gives them, asking for anything else is an error. One set of weights that
        does not record which it was (a plain state dict, a Hub folder without its conversion record) is
        given for any of the three.
        """
        section = {"raw": "model", "ema1": "model_ema1", "ema2": "model_ema2"}.get(which)
        if section is None:
            raise SchemaError(f"unknown weights {which!r}; choose raw, ema1 or ema2")
        exported = self.extra.get("weights")
        if self.is_weights_only:
            if exported is None:  # one set of weights that does not say which: the one there is (inspect says so)
                return self.model
            if which != exported:
                raise SchemaError(f"this file holds only the {exported} weights of its source, not {which}")
            return self.model
        state: StateDict | None = getattr(self, section)
        if state is None:
            raise SchemaError(f"this checkpoint has no {section}; choose one of: "
                              + ", ".join({"model": "raw", "model_ema1": "ema1", "model_ema2": "ema2"}[s]
                                          for s in self.sections()))
        return state

    def provenance(self, which: str) -> str | None:
        """What an export of the weights ``which`` may record as their origin: ``which``, or None when this
        checkpoint is one set of weights that does not say which it was (nothing is invented)."""
        return None if self.is_weights_only and self.extra.get("weights") is None else which

    @property
    def is_weights_only(self) -> bool:
        return (self.optimizer is None and self.unmapped_optimizer is None and self.model_ema1 is None
                and self.model_ema2 is None)

    def validate(self) -> None:
        """Check keys and shapes of every section against ``arch`` and the model."""
        if self.arch is None:
            raise SchemaError("checkpoint has no architecture")
        check_shapes("model", {k: shape_of(v) for k, v in self.model.items()}, self.arch)
        for name in ("model_ema1", "model_ema2"):
            ema = getattr(self, name)
            if ema is None:
                continue
            for key, value in ema.items():
                if key not in self.model:
                    raise SchemaError(f"{name}: key {key!r} is not in the model")
                if shape_of(value) != shape_of(self.model[key]):
                    raise SchemaError(
                        f"{name}: {key!r} has shape {shape_of(value)} but the model's is {shape_of(self.model[key])}"
                    )
            missing = [k for k in self.model if k not in ema]
            if missing:
                raise SchemaError(f"{name}: missing key {missing[0]!r} ({len(missing)} missing in all)")
        if self.optimizer is not None:
            for name, state in self.optimizer["state"].items():
                if name not in self.model:
                    raise SchemaError(f"optimizer: state for unknown parameter {name!r}")
                for slot, value in state.items():
                    if is_tensor(value) and shape_of(value) not in ((), shape_of(self.model[name])):
                        raise SchemaError(
                            f"optimizer: {name!r} {slot} has shape {shape_of(value)}, "
                            f"the parameter's is {shape_of(self.model[name])}"
                        )


# ----------------------------------------------------------------------------- optimizer layout


def optimizer_to_named(positional: Mapping[Any, Any], arch: Arch,
                       grouping: Grouping | None = None) -> OptimizerState:
    """Key an AdamW ``state_dict()`` by parameter name, through ``grouping`` or the one the evidence fits.

    Without ``grouping`` the known groupings (:mod:`jitckpt.layouts.groupings`)
    are tried; a :class:`SchemaError` with the reason when none fits, or more
    than one.
    """
    _checked_optimizer(positional)
    if grouping is None:
        found = identify(positional, arch)
        if isinstance(found, str):
            raise SchemaError(found)
        grouping = found
    return to_named(positional, arch, grouping)


def original_positional(ckpt: "JiTCheckpoint") -> OptimizerState | None:
    """The optimizer as the original code (and ``JiTLightningModule``) numbers it: the original grouping."""
    if ckpt.optimizer is None:
        return None
    # An optimizer is named through an arch, which the checkpoint then holds (from_payload sets both).
    return optimizer_to_positional(regroup(ckpt.optimizer, cast(Arch, ckpt.arch), ORIGINAL))


def optimizer_to_positional(named: Mapping[str, Any]) -> OptimizerState:
    """The ``optimizer.state_dict()`` layout: parameters numbered through the groups in order."""
    state, groups, index = {}, [], 0
    for group in named["param_groups"]:
        indices = []
        for name in group["params"]:
            if name in named["state"]:
                state[index] = named["state"][name]
            indices.append(index)
            index += 1
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": indices})
    return {"state": state, "param_groups": groups}


def optimizer_step(named: Mapping[str, Any] | None) -> int | None:
    """AdamW's step count (the same for every parameter), if any state holds one.

    A step tensor whose bytes are damaged is passed over for the next one, and with none readable the step is
    unknown: reading the rest of the file goes on, so ``verify`` lists the damage; copying or loading that
    tensor still fails on it.
    """
    if not named:
        return None
    for state in named["state"].values():
        if "step" in state:
            step = state["step"]
            if is_tensor(step) and math.prod(shape_of(step)) == 1:
                try:
                    step = scalar_value(step)
                except DamagedError:
                    continue
            if isinstance(step, float) and step.is_integer() and 0 <= step < 2 ** 63:
                step = int(step)
            return checked_int("the optimizer's step", step)
    return None


def _checked_groups(groups: Any) -> list[Any]:
    if not isinstance(groups, list) or not groups or not all(
            isinstance(g, Mapping) and isinstance(g.get("params"), list) for g in groups):
        raise SchemaError(f"optimizer param_groups must be a list of groups with params, not {describe(groups)}")
    return groups


def _checked_optimizer(optimizer: Any) -> Mapping[Any, Any]:
    if not isinstance(optimizer, Mapping):
        raise SchemaError(f"optimizer must be a state dict, not {describe(optimizer)}")
    _checked_groups(optimizer.get("param_groups"))
    state = optimizer.get("state", {})
    if not isinstance(state, Mapping) or not all(isinstance(v, Mapping) for v in state.values()):
        raise SchemaError(f"optimizer state must map parameters to their state, not {describe(state)}")
    return optimizer


# ----------------------------------------------------------------------------- building and migrating


def _state(section: str, value: Any, namings: dict[str, str] | None = None) -> StateDict | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise SchemaError(f"{section} is a {type(value).__name__}, not a state dict")
    bad = next((k for k, v in value.items() if not is_tensor(v)), None)
    if bad is not None:
        raise SchemaError(f"{section}: {render(bad, 80)} is not a tensor")
    state, naming = to_canonical(value, section)
    if namings is not None:
        namings[section] = naming.name
    return state


def from_payload(payload: Mapping[str, Any], arch: Arch | None = None) -> JiTCheckpoint:
    """Build and validate a version-1 checkpoint from a dict of its fields.

    ``payload['optimizer']`` may be named or positional; a positional one is
    named through the one known grouping its evidence fits, or else kept aside
    in ``unmapped_optimizer``. ``arch`` defaults to ``payload['arch']`` or is inferred.
    """
    namings: dict[str, str] = {}
    model = _state("model", payload.get("model"), namings)
    if not model:
        raise SchemaError("checkpoint has no model weights")
    args = plain_args(payload.get("args"))
    warnings: list[str] = []
    if arch is None and payload.get("arch") is not None:
        arch = payload["arch"] if isinstance(payload["arch"], Arch) else Arch.from_dict(payload["arch"])
    if arch is not None and not isinstance(arch, Arch):
        raise SchemaError(f"arch must be an architecture record, not {describe(arch)}")
    if arch is None:
        arch, warnings = infer_arch({k: shape_of(v) for k, v in model.items()}, args.get("model"))
        if arch.variant is None:
            warnings.append(f"in_context_start is not stored in the weights; assumed depth // 3 = {arch.in_context_start}")
    model = _in_original_order(model, arch)
    optimizer: Any = payload.get("optimizer")
    unmapped: UnmappedOptimizer | None = None
    if optimizer is not None:
        groups = _checked_optimizer(optimizer)["param_groups"]
        if not all(isinstance(p, str) for g in groups for p in g["params"]):
            found = identify(optimizer, arch)
            if isinstance(found, str):
                optimizer, unmapped = None, UnmappedOptimizer(dict(optimizer), found)
            else:
                optimizer = to_named(optimizer, arch, found)
    global_step = payload.get("global_step")
    if global_step is None:
        global_step = optimizer_step(optimizer if unmapped is None else unmapped.positional)
    ckpt = JiTCheckpoint(
        model=model,
        model_ema1=_in_original_order(_state("model_ema1", payload.get("model_ema1")), arch),
        model_ema2=_in_original_order(_state("model_ema2", payload.get("model_ema2")), arch),
        optimizer=optimizer,
        epoch=checked_int("epoch", payload.get("epoch"), MAX_EPOCH),
        global_step=checked_int("global_step", global_step),
        arch=arch,
        args=args,
        extra=dict(payload.get("extra") or {}),
        warnings=warnings,
        unmapped_optimizer=unmapped,
        layout=payload.get("layout"),
        naming=namings.get("model"),
        key_prefix=wrapper_of(payload.get("model") or {}),
    )
    ckpt.validate()
    return ckpt


@overload
def _in_original_order(state: StateDict, arch: Arch) -> StateDict: ...
@overload
def _in_original_order(state: StateDict | None, arch: Arch) -> StateDict | None: ...
def _in_original_order(state: StateDict | None, arch: Arch) -> StateDict | None:
    """``state`` in the order of the original ``Denoiser.state_dict()`` (a safetensors file sorts its keys);
    keys the architecture does not have follow, for validation to name."""
    if state is None:
        return None
    order = expected_shapes(arch)
    if list(state) == [k for k in order if k in state]:
        return state
    return {**{k: state[k] for k in order if k in state}, **{k: v for k, v in state.items() if k not in order}}


def from_file_payload(payload: dict[str, Any], version: int) -> JiTCheckpoint:
    """Migrate a reader's payload of schema ``version`` and build the checkpoint."""
    ckpt = from_payload(upgrade(payload, version))
    ckpt.source_version = version
    return ckpt


def _v0_to_v1(payload: dict[str, Any]) -> dict[str, Any]:
    """The original ``misc.save_model`` dict, or a relative of it, to version 1 fields.

    Which relative it is, and where its parts are, comes from the layout table
    (:data:`jitckpt.layouts.TREE_LAYOUTS`): a bare state dict is weights only; the seed port's dict has
    ``global_step`` (taken as the field) and ``hyper_parameters`` instead of ``args`` (mapped onto the
    original args; kept whole in ``extra``). What no part claims is kept in ``extra['original']``.
    """
    match = recognise(payload)
    if match is None or match.layout.family != "original":
        keys = ", ".join(repr(k)[:60] for k in list(payload)[:6])
        raise SchemaError(f"not a JiT checkpoint: no 'model' entry (top-level keys: {keys})")
    if match.layout.flat_tensors:
        return {"model": payload, "layout": match.layout.name}
    fields = {part: match.get(part) for part in match.found if part != "hparams"}
    claimed = {path[0] for part, path in match.found.items() if path and part != "hparams"}
    extra = {k: v for k, v in payload.items() if k not in claimed}
    if "args" not in fields and isinstance(match.get("hparams"), Mapping):
        fields["args"] = args_from_hparams(match.get("hparams"))
    return {**fields, "layout": match.layout.name, "extra": {"original": extra} if extra else {}}


# (from_version, function to from_version + 1), applied in order
MIGRATIONS: list[tuple[int, Callable[[dict[str, Any]], dict[str, Any]]]] = [(0, _v0_to_v1)]


def upgrade(payload: dict[str, Any], version: Any) -> dict[str, Any]:
    """Apply the migrations from ``version`` up to :data:`SCHEMA_VERSION`."""
    checked_int("schema_version", version, 1 << 31)
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"checkpoint has schema version {version}, newer than this jitckpt's {SCHEMA_VERSION}; upgrade jitckpt"
        )
    for start, migrate in MIGRATIONS:
        if start >= version:
            payload = migrate(payload)
    return payload
