"""FID / Inception Score of any checkpoint with stock torch-fidelity, from a local Inception.

This module itself imports nothing heavy: the command line's ``--ema`` choices live here so that commands
that only name weights (``export``) start without torch.

May import: errors, storage, tensors, layouts, schema, api, model.
"""

from ..errors import JiTCheckpointError

WEIGHT_CHOICES = {"1": "ema1", "2": "ema2", "raw": "raw", "ema1": "ema1", "ema2": "ema2"}


def weights_name(ema: str) -> str:
    """``'1'``/``'2'``/``'raw'`` (the CLI's ``--ema``) to the schema's ``'ema1'``/``'ema2'``/``'raw'``."""
    if str(ema) not in WEIGHT_CHOICES:
        raise JiTCheckpointError(f"--ema {ema!r}: choose 1, 2 or raw")
    return WEIGHT_CHOICES[str(ema)]
