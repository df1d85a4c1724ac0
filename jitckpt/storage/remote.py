"""Byte ranges of a remote file: ``http(s)://`` by range requests, any other fsspec URL through fsspec.

A :class:`RemoteFile` is opened once per URL and process: its size and version
(ETag, else Last-Modified) are taken then, and every later read must agree with
them. ``read(n, offset)`` returns exactly the ``n`` bytes asked for or raises
:class:`~jitckpt.errors.SourceError`; it never holds more than ``n + 1`` bytes of an
answer, whatever the server sends.

HTTP is spoken here rather than through fsspec's ``HTTPFileSystem`` for two
measured reasons: fsspec reads a whole answer into memory when a server ignores
``Range`` (a 2.63 GB body for a 16-byte read), and it does not show the headers of
each answer, so a file replaced between two reads would go unnoticed. Other
protocols (``s3://``, ``gs://``, ``hf://`` with ``huggingface_hub``, ``memory://``)
go through ``fsspec.core.url_to_fs`` with the caller's storage options; their size
and version come from ``fs.info``.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
import urllib.parse
from typing import Any, Iterator, Mapping, Sequence

from ..errors import SourceError

TIMEOUT_S = 60  # per connection attempt and per socket read
DEADLINE_S = 300  # per request, answer included: a server that drips a byte at a time still ends
MAX_REDIRECTS = 5
PARALLEL_REQUESTS = 8  # connections of one read_many: ~1,100 small reads of a zip's local headers take
# ~140 round trips instead of ~1,100 (browsers open 6 a host; HTTP/1.1 has one request in flight a connection)
NEAR_S = 0.002  # a range answered sooner over a kept connection: a server this close gains nothing from more
# (benchmarks/remote.py, loopback: inspect 0.51 s over one, 0.71 s over 8; with a 20 ms round trip 24.2 s and 3.4 s)
VERSION_FIELDS = ("ETag", "etag", "Last-Modified", "LastModified", "last_modified", "mtime", "md5Hash", "generation")


class MissingRemote(SourceError):
    """The server has no file at that address (404, or a web page such as a folder listing)."""


def shown(url: str) -> str:
    """``url`` with any password in it replaced, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


