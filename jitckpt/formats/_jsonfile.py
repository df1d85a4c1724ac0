"""Small JSON files of checkpoint folders (``config.json``, ``model_index.json``, a shard index), read safely.

Each must be a regular file (a symbolic link is followed to one: the Hugging Face cache's snapshot folders are
links into its ``blobs/``; a FIFO, a device or a dangling link is refused), at most :data:`MAX_JSON_BYTES`
long, valid UTF-8 JSON nested at most as deep as Python's parser allows; anything else is one
:class:`~jitckpt.errors.FormatError` naming the file.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..errors import FormatError
from ..storage import sources

MAX_JSON_BYTES = 2 << 20  # a shard index of a 10,000-tensor model is about 1 MB; parsed, JSON takes up to 28x


def read_json(path: str | os.PathLike[str], limit: int = MAX_JSON_BYTES) -> Any:
    """The JSON value in ``path``; a FormatError naming it when it is not a small regular file of JSON."""
    if not sources.is_file(path):
        what = "missing" if not sources.exists(path) else "not a regular file (a FIFO, device, folder or dangling link)"
        raise FormatError(f"{path}: {what} (the folder's layout needs it)")
    data = sources.read_bytes(os.fspath(path), limit + 1)
    if len(data) > limit:
        raise FormatError(f"{path}: larger than {limit >> 20} MiB, too large for a JSON file of a checkpoint folder")
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise FormatError(f"{path}: JSON nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"{path}: not valid JSON ({str(exc)[:120]})") from None


def try_json(path: str | os.PathLike[str]) -> Any:
    """:func:`read_json`, or None when the file is absent or not JSON (for detection)."""
    try:
        return read_json(path)
    except FormatError:
        return None
