"""The CRC-32 record jitckpt keeps in the metadata of every safetensors file it writes.

The safetensors format has no checksum. ``jitckpt.checksums`` holds, as JSON,
the CRC-32 of every tensor's bytes and one of the header itself (its canonical
JSON without this entry), so bit rot or a broken transfer is found when the
bytes are read. CRC values are 8 hex digits, so the writer can reserve the
header's room before the data and fill in the values after it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import DamagedError, FormatError
from ..storage.crc32 import crc32
from ..tensors.lazy import TensorRef
from ..tensors.regions import Checksum

KEY = "jitckpt.checksums"
ALGORITHM = "crc32"
PLACEHOLDER = 0
_HEX = re.compile(r"[0-9a-f]{8}")


def header_crc(header: dict[str, Any]) -> int:
    """The CRC-32 of the header's canonical JSON, without the checksum entry."""
    metadata = {k: v for k, v in (header.get("__metadata__") or {}).items() if k != KEY}
    canonical = {**header, "__metadata__": metadata}
    return crc32(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode())


def encode(header_value: int, tensor_crcs: dict[str, int]) -> str:
    """The metadata value recording ``header_value`` and each tensor's CRC-32."""
    return json.dumps({"algorithm": ALGORITHM, "header": f"{header_value:08x}",
                       "tensors": {k: f"{v:08x}" for k, v in tensor_crcs.items()}}, separators=(",", ":"))


def attach(path: str, header: dict[str, Any], metadata: dict[str, str], tensors: dict[str, TensorRef]) -> bool:
    """Check the header's CRC and give each TensorRef its recorded checksum; False when the file has none."""
    text = metadata.get(KEY)
    if text is None:
        if "jitckpt.schema_version" in metadata or "jitckpt.kind" in metadata:  # jitckpt writes all three, always
            raise DamagedError(f"{path}: its header says jitckpt wrote it, but its checksum record ({KEY}) is "
                               "gone; the file is corrupt or was tampered with, use a good copy")
        return False
    try:
        record = json.loads(text)
        values = record["tensors"]
        ok = (record.get("algorithm") == ALGORITHM and isinstance(values, dict) and set(values) == set(tensors)
              and all(isinstance(v, str) and _HEX.fullmatch(v) for v in [record["header"], *values.values()]))
    except (ValueError, TypeError, KeyError, RecursionError):
        ok = False
    if not ok:
        raise FormatError(f"{path}: its checksum record ({KEY}) is damaged; the file is corrupt, use a good copy")
    stored, computed = int(record["header"], 16), header_crc({**header, "__metadata__": metadata})
    if stored != computed:
        raise DamagedError(f"{path}: its header is damaged: it does not match its CRC-32 "
                           f"(recorded {stored:08x}, computed {computed:08x}); the file is corrupt, use a good copy")
    for key, ref in tensors.items():
        object.__setattr__(ref, "checksum", Checksum(ref.offset, ref.nbytes, int(values[key], 16)))
    return True
