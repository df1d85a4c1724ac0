"""Hostile input: the whole corpus through every command, and one focused test per known finding.

The corpus test runs a few hundred generated inputs (thousands with
``--hostile-full`` or ``JITCKPT_HOSTILE_FULL=1``) through ``inspect``,
``convert`` and ``verify`` in isolated, memory-limited processes and fails
on any run that executed code, hung, blew up memory, crashed, printed a
traceback or an unclear error, left files behind, or accepted damage silently.
The focused tests check single findings in-process with ``CliRunner``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jitckpt.cli import EXIT_ERROR, app
from tests.helpers import load_golden_torch

from .classify import FAILURES, first_word
from .corpus import build_corpus
from .corpus_pickle import placed
from .gadgets import CODE_GADGETS, LOGIC_GADGETS, extensions_for
from .items import CANARY
from .pickles import program
from .report import build_report, format_report, write_json
from .runner import WorkerPool, run_corpus

WEIGHT = "net.blocks.0.attn.qkv.weight"
RSS_LIMIT_KB = 300 << 10
runner = CliRunner()


def cli(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *needles: str) -> str:
    """Exit 2 and exactly one stderr line, ``error: ...``, containing every needle (case-insensitive)."""
    assert result.exit_code == EXIT_ERROR, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]
    return lines[0]


def write_item(items: dict, name: str, folder: Path) -> Path:
    """The bytes of corpus item ``name`` as a file in ``folder``."""
    item = items[name]
    path = folder / ("input" + item.suffix)
    path.write_bytes(item.render())
    return path


def assert_nothing_written(folder: Path, *keep: Path) -> None:
    assert sorted(folder.iterdir()) == sorted(keep), sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------- the corpus


def test_hostile_corpus(hostile_bases, hostile_full, tmp_path):
    """Every input, every command: no failure of any class (see classify.py)."""
    items = build_corpus(hostile_bases, full=hostile_full)
    started = time.monotonic()
    with WorkerPool(size=2) as pool:
        outcomes = run_corpus(pool, items, tmp_path / "runs")
    report = build_report(items, outcomes, time.monotonic() - started)
    text = format_report(report)
    print(text)
    write_json(report, tmp_path / "hostile-report.json")
    assert not any((tmp_path / "runs").iterdir()), "run folders were left behind"
    totals = report.totals()
    assert all(totals[cls] == 0 for cls in FAILURES), "\n" + text


def test_corpus_is_seeded_and_sized(hostile_bases):
    """The same names (and bytes) on every build; a few hundred by default, thousands in full."""
    first, second = build_corpus(hostile_bases), build_corpus(hostile_bases)
    assert [i.name for i in first] == [i.name for i in second]
    assert [i.render() for i in first[:60]] == [i.render() for i in second[:60]]
    assert 200 <= len(first) <= 600
    assert len(build_corpus(hostile_bases, full=True)) >= 2000


_UNPICKLE_ALL = """
import copyreg, os, pickle, subprocess, sys
import numpy, torch  # the gadgets name their globals; a real unpickler imports them
for folder, data, extensions in {payloads!r}:
    os.chdir(folder)
    for extension in extensions:
        copyreg.add_extension(*extension)
    try:
        result = pickle.loads(data)
        if isinstance(result, subprocess.Popen):
            result.wait()
    except Exception:
        pass
    for extension in extensions:
        copyreg.remove_extension(*extension)
