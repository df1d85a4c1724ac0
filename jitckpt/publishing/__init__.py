"""Publishing: ``jitckpt export`` (a model folder, a diffusers folder or a weights-only file, with its
model card and sample grid).

May import: errors, storage, tensors, layouts, schema, formats, api, model, evaluation.
"""
