"""``jitckpt export``: publishable weights in the Hugging Face layout, with the protocol and scores that go with them.

A folder holds ``model.safetensors`` (one set of weights under the network's
own keys; jitckpt's per-tensor checksums and the training args in its metadata,
the sampling settings resolved as ``eval`` would use them), ``config.json`` (the
``JiT`` constructor arguments by the original's names, the variant, the sampling
protocol, provenance), ``README.md`` (a model card) and ``samples.png``. It is
built beside the target and renamed into place (:mod:`jitckpt.storage.atomic_folder`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..errors import JiTCheckpointError, render
from ..formats import export as export_format
from ..formats import is_checkpoint_folder, read
from ..formats._jsonfile import read_json
from ..tensors.anytensor import cast, dtype_name
from ..formats.options import DIFFUSERS_NAMES, EXPORT_DTYPES, EXPORT_LAYOUTS
from ..formats.diffusers_write import write_folder as write_diffusers
from ..formats.safetensors import weights_export, write_tensors
from ..storage import sources
from ..storage.atomic_folder import OutputFolder, atomic_folder
from ..model.protocol import resolve_sampling
from ..schema import JiTCheckpoint

WEIGHT_SETS = ("ema1", "ema2", "raw")
EXPORT_VERSION = 1
SAMPLE_CLASSES = (207, 360, 387, 974, 88, 979, 417, 279)  # ImageNet classes shown in the grid (mod num_classes)




def export(src: str | os.PathLike, out: str | os.PathLike, weights: str = "ema1", *, all_emas: bool = False,
           eval_json: str | os.PathLike | None = None, license: str | None = None, samples: bool = True,
           force: bool = False, on_warning: Callable[[str], None] | None = None, layout: str = "hf",
           dtype: str = "keep", diffusers_names: str = "fused",
           class_names: str | os.PathLike | None = None) -> list[Path]:
    """Write the export folder ``out`` (or ``out/ema1``, ``out/ema2``, ``out/raw`` with ``all_emas``) from ``src``.

    Returns the folders written. ``eval_json`` is the JSON ``jitckpt eval --json``
    wrote for these weights: its scores and protocol go into the model card.
    ``layout`` is a key of :data:`EXPORT_LAYOUTS`; ``dtype`` (``keep``, ``float32``, ``bf16``, ``fp16``) the
    stored precision (``keep``: the source's); ``diffusers_names`` (``fused`` or ``split`` attention) and
    ``class_names`` (a text file, one class name a line: ``id2label``) are for the diffusers layout.
    """
    from ..evaluation.provenance import sha256_file

    if license is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.+\-]{0,63}", license):
        raise JiTCheckpointError(f"--license {render(license, 60)}: give a license identifier such as mit, "
                                 "apache-2.0 or cc-by-nc-4.0 (letters, digits, '.', '-', '+')")
    for name, value, choices in (("layout", layout, EXPORT_LAYOUTS), ("dtype", dtype, EXPORT_DTYPES),
                                 ("diffusers names", diffusers_names, DIFFUSERS_NAMES)):
        if value not in choices:
            raise JiTCheckpointError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")
    if layout != "diffusers" and (class_names is not None or diffusers_names != "fused"):
        raise JiTCheckpointError("class names and diffusers names are for --layout diffusers")
    id2label = _class_names(class_names) if class_names is not None else None
    options = {"layout": layout, "dtype": EXPORT_DTYPES[dtype], "names": diffusers_names, "id2label": id2label}
    _, ckpt = read(src)
    sets = [w for w in WEIGHT_SETS if _has(ckpt, w)] if all_emas else [weights]
    for which in sets:
        ckpt.weights(which)  # an absent set fails before anything is written
    result = read_json(eval_json) if eval_json else None
    if result is not None and not isinstance(result, dict):
        raise JiTCheckpointError(f"{eval_json}: not the JSON object `jitckpt eval --json` writes")
    if result is not None and not all_emas and result.get("weights") not in (None, weights):
        raise JiTCheckpointError(f"{eval_json} scores the {result.get('weights')} weights, not {weights}")
    source = {"file": Path(src).name, "sha256": sha256_file(src) if Path(src).is_file() else None}
    written = []
    with atomic_folder(out, force=force, replaceable=is_checkpoint_folder, source=src) as folder:
        for which in sets:
            target = folder.subfolder(which) if all_emas else folder
            scores = result if result is not None and result.get("weights") == which else None
            _write_one(ckpt, which, target, source, scores, license, samples, on_warning, options)
            written.append(Path(out) / which if all_emas else Path(out))
    return written


def _has(ckpt: JiTCheckpoint, which: str) -> bool:
    try:
        ckpt.weights(which)
    except JiTCheckpointError:
        return False
    return True


def _class_names(path: str | os.PathLike) -> dict[int, str]:
    """``id2label`` from a text file of class names, one a line (a UTF-8 byte-order mark and the newlines at the
    end are not names; a blank line inside is)."""
    if not sources.is_file(path):
        raise JiTCheckpointError(f"{path}: not a regular file of class names")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CLASS_NAMES_BYTES + 1)
    except OSError as exc:
        raise JiTCheckpointError(f"{path}: cannot read the class names ({exc.strerror})") from None
    if len(data) > MAX_CLASS_NAMES_BYTES:
        raise JiTCheckpointError(f"{path}: larger than {MAX_CLASS_NAMES_BYTES >> 20} MiB; one class name a line")
    try:
        lines = data.decode("utf-8-sig").rstrip("\r\n").splitlines()
    except UnicodeDecodeError:
        raise JiTCheckpointError(f"{path}: not UTF-8 text; one class name a line") from None
    return dict(enumerate(lines))


MAX_CLASS_NAMES_BYTES = 1 << 20


def _write_one(ckpt: JiTCheckpoint, which: str, folder: OutputFolder, source: dict, scores: dict | None,
               license: str | None, samples: bool, on_warning: Callable[[str], None] | None,
               options: dict[str, Any]) -> None:
    arch = ckpt.arch
    assert arch is not None  # every checkpoint read has one
    plan = resolve_sampling(arch, ckpt.args)
    for message in plan.warnings:
        if on_warning is not None:
            on_warning(message)
    if options["id2label"] is not None and len(options["id2label"]) != arch.num_classes:
        raise JiTCheckpointError(f"the class-name file names {len(options['id2label'])} classes; the model has "
                                 f"{arch.num_classes}")
    args = {**ckpt.args, **plan.as_args()}  # the protocol travels with the weights: eval and sample use it
    exported = dataclasses.replace(ckpt, args=args)
    tensors, meta = weights_export(exported, which)
    tensors = {k: cast(v, options["dtype"]) for k, v in tensors.items()}
    config = config_of(ckpt, which, plan.settings(), source)
    config["torch_dtype"] = dtype_name(next(iter(tensors.values())))
    config["provenance"]["weights"] = ckpt.provenance(which)  # the source does not say: neither do we
    if options["layout"] == "diffusers":
        provenance = {"source_checkpoint": source["file"], "source_sha256": source["sha256"],
                      "weights": config["provenance"]["weights"],
                      "epoch": ckpt.epoch, "global_step": ckpt.global_step, "torch_dtype": config["torch_dtype"],
                      "jitckpt_version": __version__}
        write_diffusers(exported, tensors, meta, folder, options["names"], options["id2label"], provenance)
    else:
        tensors = {k.removeprefix("net."): v for k, v in tensors.items()}  # the network's own keys
        text = (json.dumps(config, indent=2) + "\n").encode()
        meta[export_format.CONFIG_DIGEST_KEY] = hashlib.sha256(text).hexdigest()  # verify checks config.json too
        with folder.file(export_format.WEIGHTS_FILE) as handle:
            write_tensors(tensors, meta, handle)
        with folder.file(export_format.CONFIG_FILE) as handle:
            handle.write(text)
    if samples:
        _write_samples(folder.path, which, arch.num_classes)
    with folder.file("README.md") as handle:
        handle.write(model_card(config, scores, license, samples).encode())


def config_of(ckpt: JiTCheckpoint, which: str, sampling: dict, source: dict) -> dict[str, Any]:
    """``config.json``: the constructor arguments by the original's names, the protocol and the provenance."""
    arch = ckpt.arch
    assert arch is not None  # every checkpoint read has one
    decay = {"ema1": ckpt.args.get("ema_decay1"), "ema2": ckpt.args.get("ema_decay2"), "raw": None}[which]
    return {
        export_format.MARK: EXPORT_VERSION,
        "model_type": "jit",
        "variant": arch.variant,
        "input_size": arch.img_size,
        "img_size": arch.img_size,
        "patch_size": arch.patch_size,
        "in_channels": 3,
        "hidden_size": arch.hidden_size,
        "depth": arch.depth,
        "num_heads": arch.num_heads,
        "mlp_ratio": 4.0,
        "mlp_hidden_dim": arch.mlp_hidden_dim,
        "bottleneck_dim": arch.bottleneck_dim,
        "in_context_len": arch.in_context_len,
        "in_context_start": arch.in_context_start,
        "num_classes": arch.num_classes,
        "attn_drop": ckpt.args.get("attn_dropout", 0.0),
        "proj_drop": ckpt.args.get("proj_dropout", 0.0),
        "sampling": {**sampling, "t_eps": ckpt.args.get("t_eps", 0.05)},
        "provenance": {"source": source["file"], "source_sha256": source["sha256"], "epoch": ckpt.epoch,
                       "global_step": ckpt.global_step, "weights": which, "ema_decay": decay,
                       "jitckpt_version": __version__},
    }


def _write_samples(folder: Path, which: str, num_classes: int) -> None:
    """``samples.png``: a grid sampled from the folder just written, read back as any checkpoint."""
    from ..evaluation.sampling import SamplingSettings, sample_grid

    labels = sorted({c % num_classes for c in SAMPLE_CLASSES})
    sample_grid(folder, labels, SamplingSettings(which), folder / "samples.png", on_warning=lambda m: None)


def model_card(config: dict, scores: dict | None, license: str | None, samples: bool) -> str:
    """``README.md`` with a metadata header, how to load and sample, the training facts and any scores."""
    name = config["variant"] or "A custom JiT"
    s, p = config["sampling"], config["provenance"]
    header = ["---", "library_name: jitckpt", f"license: {license or 'other'}",
              "tags:", "- jit", "- diffusion", "- image-generation", "- class-conditional", "- pixel-space",
              "pipeline_tag: unconditional-image-generation", "---", ""]
    lines = header + [
        f"# {name}, {config['img_size']} px ({p['weights'] or 'unrecorded'} weights)", "",
        "JiT (\"Just image Transformers\", Li & He 2025) is a pixel-space diffusion transformer. These are the "
        f"{p['weights'] or 'unrecorded'} weights of a {config['depth']}-block, {config['hidden_size']}-wide JiT with patch size "
        f"{config['patch_size']} over {config['num_classes']} classes, exported by jitckpt {p['jitckpt_version']}.",
        "", "## Load and sample", "", "```python", "import torch", "from jitckpt.model import from_pretrained",
        'model = from_pretrained(".")  # this folder: the Denoiser with these weights and the protocol below',
        "labels = torch.tensor([207, 360]) % model.net.arch.num_classes",
        "images = model.generate(labels, torch.Generator().manual_seed(0))  # (2, 3, H, W) in [-1, 1]", "```", "",
        "## Sampling protocol", "",
        f"{s['method']}, {s['steps']} steps, CFG {s['cfg']} in [{s['interval_min']}, {s['interval_max']}], "
        f"noise scale {s['noise_scale']}, t_eps {s['t_eps']}.", "",
        "## Training", "",
        f"Exported from `{p['source']}`" + (f" (SHA-256 `{p['source_sha256']}`)" if p["source_sha256"] else "")
        + f": epoch {p['epoch']}, global step {p['global_step']}"
        + (f", EMA decay {p['ema_decay']}" if p["ema_decay"] is not None else "") + ".", "",
    ]
    if samples:
        lines += ["![samples](samples.png)", ""]
    if scores is not None:
        lines += _score_table(scores)
    return "\n".join(lines)


def _score_table(result: dict) -> list[str]:
    sampling = result.get("sampling", {})
    reference = result.get("reference") or {}
    inception = result.get("inception_weights") or {}
    rows = [("FID", result.get("fid")), ("Inception Score", result.get("inception_score_mean")),
            ("Inception Score std", result.get("inception_score_std")), ("images", result.get("num_images")),
            ("weights", result.get("weights")), ("method", sampling.get("method")), ("steps", sampling.get("steps")),
            ("CFG", sampling.get("cfg")), ("CFG interval", f"[{sampling.get('interval_min')}, "
                                                           f"{sampling.get('interval_max')}]"),
            ("noise scale", sampling.get("noise_scale")), ("seed", result.get("seed")),
            ("reference", reference.get("fid_stats") or reference.get("ref_dir")),
            ("reference SHA-256", reference.get("sha256")), ("Inception weights", inception.get("path")),
            ("Inception SHA-256", inception.get("sha256"))]
    table = ["## Scores", "", "Measured with `jitckpt eval` under this protocol:", "", "| | |", "| --- | --- |"]
    table += [f"| {key} | {value} |" for key, value in rows if value is not None]
    return table + [""]
