import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import jitckpt
from jitckpt.cli import app
from jitckpt.evaluation.evaluate import evaluate
from jitckpt.evaluation.inception import extract, load_extractor
from jitckpt.evaluation.sampling import SamplingSettings, quantize
from jitckpt.evaluation.stats import fid, image_files, iter_image_batches, load_stats, stats_of
from tests.helpers import GOLDEN, load_golden_torch

runner = CliRunner()
FAST = dict(num_images=20, batch_size=10, steps=2)  # 2 images per class of the 10


@pytest.fixture
def ref_dir(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "ref"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_in_memory_scores_equal_png_route(tmp_path, inception_weights, ref_dir, no_network):
    pngs = tmp_path / "pngs"
    result = evaluate(GOLDEN, SamplingSettings(**FAST), inception_weights, ref_dir=ref_dir, save_images=pngs)
    assert sorted(p.name for p in pngs.iterdir())[:2] == ["00000.png", "00001.png"] and len(list(pngs.iterdir())) == 20
    extractor = load_extractor(inception_weights)
    pool, logits = zip(*(extract(extractor, b) for b in iter_image_batches(image_files(pngs), None, 8)))
    ref_pool = torch.cat([extract(extractor, b)[0] for b in iter_image_batches(image_files(ref_dir), 16, 8)])
    png_fid = fid(stats_of(torch.cat(pool)), stats_of(ref_pool))
    assert result["fid"] > 0 and abs(result["fid"] - png_fid) < 1e-3
    assert result["inception_score_mean"] > 0


def test_fid_against_own_statistics_is_zero_and_positive_otherwise(tmp_path, inception_weights, ref_dir):
    stats_path = tmp_path / "stats.npz"
    result = runner.invoke(app, ["fid-stats", str(ref_dir), "-o", str(stats_path), "--inception-weights",
                                 str(inception_weights)])
    assert result.exit_code == 0, result.output
    with open(stats_path, "rb") as f:  # the LTH14 format
        data = np.load(f)
        assert data["mu"].shape == (2048,) and data["sigma"].shape == (2048, 2048)
    extractor = load_extractor(inception_weights)
    own = torch.cat([extract(extractor, b)[0] for b in iter_image_batches(image_files(ref_dir), None, 8)])
    assert abs(fid(stats_of(own), load_stats(stats_path))) < 1e-3
    other = evaluate(GOLDEN, SamplingSettings(**FAST), inception_weights, fid_stats=stats_path)
    assert other["fid"] > 1e-2


@pytest.mark.parametrize("ema,section", [("1", "model_ema1"), ("2", "model_ema2"), ("raw", "model")])
def test_ema_choice_samples_from_that_section(tmp_path, ema, section):
    out = tmp_path / "imgs"
    result = runner.invoke(app, ["eval", str(GOLDEN), "--ema", ema, "--num-images", "10", "--batch-size", "10",
                                 "--steps", "2", "--save-images", str(out), "--json", str(tmp_path / "r.json")]
                           + ["--inception-weights", "/nonexistent"])
    assert result.exit_code == 2 and "no such file" in result.stderr  # inputs checked before sampling
    evaluate(GOLDEN, SamplingSettings(weights={"1": "ema1", "2": "ema2", "raw": "raw"}[ema], num_images=10,
                                      batch_size=10, steps=2), score=False, save_images=out)
    golden = jitckpt.load(GOLDEN)
    from jitckpt.model.denoiser import Denoiser, DiffusionConfig

    by_hand = Denoiser(golden.arch, DiffusionConfig.from_args({**golden.args, "num_sampling_steps": 2}))
    by_hand.load_state_dict(load_golden_torch()[section])
    generator = torch.Generator().manual_seed(hash((0, 0)) & (2**63 - 1))
    expected = quantize(by_hand.eval().generate(torch.arange(10), generator))
    first = torch.from_numpy(np.array(Image.open(out / "00003.png"))).permute(2, 0, 1)
    assert torch.equal(first, expected[3])


def test_same_images_on_one_and_two_processes(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    settings = SamplingSettings(num_images=30, batch_size=10, steps=2)
    evaluate(GOLDEN, settings, score=False, save_images=one)
    evaluate(GOLDEN, settings, score=False, save_images=two, devices=2, accelerator="cpu")
    names = sorted(p.name for p in one.iterdir())
    assert len(names) == 30 and names == sorted(p.name for p in two.iterdir())
    assert all((one / n).read_bytes() == (two / n).read_bytes() for n in names)


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line(result, needle):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr


def test_errors_are_one_line(tmp_path, inception_weights, monkeypatch):
    monkeypatch.delenv("JITCKPT_INCEPTION_WEIGHTS", raising=False)
    assert_one_line(run("eval", GOLDEN, "--num-images", "10"), "no Inception weights")
    np.savez(tmp_path / "nomu.npz", m=np.zeros(3))
    assert_one_line(run("eval", GOLDEN, "--num-images", "10", "--fid-stats", tmp_path / "nomu.npz",
                        "--inception-weights", inception_weights), "no 'mu' and 'sigma'")
    np.savez(tmp_path / "dim.npz", mu=np.zeros(64), sigma=np.zeros((64, 64)))
    assert_one_line(run("eval", GOLDEN, "--num-images", "10", "--fid-stats", tmp_path / "dim.npz",
                        "--inception-weights", inception_weights), "expected (2048,)")
    assert_one_line(run("eval", GOLDEN, "--num-images", "15", "--inception-weights", inception_weights),
                    "multiple of the class count 10")
    (tmp_path / "empty").mkdir()
    assert_one_line(run("eval", GOLDEN, "--num-images", "10", "--ref-dir", tmp_path / "empty",
                        "--inception-weights", inception_weights), "holds no images")
    assert_one_line(run("fid-stats", tmp_path / "empty", "-o", tmp_path / "s.npz",
                        "--inception-weights", inception_weights), "holds no images")


def test_ema2_missing_is_an_error_not_a_fallback(tmp_path):
    golden = load_golden_torch()
    del golden["model_ema2"]
    torch.save(golden, tmp_path / "no-ema2.pth")
    assert_one_line(run("eval", tmp_path / "no-ema2.pth", "--ema", "2", "--num-images", "10"), "no model_ema2")
    assert_one_line(run("sample", tmp_path / "no-ema2.pth", "--ema", "2", "-o", tmp_path / "g.png"), "no model_ema2")


def test_sample_grid(tmp_path):
    result = run("sample", GOLDEN, "--classes", "1,2,3", "-o", tmp_path / "grid.png", "--steps", "2")
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "grid.png").size == (32, 32)  # 2 x 2 tiles of 16 px


def test_eval_cli_table_and_json(tmp_path, inception_weights, ref_dir):
    result = run("eval", GOLDEN, "--num-images", "20", "--batch-size", "10", "--steps", "2", "--ref-dir", ref_dir,
                 "--inception-weights", inception_weights, "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["weights"] == "ema1" and saved["fid"] > 0 and "FID" in result.stdout


def test_sweep_over_ema_and_cfg_prints_one_table(tmp_path, inception_weights, ref_dir):
    result = run("eval", GOLDEN, "--sweep", "--ema", "1,2", "--cfg", "1.0,2.0", "--num-images", "10",
                 "--batch-size", "10", "--steps", "1", "--ref-dir", ref_dir, "--inception-weights", inception_weights,
                 "--json", tmp_path / "sweep.json")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "sweep.json").read_text())
    assert [(r["weights"], r["cfg"]) for r in rows] == [("ema1", 1.0), ("ema1", 2.0), ("ema2", 1.0), ("ema2", 2.0)]
    assert "sweep over EMA and CFG" in result.stdout and all(r["fid"] > 0 for r in rows)
    assert_one_line(run("eval", GOLDEN, "--ema", "1,2", "--num-images", "10"), "need --sweep")


