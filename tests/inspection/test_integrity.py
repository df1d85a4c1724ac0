"""jitckpt verify FILE: one file checked whole, damaged tensors named."""

import pytest

import jitckpt
from jitckpt.errors import FormatError
from jitckpt.inspection.integrity import check_file
from jitckpt.torchfile.archive import read_archive
from tests.craft import flip_bit


def test_intact_files_of_every_format(golden, tmp_path):
    for name in ("x.ckpt", "x.safetensors", "x.pth"):
        jitckpt.convert(golden, tmp_path / name)
    for path in (golden, tmp_path / "x.ckpt", tmp_path / "x.safetensors", tmp_path / "x.pth"):
        report = check_file(path)
        assert report.intact and report.checksummed and report.tensors == 339
        assert report.checked_bytes >= 3_000_000  # every tensor's bytes were read


def test_every_damaged_entry_is_named_up_to_the_limit(golden, tmp_path):
    entries = read_archive(str(golden)).entries
    bad = flip_bit(golden, entries["checkpoint-last/data/3"].offset, tmp_path / "bad.pth")
    bad = flip_bit(bad, entries["checkpoint-last/data/200"].offset + 7, bad)
    bad = flip_bit(bad, entries["checkpoint-last/version"].offset, bad)
    names = {ref.checksum.start: ref.name for _, ref in jitckpt.api.iter_tensors(jitckpt.load(golden, lazy=True))}
    with pytest.raises(FormatError, match="version' is damaged"):  # a damaged record read while parsing
        check_file(bad)
    bad = flip_bit(bad, entries["checkpoint-last/version"].offset, bad)  # mended
    report = check_file(bad)
    assert [line.split(":")[0] for line in report.damaged] == [
        names[entries["checkpoint-last/data/3"].offset], names[entries["checkpoint-last/data/200"].offset]]
    assert len(check_file(bad, limit=1).damaged) == 1


def test_truncated_file_is_a_structure_error(golden, tmp_path):
    cut = tmp_path / "cut.pth"
    cut.write_bytes(golden.read_bytes()[:-100])
    with pytest.raises(FormatError, match="corrupt or truncated"):
        check_file(cut)


def _step_refs(path):
    return [state["step"] for state in jitckpt.load(path, lazy=True).optimizer["state"].values() if "step" in state]


def test_a_damaged_step_tensor_is_listed_not_fatal(golden, tmp_path):
    # The global step of an original file is read from the first AdamW step tensor while parsing.
    first = _step_refs(golden)[0]
    bad = flip_bit(golden, first.checksum.start, tmp_path / "bad.pth")
    assert jitckpt.load(bad, lazy=True).global_step == 6  # read from the next step tensor instead
    report = check_file(bad)
    assert [line.split(":")[0] for line in report.damaged] == [first.name]
    with pytest.raises(FormatError, match=f"{first.name}' is damaged"):
        jitckpt.convert(bad, tmp_path / "out.ckpt")
    assert not (tmp_path / "out.ckpt").exists()


def test_with_every_step_tensor_damaged_the_step_is_unknown_and_every_one_listed(golden, tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(golden.read_bytes())
    steps = _step_refs(golden)
    for ref in steps:
        flip_bit(bad, ref.checksum.start, bad)
    assert jitckpt.load(bad, lazy=True).global_step is None
    report = check_file(bad, limit=len(steps))
    assert sorted(line.split(":")[0] for line in report.damaged) == sorted(ref.name for ref in steps)
    assert report.damaged_total == len(steps)
    assert len(check_file(bad, limit=3).damaged) == 3 and check_file(bad, limit=3).damaged_total == len(steps)
