"""jitckpt: checkpoints of JiT (Just image Transformers) across the original code,
PyTorch Lightning and safetensors.

Importing the package is cheap: torch is imported only when tensors are
materialised or written.
"""

from .api import compare, convert, detect_format, load, save
from .errors import JiTCheckpointError
from .schema import SCHEMA_VERSION, JiTCheckpoint

__all__ = ["JiTCheckpoint", "JiTCheckpointError", "SCHEMA_VERSION", "compare", "convert", "detect_format", "load", "save"]
__version__ = "0.1.0"
