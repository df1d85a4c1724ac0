"""Inspection: what ``jitckpt inspect`` shows of a checkpoint, and the integrity checks ``verify`` runs.

May import: errors, storage, tensors, torchfile, layouts, schema, formats, api, model.
"""
