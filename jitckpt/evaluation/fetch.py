"""Where torch-fidelity keeps its Inception weights, and ``fetch``: the one download jitckpt does, on request.

torch-fidelity downloads ``weights-inception-2015-12-05-6726825d.pth`` into
torch's hub cache (``$TORCH_HOME/hub/checkpoints``, ``~/.cache/torch/hub/checkpoints``
by default) the first time it runs. jitckpt never downloads during a run, but
uses that file when it is there, and ``jitckpt fetch-inception`` puts it there
once (streamed to a temporary file in the same folder, checked against
:data:`WEIGHTS_SHA256`, then renamed into place). Standard library only: this
module imports no torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from ..errors import JiTCheckpointError
from ..storage.crc32 import sha256_file

WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS_NAME}"
WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
WEIGHTS_BYTES = 95_628_359  # the file's size: the progress bar's total, and the most a download may send
CHUNK = 1 << 20
TIMEOUT_S = 60  # for the connection and for each read
DEADLINE_S = 1800  # for the whole download: 95 MB at 53 kB/s


def hub_dir() -> Path:
    """torch's hub folder, as ``torch.hub.get_dir()`` finds it (without importing torch if it is not loaded).

    ``$TORCH_HOME/hub``, else ``$XDG_CACHE_HOME/torch/hub``, else ``~/.cache/torch/hub``.
    """
    if "torch" in sys.modules:  # honours torch.hub.set_dir() and $TORCH_HUB as well
        import torch.hub

        return Path(torch.hub.get_dir())
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(os.path.expanduser(home)) / "hub"


def hub_weights_path() -> Path:
    """Where torch-fidelity keeps its Inception weights: ``<hub dir>/checkpoints/weights-inception-...pth``."""
    return hub_dir() / "checkpoints" / WEIGHTS_NAME


class _HttpRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to another http(s) address (urllib's own would follow one to ftp://)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        import urllib.parse

        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise urllib.error.URLError(f"redirected to {newurl[:200]}, not an http(s) address")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch(url: str | None = None, force: bool = False,
          progress: Callable[[int], Callable[[int], None] | None] | None = None) -> tuple[Path, bool]:
    """Download the Inception weights into torch's hub cache; ``(path, downloaded)``.

    A file already there with the right SHA-256 is kept (``downloaded`` False)
    unless ``force``; one with another SHA-256 is an error unless ``force``.
    The download streams into a temporary file next to the target and is
    renamed into place only when its SHA-256 is :data:`WEIGHTS_SHA256`;
    otherwise nothing is left behind. ``progress(total_bytes)`` may return an
    advance callback (the CLI's progress bar).
    """
    import time
    import urllib.parse

    from ..storage.atomic import atomic_output

    url = url or WEIGHTS_URL
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise JiTCheckpointError(f"cannot download {url}: only http:// and https:// addresses are fetched")
    target = hub_weights_path()
    if target.is_file() and not force:
        if sha256_file(target) == WEIGHTS_SHA256:
            return target, False
        raise JiTCheckpointError(f"{str(target)!r} exists but its SHA-256 is not {WEIGHTS_SHA256}; "
                                 f"--force downloads it again")
    created = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        try:
            response = urllib.request.build_opener(_HttpRedirectsOnly).open(url, timeout=TIMEOUT_S)
        except (urllib.error.URLError, OSError, ValueError) as exc:  # HTTPError reads "HTTP Error 404: Not Found"
            reason = exc if isinstance(exc, urllib.error.HTTPError) else getattr(exc, "reason", None) or exc
            raise JiTCheckpointError(f"cannot download {url}: {reason}") from None
        with response, atomic_output(target, force=True) as handle:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > WEIGHTS_BYTES:
                raise JiTCheckpointError(f"{url} would send {int(length)} bytes, more than the {WEIGHTS_BYTES} of "
                                         "the weights; nothing was written")
            advance = progress(int(length) if length and length.isdigit() else WEIGHTS_BYTES) if progress else None
            digest, received, deadline = hashlib.sha256(), 0, time.monotonic() + DEADLINE_S
            try:
                while chunk := response.read1(CHUNK):  # what has arrived: the deadline is checked as bytes come
                    received += len(chunk)
                    if received > WEIGHTS_BYTES:
                        raise JiTCheckpointError(f"{url} sent more than the {WEIGHTS_BYTES} bytes of the weights; "
                                                 "nothing was written")
                    if time.monotonic() > deadline:
                        raise JiTCheckpointError(f"download of {url} took more than {DEADLINE_S} s; nothing was "
                                                 "written")
                    digest.update(chunk)
                    handle.write(chunk)
                    if advance is not None:
                        advance(len(chunk))
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                raise JiTCheckpointError(f"download of {url} broke off: {exc}; nothing was written") from None
            if digest.hexdigest() != WEIGHTS_SHA256:
                raise JiTCheckpointError(f"{url} gave a file with SHA-256 {digest.hexdigest()}, expected "
                                         f"{WEIGHTS_SHA256}; nothing was written")
    except BaseException:
        for folder in created:  # innermost first: only the folders this call made, and only if empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return target, True
