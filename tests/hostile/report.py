"""The corpus report: class counts per category, examples of each failure, and a JSON file."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .classify import CLASSES, FAILURES, judge, references
from .items import CorpusItem
from .runner import Outcome

EXAMPLES_PER_CLASS = 5


@dataclass
class Report:
    """Every run's class, with counts and failure examples."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self) -> dict[str, Counter]:
        """category -> Counter of classes (one count per item x command)."""
        table: dict[str, Counter] = defaultdict(Counter)
        for run in self.runs:
            table[run["category"]][run["class"]] += 1
        return dict(table)

    def totals(self) -> Counter:
        return Counter(run["class"] for run in self.runs)

    def failures(self) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for run in self.runs:
            if run["class"] in FAILURES:
                found[run["class"]].append(run)
        return dict(found)


def build_report(items: list[CorpusItem], outcomes: list[dict[str, Outcome]], seconds: float) -> Report:
    """Classify every run of every item."""
    refs = references(items, outcomes)
    report = Report(seconds=seconds)
    for item, runs in zip(items, outcomes):
        for command, outcome in runs.items():
            report.runs.append({
                "item": item.name, "category": item.category, "command": command,
                "class": judge(item, outcome, refs), "exit": outcome.exit, "signal": outcome.signal,
                "seconds": outcome.seconds, "rss_growth_mb": outcome.rss_growth_mb,
                "first_line": first_line(outcome), "leftovers": outcome.leftovers,
            })
    return report


def first_line(o: Outcome) -> str:
    """The most telling line of a run: the last traceback line, else the first line of stderr, else of stdout."""
    if "Traceback" in o.stderr:
        lines = [line for line in o.stderr.splitlines() if line.strip() and not line.startswith(" ")]
        return lines[-1][:200] if lines else ""
    for text in (o.stderr, o.stdout):
        lines = [line for line in text.splitlines() if line.strip()]
        if lines:
            return lines[0][:200]
    return f"(no output; exit {o.exit}, signal {o.signal})"


def format_report(report: Report) -> str:
    """A text table (categories x classes), totals, and the first failures of each class."""
    counts = report.counts()
    used = [c for c in CLASSES if any(counts[cat][c] for cat in counts)]
    width = max([len(cat) for cat in counts] + [8])
    lines = [f"{'category':<{width}}  " + "  ".join(f"{c:>{max(len(c), 5)}}" for c in used)]
    for cat in sorted(counts):
        lines.append(f"{cat:<{width}}  " + "  ".join(f"{counts[cat][c]:>{max(len(c), 5)}}" for c in used))
    totals = report.totals()
    lines.append(f"{'TOTAL':<{width}}  " + "  ".join(f"{totals[c]:>{max(len(c), 5)}}" for c in used))
    items = len({run["item"] for run in report.runs})
    lines.append(f"{items} inputs, {len(report.runs)} runs, {report.seconds:.1f} s")
    for cls, runs in report.failures().items():
        lines.append(f"-- {cls}: {len(runs)}")
        for run in runs[:EXAMPLES_PER_CLASS]:
            lines.append(f"   {run['item']} [{run['command']}]: {run['first_line']}")
    return "\n".join(lines)


def write_json(report: Report, path: Path) -> None:
    """The whole report (every run) as JSON."""
    data = {"seconds": report.seconds, "totals": dict(report.totals()),
            "counts": {cat: dict(c) for cat, c in report.counts().items()}, "runs": report.runs}
    path.write_text(json.dumps(data, indent=1))
