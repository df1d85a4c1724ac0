"""The sampling settings a checkpoint is evaluated with, and where they come from.

The authors' released JiT weights are ``checkpoint-last.pth`` files with only
``model``, ``model_ema1`` and ``model_ema2``: no args, so nothing in the file
says how to sample them. The original README evaluates them with Heun, 50 steps,
CFG interval [0.1, 1.0], a guidance scale per variant and a noise scale per image
size, 50,000 images against ``fid_stats/jit_in{256,512}_stats.npz``. That
knowledge is the table :data:`PROTOCOLS`, keyed by (variant, image size).

:func:`resolve_sampling` is the one place that decides the six sampler settings
(method, steps, cfg, interval_min, interval_max, noise_scale) for any
checkpoint, for ``inspect``, ``eval`` and ``sample`` alike. Each setting comes,
in this order, from a command-line flag (``"flag"``), the checkpoint's own
training args (``"args"``), the paper's protocol for an official variant
(``"protocol"``), or the original ``main_jit.py`` defaults (``"defaults"``,
with a warning: an FID sampled with cfg 1.0 says little about a released model).

Pure data and arithmetic: no torch, so ``inspect`` stays fast.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from ..errors import render
from ..layouts.args import ORIGINAL_DEFAULTS
from ..layouts.arch import Arch, variant_name

# Our name of each sampler setting -> the original args' name (main_jit.py's flags).
SETTINGS: dict[str, str] = {
    "method": "sampling_method",
    "steps": "num_sampling_steps",
    "cfg": "cfg",
    "interval_min": "interval_min",
    "interval_max": "interval_max",
    "noise_scale": "noise_scale",
}
SOURCES = ("flag", "args", "protocol", "defaults")  # strongest first
METHODS = ("euler", "heun")


def _number(low: float, high: float, whole: bool = False) -> Any:
    def check(value: Any) -> bool:
        kinds = (int,) if whole else (int, float)
        return type(value) in kinds and low <= value <= high  # NaN fails both comparisons
    return check


# What a setting read from a checkpoint's args must be to be used (a file's values are never trusted blindly).
# The range of each numeric setting (the command line's options take theirs from here too).
RANGES: dict[str, tuple[float, float]] = {
    "steps": (1, 10_000), "cfg": (0.0, 100.0), "interval_min": (0.0, 1.0), "interval_max": (0.0, 1.0),
    "noise_scale": (1e-6, 100.0),
}
VALID: dict[str, Any] = {
    "method": lambda value: value in METHODS,
    **{name: _number(low, high, whole=name == "steps") for name, (low, high) in RANGES.items()},
}

# The fallback: main_jit.get_args_parser()'s defaults (the one copy, in train_args.py).
DEFAULTS: dict[str, Any] = {name: ORIGINAL_DEFAULTS[arg] for name, arg in SETTINGS.items()}


@dataclass(frozen=True)
class Protocol:
    """How the paper evaluates one (variant, image size): sampler settings, image count, reference statistics.

    ``released`` is True where the authors published weights at this size (the
    /16 variants at 256 px, the /32 variants at 512 px); the other rows apply the
    same rule (the variant's guidance scale, the size's noise scale).
    """

    variant: str
    img_size: int
    cfg: float
    noise_scale: float
    released: bool
    fid_stats: str
    method: str = "heun"
    steps: int = 50
    interval_min: float = 0.1
    interval_max: float = 1.0
    num_images: int = 50000
    num_classes: int = 1000  # ImageNet: the protocol and its statistics are ImageNet's

    def settings(self) -> dict[str, Any]:
        """The six sampler settings, by :data:`SETTINGS` name."""
        return {name: getattr(self, name) for name in SETTINGS}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_STATS = {256: "fid_stats/jit_in256_stats.npz", 512: "fid_stats/jit_in512_stats.npz"}

# The original README's evaluation commands: Heun, 50 steps, interval [0.1, 1.0], 50,000 images.
#   variant     px   cfg  noise  released
_ROWS = (
    ("JiT-B/16", 256, 3.0, 1.0, True),
    ("JiT-B/16", 512, 3.0, 2.0, False),
    ("JiT-B/32", 256, 3.0, 1.0, False),
    ("JiT-B/32", 512, 3.0, 2.0, True),
    ("JiT-L/16", 256, 2.4, 1.0, True),
    ("JiT-L/16", 512, 2.4, 2.0, False),
    ("JiT-L/32", 256, 2.5, 1.0, False),
    ("JiT-L/32", 512, 2.5, 2.0, True),
    ("JiT-H/16", 256, 2.2, 1.0, True),
    ("JiT-H/16", 512, 2.2, 2.0, False),
    ("JiT-H/32", 256, 2.3, 1.0, False),
    ("JiT-H/32", 512, 2.3, 2.0, True),
)
PROTOCOLS: dict[tuple[str, int], Protocol] = {
    (variant, px): Protocol(variant, px, cfg, noise, released, _STATS[px]) for variant, px, cfg, noise, released in _ROWS
}


def protocol_for(arch: Arch | None) -> Protocol | None:
    """The paper's protocol for this architecture: an official variant at 256 or 512 px with 1000 classes.

    The variant is recognised from the dimensions, not from the name a file records.
    """
    variant = variant_name(arch) if arch is not None else None
    if arch is None or variant is None:
        return None
    row = PROTOCOLS.get((variant, arch.img_size))
    return row if row is not None and row.num_classes == arch.num_classes else None


@dataclass(frozen=True)
class SamplingPlan:
    """The six sampler settings a checkpoint is sampled with, each with its source.

    ``source`` is where the checkpoint's own settings come from, flags aside:
    ``"args"``, ``"protocol"`` or ``"defaults"`` (the weakest source any of the
    six needed). ``sources`` names the source of each setting, ``"flag"`` included.
    """

    method: str
    steps: int
    cfg: float
    interval_min: float
    interval_max: float
    noise_scale: float
    source: str
    sources: dict[str, str] = field(default_factory=dict)
    protocol: Protocol | None = None
    warnings: tuple[str, ...] = ()

    def settings(self) -> dict[str, Any]:
        """The six settings, by :data:`SETTINGS` name."""
        return {name: getattr(self, name) for name in SETTINGS}

    def as_args(self) -> dict[str, Any]:
        """The six settings under the original args' names (``sampling_method``, ``num_sampling_steps``, ...)."""
        return {SETTINGS[name]: value for name, value in self.settings().items()}

    def to_dict(self, with_sources: bool = False) -> dict[str, Any]:
        """``{method, steps, cfg, interval_min, interval_max, noise_scale, source}`` (plus ``sources``)."""
        data = {**self.settings(), "source": self.source}
        if with_sources:
            data["sources"] = dict(self.sources)
        return data


