"""The edges with Python, torch and Lightning that are not public API, each in one place.

Every name below reaches past a library's public surface because no public call does the job. Each was
checked against the versions in :data:`CHECKED_WITH`; ``tests/test_compat.py`` exercises each one, so an
upgrade that moves it fails there, loudly, instead of deep inside a save. Where a public route exists (the
fused ``_foreach`` kernels have per-tensor equivalents), the public route is the fallback.

May import: errors.
"""

from __future__ import annotations

import pickle
from typing import Any, Sequence

from .errors import JiTCheckpointError

# The versions every edge here was last checked against (by tests/test_compat.py).
CHECKED_WITH = {"python": "3.11", "torch": "2.14.1", "lightning": "2.6.6"}


def _moved(what: str, library: str) -> JiTCheckpointError:
    return JiTCheckpointError(f"{what} is not where jitckpt expects it in this {library} (checked with "
                              f"{library} {CHECKED_WITH[library]}); please report the versions you run")


def python_pickler() -> type:
    """``pickle._Pickler``, the pure-Python pickler: its ``dispatch`` table lets a class write its own opcodes
    (the C pickler offers no such hook), which is how torch.save's globals are written byte for byte."""
    pickler = getattr(pickle, "_Pickler", None)
    if pickler is None or not isinstance(getattr(pickler, "dispatch", None), dict):
        raise _moved("pickle._Pickler.dispatch", "python")
    return pickler


def py2_names() -> tuple[dict[tuple[str, str], tuple[str, str]], dict[str, str]]:
    """Python 2's module and class names as Python 3 spells them (``_compat_pickle``'s two tables, which
    ``pickle.Unpickler`` itself consults for protocol < 3 pickles)."""
    import _compat_pickle

    return _compat_pickle.NAME_MAPPING, _compat_pickle.IMPORT_MAPPING


def dump_checkpoint(trainer: Any, weights_only: bool = False) -> dict[str, Any]:
    """The dict Lightning would save now (``trainer._checkpoint_connector.dump_checkpoint``): a callback that
    writes its own files needs it, and ``Trainer.save_checkpoint`` only writes it through the strategy."""
    connector = getattr(trainer, "_checkpoint_connector", None)
    dump = getattr(connector, "dump_checkpoint", None)
    if dump is None:
        raise _moved("Trainer._checkpoint_connector.dump_checkpoint", "lightning")
    return dump(weights_only=weights_only)


def saves_distributed_checkpoint(strategy: Any) -> bool:
    """Whether a ``ModelParallelStrategy`` writes a DCP directory (its ``save_distributed_checkpoint``
    argument, kept only as ``_save_distributed_checkpoint``); False for every other strategy."""
    return bool(getattr(strategy, "_save_distributed_checkpoint", False))


def dcp_storage_info() -> type:
    """``torch.distributed.checkpoint.filesystem._StorageInfo``: where a DCP item's bytes are (relative
    path, offset, length). torch's own loader reads a ``.metadata`` only with this class in it."""
    from torch.distributed.checkpoint import filesystem

    info = getattr(filesystem, "_StorageInfo", None)
    if info is None:
        raise _moved("torch.distributed.checkpoint.filesystem._StorageInfo", "torch")
    return info


def _fused(name: str, tensors: Sequence[Any]) -> Any:
    """torch's fused ``name`` for ``tensors``, or None: where it is missing, and on CPU tensors, where
    ``benchmarks/ema.py`` measured the per-tensor ops faster (they use every core; the fused CPU path does not)."""
    import torch

    if not tensors or tensors[0].device.type == "cpu":
        return None
    return getattr(torch, name, None)


def foreach_mul_add_(tensors: Sequence[Any], scalar: float, others: Sequence[Any], alpha: float) -> None:
    """``t.mul_(scalar).add_(o, alpha=alpha)`` for each pair, with those ops' rounding: fused as
    ``_foreach_mul_`` then ``_foreach_add_``, or tensor by tensor (each one's two passes while it is in cache)."""
    mul, add = _fused("_foreach_mul_", tensors), _fused("_foreach_add_", tensors)
    if mul is not None and add is not None:
        mul(list(tensors), scalar)
        add(list(tensors), list(others), alpha=alpha)
        return
    for tensor, other in zip(tensors, others):
        tensor.mul_(scalar).add_(other, alpha=alpha)


def foreach_copy_(tensors: Sequence[Any], sources: Sequence[Any]) -> None:
    """``t.copy_(s)`` for each pair."""
    fused = _fused("_foreach_copy_", tensors)
    if fused is not None:
        fused(list(tensors), list(sources))
        return
    for tensor, source in zip(tensors, sources):
        tensor.copy_(source)
