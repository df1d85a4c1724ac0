"""``verify FILE OTHER`` compares like with like: a weights-only file or an export folder against the matching
section of a training state, says what it compared, and names the args that differ."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

import jitckpt
from jitckpt.cli import app
from tests.helpers import GOLDEN

runner = CliRunner()


def verify(*paths):
    return runner.invoke(app, ["verify", *map(str, paths)])


def test_a_weights_only_file_is_compared_with_the_section_it_came_from(tmp_path):
    ema1 = jitckpt.convert(GOLDEN, tmp_path / "w1.safetensors", weights="ema1")
    ema2 = jitckpt.convert(GOLDEN, tmp_path / "w2.pth", weights="ema2")
    result = verify(ema1, GOLDEN)
    assert result.exit_code == 0 and result.stdout.startswith("same: 57 tensors; the ema1 weights (against the "
                                                              "training state's ema1 section) match"), result.output
    assert "optimizer" not in result.stdout
    assert verify(GOLDEN, ema1).stdout.startswith("same: 57 tensors;")  # either order counts what both hold
    result = verify(ema1, ema2)
    assert result.exit_code == 1 and "weights: the first holds ema1, the second ema2" in result.stdout
    changed = jitckpt.load(ema1)
    changed.model["net.pos_embed"] = changed.model["net.pos_embed"] + 1
    jitckpt.save(changed, tmp_path / "w1-changed.safetensors", weights="ema1")
    result = verify(tmp_path / "w1-changed.safetensors", GOLDEN)
    assert result.exit_code == 1 and "ema1/net.pos_embed: values differ" in result.stdout


def test_an_export_folder_is_compared_with_the_weights_it_holds(tmp_path):
    done = runner.invoke(app, ["export", str(GOLDEN), "-o", str(tmp_path / "exp"), "--ema", "2", "--no-samples"])
    assert done.exit_code == 0, done.output
    result = verify(tmp_path / "exp", GOLDEN)
    assert result.exit_code == 0 and "the ema2 weights" in result.stdout, result.output


def test_two_training_states_list_what_both_hold_and_the_args_that_differ(tmp_path):
    full = jitckpt.load(GOLDEN)
    result = verify(GOLDEN, GOLDEN)
    assert result.exit_code == 0 and "epoch, step, args, model, EMA 1, EMA 2 and optimizer match" in result.stdout
    full.args["output_dir"] = "/somewhere/else"
    jitckpt.save(full, tmp_path / "moved.pth")
    result = verify(GOLDEN, tmp_path / "moved.pth")
    lines = result.stdout.splitlines()
    assert result.exit_code == 1 and lines[1].strip().startswith("args.output_dir: ") and len(lines) == 2
    assert "/somewhere/else" in lines[1] and "blr" not in lines[1]  # the differing key, not the whole args
    assert torch.equal(full.model["net.pos_embed"], jitckpt.load(tmp_path / "moved.pth").model["net.pos_embed"])


def test_one_set_that_does_not_say_which_matches_whichever_section_it_is(tmp_path):
    from safetensors.torch import save_file

    golden = jitckpt.load(GOLDEN)
    save_file({k: v.contiguous() for k, v in golden.model_ema2.items()}, tmp_path / "plain.safetensors")
    result = verify(tmp_path / "plain.safetensors", GOLDEN)  # a plain state dict: the Hub's kind of file
    assert result.exit_code == 0 and "the one set of weights" in result.stdout, result.output
    save_file({k: v.contiguous() + 1 for k, v in golden.model_ema2.items()}, tmp_path / "other.safetensors")
    assert verify(tmp_path / "other.safetensors", GOLDEN).exit_code == 1
