"""The one exception family of jitckpt.

Every error a user can cause (a bad file, a bad argument, an existing output)
is a :class:`JiTCheckpointError`; the CLI prints its message as one line.
"""

from __future__ import annotations


class JiTCheckpointError(Exception):
    """Base class of every error jitckpt raises on bad input."""


class FormatError(JiTCheckpointError):
    """The file is not a checkpoint of a known format, or it is corrupt or truncated."""


class UnsafePickleError(FormatError):
    """A pickle asked for a global outside the allowlist; nothing of it was run."""


class SchemaError(JiTCheckpointError):
    """The checkpoint's content does not satisfy the schema (keys, shapes, sections)."""


class KeyMappingError(SchemaError):
    """State-dict keys cannot be mapped onto the canonical ``net.`` keys unambiguously."""


class OutputError(JiTCheckpointError):
    """The output path cannot be written: it exists (and no force), or its folder is missing."""
