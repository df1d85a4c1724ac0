"""The Lightning training stack: :class:`JiTLightningModule` and :class:`JiTDataModule`."""

from .datamodule import JiTDataModule, center_crop_arr
from .module import JiTLightningModule

__all__ = ["JiTDataModule", "JiTLightningModule", "center_crop_arr"]
