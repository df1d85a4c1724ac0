"""The jitckpt command line on the golden checkpoint."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import jitckpt
from jitckpt.cli import EXIT_DIFFERENT, EXIT_ERROR, app
from jitckpt.errors import OutputError, in_cli_terms

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
    code = ("import sys; from jitckpt.inspection.summary import summarize; "
            f"summarize({str(golden)!r}); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


COMMANDS = ["inspect", "convert", "verify", "train", "eval", "fid-stats", "fid-helper-weights", "fetch-inception", "sample",
            "export", "example"]


def test_version_prints_the_version_and_exits_0():
    result = run("--version")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"jitckpt {jitckpt.__version__}\n"


@pytest.mark.parametrize("command", [[]] + [[c] for c in COMMANDS])
def test_h_is_help_for_every_command(command):
    short, long = run(*command, "-h"), run(*command, "--help")
    assert short.exit_code == 0 == long.exit_code, short.output
    assert short.stdout == long.stdout and short.stdout.startswith("Usage: ")


@pytest.mark.parametrize("command", [[]] + [[c] for c in COMMANDS])
def test_boolean_flags_show_as_flags(command):
    shown = run(*command, "--help").stdout
    assert "<bool>" not in shown and "-h, --help  " in shown
    flags = {"inspect": ["--json  "], "convert": ["--weights-only  ", "--force  ", "--drop-optimizer  "],
             "eval": ["--sweep  "], "": ["--debug  ", "--version  "]}
    for flag in flags.get(command[0] if command else "", []):
        assert flag in shown, shown


def test_a_flag_takes_no_value(golden):
    assert run("inspect", golden, "--json").exit_code == 0
    assert run("--debug", "inspect", golden, "--json").exit_code == 0


def test_convert_refuses_a_suffix_it_does_not_know_unless_to_names_the_format(golden, tmp_path):
    target = tmp_path / "x.bin"
    result = run("convert", golden, "-o", target)
    assert result.exit_code == EXIT_ERROR and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: cannot tell the format to write from 'x.bin'")
    assert "--to pth, ckpt, safetensors or dcp" in result.stderr and "to='pth'" not in result.stderr
    assert not target.exists() and list(tmp_path.iterdir()) == [golden]
    with pytest.raises(OutputError, match="pass to='pth', 'ckpt', 'safetensors' or 'dcp'"):
        jitckpt.convert(golden, target)
    result = run("convert", golden, "-o", target, "--to", "pth")
    assert result.exit_code == 0, result.output
    assert jitckpt.detect_format(target) == "pth"
    assert run("convert", golden, "-o", tmp_path / "x.pt").exit_code == 0  # torch's own suffix: the original format
    assert jitckpt.detect_format(tmp_path / "x.pt") == "pth"


def test_remedies_are_said_in_each_users_terms(golden, tmp_path):
    taken = tmp_path / "taken.ckpt"
    taken.write_bytes(b"precious")
    result = run("convert", golden, "-o", taken)
    assert result.stderr == f"error: {str(taken)!r} already exists; pass --force to overwrite it\n"
    with pytest.raises(OutputError) as refused:
        jitckpt.convert(golden, taken)
    assert str(refused.value) == f"{str(taken)!r} already exists; pass force=True to overwrite it"
    assert in_cli_terms("pass drop_optimizer=True or force=True") == "pass --drop-optimizer or --force"


def test_convert_says_what_the_written_file_holds(golden, tmp_path):
    import torch

    bare = tmp_path / "bare.pth"
    torch.save(dict(jitckpt.load(golden).model), bare)  # a plain state dict: the weights and nothing else
    assert "(original JiT .pth, model weights only," in run("convert", bare, "-o", tmp_path / "a.pth").stdout
    full = run("convert", golden, "-o", tmp_path / "b.pth").stdout
    assert "(original JiT .pth, full training state," in full
    dropped = run("convert", golden, "-o", tmp_path / "c.pth", "--drop-optimizer").stdout
    assert "training state without the optimizer" in dropped
