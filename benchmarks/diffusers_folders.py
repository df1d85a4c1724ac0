"""diffusers folders at JiT-B/16 size: inspecting one, converting one to .pth, exporting a .pth as one.

Builds, with torch and the safetensors library (as the Hub converters do), a diffusers folder of JiT-B/16
weights (``model_index.json``, ``transformer/config.json``, ``transformer/diffusion_pytorch_model.safetensors``,
131 M float32 parameters under diffusers' names: 0.53 GB) and an original-format JiT-B/16 training
checkpoint (model, two EMAs, AdamW moments: 2.63 GB, as ``benchmarks/convert.py`` builds it). Then, each
command a fresh process, median of ``--repeats`` interleaved rounds, ``sync`` before each:

- ``jitckpt inspect FOLDER`` against ``jitckpt inspect`` of the same weights as one safetensors file (both
  read headers and JSON only; that neither imports torch is checked once, in-process);
- ``jitckpt convert FOLDER -o x.pth`` against a durable copy of the weights file (``cp`` + ``sync FILE``;
  the .pth holds the weights once, shared by model and both EMAs) and against the naive route a careful
  user writes today (``safetensors.torch.load_file``, rename the keys, ``torch.save`` the three sections);
- ``jitckpt export CKPT --layout diffusers --diffusers-names split`` (``qkv`` split per tensor, streamed)
  against a durable copy of its source (the export reads all of it: it records the source's SHA-256 in
  the folder), and against a durable copy of a file the size of what it writes (the EMA 1 weights).

Wall time, peak RSS, and each wall time as a ratio to its baseline.

Usage: python benchmarks/diffusers_folders.py [--workdir DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from convert import build_checkpoint, round_robin  # noqa: E402

NAIVE = """
import re, sys, torch
from safetensors.torch import load_file
state = load_file(sys.argv[1] + "/transformer/diffusion_pytorch_model.safetensors")
def original(key):
    key = re.sub(r"^blocks\\.(\\d+)\\.adaLN_modulation\\.", r"blocks.\\1.adaLN_modulation.1.", key)
    key = key.replace("norm_final.", "final_layer.norm_final.").replace("linear_final.", "final_layer.linear.")
    return "net." + key.replace("adaLN_modulation_final.", "final_layer.adaLN_modulation.1.")
model = {original(k): v for k, v in state.items()}
torch.save({"model": model, "model_ema1": model, "model_ema2": model}, sys.argv[2])
"""
NO_TORCH = """
import sys
from jitckpt.inspection.summary import summarize
for path in sys.argv[1:]:
    summarize(path)
