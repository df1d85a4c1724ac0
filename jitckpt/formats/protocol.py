"""The contract of a format module, written down: what the registry, the messages and the help expect.

Every module in :data:`jitckpt.formats.FORMATS` satisfies :class:`Format` (``tests/formats/test_protocol.py``
checks it): its facts (``NAME``, ``SUFFIXES``, ``LABEL``, ``DESCRIPTION``, ``KIND``, ``WRITES``) and ``read``;
one of ``write`` (``WRITES == "file"``) or ``write_folder`` (``WRITES == "folder"``) when it is written by
``convert`` / ``save``; and ``detect_folder`` when it is a folder (``KIND == "folder"``). The sniff order, the
suffix table and every list of formats in a message or a help text are derived from the registry, so adding
a format is one module and one entry in the registry's tuple.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..schema import JiTCheckpoint
    from ..storage.atomic_folder import OutputFolder

Progress = Callable[[int], None]


@runtime_checkable
class Format(Protocol):
    """A format: its facts and its reader (``path`` names a file, or a folder when ``KIND == "folder"``)."""

    NAME: str
    SUFFIXES: tuple[str, ...]  # what an output's name may end in; the first is the default one
    LABEL: str  # a few words for messages ("Lightning .ckpt")
    DESCRIPTION: str  # one line for inspect
    KIND: Literal["file", "folder"]
    WRITES: Literal["file", "folder", "none"]  # how convert and save write it ("none": another command does)

    def read(self, path: str) -> "JiTCheckpoint": ...


@runtime_checkable
class FileWriter(Protocol):
    def write(self, ckpt: "JiTCheckpoint", handle: BinaryIO, path: Path, progress: Progress | None = None,
              weights: str | None = None) -> None: ...


@runtime_checkable
class FolderWriter(Protocol):
    def write_folder(self, ckpt: "JiTCheckpoint", folder: "OutputFolder", progress: Progress | None = None,
                     weights: str | None = None, shards: int = 1) -> None: ...


@runtime_checkable
class FolderFormat(Protocol):
    def detect_folder(self, path: Any) -> bool: ...


@runtime_checkable
class HeadSniffer(Protocol):
    """A file format that knows its files by their first 16 bytes and their size (safetensors by its header's
    length and opening brace); detection asks each such format, in the table's order, before torch zips."""

    def detect_head(self, head: bytes, size: int) -> bool: ...
