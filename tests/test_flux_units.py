"""Spectra in Spectractor's units (atmospec.spectro.units, ``atmospec extract --units flam``):
the conversion against h·c/λ from astropy's constants, the electron → flam → file → electron
round trip, the keys Spectractor's reader takes, and the atmosphere fit of a flam file
(same answer as of the e⁻ one)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from astropy import constants as const
from astropy import units as u
from astropy.io import fits
from astropy.table import Table

from atmospec.atmosphere.spectrum_fit import (
    AtmosphereFitConfig,
    SpectrumForwardModel,
    fit_atmosphere,
)
from atmospec.camera.spectrograph import load_instrument
from atmospec.errors import BadInputError
from atmospec.spectro.spectrum import ImageExtension, Spectrogram, Spectrum
from atmospec.spectro.units import (
    FLAM_UNIT,
    flam_per_electron,
    to_electrons,
    to_flam,
    with_flux_unit,
)
from spectractor_bridge.spectrum import read_spectrum, write_spectrum

#: Primary-header keys Spectractor's ``Spectrum.load_spectrum`` reads (its ``fits_mappings``
#: and the items it sets by hand) that an atmospec flam file carries.
SPECTRACTOR_KEYS = ("DATE-OBS", "EXPTIME", "AIRMASS", "GRATING", "UNIT1", "UNIT2", "ROTANGLE",
                    "OUTTEMP", "OUTPRESS", "LBDA_REF", "FILTER", "S_X0", "S_Y0", "S_XMIN",
                    "S_XMAX", "S_YMIN", "S_YMAX", "S_NX", "S_NY", "S_ORDER", "TARGET",
                    "TARGETX", "TARGETY", "D2CCD", "PIXSHIFT", "CCDREBIN")


def _electron_spectrum(n: int = 400, seed: int = 1) -> Spectrum:
    """A LATISS holo4_003 spectrum in e⁻/nm with what the chain writes beside the flux: a
    correlated covariance, ORDER2, a spectrogram in electrons and the header it reads."""
    rng = np.random.default_rng(seed)
    lam = np.linspace(372.0, 1085.0, n)
    flux = 2e5 * np.exp(-0.5 * ((lam - 600.0) / 180.0) ** 2) + 1e3
    err = np.sqrt(flux)
    cov = np.diag(err**2) + 0.3 * np.diag(err[1:] * err[:-1], 1) \
        + 0.3 * np.diag(err[1:] * err[:-1], -1)
    header = fits.Header()
    for key, value in (("TARGET", "HD142331"), ("AIRMASS", 1.131), ("OUTPRESS", 743.0),
                       ("OUTTEMP", 10.0), ("EXPTIME", 30.0), ("GRATING", "holo4_003"),
                       ("FILTER", "empty_1"), ("INSTRMNT", "latiss"), ("DATE-OBS", "2024-01-01"),
                       ("ROTANGLE", -0.3), ("D2CCD", 186.9), ("PIXSHIFT", 0.1),
                       ("TARGETX", 1650.5), ("TARGETY", 2400.2), ("LBDA_REF", 650.0),
                       ("SPECORD", 1), ("REBIN", 1), ("S_XMIN", 1610), ("S_YMIN", 300),
                       ("S_XMAX", 1710), ("S_YMAX", 2300), ("HUMIDITY", 12.0)):
        header[key] = value
    spectrogram = Spectrogram(
        data=ImageExtension(rng.normal(size=(2000, 100)), fits.Header({"BUNIT": "electron"})),
        err=ImageExtension(np.ones((2000, 100)), fits.Header({"BUNIT": "electron"})))
    psf = Table({"lambdas": lam, "fwhm": np.full(n, 5.0)})
    order2 = ImageExtension(np.vstack([lam, 0.02 * flux, 0.002 * flux]),
                            fits.Header({"BUNIT": "electron/nm"}))
    return Spectrum(wavelength=lam, flux=flux + rng.normal(size=n) * err, flux_err=err,
                    flux_unit="electron/nm", header=header, covariance=cov, order2=order2,
                    spectrogram=spectrogram, psf_table=psf)


def test_flam_factor_is_photon_energy_over_area_and_time() -> None:
    """erg/s/cm²/nm per e⁻/nm is hc/λ / (A t), hc from astropy's constants."""
    area = load_instrument("latiss").collecting_area_cm2
    lam = np.array([400.0, 656.3, 1000.0])
    expected = (const.h * const.c / (lam * u.nm)).to_value(u.erg) / (area * 30.0)
    np.testing.assert_allclose(flam_per_electron(lam, 30.0, area), expected, rtol=1e-8)


