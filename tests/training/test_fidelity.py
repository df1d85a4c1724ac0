"""``jitckpt train --resume`` continues the original's run: the original's random stream, data order, flips and
update arithmetic (see jitckpt/lightning/stream.py).

Against ``fixtures/original/epoch2`` (what the original wrote after one more epoch, on another machine): the
losses and LRs of every iteration are equal, and every tensor agrees to float32 rounding (that machine's
kernels round a few last bits differently: the original's own code, run here, differs from that fixture in
the same way). Against the original's code run here (``../shared/reference``, when it and its packages are
present): every tensor bit for bit.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from jitckpt.cli import app
from tests.helpers import FIXTURES, GOLDEN

EPOCH2 = FIXTURES / "epoch2"
REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "jit-original-cpu"
# The command of fixtures/original/epoch2/README.md, in the original's flags (jitckpt train takes them as they are).
FLAGS = ["--epochs", "3", "--batch_size", "4", "--num_workers", "0", "--seed", "0", "--log_freq", "1"]
ORIGINAL_FLAGS = ["--model", "JiT-T/4", "--img_size", "16", "--class_num", "10", "--epochs", "3", "--warmup_epochs",
                  "1", "--batch_size", "4", "--blr", "1e-3", "--min_lr", "0", "--lr_schedule", "cosine",
                  "--weight_decay", "0.05", "--ema_decay1", "0.9999", "--ema_decay2", "0.9996", "--P_mean", "-0.8",
                  "--P_std", "0.8", "--noise_scale", "1.0", "--t_eps", "0.05", "--label_drop_prob", "0.1", "--seed",
                  "0", "--sampling_method", "heun", "--num_sampling_steps", "5", "--cfg", "2.0", "--interval_min",
                  "0.1", "--interval_max", "1.0", "--save_last_freq", "5", "--log_freq", "1", "--num_workers", "0",
                  "--no_pin_mem", "--device", "cpu"]


def image_folder(root: Path) -> Path:
    """The fixture's ImageFolder: image ``i`` of train_data.pt as ``train/c{label}/{i:02d}.png``."""
    data = torch.load(FIXTURES / "train_data.pt")
    for index, (image, label) in enumerate(zip(data["images"], data["labels"])):
        folder = root / "train" / f"c{int(label)}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{index:02d}.png")
    return root


def load(path: Path) -> dict:
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


