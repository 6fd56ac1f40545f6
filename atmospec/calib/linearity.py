"""Linearity correction from the PTC ramp: the linearizer product the ISR consumes.

The flat lamp is stable, so the true signal of each amp is proportional to the exposure
time: ``x = s·t``. The measured ramp (PTC mean against ``PTC_EXPTIME``) falls below that line
as the amplifier saturates softly. The slope ``s`` is fixed on the low-signal part of the
ramp, where the response is nearly linear — a fit ``μ = s·t + q·t²`` below
``slope_max_adu``, so that the small curvature already present there does not bias ``s`` —
then the correction ``Δ(μ) = s·t − μ`` is fitted as a function of the measured signal, up to
the PTC turnoff:

* ``POLYNOMIAL``: Δ = Σₖ cₖ μᵏ for k = 2 … order (``COEFFS`` = c₂, c₃, …);
* ``SPLINE``: a least-squares cubic spline of Δ(μ) (a few interior knots), tabulated on
  ``n_knots`` knots from 0 to the highest fitted point for the ISR's linear interpolation
  (``COEFFS`` = knot positions then values; held constant beyond the last knot).

This is exactly the form `atmospec.isr.linearity.Linearizer.correct` applies
(corrected = μ + Δ(μ)), on overscan-subtracted ADU, before the gain.

The product (`atmospec.calib.products.Linearizer`) is a FITS table, one row per amp: ``AMP``,
``TYPE``, ``COEFFS`` and diagnostics (``LIN_SLOPE``, ``LIN_MAXDEV`` before and ``LIN_RESID``
after correction); meta ``OBSTYPE='linearizer'`` and ``LINRESID``, the largest residual of
any amp. `build_linearizer` returns it with its verification, in memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
from astropy.table import Table
from scipy.interpolate import make_lsq_spline

from atmospec.calib.products.detector import detector_meta
from atmospec.calib.products.linearizer import LINEARIZER_COLUMNS, Linearizer
from atmospec.calib.products.ptc import Ptc
from atmospec.calib.verification import TestResult, VerificationReport
from atmospec.camera.description import Camera, load_camera
from atmospec.errors import BadInputError, ProcessingError
from atmospec.io import provenance_cards
from atmospec.isr.linearity import Linearizer as LinearityCorrection

log = logging.getLogger(__name__)

__all__ = [
    "LINEARIZER_COLUMNS",
    "AmpLinearity",
    "LinearityConfig",
    "apply_correction",
    "build_linearizer",
    "fit_linearity",
    "linearizer_table",
    "verify_linearizer",
]


@dataclass(frozen=True)
class LinearityConfig:
    """How the linearity correction is fitted."""

    kind: Literal["POLYNOMIAL", "SPLINE"] = "POLYNOMIAL"
    """Form of the correction (see the module docstring)."""
    order: int = 3
    """Highest power of the ``POLYNOMIAL`` correction (2 or more; 3 follows a quadratic
    response deficit to ≤ 0.01 % at 100 kADU, order 2 only to ~0.1 %)."""
    n_knots: int = 40
    """Knots of the tabulated ``SPLINE`` correction (the one at 0 included)."""
    spline_interior_knots: int = 2
    """Interior knots of the least-squares cubic spline fitted to the ramp (placed at
    quantiles of the ramp points; more follow finer structure but need more points)."""
    slope_max_adu: float = 50_000.0
    """Ramp points up to this mean fix the linear slope."""
    max_adu: float | None = None
    """Upper end of the fitted range, ADU; ``None``: each amp's PTC turnoff."""
    min_adu: float = 50.0
    """Ramp points below this mean are ignored (bias-level errors dominate)."""
    abs_error_adu: float = 0.3
    """Error floor of a ramp mean, ADU: residual bias-level error after overscan removal."""
    rel_error: float = 1.0e-4
    """Fractional error floor of a ramp mean: lamp and shutter stability."""
    resid_min_adu: float = 1000.0
    """Residual non-linearity is reported over points above this mean (fractional residuals
    at lower signal measure the bias level, not the amplifier)."""
    max_residual: float = 0.002
    """Verification limit on the largest fractional residual after correction."""


