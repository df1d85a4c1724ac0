import pytest
import torch

import jitckpt
from jitckpt.errors import SchemaError
from jitckpt.schema import MIGRATIONS, SCHEMA_VERSION, optimizer_to_named, optimizer_to_positional, upgrade
from tests.helpers import GOLDEN, load_golden_torch


def test_golden_reads_as_version_0_and_migrates():
    ckpt = jitckpt.load(GOLDEN, lazy=True)
    assert ckpt.source_version == 0 and ckpt.schema_version == SCHEMA_VERSION == 1
    assert ckpt.epoch == 1 and ckpt.global_step == 6
    assert ckpt.args["model"] == "JiT-T/4" and ckpt.args["lr"] == 1.5625e-05
    assert [v for v, _ in MIGRATIONS] == [0]


def test_optimizer_is_keyed_by_parameter_name():
    ckpt = jitckpt.load(GOLDEN)
    original = load_golden_torch()["optimizer"]
    no_decay = ckpt.optimizer["param_groups"][0]["params"]
    assert no_decay[0] == "net.t_embedder.mlp.0.bias" and len(no_decay) == 33
    assert ckpt.optimizer["param_groups"][1]["params"][0] == "net.in_context_posemb"
    # the original's index 0 is the first no-decay parameter, index 33 the first decay one
    assert torch.equal(ckpt.optimizer["state"]["net.t_embedder.mlp.0.bias"]["exp_avg"], original["state"][0]["exp_avg"])
    assert torch.equal(ckpt.optimizer["state"]["net.in_context_posemb"]["exp_avg"], original["state"][33]["exp_avg"])
    back = optimizer_to_positional(ckpt.optimizer)
    assert back["param_groups"] == original["param_groups"]
    assert all(torch.equal(back["state"][i][k], original["state"][i][k]) for i in original["state"] for k in original["state"][i])


def test_optimizer_with_other_grouping_is_an_error():
    ckpt = jitckpt.load(GOLDEN, lazy=True)
    positional = optimizer_to_positional(ckpt.optimizer)
    positional["param_groups"][0]["params"] = positional["param_groups"][0]["params"][:-1]
    with pytest.raises(SchemaError, match="param groups of sizes"):
        optimizer_to_named(positional, ckpt.arch)


def test_newer_schema_version_is_refused():
    with pytest.raises(SchemaError, match="newer than this jitckpt"):
        upgrade({}, SCHEMA_VERSION + 1)


def test_ema_with_wrong_shape_names_the_key():
    ckpt = jitckpt.load(GOLDEN)
    ckpt.model_ema1["net.blocks.1.attn.proj.weight"] = torch.zeros(3, 3)
    with pytest.raises(SchemaError, match=r"model_ema1: 'net.blocks.1.attn.proj.weight' has shape \(3, 3\)"):
        ckpt.validate()


def test_missing_ema2_stays_absent():
    ckpt = jitckpt.load(GOLDEN)
    ckpt.model_ema2 = None
    assert set(ckpt.sections()) == {"model", "model_ema1"}
    with pytest.raises(SchemaError, match="no model_ema2"):
        ckpt.weights("ema2")
