"""The DCP directory format: written for torch, read safely, round trips bit for bit, hostile directories refused."""

import json
import os
import pickle
import shutil

import pytest
import torch

import jitckpt
from jitckpt import api
from jitckpt.cli import EXIT_DIFFERENT, EXIT_ERROR, app
from jitckpt.errors import FormatError, JiTCheckpointError, OutputError, UnsafePickleError
from jitckpt.formats import dcp_metadata
from jitckpt.tensors.sharded import Piece, ShardedTensor, assemble
from jitckpt.inspection.summary import summarize
from jitckpt.torchfile.read import read_tree
from typer.testing import CliRunner

FORMATS = {"pth": "x.pth", "ckpt": "x.ckpt", "safetensors": "x.safetensors", "dcp": "x.dcp"}


def tensors_equal(a, b) -> bool:
    ta, tb = dict(api.iter_tensors(a)), dict(api.iter_tensors(b))
    return ta.keys() == tb.keys() and all(ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k]) for k in ta)


@pytest.fixture
def golden_dcp(golden, tmp_path):
    return api.convert(golden, tmp_path / "golden.dcp", shards=3)


def test_a_written_directory_holds_the_same_state_bit_for_bit(golden, golden_dcp):
    assert sorted(os.listdir(golden_dcp)) == [".metadata", "__0_0.distcp", "__1_0.distcp", "__2_0.distcp", "meta.pt"]
    assert jitckpt.detect_format(golden_dcp) == "dcp"
    a, b = jitckpt.load(golden), jitckpt.load(golden_dcp)
    assert api.compare(a, b) == []
    assert tensors_equal(a, b)
    assert (b.epoch, b.global_step, b.args) == (a.epoch, a.global_step, a.args)


@pytest.mark.parametrize("first", sorted(FORMATS))
@pytest.mark.parametrize("second", sorted(FORMATS))
def test_round_trips_through_every_pair_of_formats(golden, tmp_path, first, second):
    one = api.convert(golden, tmp_path / f"1-{FORMATS[first]}", to=first)
    two = api.convert(one, tmp_path / f"2-{FORMATS[second]}", to=second)
    back = api.convert(two, tmp_path / "3-back.pth", to="pth")
    assert tensors_equal(jitckpt.load(golden), jitckpt.load(back))
    assert api.compare(jitckpt.load(golden, lazy=True), jitckpt.load(back, lazy=True)) == []


def test_torch_reads_what_jitckpt_writes(golden, golden_dcp, tmp_path):
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(golden_dcp, tmp_path / "torch.pt")
    full = torch.load(tmp_path / "torch.pt", weights_only=False)
    saved = jitckpt.load(golden)
    assert all(torch.equal(full["state_dict"][k], v) for k, v in saved.model.items())
    assert all(torch.equal(full["state_dict"]["jitckpt:ema2/" + k], v) for k, v in saved.model_ema2.items())
    state = full["optimizer_0"]["state"]
    assert all(torch.equal(state[name][slot], value) for name, s in saved.optimizer["state"].items()
               for slot, value in s.items())
    groups = full["optimizer_0"]["param_groups"]
    assert [g["params"] for g in groups] == [g["params"] for g in saved.optimizer["param_groups"]]
    meta = torch.load(golden_dcp / "meta.pt", weights_only=True)  # Lightning loads it with torch.load
    assert meta["callbacks"]["EMACallback"]["sharded"] is True and "ema1" not in meta["callbacks"]["EMACallback"]


def test_a_plain_dcp_save_of_model_and_optimizer_is_read(golden, tmp_path):
    import torch.distributed.checkpoint as dcp

    saved = jitckpt.load(golden)
    bare = {k[len("net."):]: v for k, v in saved.model.items()}  # get_model_state_dict of the JiT itself
    dcp.save({"model": bare, "optim": saved.optimizer, "epoch": 7}, checkpoint_id=tmp_path / "plain")
    read = jitckpt.load(tmp_path / "plain")
    assert read.epoch == 7 and read.model_ema1 is None
    assert all(torch.equal(read.model[k], v) for k, v in saved.model.items())
    assert all(torch.equal(read.optimizer["state"][n]["exp_avg"], s["exp_avg"])
               for n, s in saved.optimizer["state"].items())


