"""The Lightning training stack: :class:`JiTLightningModule`, :class:`JiTDataModule` and :class:`JiTCheckpointIO`.

May import: errors, compat, storage, tensors, torchfile, layouts, schema, formats, api, model, evaluation.
"""

from .checkpoint_io import JiTAsyncCheckpointIO, JiTCheckpointIO
from .datamodule import JiTDataModule, center_crop_arr
from .module import JiTLightningModule

__all__ = ["JiTAsyncCheckpointIO", "JiTCheckpointIO", "JiTDataModule", "JiTLightningModule", "center_crop_arr"]
