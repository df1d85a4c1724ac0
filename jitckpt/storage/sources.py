"""Where a checkpoint's bytes are read from: a local path, or a URL (``https://...``, ``hf://org/repo/file``,
any fsspec protocol).

Every reader asks these functions, so a remote file meets exactly the bounds and
checks of a local one and reads only the ranges the reader asks for. A remote file
is opened once per process (:mod:`.remote`); its size and version are fixed then.
Storage options for fsspec (credentials, endpoints) are given with
:func:`storage_options` around the first read of a URL.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import stat
import threading
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from ..errors import SourceError

if TYPE_CHECKING:  # .remote loads http.client and ssl (20 ms), which a local read never needs
    from .remote import RemoteFile

REMOTE_READ_BYTES = 16 << 20  # per range request of readinto: bounds what one answer holds twice in memory
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_OPTIONS: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar("storage_options", default={})
_OPENED: dict[str, RemoteFile] = {}  # by URL
_LOCK = threading.Lock()


def is_url(path: str | os.PathLike[str]) -> bool:
    """True for an address with a scheme other than ``file://`` (a local path otherwise)."""
    text = os.fspath(path)
    return isinstance(text, str) and bool(_URL.match(text)) and not text.lower().startswith("file://")


def local(path: str | os.PathLike[str]) -> str:
    """A local path as a string (``file://`` stripped)."""
    text = os.fspath(path)
    assert isinstance(text, str)
    return text[7:] if text.lower().startswith("file://") else text


@contextlib.contextmanager
def storage_options(options: Mapping[str, Any] | None) -> Iterator[None]:
    """fsspec storage options for the URLs first read inside the block (``{}`` or None: none)."""
    token = _OPTIONS.set(dict(options or {}))
    try:
        yield
    finally:
        _OPTIONS.reset(token)


def remote(url: str) -> RemoteFile:
    """The open remote file at ``url`` (opened on first use and kept: its size and version pinned for every
    later read); :class:`SourceError` when it is absent or unreadable (not kept: the next call asks again)."""
    from .remote import FsspecFile, HttpFile

    with _LOCK:
        opened = _OPENED.get(url)
        if opened is None:
            if "::" in url and "http" in url.split("::", 1)[1].split(":", 1)[0].lower():
                raise SourceError(f"{url}: a chained address over http(s) would go through fsspec's HTTP reader, "
                                  "which holds whole answers in memory; give the http(s) address of the file itself")
            opened = HttpFile(url) if url.lower().startswith(("http://", "https://")) \
                else FsspecFile(url, _OPTIONS.get())
            _OPENED[url] = opened
    return opened


def refresh(path: str | os.PathLike[str]) -> None:
    """Before a new read of ``path`` (a URL, or a folder's URL): forget what is kept of it and of the files
    under it, so that this read sees the file as the server holds it now. (Lazy tensors of an earlier read
    then read the new file, whose CRC-32s catch a change where it records them.)"""
    text = os.fspath(path)
    if isinstance(text, str) and is_url(text):
        with _LOCK:
            for url in [u for u in _OPENED if u == text or u.startswith(text.rstrip("/") + "/")]:
                del _OPENED[url]


def forget() -> None:
    """Drop every kept remote file, so that each is opened afresh."""
    with _LOCK:
        _OPENED.clear()


def basename(path: str | os.PathLike[str]) -> str:
    """The last part of a path or of a URL's path (``.../jit-b16.pth?download=1`` -> ``jit-b16.pth``)."""
    text = os.fspath(path)
    assert isinstance(text, str)
    if is_url(text):
        import urllib.parse

        return urllib.parse.urlsplit(text).path.rstrip("/").rsplit("/", 1)[-1]
    return os.path.basename(text.rstrip(os.sep))


def join(base: str | os.PathLike[str], *names: str) -> str:
    """``base/name/...``: ``os.path.join`` for a local path, ``/``-joined for a URL."""
    text = os.fspath(base)
    assert isinstance(text, str)
    if is_url(text):
        import urllib.parse

        parts = urllib.parse.urlsplit(text)  # a signed URL's query stays at the end
        return urllib.parse.urlunsplit(parts._replace(path="/".join([parts.path.rstrip("/"), *names])))
    return os.path.join(text, *names)


