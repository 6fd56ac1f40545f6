"""Characterization of one post-ISR imaging exposure: the configuration and the driver.

`characterize` runs, in order: background (`background`), detection with deblending
(`detection`), segment properties and windowed centroids (`photometry`), Moffat PSF fits of
bright isolated stars (`psf`), PSF-fitted centroids of every unsaturated source, joint
PSF fits of each blend, aperture photometry in radii given in FWHM, flags, and the
image-quality summary. It returns the source catalogue (an `astropy.table.Table` with
units), the `ImageQuality` summary and the wall and CPU time of each stage (about 0.9 s
of CPU for a full LATISS frame on one core, `benchmarks/bench_characterize.py`).

Catalogue columns follow photutils' names where photutils has the quantity, in the
spelling of photutils < 3 (``xcentroid``, ``segment_fluxerr``, ``kron_fluxerr``; photutils
3 writes ``x_centroid``, ``segment_flux_err``).

Pixel coordinates are 0-based pixel centres of the assembled image (photutils'
convention); fluxes are in the image unit (e⁻ after ISR).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from astropy import units as u
from astropy.table import Table
from photutils.segmentation import SegmentationImage

from atmospec.camera.description import frame_camera, load_camera
from atmospec.camera.translator import translate_header
from atmospec.errors import BadInputError
from atmospec.exposure import Exposure
from atmospec.imaging.background import (
    BackgroundConfig,
    BackgroundResult,
    estimate_background,
)
from atmospec.imaging.detection import DetectionConfig, DetectionResult, detect
from atmospec.imaging.photometry import (
    CentroidConfig,
    PhotometryConfig,
    VarianceError,
    aperture_fluxes,
    psf_centroids,
    segment_properties,
    windowed_centroids,
)
from atmospec.imaging.psf import (
    MoffatFit,
    PsfConfig,
    fit_blend,
    fit_moffat,
    psf_quadratic_form,
    reject_outliers,
    select_psf_stars,
    summarize_psf,
)

log = logging.getLogger(__name__)

__all__ = [
    "CharacterizeConfig",
    "CharacterizeResult",
    "ImageQuality",
    "catalog_columns",
    "characterize",
]


@dataclass(frozen=True)
class CharacterizeConfig:
    """Configuration of the imaging characterization."""

    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    """Sky level and noise."""
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    """Matched filter, threshold, deblending."""
    centroid: CentroidConfig = field(default_factory=CentroidConfig)
    """Centroid refinement."""
    photometry: PhotometryConfig = field(default_factory=PhotometryConfig)
    """Apertures and flags."""
    psf: PsfConfig = field(default_factory=PsfConfig)
    """PSF-star selection and Moffat fits."""
    camera: str = "latiss"
    """Instrument whose plate scale is used for an image whose header names none (a
    synthetic image); a raw header's own instrument and detector are used otherwise."""
    set_detected_mask: bool = True
    """Set the exposure's DETECTED mask plane to the source footprints (modifies
    ``exposure.mask`` in place, replacing any earlier DETECTED bits; nothing else of the
    exposure is changed)."""
    keep_maps: bool = False
    """Keep the background estimate and the segmentation image in the result (the
    background's full-resolution maps, 64 MB each for a LATISS frame, are interpolated
    when first read); off by default so that a night's results stay small."""


