"""Bad input: one clear line, a non-zero exit, and nothing on disk harmed."""

import os
import pickle
import zipfile

import pytest
import torch
from typer.testing import CliRunner

import jitckpt
from jitckpt.cli import EXIT_ERROR, app
from tests.helpers import load_golden_torch, sha256

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def assert_one_line_error(result, *needles):
    assert result.exit_code == EXIT_ERROR, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_empty_file(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    assert_one_line_error(run("inspect", tmp_path / "empty.pth"), "file is empty")


@pytest.mark.parametrize("tenth", range(1, 10))
def test_golden_cut_at_every_tenth(golden, tmp_path, tenth):
    data = golden.read_bytes()
    cut = tmp_path / f"cut{tenth}.pth"
    cut.write_bytes(data[: len(data) * tenth // 10])
    before = sha256(cut)
    assert_one_line_error(run("inspect", cut), "corrupt or truncated")
    assert_one_line_error(run("convert", cut, "-o", tmp_path / "out.ckpt"), "corrupt or truncated")
    assert not (tmp_path / "out.ckpt").exists() and sha256(cut) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["checkpoint-last.pth", cut.name])


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.ckpt"
    path.write_bytes(os.urandom(4096))
    assert_one_line_error(run("inspect", path), "not a checkpoint jitckpt knows")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_calling_os_system_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"model": _Exploit(marker)}, protocol=2)
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as zf:  # a torch zip whose pickle reduces through os.system
        zf.writestr("evil/data.pkl", payload)
        zf.writestr("evil/byteorder", "little")
        zf.writestr("evil/version", "3\n")
    line = assert_one_line_error(run("inspect", path), "refused", "'posix.system'")
    assert "nothing in the file was run" in line
    assert_one_line_error(run("convert", path, "-o", tmp_path / "x.ckpt"), "refused")
    bare = tmp_path / "evil.pkl"  # and as a bare pickle: never unpickled at all
    bare.write_bytes(payload)
    assert_one_line_error(run("inspect", bare), "not a checkpoint")
    assert not marker.exists()


def test_plain_state_dict_is_a_weights_only_checkpoint(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(load_golden_torch()["model"], path)
    info = jitckpt.inspection.summary.summarize(path)
    assert info["sections"] == {"raw": True, "ema1": False, "ema2": False} and info["optimizer"] is None
    result = run("convert", path, "-o", tmp_path / "weights.safetensors")
    assert result.exit_code == 0, result.output


def test_checkpoint_without_ema2_is_read_and_never_filled(tmp_path):
    golden = load_golden_torch()
    del golden["model_ema2"]
    path = tmp_path / "no-ema2.pth"
    torch.save(golden, path)
    info = jitckpt.inspection.summary.summarize(path)
    assert info["sections"] == {"raw": True, "ema1": True, "ema2": False}
    assert "EMA 2           absent" in run("inspect", path).output.replace("\u2502", "")
    for target in ("x.ckpt", "x.safetensors", "x.pth"):
        assert run("convert", path, "-o", tmp_path / target).exit_code == 0
        assert jitckpt.load(tmp_path / target, lazy=True).model_ema2 is None
    assert_one_line_error(run("convert", path, "-o", tmp_path / "e2.safetensors", "--weights", "ema2", "--weights-only"),
                          "no model_ema2")


def test_ema_with_other_shapes_names_the_key(tmp_path):
    golden = load_golden_torch()
    golden["model_ema1"]["net.blocks.0.mlp.w3.weight"] = torch.zeros(2, 2)
    path = tmp_path / "bad-ema.pth"
    torch.save(golden, path)
    assert_one_line_error(run("inspect", path), "model_ema1", "'net.blocks.0.mlp.w3.weight'", "(2, 2)")


def test_missing_path(tmp_path):
    assert_one_line_error(run("inspect", tmp_path / "nope.pth"), "no such file")
    assert_one_line_error(run("convert", tmp_path / "nope.pth"), "no such file")


def test_output_folder_that_does_not_exist(golden, tmp_path):
    assert_one_line_error(run("convert", golden, "-o", tmp_path / "missing" / "x.ckpt"), "does not exist")


def test_existing_output_is_not_overwritten_without_force(golden, tmp_path):
    target = tmp_path / "taken.ckpt"
    target.write_bytes(b"precious")
    line = assert_one_line_error(run("convert", golden, "-o", target), "already exists; pass --force to overwrite")
    assert "force=True" not in line
    assert target.read_bytes() == b"precious"
    result = run("convert", golden, "-o", target, "--force")
    assert result.exit_code == 0 and jitckpt.detect_format(target) == "ckpt"


def test_failed_conversion_leaves_existing_output_intact(tmp_path):
    golden = load_golden_torch()
    golden["model_ema1"]["net.pos_embed"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save(golden, bad)
    target = tmp_path / "keep.ckpt"
    target.write_bytes(b"old")
    assert run("convert", bad, "-o", target, "--force").exit_code == EXIT_ERROR
    assert target.read_bytes() == b"old"


def test_debug_shows_traceback(tmp_path):
    result = run("--debug", "inspect", tmp_path / "nope.pth")
    assert result.exit_code != 0 and isinstance(result.exception, jitckpt.errors.FormatError)
