"""Wavelength calibration of an extracted spectrum, the step of the chain.

1. The expected spectrum (`expected_spectrum`: the CALSPEC SED × the atmosphere model at the
   measured resolution, × the instrument's throughput and the disperser's efficiency; for a
   target without a CALSPEC SED, the atmosphere's O₂ and H₂O bands alone).
2. A start from the whole spectrum against it (`atmospec.spectro.wavelength.template`).
3. Each feature's position against the template's own shape and (D2CCD, pixel shift)
   fitted on them with outlier rejection (`atmospec.spectro.wavelength.features`).

A target without an SED — a planetary nebula, an emission-line star, a star that is not a
CALSPEC standard — is calibrated on the lines its spectrum shows instead
(`atmospec.spectro.wavelength.identify`: emission or absorption lines detected, identified
and measured one by one; ``lines`` forces the kind, and the line calibration even for a star
with an SED).

Wavelengths are thus on the vacuum scale of CALSPEC and of the atmosphere model. When the
spectrum shows too few features, the instrument's distance stays, flagged (the extraction's
``wavelength_calibrated`` stays False: ``WAVECAL = 'prior'`` in the spectrum) and a warning
says so: the spectrum is still useful.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
from scipy.ndimage import gaussian_filter1d

from atmospec.atmosphere.transmission import transmission
from atmospec.spectro.calspec import StellarSED
from atmospec.spectro.dispersers import Disperser, load_disperser
from atmospec.spectro.extract import ExtractionResult, with_dispersion
from atmospec.spectro.wavelength.features import FeatureFitConfig, calibrate_on_features
from atmospec.spectro.wavelength.identify import LineCalibrationConfig, calibrate_on_lines
from atmospec.spectro.wavelength.lines import CALIBRATION_FEATURES, LINE_MODES, in_vacuum
from atmospec.spectro.wavelength.solution import DispersionLaw, WavelengthSolution
from atmospec.spectro.wavelength.template import (
    CoarseSearchConfig,
    template_dispersion_solution,
)

__all__ = ["absorption_template", "calibrate_extraction", "expected_spectrum"]

log = logging.getLogger(__name__)

_FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))
#: Wavelengths of the expected spectrum, nm (those of the atmosphere tables).
_TEMPLATE_GRID_NM = (300.0, 1100.0, 0.1)


def absorption_template(wavelength_nm: np.ndarray, sed_wavelength_nm: np.ndarray | None,
                        sed_flux: np.ndarray | None, airmass: float, pressure_hpa: float,
                        resolution_fwhm_nm: float) -> np.ndarray:
    """Expected spectrum shape for line identification: SED × atmosphere at the resolution.

    Parameters
    ----------
    wavelength_nm : numpy.ndarray
        Regular, increasing grid on which the template is made, nm.
    sed_wavelength_nm, sed_flux : numpy.ndarray or None
        The star's SED (its Balmer and metal lines); None: atmosphere only (O₂, H₂O), which
        is what a non-CALSPEC target gets.
    airmass, pressure_hpa : float
        Line of sight; the water, ozone and aerosols are typical values (3 mm, 300 DU, 0.05):
        the scan only needs where the features are, not their depths.
    resolution_fwhm_nm : float
        Instrumental resolution (FWHM), nm; the template is convolved with that Gaussian.

    Returns
    -------
    numpy.ndarray
        Template flux on ``wavelength_nm`` (arbitrary scale).
    """
    lam = np.asarray(wavelength_nm, dtype=np.float64)
    model = transmission(lam, max(float(airmass), 1.0), float(pressure_hpa), 3.0, 300.0, 0.05)
    if sed_wavelength_nm is not None and sed_flux is not None:
        sed = np.interp(lam, sed_wavelength_nm, sed_flux, left=np.nan, right=np.nan)
        fill = np.nanmedian(sed) if np.any(np.isfinite(sed)) else 1.0
        model = model * np.where(np.isfinite(sed), sed, fill)
    step = float(np.median(np.diff(lam)))
    sigma = max(resolution_fwhm_nm, step) / _FWHM / step
    return gaussian_filter1d(model, sigma, mode="nearest")


def expected_spectrum(disperser: Disperser, sed: StellarSED | None, airmass: float,
                      pressure_hpa: float, resolution_fwhm_nm: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The spectrum the calibration expects, on a 0.1 nm grid from 300 to 1100 nm.

    `absorption_template` (SED × atmosphere at the resolution) × the instrument's
    throughput × the disperser's first-order efficiency: every shape the spectrum has.

    Parameters
    ----------
    disperser : Disperser
        The disperser (its efficiency, its instrument's throughput).
    sed : StellarSED or None
        The target's CALSPEC SED; None: the atmosphere's features only.
    airmass, pressure_hpa : float
        Line of sight of the atmosphere.
    resolution_fwhm_nm : float
        Resolution (FWHM), nm.

    Returns
    -------
    wavelength_nm, flux : numpy.ndarray
        The grid and the expected flux per nm (arbitrary scale).
    """
    grid = np.arange(*_TEMPLATE_GRID_NM)
    template = absorption_template(
        grid, None if sed is None else sed.wavelength_nm, None if sed is None else sed.flux,
        airmass, pressure_hpa, resolution_fwhm_nm)
    return grid, template * disperser.instrument.throughput(grid) * disperser.transmission(grid)


