"""Long work piped into a log: a line at every tenth of a large job, with the rate and the time left, the first one
an estimate up front; a small job stays quiet unless it runs for 30 seconds."""

from __future__ import annotations

import itertools

from jitckpt.cli import console


def test_a_large_job_off_a_terminal_reports_every_tenth(capsys, monkeypatch):
    clock = itertools.count(0.0, 2.0)  # each step takes two seconds
    monkeypatch.setattr(console.time, "perf_counter", lambda: next(clock))
    with console.progress(1000, "sampling x.pth (ema1, cfg 2.9)", unit="images") as advance:
        assert advance is not None
        for _ in range(20):
            advance(50)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 11  # the estimate after the first batch, then 10%, 20%, ... 100%
    assert lines[0].startswith("sampling x.pth (ema1, cfg 2.9): 50 of 1000 images (5%), ")
    assert lines[0].endswith("about 38 s left")
    assert lines[-1].startswith("sampling x.pth (ema1, cfg 2.9): 1000 of 1000 images (100%)")


def test_a_small_job_stays_quiet_unless_it_is_slow(capsys, monkeypatch):
    clock = itertools.count(0.0, 7.0)
    monkeypatch.setattr(console.time, "perf_counter", lambda: next(clock))
    with console.progress(40, "sampling", unit="images") as advance:
        assert advance is not None
        for _ in range(8):
            advance(5)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "(" in lines[0] and "images/s" in lines[0]  # one line after 30 s, no more
