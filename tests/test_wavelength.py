"""The wavelength calibration the chain uses, on synthetic spectra of known dispersion.

A first-order holo4_003 spectrum is drawn from the dispersion law with a known disperser–CCD
distance and zeroth-order shift: the expected spectrum (the CALSPEC SED of HD142331 × the
atmosphere model × the instrument's throughput × the disperser's efficiency, at a 3 nm
resolution) sampled at each pixel's true wavelength, times |dλ/du|, with Poisson and read
noise. The calibration starts from a prior 1.5 mm off, which moves 1000 nm by 7 nm.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from astropy.table import Table

from atmospec.spectro.calspec import load_sed
from atmospec.spectro.dispersers import load_disperser
from atmospec.spectro.extract import ExtractionConfig, ExtractionResult, result_to_spectrum
from atmospec.spectro.wavelength.calibration import calibrate_extraction, expected_spectrum
from atmospec.spectro.wavelength.features import calibrate_on_features
from atmospec.spectro.wavelength.lines import CALIBRATION_FEATURES, in_vacuum, line_catalog
from atmospec.spectro.wavelength.solution import DispersionLaw
from atmospec.spectro.wavelength.template import template_dispersion_solution

DISPERSER = load_disperser("holo4_003")
X0, Y0 = 1750.0, 3501.0
ROWS = np.arange(501.0, 2501.0)
DIST = Y0 - ROWS  # the first order runs along -y: 3000 ... 1001 px from the zeroth order
THETA0 = 2.0e-3
LAW = DispersionLaw(DISPERSER, 0.010, THETA0, at=(X0, Y0))
D_PRIOR, SIGMA_D = 187.0, 2.0
D_TRUE, SHIFT_TRUE = 188.5, 3.0
FWHM_NM = 3.0
AIRMASS, PRESSURE = 1.2, 743.0
SED = load_sed("HD142331")
GRID, TEMPLATE = expected_spectrum(DISPERSER, SED, AIRMASS, PRESSURE, FWHM_NM)
FEATURES = in_vacuum(CALIBRATION_FEATURES)
LAM_TRUE = LAW.wavelength_nm(DIST, D_TRUE, SHIFT_TRUE)
IN_RANGE = (LAM_TRUE >= 400.0) & (LAM_TRUE <= 1000.0)


def _spectrum(rng, template=TEMPLATE, level=3.0e4):
    """Flux per pixel (e⁻) of the spectrum ``template`` under the true law, and its error."""
    dldu = np.abs(np.gradient(LAM_TRUE, DIST))
    shape = np.interp(LAM_TRUE, GRID, template)
    model = level * shape / shape.max() * dldu / np.median(dldu)
    err = np.sqrt(model + 30.0**2)
    return model + rng.normal(size=model.size) * err, err


def _calibrate(flux, err, template=TEMPLATE):
    start = template_dispersion_solution(LAW, DIST, flux, err, GRID, template, D_PRIOR,
                                         SIGMA_D)
    solution = calibrate_on_features(LAW, DIST, flux, err, D_PRIOR, SIGMA_D, GRID, template,
                                     FEATURES, FWHM_NM, (start.d2ccd_mm, start.pixel_shift))
    return start, solution


def _used(solution):
    return {str(n): bool(u) for n, u in zip(solution.lines["Name"], solution.lines["Used"],
                                            strict=True)}


# --------------------------------------------------------------------------- catalogue


def test_catalogue_loads_with_flags():
    cat = line_catalog()
    assert len(cat) == 89
    by = {ln.name: ln for ln in cat}
    assert by["HALPHA"].wavelength_nm == pytest.approx(656.3)
    assert by["O2B"].atmospheric and by["O2B"].use_for_calibration
    assert not by["HALPHA"].atmospheric
    assert by["H2O_1"].width_bounds_nm == (5.0, 30.0)
    with pytest.raises(AttributeError):
        by["HBETA"].wavelength_nm = 1.0  # frozen
    features = {ln.name: ln for ln in CALIBRATION_FEATURES}
    o2a = features["O2A"]
    assert o2a.wavelength_nm == pytest.approx(761.7) and o2a.components == ("O2_1", "O2_2")
    assert set(features) == {"HGAMMA", "HBETA", "HALPHA", "O2B", "O2A", "H2O_1"}
    # Hα in vacuum (Ciddor/Morton): 656.3 nm in air is 656.48 nm in vacuum.
    assert {ln.name: ln for ln in FEATURES}["HALPHA"].wavelength_nm == pytest.approx(
        656.481, abs=2e-3)


# --------------------------------------------------------------------------- the fit


def test_template_search_starts_from_a_wrong_prior():
    before = np.sqrt(np.mean((LAW.wavelength_nm(DIST, D_PRIOR) - LAM_TRUE)[IN_RANGE] ** 2))
    assert before > 3.0
    flux, err = _spectrum(np.random.default_rng(7))
    start = template_dispersion_solution(LAW, DIST, flux, err, GRID, TEMPLATE, D_PRIOR,
                                         SIGMA_D)
    assert abs(start.d2ccd_mm - D_TRUE) < 4 * start.d2ccd_err_mm < 0.1
    assert abs(start.pixel_shift - SHIFT_TRUE) < 4 * start.pixel_shift_err < 1.0
    assert start.amplitude == pytest.approx(1.0, abs=0.05)  # features as deep as expected


def test_feature_fit_recovers_d2ccd_and_shift_within_errors():
    rng = np.random.default_rng(2024)
    pulls_d, pulls_s = [], []
    for k in range(6):
        flux, err = _spectrum(rng)
        _, sol = _calibrate(flux, err)
        assert sol.n_lines == 6 and all(_used(sol).values())
        assert sol.d2ccd_err_mm < 0.05 and sol.pixel_shift_err < 0.5
        assert abs(sol.d2ccd_mm - D_TRUE) < 3 * sol.d2ccd_err_mm
        assert abs(sol.pixel_shift - SHIFT_TRUE) < 3 * sol.pixel_shift_err
        pulls_d.append((sol.d2ccd_mm - D_TRUE) / sol.d2ccd_err_mm)
        pulls_s.append((sol.pixel_shift - SHIFT_TRUE) / sol.pixel_shift_err)
        # The wavelength scale, and its error band, against the truth.
        diff = (sol.wavelength_nm - LAM_TRUE)[IN_RANGE]
        assert np.sqrt(np.mean(diff**2)) < 0.1
        assert np.all(np.abs(diff) < 3 * sol.wavelength_err_nm[IN_RANGE])
        if k == 0:
            print(f"D {sol.d2ccd_mm:.3f} ± {sol.d2ccd_err_mm:.3f} mm, s {sol.pixel_shift:.2f}"
                  f" ± {sol.pixel_shift_err:.2f} px, χ²/ndof {sol.chisq_reduced:.2f}")
    # Errors are not underestimated (the 0.05 nm floor makes them conservative here).
    assert np.std(pulls_d) < 1.3 and np.std(pulls_s) < 1.3


def test_spurious_feature_is_rejected():
    # A deep dip 2.5 nm red of O₂ B, absent from the template: O₂ B's window then measures
    # the dip, 7 px away from where the others put O₂ B.
    o2b = next(ln.wavelength_nm for ln in FEATURES if ln.name == "O2B")
    dip = 1.0 - 0.5 * np.exp(-0.5 * ((GRID - (o2b + 2.5)) / 1.0) ** 2)
    flux, err = _spectrum(np.random.default_rng(6), template=TEMPLATE * dip)
    _, sol = _calibrate(flux, err)
    used = _used(sol)
    assert used.pop("O2B") is False and all(used.values())
    pull = float(sol.lines["Pull"][list(sol.lines["Name"]).index("O2B")])
    assert pull > 4.0  # beyond the rejection threshold
    assert sol.n_lines == 5
    assert abs(sol.d2ccd_mm - D_TRUE) < 3 * sol.d2ccd_err_mm
    assert abs(sol.pixel_shift - SHIFT_TRUE) < 3 * sol.pixel_shift_err


def test_atmosphere_alone_calibrates_a_star_without_calspec_sed():
    # A star with a smooth spectrum and no CALSPEC SED: the template is the atmosphere
    # (O₂ A and B, H₂O) × throughput × disperser, as the chain makes it without an SED.
    _, atmosphere = expected_spectrum(DISPERSER, None, AIRMASS, PRESSURE, FWHM_NM)
    flux, err = _spectrum(np.random.default_rng(3), template=atmosphere, level=3.0e3)
    _, sol = _calibrate(flux, err, template=atmosphere)
    assert {"O2B", "O2A", "H2O_1"} <= {n for n, u in _used(sol).items() if u}
    assert abs(sol.d2ccd_mm - D_TRUE) < 3 * sol.d2ccd_err_mm
    assert abs(sol.pixel_shift - SHIFT_TRUE) < 3 * sol.pixel_shift_err
    assert sol.d2ccd_err_mm < 0.2


# --------------------------------------------------------------------------- chain step


def _extraction(flux, err):
    """An `ExtractionResult` of a trace along -y through the zeroth order at (X0, Y0), with
    the instrument's prior distance, its FWHM 9 px (3 nm)."""
    n = ROWS.size
    lam = LAW.wavelength_nm(DIST, D_PRIOR)
    alpha = np.full(n, 3.0)
    gamma = np.full(n, 9.0 / (2.0 * np.sqrt(2.0 ** (1.0 / 3.0) - 1.0)))
    bins = ROWS[5::10]
    return ExtractionResult(
        source="synthetic", disperser=DISPERSER.name, order=1, x0=X0, y0=Y0,
        d2ccd_mm=D_PRIOR, theta0_rad=THETA0, angle_prior_deg=0.0, angle_deg=0.0,
        angle_err_deg=0.01, rows=ROWS, x_trace=np.full(n, X0), gamma=gamma, alpha=alpha,
        wavelength_nm=lam, dlambda_drow=np.abs(np.gradient(lam, ROWS)), flux_e=flux,
        flux_err_e=err, aperture_flux_e=flux, aperture_err_e=err,
        psf_bins=Table({"row": bins, "lambdas": np.interp(bins, ROWS, lam)}),
        background=np.zeros((n, 20)), cutout_origin=(int(X0) - 10, int(ROWS[0])),
        config=ExtractionConfig(), dispersion=DISPERSER)


