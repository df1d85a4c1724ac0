"""What ``from_pretrained`` reads: a local path, a URL (``https://``, ``hf://``, any fsspec address: read where it
is, by ranges), or a Hugging Face Hub ``repo_id`` (``org/name``), fetched with ``huggingface_hub`` into the
Hub's own cache as ``PyTorchModelHubMixin.from_pretrained`` does. Importing this module imports no torch.
"""

from __future__ import annotations

import os
import re

from ..errors import JiTCheckpointError
from ..storage import sources

REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}")
# What an export or a diffusers folder of JiT holds: the weights, their configs and the model card.
HUB_FILES = ["*.json", "*.safetensors", "transformer/*", "scheduler/*", "README.md"]


def resolve_pretrained(name: str | os.PathLike[str], revision: str | None = None,
                       cache_dir: str | os.PathLike[str] | None = None) -> str:
    """The path or URL to read for ``name``: itself, unless it is a Hub repo id that is not a local path, which
    is fetched (only the files of :data:`HUB_FILES`) into the Hub's cache and its snapshot folder returned."""
    text = os.fspath(name)
    if sources.is_url(text) or os.path.exists(text) or not REPO_ID.fullmatch(text):
        return text
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise JiTCheckpointError(f"{text!r} is no local path; as a Hub repo id it needs huggingface_hub: "
                                 "pip install 'jitckpt[hub]'") from None
    try:
        return str(snapshot_download(text, revision=revision, cache_dir=cache_dir, allow_patterns=HUB_FILES))
    except Exception as exc:  # the Hub's own errors (no such repo, gated, offline) are many classes
        reason = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise JiTCheckpointError(f"Hub repo {text!r}: {type(exc).__name__}: {reason}") from None
