"""The spectroscopy chain of one dispersed exposure: zeroth order → extraction (rotation,
background, chromatic PSF, optimal 1D extraction) → wavelength calibration on spectral
features (D2CCD and pixel shift) → order-2 correction → `Spectrum`.

One function, `process_dispersed`, used by ``atmospec extract`` and by the night runner's
``extract`` task, so both give the same spectrum for the same post-ISR exposure.

Frames. The extraction works with the +1 order running along −y (LATISS's assembled frame).
An instrument whose images have it along +x (CTIO, Spectractor's own frame) is turned by
``data.T[::-1, ::-1]`` first, and its disperser tables — in the frame of the images as read —
are then addressed through the same reflection, exactly as LATISS's tables are; positions in
the output (``TARGETX/Y``, the centroid) are given back in the frame of the input image.
``ROTANGLE`` follows Spectractor: degrees counter-clockwise from +x in Spectractor's frame,
which is minus the tilt measured in ours (the turn is a reflection).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from scipy.ndimage import gaussian_filter1d

from atmospec.camera.description import load_camera
from atmospec.camera.spectrograph import InstrumentProfile, load_instrument
from atmospec.camera.translator import ObservationInfo, translate_header
from atmospec.errors import BadInputError
from atmospec.exposure import Exposure
from atmospec.fitting import FitQualityConfig, fit_problems
from atmospec.spectro.adr import AdrConfig, TraceRefraction, refraction_from_header
from atmospec.spectro.calspec import StellarSED, load_sed, resolve_target, shipped_standards
from atmospec.spectro.dispersers import Disperser, load_disperser
from atmospec.spectro.extract import (
    ExtractionConfig,
    ExtractionResult,
    background_covariance,
    extract_spectrum,
    extraction_window,
    leave_one_out_variance,
    result_to_spectrum,
)
from atmospec.spectro.forward_model import (
    ForwardModelConfig,
    ForwardModelResult,
    ForwardModelTimeout,
    PsfTooWide,
    fit_forward_model,
)
from atmospec.spectro.order2 import correct_extraction, order2_image, with_order2
from atmospec.spectro.spectrum import ImageExtension, Spectrogram, Spectrum
from atmospec.spectro.wavelength.calibration import calibrate_extraction
from atmospec.spectro.wavelength.features import FeatureFitConfig
from atmospec.spectro.wavelength.identify import LineCalibrationConfig
from atmospec.spectro.wavelength.lines import LINE_MODES
from atmospec.spectro.wavelength.solution import WavelengthSolution
from atmospec.spectro.wavelength.template import CoarseSearchConfig
from atmospec.spectro.zeroth_order import (
    ZerothOrderConfig,
    ZerothOrderResult,
    find_zeroth_order,
    zeroth_order_cutout,
    zeroth_order_prior,
)

log = logging.getLogger(__name__)

#: Primary-header keys copied from the exposure into the spectrum (Spectractor keeps them).
_COPIED = ("OBSID", "DAYOBS", "SEQNUM", "DATE-OBS", "DATE-BEG", "DATE-END", "EXPTIME",
           "DARKTIME", "FILTER", "GRATING", "LINSPOS", "RA", "DEC", "ROTPA", "ELSTART",
           "AZSTART", "PRESSURE", "AIRTEMP", "HUMIDITY", "INSTRUME", "OBJECT", "CCDSUM")


@dataclass(frozen=True)
class SpectroscopyConfig:
    """Configuration of the spectroscopy chain of one exposure."""

    zeroth_order: ZerothOrderConfig = field(default_factory=ZerothOrderConfig)
    """Finding the target's zeroth order (used when no position is given)."""
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    """Trace, background, PSF and 1D extraction."""
    adr: AdrConfig = field(default_factory=AdrConfig)
    """Atmospheric differential refraction in the trace of the extraction and of the 2D
    model (`atmospec.spectro.adr`): on when the header gives airmass, pressure and the
    zenith direction; ``AdrConfig(enabled=False)`` switches it off. ``ADR = T/F`` and the
    values used are written in the spectrum header."""
    wavelength_calibration: bool = True
    """Fit the disperser–CCD distance and the zeroth-order pixel shift on spectral features
    (Balmer lines, O₂ A and B, H₂O); ``False`` keeps the instrument's distance."""
    coarse_search: CoarseSearchConfig = field(default_factory=CoarseSearchConfig)
    """Template scan that gives the line fit its starting solution."""
    variance_half_rows: int = 3
    """The extraction and the 2D model weight pixels with their variance estimated from
    the ± this many neighbours along the trace, the pixel itself left out
    (`atmospec.spectro.extract.leave_one_out_variance`): ISR's plane, made of each pixel's
    own counts, biases every weighted fit low by about a count per pixel. 0 keeps the
    plane."""
    d2ccd_prior_sigma_mm: float = 2.0
    """Width of the Gaussian prior on the disperser–CCD distance, mm (the instruments'
    stated errors, 0.05–0.2 mm, are too optimistic: Spectractor's CTIO fit moved it by
    0.8 mm)."""
    features: FeatureFitConfig = field(default_factory=FeatureFitConfig)
    """Measuring each feature against the template and fitting (D2CCD, shift) on them."""
    forward_model: ForwardModelConfig | None = field(default_factory=ForwardModelConfig)
    """2D forward model of the spectrogram (Spectractor's PSF2D/FFM): the spectrum, its PSF
    and covariance then come from it; None keeps the 1D optimal extraction."""
    order2_correction: bool = True
    """Remove the second-order light falling on the first order (modelled with the
    disperser's order-2/order-1 ratio table) and write it as the ``ORDER2`` extension."""
    order3_correction: bool = True
    """With the order-2 correction, remove (and draw into the 2D model's background) the
    third order of λ/3 too, for a disperser whose order-3/order-2 ratio is given
    (holo4_003's ``ratio_order_3over2.txt``; ``ORD3CORR`` in the header); a disperser
    without it has no third order modelled whatever this says."""
    order0_half_size_fwhm: float = 5.0
    """Half-size of the zeroth-order cutout written as ``ORDER0`` (Spectractor's target
    image), in FWHM of the zeroth order (at least 10 px)."""
    require_calspec: bool = False
    """Refuse a target that is not a shipped CALSPEC standard (unless ``sed_path`` gives its
    SED); by default any target is extracted, its name written as given, and calibrated on
    the lines its spectrum shows."""
    sed_path: str | None = None
    """SED file of the target (any `atmospec.spectro.calspec.load_sed` format: a text table
    of wavelength nm and flux, or a CALSPEC-format FITS table): the wavelength calibration
    then uses the template made from it, as for a CALSPEC standard."""
    lines: str = "auto"
    """Wavelength calibration: ``auto`` — the template of the SED for a CALSPEC standard or
    ``sed_path``, the lines the spectrum shows otherwise (emission or absorption, chosen from
    what is detected); ``emission`` or ``absorption`` — the line calibration on that kind,
    whatever the target (`atmospec.spectro.wavelength.identify`)."""
    line_calibration: LineCalibrationConfig = field(default_factory=LineCalibrationConfig)
    """Detection, identification and measurement of the lines of a target without SED."""
    quality: FitQualityConfig = field(default_factory=FitQualityConfig)
    """When the 2D forward model counts as failed (`atmospec.fitting.fit_problems`: χ²/ndof
    beyond the limit): the spectrum is still written, with ``FITOK = F`` and the reasons in
    ``FITPROBS``. Its shape fit stopping at its iteration bound is not a failure: it starts
    from the 1D answer and keeps the best point (a faint spectrum stops there with χ²/ndof
    1.00); ``FFMCONV`` records it."""


