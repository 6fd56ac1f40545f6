"""Verification of master bias, dark and flat, DMTN-101 / cp_verify style.

Rubin's cp_verify runs its tests on the inputs re-processed with the new master. Here the
tests are run on the product alone, which carries what they need: the image, and the
VARIANCE plane written by `atmospec.calib.combine` — the clipped scatter *between* the input
frames divided by their number. Anything identical in every frame (bias structure, hot
pixels, flat-field pattern) is absent from that scatter, so ``VARIANCE × NCOMBINE`` is the
per-frame noise left after subtracting (or dividing by) the master: the quantity cp_verify
measures on its residual images.

Per-frame noise of an amp, two ways (``n = NCOMBINE``, ``V`` the variance plane):

* robust ("with cosmic rays masked"): ``σ_r² = median(V·n) · (n−1) / median(χ²(n−1))``. The
  sample variances of Gaussian pixels scatter as σ²χ²(n−1)/(n−1), so the median, scaled by
  the median of that distribution, is σ² whatever a few outlying pixels do;
* plain ("without masking"): ``σ_p² = mean(V·n)`` over every good pixel: a cosmic ray left
  in one input gives its pixels a huge inter-frame variance and pulls this up.

For a median combination ``V`` holds the π/2 efficiency factor, which is taken out first.

Tests (per amp; good pixels are those without NO_DATA or BAD):

``mean_below_sigma`` (bias, dark)
    ``|clipped mean| ≤ clipped σ`` of the master's pixels: the residual level is
    undetectable pixel by pixel (for a dark: the dark current is below the master's noise,
    as on a cold LATISS sensor; a light leak or a warm sensor fails).
``noise_matches_read_noise`` (bias, dark)
    ``|σ_r / σ_exp − 1| ≤ 5 %`` with ``σ_exp`` the read noise (``ATM RDNOISE <amp>`` in the
    header: the PTC or nominal value the ISR used) with the noise each input's overscan
    subtraction added (`overscan_noise_factor`: +3.2 % on an unbinned LATISS frame, +6.5 %
    on a 2×2-binned one, whose overscans have half the pixels) — for a dark, combined in
    quadrature with the shot noise of its dark signal, ``mean × DARKTIME``. Comparing the
    master's own pixel σ × √n with the read noise instead would fail on any sensor with fixed
    bias structure (LATISS: ~1 e⁻ of column offsets, a ramp) as soon as n is large.
``cr_noise_consistent`` (bias, dark)
    ``σ_p / σ_r − 1 ≤ 5 %``: no cosmic-ray (or other transient) signal got into the master.
``dark_current`` (dark)
    Clipped mean dark current, e⁻/s, against ``max_dark_current`` (the LSST sensor
    requirement, 0.2 e⁻/s/pixel).
``sigma_below_poisson`` (flat)
    The noise of the *combined* flat in electrons (the sum of the ``n`` inputs), from the
    inter-frame scatter, ``√n · σ_r · FLATLVL · FLATNORM`` (σ_r in units of the normalised
    flat), is at most (1 + 5 %) × its Poisson expectation ``√(n·(μ + RN²))``, ``μ`` the
    amp's mean level of one input in e⁻ (DMTN-101: the flat's noise is consistent with
    Poisson statistics). The variance-to-mean ratio is the ratio of the gain used to the
    true gain, so a wrong gain fails too, as does any non-Poisson frame-to-frame change
    (a drifting illumination pattern). For a spectroscopic flat the large-scale
    illumination was divided out of both planes, which shifts the ratio by √(illumination
    / its median), within 2 % on LATISS.
``scatter_below_5pct`` (flat)
    ``|amp median / median of the amp medians − 1| ≤ 5 %``.

Detector-wide, for every product: ``no_data_fraction`` ≤ 1 % (pixels with no input).

`verify_frame` runs cp_verify's tests the other way, on one input re-processed with the
master (the EO run's biases and darks, `atmospec.calib.eo_run`): ``mean_below_sigma``,
``noise_matches_read_noise`` against the noise the residual should have, and
``cr_noise_consistent`` as the σ of every pixel against the clipped σ (for a dark, of every
pixel but its cosmic rays: cp_verify's CR-rejected noise).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy.special import erf, gammaincinv

from atmospec.calib.verification import TestResult, VerificationReport
from atmospec.camera.description import Camera, load_camera
from atmospec.errors import BadInputError
from atmospec.exposure import Exposure
from atmospec.isr.overscan import OverscanConfig, parallel_overscan_rows, serial_overscan_columns
from atmospec.stats import robust_sigma

log = logging.getLogger(__name__)

__all__ = ["FRAME_TESTS", "VerifyConfig", "overscan_noise_factor", "verify_bias",
           "verify_dark", "verify_flat", "verify_frame", "verify_product"]


@dataclass(frozen=True)
class VerifyConfig:
    """Thresholds of the verification tests."""

    clip_sigma: float = 3.0
    """Clipping of the per-amp mean and σ of the master's pixels, σ."""
    clip_iter: int = 3
    """Clipping iterations."""
    noise_tolerance: float = 0.05
    """``noise_matches_read_noise``: largest relative difference from the expected noise."""
    cr_noise_tolerance: float = 0.05
    """``cr_noise_consistent``: largest relative excess of the plain over the robust noise."""
    max_dark_current: float = 0.2
    """``dark_current``: largest mean dark current, e⁻/s (LSST sensor requirement)."""
    poisson_tolerance: float = 0.05
    """``sigma_below_poisson``: allowed relative excess over the Poisson expectation."""
    amp_scatter: float = 0.05
    """``scatter_below_5pct``: largest relative deviation of an amp's median."""
    max_no_data_fraction: float = 0.01
    """``no_data_fraction``: largest fraction of pixels without data."""


