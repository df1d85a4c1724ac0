"""Dual EMA update on JiT-B/16's parameters: EMACallback against the original per-parameter loop.

The original ``Denoiser.update_ema`` runs ``ema.mul_(decay).add_(param, alpha=1 - decay)``
for every tensor of both EMAs; the callback runs the same arithmetic (bitwise the loop's result, which the
script checks): fused ``_foreach_mul_`` then ``_foreach_add_`` off the CPU; on it a piece of each tensor at a
time (``jitckpt.callbacks.ema.PIECE`` elements: both EMAs' and the parameter's pieces stay in cache between
the passes). The fused ``_foreach_lerp_`` the callback used before (one pass, rounding differently) is the
third row.
All are timed in the same run, interleaved, median over ``--updates`` updates.

Usage: python benchmarks/ema.py [--updates 20] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from jitckpt.callbacks import EMACallback
from jitckpt.layouts.arch import expected_shapes, official


def original_update(ema1, ema2, params, d1, d2):
    for targ, src in zip(ema1, params):
        targ.detach().mul_(d1).add_(src, alpha=1 - d1)
    for targ, src in zip(ema2, params):
        targ.detach().mul_(d2).add_(src, alpha=1 - d2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    opts = parser.parse_args()
    device = torch.device(opts.device)
    module = nn.Module()
    for i, (name, shape) in enumerate(expected_shapes(official("JiT-B/16")).items()):
        module.register_parameter(f"p{i}", nn.Parameter(torch.randn(shape, device=device)))
    params = [p.detach() for p in module.parameters()]
    count = sum(p.numel() for p in params)
    callback = EMACallback(0.9999, 0.9996)
    callback._ensure(module)
    loop_ema1, loop_ema2 = [p.clone() for p in params], [p.clone() for p in params]
    lerp_ema1, lerp_ema2 = [p.clone() for p in params], [p.clone() for p in params]

    def lerp_update() -> None:
        torch._foreach_lerp_(lerp_ema1, params, 1 - 0.9999)
        torch._foreach_lerp_(lerp_ema2, params, 1 - 0.9996)

    def timed(fn) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    loop, fused, lerp = [], [], []
    for _ in range(opts.updates + 2):  # two warm-up rounds, dropped
        for p in params:  # the parameters move between updates, as in training
            p.add_(torch.randn_like(p), alpha=1e-3)
        loop.append(timed(lambda: original_update(loop_ema1, loop_ema2, params, 0.9999, 0.9996)))
        fused.append(timed(lambda: callback.update_(module)))
        lerp.append(timed(lerp_update))
    same = all(torch.equal(a, b) for a, b in zip(callback.ema1 + callback.ema2, loop_ema1 + loop_ema2))
    loop, fused, lerp = statistics.median(loop[2:]), statistics.median(fused[2:]), statistics.median(lerp[2:])
    print(f"dual EMA update, JiT-B/16 ({count / 1e6:.1f} M parameters), {device.type}, median of {opts.updates}, "
          f"{time.strftime('%Y-%m-%d')}")
    print(f"original per-parameter loop (mul_ + add_): {loop * 1e3:8.1f} ms")
    print(f"EMACallback (mul_ then add_, in pieces):   {fused * 1e3:8.1f} ms")
    print(f"fused lerp (_foreach_lerp_, before):       {lerp * 1e3:8.1f} ms")
    print(f"EMACallback vs the loop: {loop / fused:.2f}x faster; vs lerp: {fused / lerp:.2f}x its time")
    print(f"EMACallback's EMAs bitwise equal to the loop's after {opts.updates + 2} updates: {same}")


if __name__ == "__main__":
    main()
