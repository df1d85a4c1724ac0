"""The jitckpt command line on the golden checkpoint."""

import json
import subprocess
import sys

from typer.testing import CliRunner

import jitckpt
from jitckpt.cli import EXIT_DIFFERENT, app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_inspect_json_names_dimensions_as_the_jit_constructor(golden):
    result = run("inspect", golden, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["format"] == "pth" and info["schema_version"] == 0 and info["epoch"] == 1
    assert info["global_step"] == 6 and info["variant"] is None
    expected = {"depth": 3, "hidden_size": 48, "num_heads": 4, "patch_size": 4, "bottleneck_dim": 8,
                "in_context_len": 4, "in_context_start": 1, "num_classes": 10, "img_size": 16}
    assert {k: info[k] for k in expected} == expected
    assert info["sections"] == {"raw": True, "ema1": True, "ema2": True}
    assert info["optimizer"]["step"] == 6 and info["dtypes"]["raw"] == ["float32"]
    assert info["args"]["model"] == "JiT-T/4" and info["num_params"] == 151224


def test_inspect_table(golden):
    result = run("inspect", golden)
    assert result.exit_code == 0
    for text in ("epoch", "1 (resumes at 2)", "AdamW, step 6", "151,224", "JiT-T/4"):
        assert text in result.stdout


def test_convert_defaults_pth_to_ckpt_and_back(golden, tmp_path):
    result = run("convert", golden)
    assert result.exit_code == 0, result.output
    ckpt = golden.with_suffix(".ckpt")
    assert f"wrote {ckpt}" in result.stdout and jitckpt.detect_format(ckpt) == "ckpt"
    back = tmp_path / "back.pth"
    assert run("convert", ckpt, "-o", back).exit_code == 0 and jitckpt.detect_format(back) == "pth"
    default_pth = run("convert", ckpt)  # from .ckpt the default is the original .pth: golden's name exists
    assert default_pth.exit_code == 2 and "already exists" in default_pth.stderr


def test_convert_weights_only_export(golden, tmp_path):
    out = tmp_path / "ema.safetensors"
    result = run("convert", golden, "-o", out, "--weights", "ema1", "--weights-only")
    assert result.exit_code == 0 and "ema1 weights only" in result.stdout
    info = json.loads(run("inspect", out, "--json").stdout)
    assert info["weights"] == "ema1" and info["sections"]["ema1"] is False and info["optimizer"] is None
    assert run("convert", golden, "--weights", "ema1").exit_code == 2  # --weights without --weights-only


def test_verify_same_across_formats(golden, tmp_path):
    st = jitckpt.convert(golden, tmp_path / "x.safetensors")
    result = run("verify", golden, st)
    assert result.exit_code == 0 and result.stdout.startswith("same")


def test_verify_finds_one_element_of_one_ema(golden, tmp_path):
    ckpt = jitckpt.load(golden)
    ckpt.model_ema2["net.blocks.1.attn.qkv.weight"][5, 7] += 1e-3
    changed = jitckpt.save(ckpt, tmp_path / "changed.ckpt")
    result = run("verify", golden, changed)
    assert result.exit_code == EXIT_DIFFERENT
    assert result.stdout.startswith("different")
    assert "model_ema2/net.blocks.1.attn.qkv.weight: values differ (1 element(s), first at flat index 247" in result.stdout


def test_help_and_console_script_do_not_import_torch():
    code = "import sys; from jitckpt.cli import app; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    result = subprocess.run([sys.executable, "-m", "jitckpt", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "convert" in result.stdout and "verify" in result.stdout


def test_inspect_does_not_import_torch(golden):
    code = ("import sys; from jitckpt.summary import summarize; "
            f"summarize({str(golden)!r}); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_example_runs_the_main_job_on_the_bundled_checkpoint(tmp_path):
    result = run("example", tmp_path / "ex")
    assert result.exit_code == 0, result.output
    assert result.stdout.rstrip().splitlines()[-1].startswith("same: 339 tensors")
    assert {p.name for p in (tmp_path / "ex").iterdir()} == {
        "checkpoint-last.pth", "checkpoint-last.ckpt", "checkpoint-last.safetensors", "roundtrip.pth"}
    again = run("example", tmp_path / "ex")
    assert again.exit_code == 2 and "already exists" in again.stderr