def tensor_pairs(ours: dict, theirs: dict) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Every tensor of the original layout, by name: weights, both EMAs, every AdamW moment and step."""
    pairs = [(f"{section}/{key}", ours[section][key], value)
             for section in ("model", "model_ema1", "model_ema2") for key, value in theirs[section].items()]
    state = theirs["optimizer"]["state"]
    pairs += [(f"optimizer/{index}/{slot}", ours["optimizer"]["state"][index][slot], value)
              for index in state for slot, value in state[index].items()]
    return pairs


def run_resumed(tmp_path: Path, workers: int = 0) -> tuple:
    """``jitckpt train --resume`` of the fixture's epoch-1 checkpoint, one epoch, the fixture's flags."""
    data = image_folder(tmp_path / "data")
    source = tmp_path / "in" / "checkpoint-last.pth"
    source.parent.mkdir()
    shutil.copyfile(GOLDEN, source)
    out = tmp_path / "out"
    flags = [*FLAGS[:FLAGS.index("--num_workers") + 1], str(workers), *FLAGS[FLAGS.index("--num_workers") + 2:]]
    result = CliRunner().invoke(app, ["train", "--resume", str(source), "--data_path", str(data), "--output_dir",
                                      str(out), "--accelerator", "cpu", "--logger", "csv", *flags])
    assert result.exit_code == 0, result.output
    return result, out


def logged_losses(out: Path) -> list[float]:
    with open(next(out.glob("logs/**/metrics.csv"))) as f:
        return [float(row["train_loss_step"]) for row in csv.DictReader(f) if row.get("train_loss_step")]


@pytest.fixture
def resumed(tmp_path):
    return run_resumed(tmp_path)


def test_the_run_says_it_follows_the_originals_stream(resumed, caplog):
    said = [record.getMessage() for record in caplog.get_records("setup")]
    line = next(line for line in said if line.startswith("fidelity:"))
    assert "the original's random stream (seed 0 + rank" in line and "4 images per process, 0 workers" in line
    assert line.endswith("the tensors match a run of the original's main_jit.py bit for bit")


def test_the_line_says_why_a_run_cannot_match():
    from jitckpt.training.run import fidelity_line

    args = {"seed": 3, "batch_size": 8, "num_workers": 2}
    line = fidelity_line({"accelerator": "cpu", "precision": "bf16-mixed", "accumulate_grad_batches": 2}, args)
    assert "but not bit for bit: --precision bf16-mixed" in line and "--accumulate-grad-batches" in line
    assert "seed 3 + rank" in line and "8 images per process, 2 workers" in line


def test_one_epoch_has_the_originals_losses_and_lrs_and_its_tensors_to_float32_rounding(resumed):
    _, out = resumed
    trace = json.loads((EPOCH2 / "trace.json").read_text())
    assert logged_losses(out) == trace["loss"]  # every iteration, every bit
    ours, theirs = load(out / "checkpoint-last.pth"), load(EPOCH2 / "checkpoint-last.pth")
    assert ours["epoch"] == theirs["epoch"] == 2
    assert [g["lr"] for g in ours["optimizer"]["param_groups"]] == trace["lr"][-1][2]  # the last step's LRs
    for name, a, b in tensor_pairs(ours, theirs):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        scale = b.abs().max().item() or 1.0
        assert (a - b).abs().max().item() <= 1e-6 * scale, name  # measured: at most 4.7e-7 of the scale


def test_with_two_workers_the_flips_and_order_are_still_the_originals(tmp_path):
    _, out = run_resumed(tmp_path, workers=2)
    assert logged_losses(out) == json.loads((EPOCH2 / "trace-workers2.json").read_text())["loss"]


def _reference_runs() -> bool:
    return REFERENCE.is_dir() and all(importlib.util.find_spec(m) for m in ("einops", "cv2", "tensorboard"))


@pytest.mark.skipif(not _reference_runs(), reason="needs ../shared/reference and the packages its harness imports "
                                                  "(einops, opencv-python-headless, tensorboard)")
@pytest.mark.parametrize("workers", [0, 2])
def test_one_epoch_equals_the_originals_code_run_here_bit_for_bit(tmp_path, workers):
    _, out = run_resumed(tmp_path, workers)
    work = tmp_path / "original"
    (work / "in").mkdir(parents=True)
    shutil.copyfile(GOLDEN, work / "in" / "checkpoint-last.pth")
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(29600 + os.getpid() % 300), "JIT_ORIG_DIR": str(REFERENCE)}
    flags = [*ORIGINAL_FLAGS[:ORIGINAL_FLAGS.index("--num_workers") + 1], str(workers),
             *ORIGINAL_FLAGS[ORIGINAL_FLAGS.index("--num_workers") + 2:]]
    done = subprocess.run([sys.executable, str(REFERENCE / "harness.py"), *flags, "--data_path",
                           str(tmp_path / "data"), "--resume", "in", "--output_dir", "out"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    ours, theirs = load(out / "checkpoint-last.pth"), load(work / "out" / "checkpoint-last.pth")
    different = [name for name, a, b in tensor_pairs(ours, theirs) if not torch.equal(a, b)]
    assert different == []
    assert json.loads((work / "out" / "trace.json").read_text())["loss"] == logged_losses(out)


def train_from_scratch(tmp_path: Path, epochs: int = 2, losses: list | None = None) -> Path:
    """Two epochs from scratch with the seed's Python API, as the original's ``main_jit.py`` runs them: seed,
    build the model (its initialisation draws), train with the original's stream."""
    import lightning as L

    import jitckpt
    from jitckpt.callbacks import create_default_callbacks
    from jitckpt.lightning import JiTCheckpointIO, JiTDataModule, JiTLightningModule

    golden = jitckpt.load(GOLDEN, lazy=True)
    args = {**golden.args, "epochs": epochs, "seed": 0}
    data = JiTDataModule(str(image_folder(tmp_path / "data")), golden.arch.img_size, 4, 0, False,
                         random_stream="original")
    torch.manual_seed(args["seed"])  # main_jit.py: torch.manual_seed(seed + rank), then the model
    module = JiTLightningModule.from_args(args, arch=golden.arch, learning_rate=args["lr"], seed=args["seed"],
                                          random_stream="original")
    out = tmp_path / "out"
    callbacks = create_default_callbacks(args["ema_decay1"], args["ema_decay2"], out, 40, golden.arch.img_size,
                                         epochs, lr_schedule=args["lr_schedule"], warmup_epochs=args["warmup_epochs"],
                                         min_lr=args["min_lr"], save_last_freq=5, log_freq=1, args=args)
    class Losses(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # type: ignore[no-untyped-def]
            if losses is not None:
                losses.append(outputs["loss"].item())

    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
                        plugins=[JiTCheckpointIO()], callbacks=[*callbacks, Losses()], default_root_dir=tmp_path)
    trainer.fit(module, datamodule=data)
    return out / "checkpoint-last.pth"


