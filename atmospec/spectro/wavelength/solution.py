"""The dispersion law with its two free parameters, and their fit on feature positions.

The wavelength of a sample at distance ``u`` from the measured zeroth order along the
dispersion axis is

    λ(u) = law(u − s; D)

(`atmospec.spectro.dispersers.Disperser.wavelength_nm`), with D the disperser–CCD distance
and s the shift of the true zeroth order along the axis (Spectractor's ``PIXSHIFT``). The
law's offsets are proportional to D (``u = D (tan θ − tan θ₀) / pixel``), so features
measured at positions ``u_i`` with tabulated wavelengths λ_i obey ``u_i = D g(λ_i) + s``
with ``g`` the offset for D = 1 mm: at fixed positions the model is linear in (D, s).
`fit_distance_and_shift` solves it by weighted least squares with a Gaussian prior on D;
`reject_outliers` drops, one at a time, the feature a leave-one-out fit predicts worst.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from atmospec.spectro.dispersers import Disperser

__all__ = [
    "DispersionLaw",
    "PositionFit",
    "WavelengthSolution",
    "fit_distance_and_shift",
    "reject_outliers",
    "wavelength_solution",
]


@dataclass(frozen=True, eq=False)
class DispersionLaw:
    """The dispersion law of one spectrum, with D2CCD and the pixel shift left free."""

    disperser: Disperser
    """The disperser (its groove density at ``at``)."""
    pixel_mm: float
    """Pixel pitch of the distances, mm (binned if the image is)."""
    theta0: float
    """Zeroth order's field angle along the dispersion axis, radians (held fixed)."""
    order: int = 1
    """Diffraction order of the spectrum."""
    at: tuple[float, float] | None = None
    """Zeroth-order position where the groove map is read (None: the nominal N)."""
    binning: int = 1
    """Binning of ``at``."""

    def wavelength_nm(self, distance_px: np.ndarray | float, d2ccd_mm: float,
                      shift_px: np.ndarray | float = 0.0) -> np.ndarray:
        """λ (nm) at distances ``u`` from the measured zeroth order: ``law(u − s; D)``."""
        return self.disperser.wavelength_nm(distance_px - shift_px, self.order, d2ccd_mm,
                                            self.pixel_mm, self.theta0, at=self.at,
                                            binning=self.binning)

    def unit_offset_px(self, wavelength_nm: np.ndarray | float,
                       order: int | None = None) -> np.ndarray:
        """``g(λ)``: the distance from the zeroth order where λ lands for D = 1 mm, pixels,
        in the spectrum's order or in ``order`` (the law is ``u = D g(λ) + s`` in every
        order: a line's second-order image calibrates like a line)."""
        return self.disperser.offset_px(wavelength_nm, self.order if order is None else order,
                                        1.0, self.pixel_mm, self.theta0, at=self.at,
                                        binning=self.binning)


@dataclass(frozen=True, eq=False)
class PositionFit:
    """Weighted least-squares fit of ``u_i = D g_i + s`` with a Gaussian prior on D."""

    params: np.ndarray
    """``(D mm, s px)``."""
    covariance: np.ndarray
    """Their 2×2 covariance (not scaled by the χ²)."""
    chisq: float
    """χ² of the fit, prior term included."""


def fit_distance_and_shift(g: np.ndarray, positions_px: np.ndarray, sigma_px: np.ndarray,
                           d2ccd_prior_mm: float, d2ccd_sigma_mm: float) -> PositionFit:
    """Fit ``u_i = D g_i + s`` to feature positions, with the prior ``D ~ N(d0, σ_D)``.

    Parameters
    ----------
    g : numpy.ndarray
        `DispersionLaw.unit_offset_px` of the features' tabulated wavelengths.
    positions_px : numpy.ndarray
        Measured distances ``u_i`` of the features from the zeroth order, pixels.
    sigma_px : numpy.ndarray
        Their one-sigma errors, pixels.
    d2ccd_prior_mm, d2ccd_sigma_mm : float
        The Gaussian prior on D, mm.

    Returns
    -------
    PositionFit
    """
    a = np.column_stack([g, np.ones_like(g)]) / sigma_px[:, None]
    b = positions_px / sigma_px
    a = np.vstack([a, [1.0 / d2ccd_sigma_mm, 0.0]])
    b = np.append(b, d2ccd_prior_mm / d2ccd_sigma_mm)
    cov = np.linalg.inv(a.T @ a)
    theta = cov @ (a.T @ b)
    return PositionFit(params=theta, covariance=cov, chisq=float(np.sum((b - a @ theta) ** 2)))


def reject_outliers(g: np.ndarray, positions_px: np.ndarray, sigma_px: np.ndarray,
                    d2ccd_prior_mm: float, d2ccd_sigma_mm: float, clip_sigma: float,
                    min_kept: int) -> np.ndarray:
    """Leave-one-out rejection of features that the others do not predict.

    Each feature in turn is left out, the others fitted (`fit_distance_and_shift`) and the
    feature's distance from that prediction measured in standard deviations (its own error,
    the prediction's, both scaled by the reduced χ² of the fit when above 1); the worst one
    beyond ``clip_sigma`` is dropped and the search repeated, until none is or ``min_kept``
    (at least 2) features remain.

    Parameters
    ----------
    g, positions_px, sigma_px : numpy.ndarray
        As `fit_distance_and_shift`.
    d2ccd_prior_mm, d2ccd_sigma_mm : float
        The Gaussian prior on D, mm.
    clip_sigma : float
        Rejection threshold, standard deviations.
    min_kept : int
        Fewest features kept.

    Returns
    -------
    numpy.ndarray
        Boolean mask of the features kept.
    """
    used = np.ones(g.size, dtype=bool)
    while used.sum() > max(min_kept, 2):
        worst, worst_z = -1, 0.0
        for i in np.flatnonzero(used):
            keep = used.copy()
            keep[i] = False
            fit = fit_distance_and_shift(g[keep], positions_px[keep], sigma_px[keep],
                                         d2ccd_prior_mm, d2ccd_sigma_mm)
            dof = int(keep.sum()) - 1
            scale = max(1.0, fit.chisq / dof) if dof > 0 else 1.0
            jac = np.array([g[i], 1.0])
            var = scale * (sigma_px[i] ** 2 + float(jac @ fit.covariance @ jac))
            z = abs(positions_px[i] - (fit.params[0] * g[i] + fit.params[1])) / np.sqrt(var)
            if z > worst_z:
                worst, worst_z = i, z
        if worst_z <= clip_sigma:
            break
        used[worst] = False
    return used