@dataclass(frozen=True)
class ImageQuality:
    """Image-quality summary of one exposure (NaN where it could not be measured)."""

    obs_id: str
    """Observation identifier."""
    fwhm_px: float
    """Median PSF FWHM of the PSF stars, pixels."""
    fwhm_arcsec: float
    """The same in arcsec (camera plate scale)."""
    ellipticity: float
    """Median PSF ellipticity ``1 - b/a``."""
    position_angle_deg: float
    """PSF major-axis angle, degrees counter-clockwise from +x (axial median)."""
    moffat_beta: float
    """Median Moffat index."""
    sky_e: float
    """Median sky level, image units per pixel (e⁻)."""
    sky_e_per_s: float
    """Sky level per second of exposure (NaN for a zero or unknown exposure time)."""
    background_rms_e: float
    """Median per-pixel sky noise, image units."""
    n_sources: int
    """Number of detected sources."""
    n_saturated: int
    """Number of sources touching saturated pixels."""
    n_psf_stars: int
    """Number of stars with a good PSF fit."""
    exptime_s: float
    """Exposure time used, s (NaN if unknown)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary (JSON/YAML-friendly numbers)."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if isinstance(value, (float, np.floating)):
                out[key] = float(value)
            elif isinstance(value, (int, np.integer)):
                out[key] = int(value)
            else:
                out[key] = value
        return out


@dataclass
class CharacterizeResult:
    """What `characterize` produced."""

    catalog: Table
    """One row per source (see `catalog_columns`); ``meta`` holds ``OBSID``,
    ``image_quality`` and the aperture radii."""
    image_quality: ImageQuality
    """Summary figures."""
    timings: dict[str, float]
    """Wall time of each stage, s (``total`` included)."""
    config: CharacterizeConfig
    """Configuration used (recorded in the catalogue's provenance)."""
    background: BackgroundResult | None = None
    """Background maps (only with `CharacterizeConfig.keep_maps`)."""
    segmentation: SegmentationImage | None = None
    """Segmentation image (only with `CharacterizeConfig.keep_maps`)."""
    cpu_timings: dict[str, float] = field(default_factory=dict)
    """CPU time (this process, user and system) of each stage, s (``total`` included):
    the figure that a busy machine disturbs least."""


#: Catalogue columns before the aperture columns: (name, unit kind, dtype, description).
#: Unit kinds: "pix", "pix2", "flux" (the image unit), "deg", "arcsec" or None.
_BASE_COLUMNS: tuple[tuple[str, str | None, str, str], ...] = (
    ("label", None, "i8", "segmentation label"),
    ("xcentroid", "pix", "f8", "x of the centroid (windowed if refined), 0-based pixel centre"),
    ("ycentroid", "pix", "f8", "y of the centroid (windowed if refined), 0-based pixel centre"),
    ("bbox_xmin", "pix", "i8", "segment bounding box"),
    ("bbox_xmax", "pix", "i8", "segment bounding box"),
    ("bbox_ymin", "pix", "i8", "segment bounding box"),
    ("bbox_ymax", "pix", "i8", "segment bounding box"),
    ("area", "pix2", "f8", "segment area"),
    ("segment_flux", "flux", "f8", "sum of the background-subtracted segment"),
    ("segment_fluxerr", "flux", "f8", "error of segment_flux (VARIANCE plane)"),
    ("kron_flux", "flux", "f8", "flux in the Kron aperture (photutils)"),
    ("kron_fluxerr", "flux", "f8", "error of kron_flux"),
    ("max_value", "flux", "f8", "brightest background-subtracted pixel of the segment"),
    ("fwhm", "pix", "f8", "FWHM from the segment's second moments (photutils)"),
    ("ellipticity", None, "f8", "1 - b/a from the segment's second moments (photutils)"),
    ("orientation", "deg", "f8", "segment major-axis angle from +x, counter-clockwise"),
)

_TAIL_COLUMNS: tuple[tuple[str, str | None, str, str], ...] = (
    ("snr", None, "f8", "S/N in the first aperture"),
    ("masked_fraction", None, "f8", "share of the largest aperture that is masked"),
    ("flag_saturated", None, "bool", "segment or first aperture touches SAT pixels"),
    ("flag_edge", None, "bool", "largest aperture leaves the image or covers EDGE pixels"),
    ("flag_blended", None, "bool", "source was split off a blended segment"),
    ("flag_masked", None, "bool", "masked_fraction above the configured limit"),
    ("flag_centroid", None, "bool", "windowed centroid failed; isophotal centroid kept"),
    ("psf_star", None, "bool", "used for the PSF summary (good Moffat fit)"),
    ("psf_fwhm", "pix", "f8", "Moffat FWHM, geometric mean of the axes"),
    ("psf_fwhm_arcsec", "arcsec", "f8", "Moffat FWHM"),
    ("psf_ellipticity", None, "f8", "Moffat 1 - b/a"),
    ("psf_orientation", "deg", "f8", "Moffat major-axis angle from +x, counter-clockwise"),
    ("psf_beta", None, "f8", "Moffat index"),
    ("psf_chi2", None, "f8", "reduced chi-square of the Moffat fit"),
)


def catalog_columns(n_apertures: int) -> list[tuple[str, str | None, str, str]]:
    """Column names, unit kinds, dtypes and descriptions of the source catalogue."""
    aper: list[tuple[str, str | None, str, str]] = []
    for k in range(n_apertures):
        aper.append((f"aperture_flux_{k}", "flux", "f8", f"flux in aperture {k}"))
        aper.append((f"aperture_fluxerr_{k}", "flux", "f8", f"error of aperture_flux_{k}"))
    return [*_BASE_COLUMNS, *aper, *_TAIL_COLUMNS]


def _unit(kind: str | None, flux_unit: u.UnitBase) -> u.UnitBase | None:
    return {"pix": u.pix, "pix2": u.pix**2, "flux": flux_unit, "deg": u.deg,
            "arcsec": u.arcsec, None: None}[kind]


def _build_table(values: dict[str, np.ndarray], n_apertures: int, flux_unit: u.UnitBase,
                 n: int) -> Table:
    table = Table()
    for name, kind, dtype, description in catalog_columns(n_apertures):
        data = values.get(name)
        if data is None:
            data = np.zeros(n, dtype=bool) if dtype == "bool" else np.full(n, np.nan)
        table[name] = np.asarray(data).astype(dtype)
        table[name].unit = _unit(kind, flux_unit)
        table[name].description = description
    return table


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - t0
            self.cpu[stage] = self.cpu.get(stage, 0.0) + time.process_time() - c0


@dataclass(frozen=True)
class _Flagged:
    """The pixels of an exposure that have any mask bit set."""

    index: np.ndarray
    """Their flat indices, increasing."""
    bits: np.ndarray
    """Their mask values."""

    def select(self, value: int) -> np.ndarray:
        """Flat indices of the pixels with any bit of ``value`` set."""
        return self.index[(self.bits & value) != 0]


def _mask_planes(exposure: Exposure, wanted: dict[str, tuple[str, ...]],
                 nonfinite: np.ndarray | None = None, with_nonfinite: tuple[str, ...] = ()
                 ) -> tuple[dict[str, np.ndarray], _Flagged]:
    """Boolean images of several plane combinations from one pass over the mask.

    Flagged pixels are a few per cent of a frame: their indices are found once and each
    combination is scattered into a fresh array, instead of one full-frame test each;
    combinations of the same planes share one array. The flat indices ``nonfinite`` are
    added to the combinations named in ``with_nonfinite``. Also returns the flagged
    pixels, for later look-ups that need no image (e.g. the labels under SAT pixels).
    """
    mask = exposure.mask.reshape(-1)
    # On a boolean image nonzero is ~4x faster than on the int32 mask (1 M flagged
    # pixels: 8 ms instead of 32 ms, the test included).
    flagged = np.flatnonzero(mask != 0)
    bits = mask[flagged]
    out: dict[str, np.ndarray] = {}
    made: dict[tuple[int, bool], np.ndarray] = {}
    for name, planes in wanted.items():
        # Planes the exposure does not have are simply absent (the mask is not extended).
        value = 0
        for plane in planes:
            if plane in exposure.mask_planes:
                value |= 1 << exposure.mask_planes[plane]
        add_nonfinite = nonfinite is not None and name in with_nonfinite
        key = (value, add_nonfinite)
        if key not in made:
            plane_mask = np.zeros(mask.size, dtype=bool)
            plane_mask[flagged[(bits & value) != 0]] = True
            if add_nonfinite:
                plane_mask[nonfinite] = True
            made[key] = plane_mask.reshape(exposure.mask.shape)
        out[name] = made[key]
    return out, _Flagged(flagged, bits)


@dataclass(frozen=True)
class _Observation:
    obs_id: str
    exptime: float
    """NaN if unknown."""
    binning: tuple[int, int]
    detector: tuple[str, str | None] | None
    """``(instrument, detector)`` of the header; None for a header no translator reads."""


def _observation(exposure: Exposure) -> _Observation:
    """OBSID, exposure time, on-chip binning and detector from the metadata."""
    header = exposure.metadata
    detector: tuple[str, str | None] | None = None
    try:
        info = translate_header(header)
        obs_id, exptime, binning = info.obs_id, info.exposure_time, info.binning
        detector = (info.instrument, info.detector)
    except BadInputError:
        # Not a raw header (e.g. a synthetic image): fall back to the plain keywords.
        obs_id = str(header.get("OBSID", "unknown"))
        exptime = header.get("EXPTIME")
        binning = (1, 1)
    try:
        exptime = float(exptime) if exptime is not None else math.nan
    except (TypeError, ValueError):
        exptime = math.nan
    return _Observation(obs_id, exptime, binning, detector)


def characterize(
    exposure: Exposure, config: CharacterizeConfig = CharacterizeConfig()
) -> CharacterizeResult:
    """Background, sources, PSF and photometry of one post-ISR imaging exposure.

    Parameters
    ----------
    exposure : Exposure
        Post-ISR exposure (image in e⁻, mask planes, variance). Only its mask is modified,
        and only if `CharacterizeConfig.set_detected_mask` (DETECTED plane).
    config : CharacterizeConfig
        Settings of every stage.

    Returns
    -------
    CharacterizeResult

    Raises
    ------
    BadInputError
        If the image is not 2D, is smaller than a background box or has almost no
        usable pixel.
    """
    observation = _observation(exposure)
    obs_id = observation.obs_id
    if exposure.image.ndim != 2:
        raise BadInputError(obs_id, f"image has {exposure.image.ndim} dimensions, expected 2")
    frame = _prepare(exposure, observation, config)
    found = _detect(frame, config)
    if found is None:
        log.warning("%s: no source detected", obs_id)
        n_radii = len(config.photometry.radii_fwhm)
        return _finish(exposure, frame, config, None, {}, 0, [math.nan] * n_radii,
                       summarize_psf(MoffatFit.empty(0)))
    sources = _measure(frame, found, config)
    psf = _fit_psf(frame, sources, config)
    _psf_centroids(frame, sources, psf, config)
    if sources.parents and config.centroid.fit_blends:
        with frame.timer("blends"):
            _fit_blends(frame, sources, psf, config.centroid)
    with frame.timer("photometry"):
        radii_px = [r * psf.fwhm_used for r in config.photometry.radii_fwhm]
        planes = {"masked": frame.phot_masked, "saturated": frame.saturated,
                  "edge": frame.edge}
        aper = aperture_fluxes(frame.data, sources.error, frame.phot_masked, sources.x,
                               sources.y, tuple(radii_px), config.photometry.method, planes)
    values = _catalog_values(sources, psf, aper, len(radii_px), frame.plate_scale, config)
    return _finish(exposure, frame, config, sources.segmentation, values, len(sources.labels),
                   radii_px, psf.summary)


@dataclass
class _Frame:
    """One exposure made ready for measurement, and the run's bookkeeping."""

    obs_id: str
    """Observation identifier."""
    exptime: float
    """Exposure time, s (NaN if unknown)."""
    plate_scale: float
    """Arcsec per pixel."""
    flux_unit: u.UnitBase
    """Unit of the image (electron or adu)."""
    fwhm_guess: float
    """First PSF FWHM estimate, pixels."""
    background: BackgroundResult
    """Sky level and noise maps."""
    data: np.ndarray
    """Background-subtracted image (non-finite pixels set to 0)."""
    variance: np.ndarray
    """Per-pixel variance (the VARIANCE plane, or a stand-in when it is empty)."""
    det_masked: np.ndarray
    """Pixels left out of detection (configured planes, non-finite)."""
    phot_masked: np.ndarray
    """Pixels left out of measurements (configured planes, non-finite)."""
    saturated: np.ndarray
    """SAT pixels."""
    saturated_index: np.ndarray
    """Flat indices of the SAT pixels."""
    edge: np.ndarray
    """EDGE pixels."""
    flagged: _Flagged
    """Pixels with any mask bit set when the run started."""
    timer: _Timer
    """Wall time of each stage."""
    t_start: float
    """When the run started (`time.perf_counter`)."""
    c_start: float
    """The process's CPU time then (`time.process_time`)."""


@dataclass
class _Found:
    """What detection found (the detection's S/N image is not kept: a full frame)."""

    segmentation: SegmentationImage
    """Segmentation image of the (deblended) sources."""
    blended_labels: set[int]
    """Labels split off a blended segment."""
    parents: dict[int, list[int]]
    """Children's labels of each deblended segment."""
    peaks: dict[int, tuple[float, float]]
    """Peak (x, y) of each deblended child."""


@dataclass
class _Sources:
    """The detected sources being measured (positions refined in place)."""

    segmentation: SegmentationImage
    """Segmentation image."""
    props: dict[str, np.ndarray]
    """Segment properties (`segment_properties`)."""
    error: VarianceError
    """Per-pixel 1-σ error (made from the variance cut-out by cut-out)."""
    flag_sat: np.ndarray
    """bool: the segment touches saturated pixels."""
    blended: np.ndarray
    """bool: split off a blended segment."""
    parents: dict[int, list[int]]
    """Children's labels of each deblended segment."""
    x: np.ndarray
    """Centroid x, refined stage by stage."""
    y: np.ndarray
    """Centroid y, refined stage by stage."""
    centroid_ok: np.ndarray
    """bool: the latest refinement succeeded (or none was asked)."""

    @property
    def labels(self) -> np.ndarray:
        """Segmentation label of each source."""
        return self.props["label"]


@dataclass
class _PsfModel:
    """The PSF measured on the exposure, as the later stages use it."""

    chosen: np.ndarray
    """Indices of the PSF-star candidates."""
    fit: MoffatFit
    """Their Moffat fits."""
    summary: dict[str, float]
    """`summarize_psf` of the good fits."""
    fwhm_used: float
    """The measured FWHM, else the first guess, pixels."""
    beta: float
    """The measured Moffat index, else the configured one."""
    form: np.ndarray
    """Quadratic form of the PSF (`psf_quadratic_form`)."""


def _prepare(exposure: Exposure, observation: _Observation, config: CharacterizeConfig
             ) -> _Frame:
    """Mask planes, background subtraction and the variance to use."""
    timer = _Timer()
    t_start, c_start = time.perf_counter(), time.process_time()
    instrument, detector = observation.detector or (config.camera, None)
    try:
        camera = load_camera(instrument, detector)
    except BadInputError as exc:
        raise BadInputError(observation.obs_id, exc.problem) from None
    # Arcsec per pixel of this image: a binned pixel is larger on the sky.
    obs_id, exptime = observation.obs_id, observation.exptime
    plate_scale = frame_camera(camera, observation.binning, obs_id).pixel_scale
    image = exposure.image
    with timer("masks"):
        # A NaN or an infinity anywhere makes the sum non-finite: the usual finite image
        # costs one reduction, not a boolean image and three full-frame ORs.
        nonfinite = (None if np.isfinite(np.sum(image))
                     else np.flatnonzero(~np.isfinite(image)))
        planes, flagged = _mask_planes(exposure, {
            "background": config.background.mask_planes,
            "detection": config.detection.mask_planes,
            "photometry": config.photometry.mask_planes,
            "saturated": ("SAT",),
            "edge": ("EDGE",),
        }, nonfinite, ("background", "detection", "photometry"))
        saturated_index = flagged.select(1 << exposure.mask_planes["SAT"]
                                         if "SAT" in exposure.mask_planes else 0)

    with timer("background"):
        bkg = estimate_background(image, planes["background"], config.background,
                                  name=obs_id)
        data = bkg.subtract_from(image)
        if nonfinite is not None:
            data.reshape(-1)[nonfinite] = 0.0

    variance = exposure.variance
    if not np.any(variance[::16, ::16] > 0):
        # No VARIANCE plane (e.g. an image wrapped by Exposure.from_image): stand in the sky
        # noise plus, in electrons, the signal's Poisson noise, so that errors, weights and
        # the PSF fits' chi-square stay meaningful.
        log.warning("%s: VARIANCE plane is empty: using sky RMS^2%s instead", obs_id,
                    " + signal" if exposure.unit == "electron" else "")
        variance = np.square(bkg.rms)
        if exposure.unit == "electron":
            variance += np.maximum(data, 0.0)
    return _Frame(obs_id=obs_id, exptime=exptime, plate_scale=plate_scale,
                  flux_unit=u.electron if exposure.unit == "electron" else u.adu,
                  fwhm_guess=config.detection.fwhm_guess_arcsec / plate_scale,
                  background=bkg, data=data, variance=variance,
                  det_masked=planes["detection"], phot_masked=planes["photometry"],
                  saturated=planes["saturated"],
                  saturated_index=saturated_index,
                  edge=planes["edge"], flagged=flagged, timer=timer, t_start=t_start,
                  c_start=c_start)


def _detect(frame: _Frame, config: CharacterizeConfig) -> _Found | None:
    """Matched-filter detection and deblending; None when nothing is found."""
    with frame.timer("detection"):
        det: DetectionResult = detect(frame.data, frame.background, frame.det_masked,
                                      frame.saturated, frame.fwhm_guess, config.detection,
                                      frame.variance)
    if det.segmentation is None or det.segmentation.n_labels == 0:
        return None
    return _Found(det.segmentation, det.blended_labels, det.deblended_parents, det.peaks)


def _measure(frame: _Frame, found: _Found, config: CharacterizeConfig) -> _Sources:
    """Segment properties and flags, then windowed centroids."""
    segm = found.segmentation
    with frame.timer("measure"):
        error = VarianceError(frame.variance)
        props = segment_properties(frame.data, segm, frame.phot_masked, error,
                                   kron=config.photometry.kron)
        labels = props["label"]
        n = len(labels)
        sat_labels = (np.unique(segm.data.reshape(-1)[frame.saturated_index])
                      if frame.saturated_index.size else np.zeros(0, int))
        flag_sat = np.isin(labels, sat_labels)
        blended = np.isin(labels, np.fromiter(found.blended_labels, dtype=int))

    with frame.timer("centroids"):
        x_iso, y_iso = props["x_centroid"].copy(), props["y_centroid"].copy()
        # A deblended child starts from its peak: its isophotal centroid is pulled
        # towards the brighter neighbour whose wing its segment holds.
        for i in np.flatnonzero(blended):
            peak = found.peaks.get(int(labels[i]))
            if peak is not None:
                x_iso[i], y_iso[i] = peak
        centroid_ok = np.zeros(n, dtype=bool)
        x, y = x_iso.copy(), y_iso.copy()
        # Saturated stars keep the isophotal centroid: their clipped core and bleed trail
        # make any profile-weighted centroid wander.
        refine = ~flag_sat if config.centroid.refine else np.zeros(n, dtype=bool)
        if not config.centroid.refine_blended:
            refine &= ~blended
        centroid_ok[~refine] = True  # nothing to refine: the starting centroid stands
        if refine.any():
            xr, yr, ok = windowed_centroids(frame.data, frame.phot_masked, segm.data,
                                            labels[refine], x_iso[refine], y_iso[refine],
                                            frame.fwhm_guess, config.centroid)
            x[refine], y[refine], centroid_ok[refine] = xr, yr, ok
    return _Sources(segm, props, error, flag_sat, blended, found.parents, x, y, centroid_ok)


def _fit_psf(frame: _Frame, sources: _Sources, config: CharacterizeConfig) -> _PsfModel:
    """Moffat fits of bright isolated stars, outliers rejected, and their summary."""
    with frame.timer("psf"):
        props = sources.props
        with np.errstate(divide="ignore", invalid="ignore"):
            seg_snr = props["segment_flux"] / props["segment_flux_err"]
        usable = (~sources.flag_sat & ~sources.blended
                  & (sources.centroid_ok | ~config.centroid.refine))
        chosen = select_psf_stars(sources.x, sources.y, seg_snr, usable, frame.data.shape,
                                  frame.fwhm_guess, config.psf)
        fit = fit_moffat(frame.data, frame.variance, frame.phot_masked,
                         sources.segmentation.data, sources.labels[chosen], sources.x[chosen],
                         sources.y[chosen], frame.fwhm_guess, config.psf)
        n_out = reject_outliers(fit, config.psf.clip_nsigma)
        if n_out:
            log.debug("%s: %d PSF stars rejected as outliers", frame.obs_id, n_out)
        summary = summarize_psf(fit)
        if summary["n_stars"] == 0:
            log.warning("%s: no usable PSF star (%d candidates): FWHM unknown", frame.obs_id,
                        len(chosen))
    fwhm_px = summary["fwhm_px"]
    fwhm_used = fwhm_px if np.isfinite(fwhm_px) else frame.fwhm_guess
    beta = summary["beta"] if np.isfinite(summary["beta"]) else config.psf.beta
    form = psf_quadratic_form(fwhm_used, summary["ellipticity"],
                              summary["position_angle_deg"], beta)
    return _PsfModel(chosen, fit, summary, fwhm_used, beta, form)


def _psf_centroids(frame: _Frame, sources: _Sources, psf: _PsfModel,
                   config: CharacterizeConfig) -> None:
    """Positions of unsaturated sources from a fit of the measured PSF (in place)."""
    fwhm_px = psf.summary["fwhm_px"]
    n = len(sources.labels)
    fit_psf = ~sources.flag_sat if config.centroid.refine else np.zeros(n, dtype=bool)
    if not (fit_psf.any() and np.isfinite(fwhm_px) and config.centroid.psf_fit):
        return
    with frame.timer("centroids"):
        # Blended stars too: with their neighbours' pixels given no weight, this beats
        # their peak position (which a bright neighbour's wing curvature moves).
        xr, yr, ok = psf_centroids(frame.data, frame.variance, frame.phot_masked,
                                   sources.segmentation.data, sources.labels[fit_psf],
                                   sources.x[fit_psf], sources.y[fit_psf], psf.form, psf.beta,
                                   fwhm_px, config.centroid, slope=sources.blended[fit_psf])
        sources.x[fit_psf], sources.y[fit_psf] = xr, yr
        sources.centroid_ok[fit_psf] |= ok


def _catalog_values(sources: _Sources, psf: _PsfModel, aper: dict[str, np.ndarray],
                    n_radii: int, plate_scale: float, config: CharacterizeConfig
                    ) -> dict[str, np.ndarray]:
    """The catalogue's columns (`catalog_columns`) from every stage's measurements."""
    props = sources.props
    n = len(sources.labels)
    values: dict[str, np.ndarray] = {
        "label": sources.labels,
        "xcentroid": sources.x,
        "ycentroid": sources.y,
        "bbox_xmin": props["bbox_xmin"], "bbox_xmax": props["bbox_xmax"],
        "bbox_ymin": props["bbox_ymin"], "bbox_ymax": props["bbox_ymax"],
        "area": props["area"],
        "segment_flux": props["segment_flux"],
        "segment_fluxerr": props["segment_flux_err"],
        "kron_flux": props.get("kron_flux"),
        "kron_fluxerr": props.get("kron_flux_err"),
        "max_value": props["max_value"],
        "fwhm": props["fwhm"],
        "ellipticity": props["ellipticity"],
        "orientation": props["orientation"],
    }
    for k in range(n_radii):
        values[f"aperture_flux_{k}"] = aper[f"aperture_flux_{k}"]
        values[f"aperture_fluxerr_{k}"] = aper[f"aperture_fluxerr_{k}"]
    with np.errstate(divide="ignore", invalid="ignore"):
        values["snr"] = aper["aperture_flux_0"] / aper["aperture_fluxerr_0"]
    values["masked_fraction"] = aper["fraction_masked"]
    values["flag_saturated"] = sources.flag_sat | (aper["fraction_saturated"] > 0)
    values["flag_edge"] = (aper["fraction_offimage"] > 0) | (aper["fraction_edge"] > 0)
    values["flag_blended"] = sources.blended
    values["flag_masked"] = aper["fraction_masked"] > config.photometry.max_masked_fraction
    values["flag_centroid"] = (~sources.centroid_ok if config.centroid.refine
                               else np.zeros(n, bool))
    psf_star = np.zeros(n, dtype=bool)
    psf_star[psf.chosen] = psf.fit.ok
    values["psf_star"] = psf_star
    fit = psf.fit
    for name, arr in (("psf_fwhm", fit.fwhm), ("psf_ellipticity", fit.ellipticity),
                      ("psf_orientation", fit.orientation), ("psf_beta", fit.beta),
                      ("psf_chi2", fit.chi2)):
        column = np.full(n, np.nan)
        column[psf.chosen] = arr
        values[name] = column
    values["psf_fwhm_arcsec"] = values["psf_fwhm"] * plate_scale
    return values


def _fit_blends(frame: _Frame, sources: _Sources, psf: _PsfModel,
                config: CentroidConfig) -> None:
    """Positions of deblended stars from a joint PSF fit of each blend (in place).

    Blends holding a saturated star are left alone (their core cannot be modelled); a
    star whose fitted position leaves `CentroidConfig.max_shift_fwhm` of its start keeps
    its start and gets ``flag_centroid``.
    """
    data, props, x, y = frame.data, sources.props, sources.x, sources.y
    index = {int(lab): i for i, lab in enumerate(sources.labels)}
    ny, nx = data.shape
    margin = math.ceil(psf.fwhm_used)
    for children in sources.parents.values():
        rows = np.array([index[c] for c in children if c in index], dtype=int)
        if len(rows) < 2 or sources.flag_sat[rows].any() or len(rows) > config.max_blend_size:
            continue
        y0 = max(int(props["bbox_ymin"][rows].min()) - margin, 0)
        y1 = min(int(props["bbox_ymax"][rows].max()) + margin + 1, ny)
        x0 = max(int(props["bbox_xmin"][rows].min()) - margin, 0)
        x1 = min(int(props["bbox_xmax"][rows].max()) + margin + 1, nx)
        fx, fy, _, ok = fit_blend(data, frame.variance, frame.phot_masked,
                                  (slice(y0, y1), slice(x0, x1)), x[rows], y[rows], psf.form,
                                  psf.beta)
        shift = np.hypot(fx - x[rows], fy - y[rows])
        good = (ok & np.isfinite(shift) & (shift <= config.max_shift_fwhm * psf.fwhm_used)
                & (fx >= -0.5) & (fx <= nx - 0.5) & (fy >= -0.5) & (fy <= ny - 0.5))
        x[rows[good]], y[rows[good]] = fx[good], fy[good]
        sources.centroid_ok[rows] = good


def _set_detected(exposure: Exposure, flagged: _Flagged, segm: SegmentationImage | None,
                  values: dict[str, np.ndarray]) -> None:
    """Set the DETECTED plane to the footprints of the segments (and nowhere else).

    An earlier run's footprints are cleared only if the mask has any (the flagged pixels
    say so), and the new ones are set segment box by segment box: no full-frame pass.
    """
    bit = exposure.bitmask("DETECTED")
    if np.any(flagged.bits & bit):
        exposure.mask &= np.int32(~bit)
    if segm is None or "bbox_xmin" not in values:
        return
    seg, mask = segm.data, exposure.mask
    for x0, x1, y0, y1 in zip(values["bbox_xmin"], values["bbox_xmax"], values["bbox_ymin"],
                              values["bbox_ymax"], strict=True):
        box = (slice(int(y0), int(y1) + 1), slice(int(x0), int(x1) + 1))
        view = mask[box]
        np.bitwise_or(view, np.int32(bit), out=view, where=seg[box] > 0)


def _finish(exposure: Exposure, frame: _Frame, config: CharacterizeConfig,
            segm: SegmentationImage | None, values: dict[str, np.ndarray], n: int,
            radii_px: list[float], psf_summary: dict[str, float]) -> CharacterizeResult:
    """Assemble the table, the summary and the timings; set DETECTED."""
    timer = frame.timer
    radii_fwhm = tuple(config.photometry.radii_fwhm)
    sky = frame.background.median
    exptime = frame.exptime
    sky_per_s = sky / exptime if np.isfinite(exptime) and exptime > 0 else math.nan
    n_saturated = int(values["flag_saturated"].sum()) if "flag_saturated" in values else 0
    with timer("catalog"):
        table = _build_table(values, len(radii_fwhm), frame.flux_unit, n)
        if config.set_detected_mask:
            _set_detected(exposure, frame.flagged, segm, values)
        fwhm_px = psf_summary["fwhm_px"]
        quality = ImageQuality(
            obs_id=frame.obs_id,
            fwhm_px=fwhm_px,
            fwhm_arcsec=fwhm_px * frame.plate_scale,
            ellipticity=psf_summary["ellipticity"],
            position_angle_deg=psf_summary["position_angle_deg"],
            moffat_beta=psf_summary["beta"],
            sky_e=sky,
            sky_e_per_s=sky_per_s,
            background_rms_e=frame.background.median_rms,
            n_sources=n,
            n_saturated=n_saturated,
            n_psf_stars=int(psf_summary["n_stars"]),
            exptime_s=exptime,
        )
        table.meta["OBSID"] = frame.obs_id
        table.meta["image_quality"] = quality.to_dict()
        table.meta["aperture_radii_fwhm"] = [float(r) for r in radii_fwhm]
        table.meta["aperture_radii_px"] = [float(r) for r in radii_px]
        # The frame the coordinates are in (a binned frame's is smaller than the detector).
        table.meta["image_shape"] = [int(n) for n in exposure.image.shape]
    timer.timings["total"] = time.perf_counter() - frame.t_start
    timer.cpu["total"] = time.process_time() - frame.c_start
    log.info("%s: %d sources, FWHM %.2f px (%.2f\"), %d PSF stars, sky %.1f e-, %.2f s",
             frame.obs_id, n, quality.fwhm_px, quality.fwhm_arcsec, quality.n_psf_stars, sky,
             timer.timings["total"])
    return CharacterizeResult(
        catalog=table, image_quality=quality, timings=dict(timer.timings), config=config,
        cpu_timings=dict(timer.cpu),
        background=frame.background if config.keep_maps else None,
        segmentation=segm if config.keep_maps else None,
    )
