"""The torch zip writer: what torch.load, zipfile and unzip accept, zip64 included."""

import argparse
import zipfile

import pytest
import torch

import jitckpt
from jitckpt.torchfile import read as torchread, write as torchzip
from tests.helpers import load_golden_torch


@pytest.mark.parametrize("zip64_limit", [torchzip._ZIP64_LIMIT, 1000])
def test_written_zip_is_valid_for_torch_and_zipfile(golden, tmp_path, monkeypatch, zip64_limit):
    """With the zip64 threshold lowered to 1000 bytes, the zip64 records are exercised on a small file."""
    monkeypatch.setattr(torchzip, "_ZIP64_LIMIT", zip64_limit)
    path = jitckpt.convert(golden, tmp_path / "x.ckpt")
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None  # every CRC-32 right
        assert all(info.compress_type == zipfile.ZIP_STORED for info in zf.infolist())
    with torch.serialization.safe_globals([argparse.Namespace]):
        loaded = torch.load(path, weights_only=True, mmap=True)
    golden_dict = load_golden_torch()
    assert all(torch.equal(loaded["state_dict"][k], v) for k, v in golden_dict["model"].items())
    assert all(t.data_ptr() % 64 == 0 for t in loaded["state_dict"].values())
    assert jitckpt.compare(jitckpt.load(golden, lazy=True), jitckpt.load(path, lazy=True)) == []


def test_in_memory_tensors_are_written_too(tmp_path):
    state = {"a": torch.arange(10, dtype=torch.int64), "b": torch.randn(3, 4).t(), "c": torch.tensor(2.5)}
    with open(tmp_path / "x.pt", "wb") as handle:
        torchzip.write_tree(state, handle)
    loaded = torch.load(tmp_path / "x.pt", weights_only=True)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_reader_refuses_unknown_globals_naming_them(tmp_path):
    torch.save({"x": torch.nn.Linear(2, 2)}, tmp_path / "module.pt")  # a pickled module, not a state dict
    with pytest.raises(jitckpt.errors.UnsafePickleError, match="torch.nn.modules.linear.Linear"):
        torchread.read_tree(str(tmp_path / "module.pt"))
