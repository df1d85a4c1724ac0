"""``inspect``, ``convert`` and ``verify``: the checkpoint commands."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from ..formats.table import default_targets, either, facts, file_suffixes, folder_labels, folder_writable, writable
from ..formats.dcp_write import MAX_SHARDS
from ..storage import sources
from .console import EXIT_DIFFERENT, echo, errors, present, progress, show, size, text, warn


def inspect(
    path: str = typer.Argument(..., metavar="PATH", help=f"Checkpoint file ({file_suffixes()}) or folder ({folder_labels()}), "
                                         "or its URL; detected from its bytes."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object instead of tables."),
) -> None:
    """Show format, epoch, architecture, sections and training args, reading headers only."""
    from ..inspection.summary import ARCH_FIELDS, summarize

    with errors():
        info = summarize(path)
        if as_json:
            print(json.dumps(info, indent=2, default=str))  # json.dumps escapes every control character
            return
        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column(overflow="fold")  # a long path wraps rather than losing its end to an ellipsis
        schema = f"{info['schema_version']}" + (" (original, unversioned)" if info["schema_version"] == 0 else "")
        resumable = info["optimizer"] is not None  # weights alone start a new run, they resume nothing
        epoch = ("-" if info["epoch"] is None else
                 f"{info['epoch']} (resumes at {info['epoch'] + 1})" if resumable else str(info["epoch"]))
        raw_note = (f" (the source's {info['weights']} weights)" if info["weights"] else
                    " (one set of weights; the file does not say whether raw or an EMA: eval and sample use "
                    "them for any --ema)" if not any(info["sections"][s] for s in ("ema1", "ema2"))
                    and info["optimizer"] is None else "")
        rows: list[tuple[str, Text]] = [
            ("file", text(f"{info['path']} ({size(info['file_size'])})")),
            ("format", text(info["format_description"])),
            ("layout", text(info["layout_description"] or "-")),
            ("schema version", text(schema)),
            ("epoch", text(epoch)),
            ("global step", text(str(info["global_step"]) if info["global_step"] is not None else "-")),
            ("architecture", text(info["variant"] or "custom (not an official variant)")),
            ("dimensions", text(", ".join(f"{k}={info[k]}" for k in ARCH_FIELDS))),
            ("parameters", text(f"{info['num_params']:,}")),
            ("raw weights", text(present(info["sections"]["raw"]), raw_note)),
            ("EMA 1", present(info["sections"]["ema1"])),
            ("EMA 2", present(info["sections"]["ema2"])),
        ]
        rows.append(("optimizer", _optimizer_text(info["optimizer"])))
        rows.append(("dtypes", text("; ".join(f"{k}: {', '.join(v)}" for k, v in info["dtypes"].items()))))
        rows.append(("checksums", text("CRC-32 of every tensor, verified whenever its bytes are read")
                     if info["checksummed"] else
                     text(("none", "yellow"), " (written by another tool: corruption of its tensors cannot be "
                          "detected; `jitckpt verify` checks its structure only)")))
        if info["args"]:
            rows.append(("training args", text("  ".join(f"{k}={v}" for k, v in info["args"].items()))))
        rows.append(("sampling", _sampling_text(info)))
        for key, value in rows:
            table.add_row(key, value)
        show(table)
        for warning in info["warnings"]:
            warn(warning)


def _optimizer_text(opt: dict | None) -> Text:
    """The ``optimizer`` row: absent, present in a named grouping, or present but unmappable with the reason."""
    if opt is None:
        return present(False)
    groups = ", ".join(str(g["size"]) for g in opt["param_groups"])
    if not opt["mappable"]:
        return text(("present but unmappable", "yellow"), f" (AdamW, step {opt['step']}, groups of {groups}): "
                    f"{opt['unmappable_reason']}; weights-only exports work, a full conversion needs --drop-optimizer")
    grouping = f"the {opt['grouping']} grouping" if opt["grouping"] else "groups named by the file"
    return text(present(True), f" (AdamW, step {opt['step']}, {opt['params_with_state']} params with state, "
                               f"groups of {groups}; {grouping})")


def _sampling_text(info: dict) -> Text:
    """The one ``sampling`` row: the settings eval and sample use, and where they come from."""
    from ..model.protocol import describe_settings, describe_source

    sampling, protocol = info["sampling"], info["protocol"]
    origin = describe_source(sampling["source"], protocol)
    if sampling["source"] == "protocol":
        origin += f": {protocol['num_images']} images against {protocol['fid_stats']}"
    style = "yellow" if sampling["source"] == "defaults" else ""
    return text(describe_settings(sampling), " (from ", (origin, style), ")")


def convert(
    src: str = typer.Argument(..., metavar="SRC", help="Checkpoint to convert (any format), or its URL."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output file, or folder for "
                                          + either(folder_writable())
                                          + " (default: SRC with the new suffix, beside it)."),
    to: Optional[str] = typer.Option(None, "--to", help=f"{either(writable())} (default: from -o, else "
                                                        f"{default_targets()})."),
    weights: Optional[str] = typer.Option(None, "--weights", help="raw, ema1 or ema2: which weights a --weights-only export keeps."),
    weights_only: bool = typer.Option(False, "--weights-only", help="Write only one set of weights (plain net. keys), for inference."),
    force: bool = typer.Option(False, "--force", help="Overwrite OUTPUT if it exists."),
    drop_optimizer: bool = typer.Option(False, "--drop-optimizer",
                                        help="Write the full state without the optimizer (needed when inspect says "
                                             "it is unmappable)."),
    shards: int = typer.Option(1, "--shards", min=1, max=MAX_SHARDS, help="dcp only: how many data files share the tensors."),
) -> None:
    """Convert between the formats, losslessly (the help lists them from the format table)."""
    from .. import api, formats
    from ..errors import JiTCheckpointError

    with errors():
        if weights_only and weights is None:
            weights = "ema1"
        if weights is not None and not weights_only:
            raise JiTCheckpointError("--weights chooses the weights of a --weights-only export; add --weights-only")
        if to is not None:
            formats.get(to, writing=True)
        started = time.perf_counter()
        source_bytes = formats.size_on_disk(src) if sources.exists(src) else 0
        with progress(source_bytes, f"converting {sources.basename(src)}") as advance:
            target = api.convert(src, output, to, weights=weights, force=force, drop_optimizer=drop_optimizer,
                                 progress=advance, shards=shards, on_warning=warn)
        seconds = time.perf_counter() - started
        kind = formats.get(formats.detect_format(target)).LABEL
        echo(f"wrote {target} ({kind}, {_contents(target)}, {size(formats.size_on_disk(target))}) "
             f"in {seconds:.1f} s")


def _contents(target: Path) -> str:
    """What a written checkpoint holds, in a few words (read back from its header)."""
    from .. import api

    written = api.load(target, lazy=True)
    if written.optimizer is not None:
        return "full training state"
    if written.is_weights_only:
        return f"{written.extra['weights']} weights only" if written.extra.get("weights") else "model weights only"
    return "training state without the optimizer"


convert.__doc__ = (f"Convert between {either([facts(n).label for n in writable()])}, losslessly; reads "
                   f"{folder_labels()} as well.")


def verify(
    first: str = typer.Argument(..., metavar="FILE",
                                help="The checkpoint to check (any format, or its URL), or the first of two to compare."),
    second: Optional[str] = typer.Argument(None, metavar="OTHER", show_default=False,
                                           help="A second checkpoint (any format, or its URL): compare FILE with it."),
    limit: int = typer.Option(10, "--limit", min=0, help="How many differences or damaged tensors to list at most."),
) -> None:
    """Check one checkpoint's integrity, or compare two section by section, tensor by tensor.

    With FILE alone: read every byte and verify every checksum it carries; exit 0
    if intact, 1 listing the damaged tensors. With FILE and OTHER: exit 0 if they
    hold the same state, 1 listing the first differences.
    """
    with errors():
        if second is None:
            _check_one(first, limit)
        else:
            _compare_two(first, second, limit)


def _check_one(path: str, limit: int) -> None:
    from ..inspection import integrity

    with progress(sources.size(path) if sources.is_file(path) else 0, f"verifying {sources.basename(path)}") as advance:
        report = integrity.check_file(path, limit, progress=advance)
    if not report.intact:
        echo(("damaged", "red"), f": {path}")
        for line in report.damaged:
            echo(f"  {line}")
        if report.damaged_total > len(report.damaged):
            echo(f"  ... and {report.damaged_total - len(report.damaged)} more damaged (--limit to list more)")
        raise typer.Exit(EXIT_DIFFERENT)
    if report.checksummed:
        echo(("intact", "green"), f": {path} ({report.tensors} tensors, {size(report.checked_bytes)} checked "
                                  "against their CRC-32)")
    else:
        echo(("intact", "green"), f": {path} ({report.tensors} tensors; the file carries no checksums (written "
                                  "by another tool), so only its structure was checked)")


def _compare_two(first: str, second: str, limit: int) -> None:
    from .. import api

    a, b = api.load(first, lazy=True), api.load(second, lazy=True)
    diffs = api.compare(a, b, limit=limit)
    if diffs:
        echo(("different", "red"), f": {first} and {second} do not hold the same state")
        for line in diffs[:limit]:  # --limit 0: the verdict alone
            echo(f"  {line}")
        raise typer.Exit(EXIT_DIFFERENT)
    one_set = a if api.held(a) is not None else b if api.held(b) is not None else None
    count = len(one_set.model) if one_set is not None else sum(1 for _ in api.iter_tensors(a))
    echo(("same", "green"), f": {count} tensors; {api.compared(a, b)} match ({sources.basename(first)} vs {sources.basename(second)})")