def process_dispersed(exposure: Exposure, *, target: str | None = None,
                      disperser: str | None = None, xy: tuple[float, float] | None = None,
                      config: SpectroscopyConfig | None = None,
                      source: str | None = None, instrument: str = "latiss",
                      timings: dict[str, float] | None = None
                      ) -> tuple[Spectrum, ZerothOrderResult | None]:
    """Extract the first-order spectrum of the target of a dispersed post-ISR exposure.

    Parameters
    ----------
    exposure : Exposure
        Post-ISR exposure (electrons, mask and variance planes), binned or not (``CCDSUM``
        or ``BINX``/``BINY`` in its header).
    target : str, optional
        Target name; default: the header's target (``OBJECT``; CTIO: ``TARGET``).
    disperser : str, optional
        Disperser name; default: the header's ``GRATING``. A name that contradicts the header
        is used, with a warning (a header may be wrong; the user knows better).
    xy : tuple of float, optional
        Zeroth-order position, 0-based pixel centres of this image; default: found by
        `find_zeroth_order` around the header prior.
    config : SpectroscopyConfig, optional
        Settings.
    source : str, optional
        File name for error messages.
    instrument : str
        ``latiss`` or ``ctio``: detector, disperser tables, frame.
    timings : dict, optional
        Filled with the wall time of each stage, seconds (``zeroth_order``, ``extraction``,
        ``wavelength_calibration``, ``order2``, ``forward_model``, ``covariance``,
        ``spectrum``).

    Returns
    -------
    spectrum : Spectrum
        Wavelength (nm), flux (e⁻/nm) and errors, with the PSF table, the lines and the
        header keys of Spectractor's layout (``TARGET``, ``AIRMASS``, ``EXPTIME``,
        ``TARGETX/Y``, ``ROTANGLE``, ``D2CCD``, ``PIXSHIFT`` ...).
    zeroth_order : ZerothOrderResult or None
        The centroid found, in the input image's pixels (None when ``xy`` was given).

    Raises
    ------
    BadInputError
        Not a dispersed exposure, unknown disperser or target, header of another
        instrument, no star, spectrum off the detector.
    """
    config = config or SpectroscopyConfig()
    clock = _Clock(timings)
    job = _job(exposure, target, disperser, config, source, instrument)
    frame = _Frame(job.profile, exposure.image.shape)
    framed = frame.exposure(exposure)
    disp = frame.disperser(job.disperser)
    clock.lap("setup")
    refraction = _refraction(job, frame, config.adr)
    centroid = None
    if xy is None:
        # On the pixels' own variance: the leave-one-out estimate, made for the smooth
        # trace, under-weights a compact star's core and its Moffat fit fails. With
        # refraction, the zeroth order is smeared and its flux centroid is measured.
        centroid = _find_zeroth_order(framed, job, config, refraction)
        xy = (centroid.x, centroid.y)
        centroid = replace(centroid, **dict(zip(("x", "y"), frame.to_input(xy), strict=True)))
    else:
        xy = frame.from_input(xy)
    clock.lap("zeroth_order")
    window = extraction_window(framed.image.shape, xy[0], xy[1], disp, job.info.linspos,
                               config.extraction, binning=job.binning, source=job.name)
    work = _with_expected_variance(framed, config, window)
    result = extract_spectrum(work, xy[0], xy[1], disp, job.info.linspos, config.extraction,
                              source=job.name, binning=job.binning, refraction=refraction)
    clock.lap("extraction")
    solution = None
    if config.wavelength_calibration:
        result, solution = calibrate_extraction(
            result, job.sed, job.info.airmass or 1.0,
            job.info.pressure or job.profile.standard_pressure_hpa,
            d2ccd_sigma_mm=config.d2ccd_prior_sigma_mm, coarse=config.coarse_search,
            features=config.features, source=job.name, lines=config.lines,
            line_config=config.line_calibration)
    clock.lap("wavelength_calibration")
    contamination = correct_extraction(
        result, disp, max_order=3 if config.order3_correction else 2
    ) if config.order2_correction else None
    clock.lap("order2")
    model = covariance = skipped = None
    if config.forward_model is not None:
        # The order-2 (and order-3) light is drawn into the background the 2D model sees:
        # it then fits the first order alone (its flux and its PSF).
        seen = result if contamination is None else replace(
            result, background=result.background + order2_image(result, contamination))
        try:
            model = fit_forward_model(work, seen, config.forward_model)
        except PsfTooWide as exc:
            # Its cost would grow without bound: the 1D optimal extraction stands instead,
            # flagged (at 3″ seeing its flux is ~20 % high: the wings fit as α → its clip).
            skipped = f"2D model not drawn: {str(exc).split(': ', 1)[-1]}"
            log.info("%s: %s; the 1D optimal extraction is kept", job.name, skipped)
        except ForwardModelTimeout as exc:
            skipped = f"2D model not drawn: {str(exc).split(': ', 1)[-1]}"
            log.warning("%s: %s; the 1D optimal extraction is kept", job.name, skipped)
        clock.lap("forward_model")
        if model is not None:
            result, covariance = _with_forward_model(result, model)
            clock.lap("covariance")
            log.info("%s: 2D model χ²/ndof %.3f, μ %.3g, %d outlier pixels", job.name,
                     model.chi2_ndof, model.regularisation, int(model.outliers.sum()))
    spectrum = _spectrum(exposure, job, frame, work, result,
                         _Products(model, covariance, solution, contamination))
    spectrum = _with_spectractor_extras(spectrum, exposure, job, result, centroid, config,
                                        model is not None)
    _flag_problems(spectrum.header, model, skipped, config.quality)
    clock.lap("spectrum")
    return spectrum, centroid


