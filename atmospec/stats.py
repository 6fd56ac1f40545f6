"""Robust statistics shared by ISR, calibration products and diagnostics."""

from __future__ import annotations

import numpy as np


def robust_sigma(x: np.ndarray, axis: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Gaussian-equivalent sigma from the median absolute deviation (1.4826 × MAD).

    Parameters
    ----------
    x : numpy.ndarray
        Values.
    axis : int or tuple of int, optional
        Axes to reduce (all by default).
    """
    med = np.median(x, axis=axis, keepdims=True)
    return 1.4826 * np.median(np.abs(x - med), axis=axis)


def median_and_robust_sigma(x: np.ndarray) -> tuple[float, float]:
    """The median of ``x`` and `robust_sigma` of it, the median computed once (`robust_sigma`
    computes it too: asking for both separately partitions the values three times)."""
    median = np.median(x)
    return float(median), float(1.4826 * np.median(np.abs(x - median)))
