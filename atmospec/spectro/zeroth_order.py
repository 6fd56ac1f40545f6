"""The target star's zeroth order on a dispersed exposure (Rubin atmospec's ``atmospecCentroid``).

On a LATISS slitless exposure the target appears twice: as a compact zeroth order and as a
long first-order (and fainter second-order) spectrum running along -y below it. Everything
downstream (rotation, trace, wavelength calibration) hangs on the zeroth order's position,
so `find_zeroth_order` must not be fooled by the spectrum, a saturated core or a brighter
neighbour.

How it works:

1. **Prior.** `zeroth_order_prior` gives where the target should be: the disperser's nominal
   position (``data/instruments/latiss.yaml``, where the acquisition puts the target),
   scaled by the binning, moved by a pointing offset when one is known.
2. **Candidates near the prior.** In a window of ``search_radius_px`` around the prior the
   background-subtracted image is smoothed at the PSF scale and its local maxima above
   ``detect_nsigma`` are candidates.
3. **Shape.** Each candidate's second moments (of the pixels above ``shape_level`` of its
   brightest unsaturated pixel, SAT pixels left out so that a bleed trail does not make a
   star look long) must be round (elongation at most ``max_elongation``) and resolved
   (minor sigma at least ``min_sigma_px``): the spectrum, a bleed trail, hot columns and
   cosmic rays fail.
4. **Score.** Among compact candidates the winner maximises ``flux · exp(-d² / 2σ²)`` with
   ``d`` the distance to the prior and ``σ = prior_sigma_px``: a brighter star wins over a
   closer one only if ``ln(F_star / F_target) > (d_star² - d_target²) / 2σ²`` (with
   σ = 200 px a star 350 px away needs 4.6 times the flux of a target on the prior), and a
   star outside ``search_radius_px`` is never considered.
5. **Fallback.** With no compact candidate near the prior the whole frame, binned by
   ``fallback_bin``, is searched the same way and the brightest compact source is taken,
   with a warning. Nothing compact anywhere raises `BadInputError`.
6. **Refinement.** A 2D Moffat plus a plane is fitted by weighted least squares on a cutout;
   BAD, SAT, SUSPECT, CR, INTRP, NO_DATA and EDGE pixels (and pixels above
   ``saturation_e``) are left out, so a saturated core is centred by its unsaturated wings.
   Outliers beyond ``clip_nsigma`` are dropped and the fit repeated once.
7. **Differential refraction.** At high airmass the zeroth order, made of every wavelength,
   is smeared towards the zenith (blue light refracted more: ~3″ between 350 and 1100 nm at
   airmass 2, a few LATISS pixels of flux-weighted spread). Given the exposure's
   `atmospec.spectro.adr.TraceRefraction`, the shape test forgives the elongation the smear
   gives along the zenith (the moments along it are deconvolved by the smear's variance,
   never below the moment across it), and the position is the flux centroid (first
   moments in an aperture, re-centred until it stops moving), not the Moffat's peak, which
   sits ~1 px from it on the red side: the centroid is what the ADR model of the trace
   refers to (`atmospec.spectro.adr.zeroth_order_reference_nm`). A saturated or masked core
   keeps the Moffat fit of its wings.

The nominal positions and the sky parity are in the instrument profile
(`atmospec.camera.spectrograph.load_instrument`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.optimize import least_squares

from atmospec.camera.description import Camera, load_camera
from atmospec.camera.spectrograph import InstrumentProfile, load_instrument
from atmospec.camera.translator import ObservationInfo, translate_header
from atmospec.errors import BadInputError
from atmospec.exposure import Exposure
from atmospec.io import write_text_atomic
from atmospec.spectro.adr import TraceRefraction
from atmospec.stats import robust_sigma

__all__ = [
    "ZerothOrderConfig",
    "ZerothOrderResult",
    "centroid_record",
    "find_zeroth_order",
    "write_centroid",
    "zeroth_order_cutout",
    "zeroth_order_prior",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- prior


def zeroth_order_prior(
    info: ObservationInfo,
    camera: Camera,
    profile: InstrumentProfile,
    *,
    target_radec: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """Expected position of the target's zeroth order, in the (binned) image.

    The nominal position of the disperser (where the acquisition puts the target) is the
    prior. When the target's catalogue position ``target_radec`` is known and the header's
    pointing (``info.ra``, ``info.dec``) and position angle (``info.rotation_angle``) are
    usable, the offset target - pointing is projected on the detector with the plate scale
    and added: this is the hook for a blind offset or a WCS-based prediction. Pointings of
    0/0 (as some real headers carry) or missing values leave the nominal position.

    Parameters
    ----------
    info : ObservationInfo
        Translated header (disperser, binning, pointing).
    camera : Camera
        Detector shape and plate scale.
    profile : InstrumentProfile
        Nominal positions per disperser and the sky parity (`load_instrument`).
    target_radec : tuple of float, optional
        Catalogue (RA, Dec) of the target, degrees.

    Returns
    -------
    tuple of float
        ``(x, y)`` 0-based pixel centres in the image as read out (binned if binned).
    """
    try:
        nominal = profile.disperser_spec(info.disperser).nominal_zeroth_order
    except KeyError:
        nominal = None
    if nominal is None:
        ny, nx = camera.detector_shape
        nominal = (nx - 1) / 2.0, (ny - 1) / 2.0
        log.warning("%s: no nominal position of disperser %r in the instrument profile: "
                    "prior at the detector centre", info.obs_id, info.disperser)
    x, y = nominal
    dx, dy = _pointing_offset_px(info, camera, profile, target_radec)
    x, y = x + dx, y + dy
    bx, by = info.binning
    # Pixel centres: unbinned pixel i lies in binned pixel (i + 0.5) / b - 0.5.
    return (x + 0.5) / bx - 0.5, (y + 0.5) / by - 0.5


def _pointing_offset_px(info: ObservationInfo, camera: Camera, profile: InstrumentProfile,
                        target_radec: tuple[float, float] | None) -> tuple[float, float]:
    """Offset (unbinned pixels) of the target from where the pointing puts it, or (0, 0)."""
    if (target_radec is None or info.ra is None or info.dec is None
            or profile.sky_parity is None):
        return 0.0, 0.0
    if info.ra == 0.0 and info.dec == 0.0:  # calibration-era headers write RA = Dec = 0
        return 0.0, 0.0
    ra_t, dec_t = target_radec
    dra = ((ra_t - info.ra + 180.0) % 360.0) - 180.0
    xi = dra * math.cos(math.radians(info.dec)) * 3600.0  # arcsec towards East
    eta = (dec_t - info.dec) * 3600.0  # arcsec towards North
    dx, dy = profile.sky_to_image(xi, eta, profile.rotation_angle(info.rotation_angle) or 0.0)
    return float(dx) / camera.plate_scale, float(dy) / camera.plate_scale


# --------------------------------------------------------------------------- config, result


@dataclass(frozen=True)
class ZerothOrderConfig:
    """How the zeroth order is searched for and measured (pixel sizes are unbinned)."""

    search_radius_px: float = 400.0
    """Only sources within this distance of the prior are candidates (before the fallback)."""
    prior_sigma_px: float = 200.0
    """Width of the Gaussian weight on the distance to the prior in the candidates' score."""
    fwhm_guess_px: float = 11.0
    """Expected PSF FWHM (1.05″ seeing): smoothing scale, peak separation and box sizes."""
    detect_nsigma: float = 10.0
    """Detection threshold of the PSF-smoothed image, in its own noise sigmas."""
    min_peak_snr: float = 5.0
    """A candidate's brightest pixel (3x3 median-filtered) must exceed this many sigmas of
    the local background noise."""
    max_candidates: int = 100
    """Brightest local maxima whose shape is measured (the spectrum gives many)."""
    shape_level: float = 0.2
    """Pixels above this fraction of a candidate's brightest unsaturated pixel enter its
    second moments."""
    max_elongation: float = 1.6
    """Largest ratio of major to minor moment sigma of a compact source (spectra: > 3)."""
    min_sigma_px: float = 0.8
    """Smallest minor moment sigma of a star (cosmic rays and hot pixels are sharper)."""
    max_sigma_px: float = 60.0
    """Largest major moment sigma of a star (bigger blobs are not point sources)."""
    fallback_bin: int = 4
    """Binning of the whole-frame search done when nothing compact is near the prior."""
    fit_half_size_fwhm: float = 3.0
    """Half-size of the fitted cutout, in FWHM (grown to hold the wings of a saturated
    core)."""
    saturation_e: float | None = 1.0e5
    """Pixels at or above this level are treated as saturated even when the SAT plane is
    not set (ITL full well ~130 ke⁻, non-linear above ~100 ke⁻); None: trust the mask."""
    sat_grow_px: int = 2
    """Saturated pixels are grown by this much before the fit (bleed edges, spill)."""
    excluded_planes: tuple[str, ...] = ("BAD", "SAT", "SUSPECT", "CR", "INTRP", "NO_DATA",
                                        "EDGE")
    """Mask planes left out of the fit."""
    adr_centroid_radius_fwhm: float = 3.0
    """With refraction, radius of the flux-centroid aperture in fitted FWHM (plus three
    smear sigmas): the Moffat (β ≈ 3) wings beyond 3 FWHM hold 0.2 % of the light."""
    adr_centroid_iterations: int = 8
    """With refraction, most re-centrings of the flux-centroid aperture (it stops once a
    step moves it by less than 10⁻³ px; without convergence the last position is kept)."""
    clip_nsigma: float = 6.0
    """Pixels whose fit residual exceeds this many sigmas are dropped and the fit repeated."""
    warn_distance_px: float = 100.0
    """A zeroth order farther than this from the prior gets a warning."""
    instrument: str = "latiss"
    """Instrument whose camera and spectroscopy table give the prior."""


