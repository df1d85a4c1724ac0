"""The second outside audit's classes of hostile files, rebuilt here: every case reads correctly or exits 2 with
one line, under 150 MB of peak memory and within 10 s, runs nothing, and leaves no output behind.

Each case runs ``inspect``, ``verify`` and ``convert`` as separate processes; the peak memory is the child's own
(``os.wait4``), so the figure is what the command cost, not the test's.
"""

from __future__ import annotations

import os
import pickle
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import jitckpt
from tests.craft import opcodes, write_torch_zip
from tests.helpers import GOLDEN

MAX_PEAK_BYTES = 150 << 20
MAX_SECONDS = 10.0


def s(text: str) -> bytes:
    data = text.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def long(n: int) -> bytes:
    data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return pickle.LONG1 + bytes([len(data)]) + data


def put(i: int) -> bytes:
    return pickle.LONG_BINPUT + struct.pack("<I", i)


def get(i: int) -> bytes:
    return pickle.LONG_BINGET + struct.pack("<I", i)


def dag(levels: int, memo: int = 900) -> bytes:
    """A tuple tree of 2**levels leaves in a few bytes: each level is (previous, previous), shared."""
    return pickle.EMPTY_TUPLE + b"".join(put(memo) + get(memo) + pickle.TUPLE2 for _ in range(levels))


GLOBAL = {name: pickle.GLOBAL + name.replace(".", "\n", 1).encode() + b"\n" for name in (
    "builtins.bytearray", "collections.OrderedDict", "builtins.slice", "argparse.Namespace", "pathlib.PosixPath")}

# Each gadget pushes one value (what the audit found, by class).
GADGETS = {
    "bytearray of a size": GLOBAL["builtins.bytearray"] + long(3_000_000_000) + pickle.TUPLE1 + pickle.REDUCE,
    "a 1 MiB string used 3000 times": pickle.EMPTY_LIST + s("x" * (1 << 20)) + put(1) + pickle.APPEND
    + (get(1) + pickle.APPEND) * 2999,
    "a tuple tree of 2**40 leaves": dag(40),
    "OrderedDict state shadowing its methods": GLOBAL["collections.OrderedDict"] + pickle.EMPTY_TUPLE + pickle.REDUCE
    + pickle.EMPTY_DICT + s("keys") + s("x") + pickle.SETITEM + s("items") + s("y") + pickle.SETITEM + pickle.BUILD,
    "a list that holds itself": pickle.EMPTY_LIST + put(1) + get(1) + pickle.APPEND,
    "NEWOBJ of slice": GLOBAL["builtins.slice"] + pickle.EMPTY_TUPLE + pickle.NEWOBJ,
    "Namespace state shadowing the build hook": GLOBAL["argparse.Namespace"] + pickle.EMPTY_TUPLE + pickle.NEWOBJ
    + pickle.EMPTY_DICT + s("build_from_tuple") + pickle.NONE + pickle.SETITEM + pickle.BUILD
    + pickle.NEWTRUE + pickle.TUPLE1 + pickle.BUILD,
    "a dict keyed by a tuple tree": pickle.EMPTY_DICT + dag(40) + pickle.NONE + pickle.SETITEM,
    "tuples nested 200,000 deep": pickle.EMPTY_TUPLE + pickle.TUPLE1 * 200_000,
    "a path of a tuple tree": GLOBAL["pathlib.PosixPath"] + dag(40) + pickle.TUPLE1 + pickle.REDUCE,
}


def ckpt_pickle(gadget: bytes) -> bytes:
    """A Lightning-checkpoint-shaped dict with the gadget under one more key."""
    return opcodes(pickle.EMPTY_DICT, pickle.MARK, s("state_dict"), pickle.EMPTY_DICT, s("epoch"),
                   pickle.BININT1 + b"\x01", s("x"), gadget, pickle.SETITEMS)


def meta_pickle(gadget: bytes) -> bytes:
    """Lightning's meta.pt of a DCP directory, with the gadget under one more key."""
    return opcodes(pickle.EMPTY_DICT, pickle.MARK, s("epoch"), pickle.BININT1 + b"\x01", s("global_step"),
                   pickle.BININT1 + b"\x06", s("x"), gadget, pickle.SETITEMS)


@pytest.fixture(scope="module")
def golden_dcp(tmp_path_factory) -> Path:
    return jitckpt.convert(GOLDEN, tmp_path_factory.mktemp("dcp") / "golden.dcp")


