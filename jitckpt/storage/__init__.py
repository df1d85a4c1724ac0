"""Storage: atomic, durable files and folders (write to a temporary, fsync, rename), their permission bits,
writeback pacing, the CRC-32 / SHA-256 of file bytes, and where bytes are read from (:mod:`.sources`: a local
path or a URL, :mod:`.remote`: range requests and fsspec).

May import: errors.
"""
