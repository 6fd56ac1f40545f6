"""Lines a spectrum shows: a robust continuum and the significant peaks and dips against it.

`robust_continuum` follows the spectrum's smooth shape (the SED × throughput, or nothing at
all for an emission-line object without continuum) with a running median whose outliers —
the lines themselves — are clipped and interpolated over, iteratively. `detect_peaks`
filters ``(data − continuum)`` with a Gaussian matched to the resolution and keeps the local
extrema whose matched-filter significance passes a threshold: positive ones are emission
lines, negative ones absorption lines. The positions are good to a fraction of a resolution
element (blends move them): enough to identify the lines, not to calibrate on
(`atmospec.spectro.wavelength.identify` measures each identified line properly).

Everything runs on samples along the spectrum (one per detector row), in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import maximum_filter1d, median_filter, uniform_filter1d

__all__ = ["PeakDetectionConfig", "Peaks", "detect_peaks", "robust_continuum"]

_FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))


@dataclass(frozen=True)
class PeakDetectionConfig:
    """How `robust_continuum` and `detect_peaks` work (widths in resolution elements)."""

    continuum_window_fwhm: float = 12.0
    """Running-median window of the continuum, in FWHM of the resolution: wide enough that
    a line (or a blend of two) is a minority of the window, narrow enough to follow the
    throughput and the SED."""
    continuum_iterations: int = 5
    """Clip-and-refit passes of the continuum (bounded; stops early when the mask settles)."""
    continuum_clip_sigma: float = 3.0
    """Samples farther than this from the continuum, in their errors × the robust scale of
    the normalised residuals, are left out of the next pass."""
    threshold_sigma: float = 5.0
    """Least matched-filter significance of a peak (or dip)."""
    relative_error_floor: float = 0.005
    """Fraction of the continuum added in quadrature to the errors before detection: the
    throughput's and disperser's small-scale wiggles (≲ 0.5 %) of a bright star are not
    lines."""
    max_peaks: int = 40
    """Most significant peaks kept, each sign separately (bounds the identification)."""


@dataclass(frozen=True, eq=False)
class Peaks:
    """Peaks and dips found by `detect_peaks`, most significant first."""

    position_px: np.ndarray
    """Position along the spectrum (the input's coordinate, e.g. distance from the zeroth
    order), from a parabola through the matched-filter extremum."""
    snr: np.ndarray
    """Matched-filter significance, signed: > 0 emission, < 0 absorption."""
    amplitude: np.ndarray
    """Data − continuum at the extremum (signed, flux units of the input)."""

    def of_sign(self, sign: int) -> Peaks:
        """The peaks (``sign`` > 0) or the dips (< 0)."""
        keep = np.sign(self.snr) == np.sign(sign)
        return Peaks(self.position_px[keep], self.snr[keep], self.amplitude[keep])

    @property
    def size(self) -> int:
        """Number of peaks and dips."""
        return int(self.snr.size)


def robust_continuum(flux: np.ndarray, flux_err: np.ndarray, window: int,
                     iterations: int = 5, clip_sigma: float = 3.0) -> np.ndarray:
    """Smooth continuum of a spectrum sampled regularly, its lines clipped.

    Each pass: the masked samples are interpolated over from their neighbours, a running
    median of ``window`` samples is taken and smoothed by a running mean of a third of it
    (the median's steps); samples whose residual exceeds ``clip_sigma`` × their error ×
    the robust (MAD) scale of the normalised residuals are masked for the next pass. Lines
    of either sign are clipped, so emission and absorption are treated alike.

    Parameters
    ----------
    flux, flux_err : numpy.ndarray
        The spectrum and its one-sigma errors (non-finite or non-positive errors: unused).
    window : int
        Running-median window, samples.
    iterations : int
        Most passes.
    clip_sigma : float
        Clipping threshold.

    Returns
    -------
    numpy.ndarray
        The continuum at every sample (finite wherever some sample is usable).
    """
    f = np.asarray(flux, dtype=np.float64)
    e = np.asarray(flux_err, dtype=np.float64)
    ok = np.isfinite(f) & np.isfinite(e) & (e > 0)
    n = f.size
    if ok.sum() < 3:
        return np.full(n, np.nanmedian(f[ok]) if ok.any() else 0.0)
    window = int(np.clip(window, 3, max(n, 3)))
    idx = np.arange(n)
    use = ok.copy()
    cont = np.zeros(n)
    for _ in range(max(iterations, 1)):
        if use.sum() < 3:
            break
        filled = np.interp(idx, idx[use], f[use])
        cont = uniform_filter1d(median_filter(filled, size=window, mode="nearest"),
                                max(window // 3, 1), mode="nearest")
        z = (f - cont) / np.where(ok, e, np.inf)
        scale = max(1.4826 * float(np.median(np.abs(z[use]))), 1.0)
        new = ok & (np.abs(z) <= clip_sigma * scale)
        if np.array_equal(new, use):
            break
        use = new
    return cont


def _matched_filter(resid: np.ndarray, ivar: np.ndarray, sigma: float) -> np.ndarray:
    """Significance of a Gaussian of width ``sigma`` (samples) centred on each sample:
    ``Σ k r w / √(Σ k² w)`` with ``w`` the inverse variances (0 for unusable samples)."""
    half = max(int(np.ceil(4.0 * sigma)), 1)
    k = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    num = np.convolve(resid * ivar, k, mode="same")
    den = np.convolve(ivar, k * k, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.sqrt(den), 0.0)


def detect_peaks(position_px: np.ndarray, flux: np.ndarray, flux_err: np.ndarray,
                 fwhm_px: float, config: PeakDetectionConfig = PeakDetectionConfig()
                 ) -> tuple[Peaks, np.ndarray]:
    """Significant emission peaks and absorption dips of a spectrum against its continuum.

    Parameters
    ----------
    position_px : numpy.ndarray
        Position of each sample along the spectrum, pixels, monotonic, about one per pixel.
    flux, flux_err : numpy.ndarray
        The spectrum and its errors at those samples.
    fwhm_px : float
        Resolution (FWHM of an unresolved line), pixels.
    config : PeakDetectionConfig
        Settings.

    Returns
    -------
    peaks : Peaks
        At most ``config.max_peaks`` of each sign, most significant first; two extrema closer
        than one FWHM are one.
    continuum : numpy.ndarray
        The continuum (`robust_continuum`) at each sample.
    """
    u = np.asarray(position_px, dtype=np.float64)
    f = np.asarray(flux, dtype=np.float64)
    e = np.asarray(flux_err, dtype=np.float64)
    ok = np.isfinite(u) & np.isfinite(f) & np.isfinite(e) & (e > 0)
    step = float(np.nanmedian(np.abs(np.diff(u)))) if u.size > 1 else 1.0
    fwhm = max(float(fwhm_px) / max(step, 1e-9), 1.0)  # in samples
    cont = robust_continuum(np.where(ok, f, np.nan), np.where(ok, e, np.nan),
                            round(config.continuum_window_fwhm * fwhm),
                            config.continuum_iterations, config.continuum_clip_sigma)
    err = np.hypot(np.where(ok, e, np.inf), config.relative_error_floor * np.abs(cont))
    resid = np.where(ok, f - cont, 0.0)
    ivar = np.where(ok, 1.0 / err**2, 0.0)
    snr = _matched_filter(resid, ivar, fwhm / _FWHM)
    span = max(round(fwhm), 1) | 1  # odd window of about one FWHM
    found: list[tuple[float, float, float]] = []
    for sign in (1, -1):
        s = sign * snr
        local = (s >= maximum_filter1d(s, span, mode="nearest")) & (s >= config.threshold_sigma)
        local[[0, -1]] = False  # an extremum at the edge has no parabola
        cand = np.flatnonzero(local)
        cand = cand[np.argsort(-s[cand])][:config.max_peaks]
        for i in cand:
            a, b, c = s[i - 1], s[i], s[i + 1]
            curv = a - 2.0 * b + c
            frac = float(np.clip(0.5 * (a - c) / curv, -0.5, 0.5)) if curv < 0 else 0.0
            pos = float(np.interp(i + frac, np.arange(u.size), u))
            found.append((pos, float(snr[i]), float(resid[i])))
    found.sort(key=lambda p: -abs(p[1]))
    arr = np.array(found, dtype=np.float64).reshape(-1, 3)
    return Peaks(arr[:, 0], arr[:, 1], arr[:, 2]), cont
