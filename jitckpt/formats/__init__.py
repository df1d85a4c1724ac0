"""The registry of file formats. Each module knows one layout and meets the others
only in :class:`~jitckpt.schema.JiTCheckpoint`.

A format module has ``NAME``, ``SUFFIXES``, ``LABEL``, ``DESCRIPTION``, ``read(path)`` and
``write(ckpt, handle, path, progress=None, weights=None)``; a format written as a
folder (DCP) has ``write_folder(ckpt, folder, progress=None, weights=None)`` instead.
Detection looks at the bytes: safetensors by its JSON header, torch zips by their
pickle's keys, a DCP directory by its ``.metadata``.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

from .. import torchread
from ..errors import FormatError, JiTCheckpointError, UnsafePickleError, naming
from ..layouts import recognise
from ..schema import JiTCheckpoint
from . import dcp, diffusers, export, lightning, original, safetensors

FORMATS: dict[str, ModuleType] = {m.NAME: m for m in (original, lightning, safetensors, dcp, export, diffusers)}
_LEGACY_TORCH_HEAD = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8"  # pickled magic number


def _check_readable(path: str) -> int:
    if not os.path.exists(path):
        raise FormatError(f"{path}: no such file")
    if os.path.isdir(path):
        raise FormatError(f"{path}: is a folder, but not a torch.distributed.checkpoint directory (no "
                          f"{dcp.METADATA_FILE} in it), a jitckpt export folder or a diffusers folder "
                          f"({diffusers.MODEL_INDEX} with {diffusers.TRANSFORMER}/)")
    size = os.path.getsize(path)
    if size == 0:
        raise FormatError(f"{path}: file is empty")
    return size


def _sniff(path: str) -> tuple[str, Any]:
    """(format name, parsed torch tree or None) from the file's bytes (or the directory's .metadata)."""
    folder = folder_format(path)
    if folder is not None:
        return folder, None
    size = _check_readable(path)
    with open(path, "rb") as f:
        head = f.read(16)
    if safetensors.detect_head(head, size):
        return safetensors.NAME, None
    if torchread.is_torch_zip(head):
        tree = torchread.read_tree(path)
        if not isinstance(tree, dict):
            raise FormatError(f"{path}: a torch file holding a {type(tree).__name__}, not a checkpoint")
        match = recognise(tree)  # a dict no row fits goes to the original's reader, which says what it lacks
        return (lightning.NAME if match is not None and match.layout.family == "lightning" else original.NAME), tree
    if head.startswith(_LEGACY_TORCH_HEAD):
        raise FormatError(f"{path}: legacy (pre-1.6) torch.save format; re-save it with a current torch")
    raise FormatError(
        f"{path}: not a checkpoint jitckpt knows (neither a torch zip nor safetensors; "
        f"first bytes {head[:8].hex()}); the file may be corrupt or truncated"
    )


FOLDER_DETECTORS = ((dcp.NAME, dcp.is_dcp_dir), (export.NAME, export.is_export_dir),
                    (diffusers.NAME, diffusers.is_diffusers_dir))


def folder_format(path: str | os.PathLike) -> str | None:
    """The format of a checkpoint that is a folder (DCP, export, diffusers), or None."""
    return next((name for name, detect in FOLDER_DETECTORS if detect(path)), None)


def named_in_folder(folder: str | os.PathLike, stem: str = "checkpoint-last") -> list[Path]:
    """``stem`` with every suffix a format claims, in the registry's order: the candidates in ``folder``."""
    return [Path(folder) / (stem + suffix) for module in FORMATS.values() for suffix in module.SUFFIXES]


def is_torch_file(path: str | os.PathLike) -> bool:
    """True when ``path`` starts as a zip (a torch file, or a corrupt one); reads 4 bytes."""
    with open(path, "rb") as f:
        return torchread.is_torch_zip(f.read(4))


def size_on_disk(path: str | os.PathLike) -> int:
    """Bytes of a checkpoint: the file's size, or the sum of a folder's regular files (one level of
    subfolders deep, as a diffusers folder's transformer/ and scheduler/)."""
    if not os.path.isdir(path):
        return os.path.getsize(path)
    total = 0
    for entry in os.scandir(path):
        if entry.is_file(follow_symlinks=False):
            total += entry.stat(follow_symlinks=False).st_size
        elif entry.is_dir(follow_symlinks=False):
            total += sum(e.stat(follow_symlinks=False).st_size for e in os.scandir(entry.path)
                         if e.is_file(follow_symlinks=False))
    return total


def detect_format(path: str | os.PathLike) -> str:
    """``'pth'``, ``'ckpt'`` or ``'safetensors'``, from the file's bytes (not its name)."""
    return _sniff(str(path))[0]


def read(path: str | os.PathLike) -> tuple[str, JiTCheckpoint]:
    """Read any supported file lazily: (format name, checkpoint with TensorRefs).

    Every error names the file: a schema error found in its content is given
    the path as its prefix.
    """
    path = str(path)
    try:
        name, tree = _sniff(path)
        module = FORMATS[name]
        ckpt = module.from_tree(tree, path) if tree is not None else module.read(path)
    except JiTCheckpointError as exc:
        if isinstance(exc, UnsafePickleError):  # names the file in its own wording
            raise
        raise naming(exc, path) from None
    return name, ckpt


def format_for_suffix(path: str | os.PathLike) -> str | None:
    suffix = Path(path).suffix.lower()
    return next((n for n, m in FORMATS.items() if suffix in m.SUFFIXES), None)


def get(name: str) -> ModuleType:
    if name not in FORMATS:
        raise FormatError(f"unknown format {name!r}; choose one of: {', '.join(FORMATS)}")
    return FORMATS[name]
