"""CRC-32 throughput of each implementation jitckpt could use, on the same buffer in one run.

zlib (the fallback, in every Python), ``isal.isal_zlib.crc32`` and
``zlib_ng.zlib_ng.crc32`` (wheels for Linux and macOS on x86-64 and arm64),
and libdeflate through ctypes where the system has it (what jitckpt used before
these wheels). Each: median of ``--repeats`` passes over a ``--megabytes`` buffer
in 16 MiB chunks (the size jitckpt reads in), GB/s and the ratio to zlib; the
answers must agree. Then two threads at once, to show whether each releases the GIL.

Usage: python benchmarks/crc32.py [--megabytes 1024] [--repeats 5]
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import threading
import time
import zlib
from typing import Any, Callable

CHUNK = 16 << 20


def implementations() -> dict[str, Callable[[Any, int], int]]:
    found: dict[str, Callable[[Any, int], int]] = {"zlib": zlib.crc32}
    try:
        from isal import isal_zlib

        found["isal"] = isal_zlib.crc32
    except ImportError:
        pass
    try:
        from zlib_ng import zlib_ng

        found["zlib-ng"] = zlib_ng.crc32
    except ImportError:
        pass
    for soname in ("libdeflate.so.0", "libdeflate.so"):
        try:
            function = ctypes.CDLL(soname).libdeflate_crc32
        except (OSError, AttributeError):
            continue
        function.restype, function.argtypes = ctypes.c_uint32, [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t]
        found["libdeflate (ctypes)"] = lambda data, value, f=function: f(value, (ctypes.c_char * len(data)).from_buffer(data), len(data))
        break
    return found


def one_pass(function: Callable[[Any, int], int], view: memoryview) -> tuple[float, int]:
    started, crc = time.perf_counter(), 0
    for at in range(0, len(view), CHUNK):
        crc = function(view[at:at + CHUNK], crc)
    return time.perf_counter() - started, crc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args()
    import os

    data = bytearray(os.urandom(1 << 20)) * options.megabytes
    view = memoryview(data)
    found = implementations()
    times: dict[str, list[float]] = {name: [] for name in found}
    answers: dict[str, int] = {}
    for _ in range(options.repeats):  # round robin: drift touches every implementation alike
        for name, function in found.items():
            seconds, answers[name] = one_pass(function, view)
            times[name].append(seconds)
    assert len(set(answers.values())) == 1, answers
    base = statistics.median(times["zlib"])
    print(f"CRC-32 of {options.megabytes} MiB, median of {options.repeats} (one thread):")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"  {name:20s} {len(data) / median / 1e9:6.2f} GB/s  {base / median:5.2f}x zlib")
    print("two threads at once, each over the whole buffer (1.00x = no parallelism, 2.00x = the GIL released):")
    for name, function in found.items():
        alone = statistics.median(times[name])
        threads = [threading.Thread(target=one_pass, args=(function, view)) for _ in range(2)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(f"  {name:20s} {2 * alone / (time.perf_counter() - started):5.2f}x")


if __name__ == "__main__":
    main()
