"""``jitckpt export --layout diffusers`` and ``--dtype``: the folder diffusers loads, read back bit for bit;
a weights-only .pth the original's evaluation path takes."""

import argparse
import json

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

import jitckpt
from jitckpt.cli import app
from jitckpt.layouts.arch import FROZEN_KEYS
from tests import wild
from tests.helpers import jit_shaped_module, load_golden_torch

GOLDEN = load_golden_torch()


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_a_diffusers_export_holds_what_diffusers_loads_and_reads_back_bit_for_bit(golden, tmp_path):
    names = tmp_path / "classes.txt"
    names.write_text("\n".join(f"class {i}" for i in range(10)) + "\n")
    result = run("export", golden, "-o", tmp_path / "JiT-T-4", "--layout", "diffusers", "--no-samples",
                 "--class-names", names)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "JiT-T-4"
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        "README.md", "conversion_metadata.json", "model_index.json", "scheduler/scheduler_config.json",
        "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors"]
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "JiTPipeline" and index["transformer"] == ["diffusers", "JiTTransformer2DModel"]
    assert index["id2label"]["9"] == "class 9"
    config = json.loads((folder / "transformer" / "config.json").read_text())
    assert {k: config[k] for k in wild.GOLDEN_CONFIG if k != "_diffusers_version"} == {
        k: v for k, v in wild.GOLDEN_CONFIG.items() if k != "_diffusers_version"}
    # the names of diffusers PR #13098, as another tool writes them (tests/wild.py), with the same bytes
    expected = wild.diffusers_names(GOLDEN["model_ema1"])
    with safe_open(str(folder / "transformer" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert sorted(f.keys()) == sorted(expected)
        assert all(torch.equal(f.get_tensor(k), v) for k, v in expected.items())
    back = jitckpt.load(folder)
    assert back.extra["weights"] == "ema1" and back.epoch == 1 and back.arch == jitckpt.load(golden).arch
    assert all(torch.equal(back.model[k], v) for k, v in GOLDEN["model_ema1"].items())


def test_split_attention_names_round_trip_and_convert_to_pth_bitwise(golden, tmp_path):
    result = run("export", golden, "-o", tmp_path / "split", "--layout", "diffusers", "--diffusers-names", "split",
                 "--no-samples", "--ema", "2")
    assert result.exit_code == 0, result.output
    expected = wild.diffusers_names(GOLDEN["model_ema2"], split=True)
    with safe_open(str(tmp_path / "split" / "transformer" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert sorted(f.keys()) == sorted(expected)
        assert all(torch.equal(f.get_tensor(k), v) for k, v in expected.items())
    result = run("convert", tmp_path / "split", "-o", tmp_path / "back.pth")
    assert result.exit_code == 0, result.output
    with torch.serialization.safe_globals([argparse.Namespace]):
        saved = torch.load(tmp_path / "back.pth", weights_only=True)
    for section in ("model", "model_ema1", "model_ema2"):
        assert all(torch.equal(saved[section][k], v) for k, v in GOLDEN["model_ema2"].items())


@pytest.mark.parametrize("dtype, torch_dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_a_half_precision_export_is_the_source_rounded(golden, tmp_path, dtype, torch_dtype):
    for layout in ("hf", "diffusers"):
        out = tmp_path / f"{layout}-{dtype}"
        result = run("export", golden, "-o", out, "--layout", layout, "--dtype", dtype, "--no-samples")
        assert result.exit_code == 0, result.output
        back = jitckpt.load(out)
        for key, value in GOLDEN["model_ema1"].items():
            assert back.model[key].dtype == torch_dtype and torch.equal(back.model[key], value.to(torch_dtype))
        assert json.loads(next(out.rglob("config.json")).read_text()).get("torch_dtype", str(torch_dtype)[6:]) \
            == str(torch_dtype)[6:]
        verified = run("verify", out)
        assert verified.exit_code == 0 and verified.stdout.startswith("intact"), verified.output


def test_bad_export_choices_are_one_line_and_write_nothing(golden, tmp_path):
    for flags, message in ((["--layout", "onnx"], "unknown layout 'onnx'; choose one of: hf, diffusers"),
                           (["--dtype", "int8"], "unknown dtype 'int8'; choose one of: keep, float32, bf16, fp16")):
        result = run("export", golden, "-o", tmp_path / "x", *flags)
        assert result.exit_code == 2 and message in result.stderr and not (tmp_path / "x").exists()
    names = tmp_path / "three.txt"
    names.write_text("a\nb\nc\n")
    result = run("export", golden, "-o", tmp_path / "x", "--layout", "diffusers", "--class-names", names)
    assert result.exit_code == 2 and "names 3 classes; the model has 10" in result.stderr
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x*"))


def original_evaluation_resume(path, arch):
    """``main_jit.py``'s resume block (lines 191-206) as ``--evaluate_gen`` runs it, but for ``.cuda()``."""
    model_without_ddp = jit_shaped_module(arch)
    optimizer = torch.optim.AdamW([p for p in model_without_ddp.parameters() if p.requires_grad])
    with torch.serialization.safe_globals([argparse.Namespace]):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model_without_ddp.load_state_dict(checkpoint["model"])
    ema_state_dict1 = checkpoint["model_ema1"]
    ema_state_dict2 = checkpoint["model_ema2"]
    ema_params1 = [ema_state_dict1[name] for name, _ in model_without_ddp.named_parameters()]
    ema_params2 = [ema_state_dict2[name] for name, _ in model_without_ddp.named_parameters()]
    resumed_optimizer = "optimizer" in checkpoint and "epoch" in checkpoint
    if resumed_optimizer:
        optimizer.load_state_dict(checkpoint["optimizer"])
    return model_without_ddp, ema_params1, ema_params2, resumed_optimizer


@pytest.mark.parametrize("source", ["export", "weights-only"])
def test_a_weights_only_pth_passes_the_originals_evaluation_resume(golden, tmp_path, source):
    if source == "export":
        assert run("export", golden, "-o", tmp_path / "exp", "--no-samples").exit_code == 0
        result = run("convert", tmp_path / "exp", "-o", tmp_path / "w.pth")
    else:
        result = run("convert", golden, "--weights-only", "--weights", "ema1", "-o", tmp_path / "w.pth")
    assert result.exit_code == 0, result.output
    arch = jitckpt.load(golden, lazy=True).arch
    model, ema1, ema2, resumed_optimizer = original_evaluation_resume(tmp_path / "w.pth", arch)
    assert not resumed_optimizer
    names = [n for n, _ in model.named_parameters()]
    assert all(torch.equal(t, GOLDEN["model_ema1"][n]) for n, t in zip(names, ema1))
    assert all(torch.equal(t, GOLDEN["model_ema1"][n]) for n, t in zip(names, ema2))
    assert all(torch.equal(p, GOLDEN["model_ema1"][n]) for n, p in model.state_dict().items())
    assert len(names) == len(GOLDEN["model_ema1"]) and FROZEN_KEYS[0] in names
    inspected = run("inspect", tmp_path / "w.pth")
    back = jitckpt.load(tmp_path / "w.pth", lazy=True)
    assert back.is_weights_only and back.extra["weights"] == "ema1" and back.weights("ema1") is back.model
    assert "resumes at" not in inspected.stdout


def test_verify_finds_a_flipped_byte_in_a_split_diffusers_export(golden, tmp_path):
    from jitckpt.cli.console import EXIT_DIFFERENT
    from jitckpt.formats.safetensors import read_header

    out = tmp_path / "split"
    assert run("export", golden, "-o", out, "--layout", "diffusers", "--diffusers-names", "split",
               "--no-samples").exit_code == 0
    weights = out / "transformer" / "diffusion_pytorch_model.safetensors"
    ref = read_header(str(weights))[0]["blocks.2.attn.to_k.weight"]
    data = bytearray(weights.read_bytes())
    data[ref.offset + 7] ^= 0x10
    weights.write_bytes(bytes(data))
    result = run("verify", out)
    assert result.exit_code == EXIT_DIFFERENT and "blocks.2.attn.to_k.weight" in result.stdout


def test_class_names_are_read_as_people_write_them_and_a_fifo_is_refused(golden, tmp_path):
    import os

    names = tmp_path / "classes.txt"
    names.write_bytes(b"\xef\xbb\xbf" + "\n".join(f"c{i}" for i in range(10)).encode() + b"\n\n\n")
    assert run("export", golden, "-o", tmp_path / "d", "--layout", "diffusers", "--no-samples",
               "--class-names", names).exit_code == 0
    assert json.loads((tmp_path / "d" / "model_index.json").read_text())["id2label"]["0"] == "c0"
    os.mkfifo(tmp_path / "fifo")
    result = run("export", golden, "-o", tmp_path / "e", "--layout", "diffusers", "--class-names", tmp_path / "fifo")
    assert result.exit_code == 2 and "not a regular file" in result.stderr
    result = run("export", golden, "-o", tmp_path / "e", "--class-names", names)
    assert result.exit_code == 2 and "for --layout diffusers" in result.stderr and not (tmp_path / "e").exists()


def test_dtype_float32_means_float32(golden, tmp_path):
    assert run("export", golden, "-o", tmp_path / "half", "--dtype", "bf16", "--no-samples").exit_code == 0
    assert run("export", tmp_path / "half", "-o", tmp_path / "full", "--dtype", "float32",
               "--no-samples").exit_code == 0
    back = jitckpt.load(tmp_path / "full")
    assert all(v.dtype == torch.float32 and torch.equal(v, GOLDEN["model_ema1"][k].to(torch.bfloat16).float())
               for k, v in back.model.items())


def test_force_over_a_link_to_a_folder_replaces_the_link_and_leaves_nothing(golden, tmp_path):
    real = tmp_path / "real"
    assert run("export", golden, "-o", real, "--no-samples").exit_code == 0
    (tmp_path / "link").symlink_to(real)
    assert run("export", golden, "-o", tmp_path / "link", "--layout", "diffusers", "--no-samples",
               "--force").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-last.pth", "link", "real"]
    assert (tmp_path / "link").is_dir() and not (tmp_path / "link").is_symlink()
    assert (real / "model.safetensors").exists()  # what the link named is untouched


def test_a_folder_written_meanwhile_is_not_replaced_without_force(golden, tmp_path, monkeypatch):
    from jitckpt.storage import atomic_folder as io_folder
    from jitckpt.errors import OutputError

    target = tmp_path / "out.dcp"
    real_fsync = io_folder._fsync_subfolders

    def another_writer_finishes_first(temp):
        real_fsync(temp)
        target.mkdir()
        (target / "theirs").write_text("kept")

    monkeypatch.setattr(io_folder, "_fsync_subfolders", another_writer_finishes_first)
    with pytest.raises(OutputError, match="already exists .written meanwhile"):
        jitckpt.convert(golden, target)
    assert (target / "theirs").read_text() == "kept" and sorted(p.name for p in target.iterdir()) == ["theirs"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