def verify_product(path: str | Path, config: VerifyConfig | None = None) -> VerificationReport:
    """Verify a master bias, dark or flat file, choosing the tests from its ``OBSTYPE``.

    Parameters
    ----------
    path : path
        Product file (`atmospec.calib.products.Bias`, `Dark` or `Flat`).
    config : VerifyConfig, optional
        Thresholds.

    Returns
    -------
    VerificationReport
        Not written: call ``report.write(path)``.

    Raises
    ------
    BadInputError
        If the file is unreadable or not a bias, dark or flat.
    """
    path = Path(path)
    exposure = Exposure.read(path)
    kind = str(exposure.metadata.get("OBSTYPE", "")).strip().lower()
    functions = {"bias": verify_bias, "dark": verify_dark, "flat": verify_flat}
    if kind not in functions:
        raise BadInputError(path, f"OBSTYPE {kind or 'missing'}: not a bias, dark or flat")
    return functions[kind](exposure, path.name, config, _product_camera(path, exposure))


def _product_camera(path: Path, exposure: Exposure) -> Camera:
    """The amp layout of a product file: its ``INSTRUME`` and ``DETECTOR`` at the binning
    whose detector has the image's shape (products carry no ``BINX``/``BINY``)."""
    h = exposure.metadata
    instrument = str(h.get("INSTRUME") or "latiss").strip()
    detector = str(h.get("DETECTOR") or "").strip() or None
    try:
        unbinned = load_camera(instrument, detector).unbinned
    except BadInputError as exc:
        raise BadInputError(path, exc.problem) from None
    for b in range(1, 9):
        try:
            camera = unbinned.binned(b, b)
        except ValueError:
            continue
        if camera.detector_shape == exposure.image.shape:
            return camera
    raise BadInputError(path, f"a {exposure.image.shape[1]}×{exposure.image.shape[0]} image is "
                              f"no binning of {unbinned.label} "
                              f"({unbinned.detector_shape[1]}×{unbinned.detector_shape[0]})")


def verify_bias(exposure: Exposure, file: str = "", config: VerifyConfig | None = None,
                camera: Camera | None = None, overscan: OverscanConfig | None = None
                ) -> VerificationReport:
    """Verification tests of a master bias (see the module docstring).

    Parameters
    ----------
    exposure : Exposure
        The master bias, e⁻.
    file : str
        Its file name, for the report.
    config : VerifyConfig, optional
        Thresholds.
    camera : Camera, optional
        Amp layout, at the master's binning; LATISS by default.
    overscan : OverscanConfig, optional
        The overscan subtraction of the inputs' ISR (the noise it adds is expected).

    Returns
    -------
    VerificationReport
    """
    return _verify_noise_product("bias", exposure, file, config or VerifyConfig(),
                                 camera or load_camera("latiss"), overscan or OverscanConfig())


