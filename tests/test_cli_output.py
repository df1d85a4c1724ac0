"""What the CLI prints: verbatim and escaped, one-line errors, verify FILE, signals."""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import jitckpt
import jitckpt.inspection.summary
from jitckpt.inspection import integrity
from jitckpt.cli import EXIT_DIFFERENT, EXIT_ERROR, app
from jitckpt.cli import console
from jitckpt.cli.console import Terminated, error_message, printable
from jitckpt.errors import FormatError
from tests.helpers import load_golden_torch

runner = CliRunner()
PWN = "\x1b]0;pwned\x07\x1b[2J"  # set the window title, then clear the screen


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result, code=EXIT_ERROR):
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "MarkupError" not in result.output and "Traceback" not in result.output
    return lines[0]


def evil_args_checkpoint(path: Path) -> Path:
    """The golden checkpoint with an escape sequence and rich markup in its training args."""
    import torch

    from tests.helpers import load_golden_torch

    ckpt = load_golden_torch()
    ckpt["args"].lr_schedule = PWN
    ckpt["args"].sampling_method = "[red]x[/red][/x]\u202eabc\nsecond"
    torch.save(ckpt, path)
    return path


def test_printable_escapes_controls_line_breaks_and_bidi():
    assert printable(PWN) == "\\x1b]0;pwned\\x07\\x1b[2J"
    assert printable("a\nb\tc\rd\x00\x7f\x85\x9f") == "a\\nb\\tc\\rd\\x00\\x7f\\x85\\x9f"
    assert printable("x\u202ey\u2066z\u2069\u2028") == "x\\u202ey\\u2066z\\u2069\\u2028"
    assert printable("bad\udcffname") == "bad\\udcffname"  # an undecodable byte of a file name
    assert printable("ckpt[ema] [/x] :smile: é 日本 \\") == "ckpt[ema] [/x] :smile: é 日本 \\"
    assert printable(Path("a[b]")) == "a[b]"


def test_text_styles_only_the_labels():
    line = console.text(("error:", "red"), " ", "[bold]x[/bold]\x1b")
    assert line.plain == "error: [bold]x[/bold]\\x1b"
    assert [(span.start, span.end, str(span.style)) for span in line.spans] == [(0, 6, "red")]


