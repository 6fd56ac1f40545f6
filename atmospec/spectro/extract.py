"""First-order slitless spectrum extraction on a post-ISR LATISS exposure (first stages).

The steps follow Spectractor's ``extractor.py`` / ``chromaticpsf.py`` in spirit, with our
own code and one deliberate change: **no resampling**. LATISS disperses along −y of the
assembled frame with a tilt of a few tenths of a degree (≈ 11 px of transverse drift over
the 2500 rows of the first order), so instead of rotating the image we work on a cutout
whose rows are the along-trace pixels and fit the trace centre ``x_c(row)`` as a smooth
function. Each row is then extracted across the columns around ``x_c(row)``. Resampling
(``map_coordinates``) would correlate neighbouring pixels' noise and blur the PSF; measuring
across rows rather than exactly perpendicular to the trace changes widths by
``1 − cos(tilt) < 2·10⁻⁵``, negligible.

1. **Geometry** — the expected first order (``wavelength_range_nm``) from the zeroth order,
   the disperser law and the tilt prior `Disperser.tilt_deg_at`; the cutout spans those rows
   and ``±half_width_px`` columns around the predicted trace.
2. **Rotation angle** — rows are summed in bins of ``bin_rows``; after a crude per-row
   background (median of the cutout's outer columns) a 1D Moffat is fitted to every bin at
   once (`psf1d.fit_moffat_batch`); its centres (weighted by their errors, outliers clipped)
   are fitted with a line ``x = a + b·row``. The tilt is ``−atan(b)`` (counter-clockwise
   from −y, the convention of `Disperser.tilt_deg_at`), with its error from the fit.
3. **Background** — two side bands ``[k·FWHM, k·FWHM + width]`` from the trace, pixels in
   the ``bad_planes`` rejected, per-row sigma clipping against sources (around the median,
   each pixel's noise from the VARIANCE plane), a clipped polynomial in row per band,
   weighted by the VARIANCE plane, interpolated linearly across the trace.
4. **Chromatic PSF** — the Moffat fit of step 2 redone on the background-subtracted bins;
   centre, γ and α are then smoothed as polynomials of the row (clipped weighted fits).
5. **Extraction** — per row, Horne's optimal estimate with the smoothed profile P
   (normalised over the extraction window) and the VARIANCE plane:
   ``F = Σ P D / V / Σ P² / V``, ``σ² = 1 / Σ P² / V``; and a plain aperture sum over the
   same window (masked pixels filled with ``F P``). Given the profile, rows are independent,
   so the covariance is diagonal (background and profile errors are not propagated).
6. **Wavelengths** — along-trace distance from the zeroth order → λ with the disperser law
   (first order, θ₀ from the zeroth order's distance to the centre of the exposure — the
   full assembled detector — along the fitted axis, N from the groove map at the zeroth
   order); flux per nm = flux per row / |dλ/drow|.

**Differential refraction** (given a `atmospec.spectro.adr.TraceRefraction`): the trace is
not straight — at the row where λ lands its centre is moved by the refraction's offset
(`TraceRefraction.trace_offsets`, up to ~15 px at 350 nm and airmass 2). The centre fits of
steps 2 and 4 are made on the centres minus those offsets, with a line (the optics; the
offsets are the atmosphere) and on the bins below `ExtractionConfig.adr_centre_max_nm`
only: beyond, order 2's light (λ/2, refracted more) lies a few pixels beside order 1's and
would pull the centres; the offsets are added back to ``x_c``. Along
the axis, the wavelength of a distance u solves ``u = law⁻¹(λ) + a(λ)``
(`atmospec.spectro.adr.solve_wavelength`); the refraction's reference wavelength is set
from the extracted spectrum to the zeroth order's (`zeroth_order_reference_nm`), after
which `ExtractionResult.distance_px` is the distance the dispersion law sees (refraction
removed), the one the wavelength calibration fits.

Not done here: 2D forward model of the spectrogram, wavelength calibration on spectral
features (`atmospec.spectro.wavelength`), second-order correction (holo4_003's order 2 lands
on order 1 above ~700 nm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table

from atmospec.errors import BadInputError
from atmospec.exposure import Exposure
from atmospec.spectro.adr import TraceRefraction, solve_wavelength, zeroth_order_reference_nm
from atmospec.spectro.dispersers import Disperser, load_disperser
from atmospec.spectro.psf import MoffatFit, fit_moffat_batch, moffat1d, moffat1d_fwhm
from atmospec.spectro.spectrum import Spectrum

__all__ = [
    "ExtractionConfig",
    "ExtractionResult",
    "background_covariance",
    "extract_spectrum",
    "extraction_window",
    "horne_profile",
    "leave_one_out_variance",
    "psf_bins_table",
    "result_to_spectrum",
    "with_dispersion",
]


@dataclass(frozen=True)
class ExtractionConfig:
    """Settings of `extract_spectrum`."""

    order: int = 1
    """Diffraction order extracted."""
    wavelength_range_nm: tuple[float, float] = (350.0, 1100.0)
    """Wavelengths whose predicted trace is cut out, nm."""
    half_width_px: int = 60
    """Half-width of the cutout across the trace, pixels."""
    bin_rows: int = 10
    """Rows summed per along-trace bin for the angle and PSF fits."""
    min_bin_snr: float = 10.0
    """Bins whose fitted amplitude has a lower signal-to-noise ratio are not used."""
    clip_sigma: float = 4.0
    """Outlier rejection threshold of the line and polynomial fits, sigma."""
    background_inner_fwhm: float = 4.0
    """Side bands start ``k × FWHM`` from the trace centre."""
    background_width_px: int = 20
    """Width of each side band, pixels."""
    background_degree: int = 5
    """Degree of each band's polynomial in row."""
    background_clip_sigma: float = 3.0
    """Per-row clipping of band pixels (sources), in units of each pixel's noise from the
    VARIANCE plane."""
    centre_degree: int = 2
    """Degree of the trace-centre polynomial in row."""
    shape_degree: int = 4
    """Degree of the γ and α polynomials in row."""
    extraction_half_fwhm: float = 4.0
    """Extraction window half-width, in units of the local FWHM."""
    moffat_iterations: int = 40
    """Levenberg–Marquardt iterations of the batched Moffat fits."""
    min_valid_fraction: float = 0.3
    """Least fraction of the predicted trace rows that must be on the chip and usable."""
    adr_centre_max_nm: float = 680.0
    """With differential refraction modelled, the trace centre — a line plus the
    refraction's bend — is fitted on the bins below this wavelength: beyond it (twice the
    bluest light, ~340 nm) order 2's light of λ/2, refracted more, lies beside order 1's
    across the dispersion and would pull the fitted centres (by ~1 px at 900 nm, airmass 2,
    holo4_003). Without ADR both orders share one line and every bin is used."""
    bad_planes: tuple[str, ...] = ("BAD", "SAT", "CR", "EDGE", "NO_DATA")
    """Mask planes whose pixels are ignored."""


