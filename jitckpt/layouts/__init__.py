"""The layout table: where JiT's parts sit in a tree of plain data, and what its tensors are called there.

Two tables, both data: :data:`~.trees.TREE_LAYOUTS` (one row per way of arranging model, EMAs, optimizer,
epoch, step and args in a tree: the original's dict, Lightning's, the seed port's, Fabric-style dicts, plain
state dicts, ...) and :data:`~.names.NAMINGS` (one row per way of naming the network's tensors: the
original's ``net.`` keys, diffusers' names with fused or split attention), plus the wrapper prefixes every
naming may carry. Every container reader (torch zip, safetensors, DCP, diffusers folders) consults them;
adding a layout of the wild is one row and one fixture test.

May import: :mod:`jitckpt.errors` and the lazy-tensor modules (``tensors``, ``sharded``, ``anytensor``).
Knows nothing of bytes, files or formats.
"""

from .names import NAMINGS, Naming, canonical_key, from_canonical, naming_of, normalize_keys, to_canonical
from .trees import SHARDED_EMA_PREFIXES, TREE_LAYOUTS, Match, TreeLayout, get_path, recognise

__all__ = ["NAMINGS", "Naming", "SHARDED_EMA_PREFIXES", "TREE_LAYOUTS", "Match", "TreeLayout", "canonical_key",
           "from_canonical", "get_path", "naming_of", "normalize_keys", "recognise", "to_canonical"]
