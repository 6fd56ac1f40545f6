"""Small mask operations shared by ISR steps (growing masks, finding masked runs)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def mask_coordinates(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the true pixels of a 2-D mask, in `numpy.nonzero`'s order.

    numpy's 2-D ``nonzero`` costs 27 ms on a sparse 4k×4k mask against 2 ms for its flat
    form, from which the rows and columns are one division.
    """
    return np.divmod(np.flatnonzero(mask), mask.shape[1])


def grow_mask(mask: np.ndarray, radius: int) -> np.ndarray:
    """Dilate a boolean mask by ``radius`` pixels (square footprint).

    A sparse mask (saturated stars on a 4k×4k frame) is grown by offsetting the coordinates
    of its pixels, which costs microseconds per pixel instead of a full-frame filter.
    """
    if radius <= 0 or not mask.any():
        return mask.copy()
    ys, xs = mask_coordinates(mask)
    if ys.size * (2 * radius + 1) ** 2 > mask.size // 4:
        return ndimage.binary_dilation(mask, np.ones((2 * radius + 1,) * 2, bool))
    out = mask.copy()
    ny, nx = mask.shape
    for dy in range(-radius, radius + 1):
        yy = np.clip(ys + dy, 0, ny - 1)
        for dx in range(-radius, radius + 1):
            out[yy, np.clip(xs + dx, 0, nx - 1)] = True
    return out
