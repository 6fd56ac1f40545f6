"""Filling masked pixels (defects, saturation) by linear interpolation along rows.

Rows are the serial direction: bad columns and bleed trails are vertical, so the nearest
good pixels on the same row bracket them. Runs wider than ``max_width`` (a dead amplifier)
are not interpolated but set to a fallback level, as Rubin's ISR does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


def _column_blocks(bad_cols: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of consecutive columns that hold masked pixels."""
    edges = np.diff(np.concatenate([[0], bad_cols.view(np.int8), [0]]))
    return list(zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0], strict=True))


def fill_masked(image: np.ndarray, bad: np.ndarray, config: InterpolationConfig) -> np.ndarray:
    """Interpolate short runs, set long runs to the median of good pixels.

    The masked columns fall into blocks (a bleed trail, a bad column, a dead amplifier);
    each block is processed on its own rows and columns (plus one bracketing column on each
    side), so the cost follows the masked area rather than the frame size. A solid block
    wider than ``max_width`` goes straight to the fallback.

    Returns
    -------
    numpy.ndarray
        Boolean mask of the filled pixels (all of ``bad``).
    """
    filled = np.zeros_like(bad)
    nx = image.shape[1]
    for start, stop in _column_blocks(bad.any(axis=0)):
        c0, c1 = max(start - 1, 0), min(stop + 1, nx)
        rows = np.nonzero(bad[:, start:stop].any(axis=1))[0]
        r0, r1 = rows[0], rows[-1] + 1
        block = bad[r0:r1, start:stop]
        if stop - start > config.max_width and block.all():
            continue  # e.g. a dead amplifier: nothing to interpolate from
        filled[r0:r1, c0:c1] |= interpolate_rows(image[r0:r1, c0:c1], bad[r0:r1, c0:c1],
                                                 config.max_width)
    rest = bad & ~filled
    if rest.any():
        good = ~bad[::4, ::4]
        sample = image[::4, ::4][good]
        image[rest] = np.median(sample) if sample.size else 0.0
        filled |= rest
    return filled