print("torch imported" if "torch" in sys.modules else "torch not imported")
"""


def build_folder(folder: Path) -> Path:
    """A diffusers folder of JiT-B/16 weights (random values), written with the safetensors library."""
    import torch
    from safetensors.torch import save_file

    from jitckpt.layouts.arch import expected_shapes, official

    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in expected_shapes(official("JiT-B/16")).items():
        key = re.sub(r"^blocks\.(\d+)\.adaLN_modulation\.1\.", r"blocks.\1.adaLN_modulation.", key[len("net."):])
        key = key.replace("final_layer.norm_final.", "norm_final.").replace("final_layer.linear.", "linear_final.")
        state[key.replace("final_layer.adaLN_modulation.1.", "adaLN_modulation_final.")] = torch.rand(shape,
                                                                                                     generator=gen)
    (folder / "transformer").mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "transformer" / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
    config = {"_class_name": "JiTTransformer2DModel", "sample_size": 256, "patch_size": 16, "in_channels": 3,
              "hidden_size": 768, "num_layers": 12, "num_attention_heads": 12, "mlp_ratio": 4.0,
              "num_classes": 1000, "bottleneck_dim": 128, "in_context_len": 32, "in_context_start": 4}
    (folder / "transformer" / "config.json").write_text(json.dumps(config))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "JiTPipeline",
                                                         "transformer": ["diffusers", "JiTTransformer2DModel"]}))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="where the sources go (needs ~6 GB)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--build-folder", type=Path, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.build_folder:  # in a child process, so that this one stays small
        build_folder(opts.build_folder)
        return
    work = opts.workdir or Path(tempfile.mkdtemp(prefix="jitckpt-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # byte-compiled, as pip installs the package
    os.environ["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    py = sys.executable
    jit = [py, "-m", "jitckpt"]
    try:
        folder, ckpt = work / "JiT-B-16", work / "checkpoint-last.pth"
        if not folder.exists():
            subprocess.run([py, __file__, "--build-folder", str(folder)], check=True)
        if not ckpt.exists():
            subprocess.run([py, str(Path(__file__).with_name("convert.py")), "--build", str(ckpt), "12"], check=True)
        weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
        single = work / "single.safetensors"
        shutil.copyfile(weights, single)
        subprocess.run(jit + ["--help"], check=True, stdout=subprocess.DEVNULL)
        for path in (weights, ckpt):
            subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
        out_pth, out_dir, copy, copy_src = work / "out.pth", work / "out-diffusers", work / "copy.bin", work / "src.bin"
        rows = [
            ("inspect one safetensors file", lambda: jit + ["inspect", str(single)], None),
            ("inspect the diffusers folder", lambda: jit + ["inspect", str(folder)], None),
            ("durable copy of the weights file", lambda: ["sh", "-c", f"cp {weights} {copy} && sync {copy}"], copy),
            ("durable copy of the training ckpt", lambda: ["sh", "-c", f"cp {ckpt} {copy_src} && sync {copy_src}"],
             copy_src),
            ("naive load_file + torch.save", lambda: [py, "-c", NAIVE, str(folder), str(out_pth)], out_pth),
            ("jitckpt convert FOLDER -> .pth", lambda: jit + ["convert", str(folder), "-o", str(out_pth)], out_pth),
            ("jitckpt export .pth -> split", lambda: ["sh", "-c", f"rm -rf {out_dir} && " + " ".join(
                jit + ["export", str(ckpt), "-o", str(out_dir), "--layout", "diffusers", "--diffusers-names",
                       "split", "--no-samples"])], None),
        ]
        print(f"diffusers folders, JiT-B/16: weights {weights.stat().st_size / 1e9:.2f} GB, training checkpoint "
              f"{ckpt.stat().st_size / 1e9:.2f} GB; median of {opts.repeats} interleaved rounds, "
              f"{time.strftime('%Y-%m-%d %H:%M')}", flush=True)
        done = subprocess.run([py, "-c", NO_TORCH, str(single), str(folder)], capture_output=True, text=True,
                              check=True)
        print(f"inspect of the file and the folder, in one process: {done.stdout.strip()}")
        results = round_robin(rows, opts.repeats)
        baselines = {"inspect the diffusers folder": "inspect one safetensors file",
                     "naive load_file + torch.save": "durable copy of the weights file",
                     "jitckpt convert FOLDER -> .pth": "durable copy of the weights file",
                     "jitckpt export .pth -> split": "durable copy of the training ckpt"}
        print(f"{'command':36} {'wall s':>8} {'peak RSS':>10}  ratio to its baseline; each round")
        for name, (wall, peak, walls) in results.items():
            base = baselines.get(name)
            ratio = f"{wall / results[base][0]:.2f}x {base}" if base else ""
            rounds = " ".join(f"{w:.2f}" for w in walls)
            print(f"{name:36} {wall:8.2f} {peak / 1e6:7.0f} MB  {ratio}; {rounds}")
        export, weights_copy = results["jitckpt export .pth -> split"][0], results["durable copy of the weights file"][0]
        print(f"jitckpt export .pth -> split / durable copy of the weights file: {export / weights_copy:.2f}x")
        naive = results["naive load_file + torch.save"][0]
        print(f"jitckpt convert FOLDER -> .pth / naive: {results['jitckpt convert FOLDER -> .pth'][0] / naive:.2f}x")
    finally:
        shutil.rmtree(work / "pycache", ignore_errors=True)
        if opts.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