@dataclass(frozen=True)
class ExtractionResult:
    """Everything `extract_spectrum` measured; arrays run over the cutout's rows (``rows``)
    unless said otherwise."""

    source: str | None
    """Name used in error messages (OBSID or path)."""
    disperser: str
    """Disperser name (``GRATING``)."""
    order: int
    """Order extracted."""
    x0: float
    """Zeroth-order x, pixels."""
    y0: float
    """Zeroth-order y, pixels."""
    d2ccd_mm: float
    """Disperser–CCD distance used, mm."""
    theta0_rad: float
    """Zeroth order's field angle along the dispersion axis, radians."""
    angle_prior_deg: float
    """Tilt prior from the disperser's map, degrees (counter-clockwise from −y)."""
    angle_deg: float
    """Fitted tilt of the trace, degrees (same convention)."""
    angle_err_deg: float
    """One-sigma error of ``angle_deg``."""
    rows: np.ndarray
    """Image rows (y) of the extracted points."""
    x_trace: np.ndarray
    """Trace centre x at each row (smoothed PSF centre)."""
    gamma: np.ndarray
    """Smoothed Moffat γ at each row, pixels."""
    alpha: np.ndarray
    """Smoothed Moffat α at each row."""
    wavelength_nm: np.ndarray
    """λ at each row from the dispersion law, nm."""
    dlambda_drow: np.ndarray
    """|dλ/drow|, nm per row."""
    flux_e: np.ndarray
    """Optimal (Horne) flux per row, e⁻."""
    flux_err_e: np.ndarray
    """Its one-sigma error, e⁻."""
    aperture_flux_e: np.ndarray
    """Aperture sum over the same window, e⁻."""
    aperture_err_e: np.ndarray
    """Its one-sigma error, e⁻."""
    psf_bins: Table
    """Per-bin Moffat fits: ``row, lambdas, x_c, amplitude, gamma, alpha, fwhm`` and errors,
    ``used`` (kept by the smoothing)."""
    background: np.ndarray
    """Background model over the cutout, e⁻ per pixel."""
    cutout_origin: tuple[int, int]
    """``(x, y)`` of the cutout's first pixel in the image."""
    config: ExtractionConfig = field(repr=False)
    """Settings used."""
    binning: int = 1
    """On-chip binning of the image (pixel pitch and plate scale scale with it)."""
    pixel_shift: float = 0.0
    """Shift s of the zeroth order along the dispersion axis found by the wavelength
    calibration, pixels (Spectractor's ``PIXSHIFT``: ``λ = law(u − s)``)."""
    wavelength_calibrated: bool = False
    """Whether ``d2ccd_mm`` and ``pixel_shift`` come from a fit on spectral features (True)
    or are the instrument's prior (False)."""
    instrument: str = "latiss"
    """Instrument whose disperser tables were used."""
    dispersion: Disperser | None = field(default=None, repr=False, compare=False)
    """The disperser as used (its tables addressed in this image's frame)."""
    flux_background_factor: np.ndarray | None = field(default=None, repr=False, compare=False)
    """``F`` (rows × k, e⁻) with ``F Fᵀ`` the covariance the background fit adds to
    ``flux_e``: smooth along the trace, it is not in ``flux_err_e``."""
    background_rms: np.ndarray | None = field(default=None, repr=False, compare=False)
    """Per-pixel RMS of the background over the cutout, e⁻ (``background``'s shape): the
    noise of a background pixel (Spectractor's ``S_BGD_ER``), not the model's error."""
    refraction: TraceRefraction | None = field(default=None, compare=False)
    """The differential refraction modelled (None: none; see the module notes)."""
    profile_weights: np.ndarray | None = field(default=None, repr=False, compare=False)
    """Each row's optimal-extraction weights over the cutout's columns, ``P/V / Σ P²/V``
    (rows of ``rows`` × columns of ``background``, float32; zero off the window and on
    masked pixels): ``flux_e`` is ``Σ weights × (data − background)`` over the row, so the
    flux a light of another transverse profile adds is ``Σ weights × profile``
    (`atmospec.spectro.order2.capture_fraction`). None: not kept."""

    @property
    def measured_distance_px(self) -> np.ndarray:
        """Distance of each row's trace point from the measured zeroth order along the
        fitted dispersion axis, pixels, refraction included."""
        t = math.radians(self.angle_deg)
        return (self.x_trace - self.x0) * math.sin(t) - (self.rows - self.y0) * math.cos(t)

    @property
    def distance_px(self) -> np.ndarray:
        """Distance u of each row's light from the measured zeroth order as the dispersion
        law sees it (`measured_distance_px` minus the refraction along the axis at the row's
        wavelength), pixels (before the pixel shift): ``law(distance_px)`` is
        ``wavelength_nm``."""
        u = self.measured_distance_px
        if self.refraction is None:
            return u
        return u - self.refraction.along_px(self.wavelength_nm, self.angle_deg)

    @property
    def trace_offset_px(self) -> np.ndarray:
        """The refraction's offset of the trace centre at each row (`TraceRefraction.
        trace_offsets`), pixels; zeros without refraction."""
        if self.refraction is None:
            return np.zeros(self.rows.shape)
        return self.refraction.trace_offsets(self.wavelength_nm, self.angle_deg)

    def law(self, distance_px: np.ndarray, order: int | None = None,
            disperser: Disperser | None = None) -> np.ndarray:
        """λ (nm) at distances ``u`` with this result's D2CCD, pixel shift and θ₀."""
        disp = disperser or self.dispersion or load_disperser(self.disperser, self.instrument)
        return disp.wavelength_nm(np.asarray(distance_px) - self.pixel_shift,
                                  self.order if order is None else order, self.d2ccd_mm,
                                  disp.instrument.pixel_size_mm(self.binning), self.theta0_rad,
                                  at=(self.x0, self.y0), binning=self.binning)

    @property
    def fwhm_px(self) -> np.ndarray:
        """Transverse FWHM at each row (smoothed), pixels."""
        return moffat1d_fwhm(self.gamma, self.alpha)

    @property
    def flux_per_nm(self) -> np.ndarray:
        """Optimal flux per nm, e⁻/nm."""
        return self.flux_e / self.dlambda_drow

    @property
    def flux_per_nm_err(self) -> np.ndarray:
        """Its one-sigma error, e⁻/nm."""
        return self.flux_err_e / self.dlambda_drow


