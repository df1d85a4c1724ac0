"""``JiTDataModule``: ImageFolder with the original's crop, flip and uint8 tensors."""

from __future__ import annotations

import os
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import JiTCheckpointError
from ..evaluation.images import center_crop_arr, training_folder
from .checkpoint_io import explain_unread_resume
from .stream import check_random_stream


class JiTDataModule(L.LightningDataModule):
    """Training images from ``data_path/train`` (an ImageFolder), as uint8 ``(3, H, W)`` tensors.

    Lightning adds the distributed sampler. ``dataset`` replaces the folder
    (any dataset of ``(uint8 image, label)`` pairs), for tests and custom data.
    With ``random_stream="original"`` the images come unflipped (``JiTLightningModule`` of that stream
    flips them, drawing as the original does) in the order of the original's sampler,
    ``DistributedSampler(shuffle=True)`` (seed 0, ``set_epoch`` every epoch), on every rank; give the
    trainer ``use_distributed_sampler=False`` so that Lightning keeps it.
    """

    def __init__(self, data_path: str = "./data/imagenet", img_size: int = 256, batch_size: int = 128,
                 num_workers: int = 12, pin_memory: bool = True, shuffle: bool = True,
                 dataset: Dataset | None = None, random_stream: str = "per_batch") -> None:
        super().__init__()
        self.data_path, self.img_size, self.batch_size = data_path, img_size, batch_size
        self.num_workers, self.pin_memory, self.shuffle = num_workers, pin_memory, shuffle
        self.dataset = dataset
        check_random_stream(random_stream)
        self.random_stream = random_stream

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
            *([transforms.RandomHorizontalFlip()] if self.random_stream == "per_batch" else []),
            transforms.PILToTensor(),
        ])
        self.dataset = datasets.ImageFolder(root, transform=transform)

    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset
        if dataset is None:  # Lightning calls setup() first; a direct caller may not have
            raise JiTCheckpointError("the data module has no dataset yet: call setup() before train_dataloader()")
        sampler: Any = None
        if self.random_stream == "original":  # the original's sampler, also on one process
            from torch.utils.data import DistributedSampler

            trainer = self.trainer
            sampler = DistributedSampler(dataset, num_replicas=trainer.world_size if trainer else 1,
                                         rank=trainer.global_rank if trainer else 0, shuffle=self.shuffle)
            # Lightning sets each epoch before that epoch's iterator, except the first: it creates that iterator
            # (whose workers take their indices at once) before it sets the epoch, to the one it will run
            progress = trainer.fit_loop.epoch_progress.current if trainer else None
            sampler.set_epoch(int(getattr(progress, "processed", trainer.current_epoch if trainer else 0)))
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=self.shuffle if sampler is None else None,
                          sampler=sampler, drop_last=True, num_workers=self.num_workers,
                          pin_memory=self.pin_memory and torch.cuda.is_available(),
                          persistent_workers=self.num_workers > 0 and self.random_stream == "per_batch")
