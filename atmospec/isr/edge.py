"""Edge mask: the outermost pixels of the sensor (ITL edge roll-off and glow)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EdgeConfig:
    """Width of the masked border."""

    width: int = 10
    """Unbinned pixels from each detector edge flagged EDGE (the roll-off is a property of
    the sensor: a binned frame flags ⌈width / binning⌉ of its pixels)."""


def edge_mask(shape: tuple[int, int], width: int,
              binning: tuple[int, int] = (1, 1)) -> np.ndarray:
    """Boolean mask of a ``width``-pixel border.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)``.
    width : int
        Border width in unbinned pixels.
    binning : tuple of int
        On-chip binning ``(x, y)`` of the image.

    Returns
    -------
    numpy.ndarray
        bool, True on the border.
    """
    mask = np.zeros(shape, dtype=bool)
    wx, wy = (-(-int(width) // b) for b in binning)
    if wy > 0:
        mask[:wy] = mask[-wy:] = True
    if wx > 0:
        mask[:, :wx] = mask[:, -wx:] = True
    return mask
