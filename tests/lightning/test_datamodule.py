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


def test_datamodule_yields_uint8_batches(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(tmp_path / "train" / cls / f"{i}.png")
    data = JiTDataModule(str(tmp_path), img_size=16, batch_size=2, num_workers=0)
    data.setup("fit")
    images, labels = next(iter(data.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (2, 3, 16, 16) and labels.dtype == torch.int64
    assert len(data.train_dataloader()) == 3  # drop_last