def test_round_trip_electron_flam_file_electron(tmp_path: Path) -> None:
    """electron → flam → file → read → electron: the same e⁻/nm within 1e-6 relative (flux,
    error, covariance, ORDER2); the file carries Spectractor's units and the keys its reader
    takes; the spectrogram stays in electrons."""
    spec = _electron_spectrum()
    flam = to_flam(spec)
    area = load_instrument("latiss").collecting_area_cm2
    k = flam_per_electron(spec.wavelength, 30.0, area)
    np.testing.assert_allclose(flam.flux, spec.flux * k, rtol=1e-12)
    path = write_spectrum(flam, tmp_path / "flam_spectrum.fits")
    with fits.open(path) as hdul:
        h = hdul[0].header
        missing = [key for key in SPECTRACTOR_KEYS if key not in h]
        assert not missing, missing
        assert h["UNIT2"] == "erg/s/cm$^2$/nm" and h["UNIT1"] == "nanometer"
        assert (h["S_NX"], h["S_NY"]) == (100, 2000)
        assert (h["S_X0"], h["S_Y0"]) == pytest.approx((1650.5 - 1610, 2400.2 - 300))
        assert h["S_ORDER"] == 1 and h["CCDREBIN"] == 1 and h["OUTHUM"] == 12.0
        _, o2_flux, _ = hdul["ORDER2"].data  # as Spectractor unpacks it
        assert hdul["ORDER2"].header["BUNIT"] == FLAM_UNIT
        np.testing.assert_allclose(o2_flux, spec.order2.data[1] * k,
                                   rtol=1e-12)
        assert hdul["S_DATA"].header["BUNIT"] == "electron"
    back = to_electrons(read_spectrum(path))
    assert back.flux_unit == "electron/nm"
    for a, b in ((back.flux, spec.flux), (back.flux_err, spec.flux_err),
                 (back.covariance, spec.covariance), (back.order2.data, spec.order2.data)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=0.0)
    # The electron file gets no Spectractor-only cards (the night's files are unchanged).
    plain = fits.getheader(write_spectrum(spec, tmp_path / "e_spectrum.fits"))
    assert "S_NX" not in plain and plain["UNIT2"] == "electron/nm"


def test_bad_conversions() -> None:
    spec = _electron_spectrum()
    header = spec.header.copy()
    del header["EXPTIME"]
    with pytest.raises(BadInputError, match=r"x\.fits: EXPTIME missing"):
        to_flam(replace(spec, header=header), source="x.fits")
    with pytest.raises(BadInputError, match="'ADU/s' is not e-/nm"):
        to_flam(replace(spec, flux_unit="ADU/s"), source="x.fits")
    with pytest.raises(BadInputError, match="units 'kelvin' is not one of electron, flam"):
        with_flux_unit(spec, "kelvin", source="x.fits")
    assert with_flux_unit(spec, "electron") is spec  # already in e⁻/nm: nothing to do


def test_atmosphere_fit_of_a_flam_file_equals_the_electron_one(tmp_path: Path) -> None:
    """The same simulated spectrum (known atmosphere) fitted from its e⁻ and its flam file:
    the same atmosphere (the flam model is the e⁻ one over hc/λ/(A t), the χ² identical)."""
    truth = {"pwv_mm": 4.0, "ozone_du": 300.0, "vaod": 0.05}
    spec = _electron_spectrum(n=1500)
    model = SpectrumForwardModel(spec)
    idx = model.index
    expected = model(**truth)
    err = np.sqrt(expected + 400.0)
    rng = np.random.default_rng(5)
    sim = replace(spec, wavelength=spec.wavelength[idx],
                  flux=expected + rng.normal(size=expected.size) * err, flux_err=err,
                  covariance=None, order2=None, psf_table=Table(
                      {"lambdas": spec.wavelength[idx], "fwhm": np.full(idx.size, 5.0)}))
    e_path = write_spectrum(sim, tmp_path / "e.fits")
    f_path = write_spectrum(to_flam(sim), tmp_path / "f.fits")
    config = AtmosphereFitConfig()
    fit_e = fit_atmosphere(read_spectrum(e_path), config)
    fit_f = fit_atmosphere(read_spectrum(f_path), config)
    for key in truth:
        sigma = fit_e.errors[key]
        assert fit_f.values[key] == pytest.approx(fit_e.values[key], abs=0.05 * sigma), key
        assert abs(fit_e.values[key] - truth[key]) < 4 * sigma, key
    assert fit_f.chi2_ndof == pytest.approx(fit_e.chi2_ndof, rel=1e-3)
