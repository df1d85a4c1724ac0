"""What ``jitckpt example`` runs: the bundled checkpoint, a generated image folder, and the commands' steps.

The image folder is drawn here, deterministically, rather than shipped or
downloaded: a few dozen small PNGs in an ImageFolder tree, one smooth colour
pattern per class with per-image noise. Enough for one epoch of training, a
reference statistics file and an FID, which show the mechanics, not quality.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

CLASSES = 10  # the bundled checkpoint's class_num
IMAGES_PER_CLASS = 4
IMAGE_PIXELS = 32  # cropped to the checkpoint's 16 px by the data pipeline
EVAL_IMAGES = 20


def copy_bundled_checkpoint(target: Path) -> None:
    """The tiny original-format checkpoint shipped with the package, copied to ``target``."""
    with resources.as_file(resources.files("jitckpt") / "examples" / "checkpoint-last.pth") as bundled:
        shutil.copyfile(bundled, target)


def write_image_folder(root: Path, seed: int = 0) -> int:
    """Write ``root/class_KK/image_I.png`` for CLASSES classes; return how many images were written.

    Deterministic for a given ``seed``: the same bytes on every machine.
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, IMAGE_PIXELS)
    rows, cols = np.meshgrid(ramp, ramp, indexing="ij")
    count = 0
    for label in range(CLASSES):
        folder = root / f"class_{label:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        phase = 2 * np.pi * label / CLASSES
        base = np.stack([np.sin(3 * rows + phase), np.cos(2 * cols - phase), np.sin(rows * cols * 5 + phase)], -1)
        for index in range(IMAGES_PER_CLASS):
            pixels = 0.5 + 0.4 * base + 0.1 * rng.standard_normal(base.shape)
            image = Image.fromarray((np.clip(pixels, 0, 1) * 255).round().astype(np.uint8), "RGB")
            image.save(folder / f"image_{index}.png")
            count += 1
    return count


def steps(folder: Path, force: bool) -> list[list[str]]:
    """The ``jitckpt`` command lines the example runs, in order, on the files in ``folder``."""
    f = str(folder)
    overwrite = ["--force"] if force else []
    ckpt, trained = f"{f}/checkpoint-last.pth", f"{f}/train/checkpoint-last.pth"
    inception = ["--inception-weights", f"{f}/inception-random.pth"]
    return [
        ["inspect", ckpt],
        ["convert", ckpt, "-o", f"{f}/checkpoint-last.ckpt", *overwrite],
        ["convert", ckpt, "-o", f"{f}/checkpoint-last.safetensors", *overwrite],
        ["convert", f"{f}/checkpoint-last.ckpt", "-o", f"{f}/roundtrip.pth", *overwrite],
        ["verify", ckpt, f"{f}/roundtrip.pth"],
        ["train", "--resume", ckpt, "--data_path", f"{f}/data", "--output_dir", f"{f}/train", "--num_workers", "0",
         "--accelerator", "cpu", "--logger", "none"],
        ["sample", trained, "--ema", "1", "--classes", "0,1,2,3,4", "-o", f"{f}/grid.png", *overwrite],
        ["fid-stats", f"{f}/data/train", "-o", f"{f}/ref.npz", "--img-size", "16", *inception, *overwrite],
        ["eval", trained, "--ema", "1", "--num-images", str(EVAL_IMAGES), "--batch-size", "10",
         "--fid-stats", f"{f}/ref.npz", *inception],
    ]
