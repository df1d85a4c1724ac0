"""``torch.distributed.checkpoint`` (DCP) directories: FSDP2 / ``ModelParallelStrategy`` sharded checkpoints.

A DCP directory holds ``.metadata`` (read by :mod:`.dcp_metadata`, safely),
``__{rank}_{n}.distcp`` files in which every stored piece is a ``torch.save``
archive at an offset (read in place by :mod:`jitckpt.torchfile.read`: each tensor
piece a :class:`~jitckpt.tensors.lazy.TensorRef` with its entry's CRC-32), and, when
Lightning wrote it, ``meta.pt`` with everything but the module and optimizer.

Two layouts are understood. Lightning's: ``state_dict`` (the module; the EMAs
beside it under :data:`jitckpt.layouts.SHARDED_EMA_PREFIXES` when EMACallback
saved them sharded), ``optimizer_0`` (AdamW by parameter name) and ``meta.pt``
(epoch, global step, loops, callbacks), mapped like a Lightning ``.ckpt``. And a
plain ``dcp.save`` of a training loop's state, read where the layout table
(:mod:`jitckpt.layouts`) locates its parts. Tensors split across shards are
assembled by :func:`jitckpt.tensors.sharded.assemble`, which checks that they tile.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from ..torchfile import read as torchread
from .table import facts
from ..errors import NOT_CONVERTED, FormatError, render
from ..storage import sources
from ..layouts import SHARDED_EMA_PREFIXES, TREE_LAYOUTS, Match, canonical_key, recognise
from ..schema import JiTCheckpoint, from_file_payload
from ..tensors.sharded import Piece, assemble
from ..tensors.lazy import LazyTensor, TensorRef, iter_refs
from . import dcp_metadata, lightning
from .dcp_metadata import LIGHTNING_META, METADATA_FILE as METADATA_FILE, Layout  # METADATA_FILE: re-exported
from .dcp_write import write_folder as write_folder  # noqa: F401 (this format's writer)

FACTS = facts("dcp")
NAME, SUFFIXES, LABEL, DESCRIPTION = FACTS.name, FACTS.suffixes, FACTS.label, FACTS.description
KIND, WRITES = FACTS.kind, FACTS.writes
MAX_LIST_INDEX = 1 << 16  # a list position in an item's path (param_groups, ...)



def detect_folder(path: str | os.PathLike[str]) -> bool:
    """True for a directory holding DCP's ``.metadata``."""
    return sources.is_dir(path) and sources.is_file(sources.join(path, METADATA_FILE))


def read(path: str) -> JiTCheckpoint:
    return from_tree(read_tree(path), path)


def read_tree(path: str) -> dict[str, Any]:
    """The directory's nested state dict (and ``meta.pt``'s entries), tensors as lazy references."""
    meta_path = sources.join(path, METADATA_FILE)
    data = sources.read_bytes(meta_path, dcp_metadata.MAX_METADATA_BYTES + 1)
    layout = dcp_metadata.parse(data, meta_path)
    files = _ShardFiles(path)
    identities = {}
    for where in layout.locations.values():  # before any piece is read: within its file, sharing no byte
        if where.file not in identities:
            identities[where.file] = (*sources.file_key(files(where.file)), sources.size(files(where.file)))
        if where.offset + where.length > identities[where.file][2]:
            raise FormatError(f"{meta_path}: a piece at bytes {where.offset}..{where.offset + where.length} of "
                              f"{render(where.file, 60)} would run past the file's end ({identities[where.file][2]} "
                              "bytes)")
    dcp_metadata.no_shared_bytes(layout.locations, {k: v[:2] for k, v in identities.items()}, meta_path)
    flat = {key: (_tensor(key, item, layout, files, path) if item is not None else _bytes(key, layout, files))
            for key, item in layout.items.items()}
    tree = _unflatten(flat, layout.paths, path)
    extra_meta = sources.join(path, LIGHTNING_META)
    if sources.exists(extra_meta) and not sources.is_file(extra_meta):
        raise FormatError(f"{extra_meta}: not a regular file (a FIFO, device, folder or dangling link); the epoch, "
                          "step and callbacks Lightning keeps there cannot be read")
    if not sources.exists(extra_meta) and any(isinstance(k, str) and k.startswith("optimizer_") and k[10:].isdigit()
                                               for k in tree):
        raise FormatError(f"{path}: a Lightning sharded checkpoint without its {LIGHTNING_META} (epoch, global "
                          "step, loops, callbacks): the directory is incomplete")
    if sources.exists(extra_meta):
        meta = torchread.read_tree(extra_meta)
        if not isinstance(meta, dict):
            raise FormatError(f"{extra_meta}: holds a {type(meta).__name__}, not Lightning's checkpoint metadata")
        clash = next((k for k in meta if k in tree), None)
        if clash is not None:
            raise FormatError(f"{path}: {render(clash, 60)} is both in the sharded state and in {LIGHTNING_META}")
        tree.update(meta)
    return tree