def verify_dark(exposure: Exposure, file: str = "", config: VerifyConfig | None = None,
                camera: Camera | None = None, overscan: OverscanConfig | None = None
                ) -> VerificationReport:
    """Verification tests of a master dark, e⁻/s (see the module docstring).

    Parameters
    ----------
    exposure : Exposure
        The master dark (``DARKTIME`` in its header: mean dark time of the inputs).
    file : str
        Its file name.
    config : VerifyConfig, optional
        Thresholds.
    camera : Camera, optional
        Amp layout, at the master's binning.
    overscan : OverscanConfig, optional
        The overscan subtraction of the inputs' ISR (the noise it adds is expected).

    Returns
    -------
    VerificationReport
    """
    return _verify_noise_product("dark", exposure, file, config or VerifyConfig(),
                                 camera or load_camera("latiss"), overscan or OverscanConfig())


def verify_flat(exposure: Exposure, file: str = "", config: VerifyConfig | None = None,
                camera: Camera | None = None) -> VerificationReport:
    """Verification tests of a master flat (see the module docstring).

    Parameters
    ----------
    exposure : Exposure
        The normalised master flat (``FLATLVL``, ``FLATNORM``, ``NCOMBINE`` in its header).
    file : str
        Its file name.
    config : VerifyConfig, optional
        Thresholds.
    camera : Camera, optional
        Amp layout.

    Returns
    -------
    VerificationReport
    """
    config = config or VerifyConfig()
    camera = camera or load_camera("latiss")
    h = exposure.metadata
    report = VerificationReport("flat", file)
    n = int(h.get("NCOMBINE", 1))
    level = float(h.get("FLATLVL", np.nan)) * float(h.get("FLATNORM", 1.0))
    good = _good(exposure)
    medians = {}
    for i, amp in enumerate(camera.amplifiers):
        sl = camera.amp_slices(amp)
        pixels = exposure.image[sl][good[sl]]
        medians[amp.name] = float(np.median(pixels)) if pixels.size else np.nan
        mean, _ = _clipped_stats(pixels, config)
        sigma_rel = _frame_noise(exposure.variance[sl][good[sl]], n, h)[0]
        rn = _read_noise(h, amp.name, camera, i)
        mu = mean * level  # one input's level on this amp, e⁻
        value = np.sqrt(n) * sigma_rel * level
        expected = np.sqrt(n * (max(mu, 0.0) + rn**2))
        report.add(amp.name, TestResult("sigma_below_poisson", float(value),
                                        float((1 + config.poisson_tolerance) * expected),
                                        "value <= threshold", "electron"))
    reference = float(np.nanmedian(list(medians.values())))
    for name, median in medians.items():
        report.add(name, TestResult("scatter_below_5pct", median / reference - 1.0,
                                    config.amp_scatter, "|value| <= threshold"))
    _add_no_data(report, exposure, config)
    return report


#: The per-exposure tests of `verify_frame`, in order.
FRAME_TESTS = ("mean_below_sigma", "noise_matches_read_noise", "cr_noise_consistent")


def overscan_noise_factor(camera: Camera, overscan: OverscanConfig) -> float:
    """Variance the overscan subtraction adds to a pixel, as a fraction of the read noise's:
    the row's median of the serial overscan and (if subtracted) the column's of the
    parallel overscan, each a median of n pixels with a variance of (π/2)·σ²/n."""
    n_cols = len(range(*serial_overscan_columns(camera, overscan).indices(
        camera.raw_bbox.nx)))
    factor = np.pi / 2 / n_cols
    if overscan.parallel:
        n_rows = len(range(*parallel_overscan_rows(camera, overscan).indices(
            camera.raw_bbox.ny)))
        factor += np.pi / 2 / n_rows
    return float(factor)


def _clipped_gaussian_sigma(k: float, max_iter: int = 50) -> float:
    """σ of unit Gaussian noise after clipping at ``k`` times its own clipped σ until it
    no longer changes (what `_clipped_stats` converges to): the fixed point of
    ``s = √(1 − 2kₛφ(kₛ)/(2Φ(kₛ) − 1))``, ``kₛ = k·s``."""
    s = 1.0
    for _ in range(max_iter):
        ks = k * s
        inside = erf(ks / np.sqrt(2.0))
        new = float(np.sqrt(max(1.0 - 2.0 * ks * np.exp(-0.5 * ks * ks) / np.sqrt(2 * np.pi)
                                / inside, 1e-12)))
        if abs(new - s) < 1e-10:
            return new
        s = new
    # Not converged (only for k ≲ 1): the last value, within 1e-4 of the limit.
    return s