def calibrate_extraction(result: ExtractionResult, sed: StellarSED | None, airmass: float,
                         pressure_hpa: float, *, d2ccd_sigma_mm: float,
                         coarse: CoarseSearchConfig | None = None,
                         features: FeatureFitConfig | None = None,
                         source: str | None = None, lines: str = "auto",
                         line_config: LineCalibrationConfig | None = None
                         ) -> tuple[ExtractionResult, WavelengthSolution | None]:
    """Fit (D2CCD, pixel shift) on the features of an extracted spectrum.

    With an SED and ``lines='auto'``: against the expected spectrum (template search, then
    each feature against the template's shape). Without an SED, or with ``lines`` forced to
    ``emission`` or ``absorption``: on the lines the spectrum shows (`calibrate_on_lines`).

    Parameters
    ----------
    result : ExtractionResult
        The extraction; its D2CCD (the instrument's law) is the prior's centre.
    sed : StellarSED or None
        The target's CALSPEC SED; None: the atmosphere's features only.
    airmass, pressure_hpa : float
        Line of sight of the atmosphere in the template.
    d2ccd_sigma_mm : float
        Width of the Gaussian prior on D2CCD, mm.
    coarse : CoarseSearchConfig, optional
        The template scan giving the start.
    features : FeatureFitConfig, optional
        The fit on features.
    source : str, optional
        Name for the log messages (default the extraction's).
    lines : str
        ``auto`` (the template with an SED, the lines of the kind the spectrum shows
        without), ``emission`` or ``absorption`` (the line calibration on that kind).
    line_config : LineCalibrationConfig, optional
        The line calibration's settings.

    Returns
    -------
    result : ExtractionResult
        The extraction with the fitted dispersion (`with_dispersion`), or unchanged when the
        spectrum shows too few features (``wavelength_calibrated`` False).
    solution : WavelengthSolution or None
        The fit (its ``method``: ``template``, ``emission`` or ``absorption``), None when it
        fell back to the instrument's distance.

    Raises
    ------
    ValueError
        If ``lines`` is not one of `LINE_MODES`.
    """
    if lines not in LINE_MODES:
        raise ValueError(f"lines {lines!r} is not one of {', '.join(LINE_MODES)}")
    name = source or result.source
    disp = result.dispersion or load_disperser(result.disperser, result.instrument)
    law = DispersionLaw(disp, disp.instrument.pixel_size_mm(result.binning), result.theta0_rad,
                        result.order, (result.x0, result.y0), result.binning)
    u = result.distance_px
    flux, err = result.flux_e, result.flux_err_e  # per row: features keep their pixel width
    fwhm_nm = float(np.nanmedian(result.fwhm_px * result.dlambda_drow))
    if sed is None or lines != "auto":
        return _calibrate_on_lines(result, law, disp, airmass, pressure_hpa, fwhm_nm,
                                   d2ccd_sigma_mm, lines, line_config or LineCalibrationConfig(),
                                   name)
    grid, template = expected_spectrum(disp, sed, airmass, pressure_hpa, fwhm_nm)
    try:
        start = template_dispersion_solution(law, u, flux, err, grid, template,
                                             result.d2ccd_mm, d2ccd_sigma_mm,
                                             coarse or CoarseSearchConfig())
        solution = calibrate_on_features(
            law, u, flux, err, result.d2ccd_mm, d2ccd_sigma_mm, grid, template,
            in_vacuum(CALIBRATION_FEATURES), fwhm_nm, (start.d2ccd_mm, start.pixel_shift),
            features or FeatureFitConfig())
    except ValueError as exc:
        log.warning("%s: wavelength calibration failed (%s): D2CCD %.2f mm from the "
                    "instrument kept", name, exc, result.d2ccd_mm)
        return result, None
    log.info("%s: D2CCD %.3f ± %.3f mm, shift %.2f ± %.2f px on %d features (%s; χ²/ndof "
             "%.2f)", name, solution.d2ccd_mm, solution.d2ccd_err_mm, solution.pixel_shift,
             solution.pixel_shift_err, solution.n_lines,
             ", ".join(n for n, k in zip(solution.lines["Name"], solution.lines["Used"],
                                         strict=True) if k), solution.chisq_reduced)
    return with_dispersion(result, solution.d2ccd_mm, solution.pixel_shift), solution


def _calibrate_on_lines(result: ExtractionResult, law: DispersionLaw, disp: Disperser,
                        airmass: float, pressure_hpa: float, fwhm_nm: float,
                        d2ccd_sigma_mm: float, lines: str, config: LineCalibrationConfig,
                        name: str | None) -> tuple[ExtractionResult, WavelengthSolution | None]:
    """`calibrate_extraction` on the spectrum's own lines (`calibrate_on_lines`); a star's
    O₂ and H₂O bands are measured against the atmosphere's expected spectrum."""
    telluric = expected_spectrum(disp, None, airmass, pressure_hpa, fwhm_nm)
    atmosphere = (telluric[0], absorption_template(telluric[0], None, None, airmass,
                                                   pressure_hpa, fwhm_nm))
    try:
        solution, kind = calibrate_on_lines(
            law, result.distance_px, result.flux_e, result.flux_err_e, result.gamma,
            result.alpha, result.d2ccd_mm, d2ccd_sigma_mm, lines, config, telluric,
            atmosphere)
    except ValueError as exc:
        log.warning("%s: wavelength calibration on the spectrum's lines failed (%s): D2CCD "
                    "%.2f mm from the instrument kept", name, exc, result.d2ccd_mm)
        return result, None
    solution = replace(solution, method=kind)
    log.info("%s: D2CCD %.3f ± %.3f mm, shift %.2f ± %.2f px on %d %s lines (%s; χ²/ndof "
             "%.2f)", name, solution.d2ccd_mm, solution.d2ccd_err_mm, solution.pixel_shift,
             solution.pixel_shift_err, solution.n_lines, kind,
             ", ".join(n for n, k in zip(solution.lines["Name"], solution.lines["Used"],
                                         strict=True) if k), solution.chisq_reduced)
    return with_dispersion(result, solution.d2ccd_mm, solution.pixel_shift), solution
