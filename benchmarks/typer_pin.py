"""Why typer is pinned below 0.29: the start-up time of ``jitckpt inspect`` with the installed typer against
another typer installed into a separate folder (``pip install --target DIR "typer==0.29.2"``).

Both are run interleaved, byte-compiled as ``pip install`` leaves them, median of ``--runs``.

Usage: python benchmarks/typer_pin.py DIR [--runs 12] [--file CHECKPOINT]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", help="a folder holding the other typer and its dependencies (pip --target)")
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--file", default=str(ROOT / "jitckpt" / "examples" / "checkpoint-last.pth"))
    opts = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    setups = {"installed": env, "other": {**env, "PYTHONPATH": opts.other}}
    versions = {name: subprocess.run([sys.executable, "-c", "import typer; print(typer.__version__)"], env=e,
                                     capture_output=True, text=True, check=True).stdout.strip()
                for name, e in setups.items()}
    times: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(opts.runs + 2):  # two warm-up rounds, dropped
        for name, e in setups.items():
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "jitckpt", "inspect", opts.file], env=e, check=True,
                           capture_output=True)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t[2:]) for name, t in times.items()}
    print(f"jitckpt inspect start-up, median of {opts.runs}, {time.strftime('%Y-%m-%d')}")
    for name in setups:
        print(f"typer {versions[name]:>8}: {medians[name] * 1e3:6.0f} ms")
    print(f"typer {versions['other']} takes {medians['other'] / medians['installed']:.2f}x the time "
          f"(+{(medians['other'] - medians['installed']) * 1e3:.0f} ms)")


if __name__ == "__main__":
    main()