@dataclass(frozen=True)
class ZerothOrderResult:
    """Position and properties of the target's zeroth order (0-based pixel centres)."""

    x: float
    """Column of the centroid."""
    y: float
    """Row of the centroid."""
    x_err: float
    """1-sigma uncertainty of ``x``, pixels (from the fit covariance)."""
    y_err: float
    """1-sigma uncertainty of ``y``, pixels."""
    flux: float
    """Flux of the fitted Moffat, image units (e⁻ after ISR)."""
    fwhm: float
    """FWHM of the fitted Moffat, pixels."""
    saturated: bool
    """True when the core had saturated pixels (the centroid comes from the wings)."""
    method: str
    """``moffat_fit``, ``moffat_fit_masked_core``, ``flux_centroid`` (a refraction-smeared
    zeroth order) or ``moments`` (when the fit failed)."""
    prior_x: float
    """Column of the prior."""
    prior_y: float
    """Row of the prior."""
    distance_to_prior: float
    """Distance between the centroid and the prior, pixels."""
    search: str
    """``near_prior`` or ``whole_frame`` (the fallback)."""
    warnings: tuple[str, ...] = ()
    """Anything a reader of the result should know."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dictionary of the fields (warnings as a list)."""
        out = asdict(self)
        out["warnings"] = list(self.warnings)
        return out


