import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

import jitckpt
from jitckpt.callbacks import EMACallback, FIDEvaluationCallback, create_default_callbacks
from jitckpt.errors import JiTCheckpointError
from jitckpt.lightning import JiTLightningModule
from tests.helpers import FIXTURES, GOLDEN


class WithSpread(FIDEvaluationCallback):
    """The seed README's extension point: add a metric to what _evaluate returns."""

    def _evaluate(self, trainer, pl_module, epoch):
        metrics = super()._evaluate(trainer, pl_module, epoch)
        if metrics:
            metrics["epoch_seen"] = float(epoch)
        return metrics


def fit(tmp_path, callbacks, epochs=2):
    golden = jitckpt.load(GOLDEN, lazy=True)
    module = JiTLightningModule.from_args(golden.args, arch=golden.arch)
    data = torch.load(FIXTURES / "train_data.pt")
    loader = DataLoader(TensorDataset(data["images"], data["labels"]), batch_size=4, drop_last=True)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                        default_root_dir=tmp_path)
    trainer.fit(module, loader)
    return module


@pytest.fixture
def ref_dir(tmp_path):
    rng = np.random.default_rng(2)
    (tmp_path / "ref").mkdir()
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "ref" / f"{i}.png")
    return tmp_path / "ref"


def test_scores_each_eval_epoch_with_ema_and_restores_raw_weights(tmp_path, inception_weights, ref_dir):
    seen = {}

    class Snapshot(L.Callback):  # raw weights right before the evaluation (EMA and FID run after it)
        def on_train_epoch_end(self, trainer, pl_module):
            seen[trainer.current_epoch] = [p.detach().clone() for p in pl_module.parameters()]

    ema = EMACallback()
    fid = WithSpread(eval_freq=1, num_images=10, batch_size=5, num_classes=10, img_size=16, ref_dir=ref_dir,
                     inception_weights=inception_weights, steps=2)
    module = fit(tmp_path, [ema, Snapshot(), fid])
    assert [h["epoch"] for h in fid.history] == [0, 1]
    assert all(h["fid"] > 0 and h["inception_score"] > 0 and h["epoch_seen"] == h["epoch"] for h in fid.history)
    cfg = module.diffusion.cfg  # also under the names the original's log_writer used
    assert all(h[f"fid_cfg{cfg}_res16"] == h["fid"] and h[f"is_cfg{cfg}_res16"] == h["inception_score"]
               for h in fid.history)
    assert all(torch.equal(a, b) for a, b in zip(module.parameters(), seen[1]))  # raw weights back


def test_inputs_checked_when_training_starts(tmp_path, inception_weights):
    with pytest.raises(JiTCheckpointError, match="needs fid_stats"):
        fit(tmp_path, [EMACallback(), FIDEvaluationCallback(num_images=10, num_classes=10, inception_weights=inception_weights)])
    with pytest.raises(JiTCheckpointError, match="multiple of the class count"):
        fit(tmp_path, [EMACallback(), FIDEvaluationCallback(num_images=15, num_classes=10, ref_dir=tmp_path)])
    with pytest.raises(JiTCheckpointError, match="needs an EMACallback"):
        fit(tmp_path, [FIDEvaluationCallback(num_images=10, num_classes=10, ref_dir=tmp_path,
                                             inception_weights=inception_weights)])


def test_failure_during_evaluation_is_loud(tmp_path, inception_weights):
    empty = tmp_path / "empty"
    empty.mkdir()
    fid = FIDEvaluationCallback(eval_freq=1, num_images=10, batch_size=10, num_classes=10, img_size=16,
                                ref_dir=empty, inception_weights=inception_weights, steps=1)
    with pytest.raises(JiTCheckpointError, match="FID evaluation at epoch 0 failed: .*holds no images"):
        fit(tmp_path, [EMACallback(), fid], epochs=1)


def test_default_callbacks_with_fid(tmp_path, inception_weights, ref_dir):
    callbacks = create_default_callbacks(save_dir=tmp_path / "ck", eval_freq=1, num_images=10, eval_batch_size=10,
                                         num_classes=10, img_size=16, epochs=1, enable_fid_eval=True,
                                         ref_dir=ref_dir, inception_weights=inception_weights)
    assert type(callbacks[-1]).__name__ == "FIDEvaluationCallback"
