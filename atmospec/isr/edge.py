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


def edge_regions(shape: tuple[int, int], width: int,
                 binning: tuple[int, int] = (1, 1)) -> list[tuple[slice, slice]]:
    """The border of ``width`` unbinned pixels as (rows, columns) slices: the bottom and
    top bands, then the left and right ones (the corners are in both).

    Setting a mask plane on these touches the border's pixels only, not the frame (a
    full-frame boolean costs a pass over 16 Mpixels on a LATISS frame).

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
    list of (slice, slice)
        Empty when the width is 0.
    """
    ny, nx = shape
    wx, wy = (-(-int(width) // b) for b in binning)
    regions = []
    if wy > 0:
        regions += [(slice(0, min(wy, ny)), slice(0, nx)),
                    (slice(max(ny - wy, 0), ny), slice(0, nx))]
    if wx > 0:
        regions += [(slice(0, ny), slice(0, min(wx, nx))),
                    (slice(0, ny), slice(max(nx - wx, 0), nx))]
    return regions


def edge_mask(shape: tuple[int, int], width: int,
              binning: tuple[int, int] = (1, 1)) -> np.ndarray:
    """Boolean mask of a ``width``-pixel border: `edge_regions` (same parameters) as an
    image.

    Returns
    -------
    numpy.ndarray
        bool, True on the border.
    """
    mask = np.zeros(shape, dtype=bool)
    for region in edge_regions(shape, width, binning):
        mask[region] = True
    return mask