@dataclass
class AmpLinearity:
    """Linearity fit of one amp."""

    kind: str
    """``POLYNOMIAL`` or ``SPLINE``."""
    coeffs: np.ndarray
    """``COEFFS`` in the ISR format."""
    slope: float
    """Linear ramp slope, ADU/s."""
    used: np.ndarray
    """bool per ramp point: used by the fit."""
    max_deviation: float
    """Largest |μ/(s·t) − 1| over the used points above ``resid_min_adu``, uncorrected."""
    residual: float
    """Largest |(μ + Δ(μ))/(s·t) − 1| over the same points, after correction."""
    residual_rms: float
    """RMS of those corrected fractional residuals."""
    fit_max_adu: float
    """Upper end of the fitted range, ADU."""


def apply_correction(kind: str, coeffs: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Corrected signal ``μ + Δ(μ)`` with the ISR's own `Linearizer` (float64 input kept).

    Parameters
    ----------
    kind : str
        ``POLYNOMIAL`` or ``SPLINE``.
    coeffs : numpy.ndarray
        ``COEFFS`` in the ISR format.
    mean : numpy.ndarray
        Measured signal, ADU.

    Returns
    -------
    numpy.ndarray
        Corrected signal, ADU.
    """
    mean = np.asarray(mean, dtype=float)
    if kind == "POLYNOMIAL":
        # Same formula as Linearizer.correct, in float64 (its float32 is for images).
        powers = np.arange(2, 2 + len(coeffs))
        return mean + np.sum(np.asarray(coeffs)[:, None] * mean[None, :] ** powers[:, None],
                             axis=0)
    return LinearityCorrection((kind,), (np.asarray(coeffs, float),)).correct(mean, 0)


def _ramp_slope(t: np.ndarray, mean: np.ndarray, w: np.ndarray) -> float:
    """Slope at t → 0 of ``μ = s·t + q·t²`` (weighted least squares)."""
    design = np.stack([t, t * t], axis=1) * w[:, None]
    if len(t) < 3:  # too few points for a curvature: a line through the origin
        design = design[:, :1]
    return float(_solve(design, mean * w)[0])


def _solve(design: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least squares with unit-norm columns (μ³ reaches 1e15, t 1e1: keep it conditioned)."""
    norms = np.linalg.norm(design, axis=0)
    sol, *_ = np.linalg.lstsq(design / norms, target, rcond=None)
    return sol / norms


def _spline_coeffs(mu: np.ndarray, delta: np.ndarray, w: np.ndarray,
                   config: LinearityConfig) -> np.ndarray:
    """``SPLINE`` COEFFS: a least-squares cubic spline of Δ(μ), tabulated at the knots.

    The ISR interpolates linearly between knots, so the smooth fit is sampled densely: on a
    quadratic grid ``μ_max·(j/(n−1))²``, fine at low signal where a fractional error costs
    the least charge and coarse (2·μ_max/n) at the top, where Δ is smooth. Linear
    interpolation of a 2 % quadratic deficit on 40 such knots errs by < 1e-4 anywhere.
    """
    order = np.argsort(mu)
    # Δ(0) = 0 by definition (no signal, no correction): a heavily weighted anchor point.
    x = np.concatenate([[0.0], mu[order]])
    y = np.concatenate([[0.0], delta[order]])
    wx = np.concatenate([[100.0 * np.max(w)], w[order]])
    n_int = config.spline_interior_knots
    if len(x) < n_int + 5:
        raise ProcessingError(f"only {len(x) - 1} ramp points for a cubic spline with "
                              f"{n_int} interior knots")
    # Interior knots at quantiles of the (log-spaced) points: each spline piece has data.
    interior = x[np.round(np.linspace(0, len(x) - 1, n_int + 2)[1:-1]).astype(int)]
    knots = np.concatenate([[x[0]] * 4, interior, [x[-1]] * 4])
    spline = make_lsq_spline(x, y, knots, k=3, w=wx)
    nodes = x[-1] * np.linspace(0.0, 1.0, config.n_knots) ** 2
    values = spline(nodes)
    values[0] = 0.0
    return np.concatenate([nodes, values])


def fit_linearity(exptime: np.ndarray, mean: np.ndarray, max_adu: float,
                  config: LinearityConfig | None = None) -> AmpLinearity:
    """Fit one amp's linearity correction from its ramp.

    Parameters
    ----------
    exptime : numpy.ndarray
        Exposure time of each ramp point, s.
    mean : numpy.ndarray
        Mean signal of each point, ADU (overscan-subtracted, no linearity correction).
    max_adu : float
        Upper end of the fit (normally the PTC turnoff), ADU.
    config : LinearityConfig, optional
        Form of the correction and the fit ranges.

    Returns
    -------
    AmpLinearity

    Raises
    ------
    ProcessingError
        When the ramp has too few usable points for the requested correction.
    """
    config = config or LinearityConfig()
    t = np.asarray(exptime, float)
    mu = np.asarray(mean, float)
    used = np.isfinite(t) & np.isfinite(mu) & (t > 0) & (mu >= config.min_adu)
    if np.isfinite(max_adu):
        used &= mu <= max_adu
    sigma = np.hypot(config.abs_error_adu, config.rel_error * mu)
    low = used & (mu <= config.slope_max_adu)
    if low.sum() < 2:
        raise ProcessingError(f"only {int(low.sum())} ramp point(s) below "
                              f"{config.slope_max_adu:.0f} ADU to fix the linear slope")
    slope = _ramp_slope(t[low], mu[low], 1.0 / sigma[low])
    delta = slope * t - mu  # what the correction must add to each point
    mu_u, w = mu[used], 1.0 / sigma[used]
    if config.kind == "POLYNOMIAL":
        if config.order < 2:
            raise ValueError("polynomial linearity order must be at least 2")
        if used.sum() < config.order:
            raise ProcessingError(f"only {int(used.sum())} ramp points for an order "
                                  f"{config.order} correction")
        powers = np.arange(2, config.order + 1)
        design = mu_u[:, None] ** powers[None, :]
        coeffs = _solve(design * w[:, None], delta[used] * w)
    elif config.kind == "SPLINE":
        coeffs = _spline_coeffs(mu_u, delta[used], w, config)
    else:
        raise ValueError(f"unknown linearity type {config.kind!r}")
    corrected = apply_correction(config.kind, coeffs, mu)
    linear = slope * t
    report = used & (mu >= config.resid_min_adu)
    if not report.any():
        report = used
    before = mu[report] / linear[report] - 1.0
    after = corrected[report] / linear[report] - 1.0
    return AmpLinearity(
        kind=config.kind, coeffs=np.asarray(coeffs, float), slope=slope, used=used,
        max_deviation=float(np.max(np.abs(before))), residual=float(np.max(np.abs(after))),
        residual_rms=float(np.sqrt(np.mean(after**2))),
        fit_max_adu=float(np.max(mu_u)))


def linearizer_table(ptc: Ptc, camera: Camera | None = None,
                     config: LinearityConfig | None = None) -> Table:
    """Fit every amp's ramp and assemble the linearizer product table (not yet written).

    Parameters
    ----------
    ptc : Ptc
        PTC product with ``AMP``, ``PTC_MEAN``, ``PTC_EXPTIME`` and ``TURNOFF``.
    camera : Camera, optional
        Amp names; LATISS by default.
    config : LinearityConfig, optional
        Form and ranges of the correction.

    Returns
    -------
    astropy.table.Table
        One row per amp with the `LINEARIZER_COLUMNS`; meta ``OBSTYPE``, ``INSTRUME``,
        ``DETECTOR``, ``DETSER`` (`detector_meta`: ``camera``'s), ``CALIBDATE``, ``LINTYPE``,
        ``LINORDER``, ``NKNOTS``, ``LINRESID``, ``PTCFILE``.

    Raises
    ------
    BadInputError
        If the PTC lacks a column or an amplifier.
    """
    camera = camera or load_camera("latiss")
    config = config or LinearityConfig()
    table, name = ptc.table, ptc.name
    missing = {"AMP", "PTC_MEAN", "PTC_EXPTIME", "TURNOFF"} - set(table.colnames)
    if missing:
        raise BadInputError(name or None, f"PTC table lacks column(s) "
                                          f"{', '.join(sorted(missing))}")
    rows = {str(a).strip(): i for i, a in enumerate(table["AMP"])}
    out: dict[str, list] = {k: [] for k in ("AMP", "TYPE", "COEFFS", "LIN_SLOPE", "LIN_MAXDEV",
                                            "LIN_RESID", "LIN_RMS", "LIN_MAX_ADU",
                                            "LIN_USED")}
    for amp in camera.amp_names:
        if amp not in rows:
            raise BadInputError(name or None, f"PTC table has no row for amplifier {amp}")
        r = rows[amp]
        max_adu = config.max_adu if config.max_adu is not None else float(table["TURNOFF"][r])
        fit = fit_linearity(np.asarray(table["PTC_EXPTIME"][r]), np.asarray(table["PTC_MEAN"][r]),
                            max_adu, config)
        for key, value in (("AMP", amp), ("TYPE", fit.kind), ("COEFFS", fit.coeffs),
                           ("LIN_SLOPE", fit.slope), ("LIN_MAXDEV", fit.max_deviation),
                           ("LIN_RESID", fit.residual), ("LIN_RMS", fit.residual_rms),
                           ("LIN_MAX_ADU", fit.fit_max_adu), ("LIN_USED", fit.used)):
            out[key].append(value)
        log.info("%s: non-linearity %.3f %% before, %.4f %% after correction (max, up to "
                 "%.0f ADU)", amp, 100 * fit.max_deviation, 100 * fit.residual,
                 fit.fit_max_adu)
    lin = Table(out)
    lin.meta.update({
        "OBSTYPE": "linearizer",
        **detector_meta(camera),
        "CALIBDATE": str(table.meta.get("CALIBDATE", "")),
        "LINTYPE": config.kind,
        "LINORDER": config.order if config.kind == "POLYNOMIAL" else 0,
        "NKNOTS": config.n_knots if config.kind == "SPLINE" else 0,
        "LINRESID": float(np.max(lin["LIN_RESID"])),
        "PTCFILE": name,
    })
    return lin


def verify_linearizer(table: Table, config: LinearityConfig | None = None, *,
                      file: str = "") -> VerificationReport:
    """Per-amp check that the residual non-linearity after correction is small.

    Parameters
    ----------
    table : astropy.table.Table
        Linearizer product's table (with ``LIN_RESID``).
    config : LinearityConfig, optional
        ``max_residual`` limit.
    file : str
        Product file name for the report.

    Returns
    -------
    VerificationReport
        Test ``residual_nonlinearity`` per amp: largest fractional residual ≤ limit.
    """
    config = config or LinearityConfig()
    report = VerificationReport("linearity", file)
    for row in table:
        report.add(str(row["AMP"]).strip(), TestResult(
            "residual_nonlinearity", float(row["LIN_RESID"]), config.max_residual,
            "value <= threshold"))
    return report


def build_linearizer(ptc: Ptc, config: LinearityConfig | None = None, *,
                     camera: Camera | None = None, verify: bool = True
                     ) -> tuple[Linearizer, VerificationReport | None]:
    """Fit the linearizer from a PTC's ramp, and verify it.

    Parameters
    ----------
    ptc : Ptc
        PTC product (from `atmospec.calib.ptc.build_ptc`, or read from its file).
    config : LinearityConfig, optional
        Form and ranges of the correction.
    camera : Camera, optional
        Amp names; LATISS by default.
    verify : bool
        Verify the product (residual non-linearity per amp).

    Returns
    -------
    linearizer : Linearizer
        The product, its provenance cards (the PTC file, if it was read from one) in
        ``linearizer.provenance``.
    report : VerificationReport or None
        `verify_linearizer` of it (``file`` empty: set it when writing); ``None`` without
        ``verify``.
    """
    config = config or LinearityConfig()
    table = linearizer_table(ptc, camera, config)
    log.info("linearizer: largest residual non-linearity %.4f %%",
             100 * table.meta["LINRESID"])
    inputs = [ptc.source] if ptc.source else []
    product = Linearizer(table, provenance=tuple(provenance_cards("linearity", inputs, config)))
    report = verify_linearizer(table, config) if verify else None
    if report is not None and not report.passed:
        log.warning("linearizer verification failed: %s", ", ".join(report.failures()))
    return product, report