def _with_spectractor_extras(spectrum: Spectrum, exposure: Exposure, job: _Job,
                             result: ExtractionResult, centroid: ZerothOrderResult | None,
                             config: SpectroscopyConfig, forward_model: bool) -> Spectrum:
    """What Spectractor's full ``Spectrum.load_spectrum`` reads beyond the rest: ``ORDER0``
    (the background-subtracted zeroth order, star at ``IM_X0, IM_Y0``, input orientation),
    ``S_DEG`` (the degree of the PSF-shape polynomials along the trace: the highest of
    γ, α and the centre's, so that Spectractor's one degree holds them all) and ``S_SAT``
    (the saturation level of a spectrogram pixel, e⁻: `saturation_e`)."""
    tx, ty = float(spectrum.header["TARGETX"]), float(spectrum.header["TARGETY"])
    fwhm = centroid.fwhm if centroid is not None else float(np.nanmedian(result.fwhm_px))
    half = max(math.ceil(config.order0_half_size_fwhm * fwhm), 10)
    try:
        cutout, x0, y0, level = zeroth_order_cutout(exposure, config.extraction.bad_planes,
                                                    tx, ty, half)
    except ValueError as exc:
        log.warning("%s: no ORDER0 written: %s", job.name, exc)
        order0 = None
    else:
        hdr = fits.Header()
        hdr["IM_X0"] = (x0, "zeroth order x in this cutout (px)")
        hdr["IM_Y0"] = (y0, "zeroth order y in this cutout (px)")
        hdr["BUNIT"] = ("electron", "background-subtracted")
        hdr["BGDLEVEL"] = (level, "background level subtracted (e-/px)")
        order0 = ImageExtension(cutout, hdr)
    if forward_model and config.forward_model is not None:
        fm = config.forward_model
        degree = max(fm.gamma_degree, fm.alpha_degree, fm.centre_degree)
    else:
        degree = max(config.extraction.shape_degree, config.extraction.centre_degree)
    header = spectrum.header.copy()
    header["S_DEG"] = (int(degree), "degree of the PSF-shape polynomials along the trace")
    header["S_SAT"] = (saturation_e(job.profile, job.binning),
                       "saturation of a spectrogram pixel (e-)")
    return replace(spectrum, order0=order0, header=header)


