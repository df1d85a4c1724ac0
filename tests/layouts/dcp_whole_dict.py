"""Run by test_wild_layouts.py: two gloo processes save a whole Lightning-shaped training state with
``torch.distributed.checkpoint.save``, as a Fabric or hand-written FSDP2 loop does: ``state_dict``,
``optimizer_states`` (a list), ``callbacks`` -> ``EMACallback`` -> ``ema1``/``ema2``, ``epoch``,
``global_step``, every tensor a DTensor shard. Rank 0 also saves the gathered full values to OUT/full.pt.

``python dcp_whole_dict.py OUT``
"""

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.helpers import jit_shaped_module, load_golden_torch  # noqa: E402

from jitckpt.layouts.arch import Arch  # noqa: E402

GOLDEN_ARCH = Arch(depth=3, hidden_size=48, num_heads=4, patch_size=4, bottleneck_dim=8, in_context_len=4,
                   in_context_start=1, num_classes=10, img_size=16)


def sharded_module(state: dict) -> torch.nn.Module:
    from torch.distributed.fsdp import fully_shard

    module = jit_shaped_module(GOLDEN_ARCH)
    module.load_state_dict(state)
    fully_shard(module)
    return module


def run(rank: int, out: str) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    os.environ.update(MASTER_ADDR="127.0.0.1", RANK=str(rank), WORLD_SIZE="2")
    dist.init_process_group("gloo", rank=rank, world_size=2)
    golden = load_golden_torch()
    model = sharded_module(golden["model"])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95))
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.ones_like(p) * 0.01
    optimizer.step()
    emas = {v: sharded_module(golden[f"model_ema{v}"]).state_dict() for v in (1, 2)}
    optim_state = get_optimizer_state_dict(model, optimizer)
    state = {"state_dict": model.state_dict(), "optimizer_states": [optim_state],
             "callbacks": {"EMACallback": {"ema1": emas[1], "ema2": emas[2], "ema_decay1": 0.9999,
                                           "ema_decay2": 0.9996}},
             "epoch": 1, "global_step": 7}
    dcp.save(state, checkpoint_id=os.path.join(out, "whole.dcp"))
    full = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True))
    raw = {k: v.full_tensor() for k, v in model.state_dict().items()}
    if rank == 0:
        torch.save({"raw": raw, "optimizer": full}, os.path.join(out, "full.pt"))
    dist.barrier()
    dist.destroy_process_group()
    # Leave without the interpreter's teardown: under load, gloo's threads were seen to abort it once
    # ("terminate called without an active exception") after every file was written and closed.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    os.environ["MASTER_PORT"] = sys.argv[2] if len(sys.argv) > 2 else "29531"
    mp.spawn(run, args=(sys.argv[1],), nprocs=2)
