"""Evaluation finds its inputs as the original does: ``fid_stats/jit_in{img_size}_stats.npz`` in the working
directory, torch-fidelity's Inception weights in torch's hub cache; ``fetch-inception`` puts them there."""

import functools
from dataclasses import replace
import hashlib
import http.server
import json
import shutil
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from jitckpt.callbacks import EMACallback, FIDEvaluationCallback
from jitckpt.cli import app
from jitckpt.errors import JiTCheckpointError
from jitckpt.evaluation import fetch as fetch_module
from jitckpt.evaluation.fetch import WEIGHTS_NAME, hub_dir, hub_weights_path
from jitckpt.evaluation.inception import weights_path
from tests.evaluation.test_fid_callback import fit
from tests.helpers import GOLDEN

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working directory holding ``fid_stats/jit_in16_stats.npz``, made with ``jitckpt fid-stats``."""
    rng = np.random.default_rng(3)
    (tmp_path / "ref").mkdir()
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "ref" / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def make_stats(inception_weights, img_size=16):
    Path("fid_stats").mkdir(exist_ok=True)
    result = run("fid-stats", "ref", "-o", f"fid_stats/jit_in{img_size}_stats.npz", "--inception-weights",
                 inception_weights)
    assert result.exit_code == 0, result.output


@pytest.fixture
def hub_weights(empty_torch_home, inception_weights):
    """The random-Inception fixture where torch-fidelity keeps its weights, under the test's TORCH_HOME."""
    target = empty_torch_home / "hub" / "checkpoints" / WEIGHTS_NAME
    target.parent.mkdir(parents=True)
    shutil.copyfile(inception_weights, target)
    return target


def test_eval_finds_the_originals_statistics_in_the_working_directory(workdir, inception_weights):
    result = run("eval", GOLDEN, "--num-images", "10", "--batch-size", "10", "--steps", "1",
                 "--inception-weights", inception_weights, "--json", "r.json")
    assert result.exit_code == 0, result.output
    assert "fid" not in json.loads(Path("r.json").read_text())  # no statistics yet: Inception Score only
    make_stats(inception_weights)
    again = run("eval", GOLDEN, "--num-images", "10", "--batch-size", "10", "--steps", "1",
                "--inception-weights", inception_weights, "--json", "r.json")
    assert again.exit_code == 2 and "pass --force" in again.stderr  # an existing result is never replaced unasked
    result = run("eval", GOLDEN, "--num-images", "10", "--batch-size", "10", "--steps", "1",
                 "--inception-weights", inception_weights, "--json", "r.json", "--force")
    assert result.exit_code == 0, result.output
    saved = json.loads(Path("r.json").read_text())
    assert saved["fid"] > 0 and saved["reference"]["fid_stats"] == "fid_stats/jit_in16_stats.npz"
    assert "fid_stats/jit_in16_stats.npz" in result.stdout


def test_callback_finds_the_originals_statistics(workdir, inception_weights):
    with pytest.raises(JiTCheckpointError, match=r"needs fid_stats .*no fid_stats/jit_in16_stats\.npz"):
        fit(workdir, [EMACallback(), FIDEvaluationCallback(num_images=10, num_classes=10, img_size=16,
                                                           inception_weights=inception_weights)])
    make_stats(inception_weights)
    fid = FIDEvaluationCallback(eval_freq=1, num_images=10, batch_size=10, num_classes=10, img_size=16,
                                inception_weights=inception_weights, steps=1)
    fit(workdir, [EMACallback(), fid], epochs=1)
    assert fid.fid_stats == workdir / "fid_stats" / "jit_in16_stats.npz"
    assert fid.history and fid.history[0]["fid"] > 0


def test_seed_arguments_alone_start_training(workdir, inception_weights, hub_weights):
    make_stats(inception_weights)
    shutil.copyfile("fid_stats/jit_in16_stats.npz", "fid_stats/jit_in256_stats.npz")
    fid = FIDEvaluationCallback(eval_freq=40, num_images=50000, batch_size=256, num_classes=1000, img_size=256,
                                use_ema=True)
    fid.on_fit_start(SimpleNamespace(callbacks=[EMACallback(), fid]), None)  # what fit start checks
    assert fid.fid_stats == workdir / "fid_stats" / "jit_in256_stats.npz"


