"""Defects: boxes of bad pixels (a product table, `atmospec.calib.products.Defects`), masked
BAD and later interpolated.

The table has integer columns ``x0, y0, width, height`` in unbinned assembled-image pixels
(Rubin's "Simple" defects schema); a binned frame gets the binned pixels holding any
defective pixel (`frame_defect_mask`).
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from atmospec.camera.assembly import bin_image
from atmospec.camera.description import Camera


def defect_mask(table: Table, shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of the defect boxes (clipped to the image)."""
    mask = np.zeros(shape, dtype=bool)
    for x0, y0, w, h in zip(table["x0"], table["y0"], table["width"], table["height"],
                            strict=True):
        mask[max(int(y0), 0): int(y0) + int(h), max(int(x0), 0): int(x0) + int(w)] = True
    return mask


def frame_defect_mask(table: Table, camera: Camera) -> np.ndarray:
    """The defects on a frame read out with ``camera``'s geometry (binned or not).

    Parameters
    ----------
    table : astropy.table.Table
        Defect boxes in unbinned assembled pixels.
    camera : Camera
        Geometry of the frame (`RawFrame.camera`).

    Returns
    -------
    numpy.ndarray
        bool, ``camera.detector_shape``: binned pixels with at least one defective pixel.
    """
    mask = defect_mask(table, camera.unbinned.detector_shape)
    if camera.binning == (1, 1):
        return mask
    return bin_image(mask, camera, how="any")