# --------------------------------------------------------------------------- helpers


def _source(exposure: Exposure, source: str | Path | None) -> str | None:
    if source is not None:
        return str(source)
    meta = exposure.metadata or {}
    for key in ("OBSID", "FILENAME"):
        if meta.get(key):
            return str(meta[key])
    return None


def _poly_fit(t: np.ndarray, v: np.ndarray, sig: np.ndarray, deg: int, clip: float,
              n_pass: int = 4) -> tuple[np.polynomial.Polynomial, np.ndarray]:
    """Weighted polynomial fit with iterative clipping of normalised residuals."""
    keep = np.isfinite(v) & np.isfinite(sig) & (sig > 0)
    deg = int(min(deg, max(np.count_nonzero(keep) - 1, 0)))
    poly = np.polynomial.Polynomial.fit(t[keep], v[keep], deg, w=1.0 / sig[keep])
    for _ in range(n_pass):
        res = (v - poly(t)) / sig
        scale = 1.4826 * np.nanmedian(np.abs(res[keep])) if keep.any() else 1.0
        new = keep & (np.abs(res) < clip * max(scale, 1.0))
        if new.sum() <= deg or np.array_equal(new, keep):
            break
        keep = new
        poly = np.polynomial.Polynomial.fit(t[keep], v[keep], deg, w=1.0 / sig[keep])
    return poly, keep