# --------------------------------------------------------------------------- the finder


@dataclass
class _Candidate:
    x: float
    y: float
    flux: float
    sigma_major: float
    sigma_minor: float
    n_sat: int
    sat_radius: float

    @property
    def elongation(self) -> float:
        return self.sigma_major / max(self.sigma_minor, 1e-6)


def find_zeroth_order(
    exposure: Exposure,
    config: ZerothOrderConfig | None = None,
    prior: tuple[float, float] | None = None,
    *,
    source: str | Path | None = None,
    refraction: TraceRefraction | None = None,
) -> ZerothOrderResult:
    """Find the target's zeroth order on a dispersed post-ISR exposure.

    Parameters
    ----------
    exposure : Exposure
        Post-ISR exposure (electrons; its mask planes are honoured). Not modified.
    config : ZerothOrderConfig, optional
        Search and fit settings.
    prior : tuple of float, optional
        Expected ``(x, y)``; by default `zeroth_order_prior` of the exposure's header.
    source : str or path, optional
        Name used in error messages; by default the header's ``OBSID``.
    refraction : TraceRefraction, optional
        The exposure's differential refraction in this image's frame and plate scale
        (`atmospec.spectro.adr.refraction_from_header`): the zeroth order is then expected
        smeared towards the zenith, and its flux centroid is measured (step 7 above).

    Returns
    -------
    ZerothOrderResult

    Raises
    ------
    BadInputError
        If no compact source is found anywhere on the image.
    """
    cfg = config or ZerothOrderConfig()
    info = _info(exposure.metadata)
    name = str(source) if source is not None else (info.obs_id if info else "exposure")
    binning = info.binning if info else (1, 1)
    scale = 1.0 / math.sqrt(binning[0] * binning[1])
    warnings: list[str] = []
    if prior is None:
        if info is None:
            ny, nx = exposure.shape
            prior = ((nx - 1) / 2.0, (ny - 1) / 2.0)
            warnings.append("header not translatable: prior at the image centre")
        else:
            camera = load_camera(cfg.instrument)
            prior = zeroth_order_prior(info, camera, load_instrument(cfg.instrument))
    px, py = float(prior[0]), float(prior[1])

    image = exposure.image
    bad = _PixelFlags(exposure, ("BAD", "NO_DATA", "EDGE"), nonfinite=True)
    sat = _PixelFlags(exposure, ("SAT",), level=cfg.saturation_e)
    fwhm = cfg.fwhm_guess_px * scale
    smear = _smear(refraction, cfg.instrument)
    shape_cfg = _ShapeLimits(cfg.min_peak_snr, cfg.min_sigma_px * scale, cfg.max_sigma_px * scale,
                             cfg.max_elongation, cfg.shape_level, smear)

    radius = cfg.search_radius_px * scale
    cands = _detect(image, bad, (px, py), radius, fwhm, cfg, binning=1)
    compact = _compact(image, bad, sat, cands, fwhm, shape_cfg, cfg.sat_grow_px)
    compact = [c for c in compact if math.hypot(c.x - px, c.y - py) <= radius]
    search = "near_prior"
    if compact:
        sigma = cfg.prior_sigma_px * scale
        best = max(compact, key=lambda c: c.flux * math.exp(
            -((c.x - px) ** 2 + (c.y - py) ** 2) / (2.0 * sigma**2)))
    else:
        search = "whole_frame"
        cands = _detect(image, bad, None, None, fwhm, cfg, binning=cfg.fallback_bin)
        compact = _compact(image, bad, sat, cands, fwhm, shape_cfg, cfg.sat_grow_px)
        if not compact:
            raise BadInputError(name, "no star found near the expected zeroth-order position "
                                      f"({px:.0f}, {py:.0f}) nor anywhere on the image")
        best = max(compact, key=lambda c: c.flux)
        warnings.append(f"no compact source within {radius:.0f} px of the prior "
                        f"({px:.0f}, {py:.0f}): took the brightest compact source of the "
                        "whole frame")
    log.debug("%s: candidate at (%.1f, %.1f), flux %.3g, elongation %.2f, %d SAT px",
              name, best.x, best.y, best.flux, best.elongation, best.n_sat)

    fit = _refine(exposure, sat, best, fwhm, cfg)
    if fit is None:
        warnings.append("Moffat fit failed: centroid from the second moments")
        x, y = best.x, best.y
        x_err = y_err = best.sigma_major / math.sqrt(max(best.flux, 1.0))
        flux, fit_fwhm, method = best.flux, 2.3548 * best.sigma_minor, "moments"
    else:
        x, y, x_err, y_err, flux, fit_fwhm = fit
        method = "moffat_fit_masked_core" if best.n_sat else "moffat_fit"
        if smear is not None and not best.n_sat:
            centred = _flux_centroid(exposure, sat, x, y, fit_fwhm, smear, cfg)
            if centred is None:
                warnings.append("refraction-smeared zeroth order with masked pixels: the "
                                "Moffat peak is kept, not the flux centroid")
            else:
                x, y, x_err, y_err = centred
                method = "flux_centroid"
    distance = math.hypot(x - px, y - py)
    if distance > cfg.warn_distance_px * scale:
        warnings.append(f"zeroth order {distance:.0f} px from the expected position "
                        f"({px:.0f}, {py:.0f})")
    for text in warnings:
        log.warning("%s: %s", name, text)
    result = ZerothOrderResult(
        x=float(x), y=float(y), x_err=float(x_err), y_err=float(y_err), flux=float(flux),
        fwhm=float(fit_fwhm), saturated=best.n_sat > 0, method=method, prior_x=px, prior_y=py,
        distance_to_prior=float(distance), search=search, warnings=tuple(warnings))
    log.info("%s: zeroth order at (%.2f, %.2f) ± (%.3f, %.3f) px, %s, %.0f px from the prior",
             name, x, y, x_err, y_err, method, distance)
    return result


