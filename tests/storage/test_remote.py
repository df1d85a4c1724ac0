"""Checkpoints read from elsewhere: ``http://`` by range requests (a local server on 127.0.0.1) and any fsspec
URL (``memory://``), with the bounds, checksums and one-line errors of local files."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

import jitckpt
from jitckpt.cli import app
from jitckpt.storage import remote, sources
from tests import wild
from tests.helpers import GOLDEN, sha256, sparse_jit_b16_checkpoint
from tests.remote_server import serving

runner = CliRunner()


@pytest.fixture
def served(tmp_path):
    """The golden checkpoint, its safetensors and DCP conversions and a diffusers folder, served over HTTP."""
    root = tmp_path / "served"
    root.mkdir()
    shutil.copyfile(GOLDEN, root / "checkpoint-last.pth")
    jitckpt.convert(GOLDEN, root / "full.safetensors")
    jitckpt.convert(GOLDEN, root / "state.dcp", shards=2)
    wild.diffusers_folder(root / "JiT-T-4", split=True)
    with serving(root) as (server, base):
        yield root, server, base


def test_inspect_over_http_reads_only_the_structure_and_says_what_inspect_of_the_file_says(served):
    root, server, base = served
    local = runner.invoke(app, ["inspect", str(root / "checkpoint-last.pth")])
    remote = runner.invoke(app, ["inspect", f"{base}/checkpoint-last.pth"])
    assert remote.exit_code == 0, remote.output
    after_file_row = lambda out: out[out.index("\nformat"):]  # noqa: E731 (the file row folds another path)
    assert after_file_row(remote.stdout) == after_file_row(local.stdout) and "(3.1 MB)" in remote.stdout
    size = (root / "checkpoint-last.pth").stat().st_size
    # the end record, the central directory, data.pkl and each entry's local header: no tensor bytes
    assert server.bytes_sent < 200_000 < size, (server.bytes_sent, size)


def test_inspect_of_a_2_63_gb_jit_b16_checkpoint_over_http_transfers_under_1_mb(tmp_path):
    size = sparse_jit_b16_checkpoint(tmp_path / "jit-b16.pth")  # holes where the tensor bytes go
    assert size > 2_600_000_000
    with serving(tmp_path) as (server, base):
        result = runner.invoke(app, ["inspect", f"{base}/jit-b16.pth"])
    assert result.exit_code == 0, result.output
    assert "JiT-B/16" in result.stdout and "(2.6 GB)" in result.stdout and "182 params with state" in result.stdout
    assert server.bytes_sent < 1_000_000, server.bytes_sent


def test_the_local_headers_of_a_remote_zip_are_asked_for_over_several_connections_at_once(served):
    """A round trip per zip entry would make inspect of a large .pth on a distant server slower than its
    download: the headers go out over several connections, each answer held back as a network would."""
    root, server, base = served
    near = runner.invoke(app, ["inspect", f"{base}/checkpoint-last.pth"])
    assert near.exit_code == 0 and server.most_at_once == 1  # no round trip to save: one connection
    sources.forget()
    server.delay_s = 0.01
    result = runner.invoke(app, ["inspect", f"{base}/checkpoint-last.pth"])
    assert result.exit_code == 0, result.output
    assert server.most_at_once == remote.PARALLEL_REQUESTS > 1, server.most_at_once
    local = runner.invoke(app, ["inspect", str(root / "checkpoint-last.pth")])
    assert result.stdout[result.stdout.index("\nformat"):] == local.stdout[local.stdout.index("\nformat"):]


def test_concurrent_header_reads_still_catch_a_file_changed_between_requests(served):
    root, server, base = served
    server.misbehave, server.delay_s = "etag-change", 0.005  # from the second range answer on, another version
    result = runner.invoke(app, ["inspect", f"{base}/checkpoint-last.pth"])
    assert result.exit_code == 2 and "changed on the server while it was being read" in result.stderr, result.output
    assert result.stderr.count("\n") == 1


def test_a_failure_on_one_connection_is_said_at_once_though_another_is_stalled(served):
    root, server, base = served
    server.delay_s, server.stall_on = 0.01, {12}  # one answer would come a minute late
    server.misbehave, server.misbehave_from = "wrong-range", 20
    started = time.monotonic()
    result = runner.invoke(app, ["inspect", f"{base}/checkpoint-last.pth"])
    assert result.exit_code == 2 and "sent another range than asked" in result.stderr, result.output
    assert time.monotonic() - started < server.stall_s / 2  # the stalled connection was cut, not waited for


def test_ctrl_c_during_parallel_reads_ends_the_command_at_once(served):
    root, server, base = served
    server.delay_s, server.stall_together = 0.01, True  # once several connections ask, each answer is a minute late
    process = subprocess.Popen([sys.executable, "-m", "jitckpt", "inspect", f"{base}/checkpoint-last.pth"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while server.most_at_once < remote.PARALLEL_REQUESTS and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.most_at_once == remote.PARALLEL_REQUESTS
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=server.stall_s / 2)  # not after the stalled answers
    assert process.returncode == 130 and stderr == "error: interrupted\n", (process.returncode, stderr)


def test_a_damaged_local_header_costs_one_batch_of_requests_not_one_per_entry(tmp_path):
    import zipfile

    from jitckpt.torchfile.archive import HEADER_BATCH

    sparse_jit_b16_checkpoint(tmp_path / "whole.pth")
    with zipfile.ZipFile(tmp_path / "whole.pth") as archive:
        headers = [info.header_offset for info in archive.infolist()]
    assert len(headers) > 5 * HEADER_BATCH
    with open(tmp_path / "whole.pth", "r+b") as f:  # the third entry's local header: no longer a header
        f.seek(headers[2])
        f.write(b"PK\x09\x09")
    with serving(tmp_path) as (server, base):
        server.delay_s = 0.005  # a network: the headers go out over several connections
        result = runner.invoke(app, ["inspect", f"{base}/whole.pth"])
    assert result.exit_code == 2 and "bad local header" in result.stderr, result.output
    assert server.requests < 2 * HEADER_BATCH < len(headers), server.requests


@pytest.mark.parametrize("source", ["checkpoint-last.pth", "full.safetensors", "state.dcp", "JiT-T-4"])
def test_convert_from_a_url_is_bitwise_the_local_conversion(served, tmp_path, source):
    root, server, base = served
    jitckpt.convert(root / source, tmp_path / "local.safetensors")
    result = runner.invoke(app, ["convert", f"{base}/{source}", "-o", str(tmp_path / "remote.safetensors")])
    assert result.exit_code == 0, result.output
    assert sha256(tmp_path / "remote.safetensors") == sha256(tmp_path / "local.safetensors")
    stored = sum(p.stat().st_size for p in [root / source, *(root / source).rglob("*")] if p.is_file())
    assert server.bytes_sent <= stored * 1.05, (server.bytes_sent, stored)  # every byte transferred once


def test_verify_of_a_url_checks_every_crc_and_finds_a_damaged_byte(served):
    root, server, base = served
    good = runner.invoke(app, ["verify", f"{base}/checkpoint-last.pth"])
    assert good.exit_code == 0 and good.stdout.startswith("intact:"), good.output
    from jitckpt.torchfile.archive import read_archive
    from tests.craft import flip_bit

    entry = max(read_archive(str(GOLDEN)).entries.values(), key=lambda e: e.size)
    flip_bit(GOLDEN, entry.offset + 5, root / "bad.pth")
    bad = runner.invoke(app, ["verify", f"{base}/bad.pth"])
    assert bad.exit_code == 1 and "CRC-32 mismatch" in bad.stdout


@pytest.mark.parametrize("misbehaviour, said", [
    ("truncate", "the transfer was cut short"),
    ("long", "sent more bytes than asked for"),
    ("ignore-range", "ignores range requests"),
    ("etag-change", "changed on the server while it was being read"),
    ("wrong-range", "sent another range than asked"),
])
def test_a_lying_server_gets_one_line_and_no_output_file(served, tmp_path, misbehaviour, said):
    root, server, base = served
    server.misbehave = misbehaviour
    out = tmp_path / "out.safetensors"
    result = runner.invoke(app, ["convert", f"{base}/checkpoint-last.pth", "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and said in result.stderr and f"{base}/checkpoint-last.pth" in result.stderr
    assert list(tmp_path.iterdir()) == [root], "an output or a temporary file was left behind"
    server.misbehave = ""
    sources.forget()
    again = runner.invoke(app, ["convert", f"{base}/checkpoint-last.pth", "-o", str(out)])
    assert again.exit_code == 0, again.output  # a second run starts clean


def test_a_missing_url_is_one_line(served):
    _, _, base = served
    result = runner.invoke(app, ["inspect", f"{base}/nope.pth"])
    assert result.exit_code == 2 and result.stderr == f"error: {base}/nope.pth: no such file on the server (HTTP 404)\n"


def test_any_fsspec_url_reads_through_fsspec(tmp_path):
    import fsspec

    memory = fsspec.filesystem("memory")
    memory.pipe("/jit/checkpoint-last.pth", GOLDEN.read_bytes())
    try:
        remote = jitckpt.load("memory://jit/checkpoint-last.pth")
        local = jitckpt.load(GOLDEN)
        assert remote.epoch == local.epoch and remote.arch == local.arch
        for name, tensor in local.model.items():
            assert torch.equal(remote.model[name], tensor)
        result = runner.invoke(app, ["inspect", "memory://jit/nope.pth"])
        assert result.exit_code == 2 and result.stderr.startswith("error: memory://jit/nope.pth: no such file")
    finally:
        memory.rm("/jit", recursive=True)
        sources.forget()


def test_lightning_resumes_from_a_url_as_from_the_local_file(served, tmp_path):
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from jitckpt.callbacks import EMACallback
    from jitckpt.lightning import JiTCheckpointIO, JiTLightningModule
    from tests.helpers import FIXTURES

    root, _, base = served
    golden = jitckpt.load(GOLDEN, lazy=True)
    data = torch.load(FIXTURES / "train_data.pt")
    trained = []
    for ckpt_path in (str(root / "checkpoint-last.pth"), f"{base}/checkpoint-last.pth"):
        torch.manual_seed(0)
        module = JiTLightningModule.from_args(golden.args, arch=golden.arch)
        loader = DataLoader(TensorDataset(data["images"], data["labels"]), batch_size=4, drop_last=True)
        trainer = L.Trainer(max_epochs=golden.epoch + 2, accelerator="cpu", logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                            plugins=[JiTCheckpointIO()], callbacks=[EMACallback()])
        trainer.fit(module, loader, ckpt_path=ckpt_path)
        assert trainer.current_epoch == golden.epoch + 2
        trained.append({k: v.clone() for k, v in module.state_dict().items()})
    assert all(torch.equal(trained[0][k], trained[1][k]) for k in trained[0])


def test_sample_and_export_of_a_url_write_what_they_write_for_the_local_file(served, tmp_path):
    root, _, base = served
    outputs = {}
    for where, source in (("local", str(root / "checkpoint-last.pth")), ("remote", f"{base}/checkpoint-last.pth")):
        grid, folder = tmp_path / f"{where}.png", tmp_path / f"{where}-export"
        sampled = runner.invoke(app, ["sample", source, "--classes", "1,2", "--steps", "2", "-o", str(grid)])
        exported = runner.invoke(app, ["export", source, "-o", str(folder), "--no-samples"])
        assert sampled.exit_code == 0 and exported.exit_code == 0, (sampled.output, exported.output)
        from safetensors import safe_open

        with safe_open(folder / "model.safetensors", "pt") as weights:
            tensors = {k: weights.get_tensor(k) for k in weights.keys()}
        outputs[where] = (sha256(grid), tensors)  # (config.json names the source, so its digest differs)
    assert outputs["local"][0] == outputs["remote"][0]  # the same grid, byte for byte
    assert outputs["local"][1].keys() == outputs["remote"][1].keys()
    assert all(torch.equal(v, outputs["remote"][1][k]) for k, v in outputs["local"][1].items())



def test_the_lightning_plugin_passes_its_storage_options_to_fsspec(monkeypatch):
    import fsspec
    import fsspec.core

    from jitckpt.lightning import JiTCheckpointIO

    seen = []
    real = fsspec.core.url_to_fs
    monkeypatch.setattr(fsspec.core, "url_to_fs", lambda url, **options: (seen.append(options), real(url, **options))[1])
    memory = fsspec.filesystem("memory")
    memory.pipe("/io/checkpoint-last.pth", GOLDEN.read_bytes())
    try:
        loaded = JiTCheckpointIO(storage_options={"skip_instance_cache": True}).load_checkpoint(
            "memory://io/checkpoint-last.pth")
        assert loaded["epoch"] == jitckpt.load(GOLDEN, lazy=True).epoch
        assert seen and all(options == {"skip_instance_cache": True} for options in seen)
    finally:
        memory.rm("/io", recursive=True)
        sources.forget()


def test_a_redirect_whose_body_never_ends_is_followed_without_reading_it(served, tmp_path):
    root, server, base = served
    server.misbehave = "redirect-endless"
    result = runner.invoke(app, ["convert", f"{base}/checkpoint-last.pth", "-o", str(tmp_path / "x.safetensors")])
    assert result.exit_code == 0, result.output
    jitckpt.convert(root / "checkpoint-last.pth", tmp_path / "local.safetensors")
    assert sha256(tmp_path / "x.safetensors") == sha256(tmp_path / "local.safetensors")


def test_a_server_that_drips_is_cut_off_at_the_deadline(served, tmp_path, monkeypatch):
    import time

    from jitckpt.storage import remote

    _, server, base = served
    monkeypatch.setattr(remote, "DEADLINE_S", 1)
    server.misbehave = "drip"
    started = time.monotonic()
    result = runner.invoke(app, ["inspect", f"{base}/checkpoint-last.pth"])
    assert result.exit_code == 2 and "took more than 1 s to answer" in result.stderr, result.output
    assert time.monotonic() - started < 10


def test_a_file_missing_then_uploaded_or_replaced_is_read_as_it_is_now(served, tmp_path):
    root, _, base = served
    url = f"{base}/later.pth"
    with pytest.raises(jitckpt.errors.SourceError, match="HTTP 404"):
        jitckpt.load(url, lazy=True)
    shutil.copyfile(GOLDEN, root / "later.pth")
    assert jitckpt.load(url).epoch == jitckpt.load(GOLDEN, lazy=True).epoch  # not the 404 kept from before
    jitckpt.convert(GOLDEN, root / "later.pth", to="pth", force=True, drop_optimizer=True)  # replaced: new ETag
    assert jitckpt.load(url, lazy=True).optimizer is None  # read as the server holds it now


@pytest.mark.parametrize("url, said", [
    ("http://user:s3cret@127.0.0.1:9/x.pth", "http://user:***@127.0.0.1:9/x.pth: credentials in a URL are not sent"),
    ("zip://x.pth::http://127.0.0.1:9/a.zip", "a chained address over http(s)"),
    ("http://127.0.0.1:99999/x.pth", "cannot read from the server"),
])
def test_addresses_it_will_not_use_are_one_line_naming_why(url, said):
    result = runner.invoke(app, ["inspect", url])
    assert result.exit_code == 2 and said in result.stderr and result.stderr.count("\n") == 1, result.output
    assert "s3cret" not in result.stderr


def test_a_folder_url_keeps_its_query_at_the_end():
    assert sources.join("https://host/run/state.dcp?sig=abc", ".metadata") == \
        "https://host/run/state.dcp/.metadata?sig=abc"
