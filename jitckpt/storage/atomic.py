"""Atomic writes: a reader of the target sees the old file or the new one, never a torn one.

The data goes to an unnamed file (``O_TMPFILE``) in the target's folder; once
complete and fsynced it is given a temporary name and renamed over the target
with ``os.replace`` (without ``force``, hard-linked to it instead, so that a file
that appeared meanwhile is never replaced), and the folder is fsynced. Where the
filesystem has no ``O_TMPFILE``, a hidden named temporary file is used from the start.
The output gets the permission bits of the file it replaces, or, new, those the
umask leaves of 0o666, as ``cp`` would give it.

A temporary file's name says whose it is: ``.{target}.jitckpt-{pid}-{hex}.tmp``,
and its writer holds an exclusive ``flock`` on it for its whole life (the lock
belongs to the open file, so it dies with the writer, whatever kills it). Every
write to a target first removes that target's temporary files that nobody
holds locked: those of killed writers. Locks, unlike pids, are not fooled by a
pid that was reused. Files that do not match a target's exact pattern are
never touched.

Any ``OSError`` while creating, writing, syncing, linking or renaming the
output becomes an :class:`OutputError` that names the target (never the hidden
temporary file) and says what to do. Exceptions raised by the caller's code
inside the block, such as errors reading a source, pass through unchanged;
whatever ends the block early, nothing is left behind.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
from pathlib import Path
from typing import BinaryIO, Iterator

from ..errors import FORCE, OutputError
from .permissions import output_mode
from .temp import (OutputFile, commit_step, fcntl, fsync_dir, lock, output_error, same_file, temp_name,
                   temp_pattern)

def refuse_default_name(target: Path) -> None:
    """``--force`` replaces only an output the user named: an existing file at a default output name is an
    :class:`OutputError`, ``--force`` or not."""
    if target.exists() or target.is_symlink():
        raise OutputError(f"{str(target)!r} already exists, and it is only the default output name; name the output "
                          f"(-o {str(target)!r} with {FORCE} to replace it)")


def check_output_path(path: str | os.PathLike[str], force: bool = False) -> Path:
    """Raise :class:`OutputError` unless ``path`` can be written (folder exists; no file, or ``force``)."""
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise OutputError(f"output folder {str(folder)!r} " + ("is a file" if folder.exists() else
                                                              "does not exist; create it first"))
    if target.is_dir():
        raise OutputError(f"output path {str(target)!r} is a folder; give a file name")
    if target.exists() and not force:
        raise OutputError(f"{str(target)!r} already exists; pass {FORCE} to overwrite it")
    return target


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], force: bool = False) -> Iterator[BinaryIO]:
    """Open a binary, seekable file that replaces ``path`` only if the block completes.

    Raises :class:`OutputError` before anything is written when ``path`` exists
    (unless ``force``) or its folder is missing, and when the output cannot be
    created, written, synced or put in place (full disk, read-only folder, ...),
    naming ``path``. Temporary files of killed writers to ``path`` are removed first.

    Example:
        >>> with atomic_output("out.bin", force=True) as handle:
        ...     handle.write(b"data")
    """
    target = check_output_path(path, force)
    shown = str(target)
    folder = str(target.parent)
    remove_stale_temps(target)
    try:
        fd, named = _open_temp(folder, target.name, output_mode(target))
    except OSError as exc:
        raise output_error(shown, exc) from exc
    try:
        handle = OutputFile(io.FileIO(fd, "r+", closefd=True), shown)
    except BaseException:
        _discard(fd, named)
        raise
    committed = False
    try:
        yield handle
        try:
            handle.flush()
            os.fsync(fd)
            commit_step("synced")
            if named is None:
                named = _link_unnamed(fd, folder, target.name)
            commit_step("linked")
            _put_in_place(named, target, force, shown)
            committed = True
            commit_step("renamed")
            fsync_dir(folder)
        except OSError as exc:
            raise output_error(shown, exc) from exc
    finally:
        if not committed and named is not None:
            with contextlib.suppress(OSError):
                os.unlink(named)  # while still locked, so no cleaner races us for it
        with contextlib.suppress(Exception):  # the data is synced, or the block already failed
            handle.close()


def remove_stale_temps(target: str | os.PathLike[str]) -> list[str]:
    """Remove the temporary files of ``target`` whose writer is gone; return their paths.

    A file is removed only if its name matches jitckpt's exact pattern for
    ``target`` and nobody holds its lock: a live writer keeps its file. Errors
    (an unreadable folder, a file that vanished) leave files where they are.
    """
    if fcntl is None:
        return []
    target = Path(target)
    folder = str(target.parent)
    pattern = temp_pattern(target.name)
    try:
        names = [name for name in os.listdir(folder) if pattern.fullmatch(name)]
    except OSError:
        return []
    removed = []
    for name in names:
        path = os.path.join(folder, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode):
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while its writer lives
            if not same_file(opened, path):
                continue  # another cleaner removed it meanwhile
            os.unlink(path)
            removed.append(path)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


def _open_temp(folder: str, name: str, mode: int) -> tuple[int, str | None]:
    """An open, locked, empty file in ``folder`` with permission bits ``mode``, and its name (None while it is
    unnamed)."""
    tmpfile = getattr(os, "O_TMPFILE", None)
    if tmpfile is not None and os.path.isdir("/proc/self/fd"):  # linking it needs /proc
        try:
            fd = os.open(folder, tmpfile | os.O_RDWR, 0o600)
        except OSError:
            pass  # filesystem without O_TMPFILE: fall back to a named file
        else:
            return _prepared(fd, None, mode)
    for _ in range(100):
        named = os.path.join(folder, temp_name(name))
        try:
            fd = os.open(named, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        # Between its creation and our lock, a cleaner may have found the file
        # unlocked and removed it: then take another name.
        try:
            if lock(fd) and same_file(os.fstat(fd), named):
                return _prepared(fd, named, mode)
        except BaseException:
            _discard(fd, named)
            raise
        _discard(fd, named)
    raise FileExistsError(errno.EEXIST, "no free temporary name")


def _prepared(fd: int, named: str | None, mode: int) -> tuple[int, str | None]:
    try:
        if named is None:
            lock(fd)  # before it has a name that a cleaner could see
        os.fchmod(fd, mode)
    except BaseException:
        _discard(fd, named)
        raise
    return fd, named


def _discard(fd: int, named: str | None) -> None:
    """Close ``fd`` and remove ``named`` if it is still that file."""
    with contextlib.suppress(OSError):
        if named is not None and same_file(os.fstat(fd), named):
            os.unlink(named)
    os.close(fd)


def _link_unnamed(fd: int, folder: str, name: str) -> str:
    """Give the ``O_TMPFILE`` file open as ``fd`` a temporary name for ``name``; return its path."""
    folder_fd = os.open(folder, os.O_RDONLY)
    try:
        for _ in range(100):
            temp = temp_name(name)
            try:
                # Passing dir fds makes CPython call linkat(AT_SYMLINK_FOLLOW); plain link()
                # would try to hard-link the /proc symlink itself and fail with EXDEV.
                os.link(f"/proc/self/fd/{fd}", temp, src_dir_fd=folder_fd, dst_dir_fd=folder_fd,
                        follow_symlinks=True)
            except FileExistsError:
                continue
            return os.path.join(folder, temp)
        raise FileExistsError(errno.EEXIST, "no free temporary name")
    finally:
        os.close(folder_fd)


# Errnos of a filesystem that cannot hard-link (FAT, some FUSE and network filesystems).
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS, errno.EXDEV}


def _put_in_place(named: str, target: Path, force: bool, shown: str) -> None:
    """Move the finished ``named`` to ``target``; without ``force``, never over a file."""
    if force:
        os.replace(named, target)
        return
    try:
        os.link(named, target)  # atomic: fails if the target appeared while we were writing
    except FileExistsError:
        raise OutputError(f"{shown!r} already exists; pass {FORCE} to overwrite it") from None
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        if target.exists():
            raise OutputError(f"{shown!r} already exists; pass {FORCE} to overwrite it") from None
        os.replace(named, target)
        return
    with contextlib.suppress(OSError):  # a name left here is removed by the next write
        os.unlink(named)