def saturation_e(profile: InstrumentProfile, binning: int) -> float:
    """The level at which a pixel of an image of ``profile`` at ``binning`` saturates, e⁻.

    With a camera description (LATISS): the lowest amplifier's ``saturation_adu × gain``
    (the level ISR flags SAT at), the same for a binned pixel (read once,
    `atmospec.camera.description.Camera.binned`). Without one (CTIO's reduced images):
    the profile's ``max_adu × gain_e_per_adu`` per summed pixel, as
    `atmospec.camera.reduced.read_reduced_image` flags SAT (Spectractor's
    ``CCD_MAXADU × CCD_REBIN²``, there per second).
    """
    try:
        camera = load_camera(profile.name)
    except BadInputError:
        return float((profile.max_adu or np.inf) * (profile.gain_e_per_adu or 1.0)
                     * int(binning) ** 2)
    return float(np.min(camera.saturation_levels * camera.nominal_gains))


def _refraction(job: _Job, frame: _Frame, config: AdrConfig) -> TraceRefraction | None:
    """The exposure's differential refraction in the extraction's frame, or None (one
    warning when the header lacks what it needs; switched off: none)."""
    refraction, reason = refraction_from_header(job.info, job.profile, job.binning, config,
                                                job.name, frame.vector_from_input)
    if refraction is None and config.enabled:
        log.warning("%s: differential refraction not modelled: %s", job.name, reason)
    return refraction


def _with_expected_variance(work: Exposure, config: SpectroscopyConfig,
                            window: tuple[slice, slice]) -> Exposure:
    """The exposure (extraction frame) with the leave-one-out variance of
    `SpectroscopyConfig.variance_half_rows` on the extraction's ``window`` (`extraction_window`:
    every pixel the extraction and the 2D model read), the plane's own elsewhere; the input
    exposure is left as it is. The estimate is computed on the window and the
    ``variance_half_rows`` rows either side of it, so that it equals the whole frame's there
    (a full-frame estimate cost 1 s of a 4k frame's 3.4 s)."""
    half = config.variance_half_rows
    if half <= 0:
        return work
    rows, cols = window
    lo, hi = max(rows.start - half, 0), min(rows.stop + half, work.image.shape[0])
    band = (slice(lo, hi), cols)
    plane = work.variance[band]
    good = (~work.get_mask(*config.extraction.bad_planes, region=band)) \
        & np.isfinite(plane) & (plane > 0)
    variance = work.variance.copy()
    variance[window] = leave_one_out_variance(plane, good, half)[rows.start - lo:
                                                                  rows.stop - lo]
    return Exposure(image=work.image, mask=work.mask, variance=variance,
                    metadata=work.metadata, mask_planes=dict(work.mask_planes), unit=work.unit)


def _flag_problems(header: fits.Header, model: ForwardModelResult | None,
                   skipped: str | None, quality: FitQualityConfig) -> None:
    """``FITOK`` and ``FITPROBS``: the quality rule applied to the 2D forward model, or why
    it was not drawn (a spectrum asked of the 1D extraction alone has no fit that fails)."""
    problems: tuple[str, ...] = (skipped,) if skipped else ()
    if skipped:
        header["FFMSKIP"] = (skipped[:60], "why the 2D model is not used")
    if model is not None:
        problems = tuple(f"2D model: {p}" for p in fit_problems(
            {}, {}, {}, model.chi2_ndof, None, quality))
        header["FFMCONV"] = (model.shape_fit_failure is None,
                             "2D model shape fit stopped at a minimum")
    header["FITOK"] = (not problems, "the fits of the extraction are usable")
    if problems:
        header["FITPROBS"] = ("; ".join(problems), "why a fit failed")


