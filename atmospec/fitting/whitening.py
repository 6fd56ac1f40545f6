"""Whitening by a data covariance: ``x ↦ L⁻¹ x`` with ``C = L Lᵀ``.

A least-squares fit with correlated data errors minimises ``rᵀ C⁻¹ r = |L⁻¹ r|²``: residuals
and Jacobian columns are whitened by the Cholesky factor of the covariance and the problem
becomes an ordinary (unit-variance, uncorrelated) one. `Whitener` factors the covariance once
as cheaply as its structure allows:

* **banded** when its correlations vanish beyond a short lag (below ``band_tolerance`` in
  ``|ρ|``, or exactly zero when that is 0) and that band is narrower than ``band_fraction``
  of its size: ``O(n·b²)`` time and ``O(n·b)`` memory instead of ``O(n³)`` and ``O(n²)``;
* **full** (dense Cholesky) otherwise, or when the truncated band is not positive definite;
* **diagonal** (``1/err``) when no covariance is given or it is not to be used, and as the
  fallback, with a warning, when the covariance has NaN or infinite entries or is not
  positive definite: the fit stays meaningful, its errors ignore the correlations.
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import NDArray
from scipy.linalg import LinAlgError, cholesky, cholesky_banded, solve_banded, solve_triangular

__all__ = ["Whitener"]

log = logging.getLogger(__name__)


class Whitener:
    """``X ↦ L⁻¹ X`` for a covariance ``L Lᵀ`` (dense, banded or diagonal; see the module).

    Parameters
    ----------
    cov : numpy.ndarray or None
        Covariance of the data (n × n); None: the diagonal ``err²``.
    err : numpy.ndarray
        One-sigma errors of the data (the diagonal fallback).
    use_covariance : bool
        Whiten with ``cov`` (False: with ``err`` only).
    band_fraction : float
        A band narrower than this fraction of ``n`` is factored as a band matrix; 0: always
        dense.
    source : str
        Name of the data in the warning.
    band_tolerance : float
        Correlations ``|ρ_ij|`` below this beyond the last lag that has one above it are
        neglected (0: only exact zeros).

    Attributes
    ----------
    label : str
        ``full``, ``banded (lag <= b...)``, ``diagonal`` or ``diagonal (reason)``.
    """

    def __init__(self, cov: NDArray[np.float64] | None, err: NDArray[np.float64],
                 use_covariance: bool = True, band_fraction: float = 0.0,
                 source: str = "data", band_tolerance: float = 0.0) -> None:
        self._inv: NDArray[np.float64] | None = None
        self._band: tuple[int, NDArray[np.float64]] | None = None
        self._chol: NDArray[np.float64] | None = None
        self.label = "diagonal"
        if cov is None or not use_covariance:
            self._inv = 1.0 / err
            return
        reason = None
        if not np.all(np.isfinite(cov)):
            reason = "covariance has NaN or infinite entries"
        else:
            if band_fraction > 0:
                self._band = _banded_factor(cov, band_fraction, band_tolerance)
            if self._band is not None:
                bw = self._band[0]
                self.label = (f"banded (lag <= {bw}; |ρ| < {band_tolerance:g} beyond "
                              "neglected)" if band_tolerance > 0 else f"banded (lag <= {bw})")
            else:
                try:
                    self._chol = cholesky(cov, lower=True, check_finite=False)
                    self.label = "full"
                except LinAlgError:
                    reason = "covariance is not positive definite"
        if reason is not None:
            log.warning("%s: %s: weighting with flux_err² only", source, reason)
            self.label = f"diagonal ({reason})"
            self._inv = 1.0 / err

    def __call__(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """``L⁻¹ x`` for a vector or each column of a matrix."""
        if self._inv is not None:
            return x * (self._inv if x.ndim == 1 else self._inv[:, None])
        if self._band is not None:
            bw, ab = self._band
            return solve_banded((bw, 0), ab, x, check_finite=False)
        return solve_triangular(self._chol, x, lower=True, check_finite=False)


def _banded_factor(cov: NDArray[np.float64], band_fraction: float, band_tolerance: float
                   ) -> tuple[int, NDArray[np.float64]] | None:
    """Band width and lower banded Cholesky factor of ``cov`` truncated beyond its band, or
    None when the band is too wide or the truncated matrix is not positive definite."""
    n = cov.shape[0]
    d = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    if band_tolerance > 0 and np.all(d > 0):
        bw = _bandwidth(np.abs(cov) >= band_tolerance * np.outer(d, d))
    else:
        bw = _bandwidth(cov != 0)
    if not bw < band_fraction * n:
        return None
    lower = np.zeros((bw + 1, n))
    for lag in range(bw + 1):  # loop over the band's diagonals
        lower[lag, : n - lag] = np.diagonal(cov, -lag)
    try:
        return bw, cholesky_banded(lower, lower=True, check_finite=False)
    except LinAlgError:
        return None


def _bandwidth(nz: NDArray[np.bool_]) -> int:
    """Largest ``|i − j|`` with ``nz[i, j]`` true (row by row, without index arrays)."""
    n = nz.shape[0]
    has = nz.any(axis=1)
    if not has.any():
        return 0
    rows = np.arange(n)
    first = np.argmax(nz, axis=1)
    last = n - 1 - np.argmax(nz[:, ::-1], axis=1)
    return int(max(np.max((rows - first)[has]), np.max((last - rows)[has])))
