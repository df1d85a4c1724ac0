"""What jitckpt writes names only globals torch's weights_only loader accepts (plus argparse.Namespace),
and honest torch.save files with sets, frozensets, slices and paths in their args read and convert (issue 8)."""

import argparse
import collections
import fractions
import io
import os
import pathlib

import pytest
import torch
from torch.serialization import get_unsafe_globals_in_checkpoint

import jitckpt
from jitckpt.torchfile import write as torchzip
from jitckpt.errors import SchemaError
from tests.helpers import load_golden_torch, original_resume
from tests.seed_port import port_ckpt, port_pth, train

NAMESPACE = "argparse.Namespace"


def assert_loads_with_weights_only(path):
    """``torch.load(weights_only=True)`` reads it with only Namespace allowed, and it names nothing else."""
    assert set(get_unsafe_globals_in_checkpoint(str(path))) <= {NAMESPACE}, path
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, weights_only=True)


def test_the_writers_globals_are_all_in_torchs_default_allowlist():
    from torch._weights_only_unpickler import _get_allowed_globals

    allowed = set(_get_allowed_globals()) | {NAMESPACE}
    assert {f"{m}.{n}" for m, n in torchzip.WRITABLE_GLOBALS} <= allowed


@pytest.mark.parametrize("value, name", [(fractions.Fraction(1, 2), "fractions.Fraction"), (print, "builtins.print"),
                                         (os.system, "system"), (torch.nn.Linear, "torch.nn.modules.linear.Linear"),
                                         (frozenset({1}), "builtins.frozenset"), (slice(1, 2), "builtins.slice"),
                                         (torchzip._Global("os", "system"), "os.system")])
def test_the_pickler_refuses_any_other_global(value, name):
    with pytest.raises(SchemaError, match=f"refusing to write .*{name}"):
        torchzip._TorchPickler(io.BytesIO()).dump({"x": value})


def test_write_tree_turns_honest_containers_into_plain_data_and_refuses_the_rest(tmp_path):
    class Attr(dict):
        pass

    tree = {"attr": Attr(a=1), "dd": collections.defaultdict(list, b=[2]), "od": collections.OrderedDict(c=3),
            "fs": frozenset({1, 2}), "cut": slice(1, 9, 2), "path": pathlib.PurePosixPath("/data/x"),
            "size": torch.Size([2, 3]), "empty": b"", "raw": b"\x00\xff", "t": torch.arange(3),
            "keys": {frozenset({1}): "a", (0, 1): "b"}, "nested": {frozenset({1}), frozenset({2})}}
    with open(tmp_path / "x.pt", "wb") as handle:
        torchzip.write_tree(tree, handle)
    loaded = assert_loads_with_weights_only(tmp_path / "x.pt")
    assert type(loaded["attr"]) is dict and loaded["attr"] == {"a": 1} and loaded["dd"] == {"b": [2]}
    assert type(loaded["od"]) is collections.OrderedDict and loaded["fs"] == {1, 2} and loaded["cut"] == (1, 9, 2)
    assert loaded["path"] == "/data/x" and loaded["size"] == (2, 3) and loaded["empty"] == b"" and loaded["raw"] == b"\x00\xff"
    assert loaded["keys"] == {(1,): "a", (0, 1): "b"} and sorted(map(sorted, loaded["nested"])) == [[1], [2]]
    with pytest.raises(SchemaError, match=r"cannot write 'extra/bad'.*fractions.Fraction"):
        torchzip.write_tree({"extra": {"bad": fractions.Fraction(1, 3)}}, io.BytesIO())


def test_a_failed_write_leaves_no_output(golden, tmp_path):
    ckpt = jitckpt.load(golden, lazy=True)
    ckpt.extra["original"] = {"odd": fractions.Fraction(1, 3)}
    for target in ("out.pth", "out.ckpt"):
        with pytest.raises(SchemaError, match="fractions.Fraction"):
            jitckpt.save(ckpt, tmp_path / target)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-last.pth"]


def test_every_conversion_of_the_port_files_loads_with_weights_only(tmp_path):
    run = train()
    for source in (port_pth(tmp_path, run), port_ckpt(tmp_path, run)):
        for suffix in (".pth", ".ckpt"):
            out = jitckpt.convert(source, tmp_path / f"{source.stem}-{source.suffix[1:]}{suffix}")
            tree = assert_loads_with_weights_only(out)
            assert "jitckpt.torchfile.read" not in repr(tree)
            jitckpt.load(out)  # and jitckpt reads back what it wrote
    hparams = assert_loads_with_weights_only(tmp_path / "port-pth.pth")["hyper_parameters"]
    assert type(hparams) is dict and hparams["cfg_interval"] == (0.1, 1.0)  # the port's, kept as plain data


def honest_file(tmp_path):
    """A genuine torch.save of the original layout whose args hold a set, a frozenset, a tuple, a slice and a Path."""
    tree = load_golden_torch()
    args = vars(tree["args"])
    args.update(tags={"b", "a"}, frozen=frozenset({3, 1}), sizes=(1, 2), cut=slice(2, 10, 2),
                out_dir=pathlib.Path("/data/run"))
    tree["notes"] = {"seen": {1, 2}, "where": pathlib.Path("/tmp"), "window": slice(None, 5)}
    path = tmp_path / "honest.pth"
    torch.save(tree, path)
    return path


def test_an_honest_torch_save_file_reads_and_converts_back(tmp_path):
    path = honest_file(tmp_path)
    assert "argparse.Namespace" in get_unsafe_globals_in_checkpoint(str(path))
    ckpt = jitckpt.load(path)
    assert ckpt.args["tags"] == ["a", "b"] and ckpt.args["frozen"] == [1, 3] and ckpt.args["sizes"] == [1, 2]
    assert ckpt.args["cut"] == [2, 10, 2] and ckpt.args["out_dir"] == "/data/run"
    out = jitckpt.convert(path, tmp_path / "back.pth", to="pth")
    loaded = assert_loads_with_weights_only(out)
    assert loaded["args"].tags == ["a", "b"] and loaded["args"].cut == [2, 10, 2] and loaded["args"].out_dir == "/data/run"
    assert loaded["notes"] == {"seen": {1, 2}, "where": "/tmp", "window": (None, 5, None)}
    assert original_resume(out, ckpt.arch)["start_epoch"] == 2
    for suffix in (".ckpt", ".safetensors"):
        assert jitckpt.load(jitckpt.convert(path, tmp_path / f"back{suffix}")).args == ckpt.args
