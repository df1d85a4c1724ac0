"""The original's image preprocessing (ADM's center crop), shared by training data and reference statistics."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import DATA_PATH, JiTCheckpointError


def training_folder(data_path: str | os.PathLike[str]) -> str:
    """``data_path/train``, the ImageFolder the original trains on; one line naming it when it is missing."""
    root = os.path.join(data_path, "train")
    if not os.path.isdir(root):
        raise JiTCheckpointError(f"no training folder {root!r}: {DATA_PATH}{str(data_path)!r} must hold "
                                 "train/<class>/<images>")
    return root


def center_crop_arr(pil_image: Any, image_size: int) -> Any:
    """ADM's center crop: halve with BOX while at least twice the size, BICUBIC resize, center crop."""
    from PIL import Image

    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.Resampling.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.Resampling.BICUBIC)
    arr = np.array(pil_image)
    top, left = (arr.shape[0] - image_size) // 2, (arr.shape[1] - image_size) // 2
    return Image.fromarray(arr[top : top + image_size, left : left + image_size])
