"""The JiT networks (the original's ``JiT`` and ``Denoiser``), their sampling protocol, and loading them.

May import: errors, storage, tensors, layouts, schema, api.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    # torch loads on first use: ``inspect`` reads model.protocol without it
    if name == "from_pretrained":
        from .loading import from_pretrained

        return from_pretrained
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["from_pretrained"]
