import numpy as np
import torch
from PIL import Image

from jitckpt.lightning import JiTDataModule, center_crop_arr


def test_center_crop_halves_then_resizes_then_crops_the_middle():
    image = Image.fromarray(np.arange(70 * 100 * 3, dtype=np.uint32).reshape(70, 100, 3).astype(np.uint8))
    out = center_crop_arr(image, 16)
    assert out.size == (16, 16)
    # 70x100 -> BOX halvings to 17x25 -> BICUBIC to 16x24 (round(25*16/17)) -> columns 4..19
    halved = image.resize((50, 35), resample=Image.BOX).resize((25, 17), resample=Image.BOX)
    resized = np.array(halved.resize((24, 16), resample=Image.BICUBIC))
    assert np.array_equal(np.array(out), resized[:, 4:20])


def image_tree(root, per_class):
    """``root/train/{a,b}/I.png``: random 40x30 images."""
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(root / "train" / cls / f"{i}.png")


def test_datamodule_yields_uint8_batches(tmp_path):
    image_tree(tmp_path, per_class=3)
    data = JiTDataModule(str(tmp_path), img_size=16, batch_size=2, num_workers=0)
    data.setup("fit")
    images, labels = next(iter(data.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (2, 3, 16, 16) and labels.dtype == torch.int64
    assert len(data.train_dataloader()) == 3  # drop_last


def test_resuming_a_safetensors_file_without_the_plugin_names_the_plugin(tmp_path):
    """The data module alone (no jitckpt callback) adds the note too."""
    import lightning as L
    import pytest

    import jitckpt
    from jitckpt.lightning import JiTLightningModule
    from tests.helpers import GOLDEN

    image_tree(tmp_path, per_class=2)
    source = tmp_path / "last.safetensors"
    jitckpt.convert(GOLDEN, source)
    golden = jitckpt.load(GOLDEN, lazy=True)
    module = JiTLightningModule.from_args(golden.args, arch=golden.arch)
    trainer = L.Trainer(max_epochs=golden.epoch + 2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    with pytest.raises(Exception) as raised:
        trainer.fit(module, datamodule=JiTDataModule(str(tmp_path), golden.arch.img_size, 2, 0), ckpt_path=str(source))
    assert any("JiTCheckpointIO()" in note and "(safetensors)" in note for note in raised.value.__notes__)