def test_inception_weights_from_torch_hub_cache(tmp_path, hub_weights, monkeypatch):
    assert weights_path(None) == hub_weights == hub_weights_path()
    result = run("eval", GOLDEN, "--num-images", "10", "--batch-size", "10", "--steps", "1", "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r.json").read_text())["inception_weights"]["path"] == str(hub_weights)
    monkeypatch.setenv("JITCKPT_INCEPTION_WEIGHTS", str(tmp_path / "elsewhere.pth"))  # an explicit choice wins
    with pytest.raises(JiTCheckpointError, match="elsewhere.pth.*no such file"):
        weights_path(None)


def test_hub_folder_without_torch_follows_torchs_rule(empty_torch_home, monkeypatch):
    with_torch = hub_dir()
    monkeypatch.delitem(sys.modules, "torch")
    assert hub_dir() == with_torch == empty_torch_home / "hub"
    monkeypatch.delenv("TORCH_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere")
    assert hub_dir() == Path("/somewhere/torch/hub")


def test_missing_weights_error_names_all_three_ways(empty_torch_home):
    result = run("eval", GOLDEN, "--num-images", "10")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for way in ("--inception-weights PATH", "JITCKPT_INCEPTION_WEIGHTS",
                str(empty_torch_home / "hub" / "checkpoints" / WEIGHTS_NAME), "jitckpt fetch-inception"):
        assert way in lines[0]