class RemoteFile:
    """One remote file's size, version and reads (thread-safe: one request at a time)."""

    url: str
    size: int
    version: str | None
    requests: int  # range requests made, for tests and benchmarks
    received: int  # bytes of answers read

    _lock: threading.Lock

    def read(self, n: int, offset: int) -> bytes:
        """Bytes ``[offset, offset + n)``, which must lie inside the file: exactly those, or SourceError."""
        if n <= 0:
            return b""
        if offset < 0 or offset + n > self.size:
            raise SourceError(f"{self.url}: a read of bytes [{offset}, {offset + n}) runs past the file's "
                              f"{self.size} bytes")
        with self._lock:
            self.requests += 1
            data = self._fetch(n, offset)
            self.received += len(data)
        if len(data) != n:
            raise SourceError(f"{self.url}: {len(data)} of the {n} bytes asked for came back (the transfer was cut "
                              "short); nothing was written")
        return data

    def read_many(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """:meth:`read` of each ``(n, offset)``, in order: for many small reads (all answers are held at once)."""
        return [self.read(n, offset) for n, offset in ranges]

    def _fetch(self, n: int, offset: int) -> bytes:
        """At most ``n + 1`` bytes of the answer to a request for ``[offset, offset + n)``."""
        raise NotImplementedError


def _changed(url: str, was: str | None, now: str | None) -> SourceError:
    return SourceError(f"{url}: the file changed on the server while it was being read (version {was!r}, now "
                       f"{now!r}); nothing was written, run the command again")


class HttpFile(RemoteFile):
    """A file served over HTTP(S) that answers ``Range`` requests with ``206 Partial Content``."""

    _where: str  # the address after redirects
    _connection: http.client.HTTPConnection | None
    _spares: list[HttpFile]  # copies with connections of their own, kept from the last read_many
    _cancelled: bool  # a copy whose read_many was given up: it makes no more requests

    def __init__(self, url: str) -> None:
        self.url = self._where = url
        self._start()
        try:
            if urllib.parse.urlsplit(url).username is not None:
                raise SourceError(f"{shown(url)}: credentials in a URL are not sent; jitckpt reads public "
                                  "http(s) addresses (a private store: its fsspec address, with storage options)")
        except ValueError:
            raise SourceError(f"{url!r} is not a valid address") from None
        with self._deadline():
            response = self._request("HEAD", {})
            response.read(0)
            if response.will_close:
                self._drop_connection()
        if response.status == 404:
            raise MissingRemote(f"{url}: no such file on the server (HTTP 404)")
        if response.status != 200:
            raise SourceError(f"{url}: the server answered HTTP {response.status} {response.reason}")
        if (response.getheader("Content-Type") or "").startswith("text/html") or self._where.endswith("/"):
            raise MissingRemote(f"{url}: the server answers with a web page (a folder listing?), not a file")
        length = response.getheader("Content-Length", "")
        if not (length.isascii() and length.isdigit()):
            raise SourceError(f"{url}: the server does not say how long the file is (no Content-Length)")
        self.size = int(length)
        self.version = response.getheader("ETag") or response.getheader("Last-Modified")

    @contextlib.contextmanager
    def _deadline(self) -> Iterator[None]:
        """Close the connection if the request and its answer take longer than :data:`DEADLINE_S` (each socket
        read has its own timeout, but a server can drip a byte at a time within it)."""
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            self._cut()

        timer = threading.Timer(DEADLINE_S, expire)
        timer.daemon = True
        timer.start()
        too_slow = SourceError(f"{self.url}: the server took more than {DEADLINE_S} s to answer; nothing was written")
        try:
            yield
            if expired.is_set():  # the answer was cut off by the deadline but read as far as it came
                raise too_slow
        except SourceError:
            if expired.is_set():
                raise too_slow from None
            raise
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if expired.is_set():
                raise too_slow from None
            raise SourceError(f"{self.url}: cannot read from the server ({type(exc).__name__}: "
                              f"{str(exc)[:120]})") from None
        finally:
            timer.cancel()

    def _connect(self, parts: urllib.parse.SplitResult) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        return kind(parts.hostname or "", parts.port, timeout=TIMEOUT_S)

    def _request(self, method: str, extra: Mapping[str, str]) -> http.client.HTTPResponse:
        """One request to the file's address, following redirects to http(s) addresses only; the connection
        is kept for the next request and opened again once if the server closed it."""
        for _ in range(MAX_REDIRECTS + 1):
            parts = urllib.parse.urlsplit(self._where)
            if parts.scheme not in ("http", "https"):
                raise SourceError(f"{self.url}: redirected to {self._where[:200]!r}, not an http(s) address")
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            for attempt in (0, 1):
                if self._cancelled:
                    raise SourceError(f"{self.url}: cancelled")
                if self._connection is None:
                    self._connection = self._connect(parts)
                try:
                    self._connection.request(method, target, headers=dict(extra))
                    response = self._connection.getresponse()
                    break
                except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                    self._drop_connection()
                    if attempt:
                        raise SourceError(f"{self.url}: the connection broke off ({exc})") from None
                except (OSError, http.client.HTTPException) as exc:
                    self._drop_connection()
                    raise SourceError(f"{self.url}: cannot read from the server ({exc})") from None
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                target_url = urllib.parse.urljoin(self._where, response.getheader("Location", ""))
                if self._where.startswith("https:") and not target_url.startswith("https:"):
                    raise SourceError(f"{self.url}: redirected from https to {target_url[:200]!r}; refused")
                self._where = target_url
                self._drop_connection()  # its body unread (it may never end), and another host, perhaps
                continue
            return response
        raise SourceError(f"{self.url}: more than {MAX_REDIRECTS} redirects")

    def read_many(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """:meth:`read` of each ``(n, offset)``, in order, over :data:`PARALLEL_REQUESTS` connections at once
        (each its own copy of this file, with the same address, size and version to hold the server to), or
        over this one where the server answered the first of them within :data:`NEAR_S`."""
        shares = min(PARALLEL_REQUESTS, len(ranges) - 1)
        if shares <= 1:
            return super().read_many(ranges)
        started = time.monotonic()
        first = self.read(*ranges[0])
        if time.monotonic() - started < NEAR_S:
            return [first, *super().read_many(ranges[1:])]
        return [first, *self._read_on_twins(ranges[1:], shares)]

    def _read_on_twins(self, ranges: Sequence[tuple[int, int]], shares: int) -> list[bytes]:
        """``ranges`` read by ``shares`` copies of this file, a contiguous share each. The first failure (or
        Ctrl-C) stops them all at once: the others' connections are cut, so none waits out its share."""
        from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

        step = -(-len(ranges) // shares)
        twins = self._spares[:shares] + [self._twin() for _ in range(shares - len(self._spares[:shares]))]
        self._spares = []
        stop = threading.Event()

        def share(twin: HttpFile, begin: int) -> list[bytes]:
            answers = []
            for n, offset in ranges[begin:begin + step]:
                if stop.is_set():
                    break
                answers.append(twin.read(n, offset))
            return answers

        pool = ThreadPoolExecutor(max_workers=shares)
        try:
            futures = [pool.submit(share, twin, begin) for twin, begin in zip(twins, range(0, len(ranges), step))]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)  # all of them, or as soon as one fails
            failed = next((f.exception() for f in done if f.exception() is not None), None)
            if failed is not None:
                raise failed
            self._spares = twins  # their connections kept for the next batch
            return [data for future in futures for data in future.result()]
        except BaseException:
            stop.set()
            for twin in twins:
                twin._cancelled = True  # no reconnecting after the cut
                twin._cut()
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            with self._lock:
                for twin in twins:
                    self.requests += twin.requests
                    self.received += twin.received
                    twin.requests = twin.received = 0

    def _start(self) -> None:
        """The state a file's own connection needs: none open yet, nothing counted."""
        self.requests = self.received = 0
        self._lock = threading.Lock()
        self._connection, self._spares, self._cancelled = None, [], False

    def _twin(self) -> HttpFile:
        """This file with a connection of its own (no HEAD: the size and version are this one's)."""
        twin = object.__new__(HttpFile)
        twin.url, twin.size, twin.version, twin._where = self.url, self.size, self.version, self._where
        twin._start()
        return twin

    def _fetch(self, n: int, offset: int) -> bytes:
        try:
            with self._deadline():
                return self._read(n, offset)
        except BaseException:
            self._drop_connection()  # an answer left half read: never reuse its connection
            raise

    def _cut(self) -> None:
        """Shut this file's connection from another thread: a request waiting on it fails at once."""
        sock = getattr(self._connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _drop_connection(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _read(self, n: int, offset: int) -> bytes:
        response = self._request("GET", {"Range": f"bytes={offset}-{offset + n - 1}"})
        if response.status == 200:
            raise SourceError(f"{self.url}: the server ignores range requests (it answered a request for "
                              f"{n} bytes with the whole file); jitckpt reads remote files by ranges")
        if response.status != 206:
            raise SourceError(f"{self.url}: the server answered a range request with HTTP {response.status} "
                              f"{response.reason}")
        version = response.getheader("ETag") or response.getheader("Last-Modified")
        if version != self.version:
            raise _changed(self.url, self.version, version)
        expected = f"bytes {offset}-{offset + n - 1}/{self.size}"
        if (response.getheader("Content-Range") or "").strip() != expected:
            raise SourceError(f"{self.url}: the server sent another range than asked (Content-Range "
                              f"{(response.getheader('Content-Range') or 'missing')[:80]!r}, asked {expected!r})")
        try:
            data = response.read(n)
            extra = response.read(1) if len(data) == n else b""
        except (OSError, http.client.HTTPException) as exc:
            raise SourceError(f"{self.url}: the transfer broke off ({exc}); nothing was written") from None
        if extra:
            raise SourceError(f"{self.url}: the server sent more bytes than asked for; nothing was written")
        return data


class FsspecFile(RemoteFile):
    """A file of any fsspec filesystem, read by ``fs.cat_file(path, start, end)``."""

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        try:
            from fsspec.core import url_to_fs

            self.fs, self.path = url_to_fs(url, **dict(options or {}))
            info = self.fs.info(self.path)
        except FileNotFoundError:
            raise MissingRemote(f"{url}: no such file") from None
        except ImportError as exc:  # hf:// without huggingface_hub, s3:// without s3fs, ...
            raise SourceError(f"{url}: this kind of address needs a package that is not installed ({exc})") from None
        except (OSError, ValueError) as exc:
            raise SourceError(f"{url}: cannot read ({exc})") from None
        if info.get("type") not in (None, "file") or not isinstance(info.get("size"), int):
            raise MissingRemote(f"{url}: not a file")
        self.url, self.size = url, int(info["size"])
        self.version = next((str(info[k]) for k in VERSION_FIELDS if info.get(k) is not None), None)
        self.requests = self.received = 0
        self._lock = threading.Lock()

    def read_many(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """fsspec's ``cat_ranges`` (concurrent where the filesystem is asynchronous), each answer checked."""
        if len(ranges) <= 1:
            return super().read_many(ranges)
        for n, offset in ranges:
            if n <= 0 or offset < 0 or offset + n > self.size:
                return super().read_many(ranges)  # read() says what is wrong with it, or reads b"" for n <= 0
        try:
            answers = self.fs.cat_ranges([self.path] * len(ranges), [o for _, o in ranges],
                                         [o + n for n, o in ranges], on_error="raise")
        except (OSError, ValueError) as exc:
            raise SourceError(f"{self.url}: the read broke off ({exc}); nothing was written") from None
        with self._lock:
            self.requests += len(ranges)
            self.received += sum(len(a) for a in answers)
        for (n, _), data in zip(ranges, answers):
            if len(data) != n:
                raise SourceError(f"{self.url}: {len(data)} of the {n} bytes asked for came back (the transfer "
                                  "was cut short); nothing was written")
        return [bytes(a) for a in answers]

    def _fetch(self, n: int, offset: int) -> bytes:
        try:
            return bytes(self.fs.cat_file(self.path, start=offset, end=offset + n))
        except (OSError, ValueError) as exc:
            raise SourceError(f"{self.url}: the read broke off ({exc}); nothing was written") from None


def fsspec_kind(url: str, options: Mapping[str, Any] | None = None) -> str | None:
    """``'file'``, ``'directory'`` or None (absent) for a URL of a non-HTTP fsspec filesystem."""
    from fsspec.core import url_to_fs

    try:
        fs, path = url_to_fs(url, **dict(options or {}))
        return str(fs.info(path).get("type"))
    except (FileNotFoundError, ValueError):
        return None
    except ImportError as exc:
        raise SourceError(f"{url}: this kind of address needs a package that is not installed ({exc})") from None
