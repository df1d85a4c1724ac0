"""``eval`` and ``sample`` on released-layout files: the settings used, where each came from, and checksums."""

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import jitckpt
from jitckpt.cli import app
from jitckpt.evaluation.evaluate import evaluate
from jitckpt.evaluation.sampling import (SamplingSettings, build_denoiser, quantize, sampler_config,
                                         sampling_plan)
from jitckpt.model.denoiser import Denoiser, DiffusionConfig
from tests.released import official_released, tiny_released

runner = CliRunner()
DEFAULTS = {"method": "heun", "steps": 50, "cfg": 1.0, "interval_min": 0.0, "interval_max": 1.0, "noise_scale": 1.0}


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def stats(tmp_path):
    path = tmp_path / "ref.npz"
    np.savez_compressed(path, mu=np.zeros(2048), sigma=np.eye(2048))
    return path


def test_eval_json_records_the_default_settings_their_sources_and_checksums(tmp_path, inception_weights, stats,
                                                                           monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # the table's long rows (hashes) on one line each
    path = tiny_released(tmp_path / "tiny.pth")
    result = run("eval", path, "--ema", "2", "--num-images", "10", "--batch-size", "10", "--steps", "1",
                 "--fid-stats", stats, "--inception-weights", inception_weights, "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["weights"] == "ema2" and saved["num_images"] == 10 and saved["fid"] > 0
    assert saved["sampling"] == {**DEFAULTS, "steps": 1, "source": "defaults",
                                 "sources": {**{k: "defaults" for k in DEFAULTS}, "steps": "flag"}}
    assert saved["protocol"] is None
    assert saved["reference"] == {"fid_stats": str(stats), "sha256": sha256(stats)}
    assert saved["inception_weights"] == {"path": str(inception_weights), "sha256": sha256(inception_weights)}
    (warning,) = saved["warnings"]
    assert "original training defaults" in warning and "cfg 1.0" in warning and "steps 50" not in warning
    assert result.stderr.count("warning:") == 1 and "original training defaults" in result.stderr
    for row in ("EMA 2", "heun, 1 step, cfg 1.0 in [0.0, 1.0], noise scale 1.0",
                "the original training defaults (steps from the command line)",
                f"(sha256 {sha256(stats)})", f"(sha256 {sha256(inception_weights)})"):
        assert row in result.stdout, row


def test_sweep_warns_once_and_records_each_run(tmp_path, inception_weights, stats):
    path = tiny_released(tmp_path / "tiny.pth")
    result = run("eval", path, "--sweep", "--ema", "1,2", "--cfg", "1.0,2.0", "--num-images", "10",
                 "--batch-size", "10", "--steps", "1", "--fid-stats", stats, "--inception-weights",
                 inception_weights, "--json", tmp_path / "s.json")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "s.json").read_text())
    assert [(r["weights"], r["sampling"]["cfg"], r["sampling"]["sources"]["cfg"]) for r in rows] == [
        ("ema1", 1.0, "flag"), ("ema1", 2.0, "flag"), ("ema2", 1.0, "flag"), ("ema2", 2.0, "flag")]
    assert all(r["reference"]["sha256"] == sha256(stats) for r in rows)
    assert result.stderr.count("warning:") == 1 and "settings from" in result.stdout


def test_flags_override_and_are_what_the_sampler_uses(tmp_path):
    path = tiny_released(tmp_path / "tiny.pth")
    settings = SamplingSettings(weights="ema1", num_images=10, batch_size=10, steps=1, cfg=2.5, interval_min=0.2,
                                noise_scale=0.5)
    out = tmp_path / "imgs"
    with pytest.warns(UserWarning, match="original training defaults"):
        result = evaluate(path, settings, score=False, save_images=out)
    assert result["sampling"]["sources"] == {"method": "defaults", "steps": "flag", "cfg": "flag",
                                             "interval_min": "flag", "interval_max": "defaults", "noise_scale": "flag"}
    assert (result["noise_scale"], result["cfg"], result["interval"]) == (0.5, 2.5, [0.2, 1.0])
    assert result["reference"] is None and result["inception_weights"] is None
    ckpt = jitckpt.load(path)
    by_hand = Denoiser(ckpt.arch, DiffusionConfig(num_sampling_steps=1, cfg=2.5, interval_min=0.2, noise_scale=0.5))
    by_hand.load_state_dict(ckpt.model_ema1)
    generator = torch.Generator().manual_seed(hash((0, 0)) & (2**63 - 1))
    expected = quantize(by_hand.eval().generate(torch.arange(10), generator))
    saved = torch.from_numpy(np.array(Image.open(out / "00004.png"))).permute(2, 0, 1)
    assert torch.equal(saved, expected[4])
    assert build_denoiser(ckpt, settings).config == by_hand.config  # every flag reaches the sampler
    # the tiny model's guidance barely moves its images; its noise scale does: the flag took effect
    by_hand.config = replace(by_hand.config, noise_scale=1.0)
    generator = torch.Generator().manual_seed(hash((0, 0)) & (2**63 - 1))
    assert not torch.equal(expected, quantize(by_hand.generate(torch.arange(10), generator)))


def test_flags_override_the_protocol_of_an_official_file(tmp_path):
    path = official_released(tmp_path / "checkpoint-last.pth", "JiT-B/32", 512)
    ckpt = jitckpt.load(path, lazy=True)
    plan = sampling_plan(ckpt, SamplingSettings(cfg=1.5, steps=3))
    assert (plan.cfg, plan.steps, plan.noise_scale, plan.interval_min, plan.source) == (1.5, 3, 2.0, 0.1, "protocol")
    config = sampler_config(ckpt, SamplingSettings(noise_scale=1.0))
    assert (config.cfg, config.noise_scale, config.num_sampling_steps) == (3.0, 1.0, 50)
    assert sampler_config(ckpt, SamplingSettings()) == DiffusionConfig(cfg=3.0, noise_scale=2.0, interval_min=0.1)


def test_sample_says_which_settings_it_used(tmp_path):
    path = tiny_released(tmp_path / "tiny.pth")
    result = run("sample", path, "--classes", "1,2", "-o", tmp_path / "g.png", "--steps", "1", "--noise-scale", "0.5")
    assert result.exit_code == 0, result.output
    assert "heun, 1 step, cfg 1.0 in [0.0, 1.0], noise scale 0.5" in result.stdout
    assert "steps, noise_scale from the command line" in result.stdout
    assert result.stderr.count("warning:") == 1 and "original training defaults" in result.stderr
