"""The one exception family of jitckpt.

Every error a user can cause (a bad file, a bad argument, an existing output)
is a :class:`JiTCheckpointError`; the CLI prints its message as one line.

Messages say what to do in the Python API's terms (``force=True``): the
constants below are the phrases they use, and :func:`in_cli_terms` rewrites
them as the command line spells them (``--force``), so each user reads their
own terms.

May import: nothing.
"""

from __future__ import annotations

import re
import reprlib

# Ends every warning about data of a source that a conversion does not carry over (convert shows those).
NOT_CONVERTED = "not read, converted or written"

# The remedies messages offer, as the Python API spells them; CLI_TERMS maps each to the command line's spelling.
FORCE = "force=True"
DROP_OPTIMIZER = "drop_optimizer=True"
DATA_PATH = "data_path="
# (the format registry adds its ``to=...`` remedy, generated from the formats it writes)
CLI_TERMS: dict[str, str] = {
    FORCE: "--force",
    DROP_OPTIMIZER: "--drop-optimizer",
    DATA_PATH: "--data-path ",
}


def in_cli_terms(message: str) -> str:
    """``message`` with every API remedy (``force=True``) spelled as the CLI's flag (``--force``).

    Example:
        >>> in_cli_terms("'x.ckpt' already exists; pass force=True to overwrite it")
        "'x.ckpt' already exists; pass --force to overwrite it"
    """
    terms = re.compile("|".join(re.escape(term) for term in sorted(CLI_TERMS, key=len, reverse=True)))
    return terms.sub(lambda match: CLI_TERMS[match.group()], message)


class JiTCheckpointError(Exception):
    """Base class of every error jitckpt raises on bad input."""


def naming(exc: "JiTCheckpointError", path: str) -> "JiTCheckpointError":
    """``exc``, or the same error with ``path: `` before its message when it does not name the file yet."""
    return exc if str(exc).startswith(path) else type(exc)(f"{path}: {exc}")


class FormatError(JiTCheckpointError):
    """The file is not a checkpoint of a known format, or it is corrupt or truncated."""


class DamagedError(FormatError):
    """Bytes of the file do not match the checksum it records for them: the file is corrupt."""


class UnsafePickleError(FormatError):
    """A pickle asked for a global outside the allowlist; nothing of it was run."""


class SchemaError(JiTCheckpointError):
    """The checkpoint's content does not satisfy the schema (keys, shapes, sections)."""


class KeyMappingError(SchemaError):
    """State-dict keys cannot be mapped onto the canonical ``net.`` keys unambiguously."""


class SourceError(JiTCheckpointError):
    """A remote file could not be read as it was when first opened: absent, unreachable, cut short, changed."""


class OutputError(JiTCheckpointError):
    """The output path cannot be written: it exists (and no force), or its folder is missing."""


def render(value: object, limit: int = 80) -> str:
    """A bounded rendering of a value from a file, for messages: at most ``limit`` characters, built in time
    bounded by the rendering (``reprlib`` stops at a few levels and items), never the whole ``repr()``."""
    try:
        text = _RENDER.repr(value)
    except Exception:  # a value whose repr fails (an integer past Python's digit limit): name its type
        text = f"<a {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bounded_repr() -> "reprlib.Repr":
    shown = reprlib.Repr()
    shown.maxlevel = 3
    shown.maxtuple = shown.maxlist = shown.maxdict = shown.maxset = shown.maxfrozenset = 6
    shown.maxstring = shown.maxother = 80
    shown.maxlong = 40
    return shown


_RENDER = _bounded_repr()