@dataclass(frozen=True)
class _Job:
    """What one exposure is: its instrument, header, binning, disperser and target."""

    name: str
    """Name for messages (the file, or OBSID)."""
    profile: InstrumentProfile
    """The instrument (`load_instrument`)."""
    info: ObservationInfo
    """The translated header."""
    binning: int
    """On-chip binning (equal in x and y)."""
    disperser_name: str
    """Disperser used (the header's, or the one asked for)."""
    disperser: Disperser
    """Its tables, in the frame of the input image."""
    target_name: str
    """Target name (the CALSPEC name when resolved)."""
    sed: StellarSED | None
    """SED of the target: its CALSPEC SED, or the ``sed_path`` file; None for any other
    target (calibrated on its lines)."""


def _job(exposure: Exposure, target: str | None, disperser: str | None,
         config: SpectroscopyConfig, source: str | None, instrument: str) -> _Job:
    """Check the exposure against the instrument and resolve its disperser and target."""
    name = source or str(exposure.metadata.get("OBSID", "exposure"))
    profile = _profile(instrument, name)
    info = translate_header(exposure.metadata, name)
    if info.instrument.lower() != profile.name:
        raise BadInputError(name, f"the header is from {info.instrument}, not "
                                  f"{profile.name} (give --instrument "
                                  f"{info.instrument.lower()})")
    binning = _binning(info, name)
    disperser = disperser or info.disperser
    if disperser.lower() in ("empty", "empty_1", "none", "unknown", ""):
        raise BadInputError(name, f"not a dispersed exposure (GRATING={info.disperser}); "
                                  "give --disperser if the header is wrong")
    try:
        disp = load_disperser(disperser, profile.name)
    except BadInputError as exc:
        raise BadInputError(name, exc.problem) from None
    if disperser != info.disperser and info.disperser not in ("unknown", ""):
        log.warning("%s: header GRATING is %s; using %s as asked", name, info.disperser,
                    disperser)
    target_name = target or info.target_name
    if not target_name or not target_name.strip():
        raise BadInputError(name, "no target: the header has no OBJECT; give --target")
    if config.lines not in LINE_MODES:
        raise BadInputError(name, f"lines {config.lines!r} is not one of "
                                  f"{', '.join(LINE_MODES)}")
    target_name, sed = _target_sed(target_name, config, name)
    return _Job(name=name, profile=profile, info=info, binning=binning,
                disperser_name=disperser, disperser=disp, target_name=target_name, sed=sed)


def _target_sed(target_name: str, config: SpectroscopyConfig, name: str
                ) -> tuple[str, StellarSED | None]:
    """The target's name and SED: the ``sed_path`` file, else the CALSPEC standard of that
    name, else none (any target: calibrated on its lines; refused with
    ``require_calspec``)."""
    if config.sed_path is not None:
        try:
            return target_name, load_sed(Path(config.sed_path))
        except BadInputError as exc:
            raise BadInputError(config.sed_path, exc.problem) from None
    try:
        entry = resolve_target(target_name)
    except BadInputError:
        if config.require_calspec:
            known = ", ".join(e.name for e in shipped_standards())
            raise BadInputError(name, f"target {target_name!r} is not a CALSPEC standard "
                                      f"shipped with atmospec (known: {known}); give its "
                                      "SED") from None
        log.info("%s: %s is not a CALSPEC standard: wavelengths calibrated on the lines its "
                 "spectrum shows", name, target_name)
        return target_name, None
    return entry.name, load_sed(entry.name)


@dataclass(frozen=True, eq=False)
class _Products:
    """What the stages after the extraction produced (None: stage not run or failed)."""

    model: ForwardModelResult | None
    """The 2D forward model."""
    covariance: np.ndarray | None
    """Covariance of its flux on the extraction's rows, e⁻²."""
    solution: WavelengthSolution | None
    """The wavelength calibration."""
    contamination: np.ndarray | None
    """Order-2 (and order-3) light on the first order (`correct_extraction`)."""