def test_bracketed_paths_are_printed_exactly(golden, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # short relative names: table cells do not wrap
    Path("ckpt[ema].pth").write_bytes(golden.read_bytes())
    result = run("inspect", "ckpt[ema].pth")
    assert result.exit_code == 0, result.output
    assert "ckpt[ema].pth (3.1 MB)" in result.stdout
    converted = run("convert", "ckpt[ema].pth", "-o", "out[ema].safetensors")
    assert converted.exit_code == 0, converted.output
    assert converted.stdout.startswith("wrote out[ema].safetensors (safetensors, full training state, ")
    Path("d[").mkdir()
    Path("d[", "x]").mkdir()
    nested = run("convert", "ckpt[ema].pth", "-o", "d[/x]/o.ckpt")
    assert nested.exit_code == 0 and nested.stdout.startswith("wrote d[/x]/o.ckpt ("), nested.output
    same = run("verify", "ckpt[ema].pth", "out[ema].safetensors")
    assert same.exit_code == 0 and "(ckpt[ema].pth vs out[ema].safetensors)" in same.stdout


def test_a_file_name_with_a_newline_stays_on_one_line(golden, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("convert", golden, "-o", "two\nlines.ckpt")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1 and result.stdout.startswith("wrote two\\nlines.ckpt (")


def test_markup_closing_tag_in_a_path_is_a_normal_error(tmp_path):
    missing = tmp_path / "a[/x]" / "nope.pth"
    line = one_error_line(run("inspect", missing))
    assert line == f"error: {missing}: no such file"
    one_error_line(run("convert", missing, "-o", tmp_path / "out[/x].ckpt"))
    one_error_line(run("verify", missing, tmp_path / "[/red]other.pth"))


def test_escape_sequences_and_markup_in_args_are_shown_not_obeyed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = evil_args_checkpoint(Path("evil.pth"))
    result = run("inspect", path)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output and "\u202e" not in result.output
    assert "lr_schedule=\\x1b]0;pwned\\x07\\x1b[2J" in result.stdout
    assert "sampling_method=[red]x[/red][/x]\\u202eabc\\nsecond" in result.stdout
    as_json = run("inspect", path, "--json")
    assert as_json.exit_code == 0 and "\x1b" not in as_json.stdout and "\\u001b]0;pwned" in as_json.stdout


def test_a_colour_terminal_gets_only_colour_codes(tmp_path):
    path = evil_args_checkpoint(tmp_path / "evil.pth")
    env = dict(os.environ, FORCE_COLOR="1", TERM="xterm-256color", COLUMNS="200")
    env.pop("NO_COLOR", None)
    done = subprocess.run([sys.executable, "-m", "jitckpt", "inspect", str(path)], capture_output=True, env=env)
    assert done.returncode == 0, done.stderr
    assert b"\x1b[" in done.stdout  # the labels are coloured...
    rest = re.sub(rb"\x1b\[[0-9;]*m", b"", done.stdout + done.stderr)
    assert b"\x1b" not in rest and b"\x07" not in rest  # ...and nothing else drives the terminal
    assert b"lr_schedule=\\x1b]0;pwned\\x07\\x1b[2J" in rest


def test_warnings_and_errors_from_files_are_escaped(capsys):
    console.warn(f"args {PWN}[/x]")
    console.print_error("bad\nvalue [red]x")
    captured = capsys.readouterr()
    assert captured.err == "warning: args \\x1b]0;pwned\\x07\\x1b[2J[/x]\nerror: bad\\nvalue [red]x\n"


@pytest.mark.parametrize("exc, message", [
    (OSError(errno.ENOSPC, "No space left on device", "out[ema].ckpt"), "out[ema].ckpt: No space left on device"),
    (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    (OSError(errno.EXDEV, "Invalid cross-device link", "a", None, "b"), "a -> b: Invalid cross-device link"),
    (OSError(errno.EACCES, "Permission denied", b"raw\xffname"), "raw\udcffname: Permission denied"),
    (OSError("disk gone"), "disk gone"),
    (OSError(), "OSError"),
    (FormatError("x.pth: corrupt"), "x.pth: corrupt"),
])
def test_error_message(exc, message):
    assert error_message(exc) == message


def test_os_error_is_one_escaped_line_naming_the_file(golden, monkeypatch):
    def fail(path):
        raise OSError(errno.ENOSPC, "No space left on device", "out[/x]\n.ckpt")

    monkeypatch.setattr(jitckpt.inspection.summary, "summarize", fail)
    assert one_error_line(run("inspect", golden)) == "error: out[/x]\\n.ckpt: No space left on device"
    monkeypatch.setattr(jitckpt.inspection.summary, "summarize", lambda path: (_ for _ in ()).throw(OSError("lost\x1b")))
    assert one_error_line(run("inspect", golden)) == "error: lost\\x1b"
    debug = run("--debug", "inspect", golden)
    assert isinstance(debug.exception, OSError)


def test_ctrl_c_is_one_line_and_exit_130(golden, monkeypatch):
    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(jitckpt.inspection.summary, "summarize", interrupted)
    assert one_error_line(run("inspect", golden), code=130) == "error: interrupted"


def report(**fields) -> integrity.IntegrityReport:
    return integrity.IntegrityReport(**{"path": "x", "format": "pth", "tensors": 339, "checked_bytes": 3_100_000,
                                        **fields})


def test_verify_one_intact_file(golden, tmp_path):
    result = run("verify", golden, "--limit", "3")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"intact: {golden} (339 tensors, 3.1 MB checked against their CRC-32)\n"
    from safetensors.torch import save_file

    save_file(load_golden_torch()["model"], str(tmp_path / "other.safetensors"))
    result = run("verify", tmp_path / "other.safetensors")
    assert result.exit_code == 0 and result.stdout == (
        f"intact: {tmp_path / 'other.safetensors'} (57 tensors; the file carries no checksums (written by another "
        "tool), so only its structure was checked)\n")


def test_verify_one_damaged_file_names_the_tensors(golden, monkeypatch):
    damaged = ["model_ema1/net.blocks.0.attn.qkv.weight: checksum mismatch", "entry data/7: CRC-32 \x1b[2J mismatch"]
    monkeypatch.setattr(integrity, "check_file", lambda path, limit, progress=None: report(damaged=damaged))
    result = run("verify", golden)
    assert result.exit_code == EXIT_DIFFERENT
    assert result.stdout.splitlines() == [f"damaged: {golden}", "  " + damaged[0],
                                          "  entry data/7: CRC-32 \\x1b[2J mismatch"]


def test_verify_says_how_many_more_are_damaged_than_listed(golden, monkeypatch):
    damaged = ["a: CRC-32 mismatch", "b: CRC-32 mismatch"]
    monkeypatch.setattr(integrity, "check_file",
                        lambda path, limit, progress=None: report(damaged=damaged, damaged_total=15))
    result = run("verify", golden, "--limit", "2")
    assert result.exit_code == EXIT_DIFFERENT
    assert result.stdout.splitlines()[1:] == ["  " + damaged[0], "  " + damaged[1],
                                              "  ... and 13 more damaged (--limit to list more)"]


def test_verify_one_broken_file_is_one_error_line(golden, monkeypatch):
    def broken(path, limit, progress=None):
        raise FormatError(f"{path}: corrupt or truncated torch zip file")

    monkeypatch.setattr(integrity, "check_file", broken)
    assert "corrupt or truncated" in one_error_line(run("verify", golden))


def test_sigterm_handler_raises_terminated_once():
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        console.install_signal_handlers()
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN  # an ignored SIGTERM stays ignored
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        console.install_signal_handlers()
        handler = signal.getsignal(signal.SIGTERM)
        with pytest.raises(Terminated) as caught:
            handler(signal.SIGTERM, None)
        assert caught.value.code == 143 and isinstance(caught.value, SystemExit)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # a second SIGTERM ends the process at once
    finally:
        signal.signal(signal.SIGTERM, previous)


CHILD = textwrap.dedent("""
    import signal, sys, tempfile, time
    import jitckpt.inspection.summary
    from jitckpt.cli import run

    def slow(path):
        with tempfile.TemporaryDirectory(prefix="jitckpt-sigtest-") as folder:
            print(folder, flush=True)
            time.sleep(60)

    jitckpt.inspection.summary.summarize = slow
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.argv = ["jitckpt", "inspect", "whatever.pth"]
    run()
""")


@pytest.mark.parametrize("signum, code, line", [(signal.SIGTERM, 143, "error: terminated"),
                                                (signal.SIGINT, 130, "error: interrupted")])
def test_signal_during_a_command_cleans_up_and_prints_one_line(signum, code, line):
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        folder = Path(child.stdout.readline().strip())
        assert folder.is_dir(), child.stderr.read()
        time.sleep(0.2)
        child.send_signal(signum)
        stdout, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == code, stderr
    assert stderr.splitlines() == [line] and stdout == ""
    assert not folder.exists()  # the context manager ran