@pytest.fixture
def server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving ``tmp_path/served``, in a thread."""
    folder = tmp_path / "served"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_fetch_inception_downloads_into_the_hub_cache(server, empty_torch_home, monkeypatch):
    folder, base = server
    payload = bytes(range(256)) * 4099  # a small stand-in for the weights
    (folder / "w.pth").write_bytes(payload)
    monkeypatch.setattr(fetch_module, "INCEPTION", replace(fetch_module.INCEPTION, digest=hashlib.sha256(payload).hexdigest()))
    result = run("fetch-inception", "--url", f"{base}/w.pth")
    assert result.exit_code == 0, result.output
    target = empty_torch_home / "hub" / "checkpoints" / WEIGHTS_NAME
    assert target.read_bytes() == payload and str(target) in result.stdout
    assert [p.name for p in target.parent.iterdir()] == [WEIGHTS_NAME]  # no temporary file left
    result = run("fetch-inception", "--url", f"{base}/missing.pth")  # already there: nothing downloaded
    assert result.exit_code == 0 and "already there" in result.stdout, result.output
    assert weights_path(None) == target  # and evaluation finds it


def test_fetch_inception_wrong_checksum_leaves_nothing(server, empty_torch_home, monkeypatch):
    folder, base = server
    (folder / "w.pth").write_bytes(b"not the weights" * 1000)
    monkeypatch.setattr(fetch_module, "INCEPTION", replace(fetch_module.INCEPTION, digest="0" * 64))
    result = run("fetch-inception", "--url", f"{base}/w.pth")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "SHA-256" in lines[0] and "nothing was written" in lines[0], result.stderr
    assert not (empty_torch_home / "hub").exists() or not any((empty_torch_home / "hub").rglob("*.*"))
    assert not any(empty_torch_home.iterdir())  # the folders it made are gone as well
    result = run("fetch-inception", "--url", f"{base}/missing.pth")
    assert result.exit_code == 2 and "404" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.fixture
def hostile_server():
    """A server on 127.0.0.1 whose /endless never ends its body and whose /slow sends a byte a second."""
    import time

    class Hostile(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "ftp://127.0.0.1:9/weights.pth")
                self.end_headers()
                return
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(10_000 if self.path == "/endless" else 30):
                    self.wfile.write(b"x" * 65536 if self.path == "/endless" else b"x")
                    self.wfile.flush()
                    if self.path == "/slow":
                        time.sleep(1)
            except (BrokenPipeError, ConnectionResetError):
                pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_fetch_inception_is_bounded_in_size_time_and_scheme(hostile_server, empty_torch_home, monkeypatch):
    import time

    monkeypatch.setattr(fetch_module, "INCEPTION", replace(fetch_module.INCEPTION, max_bytes=1 << 20))
    monkeypatch.setattr(fetch_module, "DEADLINE_S", 2)
    for url, message in ((f"{hostile_server}/endless", "sent more than the 1048576 bytes"),
                         (f"{hostile_server}/slow", "took more than 2 s"),
                         ("file:///dev/zero", "only http:// and https:// addresses are fetched"),
                         (f"{hostile_server}/redirect", "not an http(s) address")):
        started = time.monotonic()
        result = run("fetch-inception", "--url", url)
        assert result.exit_code == 2 and message in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1 and time.monotonic() - started < 10
        assert not any(empty_torch_home.rglob("*"))  # no partial file, no folder it made


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_the_seeds_examples_run_unchanged_after_fetch_stats_and_fetch_inception(
        server, workdir, inception_weights, empty_torch_home, monkeypatch):
    """The seed README's callbacks, as written there, start once the two fetch commands have run (both files
    served from 127.0.0.1, each checked against its digest: the statistics by their git blob id)."""
    from jitckpt.callbacks import create_default_callbacks

    folder, base = server
    make_stats(inception_weights)
    stats = Path("fid_stats/jit_in16_stats.npz").read_bytes()
    shutil.rmtree("fid_stats")
    (folder / "jit_in256_stats.npz").write_bytes(stats)
    shutil.copyfile(inception_weights, folder / "inception.pth")
    monkeypatch.setitem(fetch_module.STATS, 256, replace(fetch_module.STATS[256], digest=_git_blob_id(stats)))
    weights = Path(inception_weights).read_bytes()  # random weights: not the published file's size or digest
    monkeypatch.setattr(fetch_module, "INCEPTION", replace(
        fetch_module.INCEPTION, digest=hashlib.sha256(weights).hexdigest(), max_bytes=len(weights)))
    with pytest.raises(JiTCheckpointError, match="needs fid_stats"):  # before: the seed's line stops
        FIDEvaluationCallback(eval_freq=40, num_images=50000, batch_size=256, num_classes=1000, img_size=256,
                              use_ema=True).on_fit_start(SimpleNamespace(callbacks=[EMACallback()]), None)
    result = run("fetch-stats", "--url", f"{base}/jit_in256_stats.npz")
    assert result.exit_code == 0 and "wrote fid_stats/jit_in256_stats.npz (git blob id verified)" in result.stdout
    assert run("fetch-inception", "--url", f"{base}/inception.pth").exit_code == 0
    # the seed's lines, unchanged
    fid = FIDEvaluationCallback(eval_freq=40, num_images=50000, batch_size=256, num_classes=1000, img_size=256,
                                use_ema=True)
    args = SimpleNamespace(online_eval=True)
    callbacks = create_default_callbacks(ema_decay1=0.9999, ema_decay2=0.9996, save_dir="./outputs/jit_b16_256",
                                         eval_freq=40, img_size=256, epochs=600, enable_fid_eval=args.online_eval)
    for callback in (fid, next(c for c in callbacks if isinstance(c, FIDEvaluationCallback))):
        callback.on_fit_start(SimpleNamespace(callbacks=[EMACallback(), callback]), None)
        assert callback.fid_stats == workdir / "fid_stats" / "jit_in256_stats.npz"


def test_fetch_stats_refuses_a_file_whose_blob_id_differs(server, workdir):
    folder, base = server
    (folder / "stats.npz").write_bytes(b"not the statistics")
    result = run("fetch-stats", "--url", f"{base}/stats.npz")
    assert result.exit_code == 2 and "git blob id" in result.stderr and "nothing was written" in result.stderr
    assert not Path("fid_stats").exists()
    result = run("fetch-stats", "--img-size", "384")
    assert result.exit_code == 2 and "256 and 512 px only" in result.stderr