def _bin_rows(data: np.ndarray, var: np.ndarray, good: np.ndarray, n: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum rows in bins of ``n`` (masked pixels replaced by the bin's mean of good ones)."""
    nb = data.shape[0] // n
    d = np.where(good, data, 0.0)[:nb * n].reshape(nb, n, -1)
    v = np.where(good, var, 0.0)[:nb * n].reshape(nb, n, -1)
    ng = good[:nb * n].reshape(nb, n, -1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(ng > 0, n / ng, np.nan)
        bd = d.sum(axis=1) * scale
        bv = v.sum(axis=1) * scale**2
    return bd, bv, np.arange(nb) * n + 0.5 * (n - 1)


def _fit_bins(x: np.ndarray, bd: np.ndarray, bv: np.ndarray, centre: np.ndarray,
              gamma: float, alpha: float, n_iter: int) -> MoffatFit:
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(np.isfinite(bv) & (bv > 0), 1.0 / bv, 0.0)
    near = np.abs(x[None, :] - centre[:, None]) < 2.0 * gamma
    amp = np.nanmax(np.where(near & (w > 0), bd, -np.inf), axis=1)
    amp = np.where(np.isfinite(amp) & (amp > 0), amp, 1.0)
    p0 = np.column_stack([amp, centre, np.full_like(centre, gamma),
                          np.full_like(centre, alpha)])
    return fit_moffat_batch(x, bd, w, p0, n_iter)


def _bin_ok(fit: MoffatFit, cfg: ExtractionConfig, x_lo: float, x_hi: float) -> np.ndarray:
    p, e = fit.params, fit.errors
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = p[:, 0] / e[:, 0]
    return (np.isfinite(snr) & (snr > cfg.min_bin_snr) & np.all(np.isfinite(e), axis=1)
            & (p[:, 1] > x_lo) & (p[:, 1] < x_hi) & (e[:, 1] > 0) & (fit.ndof > 0))


@dataclass(frozen=True, eq=False)
class _Cutout:
    """The image around the predicted trace: rows run along it, columns across."""

    rows: np.ndarray
    """Image rows (y) of the cutout."""
    xcols: np.ndarray
    """Image columns (x) of the cutout."""
    data: np.ndarray
    """Pixels, e⁻."""
    var: np.ndarray
    """Their variance, e⁻²."""
    good: np.ndarray
    """Usable pixels: in no bad plane, finite, positive variance."""
    origin: tuple[int, int]
    """``(x, y)`` of the first pixel in the image."""


def _field_angle(x0: float, y0: float, shape: tuple[int, ...], tilt_deg: float,
                 plate_arcsec: float) -> float:
    """θ₀: the zeroth order's field angle along the dispersion axis tilted by ``tilt_deg``
    (its distance from the centre of the full detector along the axis × the plate scale),
    radians."""
    ny, nx = shape
    t = math.radians(tilt_deg)
    along = (x0 - (nx - 1) / 2.0) * math.sin(t) - (y0 - (ny - 1) / 2.0) * math.cos(t)
    return math.radians(along * plate_arcsec / 3600.0)


def extraction_window(shape: tuple[int, ...], x0: float, y0: float,
                      disperser: str | Disperser | None, linspos_mm: float | None = None,
                      config: ExtractionConfig | None = None, *, binning: int = 1,
                      source: str | Path | None = None) -> tuple[slice, slice]:
    """The rows and columns of an image of ``shape`` that `extract_spectrum` cuts out for
    the zeroth order at ``(x0, y0)`` (the same arguments): the pixels it, and the 2D model
    after it, read — e.g. to prepare their variance there only.

    Returns
    -------
    tuple of slice
        ``(rows, columns)``.

    Raises
    ------
    BadInputError
        As `extract_spectrum` for the geometry: not a dispersed exposure, no such order
        over the wavelength range, spectrum leaving the chip.
    """
    cfg = config or ExtractionConfig()
    src = None if source is None else str(source)
    disp = _disperser(disperser, src)
    return _predicted_window(shape, x0, y0, disp, disp.d2ccd_mm(linspos_mm), cfg, binning,
                             src)[1]


def _predicted_window(shape: tuple[int, ...], x0: float, y0: float, disp: Disperser,
                      d2ccd: float, cfg: ExtractionConfig, binning: int, src: str | None
                      ) -> tuple[float, tuple[slice, slice]]:
    """The prior tilt (degrees) and the cutout: the rows the predicted trace of the
    wavelength range spans with that tilt, ± ``half_width_px`` columns around it (see the
    module notes, step 1); `BadInputError` when the spectrum leaves the chip."""
    pixel_mm = disp.instrument.pixel_size_mm(binning)
    plate = disp.instrument.plate_scale_at(binning)
    prior = float(disp.tilt_deg_at(x0, y0, binning))
    lam_ends = np.asarray(cfg.wavelength_range_nm, dtype=np.float64)
    u_ends = disp.offset_px(lam_ends, cfg.order, d2ccd, pixel_mm,
                            _field_angle(x0, y0, shape, prior, plate), at=(x0, y0),
                            binning=binning)
    if not np.all(np.isfinite(u_ends)):
        raise BadInputError(src, f"order {cfg.order} does not exist over "
                                 f"{cfg.wavelength_range_nm} nm for {disp.name}")
    ny, nx = shape
    t_prior = math.radians(prior)
    y_ends = y0 - u_ends * math.cos(t_prior)
    y_lo, y_hi = math.floor(y_ends.min()), math.ceil(y_ends.max()) + 1
    n_pred = y_hi - y_lo
    r_lo, r_hi = max(y_lo, 0), min(y_hi, ny)
    slope_prior = -math.tan(t_prior)  # dx/drow
    xs_pred = x0 + (np.array([r_lo, r_hi - 1]) - y0) * slope_prior
    c_lo = math.floor(xs_pred.min()) - cfg.half_width_px
    c_hi = math.ceil(xs_pred.max()) + cfg.half_width_px + 1
    if r_hi - r_lo < cfg.min_valid_fraction * n_pred or c_lo < 0 or c_hi > nx:
        raise BadInputError(src, f"zeroth order at ({x0:.0f}, {y0:.0f}) is too close to the "
                                 f"edge: the order-{cfg.order} spectrum leaves the chip")
    return prior, (slice(r_lo, r_hi), slice(c_lo, c_hi))


def _cutout(exposure: Exposure, x0: float, y0: float, window: tuple[slice, slice],
            prior_deg: float, cfg: ExtractionConfig, src: str | None) -> _Cutout:
    """The pixels of the ``window`` of `_predicted_window`; `BadInputError` when the trace
    is masked."""
    sl = window
    r_lo, r_hi, c_lo, c_hi = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
    slope_prior = -math.tan(math.radians(prior_deg))  # dx/drow
    data = np.asarray(exposure.image[sl], dtype=np.float64)
    var = np.asarray(exposure.variance[sl], dtype=np.float64)
    good = (~exposure.get_mask(*cfg.bad_planes, region=sl)) & np.isfinite(data) \
        & np.isfinite(var)
    good &= var > 0
    rows = np.arange(r_lo, r_hi, dtype=np.float64)
    xcols = np.arange(c_lo, c_hi, dtype=np.float64)
    x_prior = x0 + (rows - y0) * slope_prior
    near = np.abs(xcols[None, :] - x_prior[:, None]) < 3.0
    if good[near].mean() < cfg.min_valid_fraction:
        raise BadInputError(src, f"the order-{cfg.order} trace is masked "
                                 f"({100 * (1 - good[near].mean()):.0f} % of its pixels)")
    return _Cutout(rows=rows, xcols=xcols, data=data, var=var, good=good, origin=(c_lo, r_lo))


def leave_one_out_variance(variance: np.ndarray, good: np.ndarray, half_rows: int
                           ) -> np.ndarray:
    """Each pixel's variance estimated from its neighbours along the columns (axis 0, the
    dispersion axis of the extraction frame), the pixel itself left out.

    ISR's VARIANCE plane is the pixel's own counts plus the read noise: a low fluctuation
    gets a low variance, hence a high weight, and every fit weighted by the plane (the
    background bands, the Horne extraction, the 2D model) is biased low by about one count
    per pixel — on the demo night's full-frame spectra, where the blue and red ends have a
    few hundred e⁻ per pixel, the fitted ozone by −9 DU (2σ) and PWV by +0.03 mm. The mean
    of the ``2 × half_rows`` neighbours of the same column (along the trace, where the PSF
    spreads the light over ~10 rows, so the expected counts hardly change) estimates the
    same variance without that pixel's noise: the weights are then independent of the data
    they weight.

    Parameters
    ----------
    variance : numpy.ndarray
        The VARIANCE plane (any shape ``(ny, nx)``).
    good : numpy.ndarray
        bool, pixels whose variance may be used (not masked, finite, positive).
    half_rows : int
        Neighbours taken on each side; 0 returns ``variance`` unchanged.

    Returns
    -------
    numpy.ndarray
        float32; the plane's own value where no neighbour is usable.
    """
    from scipy.ndimage import uniform_filter1d

    if half_rows <= 0:
        return variance
    var = np.where(good, variance, 0.0).astype(np.float64)
    weight = good.astype(np.float64)
    size = 2 * half_rows + 1
    total = uniform_filter1d(var, size, axis=0, mode="constant") * size - var
    count = uniform_filter1d(weight, size, axis=0, mode="constant") * size - weight
    count = np.rint(count)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(count > 0, total / np.where(count > 0, count, 1.0), variance)
    return out.astype(np.float32)


# --------------------------------------------------------------------------- main


def extract_spectrum(
    exposure: Exposure,
    x0: float,
    y0: float,
    disperser: str | Disperser | None,
    linspos_mm: float | None = None,
    config: ExtractionConfig | None = None,
    *,
    source: str | Path | None = None,
    binning: int = 1,
    refraction: TraceRefraction | None = None,
) -> ExtractionResult:
    """Extract the first-order spectrum of the star whose zeroth order is at ``(x0, y0)``.

    Parameters
    ----------
    exposure : Exposure
        Post-ISR exposure in electrons with a VARIANCE plane (e⁻²) and mask planes.
    x0, y0 : float
        Zeroth-order position (`atmospec.spectro.zeroth_order.find_zeroth_order`).
    disperser : str, Disperser or None
        ``GRATING`` name or a loaded `Disperser`; None/empty/``empty_*``: not dispersed.
    linspos_mm : float, optional
        ``LINSPOS`` of the disperser stage (None: the instrument's default distance).
    config : ExtractionConfig, optional
        Settings.
    source : str or path, optional
        Name used in errors (default: the header's OBSID).
    binning : int
        On-chip binning of the image: pixel pitch and plate scale are multiplied by it, the
        groove and tilt maps are read at the unbinned position.
    refraction : TraceRefraction, optional
        The differential refraction of the exposure, in this image's frame
        (`atmospec.spectro.adr.refraction_from_header`); None: a straight trace.

    Returns
    -------
    ExtractionResult

    Raises
    ------
    BadInputError
        Not a dispersed exposure, spectrum (mostly) off the chip, or trace fully masked.
    """
    cfg = config or ExtractionConfig()
    src = _source(exposure, source)
    disp = _disperser(disperser, src)
    pixel_mm = disp.instrument.pixel_size_mm(binning)
    plate = disp.instrument.plate_scale_at(binning)
    d2ccd = disp.d2ccd_mm(linspos_mm)

    # 1. geometry: predicted trace with the prior tilt
    prior, window = _predicted_window(exposure.image.shape, x0, y0, disp, d2ccd, cfg,
                                      binning, src)
    slope_prior = -math.tan(math.radians(prior))  # dx/drow
    cut = _cutout(exposure, x0, y0, window, prior, cfg, src)
    data, var, good, rows, xcols = cut.data, cut.var, cut.good, cut.rows, cut.xcols
    c_lo, r_lo = cut.origin

    geo = _Geometry(disp, x0, y0, exposure.image.shape, plate, cfg.order, d2ccd, pixel_mm,
                    binning, refraction)

    # 2. crude background, bin fits, line → angle
    x_prior = x0 + (rows - y0) * slope_prior + geo.offsets(rows, prior)
    outer = np.abs(xcols[None, :] - x_prior[:, None]) > 0.6 * cfg.half_width_px
    crude = np.nanmedian(np.where(good & outer, data, np.nan), axis=1)
    crude = np.where(np.isfinite(crude), crude, np.nanmedian(crude))
    bd, bv, brow_local = _bin_rows(data - crude[:, None], var, good, cfg.bin_rows)
    brow = rows[0] + brow_local
    off_prior = geo.offsets(brow, prior)
    fit0 = _fit_bins(xcols, bd, bv, x0 + (brow - y0) * slope_prior + off_prior, 3.0, 2.5,
                     cfg.moffat_iterations)
    ok0 = _bin_ok(fit0, cfg, xcols[0], xcols[-1])
    if ok0.sum() < 5:
        raise BadInputError(src, f"no order-{cfg.order} spectrum found along the predicted "
                                 f"trace ({ok0.sum()} usable bins)")
    sel0 = ok0 & geo.clean(brow, prior, cfg)
    line, keep_line = _poly_fit(brow[sel0], fit0.params[sel0, 1] - off_prior[sel0],
                                fit0.errors[sel0, 1], 1, cfg.clip_sigma)
    slope, angle_err = _slope_and_error(line, brow[sel0][keep_line], fit0.errors[sel0, 1][
        keep_line])
    angle = -math.degrees(math.atan(slope))
    fwhm0 = float(np.nanmedian(fit0.fwhm[ok0]))
    gamma0 = float(np.nanmedian(fit0.params[ok0, 2]))
    alpha0 = float(np.nanmedian(fit0.params[ok0, 3]))

    # 3. background in side bands
    off_rows = geo.offsets(rows, angle)
    off_bins = geo.offsets(brow, angle)
    x_line = line(rows) + off_rows
    background, bkg_factor, bkg_rms = _background(data, var, good, xcols, x_line, fwhm0,
                                                  rows, cfg)
    sub = data - background

    # 4. chromatic PSF: bin fits on the subtracted data, smoothed in row
    bd, bv, _ = _bin_rows(sub, var, good, cfg.bin_rows)
    fit = _fit_bins(xcols, bd, bv, line(brow) + off_bins, gamma0, alpha0,
                    cfg.moffat_iterations)
    ok = _bin_ok(fit, cfg, xcols[0], xcols[-1])
    if ok.sum() < max(cfg.shape_degree, cfg.centre_degree) + 2:
        raise BadInputError(src, f"too few usable order-{cfg.order} bins ({ok.sum()})")
    p, e = fit.params, fit.errors
    pc, kc = _fit_centre(brow, p[:, 1] - off_bins, e[:, 1], ok, geo.clean(brow, angle, cfg),
                         cfg.centre_degree if refraction is None else 1, cfg.clip_sigma)
    pg, kg = _poly_fit(brow[ok], p[ok, 2], e[ok, 2], cfg.shape_degree, cfg.clip_sigma)
    pa, ka = _poly_fit(brow[ok], p[ok, 3], e[ok, 3], cfg.shape_degree, cfg.clip_sigma)
    used = np.zeros(ok.shape, dtype=bool)
    used[np.flatnonzero(ok)] = kc & kg & ka
    span = brow[ok][kg & ka]
    rows_c = np.clip(rows, span.min(), span.max())  # no extrapolation of the shape
    xc = pc(rows) + off_rows
    gamma = np.clip(pg(rows_c), 0.3, None)
    alpha = np.clip(pa(rows_c), 0.6, None)

    # 5. optimal and aperture extraction
    flux, ferr, ap, aperr, gain, weights = _horne(sub, var, good, xcols, xc, gamma, alpha,
                                                  cfg.extraction_half_fwhm)
    if not np.any(np.isfinite(flux)):
        raise BadInputError(src, f"no usable pixel on the order-{cfg.order} trace")

    # 6. wavelengths along the fitted trace
    t = math.radians(angle)
    theta0 = _field_angle(x0, y0, exposure.image.shape, angle, plate)
    u = (xc - x0) * math.sin(t) - (rows - y0) * math.cos(t)
    law = geo.law(angle)
    lam, refraction = _wavelengths(law, u, rows, flux, disp, cfg.order, refraction, angle)
    dlam = np.abs(np.gradient(lam, rows))

    u_bins = (pc(brow) + off_bins - x0) * math.sin(t) - (brow - y0) * math.cos(t)
    lam_bins = solve_wavelength(law, u_bins, refraction, angle)
    psf_bins = Table({
        "row": brow, "lambdas": lam_bins, "x_c": p[:, 1], "x_c_err": e[:, 1],
        "amplitude": p[:, 0], "amplitude_err": e[:, 0], "gamma": p[:, 2],
        "gamma_err": e[:, 2], "alpha": p[:, 3], "alpha_err": e[:, 3], "fwhm": fit.fwhm,
        "chi2_ndof": fit.chi2 / np.maximum(fit.ndof, 1), "used": used,
    })
    finite = np.isfinite(flux) & np.isfinite(lam)
    return ExtractionResult(
        source=src, disperser=disp.name, order=cfg.order, x0=float(x0), y0=float(y0),
        d2ccd_mm=float(d2ccd), theta0_rad=theta0, angle_prior_deg=prior, angle_deg=angle,
        angle_err_deg=angle_err, rows=rows[finite], x_trace=xc[finite],
        gamma=gamma[finite], alpha=alpha[finite], wavelength_nm=lam[finite],
        dlambda_drow=dlam[finite], flux_e=flux[finite], flux_err_e=ferr[finite],
        aperture_flux_e=ap[finite], aperture_err_e=aperr[finite], psf_bins=psf_bins,
        background=background, cutout_origin=(c_lo, r_lo), config=cfg, binning=binning,
        flux_background_factor=(bkg_factor * gain[:, None])[finite],
        background_rms=bkg_rms.astype(np.float32),
        instrument=disp.instrument.name, dispersion=disp, refraction=refraction,
        profile_weights=weights[finite])


def _fit_centre(brow: np.ndarray, centre: np.ndarray, err: np.ndarray, ok: np.ndarray,
                clean: np.ndarray, degree: int, clip: float
                ) -> tuple[np.polynomial.Polynomial, np.ndarray]:
    """The trace-centre polynomial fitted on the bins ``ok & clean``, and which of the
    ``ok`` bins it kept. With refraction the centre is a line plus the bend (degree 1:
    the optics' straight trace; the bend is the atmosphere's), fitted where order 2 does
    not lie beside order 1."""
    sel = ok & clean
    poly, kept = _poly_fit(brow[sel], centre[sel], err[sel], degree, clip)
    kept_all = np.zeros(ok.shape, dtype=bool)
    kept_all[np.flatnonzero(sel)] = kept
    return poly, kept_all[ok]


@dataclass(frozen=True, eq=False)
class _Geometry:
    """The dispersion law around one zeroth order and the refraction's bend of the trace."""

    disp: Disperser
    x0: float
    y0: float
    shape: tuple[int, ...]
    plate: float
    order: int
    d2ccd: float
    pixel_mm: float
    binning: int
    refraction: TraceRefraction | None

    def law(self, angle_deg: float) -> Any:
        """Distance along the axis of tilt ``angle_deg`` → λ (nm), no refraction."""
        theta = _field_angle(self.x0, self.y0, self.shape, angle_deg, self.plate)
        return lambda u: self.disp.wavelength_nm(u, self.order, self.d2ccd, self.pixel_mm,
                                                 theta, at=(self.x0, self.y0),
                                                 binning=self.binning)

    def clean(self, rows: np.ndarray, angle_deg: float, cfg: ExtractionConfig) -> np.ndarray:
        """Rows whose trace centre fits may be used: all without refraction; with it those
        below `ExtractionConfig.adr_centre_max_nm` (all, if fewer than 5 bins are)."""
        if self.refraction is None:
            return np.ones(np.shape(rows), dtype=bool)
        u = -(np.asarray(rows, dtype=np.float64) - self.y0) / math.cos(math.radians(angle_deg))
        lam = self.law(angle_deg)(u)
        keep = np.isfinite(lam) & (lam < cfg.adr_centre_max_nm)
        return keep if np.count_nonzero(keep) >= 5 else np.ones(np.shape(rows), dtype=bool)

    def offsets(self, rows: np.ndarray, angle_deg: float) -> np.ndarray:
        """The refraction's offset of the trace centre at ``rows`` (λ from the straight
        trace of tilt ``angle_deg``: ``u = −(row − y0) / cos t``); zeros without it."""
        if self.refraction is None:
            return np.zeros(np.shape(rows))
        u = -(np.asarray(rows, dtype=np.float64) - self.y0) / math.cos(math.radians(angle_deg))
        lam = solve_wavelength(self.law(angle_deg), u, self.refraction, angle_deg)
        lam = np.where(np.isfinite(lam), lam, self.refraction.reference_nm)
        return self.refraction.trace_offsets(lam, angle_deg)


def _wavelengths(law: Any, u: np.ndarray, rows: np.ndarray, flux: np.ndarray,
                 disp: Disperser, order: int, refraction: TraceRefraction | None,
                 angle: float) -> tuple[np.ndarray, TraceRefraction | None]:
    """λ of each row (distances ``u`` along the axis), and the refraction with the zeroth
    order's own reference wavelength: the zeroth order marks its mean refraction, so the
    reference moves there once the spectrum (its light per nm) is known."""
    lam = solve_wavelength(law, u, refraction, angle)
    if refraction is None:
        return lam, None
    dlam = np.abs(np.gradient(lam, rows))
    refraction = replace(refraction, reference_nm=zeroth_order_reference_nm(
        refraction, lam, flux / dlam / _order_efficiency(disp, order, lam)))
    return solve_wavelength(law, u, refraction, angle, start_nm=lam), refraction


def _order_efficiency(disp: Disperser, order: int, lam: np.ndarray) -> np.ndarray:
    """The disperser's efficiency in ``order`` (1 where it has no usable table): the
    zeroth order's light is the first order's divided by it."""
    try:
        eff = np.asarray(disp.order_efficiency(order, np.where(np.isfinite(lam), lam, 500.0)),
                         dtype=np.float64)
    except ValueError:
        return np.ones(np.shape(lam))
    return np.where(np.isfinite(eff) & (eff > 0), eff, np.nan)


def with_dispersion(result: ExtractionResult, d2ccd_mm: float, pixel_shift: float,
                    calibrated: bool = True) -> ExtractionResult:
    """The extraction with another dispersion solution: wavelengths, |dλ/drow| and the
    PSF bins' wavelengths recomputed with ``D2CCD = d2ccd_mm`` and ``PIXSHIFT =
    pixel_shift`` (e.g. from `atmospec.spectro.wavelength.calibration.calibrate_extraction`)."""
    new = replace(result, d2ccd_mm=float(d2ccd_mm), pixel_shift=float(pixel_shift),
                  wavelength_calibrated=calibrated)
    lam = solve_wavelength(new.law, new.measured_distance_px, new.refraction, new.angle_deg,
                           start_nm=result.wavelength_nm)
    dlam = np.abs(np.gradient(lam, new.rows))
    t = math.radians(new.angle_deg)
    bins = new.psf_bins.copy()
    xb = np.interp(bins["row"], new.rows, new.x_trace)
    bins["lambdas"] = solve_wavelength(
        new.law, (xb - new.x0) * math.sin(t) - (bins["row"] - new.y0) * math.cos(t),
        new.refraction, new.angle_deg)
    return replace(new, wavelength_nm=lam, dlambda_drow=dlam, psf_bins=bins)


def _disperser(disperser: str | Disperser | None, src: str | None) -> Disperser:
    if isinstance(disperser, Disperser):
        disp = disperser
    else:
        name = (disperser or "").strip()
        if not name or name.lower().startswith("empty") or name.lower() == "none":
            raise BadInputError(src, f"not a dispersed exposure (GRATING {name or 'empty'!r})")
        try:
            disp = load_disperser(name)
        except BadInputError as exc:
            raise BadInputError(src, exc.problem) from exc
    if disp.lines_per_mm <= 0:
        raise BadInputError(src, f"not a dispersed exposure ({disp.name} has no grooves)")
    return disp


def _slope_and_error(line: np.polynomial.Polynomial, t: np.ndarray, sig: np.ndarray
                     ) -> tuple[float, float]:
    """Slope dx/drow of a degree-1 fit and the angle error in degrees (error scaled by the
    reduced χ² when above 1)."""
    slope = float(line.deriv()(0.0))
    w = 1.0 / sig**2
    tm = np.sum(w * t) / np.sum(w)
    var_b = 1.0 / np.sum(w * (t - tm) ** 2)
    return slope, math.degrees(math.sqrt(var_b) / (1.0 + slope**2))


def _background(data: np.ndarray, var: np.ndarray, good: np.ndarray, xcols: np.ndarray,
                x_line: np.ndarray, fwhm: float, rows: np.ndarray, cfg: ExtractionConfig
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Side-band background model over the cutout (see the module notes, step 3), a
    factor ``G`` (rows × k) of the covariance of the model at the trace, ``G Gᵀ`` (e⁻² per
    pixel): the bands' polynomial coefficients are uncertain, and that error is smooth along
    the trace — it moves broad spectral shapes, which no per-pixel error describes — and
    the background's per-pixel RMS over the cutout (Spectractor's ``S_BGD_ER``, photutils'
    ``background_rms``): each row's band pixels' noise from the VARIANCE plane, interpolated
    across the cutout as the level is.

    Each row's band pixels are clipped around their median at ``background_clip_sigma``
    times their own noise (VARIANCE plane) and averaged; the row's error comes from the
    same plane. Clipping on the sample MAD and weighting by the sample scatter of ~20 pixels
    would tie each row's weight to its own noise draw: the polynomial is then ~1.3× noisier
    than its covariance says (measured on pure sky), and that error reaches the aerosol
    depth through the whole spectrum's slope."""
    dx = xcols[None, :] - x_line[:, None]
    inner = cfg.background_inner_fwhm * fwhm
    outer = min(inner + cfg.background_width_px, float(np.min(np.abs(dx[:, [0, -1]]))) - 0.5)
    if outer - inner < 3:
        inner = max(outer - cfg.background_width_px, 2.0 * fwhm)
    sigma = np.sqrt(np.where(good, var, np.nan))
    levels, centres, factors, rms = [], [], [], []
    for side in (-1.0, 1.0):
        band = good & (side * dx >= inner) & (side * dx < outer)
        # The band's columns only (a fifth of the cutout's): the medians and sums below
        # ignore the pixels outside the band anyway.
        in_band = np.flatnonzero(np.any(band, axis=0))
        cs = slice(in_band[0], in_band[-1] + 1) if in_band.size else slice(0, 0)
        band, b_var = band[:, cs], var[:, cs]
        raw = np.where(band, data[:, cs], np.nan)
        vals = raw
        for _ in range(3):
            med = np.nanmedian(vals, axis=1, keepdims=True)
            vals = np.where(np.abs(raw - med) <= cfg.background_clip_sigma * sigma[:, cs],
                            raw, np.nan)
        kept = np.isfinite(vals)
        n = np.sum(kept, axis=1)
        mean = np.nanmean(vals, axis=1) if n.any() else np.full(rows.shape, np.nan)
        err = np.sqrt(np.sum(np.where(kept, b_var, 0.0), axis=1)) / np.maximum(n, 1)
        err = np.where(n > 2, err, np.nan)
        if np.count_nonzero(np.isfinite(mean) & np.isfinite(err) & (err > 0)) <= \
                cfg.background_degree:
            continue
        poly, keep = _poly_fit(rows, mean, err, cfg.background_degree, cfg.clip_sigma)
        levels.append(poly(rows))
        side_rms = np.sqrt(np.sum(np.where(kept, b_var, 0.0), axis=1) / np.maximum(n, 1))
        rms.append(np.where(n > 0, side_rms, float(np.median(side_rms[n > 0]))))
        centres.append(x_line + side * 0.5 * (inner + outer))
        factors.append(_poly_error_factor(poly, rows[keep], mean[keep], err[keep], rows))
    if not levels:
        return np.zeros_like(data), np.zeros((rows.size, 0)), np.full(data.shape, np.nan)
    if len(levels) == 1:
        return (np.broadcast_to(levels[0][:, None], data.shape).copy(), factors[0],
                np.broadcast_to(rms[0][:, None], data.shape).copy())
    frac = (xcols[None, :] - centres[0][:, None]) / (centres[1] - centres[0])[:, None]
    f_trace = ((x_line - centres[0]) / (centres[1] - centres[0]))[:, None]
    factor = np.hstack([(1.0 - f_trace) * factors[0], f_trace * factors[1]])
    return (levels[0][:, None] + frac * (levels[1] - levels[0])[:, None], factor,
            rms[0][:, None] + np.clip(frac, 0.0, 1.0) * (rms[1] - rms[0])[:, None])


def _poly_error_factor(poly: np.polynomial.Polynomial, t: np.ndarray, v: np.ndarray,
                       sig: np.ndarray, at: np.ndarray) -> np.ndarray:
    """``L`` with ``L Lᵀ`` the covariance of ``poly`` (a weighted fit of ``v ± sig`` at
    ``t``) evaluated at ``at``, scaled by the reduced χ² when above 1."""
    deg = poly.degree()
    off, scl = poly.mapparms()
    design = np.polynomial.polynomial.polyvander(off + scl * t, deg) / sig[:, None]
    normal = design.T @ design
    try:
        cov = np.linalg.inv(normal)
    except np.linalg.LinAlgError:
        return np.zeros((at.size, 0))
    dof = t.size - deg - 1
    chi2 = float(np.sum(((v - poly(t)) / sig) ** 2))
    if dof > 0 and chi2 / dof > 1.0:
        cov *= chi2 / dof
    w, vecs = np.linalg.eigh(0.5 * (cov + cov.T))
    root = vecs * np.sqrt(np.clip(w, 0.0, None))
    return np.polynomial.polynomial.polyvander(off + scl * at, deg) @ root


def horne_profile(xcols: np.ndarray, xc: np.ndarray, gamma: np.ndarray, alpha: np.ndarray,
                  half_fwhm: float) -> tuple[np.ndarray, np.ndarray]:
    """The extraction window (``|x − x_c| ≤ half_fwhm × FWHM``) and the transverse Moffat
    profile normalised to unit sum over it, per row (rows × columns)."""
    fwhm = moffat1d_fwhm(gamma, alpha)
    window = np.abs(xcols[None, :] - xc[:, None]) <= half_fwhm * fwhm[:, None]
    prof = np.where(window, moffat1d(xcols[None, :], 1.0, xc[:, None], gamma[:, None],
                                     alpha[:, None]), 0.0)
    return window, prof / prof.sum(axis=1, keepdims=True)


def _horne(sub: np.ndarray, var: np.ndarray, good: np.ndarray, xcols: np.ndarray,
           xc: np.ndarray, gamma: np.ndarray, alpha: np.ndarray, half_fwhm: float
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Optimal (Horne 1986) and aperture extraction of every row at once; the fifth array
    is each row's response to a uniform background error (Σ P/V / Σ P²/V, pixels), the
    last the optimal weights ``P/V / Σ P²/V`` (rows × columns, float32)."""
    window, prof = horne_profile(xcols, xc, gamma, alpha, half_fwhm)
    use = window & good
    with np.errstate(invalid="ignore", divide="ignore"):
        ivar = np.where(use, 1.0 / var, 0.0)
        d = np.where(use, sub, 0.0)
        denom = np.sum(prof**2 * ivar, axis=1)
        weights = prof * ivar / denom[:, None]
        flux = np.sum(weights * d, axis=1)
        ferr = np.sqrt(1.0 / denom)
        # aperture: masked pixels of the window filled with the optimal model
        fill = window & ~good
        ap = np.sum(d, axis=1) + np.sum(np.where(fill, prof, 0.0), axis=1) * flux
        aperr = np.sqrt(np.sum(np.where(use, var, 0.0), axis=1))
        gain = np.sum(weights, axis=1)
    bad = ~(denom > 0)
    flux[bad] = ferr[bad] = ap[bad] = aperr[bad] = gain[bad] = np.nan
    weights[bad] = 0.0
    return flux, ferr, ap, aperr, gain, weights.astype(np.float32)


# --------------------------------------------------------------------------- Spectrum


def result_to_spectrum(result: ExtractionResult, header: fits.Header | None = None,
                       extra: dict[str, Any] | None = None) -> Spectrum:
    """The extraction as a `Spectrum` in e⁻/nm, wavelengths increasing.

    Header keys ``TARGETX/TARGETY`` (zeroth order as measured, extraction frame unless
    ``extra`` overrides them), ``ROTANGLE`` (Spectractor's convention: degrees
    counter-clockwise from the +1 order's direction in Spectractor's frame, i.e. minus our
    tilt — the frames differ by a reflection), ``ROTAERR``, ``D2CCD``, ``PIXSHIFT``,
    ``WAVECAL`` (``lines`` or ``prior``), ``GRATING``, ``SPECORD``, ``THETA0``. ``PSF_TAB``
    has one row per spectrum sample as Spectractor's: ``lambdas``, the trace centre
    ``x_c, y_c`` in the extraction cutout's pixels (``S_XMIN``/``S_YMIN`` place it), the
    smoothed ``gamma, alpha, fwhm`` and the optimal ``flux_sum`` (e⁻ per row); the per-bin
    Moffat fits go to the ``PSF_BINS`` extension, their centres ``x_c, y_c`` in the same
    cutout pixels as ``PSF_TAB``'s (`psf_bins_table`). The covariance is the per-row noise plus
    the background fit's smooth term (`background_covariance`); ``flux_err`` is its
    diagonal.
    """
    order = np.argsort(result.wavelength_nm)
    lam = result.wavelength_nm[order]
    flux = result.flux_per_nm[order]
    err = result.flux_per_nm_err[order]
    hdr = fits.Header() if header is None else header.copy()
    hdr["TARGETX"] = (result.x0, "zeroth order x (px)")
    hdr["TARGETY"] = (result.y0, "zeroth order y (px)")
    hdr["ROTANGLE"] = (-result.angle_deg, "[deg] dispersion axis angle (Spectractor frame)")
    hdr["ROTAERR"] = (result.angle_err_deg, "[deg] ROTANGLE uncertainty")
    hdr["D2CCD"] = (result.d2ccd_mm, "[mm] disperser-CCD distance")
    hdr["PIXSHIFT"] = (result.pixel_shift, "[px] zeroth-order shift along the dispersion")
    hdr["WAVECAL"] = ("lines" if result.wavelength_calibrated else "prior",
                      "D2CCD/PIXSHIFT fitted on lines or instrument prior")
    hdr["GRATING"] = (result.disperser, "disperser")
    hdr["SPECORD"] = (result.order, "diffraction order extracted")
    hdr["THETA0"] = (result.theta0_rad, "zeroth order field angle, rad")
    c0, r0 = result.cutout_origin
    hdr["S_XMIN"] = (c0, "extraction cutout first column (extraction frame)")
    hdr["S_YMIN"] = (r0, "extraction cutout first row (extraction frame)")
    for key, value in (extra or {}).items():
        hdr[key] = value
    psf = Table({
        "lambdas": lam,
        "x_c": (result.x_trace - c0)[order],
        "y_c": (result.rows - r0)[order],
        "gamma": result.gamma[order],
        "alpha": result.alpha[order],
        "fwhm": result.fwhm_px[order],
        "flux_sum": result.flux_e[order],
        "flux_err": result.flux_err_e[order],
    })
    bins_hdu = fits.table_to_hdu(psf_bins_table(result))
    bins_hdu.name = "PSF_BINS"
    cov = np.diag(err**2) + background_covariance(result, order)
    err = np.sqrt(np.diag(cov))
    return Spectrum(wavelength=lam, flux=flux, flux_err=err, flux_unit="electron/nm",
                    header=hdr, covariance=cov, psf_table=psf, extra_hdus=(bins_hdu,))


def psf_bins_table(result: ExtractionResult) -> Table:
    """The per-bin Moffat fits as written to ``PSF_BINS``: wavelengths increasing, the
    fitted centre ``x_c`` and the bin's row ``y_c`` in cutout pixels, as ``PSF_TAB``'s trace.

    `ExtractionResult.psf_bins` holds them in the extraction frame's full-image pixels
    (``x_c`` ≈ 1700 on LATISS where ``PSF_TAB``'s is ≈ 60): written as they were, a plot of
    both against wavelength put them ~1670 px apart (issue 21). ``row`` becomes ``y_c``.
    """
    c0, r0 = result.cutout_origin
    bins = result.psf_bins.copy()
    if "x_c" in bins.colnames:  # a table of bins without fits (a built result) has none
        bins["x_c"] = bins["x_c"] - c0
    if "row" in bins.colnames:
        y_c = bins["row"] - r0
        bins.replace_column("row", y_c)
        bins.rename_column("row", "y_c")
    bins.sort("lambdas")
    return bins


def background_covariance(result: ExtractionResult, order: np.ndarray | None = None
                          ) -> np.ndarray:
    """Covariance the background fit adds to the flux per nm (``F Fᵀ / dλ²``), samples in
    ``order`` (default: the result's rows); zeros when the result carries no factor."""
    idx = np.arange(result.rows.size) if order is None else order
    factor = result.flux_background_factor
    if factor is None or factor.size == 0:
        return np.zeros((idx.size, idx.size))
    f = factor[idx] / result.dlambda_drow[idx, None]
    f = np.where(np.isfinite(f), f, 0.0)
    return f @ f.T
