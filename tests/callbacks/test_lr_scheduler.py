import json

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import jitckpt
from jitckpt.callbacks import LearningRateSchedulerCallback, lr_at
from jitckpt.lightning import JiTLightningModule
from tests.helpers import FIXTURES, GOLDEN

TRACE = json.loads((FIXTURES / "lr_trace.json").read_text())


@pytest.mark.parametrize("entry", TRACE["schedules"], ids=lambda e: e["lr_schedule"])
def test_function_reproduces_trace_exactly(entry):
    per_epoch = entry["iters_per_epoch"]
    values = [lr_at(it / per_epoch + epoch, entry["lr"], entry["warmup_epochs"], entry["lr_schedule"],
                    entry["min_lr"], entry["epochs"])
              for epoch in range(entry["epochs"]) for it in range(per_epoch)]
    assert values == entry["lr_per_iteration"]


class RecordLR(L.Callback):
    def __init__(self):
        self.lrs = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lrs.append([g["lr"] for g in optimizer.param_groups])


def loader(batch_size=4):
    data = torch.load(FIXTURES / "train_data.pt")
    return DataLoader(TensorDataset(data["images"], data["labels"]), batch_size=batch_size, shuffle=False, drop_last=True)


def small_module():
    golden = jitckpt.load(GOLDEN, lazy=True)
    return JiTLightningModule.from_args(golden.args, arch=golden.arch)


@pytest.mark.parametrize("entry", TRACE["schedules"], ids=lambda e: e["lr_schedule"])
def test_callback_sets_trace_values_at_every_step(entry, tmp_path):
    record = RecordLR()
    callback = LearningRateSchedulerCallback(entry["lr_schedule"], entry["warmup_epochs"], entry["min_lr"], entry["epochs"])
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[callback, record],
                        default_root_dir=tmp_path)
    torch.manual_seed(0)
    trainer.fit(small_module(), loader())
    assert [lrs[0] for lrs in record.lrs] == entry["lr_per_iteration"]
    assert all(lrs[0] == lrs[1] for lrs in record.lrs)  # both groups


def test_lr_scale_is_honoured(tmp_path):
    module = small_module()

    class Scaled(L.Callback):
        def on_train_start(self, trainer, pl_module):
            trainer.optimizers[0].param_groups[1]["lr_scale"] = 0.5

    record = RecordLR()
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        callbacks=[Scaled(), LearningRateSchedulerCallback("constant", 1, 0.0, 2), record])
    trainer.fit(module, loader())
    assert all(decay == no_decay * 0.5 for no_decay, decay in record.lrs)


def test_gradient_accumulation_one_lr_step_per_optimizer_step(tmp_path):
    record = RecordLR()
    callback = LearningRateSchedulerCallback("cosine", 1, 0.0, 3)
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accumulate_grad_batches=2,
                        callbacks=[callback, record], default_root_dir=tmp_path)
    trainer.fit(small_module(), loader(batch_size=2))  # 6 batches an epoch, 3 optimizer steps
    lr = 1.5625e-05
    expected = [lr_at(e + i / 3, lr, 1, "cosine", 0.0, 3) for e in range(3) for i in range(3)]
    assert [lrs[0] for lrs in record.lrs] == expected and trainer.global_step == 9