def test_two_epochs_from_scratch_with_the_seeds_api_have_the_originals_losses(tmp_path):
    losses: list[float] = []
    train_from_scratch(tmp_path, losses=losses)
    assert losses == json.loads((FIXTURES / "scratch" / "trace.json").read_text())["loss"]


@pytest.mark.skipif(not _reference_runs(), reason="needs ../shared/reference and the packages its harness imports "
                                                  "(einops, opencv-python-headless, tensorboard)")
def test_two_epochs_from_scratch_equal_the_originals_bit_for_bit(tmp_path):
    ours = load(train_from_scratch(tmp_path))
    work = tmp_path / "original"
    work.mkdir()
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(29900 + os.getpid() % 90), "JIT_ORIG_DIR": str(REFERENCE)}
    flags = [*ORIGINAL_FLAGS[:ORIGINAL_FLAGS.index("--epochs") + 1], "2",
             *ORIGINAL_FLAGS[ORIGINAL_FLAGS.index("--epochs") + 2:]]
    done = subprocess.run([sys.executable, str(REFERENCE / "harness.py"), *flags, "--data_path",
                           str(tmp_path / "data"), "--output_dir", "out"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = load(work / "out" / "checkpoint-last.pth")
    assert ours["epoch"] == theirs["epoch"] == 1
    assert [name for name, a, b in tensor_pairs(ours, theirs) if not torch.equal(a, b)] == []


def train_two_ranks(tmp_path: Path) -> Path:
    """``jitckpt train --resume`` on two gloo processes (Lightning's DDP), in a process of its own."""
    data = image_folder(tmp_path / "data")
    source = tmp_path / "in" / "checkpoint-last.pth"
    source.parent.mkdir(parents=True)
    shutil.copyfile(GOLDEN, source)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("OMP_NUM_THREADS", None)
    done = subprocess.run([sys.executable, "-m", "jitckpt", "train", "--resume", str(source), "--data_path",
                           str(data), "--output_dir", str(out), "--accelerator", "cpu", "--logger", "csv",
                           "--devices", "2", "--strategy", "ddp", "--lr", "3.125e-05", *FLAGS],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_two_processes_have_the_originals_two_rank_losses(tmp_path):
    out = train_two_ranks(tmp_path)
    assert logged_losses(out) == json.loads((FIXTURES / "two-ranks" / "trace-rank0.json").read_text())["loss"]


@pytest.mark.skipif(not _reference_runs(), reason="needs ../shared/reference and the packages its harness imports "
                                                  "(einops, opencv-python-headless, tensorboard)")
def test_two_processes_equal_the_originals_two_ranks_bit_for_bit(tmp_path):
    out = train_two_ranks(tmp_path)
    work = tmp_path / "original"
    (work / "in").mkdir(parents=True)
    shutil.copyfile(GOLDEN, work / "in" / "checkpoint-last.pth")
    port = str(29950 + os.getpid() % 40)
    ranks = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "JIT_ORIG_DIR": str(REFERENCE)}
        ranks.append(subprocess.Popen([sys.executable, str(Path(__file__).with_name("original_rank.py")),
                                       *ORIGINAL_FLAGS, "--data_path", str(tmp_path / "data"), "--resume", "in",
                                       "--output_dir", f"out{rank}"], cwd=work, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for process in ranks:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
    ours, theirs = load(out / "checkpoint-last.pth"), load(work / "out0" / "checkpoint-last.pth")
    assert [name for name, a, b in tensor_pairs(ours, theirs) if not torch.equal(a, b)] == []
