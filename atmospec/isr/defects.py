"""Defects: boxes of bad pixels (a product table, `atmospec.calib.products.Defects`), masked
BAD and later interpolated.

The table has integer columns ``x0, y0, width, height`` in assembled-image pixels (Rubin's
"Simple" defects schema).
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table


def defect_mask(table: Table, shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of the defect boxes (clipped to the image)."""
    mask = np.zeros(shape, dtype=bool)
    for x0, y0, w, h in zip(table["x0"], table["y0"], table["width"], table["height"],
                            strict=True):
        mask[max(int(y0), 0): int(y0) + int(h), max(int(x0), 0): int(x0) + int(w)] = True
    return mask
