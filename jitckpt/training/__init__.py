"""Training: ``jitckpt train`` (a Lightning run that resumes the original's checkpoints) and the resume
step that puts a checkpoint's state into a module, its EMAs and its optimizer.

May import: errors, compat, storage, tensors, torchfile, layouts, schema, formats, api, model, evaluation, lightning, callbacks.
"""

LOGGERS = ("csv", "tensorboard", "none")  # what ``jitckpt train --logger`` takes
