"""Photon-transfer curve (PTC): per-amp gain, read noise and turnoff from flat pairs.

For each pair of flats taken at the same exposure time, each amp gives one PTC point:

* mean: the average of the two frames' sigma-clipped means over the central region of the
  amp, in ADU after overscan (and crosstalk) removal — no gain is applied;
* variance: half the sigma-clipped variance of the pair difference ``a − (μa/μb)·b``, which
  cancels everything fixed between the frames (flat-field pattern, PRNU, bias structure) and
  leaves the temporal noise: shot noise plus read noise, in ADU²;
* read noise: from the serial overscans of the pair (their difference, row means removed).

The points are fitted with the exponential approximation of Astier et al. 2019 (A&A 629,
A36, eq. 16), variance in ADU² against mean in ADU::

    C(μ) = (exp(2·a00·μ·g) − 1) / (2·a00·g²) + n / g²

with the gain ``g`` (e⁻/ADU), ``a00`` (brighter-fatter; here it also absorbs the curvature
that amplifier non-linearity gives the PTC) and ``n`` (e⁻², the noise at zero signal).
Points above the one of largest variance lie beyond the turnoff (saturated pixels lose their
shot noise), and the fit rejects, iteratively, points further than ``n_sigma_fit`` from the
model, which removes the points where saturation has started to pull the variance down. The
turnoff is the largest mean still used by the fit (as Rubin's cp_pipe defines it).

`build_ptc` returns the product (`atmospec.calib.products.Ptc`: a FITS binary table, one row
per amp, see `PTC_COLUMNS`) and its verification (`verify_ptc`, DMTN-101 style), in memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import lmfit
import numpy as np
from astropy.table import Table
from astropy.time import Time
from tqdm import tqdm

from atmospec.calib.inputs import raw_info
from atmospec.calib.products.calibdate import calib_date
from atmospec.calib.products.crosstalk import Crosstalk
from atmospec.calib.products.detector import detector_meta
from atmospec.calib.products.ptc import PTC_COLUMNS, Ptc
from atmospec.calib.verification import TestResult, VerificationReport
from atmospec.camera.description import Camera, load_camera
from atmospec.camera.raw import RawFrame, camera_for, read_raw
from atmospec.camera.translator import ObservationInfo
from atmospec.errors import BadInputError, ProcessingError
from atmospec.io import provenance_cards
from atmospec.isr.driver import IsrCalibrations, IsrConfig, run_isr
from atmospec.isr.gain import nominal_gains
from atmospec.isr.overscan import OverscanConfig
from atmospec.stats import clipped_mean_var, robust_sigma

log = logging.getLogger(__name__)

__all__ = [
    "PTC_COLUMNS",
    "AmpPtcFit",
    "PairStats",
    "PtcConfig",
    "PtcVerifyConfig",
    "astier_model",
    "build_ptc",
    "covariance_coefficients",
    "difference_covariances",
    "fit_ptc",
    "isr_regions",
    "measure_pair",
    "overscan_pair_variance",
    "pair_flats",
    "pair_statistics",
    "ptc_calibrations",
    "ptc_table",
    "region_shape",
    "verify_ptc",
]

@dataclass(frozen=True)
class PtcConfig:
    """How the PTC is measured and fitted."""

    min_pairs: int = 5
    """Fewest flat pairs accepted."""
    exptime_tolerance_s: float = 1.0e-3
    """Flats whose exposure times differ by less than this belong to the same level."""
    region_fraction: float = 0.8
    """Statistics use the central fraction of each amp in both directions (edges, the
    bias ramp of the first rows and roll-off are left out)."""
    n_sigma_pixels: float = 5.0
    """Pixel clipping threshold for means and variances (cosmic rays, hot pixels). At 5σ a
    Gaussian loses 6e-7 of its pixels and 1.5e-5 of its variance: no correction needed."""
    n_clip_iter: int = 3
    """Rounds of clipped mean and σ that set the clipping limits (on a 1-in-16 subsample;
    every pixel is then judged once against the converged limits)."""
    crosstalk: bool = True
    """Remove crosstalk (shipped LATISS matrix) before measuring: ghosts add ~0.1 % of the
    other amps' flat signal to the mean but almost nothing to the variance."""
    overscan: OverscanConfig = field(default_factory=OverscanConfig)
    """Overscan subtraction (and the overscan columns used for the read noise)."""
    n_sigma_fit: float = 5.0
    """PTC points further than this from the model (in units of their statistical error,
    scaled up by the robust scatter of the residuals when it exceeds 1) are rejected."""
    max_fit_iter: int = 10
    """Iterations of the fit-and-reject loop."""
    min_points: int = 5
    """Fewest PTC points an amp's fit needs (else its results are NaN)."""
    read_noise_source: Literal["overscan", "fit"] = "overscan"
    """``overscan``: READ_NOISE from the pairs' serial overscans (unbiased); ``fit``: from
    the fit's ``n``, which also holds the noise the overscan subtraction adds to every row
    and column (a few per cent more)."""
    max_pair_mismatch: float = 0.05
    """A pair whose two means differ by more than this fraction is logged (lamp drift)."""
    covariance_lags: int = 2
    """Largest lag, pixels along x and along y, of the covariances of each pair's
    difference (`difference_covariances`, ``PTC_COV``; Astier et al. 2019); 0 keeps only
    the variance."""


