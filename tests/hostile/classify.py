"""Sorting each run into a class, and deciding whether a success was harmless.

Acceptable classes: ``error`` (exit 2, one ``error: `` line on stderr, no
traceback), ``success`` (exit 0 with a harmless result), ``detected`` (exit 1
from ``verify`` with ``damaged:`` or ``different:``), ``undetectable`` (a
success on damage no reader can see by design, counted apart). Failure
classes: ``executed`` (the canary exists), ``hang``, ``oom``, ``crash``,
``traceback``, ``unclear_error`` (exit 2 without exactly one ``error:`` line),
``leftover`` (a command left files behind), ``harmed_input`` (the input file
changed), ``silent_acceptance``, and
``rejected_pristine`` (a pristine base itself did not go through: the
references the other items are judged against are missing).
"""

from __future__ import annotations

from pathlib import Path

from .items import CorpusItem
from .runner import Outcome

FAILURES = ("executed", "hang", "oom", "crash", "traceback", "unclear_error", "leftover", "harmed_input",
            "silent_acceptance", "rejected_pristine")
ACCEPTABLE = ("error", "success", "detected", "undetectable")
CLASSES = ACCEPTABLE + FAILURES
RSS_GROWTH_BOUND_MB = 256  # "memory stays bounded": a 3 MB input may not make a reader grow by more
_MEMORY_WORDS = ("MemoryError", "bad_alloc", "Cannot allocate memory", "out of memory")

References = dict[tuple[Path, str], str]


def process_class(o: Outcome) -> str:
    """The class of a run from the process alone: how it ended and what it printed."""
    text = o.stdout + o.stderr
    if o.canary:
        return "executed"
    if o.timed_out:
        return "hang"
    if o.rss_growth_mb > RSS_GROWTH_BOUND_MB:
        return "oom"
    if o.signal is not None:
        return "oom" if any(word in o.stderr for word in _MEMORY_WORDS) else "crash"
    if "Traceback" in text:
        return "oom" if "MemoryError" in text else "traceback"
    if o.exit == 2:
        return "error" if one_error_line(o.stderr) else "unclear_error"
    if o.exit == 0:
        return "success"
    if o.exit == 1 and o.command.startswith("verify") and first_word(o.stdout) in ("damaged", "different"):
        return "detected"
    return "traceback"


def one_error_line(stderr: str) -> bool:
    """Exactly one non-empty line, starting with ``error: ``."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    return len(lines) == 1 and lines[0].startswith("error: ")


def first_word(text: str) -> str:
    """The first word of ``text`` without a trailing colon (``damaged: x`` -> ``damaged``)."""
    words = text.split()
    return words[0].rstrip(":") if words else ""


def judge(item: CorpusItem, o: Outcome, refs: References) -> str:
    """The final class of a run of ``item``: a success becomes ``silent_acceptance`` unless harmless."""
    cls = process_class(o)
    if o.input_changed and cls not in ("executed", "hang"):
        return "harmed_input"
    if cls in ("error", "success", "detected") and o.leftovers:
        return "leftover"
    if item.category == "pristine" and cls in ("error", "unclear_error", "detected"):
        return "rejected_pristine"
    if cls != "success":
        return cls
    return _judge_success(item, o, refs)


def _judge_success(item: CorpusItem, o: Outcome, refs: References) -> str:
    command = o.command
    if item.undetectable and command in ("inspect", "verify"):
        return "undetectable" if mentions_checksums(o) else "silent_acceptance"
    if item.undetectable and command == "convert":
        return "undetectable"
    if command == "inspect" and item.tensor_bytes_only and item.compare_to is not None:
        return "success" if refs.get((item.compare_to, "inspect")) == normalise(o.stdout) else "silent_acceptance"
    if item.oracle is not None and command in ("inspect", "convert"):
        expected = refs.get((item.oracle, command))
        observed = normalise(o.stdout) if command == "inspect" else o.output_sha256
        return "success" if expected is not None and observed == expected else "silent_acceptance"
    if command in ("verify", "verify_ref") and item.content_same:
        return "success"
    return "success" if item.valid_variant else "silent_acceptance"


def mentions_checksums(o: Outcome) -> bool:
    """Whether the output tells the user the file carries no checksums."""
    return "checksum" in (o.stdout + o.stderr).lower()


def normalise(stdout: str) -> str:
    """``inspect`` output compared line by line, trailing spaces ignored (the input path is the same name)."""
    return "\n".join(line.rstrip() for line in stdout.strip().splitlines())


def references(items: list[CorpusItem], outcomes: list[dict[str, Outcome]]) -> References:
    """What the pristine bases give: ``inspect`` output and the converted file's hash, by (base, command)."""
    refs: References = {}
    for item, runs in zip(items, outcomes):
        if item.category != "pristine" or item.oracle is None:
            continue
        if "inspect" in runs and runs["inspect"].exit == 0:
            refs[(item.oracle, "inspect")] = normalise(runs["inspect"].stdout)
        if "convert" in runs and runs["convert"].output_sha256:
            refs[(item.oracle, "convert")] = runs["convert"].output_sha256
    return refs
