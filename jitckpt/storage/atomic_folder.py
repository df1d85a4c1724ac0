"""Atomic output of a folder (a ``torch.distributed.checkpoint`` directory), as :mod:`jitckpt.storage.atomic` does for files.

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
from typing import Any, BinaryIO, Callable, Iterator

from ..errors import FORCE, OutputError
from .temp import OutputFile, fsync_dir, lock, output_error, temp_name, temp_pattern
from .permissions import permission_bits
from . import sources


Replaceable = Callable[[Path], bool]  # whether an existing folder may be replaced with --force


def check_folder_target(path: str | os.PathLike[str], force: bool = False,
                        replaceable: Replaceable | None = None, source: str | os.PathLike[str] | None = None) -> Path:
    """Raise :class:`OutputError` unless a folder can be written at ``path``. With ``force`` an existing folder
    is replaced only if ``replaceable(folder)`` says so (when given): a checkpoint folder, not a run's folder
    that holds other files; never one that is or holds the local file or folder ``source`` being read."""
    target = Path(path)
    if source is not None and not sources.is_url(source):
        read = Path(source).resolve()
        if target.resolve() == read or target.resolve() in read.parents:
            raise OutputError(f"output {str(target)!r} is or holds the source {str(source)!r}; give another name")
    if not target.parent.is_dir():
        raise OutputError(f"output folder {str(target.parent)!r} " + ("is a file" if target.parent.exists() else
                                                                     "does not exist; create it first"))
    if target.exists() and not target.is_dir():
        raise OutputError(f"{str(target)!r} is a file, and this output is a folder: give another name")
    if target.exists() and not force:
        raise OutputError(f"{str(target)!r} already exists; pass {FORCE} to overwrite it")
    if target.is_dir() and force and replaceable is not None and not replaceable(target):
        held = sorted(entry.name for entry in os.scandir(target))
        shown = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
        raise OutputError(f"{str(target)!r} is a folder holding other things ({shown}), not a checkpoint folder "
                          f"this command writes; {FORCE} replaces only such a folder: give a new folder name")
    return target


class OutputFolder:
    """A folder being written inside an :class:`AtomicFolder`: new durable files and subfolders in it.

    Every OSError of its files is an :class:`OutputError` naming the target (``shown``), never the temporary.
    """

    def __init__(self, path: Path, shown: str, modes: dict[str, int] | None = None) -> None:
        self.path = path
        self.shown = shown
        self._modes = modes if modes is not None else {}  # bits of the replaced folder's files, by name

    def _error(self, exc: OSError) -> OutputError:
        return output_error(self.shown, exc)

    @contextlib.contextmanager
    def file(self, name: str) -> Iterator[BinaryIO]:
        """A new file ``name`` in this folder, fsynced when the block ends; a file of that name in the folder
        this one replaces gives it its permission bits."""
        try:
            handle = OutputFile(io.FileIO(self.path / name, "x+"), self.shown)
        except OSError as exc:
            raise self._error(exc) from exc
        with handle:
            mode = self._modes.get(name)
            try:
                if mode is not None:
                    os.fchmod(handle.fileno(), mode)
            except OSError as exc:
                raise self._error(exc) from exc
            yield handle
            handle.flush()
            try:
                os.fsync(handle.fileno())
            except OSError as exc:
                raise self._error(exc) from exc

    def subfolder(self, name: str) -> "OutputFolder":
        """The subfolder ``name``, made if new (fsynced with the whole folder when it is committed)."""
        path = self.path / name
        try:
            path.mkdir(exist_ok=True)
        except OSError as exc:
            raise self._error(exc) from exc
        return OutputFolder(path, f"{self.shown}/{name}")


class AtomicFolder(OutputFolder):
    """A folder built under a hidden temporary name (``path``) that becomes ``target`` only if the ``with``
    block completes; nothing is left behind otherwise. Checked (the target may be written) when made."""

    def __init__(self, target: str | os.PathLike[str], force: bool = False, replaceable: Replaceable | None = None,
                 source: str | os.PathLike[str] | None = None) -> None:
        self.target = check_folder_target(target, force, replaceable, source)
        self.force = force
        super().__init__(temporary_name(self.target), str(self.target))
        self._lock_fd: int | None = None

    def __enter__(self) -> "AtomicFolder":
        remove_stale_folders(self.target)
        try:
            os.mkdir(self.path, 0o777)  # less the umask, as mkdir gives it
        except OSError as exc:
            raise self._error(exc) from exc
        try:
            self._lock_fd = os.open(self.path, os.O_RDONLY)
            lock(self._lock_fd)
            self._modes.update(_keep_modes(self.target, self._lock_fd))
        except OSError as exc:
            self._abandon()
            raise self._error(exc) from exc
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        committed = False
        try:
            if kind is None:
                try:
                    _fsync_subfolders(self.path)
                    if self._lock_fd is not None:
                        os.fsync(self._lock_fd)
                    put_folder_in_place(self.path, self.target, replace=self.force)
                    committed = True
                except OSError as exc:
                    raise self._error(exc) from exc
        finally:
            if committed:
                self._close()
            else:
                self._abandon()

    def _close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _abandon(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self._close()


def atomic_folder(path: str | os.PathLike[str], force: bool = False, replaceable: Replaceable | None = None,
                  source: str | os.PathLike[str] | None = None) -> AtomicFolder:
    """An :class:`AtomicFolder` for ``path``: ``with atomic_folder(path) as folder: ...`` (checked at once; see
    :func:`check_folder_target`)."""
    return AtomicFolder(path, force, replaceable, source)


def _fsync_subfolders(temp: Path) -> None:
    """fsync every folder below ``temp`` (a diffusers folder's transformer/, export's ema1/): their entries
    must be on disk before the rename publishes them."""
    for root, dirs, _ in os.walk(temp):
        for name in dirs:
            fsync_dir(os.path.join(root, name))


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


def writable_folder_target(path: str | os.PathLike[str], force: bool = False,
                           replaceable: Replaceable | None = None, source: str | os.PathLike[str] | None = None) -> Path:
    """:func:`check_folder_target`, and that the folder to hold it takes new entries (an unwritable one is an
    :class:`OutputError` now, not after minutes of work)."""
    target = check_folder_target(path, force, replaceable, source)
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise output_error(str(target), PermissionError(errno.EACCES, os.strerror(errno.EACCES)))
    return target


def temporary_name(target: Path) -> Path:
    """A hidden temporary folder name beside ``target``, one :func:`remove_stale_folders` knows."""
    return target.parent / temp_name(target.name)


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
        fsync_dir(str(target.parent))
        return
    old = None
    if target.exists() or target.is_symlink():
        old = temporary_name(target)
        os.rename(target, old)
    os.rename(temp, target)
    fsync_dir(str(target.parent))
    if old is not None:
        _remove(old)


def _remove(path: Path) -> None:
    """Remove what stood at a target: a folder with its files, or a symbolic link itself (not what it names)."""
    if path.is_symlink():
        with contextlib.suppress(OSError):
            os.unlink(path)
        return
    shutil.rmtree(path, ignore_errors=True)


def remove_stale_folders(target: str | os.PathLike[str]) -> list[str]:
    """Remove the temporary folders of ``target`` whose writer is gone; return their paths."""
    target = Path(target)
    pattern = temp_pattern(target.name)
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
                if lock(fd):
                    shutil.rmtree(entry.path, ignore_errors=True)
                    removed.append(entry.path)
            finally:
                os.close(fd)
    return removed