class _PixelFlags:
    """A boolean plane of an exposure — pixels in any of mask ``planes``, or not finite
    (``nonfinite``), or at or above ``level`` — evaluated on the region indexed only
    (``flags[rows, columns]``, as an array would be): the search reads a few boxes of a
    frame, and the whole planes of a 4k frame cost 50 ms."""

    def __init__(self, exposure: Exposure, planes: Sequence[str], *, nonfinite: bool = False,
                 level: float | None = None) -> None:
        self.exposure = exposure
        self.planes = tuple(planes)
        self.nonfinite = nonfinite
        self.level = level

    @property
    def shape(self) -> tuple[int, ...]:
        return self.exposure.image.shape

    def __getitem__(self, region: tuple[slice, slice]) -> np.ndarray:
        flags = self.exposure.get_mask(*self.planes, region=region)
        image = self.exposure.image[region]
        if self.nonfinite:
            flags |= ~np.isfinite(image)
        if self.level is not None:
            flags |= image >= self.level
        return flags


def _info(header: Any) -> ObservationInfo | None:
    """Translated header, or None when it cannot be translated (a bare Exposure)."""
    try:
        return translate_header(header)
    except BadInputError:
        return None


@dataclass(frozen=True)
class _Smear:
    """The zeroth order's spread by differential refraction: its variance along the zenith."""

    variance_px2: float
    """Flux-weighted variance of the wavelengths' positions along the zenith, px²."""
    direction: tuple[float, float]
    """Unit vector towards the zenith in the image."""


#: Wavelengths of the zeroth order's smear (`_smear`), nm: LATISS's sensitive range.
_SMEAR_NM = np.arange(350.0, 1101.0, 5.0)


def _smear(refraction: TraceRefraction | None, instrument: str) -> _Smear | None:
    """The smear of a zeroth order under ``refraction``, or None (none, or no airmass).

    Its light per nm is taken as the instrument's throughput times λ (photons of a flat
    F_λ): the variance only sets how much elongation the shape test forgives, and the
    position is the measured flux centroid, whatever the star's colour.
    """
    if refraction is None or refraction.airmass <= 1.0 + 1e-9:
        return None
    weights = np.asarray(load_instrument(instrument).throughput(_SMEAR_NM),
                         dtype=np.float64) * _SMEAR_NM
    dx, dy = refraction.shift_px(_SMEAR_NM)
    phi = math.radians(refraction.zenith_angle_deg)
    offsets = dx * math.cos(phi) + dy * math.sin(phi)  # towards the zenith, px
    mean = float(np.sum(weights * offsets) / np.sum(weights))
    var = float(np.sum(weights * (offsets - mean) ** 2) / np.sum(weights))
    return _Smear(var, (math.cos(phi), math.sin(phi)))


@dataclass(frozen=True)
class _ShapeLimits:
    min_snr: float
    min_sigma: float
    max_sigma: float
    max_elongation: float
    level: float
    smear: _Smear | None = None


