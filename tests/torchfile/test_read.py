"""Reading torch zips: bounds of every tensor, the bounded allowlisting unpickler, CRC-32 on every read."""

import argparse
import collections
import copyreg
import os
import pickle
import struct

import pytest
import torch

import jitckpt
from jitckpt.errors import FormatError, UnsafePickleError
from jitckpt.torchfile.read import read_tree
from jitckpt.torchfile.archive import read_archive
from tests.craft import RawTensor, flip_bit, golden_with, opcodes, pickle_bytes, write_torch_zip
from tests.helpers import load_golden_torch, sha256

FLOATS = struct.pack("<8f", *range(8))


def crafted(tmp_path, tree, storages=None, name="x.pth", **kw):
    return str(write_torch_zip(tmp_path / name, pickle_bytes(tree), storages or {"0": FLOATS}, **kw))


def test_golden_reads_as_torch_loads_it(golden):
    tree, reference = read_tree(str(golden)), load_golden_torch()
    for section in ("model", "model_ema1", "model_ema2"):
        assert tree[section].keys() == reference[section].keys()
        for key, ref in tree[section].items():
            assert torch.equal(ref.to_torch(), reference[section][key]) and ref.name == f"{section}/{key}"
    assert vars(tree["args"]) == vars(reference["args"])


def test_a_well_formed_crafted_tensor_reads(tmp_path):
    ref = read_tree(crafted(tmp_path, {"t": RawTensor("0", 8, 2, (2, 3), (3, 1))}))["t"]
    assert ref.to_torch().tolist() == [[2, 3, 4], [5, 6, 7]]


@pytest.mark.parametrize("tensor, message", [
    (RawTensor("0", 8, -1, (4,), (1,)), "negative tensor offset"),
    (RawTensor("0", 8, 0, (4,), (-1,)), "negative tensor offset, size or stride"),
    (RawTensor("0", 8, 6, (4,), (1,)), "reaches past the end of its storage"),
    (RawTensor("0", 8, 0, (3, 3), (3, 1)), "reaches past the end of its storage"),
    (RawTensor("0", 16, 0, (4,), (1,)), "holds 32 bytes, its storage needs 64"),
    (RawTensor("0", 8, "0", (4,), (1,)), "must be integers"),
    (RawTensor("0", 8, 0, ("4",), (1,)), "must be integers"),
    (RawTensor("0", 8, 0, (1000,), (0,)), "repeats its storage's bytes"),
    (RawTensor("9", 8, 0, (4,), (1,)), "is missing"),
    (RawTensor(0, 8, 0, (4,), (1,)), "malformed storage reference"),
])
def test_tensor_bounds_are_checked_before_any_byte_is_read(tmp_path, tensor, message):
    path = crafted(tmp_path, {"model": {"net.x": tensor}})
    with pytest.raises(FormatError, match=message) as info:
        read_tree(path)
    assert str(info.value).startswith(path)


def test_one_storage_named_with_two_types_is_refused(tmp_path):
    tree = {"a": RawTensor("0", 8, 0, (8,), (1,)), "b": RawTensor("0", 16, 0, (16,), (1,), storage="HalfStorage")}
    with pytest.raises(FormatError, match="two different types"):
        read_tree(crafted(tmp_path, tree))


def test_compressed_pickle_is_refused_by_name(tmp_path):
    path = crafted(tmp_path, {"t": RawTensor("0", 8, 0, (8,), (1,))}, compress_pickle=True)
    with pytest.raises(FormatError, match="is compressed"):
        read_tree(path)


def test_entries_outside_the_archive_folder_and_two_pickles_are_refused(tmp_path):
    tree = {"t": RawTensor("0", 8, 0, (8,), (1,))}
    with pytest.raises(FormatError, match="outside the archive folder"):
        read_tree(crafted(tmp_path, tree, extra={"other/data/0": FLOATS}))
    with pytest.raises(FormatError, match="2 data.pkl entries"):
        read_tree(crafted(tmp_path, tree, name="y.pth", extra={"other/data.pkl": pickle_bytes(tree)}))


def test_two_entries_with_one_name_are_refused(tmp_path):
    with pytest.warns(UserWarning):  # zipfile warns too, and writes them
        path = crafted(tmp_path, {"t": RawTensor("0", 8, 0, (8,), (1,))}, extra={"archive/data/0": FLOATS})
    with pytest.raises(FormatError, match="two entries are named 'archive/data/0'"):
        read_archive(path)


