"""Bad numbers and cheap mistakes on the command line: one ``error:`` line, exit 2, nothing created, and all of it
before torch is imported (each case runs in a fresh process that reports whether torch was loaded)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import GOLDEN

ROOT = Path(__file__).resolve().parent.parent
# Runs the command line as the console script does, then says on stderr whether torch was ever imported.
HARNESS = """
import sys
from jitckpt.cli import run
sys.argv = ["jitckpt", *sys.argv[1:]]
try:
    run()
except SystemExit as exit:
    code = exit.code
sys.stderr.write("TORCH " + str("torch" in sys.modules) + "\\n")
sys.exit(code)
"""
G = str(GOLDEN)
CASES = {
    "eval --steps 0": (["eval", G, "--steps", "0"], "'--steps': 0 is not in the range 1<=x<=10000"),
    "eval --steps -3": (["eval", G, "--steps", "-3"], "'--steps': -3 is not in the range"),
    "eval --batch-size 0": (["eval", G, "--batch-size", "0"], "'--batch-size': 0 is not in the range x>=1"),
    "eval --num-images 0": (["eval", G, "--num-images", "0"], "'--num-images': 0 is not in the range 1<=x<="),
    "eval --num-images 15": (["eval", G, "--num-images", "15"], "--num-images 15 must be a positive multiple of the class count 10"),
    "eval --interval-min 2": (["eval", G, "--interval-min", "2"], "'--interval-min': 2.0 is not in the range 0.0<=x<=1.0"),
    "eval interval reversed": (["eval", G, "--interval-min", "0.8", "--interval-max", "0.2"], "--interval-min 0.8 is above --interval-max 0.2"),
    "eval --devices 0": (["eval", G, "--devices", "0"], "'--devices': 0 is not in the range x>=1"),
    "eval --ema 3": (["eval", G, "--ema", "3"], "--ema '3': choose 1, 2 or raw"),
    "eval --cfg 500": (["eval", G, "--cfg", "500"], "--cfg '500': each scale must be between 0.0 and 100.0"),
    "eval --method": (["eval", G, "--method", "ddim"], "'--method': 'ddim' is not one of euler, heun"),
    "eval missing file": (["eval", "missing.pth"], "missing.pth"),
    "sample --steps -1": (["sample", G, "--steps", "-1"], "'--steps': -1 is not in the range"),
    "sample --classes 0,99": (["sample", G, "--classes", "0,99"], "--classes '0,99': each class must be between 0 and 9"),
    "sample --classes x": (["sample", G, "--classes", "a,b"], "--classes 'a,b': give comma-separated class numbers"),
    "train --batch_size 0": (["train", "--batch_size", "0"], "'--batch-size' / '--batch_size': 0 is not in the range x>=1"),
    "train --epochs 0": (["train", "--epochs", "0"], "'--epochs': 0 is not in the range x>=1"),
    "train --ema_decay1 2": (["train", "--ema_decay1", "2"], "0.0<=x<=1.0"),
    "train no data": (["train"], "no training folder './data/imagenet/train': --data-path './data/imagenet' must hold"),
    "train --lr_schedule": (["train", "--lr_schedule", "step"], "'step' is not one of constant, cosine"),
    "verify --limit -1": (["verify", G, "--limit", "-1"], "'--limit': -1 is not in the range x>=0"),
    "convert --shards 0": (["convert", G, "-o", "x.dcp", "--shards", "0"], "'--shards': 0 is not in the range 1<=x<=1024"),
    "export missing -o": (["export", G], "missing option '-o' / '--output'"),
    "export --ema 4": (["export", G, "-o", "out", "--ema", "4"], "--ema '4': choose 1, 2 or raw"),
    "unknown command": (["evaluate", G], "jitckpt: no such command 'evaluate'"),
    "eval --steps without a value": (["eval", G, "--steps"],
                                     "jitckpt eval: option '--steps' requires an argument (see jitckpt eval --help)"),
    # found by a stranger's attack: NaN past a range, sizes past memory, options Lightning would refuse late
    "eval --noise-scale nan": (["eval", G, "--noise-scale", "nan"], "nan is not a finite number"),
    "eval --cfg nan (sample)": (["sample", G, "--cfg", "nan"], "nan is not a finite number"),
    "eval --num-images 1e20": (["eval", G, "--num-images", "100000000000000000000"], "1<=x<=10000000"),
    "eval --interval-max below the file's min": (["eval", G, "--interval-max", "0.05"],
                                                 "the CFG interval would be [0.1, 0.05]: its start is above its end"),
    "eval --accelerator tpu": (["eval", G, "--accelerator", "tpu"], "'tpu' is not one of auto, cpu, gpu, cuda, mps"),
    "eval --json under a file": (["eval", G, "--json", f"{G}/r.json"], "is a file"),
    "train --devices 0": (["train", "--devices", "0"], "give auto, a count of at least 1"),
    "train --devices 0,,1": (["train", "--devices", "0,,1"], "give auto, a count of at least 1"),
    "train --img_size 15": (["train", "--img_size", "15"], "image size 15 is not a multiple of JiT-B/16's patch size 16"),
    "fid-stats --img-size 99999": (["fid-stats", ".", "-o", "x.npz", "--img-size", "99999"],
                                   "'--img-size': 99999 is not in the range 8<=x<=4096"),
    "fid-stats --batch-size 0": (["fid-stats", ".", "-o", "x.npz", "--batch-size", "0"],
                                 "'--batch-size': 0 is not in the range 1<=x<=4096"),
    "train --precision 7": (["train", "--precision", "7"], "'7' is not one of"),
    "train --lr nan": (["train", "--lr", "nan"], "nan is not a finite number"),
    "train --model": (["train", "--model", "JiT-Q/99"], "'JiT-Q/99' is not one of JiT-B/16"),
    "train --resume missing": (["train", "--resume", "nope.pth"], "--resume 'nope.pth': no such file or folder"),
    "train --logger": (["train", "--logger", "wandb"], "'wandb' is not one of csv, tensorboard, none"),
    "train --data_path empty": (["train", "--data_path", ""], "no training folder 'train'"),
    "train --output_dir under a file": (["train", "--resume", G, "--output_dir", f"{G}/out"],
                                        "is a file, not a folder"),
    "eval --inception-weights missing": (["eval", G, "--num-images", "10", "--inception-weights", "none.pth"],
                                         "--inception-weights 'none.pth': no such file"),
    "eval --fid-stats a folder": (["eval", G, "--num-images", "10", "--fid-stats", str(ROOT)],
                                  "a folder, not a file"),
    "sample --classes 1,,2": (["sample", G, "--classes", "1,,2"], "give comma-separated class numbers"),
    "convert --shards to a file": (["convert", G, "-o", "x.pth", "--shards", "3"],
                                   "--shards 3 applies to a folder format (dcp) only"),
    "convert under a file": (["convert", G, "-o", f"{G}/x.pth"], "is a file"),
    # a second stranger's attack
    "convert suffix against --to": (["convert", G, "-o", "out.safetensors", "--to", "pth"],
                                    "'out.safetensors' names a safetensors file, but the format to write is original"),
    "sample -o g.jpg": (["sample", G, "-o", "g.jpg"], "-o 'g.jpg': the grid is written as PNG; give a .png name"),
    "inspect an empty path": (["inspect", ""], "an empty path names no checkpoint"),
    "inspect a device": (["inspect", "/dev/zero"], "/dev/zero: not a regular file (a FIFO or a device)"),
    "train --resume with --model": (["train", "--resume", G, "--model", "JiT-B/16"],
                                    "--model, --img-size and --class-num come from the checkpoint when resuming"),
    "train --evaluate_gen alone": (["train", "--evaluate_gen"], "--evaluate_gen scores the checkpoint given by --resume"),
    "eval two references": (["eval", G, "--fid-stats", "a.npz", "--ref-dir", "d"],
                            "give --fid-stats or --ref-dir, not both"),
    "eval --json --sweep": (["eval", G, "--json", "--sweep"], "--json '--sweep' looks like an option"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_bad_input_is_one_line_before_torch_and_creates_nothing(tmp_path, case):
    args, expected = CASES[case]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", HARNESS, *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    lines = done.stderr.splitlines()
    assert lines[-1] == "TORCH False", f"torch was imported before the error: {done.stderr}"
    assert done.returncode == 2 and done.stdout == "", (done.returncode, done.stdout, done.stderr)
    assert len(lines) == 2 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert list(tmp_path.iterdir()) == [], "something was created"


def test_a_usage_error_names_the_command_and_where_its_help_is(tmp_path):
    done = subprocess.run([sys.executable, "-m", "jitckpt", "eval", G, "--steps", "zero"], cwd=tmp_path,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and done.stderr == ("error: jitckpt eval: invalid value for '--steps': 'zero' is "
                                                    "not a valid int range (see jitckpt eval --help)\n")


def test_the_command_list_shows_each_summary_whole():
    from typer.testing import CliRunner

    from jitckpt.cli import app

    shown = CliRunner().invoke(app, ["--help"]).output
    commands = shown.split("Commands:")[1]
    assert "..." not in commands and "score an FID." in " ".join(commands.split())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any folder")
def test_export_into_a_folder_it_cannot_write_says_so_before_reading(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    done = subprocess.run([sys.executable, "-c", HARNESS, "export", G, "-o", str(locked / "out")], cwd=tmp_path,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and done.stderr.splitlines()[-1] == "TORCH False"
    assert "Permission denied" in done.stderr and list(locked.iterdir()) == []


def _run(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "jitckpt", *map(str, args)], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)


def test_force_never_replaces_a_file_by_its_default_name(tmp_path):
    import shutil

    source = tmp_path / "old.pth"
    shutil.copy(GOLDEN, source)
    mine = tmp_path / "old.ckpt"
    mine.write_bytes(b"the user's own file")
    done = _run(tmp_path, "convert", source, "--force")
    assert done.returncode == 2 and "only the default output name" in done.stderr
    assert mine.read_bytes() == b"the user's own file"
    assert _run(tmp_path, "convert", source, "-o", mine, "--force").returncode == 0  # named: replaced
    assert mine.read_bytes()[:2] == b"PK"


@pytest.mark.parametrize("command", [["convert", "{src}", "-o", "{run}", "--to", "dcp", "--force"],
                                     ["export", "{src}", "-o", "{run}", "--no-samples", "--force"],
                                     ["export", "{other}", "-o", "{run}", "--no-samples", "--force"]])
def test_force_never_replaces_a_folder_of_other_things_nor_one_holding_the_source(tmp_path, command):
    import shutil

    run = tmp_path / "runs" / "exp1"
    run.mkdir(parents=True)
    shutil.copy(GOLDEN, run / "checkpoint-last.pth")
    (run / "notes.txt").write_text("the user's notes")
    shutil.copy(GOLDEN, tmp_path / "other.pth")
    names = {"src": run / "checkpoint-last.pth", "run": run, "other": tmp_path / "other.pth"}
    done = _run(tmp_path, *[part.format(**names) for part in command])
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "give" in done.stderr and str(run) in done.stderr
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-last.pth", "notes.txt"]
    assert (run / "notes.txt").read_text() == "the user's notes"


def test_force_replaces_a_checkpoint_folder_it_wrote(tmp_path):
    out = tmp_path / "out.dcp"
    assert _run(tmp_path, "convert", GOLDEN, "-o", out).returncode == 0
    again = _run(tmp_path, "convert", GOLDEN, "-o", out, "--force")
    assert again.returncode == 0, again.stderr
    assert _run(tmp_path, "export", GOLDEN, "-o", tmp_path / "exp", "--no-samples", "--all-emas").returncode == 0
    replaced = _run(tmp_path, "export", GOLDEN, "-o", tmp_path / "exp", "--no-samples", "--all-emas", "--force")
    assert replaced.returncode == 0, replaced.stderr


def test_resuming_a_run_that_has_reached_its_epochs_says_nothing_to_train(tmp_path):
    import jitckpt

    finished = jitckpt.load(GOLDEN, lazy=True).epoch
    (tmp_path / "data" / "train" / "a").mkdir(parents=True)
    done = _run(tmp_path, "train", "--resume", GOLDEN, "--epochs", finished + 1, "--data_path", tmp_path / "data",
                "--output_dir", tmp_path / "out")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: nothing to train: {GOLDEN} finished epoch {finished} (epochs count from 0) "
                                  f"and --epochs is {finished + 1}; give --epochs {finished + 2} or more")
    assert not (tmp_path / "out").exists()


def test_piped_output_carries_no_padding_and_the_help_names_arguments_alike(tmp_path):
    shown = _run(tmp_path, "inspect", GOLDEN).stdout
    assert shown and not [line for line in shown.splitlines() if line != line.rstrip()]
    for command, name in (("inspect", "PATH"), ("convert", "SRC"), ("eval", "CKPT"), ("sample", "CKPT"),
                          ("export", "CKPT"), ("verify", "FILE"), ("fid-stats", "IMAGE_DIR")):
        usage = _run(tmp_path, command, "--help").stdout.splitlines()[0]
        assert usage.endswith(name + "}") or f"{{{name}}} [" in usage, usage  # upper case, as FILE [OTHER]


def test_the_sampling_label_names_the_guidance_the_run_will_use():
    import jitckpt
    from jitckpt.cli.evaluation import _cfg

    lazy = jitckpt.load(GOLDEN, lazy=True)
    assert _cfg(lazy, None) == lazy.args["cfg"] and _cfg(lazy, 3.5) == 3.5  # never "cfg default"


def test_a_license_that_is_not_an_identifier_never_reaches_the_model_card(tmp_path):
    done = _run(tmp_path, "export", GOLDEN, "-o", tmp_path / "out", "--no-samples", "--license", "MIT\n# injected")
    assert done.returncode == 2 and "give a license identifier" in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_sample_force_never_replaces_grid_png_it_was_not_given(tmp_path):
    mine = tmp_path / "grid.png"
    mine.write_bytes(b"the user's own picture")
    done = _run(tmp_path, "sample", GOLDEN, "--classes", "1", "--force")
    assert done.returncode == 2 and "only the default output name" in done.stderr
    assert mine.read_bytes() == b"the user's own picture"


@pytest.mark.parametrize("command", ["fetch-inception", "fetch-stats"])
def test_an_empty_url_is_refused_instead_of_downloading_from_the_default_address(tmp_path, command):
    done = _run(tmp_path, command, "--url", "")
    assert done.returncode == 2 and done.stderr == "error: --url is empty; give the address to download from, or " \
                                                   "leave --url out\n"
    assert list(tmp_path.iterdir()) == []


def test_verify_limit_0_gives_the_verdict_alone(tmp_path):
    other = tmp_path / "other.pth"
    assert _run(tmp_path, "convert", GOLDEN, "-o", other, "--drop-optimizer").returncode == 0
    done = _run(tmp_path, "verify", GOLDEN, other, "--limit", "0")
    assert done.returncode == 1 and done.stdout.startswith("different:") and done.stdout.count("\n") == 1


def test_eval_on_a_gpu_that_is_not_there_says_so_instead_of_using_the_cpu(tmp_path):
    done = _run(tmp_path, "eval", GOLDEN, "--num-images", "10", "--accelerator", "gpu",
                "--inception-weights", GOLDEN, "--fid-stats", GOLDEN)
    assert done.returncode == 2 and "no GPU is visible here" in done.stderr and done.stderr.count("\n") == 1
