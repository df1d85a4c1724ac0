"""The format contract: every registered module satisfies it, and a new format (a toy module here) shows up in
detection, in errors and in the command line's help with no other edit than its row and its registry entry."""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

import jitckpt
from jitckpt import formats
from jitckpt.formats import table as format_table
from jitckpt.errors import FormatError, OutputError
from jitckpt.formats.protocol import FileWriter, FolderFormat, FolderWriter, Format


@pytest.mark.parametrize("name", list(formats.FORMATS))
def test_every_format_module_satisfies_the_contract(name):
    module = formats.FORMATS[name]
    assert isinstance(module, Format) and module.NAME == name
    assert isinstance(module, {"file": FileWriter, "folder": FolderWriter}[module.WRITES]) \
        if module.WRITES != "none" else True
    assert isinstance(module, FolderFormat) if module.KIND == "folder" else True
    assert list(formats.FORMATS) == [row.name for row in format_table.FORMAT_TABLE]


@pytest.fixture
def toy_format(monkeypatch):
    """A toy folder format, ``toy``: a folder holding TOY (reads as the golden checkpoint), written as one."""
    from tests.helpers import GOLDEN

    module = types.ModuleType("jitckpt.formats.toy")
    row = format_table.FormatFacts("toy", "toy", (".toy",), "toy folder", "toy folder (for the contract's test)",
                                   "folder", "folder")
    module.NAME, module.SUFFIXES, module.LABEL, module.DESCRIPTION = row.name, row.suffixes, row.label, row.description
    module.KIND, module.WRITES = row.kind, row.writes
    module.detect_folder = lambda path: (Path(path) / "TOY").is_file()
    module.read = lambda path: jitckpt.load(GOLDEN, lazy=True)

    def write_folder(ckpt, folder, progress=None, weights=None, shards=1):
        with folder.file("TOY") as handle:  # a durable file in the folder being written (an OutputFolder)
            handle.write(b"toy")

    module.write_folder = write_folder
    monkeypatch.setattr(format_table, "FORMAT_TABLE", format_table.FORMAT_TABLE + (row,))
    monkeypatch.setitem(formats.FORMATS, "toy", module)
    monkeypatch.setitem(sys.modules, "jitckpt.formats.toy", module)
    yield module
    for name in ("jitckpt.cli.checkpoints", "jitckpt.cli"):
        importlib.reload(importlib.import_module(name))  # the help as it was


def test_a_new_format_appears_in_detection_errors_and_help(toy_format, tmp_path, golden):
    assert isinstance(toy_format, Format)
    (tmp_path / "in.toy").mkdir()
    (tmp_path / "in.toy" / "TOY").write_text("toy")
    assert jitckpt.detect_format(tmp_path / "in.toy") == "toy"
    with pytest.raises(FormatError, match="choose one of: .*toy"):
        formats.get("nope")
    with pytest.raises(OutputError, match=r"\.dcp or \.toy"):
        jitckpt.convert(golden, tmp_path / "x.bin")
    assert jitckpt.convert(golden, tmp_path / "out.toy").joinpath("TOY").is_file()
    for name in ("jitckpt.cli.checkpoints", "jitckpt.cli"):
        importlib.reload(importlib.import_module(name))
    app = sys.modules["jitckpt.cli"].app
    help_text = " ".join(CliRunner().invoke(app, ["convert", "--help"]).stdout.split())
    assert "dcp or toy" in help_text and "toy folder" in help_text
    result = CliRunner().invoke(app, ["convert", str(golden), "-o", str(tmp_path / "y.bin")])
    assert result.exit_code == 2 and "--to pth, ckpt, safetensors, dcp or toy" in result.stderr
