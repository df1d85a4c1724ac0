"""Atomic output of a folder (a ``torch.distributed.checkpoint`` directory), as :mod:`jitckpt.io` does for files.

The folder is built under a hidden temporary name beside the target
(``.{target}.jitckpt-{pid}-{hex}.tmp``, locked with ``flock`` for the writer's
life), every file in it is fsynced, then it is renamed into place and the parent
folder fsynced. With ``force`` an existing target is first renamed aside and
removed only after the new one is in place. Temporary folders of killed writers
(unlocked) are removed before each write; nothing is left behind on failure.
A folder that replaces another keeps its permission bits, and so does each file
that replaces one of the same name; new ones get what the umask allows.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
from pathlib import Path
from typing import BinaryIO, Iterator

from .errors import FORCE, OutputError
from .io import _fsync_dir, _lock, _output_error, _OutputFile, _temp_name, _temp_pattern
from .permissions import permission_bits


# The temporary folders being written, and the target each stands for (errors name the target).
_TARGETS: dict[str, str] = {}
# The permission bits of the files of the folder each temporary folder replaces, by file name.
_MODES: dict[str, dict[str, int]] = {}


def check_folder_target(path: str | os.PathLike, force: bool = False) -> Path:
    """Raise :class:`OutputError` unless a folder can be written at ``path``."""
    target = Path(path)
    if not target.parent.is_dir():
        raise OutputError(f"output folder {str(target.parent)!r} does not exist; create it first")
    if target.exists() and not target.is_dir():
        raise OutputError(f"{str(target)!r} is a file, and this output is a folder: give another name")
    if target.exists() and not force:
        raise OutputError(f"{str(target)!r} already exists; pass {FORCE} to overwrite it")
    return target


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder that becomes ``path`` only if the block completes."""
    target = check_folder_target(path, force)
    shown = str(target)
    remove_stale_folders(target)
    temp = target.parent / _temp_name(target.name)
    try:
        os.mkdir(temp, 0o777)  # less the umask, as mkdir gives it
        lock = os.open(temp, os.O_RDONLY)
    except OSError as exc:
        raise _output_error(shown, exc) from exc
    _lock(lock)
    committed = False
    try:
        _TARGETS[str(temp)] = shown
        try:
            _MODES[str(temp)] = _keep_modes(target, lock)
        except OSError as exc:
            raise _output_error(shown, exc) from exc
        yield temp
        try:
            _fsync_subfolders(temp)
            os.fsync(lock)
            put_folder_in_place(temp, target, replace=force)
            committed = True
        except OSError as exc:
            raise _output_error(shown, exc) from exc
    finally:
        _TARGETS.pop(str(temp), None)
        _MODES.pop(str(temp), None)
        if not committed:
            shutil.rmtree(temp, ignore_errors=True)
        os.close(lock)


def _fsync_subfolders(temp: Path) -> None:
    """fsync every folder below ``temp`` (a diffusers folder's transformer/, export's ema1/): their entries
    must be on disk before the rename publishes them."""
    for root, dirs, _ in os.walk(temp):
        for name in dirs:
            _fsync_dir(os.path.join(root, name))


def _shown(folder: Path) -> str:
    """The target a folder being written stands for (itself, or the temporary folder it is inside)."""
    for candidate in (folder, *folder.parents):
        if str(candidate) in _TARGETS:
            return _TARGETS[str(candidate)] + str(folder)[len(str(candidate)):]
    return str(folder)


def _keep_modes(target: Path, folder_fd: int) -> dict[str, int]:
    """Give the new folder (open as ``folder_fd``) the permission bits of the folder ``target`` it replaces;
    return those of that folder's files by name (nothing when there is no such folder)."""
    if not target.is_dir():
        return {}
    os.fchmod(folder_fd, permission_bits(os.stat(target)))
    modes = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir(target):
            if entry.is_file(follow_symlinks=False):
                modes[entry.name] = permission_bits(entry.stat(follow_symlinks=False))
    return modes


def temporary_name(target: Path) -> Path:
    """A hidden temporary folder name beside ``target``, one :func:`remove_stale_folders` knows."""
    return target.parent / _temp_name(target.name)


def put_folder_in_place(temp: Path, target: Path, replace: bool = True) -> None:
    """Rename the complete folder ``temp`` to ``target`` (with ``replace``, an existing one is moved aside, then
    removed; without, a folder that appeared at ``target`` meanwhile, from another writer, stays: an
    :class:`OutputError`, since the rename cannot replace a folder that holds files)."""
    if not replace:
        try:
            os.rename(temp, target)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise OutputError(f"{str(target)!r} already exists (written meanwhile by another process); pass "
                                  f"{FORCE} to overwrite it") from None
            raise
        _fsync_dir(str(target.parent))
        return
    old = None
    if target.exists() or target.is_symlink():
        old = temporary_name(target)
        os.rename(target, old)
    os.rename(temp, target)
    _fsync_dir(str(target.parent))
    if old is not None:
        _remove(old)


def _remove(path: Path) -> None:
    """Remove what stood at a target: a folder with its files, or a symbolic link itself (not what it names)."""
    if path.is_symlink():
        with contextlib.suppress(OSError):
            os.unlink(path)
        return
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def durable_file(path: Path) -> Iterator[BinaryIO]:
    """A new file at ``path`` in a folder of :func:`atomic_folder`, fsynced when the block ends.

    OSErrors of its own writes and of the fsync are OutputErrors naming the target folder.
    """
    shown = _shown(path.parent)
    try:
        handle = _OutputFile(io.FileIO(path, "x+"), shown)
    except OSError as exc:
        raise _output_error(shown, exc) from exc
    with handle:
        mode = _MODES.get(str(path.parent), {}).get(path.name)
        try:
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
        except OSError as exc:
            raise _output_error(shown, exc) from exc
        yield handle
        handle.flush()
        try:
            os.fsync(handle.fileno())
        except OSError as exc:
            raise _output_error(shown, exc) from exc


def remove_stale_folders(target: str | os.PathLike) -> list[str]:
    """Remove the temporary folders of ``target`` whose writer is gone; return their paths."""
    target = Path(target)
    pattern = _temp_pattern(target.name)
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(target.parent):
            if not pattern.fullmatch(entry.name):
                continue
            if entry.is_symlink():  # a link that stood at the target, moved aside by a writer that was killed
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(entry.path)
                continue
            if not entry.is_dir(follow_symlinks=False):
                continue
            try:
                fd = os.open(entry.path, os.O_RDONLY)
            except OSError:
                continue
            try:
                if _lock(fd):
                    shutil.rmtree(entry.path, ignore_errors=True)
                    removed.append(entry.path)
            finally:
                os.close(fd)
    return removed
