"""The registry of formats. Each module knows one container and meets the others only in
:class:`~jitckpt.schema.JiTCheckpoint`; each satisfies :class:`~.protocol.Format`.

:data:`FORMATS` is the one list: detection tries the folder formats in its order, then looks at a file's
bytes (safetensors by its JSON header, torch zips by their pickle's tree, routed by the layout table); the
suffix table, the formats ``convert`` writes, and every message and help text that lists formats are
derived from it (:func:`writable`, :func:`suffix_list`, :func:`to_remedy`).

May import: errors, compat, storage, tensors, torchfile, layouts, schema.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from importlib import import_module
from typing import Any

from ..torchfile import read as torchread
from ..errors import CLI_TERMS, FormatError, JiTCheckpointError, OutputError, SourceError, UnsafePickleError, naming, render
from .table import FORMAT_TABLE, either, suffix_list as suffix_list, writable as writable  # noqa: F401 (re-exported)
from ..layouts import recognise
from ..storage import sources
from ..schema import JiTCheckpoint
from . import lightning, original
from .protocol import HeadSniffer



def _implementation(where: str) -> Any:
    """A row's ``module``: a module of this package by name, or ``package.module:object`` (a format that lives
    elsewhere, as an entry point names one)."""
    if ":" not in where:
        return import_module(f"{__name__}.{where}")
    module, _, name = where.partition(":")
    return getattr(import_module(module), name)


# One implementation per row of the format table, in its order: a new format is its module and its row.
FORMATS: dict[str, Any] = {row.name: _implementation(row.module) for row in FORMAT_TABLE}


def to_remedy() -> str:
    """How the Python API names the format to write (``to='pth', ...``), its CLI spelling (``--to pth, ...``)
    registered in :data:`jitckpt.errors.CLI_TERMS` as it is made."""
    remedy = "to=" + either([repr(name) for name in writable()])
    CLI_TERMS[remedy] = "--to " + either(writable())
    return remedy
_LEGACY_TORCH_HEAD = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8"  # pickled magic number


def _check_readable(path: str) -> int:
    if sources.is_url(path):  # no folder format matched: a file, or the server's own reason why not
        size = sources.size(path)
    elif not path:
        raise FormatError("an empty path names no checkpoint")
    elif not os.path.exists(path):
        raise FormatError(f"{path}: no such file")
    elif os.path.isdir(path):
        raise FormatError(f"{path}: is a folder, but none of the folder formats jitckpt reads ("
                          + "; ".join(m.DESCRIPTION for m in FORMATS.values() if m.KIND == "folder") + ")")
    elif not stat.S_ISREG(os.stat(path).st_mode):
        raise FormatError(f"{path}: not a regular file (a FIFO or a device), so not a checkpoint")
    else:
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
    head = sources.read_bytes(path, 16)
    for name, module in FORMATS.items():  # file formats that know themselves by their first bytes
        if module.KIND == "file" and isinstance(module, HeadSniffer) and module.detect_head(head, size):
            return name, None
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


def folder_format(path: str | os.PathLike[str]) -> str | None:
    """The format of a checkpoint that is a folder (DCP, export, diffusers: the registry's folder formats)."""
    return next((name for name, m in FORMATS.items() if m.KIND == "folder" and m.detect_folder(path)), None)


def is_checkpoint_folder(path: str | os.PathLike[str]) -> bool:
    """True for a folder of a folder format, or one holding only such folders (an ``--all-emas`` export): what
    ``--force`` may replace (a run's folder, holding other files, may not)."""
    if folder_format(path) is not None:
        return True
    entries = list(os.scandir(path)) if os.path.isdir(path) else []
    return bool(entries) and all(e.is_dir(follow_symlinks=False) and folder_format(e.path) is not None
                                 for e in entries)


def named_in_folder(folder: str | os.PathLike[str], stem: str = "checkpoint-last") -> list[Path]:
    """``stem`` with every suffix a format claims, in the registry's order: the candidates in ``folder``."""
    return [Path(folder) / (stem + suffix) for module in FORMATS.values() for suffix in module.SUFFIXES]


def is_torch_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` starts as a zip (a torch file, or a corrupt one); reads 4 bytes."""
    return torchread.is_torch_zip(sources.read_bytes(os.fspath(path), 4))


def size_on_disk(path: str | os.PathLike[str]) -> int:
    """Bytes of a checkpoint: the file's size, or the sum of a folder's regular files (one level of
    subfolders deep, as a diffusers folder's transformer/ and scheduler/)."""
    if sources.is_url(path) or not os.path.isdir(path):
        return sources.size(path) if sources.is_file(path) else 0  # a remote folder's files are not listed
    total = 0
    for entry in os.scandir(os.fspath(path)):
        if entry.is_file(follow_symlinks=False):
            total += entry.stat(follow_symlinks=False).st_size
        elif entry.is_dir(follow_symlinks=False):
            total += sum(e.stat(follow_symlinks=False).st_size for e in os.scandir(entry.path)
                         if e.is_file(follow_symlinks=False))
    return total


def detect_format(path: str | os.PathLike[str]) -> str:
    """The name of the format of ``path`` (a key of :data:`FORMATS`), from its bytes, not its name."""
    return _sniff(str(path))[0]


def read(path: str | os.PathLike[str]) -> tuple[str, JiTCheckpoint]:
    """Read any supported file lazily: (format name, checkpoint with TensorRefs).

    Every error names the file: a schema error found in its content is given
    the path as its prefix.
    """
    path = str(path)
    sources.refresh(path)  # a URL read again is read as the server holds it now
    try:
        name, tree = _sniff(path)
        module = FORMATS[name]
        ckpt = module.from_tree(tree, path) if tree is not None else module.read(path)
    except JiTCheckpointError as exc:
        if isinstance(exc, (UnsafePickleError, SourceError)):  # name the file (or its address) in their own wording
            raise
        raise naming(exc, path) from None
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, RecursionError) as exc:
        # A value of a type no reader expected where the decoded tree is plain data: malformed, never a crash.
        raise FormatError(f"{path}: malformed checkpoint: a field of an unexpected type or shape "
                          f"({type(exc).__name__}: {render(str(exc), 120)[1:-1]})") from None
    return name, ckpt


def format_for_suffix(path: str | os.PathLike[str]) -> str | None:
    """The format an output name's suffix names, or None."""
    suffix = Path(path).suffix.lower()
    return next((n for n, m in FORMATS.items() if suffix in m.SUFFIXES), None)


def get(name: str, writing: bool = False) -> Any:
    """The module of format ``name``; an error listing the formats (those convert writes, when ``writing``), or,
    ``writing`` a format another command writes, saying which."""
    if name not in FORMATS:
        raise FormatError(f"unknown format {name!r}; choose one of: {', '.join(writable() if writing else FORMATS)}")
    module = FORMATS[name]
    if writing and module.WRITES == "none":
        raise OutputError(f"{module.LABEL}s are written by `jitckpt export`, not by convert or save")
    return module
