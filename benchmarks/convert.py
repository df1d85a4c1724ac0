"""Conversion speed and memory on an original-format JiT training checkpoint.

Builds a JiT-B/16 checkpoint as the original ``misc.save_model`` writes it
(model, two EMAs, AdamW moments: about 2.6 GB), then measures in one run, each
command a fresh process writing a new file, median of ``--repeats`` rounds (each
round runs every command once, so drift touches them alike):
``cp``; a durable copy (``cp`` then ``sync FILE``: every jitckpt write ends with
an fsync, a plain ``cp`` does not); the naive path, the best a careful user writes
today (``torch.load(mmap=True, weights_only=True)``, then ``safetensors.torch.save_file``); ``jitckpt convert`` to .safetensors, to .ckpt
and from .ckpt back to .pth (every zip entry's CRC-32 checked on the way);
``cksum FILE`` and ``jitckpt verify FILE`` (both read every byte and compute
CRCs), the latter also with ``JITCKPT_CRC32=zlib`` (the CRC a machine without
the ``isal`` wheel gets); ``jitckpt inspect``; ``jitckpt --help``. ``sync`` runs before
each timed command. Wall time and peak RSS of each, and each wall time as a
ratio to the durable copy and to the naive path; ``verify`` also against
``cksum``. Then the same on a checkpoint twice as large (depth 24), to show how
time and memory grow.

jitckpt's modules run byte-compiled, as ``pip install`` leaves them: the
commands cache their bytecode under the work folder (a first ``--help`` fills
it), also where ``PYTHONDONTWRITEBYTECODE`` is set, which would otherwise make
every command compile the package's source again (about 80 ms here).

Usage: python benchmarks/convert.py [--workdir DIR] [--repeats 3] [--skip-double]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NAIVE = """
import argparse, sys, torch
from safetensors.torch import save_file
with torch.serialization.safe_globals([argparse.Namespace]):
    ckpt = torch.load(sys.argv[1], map_location="cpu", mmap=True, weights_only=True)
flat = {}
for section in ("model", "model_ema1", "model_ema2"):
    flat.update({f"{section}/{k}": v.detach().contiguous() for k, v in ckpt[section].items()})
for index, state in ckpt["optimizer"]["state"].items():
    flat.update({f"optimizer/{index}/{k}": v for k, v in state.items()})