@dataclass(frozen=True)
class PtcVerifyConfig:
    """Acceptance limits of a PTC (DMTN-101)."""

    gain_tolerance: float = 0.05
    """Largest fractional difference between the measured and nominal gain."""
    read_noise_tolerance: float = 0.05
    """Largest fractional difference between the measured and nominal read noise."""
    min_turnoff_e: float = 90_000.0
    """Smallest acceptable turnoff, e⁻ (TURNOFF_E)."""


@dataclass
class PairStats:
    """PTC statistics of one flat pair, per amp (camera HDU order)."""

    exptime: float
    """Exposure time, s."""
    obs_ids: tuple[str, str]
    """OBSIDs of the two flats."""
    mean: np.ndarray
    """Mean signal, ADU: average of the two frames' clipped means."""
    var: np.ndarray
    """Clipped variance of the scaled difference / 2, ADU²."""
    n_pixels: np.ndarray
    """Pixels kept for the variance."""
    overscan_var: np.ndarray
    """Read-noise variance from the serial overscans, ADU²."""
    ratio: np.ndarray
    """Ratio of the two frames' means (lamp stability)."""
    date: Time | None = None
    """Start of the first exposure."""
    timings: dict[str, float] = field(default_factory=dict)
    """Wall time of each phase of the measurement, s."""
    cov: np.ndarray | None = None
    """``(n_amps, L + 1, L + 1)`` covariances of the scaled difference / 2, ADU², at lags
    ``(i, j)`` = (along x, along y) up to ``L`` = `PtcConfig.covariance_lags`
    (`difference_covariances`); ``[0, 0]`` is `var` up to the clipping. None: not
    measured."""


@dataclass
class AmpPtcFit:
    """Fit of one amp's PTC."""

    gain: float
    """Gain, e⁻/ADU."""
    gain_err: float
    """1σ error of the gain."""
    a00: float
    """a00, 1/e⁻."""
    a00_err: float
    """1σ error of a00."""
    noise: float
    """n, e⁻²: variance at zero signal (read noise² plus any constant noise)."""
    noise_err: float
    """1σ error of n."""
    turnoff: float
    """Largest mean used by the fit, ADU."""
    used: np.ndarray
    """bool per point: used by the final fit."""
    chi2: float
    """Reduced χ² of the final fit."""

    @classmethod
    def failed(cls, n_points: int) -> AmpPtcFit:
        """NaN results (too few usable points)."""
        nan = float("nan")
        return cls(nan, nan, nan, nan, nan, nan, nan, np.zeros(n_points, bool), nan)


# --------------------------------------------------------------------------- model


def astier_model(mean: np.ndarray, a00: float, gain: float, noise: float) -> np.ndarray:
    """PTC model of Astier et al. 2019 (eq. 16): variance (ADU²) at mean signal (ADU).

    Parameters
    ----------
    mean : numpy.ndarray
        Mean signal, ADU.
    a00 : float
        Pixel-area coefficient, 1/e⁻ (0 gives the Poisson line ``μ/g + n/g²``).
    gain : float
        Gain, e⁻/ADU.
    noise : float
        Variance at zero signal, e⁻².

    Returns
    -------
    numpy.ndarray
        ``(exp(2·a00·μ·g) − 1)/(2·a00·g²) + n/g²``.
    """
    mean = np.asarray(mean, dtype=float)
    x = 2.0 * a00 * gain * mean
    # expm1(x)/x → 1 as a00 → 0: the series avoids 0/0 and keeps full precision there.
    small = np.abs(x) < 1e-8
    ratio = np.where(small, 1.0 + 0.5 * x, np.expm1(x) / np.where(small, 1.0, x))
    return mean / gain * ratio + noise / gain**2


# --------------------------------------------------------------------------- pair statistics


def region_shape(camera: Camera, fraction: float) -> tuple[int, int]:
    """``(ny, nx)`` of the central region of an amp the PTC statistics use."""
    ny, nx = camera.data_bbox.shape
    my = round(ny * (1.0 - fraction) / 2)
    mx = round(nx * (1.0 - fraction) / 2)
    return ny - 2 * my, nx - 2 * mx


def _amp_regions(image: np.ndarray, camera: Camera, fraction: float) -> np.ndarray:
    """``(n_amps, ny·nx)`` float32 stack of the central region of every amp (assembled
    orientation: x along the serial register, y along the columns)."""
    ny, nx = camera.data_bbox.shape
    ry, rx = region_shape(camera, fraction)
    my, mx = (ny - ry) // 2, (nx - rx) // 2
    regions = [image[camera.amp_slices(a)][my: my + ry, mx: mx + rx]
               for a in camera.amplifiers]
    return np.stack(regions).reshape(camera.n_amps, -1).astype(np.float32, copy=False)