@dataclass(frozen=True, eq=False)
class WavelengthSolution:
    """A dispersion solution fitted on spectral features (`wavelength_solution`)."""

    d2ccd_mm: float
    """Fitted disperser–CCD distance, mm."""
    d2ccd_err_mm: float
    """Its one-sigma error, mm."""
    pixel_shift: float
    """Fitted shift s of the zeroth order along the dispersion axis, pixels (λ = law(u − s))."""
    pixel_shift_err: float
    """Its one-sigma error, pixels."""
    covariance: np.ndarray
    """2×2 covariance of (D2CCD mm, shift px), scaled by the reduced χ² when > 1."""
    wavelength_nm: np.ndarray
    """Calibrated wavelength at each input distance, nm."""
    wavelength_err_nm: np.ndarray
    """Its one-sigma error from the covariance, nm."""
    lines: Table
    """The features measured (``LINES`` columns) plus ``Pixel`` (distance of the measured
    position), ``Residual`` (Detected − Tabulated after the fit, nm), ``Pull`` (position
    residual / error) and ``Used`` (kept by the outlier rejection)."""
    chisq: float
    """χ² of the final fit (features used + prior term)."""
    ndof: int
    """Degrees of freedom: features used + 1 (prior) − 2."""
    n_lines: int
    """Number of features used."""
    method: str = "template"
    """What the solution was fitted on: ``template`` (features against the expected
    spectrum), ``emission`` or ``absorption`` (the lines the spectrum shows,
    `atmospec.spectro.wavelength.identify`); written as ``WAVEMETH``."""

    @property
    def chisq_reduced(self) -> float:
        """χ² per degree of freedom (NaN without degrees of freedom)."""
        return self.chisq / self.ndof if self.ndof > 0 else float("nan")


def wavelength_solution(law: DispersionLaw, distance_px: np.ndarray, fit: PositionFit,
                        features: Table, positions_px: np.ndarray, g: np.ndarray,
                        sigma_px: np.ndarray, err_nm: np.ndarray, used: np.ndarray
                        ) -> WavelengthSolution:
    """The `WavelengthSolution` of a fit on the features kept (``used``).

    The covariance is scaled by the reduced χ² when it exceeds 1; the wavelength errors come
    from it through numerical derivatives of the law in (D, s).

    Parameters
    ----------
    law : DispersionLaw
        The law fitted.
    distance_px : numpy.ndarray
        Distances of the spectrum's samples, pixels.
    fit : PositionFit
        `fit_distance_and_shift` on the features kept.
    features : astropy.table.Table
        The features measured (``LINES`` columns).
    positions_px, g, sigma_px : numpy.ndarray
        Their positions, unit offsets and position errors (pixels).
    err_nm : numpy.ndarray
        Their position errors in nm (written as ``Err``).
    used : numpy.ndarray
        Boolean mask of the features kept.

    Returns
    -------
    WavelengthSolution
    """
    d, s = float(fit.params[0]), float(fit.params[1])
    ndof = int(used.sum()) - 1
    cov = fit.covariance
    if ndof > 0 and fit.chisq / ndof > 1.0:
        cov = cov * (fit.chisq / ndof)
    u = distance_px
    wl = law.wavelength_nm(u, d, s)
    dd = 1e-3
    jd = (law.wavelength_nm(u, d + dd, s) - law.wavelength_nm(u, d - dd, s)) / (2 * dd)
    js = law.wavelength_nm(u, d, s + 0.5) - law.wavelength_nm(u, d, s - 0.5)
    wl_err = np.sqrt(jd ** 2 * cov[0, 0] + 2 * jd * js * cov[0, 1] + js ** 2 * cov[1, 1])
    detected = law.wavelength_nm(positions_px, d, s)
    table = features.copy()
    table["Detected"] = detected
    table["Shift"] = detected - np.asarray(features["Tabulated"])
    table["Err"] = err_nm
    table["Pixel"] = positions_px
    table["Residual"] = table["Shift"]
    table["Pull"] = (positions_px - (d * g + s)) / sigma_px
    table["Used"] = used
    for col in ("Detected", "Shift", "Err", "Residual"):
        table[col].unit = "nm"
    table["Pixel"].unit = "pix"
    return WavelengthSolution(
        d2ccd_mm=d, d2ccd_err_mm=float(np.sqrt(cov[0, 0])), pixel_shift=s,
        pixel_shift_err=float(np.sqrt(cov[1, 1])), covariance=cov, wavelength_nm=wl,
        wavelength_err_nm=wl_err, lines=table, chisq=fit.chisq, ndof=ndof,
        n_lines=int(used.sum()))