def test_weights_only_export_samples_with_its_own_weights(tmp_path):
    export = jitckpt.convert(GOLDEN, tmp_path / "ema2.safetensors", weights="ema2")
    from_export, from_full = tmp_path / "a", tmp_path / "b"
    evaluate(export, SamplingSettings(weights="ema2", num_images=10, batch_size=10, steps=1), score=False,
             save_images=from_export)
    evaluate(GOLDEN, SamplingSettings(weights="ema2", num_images=10, batch_size=10, steps=1), score=False,
             save_images=from_full)
    assert all((from_export / n.name).read_bytes() == n.read_bytes() for n in from_full.iterdir())
    assert_one_line(run("eval", export, "--ema", "1", "--num-images", "10"), "holds only the ema2 weights")


def test_nothing_to_score_stops_before_generating(tmp_path, inception_weights, monkeypatch):
    state = torch.load(inception_weights, weights_only=True)
    state["fc.weight"].zero_()  # FID-only weights (as the fid-helper conversion gives): no Inception Score
    fid_only = tmp_path / "fid-only.pth"
    torch.save(state, fid_only)
    generated = []
    monkeypatch.setattr("jitckpt.evaluation.evaluate.generate_batches", lambda *a, **k: generated.append(1) or iter(()))
    result = runner.invoke(app, ["eval", str(GOLDEN), "--num-images", "10", "--batch-size", "10", "--steps", "1",
                                 "--inception-weights", str(fid_only)])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "nothing to score" in result.stderr and "--fid-stats" in result.stderr and not generated


def test_a_run_without_reference_statistics_says_fid_is_not_computed(tmp_path, inception_weights, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no fid_stats/ here: nothing to find where the original looks
    said = []
    result = evaluate(GOLDEN, SamplingSettings(**FAST), inception_weights, on_warning=said.append)
    assert result.get("fid") is None and result["inception_score_mean"] is not None
    assert any("FID is not computed, only the Inception Score" in line for line in said), said
