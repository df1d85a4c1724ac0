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
import re
import stat
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from .errors import FORCE, OutputError
from .permissions import output_mode

try:
    import fcntl
except ImportError:  # not POSIX: without locks no temporary file can be known dead, so none is removed
    fcntl = None  # type: ignore[assignment]

# Called with "synced", "linked" and "renamed" as a commit passes each step; tests
# set it to kill a writer exactly there. None (the default) costs one comparison.
_on_commit_step: Callable[[str], None] | None = None

_TAG = "jitckpt"
_HEX = 12  # random hex digits in a temporary name
_NAME_MAX = 255  # bytes in one file name on Linux filesystems
_OVERHEAD = len(f"..{_TAG}-4194304-{'0' * _HEX}.tmp")  # all a temporary name adds, with the largest pid

# What a user can do about the usual errnos of writing a file.
_HINTS = {
    errno.ENOSPC: "free space or write elsewhere",
    errno.EDQUOT: "free space within your quota or write elsewhere",
    errno.EACCES: "the folder is not writable; fix its permissions or write elsewhere",
    errno.EPERM: "the folder or file is protected (immutable or append-only?); write elsewhere",
    errno.EROFS: "the filesystem is mounted read-only; write elsewhere",
    errno.EFBIG: "the file is larger than this filesystem or a limit allows; write elsewhere",
    errno.EIO: "the disk reported an I/O error; check it and write elsewhere",
    errno.ENAMETOOLONG: "choose a shorter name",
    errno.EMFILE: "too many open files; close some or raise the limit",
    errno.ENFILE: "too many open files; close some or raise the limit",
}


def check_output_path(path: str | os.PathLike, force: bool = False) -> Path:
    """Raise :class:`OutputError` unless ``path`` can be written (folder exists; no file, or ``force``)."""
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise OutputError(f"output folder {str(folder)!r} does not exist; create it first")
    if target.is_dir():
        raise OutputError(f"output path {str(target)!r} is a folder; give a file name")
    if target.exists() and not force:
        raise OutputError(f"{str(target)!r} already exists; pass {FORCE} to overwrite it")
    return target


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, force: bool = False) -> Iterator[BinaryIO]:
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
        raise _output_error(shown, exc) from exc
    try:
        handle = _OutputFile(io.FileIO(fd, "r+", closefd=True), shown)
    except BaseException:
        _discard(fd, named)
        raise
    committed = False
    try:
        yield handle
        try:
            handle.flush()
            os.fsync(fd)
            _step("synced")
            if named is None:
                named = _link_unnamed(fd, folder, target.name)
            _step("linked")
            _put_in_place(named, target, force, shown)
            committed = True
            _step("renamed")
            _fsync_dir(folder)
        except OSError as exc:
            raise _output_error(shown, exc) from exc
    finally:
        if not committed and named is not None:
            with contextlib.suppress(OSError):
                os.unlink(named)  # while still locked, so no cleaner races us for it
        with contextlib.suppress(Exception):  # the data is synced, or the block already failed
            handle.close()


def remove_stale_temps(target: str | os.PathLike) -> list[str]:
    """Remove the temporary files of ``target`` whose writer is gone; return their paths.

    A file is removed only if its name matches jitckpt's exact pattern for
    ``target`` and nobody holds its lock: a live writer keeps its file. Errors
    (an unreadable folder, a file that vanished) leave files where they are.
    """
    if fcntl is None:
        return []
    target = Path(target)
    folder = str(target.parent)
    pattern = _temp_pattern(target.name)
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
            if not _same_file(opened, path):
                continue  # another cleaner removed it meanwhile
            os.unlink(path)
            removed.append(path)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


