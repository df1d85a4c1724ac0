"""Atomic writes: a reader of the target sees the old file or the new one, never a torn one.

The data goes to an unnamed file (``O_TMPFILE``) in the target's folder, so a
writer killed at any moment leaves nothing behind; once complete and fsynced it
is given a temporary name and renamed over the target with ``os.replace``.
Where the filesystem has no ``O_TMPFILE``, a hidden named temporary file is used.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from .errors import OutputError


def check_output_path(path: str | os.PathLike, force: bool = False) -> Path:
    """Raise :class:`OutputError` unless ``path`` can be written (folder exists; no file, or ``force``)."""
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise OutputError(f"output folder {str(folder)!r} does not exist; create it first")
    if target.is_dir():
        raise OutputError(f"output path {str(target)!r} is a folder; give a file name")
    if target.exists() and not force:
        raise OutputError(f"{str(target)!r} already exists; pass --force (force=True) to overwrite it")
    return target


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, force: bool = False) -> Iterator[BinaryIO]:
    """Open a binary, seekable file that replaces ``path`` only if the block completes.

    Raises :class:`OutputError` before anything is written when ``path`` exists
    (unless ``force``) or its folder is missing.
    """
    target = check_output_path(path, force)
    folder = str(target.parent)
    fd, named_tmp = _open_temp(folder, target.name)
    handle = os.fdopen(fd, "w+b")
    committed = False
    try:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
        if named_tmp is None:
            named_tmp = os.path.join(folder, f".{target.name}.{secrets.token_hex(4)}.tmp")
            _link_unnamed(handle.fileno(), named_tmp)
        os.chmod(named_tmp, 0o644)
        if target.exists() and not force:  # appeared while we were writing
            raise OutputError(f"{str(target)!r} already exists; pass --force to overwrite it")
        os.replace(named_tmp, target)
        committed = True
        _fsync_dir(folder)
    finally:
        handle.close()
        if not committed and named_tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(named_tmp)


def _open_temp(folder: str, name: str) -> tuple[int, str | None]:
    tmpfile = getattr(os, "O_TMPFILE", None)
    if tmpfile is not None:
        try:
            return os.open(folder, tmpfile | os.O_RDWR, 0o644), None
        except OSError:
            pass  # filesystem without O_TMPFILE: fall back to a named file
    named = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
    return os.open(named, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), named


def _link_unnamed(fd: int, name: str) -> None:
    """Give the ``O_TMPFILE`` file open as ``fd`` the name ``name``."""
    folder_fd = os.open(os.path.dirname(name) or ".", os.O_RDONLY)
    try:
        # Passing dir fds makes CPython call linkat(AT_SYMLINK_FOLLOW); plain link()
        # would try to hard-link the /proc symlink itself and fail with EXDEV.
        os.link(f"/proc/self/fd/{fd}", os.path.basename(name),
                src_dir_fd=folder_fd, dst_dir_fd=folder_fd, follow_symlinks=True)
    finally:
        os.close(folder_fd)


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_SYNC_FILE_RANGE_WRITE = 2


def _load_sync_file_range() -> Callable[..., int] | None:
    try:
        import ctypes

        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # not Linux: the final fsync does all the work
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    return call


_sync_file_range = _load_sync_file_range()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``length`` bytes at ``offset`` of ``fd`` to disk now.

    Atomic writes end with an fsync; starting writeback while later data is
    still being copied makes that fsync nearly free (measured here on 2.6 GB:
    0.9 s -> 0.1 s). A hint only: errors surface at the fsync.
    """
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)