def test_damaged_central_directory_size_field(golden, tmp_path):
    data = bytearray(golden.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    size = struct.unpack_from("<L", data, end + 12)[0]
    struct.pack_into("<L", data, end + 12, size + 46)
    (tmp_path / "cd.pth").write_bytes(bytes(data))
    with pytest.raises(FormatError, match="size or offset field is damaged"):
        jitckpt.load(tmp_path / "cd.pth", lazy=True)


def test_a_flipped_bit_in_a_weight_is_found_and_never_laundered(golden, tmp_path):
    entry = read_archive(str(golden)).entries["checkpoint-last/data/40"]
    bad = flip_bit(golden, entry.offset + 5, tmp_path / "bad.pth")
    ckpt = jitckpt.load(bad, lazy=True)  # the structure is fine: reading headers succeeds
    damaged = next(v for _, v in jitckpt.api.iter_tensors(ckpt) if v.checksum.start == entry.offset)
    with pytest.raises(FormatError, match=f"tensor '{damaged.name}' is damaged"):
        damaged.to_torch()
    for target in ("out.ckpt", "out.safetensors", "out.pth"):
        with pytest.raises(FormatError, match="is damaged"):
            jitckpt.convert(bad, tmp_path / target)
        assert not (tmp_path / target).exists()
    assert sorted(os.listdir(tmp_path)) == ["bad.pth", "checkpoint-last.pth"]


def test_a_flipped_bit_in_the_pickle_is_found(golden, tmp_path):
    entry = read_archive(str(golden)).entries["checkpoint-last/data.pkl"]
    bad = flip_bit(golden, entry.offset + entry.size // 2, tmp_path / "bad.pth")
    with pytest.raises(FormatError, match="data.pkl' is damaged"):
        jitckpt.load(bad, lazy=True)


# ----------------------------------------------------------------------------- the unpickler


def load_pickle(tmp_path, pkl):
    return read_tree(str(write_torch_zip(tmp_path / "p.pth", pkl, {"0": FLOATS})))


def test_honest_containers_read_as_torch_writes_them(tmp_path):
    args = argparse.Namespace(lr=0.1, path=None, sizes=(1, 2), tags={"a"}, frozen=frozenset({1}), cut=slice(1, 2),
                              raw=b"\x00\xff", ordered=collections.OrderedDict(a=1))
    torch.save({"args": args}, tmp_path / "t.pth")  # __builtin__ names, _codecs.encode for bytes
    assert vars(read_tree(str(tmp_path / "t.pth"))["args"]) == vars(args)


@pytest.mark.parametrize("global_name", [b"os\nsystem\n", b"posix\nsystem\n", b"__builtin__\neval\n",
                                         b"builtins\nexec\n", b"builtins\ngetattr\n", b"subprocess\nPopen\n",
                                         b"torch._tensor\n_rebuild_from_type_v2\n", b"functools\npartial\n",
                                         b"copyreg\n_reconstructor\n", b"torch.storage\n_load_from_bytes\n",
                                         b"numpy.core.multiarray\n_reconstruct\n"])
def test_reduce_through_a_dangerous_global_is_refused_by_name(tmp_path, global_name):
    canary = tmp_path / "canary"
    pkl = opcodes(pickle.GLOBAL + global_name, pickle.BINUNICODE + struct.pack("<I", 20) + b"touch canary; true  ",
                  pickle.TUPLE1, pickle.REDUCE)
    with pytest.raises(UnsafePickleError, match="nothing in the file was run"):
        load_pickle(tmp_path, pkl)
    assert not canary.exists()


@pytest.mark.parametrize("opcode", [pickle.STACK_GLOBAL, pickle.INST + b"os\nsystem\n", pickle.OBJ,
                                    pickle.NEWOBJ_EX, pickle.EXT1 + b"\x01", pickle.EXT2 + b"\x01\x00",
                                    pickle.EXT4 + b"\x01\x00\x00\x00", pickle.PERSID + b"x\n", pickle.FRAME])
def test_opcodes_checkpoints_never_need_are_refused(tmp_path, opcode):
    copyreg.add_extension("os", "system", 0xBEEF)  # even with a registered extension code nothing is looked up
    try:
        pkl = opcodes(pickle.MARK, pickle.BINUNICODE + struct.pack("<I", 2) + b"os", opcode)
        with pytest.raises(UnsafePickleError, match="opcode"):
            load_pickle(tmp_path, pkl)
    finally:
        copyreg.remove_extension("os", "system", 0xBEEF)


def test_build_may_not_set_dunder_attributes(tmp_path):
    state = pickle.EMPTY_DICT + pickle.BINUNICODE + struct.pack("<I", 9) + b"__class__" + pickle.NONE + pickle.SETITEM
    pkl = opcodes(pickle.GLOBAL + b"argparse\nNamespace\n", pickle.EMPTY_TUPLE, pickle.NEWOBJ, state, pickle.BUILD)
    with pytest.raises(UnsafePickleError, match="'__class__'"):
        load_pickle(tmp_path, pkl)


def test_newobj_of_an_allowed_function_is_refused(tmp_path):
    pkl = opcodes(pickle.GLOBAL + b"torch._utils\n_rebuild_tensor_v2\n", pickle.EMPTY_TUPLE, pickle.NEWOBJ)
    with pytest.raises(UnsafePickleError, match="creation"):
        load_pickle(tmp_path, pkl)


def test_a_memo_bomb_is_refused_without_taking_memory(tmp_path):
    pkl = opcodes(pickle.EMPTY_LIST, pickle.LONG_BINPUT + struct.pack("<I", 100_000_000))
    with pytest.raises(FormatError, match="memo index 100000000"):
        load_pickle(tmp_path, pkl)


def test_deep_nesting_self_reference_and_blow_ups_are_refused(tmp_path):
    with pytest.raises(FormatError, match="nests more than"):
        load_pickle(tmp_path, opcodes(pickle.MARK * 100_000))
    nested = pickle.EMPTY_LIST * 100_000 + pickle.APPEND * 99_999
    with pytest.raises(FormatError, match="levels deep"):
        load_pickle(tmp_path, opcodes(nested))
    itself = pickle.EMPTY_LIST + pickle.BINPUT + b"\x00" + pickle.BINGET + b"\x00" + pickle.APPEND
    with pytest.raises(FormatError, match="contains itself"):
        load_pickle(tmp_path, opcodes(itself))
    laughs = pickle.EMPTY_LIST + b"".join(pickle.BINPUT + b"\x00" + pickle.BINGET + b"\x00" + pickle.TUPLE2
                                          for _ in range(60))
    with pytest.raises(FormatError, match="expands to more than"):
        load_pickle(tmp_path, opcodes(laughs))


def test_truncated_and_unbalanced_pickles(tmp_path):
    with pytest.raises(FormatError, match="corrupt pickle"):
        load_pickle(tmp_path, opcodes(pickle.EMPTY_DICT)[:-1])
    with pytest.raises(FormatError, match="corrupt pickle"):
        load_pickle(tmp_path, opcodes(pickle.EMPTY_DICT, pickle.EMPTY_DICT))
    with pytest.raises(FormatError, match="stack underflow"):
        load_pickle(tmp_path, opcodes(pickle.APPEND))


def test_refused_pickle_through_the_cli_names_the_file(golden, tmp_path):
    from typer.testing import CliRunner

    from jitckpt.cli import app

    pkl = opcodes(pickle.GLOBAL + b"os\nsystem\n", pickle.EMPTY_TUPLE, pickle.REDUCE)
    path = write_torch_zip(tmp_path / "evil.pth", pkl)
    before = sha256(path)
    result = CliRunner().invoke(app, ["convert", str(path), "-o", str(tmp_path / "x.ckpt")])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert str(path) in result.stderr and "'os.system'" in result.stderr
    assert sha256(path) == before and not (tmp_path / "x.ckpt").exists()


def test_payload_of_the_wrong_type_gets_one_error_naming_the_field(tmp_path):
    cases = {"epoch": ("abc", "epoch must be a whole number"), "args": ([1, 2], "args must be a Namespace"),
             "optimizer": ({"param_groups": {"a": 1}, "state": {}}, "param_groups must be a list")}
    for field, (value, message) in cases.items():
        path = golden_with(tmp_path / f"{field}.pth", **{field: value})
        with pytest.raises(jitckpt.JiTCheckpointError, match=message) as info:
            jitckpt.load(path, lazy=True)
        assert str(info.value).startswith(str(path))
    path = golden_with(tmp_path / "huge.pth", epoch=10 ** 600)  # LONG1: up to 255 bytes
    with pytest.raises(jitckpt.JiTCheckpointError, match="epoch must be a whole number .* a huge integer"):
        jitckpt.load(path, lazy=True)
    path = golden_with(tmp_path / "huger.pth", epoch=10 ** 5000)  # LONG4, which torch's loader refuses too
    with pytest.raises(UnsafePickleError, match="opcode LONG4"):
        jitckpt.load(path, lazy=True)
