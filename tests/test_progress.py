"""Long work piped into a log: a line at every tenth of a large job, with the rate and the time left, the first one
an estimate up front; a small job stays quiet unless it runs for 30 seconds."""

from __future__ import annotations

import itertools

from jitckpt.cli import console


def lines_logged(capsys, monkeypatch, label: str, total: int, step: int, seconds: float) -> list[str]:
    """What ``progress`` prints for ``total`` images advanced ``step`` at a time, each step taking ``seconds``."""
    clock = itertools.count(0.0, seconds)
    monkeypatch.setattr(console.time, "perf_counter", lambda: next(clock))
    with console.progress(total, label, unit="images") as advance:
        assert advance is not None
        for _ in range(total // step):
            advance(step)
    return capsys.readouterr().err.splitlines()


def test_a_large_job_off_a_terminal_reports_every_tenth(capsys, monkeypatch):
    lines = lines_logged(capsys, monkeypatch, "sampling x.pth (ema1, cfg 2.9)", 1000, 50, 2.0)
    assert len(lines) == 11  # the estimate after the first batch, then 10%, 20%, ... 100%
    assert lines[0].startswith("sampling x.pth (ema1, cfg 2.9): 50 of 1000 images (5%), ")
    assert lines[0].endswith("about 38 s left")
    assert lines[-1].startswith("sampling x.pth (ema1, cfg 2.9): 1000 of 1000 images (100%)")


def test_a_small_job_stays_quiet_unless_it_is_slow(capsys, monkeypatch):
    lines = lines_logged(capsys, monkeypatch, "sampling", 40, 5, 7.0)
    assert len(lines) == 1 and "(" in lines[0] and "images/s" in lines[0]  # one line after 30 s, no more


def test_a_large_job_done_within_seconds_prints_nothing_and_its_first_estimate_waits_for_a_rate(capsys, monkeypatch):
    assert lines_logged(capsys, monkeypatch, "verifying x.pth", 1000, 50, 0.05) == []  # 1 s in all
    lines = lines_logged(capsys, monkeypatch, "verifying x.pth", 1000, 10, 0.5)
    assert lines[0].startswith(f"verifying x.pth: {int(console.QUIET_S / 0.5) * 10} of 1000")  # not 10 of 1000
