"""The layout table: where JiT's parts sit in a tree of plain data, and what its tensors are called there.

Two tables, both data: :data:`~.trees.TREE_LAYOUTS` (one row per way of arranging model, EMAs, optimizer,
epoch, step and args in a tree: the original's dict, Lightning's, the seed port's, Fabric-style dicts, plain
state dicts, ...) and :data:`~.names.NAMINGS` (one row per way of naming the network's tensors: the
original's ``net.`` keys, diffusers' names with fused or split attention), plus the wrapper prefixes every
naming may carry. Every container reader (torch zip, safetensors, DCP, diffusers folders) consults them;
adding a layout of the wild is one row and one fixture test.

The facts those rows rest on live here too, as data: the architecture (:mod:`.arch`: variants, tensor
names and shapes), the optimizer's param groupings (:mod:`.groupings`) and the original's args
(:mod:`.args`). Knows nothing of bytes, files or formats.

May import: errors, tensors.
"""

from .names import NAMINGS, Naming, canonical_key, from_canonical, naming_of, normalize_keys, to_canonical, wrapper_of
from .names import get as get_naming
from .trees import SHARDED_EMA_PREFIXES, TREE_LAYOUTS, Match, TreeLayout, get_path, recognise


def describe(layout: str | None, naming: str | None, wrapper: str | None = None) -> str | None:
    """One line naming a tree layout row and a naming row (either may be unknown), for ``inspect``."""
    labels = [row.label for row in TREE_LAYOUTS if row.name == layout]
    if naming is not None:
        labels.append("keys in " + get_naming(naming).label + (f" under {wrapper!r}" if wrapper else ""))
    return "; ".join(labels) or None

__all__ = ["describe", "get_naming", "NAMINGS", "Naming", "SHARDED_EMA_PREFIXES", "TREE_LAYOUTS", "Match", "TreeLayout", "canonical_key",
           "from_canonical", "get_path", "naming_of", "normalize_keys", "recognise", "to_canonical", "wrapper_of"]
