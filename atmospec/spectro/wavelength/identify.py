"""Wavelength calibration on the lines a spectrum shows, for a target without a template.

A CALSPEC star is calibrated against its expected spectrum (`template`, `features`). Any
other target — a planetary nebula, an emission-line star, a star without an SED — is
calibrated on its own lines:

1. **Detection** (`atmospec.spectro.wavelength.peaks`): peaks and dips significant against
   a robust continuum.
2. **Kind**: emission (positive peaks) or absorption (dips), the one whose detections carry
   more significance first; the other is tried when the first identifies too few lines.
3. **Identification** (`_scan`): the detections are matched to the kind's rest lines
   (`lines.rest_lines`, moved to vacuum) under the dispersion law ``u = D g(λ) + s`` on a
   bounded grid of (D2CCD, shift) around the header's distance (± ``n_sigma`` prior
   widths): each node scores the lines that fall within a tolerance of a detection,
   weighted by the detection's significance, less a weak prior term. The best few distinct
   nodes are the candidates.
4. **Measurement** (`_measure_group`): every line the law puts on the spectrum is measured
   where it is: lines closer than ``group_separation_fwhm`` resolutions (Hα with [N II],
   the [S II] doublet) are one group, fitted together as Moffat profiles of the measured
   PSF (a width scale free, amplitudes and a linear background solved linearly) sharing one
   shift; the shift and its error (Jacobian, scaled by √χ²/ndof when above 1) give the
   group's position, its amplitude-weighted rest wavelength what it is compared with.
   For a star the atmosphere's O₂ B, O₂ A and H₂O bands are measured against the
   atmosphere model (`features.measure_feature_shifts`), as the template calibration does.
5. **Fit**: (D2CCD, shift) by weighted least squares with the Gaussian prior on D and
   leave-one-out rejection (`solution.fit_distance_and_shift`, `solution.reject_outliers`),
   measurement and fit iterated ``iterations`` times; the candidate with the most lines
   (then the lowest χ²) wins.

Every loop is bounded: the grid, the candidates, the iterations, each group's fit
evaluations. Fewer than ``min_lines`` lines (the two unknowns + 1) raise `ValueError`, which
the chain turns into the header's distance kept (``WAVECAL = 'prior'``) and one warning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
from astropy.table import Table
from scipy.optimize import least_squares

from atmospec.spectro.psf import moffat1d_fwhm
from atmospec.spectro.wavelength.features import (
    CHISQ_UNIT,
    LINE_COLUMNS,
    FeatureFitConfig,
    measure_feature_shifts,
)
from atmospec.spectro.wavelength.lines import (
    LINE_MODES,
    TELLURIC_FEATURES,
    Line,
    in_vacuum,
    rest_lines,
)
from atmospec.spectro.wavelength.peaks import PeakDetectionConfig, Peaks, detect_peaks
from atmospec.spectro.wavelength.solution import (
    DispersionLaw,
    PositionFit,
    WavelengthSolution,
    fit_distance_and_shift,
    reject_outliers,
    wavelength_solution,
)

__all__ = ["LINE_MODES", "LineCalibrationConfig", "calibrate_on_lines", "choose_kinds"]

#: The sign of a kind's lines against the continuum.
_SIGN = MappingProxyType({"emission": 1, "absorption": -1})
_DTYPES = (str, float, float, float, float, float, float, float, float, str)


@dataclass(frozen=True)
class _Entry:
    """A catalogue line in one diffraction order: where the law puts it is ``D g + s``."""

    line: Line
    """The line (vacuum wavelength)."""
    order: int
    """Diffraction order of its image."""
    g: float
    """Its offset from the zeroth order for D = 1 mm, pixels."""

    @property
    def name(self) -> str:
        return self.line.name if self.order == 1 else f"{self.line.name}(order {self.order})"

    @property
    def label(self) -> str:
        return self.line.label if self.order == 1 else f"{self.line.label} (order {self.order})"


@dataclass(frozen=True)
class LineCalibrationConfig:
    """How `calibrate_on_lines` detects, identifies and measures the lines."""

    detection: PeakDetectionConfig = field(default_factory=PeakDetectionConfig)
    """Continuum and peak detection."""
    n_sigma: float = 3.0
    """Half-range of the D2CCD scan of the identification, in prior standard deviations."""
    shift_range_px: float = 10.0
    """Half-range of the pixel-shift scan of the identification, pixels (the measured zeroth
    order is where the law starts, to its centroid error and the PSF's asymmetry)."""
    match_tolerance_fwhm: float = 0.5
    """Width of the Gaussian kernel that scores a detection against a predicted line, in
    resolution FWHM (a blend's peak sits up to ~half a FWHM from its strongest line)."""
    prior_weight: float = 0.05
    """Weight of ``((D − D₀)/σ_D)²`` against one matched detection in the scan's score: a
    tie-breaker, the lines decide."""
    n_candidates: int = 3
    """Distinct best nodes of the scan refined and compared."""
    min_lines: int = 3
    """Fewest lines (or line groups) for a solution: the two unknowns + 1."""
    group_separation_fwhm: float = 2.0
    """Lines closer than this, in resolution FWHM, are fitted together as one group."""
    merge_fwhm: float = 0.3
    """Lines of a group closer than this, in resolution FWHM, are one profile at their mean
    wavelength (an error of at most a sixth of a FWHM on a blend the data cannot split)."""
    window_fwhm: float = 2.5
    """Half-window fitted beyond a group's outer lines, in resolution FWHM."""
    max_shift_fwhm: float = 0.75
    """Bound of a group's shift from its predicted position, in resolution FWHM."""
    max_width_scale: float = 5.0
    """Largest width of a line relative to the PSF (broad stellar Balmer lines)."""
    min_line_snr: float = 5.0
    """A group counts when its strongest line's amplitude, of the kind's sign, exceeds this
    many standard deviations."""
    clip_sigma: float = 4.0
    """Leave-one-out rejection threshold of the (D2CCD, shift) fit, standard deviations."""
    iterations: int = 3
    """Measure-and-fit passes: one per candidate, the rest for the best candidate."""
    second_order: bool = True
    """Emission lines' second-order images are catalogue lines too, on their own law
    (``u = D g₂(λ) + s``): holo4_003 sends up to 80 % of the first order's light at 400 nm
    into order 2, where first-order 800 nm lands, and an unlisted bright peak there would be
    taken for a red line."""
    max_evaluations: int = 60
    """Most model evaluations of one group's nonlinear fit (shift, width)."""
    err_floor_nm: float = 0.03
    """Added in quadrature to each line's position error, nm (rest-wavelength and blend
    systematics)."""
    wavelength_range_nm: tuple[float, float] = (360.0, 1000.0)
    """Only lines predicted inside this range are used (the blue edge is faint; beyond
    1000 nm the sensor fades)."""
    telluric: bool = True
    """For an absorption spectrum, also measure the O₂ B, O₂ A and H₂O bands against the
    atmosphere model (when a template is given)."""
    max_telluric_variation: float = 0.01
    """A line group whose fitted window sees the atmosphere's transmission (at the
    resolution) depart from a straight line by more than this fraction is not used: inside
    the O₂ A, O₂ B or H₂O bands the atmosphere bends a line's profile and the continuum
    under it (an [S III] 953 nm line moves by ~0.8 nm). Needs the atmosphere
    (``atmosphere`` of `calibrate_on_lines`)."""


@dataclass(frozen=True, eq=False)
class _Data:
    """The spectrum as the line calibration sees it (sorted by position)."""

    law: DispersionLaw
    """The spectrum's dispersion law."""
    u: np.ndarray
    """Distance of each sample from the zeroth order, pixels, increasing."""
    flux: np.ndarray
    """Flux per sample."""
    err: np.ndarray
    """Its errors."""
    gamma: np.ndarray
    """PSF Moffat γ per sample, pixels."""
    alpha: np.ndarray
    """PSF Moffat index per sample."""
    fwhm_px: float
    """Median resolution (PSF FWHM), pixels."""
    d2ccd_prior_mm: float
    """Centre of the prior on D2CCD, mm."""
    d2ccd_sigma_mm: float
    """Its width, mm."""
    telluric: tuple[np.ndarray, np.ndarray] | None
    """The atmosphere's expected spectrum (O₂ and H₂O bands of a star), or None."""
    atmosphere: tuple[np.ndarray, np.ndarray] | None
    """The atmosphere's transmission at the resolution (lines in its bands left out)."""
    config: LineCalibrationConfig
    """Settings."""

    @property
    def usable(self) -> np.ndarray:
        return np.isfinite(self.flux) & np.isfinite(self.err) & (self.err > 0)


def choose_kinds(peaks: Peaks, mode: str) -> tuple[str, ...]:
    """The kinds of lines to try, in order.

    Parameters
    ----------
    peaks : Peaks
        The detections.
    mode : str
        ``auto``: emission first if its peaks' summed significance exceeds the dips',
        absorption first otherwise, then the other; ``emission`` or ``absorption``: that one.

    Returns
    -------
    tuple of str
    """
    if mode not in LINE_MODES:
        raise ValueError(f"lines {mode!r} is not one of {', '.join(LINE_MODES)}")
    if mode != "auto":
        return (mode,)
    emission = float(np.sum(peaks.snr[peaks.snr > 0]))
    absorption = float(-np.sum(peaks.snr[peaks.snr < 0]))
    return ("emission", "absorption") if emission > absorption else ("absorption", "emission")


def calibrate_on_lines(law: DispersionLaw, distance_px: np.ndarray, flux: np.ndarray,
                       flux_err: np.ndarray, gamma_px: np.ndarray, alpha: np.ndarray,
                       d2ccd_prior_mm: float, d2ccd_sigma_mm: float, mode: str = "auto",
                       config: LineCalibrationConfig = LineCalibrationConfig(),
                       telluric_template: tuple[np.ndarray, np.ndarray] | None = None,
                       atmosphere: tuple[np.ndarray, np.ndarray] | None = None
                       ) -> tuple[WavelengthSolution, str]:
    """Fit (D2CCD, pixel shift) on the emission or absorption lines a spectrum shows.

    Parameters
    ----------
    law : DispersionLaw
        The spectrum's dispersion law.
    distance_px, flux, flux_err : numpy.ndarray
        Distance of each sample from the zeroth order along the dispersion axis (pixels, one
        sample per detector row) and the spectrum there (per row: lines keep their pixel
        width).
    gamma_px, alpha : numpy.ndarray
        The PSF's Moffat γ (pixels) and index at each sample (the transverse profile, which
        is also the along-trace profile of an unresolved line).
    d2ccd_prior_mm, d2ccd_sigma_mm : float
        Gaussian prior on D (the header's distance), mm.
    mode : str
        ``auto``, ``emission`` or ``absorption`` (`choose_kinds`).
    config : LineCalibrationConfig
        Settings.
    telluric_template : tuple of numpy.ndarray, optional
        ``(wavelength nm, flux)`` of the atmosphere's expected spectrum
        (`atmospec.spectro.wavelength.calibration.expected_spectrum` without an SED): an
        absorption spectrum's O₂ and H₂O bands are then measured against it.
    atmosphere : tuple of numpy.ndarray, optional
        ``(wavelength nm, transmission)`` of the atmosphere at the resolution
        (`atmospec.spectro.wavelength.calibration.absorption_template` without an SED): lines
        inside its bands are left out (``max_telluric_variation``).

    Returns
    -------
    solution : WavelengthSolution
        Its ``lines`` table lists every line group measured (``Used`` those kept), with
        ``Pull`` the position residual over its error.
    kind : str
        ``emission`` or ``absorption``: the lines calibrated on.

    Raises
    ------
    ValueError
        Fewer than ``config.min_lines`` lines identified and measured in every kind tried.
    """
    u = np.asarray(distance_px, dtype=np.float64)
    order = np.argsort(u)
    fwhm = moffat1d_fwhm(np.asarray(gamma_px, dtype=np.float64),
                         np.asarray(alpha, dtype=np.float64))
    data = _Data(law=law, u=u[order], flux=np.asarray(flux, dtype=np.float64)[order],
                 err=np.asarray(flux_err, dtype=np.float64)[order],
                 gamma=np.asarray(gamma_px, dtype=np.float64)[order],
                 alpha=np.asarray(alpha, dtype=np.float64)[order],
                 fwhm_px=float(np.nanmedian(fwhm)), d2ccd_prior_mm=float(d2ccd_prior_mm),
                 d2ccd_sigma_mm=float(d2ccd_sigma_mm), telluric=telluric_template,
                 atmosphere=atmosphere, config=config)
    ok = data.usable
    if ok.sum() < 20:
        raise ValueError(f"line calibration: {int(ok.sum())} usable samples, at least 20 "
                         "needed")
    peaks, _ = detect_peaks(data.u[ok], data.flux[ok], data.err[ok], data.fwhm_px,
                            config.detection)
    reasons = []
    for kind in choose_kinds(peaks, mode):
        try:
            solution = _solve(data, peaks.of_sign(_SIGN[kind]), kind)
        except ValueError as exc:
            reasons.append(f"{kind}: {exc}")
            continue
        # The positions were measured on sorted samples; the law gives every input sample.
        final = wavelength_solution(law, u, solution.fit, solution.table, solution.p,
                                    solution.g, solution.sig, solution.err_nm, solution.used)
        return final, kind
    raise ValueError("; ".join(reasons))


@dataclass(frozen=True, eq=False)
class _Solved:
    """One candidate's final fit and the measurements it rests on."""

    fit: PositionFit
    """The last (D2CCD, shift) fit."""
    table: Table
    """``LINES`` rows of the groups measured."""
    p: np.ndarray
    """Their positions, pixels."""
    g: np.ndarray
    """Their offsets for D = 1 mm, pixels."""
    sig: np.ndarray
    """Their position errors, pixels."""
    err_nm: np.ndarray
    """The same in nm."""
    used: np.ndarray
    """Kept by the outlier rejection."""

    @property
    def score(self) -> tuple[int, float]:
        """Lines kept, then minus the χ² per degree of freedom: larger is better."""
        dof = max(int(self.used.sum()) - 1, 1)
        return int(self.used.sum()), -float(self.fit.chisq) / dof


def _solve(data: _Data, peaks: Peaks, kind: str) -> _Solved:
    """Identify the kind's lines among ``peaks`` and fit the law on them."""
    cfg = data.config
    lines = _entries(data, kind)
    candidates = _scan(data, peaks, _scan_entries(data, kind, lines))
    if not candidates:
        raise ValueError(f"{peaks.size} detection(s), no line identified")
    # Each candidate gets one measure-and-fit pass; the best is iterated.
    best: tuple[tuple[int, float], float, float] | None = None
    errors = []
    for d, s in candidates[:max(cfg.n_candidates, 1)]:
        try:
            solved = _refine(data, lines, kind, d, s, 1)
        except ValueError as exc:
            errors.append(str(exc))
            continue
        if best is None or solved.score > best[0]:
            best = (solved.score, float(solved.fit.params[0]), float(solved.fit.params[1]))
    if best is None:
        raise ValueError(errors[0] if errors else "no solution")
    return _refine(data, lines, kind, best[1], best[2], max(cfg.iterations - 1, 1))


def _entries(data: _Data, kind: str) -> tuple[_Entry, ...]:
    """The kind's lines in vacuum, in order 1 (and 2 for emission, ``second_order``)."""
    orders = (1, 2) if kind == "emission" and data.config.second_order else (1,)
    out = []
    for order in orders:
        for ln in in_vacuum(rest_lines(kind)):
            g = float(data.law.unit_offset_px(ln.wavelength_nm, order))
            if math.isfinite(g):
                out.append(_Entry(ln, order, g))
    return tuple(sorted(out, key=lambda e: e.g))


def _scan_entries(data: _Data, kind: str, lines: tuple[_Entry, ...]) -> tuple[_Entry, ...]:
    """The identification's catalogue: the kind's lines and, for a star seen through the
    atmosphere (``absorption`` with ``telluric`` and its template), the O₂ B, O₂ A and H₂O
    bands. They are a star's deepest dips; a scan blind to them pins the stellar lines on
    them (the real CTIO HD111980 frame: Hα on O₂ B, D2CCD 0.2 mm and the shift 15 px off,
    two lines measured). They are measured against the atmosphere model (`_telluric`), not
    as lines."""
    if kind != "absorption" or not data.config.telluric or data.telluric is None:
        return lines
    bands = [_Entry(ln, 1, g) for ln in in_vacuum(TELLURIC_FEATURES)
             if math.isfinite(g := float(data.law.unit_offset_px(ln.wavelength_nm, 1)))]
    return tuple(sorted((*lines, *bands), key=lambda e: e.g))


def _scan(data: _Data, peaks: Peaks, lines: Sequence[_Entry]) -> list[tuple[float, float]]:
    """Candidate (D, s) of the identification, best first (see the module notes)."""
    cfg = data.config
    if peaks.size == 0:
        return []
    ok = data.usable
    u_lo, u_hi = float(data.u[ok].min()), float(data.u[ok].max())
    g = np.array([e.g for e in lines])
    if g.size == 0:
        return []
    tol = cfg.match_tolerance_fwhm * data.fwhm_px
    d0, sd = data.d2ccd_prior_mm, data.d2ccd_sigma_mm
    d_step = 0.5 * tol / max(float(np.max(np.abs(g))), 1e-9)
    n_d = max(math.ceil(cfg.n_sigma * sd / d_step), 1)
    ds = d0 + d_step * np.arange(-n_d, n_d + 1)
    s_step = 0.5 * tol
    n_s = max(math.ceil(cfg.shift_range_px / s_step), 1)
    ss = s_step * np.arange(-n_s, n_s + 1)
    up = peaks.position_px
    wp = np.log1p(np.abs(peaks.snr) / cfg.detection.threshold_sigma)
    score = np.empty((ds.size, ss.size))
    for k, d in enumerate(ds):
        pred = d * g
        inside = (pred > u_lo - cfg.shift_range_px) & (pred < u_hi + cfg.shift_range_px)
        delta = up[:, None] - pred[None, inside]                      # (peaks, lines)
        kern = np.exp(-0.5 * ((delta[None] - ss[:, None, None]) / tol) ** 2)
        score[k] = (kern * wp[None, :, None]).max(axis=1).sum(axis=1)
        score[k] -= cfg.prior_weight * ((d - d0) / sd) ** 2
    out = []
    work = score.copy()
    for _ in range(max(cfg.n_candidates, 1)):
        k, j = np.unravel_index(int(np.argmax(work)), work.shape)
        if not np.isfinite(work[k, j]) or work[k, j] <= 0:
            break
        out.append((float(ds[k]), float(ss[j])))
        # The nodes around a maximum are the same solution: suppress them.
        work[max(k - 4, 0):k + 5, max(j - 4, 0):j + 5] = -np.inf
    # Each candidate is moved onto the detections it matches (least squares, the prior on D).
    refined = []
    for d, s in out:
        pred = d * g + s
        dist = np.abs(up[:, None] - pred[None, :])
        best_peak = np.argmin(dist, axis=0)
        close = dist[best_peak, np.arange(g.size)] < 1.5 * tol
        if close.sum() >= 2:
            fit = fit_distance_and_shift(g[close], up[best_peak[close]],
                                         np.full(int(close.sum()), tol), d0, sd)
            d, s = float(fit.params[0]), float(fit.params[1])
        refined.append((d, s))
    return refined


def _groups(entries: Sequence[_Entry], d: float, separation_px: float
            ) -> list[tuple[_Entry, ...]]:
    """Entries sorted by position, consecutive ones closer than the separation together."""
    out: list[list[_Entry]] = []
    for e in sorted(entries, key=lambda x: x.g):
        if out and (e.g - out[-1][-1].g) * d < separation_px:
            out[-1].append(e)
        else:
            out.append([e])
    return [tuple(g) for g in out]


def _refine(data: _Data, lines: Sequence[_Entry], kind: str, d: float, s: float,
            iterations: int) -> _Solved:
    """Measure the lines at (D, s), fit, ``iterations`` times; the last fit and its
    measurements."""
    cfg = data.config
    law, u = data.law, data.u
    ok = data.usable
    lo, hi = cfg.wavelength_range_nm
    u_lo, u_hi = float(u[ok].min()), float(u[ok].max())
    fit = None
    for _ in range(max(iterations, 1)):
        lam_u = law.wavelength_nm(u, d, s)
        dldu = float(np.nanmedian(np.abs(np.gradient(lam_u, u))))
        fwhm_nm = data.fwhm_px * dldu
        # On the spectrum, where its first order's wavelengths are in the range.
        on = [e for e in lines if u_lo < d * e.g + s < u_hi
              and lo < float(law.wavelength_nm(d * e.g, d)) < hi]
        rows, p, g, sig, err_nm = [], [], [], [], []
        for group in _groups(on, d, cfg.group_separation_fwhm * data.fwhm_px):
            m = _measure_group(data, group, kind, d, s)
            if m is not None:
                row, pos, gg, sg, en = m
                rows.append(row)
                p.append(pos)
                g.append(gg)
                sig.append(sg)
                err_nm.append(en)
        if kind == "absorption" and cfg.telluric and data.telluric is not None:
            for row, pos, gg, sg, en in _telluric(data, lam_u, fwhm_nm, d, s):
                rows.append(row)
                p.append(pos)
                g.append(gg)
                sig.append(sg)
                err_nm.append(en)
        if len(rows) < cfg.min_lines:
            raise ValueError(f"{len(rows)} line(s) measured, {cfg.min_lines} needed")
        pa, ga, sa = np.array(p), np.array(g), np.array(sig)
        used = reject_outliers(ga, pa, sa, data.d2ccd_prior_mm, data.d2ccd_sigma_mm,
                               cfg.clip_sigma, cfg.min_lines)
        if used.sum() < cfg.min_lines:
            raise ValueError(f"{int(used.sum())} line(s) agree, {cfg.min_lines} needed")
        fit = fit_distance_and_shift(ga[used], pa[used], sa[used], data.d2ccd_prior_mm,
                                     data.d2ccd_sigma_mm)
        d, s = float(fit.params[0]), float(fit.params[1])
    table = Table(rows=rows, names=LINE_COLUMNS, dtype=_DTYPES)
    for col in ("Tabulated", "Detected", "Shift", "Err", "FWHM"):
        table[col].unit = "nm"
    table["Chisq"].unit = CHISQ_UNIT
    return _Solved(fit=fit, table=table, p=pa, g=ga, sig=sa, err_nm=np.array(err_nm),
                   used=used)


def _components(group: tuple[_Entry, ...], d: float, merge_px: float) -> np.ndarray:
    """Offsets ``g`` of a group's fitted components: entries closer than ``merge_px`` are one
    component at their mean (two profiles that close make the amplitudes degenerate: Ca II H
    and Hε, 0.16 nm apart)."""
    out: list[list[float]] = []
    for e in group:
        if out and (e.g - out[-1][-1]) * d < merge_px:
            out[-1].append(e.g)
        else:
            out.append([e.g])
    return np.array([sum(c) / len(c) for c in out])


def _profiles(x: np.ndarray, centres: np.ndarray, gamma: float, alpha: float,
              shift: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Moffat profiles ``(1 + t²)^(−α)`` at ``t = (x − c − δ)/(scale γ)`` (lines × samples)
    and their derivative in t."""
    t = (x[None, :] - centres[:, None] - shift) / (scale * gamma)
    q = 1.0 + t * t
    prof = q ** (-alpha)
    return prof, t, -2.0 * alpha * t * prof / q


def _measure_group(data: _Data, group: tuple[Line, ...], kind: str, d: float, s: float
                   ) -> tuple[tuple, float, float, float, float] | None:
    """Fit one group of lines where the law (D, s) puts them (see the module notes).

    Returns the ``LINES`` row, the position (pixels), its ``g`` (offset per mm of D), its
    error in pixels and in nm — or None when the group is not seen."""
    cfg = data.config
    law = data.law
    fw = data.fwhm_px
    gl = _components(group, d, cfg.merge_fwhm * fw)
    centres = d * gl + s
    sign = _SIGN[kind]
    fit = _fit_window(data, centres, cfg.window_fwhm * fw, sign, None)
    if fit is not None and fit[1] > 1.3:
        # A broad line (a star's Balmer wings): the window grows with it, once.
        fit = _fit_window(data, centres, cfg.window_fwhm * fw * fit[1], sign, fit[0])
    if fit is None:
        return None
    shift, scale, amps, amp_snr, var_shift, chi2_red, gamma, alpha = fit
    k = int(np.argmax(amp_snr))
    # The group's position: its lines' positions weighted by their fitted amplitudes (only
    # those of the kind's sign count), the rest wavelength weighted alike.
    weight = np.clip(sign * amps, 0.0, None)
    weight = weight / weight.sum()
    g_eff = float(weight @ gl)
    # The first-order wavelength landing there: the rest wavelength for a lone line.
    lam_eff = float(law.wavelength_nm(g_eff, 1.0))
    pos = d * g_eff + s + shift
    err_px = math.sqrt(var_shift)
    dldu = abs(float(law.wavelength_nm(pos + 0.5, d, s) - law.wavelength_nm(pos - 0.5, d, s)))
    err_nm = math.hypot(err_px * dldu, cfg.err_floor_nm)
    fwhm_nm = float(moffat1d_fwhm(scale * gamma, alpha)) * dldu
    name = "+".join(e.name for e in group)
    label = "+".join(dict.fromkeys(e.label for e in group))
    row = (label, lam_eff, float(law.wavelength_nm(pos, d, s)), 0.0, err_nm, fwhm_nm,
           float(amps[k]), float(amp_snr[k]), chi2_red, name)
    return row, pos, g_eff, err_nm / dldu, err_nm


def _fit_window(data: _Data, centres: np.ndarray, half: float, sign: int,
                start: float | None) -> tuple | None:
    """Fit Moffat profiles at ``centres`` + a common shift (width scale free, amplitudes and
    a linear background linear) to the samples within ``half`` of the outer centres.

    Returns ``(shift, width scale, amplitudes, their signed S/N, shift variance, χ²/ndof,
    γ, α)``, or None when the window leaves the spectrum, crosses a telluric band, or the
    group is not seen (strongest amplitude of ``sign`` below ``min_line_snr``, or the shift
    at its bound)."""
    cfg = data.config
    law = data.law
    fw = data.fwhm_px
    lo, hi = centres.min() - half, centres.max() + half
    sel = data.usable & (data.u >= lo) & (data.u <= hi)
    x, y, e = data.u[sel], data.flux[sel], data.err[sel]
    n_amp = centres.size
    if x.size < 2 * (n_amp + 4) or data.u[0] > lo or data.u[-1] < hi:
        return None
    if data.atmosphere is not None:
        grid, trans = data.atmosphere
        lam_win = law.wavelength_nm(np.array([lo, hi]), data.d2ccd_prior_mm)
        inside = (grid >= lam_win.min()) & (grid <= lam_win.max())
        if inside.sum() > 2:
            # Departure from a straight line: Rayleigh and ozone slopes are harmless.
            lw, tw = grid[inside], trans[inside]
            dev = tw - np.polyval(np.polyfit(lw, tw, 1), lw)
            if np.max(np.abs(dev)) / np.mean(tw) > cfg.max_telluric_variation:
                return None
    mid = 0.5 * (lo + hi)
    gamma = float(np.median(data.gamma[sel]))
    alpha = float(np.median(data.alpha[sel]))
    w = 1.0 / e
    bound = cfg.max_shift_fwhm * fw

    def design(theta: np.ndarray) -> np.ndarray:
        prof, _, _ = _profiles(x, centres, gamma, alpha, theta[0], theta[1])
        return np.vstack([prof, np.ones_like(x), (x - mid) / (hi - lo)]).T

    def solve(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = design(theta) * w[:, None]
        try:  # normal equations: a few columns, well scaled (profiles ≤ 1, background ≤ 1)
            coef = np.linalg.solve(a.T @ a, a.T @ (y * w))
        except np.linalg.LinAlgError:
            coef = np.linalg.lstsq(a, y * w, rcond=None)[0]
        return coef, y * w - a @ coef

    if start is None:
        # A coarse scan of the shift (the identification is good to ~half a FWHM); a group
        # the scan's best node does not show at half the threshold is not fitted further.
        starts = np.linspace(-bound, bound, 9)
        trials = [solve(np.array([t, 1.0])) for t in starts]
        best = int(np.argmin([float(np.sum(r * r)) for _, r in trials]))
        coef, r = trials[best]
        a = design(np.array([starts[best], 1.0])) * w[:, None]
        chi2_red = float(np.sum(r * r)) / max(x.size - a.shape[1], 1)
        try:
            var0 = np.diag(np.linalg.inv(a.T @ a)) * max(chi2_red, 1.0)
        except np.linalg.LinAlgError:
            return None
        if not np.max(sign * coef[:n_amp] / np.sqrt(var0[:n_amp])) >= 0.5 * cfg.min_line_snr:
            return None
        start = float(starts[best])
    # The bounded nonlinear fit of (shift, width), the amplitudes solved at each step.
    res = least_squares(lambda th: solve(th)[1], x0=[float(np.clip(start, -bound, bound)), 1.0],
                        bounds=([-bound, 0.7], [bound, cfg.max_width_scale]),
                        x_scale=[0.1 * fw, 0.2], max_nfev=cfg.max_evaluations)
    shift, scale = (float(v) for v in res.x)
    coef, r = solve(res.x)
    amps = coef[:n_amp]
    _, t, dprof = _profiles(x, centres, gamma, alpha, shift, scale)
    # The full Jacobian (shift, width, amplitudes, background) for the shift's error.
    j_shift = (amps[:, None] * dprof * (-1.0 / (scale * gamma))).sum(axis=0)
    j_scale = (amps[:, None] * dprof * (-t / scale)).sum(axis=0)
    jac = np.column_stack([j_shift, j_scale, design(res.x)]) * w[:, None]
    chi2_red = float(np.sum(r * r)) / max(x.size - jac.shape[1], 1)
    try:
        var = np.diag(np.linalg.inv(jac.T @ jac)) * max(chi2_red, 1.0)
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(var)) or np.any(var <= 0):
        return None
    amp_snr = sign * amps / np.sqrt(var[2:2 + n_amp])
    if not np.max(amp_snr) >= cfg.min_line_snr or abs(shift) >= 0.98 * bound:
        return None
    return shift, scale, amps, amp_snr, float(var[0]), chi2_red, gamma, alpha


def _telluric(data: _Data, lam_u: np.ndarray, fwhm_nm: float, d: float, s: float
              ) -> list[tuple[tuple, float, float, float, float]]:
    """The atmosphere's bands of a star measured against the atmosphere model."""
    cfg = data.config
    grid, template = data.telluric
    ok = data.usable
    table = measure_feature_shifts(lam_u[ok], data.flux[ok], data.err[ok], grid, template,
                                   in_vacuum(TELLURIC_FEATURES), fwhm_nm, FeatureFitConfig())
    out = []
    for row in table:
        detected = float(row["Detected"])
        pos = float(data.law.unit_offset_px(detected)) * d + s
        dldu = abs(float(data.law.wavelength_nm(pos + 0.5, d, s)
                         - data.law.wavelength_nm(pos - 0.5, d, s)))
        err_nm = math.hypot(float(row["Err"]), cfg.err_floor_nm)
        g = float(data.law.unit_offset_px(float(row["Tabulated"])))
        out.append((tuple(row[c] for c in LINE_COLUMNS), pos, g, err_nm / dldu, err_nm))
    return out