def verify_frame(exposure: Exposure, expected_noise: np.ndarray,
                 camera: Camera | None = None, config: VerifyConfig | None = None, *,
                 cr_check: bool = True, cosmic_rays: np.ndarray | None = None
                 ) -> dict[str, np.ndarray]:
    """cp_verify's tests of one ISR-processed bias or dark (its master subtracted), per amp.

    cp_verify runs its tests on the inputs re-processed with the new master, one exposure
    at a time (`verify_bias` and `verify_dark` judge the master from its variance plane
    instead). On the amp's good pixels (no NO_DATA, BAD, SAT):

    ``mean_below_sigma``
        ``|clipped mean| ≤ clipped σ``: nothing is left of the bias (or dark) level;
    ``noise_matches_read_noise``
        ``|σ / expected − 1| ≤ noise_tolerance``: σ the clipped σ over what clipping leaves
        of a Gaussian's (0.985 at 3σ), ``expected_noise`` the per-pixel
        noise the residual should have (the caller's: read noise, overscan subtraction,
        the master's own noise or, for a frame that is one of the master's inputs, the
        share of its noise the master removes);
    ``cr_noise_consistent``
        ``σ of every good pixel / clipped σ − 1 ≤ cr_noise_tolerance``: no transient (a
        cosmic ray, a glitch) left in the frame (its CR-rejected noise is its noise). For a
        dark, every exposure has cosmic rays: given their mask (``cosmic_rays``, e.g.
        `atmospec.calib.masters.cosmic_ray_mask`), the σ is that of the good pixels
        outside it, cp_verify's ``CR_NOISE`` (the σ after cosmic-ray rejection), which must
        then be the clipped σ: what is left is read and dark noise, no transient the
        rejection missed. Not run with ``cr_check=False``.

    Parameters
    ----------
    exposure : Exposure
        The post-ISR residual frame, e⁻.
    expected_noise : numpy.ndarray
        Per amp (HDU order), e⁻.
    camera : Camera, optional
        Amp layout; LATISS by default.
    config : VerifyConfig, optional
        Clipping and tolerances.
    cr_check : bool
        Run ``cr_noise_consistent``.
    cosmic_rays : numpy.ndarray, optional
        bool, the frame's shape: pixels left out of ``sigma_plain`` (the cosmic rays
        rejected); None: every good pixel counts.

    Returns
    -------
    dict
        Per amp (arrays in HDU order): ``mean``, ``sigma``, ``sigma_plain`` (e⁻; without
        the ``cosmic_rays``), each test
        of `FRAME_TESTS` (bool; ``cr_noise_consistent`` True when not run) and ``passed``
        (all of them).
    """
    config = config or VerifyConfig()
    camera = camera or load_camera("latiss")
    good = _good(exposure) & ~exposure.get_mask("SAT")
    n = camera.n_amps
    mean, sigma, plain = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    for i, amp in enumerate(camera.amplifiers):
        sl = camera.amp_slices(amp)
        pixels = exposure.image[sl][good[sl]]
        mean[i], sigma[i] = _clipped_stats(pixels, config)
        if cosmic_rays is not None:
            pixels = exposure.image[sl][good[sl] & ~cosmic_rays[sl]]
        if pixels.size > 1:
            plain[i] = float(np.std(pixels, ddof=1, dtype=np.float64))
    expected = np.asarray(expected_noise, dtype=float)
    # The clipped σ of Gaussian noise is short of its σ by the clipping (1.5 % at 3σ).
    noise = sigma / _clipped_gaussian_sigma(config.clip_sigma)
    with np.errstate(invalid="ignore"):
        out = {
            "mean": mean, "sigma": sigma, "sigma_plain": plain,
            "mean_below_sigma": np.abs(mean) <= sigma,
            "noise_matches_read_noise": np.abs(noise / expected - 1.0)
            <= config.noise_tolerance,
            "cr_noise_consistent": (plain / sigma - 1.0 <= config.cr_noise_tolerance)
            if cr_check else np.ones(n, dtype=bool),
        }
    out["passed"] = np.logical_and.reduce([out[t] for t in FRAME_TESTS])
    return out


