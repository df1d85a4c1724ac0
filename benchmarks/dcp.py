"""Consolidating a sharded (FSDP2) checkpoint directory: jitckpt against torch's ``dcp_to_torch_save``.

Two processes (gloo) write a ``torch.distributed.checkpoint`` directory of a
JiT-B/16 training state as Lightning's ``ModelParallelStrategy`` with jitckpt's
EMACallback does: every tensor (weights, both EMAs, AdamW moments) split along
dimension 0 between the two ranks' files, the optimizer by parameter name, and
``meta.pt`` (about 2.6 GB in all). Then, each a fresh process, ``sync`` before
each, median of ``--repeats``: a durable copy of the directory (``cp -r`` then
``sync`` of its files), ``jitckpt convert DIR`` to ``.safetensors`` and to the
original ``.pth``, and ``dcp_to_torch_save(DIR, out.pth)``; wall time and peak
RSS, each as a ratio to the durable copy and to ``dcp_to_torch_save``. Then the
same with a state twice as large (depth 24).

Usage: python benchmarks/dcp.py [--workdir DIR] [--repeats 3] [--skip-double]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from convert import median_run, run_two_sizes  # noqa: E402

TORCH_CONSOLIDATE = """
import sys
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
dcp_to_torch_save(sys.argv[1], sys.argv[2])
"""


def _rank(rank: int, folder: str, depth: int) -> None:
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard

    from jitckpt.keys import SHARDED_EMA_PREFIXES
    from jitckpt.layouts.arch import Arch, expected_shapes
    from jitckpt.layouts.groupings import ORIGINAL

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29517", RANK=str(rank), WORLD_SIZE="2")
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (2,))
    arch = Arch(depth, 768, 12, 16, 128, 32, 4, 1000, 256)
    shapes = expected_shapes(arch)
    gen = torch.Generator().manual_seed(rank)

    def shard(shape: tuple) -> DTensor:
        full_rows = shape[0]
        rows = len(range(full_rows)[rank * -(-full_rows // 2):(rank + 1) * -(-full_rows // 2)])
        local = torch.rand((rows, *shape[1:]), generator=gen)
        stride = torch.empty(shape, device="meta").stride()
        return DTensor.from_local(local, mesh, [Shard(0)], shape=torch.Size(shape), stride=stride, run_check=False)

    state = {name: shard(shape) for name, shape in shapes.items()}
    for prefix in SHARDED_EMA_PREFIXES.values():
        state.update({prefix + name: shard(shape) for name, shape in shapes.items()})
    no_decay, decay = ORIGINAL.names(arch)
    hyper = {"lr": 1e-4, "betas": (0.9, 0.95), "eps": 1e-8, "amsgrad": False, "maximize": False, "foreach": None,
             "capturable": False, "differentiable": False, "fused": None, "decoupled_weight_decay": True}
    optimizer = {"state": {name: {"step": torch.tensor(1000.0), "exp_avg": shard(shapes[name]),
                                  "exp_avg_sq": shard(shapes[name])} for name in no_decay + decay},
                 "param_groups": [{"weight_decay": 0.0, **hyper, "params": list(no_decay)},
                                  {"weight_decay": 0.05, **hyper, "params": list(decay)}]}
    dcp.save({"state_dict": state, "optimizer_0": optimizer}, checkpoint_id=folder)
    if rank == 0:
        torch.save({"epoch": 99, "global_step": 100_000, "callbacks": {"EMACallback": {
            "ema_decay1": 0.9999, "ema_decay2": 0.9996, "num_updates": 100_000, "sharded": True}}},
            os.path.join(folder, "meta.pt"))
    dist.destroy_process_group()


def build(folder: Path, depth: int) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_rank, args=(str(folder), depth), nprocs=2)


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir())


def bench(src: Path, work: Path, repeats: int, label: str) -> None:
    py = sys.executable
    jit = [py, "-m", "jitckpt"]
    for file in src.iterdir():  # warm the page cache
        subprocess.run(["cat", str(file)], stdout=subprocess.DEVNULL, check=True)
    copy, st, pth, theirs = work / "copy.dcp", work / "out.safetensors", work / "out.pth", work / "torch.pth"
    shutil.rmtree(copy, ignore_errors=True)
    rows = [
        ("durable copy: cp -r + sync", lambda: ["sh", "-c", f"rm -rf {copy} && cp -r {src} {copy} && sync {copy}/* "
                                                            f"{copy}/.metadata"], None),
        ("dcp_to_torch_save", lambda: [py, "-c", TORCH_CONSOLIDATE, str(src), str(theirs)], theirs),
        ("jitckpt convert DIR -> .safetensors", lambda: jit + ["convert", str(src), "-o", str(st)], st),
        ("jitckpt convert DIR -> .pth", lambda: jit + ["convert", str(src), "-o", str(pth)], pth),
    ]
    print(f"\n{label}: {src.name}, {folder_size(src) / 1e9:.2f} GB in {len(list(src.iterdir()))} files, "
          f"median of {repeats}, {time.strftime('%Y-%m-%d')}")
    print(f"{'command':36} {'wall s':>8} {'peak RSS':>10} {'x durable':>9} {'x torch':>8}")
    results = {}
    for name, make_cmd, output in rows:
        results[name] = median_run(make_cmd, output, repeats)
        wall, peak = results[name]
        durable = results["durable copy: cp -r + sync"][0]
        torch_time = results.get("dcp_to_torch_save", (float("nan"),))[0]
        print(f"{name:36} {wall:8.2f} {peak / 1e9:8.2f} GB {wall / durable:9.2f} {wall / torch_time:8.2f}", flush=True)
    shutil.rmtree(copy, ignore_errors=True)


def main() -> None:
    run_two_sizes(__file__, build, bench, "depth{depth}.dcp", "JiT-B/16 sharded training state", "~25 GB")


if __name__ == "__main__":
    main()
