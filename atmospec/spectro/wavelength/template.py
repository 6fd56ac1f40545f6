"""The coarse search of the dispersion solution: the whole spectrum against a template.

`template_dispersion_solution` finds the pair (D2CCD, pixel shift) that puts the features of
the expected spectrum (`atmospec.spectro.wavelength.calibration.absorption_template`: SED ×
atmosphere at the resolution) where the spectrum has them. Every feature is used at once
with its real shape (blends such as the O₂ A doublet or the H₂O band have no single
tabulated centre, which limits a line-by-line fit to ~0.3 nm), on a grid (a start from the
prior alone can lock onto the wrong dips: a 0.8 mm error of D on the CTIO bench moves the
lines by 10 nm) refined on the local quadratic of χ². It gives the start of the fit on
features (`atmospec.spectro.wavelength.features`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter1d

from atmospec.spectro.wavelength.solution import DispersionLaw

__all__ = ["CoarseSearchConfig", "TemplateSolution", "template_dispersion_solution"]


@dataclass(frozen=True)
class CoarseSearchConfig:
    """How `template_dispersion_solution` scans the disperser distance and the pixel shift."""

    n_sigma: float = 3.0
    """Half-range of the D2CCD scan, in prior standard deviations."""
    shift_range_px: float = 10.0
    """Half-range of the pixel-shift scan, pixels."""
    coarse_step_px: float = 2.0
    """Grid step of the first scan, expressed as the largest position change it causes."""
    fine_step_px: float = 0.25
    """Grid step of the second scan around the best coarse node, pixels."""
    smooth_nm: float = 20.0
    """Scale of the continuum removed before correlating (Gaussian σ), nm: wider than the
    features (O₂ A, Balmer cores), narrower than the SED and throughput shapes."""
    min_snr: float = 5.0
    """Samples with a lower flux signal-to-noise ratio are ignored."""
    wavelength_range_nm: tuple[float, float] = (350.0, 1100.0)
    """Only samples whose prior wavelength lies in this range are matched."""
    shift_prior_sigma_px: float | None = None
    """Width of a Gaussian prior on the pixel shift (the measured zeroth order is where the
    law starts, to its centroid error and ADR), pixels; None: no prior."""
    min_match_snr: float = 8.0
    """Significance the template's features must reach in the spectrum at the solution (their
    fitted amplitude over its error, scaled by √(χ²/ndof) when above 1); below it the
    spectrum shows no feature and the search fails. The best of the grid on pure noise
    reaches ~5."""


def _smooth(values: np.ndarray, sigma_px: float) -> np.ndarray:
    """Near-Gaussian smoothing of width ``sigma_px`` along the last axis: three box filters
    (running means, whose cost does not grow with the width, unlike a 8σ Gaussian kernel
    of hundreds of taps); data and template go through the same filter, so its exact shape
    does not matter."""
    width = max(round(math.sqrt(4.0 * sigma_px**2 + 1.0)), 1)
    out = values
    for _ in range(3):
        out = uniform_filter1d(out, width, axis=-1, mode="nearest")
    return out


def _highpass(values: np.ndarray, weight: np.ndarray, sigma_px: float) -> np.ndarray:
    """``v / smooth(v) − 1`` along the last axis, smoothing with weights (normalised
    convolution) so masked samples do not drag the continuum."""
    num = _smooth(values * weight, sigma_px)
    den = _smooth(weight, sigma_px)
    with np.errstate(invalid="ignore", divide="ignore"):
        cont = num / den
        return values / cont - 1.0


@dataclass(frozen=True, eq=False)
class TemplateSolution:
    """Result of `template_dispersion_solution`."""

    d2ccd_mm: float
    """Disperser–CCD distance, mm."""
    pixel_shift: float
    """Zeroth-order shift along the dispersion axis, pixels (``λ = law(u − shift; D)``)."""
    covariance: np.ndarray
    """2×2 covariance of (D mm, shift px) from the curvature of χ², scaled by the reduced
    χ² of the feature match when above 1."""
    chisq_reduced: float
    """χ² per degree of freedom of the continuum-normalised data against the scaled
    template features at the solution."""
    amplitude: float
    """Scale of the template's features that fits the data's (1: as deep as expected)."""
    n_samples: int
    """Samples used."""

    @property
    def d2ccd_err_mm(self) -> float:
        """One-sigma error of ``d2ccd_mm``."""
        return float(np.sqrt(self.covariance[0, 0]))

    @property
    def pixel_shift_err(self) -> float:
        """One-sigma error of ``pixel_shift``."""
        return float(np.sqrt(self.covariance[1, 1]))


@dataclass(frozen=True, eq=False)
class _Match:
    """The continuum-normalised spectrum and how the template is compared with it."""

    law: DispersionLaw
    """The spectrum's dispersion law."""
    distance_px: np.ndarray
    """Distances of the samples from the zeroth order, pixels."""
    usable: np.ndarray
    """Samples matched (finite, bright enough, in the wavelength range)."""
    features: np.ndarray
    """The data's features: flux over its smoothed continuum, minus 1 (0 where unused)."""
    weight: np.ndarray
    """Inverse variance of ``features``."""
    sigma_px: float
    """Width of the continuum smoothing, pixels."""
    template_wavelength_nm: np.ndarray
    """Grid of the expected spectrum, nm."""
    template_flux: np.ndarray
    """The expected spectrum on it."""
    d2ccd_prior_mm: float
    """Centre of the Gaussian prior on D2CCD, mm."""
    d2ccd_sigma_mm: float
    """Its width, mm."""
    shift_prior_sigma_px: float | None
    """Width of the prior on the shift, pixels (None: none)."""

    def template_features(self, d2ccd_mm: float, shifts_px: np.ndarray) -> np.ndarray:
        """The template's features under the law (D, each shift), one row per shift."""
        lam = self.law.wavelength_nm(self.distance_px[None, :], float(d2ccd_mm),
                                     shifts_px[:, None])
        m = np.interp(lam, self.template_wavelength_nm, self.template_flux, left=np.nan,
                      right=np.nan)
        # The same samples as the data's continuum: a feature-free edge (the blue cut-off)
        # must be normalised identically on both sides, or it pulls the scale.
        valid = np.isfinite(m) & self.usable[None, :]
        hm = _highpass(np.where(valid, m, 0.0), valid.astype(float), self.sigma_px)
        return np.where(valid & np.isfinite(hm), hm, 0.0)

    def scores(self, d2ccd_mm: np.ndarray, shifts_px: np.ndarray) -> np.ndarray:
        """χ² improvement of the best-scaled template over no features, minus the priors,
        on the grid ``d2ccd_mm × shifts_px``."""
        w, hd = self.weight, self.features
        out = np.empty((d2ccd_mm.size, shifts_px.size))
        for k, d in enumerate(d2ccd_mm):
            hm = self.template_features(float(d), shifts_px)
            num = np.sum(w * hd * hm, axis=1)
            den = np.sum(w * hm * hm, axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                gain = np.where((num > 0) & (den > 0), num**2 / den, 0.0)
            out[k] = gain - ((d - self.d2ccd_prior_mm) / self.d2ccd_sigma_mm) ** 2
            if self.shift_prior_sigma_px:
                out[k] -= (shifts_px / self.shift_prior_sigma_px) ** 2
        return out


def _match(law: DispersionLaw, distance_px: np.ndarray, flux: np.ndarray,
           flux_err: np.ndarray, template_wavelength_nm: np.ndarray,
           template_flux: np.ndarray, d2ccd_prior_mm: float, d2ccd_sigma_mm: float,
           config: CoarseSearchConfig) -> _Match:
    """The data side of the comparison: usable samples, their features and weights."""
    u = np.asarray(distance_px, dtype=np.float64)
    f = np.asarray(flux, dtype=np.float64)
    e = np.asarray(flux_err, dtype=np.float64)
    ok = np.isfinite(u) & np.isfinite(f) & np.isfinite(e) & (e > 0)
    ok &= np.where(ok, f, 0.0) > config.min_snr * np.where(ok, e, np.inf)
    if ok.sum() < 50:
        raise ValueError(f"wavelength search: {ok.sum()} usable samples, at least 50 needed")
    lam0 = law.wavelength_nm(u, d2ccd_prior_mm)
    lo, hi = config.wavelength_range_nm
    ok &= (lam0 >= lo) & (lam0 <= hi)
    dldu = float(np.nanmedian(np.abs(np.gradient(lam0, u))))
    sigma_px = config.smooth_nm / dldu
    fz = np.where(ok, f, 0.0)
    hd = _highpass(fz, np.where(ok, 1.0, 0.0), sigma_px)
    with np.errstate(invalid="ignore", divide="ignore"):
        cont = fz / (hd + 1.0)
        w = np.where(ok & np.isfinite(hd), (cont / e) ** 2, 0.0)
    return _Match(law=law, distance_px=u, usable=ok, features=np.where(w > 0, hd, 0.0),
                  weight=w, sigma_px=sigma_px,
                  template_wavelength_nm=np.asarray(template_wavelength_nm, dtype=np.float64),
                  template_flux=np.asarray(template_flux, dtype=np.float64),
                  d2ccd_prior_mm=d2ccd_prior_mm, d2ccd_sigma_mm=d2ccd_sigma_mm,
                  shift_prior_sigma_px=config.shift_prior_sigma_px)


def _grid(centre: float, half: float, step: float) -> np.ndarray:
    n = max(math.ceil(half / step), 1)
    return centre + step * np.arange(-n, n + 1)


def _quadratic_peak(scores: np.ndarray, k: int, j: int, steps: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Newton step (in grid steps) to the maximum of the local quadratic of the score on the
    3×3 nodes around ``(k, j)``, and the covariance of the two parameters from its
    curvature (score = const − χ², so the χ² Hessian is minus the score's)."""
    z = scores[k - 1:k + 2, j - 1:j + 2]
    gx = (z[2, 1] - z[0, 1]) / 2.0
    gy = (z[1, 2] - z[1, 0]) / 2.0
    hxx = z[2, 1] - 2 * z[1, 1] + z[0, 1]
    hyy = z[1, 2] - 2 * z[1, 1] + z[1, 0]
    hxy = (z[2, 2] - z[2, 0] - z[0, 2] + z[0, 0]) / 4.0
    hess = np.array([[hxx, hxy], [hxy, hyy]])
    try:
        delta = -np.linalg.solve(hess, [gx, gy])
        # Only a step inside the 3×3 patch of a true maximum is trusted.
        if not (np.all(np.linalg.eigvalsh(hess) < 0) and np.all(np.abs(delta) <= 1.0)):
            delta = np.zeros(2)
        cov = 2.0 * np.linalg.inv(-hess) / np.outer(1.0 / steps, 1.0 / steps)
    except np.linalg.LinAlgError:
        delta = np.zeros(2)
        cov = np.full((2, 2), np.nan)
    return delta, cov


def template_dispersion_solution(
    law: DispersionLaw,
    distance_px: np.ndarray,
    flux: np.ndarray,
    flux_err: np.ndarray,
    template_wavelength_nm: np.ndarray,
    template_flux: np.ndarray,
    d2ccd_prior_mm: float,
    d2ccd_sigma_mm: float,
    config: CoarseSearchConfig = CoarseSearchConfig(),
) -> TemplateSolution:
    """Fit (D2CCD, pixel shift) by matching the spectrum's features to a physical template.

    Every feature is used at once, with its real shape at the instrument's resolution. The
    continuum-normalised data ``d`` (flux over its weighted smoothing, minus 1) are compared
    with the continuum-normalised template ``m`` evaluated at ``λ = law(u − s; D)``; the
    template's features are scaled by the amplitude ``a ≥ 0`` that fits best, so the score
    ``(Σ w d m)² / Σ w m²`` is the χ² improvement over no features, minus the Gaussian prior
    on D. The pair is found on a grid (steps moving the positions by ``coarse_step_px``,
    then ``fine_step_px`` around the best node) and refined by a Newton step on the local
    quadratic of χ², whose curvature gives the covariance.

    Parameters
    ----------
    law : DispersionLaw
        Maps distance to wavelength for a (D, shift).
    distance_px : numpy.ndarray
        Distance of each sample from the zeroth order along the dispersion axis, pixels,
        one per detector pixel (monotonic).
    flux, flux_err : numpy.ndarray
        The spectrum and its errors at those samples.
    template_wavelength_nm, template_flux : numpy.ndarray
        Template (`atmospec.spectro.wavelength.calibration.absorption_template`) on a
        regular grid covering the spectrum.
    d2ccd_prior_mm, d2ccd_sigma_mm : float
        Prior disperser–CCD distance and its standard deviation, mm.
    config : CoarseSearchConfig
        Grid settings.

    Returns
    -------
    TemplateSolution

    Raises
    ------
    ValueError
        If the spectrum has too few usable samples or shows no feature of the template
        (``min_match_snr``).
    """
    match = _match(law, distance_px, flux, flux_err, template_wavelength_nm, template_flux,
                   d2ccd_prior_mm, d2ccd_sigma_mm, config)
    u_max = float(np.nanmax(np.abs(match.distance_px[match.usable])))
    d_step = config.coarse_step_px * d2ccd_prior_mm / u_max
    ds = _grid(d2ccd_prior_mm, config.n_sigma * d2ccd_sigma_mm, d_step)
    ss = _grid(0.0, config.shift_range_px, config.coarse_step_px)
    sc = match.scores(ds, ss)
    if not np.any(sc > -np.inf) or np.max(sc) <= -config.n_sigma**2:
        raise ValueError("wavelength search: no template feature found in the spectrum")
    k, j = np.unravel_index(int(np.argmax(sc)), sc.shape)
    hd_step = d_step * (config.fine_step_px / config.coarse_step_px)
    ds2 = _grid(float(ds[k]), 1.5 * d_step, hd_step)
    ss2 = _grid(float(ss[j]), 1.5 * config.coarse_step_px, config.fine_step_px)
    sc2 = match.scores(ds2, ss2)
    k2, j2 = np.unravel_index(int(np.argmax(sc2)), sc2.shape)
    k2 = int(np.clip(k2, 1, ds2.size - 2))
    j2 = int(np.clip(j2, 1, ss2.size - 2))
    delta, cov = _quadratic_peak(sc2, k2, j2, np.array([hd_step, config.fine_step_px]))
    d_best = float(ds2[k2] + delta[0] * hd_step)
    s_best = float(ss2[j2] + delta[1] * config.fine_step_px)
    w, hd = match.weight, match.features
    hm = match.template_features(d_best, np.array([s_best]))[0]
    amp = float(np.sum(w * hd * hm) / max(np.sum(w * hm * hm), 1e-300))
    n_used = int(np.count_nonzero(w))
    chi2_red = float(np.sum(w * (hd - amp * hm) ** 2) / max(n_used - 3, 1))
    # The grid always has a best node, noise or not: the features must be seen.
    significance = amp * math.sqrt(np.sum(w * hm * hm) / max(chi2_red, 1.0))
    if not significance >= config.min_match_snr:
        raise ValueError(f"wavelength search: no template feature found in the spectrum "
                         f"({significance:.1f} sigma, {config.min_match_snr:g} needed)")
    if chi2_red > 1.0:
        cov = cov * chi2_red
    return TemplateSolution(d2ccd_mm=d_best, pixel_shift=s_best, covariance=cov,
                            chisq_reduced=chi2_red, amplitude=amp, n_samples=n_used)
