"""Line detection and line-based wavelength calibration of a first-order spectrum.

`detect_lines` fits each catalogue line (`spectractor_bridge.lines`) inside the spectrum's
range with a Gaussian on a local polynomial continuum and returns Spectractor's ``LINES``
columns. `calibrate_wavelength` fits the disperser–CCD distance D and a pixel shift s of the
zeroth-order position on the detected lines, with the dispersion law of
`spectractor_bridge.dispersers`:

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

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from astropy.table import Table
from scipy.optimize import least_squares

from spectractor_bridge.dispersers import Disperser
from spectractor_bridge.lines import Line

__all__ = [
    "LineDetectionConfig",
    "WavelengthCalibrationConfig",
    "WavelengthSolution",
    "calibrate_wavelength",
    "detect_lines",
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
                         *, at: tuple[float, float] | None = None, binning: int = 1
                         ) -> WavelengthSolution:
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
        pixels (as `spectractor_bridge.extract.ExtractionResult` gives per row).
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
        Features to calibrate on (e.g. `spectractor_bridge.lines.calibration_lines`).
    config : WavelengthCalibrationConfig
        Settings.
    at, binning
        Passed to `Disperser.offset_px` / `Disperser.wavelength_nm`.

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
    d, s = float(d2ccd_prior_mm), 0.0
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
    wl = law(u, d, s)
    # λ error from the covariance: numerical derivatives of the law in (D, s).
    dd = 1e-3
    jd = (law(u, d + dd, s) - law(u, d - dd, s)) / (2 * dd)
    js = (law(u, d, s + 0.5) - law(u, d, s - 0.5))
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
        d2ccd_prior_mm=float(d2ccd_prior_mm))


def _is_broad(lines: Sequence[Line], name: str) -> bool:
    for line in lines:
        if line.name == name:
            return line.width_bounds_nm is not None
    return False
