"""EMAs of FSDP2-sharded parameters in Lightning checkpoints.

Lightning's ``ModelParallelStrategy`` writes the module and optimizers with
``torch.distributed.checkpoint`` from every rank, but every callback's state
into ``meta.pt`` from rank zero alone: EMAs kept on local shards would be rank
zero's shards only. So under sharding EMACallback puts its EMAs beside the
parameters in the checkpoint's ``state_dict``, as DTensors with the parameters'
mesh and placements (keys under :data:`jitckpt.layouts.SHARDED_EMA_PREFIXES`), and
loads them back with ``torch.distributed.checkpoint.load``, which reshards to any
number of ranks. A full (gathered) checkpoint gets the gathered EMAs instead.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import JiTCheckpointError
from ..layouts import SHARDED_EMA_PREFIXES


def is_dtensor(tensor: Any) -> bool:
    return hasattr(tensor, "device_mesh")


def reshard(module: Any) -> bool:
    """Free the parameters FSDP2 gathered (a forward without a backward leaves the root's gathered), so that
    each parameter is its DTensor shard again; True when ``module`` is sharded with FSDP2."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch without FSDP2 shards nothing
        return False
    sharded = [m for m in module.modules() if isinstance(m, FSDPModule)]
    for part in sharded:
        part.reshard()
    return bool(sharded)


def as_dtensor(local: torch.Tensor, param: Any) -> Any:
    """``local`` (this rank's EMA shard) as a DTensor laid out like ``param``."""
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(local, param.device_mesh, param.placements, shape=param.shape, stride=param.stride(),
                              run_check=False)


def put_in_state_dict(state_dict: dict, named: list[tuple[str, Any]], emas: dict[str, list[torch.Tensor]]) -> None:
    """Add each EMA as a DTensor to a checkpoint's ``state_dict``, under its prefix."""
    for version, locals_ in emas.items():
        prefix = SHARDED_EMA_PREFIXES[version]
        for (name, param), local in zip(named, locals_):
            state_dict[prefix + name] = as_dtensor(local, param) if is_dtensor(param) else local


def load_from_directory(path: str, named: list[tuple[str, Any]]) -> dict[str, list[torch.Tensor]]:
    """Each rank's EMA shards, read from the DCP directory ``path`` (a collective: every rank calls it)."""
    import torch.distributed.checkpoint as dcp

    wanted = {}
    for version, prefix in SHARDED_EMA_PREFIXES.items():
        for name, param in named:
            local = param.to_local() if is_dtensor(param) else param
            empty = torch.empty_like(local.detach())
            wanted[prefix + name] = as_dtensor(empty, param) if is_dtensor(param) else empty
    destination = {"state_dict": wanted}
    try:
        dcp.load(destination, checkpoint_id=path)
    except Exception as exc:  # DCP raises bare RuntimeErrors / CheckpointException listing every rank's failure
        raise JiTCheckpointError(f"{path}: cannot read EMACallback's sharded EMAs: {str(exc)[:300]}") from None
    return {version: [_local(wanted[prefix + name]) for name, _ in named]
            for version, prefix in SHARDED_EMA_PREFIXES.items()}


def _local(tensor: Any) -> torch.Tensor:
    return tensor.to_local() if is_dtensor(tensor) else tensor


def local_shard_of(saved: torch.Tensor, param: Any) -> torch.Tensor:
    """This rank's shard of a full saved EMA tensor for the sharded ``param``.

    A saved tensor that is not the parameter's full shape is refused: under
    sharding that is a local shard, which would be rank zero's on every rank.
    """
    saved = _local(saved)
    if tuple(saved.shape) != tuple(param.shape):
        raise JiTCheckpointError(
            f"the checkpoint's EMA tensor of shape {tuple(saved.shape)} is not the full shape {tuple(param.shape)} "
            "of its sharded parameter: it holds one rank's shard (meta.pt of a sharded checkpoint written before "
            "jitckpt stored the EMAs with the parameters holds rank zero's shards only), so the other ranks' EMAs "
            "are lost; resume from the consolidated .pth that JiTModelCheckpoint wrote for that step")
    from torch.distributed.tensor import distribute_tensor

    full = saved.to(device=param.device, dtype=param.dtype)
    return distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None).to_local().clone()