def difference_covariances(diff: np.ndarray, max_lag: int, n_sigma: float = 5.0
                           ) -> np.ndarray:
    """Covariances of each amp's difference image between pixels ``(i, j)`` apart.

    ``C_ij = <(d(x, y) − d̄)·(d(x + i, y + j) − d̄)>`` over the pairs of pixels both within
    ``n_sigma`` robust σ of the amp's mean (cosmic rays, defects left out), by direct
    products of the shifted image (for lags of a few pixels cheaper than an FFT, and exact).
    For a flat pair's difference ``a − b`` this is twice the covariance of one flat
    (Astier et al. 2019, A&A 629, A36, sect. 4): the pair's shot noise (``C_00``) and its
    correlations between neighbours (brighter-fatter: ``C_10``, ``C_01`` > 0).

    Parameters
    ----------
    diff : numpy.ndarray
        ``(n_amps, ny, nx)`` difference images (x along the serial register).
    max_lag : int
        Largest lag along each axis.
    n_sigma : float
        Clipping, robust σ.

    Returns
    -------
    numpy.ndarray
        ``(n_amps, max_lag + 1, max_lag + 1)`` float64, indexed ``[amp, i, j]``: ``i`` the
        lag along x, ``j`` along y; NaN where no pair of pixels is left.
    """
    n_amps = diff.shape[0]
    flat = diff.reshape(n_amps, -1)
    sub = flat[:, ::16].astype(np.float64)
    centre = np.median(sub, axis=1)
    sigma = np.maximum(robust_sigma(sub, axis=1), 1e-6)
    d = diff - centre.astype(diff.dtype)[:, None, None]
    keep = np.abs(d) <= (n_sigma * sigma).astype(diff.dtype)[:, None, None]
    d *= keep
    mean = d.sum(axis=(1, 2), dtype=np.float64) / np.maximum(keep.sum(axis=(1, 2)), 1)
    d -= mean.astype(d.dtype)[:, None, None]
    d *= keep
    ny, nx = diff.shape[1:]
    # The few pixels left out, as coordinates: each lag's count of pairs is its area less
    # the pairs they touch (counting them on the full boolean images would cost more than
    # the products themselves).
    bad_k, bad_y, bad_x = np.nonzero(~keep)
    out = np.full((n_amps, max_lag + 1, max_lag + 1), np.nan)
    for i in range(max_lag + 1):
        for j in range(max_lag + 1):
            a = (slice(None), slice(0, ny - j), slice(0, nx - i))
            b = (slice(None), slice(j, ny), slice(i, nx))
            first = (bad_y < ny - j) & (bad_x < nx - i)
            second = (bad_y >= j) & (bad_x >= i)
            both = np.intersect1d((bad_k[first] * ny + bad_y[first]) * nx + bad_x[first],
                                  (bad_k[second] * ny + bad_y[second] - j) * nx
                                  + bad_x[second] - i)
            count = ((ny - j) * (nx - i) - np.bincount(bad_k[first], minlength=n_amps)
                     - np.bincount(bad_k[second], minlength=n_amps)
                     + np.bincount(both // (ny * nx), minlength=n_amps))
            total = np.einsum("kyx,kyx->k", d[a], d[b], dtype=np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[:, i, j] = np.where(count > 0, total / count, np.nan)
    return out


def overscan_pair_variance(first: np.ndarray, second: np.ndarray, camera: Camera,
                           config: PtcConfig) -> np.ndarray:
    """Read-noise variance per amp from the two frames' raw serial overscans.

    The difference of the two overscans has no bias structure left; removing each row's mean
    also removes the two frames' bias levels and row drifts. That leaves ``2σ²`` per pixel,
    reduced by ``(m − 1)/m`` for ``m`` columns by the row-mean subtraction (corrected here).

    Parameters
    ----------
    first, second : numpy.ndarray
        ``(n_amps, ny, nx)`` raw segments of the two flats (before any ISR), ADU.
    camera : Camera
        Serial-overscan box.
    config : PtcConfig
        Overscan columns skipped at either end, clipping.

    Returns
    -------
    numpy.ndarray
        Read-noise variance σ² per amp, ADU².
    """
    box = camera.serial_overscan_bbox
    lo, hi = config.overscan.skip
    sl = (slice(None), slice(box.y0, box.y0 + box.ny), slice(box.x0 + lo, box.x0 + box.nx - hi))
    diff = first[sl].astype(np.float32) - second[sl].astype(np.float32)
    diff -= diff.mean(axis=2, keepdims=True)
    m = diff.shape[2]
    _, var, _ = clipped_mean_var(diff.reshape(camera.n_amps, -1), config.n_sigma_pixels,
                                  config.n_clip_iter)
    return var * m / (m - 1) / 2.0


def ptc_calibrations(camera: Camera, config: PtcConfig) -> IsrCalibrations:
    """The ISR inputs of the PTC: nominal gains (unused: no gain step) and crosstalk.

    Parameters
    ----------
    camera : Camera
        Amp count and nominal values.
    config : PtcConfig
        Whether crosstalk is corrected.

    Returns
    -------
    IsrCalibrations
    """
    xtalk = Crosstalk.default(camera).matrix(camera.n_amps) if config.crosstalk \
        else None
    return IsrCalibrations(gains=nominal_gains(camera), crosstalk=xtalk)


def isr_regions(raw: RawFrame, config: PtcConfig, calibs: IsrCalibrations) -> np.ndarray:
    """Central region of every amp after overscan (and crosstalk) removal, in ADU.

    Parameters
    ----------
    raw : RawFrame
        A flat; its segments are modified in place by the ISR.
    config : PtcConfig
        Region size, overscan and crosstalk options.
    calibs : IsrCalibrations
        From `ptc_calibrations`.

    Returns
    -------
    numpy.ndarray
        ``(n_amps, n_pixels)`` float32, camera HDU order.
    """
    steps = ("overscan", "crosstalk") if config.crosstalk else ("overscan",)
    # Only the pixels are used: no per-amp summary statistics.
    result = run_isr(raw, IsrConfig(steps=steps, overscan=config.overscan, amp_stats=False),
                     calibs)
    if result.exposure.unit != "adu":  # a PTC must never see a gain
        raise ProcessingError(f"{raw.path}: ISR for the PTC returned {result.exposure.unit}")
    return _amp_regions(result.exposure.image, raw.camera, config.region_fraction)


def pair_statistics(a: np.ndarray, b: np.ndarray, config: PtcConfig
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean and variance of a pair from the amps' regions (`isr_regions` of each flat).

    Parameters
    ----------
    a, b : numpy.ndarray
        ``(n_amps, n_pixels)`` regions of the two flats; ``a`` is overwritten.
    config : PtcConfig
        Clipping.

    Returns
    -------
    mean : numpy.ndarray
        Average of the two clipped means, ADU.
    var : numpy.ndarray
        Clipped variance of ``a − (μa/μb)·b``, halved, ADU².
    n_pixels : numpy.ndarray
        Pixels kept for the variance.
    ratio : numpy.ndarray
        ``μa/μb``.
    """
    mu_a, _, _ = clipped_mean_var(a, config.n_sigma_pixels, config.n_clip_iter)
    mu_b, _, _ = clipped_mean_var(b, config.n_sigma_pixels, config.n_clip_iter)
    # Scaling b to a's level cancels a lamp change between the two exposures, which would
    # otherwise leave a copy of the flat-field pattern in the difference.
    ratio = mu_a / np.where(mu_b != 0, mu_b, 1.0)
    a -= b * ratio.astype(np.float32)[:, None]
    _, dvar, npix = clipped_mean_var(a, config.n_sigma_pixels, config.n_clip_iter)
    return 0.5 * (mu_a + mu_b), dvar / 2.0, npix, ratio


def measure_pair(first: RawFrame, second: RawFrame, config: PtcConfig | None = None,
                 calibs: IsrCalibrations | None = None) -> PairStats:
    """PTC statistics of one flat pair.

    Parameters
    ----------
    first, second : RawFrame
        The two flats (same exposure time); their segments are modified in place by ISR.
    config : PtcConfig, optional
        Region, clipping, ISR options.
    calibs : IsrCalibrations, optional
        ISR inputs (crosstalk); built from the camera when omitted.

    Returns
    -------
    PairStats
        Per-amp mean (ADU), variance (ADU²), pixel count, overscan read-noise variance and
        the covariances of the difference at lags up to ``config.covariance_lags``.
    """
    config = config or PtcConfig()
    camera = first.camera
    calibs = calibs or ptc_calibrations(camera, config)
    t0 = time.perf_counter()
    # Before ISR: run_isr subtracts the overscan from the segments in place.
    overscan_var = overscan_pair_variance(first.segments, second.segments, camera, config)
    t1 = time.perf_counter()
    a = isr_regions(first, config, calibs)
    b = isr_regions(second, config, calibs)
    t2 = time.perf_counter()
    mean, var, npix, ratio = pair_statistics(a, b, config)
    # ``a`` is now the scaled difference: its covariances at small lags (brighter-fatter).
    cov = None
    if config.covariance_lags > 0:
        shape = (camera.n_amps, *region_shape(camera, config.region_fraction))
        cov = difference_covariances(a.reshape(shape), config.covariance_lags,
                                     config.n_sigma_pixels) / 2.0
    t3 = time.perf_counter()
    if np.any((np.abs(ratio - 1.0) > config.max_pair_mismatch) & (mean > 100.0)):
        log.warning("%s / %s: pair means differ by up to %.1f %% (lamp drift?)",
                    first.info.obs_id, second.info.obs_id, 100 * np.max(np.abs(ratio - 1)))
    exptime = float(first.info.exposure_time or 0.0)
    return PairStats(exptime, (first.info.obs_id, second.info.obs_id), mean, var, npix,
                     overscan_var, ratio, first.info.datetime_begin,
                     {"overscan noise": t1 - t0, "isr": t2 - t1, "statistics": t3 - t2},
                     cov)


# --------------------------------------------------------------------------- fit


def _initial_guess(mean: np.ndarray, var: np.ndarray) -> tuple[float, float]:
    """Gain and n (e⁻²) from a straight line through the lower half of the points."""
    order = np.argsort(mean)
    low = order[: max(2, len(order) // 2)]
    slope, intercept = np.polyfit(mean[low], var[low], 1)
    gain = 1.0 / slope if slope > 0 else 1.0
    return gain, max(intercept, 1.0) * gain**2


def _fit_once(mean: np.ndarray, var: np.ndarray, sigma: np.ndarray, guess: dict[str, float]
              ) -> lmfit.minimizer.MinimizerResult:
    params = lmfit.Parameters()
    params.add("a00", value=guess["a00"], min=-1e-4, max=1e-4)
    params.add("gain", value=guess["gain"], min=1e-3, max=1e3)
    params.add("noise", value=guess["noise"])

    def residual(p: lmfit.Parameters) -> np.ndarray:
        return (var - astier_model(mean, p["a00"].value, p["gain"].value,
                                   p["noise"].value)) / sigma

    return lmfit.minimize(residual, params, method="leastsq")


def fit_ptc(mean: np.ndarray, var: np.ndarray, n_pixels: np.ndarray,
            config: PtcConfig | None = None) -> AmpPtcFit:
    """Fit one amp's PTC with the Astier et al. 2019 exponential model.

    Parameters
    ----------
    mean, var : numpy.ndarray
        PTC points: mean (ADU) and variance (ADU²), one per pair.
    n_pixels : numpy.ndarray
        Pixels behind each variance: its statistical error is ``var·√(2/(n − 1))``.
    config : PtcConfig, optional
        Rejection threshold and iterations.

    Returns
    -------
    AmpPtcFit
        Parameters, their errors (scaled by the reduced χ²), the turnoff and the used points;
        NaN results when fewer than ``min_points`` points survive.
    """
    config = config or PtcConfig()
    mean = np.asarray(mean, float)
    var = np.asarray(var, float)
    n = len(mean)
    good = np.isfinite(mean) & np.isfinite(var) & (mean > 0) & (var > 0)
    if good.sum() < config.min_points:
        return AmpPtcFit.failed(n)
    # Beyond the point of largest variance, saturated pixels have lost their shot noise: the
    # curve has turned over and those points are never candidates.
    peak = np.argmax(np.where(good, var, -np.inf))
    cut = good & (mean <= mean[peak])
    sigma = var * np.sqrt(2.0 / np.maximum(np.asarray(n_pixels, float) - 1.0, 1.0))
    gain0, noise0 = _initial_guess(mean[cut], var[cut])
    guess = {"a00": 0.0, "gain": gain0, "noise": noise0}
    used = cut.copy()
    result = None
    for iteration in range(config.max_fit_iter):
        if used.sum() < config.min_points:
            log.warning("PTC fit: only %d points left after rejection", used.sum())
            return AmpPtcFit.failed(n)
        result = _fit_once(mean[used], var[used], sigma[used], guess)
        p = result.params
        guess = {k: p[k].value for k in guess}
        resid = (var - astier_model(mean, p["a00"].value, p["gain"].value,
                                    p["noise"].value)) / sigma
        # Statistical errors ignore any model mismatch: when the residuals scatter more
        # than that, the threshold widens with their robust spread.
        scale = max(1.0, 1.4826 * float(np.median(np.abs(resid[used]))))
        new_used = cut & (np.abs(resid) <= config.n_sigma_fit * scale)
        if np.array_equal(new_used, used):
            break
        log.debug("PTC fit iteration %d: %d -> %d points", iteration, used.sum(),
                  new_used.sum())
        used = new_used
    p = result.params

    def err(name: str) -> float:
        e = p[name].stderr
        return float(e) if e is not None else float("nan")

    return AmpPtcFit(
        gain=float(p["gain"].value), gain_err=err("gain"), a00=float(p["a00"].value),
        a00_err=err("a00"), noise=float(p["noise"].value), noise_err=err("noise"),
        turnoff=float(np.max(mean[used])), used=used, chi2=float(result.redchi))


def covariance_coefficients(mean: np.ndarray, cov: np.ndarray, gain: float,
                            n_pixels: np.ndarray, used: np.ndarray | None = None
                            ) -> np.ndarray:
    """The a_ij of Astier et al. 2019 from the covariances of a PTC's pairs.

    To second order in the signal μ (e⁻), the covariance of a flat between pixels ``(i,
    j)`` apart is ``C_ij = μ·δ_ij + a_ij·μ² + c_ij·μ³ + n_ij`` (their eq. 20 expanded; ``n_ij``
    the read noise's covariance, ``c_ij`` the next order, ``(2/3)[a⊗a]_ij`` for a pure
    brighter-fatter effect). The three coefficients are fitted by weighted least squares
    over the pairs below the turnoff, each covariance's error ∝ ``(μ + n_00)/√N`` (N its
    pixels): a_ij is the slope of ``C_ij/μ`` at small μ. a_00 < 0 (pixels that collect more
    charge shrink), a_10 and a_01 > 0 (their neighbours grow), and the a_ij sum to ~0.

    Parameters
    ----------
    mean : numpy.ndarray
        ``(n_pairs,)`` mean signal of each pair, ADU.
    cov : numpy.ndarray
        ``(n_pairs, L + 1, L + 1)`` covariances, ADU² (``PTC_COV``, lag along x first).
    gain : float
        e⁻/ADU.
    n_pixels : numpy.ndarray
        ``(n_pairs,)`` pixels of each measurement.
    used : numpy.ndarray, optional
        bool per pair: the points the PTC fit kept (those beyond the turnoff are not).

    Returns
    -------
    numpy.ndarray
        ``(L + 1, L + 1)`` a_ij, 1/e⁻; NaN with fewer than four usable pairs.
    """
    mean = np.asarray(mean, dtype=float)
    cov = np.asarray(cov, dtype=float)
    ok = np.isfinite(mean) & (mean > 0) & np.all(np.isfinite(cov), axis=(1, 2))
    if used is not None:
        ok &= np.asarray(used, dtype=bool)
    out = np.full(cov.shape[1:], np.nan)
    if ok.sum() < 4 or not (np.isfinite(gain) and gain > 0):
        return out
    mu = mean[ok] * gain
    c = cov[ok] * gain**2
    sigma = (mu + max(float(np.median(c[:, 0, 0] - mu)), 0.0)) \
        / np.sqrt(np.asarray(n_pixels, dtype=float)[ok])
    design = np.column_stack([np.ones_like(mu), mu**2, mu**3]) / sigma[:, None]
    # Scaled columns: μ² and μ³ differ by 10⁵ at 100 ke⁻; lstsq is happier at unit scale.
    scale = np.sqrt((design**2).sum(axis=0))
    for i in range(cov.shape[1]):
        for j in range(cov.shape[2]):
            y = c[:, i, j] - (mu if i == 0 and j == 0 else 0.0)
            coef, *_ = np.linalg.lstsq(design / scale, y / sigma, rcond=None)
            out[i, j] = coef[1] / scale[1]
    return out


# --------------------------------------------------------------------------- product


def ptc_table(pairs: Sequence[PairStats], camera: Camera | None = None,
              config: PtcConfig | None = None, *, filter_name: str = "") -> Table:
    """Fit every amp and assemble the PTC product table (not yet written).

    Parameters
    ----------
    pairs : sequence of PairStats
        Statistics of every pair (any order; sorted by exposure time here).
    camera : Camera, optional
        Amp names and count; LATISS by default.
    config : PtcConfig, optional
        Fit settings.
    filter_name : str
        Physical filter of the flats, recorded as ``FILTER``.

    Returns
    -------
    astropy.table.Table
        One row per amp with the `PTC_COLUMNS`; meta ``OBSTYPE``, ``INSTRUME``,
        ``DETECTOR``, ``DETSER`` (`detector_meta`), ``CALIBDATE``, ``NPAIRS``, ``FITTYPE``,
        ``RNSOURCE``.
    """
    camera = camera or load_camera("latiss")
    config = config or PtcConfig()
    pairs = sorted(pairs, key=lambda s: (s.exptime, s.obs_ids))
    if not pairs:
        raise ProcessingError("no flat pairs to fit")
    mean = np.array([s.mean for s in pairs]).T  # (n_amps, n_pairs)
    var = np.array([s.var for s in pairs]).T
    npix = np.array([s.n_pixels for s in pairs]).T
    os_var = np.array([s.overscan_var for s in pairs]).T
    exptime = np.array([s.exptime for s in pairs])
    n_lag = config.covariance_lags + 1
    # (n_amps, n_pairs, lag x, lag y); NaN for a pair measured without covariances.
    cov = np.stack([s.cov[:, :n_lag, :n_lag] if s.cov is not None
                    and s.cov.shape[1] >= n_lag else np.full((camera.n_amps, n_lag, n_lag),
                                                             np.nan)
                    for s in pairs], axis=1) if config.covariance_lags > 0 else None

    rows: dict[str, list] = {name: [] for name in PTC_COLUMNS
                             if name != "PTC_COV" or config.covariance_lags > 0}
    for i, amp in enumerate(camera.amp_names):
        fit = fit_ptc(mean[i], var[i], npix[i], config)
        # Overscan noise does not depend on the signal: the median over pairs is robust
        # to one odd pair; its error comes from the pair-to-pair scatter.
        ov = os_var[i][np.isfinite(os_var[i])]
        ov_med = float(np.median(ov)) if ov.size else float("nan")
        ov_err = (1.2533 * float(np.std(ov, ddof=1)) / np.sqrt(ov.size) if ov.size > 1
                  else float("nan"))
        rn_os_adu = np.sqrt(ov_med)
        g_rel = fit.gain_err / fit.gain
        if config.read_noise_source == "overscan":
            rn = rn_os_adu * fit.gain
            rn_rel = np.hypot(0.5 * ov_err / ov_med, g_rel)
        else:
            rn = np.sqrt(fit.noise) if fit.noise > 0 else float("nan")
            rn_rel = 0.5 * fit.noise_err / fit.noise if fit.noise > 0 else float("nan")
        values = {
            "AMP": amp, "GAIN": fit.gain, "GAIN_ERR": fit.gain_err, "READ_NOISE": rn,
            "READ_NOISE_ERR": rn * rn_rel, "TURNOFF": fit.turnoff,
            "TURNOFF_E": fit.turnoff * fit.gain, "A00": fit.a00, "A00_ERR": fit.a00_err,
            "NOISE_FIT": np.sqrt(fit.noise) if fit.noise > 0 else float("nan"),
            "OVERSCAN_NOISE": rn_os_adu, "FIT_CHI2": fit.chi2,
            "PTC_MEAN": mean[i], "PTC_VAR": var[i], "PTC_EXPTIME": exptime,
            "PTC_NPIX": npix[i], "PTC_USED": fit.used,
        }
        if cov is not None:
            values["PTC_COV"] = cov[i]
        for name, value in values.items():
            rows[name].append(value)
        log.info("%s: gain %.4f ± %.4f e-/ADU, read noise %.2f e-, turnoff %.0f ADU "
                 "(%d/%d points)", amp, fit.gain, fit.gain_err, rn, fit.turnoff,
                 fit.used.sum(), len(fit.used))
    table = Table(rows)
    for name, (_, description) in PTC_COLUMNS.items():
        if name in table.colnames:
            table[name].description = description
    dates = [s.date for s in pairs]
    table.meta.update({
        "OBSTYPE": "ptc",
        **detector_meta(camera),
        "CALIBDATE": calib_date(dates),
        "NPAIRS": len(pairs),
        "FITTYPE": "EXPAPPROXIMATION",
        "RNSOURCE": config.read_noise_source,
        "FILTER": filter_name,
    })
    return table


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class _Flat:
    """An input that passed the header checks."""

    path: Path
    """The raw file."""
    info: ObservationInfo
    """Its translated header."""


def _scan(path: Path, camera: Camera) -> _Flat:
    """Header checks of one input (cheap: the pixels are read later, pair by pair)."""
    info = raw_info(path)
    if info.instrument.lower() != camera.name.lower():
        raise BadInputError(path, f"instrument {info.instrument} is not {camera.name}")
    if info.detector is not None and info.detector != camera.detector:
        raise BadInputError(path, f"detector {info.detector}, the PTC is for {camera.label}")
    if info.image_type != "flat":
        raise BadInputError(path, f"IMGTYPE is {info.image_type!r}, not a flat: a PTC "
                                  "needs flat pairs")
    if info.exposure_time is None or not info.exposure_time > 0:
        raise BadInputError(path, f"flat has no positive EXPTIME ({info.exposure_time})")
    return _Flat(path, info)


def _inputs_camera(paths: Sequence[Path], skip_bad: bool) -> Camera:
    """The detector of the first usable input: the PTC's (inputs of another are refused)."""
    for path in paths:
        try:
            return camera_for(raw_info(path), path)
        except BadInputError as exc:
            if not skip_bad:
                raise
            log.warning("skipping %s", exc)
    raise BadInputError(None, "PTC: no usable raw flat")


def pair_flats(raws: Iterable[str | Path], camera: Camera | None = None,
               config: PtcConfig | None = None, *, skip_bad: bool = False
               ) -> list[tuple[Path, Path]]:
    """Check the inputs' headers and group them into pairs of equal exposure time.

    Parameters
    ----------
    raws : iterable of path
        Raw flat files.
    camera : Camera, optional
        Expected detector; by default that of the first usable input's header.
    config : PtcConfig, optional
        Exposure-time tolerance and the minimum number of pairs.
    skip_bad : bool
        Log and leave out unusable files (unreadable, not a flat, another camera, no
        partner) instead of raising.

    Returns
    -------
    list of (pathlib.Path, pathlib.Path)
        Pairs in order of exposure time; within a level, files pair in OBSID order.

    Raises
    ------
    BadInputError
        Naming the offending file; or when fewer than ``min_pairs`` pairs remain.
    """
    config = config or PtcConfig()
    paths = [Path(p) for p in raws]
    camera = camera or _inputs_camera(paths, skip_bad)
    flats: list[_Flat] = []
    for path in paths:
        try:
            flats.append(_scan(path, camera))
        except BadInputError as exc:
            if not skip_bad:
                raise
            log.warning("skipping %s", exc)
    flats.sort(key=lambda f: (f.info.exposure_time, f.info.obs_id))
    groups: list[list[_Flat]] = []
    for f in flats:
        if groups and f.info.exposure_time - groups[-1][0].info.exposure_time <= \
                config.exptime_tolerance_s:
            groups[-1].append(f)
        else:
            groups.append([f])
    pairs: list[tuple[Path, Path]] = []
    for group in groups:
        group.sort(key=lambda f: f.info.obs_id)
        for a, b in zip(group[0::2], group[1::2], strict=False):
            pairs.append((a.path, b.path))
        if len(group) % 2:
            lone = group[-1]
            exc = BadInputError(lone.path, f"flat with EXPTIME {lone.info.exposure_time} s "
                                           "has no partner of the same exposure time")
            if not skip_bad:
                raise exc
            log.warning("skipping %s", exc)
    _check_count(len(pairs), paths, config)
    return pairs


def _check_count(n_pairs: int, paths: Sequence[Path], config: PtcConfig) -> None:
    if n_pairs < config.min_pairs:
        parents = {p.parent for p in paths}
        where = parents.pop() if len(parents) == 1 else None
        raise BadInputError(where, f"{n_pairs} usable flat pair(s) among {len(paths)} "
                                   f"file(s): a PTC needs at least {config.min_pairs}")


def build_ptc(raws: Iterable[str | Path], config: PtcConfig | None = None, *,
              camera: Camera | None = None, skip_bad: bool = False, verify: bool = True,
              on_pair: Callable[[RawFrame, RawFrame], None] | None = None
              ) -> tuple[Ptc, VerificationReport | None]:
    """Measure and fit the PTC from raw flat pairs, and verify it.

    Pairs are read and reduced one at a time, so memory holds two raw frames at most.

    Parameters
    ----------
    raws : iterable of path
        Raw flat files: two per exposure time, at least ``min_pairs`` pairs.
    config : PtcConfig, optional
        Measurement and fit settings.
    camera : Camera, optional
        Expected detector; by default that of the first usable input's header.
    skip_bad : bool
        Log and leave out unusable files (and the pair of an unreadable one) instead of
        raising.
    verify : bool
        Verify the product.
    on_pair : callable, optional
        Called with each pair's two raws once read, before their reduction (which modifies
        them; the callable must not): further figures of the flats (EPER at every level)
        without reading them again.

    Returns
    -------
    ptc : Ptc
        The product, its provenance cards (the raws used) in ``ptc.provenance``.
    report : VerificationReport or None
        `verify_ptc` of it (``file`` empty: set it when writing); ``None`` without
        ``verify``.

    Raises
    ------
    BadInputError
        An unusable input (named), or too few pairs.
    """
    config = config or PtcConfig()
    paths = [Path(p) for p in raws]
    camera = camera or _inputs_camera(paths, skip_bad)
    pairs = pair_flats(paths, camera, config, skip_bad=skip_bad)
    calibs = ptc_calibrations(camera, config)
    stats: list[PairStats] = []
    used: list[Path] = []
    filters: set[str] = set()
    # A bar on a terminal (silent in logs and CI): two raw frames per pair, seconds each.
    for k, (pa, pb) in enumerate(tqdm(pairs, desc="PTC flat pairs", unit="pair",
                                      disable=None, leave=False)):
        try:
            first = read_raw(pa, camera)
            second = read_raw(pb, camera)
        except BadInputError as exc:
            if not skip_bad:
                raise
            log.warning("skipping the pair %s, %s: %s", pa.name, pb.name, exc)
            continue
        if on_pair is not None:
            on_pair(first, second)
        stats.append(measure_pair(first, second, config, calibs))
        filters.update((first.info.physical_filter, second.info.physical_filter))
        used.extend((pa, pb))
        del first, second
        log.info("pair %d/%d (%.3f s): median mean %.0f ADU", k + 1, len(pairs),
                 stats[-1].exptime, float(np.median(stats[-1].mean)))
    _check_count(len(stats), paths, config)
    if len(filters) > 1:
        log.warning("flats through several filters: %s", ", ".join(sorted(filters)))
    table = ptc_table(stats, camera, config, filter_name=",".join(sorted(filters)))
    product = Ptc(table, provenance=tuple(provenance_cards("ptc", used, config)))
    report = verify_ptc(table, camera) if verify else None
    if report is not None and not report.passed:
        log.warning("PTC verification failed: %s", ", ".join(report.failures()))
    return product, report


# --------------------------------------------------------------------------- verification


def verify_ptc(table: Table, camera: Camera | None = None,
               config: PtcVerifyConfig | None = None, *, file: str = "") -> VerificationReport:
    """DMTN-101 checks of a PTC: gain and read noise near nominal, turnoff high enough.

    Parameters
    ----------
    table : astropy.table.Table
        The PTC product's table.
    camera : Camera, optional
        Nominal gains and read noise; LATISS by default.
    config : PtcVerifyConfig, optional
        Limits.
    file : str
        Product file name for the report.

    Returns
    -------
    VerificationReport
        Per amp: ``gain_vs_nominal`` and ``read_noise_vs_nominal`` (fractional differences,
        ``|value| <= tolerance``) and ``turnoff_e`` (``value >= min_turnoff_e``). Call
        ``.write(product_path)`` for ``<stem>.verify.json``.
    """
    camera = camera or load_camera("latiss")
    config = config or PtcVerifyConfig()
    report = VerificationReport("ptc", file)
    rows = {str(a).strip(): i for i, a in enumerate(table["AMP"])}
    for i, name in enumerate(camera.amp_names):
        r = rows.get(name)
        nan = float("nan")
        gain = float(table["GAIN"][r]) if r is not None else nan
        rn = float(table["READ_NOISE"][r]) if r is not None else nan
        turnoff = float(table["TURNOFF_E"][r]) if r is not None else nan
        report.add(name, TestResult("gain_vs_nominal", gain / camera.nominal_gains[i] - 1.0,
                                    config.gain_tolerance, "|value| <= threshold"))
        report.add(name, TestResult("read_noise_vs_nominal",
                                    rn / camera.nominal_read_noise[i] - 1.0,
                                    config.read_noise_tolerance, "|value| <= threshold"))
        report.add(name, TestResult("turnoff_e", turnoff, config.min_turnoff_e,
                                    "value >= threshold", "electron"))
    return report
