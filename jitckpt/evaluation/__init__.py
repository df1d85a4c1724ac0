"""FID / Inception Score of any checkpoint with stock torch-fidelity, from a local Inception.

This module itself imports nothing heavy: the command line's ``--ema`` choices live here so that commands
that only name weights (``export``) start without torch.

May import: errors, storage, tensors, layouts, schema, api, model.
"""

from ..errors import JiTCheckpointError

WEIGHT_CHOICES = {"1": "ema1", "2": "ema2", "raw": "raw", "ema1": "ema1", "ema2": "ema2"}


def check_one_reference(fid_stats: object, ref_dir: object) -> None:
    """FID is measured against reference statistics or reference images, not both."""
    if fid_stats is not None and ref_dir is not None:
        raise JiTCheckpointError("give --fid-stats or --ref-dir, not both")


def check_balanced(num_images: int, num_classes: int) -> None:
    """The original lays images out class by class: ``num_images`` must be a positive multiple of the classes."""
    if num_images <= 0 or num_images % num_classes:
        raise JiTCheckpointError(
            f"--num-images {num_images} must be a positive multiple of the class count {num_classes} "
            "(the same number of images for every class)"
        )


def check_classes(classes: str, num_classes: int) -> list[int]:
    """``--classes 1,2,3`` as labels, each one of the model's ``num_classes``."""
    try:
        labels = [int(c) for c in classes.split(",")]
    except ValueError:
        raise JiTCheckpointError(f"--classes {classes!r}: give comma-separated class numbers, e.g. 1,2,3") from None
    wrong = [label for label in labels if not 0 <= label < num_classes]
    if not labels or wrong:
        raise JiTCheckpointError(f"--classes {classes!r}: each class must be between 0 and {num_classes - 1} "
                                 "(this model's classes)")
    return labels


def weights_name(ema: str) -> str:
    """``'1'``/``'2'``/``'raw'`` (the CLI's ``--ema``) to the schema's ``'ema1'``/``'ema2'``/``'raw'``."""
    if str(ema) not in WEIGHT_CHOICES:
        raise JiTCheckpointError(f"--ema {ema!r}: choose 1, 2 or raw")
    return WEIGHT_CHOICES[str(ema)]
