"""The original's image preprocessing (ADM's center crop), shared by training data and reference statistics."""

from __future__ import annotations

from typing import Any

import numpy as np


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
