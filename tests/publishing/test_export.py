"""``jitckpt export``: a folder inference users load without jitckpt's training code."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from typer.testing import CliRunner

import jitckpt
from jitckpt.cli import app
from jitckpt.errors import JiTCheckpointError, OutputError
from jitckpt.evaluation.sampling import SamplingSettings, build_denoiser
from jitckpt.publishing.export import config_of, export
from jitckpt.model import from_pretrained
from jitckpt.layouts.arch import _OFFICIAL
from jitckpt.model.protocol import resolve_sampling
from tests.released import official_released

WITHOUT_JITCKPT = r"""
import json, sys, torch
from safetensors.torch import load_file
folder = sys.argv[1]
assert "jitckpt" not in sys.modules
weights = load_file(f"{folder}/model.safetensors")
config = json.load(open(f"{folder}/config.json"))
torch.save(weights, sys.argv[2])
print(json.dumps({k: config[k] for k in ("depth", "hidden_size", "num_heads", "patch_size", "bottleneck_dim",
                                        "in_context_len", "in_context_start", "num_classes", "input_size")}))
"""


@pytest.fixture
def exported(golden, tmp_path):
    return export(golden, tmp_path / "export", "ema1", samples=False)[0]


def test_the_weights_and_config_load_without_jitckpt(golden, exported, tmp_path):
    done = subprocess.run([sys.executable, "-c", WITHOUT_JITCKPT, str(exported), str(tmp_path / "w.pt")],
                          capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": ""})
    config = json.loads(done.stdout)
    arch = jitckpt.load(golden, lazy=True).arch
    assert config == {**{k: v for k, v in arch.to_dict().items() if k in config}, "input_size": arch.img_size}
    weights = torch.load(tmp_path / "w.pt")
    ema1 = jitckpt.load(golden).model_ema1
    assert sorted(weights) == sorted(k.removeprefix("net.") for k in ema1)  # the network's own keys
    assert all(torch.equal(weights[k.removeprefix("net.")], v) for k, v in ema1.items())


def test_from_pretrained_samples_what_the_original_checkpoint_samples(golden, exported):
    model = from_pretrained(exported)
    original = build_denoiser(jitckpt.load(golden, lazy=True), SamplingSettings("ema1"))
    labels = torch.tensor([1, 2, 3])
    a = model.generate(labels, torch.Generator().manual_seed(0))
    b = original.generate(labels, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_an_export_reads_as_one_set_of_weights(exported):
    ckpt = jitckpt.load(exported, lazy=True)
    assert jitckpt.detect_format(exported) == "export"
    assert ckpt.optimizer is None and ckpt.model_ema2 is None
    with pytest.raises(JiTCheckpointError, match="holds only the ema1 weights of its source, not ema2"):
        ckpt.weights("ema2")


def test_the_model_card_header_parses_and_its_scores_are_the_evals(golden, tmp_path):
    result = {"weights": "ema1", "fid": 12.3456, "inception_score_mean": 98.7654, "inception_score_std": 1.2345,
              "num_images": 50000, "seed": 0, "sampling": {"method": "heun", "steps": 50, "cfg": 2.4,
                                                           "interval_min": 0.1, "interval_max": 1.0,
                                                           "noise_scale": 1.0},
              "reference": {"fid_stats": "jit_in256_stats.npz", "sha256": "ab" * 32},
              "inception_weights": {"path": "pt_inception.pth", "sha256": "cd" * 32}}
    (tmp_path / "result.json").write_text(json.dumps(result))
    folder = export(golden, tmp_path / "card", "ema1", eval_json=tmp_path / "result.json", license="mit",
                    samples=False)[0]
    card = (folder / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["license"] == "mit" and header["library_name"] == "jitckpt" and "pipeline_tag" in header
    table = dict(line.strip("|").split("|")[:2] for line in card.splitlines()
                 if line.startswith("| ") and not line.startswith("| ---") and line != "| | |")
    table = {k.strip(): v.strip() for k, v in table.items()}
    assert float(table["FID"]) == result["fid"] and float(table["Inception Score"]) == result["inception_score_mean"]
    assert int(table["images"]) == 50000 and float(table["CFG"]) == 2.4
    assert table["reference SHA-256"] == "ab" * 32 and table["Inception SHA-256"] == "cd" * 32
    with pytest.raises(JiTCheckpointError, match="scores the ema2 weights, not ema1"):
        (tmp_path / "other.json").write_text(json.dumps({**result, "weights": "ema2"}))
        export(golden, tmp_path / "card2", "ema1", eval_json=tmp_path / "other.json", samples=False)


@pytest.mark.parametrize("variant", sorted(_OFFICIAL))
@pytest.mark.parametrize("img_size", [256, 512])
def test_every_official_variant_gets_its_variant_and_protocol(tmp_path, variant, img_size):
    path = official_released(tmp_path / "released.pth", variant, img_size)
    ckpt = jitckpt.load(path, lazy=True)
    config = config_of(ckpt, "ema1", resolve_sampling(ckpt.arch, ckpt.args).settings(), {"file": "x", "sha256": None})
    assert config["variant"] == variant and config["input_size"] == img_size
    cfg = {"JiT-B/16": 3.0, "JiT-B/32": 3.0, "JiT-L/16": 2.4, "JiT-L/32": 2.5, "JiT-H/16": 2.2, "JiT-H/32": 2.3}
    assert config["sampling"]["cfg"] == cfg[variant] and config["sampling"]["steps"] == 50
    assert config["sampling"]["noise_scale"] == (1.0 if img_size == 256 else 2.0)


def test_a_real_export_of_an_official_variant(tmp_path):
    folder = export(official_released(tmp_path / "b32.pth", "JiT-B/32", 256), tmp_path / "b32", samples=False)[0]
    config = json.loads((folder / "config.json").read_text())
    assert config["variant"] == "JiT-B/32" and config["sampling"]["cfg"] == 3.0
    assert jitckpt.load(folder, lazy=True).arch.variant == "JiT-B/32"


def test_existing_folders_need_force_and_a_failed_export_leaves_nothing(golden, exported, monkeypatch, tmp_path):
    with pytest.raises(OutputError, match="already exists; pass force=True"):
        export(golden, exported, samples=False)
    from jitckpt.publishing import export as module

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(module, "write_tensors", broken)
    with pytest.raises(OSError):
        export(golden, tmp_path / "half", samples=False)
    assert not (tmp_path / "half").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_all_emas_and_the_command_line(golden, tmp_path):
    result = CliRunner().invoke(app, ["export", str(golden), "-o", str(tmp_path / "all"), "--all-emas"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["ema1", "ema2", "raw"]
    assert sorted(p.name for p in (tmp_path / "all" / "ema2").iterdir()) == [
        "README.md", "config.json", "model.safetensors", "samples.png"]
    assert json.loads((tmp_path / "all" / "raw" / "config.json").read_text())["provenance"]["weights"] == "raw"
    ema2 = jitckpt.load(golden).model_ema2
    assert all(torch.equal(jitckpt.load(tmp_path / "all" / "ema2").model[k], v) for k, v in ema2.items())


def test_the_network_class_loads_the_folder_as_the_hub_mixin_would(golden, exported):
    """JiT.from_pretrained(local folder): the call huggingface_hub's mixin offers, without the package."""
    from jitckpt.model.jit import JiT

    net = JiT.from_pretrained(str(exported))
    assert net.arch == jitckpt.load(golden, lazy=True).arch
    ema1 = jitckpt.load(golden).model_ema1
    assert all(torch.equal(net.state_dict()[k.removeprefix("net.")], v) for k, v in ema1.items())