def _detect(image: np.ndarray, bad: _PixelFlags, centre: tuple[float, float] | None,
            radius: float | None, fwhm: float, cfg: ZerothOrderConfig,
            binning: int) -> list[tuple[float, float, float]]:
    """Local maxima of the PSF-smoothed image: ``(x, y, height)`` in full-resolution pixels.

    With ``centre`` the search covers a square of half-size ``radius`` (plus a margin for the
    smoothing) around it; otherwise the whole image, binned by ``binning``.
    """
    ny, nx = image.shape
    if centre is not None:
        pad = math.ceil(radius + 3 * fwhm)
        x0 = max(int(centre[0]) - pad, 0)
        y0 = max(int(centre[1]) - pad, 0)
        x1 = min(int(centre[0]) + pad + 1, nx)
        y1 = min(int(centre[1]) + pad + 1, ny)
        if x0 >= x1 or y0 >= y1:
            return []
        sub = image[y0:y1, x0:x1].astype(np.float64)
        valid = ~bad[y0:y1, x0:x1]
    else:
        x0 = y0 = 0
        b = max(int(binning), 1)
        my, mx = ny // b * b, nx // b * b
        blocks = (my // b, b, mx // b, b)
        good = (~bad[:my, :mx]).reshape(blocks)
        data = np.where(~bad[:my, :mx], image[:my, :mx], np.float32(0.0)).reshape(blocks)
        count = good.sum(axis=(1, 3))
        sub = data.sum(axis=(1, 3), dtype=np.float64) / np.maximum(count, 1)
        valid = count > 0
    if valid.sum() < 16:
        return []
    step = max(1, int(math.sqrt(valid.size / 250_000)))  # statistics on <= ~250k pixels
    level = float(np.median(sub[::step, ::step][valid[::step, ::step]]))
    data = np.where(valid, sub - level, 0.0)
    b = binning if centre is None else 1
    sigma = max(fwhm / 2.3548 / b, 0.7)
    smooth = ndimage.gaussian_filter(data, sigma, mode="nearest")
    noise = float(robust_sigma(smooth[::step, ::step][valid[::step, ::step]]))
    if not noise > 0:
        return []
    size = max(3, 2 * round(fwhm / b) + 1)
    peaks = (smooth == ndimage.maximum_filter(smooth, size=size)) & valid
    peaks &= smooth > cfg.detect_nsigma * noise
    labels, n = ndimage.label(peaks)
    if n == 0:
        return []
    # A flat top (saturated core) gives a plateau of equal maxima: one candidate per plateau.
    index = np.arange(1, n + 1)
    centres = ndimage.center_of_mass(peaks, labels, index)
    heights = ndimage.maximum(smooth, labels, index)
    out = []
    for (cy, cx), h in zip(centres, heights, strict=True):
        x = x0 + (cx * b + (b - 1) / 2.0)
        y = y0 + (cy * b + (b - 1) / 2.0)
        out.append((x, y, float(h)))
    out.sort(key=lambda t: -t[2])
    return out[: cfg.max_candidates]


def _compact(image: np.ndarray, bad: _PixelFlags, sat: _PixelFlags,
             candidates: Sequence[tuple[float, float, float]], fwhm: float,
             limits: _ShapeLimits, sat_grow: int) -> list[_Candidate]:
    """Measure each candidate's shape and keep the round, resolved ones (merged if close)."""
    kept: list[_Candidate] = []
    for x, y, _ in candidates:
        # A candidate inside an already accepted source (e.g. a second maximum on a
        # saturated plateau) is the same star.
        if any(math.hypot(x - c.x, y - c.y) < max(2 * fwhm, c.sat_radius + fwhm) for c in kept):
            continue
        cand = _measure(image, bad, sat, x, y, fwhm, limits, sat_grow)
        if cand is None:
            continue
        ok = (cand.sigma_minor >= limits.min_sigma and cand.sigma_major <= limits.max_sigma
              and cand.elongation <= limits.max_elongation)
        log.debug("candidate (%.1f, %.1f): sigma %.2f/%.2f, elongation %.2f, flux %.3g -> %s",
                  cand.x, cand.y, cand.sigma_major, cand.sigma_minor, cand.elongation,
                  cand.flux, "compact" if ok else "rejected")
        if ok:
            kept.append(cand)
    return kept


def _measure(image: np.ndarray, bad: _PixelFlags, sat: _PixelFlags, x: float, y: float,
             fwhm: float, limits: _ShapeLimits, sat_grow: int) -> _Candidate | None:
    """Second moments and aperture flux of the source near ``(x, y)``.

    A saturated core is located from its SAT blob (centre of the widest rows: a bleed trail
    only lengthens the blob along the columns) and the moments then use only the pixels
    outside a symmetric cross of half-width ``core radius + sat_grow + 1`` through it: the
    bleed trail and the half-filled pixels at its ends fall in the cross, and a cross masks
    a round star symmetrically, so it still measures round while a streak stays long.
    """
    ny, nx = image.shape
    ix, iy = round(x), round(y)
    h = math.ceil(max(3.0 * fwhm, 8.0))
    bx0, by0 = max(ix - h, 0), max(iy - h, 0)
    sat_box = sat[by0:iy + h + 1, bx0:ix + h + 1]
    n_sat = int(sat_box.sum())
    sat_radius = 0.0
    band = 0.0
    if n_sat:
        lab, _ = ndimage.label(sat_box)
        cy, cx = iy - by0, ix - bx0
        # The saturated blob the candidate sits on (or the biggest one in the box).
        ids = lab[max(cy - 2, 0):cy + 3, max(cx - 2, 0):cx + 3]
        ids = ids[ids > 0]
        if ids.size == 0:
            ids = lab[lab > 0]
        blob = lab == np.bincount(ids).argmax()
        widths = blob.sum(axis=1)
        core_rows = np.nonzero(widths >= 0.8 * widths.max())[0]
        core_cols = np.nonzero(blob[core_rows].any(axis=0))[0]
        x = bx0 + 0.5 * float(core_cols.min() + core_cols.max())
        y = by0 + float(core_rows.mean())
        ix, iy = round(x), round(y)
        sat_radius = 0.5 * float(widths.max())
        band = sat_radius + sat_grow + 1.0
        h = math.ceil(max(h, band + 3.0 * fwhm))
    ys = slice(max(iy - h, 0), min(iy + h + 1, ny))
    xs = slice(max(ix - h, 0), min(ix + h + 1, nx))
    data = image[ys, xs].astype(np.float64)
    unusable = bad[ys, xs]
    yy, xx = np.mgrid[ys, xs]
    good = ~unusable & ~sat[ys, xs]
    if n_sat:
        good &= (np.abs(xx - x) > band) & (np.abs(yy - y) > band)
    if good.sum() < 9:
        return None
    rr = np.hypot(xx - x, yy - y)
    # Local background from the outer ring of the box (robust to the source itself).
    ring = good & (rr > 0.8 * h)
    ring = ring if ring.sum() > 10 else good
    level = float(np.median(data[ring]))
    noise = float(robust_sigma(data[ring]))
    v = data - level
    # A 3x3 median keeps one cosmic ray or hot pixel from setting the peak or the weights.
    vf = ndimage.median_filter(np.where(good, v, 0.0), size=3, mode="nearest")
    peak = float(vf[good].max())
    if not peak > limits.min_snr * noise:
        return None  # nothing significant left once single hot pixels are filtered out
    sel = good & (vf > limits.level * peak)
    w = np.where(sel, vf, 0.0)
    tot = w.sum()
    mx = float((w * xx).sum() / tot)
    my = float((w * yy).sum() / tot)
    dx, dy = xx - mx, yy - my
    ixx = float((w * dx * dx).sum() / tot)
    iyy = float((w * dy * dy).sum() / tot)
    ixy = float((w * dx * dy).sum() / tot)
    if limits.smear is not None:
        ixx, iyy, ixy = _deconvolved(ixx, iyy, ixy, limits.smear)
    tr, det = ixx + iyy, ixx * iyy - ixy * ixy
    disc = math.sqrt(max(tr * tr / 4.0 - det, 0.0))
    lam1, lam2 = tr / 2.0 + disc, max(tr / 2.0 - disc, 0.0)
    if n_sat:
        mx, my = x, y  # the core's centre beats the moments of four masked quadrants
    ap = max(2.5 * fwhm, sat_radius + 2.0 * fwhm)
    in_ap = (np.hypot(xx - mx, yy - my) <= ap) & ~unusable
    flux = float(np.where(in_ap, v, 0.0).sum())
    return _Candidate(mx, my, flux, math.sqrt(lam1), math.sqrt(lam2), n_sat, sat_radius)


def _deconvolved(ixx: float, iyy: float, ixy: float, smear: _Smear
                 ) -> tuple[float, float, float]:
    """Second moments with the refraction smear's variance taken off along the zenith, never
    below the moment across it: the smear forgives elongation along the zenith only."""
    cz, sz = smear.direction
    m_zz = cz * cz * ixx + 2.0 * cz * sz * ixy + sz * sz * iyy
    m_pp = sz * sz * ixx - 2.0 * cz * sz * ixy + cz * cz * iyy
    m_zp = cz * sz * (iyy - ixx) + (cz * cz - sz * sz) * ixy
    m_zz = max(m_zz - smear.variance_px2, min(m_pp, m_zz))
    # back to x, y: M = R diag-ish R^T with R = [[cz, -sz], [sz, cz]]
    return (cz * cz * m_zz - 2.0 * cz * sz * m_zp + sz * sz * m_pp,
            sz * sz * m_zz + 2.0 * cz * sz * m_zp + cz * cz * m_pp,
            cz * sz * (m_zz - m_pp) + (cz * cz - sz * sz) * m_zp)


def _flux_centroid(exposure: Exposure, sat: _PixelFlags, x: float, y: float, fwhm: float,
                   smear: _Smear, cfg: ZerothOrderConfig
                   ) -> tuple[float, float, float, float] | None:
    """First moments of the background-subtracted light in a circular aperture re-centred
    on them, and their errors from the variance plane; None when a masked or saturated
    pixel is in the aperture (its light would be missing from one side)."""
    image = exposure.image
    ny, nx = image.shape
    radius = cfg.adr_centroid_radius_fwhm * fwhm + 3.0 * math.sqrt(smear.variance_px2)
    h = math.ceil(1.5 * radius) + 1
    bits = exposure.bitmask(*cfg.excluded_planes)
    cx, cy = x, y
    out = None
    for _ in range(max(int(cfg.adr_centroid_iterations), 1)):
        ix, iy = round(cx), round(cy)
        if ix - h < 0 or iy - h < 0 or ix + h >= nx or iy + h >= ny:
            return None  # the aperture and its sky ring must lie on the image
        ys, xs = slice(iy - h, iy + h + 1), slice(ix - h, ix + h + 1)
        data = image[ys, xs].astype(np.float64)
        yy, xx = np.mgrid[ys, xs]
        rr = np.hypot(xx - cx, yy - cy)
        unusable = ((exposure.mask[ys, xs] & bits) != 0) | sat[ys, xs] | ~np.isfinite(data)
        inside = rr <= radius
        if unusable[inside].any():
            return None
        ring = (rr > radius) & (rr <= 1.5 * radius) & ~unusable
        if ring.sum() < 20:
            return None
        v = data - float(np.median(data[ring]))
        w = np.where(inside, v, 0.0)
        total = float(w.sum())
        if not total > 0:
            return None
        nxc, nyc = float((w * xx).sum() / total), float((w * yy).sum() / total)
        var = np.where(inside, exposure.variance[ys, xs].astype(np.float64), 0.0)
        out = (nxc, nyc, math.sqrt(float((var * (xx - nxc) ** 2).sum())) / total,
               math.sqrt(float((var * (yy - nyc) ** 2).sum())) / total)
        moved = math.hypot(nxc - cx, nyc - cy)
        cx, cy = nxc, nyc
        if moved < 1e-3:
            break
    return out


#: Range of ln α (α from 0.02 to 3000 px) and of ln(β − 1) (β up to ~150) the Moffat is
#: evaluated at: a trial step of the solver far outside it would divide by α² = 0 or
#: overflow; the solver sees a flat cost there and steps back.
_LN_ALPHA = (-4.0, 8.0)
_LN_BETA_M1 = (-8.0, 5.0)


def _alpha2_beta(la: float, lb: float) -> tuple[float, float]:
    """α² and β of the Moffat's log parameters, kept in `_LN_ALPHA` and `_LN_BETA_M1`."""
    la = min(max(la, _LN_ALPHA[0]), _LN_ALPHA[1])
    lb = min(max(lb, _LN_BETA_M1[0]), _LN_BETA_M1[1])
    return math.exp(2.0 * la), 1.0 + math.exp(lb)


def _moffat(params: np.ndarray, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Moffat profile plus a plane: ``A (1 + r²/α²)^-β + b0 + bx dx + by dy``.

    ``params = (x0, y0, A, ln α, ln(β - 1), b0, bx, by)``: the logarithms keep α > 0 and
    β > 1 without bounds, so the fast unbounded Levenberg-Marquardt solver can be used.
    """
    x0, y0, amp, la, lb, b0, bx, by = params
    alpha2, beta = _alpha2_beta(la, lb)
    r2 = (xx - x0) ** 2 + (yy - y0) ** 2
    return amp * (1.0 + r2 / alpha2) ** (-beta) + b0 + bx * (xx - x0) + by * (yy - y0)


def _moffat_jac(params: np.ndarray, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Analytic derivatives of `_moffat` with respect to its 8 parameters, ``(n, 8)``."""
    x0, y0, amp, la, lb, _, bx, by = params
    alpha2, beta = _alpha2_beta(la, lb)
    dx, dy = xx - x0, yy - y0
    r2 = dx * dx + dy * dy
    q = 1.0 + r2 / alpha2
    qb = q ** (-beta)
    g = 2.0 * amp * beta * qb / q / alpha2  # -2 d(A q^-β)/d(r²)
    jac = np.empty((xx.size, 8))
    jac[:, 0] = g * dx - bx
    jac[:, 1] = g * dy - by
    jac[:, 2] = qb
    jac[:, 3] = g * r2  # α d/dα
    jac[:, 4] = -amp * qb * np.log(q) * (beta - 1.0)  # (β - 1) d/dβ
    jac[:, 5] = 1.0
    jac[:, 6] = dx
    jac[:, 7] = dy
    return jac


def _refine(exposure: Exposure, sat: _PixelFlags, cand: _Candidate, fwhm: float,
            cfg: ZerothOrderConfig) -> tuple[float, float, float, float, float, float] | None:
    """Fit a Moffat on a cutout around the candidate; None when the fit fails."""
    image = exposure.image
    ny, nx = image.shape
    x, y = cand.x, cand.y
    # Saturated cores: the moments of the masked quadrants say little about the width.
    fit_fwhm = fwhm if cand.n_sat else float(np.clip(2.3548 * cand.sigma_minor * 1.4, fwhm,
                                                     4.0 * fwhm))
    bits = exposure.bitmask(*cfg.excluded_planes)
    result = None
    for _ in range(2):  # second pass on a cutout centred on the first answer
        h = math.ceil(max(cfg.fit_half_size_fwhm * fit_fwhm,
                              cand.sat_radius + cfg.fit_half_size_fwhm * fwhm, 12.0))
        ix, iy = round(x), round(y)
        ys = slice(max(iy - h, 0), min(iy + h + 1, ny))
        xs = slice(max(ix - h, 0), min(ix + h + 1, nx))
        data = image[ys, xs].astype(np.float64)
        excluded = (exposure.mask[ys, xs] & bits) != 0
        excluded |= ~np.isfinite(data)
        satc = sat[ys, xs]
        if satc.any():
            excluded |= ndimage.binary_dilation(satc, iterations=max(cfg.sat_grow_px, 1))
        good = ~excluded
        if good.sum() < 20:
            return None
        yy, xx = np.mgrid[ys, xs]
        var = exposure.variance[ys, xs].astype(np.float64)
        level = float(np.median(data[good]))
        if not np.all(var[good] > 0):
            # No variance plane (ISR without the variance step): Poisson + background noise.
            noise2 = float(robust_sigma(data[good] - level)) ** 2
            edge = good & (np.hypot(xx - x, yy - y) > 0.8 * h)
            if edge.sum() > 20:
                level = float(np.median(data[edge]))
                noise2 = float(robust_sigma(data[edge])) ** 2
            var = np.maximum(data - level, 0.0) + max(noise2, 1.0)
        peak = float(np.max(data[good] - level))
        alpha0 = fit_fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / 3.0) - 1.0))
        if cand.n_sat:
            # The core is missing: start from the known wings' scale and a peak above them.
            peak = max(peak, cfg.saturation_e or peak) * 2.0
        p0 = np.array([x, y, max(peak, 1.0), math.log(alpha0), math.log(2.0), level, 0.0, 0.0])
        use = good.copy()
        fit = None
        for _ in range(3):  # fit, drop outliers (cosmic rays, neighbours), refit
            gx, gy, gd, gs = xx[use], yy[use], data[use], np.sqrt(var[use])
            try:
                fit = least_squares(
                    lambda p, gx=gx, gy=gy, gd=gd, gs=gs: (_moffat(p, gx, gy) - gd) / gs, p0,
                    jac=lambda p, gx=gx, gy=gy, gs=gs: _moffat_jac(p, gx, gy) / gs[:, None],
                    method="lm", x_scale="jac", max_nfev=400)
            except (ValueError, np.linalg.LinAlgError, FloatingPointError) as exc:
                log.debug("Moffat fit failed: %s", exc)
                return None
            resid = (_moffat(fit.x, xx, yy) - data) / np.sqrt(var)
            outliers = use & (np.abs(resid) > cfg.clip_nsigma)
            if not outliers.any() or use.sum() - outliers.sum() < 20:
                break
            use = use & ~outliers
            p0 = fit.x
        if not fit.success or not np.all(np.isfinite(fit.x)) or fit.x[2] <= 0:
            return None
        result = fit
        nx_, ny_ = fit.x[0], fit.x[1]
        if math.hypot(nx_ - cand.x, ny_ - cand.y) > max(2.0 * fwhm, cand.sat_radius + fwhm):
            log.debug("fit wandered to (%.1f, %.1f) from (%.1f, %.1f)", nx_, ny_, cand.x, cand.y)
            return None
        x, y = nx_, ny_
        fit_fwhm = float(np.clip(_fwhm(fit.x), 0.5 * fwhm, 4.0 * fwhm))
    assert result is not None
    p = result.x
    dof = max(result.fun.size - p.size, 1)
    chi2 = float(np.sum(result.fun**2)) / dof
    try:
        cov = np.linalg.inv(result.jac.T @ result.jac) * max(chi2, 1.0)
        x_err, y_err = (float(math.sqrt(max(cov[i, i], 0.0))) for i in (0, 1))
    except np.linalg.LinAlgError:
        x_err = y_err = float("nan")
    amp, alpha, beta = p[2], math.exp(p[3]), 1.0 + math.exp(p[4])
    flux = amp * math.pi * alpha**2 / (beta - 1.0)
    return float(p[0]), float(p[1]), x_err, y_err, float(flux), _fwhm(p)


