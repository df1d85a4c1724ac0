import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

import jitckpt
from jitckpt.callbacks import MetricLoggerCallback
from jitckpt.lightning import JiTLightningModule
from jitckpt.model.denoiser import Denoiser
from jitckpt.training.resume import fresh_optimizer
from tests.helpers import FIXTURES, GOLDEN


def test_absolute_lr_from_blr_and_effective_batch(tmp_path):
    golden = jitckpt.load(GOLDEN, lazy=True)
    args = {k: v for k, v in golden.args.items() if k != "lr"}  # blr 1e-3, batch 4
    module = JiTLightningModule.from_args(args, arch=golden.arch)
    data = torch.load(FIXTURES / "train_data.pt")
    loader = DataLoader(TensorDataset(data["images"], data["labels"]), batch_size=4, drop_last=True)
    logger = MetricLoggerCallback(log_freq=2)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accumulate_grad_batches=2,
                        callbacks=[logger], default_root_dir=tmp_path)
    trainer.fit(module, loader)
    assert module.absolute_lr == 1e-3 * 4 * 2 / 256  # batch x devices x accumulation / 256
    assert trainer.optimizers[0].defaults["lr"] == module.absolute_lr
    assert trainer.optimizers[0].defaults["betas"] == (0.9, 0.95)
    assert [len(g["params"]) for g in trainer.optimizers[0].param_groups] == [33, 23]
    # the fresh state a resume without moments starts from has exactly the live optimizer's group settings
    fresh = fresh_optimizer(golden, args)["param_groups"]
    for made, live in zip(fresh, trainer.optimizers[0].param_groups):
        assert set(made) == set(live) and all(made[k] == live[k] for k in live if k not in ("params", "lr", "initial_lr"))
    assert len(logger.lines) == 2 and logger.lines[0].startswith("Epoch: [0]  [0/3]  eta: ")
    assert " lr: 0.000031  loss: " in logger.lines[0] and logger.lines[1].startswith("Epoch: [0]  [2/3]")


def test_generate_matches_the_denoiser():
    golden = jitckpt.load(GOLDEN)
    args = {**golden.args, "num_sampling_steps": 3}
    module = JiTLightningModule.from_args(args, arch=golden.arch)
    module.net.load_state_dict({k[len("net."):]: v for k, v in golden.model_ema1.items()})
    denoiser = Denoiser.from_args(args, arch=golden.arch)
    denoiser.load_state_dict(golden.model_ema1)
    labels = torch.tensor([0, 5, 9])
    torch.manual_seed(1)
    a = module.generate(labels)
    torch.manual_seed(1)
    b = denoiser.generate(labels)
    assert a.shape == (3, 3, 16, 16) and torch.equal(a, b)


def test_resuming_another_architecture_is_one_line_naming_both(tmp_path):
    import dataclasses

    import pytest

    from jitckpt.errors import JiTCheckpointError
    from jitckpt.lightning import JiTCheckpointIO

    golden = jitckpt.load(GOLDEN, lazy=True)
    deeper = dataclasses.replace(golden.arch, depth=golden.arch.depth + 1, variant=None)
    module = JiTLightningModule.from_args(golden.args, arch=deeper)
    data = torch.load(FIXTURES / "train_data.pt")
    loader = DataLoader(TensorDataset(data["images"], data["labels"]), batch_size=4, drop_last=True)
    trainer = L.Trainer(max_epochs=golden.epoch + 2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, plugins=[JiTCheckpointIO()],
                        default_root_dir=tmp_path)
    with pytest.raises(JiTCheckpointError) as raised:
        trainer.fit(module, loader, ckpt_path=str(GOLDEN))
    message = str(raised.value)
    assert "\n" not in message and f"depth={golden.arch.depth} " in message and f"depth={deeper.depth} " in message
    assert message.startswith("the checkpoint holds a different network than this module")


def test_a_checkpoints_arch_object_builds_the_module_and_is_kept_as_plain_data():
    golden = jitckpt.load(GOLDEN, lazy=True)
    module = JiTLightningModule(arch=golden.arch, img_size=golden.arch.img_size, num_classes=golden.arch.num_classes)
    assert module.arch == golden.arch and module.hparams["arch"] == golden.arch.to_dict()


def test_forgetting_the_plugin_adds_a_note_naming_it_instead_of_only_torchs_weights_only_advice(tmp_path):
    import pickle

    import pytest

    from jitckpt.callbacks import EMACallback

    golden = jitckpt.load(GOLDEN, lazy=True)
    module = JiTLightningModule.from_args(golden.args, arch=golden.arch)
    data = torch.load(FIXTURES / "train_data.pt")
    loader = DataLoader(TensorDataset(data["images"], data["labels"]), batch_size=4, drop_last=True)
    trainer = L.Trainer(max_epochs=golden.epoch + 2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        callbacks=[EMACallback()])
    with pytest.raises(pickle.UnpicklingError) as raised:
        trainer.fit(module, loader, ckpt_path=str(GOLDEN))
    notes = raised.value.__notes__
    assert len(notes) == 1 and "plugins=[jitckpt.lightning.JiTCheckpointIO()]" in notes[0]
    assert str(GOLDEN) in notes[0] and "original JiT .pth" in notes[0]
