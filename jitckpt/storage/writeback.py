"""Starting the kernel's writeback of a file's fresh pages while later data is still being written."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

if TYPE_CHECKING:
    from typing_extensions import Buffer

_SYNC_FILE_RANGE_WRITE = 2


class SeekableOutput(Protocol):
    """What tensor bytes and archives are written to: a binary file open for writing (its ``fileno`` gets
    the writeback hints), or an output embedded in one that counts positions from its ``origin`` in it."""

    def tell(self) -> int: ...
    def seek(self, offset: int, /) -> int: ...
    def write(self, data: Buffer, /) -> int: ...
    def flush(self) -> None: ...
    def fileno(self) -> int: ...


def _load_sync_file_range() -> Callable[..., int] | None:
    try:
        import ctypes

        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # not Linux: the final fsync does all the work
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    return call


_sync_file_range = _load_sync_file_range()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``length`` bytes at ``offset`` of ``fd`` to disk now.

    Atomic writes end with an fsync; starting writeback while later data is
    still being copied makes that fsync nearly free (measured here on 2.6 GB:
    0.9 s -> 0.1 s). A hint only: errors surface at the fsync.
    """
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)
