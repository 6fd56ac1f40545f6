"""Line detection and line-based wavelength calibration of a first-order spectrum.

`detect_lines` fits each catalogue line (`atmospec.spectro.wavelength.lines`) inside the spectrum's
range with a Gaussian on a local polynomial continuum and returns Spectractor's ``LINES``
columns. `calibrate_wavelength` fits the disperser–CCD distance D and a pixel shift s of the
zeroth-order position on the detected lines, with the dispersion law of
`atmospec.spectro.dispersers`:

    λ(u) = law(u − s; D)        (u: distance from the zeroth order along the dispersion axis)

as Spectractor's ``PIXSHIFT`` convention (the zeroth order really sits s pixels further along
the dispersion axis). The law's offsets are proportional to D (``u = D (tan θ − tan θ₀) /
pixel``), so at fixed detected positions the model ``u_i = D g(λ_i) + s`` is linear in
(D, s): each iteration is a weighted linear least-squares fit with a Gaussian prior on D,
lines rejected by leave-one-out sigma clipping, errors from the covariance scaled by the
reduced χ² when it exceeds 1. Detection is repeated with the new wavelengths (a wide search
window first, then a narrow one) until the solution moves by less than ``tol_px``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from astropy.table import Table
from scipy.ndimage import gaussian_filter1d, uniform_filter1d
from scipy.optimize import least_squares

from atmospec.spectro.dispersers import Disperser
from atmospec.spectro.wavelength.lines import Line

__all__ = [
    "CoarseSearchConfig",
    "FeatureFitConfig",
    "LineDetectionConfig",
    "TemplateSolution",
    "WavelengthCalibrationConfig",
    "WavelengthSolution",
    "absorption_template",
    "calibrate_on_features",
    "calibrate_wavelength",
    "detect_lines",
    "measure_feature_shifts",
    "template_dispersion_solution",
]

_FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))
LINE_COLUMNS = ("Line", "Tabulated", "Detected", "Shift", "Err", "FWHM", "Amplitude", "SNR",
                "Chisq", "Name")


# --------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class LineDetectionConfig:
    """How `detect_lines` looks for a catalogue line."""

    fwhm_nm: float = 3.0
    """Initial FWHM of a narrow line, nm (lines with width bounds start mid-range)."""
    fwhm_bounds_nm: tuple[float, float] = (0.5, 15.0)
    """Allowed FWHM of a narrow line, nm (a line's own ``width_bounds_nm`` overrides it)."""
    search_nm: float = 3.0
    """The fitted centre must lie within ± this of the expected wavelength, nm."""
    window_fwhm: float = 3.0
    """Half-width of the fitted window beyond the search range, in initial FWHMs."""
    continuum_degree: int = 1
    """Degree of the local continuum polynomial (1 linear, 2 quadratic)."""
    min_snr: float = 4.0
    """Minimum significance: |amplitude| / its error."""
    min_points: int = 8
    """Minimum number of valid samples in the window."""
    redshift: float = 0.0
    """Target redshift (radial velocity / c) applied to non-atmospheric lines."""
    kind: Literal["auto", "absorption", "emission", "either"] = "auto"
    """Sign of the feature: ``auto`` follows each line's ``emission`` flag."""
    n_grid_centres: int = 61
    """Centres tried on the coarse grid over the search range before the full fit."""
    n_grid_widths: int = 12
    """Widths tried on the coarse grid (log-spaced over the bounds)."""


def _sign_ok(amplitude: np.ndarray, line: Line, kind: str) -> np.ndarray:
    if kind == "either":
        return np.ones_like(amplitude, dtype=bool)
    emission = line.emission if kind == "auto" else kind == "emission"
    return amplitude > 0 if emission else amplitude < 0


def _fit_one(wl: np.ndarray, flux: np.ndarray, err: np.ndarray, line: Line, expected: float,
             config: LineDetectionConfig) -> dict[str, float] | None:
    """Fit one feature; the result dictionary, or None if not detected."""
    lo_w, hi_w = line.width_bounds_nm or config.fwhm_bounds_nm
    fwhm0 = np.sqrt(lo_w * hi_w) if line.width_bounds_nm else config.fwhm_nm
    half = config.search_nm + config.window_fwhm * fwhm0
    sel = (np.abs(wl - expected) <= half) & np.isfinite(flux) & np.isfinite(err) & (err > 0)
    deg = int(config.continuum_degree)
    npar = deg + 4
    if sel.sum() < max(config.min_points, npar + 2):
        return None
    x, y, w = wl[sel], flux[sel], 1.0 / err[sel]
    t = (x - expected) / half
    poly = np.vander(t, deg + 1, increasing=True)                      # (n, deg+1)
    # Coarse grid over (centre, sigma), linear parameters solved exactly (vectorised).
    centres = np.linspace(expected - config.search_nm, expected + config.search_nm,
                          config.n_grid_centres)
    sigmas = np.geomspace(lo_w, hi_w, config.n_grid_widths) / _FWHM
    g = np.exp(-0.5 * ((x[None, None, :] - centres[:, None, None]) / sigmas[None, :, None]) ** 2)
    g = g.reshape(-1, x.size)                                          # (m, n)
    design = np.concatenate(
        [np.broadcast_to(poly, (g.shape[0], *poly.shape)), g[:, :, None]], axis=2)
    aw = design * w[None, :, None]
    yw = y * w
    normal = np.einsum("mnp,mnq->mpq", aw, aw)
    rhs = np.einsum("mnp,n->mp", aw, yw)
    try:
        theta = np.linalg.solve(normal, rhs[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return None
    chi2 = np.sum((yw[None, :] - np.einsum("mnp,mp->mn", aw, theta)) ** 2, axis=1)
    ok = _sign_ok(theta[:, -1], line, config.kind) & np.isfinite(chi2)
    if not ok.any():
        return None
    best = int(np.argmin(np.where(ok, chi2, np.inf)))
    c0 = centres[best // sigmas.size]
    s0 = sigmas[best % sigmas.size]
    p0 = np.concatenate([theta[best], [c0, s0]])

    def resid(p: np.ndarray) -> np.ndarray:
        model = poly @ p[:deg + 1] + p[deg + 1] * np.exp(-0.5 * ((x - p[-2]) / p[-1]) ** 2)
        return (y - model) * w

    lower = np.full(npar, -np.inf)
    upper = np.full(npar, np.inf)
    lower[-2:] = (expected - config.search_nm - 0.5 * fwhm0, lo_w / _FWHM)
    upper[-2:] = (expected + config.search_nm + 0.5 * fwhm0, hi_w / _FWHM)
    p0[-2:] = np.clip(p0[-2:], lower[-2:] + 1e-9, upper[-2:] - 1e-9)
    res = least_squares(resid, p0, bounds=(lower, upper), x_scale="jac", method="trf")
    p = res.x
    dof = x.size - npar
    chi2_red = float(2.0 * res.cost / dof) if dof > 0 else np.nan
    try:
        cov = np.linalg.inv(res.jac.T @ res.jac)
    except np.linalg.LinAlgError:
        return None
    scale = max(1.0, chi2_red) if np.isfinite(chi2_red) else 1.0
    errs = np.sqrt(np.clip(np.diag(cov), 0.0, None) * scale)
    amp, amp_err = p[deg + 1], errs[deg + 1]
    snr = abs(amp) / amp_err if amp_err > 0 else np.inf
    if not (_sign_ok(np.array([amp]), line, config.kind)[0] and snr >= config.min_snr
            and abs(p[-2] - expected) <= config.search_nm and np.isfinite(errs[-2])):
        return None
    return {"Detected": float(p[-2]), "Err": float(errs[-2]), "FWHM": float(_FWHM * p[-1]),
            "Amplitude": float(amp), "SNR": float(snr), "Chisq": chi2_red}


def detect_lines(wavelength_nm: np.ndarray, flux: np.ndarray, flux_err: np.ndarray,
                 lines: Sequence[Line], config: LineDetectionConfig = LineDetectionConfig()
                 ) -> Table:
    """Detect catalogue lines in a spectrum by Gaussian fits on a local continuum.

    For each line whose expected wavelength (``Line.observed_nm(config.redshift)``) has the
    whole search range inside the spectrum, the samples within ``search_nm + window_fwhm ×
    FWHM₀`` are fitted with a polynomial continuum plus a Gaussian (weighted by
    ``1 / flux_err``): a vectorised grid over centre and width with the linear parameters
    solved exactly, then a bounded non-linear fit of all parameters. A line is kept when its
    amplitude has the expected sign, ``|A| / σ_A ≥ min_snr`` and the centre lies within
    ``search_nm`` of the expectation. Errors come from the fit covariance, scaled by the
    reduced χ² of the window when it exceeds 1.

    Parameters
    ----------
    wavelength_nm : numpy.ndarray
        Wavelength of each sample, nm, increasing or decreasing.
    flux, flux_err : numpy.ndarray
        Flux and its one-sigma error (any unit; non-finite or non-positive errors ignored).
    lines : sequence of Line
        Lines (or blended features) to look for.
    config : LineDetectionConfig
        Detection settings.

    Returns
    -------
    astropy.table.Table
        One row per detected line, in the order of ``lines``: ``Line`` (label), ``Tabulated``
        (expected, redshift applied), ``Detected``, ``Shift`` (Detected − Tabulated), ``Err``
        (of Detected), ``FWHM`` (nm), ``Amplitude`` (flux unit, negative in absorption),
        ``SNR``, ``Chisq`` (reduced χ² of the window), ``Name`` (catalogue key).
    """
    wl = np.asarray(wavelength_nm, dtype=np.float64)
    fl = np.asarray(flux, dtype=np.float64)
    er = np.asarray(flux_err, dtype=np.float64)
    if not (wl.shape == fl.shape == er.shape) or wl.ndim != 1:
        raise ValueError("wavelength, flux and flux_err must be 1-D arrays of one length")
    order = np.argsort(wl)
    wl, fl, er = wl[order], fl[order], er[order]
    finite = np.isfinite(wl)
    wl, fl, er = wl[finite], fl[finite], er[finite]
    rows = []
    for line in lines:
        expected = line.observed_nm(config.redshift)
        if wl.size == 0 or not (wl[0] <= expected - config.search_nm
                                and expected + config.search_nm <= wl[-1]):
            continue
        fit = _fit_one(wl, fl, er, line, expected, config)
        if fit is None:
            continue
        rows.append((line.label or line.name, expected, fit["Detected"],
                     fit["Detected"] - expected, fit["Err"], fit["FWHM"], fit["Amplitude"],
                     fit["SNR"], fit["Chisq"], line.name))
    table = Table(rows=rows or None, names=LINE_COLUMNS,
                  dtype=(str, float, float, float, float, float, float, float, float, str))
    for col in ("Tabulated", "Detected", "Shift", "Err", "FWHM"):
        table[col].unit = "nm"
    table["Chisq"].unit = "reduced"
    return table


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class WavelengthCalibrationConfig:
    """How `calibrate_wavelength` fits D2CCD and the pixel shift."""

    order: int = 1
    """Diffraction order of the spectrum."""
    d2ccd_prior_sigma_mm: float = 2.0
    """Width of the Gaussian prior on D2CCD, mm."""
    initial_search_nm: float = 15.0
    """Search half-range of the first detection (prior solution), nm."""
    detection: LineDetectionConfig = field(default_factory=LineDetectionConfig)
    """Detection settings of the later iterations (their ``search_nm`` is the narrow one)."""
    err_floor_nm: float = 0.0
    """Added in quadrature to every line's centre error, nm (systematics)."""
    broad_err_floor_nm: float = 1.0
    """Added in quadrature for broad features (lines with width bounds: the H₂O band, whose
    effective centre depends on PWV and resolution), nm."""
    clip_sigma: float = 4.0
    """Leave-one-out rejection threshold, in standard deviations."""
    min_lines: int = 2
    """Fewest lines kept (clipping stops there; fewer detected is an error)."""
    max_iterations: int = 8
    """Most detect-and-fit iterations."""
    tol_px: float = 0.01
    """Convergence: largest change of the pixel positions of the range, pixels."""


@dataclass(frozen=True, eq=False)
class WavelengthSolution:
    """Result of `calibrate_wavelength`."""

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
    """Detected lines under the final solution (``LINES`` columns) plus ``Pixel`` (distance
    of the detected centre), ``Residual`` (Detected − Tabulated after the fit, nm),
    ``Pull`` (residual / error) and ``Used`` (kept by the clipping)."""
    chisq: float
    """χ² of the final fit (lines used + prior term)."""
    ndof: int
    """Degrees of freedom: lines used + 1 (prior) − 2."""
    n_lines: int
    """Number of lines used."""
    iterations: int
    """Detect-and-fit iterations done."""
    converged: bool
    """Whether the solution moved by less than ``tol_px`` on the last iteration."""
    d2ccd_prior_mm: float
    """Prior D2CCD, mm."""

    @property
    def chisq_reduced(self) -> float:
        """χ² per degree of freedom (NaN without degrees of freedom)."""
        return self.chisq / self.ndof if self.ndof > 0 else float("nan")


def _wls(g: np.ndarray, p: np.ndarray, sig: np.ndarray, d0: float, sd0: float
         ) -> tuple[np.ndarray, np.ndarray, float]:
    """Fit u = D g + s with a prior D ~ N(d0, sd0): parameters, covariance, χ²."""
    a = np.column_stack([g, np.ones_like(g)]) / sig[:, None]
    b = p / sig
    a = np.vstack([a, [1.0 / sd0, 0.0]])
    b = np.append(b, d0 / sd0)
    normal = a.T @ a
    cov = np.linalg.inv(normal)
    theta = cov @ (a.T @ b)
    chi2 = float(np.sum((b - a @ theta) ** 2))
    return theta, cov, chi2


def _clip(g: np.ndarray, p: np.ndarray, sig: np.ndarray, d0: float, sd0: float,
          config: WavelengthCalibrationConfig) -> np.ndarray:
    """Leave-one-out sigma clipping: boolean mask of the lines kept."""
    used = np.ones(g.size, dtype=bool)
    while used.sum() > max(config.min_lines, 2):
        idx = np.flatnonzero(used)
        worst, worst_z = -1, 0.0
        for i in idx:
            keep = used.copy()
            keep[i] = False
            theta, cov, chi2 = _wls(g[keep], p[keep], sig[keep], d0, sd0)
            dof = int(keep.sum()) - 1
            scale = max(1.0, chi2 / dof) if dof > 0 else 1.0
            jac = np.array([g[i], 1.0])
            var = scale * (sig[i] ** 2 + float(jac @ cov @ jac))
            z = abs(p[i] - (theta[0] * g[i] + theta[1])) / np.sqrt(var)
            if z > worst_z:
                worst, worst_z = i, z
        if worst_z <= config.clip_sigma:
            break
        used[worst] = False
    return used


def calibrate_wavelength(distance_px: np.ndarray, flux: np.ndarray, flux_err: np.ndarray,
                         disperser: Disperser, d2ccd_prior_mm: float, pixel_mm: float,
                         theta0: float, lines: Sequence[Line],
                         config: WavelengthCalibrationConfig = WavelengthCalibrationConfig(),
                         *, at: tuple[float, float] | None = None, binning: int = 1,
                         start: tuple[float, float] | None = None) -> WavelengthSolution:
    """Fit D2CCD and the zeroth-order pixel shift on absorption lines.

    Iterates: (a) wavelengths from the dispersion law with the current (D, s); (b)
    `detect_lines` (search ``initial_search_nm`` the first time, ``detection.search_nm``
    after); (c) the detected centres turned back into distances ``u_i`` with the same law,
    and ``u_i = D g(λ_i) + s`` (``g`` = law offset for D = 1 mm) fitted by weighted least
    squares with the Gaussian prior on D, after leave-one-out sigma clipping. Stops when the
    positions over the range move by less than ``tol_px``.

    Parameters
    ----------
    distance_px : numpy.ndarray
        Distance of each sample from the (assumed) zeroth order along the dispersion axis,
        pixels (as `atmospec.spectro.extract.ExtractionResult` gives per row).
    flux, flux_err : numpy.ndarray
        Flux per sample and its one-sigma error.
    disperser : Disperser
        The disperser (its law; ``at``/``binning`` select N from a groove map).
    d2ccd_prior_mm : float
        Prior (starting) disperser–CCD distance, mm.
    pixel_mm : float
        Pixel pitch of ``distance_px``, mm.
    theta0 : float
        Zeroth order's field angle along the dispersion axis, radians (held fixed).
    lines : sequence of Line
        Features to calibrate on (e.g. `atmospec.spectro.wavelength.lines.calibration_lines`).
    config : WavelengthCalibrationConfig
        Settings.
    at, binning
        Passed to `Disperser.offset_px` / `Disperser.wavelength_nm`.
    start : tuple of float, optional
        Starting ``(D2CCD mm, shift px)``, e.g. from `coarse_dispersion_solution`; default
        the prior distance and no shift. The prior stays centred on ``d2ccd_prior_mm``.

    Returns
    -------
    WavelengthSolution

    Raises
    ------
    ValueError
        If fewer than ``config.min_lines`` lines are detected.
    """
    u = np.asarray(distance_px, dtype=np.float64)
    order = config.order
    kw = {"at": at, "binning": binning}

    def law(dist: np.ndarray, d: float, s: float) -> np.ndarray:
        return disperser.wavelength_nm(dist - s, order, d, pixel_mm, theta0, **kw)

    def g_of(lam: np.ndarray) -> np.ndarray:
        return disperser.offset_px(lam, order, 1.0, pixel_mm, theta0, **kw)

    sd0 = float(config.d2ccd_prior_sigma_mm)
    d, s = (float(d2ccd_prior_mm), 0.0) if start is None else (float(start[0]),
                                                                  float(start[1]))
    g_range = np.abs(g_of(law(u[[0, -1]], d, s)))
    converged = False
    iterations = 0
    det = None
    for it in range(config.max_iterations):
        iterations = it + 1
        search = config.initial_search_nm if it == 0 else config.detection.search_nm
        wl = law(u, d, s)
        det = detect_lines(wl, flux, flux_err, lines, replace(config.detection, search_nm=search))
        if len(det) < config.min_lines:
            raise ValueError(f"wavelength calibration: {len(det)} line(s) detected, "
                             f"{config.min_lines} needed")
        lam_det = np.asarray(det["Detected"], dtype=np.float64)
        p = g_of(lam_det) * d + s                      # distances of the detected centres
        dldu = np.abs(law(p + 0.5, d, s) - law(p - 0.5, d, s))
        broad = np.array([_is_broad(lines, n) for n in det["Name"]])
        err_nm = np.sqrt(np.asarray(det["Err"], dtype=np.float64) ** 2 + config.err_floor_nm ** 2
                         + np.where(broad, config.broad_err_floor_nm, 0.0) ** 2)
        sig = err_nm / dldu
        g = g_of(np.asarray(det["Tabulated"], dtype=np.float64))
        used = _clip(g, p, sig, float(d2ccd_prior_mm), sd0, config)
        theta, cov, chi2 = _wls(g[used], p[used], sig[used], float(d2ccd_prior_mm), sd0)
        change = float(np.max(np.abs((theta[0] - d) * g_range)) + abs(theta[1] - s))
        d, s = float(theta[0]), float(theta[1])
        if change < config.tol_px:
            converged = True
            break
    assert det is not None
    ndof = int(used.sum()) - 1
    if ndof > 0 and chi2 / ndof > 1.0:
        cov = cov * (chi2 / ndof)
    return _solution(law, u, d, s, cov, det, p, g, sig, err_nm, used, chi2, ndof, iterations,
                     converged, float(d2ccd_prior_mm))


def _solution(law, u: np.ndarray, d: float, s: float, cov: np.ndarray, det: Table,
              p: np.ndarray, g: np.ndarray, sig: np.ndarray, err_nm: np.ndarray,
              used: np.ndarray, chi2: float, ndof: int, iterations: int, converged: bool,
              d2ccd_prior_mm: float) -> WavelengthSolution:
    """The `WavelengthSolution` of a (D, s) fit on detected positions ``p`` (pixels) of
    features tabulated at ``g`` (law offsets for D = 1 mm), with its ``LINES`` table."""
    wl = law(u, d, s)
    # λ error from the covariance: numerical derivatives of the law in (D, s).
    dd = 1e-3
    jd = (law(u, d + dd, s) - law(u, d - dd, s)) / (2 * dd)
    js = law(u, d, s + 0.5) - law(u, d, s - 0.5)
    wl_err = np.sqrt(jd ** 2 * cov[0, 0] + 2 * jd * js * cov[0, 1] + js ** 2 * cov[1, 1])
    detected = law(p, d, s)
    table = det.copy()
    table["Detected"] = detected
    table["Shift"] = detected - np.asarray(det["Tabulated"])
    table["Err"] = err_nm
    table["Pixel"] = p
    table["Residual"] = table["Shift"]
    table["Pull"] = (p - (d * g + s)) / sig
    table["Used"] = used
    for col in ("Detected", "Shift", "Err", "Residual"):
        table[col].unit = "nm"
    table["Pixel"].unit = "pix"
    return WavelengthSolution(
        d2ccd_mm=d, d2ccd_err_mm=float(np.sqrt(cov[0, 0])), pixel_shift=s,
        pixel_shift_err=float(np.sqrt(cov[1, 1])), covariance=cov, wavelength_nm=wl,
        wavelength_err_nm=wl_err, lines=table, chisq=chi2, ndof=ndof,
        n_lines=int(used.sum()), iterations=iterations, converged=converged,
        d2ccd_prior_mm=d2ccd_prior_mm)


def _is_broad(lines: Sequence[Line], name: str) -> bool:
    for line in lines:
        if line.name == name:
            return line.width_bounds_nm is not None
    return False


# --------------------------------------------------------------------------- coarse search


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


def absorption_template(wavelength_nm: np.ndarray, sed_wavelength_nm: np.ndarray | None,
                        sed_flux: np.ndarray | None, airmass: float, pressure_hpa: float,
                        resolution_fwhm_nm: float) -> np.ndarray:
    """Expected spectrum shape for line identification: SED × atmosphere at the resolution.

    Parameters
    ----------
    wavelength_nm : numpy.ndarray
        Regular, increasing grid on which the template is made, nm.
    sed_wavelength_nm, sed_flux : numpy.ndarray or None
        The star's SED (its Balmer and metal lines); None: atmosphere only (O₂, H₂O), which
        is what a non-CALSPEC target gets.
    airmass, pressure_hpa : float
        Line of sight; the water, ozone and aerosols are typical values (3 mm, 300 DU, 0.05):
        the scan only needs where the features are, not their depths.
    resolution_fwhm_nm : float
        Instrumental resolution (FWHM), nm; the template is convolved with that Gaussian.

    Returns
    -------
    numpy.ndarray
        Template flux on ``wavelength_nm`` (arbitrary scale).
    """
    from atmospec.atmosphere.transmission import transmission

    lam = np.asarray(wavelength_nm, dtype=np.float64)
    model = transmission(lam, max(float(airmass), 1.0), float(pressure_hpa), 3.0, 300.0, 0.05)
    if sed_wavelength_nm is not None and sed_flux is not None:
        sed = np.interp(lam, sed_wavelength_nm, sed_flux, left=np.nan, right=np.nan)
        fill = np.nanmedian(sed) if np.any(np.isfinite(sed)) else 1.0
        model = model * np.where(np.isfinite(sed), sed, fill)
    step = float(np.median(np.diff(lam)))
    sigma = max(resolution_fwhm_nm, step) / _FWHM / step
    return gaussian_filter1d(model, sigma, mode="nearest")


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


def template_dispersion_solution(
    distance_px: np.ndarray,
    flux: np.ndarray,
    flux_err: np.ndarray,
    template_wavelength_nm: np.ndarray,
    template_flux: np.ndarray,
    disperser: Disperser,
    d2ccd_prior_mm: float,
    d2ccd_sigma_mm: float,
    pixel_mm: float,
    theta0: float,
    config: CoarseSearchConfig = CoarseSearchConfig(),
    *,
    order: int = 1,
    at: tuple[float, float] | None = None,
    binning: int = 1,
) -> TemplateSolution:
    """Fit (D2CCD, pixel shift) by matching the spectrum's features to a physical template.

    Every feature is used at once, with its real shape at the instrument's resolution: the
    Balmer lines of the CALSPEC SED and the O₂ and H₂O bands of the atmosphere model (whose
    blends — O₂ A is a doublet, H₂O a band — have no single tabulated centre, which is what
    limits a line-by-line fit to ~0.3 nm). The continuum-normalised data ``d`` (flux over its
    weighted Gaussian smoothing, minus 1) are compared with the continuum-normalised
    template ``m`` evaluated at ``λ = law(u − s; D)``; the template's features are scaled by
    the amplitude ``a ≥ 0`` that fits best, so the score ``(Σ w d m)² / Σ w m²`` is the χ²
    improvement over no features, minus the Gaussian prior on D. The pair is found on a
    grid (steps moving the positions by ``coarse_step_px``, then ``fine_step_px`` around the
    best node — a line-by-line start can lock onto the wrong dips: a 0.8 mm error of D on
    the CTIO bench moves the lines by 10 nm) and refined by a Newton step on the local
    quadratic of χ², whose curvature gives the covariance.

    Parameters
    ----------
    distance_px : numpy.ndarray
        Distance of each sample from the zeroth order along the dispersion axis, pixels,
        one per detector pixel (monotonic).
    flux, flux_err : numpy.ndarray
        The spectrum and its errors at those samples.
    template_wavelength_nm, template_flux : numpy.ndarray
        Template (`absorption_template`) on a regular grid covering the spectrum.
    disperser : Disperser
        Its law maps distance to wavelength.
    d2ccd_prior_mm, d2ccd_sigma_mm : float
        Prior disperser–CCD distance and its standard deviation, mm.
    pixel_mm, theta0 : float
        Pixel pitch (mm) and zeroth-order field angle (rad) of the law.
    config : CoarseSearchConfig
        Grid settings.
    order, at, binning
        Passed to `Disperser.wavelength_nm`.

    Returns
    -------
    TemplateSolution

    Raises
    ------
    ValueError
        If the spectrum has too few usable samples or shows no feature of the template.
    """
    u = np.asarray(distance_px, dtype=np.float64)
    f = np.asarray(flux, dtype=np.float64)
    e = np.asarray(flux_err, dtype=np.float64)
    ok = np.isfinite(u) & np.isfinite(f) & np.isfinite(e) & (e > 0)
    ok &= np.where(ok, f, 0.0) > config.min_snr * np.where(ok, e, np.inf)
    if ok.sum() < 50:
        raise ValueError(f"wavelength search: {ok.sum()} usable samples, at least 50 needed")
    kw = {"at": at, "binning": binning}
    lam0 = disperser.wavelength_nm(u, order, d2ccd_prior_mm, pixel_mm, theta0, **kw)
    lo, hi = config.wavelength_range_nm
    ok &= (lam0 >= lo) & (lam0 <= hi)
    dldu = float(np.nanmedian(np.abs(np.gradient(lam0, u))))
    sigma_px = config.smooth_nm / dldu
    w_in = np.where(ok, 1.0, 0.0)
    fz = np.where(ok, f, 0.0)
    hd = _highpass(fz, w_in, sigma_px)
    with np.errstate(invalid="ignore", divide="ignore"):
        cont = fz / (hd + 1.0)
        w = np.where(ok & np.isfinite(hd), (cont / e) ** 2, 0.0)
    hd = np.where(w > 0, hd, 0.0)
    u_max = float(np.nanmax(np.abs(u[ok])))
    tl = np.asarray(template_wavelength_nm, dtype=np.float64)
    tf = np.asarray(template_flux, dtype=np.float64)

    def features(d: float, ss: np.ndarray) -> np.ndarray:
        lam = disperser.wavelength_nm(u[None, :] - ss[:, None], order, float(d), pixel_mm,
                                      theta0, **kw)
        m = np.interp(lam, tl, tf, left=np.nan, right=np.nan)
        # The same samples as the data's continuum: a feature-free edge (the blue cut-off)
        # must be normalised identically on both sides, or it pulls the scale.
        valid = np.isfinite(m) & ok[None, :]
        hm = _highpass(np.where(valid, m, 0.0), valid.astype(float), sigma_px)
        return np.where(valid & np.isfinite(hm), hm, 0.0)

    def scores(ds: np.ndarray, ss: np.ndarray) -> np.ndarray:
        out = np.empty((ds.size, ss.size))
        for k, d in enumerate(ds):
            hm = features(float(d), ss)
            num = np.sum(w * hd * hm, axis=1)
            den = np.sum(w * hm * hm, axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                gain = np.where((num > 0) & (den > 0), num**2 / den, 0.0)
            out[k] = gain - ((d - d2ccd_prior_mm) / d2ccd_sigma_mm) ** 2
            if config.shift_prior_sigma_px:
                out[k] -= (ss / config.shift_prior_sigma_px) ** 2
        return out

    def grid(centre: float, half: float, step: float) -> np.ndarray:
        n = max(math.ceil(half / step), 1)
        return centre + step * np.arange(-n, n + 1)

    d_step = config.coarse_step_px * d2ccd_prior_mm / u_max
    ds = grid(d2ccd_prior_mm, config.n_sigma * d2ccd_sigma_mm, d_step)
    ss = grid(0.0, config.shift_range_px, config.coarse_step_px)
    sc = scores(ds, ss)
    if not np.any(sc > -np.inf) or np.max(sc) <= -config.n_sigma**2:
        raise ValueError("wavelength search: no template feature found in the spectrum")
    k, j = np.unravel_index(int(np.argmax(sc)), sc.shape)
    fine = config.fine_step_px / config.coarse_step_px
    hd_step = d_step * fine
    ds2 = grid(float(ds[k]), 1.5 * d_step, hd_step)
    ss2 = grid(float(ss[j]), 1.5 * config.coarse_step_px, config.fine_step_px)
    sc2 = scores(ds2, ss2)
    k2, j2 = np.unravel_index(int(np.argmax(sc2)), sc2.shape)
    k2 = int(np.clip(k2, 1, ds2.size - 2))
    j2 = int(np.clip(j2, 1, ss2.size - 2))
    # Local quadratic of the score on the 3×3 nodes around the best: Newton step and
    # curvature (score = const − χ², so the χ² Hessian is minus the score's).
    z = sc2[k2 - 1:k2 + 2, j2 - 1:j2 + 2]
    gx = (z[2, 1] - z[0, 1]) / 2.0
    gy = (z[1, 2] - z[1, 0]) / 2.0
    hxx = z[2, 1] - 2 * z[1, 1] + z[0, 1]
    hyy = z[1, 2] - 2 * z[1, 1] + z[1, 0]
    hxy = (z[2, 2] - z[2, 0] - z[0, 2] + z[0, 0]) / 4.0
    hess = np.array([[hxx, hxy], [hxy, hyy]])
    step_units = np.array([hd_step, config.fine_step_px])
    try:
        delta = -np.linalg.solve(hess, [gx, gy])
        # Only a step inside the 3×3 patch of a true maximum is trusted.
        if not (np.all(np.linalg.eigvalsh(hess) < 0) and np.all(np.abs(delta) <= 1.0)):
            delta = np.zeros(2)
        cov = 2.0 * np.linalg.inv(-hess) / np.outer(1.0 / step_units, 1.0 / step_units)
    except np.linalg.LinAlgError:
        delta = np.zeros(2)
        cov = np.full((2, 2), np.nan)
    d_best = float(ds2[k2] + delta[0] * hd_step)
    s_best = float(ss2[j2] + delta[1] * config.fine_step_px)
    hm = features(d_best, np.array([s_best]))[0]
    amp = float(np.sum(w * hd * hm) / max(np.sum(w * hm * hm), 1e-300))
    resid = w * (hd - amp * hm) ** 2
    n_used = int(np.count_nonzero(w))
    chi2_red = float(np.sum(resid) / max(n_used - 3, 1))
    if chi2_red > 1.0:
        cov = cov * chi2_red
    return TemplateSolution(d2ccd_mm=d_best, pixel_shift=s_best, covariance=cov,
                            chisq_reduced=chi2_red, amplitude=amp, n_samples=n_used)


# --------------------------------------------------------------------------- features


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


def measure_feature_shifts(wavelength_nm: np.ndarray, flux: np.ndarray, flux_err: np.ndarray,
                           template_wavelength_nm: np.ndarray, template_flux: np.ndarray,
                           features: Sequence[Line], resolution_fwhm_nm: float,
                           config: FeatureFitConfig = FeatureFitConfig()) -> Table:
    """Shift of each feature between the data and the template, window by window.

    Around each feature the data are fitted with ``(a + b (λ − λ₀)) · T(λ − δ)``: the
    template's own shape (a blend such as O₂ A, a band such as H₂O, a Balmer line with its
    wings, at the instrument's resolution) moved by δ, times a local linear continuum solved
    exactly; δ is scanned, the χ² minimum refined on a parabola and its error taken from the
    curvature (Δχ² = 1), scaled by the window's reduced χ² when above 1. The feature's
    catalogue wavelength only names the window: no tabulated centre enters the answer.

    Parameters
    ----------
    wavelength_nm, flux, flux_err : numpy.ndarray
        The spectrum on its current wavelength scale.
    template_wavelength_nm, template_flux : numpy.ndarray
        Expected spectrum (`absorption_template`) on a regular grid.
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
    fl = np.asarray(flux, dtype=np.float64)
    er = np.asarray(flux_err, dtype=np.float64)
    order = np.argsort(wl)
    wl, fl, er = wl[order], fl[order], er[order]
    tl = np.asarray(template_wavelength_nm, dtype=np.float64)
    tf = np.asarray(template_flux, dtype=np.float64)
    half = max(config.half_window_nm, 4.0 * resolution_fwhm_nm)
    shifts = np.arange(-config.max_shift_nm, config.max_shift_nm + 0.5 * config.step_nm,
                       config.step_nm)
    rows = []
    for line in features:
        lam0 = line.wavelength_nm
        sel = ((np.abs(wl - lam0) <= half) & np.isfinite(fl) & np.isfinite(er) & (er > 0))
        if sel.sum() < 8 or not (wl[0] <= lam0 - half and lam0 + half <= wl[-1]):
            continue
        x, y, w = wl[sel], fl[sel], 1.0 / er[sel]
        t = np.interp(x[None, :] - shifts[:, None], tl, tf)          # (n_shift, n)
        design = np.stack([t, t * (x - lam0)], axis=2) * w[None, :, None]
        normal = np.einsum("snp,snq->spq", design, design)
        rhs = np.einsum("snp,n->sp", design, y * w)
        try:
            theta = np.linalg.solve(normal, rhs[..., None])[..., 0]
        except np.linalg.LinAlgError:
            continue
        chi2 = np.sum((y * w - np.einsum("snp,sp->sn", design, theta)) ** 2, axis=1)
        k = int(np.argmin(chi2))
        if k == 0 or k == shifts.size - 1:
            continue  # minimum at the scan's edge: not found
        c0, c1, c2 = chi2[k - 1], chi2[k], chi2[k + 1]
        curv = (c0 - 2 * c1 + c2) / config.step_nm**2
        if not curv > 0:
            continue
        delta = shifts[k] - 0.5 * (c2 - c0) / config.step_nm / curv
        dof = max(x.size - 3, 1)
        chi2_red = float(c1 / dof)
        err = math.sqrt(2.0 / curv * max(chi2_red, 1.0))
        # How visible the feature is: its template contrast against the data's errors.
        tk = t[k] / np.mean(t[k])
        contrast = float(np.sqrt(np.sum(((tk - np.polyval(np.polyfit(x, tk, 1), x))
                                          * y * w) ** 2)))
        if contrast < config.min_depth_snr:
            continue
        rows.append((line.label or line.name, lam0, lam0 + delta, delta, err,
                     resolution_fwhm_nm, float(np.ptp(tk)), contrast, chi2_red, line.name))
    table = Table(rows=rows or None, names=LINE_COLUMNS,
                  dtype=(str, float, float, float, float, float, float, float, float, str))
    for col in ("Tabulated", "Detected", "Shift", "Err", "FWHM"):
        table[col].unit = "nm"
    table["Chisq"].unit = "reduced"
    return table


def calibrate_on_features(distance_px: np.ndarray, flux: np.ndarray, flux_err: np.ndarray,
                          disperser: Disperser, d2ccd_prior_mm: float, d2ccd_sigma_mm: float,
                          pixel_mm: float, theta0: float,
                          template_wavelength_nm: np.ndarray, template_flux: np.ndarray,
                          features: Sequence[Line], resolution_fwhm_nm: float,
                          start: tuple[float, float],
                          config: FeatureFitConfig = FeatureFitConfig(), *, order: int = 1,
                          at: tuple[float, float] | None = None, binning: int = 1
                          ) -> WavelengthSolution:
    """Fit (D2CCD, pixel shift) on the positions of spectral features found by template.

    Iterates: wavelengths from the law with the current (D, s); each feature's shift δ
    against the template (`measure_feature_shifts`); its detector position ``u_i`` from the
    law at ``λ_i + δ_i``; then ``u_i = D g(λ_i) + s`` fitted by weighted least squares with
    the Gaussian prior on D after leave-one-out clipping (a feature the template describes
    badly — a PWV far from the template's, a peculiar star — is dropped, not averaged in).
    Errors come from the fit covariance scaled by the reduced χ² when above 1.

    Parameters
    ----------
    distance_px, flux, flux_err : numpy.ndarray
        Distance of each sample from the zeroth order along the dispersion axis (pixels),
        and the spectrum there.
    disperser : Disperser
        Its law.
    d2ccd_prior_mm, d2ccd_sigma_mm : float
        Gaussian prior on D, mm.
    pixel_mm, theta0 : float
        Law parameters (pixel pitch in mm, zeroth order's field angle in radians).
    template_wavelength_nm, template_flux : numpy.ndarray
        Expected spectrum (`absorption_template`).
    features : sequence of Line
        Feature windows (e.g. `atmospec.spectro.wavelength.lines.CALIBRATION_FEATURES` in vacuum).
    resolution_fwhm_nm : float
        Resolution, nm.
    start : tuple of float
        Starting (D mm, shift px), e.g. `template_dispersion_solution`'s.
    config : FeatureFitConfig
        Settings.
    order, at, binning
        Passed to the law.

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
    kw = {"at": at, "binning": binning}

    def law(dist: np.ndarray, d: float, s: float) -> np.ndarray:
        return disperser.wavelength_nm(dist - s, order, d, pixel_mm, theta0, **kw)

    def g_of(lam: np.ndarray) -> np.ndarray:
        return disperser.offset_px(lam, order, 1.0, pixel_mm, theta0, **kw)

    wcfg = WavelengthCalibrationConfig(clip_sigma=config.clip_sigma,
                                       min_lines=config.min_features)
    d, s = float(start[0]), float(start[1])
    det = None
    for _ in range(max(config.iterations, 1)):
        det = measure_feature_shifts(law(u, d, s), flux, flux_err, template_wavelength_nm,
                                     template_flux, features, resolution_fwhm_nm, config)
        if len(det) < config.min_features:
            raise ValueError(f"wavelength calibration: {len(det)} feature(s) measured, "
                             f"{config.min_features} needed")
        lam_det = np.asarray(det["Detected"], dtype=np.float64)
        p = g_of(lam_det) * d + s
        dldu = np.abs(law(p + 0.5, d, s) - law(p - 0.5, d, s))
        err_nm = np.hypot(np.asarray(det["Err"], dtype=np.float64), config.err_floor_nm)
        sig = err_nm / dldu
        g = g_of(np.asarray(det["Tabulated"], dtype=np.float64))
        used = _clip(g, p, sig, float(d2ccd_prior_mm), d2ccd_sigma_mm, wcfg)
        theta, cov, chi2 = _wls(g[used], p[used], sig[used], float(d2ccd_prior_mm),
                                d2ccd_sigma_mm)
        d, s = float(theta[0]), float(theta[1])
    assert det is not None
    ndof = int(used.sum()) - 1
    if ndof > 0 and chi2 / ndof > 1.0:
        cov = cov * (chi2 / ndof)
    return _solution(law, u, d, s, cov, det, p, g, sig, err_nm, used, chi2, ndof,
                     config.iterations, True, float(d2ccd_prior_mm))