def _spectrum(exposure: Exposure, job: _Job, frame: _Frame, work: Exposure,
              result: ExtractionResult, products: _Products) -> Spectrum:
    """The `Spectrum` with Spectractor's layout: header, spectrogram, covariance, lines and
    order 2, positions in the frame of the input image."""
    model, solution = products.model, products.solution
    header = _spectrum_header(exposure.metadata, job.info, job.target_name, job.profile,
                              job.binning, result)
    tx, ty = frame.to_input((result.x0, result.y0))
    spectrum = result_to_spectrum(result, header, extra={
        "TARGETX": (tx, "zeroth order x (input image, px)"),
        "TARGETY": (ty, "zeroth order y (input image, px)"),
    })
    spectrum = replace(spectrum, spectrogram=frame.spectrogram(work, result, model))
    frame.spectrogram_header(spectrum.header, result)
    if model is not None:
        order = np.argsort(result.wavelength_nm)
        per_nm = 1.0 / result.dlambda_drow[order]
        cov = (products.covariance[np.ix_(order, order)] * np.outer(per_nm, per_nm)
               + background_covariance(result, order))
        spectrum = replace(spectrum, covariance=cov, flux_err=np.sqrt(np.diag(cov)))
        spectrum.header["CHI2_FIT"] = (model.chi2_ndof, "2D model reduced chi2")
        spectrum.header["PSF_REG"] = (model.regularisation, "2D model regularisation mu")
        spectrum.header["SPECTYPE"] = ("forward_model", "flux from the 2D forward model")
    else:
        spectrum.header["SPECTYPE"] = ("optimal_1d", "flux from the 1D optimal extraction")
    if solution is not None and spectrum.covariance is not None:
        spectrum = _with_wavelength_error(spectrum, result, solution)
    if solution is not None:
        spectrum.header["D2CCDERR"] = (solution.d2ccd_err_mm, "[mm] D2CCD uncertainty")
        spectrum.header["PIXSHERR"] = (solution.pixel_shift_err, "[px] PIXSHIFT uncertainty")
        spectrum.header["WAVEMETH"] = (solution.method, "wavelengths fitted on: template, "
                                                        "emission or absorption lines")
        spectrum = replace(spectrum, lines=solution.lines)
    if products.contamination is not None:
        spectrum = with_order2(spectrum, products.contamination, subtract=model is None)
    if frame.turned:
        spectrum = replace(spectrum, psf_table=frame.psf_table(spectrum.psf_table, result),
                           extra_hdus=tuple(frame.psf_bins_hdu(h, result)
                                            for h in spectrum.extra_hdus))
    return spectrum


class _Clock:
    """Wall time between successive `lap` calls, into a caller's dictionary (or nowhere)."""

    def __init__(self, out: dict[str, float] | None) -> None:
        self.out = out
        self.t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        if self.out is not None:
            self.out[name] = self.out.get(name, 0.0) + now - self.t
        self.t = now


def _with_wavelength_error(spectrum: Spectrum, result: ExtractionResult,
                           solution: WavelengthSolution) -> Spectrum:
    """Add the wavelength solution's uncertainty to the flux covariance: an error δλ of the
    samples' wavelengths is, at fixed wavelength, a flux error −F′(λ) δλ, smooth along the
    spectrum (a stretch of the scale tilts the continuum). Rank 2: (D2CCD, shift)."""
    order = np.argsort(result.wavelength_nm)
    u = result.distance_px[order]
    d, s = result.d2ccd_mm, result.pixel_shift
    disp = result.dispersion
    pix = disp.instrument.pixel_size_mm(result.binning)
    kw = {"at": (result.x0, result.y0), "binning": result.binning}

    def law(dd: float, ds: float) -> np.ndarray:
        return disp.wavelength_nm(u - s - ds, result.order, d + dd, pix, result.theta0_rad,
                                  **kw)

    jac = np.column_stack([(law(1e-3, 0.0) - law(-1e-3, 0.0)) / 2e-3,
                           (law(0.0, 0.5) - law(0.0, -0.5))])
    w, v = np.linalg.eigh(0.5 * (solution.covariance + solution.covariance.T))
    root = v * np.sqrt(np.clip(w, 0.0, None))
    # The flux slope from the spectrum smoothed over a resolution element (noise kept out).
    fwhm_px = float(np.nanmedian(result.fwhm_px))
    smooth = gaussian_filter1d(spectrum.flux, max(fwhm_px / 2.355, 1.0), mode="nearest")
    slope = np.gradient(smooth, spectrum.wavelength)
    factor = -slope[:, None] * (jac @ root)
    cov = spectrum.covariance + factor @ factor.T
    return replace(spectrum, covariance=cov, flux_err=np.sqrt(np.diag(cov)))


