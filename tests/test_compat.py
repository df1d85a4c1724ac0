"""Every private edge in jitckpt.compat still holds in the installed Python, torch and Lightning: an upgrade that
moves one fails here by name, and the public fallbacks give the fused kernels' bits."""

from __future__ import annotations

import io
import pickle
import types

import pytest
import torch

from jitckpt import compat
from jitckpt.errors import JiTCheckpointError


def test_the_python_pickler_has_a_dispatch_table_a_class_can_extend():
    pickler = compat.python_pickler()
    assert pickler is pickle._Pickler and isinstance(pickler.dispatch, dict)
    assert pickler.dispatch[dict] is not None  # the table the torch-file writer copies and extends


def test_python2_names_map_as_the_unpickler_maps_them():
    names, modules = compat.py2_names()
    assert names[("__builtin__", "xrange")] == ("builtins", "range")
    assert modules["copy_reg"] == "copyreg"


def test_lightning_dumps_the_checkpoint_dict_of_a_trainer(tmp_path):
    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel

    module = BoringModel()
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(module)
    dumped = compat.dump_checkpoint(trainer)
    assert {"state_dict", "optimizer_states", "epoch", "global_step"} <= set(dumped)
    assert set(dumped["state_dict"]) == set(module.state_dict())
    with pytest.raises(JiTCheckpointError, match=r"_checkpoint_connector\.dump_checkpoint is not where .*checked with lightning"):
        compat.dump_checkpoint(object())


def test_model_parallel_strategy_keeps_its_distributed_checkpoint_flag():
    from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy

    assert compat.saves_distributed_checkpoint(ModelParallelStrategy()) is True
    assert compat.saves_distributed_checkpoint(ModelParallelStrategy(save_distributed_checkpoint=False)) is False
    assert compat.saves_distributed_checkpoint(DDPStrategy()) is False


def test_dcp_storage_info_has_the_fields_the_metadata_writer_fills():
    info = compat.dcp_storage_info()(relative_path="__0_0.distcp", offset=3, length=5)
    assert (info.relative_path, info.offset, info.length) == ("__0_0.distcp", 3, 5)


def _tensors(seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator) for shape in ((7, 5), (3,), (2, 3, 4))]


def test_foreach_ops_round_as_the_per_tensor_loop_does():
    """The EMA update (mul_ then add_ with alpha) gives the original's per-parameter bits: jitckpt's ops, and
    torch's fused kernels they use off the CPU (checked here on CPU tensors, where torch has them too)."""
    params, expected = _tensors(1), _tensors(2)
    for tensor, param in zip(expected, params):
        tensor.mul_(0.9999).add_(param, alpha=1 - 0.9999)  # the original's update_ema
    ours, fused = _tensors(2), _tensors(2)
    compat.foreach_mul_add_(ours, 0.9999, params, alpha=1 - 0.9999)
    torch._foreach_mul_(fused, 0.9999)
    torch._foreach_add_(fused, params, alpha=1 - 0.9999)
    assert all(torch.equal(a, b) and torch.equal(c, b) for a, b, c in zip(ours, expected, fused))
    compat.foreach_copy_(ours, params)
    assert all(torch.equal(a, b) for a, b in zip(ours, params))


def test_a_torch_without_fused_kernels_takes_the_per_tensor_route(monkeypatch):
    for name in ("_foreach_mul_", "_foreach_add_", "_foreach_copy_"):
        monkeypatch.delattr(torch, name)
    on_gpu = [types.SimpleNamespace(device=types.SimpleNamespace(type="cuda"))]
    assert compat._fused("_foreach_mul_", on_gpu) is None  # off the CPU, yet missing: the per-tensor loop


def test_a_moved_edge_is_one_error_naming_it(monkeypatch):
    monkeypatch.delattr(pickle, "_Pickler")
    with pytest.raises(JiTCheckpointError, match=r"pickle\._Pickler\.dispatch is not where .*checked with python"):
        compat.python_pickler()


def test_the_torch_file_writer_still_writes_what_torch_loads():
    from jitckpt.torchfile.write import write_tree

    buffer = io.BytesIO()
    write_tree({"a": torch.arange(3.0), "b": [1, "x"]}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert torch.equal(loaded["a"], torch.arange(3.0)) and loaded["b"] == [1, "x"]
