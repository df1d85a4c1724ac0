"""Optimizer groupings as data: each known grouping is identified from real AdamW states, by evidence only."""

import dataclasses

import pytest
import torch

from jitckpt.errors import SchemaError
from jitckpt.layouts import groupings
from jitckpt.layouts.groupings import (
    GROUPINGS, ORIGINAL, SEED_PORT, SINGLE, SINGLE_TRAINABLE, identify, regroup, to_named,
)
from jitckpt.schema import optimizer_to_named, optimizer_to_positional
from tests.helpers import add_weight_decay
from tests.seed_port import ARCH, WEIGHT_DECAY, port_param_groups, train

BUILDERS = {
    "original": lambda m: add_weight_decay(m, WEIGHT_DECAY),
    "seed port": port_param_groups,
    "single group": lambda m: [{"params": list(m.parameters()), "weight_decay": WEIGHT_DECAY}],
    "single group of trainable parameters": lambda m: [
        {"params": [p for p in m.parameters() if p.requires_grad], "weight_decay": 0.0}],
}


def test_the_table_knows_the_original_the_seed_port_and_a_single_group():
    assert [g.name for g in GROUPINGS] == list(BUILDERS)
    no_decay, decay = ORIGINAL.names(ARCH)
    port_decay, port_no_decay = SEED_PORT.names(ARCH)
    assert set(no_decay) == set(port_no_decay) and set(decay) == set(port_decay)  # same sets, other order
    assert "net.pos_embed" in SINGLE.names(ARCH)[0] and "net.pos_embed" not in SINGLE_TRAINABLE.names(ARCH)[0]
    assert SEED_PORT.decays == (True, False) and ORIGINAL.decays == (False, True)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_each_grouping_is_identified_and_every_moment_named_right(name):
    run = train(BUILDERS[name])
    positional = run.optimizer.state_dict()
    assert identify(positional, ARCH).name == name
    named = optimizer_to_named(positional, ARCH)
    assert set(named["state"]) == set(run.moments)
    for pname, recorded in run.moments.items():
        assert all(torch.equal(named["state"][pname][k], v) for k, v in recorded.items())


@pytest.mark.parametrize("name", list(BUILDERS))
def test_regrouping_into_the_original_keeps_each_parameter_with_its_settings(name):
    run = train(BUILDERS[name])
    named = optimizer_to_named(run.optimizer.state_dict(), ARCH)
    original = regroup(named, ARCH, ORIGINAL)
    assert [g["params"] for g in original["param_groups"]] == ORIGINAL.names(ARCH)
    settings = {n: {k: v for k, v in g.items() if k != "params"} for g in named["param_groups"] for n in g["params"]}
    for group in original["param_groups"]:
        assert all({k: v for k, v in group.items() if k != "params"} == settings[n] for n in group["params"])
    # written positionally and read back, it is the original grouping and the same moments
    again = optimizer_to_named(optimizer_to_positional(original), ARCH)
    assert identify(optimizer_to_positional(original), ARCH) is ORIGINAL
    assert all(torch.equal(again["state"][n]["exp_avg"], run.moments[n]["exp_avg"]) for n in run.moments)


def test_group_sizes_that_fit_nothing_give_the_reason():
    positional = train().optimizer.state_dict()
    positional["param_groups"][0]["params"].append(positional["param_groups"][1]["params"].pop())
    reason = identify(positional, ARCH)
    assert isinstance(reason, str) and "sizes [24, 32]" in reason and "fit no known grouping" in reason
    assert "original: sizes [33, 23]" in reason and "seed port: sizes [23, 33]" in reason
    with pytest.raises(SchemaError, match="param groups of sizes"):
        optimizer_to_named(positional, ARCH)


def test_moment_shapes_are_evidence():
    """The original's group sizes, but each group in reverse order: the shapes say no."""
    run = train(lambda m: [{**g, "params": g["params"][::-1]} for g in add_weight_decay(m, WEIGHT_DECAY)])
    reason = identify(run.optimizer.state_dict(), ARCH)
    assert isinstance(reason, str) and "original: parameter 0 would be net.t_embedder.mlp.0.bias" in reason


def test_weight_decays_are_evidence():
    """The port's sizes, but the decays on the other group: group 1 of the port has none, so it does not fit."""
    run = train(lambda m: [{**g, "weight_decay": w} for g, w in zip(port_param_groups(m), (0.0, WEIGHT_DECAY))])
    reason = identify(run.optimizer.state_dict(), ARCH)
    assert isinstance(reason, str) and "seed port: group 1 would have no weight decay, but has 0.05" in reason
    same = train(lambda m: [{**g, "weight_decay": 0.1} for g in port_param_groups(m)])  # one decay for all: no evidence
    assert identify(same.optimizer.state_dict(), ARCH) is SEED_PORT


def test_two_groupings_that_fit_equally_are_not_guessed_between(monkeypatch):
    twin = dataclasses.replace(SEED_PORT, name="seed port twin")
    monkeypatch.setattr(groupings, "GROUPINGS", GROUPINGS + (twin,))
    reason = identify(train().optimizer.state_dict(), ARCH)
    assert isinstance(reason, str) and "more than one known grouping (seed port, seed port twin)" in reason


def test_a_never_stepped_optimizer_is_identified_by_its_groups():
    run = train(steps=0)
    assert run.optimizer.state_dict()["state"] == {} and identify(run.optimizer.state_dict(), ARCH) is SEED_PORT


def test_malformed_indices_are_an_error_whatever_the_grouping():
    positional = train().optimizer.state_dict()
    positional["param_groups"][1]["params"][0] = positional["param_groups"][0]["params"][0]
    with pytest.raises(SchemaError, match="appears twice"):
        identify(positional, ARCH)
    with pytest.raises(SchemaError, match="does not fit the original grouping"):
        to_named(train().optimizer.state_dict(), ARCH, ORIGINAL)


def test_regrouping_refuses_what_the_original_grouping_cannot_hold():
    named = optimizer_to_named(train().optimizer.state_dict(), ARCH)
    mixed = {**named, "param_groups": [dict(named["param_groups"][0]), dict(named["param_groups"][1])]}
    moved = mixed["param_groups"][1]["params"] = list(mixed["param_groups"][1]["params"])
    mixed["param_groups"][0]["params"] = mixed["param_groups"][0]["params"] + [moved.pop(0)]  # a bias with decay
    with pytest.raises(SchemaError, match="group 0: its parameters had different settings.*drop_optimizer=True"):
        regroup(mixed, ARCH, ORIGINAL)
