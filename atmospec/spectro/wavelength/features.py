"""Each spectral feature's position against the template, and the dispersion solution fitted
on those positions.

`measure_feature_shifts` fits, window by window, the template's own shape of a feature (a
blend such as O₂ A, a band such as H₂O, a Balmer line with its wings, at the instrument's
resolution) moved by δ to the data; `calibrate_on_features` turns the shifts into detector
positions and fits (D2CCD, pixel shift) on them with a prior on D and outlier rejection
(`atmospec.spectro.wavelength.solution`), starting from the coarse search
(`atmospec.spectro.wavelength.template`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from astropy import units as u
from astropy.table import Table

from atmospec.spectro.wavelength.lines import Line
from atmospec.spectro.wavelength.solution import (
    DispersionLaw,
    WavelengthSolution,
    fit_distance_and_shift,
    reject_outliers,
    wavelength_solution,
)

__all__ = ["CHISQ_UNIT", "LINE_COLUMNS", "FeatureFitConfig", "calibrate_on_features",
           "measure_feature_shifts"]

#: Columns of Spectractor's ``LINES`` table, in its order.
LINE_COLUMNS = ("Line", "Tabulated", "Detected", "Shift", "Err", "FWHM", "Amplitude", "SNR",
                "Chisq", "Name")
#: Spectractor's unit of ``Chisq``, not a FITS unit: given as astropy's unrecognised unit,
#: which the string would be parsed into (each parse of it costs ~4 ms, mostly the search
#: for a "did you mean").
CHISQ_UNIT = u.UnrecognizedUnit("reduced")


@dataclass(frozen=True)
class FeatureFitConfig:
    """How `measure_feature_shifts` and `calibrate_on_features` work."""

    half_window_nm: float = 15.0
    """Half-width of the window fitted around each feature, nm (at least 4 resolution
    elements are used when the resolution is coarser)."""
    max_shift_nm: float = 4.0
    """Shifts scanned, ± nm."""
    step_nm: float = 0.05
    """Scan step, nm (the minimum is then refined on a parabola)."""
    min_depth_snr: float = 5.0
    """A feature counts only when its template contrast over the window, measured in the
    data's errors, exceeds this (a feature the data cannot see gives no position)."""
    clip_sigma: float = 4.0
    """Leave-one-out rejection of features in the (D2CCD, shift) fit, in standard
    deviations."""
    min_features: int = 2
    """Fewest features kept."""
    iterations: int = 3
    """Measure-and-fit iterations."""
    err_floor_nm: float = 0.05
    """Added in quadrature to each feature's position error, nm (template systematics)."""


