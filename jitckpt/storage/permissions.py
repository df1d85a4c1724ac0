"""Permission bits of what jitckpt writes: those of the file or folder it replaces, else what the umask allows."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def output_mode(target: Path) -> int:
    """The permission bits the output gets: those of the file it replaces, else what ``open`` would give a new
    file (0o666 less the umask), as ``cp`` does; a private checkpoint stays private."""
    try:
        existing = os.stat(target)
    except OSError:
        existing = None
    if existing is not None and stat.S_ISREG(existing.st_mode):
        return permission_bits(existing)
    return 0o666 & ~umask()


def permission_bits(status: os.stat_result) -> int:
    """The read, write and execute bits of a file's status, never its set-id or sticky bits."""
    return stat.S_IMODE(status.st_mode) & 0o777


def umask() -> int:
    """The process's umask (the permission bits new files are created without)."""
    try:  # Linux says it without changing it (changing it, even for a moment, races other threads)
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current