class _ShardFiles:
    """The data files of one directory, each checked once: a regular file inside it."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.checked: dict[str, str] = {}

    def __call__(self, name: str) -> str:
        if name not in self.checked:
            full = sources.join(self.folder, name)
            if not sources.is_file(full):
                raise FormatError(f"{full}: shard file is missing or not a regular file (.metadata stores data "
                                  "there)")
            self.checked[name] = full
        return self.checked[name]


def _piece(key: str, where: tuple[str, tuple[int, ...] | None], layout: Layout, files: _ShardFiles) -> Any:
    location = layout.locations.get(where)
    if location is None:
        raise FormatError(f"{files.folder}: .metadata lists a piece of {render(key, 80)} but not where it is stored")
    return torchread.read_tree(files(location.file), location.offset, location.length)


def _tensor(key: str, item: dcp_metadata.TensorItem, layout: Layout, files: _ShardFiles, path: str) -> LazyTensor:
    pieces = []
    for chunk in item.chunks:
        ref = _piece(key, (key, chunk.offsets), layout, files)
        if not isinstance(ref, TensorRef) or ref.shape != chunk.sizes:
            what = f"shape {ref.shape}" if isinstance(ref, TensorRef) else f"a {type(ref).__name__}"
            raise FormatError(f"{path}: a piece of {render(key, 80)} holds {what}, .metadata says a tensor of {chunk.sizes}")
        pieces.append(Piece(dataclasses.replace(ref, name=key), chunk.offsets))
    return assemble(key, item.dtype, item.size, pieces, path)


def _bytes(key: str, layout: Layout, files: _ShardFiles) -> Any:
    return _piece(key, (key, None), layout, files)


def _unflatten(flat: dict[str, Any], paths: dict[str, tuple[str | int, ...]], where: str) -> dict[str, Any]:
    """Nest ``flat`` along each key's path (DCP's planner data; the key itself when it has none).

    A list position pads the list with None up to it; all the padding together is bounded by the items
    (a path may not make a few items into millions of empty slots).
    """
    root: dict[str, Any] = {}
    budget = [4 * len(flat) + 1024]
    for key, value in flat.items():
        route = paths.get(key, (key,))
        node: Any = root
        for step, following in zip(route, route[1:]):
            node = _child(node, step, {} if isinstance(following, str) else [], where, key, budget)
        _set(node, route[-1], value, where, key, budget)
    return root


def _child(node: Any, step: Any, empty: Any, where: str, key: str, budget: list[int]) -> Any:
    if isinstance(node, dict):
        current = node.get(step)
    else:
        current = node[step] if type(step) is int and 0 <= step < len(node) else None
    if current is None:
        _set(node, step, empty, where, key, budget)
        return empty
    if not isinstance(current, (dict, list)):
        raise FormatError(f"{where}: item {render(key, 80)} nests inside a value that is not a container")
    return current


def _set(node: Any, step: Any, value: Any, where: str, key: str, budget: list[int]) -> None:
    if isinstance(node, dict) and isinstance(step, str):
        node[step] = value
    elif isinstance(node, list) and type(step) is int and 0 <= step < MAX_LIST_INDEX:
        budget[0] -= max(0, step + 1 - len(node))
        if budget[0] < 0:
            raise FormatError(f"{where}: item {render(key, 80)}'s path pads its lists with far more empty places "
                              "than the directory has items")
        node.extend([None] * (step + 1 - len(node)))
        node[step] = value
    else:
        raise FormatError(f"{where}: item {render(key, 80)} has a path that does not fit its containers")


# ----------------------------------------------------------------------------- to the schema


def from_tree(tree: dict[str, Any], path: str) -> JiTCheckpoint:
    match = recognise(tree)
    if match is not None and match.layout.family == "lightning":
        return _from_lightning(tree, path)
    return _from_plain(tree, match, path)


def _from_lightning(tree: dict[str, Any], path: str) -> JiTCheckpoint:
    tree = dict(tree)
    state = dict(tree["state_dict"])
    emas = {version: {k[len(prefix):]: state.pop(k) for k in list(state) if k.startswith(prefix)}
            for version, prefix in SHARDED_EMA_PREFIXES.items()}
    tree["state_dict"] = state
    optimizers = sorted(k for k in tree if isinstance(k, str) and k.startswith("optimizer_") and k[10:].isdigit())
    if optimizers:  # Lightning's own layout; a whole Lightning-shaped dict already has optimizer_states
        tree["optimizer_states"] = [_named_optimizer(tree.pop(k), path) for k in optimizers]
    elif isinstance(tree.get("optimizer_states"), list):
        tree["optimizer_states"] = [_named_optimizer(o, path) for o in tree["optimizer_states"]]
    callbacks = dict(tree.get("callbacks") or {})
    entry = lightning.ema_entry(callbacks)
    if any(emas.values()):
        ema_state = dict(callbacks.get(entry or lightning.EMA_CALLBACK) or {})
        ema_state.pop("sharded", None)
        ema_state.update((version, values) for version, values in emas.items() if values)
        callbacks[entry or lightning.EMA_CALLBACK] = ema_state
    elif entry is not None:
        _refuse_rank_zero_shards(callbacks[entry], state, path)
    tree["callbacks"] = callbacks
    return lightning.from_tree(tree, path)


def _refuse_rank_zero_shards(ema_state: Any, model: dict[str, Any], path: str) -> None:
    """meta.pt written by rank zero alone holds only its own shards of sharded EMAs: never read them as whole."""
    for version in ("ema1", "ema2"):
        values = ema_state.get(version) if isinstance(ema_state, dict) else None
        for name, tensor in (values or {}).items():
            full = model.get(name)
            if isinstance(tensor, LazyTensor) and isinstance(full, LazyTensor) and tensor.shape != full.shape:
                raise FormatError(
                    f"{path}: {LIGHTNING_META} holds only rank zero's shards of the EMAs ({version} {name!r}: "
                    f"{tensor.shape} of {full.shape}), as Lightning saved EMACallback's state before jitckpt "
                    "stored sharded EMAs in the sharded checkpoint; the other ranks' EMAs are not in this "
                    "directory. Use the consolidated .pth that JiTModelCheckpoint wrote for this step")


def _named_optimizer(optimizer: Any, path: str) -> Any:
    """An optimizer state dict keyed by parameter name, names made canonical (``net.``)."""
    if not isinstance(optimizer, dict):
        return optimizer
    state = optimizer.get("state")
    groups = optimizer.get("param_groups")
    if isinstance(state, dict):
        state = {canonical_key(k) if isinstance(k, str) else k: v for k, v in state.items()}
    if isinstance(groups, list):
        groups = [{**g, "params": [canonical_key(p) if isinstance(p, str) else p for p in g.get("params", [])]}
                  if isinstance(g, dict) else g for g in groups]
    return {**optimizer, "state": state, "param_groups": groups}


def _from_plain(tree: dict[str, Any], match: Match | None, path: str) -> JiTCheckpoint:
    """A plain ``dcp.save`` of a training loop's state or of a bare state dict, read where the layout row says."""
    if match is None:
        keys = ", ".join(repr(k)[:60] for k in list(tree)[:6])
        raise FormatError(f"{path}: a DCP checkpoint without a model state dict (top-level keys: {keys}); "
                          f"jitckpt reads the layouts {', '.join(r.name for r in TREE_LAYOUTS)}")
    payload: dict[str, Any] = {part: match.get(part) for part in match.found if part != "hparams"}
    payload["layout"] = match.layout.name
    if "optimizer" in payload:
        payload["optimizer"] = _named_optimizer(payload["optimizer"], path)
    payload["extra"] = {"dcp": {k: v for k, v in tree.items() if not _holds_tensors(v)}}
    ckpt = from_file_payload(payload, 1)
    dropped = [] if match.layout.flat_tensors else [
        k for k, v in tree.items() if k not in match.used_keys and _holds_tensors(v)]
    if dropped:
        ckpt.warnings.append(f"{path}: tensors under {', '.join(repr(k)[:60] for k in dropped)} are not part of a "
                             f"JiT checkpoint jitckpt knows; they are {NOT_CONVERTED}")
    return ckpt


def stored_tensors(path: str) -> list[TensorRef]:
    """Every tensor piece the directory stores, mapped or not (what ``verify DIR`` checks)."""
    return [piece for ref in iter_refs(read_tree(path)) for piece in ref.stored_pieces()]


def _holds_tensors(value: Any) -> bool:
    return next(iter_refs(value), None) is not None


is_dcp_dir = detect_folder  # the name other modules know it by