def _shift_scan(x: np.ndarray, y: np.ndarray, w: np.ndarray, lam0: float,
                shifted_template: np.ndarray) -> np.ndarray | None:
    """χ² of ``(a + b (λ − λ₀)) · T(λ − δ)`` for each shift δ (rows of ``shifted_template``),
    the continuum ``a, b`` solved exactly; None if a system is singular."""
    t = shifted_template
    design = np.stack([t, t * (x - lam0)], axis=2) * w[None, :, None]
    normal = np.einsum("snp,snq->spq", design, design)
    rhs = np.einsum("snp,n->sp", design, y * w)
    try:
        theta = np.linalg.solve(normal, rhs[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return None
    return np.sum((y * w - np.einsum("snp,sp->sn", design, theta)) ** 2, axis=1)


def _measure_one(wl: np.ndarray, fl: np.ndarray, er: np.ndarray, tl: np.ndarray,
                 tf: np.ndarray, line: Line, half: float, shifts: np.ndarray,
                 resolution_fwhm_nm: float, config: FeatureFitConfig) -> tuple | None:
    """One feature's ``LINES`` row, or None when it is not measured."""
    lam0 = line.wavelength_nm
    sel = ((np.abs(wl - lam0) <= half) & np.isfinite(fl) & np.isfinite(er) & (er > 0))
    if sel.sum() < 8 or not (wl[0] <= lam0 - half and lam0 + half <= wl[-1]):
        return None
    x, y, w = wl[sel], fl[sel], 1.0 / er[sel]
    t = np.interp(x[None, :] - shifts[:, None], tl, tf)          # (n_shift, n)
    chi2 = _shift_scan(x, y, w, lam0, t)
    if chi2 is None:
        return None
    k = int(np.argmin(chi2))
    if k == 0 or k == shifts.size - 1:
        return None  # minimum at the scan's edge: not found
    c0, c1, c2 = chi2[k - 1], chi2[k], chi2[k + 1]
    curv = (c0 - 2 * c1 + c2) / config.step_nm**2
    if not curv > 0:
        return None
    delta = shifts[k] - 0.5 * (c2 - c0) / config.step_nm / curv
    dof = max(x.size - 3, 1)
    chi2_red = float(c1 / dof)
    err = math.sqrt(2.0 / curv * max(chi2_red, 1.0))
    # How visible the feature is: its template contrast against the data's errors.
    tk = t[k] / np.mean(t[k])
    contrast = float(np.sqrt(np.sum(((tk - np.polyval(np.polyfit(x, tk, 1), x))
                                      * y * w) ** 2)))
    if contrast < config.min_depth_snr:
        return None
    return (line.label or line.name, lam0, lam0 + delta, delta, err, resolution_fwhm_nm,
            float(np.ptp(tk)), contrast, chi2_red, line.name)


def measure_feature_shifts(wavelength_nm: np.ndarray, flux: np.ndarray, flux_err: np.ndarray,
                           template_wavelength_nm: np.ndarray, template_flux: np.ndarray,
                           features: Sequence[Line], resolution_fwhm_nm: float,
                           config: FeatureFitConfig = FeatureFitConfig()) -> Table:
    """Shift of each feature between the data and the template, window by window.

    Around each feature the data are fitted with ``(a + b (λ − λ₀)) · T(λ − δ)``: the
    template's own shape moved by δ, times a local linear continuum solved exactly; δ is
    scanned, the χ² minimum refined on a parabola and its error taken from the curvature
    (Δχ² = 1), scaled by the window's reduced χ² when above 1. The feature's catalogue
    wavelength only names the window: no tabulated centre enters the answer.

    Parameters
    ----------
    wavelength_nm, flux, flux_err : numpy.ndarray
        The spectrum on its current wavelength scale.
    template_wavelength_nm, template_flux : numpy.ndarray
        Expected spectrum (`atmospec.spectro.wavelength.calibration.absorption_template`) on
        a regular grid.
    features : sequence of Line
        Windows to fit (their wavelength on the template's scale).
    resolution_fwhm_nm : float
        Resolution, nm (sets the smallest window).
    config : FeatureFitConfig
        Settings.

    Returns
    -------
    astropy.table.Table
        ``LINES`` columns for the features measured: ``Tabulated`` (catalogue), ``Detected``
        (``Tabulated`` + δ: where the template's feature sits in the data), ``Shift`` (δ),
        ``Err``, ``FWHM`` (the resolution), ``Amplitude`` (template contrast in the window,
        relative), ``SNR`` (that contrast over the data's errors), ``Chisq``.
    """
    wl = np.asarray(wavelength_nm, dtype=np.float64)
    order = np.argsort(wl)
    wl = wl[order]
    fl = np.asarray(flux, dtype=np.float64)[order]
    er = np.asarray(flux_err, dtype=np.float64)[order]
    tl = np.asarray(template_wavelength_nm, dtype=np.float64)
    tf = np.asarray(template_flux, dtype=np.float64)
    half = max(config.half_window_nm, 4.0 * resolution_fwhm_nm)
    shifts = np.arange(-config.max_shift_nm, config.max_shift_nm + 0.5 * config.step_nm,
                       config.step_nm)
    rows = [row for line in features
            if (row := _measure_one(wl, fl, er, tl, tf, line, half, shifts,
                                    resolution_fwhm_nm, config)) is not None]
    table = Table(rows=rows or None, names=LINE_COLUMNS,
                  dtype=(str, float, float, float, float, float, float, float, float, str))
    for col in ("Tabulated", "Detected", "Shift", "Err", "FWHM"):
        table[col].unit = "nm"
    table["Chisq"].unit = CHISQ_UNIT
    return table


def calibrate_on_features(law: DispersionLaw, distance_px: np.ndarray, flux: np.ndarray,
                          flux_err: np.ndarray, d2ccd_prior_mm: float, d2ccd_sigma_mm: float,
                          template_wavelength_nm: np.ndarray, template_flux: np.ndarray,
                          features: Sequence[Line], resolution_fwhm_nm: float,
                          start: tuple[float, float],
                          config: FeatureFitConfig = FeatureFitConfig()) -> WavelengthSolution:
    """Fit (D2CCD, pixel shift) on the positions of spectral features found by template.

    Iterates: wavelengths from the law with the current (D, s); each feature's shift δ
    against the template (`measure_feature_shifts`); its detector position ``u_i`` from the
    law at ``λ_i + δ_i``; then ``u_i = D g(λ_i) + s`` fitted by weighted least squares with
    the Gaussian prior on D after leave-one-out rejection (a feature the template describes
    badly — a PWV far from the template's, a peculiar star — is dropped, not averaged in).
    Errors come from the fit covariance scaled by the reduced χ² when above 1.

    Parameters
    ----------
    law : DispersionLaw
        The spectrum's dispersion law.
    distance_px, flux, flux_err : numpy.ndarray
        Distance of each sample from the zeroth order along the dispersion axis (pixels),
        and the spectrum there.
    d2ccd_prior_mm, d2ccd_sigma_mm : float
        Gaussian prior on D, mm.
    template_wavelength_nm, template_flux : numpy.ndarray
        Expected spectrum (`atmospec.spectro.wavelength.calibration.absorption_template`).
    features : sequence of Line
        Feature windows (e.g. `atmospec.spectro.wavelength.lines.CALIBRATION_FEATURES` in
        vacuum).
    resolution_fwhm_nm : float
        Resolution, nm.
    start : tuple of float
        Starting (D mm, shift px), e.g. `template_dispersion_solution`'s.
    config : FeatureFitConfig
        Settings.

    Returns
    -------
    WavelengthSolution
        ``lines`` holds the features with ``Pixel``, ``Residual``, ``Pull`` and ``Used``.

    Raises
    ------
    ValueError
        If fewer than ``config.min_features`` features are measured.
    """
    u = np.asarray(distance_px, dtype=np.float64)
    prior = float(d2ccd_prior_mm)
    d, s = float(start[0]), float(start[1])
    for _ in range(max(config.iterations, 1)):
        det = measure_feature_shifts(law.wavelength_nm(u, d, s), flux, flux_err,
                                     template_wavelength_nm, template_flux, features,
                                     resolution_fwhm_nm, config)
        if len(det) < config.min_features:
            raise ValueError(f"wavelength calibration: {len(det)} feature(s) measured, "
                             f"{config.min_features} needed")
        p = law.unit_offset_px(np.asarray(det["Detected"], dtype=np.float64)) * d + s
        dldu = np.abs(law.wavelength_nm(p + 0.5, d, s) - law.wavelength_nm(p - 0.5, d, s))
        err_nm = np.hypot(np.asarray(det["Err"], dtype=np.float64), config.err_floor_nm)
        sig = err_nm / dldu
        g = law.unit_offset_px(np.asarray(det["Tabulated"], dtype=np.float64))
        used = reject_outliers(g, p, sig, prior, d2ccd_sigma_mm, config.clip_sigma,
                               config.min_features)
        fit = fit_distance_and_shift(g[used], p[used], sig[used], prior, d2ccd_sigma_mm)
        d, s = float(fit.params[0]), float(fit.params[1])
    return wavelength_solution(law, u, fit, det, p, g, sig, err_nm, used)
