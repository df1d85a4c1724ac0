"""What one corpus input is: its bytes (made on demand), its family and its oracle.

Inputs are described, not stored: a patched copy of a base file is a list of
byte edits, a re-zipped golden is a transformation of its entries. The bytes
exist only while the input is being run, so thousands of 3 MB inputs cost
tens of megabytes of memory, not gigabytes.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

CANARY = "HOSTILE-CANARY"  # relative: every run has its own working folder, so the path is unique per run


class Source(Protocol):
    """Something that can produce an input's bytes."""

    def render(self) -> bytes: ...


@dataclass(frozen=True)
class Raw:
    """Bytes given outright (small synthetic files)."""

    data: bytes

    def render(self) -> bytes:
        return self.data


@dataclass(frozen=True)
class Edit:
    """Replace ``[start, end)`` of the base by ``data`` (an insertion when start == end)."""

    start: int
    end: int
    data: bytes = b""


@dataclass(frozen=True)
class Patched:
    """A base file with byte edits (non-overlapping, applied from the end backwards)."""

    base: Path
    edits: tuple[Edit, ...] = ()

    def render(self) -> bytes:
        data = bytearray(self.base.read_bytes())
        for edit in sorted(self.edits, key=lambda e: e.start, reverse=True):
            data[edit.start: edit.end] = edit.data
        return bytes(data)


@dataclass(frozen=True)
class Lazy:
    """Bytes computed when needed (zip bombs: cheap to describe, a few MB to hold)."""

    factory: Callable[[], bytes]

    def render(self) -> bytes:
        return self.factory()


@dataclass
class Entry:
    """One zip entry to write: name, bytes, and compression (``zipfile.ZIP_STORED`` unless an attack says so)."""

    name: str
    data: bytes
    compress: int = zipfile.ZIP_STORED


@dataclass(frozen=True)
class Rezipped:
    """The entries of a base zip, transformed, written again as a stored zip (valid CRCs)."""

    base: Path
    transform: Callable[[list[Entry]], list[Entry]]

    def render(self) -> bytes:
        with zipfile.ZipFile(self.base) as zf:
            entries = [Entry(info.filename, zf.read(info)) for info in zf.infolist()]
        return write_zip(self.transform(entries))


def write_zip(entries: list[Entry]) -> bytes:
    """A zip of ``entries`` in order (duplicate names kept, as a hostile writer would)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name": on purpose
        with zipfile.ZipFile(buffer, "w") as zf:
            for entry in entries:
                info = zipfile.ZipInfo(entry.name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = entry.compress
                zf.writestr(info, entry.data, compresslevel=9 if entry.compress == zipfile.ZIP_DEFLATED else None)
    return buffer.getvalue()


def torch_zip(pickle_bytes: bytes, storages: dict[str, bytes] | None = None, folder: str = "archive") -> bytes:
    """A torch zip as ``torch.save`` lays it out: data.pkl, byteorder, storages, version; all stored."""
    entries = [Entry(f"{folder}/data.pkl", pickle_bytes), Entry(f"{folder}/byteorder", b"little")]
    entries += [Entry(f"{folder}/data/{key}", data) for key, data in (storages or {}).items()]
    entries.append(Entry(f"{folder}/version", b"3\n"))
    return write_zip(entries)


@dataclass
class CorpusItem:
    """One hostile input and what a correct reader may do with it.

    ``oracle`` is the pristine base the input was derived from: a command that
    succeeds must then behave exactly as on the base. ``content_same`` says the
    damage left the checkpoint's content unchanged (a flipped timestamp), so
    ``verify`` may call it intact or the same as the base. ``undetectable``
    marks damage no reader can see by design (a data bit flip in a safetensors
    file that carries no checksums). ``valid_variant`` marks a file that is
    still a valid checkpoint, laid out differently, that a reader may accept.
    ``reference`` is the file ``verify IN REF`` compares against (the oracle by
    default). ``tensor_bytes_only`` marks damage confined to tensor entries and
    their local headers, which ``inspect`` never reads: ``inspect`` may then
    succeed if it prints what it prints for ``reference``. ``extensions`` are
    copyreg extension codes to register in the reading process before it runs
    (for the EXT1/EXT2/EXT4 gadgets).
    """

    name: str
    category: str
    suffix: str
    source: Source
    oracle: Path | None = None
    reference: Path | None = None
    content_same: bool = False
    undetectable: bool = False
    valid_variant: bool = False
    tensor_bytes_only: bool = False
    extensions: tuple[tuple[str, str, int], ...] = ()

    @property
    def compare_to(self) -> Path | None:
        """The file ``verify IN REF`` runs against, if any."""
        return self.reference or self.oracle

    @property
    def is_safetensors(self) -> bool:
        return self.suffix == ".safetensors"

    def render(self) -> bytes:
        return self.source.render()
