"""``jitckpt example``: the main job on the bundled checkpoint and a generated image folder."""

import hashlib

import numpy as np

from jitckpt.cli import example_steps as job
from jitckpt.inspection.summary import summarize


def test_example_runs_every_step_and_leaves_their_files(example_run):
    folder, done = example_run
    assert done.returncode == 0, done.stdout + done.stderr
    ex = folder / "jitckpt-example"
    printed = [line[len("$ jitckpt "):].split()[0] for line in done.stdout.splitlines() if line.startswith("$ jitckpt ")]
    assert printed == ["inspect", "convert", "convert", "convert", "verify", "train", "sample", "fid-stats", "eval"]
    assert "same: 339 tensors" in done.stdout
    assert "RANDOM weights" in done.stdout and "mechanics, not image quality" in done.stdout
    images = sorted((ex / "data" / "train").rglob("*.png"))
    assert len(images) == job.CLASSES * job.IMAGES_PER_CLASS
    assert len({p.parent.name for p in images}) == job.CLASSES
    trained = summarize(ex / "train" / "checkpoint-last.pth")
    assert trained["epoch"] == 2  # resumed after epoch 1, trained one epoch (epoch 2 of 3)
    assert trained["global_step"] == 6 + len(images) // 4  # the checkpoint's batch size 4
    assert (ex / "grid.png").stat().st_size > 0
    with np.load(ex / "ref.npz") as stats:
        assert stats["mu"].shape == (2048,) and stats["sigma"].shape == (2048, 2048)
    fid_line = next(line for line in done.stdout.splitlines() if "│ FID" in line)
    assert float(fid_line.split("│")[2]) > 0


def test_example_refuses_to_overwrite_an_earlier_run(example_run, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    folder, _ = example_run
    again = subprocess.run([str(Path(sys.executable).parent / "jitckpt"), "example"], cwd=folder,
                           capture_output=True, text=True)
    assert again.returncode == 2
    assert again.stderr.strip() == ("error: 'jitckpt-example/checkpoint-last.pth' already exists; "
                                    "pass --force to start the example afresh")


def test_the_generated_images_are_the_same_bytes_every_time(tmp_path):
    def digest(root):
        job.write_image_folder(root)
        return [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.png"))]

    assert digest(tmp_path / "a") == digest(tmp_path / "b")
