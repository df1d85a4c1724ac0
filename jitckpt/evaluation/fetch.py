"""The two downloads jitckpt does, only when asked: torch-fidelity's Inception weights and the original's
reference statistics.

torch-fidelity downloads ``weights-inception-2015-12-05-6726825d.pth`` into
torch's hub cache (``$TORCH_HOME/hub/checkpoints``, ``~/.cache/torch/hub/checkpoints``
by default) the first time it runs. jitckpt never downloads during a run, but
uses that file when it is there, and ``jitckpt fetch-inception`` puts it there
once. ``jitckpt fetch-stats`` puts the original repository's ``fid_stats/jit_in{256,512}_stats.npz`` where
the original (and ``eval``, and ``FIDEvaluationCallback``) look: ``fid_stats/`` in the working directory.
Each download streams to a temporary file beside its target, is checked against a digest known in advance
(the weights' SHA-256; the statistics' git blob id in the original repository, so that no server is
trusted), and only then renamed into place; otherwise nothing is left behind. Standard library only: this
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
from dataclasses import dataclass
from typing import BinaryIO, Callable

from ..errors import JiTCheckpointError
from ..storage.crc32 import hash_stream

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


@dataclass(frozen=True)
class Known:
    """A file known in advance: where it comes from, its digest, and the most bytes it may take."""

    url: str
    digest: str
    max_bytes: int
    kind: str = "SHA-256"  # or "git blob id": SHA-1 of b"blob <size>\0" + the bytes, as git names a file

    def digest_of(self, handle: BinaryIO, size: int) -> str:
        handle.seek(0)
        hasher = hashlib.sha256() if self.kind == "SHA-256" else hashlib.sha1(f"blob {size}\0".encode())
        return hash_stream(handle, hasher, CHUNK)


INCEPTION = Known(WEIGHTS_URL, WEIGHTS_SHA256, WEIGHTS_BYTES)
# The original repository's reference statistics at commit cbc743a (mu: 2048 float64, sigma: 2048 x 2048).
ORIGINAL_REPO = "https://github.com/LTH14/JiT/raw/cbc743a"
STATS = {
    256: Known(f"{ORIGINAL_REPO}/fid_stats/jit_in256_stats.npz", "3c94ea961be94d06efa9e5bf4da71eff52deaebb",
               64 << 20, "git blob id"),
    512: Known(f"{ORIGINAL_REPO}/fid_stats/jit_in512_stats.npz", "349293d82b5625afe1c66c9409f3fa198485a19f",
               64 << 20, "git blob id"),
}
Progress = Callable[[int], Callable[[int], None] | None]


def fetch(url: str | None = None, force: bool = False, progress: Progress | None = None) -> tuple[Path, bool]:
    """Download the Inception weights into torch's hub cache; ``(path, downloaded)`` (see :func:`download`)."""
    return download(INCEPTION, hub_weights_path(), url, force, progress)


def fetch_stats(img_size: int, target: Path | None = None, url: str | None = None, force: bool = False,
                progress: Progress | None = None) -> tuple[Path, bool]:
    """Download the original's reference statistics for ``img_size`` (256 or 512) to ``target`` (default
    ``fid_stats/jit_in{img_size}_stats.npz`` here, where the original looks); ``(path, downloaded)``."""
    if img_size not in STATS:
        raise JiTCheckpointError(f"--img-size {img_size}: the original ships statistics for "
                                 f"{' and '.join(map(str, STATS))} px only")
    return download(STATS[img_size], target or Path("fid_stats") / f"jit_in{img_size}_stats.npz", url, force,
                    progress)


def download(known: Known, target: Path, url: str | None = None, force: bool = False,
             progress: Progress | None = None) -> tuple[Path, bool]:
    """Put ``known``'s file at ``target``, from ``url`` (default: its own); ``(path, downloaded)``.

    A file already there with the right digest is kept (``downloaded`` False) unless ``force``; one with
    another digest is an error unless ``force``. The bytes stream into a temporary file beside ``target``,
    renamed into place only when their digest is ``known.digest``; at most ``known.max_bytes`` are taken.
    ``progress(total_bytes)`` may return an advance callback (the CLI's progress bar).
    """
    import time
    import urllib.parse

    from ..storage.atomic import atomic_output

    if url is not None and not url.strip():  # an unset variable in --url "$MIRROR": never the default address
        raise JiTCheckpointError("--url is empty; give the address to download from, or leave --url out")
    url = url if url is not None else known.url
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise JiTCheckpointError(f"cannot download {url}: only http:// and https:// addresses are fetched")
    if target.is_file() and not force:
        with open(target, "rb") as existing:
            if known.digest_of(existing, target.stat().st_size) == known.digest:
                return target, False
        raise JiTCheckpointError(f"{str(target)!r} exists but its {known.kind} is not {known.digest}; "
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
            if length and length.isdigit() and int(length) > known.max_bytes:
                raise JiTCheckpointError(f"{url} would send {int(length)} bytes, more than the {known.max_bytes} "
                                         "the file may have; nothing was written")
            advance = progress(int(length) if length and length.isdigit() else known.max_bytes) if progress else None
            received, deadline = 0, time.monotonic() + DEADLINE_S
            try:
                while chunk := response.read1(CHUNK):  # what has arrived: the deadline is checked as bytes come
                    received += len(chunk)
                    if received > known.max_bytes:
                        raise JiTCheckpointError(f"{url} sent more than the {known.max_bytes} bytes the file may "
                                                 "have; nothing was written")
                    if time.monotonic() > deadline:
                        raise JiTCheckpointError(f"download of {url} took more than {DEADLINE_S} s; nothing was "
                                                 "written")
                    handle.write(chunk)
                    if advance is not None:
                        advance(len(chunk))
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                raise JiTCheckpointError(f"download of {url} broke off: {exc}; nothing was written") from None
            got = known.digest_of(handle, received)
            if got != known.digest:
                raise JiTCheckpointError(f"{url} gave a file with {known.kind} {got}, expected {known.digest}; "
                                         "nothing was written")
    except BaseException:
        for folder in created:  # innermost first: only the folders this call made, and only if empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return target, True
