"""The layouts of the wild, each built by other tools' code (tests/wild.py), read to the golden example's
tensors bit for bit by canonical name, with the layout named; bad folders get one line and exit 2."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import jitckpt
from jitckpt.cli import app
from jitckpt.evaluation.sampling import SamplingSettings, build_denoiser, checkpoint_for_sampling, generate_batches
from jitckpt.inspection.summary import summarize
from tests import wild
from tests.helpers import GOLDEN, load_golden_torch

EMA1 = load_golden_torch()["model_ema1"]


def assert_golden_ema1(ckpt):
    assert list(ckpt.model) == list(EMA1)  # every canonical key, in the original order
    for key, value in EMA1.items():
        read = ckpt.model[key].to_torch() if hasattr(ckpt.model[key], "to_torch") else ckpt.model[key]
        assert read.dtype == value.dtype and torch.equal(read, value), key


BUILDERS = {
    "diffusers folder": (lambda tmp: wild.diffusers_folder(tmp / "JiT-T-4"), "diffusers", "diffusers"),
    "diffusers sharded": (lambda tmp: wild.diffusers_folder(tmp / "sharded", shards=3), "diffusers", "diffusers"),
    "transformer folder alone": (lambda tmp: wild.diffusers_folder(tmp / "t", pipeline=False), "diffusers",
                                 "diffusers"),
    "diffusers split folder": (lambda tmp: wild.diffusers_folder(tmp / "split", split=True), "diffusers",
                               "diffusers-split"),
    "transformer weights file": (lambda tmp: wild.diffusers_folder(tmp / "f") / "transformer" /
                                 "diffusion_pytorch_model.safetensors", "safetensors", "diffusers"),
    "split-qkv file": (lambda tmp: wild.split_qkv_file(tmp / "split-qkv.safetensors"), "safetensors",
                       "diffusers-split"),
    "transformer-prefixed file": (lambda tmp: wild.transformer_prefixed_file(tmp / "tp.safetensors"), "safetensors",
                                  "jit"),
    "plain EMA state dict": (lambda tmp: wild.plain_ema_pth(tmp / "jit.pth"), "pth", "jit"),
}


@pytest.mark.parametrize("name", BUILDERS)
def test_each_layout_reads_to_the_source_tensors_bit_for_bit(tmp_path, name):
    build, fmt, naming = BUILDERS[name]
    path = build(tmp_path)
    assert jitckpt.detect_format(path) == fmt
    ckpt = jitckpt.load(path, lazy=True)
    assert_golden_ema1(ckpt)
    assert ckpt.naming == naming and ckpt.is_weights_only
    info = summarize(path)
    assert info["naming"] == naming and info["layout_description"]


def test_a_folder_says_which_ema_it_holds_and_its_architecture_comes_from_config(tmp_path):
    folder = wild.diffusers_folder(tmp_path / "JiT-T-4", weights="ema1")
    ckpt = jitckpt.load(folder, lazy=True)
    assert ckpt.extra["weights"] == "ema1" and ckpt.weights("ema1") is ckpt.model
    assert ckpt.arch.in_context_start == 1 and not any("in_context_start" in w for w in ckpt.warnings)
    result = CliRunner().invoke(app, ["inspect", str(folder)])
    assert result.exit_code == 0 and "the source's ema1 weights" in result.stdout
    assert "diffusers JiTTransformer2DModel names" in result.stdout and "resumes at" not in result.stdout
    unsaid = wild.diffusers_folder(tmp_path / "unsaid", weights=None)
    assert "weights" not in jitckpt.load(unsaid, lazy=True).extra


def test_the_transformer_prefix_is_named(tmp_path):
    info = summarize(wild.transformer_prefixed_file(tmp_path / "tp.safetensors"))
    assert info["key_prefix"] == "transformer." and "'transformer.'" in info["layout_description"]


@pytest.mark.parametrize("name", BUILDERS)
def test_converting_to_pth_is_bitwise_and_the_original_resume_block_takes_it(tmp_path, name):
    from tests.helpers import original_resume

    path = BUILDERS[name][0](tmp_path)
    out = jitckpt.convert(path, tmp_path / "out.pth")
    with torch.serialization.safe_globals([argparse.Namespace]):
        saved = torch.load(out, weights_only=True)
    for section in ("model", "model_ema1", "model_ema2"):
        assert all(torch.equal(saved[section][k], v) for k, v in EMA1.items())
    back = jitckpt.load(out, lazy=True)
    assert back.is_weights_only and back.model_ema1 is None
    assert_golden_ema1(back)


def test_ema1_of_a_diffusers_folder_samples_the_same_images_as_the_source(tmp_path):
    folder = wild.diffusers_folder(tmp_path / "JiT-T-4", split=True)
    settings = SamplingSettings(weights="ema1", num_images=4, batch_size=4, method="heun", steps=2, cfg=1.5,
                                interval_min=0.0, interval_max=1.0, noise_scale=1.0)
    images = []
    for path in (GOLDEN, folder):
        ckpt = checkpoint_for_sampling(path, settings)
        (_, batch), = generate_batches(build_denoiser(ckpt, settings), np.arange(4), settings)
        images.append(batch)
    assert torch.equal(images[0], images[1])


def test_a_lightning_shaped_dict_saved_whole_through_dcp_keeps_emas_and_optimizer(tmp_path):
    script = Path(__file__).with_name("dcp_whole_dict.py")
    env = {**os.environ, "PYTHONPATH": str(script.parents[2])}
    done = subprocess.run([sys.executable, str(script), str(tmp_path), str(29500 + os.getpid() % 1000)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    full = torch.load(tmp_path / "full.pt", weights_only=False)
    ckpt = jitckpt.load(tmp_path / "whole.dcp")
    assert ckpt.layout == "lightning" and ckpt.epoch == 1 and ckpt.global_step == 7 and not ckpt.warnings[1:]
    golden = load_golden_torch()
    for section in ("model_ema1", "model_ema2"):
        assert all(torch.equal(getattr(ckpt, section)[k], v) for k, v in golden[section].items())
    assert all(torch.equal(ckpt.model[k], v) for k, v in full["raw"].items())
    for name, state in full["optimizer"]["state"].items():
        for slot in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(ckpt.optimizer["state"][name][slot], state[slot]), (name, slot)
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "whole.dcp"), "-o", str(tmp_path / "w.pth")])
    assert result.exit_code == 0 and "warning" not in result.stderr
    assert jitckpt.load(tmp_path / "w.pth", lazy=True).model_ema2 is not None


# ---------------------------------------------------------------------------------------------- bad folders


def _one_line_error(path, *more):
    result = CliRunner().invoke(app, ["inspect", str(path), *more])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_a_config_that_disagrees_with_the_shapes_names_both(tmp_path):
    folder = wild.diffusers_folder(tmp_path / "bad", config={**wild.GOLDEN_CONFIG, "hidden_size": 768,
                                                              "num_layers": 12})
    line = _one_line_error(folder)
    assert "config.json says depth=12, hidden_size=768" in line and "have depth=3, hidden_size=48" in line


def test_an_unknown_extra_key_is_one_line(tmp_path):
    from safetensors.torch import save_file

    state = wild.diffusers_names(wild.ema1())
    state["blocks.0.attn.lora_A.weight"] = torch.zeros(2, 2)
    folder = wild.diffusers_folder(tmp_path / "extra")
    save_file(state, str(folder / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert "unexpected key 'net.blocks.0.attn.lora_A.weight'" in _one_line_error(folder)


def test_a_missing_shard_of_an_index_is_one_line(tmp_path):
    folder = wild.diffusers_folder(tmp_path / "sharded", shards=3)
    (folder / "transformer" / "diffusion_pytorch_model-00002-of-00003.safetensors").unlink()
    assert "diffusion_pytorch_model-00002-of-00003.safetensors: shard named by" in _one_line_error(folder)


def test_an_index_that_points_outside_the_folder_is_refused(tmp_path):
    folder = wild.diffusers_folder(tmp_path / "sharded", shards=2)
    index = folder / "transformer" / "diffusion_pytorch_model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"]["pos_embed"] = "../../../etc/passwd"
    index.write_text(json.dumps(data))
    assert "not a shard file name" in _one_line_error(folder)


@pytest.mark.parametrize("change, message", [
    ({"in_channels": 4}, "in_channels=4: a JiT variant jitckpt's model cannot represent"),
    ({"num_classes": 0}, "an unconditional variant jitckpt's model cannot represent"),
])
def test_a_variant_the_model_cannot_represent_is_named_as_such(tmp_path, change, message):
    folder = wild.diffusers_folder(tmp_path / "odd", config={**wild.GOLDEN_CONFIG, **change})
    assert message in _one_line_error(folder)


def test_a_split_attention_file_missing_a_part_is_one_line(tmp_path):
    from safetensors.torch import save_file

    state = wild.diffusers_names(wild.ema1(), split=True)
    del state["blocks.1.attn.to_k.bias"]
    save_file(state, str(tmp_path / "x.safetensors"))
    assert "without the rest of the tensors that make 'net.blocks.1.attn.qkv.bias'" in _one_line_error(
        tmp_path / "x.safetensors")


@pytest.mark.parametrize("extra, message", [
    ({"blocks.0.attn.qkv.weight": torch.zeros(144, 48)}, "both map to 'net.blocks.0.attn.qkv.weight'"),
    ({"module.blocks.0.attn.to_q.weight": torch.zeros(48, 48)}, "both map to 'net.blocks.0.attn.qkv.weight'"),
])
def test_a_tensor_in_two_namings_at_once_is_an_error_not_a_silent_choice(tmp_path, extra, message):
    from safetensors.torch import save_file

    state = {**wild.diffusers_names(wild.ema1(), split=True), **extra}
    save_file(state, str(tmp_path / "both.safetensors"))
    assert message in _one_line_error(tmp_path / "both.safetensors")


def test_parts_of_unequal_width_do_not_fuse(tmp_path):
    from safetensors.torch import save_file

    state = wild.diffusers_names(wild.ema1(), split=True)
    state["blocks.0.attn.to_q.weight"] = state["blocks.0.attn.to_q.weight"][:40].contiguous()
    state["blocks.0.attn.to_v.weight"] = torch.cat([state["blocks.0.attn.to_v.weight"]] * 2)[:56].contiguous()
    save_file(state, str(tmp_path / "odd.safetensors"))
    assert "must have one shape and dtype" in _one_line_error(tmp_path / "odd.safetensors")


def test_a_hugging_face_cache_snapshot_of_links_reads(tmp_path):
    """snapshot_download lays a repository out as links into blobs/: links to regular files are followed."""
    source = wild.diffusers_folder(tmp_path / "source", shards=2)
    blobs, snapshot = tmp_path / "hub" / "blobs", tmp_path / "hub" / "snapshots" / "abc123"
    blobs.mkdir(parents=True)
    for i, file in enumerate(p for p in sorted(source.rglob("*")) if p.is_file()):
        blob = blobs / f"blob{i}"
        file.rename(blob)
        link = snapshot / file.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    assert_golden_ema1(jitckpt.load(snapshot, lazy=True))
    (snapshot / "model_index.json").unlink()
    os.mkfifo(snapshot / "model_index.json")  # never opened: a FIFO is not a regular file
    assert "none of the folder formats jitckpt reads" in _one_line_error(snapshot)


def test_one_set_of_weights_that_does_not_say_which_serves_any_ema(tmp_path):
    folder = wild.diffusers_folder(tmp_path / "unsaid", weights=None)
    ckpt = jitckpt.load(folder, lazy=True)
    assert ckpt.weights("ema1") is ckpt.model and ckpt.weights("raw") is ckpt.model
    result = CliRunner().invoke(app, ["inspect", str(folder)])
    assert "the file does not say whether raw or an EMA" in " ".join(result.stdout.split())
    result = CliRunner().invoke(app, ["export", str(folder), "-o", str(tmp_path / "exp"), "--no-samples"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "exp" / "config.json").read_text())
    assert config["provenance"]["weights"] is None  # not invented


@pytest.mark.parametrize("change, message", [
    ({"_class_name": "UNet2DModel"}, "not a config of diffusers' JiTTransformer2DModel"),
    ({"in_context_start": 3}, "in_context_start=3 is not below num_layers=3"),
])
def test_configs_of_other_models_or_impossible_ones_are_refused(tmp_path, change, message):
    folder = wild.diffusers_folder(tmp_path / "odd", config={**wild.GOLDEN_CONFIG, **change})
    assert message in _one_line_error(folder)


def test_a_model_index_of_another_pipeline_is_refused(tmp_path):
    folder = wild.diffusers_folder(tmp_path / "other")
    wild.write_json(folder / "model_index.json", {"_class_name": "DiTPipeline",
                                                  "transformer": ["diffusers", "DiTTransformer2DModel"]})
    assert "not diffusers' JiTTransformer2DModel" in _one_line_error(folder)
    (folder / "model_index.json").write_text("[1, 2]")
    assert "not a JSON object" in _one_line_error(folder)


def test_converting_weights_that_do_not_say_which_invents_no_provenance(tmp_path):
    plain = wild.plain_ema_pth(tmp_path / "jit.pth")
    for out in (tmp_path / "w.pth", tmp_path / "w.safetensors"):
        jitckpt.convert(plain, out, weights="ema2")
        assert "weights" not in jitckpt.load(out, lazy=True).extra  # still unknown, not "ema2"
