"""Lazy tensors: a tensor's bytes located in a file (or in pieces across files), read and checked only when
asked, and helpers that treat lazy and torch tensors alike.

May import: errors, storage.
"""
