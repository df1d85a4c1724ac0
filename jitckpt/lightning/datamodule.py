"""``JiTDataModule``: ImageFolder with the original's crop, flip and uint8 tensors."""

from __future__ import annotations

import os

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import JiTCheckpointError
from ..evaluation.images import center_crop_arr, training_folder
from .checkpoint_io import explain_unread_resume


class JiTDataModule(L.LightningDataModule):
    """Training images from ``data_path/train`` (an ImageFolder), as uint8 ``(3, H, W)`` tensors.

    Lightning adds the distributed sampler. ``dataset`` replaces the folder
    (any dataset of ``(uint8 image, label)`` pairs), for tests and custom data.
    """

    def __init__(self, data_path: str = "./data/imagenet", img_size: int = 256, batch_size: int = 128,
                 num_workers: int = 12, pin_memory: bool = True, shuffle: bool = True,
                 dataset: Dataset | None = None) -> None:
        super().__init__()
        self.data_path, self.img_size, self.batch_size = data_path, img_size, batch_size
        self.num_workers, self.pin_memory, self.shuffle = num_workers, pin_memory, shuffle
        self.dataset = dataset

    def check(self) -> str:
        """The training folder ``data_path/train``; a one-line error when it is missing (checked before any work)."""
        return training_folder(self.data_path)

    def batches_per_epoch(self) -> int:
        """Batches of one epoch on one device, from a count of the files in the class folders (no image is read)."""
        root = self.check()
        count = sum(1 for cls in os.scandir(root) if cls.is_dir() for f in os.scandir(cls.path) if f.is_file())
        return max(1, count // self.batch_size)

    def on_exception(self, exception: BaseException) -> None:
        if self.trainer is not None:
            explain_unread_resume(self.trainer, exception)

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        from torchvision import datasets, transforms

        root = self.check()
        transform = transforms.Compose([
            transforms.Lambda(lambda img: center_crop_arr(img, self.img_size)),
            transforms.RandomHorizontalFlip(),
            transforms.PILToTensor(),
        ])
        self.dataset = datasets.ImageFolder(root, transform=transform)

    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset
        if dataset is None:  # Lightning calls setup() first; a direct caller may not have
            raise JiTCheckpointError("the data module has no dataset yet: call setup() before train_dataloader()")
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=self.shuffle, drop_last=True,
                          num_workers=self.num_workers, pin_memory=self.pin_memory and torch.cuda.is_available(),
                          persistent_workers=self.num_workers > 0)
