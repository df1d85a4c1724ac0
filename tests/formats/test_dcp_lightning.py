"""Lightning's own distributed checkpoints under FSDP2 (two CPU processes): what jitckpt reads from them equals
torch's own consolidation, the EMAs survive save and resume on any number of ranks, and a directory converted
from the original .pth resumes there."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import jitckpt
from jitckpt import api
from jitckpt.formats import dcp_metadata

SCRIPT = Path(__file__).with_name("dcp_train.py")
GOLDEN = Path(__file__).parents[1] / "fixtures" / "original" / "checkpoint-last.pth"


def launch(out: Path, devices: int, *scenarios: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parents[2])}
    result = subprocess.run([sys.executable, str(SCRIPT), str(out), str(devices), *scenarios], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def result(out: Path, name: str) -> dict:
    error = out / f"{name}.err"
    assert not error.exists(), error.read_text()
    return torch.load(out / f"{name}.pt", weights_only=False)


def rank_zero_shard(full: torch.Tensor) -> torch.Tensor:
    """What FSDP2's Shard(0) gives rank 0 of 2 (torch.chunk)."""
    return full.chunk(2, dim=0)[0].clone()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One launch of two processes: an uninterrupted run, a run saved after epoch 0 and resumed in a new Trainer,
    and resumes from the golden .pth converted to a DCP directory (3 files) and, under DDP, to a Lightning .ckpt."""
    out = tmp_path_factory.mktemp("dcp-lightning")
    api.convert(GOLDEN, out / "golden.dcp", shards=3)
    api.convert(GOLDEN, out / "golden.ckpt")
    part = out / "part" / "epoch=0-step=3.ckpt"
    launch(out, 2, "full:2", "part:1", "filepart:1", f"resumed:2:{part}", f"loaded:2:{out / 'golden.dcp'}",
           f"golden:3:{out / 'golden.dcp'}", f"ddpgolden:3:{out / 'golden.ckpt'}")
    return out


def test_an_interrupted_and_resumed_run_ends_with_the_uninterrupted_emas(runs):
    full, resumed, part = result(runs, "full"), result(runs, "resumed"), result(runs, "part")
    assert (resumed["global_step"], resumed["steps"]) == (full["global_step"], full["steps"]) == (6, {6.0})
    for key in ("raw", "ema1", "ema2"):
        assert all(torch.equal(resumed[key][n], t) for n, t in full[key].items()), key
    # what loading rank zero's shards on every rank (Lightning's meta.pt before the fix) would have given differs
    weight = "net.blocks.0.mlp.w12.weight"
    assert not torch.equal(rank_zero_shard(part["ema1"][weight]).repeat(2, 1), part["ema1"][weight])


def test_a_full_file_saved_under_fsdp2_holds_the_gathered_emas(runs):
    """With save_distributed_checkpoint=False Lightning gathers the module; EMACallback gathers its EMAs too."""
    saved, part = jitckpt.load(runs / "filepart" / "epoch=0-step=3.ckpt"), result(runs, "part")
    for version in ("ema1", "ema2"):
        section = getattr(saved, f"model_{version}")
        assert all(torch.equal(section[name], value) for name, value in part[version].items()), version


def test_jitckpt_reads_lightnings_directory_as_torch_consolidates_it(runs, tmp_path):
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    folder = runs / "part" / "epoch=0-step=3.ckpt"
    assert jitckpt.detect_format(folder) == "dcp"
    ours = jitckpt.load(api.convert(folder, tmp_path / "full.pth"))
    dcp_to_torch_save(folder, tmp_path / "torch.pt")
    theirs = torch.load(tmp_path / "torch.pt", weights_only=False)
    state, optimizer = theirs["state_dict"], theirs["optimizer_0"]["state"]
    assert all(torch.equal(state[name], value) for name, value in ours.model.items())
    for version in ("ema1", "ema2"):
        section = getattr(ours, f"model_{version}")
        assert all(torch.equal(state[f"jitckpt:{version}/{name}"], value) for name, value in section.items())
    assert len(ours.optimizer["state"]) == len(optimizer) == 56
    assert all(torch.equal(optimizer[name][slot], value) for name, slots in ours.optimizer["state"].items()
               for slot, value in slots.items())
    part = result(runs, "part")  # and the EMAs are the run's own, gathered
    assert all(torch.equal(ours.model_ema1[name], value) for name, value in part["ema1"].items())
    assert (ours.epoch, ours.global_step) == (0, 3)


def test_a_directory_converted_from_the_original_loads_and_resumes_under_fsdp2(runs):
    golden = jitckpt.load(GOLDEN)
    loaded = result(runs, "loaded")  # max_epochs reached: restored, not trained
    assert loaded["steps"] == {6.0}
    for key, section in (("raw", golden.model), ("ema1", golden.model_ema1), ("ema2", golden.model_ema2)):
        assert all(torch.equal(loaded[key][name], section[name]) for name in loaded[key]), key
    from_dcp, from_ckpt = result(runs, "golden"), result(runs, "ddpgolden")
    assert (from_dcp["epoch"], from_dcp["global_step"], from_dcp["steps"]) == (3, 9, {9.0})
    for key in ("raw", "ema1", "ema2"):  # the run DDP makes from the .ckpt (reductions in another order); EMAs moved on
        for name, tensor in from_ckpt[key].items():
            torch.testing.assert_close(from_dcp[key][name], tensor, rtol=0, atol=1e-8)
        assert not torch.equal(from_dcp[key]["net.blocks.0.mlp.w12.weight"], loaded[key]["net.blocks.0.mlp.w12.weight"])


def test_the_saved_directory_resumes_on_one_process(runs):
    launch(runs, 1, f"one:1:{runs / 'part' / 'epoch=0-step=3.ckpt'}")  # restored, resharded from 2 ranks to 1
    one, part = result(runs, "one"), result(runs, "part")
    for key in ("raw", "ema1", "ema2"):
        assert all(torch.equal(one[key][n], t) for n, t in part[key].items()), key


def test_emas_of_rank_zero_only_are_refused_on_resume(runs):
    """A directory as Lightning wrote it before the fix: meta.pt holds rank zero's EMA shards."""
    import shutil

    old = runs / "old" / "epoch=0-step=3.ckpt"
    shutil.copytree(runs / "part" / "epoch=0-step=3.ckpt", old)
    part = result(runs, "part")
    meta = torch.load(old / "meta.pt", weights_only=False)
    state = meta["callbacks"]["EMACallback"]
    del state["sharded"]
    for version in ("ema1", "ema2"):
        state[version] = {name: rank_zero_shard(t) for name, t in part[version].items()}
    torch.save(meta, old / "meta.pt")
    layout = dcp_metadata.parse((old / ".metadata").read_bytes(), "m")  # and no EMAs among the shards
    for key in [k for k in layout.items if "jitckpt:ema" in k]:
        del layout.items[key], layout.paths[key]
    layout.locations = {k: v for k, v in layout.locations.items() if k[0] in layout.items}
    with open(old / ".metadata", "wb") as handle:
        dcp_metadata.write(layout, handle)
    launch(runs, 2, f"oldresume:2:{old}")
    error = (runs / "oldresume.err").read_text()
    assert "holds one rank's shard" in error and "consolidated .pth" in error
    with pytest.raises(jitckpt.JiTCheckpointError, match="meta.pt holds only rank zero's shards of the EMAs"):
        jitckpt.load(old)