def _fwhm(params: np.ndarray) -> float:
    """FWHM of the Moffat of `_moffat` parameters."""
    alpha, beta = math.exp(params[3]), 1.0 + math.exp(params[4])
    return 2.0 * alpha * math.sqrt(2.0 ** (1.0 / beta) - 1.0)


# --------------------------------------------------------------------------- cutout


def zeroth_order_cutout(exposure: Exposure, bad_planes: Sequence[str], x: float, y: float,
                        half_size: int) -> tuple[np.ndarray, float, float, float]:
    """The background-subtracted image around the zeroth order (Spectractor's ``ORDER0``).

    Parameters
    ----------
    exposure : Exposure
        The exposure (e⁻); only the cutout's pixels are read.
    bad_planes : sequence of str
        Mask planes of the pixels that may not set the background level (non-finite
        pixels may not either).
    x, y : float
        The zeroth order, 0-based pixel centres.
    half_size : int
        Half-size of the square cutout, pixels (cut at the image's edges, as Spectractor's).

    Returns
    -------
    cutout : numpy.ndarray
        float64, the image minus the background level, every pixel as it is (a saturated
        core too, as Spectractor's target image; non-finite pixels stay NaN).
    x0, y0 : float
        The zeroth order in the cutout (Spectractor's ``IM_X0``, ``IM_Y0``).
    level : float
        The background level subtracted: the median of the usable pixels of the cutout's
        outer ring (beyond 80 % of ``half_size``), else of all its usable pixels.
    """
    ny, nx = exposure.image.shape
    h = max(int(half_size), 1)
    ix, iy = round(x), round(y)
    xs = slice(max(ix - h, 0), min(ix + h, nx))
    ys = slice(max(iy - h, 0), min(iy + h, ny))
    data = np.asarray(exposure.image[ys, xs], dtype=np.float64)
    ok = ~exposure.get_mask(*bad_planes, region=(ys, xs)) & np.isfinite(data)
    if not ok.any():
        raise ValueError(f"no usable pixel around the zeroth order ({x:.1f}, {y:.1f})")
    yy, xx = np.mgrid[ys, xs]
    ring = ok & (np.hypot(xx - x, yy - y) > 0.8 * h)
    level = float(np.median(data[ring] if ring.sum() >= 20 else data[ok]))
    return data - level, x - xs.start, y - ys.start, level


