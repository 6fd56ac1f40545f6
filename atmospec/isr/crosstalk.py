"""Intra-detector crosstalk: removing scaled copies of each amp's signal from the others.

Crosstalk happens in the readout electronics, pixel by pixel in readout order, so it is
corrected on the raw segments (all in readout orientation) before assembly: no flips needed.

Matrix convention: ``coeffs[target, source]`` is the fraction of the source amp's signal
that appears in the target amp, both in camera HDU order (the product file, in Rubin's
[source, target] layout, is read by `atmospec.calib.products.Crosstalk`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CrosstalkConfig:
    """Configuration of the crosstalk correction."""

    min_source_level: float = 0.0
    """Only source pixels above this level (e⁻) contribute (0: all positive signal)."""


@dataclass(frozen=True)
class CrosstalkMatrix:
    """A crosstalk matrix and its unit."""

    coeffs: np.ndarray
    """``(n_amps, n_amps)`` fractions, ``[target, source]``, zero diagonal."""
    units: str
    """``adu`` (ratios of raw signals) or ``electron``."""

    def in_electrons(self, gains: np.ndarray) -> np.ndarray:
        """Coefficients for signals already converted to electrons with ``gains`` (e⁻/ADU).

        A ratio of ADU signals becomes ``c * g_target / g_source`` in electrons.
        """
        if self.units == "electron":
            return self.coeffs
        gains = np.asarray(gains, dtype=float)
        return self.coeffs * gains[:, None] / gains[None, :]


def subtract_crosstalk(data: np.ndarray, coeffs: np.ndarray, min_level: float = 0.0,
                       rows_per_chunk: int = 64) -> None:
    """Remove crosstalk from ``data`` in place, a band of rows at a time.

    The result equals ``data -= crosstalk_signal(data, coeffs, min_level)``; working on
    bands of rows keeps the temporaries in cache instead of two extra full-frame copies.
    The source signal is taken from each band before it is corrected, as crosstalk is
    simultaneous in all amps (every amp reads the same pixel position at the same time).

    Parameters
    ----------
    data : numpy.ndarray
        ``(n_amps, ny, nx)`` view, modified in place.
    coeffs : numpy.ndarray
        ``[target, source]`` matrix in the unit of ``data``.
    min_level : float
        Source pixels at or below this level contribute nothing.
    rows_per_chunk : int
        Rows per band.
    """
    for y0 in range(0, data.shape[1], rows_per_chunk):
        band = data[:, y0:y0 + rows_per_chunk]
        band -= crosstalk_signal(band, coeffs, min_level)


def crosstalk_signal(data: np.ndarray, coeffs: np.ndarray, min_level: float = 0.0) -> np.ndarray:
    """Crosstalk each amp receives from the others.

    Parameters
    ----------
    data : numpy.ndarray
        ``(n_amps, ny, nx)`` background-free signal in readout orientation.
    coeffs : numpy.ndarray
        ``[target, source]`` matrix in the unit of ``data``.
    min_level : float
        Source pixels at or below this level contribute nothing.

    Returns
    -------
    numpy.ndarray
        ``(n_amps, ny, nx)`` float32 signal to remove from (or add to) each amp.
    """
    n = data.shape[0]
    src = np.array(data, dtype=np.float32, order="C").reshape(n, -1)  # a private copy
    if min_level == 0.0:
        np.maximum(src, np.float32(0.0), out=src)
    else:
        src[src <= min_level] = 0.0
    return (coeffs.astype(np.float32) @ src).reshape(data.shape)
