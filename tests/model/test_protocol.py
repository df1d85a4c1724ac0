"""The paper's evaluation protocol as data, and the one function that picks a checkpoint's sampler settings."""

import hashlib
from dataclasses import fields, replace

import pytest

from jitckpt.evaluation.provenance import protocol_notes, sha256_file
from jitckpt.layouts.arch import VARIANTS, official
from jitckpt.model.denoiser import DiffusionConfig
from jitckpt.model.protocol import DEFAULTS, PROTOCOLS, SETTINGS, resolve_sampling
from jitckpt.layouts.args import ORIGINAL_DEFAULTS

# The original README's evaluation commands for the released weights.
README_CFG = {"JiT-B/16": 3.0, "JiT-B/32": 3.0, "JiT-L/16": 2.4, "JiT-L/32": 2.5, "JiT-H/16": 2.2, "JiT-H/32": 2.3}
README_NOISE = {256: 1.0, 512: 2.0}
RELEASED = {("JiT-B/16", 256), ("JiT-L/16", 256), ("JiT-H/16", 256),
            ("JiT-B/32", 512), ("JiT-L/32", 512), ("JiT-H/32", 512)}
GOLDEN_ARGS = {"sampling_method": "heun", "num_sampling_steps": 5, "cfg": 2.0, "interval_min": 0.1,
               "interval_max": 1.0, "noise_scale": 1.0}


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("px", [256, 512])
def test_table_holds_the_readme_protocol_for_every_official_variant_and_size(name, px):
    row = PROTOCOLS[(name, px)]
    assert (row.method, row.steps, row.interval_min, row.interval_max) == ("heun", 50, 0.1, 1.0)
    assert (row.cfg, row.noise_scale) == (README_CFG[name], README_NOISE[px])
    assert (row.num_images, row.num_classes) == (50000, 1000)
    assert row.fid_stats == f"fid_stats/jit_in{px}_stats.npz"
    assert row.released == ((name, px) in RELEASED)
    plan = resolve_sampling(official(name, px, 1000), {})
    assert plan.source == "protocol" and plan.protocol == row
    assert plan.settings() == row.settings()
    assert set(plan.sources.values()) == {"protocol"}


def test_only_the_released_pairs_say_that_the_settings_extend_the_rule():
    released = resolve_sampling(official("JiT-H/16", 256), {})
    assert released.warnings == ()
    extended = resolve_sampling(official("JiT-H/16", 512), {})
    assert len(extended.warnings) == 1 and "no released JiT-H/16 weights at 512 px" in extended.warnings[0]


def test_the_checkpoints_args_win_over_the_protocol():
    plan = resolve_sampling(official("JiT-B/16", 256), {"model": "JiT-B/16", **GOLDEN_ARGS})
    assert plan.source == "args" and plan.as_args() == GOLDEN_ARGS and plan.warnings == ()
    assert plan.protocol is PROTOCOLS[("JiT-B/16", 256)]  # still known: what the run would be compared with


def test_flags_override_every_source_and_are_named():
    for arch, args in [(official("JiT-L/32", 512), {}), (official("JiT-L/32", 512), GOLDEN_ARGS),
                       (replace(official("JiT-B/16", 64), variant=None), {})]:
        flags = {"method": "euler", "steps": 7, "cfg": 1.5, "interval_min": 0.2, "interval_max": 0.9,
                 "noise_scale": 0.5}
        plan = resolve_sampling(arch, args, flags)
        assert plan.settings() == flags and set(plan.sources.values()) == {"flag"}
        assert plan.source == resolve_sampling(arch, args).source  # the checkpoint's own source, flags aside
        assert plan.warnings == () or "no released" in plan.warnings[0]


def test_one_flag_overrides_one_setting():
    plan = resolve_sampling(official("JiT-L/32", 512), {}, {"cfg": 4.0, "steps": None})
    assert plan.cfg == 4.0 and plan.noise_scale == 2.0 and plan.steps == 50
    assert plan.sources["cfg"] == "flag" and plan.sources["steps"] == "protocol"


