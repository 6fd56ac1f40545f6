"""Filling masked pixels (defects, saturation) by linear interpolation along rows.

Rows are the serial direction: bad columns and bleed trails are vertical, so the nearest
good pixels on the same row bracket them. Runs wider than ``max_width`` (a dead amplifier)
are not interpolated but set to a fallback level, as Rubin's ISR does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class InterpolationConfig:
    """How masked pixels are filled."""

    max_width: int = 50
    """Longest run of masked pixels along a row that is interpolated; longer runs are set
    to the median of the good pixels."""


def interpolate_rows(image: np.ndarray, bad: np.ndarray, max_width: int) -> np.ndarray:
    """Fill ``bad`` pixels of ``image`` in place, linearly along rows.

    Parameters
    ----------
    image : numpy.ndarray
        2-D float image (or a view of one), modified in place.
    bad : numpy.ndarray
        Boolean mask of pixels to fill.
    max_width : int
        Runs longer than this are left unchanged.

    Returns
    -------
    numpy.ndarray
        Boolean mask of the pixels that were filled.
    """
    filled = np.zeros_like(bad)
    rows = np.nonzero(bad.any(axis=1))[0]
    if rows.size == 0:
        return filled
    sub = image[rows]
    sb = bad[rows]
    nx = sub.shape[1]
    idx = np.broadcast_to(np.arange(nx), sb.shape)
    # Index of the nearest good pixel to the left / right of every pixel.
    left = np.where(~sb, idx, -1)
    np.maximum.accumulate(left, axis=1, out=left)
    right = np.where(~sb, idx, nx)
    right = np.minimum.accumulate(right[:, ::-1], axis=1)[:, ::-1]
    width = right - left - 1
    ok = sb & (width <= max_width) & ((left >= 0) | (right < nx))
    r, c = np.nonzero(ok)
    lf, rt = left[r, c], right[r, c]
    lv = sub[r, np.clip(lf, 0, nx - 1)]
    rv = sub[r, np.clip(rt, 0, nx - 1)]
    # At the image edge only one side exists: extend it flat.
    lv = np.where(lf >= 0, lv, rv)
    rv = np.where(rt < nx, rv, lv)
    t = np.where((lf >= 0) & (rt < nx), (c - lf) / np.maximum(rt - lf, 1), 0.0)
    sub[r, c] = (lv + t * (rv - lv)).astype(image.dtype)
    image[rows] = sub
    filled[rows[r], c] = True
    return filled


def fill_masked(image: np.ndarray, bad: np.ndarray, config: InterpolationConfig) -> np.ndarray:
    """Interpolate short runs, set long runs to the median of good pixels.

    Each connected masked region is handled in its own bounding box (plus one column on
    each side for the bracketing good pixels), so the cost follows the masked area, not
    the frame size.

    Returns
    -------
    numpy.ndarray
        Boolean mask of the filled pixels (all of ``bad``).
    """
    nx = image.shape[1]
    filled = np.zeros_like(bad)
    labels, _ = ndimage.label(bad)
    for sl in ndimage.find_objects(labels):
        if sl[1].stop - sl[1].start > config.max_width and bad[sl].all():
            continue  # a solid block wider than max_width (dead amp): fallback below
        rows = sl[0]
        cols = slice(max(sl[1].start - 1, 0), min(sl[1].stop + 1, nx))
        filled[rows, cols] |= interpolate_rows(image[rows, cols], bad[rows, cols],
                                               config.max_width)
    rest = bad & ~filled
    if rest.any():
        good = ~bad[::4, ::4]
        sample = image[::4, ::4][good]
        image[rest] = np.median(sample) if sample.size else 0.0
        filled |= rest
    return filled
