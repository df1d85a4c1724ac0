import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import jitckpt
from jitckpt.callbacks import EMACallback, create_default_callbacks
from jitckpt.errors import JiTCheckpointError
from jitckpt.lightning import JiTLightningModule
from tests.helpers import FIXTURES, GOLDEN


def small_module():
    golden = jitckpt.load(GOLDEN, lazy=True)
    return JiTLightningModule.from_args(golden.args, arch=golden.arch)


def loader(batch_size=4):
    data = torch.load(FIXTURES / "train_data.pt")
    return DataLoader(TensorDataset(data["images"], data["labels"]), batch_size=batch_size, drop_last=True)


def fit(tmp_path, module, callbacks, batch_size=4, **kwargs):
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                        default_root_dir=tmp_path, **kwargs)
    trainer.fit(module, loader(batch_size))
    return trainer


def test_one_update_per_optimizer_step_under_accumulation(tmp_path):
    ema = EMACallback()
    updates = []

    class Count(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            updates.append(ema.num_updates)

    trainer = fit(tmp_path, small_module(), [ema, Count()], batch_size=2, accumulate_grad_batches=2)
    assert trainer.global_step == 6 and ema.num_updates == 6  # 12 micro-batches, 6 optimizer steps
    assert updates[:4] == [0, 1, 1, 2]


def test_update_is_the_ema_rule():
    module = small_module()
    ema = EMACallback(0.9, 0.5)
    ema._ensure(module)
    before = [e.clone() for e in ema.ema2]
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)
    ema.update_(module)
    for e_old, e_new, p in zip(before, ema.ema2, module.parameters()):
        torch.testing.assert_close(e_new, 0.5 * e_old + 0.5 * p.detach())


def test_the_update_in_pieces_is_bitwise_the_original_per_parameter_loop():
    """Tensors longer than a piece (with a ragged last piece), a non-contiguous parameter and small ones: the
    EMAs after three updates equal, bit for bit, those of the original's ``mul_(decay).add_(param, alpha)``."""
    from jitckpt.callbacks.ema import PIECE, update_in_pieces_

    generator = torch.Generator().manual_seed(0)
    params = [torch.randn(2 * PIECE + 37, generator=generator), torch.randn(PIECE + 1, 3, generator=generator),
              torch.randn(3, PIECE // 2 + 5, generator=generator).t(), torch.randn(7, generator=generator)]
    assert not params[2].is_contiguous()
    loop = [[p.clone() for p in params] for _ in range(2)]
    pieces = [[p.clone() for p in params] for _ in range(2)]
    for step in range(3):
        for p in params:
            p.add_(torch.randn(p.shape, generator=generator), alpha=1e-2)
        for ema, decay in zip(loop, (0.9999, 0.9996)):
            for target, param in zip(ema, params):
                target.mul_(decay).add_(param, alpha=1 - decay)
        update_in_pieces_([(pieces[0], 0.9999), (pieces[1], 0.9996)], params)
    assert all(torch.equal(a, b) for a, b in zip(loop[0] + loop[1], pieces[0] + pieces[1]))
    assert not torch.equal(loop[0][0], params[0])  # the EMAs moved


def test_swap_ema_uses_ema_inside_and_restores_raw_without_copies():
    module = small_module()
    ema = EMACallback(0.9, 0.5)
    ema._ensure(module)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)
    raw = [p.detach().clone() for p in module.parameters()]
    raw_ptrs = [p.data_ptr() for p in module.parameters()]
    ema_ptrs = [e.data_ptr() for e in ema.ema1]
    with ema.swap_ema(module, 1):
        assert [p.data_ptr() for p in module.parameters()] == ema_ptrs
        assert not torch.equal(next(module.parameters()), raw[0])
    assert [p.data_ptr() for p in module.parameters()] == raw_ptrs
    assert all(torch.equal(p, r) for p, r in zip(module.parameters(), raw))


def test_get_and_load_ema():
    module = small_module()
    ema = EMACallback()
    ema._ensure(module)
    with torch.no_grad():
        module.net.final_layer.linear.weight.add_(1.0)
    state = ema.get_ema_state_dict(module, ema_version=2)
    assert set(state) == set(module.state_dict())
    assert not torch.equal(state["net.final_layer.linear.weight"], module.net.final_layer.linear.weight)
    ema.load_ema_to_model(module, ema_version=2)
    assert torch.equal(module.net.final_layer.linear.weight, state["net.final_layer.linear.weight"])
    with pytest.raises(JiTCheckpointError, match="ema_version must be 1 or 2"):
        ema.get_ema_state_dict(module, 3)


def test_state_without_ema_weights_is_an_error():
    with pytest.raises(JiTCheckpointError, match="no EMA weights"):
        EMACallback().load_state_dict({"ema_decay1": 0.9999})


def test_default_callbacks_and_fid_without_reference(tmp_path):
    callbacks = create_default_callbacks(save_dir=tmp_path, epochs=3, lr_schedule="cosine", warmup_epochs=1)
    assert [type(c).__name__ for c in callbacks] == [
        "EMACallback", "JiTModelCheckpoint", "LearningRateSchedulerCallback", "MetricLoggerCallback"]
    # without statistics the FID callback looks for the original's fid_stats/jit_in256_stats.npz at fit start
    assert type(create_default_callbacks(enable_fid_eval=True)[-1]).__name__ == "FIDEvaluationCallback"