def _verify_noise_product(kind: str, exposure: Exposure, file: str, config: VerifyConfig,
                          camera: Camera, overscan: OverscanConfig) -> VerificationReport:
    h = exposure.metadata
    report = VerificationReport(kind, file)
    n = int(h.get("NCOMBINE", 1))
    darktime = float(h.get("DARKTIME", 1.0)) if kind == "dark" else 1.0
    unit = "electron/s" if kind == "dark" else "electron"
    good = _good(exposure)
    # Each input's overscan subtraction (row medians of a few tens of pixels) adds to the
    # read noise of its every pixel: +6.5 % in σ on a 2×2-binned LATISS frame, which alone
    # failed this test on most amps of every binned master.
    os_factor = overscan_noise_factor(camera, overscan)
    for i, amp in enumerate(camera.amplifiers):
        sl = camera.amp_slices(amp)
        pixels = exposure.image[sl][good[sl]]
        mean, sigma = _clipped_stats(pixels, config)
        report.add(amp.name, TestResult("mean_below_sigma", mean, sigma,
                                        "|value| <= threshold", unit))
        robust, plain = _frame_noise(exposure.variance[sl][good[sl]], n, h)
        rn = _read_noise(h, amp.name, camera, i)
        # Per-frame noise in e⁻: a dark's inputs were divided by their dark time.
        expected = np.sqrt(rn**2 * (1.0 + os_factor)
                           + (max(mean * darktime, 0.0) if kind == "dark" else 0.0))
        report.add(amp.name, TestResult("noise_matches_read_noise",
                                        robust * darktime / expected - 1.0,
                                        config.noise_tolerance, "|value| <= threshold"))
        report.add(amp.name, TestResult("cr_noise_consistent", plain / robust - 1.0,
                                        config.cr_noise_tolerance, "value <= threshold"))
        if kind == "dark":
            report.add(amp.name, TestResult("dark_current", mean, config.max_dark_current,
                                            "value <= threshold", unit))
    _add_no_data(report, exposure, config)
    return report


def _good(exposure: Exposure) -> np.ndarray:
    return ~exposure.get_mask("NO_DATA", "BAD") & np.isfinite(exposure.image)


def _add_no_data(report: VerificationReport, exposure: Exposure, config: VerifyConfig) -> None:
    fraction = float(exposure.get_mask("NO_DATA").mean())
    report.add(None, TestResult("no_data_fraction", fraction, config.max_no_data_fraction,
                                "value <= threshold"))


def _clipped_stats(values: np.ndarray, config: VerifyConfig) -> tuple[float, float]:
    """Iterative σ-clipped mean and standard deviation.

    The start (median and MAD) comes from every 4th pixel: only the first window depends
    on it, and the iterations, on all pixels, converge to the same values.
    """
    v = values[np.isfinite(values)]
    if v.size < 2:
        return float("nan"), float("nan")
    start = v[::4] if v.size >= 400 else v
    center = float(np.median(start))
    sigma = float(robust_sigma(start))
    for _ in range(config.clip_iter):
        if not sigma > 0:
            break
        kept = v[np.abs(v - center) <= config.clip_sigma * sigma]
        if kept.size < 2:
            break
        center = float(kept.mean(dtype=np.float64))
        sigma = float(kept.std(ddof=1, dtype=np.float64))
    return center, sigma


def _frame_noise(variance: np.ndarray, n: int, header: fits.Header) -> tuple[float, float]:
    """Per-frame noise of the inputs from the master's variance: (robust, plain)."""
    v = variance[np.isfinite(variance)].astype(np.float64) * n
    if str(header.get("COMBMETH", "MEANCLIP")).upper() == "MEDIAN":
        v *= 2.0 / np.pi
    if v.size == 0 or n < 2:
        return float("nan"), float("nan")
    # The median of χ²(n - 1), as scipy.stats.chi2.median computes it: scipy.special alone,
    # because scipy.stats costs 0.4 s of imports to every Gen3 cp quantum.
    chi2_median = 2.0 * gammaincinv((n - 1) / 2.0, 0.5)
    robust = np.sqrt(np.median(v) * (n - 1) / chi2_median)
    return float(robust), float(np.sqrt(v.mean()))


def _read_noise(header: fits.Header, amp: str, camera: Camera, index: int) -> float:
    """Read noise the ISR used for ``amp`` (header), else the camera's nominal value."""
    value = header.get(f"HIERARCH ATM RDNOISE {amp}")
    if value is None:
        value = camera.nominal_read_noise[index]
    return float(value)