class _OutputFile(io.BufferedRandom):
    """The handle :func:`atomic_output` yields: OSErrors of its own I/O become OutputErrors naming the target."""

    def __init__(self, raw: io.FileIO, shown: str) -> None:
        super().__init__(raw)
        self._shown = shown

    def _fail(self, exc: OSError) -> OutputError:
        return _output_error(self._shown, exc)

    def write(self, data):  # type: ignore[override]
        try:
            return super().write(data)
        except OSError as exc:
            raise self._fail(exc) from exc

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as exc:
            raise self._fail(exc) from exc

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:  # flushes pending data
        try:
            return super().seek(offset, whence)
        except OSError as exc:
            raise self._fail(exc) from exc

    def truncate(self, size: int | None = None) -> int:
        try:
            return super().truncate(size)
        except OSError as exc:
            raise self._fail(exc) from exc

    def read(self, size: int | None = -1) -> bytes:  # flushes pending data
        try:
            return super().read(size)
        except OSError as exc:
            raise self._fail(exc) from exc

    def readinto(self, buffer) -> int:  # type: ignore[override]
        try:
            return super().readinto(buffer)
        except OSError as exc:
            raise self._fail(exc) from exc


def _step(name: str) -> None:
    hook = _on_commit_step
    if hook is not None:
        hook(name)


def _output_error(shown: str, exc: OSError) -> OutputError:
    """``cannot write 'out.ckpt': No space left on device (free space or write elsewhere)``."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = _HINTS.get(exc.errno, "check the output folder or write elsewhere")
    return OutputError(f"cannot write {shown!r}: {reason} ({hint})")


def _temp_stem(name: str) -> str:
    """``name``, or for a name too long to carry the temporary suffix, a prefix of it and its hash."""
    if len(os.fsencode(name)) + _OVERHEAD <= _NAME_MAX:
        return name
    import hashlib  # only for names too long to keep whole

    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    room = _NAME_MAX - _OVERHEAD - len(digest) - 1
    prefix = os.fsencode(name)[:room].decode(errors="ignore")  # whole UTF-8 characters only
    return f"{prefix}~{digest}"


def _temp_name(name: str) -> str:
    return f".{_temp_stem(name)}.{_TAG}-{os.getpid()}-{os.urandom(_HEX // 2).hex()}.tmp"


def _temp_pattern(name: str) -> re.Pattern[str]:
    """The names :func:`_temp_name` gives for ``name``: exactly those, for no other target."""
    return re.compile(rf"\.{re.escape(_temp_stem(name))}\.{_TAG}-[0-9]+-[0-9a-f]{{{_HEX}}}\.tmp")


def _lock(fd: int) -> bool:
    """Take ``fd``'s exclusive lock; False if someone else holds it.

    On a filesystem without locks, True: cleaners cannot lock there either, so
    they leave every file alone.
    """
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        pass
    return True


def _same_file(opened: os.stat_result, path: str) -> bool:
    try:
        now = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino)


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
        named = os.path.join(folder, _temp_name(name))
        try:
            fd = os.open(named, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        # Between its creation and our lock, a cleaner may have found the file
        # unlocked and removed it: then take another name.
        try:
            if _lock(fd) and _same_file(os.fstat(fd), named):
                return _prepared(fd, named, mode)
        except BaseException:
            _discard(fd, named)
            raise
        _discard(fd, named)
    raise FileExistsError(errno.EEXIST, "no free temporary name")


def _prepared(fd: int, named: str | None, mode: int) -> tuple[int, str | None]:
    try:
        if named is None:
            _lock(fd)  # before it has a name that a cleaner could see
        os.fchmod(fd, mode)
    except BaseException:
        _discard(fd, named)
        raise
    return fd, named


def _discard(fd: int, named: str | None) -> None:
    """Close ``fd`` and remove ``named`` if it is still that file."""
    with contextlib.suppress(OSError):
        if named is not None and _same_file(os.fstat(fd), named):
            os.unlink(named)
    os.close(fd)


def _link_unnamed(fd: int, folder: str, name: str) -> str:
    """Give the ``O_TMPFILE`` file open as ``fd`` a temporary name for ``name``; return its path."""
    folder_fd = os.open(folder, os.O_RDONLY)
    try:
        for _ in range(100):
            temp = _temp_name(name)
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


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):  # cannot sync folders here
            raise
    finally:
        os.close(fd)
