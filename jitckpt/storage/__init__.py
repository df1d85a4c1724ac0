"""Storage: atomic, durable files and folders (write to a temporary, fsync, rename), their permission bits,
writeback pacing and the CRC-32 / SHA-256 of file bytes.

May import: errors.
"""