save_file(flat, sys.argv[2])
"""


def build_checkpoint(path: Path, depth: int) -> None:
    """An original-format checkpoint of JiT-B/16 dimensions with ``depth`` blocks, via torch.save."""
    import torch
    from torch import nn

    from jitckpt.layouts.arch import Arch, expected_shapes

    from jitckpt.layouts.groupings import ORIGINAL

    arch = Arch(depth, 768, 12, 16, 128, 32, 4, 1000, 256)
    shapes = expected_shapes(arch)
    gen = torch.Generator().manual_seed(0)
    model = {k: torch.rand(s, generator=gen) for k, s in shapes.items()}
    ema = lambda: {k: nn.Parameter(v + 1e-3, requires_grad=False) for k, v in model.items()}  # noqa: E731
    no_decay, decay = ORIGINAL.names(arch)
    names = no_decay + decay
    state = {i: {"step": torch.tensor(1000.0), "exp_avg": torch.rand(shapes[n], generator=gen),
                 "exp_avg_sq": torch.rand(shapes[n], generator=gen)} for i, n in enumerate(names)}
    hyper = {"lr": 1e-4, "betas": (0.9, 0.95), "eps": 1e-8, "amsgrad": False, "maximize": False, "foreach": None,
             "capturable": False, "differentiable": False, "fused": None, "decoupled_weight_decay": True}
    groups = [{"weight_decay": 0.0, **hyper, "params": list(range(len(no_decay)))},
              {"weight_decay": 0.0, **hyper, "params": list(range(len(no_decay), len(names)))}]
    args = argparse.Namespace(model="JiT-B/16", img_size=256, class_num=1000, epochs=600, batch_size=128, blr=5e-5)
    torch.save({"model": model, "optimizer": {"state": state, "param_groups": groups}, "epoch": 99, "args": args,
                "model_ema1": ema(), "model_ema2": ema()}, path)


def measure(cmd: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr.read().decode()}")
    return wall, usage.ru_maxrss * 1024


def round_robin(rows: list, repeats: int) -> dict[str, tuple[float, int, list[float]]]:
    """Run every (name, make_cmd, output) row once per round, ``repeats`` rounds: (median wall, max peak RSS,
    the walls in round order) by name. Interleaved rounds let a drift of the shared disk or CPUs (seen here:
    a later row slowed 2x by the writes before it) touch every row alike instead of the last ones."""
    walls: dict[str, list[float]] = {name: [] for name, _, _ in rows}
    peaks: dict[str, int] = {name: 0 for name, _, _ in rows}
    for _ in range(repeats):
        for name, make_cmd, output in rows:
            if output is not None and output.exists():
                output.unlink()
            os.sync()  # no contender pays for an earlier one's dirty pages
            wall, peak = measure(make_cmd())
            walls[name].append(wall)
            peaks[name] = max(peaks[name], peak)
            if output is not None and output.exists():
                output.unlink()
    return {name: (statistics.median(walls[name]), peaks[name], walls[name]) for name, _, _ in rows}


def median_run(make_cmd, output: Path | None, repeats: int) -> tuple[float, int]:
    """(median wall, max peak RSS) of one command run ``repeats`` times."""
    wall, peak, _ = round_robin([("run", make_cmd, output)], repeats)["run"]
    return wall, peak


def bench(src: Path, work: Path, repeats: int, label: str) -> None:
    py = sys.executable
    jit = [py, "-m", "jitckpt"]
    subprocess.run(["cat", str(src)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    ckpt = work / "mid.ckpt"
    if not ckpt.exists():
        subprocess.run(jit + ["convert", str(src), "-o", str(ckpt)], check=True, stdout=subprocess.DEVNULL)
    out = {s: work / f"out{s}" for s in (".bin", ".safetensors", ".ckpt", ".pth")}
    rows = [
        ("cp", lambda: ["cp", str(src), str(out[".bin"])], out[".bin"]),
        ("durable copy: cp + sync FILE", lambda: ["sh", "-c", f"cp {src} {out['.bin']} && sync {out['.bin']}"],
         out[".bin"]),
        ("naive torch.load(mmap) + save_file", lambda: [py, "-c", NAIVE, str(src), str(out[".safetensors"])], out[".safetensors"]),
        ("jitckpt convert -> .safetensors", lambda: jit + ["convert", str(src), "-o", str(out[".safetensors"])], out[".safetensors"]),
        ("jitckpt convert -> .ckpt", lambda: jit + ["convert", str(src), "-o", str(out[".ckpt"])], out[".ckpt"]),
        ("jitckpt convert .ckpt -> .pth", lambda: jit + ["convert", str(ckpt), "-o", str(out[".pth"])], out[".pth"]),
        ("cksum FILE", lambda: ["cksum", str(src)], None),
        ("jitckpt verify FILE", lambda: jit + ["verify", str(src)], None),
        ("jitckpt verify FILE, zlib CRC", lambda: ["env", "JITCKPT_CRC32=zlib"] + jit + ["verify", str(src)], None),
        ("jitckpt inspect", lambda: jit + ["inspect", str(src)], None),
        ("jitckpt --help", lambda: jit + ["--help"], None),
    ]
    size = src.stat().st_size
    from jitckpt.storage import crc32 as fastcrc

    print(f"\n{label}: {src.name}, {size / 1e9:.2f} GB, median of {repeats} interleaved rounds, "
          f"{time.strftime('%Y-%m-%d %H:%M')}, CRC-32 by {fastcrc.name()}", flush=True)
    results = round_robin(rows, repeats)
    durable = results["durable copy: cp + sync FILE"][0]
    naive = results["naive torch.load(mmap) + save_file"][0]
    print(f"{'command':34} {'wall s':>8} {'peak RSS':>10} {'x durable':>9} {'x naive':>8}  each round")
    for name, (wall, peak, walls) in results.items():
        rounds = " ".join(f"{w:.2f}" for w in walls)
        print(f"{name:34} {wall:8.2f} {peak / 1e9:8.2f} GB {wall / durable:9.2f} {wall / naive:8.2f}  {rounds}")
    cksum = results["cksum FILE"][2]
    for name in ("jitckpt verify FILE", "jitckpt verify FILE, zlib CRC"):
        pairs = " ".join(f"{w / c:.2f}" for w, c in zip(results[name][2], cksum))
        print(f"{name} / cksum FILE: {results[name][0] / results['cksum FILE'][0]:.2f}x (each round: {pairs})")
    ckpt.unlink()


def run_two_sizes(script: str, build, bench, source_name: str, label: str, disk: str) -> None:
    """The driver both size benchmarks share: ``--workdir``, ``--repeats``, ``--skip-double``; the
    source of depth 12, then of depth 24, each built by ``build(path, depth)`` in a child process (so this
    one stays small for the RSS figures), measured by ``bench(src, work, repeats, label)``, then removed.
    ``source_name`` is formatted with the depth; ``disk`` says how much room the work folder needs."""
    doc = sys.modules["__main__"].__doc__ or ""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument("--workdir", type=Path, default=None, help=f"where the sources go (needs {disk})")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-double", action="store_true", help="skip the source twice as large")
    parser.add_argument("--build", nargs=2, metavar=("PATH", "DEPTH"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.build:
        build(Path(opts.build[0]), int(opts.build[1]))
        return
    work = opts.workdir or Path(tempfile.mkdtemp(prefix="jitckpt-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # byte-compiled, as pip installs the package
    os.environ["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    subprocess.run([sys.executable, "-m", "jitckpt", "--help"], check=True, stdout=subprocess.DEVNULL)
    try:
        for depth, title in ((12, label), (24, "twice as large (depth 24)")):
            if depth == 24 and opts.skip_double:
                break
            src = work / source_name.format(depth=depth)
            if not src.exists():
                subprocess.run([sys.executable, script, "--build", str(src), str(depth)], check=True)
            bench(src, work, opts.repeats, title)
            shutil.rmtree(src) if src.is_dir() else src.unlink()
    finally:
        shutil.rmtree(work / "pycache", ignore_errors=True)
        if opts.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    run_two_sizes(__file__, build_checkpoint, bench, "checkpoint-depth{depth}.pth", "JiT-B/16 training checkpoint",
                  "~20 GB")


if __name__ == "__main__":
    main()
