"""Images per second of the evaluator against the original evaluation route, in one run.

Original route (``engine_jit.evaluate`` + torch-fidelity on a folder): the
conditional and unconditional halves of CFG as two network calls per step,
images written as PNGs, then read back for the Inception features. jitckpt:
both halves in one batched call, uint8 images straight into the feature
extractor. Same small JiT, same Inception (randomly initialised, exact
architecture, 299 px input), same images count, on this CPU.

Usage: python benchmarks/eval.py [--images 40] [--steps 10] [--repeats 3] [--device cpu|cuda] [--model JiT-B/16]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from jitckpt.evaluation.fid_helper import fidelity_skeleton
from jitckpt.evaluation.inception import extract, load_extractor
from jitckpt.evaluation.sampling import quantize
from jitckpt.evaluation.stats import image_files, iter_image_batches
from jitckpt.layouts.arch import Arch, official
from jitckpt.model.denoiser import Denoiser, DiffusionConfig

SMALL = Arch(depth=6, hidden_size=192, num_heads=3, patch_size=4, bottleneck_dim=32, in_context_len=8,
             in_context_start=2, num_classes=10, img_size=32)


def original_velocity(net, z, t, labels, cfg, num_classes):
    """The original ``_forward_sample``: two network calls."""
    x_cond = net(z, t.flatten(), labels)
    v_cond = (x_cond - z) / (1.0 - t).clamp_min(cfg.t_eps)
    x_uncond = net(z, t.flatten(), torch.full_like(labels, num_classes))
    v_uncond = (x_uncond - z) / (1.0 - t).clamp_min(cfg.t_eps)
    interval = (t < cfg.interval_max) & ((cfg.interval_min == 0) | (t > cfg.interval_min))
    return v_uncond + torch.where(interval, cfg.cfg, 1.0) * (v_cond - v_uncond)


def random_inception(path: Path) -> None:
    torch.save(fidelity_skeleton().state_dict(), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default=None, help="an official variant instead of the small JiT (e.g. JiT-B/16)")
    opts = parser.parse_args()
    device = torch.device(opts.device)
    arch = official(opts.model) if opts.model else SMALL
    config = DiffusionConfig(num_sampling_steps=opts.steps, cfg=2.0, interval_min=0.1, interval_max=1.0)
    denoiser = Denoiser(arch, config).to(device).eval()
    labels = torch.arange(opts.images, device=device) % arch.num_classes
    with tempfile.TemporaryDirectory() as folder:
        weights = Path(folder) / "inception.pth"
        random_inception(weights)
        extractor = load_extractor(weights, device)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)

        def jitckpt_route() -> None:
            for start in range(0, opts.images, opts.batch_size):
                with autocast:
                    images = quantize(denoiser.generate(labels[start : start + opts.batch_size]))
                extract(extractor, images)

        def original_route() -> None:
            import jitckpt.model.denoiser as module

            pngs = Path(tempfile.mkdtemp(dir=folder))
            batched, module._velocity = module._velocity, original_velocity
            try:
                for start in range(0, opts.images, opts.batch_size):
                    with autocast:
                        images = quantize(denoiser.generate(labels[start : start + opts.batch_size]))
                    for i, image in enumerate(images):
                        Image.fromarray(image.permute(1, 2, 0).numpy()).save(pngs / f"{start + i:05d}.png")
            finally:
                module._velocity = batched
            for batch in iter_image_batches(image_files(pngs), None, opts.batch_size):
                extract(extractor, batch)

        timings = {"original route": [], "jitckpt": []}
        for _ in range(opts.repeats):
            for name, route in (("original route", original_route), ("jitckpt", jitckpt_route)):
                torch.manual_seed(0)
                start = time.perf_counter()
                route()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                timings[name].append(time.perf_counter() - start)
    params = sum(p.numel() for p in denoiser.parameters())
    print(f"evaluation, {arch.variant or 'small JiT'} ({params / 1e6:.1f} M parameters, {arch.img_size} px), "
          f"{opts.images} images, Heun {opts.steps} steps, CFG 2.0, {device.type}, median of {opts.repeats}, "
          f"{time.strftime('%Y-%m-%d')}")
    rates = {name: opts.images / statistics.median(t) for name, t in timings.items()}
    for name, rate in rates.items():
        print(f"{name:15} {rate:8.2f} images/s")
    print(f"speed-up: {rates['jitckpt'] / rates['original route']:.2f}x")


if __name__ == "__main__":
    main()