def resolve_sampling(arch: Arch | None, args: Mapping[str, Any] | None,
                     flags: Mapping[str, Any] | None = None) -> SamplingPlan:
    """The sampler settings for a checkpoint of architecture ``arch`` with training ``args``.

    Args:
        arch: the checkpoint's architecture (its variant and image size pick the protocol row).
        args: the checkpoint's training args, named as the original's (``cfg``, ``sampling_method``, ...).
        flags: settings given on the command line, by :data:`SETTINGS` name; None values are not given.

    Returns:
        A :class:`SamplingPlan`; its ``warnings`` say when a setting the flags do
        not give falls back to the training defaults.

    Example:
        >>> from jitckpt.layouts.arch import official
        >>> plan = resolve_sampling(official("JiT-L/16", 256), {})
        >>> plan.cfg, plan.noise_scale, plan.source
        (2.4, 1.0, 'protocol')
    """
    args, flags = args or {}, {k: v for k, v in (flags or {}).items() if v is not None}
    unknown = sorted(set(flags) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown sampler settings {unknown}; known: {', '.join(SETTINGS)}")
    protocol = protocol_for(arch)
    values: dict[str, Any] = {}
    own_sources: dict[str, str] = {}  # the checkpoint's source of each setting, flags aside
    ignored = []
    for name, arg in SETTINGS.items():
        if args.get(arg) is not None and not VALID[name](args[arg]):
            ignored.append(f"the checkpoint's args.{arg} is {render(args[arg], 40)}, not a valid setting: ignored")
        if args.get(arg) is not None and VALID[name](args[arg]):  # an arg set to None gives no setting
            values[name], own_sources[name] = args[arg], "args"
        elif protocol is not None:
            values[name], own_sources[name] = getattr(protocol, name), "protocol"
        else:
            values[name], own_sources[name] = DEFAULTS[name], "defaults"
    source = max(own_sources.values(), key=SOURCES.index)
    sources = {name: "flag" if name in flags else own_sources[name] for name in SETTINGS}
    values.update(flags)
    warnings = ignored + _warnings(arch, own_sources, flags, protocol)
    return SamplingPlan(**values, source=source, sources=sources, protocol=protocol, warnings=tuple(warnings))


def _warnings(arch: Arch | None, own_sources: Mapping[str, str], flags: Mapping[str, Any],
              protocol: Protocol | None) -> list[str]:
    fallback = [name for name, source in own_sources.items() if source == "defaults" and name not in flags]
    notes = []
    if fallback:
        if len(fallback) < len(SETTINGS) and any(s == "args" for s in own_sources.values()):
            why = "the checkpoint's training args do not hold " + ", ".join(SETTINGS[n] for n in fallback)
        else:
            why = f"the checkpoint has no sampling settings in its args and {_no_protocol_reason(arch)}"
        used = ", ".join(f"{name} {DEFAULTS[name]}" for name in fallback)
        flags_hint = " ".join(f"--{name.replace('_', '-')}" for name in fallback)
        notes.append(f"{why}; sampling uses the original training defaults ({used}), which the paper does not "
                     f"evaluate with: give eval and sample {flags_hint} to choose them")
    if protocol is not None and not protocol.released and any(s == "protocol" for s in own_sources.values()):
        notes.append(f"no released {protocol.variant} weights at {protocol.img_size} px: the protocol's settings "
                     f"for it follow the paper's rule (cfg {protocol.cfg} of the variant, noise scale "
                     f"{protocol.noise_scale} of the size), not a published evaluation")
    return notes


def _no_protocol_reason(arch: Arch | None) -> str:
    variant = variant_name(arch) if arch is not None else None
    if arch is None or variant is None:
        return "it is not an official variant (the paper's protocol covers JiT-B/L/H at 256 and 512 px)"
    if (variant, arch.img_size) not in PROTOCOLS:
        return f"the paper's protocol covers {variant} at 256 and 512 px only, not {arch.img_size} px"
    return f"the paper's protocol is for ImageNet's 1000 classes, not {arch.num_classes}"


def describe_settings(settings: Mapping[str, Any]) -> str:
    """One line: ``heun, 50 steps, cfg 2.4 in [0.1, 1.0], noise scale 1.0``."""
    steps = settings["steps"]
    return (f"{settings['method']}, {steps} step{'' if steps == 1 else 's'}, cfg {settings['cfg']} in "
            f"[{settings['interval_min']}, {settings['interval_max']}], noise scale {settings['noise_scale']}")


def describe_source(source: str, protocol: Mapping[str, Any] | None = None) -> str:
    """Where the settings come from, in words (``protocol`` the row's dict, for ``"protocol"``)."""
    if source == "protocol" and protocol is not None:
        return f"the paper's protocol for {protocol['variant']} at {protocol['img_size']} px"
    return {"args": "the checkpoint's training args", "protocol": "the paper's protocol",
            "defaults": "the original training defaults",
            "flag": "the command line"}[source]