def test_chain_step_calibrates_the_extraction():
    flux, err = _spectrum(np.random.default_rng(11))
    result, sol = calibrate_extraction(_extraction(flux, err), SED, AIRMASS, PRESSURE,
                                       d2ccd_sigma_mm=SIGMA_D)
    assert sol is not None and result.wavelength_calibrated
    assert result.d2ccd_mm == sol.d2ccd_mm and result.pixel_shift == sol.pixel_shift
    assert abs(result.d2ccd_mm - D_TRUE) < 3 * sol.d2ccd_err_mm
    assert np.sqrt(np.mean((result.wavelength_nm - LAM_TRUE)[IN_RANGE] ** 2)) < 0.1
    assert result_to_spectrum(result).header["WAVECAL"] == "lines"


def test_featureless_spectrum_falls_back_flagged(caplog):
    # A star without features (a flat spectrum, noise only): the grid still has a best node,
    # but nothing of the template is seen, so the instrument's distance stays, flagged.
    flat = np.full(DIST.size, 3.0e4)
    err = np.sqrt(flat + 30.0**2)
    flux = flat + np.random.default_rng(9).normal(size=flat.size) * err
    with pytest.raises(ValueError, match="no template feature"):
        template_dispersion_solution(LAW, DIST, flux, err, GRID, TEMPLATE, D_PRIOR, SIGMA_D)
    extraction = _extraction(flux, err)
    with caplog.at_level(logging.WARNING):
        result, sol = calibrate_extraction(extraction, SED, AIRMASS, PRESSURE,
                                           d2ccd_sigma_mm=SIGMA_D)
    assert sol is None and result is extraction
    assert not result.wavelength_calibrated and result.d2ccd_mm == D_PRIOR
    assert "synthetic: wavelength calibration failed" in caplog.text
    assert "D2CCD 187.00 mm from the instrument kept" in caplog.text
    header = result_to_spectrum(result).header
    assert header["WAVECAL"] == "prior" and header["D2CCD"] == D_PRIOR
