"""safetensors: validated as strictly as the safetensors library, and checksummed when jitckpt writes it."""

import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

import jitckpt
from jitckpt.errors import FormatError
from jitckpt.formats.safetensors import read_header
from jitckpt.inspection.integrity import check_file
from tests.craft import write_safetensors
from tests.helpers import load_golden_torch

DATA = struct.pack("<6f", *range(6))


def entry(start, stop, shape=(3,), dtype="F32"):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": [start, stop]}


def header_of(path):
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]), 8 + length


@pytest.mark.parametrize("header, message", [
    ({"a": entry(0, 12), "b": entry(8, 20)}, "starts at byte 8 of the data, not 12"),
    ({"a": entry(0, 12), "b": entry(16, 28)}, "starts at byte 16"),
    ({"a": entry(12, 24), "b": entry(0, 12), "c": entry(20, 32)}, "starts at byte 20"),
    ({"a": entry(-4, 8)}, "malformed shape or data_offsets"),
    ({"a": entry("0", 12), "b": entry(12, 24)}, "malformed shape or data_offsets"),
    ({"a": entry(0.0, 12.0), "b": entry(12, 24)}, "malformed shape or data_offsets"),
    ({"a": entry(0, 12), "b": entry(12, 20)}, "has 8 bytes, its shape needs 12"),
    ({"a": entry(0, 12), "b": entry(12, 36, (6,))}, "truncated safetensors file"),
    ({"a": entry(0, 12)}, "cover 12 bytes of a 24-byte data area"),
    ({"a": entry(0, 24, (3,), "F99")}, "unsupported or malformed"),
    ({"__metadata__": {"x": 1}, "a": entry(0, 24, (6,))}, "not a map of strings"),
])
def test_bad_offsets_and_entries_are_refused(tmp_path, header, message):
    path = write_safetensors(tmp_path / "x.safetensors", header, DATA)
    with pytest.raises(FormatError, match=message):
        read_header(str(path))


def test_a_valid_hand_made_file_reads(tmp_path):
    path = write_safetensors(tmp_path / "x.safetensors", {"b": entry(12, 24), "a": entry(0, 12)}, DATA)
    tensors, _ = read_header(str(path))
    assert tensors["b"].to_torch().tolist() == [3.0, 4.0, 5.0]


def test_header_length_field_and_header_text(tmp_path):
    text = json.dumps({"a": entry(0, 24, (6,))}).encode()
    for length, message in ((len(text) - 1, "corrupt safetensors header"), (len(text) + 1, "corrupt safetensors"),
                            (1 << 40, "header of 1099511627776 bytes")):
        path = write_safetensors(tmp_path / "x.safetensors", text, DATA, length=length)
        with pytest.raises(FormatError, match=message):
            read_header(str(path))
    for bad, message in ((b'{"a": 1, "a": 2}', "appears twice"), (b"[1, 2]", "does not start"),
                         (b"{" + b"\xff" * 8 + b"}", "corrupt safetensors header"),
                         (b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply")):
        path = write_safetensors(tmp_path / "y.safetensors", bad, b"")
        with pytest.raises(FormatError, match=message):
            read_header(str(path))


def test_deeply_nested_metadata_value_is_one_error(golden, tmp_path):
    path = jitckpt.convert(golden, tmp_path / "s.safetensors")
    tensors = load_file(str(path))
    meta = {"jitckpt.args": "[" * 100_000 + "]" * 100_000}  # (with jitckpt.kind, a missing checksum record is first)
    save_file({k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")},
              str(tmp_path / "deep.safetensors"), metadata=meta)
    with pytest.raises(FormatError, match="nested too deeply|levels deep"):
        jitckpt.load(tmp_path / "deep.safetensors", lazy=True)


def test_every_file_jitckpt_writes_records_crcs_that_the_library_ignores(golden, tmp_path):
    full = jitckpt.convert(golden, tmp_path / "full.safetensors")
    ema = jitckpt.convert(golden, tmp_path / "ema.safetensors", weights="ema1")
    for path in (full, ema):
        header, _ = header_of(path)
        record = json.loads(header["__metadata__"]["jitckpt.checksums"])
        assert record["algorithm"] == "crc32" and set(record["tensors"]) == set(header) - {"__metadata__"}
        assert check_file(path).intact and check_file(path).checksummed
        assert len(load_file(str(path))) == len(record["tensors"])  # the library reads it as any file
    golden_model = load_golden_torch()["model_ema1"]
    assert all(torch.equal(v, golden_model[k]) for k, v in load_file(str(ema)).items())


def test_flipped_data_bit_in_a_file_jitckpt_wrote_is_found_everywhere(golden, tmp_path):
    path = jitckpt.convert(golden, tmp_path / "full.safetensors")
    header, base = header_of(path)
    start, _ = header["model_ema1/net.pos_embed"]["data_offsets"]
    data = bytearray(path.read_bytes())
    data[base + start + 3] ^= 0x01
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    ckpt = jitckpt.load(bad, lazy=True)
    with pytest.raises(FormatError, match="'model_ema1/net.pos_embed' is damaged"):
        ckpt.model_ema1["net.pos_embed"].to_torch()
    with pytest.raises(FormatError, match="is damaged"):
        jitckpt.convert(bad, tmp_path / "out.pth")
    assert not (tmp_path / "out.pth").exists()
    report = check_file(bad)
    assert not report.intact and report.damaged[0].startswith("model_ema1/net.pos_embed: CRC-32 mismatch")
    with pytest.raises(FormatError, match="is damaged"):  # verify A B never calls it the same
        jitckpt.compare(jitckpt.load(golden, lazy=True), ckpt)


def test_flipped_header_value_in_a_file_jitckpt_wrote_is_found(golden, tmp_path):
    path = jitckpt.convert(golden, tmp_path / "full.safetensors")
    data = path.read_bytes()
    at = data.index(b'"blr')
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(data[:at] + b'"blq' + data[at + 4:])
    with pytest.raises(FormatError, match="its header is damaged"):
        jitckpt.load(bad, lazy=True)


def test_a_file_from_another_tool_reads_and_says_it_carries_no_checksums(tmp_path):
    save_file(load_golden_torch()["model"], str(tmp_path / "other.safetensors"))
    report = check_file(tmp_path / "other.safetensors")
    assert report.intact and not report.checksummed and report.tensors == 57
    assert jitckpt.load(tmp_path / "other.safetensors", lazy=True).is_weights_only
