"""A local HTTP server for the remote-reading tests: serves a folder's files with ``Range`` support, an ETag
per file, counts requests and bytes, and misbehaves on demand (``server.misbehave = ...``):

- ``"truncate"``: a range answer stops halfway (the connection is closed);
- ``"long"``: a range answer carries more bytes than asked;
- ``"ignore-range"``: every GET answers 200 with the whole file;
- ``"etag-change"``: after the first range answer, the ETag changes;
- ``"wrong-range"``: the Content-Range names another range;
- ``"redirect-endless"``: a GET is redirected (to the same file under ``/r/``) by an answer whose body never
  ends;
- ``"drip"``: a range answer's body comes a byte every 0.2 s.

``server.delay_s`` holds every answer back that long (a network's round trip); ``server.most_at_once`` is the
most requests it answered at the same time. ``server.misbehave_from = k`` makes a mode apply from the k-th
request on (counting from 1, HEADs included); ``server.stall_on`` is a set of request numbers each held back
``server.stall_s`` more, and with ``server.stall_together`` so is every request that comes while another is
being answered.
"""

from __future__ import annotations

import contextlib
import http.server
import re
import threading
import time
from pathlib import Path
from typing import Iterator


class Server:
    def __init__(self, root: Path) -> None:
        self.root, self.misbehave = root, ""
        self.requests = 0
        self.bytes_sent = 0
        self.ranges = 0
        self.delay_s = 0.0
        self.at_once = self.most_at_once = self.answered = 0
        self.misbehave_from = 0
        self.stall_on: set[int] = set()
        self.stall_s = 60.0
        self.stall_together = False
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def answering(self) -> Iterator[str]:
        """Around one answer: counts it, holds it back, and gives the misbehaviour that applies to it."""
        with self._lock:
            self.at_once += 1
            self.most_at_once = max(self.most_at_once, self.at_once)
            self.answered += 1
            number, together = self.answered, self.at_once > 1
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            if number in self.stall_on or (self.stall_together and together):
                time.sleep(self.stall_s)
            yield self.misbehave if number >= self.misbehave_from else ""
        finally:
            with self._lock:
                self.at_once -= 1

    def count(self, sent: int) -> None:
        with self._lock:
            self.requests += 1
            self.bytes_sent += sent


def _handler(server: Server) -> type:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers
        mode = ""  # the misbehaviour that applies to the request being answered
        disable_nagle_algorithm = True  # as real servers: else each answer waits 40 ms for a delayed ACK

        def log_message(self, *args: object) -> None:
            pass

        def _file(self) -> Path | None:
            served = self.path[2:] if self.path.startswith("/r/") else self.path
            path = (server.root / served.lstrip("/").split("?")[0]).resolve()
            return path if path.is_file() and server.root.resolve() in path.parents else None

        def _etag(self, path: Path) -> str:
            st = path.stat()
            changed = server.misbehave == "etag-change" and server.ranges > 1
            return f'"{st.st_size:x}-{st.st_mtime_ns:x}{"-new" if changed else ""}"'

        def do_HEAD(self) -> None:
            with server.answering() as self.mode:
                self._head()

        def do_GET(self) -> None:
            with server.answering() as self.mode:
                self._get()

        def _head(self) -> None:
            path = self._file()
            if path is None:
                self._missing()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(path.stat().st_size))
            self.send_header("ETag", self._etag(path))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            server.count(0)

        def _missing(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            server.count(0)

        def _get(self) -> None:
            if self.mode == "redirect-endless" and not self.path.startswith("/r/"):
                self.send_response(302)
                self.send_header("Location", "/r" + self.path)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    while True:  # until the client hangs up
                        self.wfile.write(b"100000\r\n" + b"x" * 0x100000 + b"\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    return
            if self.mode == "drip" and self.headers.get("Range") and self._file() is not None:
                file = self._file()
                assert file is not None
                first, last = (int(v) for v in self.headers["Range"][6:].split("-"))
                self.send_response(206)
                self.send_header("ETag", self._etag(file))
                self.send_header("Content-Length", str(last - first + 1))
                self.send_header("Content-Range", f"bytes {first}-{last}/{file.stat().st_size}")
                self.end_headers()
                try:
                    for _ in range(last - first + 1):
                        self.wfile.write(b"x")
                        time.sleep(0.2)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return
            path = self._file()
            if path is None:
                self._missing()
                return
            size = path.stat().st_size
            match = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
            if match is None or self.mode == "ignore-range":
                start, end, status = 0, size - 1, 200
            else:
                start, end, status = int(match[1]), min(int(match[2]), size - 1), 206
                with server._lock:
                    server.ranges += 1
            length = end - start + 1
            body_length = length
            if status == 206 and self.mode == "long":
                body_length = length + 100
            self.send_response(status)
            self.send_header("ETag", self._etag(path))
            self.send_header("Content-Length", str(body_length))
            if status == 206:
                shown = f"{start + 1}-{end + 1}" if self.mode == "wrong-range" else f"{start}-{end}"
                self.send_header("Content-Range", f"bytes {shown}/{size}")
            self.end_headers()
            with open(path, "rb") as f:
                f.seek(start)
                todo = length // 2 if status == 206 and self.mode == "truncate" else length
                sent = 0
                while sent < todo:
                    chunk = f.read(min(1 << 20, todo - sent))
                    if not chunk:
                        break
                    try:
                        self.wfile.write(chunk)
                    except (BrokenPipeError, ConnectionResetError):
                        break
                    sent += len(chunk)
                if body_length > length:
                    self.wfile.write(b"\0" * (body_length - length))
            server.count(sent)
            if sent < length:
                self.close_connection = True

    return Handler


@contextlib.contextmanager
def serving(root: Path) -> Iterator[tuple[Server, str]]:
    """Serve ``root`` on 127.0.0.1 at a free port: (the counters, the base URL)."""
    state = Server(root)
    class Quiet(http.server.ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a client that hangs up mid-answer (as jitckpt does when an answer is wrong) is no news

    httpd = Quiet(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        from jitckpt.storage import sources

        sources.forget()  # the next server reuses no file this one served
