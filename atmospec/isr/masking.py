"""Small mask operations shared by ISR steps (growing masks, finding masked runs)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def grow_mask(mask: np.ndarray, radius: int) -> np.ndarray:
    """Dilate a boolean mask by ``radius`` pixels (square footprint).

    Only the bounding boxes of the masked regions are dilated, so a sparse mask on a
    4k×4k frame costs milliseconds.
    """
    if radius <= 0 or not mask.any():
        return mask.copy()
    labels, _ = ndimage.label(mask)
    out = mask.copy()
    ny, nx = mask.shape
    for sl in ndimage.find_objects(labels):
        y0, y1 = max(sl[0].start - radius, 0), min(sl[0].stop + radius, ny)
        x0, x1 = max(sl[1].start - radius, 0), min(sl[1].stop + radius, nx)
        out[y0:y1, x0:x1] |= ndimage.maximum_filter(mask[y0:y1, x0:x1], size=2 * radius + 1)
    return out
