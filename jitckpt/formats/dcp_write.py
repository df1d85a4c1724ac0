"""Writing a checkpoint as a ``torch.distributed.checkpoint`` directory in Lightning's layout.

What ``ModelParallelStrategy`` writes and reads: ``state_dict.*`` (the module,
and the two EMAs beside it under :data:`jitckpt.layouts.SHARDED_EMA_PREFIXES`, where
EMACallback loads them from under sharding), ``optimizer_0.*`` (AdamW by
parameter name, in the groups ``JiTLightningModule`` builds), ``.metadata``, and
``meta.pt`` with the rest of a Lightning checkpoint (epoch, global step, loops,
callbacks, hyper-parameters). Each item is one stored piece, a ``torch.save``
archive written straight into a data file, tensors streamed from the source;
``shards`` data files share the bytes evenly, for parallel reading.
``torch.distributed.checkpoint.load`` reshards on load, to any number of ranks.
"""

from __future__ import annotations

from typing import Any, cast

from ..torchfile import write as torchzip
from ..errors import FormatError
from ..storage.atomic_folder import OutputFolder
from ..layouts import SHARDED_EMA_PREFIXES
from ..layouts.arch import Arch
from ..layouts.groupings import ORIGINAL, regroup, adamw_group_defaults
from ..schema import JiTCheckpoint, OptimizerState
from ..tensors.anytensor import dtype_name, is_tensor, nbytes_of, shape_of
from . import lightning
from .dcp_metadata import LIGHTNING_META, METADATA_FILE, Chunk, Layout, Location, TensorItem, write as write_metadata

MAX_SHARDS = 1024
Item = tuple[str, tuple[str | int, ...], Any]  # an item's flattened key, its path in the nested state, its value


def write_folder(ckpt: JiTCheckpoint, folder: OutputFolder, progress: torchzip.Progress | None = None,
                 weights: str | None = None, shards: int = 1) -> None:
    """Write ``ckpt`` into the (empty, temporary) ``folder``."""
    if weights:
        raise FormatError("a weights-only export is written as .safetensors or .pth, not as a DCP directory")
    if not 1 <= shards <= MAX_SHARDS:
        raise FormatError(f"--shards must be between 1 and {MAX_SHARDS}, not {shards}")
    items = _items(ckpt)
    layout = Layout(items={}, locations={}, paths={})
    files = [f"__{i}_0.distcp" for i in range(shards)]
    assigned = _balance(items, shards)
    for index, name in enumerate(files):
        with folder.file(name) as handle:
            for key, route, value in assigned[index]:
                start = handle.tell()
                torchzip.write_tree(value, torchzip.EmbeddedOutput(handle, start), progress=progress)
                length = handle.tell() - start
                if is_tensor(value):
                    shape = shape_of(value)
                    layout.items[key] = TensorItem(dtype_name(value), shape, (Chunk((0,) * len(shape), shape),))
                    layout.locations[(key, (0,) * len(shape))] = Location(name, start, length)
                else:
                    layout.items[key] = None
                    layout.locations[(key, None)] = Location(name, start, length)
                layout.paths[key] = route
    with folder.file(METADATA_FILE) as handle:
        write_metadata(layout, handle)
    with folder.file(LIGHTNING_META) as handle:
        torchzip.write_tree(_meta_tree(ckpt), handle, archive="meta")


def _items(ckpt: JiTCheckpoint) -> list[Item]:
    """(flattened key, path, value) of everything stored in the data files, in DCP's flattening."""
    state: dict[str, Any] = dict(ckpt.model)
    for version, section in (("ema1", ckpt.model_ema1), ("ema2", ckpt.model_ema2)):
        if section is not None:
            state.update((SHARDED_EMA_PREFIXES[version] + name, value) for name, value in section.items())
    tree: dict[str, Any] = {"state_dict": state}
    if ckpt.optimizer is not None:
        tree["optimizer_0"] = _optimizer(ckpt)
    out: list[Item] = []
    _flatten(tree, (), out)
    return out


def _optimizer(ckpt: JiTCheckpoint) -> OptimizerState:
    """AdamW by parameter name in JiTLightningModule's groups, every hyper-parameter a live AdamW has
    (``torch.distributed.checkpoint.load`` wants each key the destination optimizer holds)."""
    # Only called with an optimizer, which was named through the checkpoint's arch (from_payload sets both).
    named = regroup(cast(OptimizerState, ckpt.optimizer), cast(Arch, ckpt.arch), ORIGINAL)
    defaults = adamw_group_defaults()
    groups = [{**defaults, **group} for group in named["param_groups"]]
    return {"state": named["state"], "param_groups": groups}


def _flatten(node: Any, route: tuple[str | int, ...], out: list[Item]) -> None:
    """DCP's flattening: dicts always, lists holding containers or tensors by position; other values are leaves."""
    if isinstance(node, dict) and node:
        for key, value in node.items():
            _flatten(value, route + (key,), out)
    elif isinstance(node, list) and any(isinstance(v, (dict, list)) or is_tensor(v) for v in node):
        for index, value in enumerate(node):
            _flatten(value, route + (index,), out)
    else:
        out.append((".".join(map(str, route)), route, node))


def _balance(items: list[Item], shards: int) -> list[list[Item]]:
    """Items per data file, the bytes spread evenly (largest first to the emptiest file), each file in key order."""
    loads = [0] * shards
    assigned: list[list[int]] = [[] for _ in range(shards)]
    order = sorted(range(len(items)), key=lambda i: -(nbytes_of(items[i][2]) if is_tensor(items[i][2]) else 0))
    for i in order:
        target = loads.index(min(loads))
        assigned[target].append(i)
        loads[target] += nbytes_of(items[i][2]) if is_tensor(items[i][2]) else 64
    return [[items[i] for i in sorted(indices)] for indices in assigned]


def _meta_tree(ckpt: JiTCheckpoint) -> dict[str, Any]:
    """Lightning's checkpoint without the module and optimizers; EMACallback's entry marks its EMAs as sharded."""
    tree = lightning.to_tree(ckpt)
    tree.pop("state_dict")
    tree.pop("optimizer_states")
    entry = lightning.ema_entry(tree["callbacks"]) or lightning.EMA_CALLBACK
    state = dict(tree["callbacks"].get(entry) or {})
    had = [state.pop(version, None) is not None for version in ("ema1", "ema2")]
    if any(had):
        state["sharded"] = True
    tree["callbacks"][entry] = state
    return tree
