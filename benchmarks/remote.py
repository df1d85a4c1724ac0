"""Reading a checkpoint from a server: what ``inspect`` and ``convert`` of a URL cost against fetching it whole.

Builds (or takes, ``--source``) the 2.63 GB JiT-B/16 training checkpoint of
``benchmarks/convert.py``, serves its folder on 127.0.0.1 with the tests' range
server (keep-alive, TCP_NODELAY, every request and byte counted), then measures,
each command a fresh process, ``sync`` before each, median of ``--repeats``
interleaved rounds:

- ``jitckpt inspect URL``: requests, bytes transferred, seconds; against
  ``curl -o FILE URL`` (downloading it whole, the only way without range reads);
- ``jitckpt convert URL -o x.safetensors``: against ``curl`` of the same bytes
  followed by a local ``jitckpt convert`` of the download.

Loopback has no latency, so the server then holds every answer back ``--rtt-ms``
(a network's round trip) and times ``inspect`` again, as it is (the zip's local
headers asked for over several connections at once) and with one connection
(``PARALLEL_REQUESTS = 1``, as before 2026-12-07), against ``curl`` of the whole file.

Usage: python benchmarks/remote.py [--source FILE] [--workdir DIR] [--repeats 3] [--rtt-ms 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.remote_server import serving  # noqa: E402


def timed(cmd: list[str]) -> float:
    os.sync()
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="an original-format checkpoint (default: build JiT-B/16)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="the round trip simulated for the last rows")
    options = parser.parse_args()
    work = options.workdir or Path(tempfile.mkdtemp(prefix="jitckpt-remote-"))
    served = work / "served"
    served.mkdir(parents=True, exist_ok=True)
    source = served / "jit-b16.pth"
    if not source.exists():
        if options.source is not None:
            os.link(options.source, source) if options.source.stat().st_dev == served.stat().st_dev \
                else subprocess.run(["cp", str(options.source), str(source)], check=True)
        else:
            subprocess.run([sys.executable, str(ROOT / "benchmarks" / "convert.py"), "--build", str(source), "12"],
                           check=True)
    subprocess.run(["cat", str(source)], check=True, stdout=subprocess.DEVNULL)  # the server reads from cache
    jit = [sys.executable, "-m", "jitckpt"]
    size = source.stat().st_size
    download, out, local_out = work / "download.pth", work / "remote.safetensors", work / "local.safetensors"
    with serving(served) as (server, base):
        url = f"{base}/jit-b16.pth"
        counted: dict[str, tuple[int, int]] = {}

        def inspect_remote() -> float:
            before = (server.requests, server.bytes_sent)
            seconds = timed(jit + ["inspect", url])
            counted["inspect"] = (server.requests - before[0], server.bytes_sent - before[1])
            return seconds

        def curl_whole() -> float:
            seconds = timed(["curl", "-sSf", "-o", str(download), url])
            return seconds

        def convert_remote() -> float:
            out.unlink(missing_ok=True)
            before = (server.requests, server.bytes_sent)
            seconds = timed(jit + ["convert", url, "-o", str(out)])
            counted["convert"] = (server.requests - before[0], server.bytes_sent - before[1])
            return seconds

        def curl_then_convert() -> float:
            local_out.unlink(missing_ok=True)
            seconds = curl_whole()
            return seconds + timed(jit + ["convert", str(download), "-o", str(local_out)])

        rows = {"jitckpt inspect URL": inspect_remote, "curl -o FILE URL (whole file)": curl_whole,
                "jitckpt convert URL -o x.safetensors": convert_remote,
                "curl, then jitckpt convert FILE": curl_then_convert}
        walls: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(options.repeats):
            for name, run in rows.items():
                walls[name].append(run())
        same = subprocess.run(["cmp", str(out), str(local_out)]).returncode == 0
        one_connection = [sys.executable, "-c", "import sys, jitckpt.storage.remote as r; r.PARALLEL_REQUESTS = 1; "
                          "from jitckpt.cli import app; app(sys.argv[1:], prog_name='jitckpt')", "inspect", url]
        slow_rows = {"jitckpt inspect URL": lambda: timed(jit + ["inspect", url]),
                     "jitckpt inspect URL, one connection": lambda: timed(one_connection),
                     "curl -o FILE URL (whole file)": curl_whole}
        server.delay_s = options.rtt_ms / 1e3
        slow: dict[str, list[float]] = {name: [] for name in slow_rows}
        for _ in range(options.repeats):
            for name, run in slow_rows.items():
                slow[name].append(run())
        server.delay_s = 0.0
    print(f"{source.name}: {size / 1e9:.2f} GB served on 127.0.0.1, median of {options.repeats} interleaved rounds, "
          f"{time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.1f}")
    medians = {name: statistics.median(w) for name, w in walls.items()}
    for name, seconds in medians.items():
        rounds = " ".join(f"{w:.2f}" for w in walls[name])
        print(f"  {name:40} {seconds:7.2f} s   each round: {rounds}")
    requests, sent = counted["inspect"]
    print(f"inspect: {requests} requests, {sent / 1e3:.1f} kB transferred ({sent / size:.2e} of the file), "
          f"{medians['jitckpt inspect URL'] / medians['curl -o FILE URL (whole file)']:.3f}x the whole download's time")
    print(f"with a {options.rtt_ms:g} ms round trip before every answer:")
    slow_medians = {name: statistics.median(w) for name, w in slow.items()}
    for name, seconds in slow_medians.items():
        rounds = " ".join(f"{w:.2f}" for w in slow[name])
        ratio = seconds / slow_medians["curl -o FILE URL (whole file)"]
        print(f"  {name:40} {seconds:7.2f} s   {ratio:.3f}x the whole download   each round: {rounds}")
    requests, sent = counted["convert"]
    print(f"convert: {requests} requests, {sent / 1e9:.3f} GB transferred, "
          f"{medians['jitckpt convert URL -o x.safetensors'] / medians['curl, then jitckpt convert FILE']:.2f}x "
          f"curl then a local convert; outputs identical: {same}")
    if options.workdir is None:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