def is_file(path: str | os.PathLike[str]) -> bool:
    """True for a regular file, locally through symbolic links (never a FIFO, a device or a folder)."""
    text = os.fspath(path)
    assert isinstance(text, str)
    if not is_url(text):
        try:
            return stat.S_ISREG(os.stat(local(text)).st_mode)
        except (OSError, ValueError):
            return False
    from .remote import MissingRemote

    try:
        remote(text)
        return True
    except MissingRemote:  # absent; any other failure (a timeout, a refusal) is said at once
        return False


def is_dir(path: str | os.PathLike[str]) -> bool:
    """True for a folder. Over HTTP, which has no folders, an address that is not a file counts as one (its
    files are then asked for by name)."""
    text = os.fspath(path)
    assert isinstance(text, str)
    if not is_url(text):
        return os.path.isdir(local(text))
    if text.lower().startswith(("http://", "https://")):
        return not is_file(text)
    from .remote import fsspec_kind

    return fsspec_kind(text, _OPTIONS.get()) == "directory"


def exists(path: str | os.PathLike[str]) -> bool:
    """True for anything at ``path`` (locally also a dangling link: it is there, and is refused by name)."""
    text = os.fspath(path)
    assert isinstance(text, str)
    if not is_url(text):
        return os.path.lexists(local(text))
    return is_file(text) or (not text.lower().startswith(("http://", "https://")) and is_dir(text))


def size(path: str | os.PathLike[str]) -> int:
    """The file's size in bytes."""
    text = os.fspath(path)
    assert isinstance(text, str)
    return remote(text).size if is_url(text) else os.path.getsize(local(text))


def identity(path: str) -> tuple[Any, ...]:
    """What changes when the file does: (device, inode, size, mtime) locally, (size, version) remotely."""
    if is_url(path):
        opened = remote(path)
        return (path, opened.size, opened.version)
    st = os.stat(local(path))
    return (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def file_key(path: str) -> tuple[Any, Any]:
    """Two names with the same key are one file: (device, inode) locally, (URL, version) remotely."""
    if is_url(path):
        return (path, remote(path).version)
    st = os.stat(local(path))
    return (st.st_dev, st.st_ino)


class Reader:
    """Reads of one file, local (a descriptor) or remote; a context manager."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._remote = remote(path) if is_url(path) else None
        self._fd = os.open(local(path), os.O_RDONLY) if self._remote is None else -1

    @property
    def fd(self) -> int | None:
        """The local descriptor (None for a remote file), for in-kernel copies."""
        return self._fd if self._remote is None else None

    def pread(self, n: int, offset: int) -> bytes:
        """Up to ``n`` bytes from ``offset`` (fewer only at the end of a local file)."""
        if self._remote is None:
            return os.pread(self._fd, n, offset)
        n = max(0, min(n, self._remote.size - offset))
        return self._remote.read(n, offset)

    def pread_many(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        """:meth:`pread` of each ``(n, offset)``, in order; a remote file's over several connections at once
        (for many small reads, such as a zip's local headers: all answers are held at once)."""
        if self._remote is None:
            return [os.pread(self._fd, n, offset) for n, offset in ranges]
        size = self._remote.size
        return self._remote.read_many([(max(0, min(n, size - offset)), offset) for n, offset in ranges])

    def readinto(self, buffer: memoryview, offset: int) -> int:
        """Read into ``buffer`` from ``offset``; the count read (0 at the end). From a remote file at most
        :data:`REMOTE_READ_BYTES` a call: one range request, whose answer is held once more in memory."""
        if self._remote is None:
            return os.preadv(self._fd, [buffer], offset)
        data = self.pread(min(len(buffer), REMOTE_READ_BYTES), offset)
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_bytes(path: str, n: int, offset: int = 0) -> bytes:
    """Up to ``n`` bytes of ``path`` from ``offset``."""
    with Reader(path) as reader:
        return reader.pread(n, offset)