def test_a_custom_model_without_args_falls_back_to_the_defaults_with_a_warning():
    plan = resolve_sampling(official("JiT-B/16", 64, 1000), {})  # an official variant at a size the paper lacks
    assert plan.source == "defaults" and plan.protocol is None
    assert plan.as_args() == {arg: ORIGINAL_DEFAULTS[arg] for arg in SETTINGS.values()}
    (warning,) = plan.warnings
    assert "not 64 px" in warning and "cfg 1.0" in warning and "--cfg" in warning
    ten_classes = resolve_sampling(official("JiT-B/16", 256, 10), {})
    assert ten_classes.source == "defaults" and "1000 classes, not 10" in ten_classes.warnings[0]
    # every setting given by a flag: nothing is left to the defaults, nothing to warn about
    flags = {name: DEFAULTS[name] for name in SETTINGS}
    assert resolve_sampling(official("JiT-B/16", 64), {}, flags).warnings == ()


def test_args_lacking_some_settings_fill_them_and_say_which():
    partial = {k: v for k, v in GOLDEN_ARGS.items() if k != "noise_scale"}
    custom = replace(official("JiT-B/16", 64), variant=None)
    plan = resolve_sampling(custom, partial)
    assert plan.source == "defaults" and plan.sources["noise_scale"] == "defaults" and plan.sources["cfg"] == "args"
    assert "do not hold noise_scale" in plan.warnings[0] and "--noise-scale" in plan.warnings[0]
    official_plan = resolve_sampling(official("JiT-B/32", 512), partial)
    assert official_plan.source == "protocol" and official_plan.noise_scale == 2.0 and official_plan.warnings == ()


def test_one_copy_of_the_defaults():
    config = DiffusionConfig()
    assert {f.name: getattr(config, f.name) for f in fields(config)} == {
        f.name: ORIGINAL_DEFAULTS[f.name] for f in fields(config)}
    assert DEFAULTS == {name: ORIGINAL_DEFAULTS[arg] for name, arg in SETTINGS.items()}


def test_the_protocol_follows_the_dimensions_not_a_recorded_name():
    liar = replace(official("JiT-B/16", 256), depth=3)  # a record may name a variant its dimensions are not
    assert resolve_sampling(liar, {}).source == "defaults"


def test_unknown_flag_is_refused():
    with pytest.raises(ValueError, match="unknown sampler settings"):
        resolve_sampling(None, {}, {"guidance": 2.0})


def test_protocol_notes_name_what_departs_from_the_paper():
    plan = resolve_sampling(official("JiT-B/16", 256), {})
    assert protocol_notes(plan, 50000, "/data/fid_stats/jit_in256_stats.npz") == []
    notes = protocol_notes(plan, 1000, "ref.npz")
    assert "scores 50000 images" in notes[0] and "this run scores 1000" in notes[0]
    assert "jit_in256_stats.npz" in notes[1] and "'ref.npz'" in notes[1]
    assert protocol_notes(resolve_sampling(official("JiT-B/16", 256), GOLDEN_ARGS), 10, None) == []


def test_sha256_streams_in_chunks(tmp_path):
    data = bytes(range(256)) * 5000
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f", chunk_size=4096) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("arg, value", [("cfg", "abc"), ("num_sampling_steps", -3), ("num_sampling_steps", 10 ** 12),
                                        ("noise_scale", [1]), ("sampling_method", "bogus"), ("cfg", float("nan"))])
def test_a_setting_of_the_wrong_type_or_range_in_a_files_args_is_ignored_with_a_warning(arg, value):
    plan = resolve_sampling(None, {arg: value})
    assert plan.source == "defaults" and any(f"args.{arg}" in w and "ignored" in w for w in plan.warnings)