"""


def test_code_gadgets_leave_a_canary_when_run(tmp_path):
    """The harness's own check: every code gadget, unpickled for real, does create its canary."""
    payloads = []
    for name, gadget in CODE_GADGETS.items():
        (tmp_path / name).mkdir()
        payloads.append((str(tmp_path / name), program(gadget(100_000)), extensions_for(name)))
    run = subprocess.run([sys.executable, "-c", _UNPICKLE_ALL.format(payloads=payloads)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    deadline = time.monotonic() + 5  # a Popen'd `touch` may still be running
    while time.monotonic() < deadline and not all((tmp_path / n / CANARY).exists() for n in CODE_GADGETS):
        time.sleep(0.05)
    assert [n for n in CODE_GADGETS if not (tmp_path / n / CANARY).exists()] == []


# ----------------------------------------------------------------------------- focused findings


def _flipped_weight(golden: Path, folder: Path) -> Path:
    """The golden with one bit flipped inside the bytes of ``model[WEIGHT]``."""
    data = bytearray(golden.read_bytes())
    weight = load_golden_torch()["model"][WEIGHT].contiguous().numpy().tobytes()
    at = data.find(weight)
    assert at > 0 and data.find(weight, at + 1) < 0
    data[at + 100] ^= 0x10
    path = folder / "flipped.pth"
    path.write_bytes(bytes(data))
    return path


def test_a_flipped_weight_bit(hostile_bases, tmp_path):
    """Inspect may pass; convert fails naming file and tensor and writes nothing; verify finds the tensor."""
    golden = hostile_bases["pth"].path
    path = _flipped_weight(golden, tmp_path)
    result = cli("inspect", path)
    assert result.exit_code == 0 or assert_one_line_error(result)
    assert_one_line_error(cli("convert", path, "-o", tmp_path / "out.safetensors"), path.name, WEIGHT)
    assert_nothing_written(tmp_path, path)
    alone = cli("verify", path)
    assert alone.exit_code == 1 and WEIGHT in alone.stdout, alone.output
    compared = cli("verify", path, golden)
    assert compared.exit_code != 0 and first_word(compared.stdout) != "same", compared.output


def test_b_negative_storage_offset(hostile_items, tmp_path):
    path = write_item(hostile_items, "zip/negative-storage-offset", tmp_path)
    assert_one_line_error(cli("inspect", path))
    assert_one_line_error(cli("convert", path, "-o", tmp_path / "out.safetensors"))
    assert_nothing_written(tmp_path, path)


def test_c_safetensors_header_length_one_short(hostile_items, tmp_path):
    path = write_item(hostile_items, "safetensors/safetensors/length-one-short", tmp_path)
    assert_one_line_error(cli("inspect", path))
    assert_one_line_error(cli("convert", path, "-o", tmp_path / "out.pth"))
    assert_nothing_written(tmp_path, path)


_MEASURED = """
import json, resource, subprocess, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
run = subprocess.run([sys.executable, "-m", "jitckpt", *sys.argv[1:]], capture_output=True, text=True)
print(json.dumps({"code": run.returncode, "stderr": run.stderr,
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def test_d_memo_bomb_stays_small(hostile_bases, tmp_path):
    """LONG_BINPUT 1e8 in a 3 MB file: one-line error, and the reading process stays under 300 MB."""
    item = placed(hostile_bases["pth"].path, "memo-put-1e8", LOGIC_GADGETS["memo-put-1e8"], "dict")
    path = tmp_path / "memo.pth"
    path.write_bytes(item.render())
    wrapper = subprocess.run([sys.executable, "-c", _MEASURED, "inspect", str(path)],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path)
    measured = json.loads(wrapper.stdout)
    lines = [line for line in measured["stderr"].splitlines() if line.strip()]
    assert measured["code"] == EXIT_ERROR and len(lines) == 1 and lines[0].startswith("error: "), measured
    assert measured["maxrss_kb"] < RSS_LIMIT_KB, f"peak RSS {measured['maxrss_kb'] >> 10} MB"


def test_e_deflated_data_pkl(hostile_items, tmp_path):
    path = write_item(hostile_items, "zip/deflate-data-pkl", tmp_path)
    assert_one_line_error(cli("inspect", path), "compress")


def test_f_deeply_nested_lists(hostile_items, tmp_path):
    path = write_item(hostile_items, "pickle/dict-args/deep-lists-mark", tmp_path)
    result = cli("inspect", path)
    assert "RecursionError" not in result.output and not isinstance(result.exception, RecursionError)
    assert_one_line_error(result)


def test_g_epoch_not_an_int(hostile_items, tmp_path):
    path = write_item(hostile_items, "pickle/epoch-abc", tmp_path)
    assert_one_line_error(cli("inspect", path), "epoch")


@pytest.mark.parametrize("name", ["zip/cd-size-plus-one", "zip/storage-moved-to-second-folder",
                                  "zip/entry-in-second-folder", "zip/storage-offset-as-string"])
def test_h_never_the_same_as_golden(hostile_bases, hostile_items, tmp_path, name):
    path = write_item(hostile_items, name, tmp_path)
    result = cli("verify", path, hostile_bases["pth"].path)
    assert result.exit_code != 0 and first_word(result.stdout) != "same", result.output
