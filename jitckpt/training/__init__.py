"""Training: ``jitckpt train`` (a Lightning run that resumes the original's checkpoints) and the resume
step that puts a checkpoint's state into a module, its EMAs and its optimizer.

May import: errors, compat, storage, tensors, torchfile, layouts, schema, formats, api, model, evaluation, lightning, callbacks.
"""

LOGGERS = ("csv", "tensorboard", "none")  # what ``jitckpt train --logger`` takes


def check_resume_flags(resume: object, overrides: dict, evaluate_gen: bool = False) -> None:
    """Flags that contradict ``--resume`` (or its absence): one line, before anything loads."""
    from ..errors import JiTCheckpointError

    if evaluate_gen and not resume:
        raise JiTCheckpointError("--evaluate_gen scores the checkpoint given by --resume; give --resume")
    if resume and any(overrides.get(k) is not None for k in ("model", "img_size", "class_num")):
        raise JiTCheckpointError("--model, --img-size and --class-num come from the checkpoint when resuming")