# --------------------------------------------------------------------------- output


def write_centroid(
    result: ZerothOrderResult,
    path: str | Path,
    provenance: Sequence[tuple[str, Any, str]] | Mapping[str, Any] = (),
) -> Path:
    """Write the centroid record as JSON, atomically.

    The file holds every field of the result, ``centroid: [x, y]`` and
    ``astrometricMatch: false`` (the keys of Rubin atmospec's ``atmospecCentroid``), and a
    ``provenance`` object.

    Parameters
    ----------
    result : ZerothOrderResult
        What `find_zeroth_order` returned.
    path : path
        Output file (``<OBSID>_centroid.json`` in a repository: `atmospec.layout.exposure_file`).
    provenance : sequence of (key, value, comment) or mapping
        E.g. `atmospec.io.provenance_cards`; HISTORY cards are joined into one string.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    record = centroid_record(result, provenance)
    return write_text_atomic(json.dumps(record, indent=1, default=str) + "\n", path)


def centroid_record(
    result: ZerothOrderResult,
    provenance: Sequence[tuple[str, Any, str]] | Mapping[str, Any] = (),
) -> dict[str, Any]:
    """The record `write_centroid` writes (Rubin atmospec's ``atmospecCentroid`` keys).

    Parameters
    ----------
    result : ZerothOrderResult
        What `find_zeroth_order` returned.
    provenance : sequence of (key, value, comment) or mapping
        E.g. `atmospec.io.provenance_cards`; HISTORY cards are joined into one string.

    Returns
    -------
    dict
        ``centroid: [x, y]``, ``astrometricMatch: false``, every field of the result and a
        ``provenance`` object.
    """
    if isinstance(provenance, Mapping):
        prov = {str(k): v for k, v in provenance.items()}
    else:
        prov: dict[str, Any] = {}
        history = [str(value) for key, value, _ in provenance if key == "HISTORY"]
        prov.update({key: value for key, value, _ in provenance if key != "HISTORY"})
        if history:
            prov["HISTORY"] = "".join(h.removeprefix("atmospec config: ") for h in history)
    return {"centroid": [result.x, result.y], "astrometricMatch": False, **result.to_dict(),
            "provenance": prov}