def _spectrum_header(metadata: fits.Header, info: ObservationInfo, target_name: str,
                     profile: InstrumentProfile, binning: int,
                     result: ExtractionResult) -> fits.Header:
    """The exposure's keys Spectractor keeps, and the observing conditions the atmosphere
    fit reads (airmass, pressure, temperature) from the translated header."""
    header = fits.Header()
    for key in _COPIED:
        if key in metadata:
            header[key] = metadata[key]
    header["TARGET"] = (target_name, "target name")
    if info.airmass is not None:
        header["AIRMASS"] = (float(info.airmass), "airmass at the start")
    if info.pressure is not None:
        header["OUTPRESS"] = (float(info.pressure), "outside pressure, hPa")
    if info.temperature is not None:
        header["OUTTEMP"] = (float(info.temperature), "outside temperature, deg C")
    header["AIRORVAC"] = ("vac", "wavelengths in vacuum (CALSPEC, atmosphere model)")
    header["LBDA_REF"] = (_reference_wavelength(result), "reference wavelength, nm")
    header["ADR"] = (result.refraction is not None, "differential refraction modelled")
    if result.refraction is not None:
        for key, card in result.refraction.header_cards().items():
            header[key] = card
    header["REBIN"] = (binning, "binning of the image the spectrum comes from")
    header["INSTRMNT"] = (profile.name, "atmospec instrument profile")
    return header


def _with_forward_model(result: ExtractionResult, model: ForwardModelResult
                        ) -> tuple[ExtractionResult, np.ndarray]:
    """The extraction with the 2D model's flux and PSF on its rows, and their covariance
    (e⁻², rows of ``result``). The trace centre stays the 1D one: the wavelengths were
    calibrated along it."""
    idx = np.searchsorted(model.rows, result.rows)
    new = replace(result, flux_e=model.amplitudes[idx], flux_err_e=model.amplitude_err[idx],
                  gamma=model.gamma[idx], alpha=model.alpha[idx])
    cov = model.covariance
    if not np.array_equal(idx, np.arange(cov.shape[0])):  # not every row of the 2D model
        cov = cov[np.ix_(idx, idx)]
    return new, cov


def _profile(instrument: str, name: str) -> InstrumentProfile:
    try:
        return load_instrument(instrument)
    except BadInputError as exc:
        raise BadInputError(name, exc.problem) from None


def _binning(info: ObservationInfo, name: str) -> int:
    bx, by = info.binning
    if bx != by:
        raise BadInputError(name, f"unequal binning {bx}×{by} is not supported")
    return int(bx)


