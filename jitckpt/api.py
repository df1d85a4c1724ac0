"""The public Python API: load, save, convert, verify. The CLI is a thin layer over it.

May import: errors, storage, tensors, layouts, schema, formats.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from . import formats
from .formats.table import WEIGHTS_ONLY_TO, either, facts, folder_writable
from .storage import sources
from .errors import DROP_OPTIMIZER, NOT_CONVERTED, OutputError, SchemaError, naming, render
from .storage.atomic import atomic_output, check_output_path, refuse_default_name
from .schema import JiTCheckpoint
from .tensors.anytensor import dtype_name, is_tensor, iter_tensor_bytes, shape_of, to_torch
from .tensors.lazy import CHUNK_BYTES, LazyTensor

Progress = Callable[[int], None]


def detect_format(path: str | os.PathLike) -> str:
    """The format of ``path`` (``'pth'``, ``'ckpt'``, ...: a name of ``jitckpt.formats.FORMATS``), from its bytes."""
    return formats.detect_format(path)


def load(path: str | os.PathLike, lazy: bool = False) -> JiTCheckpoint:
    """Read a checkpoint of any supported format into a :class:`JiTCheckpoint`.

    Pickles are read with an allowlist and never run code. With ``lazy=True``
    tensors stay :class:`~jitckpt.tensors.lazy.TensorRef` (nothing is read until used);
    otherwise they are ``torch.Tensor``.

    Example:
        >>> ckpt = jitckpt.load("checkpoint-last.pth")
        >>> ckpt.epoch, ckpt.arch.variant
    """
    _, ckpt = formats.read(path)
    return ckpt if lazy else materialize(ckpt)


def materialize(ckpt: JiTCheckpoint) -> JiTCheckpoint:
    """Replace every lazy tensor in ``ckpt`` by an in-memory ``torch.Tensor`` (in place)."""
    for name, state in ckpt.sections().items():
        setattr(ckpt, name, {k: to_torch(v) for k, v in state.items()})
    if ckpt.optimizer is not None:
        ckpt.optimizer["state"] = _map_tensors(ckpt.optimizer["state"], to_torch)
    if ckpt.unmapped_optimizer is not None:
        positional = ckpt.unmapped_optimizer.positional
        positional["state"] = _map_tensors(positional.get("state", {}), to_torch)
    ckpt.extra = _map_tensors(ckpt.extra, to_torch)
    return ckpt


def _map_tensors(obj: Any, fn: Callable[[Any], Any]) -> Any:
    if isinstance(obj, LazyTensor):
        return fn(obj)
    if isinstance(obj, dict):
        out = copy.copy(obj)
        for key, value in obj.items():
            out[key] = _map_tensors(value, fn)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(v, fn) for v in obj)
    return obj


def save(ckpt: JiTCheckpoint, path: str | os.PathLike, format: str | None = None, *, force: bool = False,
         weights: str | None = None, drop_optimizer: bool = False, progress: Progress | None = None,
         shards: int = 1) -> Path:
    """Write ``ckpt`` to ``path`` atomically; the format defaults to the file's suffix.

    ``weights`` ('raw', 'ema1' or 'ema2') writes only that set of weights under
    plain ``net.`` keys (safetensors or pth). ``drop_optimizer`` writes the
    full state without the optimizer: needed when the source's optimizer could
    not be mapped to parameter names (``ckpt.unmapped_optimizer``), which is
    otherwise a :class:`SchemaError`. The original ``.pth`` and the Lightning
    ``.ckpt`` get the optimizer in the original grouping, whatever the source's.
    The ``dcp`` format writes a folder (``shards`` data files) in the same way.
    Raises :class:`OutputError` if ``path`` exists and ``force`` is false.
    """
    target = Path(path)
    name = format or formats.format_for_suffix(target)
    if name is None:
        raise OutputError(f"cannot tell the format from {target.name!r}; use a {formats.suffix_list()} name or pass "
                          "a format")
    module = formats.get(name, writing=True)
    if weights is not None:
        ckpt.weights(weights)  # an unknown or absent set fails here, before touching the disk
    elif drop_optimizer:
        ckpt = dataclasses.replace(ckpt, optimizer=None, unmapped_optimizer=None)
    elif ckpt.unmapped_optimizer is not None:
        raise SchemaError(f"{ckpt.unmapped_optimizer.reason}; pass {DROP_OPTIMIZER} to write "
                          "the rest without it, or export weights only")
    if module.WRITES == "folder":
        from .storage.atomic_folder import atomic_folder

        with atomic_folder(target, force=force, replaceable=formats.is_checkpoint_folder) as folder:
            module.write_folder(ckpt, folder, progress=progress, weights=weights, shards=shards)
        return target
    with atomic_output(target, force=force) as handle:
        module.write(ckpt, handle, target, progress=progress, weights=weights)
    return target


def default_output(src: str | Path, to: str) -> Path:
    """``old.pth`` -> ``old.ckpt`` beside it (and so on for each format); for a URL, in the working folder."""
    if sources.is_url(src):
        return Path(sources.basename(src) or "checkpoint").with_suffix(formats.get(to).SUFFIXES[0])
    return Path(src).with_suffix(formats.get(to).SUFFIXES[0])


def convert(src: str | os.PathLike, dst: str | os.PathLike | None = None, to: str | None = None, *,
            weights: str | None = None, force: bool = False, drop_optimizer: bool = False,
            progress: Progress | None = None, shards: int = 1,
            on_warning: Callable[[str], None] | None = None) -> Path:
    """Convert ``src`` to another format, streaming tensors; returns the path written.

    The target format is ``to``, else the suffix of ``dst``, else the natural
    partner of the source: original ``.pth`` -> Lightning ``.ckpt``, everything
    else -> original ``.pth``. With ``weights`` only that set of weights is kept;
    with ``drop_optimizer`` the full state without the optimizer (see :func:`save`).
    A ``dst`` whose suffix names no format jitckpt writes (``x.bin``) is refused
    with :class:`OutputError` unless ``to`` says the format. ``on_warning`` hears
    of any data of the source that the output will not hold.
    """
    source: str | Path = str(src) if sources.is_url(src) else Path(src)
    if to is None and dst is not None:
        to = formats.format_for_suffix(dst)
        if to is None:
            raise OutputError(f"cannot tell the format to write from {Path(dst).name!r}: name it "
                              f"{formats.suffix_list()}, or pass {formats.to_remedy()}")
    if to is not None:
        formats.get(to, writing=True)  # before reading: a format convert does not write has no default name
        named = formats.format_for_suffix(dst) if dst is not None else None
        if named is not None and named != to:
            raise OutputError(f"{str(dst)!r} names a {facts(named).label} file, but the format to write is "
                              f"{facts(to).label}; give a name with its suffix ({formats.get(to).SUFFIXES[0]})")
    if shards != 1 and (to is None or formats.get(to).WRITES != "folder"):
        raise OutputError(f"--shards {shards} applies to a folder format ({either(folder_writable())}) only")
    src_format, ckpt = formats.read(source)
    if on_warning is not None:
        for line in ckpt.warnings:
            if NOT_CONVERTED in line:
                on_warning(line)
    if to is None:
        to = WEIGHTS_ONLY_TO if weights else facts(src_format).converts_to
    target = Path(dst) if dst is not None else default_output(source, to)
    if isinstance(source, Path) and target.resolve() == source.resolve():
        raise OutputError(f"output {str(target)!r} is the source file; give another name with -o")
    if dst is None:
        refuse_default_name(target)
    if formats.get(to).WRITES == "folder":
        from .storage.atomic_folder import check_folder_target

        check_folder_target(target, force, formats.is_checkpoint_folder, source)
    else:
        check_output_path(target, force)
    try:
        return save(ckpt, target, to, force=force, weights=weights, drop_optimizer=drop_optimizer, progress=progress,
                    shards=shards)
    except SchemaError as exc:  # the source's content cannot be written: say which file
        raise naming(exc, str(source)) from None


def iter_tensors(ckpt: JiTCheckpoint) -> Iterator[tuple[str, Any]]:
    """Every tensor of every section, with a readable path such as ``model_ema1/net.pos_embed``."""
    for name, state in ckpt.sections().items():
        for key, value in state.items():
            yield f"{name}/{key}", value
    if ckpt.optimizer is not None:
        for pname, state in ckpt.optimizer["state"].items():
            for slot, value in state.items():
                if is_tensor(value):
                    yield f"optimizer/{pname}/{slot}", value
    if ckpt.unmapped_optimizer is not None:  # not named: by the file's parameter index
        for index, state in ckpt.unmapped_optimizer.positional.get("state", {}).items():
            for slot, value in state.items():
                if is_tensor(value):
                    yield f"optimizer/#{index}/{slot}", value


def held(ckpt: JiTCheckpoint) -> str | None:
    """The set of weights a weights-only checkpoint holds (``'ema1'``, ``'ema2'``, ``'raw'``, or ``''`` when it
    does not say); None for a training state."""
    return str(ckpt.extra.get("weights") or "") if ckpt.is_weights_only else None


def compared(a: JiTCheckpoint, b: JiTCheckpoint) -> str:
    """What :func:`compare` compares for ``a`` and ``b``, in words (only what both hold)."""
    if held(a) is not None or held(b) is not None:
        which = held(a) or held(b) or ""
        against = (f"the training state's {which} section" if which else
                   "whichever of the training state's raw, EMA 1 and EMA 2 sections it matches")
        return f"the {which or 'one set of'} weights" + (f" (against {against})"
                                                         if (held(a) is None) != (held(b) is None) else "")
    parts = [name for name, there in (("epoch", a.epoch is not None and b.epoch is not None),
                                      ("step", a.global_step is not None and b.global_step is not None),
                                      ("args", bool(a.args or b.args)), ("model", True),
                                      ("EMA 1", a.model_ema1 is not None and b.model_ema1 is not None),
                                      ("EMA 2", a.model_ema2 is not None and b.model_ema2 is not None),
                                      ("optimizer", a.optimizer is not None and b.optimizer is not None)) if there]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _compare_weights(a: JiTCheckpoint, b: JiTCheckpoint, limit: int) -> list[str]:
    """A weights-only side against the same set of the other: an export of EMA 1 against the EMA 1 it came from."""
    ha, hb = held(a), held(b)
    if ha and hb and ha != hb:
        return [f"weights: the first holds {ha}, the second {hb}"]
    # one set that does not say which (a Hub folder): whichever section of the other it matches
    said = ha or hb or ""
    candidates = [said] if said else ["ema1", "ema2", "raw"]
    first: list[str] = []
    for which in candidates:
        try:
            sa, sb = a.weights(which), b.weights(which)
        except SchemaError as exc:
            found = [f"weights: {exc}"]
        else:
            found = list(itertools.islice(_compare_state(which, sa, sb), limit))
        if not found:
            return []
        first = first or found
    return first


def compare(a: JiTCheckpoint, b: JiTCheckpoint, limit: int = 10) -> list[str]:
    """The first ``limit`` differences between two checkpoints' states; empty when they match.

    Tensors are compared byte for byte (so dtype, shape and every bit count),
    streaming, one tensor at a time.
    """
    diffs: list[str] = []

    def note(text: str) -> bool:
        diffs.append(text)
        return len(diffs) >= limit

    if held(a) is not None or held(b) is not None:  # one set of weights: compare it with its match
        return _compare_weights(a, b, limit)
    for name in ("epoch", "global_step"):
        if getattr(a, name) != getattr(b, name) and note(f"{name}: {getattr(a, name)!r} != {getattr(b, name)!r}"):
            return diffs
    missing = object()
    for key in [k for k in {**a.args, **b.args} if a.args.get(k, missing) != b.args.get(k, missing)]:
        shown = [render(args[key], 60) if key in args else "(absent)" for args in (a.args, b.args)]
        if note(f"args.{render(key, 40)[1:-1]}: {shown[0]} != {shown[1]}"):  # the differing keys, bounded
            return diffs
    if (a.arch and a.arch.to_dict()) != (b.arch and b.arch.to_dict()) and note(f"arch: {a.arch} != {b.arch}"):
        return diffs
    for name in ("model", "model_ema1", "model_ema2"):
        sa, sb = getattr(a, name), getattr(b, name)
        if (sa is None) != (sb is None):
            if note(f"{name}: present in {'first' if sa is not None else 'second'} only"):
                return diffs
            continue
        if sa is None:
            continue
        for line in _compare_state(name, sa, sb):
            if note(line):
                return diffs
    oa, ob = a.optimizer, b.optimizer
    if (oa is None) != (ob is None):
        note(f"optimizer: present in {'first' if oa is not None else 'second'} only")
    elif oa is not None and ob is not None:  # both present (the test above rules out one alone)
        if _settings_by_name(oa) != _settings_by_name(ob) and note("optimizer: param_groups differ"):
            return diffs
        for line in _compare_slots("optimizer/", oa["state"], ob["state"]):
            if note(line):
                return diffs
    ua, ub = a.unmapped_optimizer, b.unmapped_optimizer
    if (ua is None) != (ub is None):
        note(f"unmapped optimizer: present in {'first' if ua is not None else 'second'} only")
    elif ua is not None and ub is not None:  # both present (the test above rules out one alone)
        pa, pb = ua.positional, ub.positional
        if pa["param_groups"] != pb["param_groups"] and note("unmapped optimizer: param_groups differ"):
            return diffs
        for line in _compare_slots("unmapped optimizer/#", pa.get("state", {}), pb.get("state", {})):
            if note(line):
                return diffs
    return diffs


def _settings_by_name(named: dict) -> dict[str, dict]:
    """Each parameter's group settings: two optimizers grouped differently are the same if these are."""
    return {n: {k: v for k, v in g.items() if k != "params"} for g in named["param_groups"] for n in g["params"]}