# A small launcher forks and execs the command and reports its peak RSS: a child forked straight from this
# test process would count this process's memory (torch's) in its own peak, as Linux carries it over exec.
LAUNCHER = """
import os, signal, sys
pid = os.fork()
if pid == 0:
    signal.alarm(60)  # kept across exec: the command ends itself even if this launcher is killed
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.execv(sys.executable, [sys.executable, "-m", "jitckpt", *sys.argv[1:]])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss * 1024)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run(args: list[str], cwd: Path) -> tuple[int, str, float, int]:
    """(exit code, stderr, seconds, peak RSS bytes) of one jitckpt command in a fresh process."""
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-c", LAUNCHER, *args], cwd=cwd, capture_output=True, timeout=60,
                              env={**os.environ, "COLUMNS": "200"})
    except subprocess.TimeoutExpired:
        pytest.fail(f"jitckpt {' '.join(args)} ran past 60 s")
    peak = int(done.stdout.decode().strip().splitlines()[-1])
    return done.returncode, done.stderr.decode(errors="replace"), time.perf_counter() - started, peak


def assert_contained(path: Path, workdir: Path, allowed_exit: tuple[int, ...] = (2,)) -> None:
    """inspect, verify and convert on ``path``: the exit codes allowed, one error line, bounded, nothing left."""
    before = sorted(p.name for p in workdir.iterdir())
    out = workdir / "out.pth"
    for args in (["inspect", str(path)], ["verify", str(path)], ["convert", str(path), "-o", str(out)]):
        code, err, seconds, peak = run(args, workdir)
        where = f"jitckpt {args[0]} {path.name}"
        assert code in allowed_exit, f"{where}: exit {code}\n{err[-2000:]}"
        assert "Traceback" not in err, f"{where}: {err[-2000:]}"
        if code == 2:
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), f"{where}: {err[-2000:]}"
        assert seconds < MAX_SECONDS, f"{where}: {seconds:.1f} s"
        assert peak < MAX_PEAK_BYTES, f"{where}: {peak / 1e6:.0f} MB"
    assert sorted(p.name for p in workdir.iterdir()) == before, "output or temporary files left behind"


@pytest.mark.parametrize("name", GADGETS)
def test_a_gadget_in_a_checkpoint_is_one_bounded_error(tmp_path, name):
    path = write_torch_zip(tmp_path / "x.ckpt", ckpt_pickle(GADGETS[name]))
    assert_contained(path, tmp_path)


@pytest.mark.parametrize("name", ["bytearray of a size", "a 1 MiB string used 3000 times",
                                  "a tuple tree of 2**40 leaves", "OrderedDict state shadowing its methods"])
def test_a_gadget_in_a_dcp_meta_pt_is_one_bounded_error(tmp_path, golden_dcp, name):
    folder = tmp_path / "run.dcp"
    shutil.copytree(golden_dcp, folder)
    (folder / "meta.pt").unlink()
    write_torch_zip(folder / "meta.pt", meta_pickle(GADGETS[name]))
    assert_contained(folder, tmp_path)


@pytest.mark.parametrize("how", ["missing", "fifo", "link to /dev/zero", "dangling link"])
def test_an_incomplete_dcp_directory_is_an_error_not_a_silent_conversion(tmp_path, golden_dcp, how):
    folder = tmp_path / "run.dcp"
    shutil.copytree(golden_dcp, folder)
    meta = folder / "meta.pt"
    outside = tmp_path / "elsewhere.pt"
    shutil.copyfile(meta, outside)
    meta.unlink()
    if how == "fifo":
        os.mkfifo(meta)
    elif how == "link to /dev/zero":
        meta.symlink_to("/dev/zero")
    elif how == "dangling link":
        meta.symlink_to(tmp_path / "gone.pt")
    assert_contained(folder, tmp_path)
    if os.path.lexists(meta):
        meta.unlink()
    meta.symlink_to(outside)  # as the Hugging Face cache lays out a snapshot: a link to a regular file reads
    assert jitckpt.load(folder).epoch == 1


def _metadata_with(folder: Path, change) -> None:
    """Rewrite a DCP directory's .metadata with torch's own classes, ``change(metadata)`` applied."""
    with open(folder / ".metadata", "rb") as f:
        metadata = pickle.load(f)  # our own file, written a moment ago
    change(metadata)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(50_000)
    try:
        with open(folder / ".metadata", "wb") as f:
            pickle.dump(metadata, f)
    finally:
        sys.setrecursionlimit(limit)


def _huge_tuple(levels: int = 40) -> tuple:
    t: tuple = ()
    for _ in range(levels):
        t = (t, t)
    return t


def _first_tensor(metadata):
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    return next(k for k, v in metadata.state_dict_metadata.items() if isinstance(v, TensorStorageMetadata))


def _chunk_offsets_tree(metadata):
    key = _first_tensor(metadata)
    metadata.state_dict_metadata[key].chunks[0].offsets = _huge_tuple()


def _deep_chunk_sizes(metadata):
    key = _first_tensor(metadata)
    deep: tuple = ()
    for _ in range(5_000):  # as deep as pickle.dump goes here (the 200,000-deep case is a gadget above)
        deep = (deep,)
    metadata.state_dict_metadata[key].chunks[0].sizes = deep


def _shadowing_field(metadata):
    metadata.__dict__["field"] = 1  # BUILD of a name the record's class defines


def _one_piece_for_two_tensors(metadata):
    """EMA 2's copy of a tensor stored where EMA 1's is: the same bytes would be read for both."""
    by_key = {index.fqn: index for index in metadata.storage_data}
    ema1 = next(k for k in by_key if "jitckpt:ema1/" in k and k.endswith("mlp.w12.weight"))
    twin = by_key[ema1.replace("jitckpt:ema1/", "jitckpt:ema2/")]
    metadata.storage_data[twin] = metadata.storage_data[by_key[ema1]]


def _path_of_a_tree(metadata):
    index = next(iter(metadata.storage_data))
    metadata.storage_data[index].relative_path = _PathGadget()


class _PathGadget:
    """Pickles as ``pathlib.PosixPath(<a tuple tree of 2**40 leaves>)``."""

    def __reduce__(self):
        import pathlib

        return pathlib.PosixPath, (_huge_tuple(),)


@pytest.mark.parametrize("change", [_chunk_offsets_tree, _deep_chunk_sizes, _shadowing_field, _one_piece_for_two_tensors,
                                    _path_of_a_tree])
def test_a_hostile_dcp_metadata_is_one_bounded_error(tmp_path, golden_dcp, change):
    folder = tmp_path / "run.dcp"
    shutil.copytree(golden_dcp, folder)
    _metadata_with(folder, change)
    assert_contained(folder, tmp_path)


def test_an_honest_checkpoint_stays_well_under_the_bounds(tmp_path):
    for args in (["inspect", str(GOLDEN)], ["verify", str(GOLDEN)], ["convert", str(GOLDEN), "-o", "o.ckpt"]):
        code, err, seconds, peak = run(args, tmp_path)
        assert code == 0 and peak < MAX_PEAK_BYTES and seconds < MAX_SECONDS, (args, err, peak)
    assert torch.equal(jitckpt.load(tmp_path / "o.ckpt").model["net.pos_embed"],
                       jitckpt.load(GOLDEN).model["net.pos_embed"])


def test_list_positions_in_item_paths_cannot_pad_lists_without_bound():
    from jitckpt.errors import FormatError
    from jitckpt.formats.dcp import _unflatten

    flat = {f"pad{i}": b"" for i in range(2000)}
    paths = {key: ("pad", 65535, 65535, i) for i, key in enumerate(flat)}
    started = time.perf_counter()
    with pytest.raises(FormatError, match="pads its lists"):
        _unflatten(flat, paths, "run.dcp")
    assert time.perf_counter() - started < 1.0


# ---------------------------------------------------------------------------------------------- third round
# (an attacker's inputs against the second round's fixes: each within the first bounds, costly to a consumer)


def _golden_with_args(tmp_path, **args) -> Path:
    import argparse

    from tests.helpers import load_golden_torch

    tree = load_golden_torch()
    tree["args"] = argparse.Namespace(**{**vars(tree["args"]), **args})
    torch.save(tree, tmp_path / "x.pth")
    return tmp_path / "x.pth"


@pytest.mark.parametrize("args", [
    {"k" * 4_000_000: [0] * 800_000},  # a long arg name over a long list: paths were built for every element
    {"cfg": ["\x00" * 15_000_000 + "\U0001F600"] * 4},  # few characters, each rendered (or stored) as four
])
def test_args_that_cost_a_consumer_more_than_their_characters_are_bounded(tmp_path, args):
    path = _golden_with_args(tmp_path, **args)
    for command in ("inspect", "verify"):
        code, err, seconds, peak = run([command, str(path)], tmp_path)
        assert code in (0, 2) and "Traceback" not in err and seconds < MAX_SECONDS and peak < MAX_PEAK_BYTES, \
            (command, code, err[-300:], seconds, peak)


def test_many_small_objects_are_bounded_by_the_memory_they_take(tmp_path):
    path = write_torch_zip(tmp_path / "x.ckpt", ckpt_pickle(
        pickle.EMPTY_LIST + pickle.MARK + pickle.EMPTY_SET * 950_000 + pickle.APPENDS))
    assert_contained(path, tmp_path)


def _dcp_with(golden_dcp: Path, tmp_path: Path, change) -> Path:
    folder = tmp_path / "run.dcp"
    shutil.copytree(golden_dcp, folder)
    _metadata_with(folder, lambda metadata: change(metadata, folder))
    return folder


def _many_chunks(metadata, folder):
    """A (1, 20000) tensor stored as 20,000 (1, 1) chunks: a pairwise tiling check would take minutes."""
    from torch.distributed.checkpoint.filesystem import _StorageInfo
    from torch.distributed.checkpoint.metadata import (ChunkStorageMetadata, MetadataIndex, TensorProperties,
                                                       TensorStorageMetadata)

    chunks = [ChunkStorageMetadata(torch.Size([0, i]), torch.Size([1, 1])) for i in range(20_000)]
    metadata.state_dict_metadata["junk"] = TensorStorageMetadata(TensorProperties(dtype=torch.float32),
                                                                 torch.Size([1, 20_000]), chunks)
    for i, chunk in enumerate(chunks):
        metadata.storage_data[MetadataIndex("junk", chunk.offsets)] = _StorageInfo("__0_0.distcp", i, 1)


def _linked_shards(metadata, folder):
    """Two shard names hard-linked to one file, and an item of each pointing at the same bytes."""
    by_key = {index.fqn: index for index in metadata.storage_data}
    ema1 = next(k for k in by_key if "jitckpt:ema1/" in k and k.endswith("mlp.w12.weight"))
    twin = by_key[ema1.replace("jitckpt:ema1/", "jitckpt:ema2/")]
    info = metadata.storage_data[by_key[ema1]]
    os.link(folder / info.relative_path, folder / "__9_0.distcp")
    metadata.storage_data[twin] = type(info)("__9_0.distcp", info.offset, info.length)


def _deep_path(metadata, folder):
    key = next(iter(metadata.planner_data))
    metadata.planner_data[key] = ("x",) * 50_000


@pytest.mark.parametrize("change", [_many_chunks, _linked_shards, _deep_path])
def test_dcp_metadata_of_the_third_round_is_one_bounded_error(tmp_path, golden_dcp, change):
    assert_contained(_dcp_with(golden_dcp, tmp_path, change), tmp_path)


@pytest.mark.parametrize("where, value", [("callbacks", 5), ("optimizer_states", 5), ("jitckpt", {"extra": 3})])
def test_fields_of_unexpected_types_are_one_line_for_every_consumer(tmp_path, golden, where, value):
    from jitckpt.errors import JiTCheckpointError
    from jitckpt.lightning import JiTCheckpointIO

    tree = torch.load(jitckpt.convert(golden, tmp_path / "g.ckpt"), weights_only=False)
    tree[where] = value
    torch.save(tree, tmp_path / "bad.ckpt")
    (tmp_path / "g.ckpt").unlink()
    assert_contained(tmp_path / "bad.ckpt", tmp_path)
    with pytest.raises(JiTCheckpointError):
        JiTCheckpointIO().load_checkpoint(tmp_path / "bad.ckpt")


def test_an_error_line_is_bounded_after_its_characters_are_escaped(tmp_path):
    path = _golden_with_args(tmp_path, **{"\u202e" * 3000: b"x"})
    code, err, _, _ = run(["inspect", str(path)], tmp_path)
    assert code == 2 and len(err.strip()) <= 2000 + len("error: ")


def test_jitckpt_never_writes_a_pickle_it_would_refuse_to_read(tmp_path, golden):
    from jitckpt.errors import SchemaError

    ckpt = jitckpt.load(golden, lazy=True)
    ckpt.extra["original"] = {"blob": b"x" * (17 << 20)}
    with pytest.raises(SchemaError, match="write it as .safetensors"):
        jitckpt.save(ckpt, tmp_path / "big.pth")
    assert not (tmp_path / "big.pth").exists() and not list(tmp_path.glob(".big*"))