def test_inspect_a_directory_gives_the_fields_of_a_file(golden, golden_dcp):
    of_dir, of_file = summarize(golden_dcp), summarize(golden)
    assert set(of_dir) == set(of_file)
    # what describes the state agrees too; only what describes the container (and the layout's stored
    # in_context_start, which the original file lacks and so warns about) differs
    container = {"path", "format", "format_description", "file_size", "schema_version", "layout",
                 "layout_description", "warnings"}
    assert {k: v for k, v in of_dir.items() if k not in container} == {
        k: v for k, v in of_file.items() if k not in container}
    assert of_dir["format"] == "dcp" and of_dir["checksummed"] and of_dir["epoch"] == of_file["epoch"]
    assert of_dir["file_size"] == sum(p.stat().st_size for p in golden_dcp.iterdir())
    result = CliRunner().invoke(app, ["inspect", str(golden_dcp), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["sections"] == {"raw": True, "ema1": True, "ema2": True}


# ---------------------------------------------------------------------------------------------- pieces


def _pieces(tmp_path, full, splits):
    """Pieces of ``full`` cut at ``splits`` ((offsets, sizes) each), stored as torch.save files."""
    pieces = []
    for i, (offsets, sizes) in enumerate(splits):
        part = full[tuple(slice(o, o + n) for o, n in zip(offsets, sizes))].clone()
        torch.save(part, tmp_path / f"p{i}.pt")
        pieces.append(Piece(read_tree(str(tmp_path / f"p{i}.pt")), offsets))
    return pieces


def test_slabs_along_dim_0_stream_into_the_full_tensor(tmp_path):
    full = torch.randn(10, 3)
    ref = assemble("w", "float32", (10, 3), _pieces(tmp_path, full, [((6, 0), (4, 3)), ((0, 0), (6, 3)),
                                                                    ((10, 0), (0, 3))]), "d")
    assert isinstance(ref, ShardedTensor) and ref.is_slabs and ref.checksummed
    with open(tmp_path / "out.bin", "w+b") as handle:
        ref.copy_to(handle)
    assert (tmp_path / "out.bin").read_bytes() == full.numpy().tobytes()
    assert torch.equal(ref.to_torch(), full) and ref.crc32() == __import__("zlib").crc32(full.numpy().tobytes())


def test_other_layouts_are_assembled_in_memory(tmp_path):
    full = torch.randn(4, 6)
    ref = assemble("w", "float32", (4, 6), _pieces(tmp_path, full, [((0, 0), (4, 2)), ((0, 2), (4, 4))]), "d")
    assert not ref.is_slabs and torch.equal(ref.to_torch(), full)
    assert b"".join(bytes(b) for b in ref.iter_bytes(chunk=7)) == full.numpy().tobytes()


@pytest.mark.parametrize("splits,message", [
    ([((0, 0), (3, 3))], "cover 9 of its 30 elements"),
    ([((0, 0), (6, 3)), ((5, 0), (5, 3))], "overlap"),
    ([((0, 0), (10, 3)), ((8, 0), (4, 3))], "lies outside"),
])
def test_pieces_that_do_not_tile_the_tensor_are_an_error_naming_it(tmp_path, splits, message):
    big = torch.randn(12, 3)
    with pytest.raises(FormatError, match=rf"tensor 'net\.w'.*{message}|{message}.*tensor 'net\.w'|"
                                          rf"net\.w.*{message}"):
        assemble("net.w", "float32", (10, 3), _pieces(tmp_path, big, splits), "d")


# ---------------------------------------------------------------------------------------------- hostile


def test_a_malicious_metadata_runs_nothing(golden_dcp, tmp_path, monkeypatch):
    canary = tmp_path / "canary"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {canary}",))

    (golden_dcp / ".metadata").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(UnsafePickleError, match="golden.dcp/.metadata.*'posix.system'.*nothing in the file was run"):
        jitckpt.load(golden_dcp)
    result = CliRunner().invoke(app, ["inspect", str(golden_dcp)])
    assert result.exit_code == EXIT_ERROR and len(result.stderr.strip().splitlines()) == 1
    assert not canary.exists()


def _rewrite_metadata(folder, change):
    layout = dcp_metadata.parse((folder / ".metadata").read_bytes(), "m")
    change(layout)
    with open(folder / ".metadata", "wb") as handle:
        dcp_metadata.write(layout, handle)


@pytest.mark.parametrize("change,message", [
    (lambda l: l.locations.update({k: v.__class__("../../etc/passwd", v.offset, v.length)
                                   for k, v in list(l.locations.items())[:1]}), "not a file name in the checkpoint"),
    (lambda l: l.locations.update({k: v.__class__(v.file, v.offset, v.length + 10 ** 9)
                                   for k, v in list(l.locations.items())[:1]}), "run past the file's end"),
    (lambda l: l.locations.update({k: v.__class__(v.file, v.offset + 1, v.length)
                                   for k, v in list(l.locations.items())[:1]}),
     "corrupt or truncated torch zip|share bytes"),  # moved by a byte: it reaches into the next piece
    (lambda l: l.locations.pop(next(iter(l.locations))), "not where it is stored"),
])
def test_a_damaged_metadata_is_one_error(golden_dcp, change, message):
    _rewrite_metadata(golden_dcp, change)
    with pytest.raises(FormatError, match=message):
        jitckpt.load(golden_dcp)


def test_missing_and_truncated_shard_files_are_one_error_naming_them(golden_dcp):
    os.truncate(golden_dcp / "__1_0.distcp", 1000)
    with pytest.raises(FormatError, match="__1_0.distcp"):
        jitckpt.load(golden_dcp)
    os.remove(golden_dcp / "__1_0.distcp")
    result = CliRunner().invoke(app, ["verify", str(golden_dcp)])
    assert result.exit_code == EXIT_ERROR
    assert result.stderr.strip() == f"error: {golden_dcp}/__1_0.distcp: shard file is missing or not a regular file (.metadata stores data there)"


def test_verify_names_the_damaged_tensor_of_a_directory(golden_dcp):
    layout = dcp_metadata.parse((golden_dcp / ".metadata").read_bytes(), "m")
    key = "state_dict.net.blocks.1.mlp.w12.weight"
    where = layout.locations[(key, (0, 0))]
    with open(golden_dcp / where.file, "r+b") as handle:  # a byte in the middle of the tensor's data
        handle.seek(where.offset + where.length - 5000)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    result = CliRunner().invoke(app, ["verify", str(golden_dcp)])
    assert result.exit_code == EXIT_DIFFERENT, result.output
    assert f"damaged: {golden_dcp}" in result.stdout and key in result.stdout
    with pytest.raises(JiTCheckpointError, match="damaged"):
        api.convert(golden_dcp, golden_dcp.parent / "out.safetensors")


# ---------------------------------------------------------------------------------------------- writing


def test_an_existing_directory_is_replaced_only_with_force(golden, golden_dcp):
    before = sorted(os.listdir(golden_dcp))
    with pytest.raises(OutputError, match="already exists; pass force=True"):
        api.convert(golden, golden_dcp, to="dcp")
    api.convert(golden, golden_dcp, to="dcp", force=True)
    assert sorted(os.listdir(golden_dcp)) == [".metadata", "__0_0.distcp", "meta.pt"] != before
    assert [p.name for p in golden_dcp.parent.iterdir() if p.name.startswith(".")] == []


def test_a_failed_write_leaves_nothing_behind(golden, tmp_path, monkeypatch):
    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OutputError, match="cannot write .*out.dcp.*No space left"):
        api.convert(golden, tmp_path / "out.dcp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-last.pth"]


def test_shards_share_the_bytes(golden, tmp_path):
    folder = api.convert(golden, tmp_path / "four.dcp", shards=4)
    sizes = [(folder / f"__{i}_0.distcp").stat().st_size for i in range(4)]
    assert max(sizes) < 1.5 * min(sizes)
    with pytest.raises(FormatError, match="--shards must be between 1 and"):
        api.convert(golden, tmp_path / "zero.dcp", shards=0)
    shutil.rmtree(folder)


def test_a_bare_state_dict_reads_and_unknown_tensors_are_named_not_dropped_silently(golden, tmp_path):
    import torch.distributed.checkpoint as dcp

    saved = jitckpt.load(golden)
    dcp.save(dict(saved.model), checkpoint_id=tmp_path / "bare")
    assert all(torch.equal(jitckpt.load(tmp_path / "bare").model[k], v) for k, v in saved.model.items())
    dcp.save({"model": dict(saved.model), "ema": dict(saved.model_ema1)}, checkpoint_id=tmp_path / "extra")
    assert any("'ema'" in w and "not read, converted or written" in w for w in jitckpt.load(tmp_path / "extra").warnings)
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "extra"), "-o", str(tmp_path / "x.pth")])
    assert result.exit_code == 0 and "warning:" in result.stderr and "'ema'" in result.stderr
    # verify checks every stored byte, mapped or not
    layout = dcp_metadata.parse((tmp_path / "extra" / ".metadata").read_bytes(), "m")
    where = layout.locations[("ema.net.blocks.1.mlp.w12.weight", (0, 0))]
    with open(tmp_path / "extra" / where.file, "r+b") as handle:
        handle.seek(where.offset + where.length - 5000)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    result = CliRunner().invoke(app, ["verify", str(tmp_path / "extra")])
    assert result.exit_code == EXIT_DIFFERENT and "ema.net.blocks.1.mlp.w12.weight" in result.stdout