def _compare_slots(prefix: str, state_a: dict, state_b: dict) -> Iterator[str]:
    """Differences between two optimizer states, parameter by parameter (by name, or by index)."""
    for key in sorted(set(state_a) | set(state_b)):
        yield from _compare_state(f"{prefix}{key}", state_a.get(key, {}), state_b.get(key, {}))


def _compare_state(name: str, sa: dict, sb: dict) -> Iterator[str]:
    for key in [k for k in sa if k not in sb]:
        yield f"{name}: {key!r} only in first"
    for key in [k for k in sb if k not in sa]:
        yield f"{name}: {key!r} only in second"
    for key in [k for k in sa if k in sb]:
        ta, tb = sa[key], sb[key]
        if not (is_tensor(ta) and is_tensor(tb)):
            if ta != tb:
                yield f"{name}/{key}: {ta!r} != {tb!r}"
            continue
        if dtype_name(ta) != dtype_name(tb):
            yield f"{name}/{key}: dtype {dtype_name(ta)} != {dtype_name(tb)}"
        elif shape_of(ta) != shape_of(tb):
            yield f"{name}/{key}: shape {shape_of(ta)} != {shape_of(tb)}"
        elif not _same_bytes(ta, tb):
            yield f"{name}/{key}: values differ ({_first_difference(ta, tb)})"


def _same_bytes(ta: Any, tb: Any) -> bool:
    return all(x == y for x, y in zip(_blocks(ta), _blocks(tb)))


def _blocks(tensor: Any, size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The tensor's bytes in blocks of exactly ``size`` (the last may be shorter)."""
    pending = bytearray()
    for chunk in iter_tensor_bytes(tensor, size):
        pending += chunk
        while len(pending) >= size:
            yield bytes(pending[:size])
            del pending[:size]
    if pending:
        yield bytes(pending)


def _first_difference(ta: Any, tb: Any) -> str:
    import torch

    xa, xb = to_torch(ta).reshape(-1), to_torch(tb).reshape(-1)
    differ = (xa != xb) & ~(torch.isnan(xa) & torch.isnan(xb)) if xa.is_floating_point() else xa != xb
    index = int(differ.nonzero()[0]) if differ.any() else 0
    count = int(differ.sum())
    return f"{count} element(s), first at flat index {index}: {xa[index].item()!r} vs {xb[index].item()!r}"
