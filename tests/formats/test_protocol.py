"""The format contract: every registered module satisfies it, and a new format (a toy module here) shows up in
detection, in errors and in the command line's help with no other edit than its module and its row."""

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
def toy_formats(monkeypatch):
    """Two new formats, each added as a format is: its module and its row in the table (then the registry
    reads the table again, as a new process would)."""
    rows = (format_table.FormatFacts("toy", "tests.formats.toy_formats:toy_folder", (".toy",), "toy folder",
                                     "toy folder (for the contract's test)", "folder", "folder"),
            format_table.FormatFacts("toyfile", "tests.formats.toy_formats:toy_file", (".tf",), "toy file",
                                     "toy file (for the contract's test)", "file", "file"))
    monkeypatch.setattr(format_table, "FORMAT_TABLE", format_table.FORMAT_TABLE + rows)
    importlib.reload(formats)
    yield formats.FORMATS["toy"], formats.FORMATS["toyfile"]
    monkeypatch.undo()
    importlib.reload(formats)
    for name in ("jitckpt.cli.checkpoints", "jitckpt.cli"):
        importlib.reload(importlib.import_module(name))  # the help as it was


def test_a_new_format_appears_in_detection_errors_and_help(toy_formats, tmp_path, golden):
    toy, toyfile = toy_formats
    assert isinstance(toy, Format) and isinstance(toy, FolderWriter) and isinstance(toyfile, FileWriter)
    (tmp_path / "in.toy").mkdir()
    (tmp_path / "in.toy" / "TOY").write_text("toy")
    assert jitckpt.detect_format(tmp_path / "in.toy") == "toy"
    with pytest.raises(FormatError, match="choose one of: .*toy"):
        formats.get("nope")
    with pytest.raises(OutputError, match=r"\.dcp, \.toy or \.tf"):
        jitckpt.convert(golden, tmp_path / "x.bin")
    assert jitckpt.convert(golden, tmp_path / "out.toy").joinpath("TOY").is_file()
    written = jitckpt.convert(golden, tmp_path / "out.tf")  # a file format, known by its first bytes
    assert written.read_bytes().startswith(b"TOYFILE!") and jitckpt.detect_format(written) == "toyfile"
    for name in ("jitckpt.cli.checkpoints", "jitckpt.cli"):
        importlib.reload(importlib.import_module(name))
    app = sys.modules["jitckpt.cli"].app
    help_text = " ".join(CliRunner().invoke(app, ["convert", "--help"]).stdout.split())
    assert "dcp, toy or toyfile" in help_text and "toy folder" in help_text and "toy file" in help_text
    result = CliRunner().invoke(app, ["convert", str(golden), "-o", str(tmp_path / "y.bin")])
    assert result.exit_code == 2 and "--to pth, ckpt, safetensors, dcp, toy or toyfile" in result.stderr
