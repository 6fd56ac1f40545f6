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


#: Every n-th pixel of a row sets the clipping limits of `clipped_mean_var` (tens of
#: thousands of an amp's pixels give σ to 0.4 %, i.e. a 5σ limit to 0.02σ: an irrelevant
#: change in what is kept).
_SUBSAMPLE = 16


def clipped_mean_var(x: np.ndarray, n_sigma: float, n_iter: int = 3, *,
                     sigma_floor: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sigma-clipped mean, variance and count of each row of ``x`` (e.g. amps × pixels).

    The limits are found on a 1-in-16 subsample: median and MAD, then ``n_iter`` rounds of
    clipped mean and standard deviation. A single pass over every pixel then applies them,
    with sums of values centred on the subsample's mean (no cancellation in float32, and
    numpy's pairwise summation along contiguous rows keeps the sums accurate to ~1e-6).

    Parameters
    ----------
    x : numpy.ndarray
        ``(n, n_pixels)`` values (not modified).
    n_sigma : float
        Clipping limit, in σ.
    n_iter : int
        Rounds of clipped mean and σ on the subsample.
    sigma_floor : float
        Smallest first σ (integer-valued, nearly noiseless data can have a MAD of 0: 0.5 for
        ADU; a small fraction for normalised data).

    Returns
    -------
    mean, var, count : numpy.ndarray
        ``(n,)`` clipped mean and variance (float64) and the number of values kept.
    """
    sub = np.ascontiguousarray(x[:, ::_SUBSAMPLE], dtype=np.float64)
    centre = np.median(sub, axis=1)
    sigma = np.maximum(robust_sigma(sub, axis=1), sigma_floor)
    for _ in range(n_iter):
        keep = np.abs(sub - centre[:, None]) <= n_sigma * sigma[:, None]
        n = np.maximum(keep.sum(axis=1), 2)
        centre = np.where(keep, sub, 0.0).sum(axis=1) / n
        dev = np.where(keep, sub - centre[:, None], 0.0)
        sigma = np.maximum(np.sqrt((dev * dev).sum(axis=1) / (n - 1)), 2e-3 * sigma_floor)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    y = x - centre.astype(dtype)[:, None]
    keep = np.abs(y) <= (n_sigma * sigma).astype(dtype)[:, None]
    count = keep.sum(axis=1)
    y *= keep
    s1 = y.sum(axis=1, dtype=np.float64)
    np.square(y, out=y)
    s2 = y.sum(axis=1, dtype=np.float64)
    n = np.maximum(count, 2)
    mean = centre + s1 / n
    var = (s2 - s1 * s1 / n) / (n - 1)
    return mean, var, count


def median_and_robust_sigma(x: np.ndarray) -> tuple[float, float]:
    """The median of ``x`` and `robust_sigma` of it, the median computed once (`robust_sigma`
    computes it too: asking for both separately partitions the values three times)."""
    median = np.median(x)
    return float(median), float(1.4826 * np.median(np.abs(x - median)))
