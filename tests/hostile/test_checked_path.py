"""Every consumer reads through the one checked path: the Lightning plugin, ``JiT.from_pretrained``, ``verify`` of
folders (config.json included), ``train --resume``; what they hand on is built from the schema."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import jitckpt
from jitckpt.cli import app
from jitckpt.cli.console import EXIT_DIFFERENT
from jitckpt.errors import DamagedError, FormatError, JiTCheckpointError
from jitckpt.formats.safetensors import read_header
from jitckpt.lightning import JiTCheckpointIO
from jitckpt.model.jit import JiT
from tests.craft import write_torch_zip
from tests.hostile.test_second_audit import GADGETS, ckpt_pickle


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("name", ["bytearray of a size", "a list that holds itself", "a tuple tree of 2**40 leaves",
                                  "OrderedDict state shadowing its methods", "NEWOBJ of slice"])
def test_the_plugin_raises_a_jitckpt_error_on_a_gadget(tmp_path, name):
    path = write_torch_zip(tmp_path / "x.ckpt", ckpt_pickle(GADGETS[name]))
    with pytest.raises(JiTCheckpointError):
        JiTCheckpointIO().load_checkpoint(path)


def test_the_plugin_hands_lightning_a_tree_built_from_the_schema(tmp_path, golden):
    ckpt = jitckpt.convert(golden, tmp_path / "g.ckpt")
    tree = torch.load(ckpt, weights_only=False)
    tree["pytorch-lightning_version"] = __import__("pathlib").PurePosixPath("/etc/passwd")
    torch.save(tree, tmp_path / "bad.ckpt")
    with pytest.raises(FormatError, match="pytorch-lightning_version is '/etc/passwd', not a Lightning version"):
        JiTCheckpointIO().load_checkpoint(tmp_path / "bad.ckpt")
    loaded = JiTCheckpointIO().load_checkpoint(ckpt)
    assert loaded["epoch"] == 1 and isinstance(loaded["state_dict"]["net.pos_embed"], torch.Tensor)


def test_from_pretrained_checks_checksums_and_the_architecture(tmp_path, golden):
    folder = tmp_path / "exp"
    assert run("export", golden, "-o", folder, "--no-samples").exit_code == 0
    net = JiT.from_pretrained(str(folder))
    assert torch.equal(net.pos_embed, jitckpt.load(golden).model_ema1["net.pos_embed"])
    weights = folder / "model.safetensors"
    ref = read_header(str(weights))[0]["blocks.0.mlp.w12.weight"]
    data = bytearray(weights.read_bytes())
    data[ref.offset + 3] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(DamagedError):
        JiT.from_pretrained(str(folder))


def test_verify_checks_an_export_folders_config_json(tmp_path, golden):
    for layout, config in (("hf", "config.json"), ("diffusers", "transformer/config.json")):
        folder = tmp_path / layout
        assert run("export", golden, "-o", folder, "--layout", layout, "--no-samples").exit_code == 0
        assert run("verify", folder).exit_code == 0
        text = json.loads((folder / config).read_text())
        text["in_context_start"] = 2
        (folder / config).write_text(json.dumps(text))
        result = run("verify", folder)
        assert result.exit_code in (EXIT_DIFFERENT, 2), result.output
        assert "config.json" in result.output


def test_a_config_nested_too_deep_is_one_line(tmp_path, golden):
    folder = tmp_path / "exp"
    assert run("export", golden, "-o", folder, "--no-samples").exit_code == 0
    (folder / "config.json").write_text('{"jitckpt_export": 1, "x": ' + "[" * 200_000 + "]" * 200_000 + "}")
    for command in ("inspect", "verify"):
        result = run(command, folder)
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output


def test_train_resume_of_a_damaged_file_leaves_no_output_folder(tmp_path, golden):
    import numpy as np
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "data" / "train" / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(tmp_path / "data" / "train" / cls / f"{i}.png")
    damaged = tmp_path / "damaged.pth"
    data = bytearray(golden.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside a tensor's bytes: found only when the tensors are read
    damaged.write_bytes(bytes(data))
    result = run("train", "--resume", damaged, "--data_path", tmp_path / "data", "--output-dir", tmp_path / "out",
                 "--epochs", "3", "--batch_size", "4", "--num-workers", "0", "--accelerator", "cpu", "--logger", "none")
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "out").exists()
