"""jitckpt: checkpoints of JiT (Just image Transformers) across the original code,
PyTorch Lightning and safetensors.

Importing the package is cheap: torch is imported only when tensors are
materialised or written.
"""

from typing import Any

from .errors import JiTCheckpointError

# The API and the schema load on first use: a command that needs neither (``--help``, ``--version``) starts
# without them, and ``verify`` without the modules only ``convert`` uses.
_LAZY = {"compare": "api", "convert": "api", "detect_format": "api", "load": "api", "save": "api",
         "SCHEMA_VERSION": "schema", "JiTCheckpoint": "schema"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'jitckpt' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{_LAZY[name]}", __name__), name)


__all__ = ["JiTCheckpoint", "JiTCheckpointError", "SCHEMA_VERSION", "compare", "convert", "detect_format", "load", "save"]
__version__ = "0.1.0"
