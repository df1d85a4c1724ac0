"""The tree layout table: the most specific row wins, a new layout is one row, parts are found where a row says."""

import torch

import jitckpt
from jitckpt.layouts import TREE_LAYOUTS, TreeLayout, recognise
from tests.helpers import load_golden_torch


def test_the_more_specific_row_wins():
    tensor = torch.zeros(1)
    seed_port = {"model": {"a": tensor}, "optimizer": {}, "hyper_parameters": {}, "global_step": 3}
    assert recognise(seed_port).layout.name == "seed-port"  # not the two-key "loop" row before it
    assert recognise({"model": {"a": tensor}, "optimizer": {}}).layout.name == "loop"
    assert recognise({"model": {"a": tensor}, "args": None, "optimizer": {}}).layout.name == "original"
    assert recognise({"a": tensor}).layout.name == "state-dict"
    assert recognise({"state_dict": {}, "optimizer_0": {}}).layout.name == "lightning-sharded"
    assert recognise({"nothing": 1}) is None


def test_parts_are_found_where_the_row_says():
    tree = {"state_dict": {"w": 1}, "optimizer_states": [{"state": {}}],
            "callbacks": {"EMACallback{'decay': 0.9}": {"ema1": {"w": 2}}}}
    match = recognise(tree)
    assert match.get("model") == {"w": 1} and match.get("optimizer") == {"state": {}}
    assert match.get("model_ema1") == {"w": 2} and match.get("model_ema2") is None
    assert match.found["model_ema1"] == ("callbacks", "EMACallback*", "ema1")


def test_a_new_layout_is_one_row():
    row = TreeLayout("toy", "a toy trainer's dict", "original", requires=(("weights", "online"),),
                     parts={"model": (("weights", "online"),), "model_ema1": (("weights", "target"),)})
    tree = {"weights": {"online": {"w": 1}, "target": {"w": 2}}}
    assert recognise(tree) is None or recognise(tree).layout.name != "toy"
    match = recognise(tree, TREE_LAYOUTS + (row,))
    assert match.layout is row and match.get("model_ema1") == {"w": 2}


def test_a_training_loops_dict_keeps_its_emas(tmp_path):
    golden = load_golden_torch()
    bare = {k.removeprefix("net."): v for k, v in golden["model"].items()}
    torch.save({"model": bare, "optimizer": golden["optimizer"], "ema": {"ema1": golden["model_ema1"],
                                                                         "ema2": golden["model_ema2"]},
                "epoch": 1, "step": 6}, tmp_path / "loop.pth")
    ckpt = jitckpt.load(tmp_path / "loop.pth")
    assert ckpt.layout == "loop" and ckpt.epoch == 1 and ckpt.global_step == 6
    assert all(torch.equal(ckpt.model_ema2[k], v) for k, v in golden["model_ema2"].items())
    assert all(torch.equal(ckpt.model[k], v) for k, v in golden["model"].items())
    assert ckpt.optimizer is not None and "original" not in ckpt.extra