@dataclass(frozen=True)
class _Frame:
    """The turn from the input image to the extraction's frame (+1 order along −y)."""

    profile: InstrumentProfile
    shape: tuple[int, ...]

    @property
    def turned(self) -> bool:
        direction = self.profile.first_order_direction
        if direction not in ("-y", "+x"):
            raise ValueError(f"instrument {self.profile.name}: first_order_direction "
                             f"{direction!r} is not -y or +x")
        return direction == "+x"

    def exposure(self, exposure: Exposure) -> Exposure:
        if not self.turned:
            return exposure

        def turn(a: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(a.T[::-1, ::-1])

        return Exposure(image=turn(exposure.image), mask=turn(exposure.mask),
                        variance=turn(exposure.variance), metadata=exposure.metadata,
                        mask_planes=dict(exposure.mask_planes), unit=exposure.unit)

    def disperser(self, disp: Disperser) -> Disperser:
        """The disperser addressed in the extraction's frame: tables in the input frame are
        reached through the turn (a reflection), as LATISS's tables always are."""
        if not self.turned:
            return disp
        if disp.instrument.disperser_table_frame != "identity":
            raise ValueError(f"{disp.name}: tables of a turned instrument must be in the "
                             "frame of its images")
        return replace(disp, instrument=replace(disp.instrument,
                                                disperser_table_frame="transpose_flip"))

    def _back(self, a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a.T[::-1, ::-1]) if self.turned else a

    def spectrogram(self, work: Exposure, result: ExtractionResult,
                    model: ForwardModelResult | None) -> Spectrogram:
        """``S_DATA`` … ``S_RES`` (e⁻) of the extraction cutout, in the input's orientation."""
        c0, r0 = result.cutout_origin
        ny, nx = result.background.shape
        sl = (slice(r0, r0 + ny), slice(c0, c0 + nx))
        data = np.asarray(work.image[sl], dtype=np.float32)
        var = np.asarray(work.variance[sl], dtype=np.float32)
        with np.errstate(invalid="ignore"):
            err = np.where(var > 0, np.sqrt(var), np.nan).astype(np.float32)
        unit = fits.Header({"BUNIT": "electron"})
        planes = {"data": data, "err": err,
                  "background": np.asarray(result.background, dtype=np.float32)}
        if result.background_rms is not None:
            planes["background_err"] = np.asarray(result.background_rms, dtype=np.float32)
        if model is not None:
            planes["fit"] = model.model
            planes["residuals"] = model.residual
        return Spectrogram(**{k: ImageExtension(self._back(v), unit.copy())
                              for k, v in planes.items()})

    def spectrogram_header(self, header: fits.Header, result: ExtractionResult) -> None:
        """``S_XMIN … S_YMAX`` of the cutout in the input image (Spectractor's keys)."""
        c0, r0 = result.cutout_origin
        ny, nx = result.background.shape
        corners = [self.to_input((c0, r0)), self.to_input((c0 + nx - 1, r0 + ny - 1))]
        xs, ys = sorted(p[0] for p in corners), sorted(p[1] for p in corners)
        for key, value in (("S_XMIN", xs[0]), ("S_XMAX", xs[1] + 1), ("S_YMIN", ys[0]),
                           ("S_YMAX", ys[1] + 1)):
            header[key] = (round(value), "spectrogram cutout in the input image (px)")

    def psf_table(self, table, result: ExtractionResult):
        """``PSF_TAB`` trace positions moved to the input-oriented cutout."""
        ny, nx = result.background.shape
        out = table.copy()
        # cutout pixel (x, y) of the working frame → (ny − 1 − y, nx − 1 − x) once turned back
        out["x_c"], out["y_c"] = ny - 1 - table["y_c"], nx - 1 - table["x_c"]
        return out

    def psf_bins_hdu(self, hdu: fits.BinTableHDU, result: ExtractionResult
                     ) -> fits.BinTableHDU:
        """``PSF_BINS`` turned like ``PSF_TAB`` (`psf_table`), so both stay in one frame;
        any other extension unchanged."""
        if hdu.name != "PSF_BINS":
            return hdu
        table = self.psf_table(Table.read(hdu), result)
        # The fitted centre's error follows the centre to the other axis.
        table.rename_column("x_c_err", "y_c_err")
        out = fits.table_to_hdu(table)
        out.name = "PSF_BINS"
        return out

    def to_input(self, xy: tuple[float, float]) -> tuple[float, float]:
        """Extraction-frame position → input-image position."""
        if not self.turned:
            return float(xy[0]), float(xy[1])
        ny, nx = self.shape
        # work[i, j] = input[nx_in − 1 − j, ny_in − 1 − i] with (ny_in, nx_in) = shape
        return float(nx - 1 - xy[1]), float(ny - 1 - xy[0])

    def vector_from_input(self, dx: float, dy: float) -> tuple[float, float]:
        """A displacement of the input image in the extraction's frame (the turn maps
        ``(x, y)`` to ``(ny − 1 − y, nx − 1 − x)``, so a vector to ``(−dy, −dx)``)."""
        return (float(dx), float(dy)) if not self.turned else (-float(dy), -float(dx))

    def from_input(self, xy: tuple[float, float]) -> tuple[float, float]:
        """Input-image position → extraction-frame position (the turn is its own inverse)."""
        if not self.turned:
            return float(xy[0]), float(xy[1])
        ny, nx = self.shape
        return float(ny - 1 - xy[1]), float(nx - 1 - xy[0])


def _find_zeroth_order(work: Exposure, job: _Job, config: SpectroscopyConfig,
                       refraction: TraceRefraction | None) -> ZerothOrderResult:
    """The zeroth order near the disperser's nominal position; for an instrument without
    nominal positions, the brightest compact source of the frame."""
    cfg = config.zeroth_order
    profile = job.profile
    try:
        spec = profile.disperser_spec(job.disperser_name)
    except KeyError as exc:
        raise BadInputError(job.name, str(exc).strip("'\"")) from None
    if spec.nominal_zeroth_order is not None:
        prior = zeroth_order_prior(_with_disperser(job.info, job.disperser_name),
                                   load_camera(profile.name), profile)
    else:
        ny, nx = work.image.shape
        prior = ((nx - 1) / 2.0, (ny - 1) / 2.0)
        far = float(max(profile.detector_shape))
        # The zeroth-order settings are in LATISS's unbinned pixels; the saturation growth
        # keeps its size on the sky (2 LATISS px = 0.19″: none on CTIO's 0.8″ binned pixels).
        latiss_scale = load_instrument("latiss").plate_scale_arcsec
        grow = round(cfg.sat_grow_px * latiss_scale / profile.plate_scale_at(job.binning))
        cfg = replace(cfg, instrument=profile.name, search_radius_px=far,
                      prior_sigma_px=1e3 * far, sat_grow_px=grow,
                      fwhm_guess_px=profile.typical_fwhm_arcsec / profile.plate_scale_arcsec,
                      saturation_e=None, warn_distance_px=far)
    return find_zeroth_order(work, cfg, prior, source=job.name, refraction=refraction)


def _with_disperser(info: ObservationInfo, disperser: str) -> ObservationInfo:
    return info if info.disperser == disperser else replace(info, disperser=disperser)


def _reference_wavelength(result: ExtractionResult) -> float:
    """Spectractor's LBDA_REF: the wavelength of the differential refraction's reference
    (the zeroth order's), else the middle of the extracted range."""
    if result.refraction is not None:
        return float(result.refraction.reference_nm)
    lam = result.wavelength_nm
    return float(0.5 * (lam.min() + lam.max()))
