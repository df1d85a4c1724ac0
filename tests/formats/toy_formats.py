"""Two toy formats for the format contract's test (tests/formats/test_protocol.py): a folder format and a file
format known by its first bytes. Each is what a new format is: a module satisfying the Format protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

import jitckpt
from tests.helpers import GOLDEN

MAGIC = b"TOYFILE!"


class ToyFolder:
    NAME, SUFFIXES, LABEL, DESCRIPTION = "toy", (".toy",), "toy folder", "toy folder (for the contract's test)"
    KIND, WRITES = "folder", "folder"

    @staticmethod
    def detect_folder(path: Any) -> bool:
        return (Path(path) / "TOY").is_file()

    @staticmethod
    def read(path: Any) -> Any:
        return jitckpt.load(GOLDEN, lazy=True)

    @staticmethod
    def write_folder(ckpt: Any, folder: Any, progress: Any = None, weights: Any = None, shards: int = 1) -> None:
        with folder.file("TOY") as handle:  # a durable file in the folder being written (an OutputFolder)
            handle.write(b"toy")


class ToyFile:
    NAME, SUFFIXES, LABEL, DESCRIPTION = "toyfile", (".tf",), "toy file", "toy file (for the contract's test)"
    KIND, WRITES = "file", "file"

    @staticmethod
    def detect_head(head: bytes, size: int) -> bool:
        return head.startswith(MAGIC)

    @staticmethod
    def read(path: Any) -> Any:
        return jitckpt.load(GOLDEN, lazy=True)

    @staticmethod
    def write(ckpt: Any, handle: BinaryIO, path: Any, progress: Any = None, weights: Any = None) -> None:
        handle.write(MAGIC + b" epoch %d" % ckpt.epoch)


toy_folder, toy_file = ToyFolder(), ToyFile()
