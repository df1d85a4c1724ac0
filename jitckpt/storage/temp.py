"""What atomic files and atomic folders share: the temporary names beside a target, their locks, the one
error a failed write becomes, and the commit steps.

A temporary name says whose it is: ``.{target}.jitckpt-{pid}-{hex}.tmp``; its writer holds an exclusive
``flock`` on it for its whole life, so a cleaner can tell a killed writer's leftovers (unlocked) from a live
writer's. Any ``OSError`` of a write becomes an :class:`~jitckpt.errors.OutputError` naming the target.
"""

from __future__ import annotations

import errno
import io
import os
import re
from typing import TYPE_CHECKING, Callable

from ..errors import OutputError

if TYPE_CHECKING:
    from typing_extensions import Buffer

try:
    import fcntl as fcntl  # re-exported: atomic.py locks with it
except ImportError:  # not POSIX: without locks no temporary file can be known dead, so none is removed
    fcntl = None  # type: ignore[assignment]

# Called with "synced", "linked" and "renamed" as a commit passes each step; tests
# set it to kill a writer exactly there. None (the default) costs one comparison.
on_commit_step: Callable[[str], None] | None = None

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


class OutputFile(io.BufferedRandom):
    """The handle :func:`atomic_output` yields: OSErrors of its own I/O become OutputErrors naming the target."""

    def __init__(self, raw: io.FileIO, shown: str) -> None:
        super().__init__(raw)
        self._shown = shown

    def _fail(self, exc: OSError) -> OutputError:
        return output_error(self._shown, exc)

    def write(self, data: Buffer) -> int:
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

    def readinto(self, buffer: Buffer) -> int:
        try:
            return super().readinto(buffer)
        except OSError as exc:
            raise self._fail(exc) from exc


def commit_step(name: str) -> None:
    hook = on_commit_step
    if hook is not None:
        hook(name)


def output_error(shown: str, exc: OSError) -> OutputError:
    """``cannot write 'out.ckpt': No space left on device (free space or write elsewhere)``."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = _HINTS.get(exc.errno or 0, "check the output folder or write elsewhere")
    return OutputError(f"cannot write {shown!r}: {reason} ({hint})")


def temp_stem(name: str) -> str:
    """``name``, or for a name too long to carry the temporary suffix, a prefix of it and its hash."""
    if len(os.fsencode(name)) + _OVERHEAD <= _NAME_MAX:
        return name
    import hashlib  # only for names too long to keep whole

    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    room = _NAME_MAX - _OVERHEAD - len(digest) - 1
    prefix = os.fsencode(name)[:room].decode(errors="ignore")  # whole UTF-8 characters only
    return f"{prefix}~{digest}"


def temp_name(name: str) -> str:
    return f".{temp_stem(name)}.{_TAG}-{os.getpid()}-{os.urandom(_HEX // 2).hex()}.tmp"


def temp_pattern(name: str) -> re.Pattern[str]:
    """The names :func:`temp_name` gives for ``name``: exactly those, for no other target."""
    return re.compile(rf"\.{re.escape(temp_stem(name))}\.{_TAG}-[0-9]+-[0-9a-f]{{{_HEX}}}\.tmp")


def lock(fd: int) -> bool:
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


def same_file(opened: os.stat_result, path: str) -> bool:
    try:
        now = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino)


def fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):  # cannot sync folders here
            raise
    finally:
        os.close(fd)
