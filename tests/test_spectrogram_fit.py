"""The spectrogram (2D) atmosphere fit (`atmospec.atmosphere.spectrogram_fit`) on a small
synthetic holo4_003 spectrogram drawn without the fit's own code.

The spectrogram is drawn as the simulator draws a trace (`atmospec.sim.dispersed`): the
e⁻/nm of orders 1, 2 and 3 (`electrons_per_nm`: HD142331 × throughput × the disperser's
order efficiencies × atmospec's own transmission model, so there is no model mismatch)
sampled every 0.02 nm, each sample spread over the rows by the Moffat's marginal at its
position (order m of λ lands where order 1 of mλ does, 1 nm of order 1 per row) and every
row across the columns by the same marginal; flat sky, no noise, ``S_ERR`` the Poisson +
read-noise σ, ``PSF_TAB`` the true γ and α = β − ½ on every row from 350 nm (where the
light starts, as the chain's ``PSF_TAB`` starts at the bluest extracted wavelength). 750
rows × 41 columns instead of the 2k rows of a LATISS frame: a fit takes a fraction of a
second.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from atmospec.atmosphere.spectrogram_fit import (
    SpectrogramFitConfig,
    fit_atmosphere_spectrogram,
)
from atmospec.atmosphere.spectrum_fit import AtmosphereFitConfig
from atmospec.sim.dispersed import DispersedSpectrumModel, electrons_per_nm
from atmospec.spectro.spectrum import ImageExtension, Spectrogram, Spectrum

TRUTH = {"pwv_mm": 5.0, "ozone_du": 300.0, "vaod": 0.05}
AIRMASS, PRESSURE_HPA, EXPTIME_S = 1.131, 784.0, 6.0
LAM0_NM, NM_PER_ROW, N_ROWS, N_COLS = 350.0, 1.0, 750, 41
FWHM_500_PX, BETA = 3.0, 3.0
SKY_E, READ_E = 200.0, 18.0


def _fwhm(lam: np.ndarray) -> np.ndarray:
    return FWHM_500_PX * (lam / 500.0) ** -0.2


def _marginal(offset: np.ndarray, fwhm: np.ndarray) -> np.ndarray:
    """The 1D marginal of a 2D Moffat of index ``BETA`` and this FWHM (unnormalised)."""
    gamma = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / BETA) - 1.0))
    return (1.0 + (offset / gamma) ** 2) ** (0.5 - BETA)


def _draw_order(image: np.ndarray, lam: np.ndarray, e_per_sample: np.ndarray, m: int,
                x_c: np.ndarray) -> None:
    """Add order ``m`` of the samples ``lam`` (e⁻ each) to ``image`` (rows along λ)."""
    y = (m * lam - LAM0_NM) / NM_PER_ROW
    fwhm = _fwhm(lam)
    half = math.ceil(6.0 * float(fwhm.max()))
    rows = np.floor(y).astype(np.int64)[:, None] + np.arange(-half, half + 2)[None, :]
    prof = _marginal(rows - y[:, None], fwhm[:, None])
    prof /= prof.sum(axis=1, keepdims=True)
    w = prof * e_per_sample[:, None]
    inside = (rows >= 0) & (rows < N_ROWS)
    flux = np.bincount(rows[inside], weights=w[inside], minlength=N_ROWS)
    width = np.bincount(rows[inside], weights=(w * fwhm[:, None])[inside], minlength=N_ROWS)
    lit = flux > 0
    cols = np.arange(N_COLS)[None, :]
    across = _marginal(cols - x_c[:, None], np.where(lit, width / np.where(lit, flux, 1.0),
                                                     1.0)[:, None])
    image += flux[:, None] * across / across.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def spectrum() -> Spectrum:
    """The synthetic spectrogram of orders 1–3 as an atmospec spectrum (e⁻)."""
    sim = DispersedSpectrumModel(target="HD142331", disperser="holo4_003",
                                 exptime_s=EXPTIME_S, airmass=AIRMASS,
                                 pressure_hpa=PRESSURE_HPA, angstrom=None, orders=(1, 2, 3),
                                 **TRUTH)
    step = 0.02
    lam = np.arange(350.0 + 0.5 * step, 1100.0, step)  # the simulator's range
    epn = electrons_per_nm(sim, lam)
    rows = np.arange(N_ROWS)
    x_c = 20.0 + 0.004 * (rows - N_ROWS / 2)  # a slight tilt: centres off the pixel grid
    image = np.zeros((N_ROWS, N_COLS))
    for m in (1, 2, 3):
        _draw_order(image, lam, epn[m] * step, m, x_c)
    data = image + SKY_E
    err = np.sqrt(data + READ_E**2)
    unit = fits.Header({"BUNIT": "electron"})
    planes = Spectrogram(data=ImageExtension(data, unit.copy()),
                         err=ImageExtension(err, unit.copy()),
                         background=ImageExtension(np.full_like(data, SKY_E), unit.copy()))
    lam_rows = LAM0_NM + NM_PER_ROW * rows
    fwhm = _fwhm(lam_rows)
    psf = Table({"lambdas": lam_rows, "x_c": x_c, "y_c": rows.astype(float),
                 "gamma": fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / BETA) - 1.0)),
                 "alpha": np.full(N_ROWS, BETA - 0.5), "fwhm": fwhm})
    header = fits.Header()
    for key, value in (("TARGET", "HD142331"), ("AIRMASS", AIRMASS),
                       ("OUTPRESS", PRESSURE_HPA), ("EXPTIME", EXPTIME_S),
                       ("GRATING", "holo4_003"), ("FILTER", "empty_1"),
                       ("INSTRMNT", "latiss")):
        header[key] = value
    flux = image.sum(axis=1) / NM_PER_ROW
    return Spectrum(wavelength=lam_rows, flux=flux, flux_err=np.sqrt(flux + 1.0),
                    flux_unit="electron/nm", header=header, psf_table=psf,
                    spectrogram=planes)


def _bias(fit) -> dict[str, float]:
    return {p: fit.values[p] - TRUTH[p] for p in TRUTH}


def test_third_order_modelled(spectrum: Spectrum) -> None:
    """Orders 1–3 drawn, orders 1–3 modelled: the atmosphere comes back (PWV 0.05 mm, ozone
    8 DU, VAOD 0.004) with the order-2 scale at the table's (1 within 0.01). Left out, the
    third order (holo4_003: λ/3 of 350–367 nm, +56 % of order 1 at 1050–1100 nm) is taken
    up by the order-2 scale (+2 %) and the atmosphere: PWV +0.15 mm, ozone −18 DU here, as
    the chain test's +0.19 mm and −17 DU (A2 1.018) were.

    What is left (PWV +0.02 mm, ozone −5.5 DU, VAOD −0.002, A2 1.005) is the model's PSF
    disc: it draws 3 FWHM of the widest PSF, so it misses 0.9 % of the light at 350 nm and
    0.4 % at 1000 nm (β = 3); a 6-FWHM disc takes ozone to −4.3 DU and VAOD to −0.001."""
    fit = fit_atmosphere_spectrogram(spectrum)
    old = fit_atmosphere_spectrogram(spectrum, replace(SpectrogramFitConfig(), order3=False))
    bias, old_bias = _bias(fit), _bias(old)
    print(f"\norders 1-3 modelled: {bias}, A2 {fit.values['order2']:.4f}, χ²/ndof "
          f"{fit.chi2_ndof:.4f}\norder 3 left out:    {old_bias}, A2 "
          f"{old.values['order2']:.4f}, χ²/ndof {old.chi2_ndof:.4f}")
    assert fit.success and fit.info["orders"] == [1, 2, 3]
    assert old.info["orders"] == [1, 2]
    assert abs(bias["pwv_mm"]) < 0.05
    assert abs(bias["ozone_du"]) < 8.0
    assert abs(bias["vaod"]) < 0.004
    assert fit.values["order2"] == pytest.approx(1.0, abs=0.01)
    # The test can tell: without order 3 the same spectrogram gives the biased atmosphere.
    assert old_bias["pwv_mm"] > 0.1 and old_bias["ozone_du"] < -12.0
    assert old.values["order2"] > 1.015


def test_order2_light_of_unfitted_blue_rows_modelled(spectrum: Spectrum) -> None:
    """A fit restricted to 400–1095 nm still draws orders 2 and 3 of the 350–400 nm light
    (on its 700–800 and 1050–1095 nm rows): the fine grid reaches λ/3 of the bluest fitted
    row. (Cut at the fitted range, it drew no order 2 below 800 nm: PWV +0.5 mm, ozone
    +97 DU on this spectrogram; on the chain test's, ozone at its 700 DU bound.)"""
    config = SpectrogramFitConfig(atmosphere=AtmosphereFitConfig(
        wavelength_range_nm=(400.0, 1095.0)))
    fit = fit_atmosphere_spectrogram(spectrum, config)
    bias = _bias(fit)
    print(f"\n400-1095 nm: {bias}, A2 {fit.values['order2']:.4f}")
    assert fit.success and fit.info["orders"] == [1, 2, 3]
    assert fit.wavelength_range_nm[0] >= 400.0
    assert abs(bias["pwv_mm"]) < 0.05
    assert abs(bias["ozone_du"]) < 8.0
    assert abs(bias["vaod"]) < 0.006  # −0.0046: a shorter lever arm than 350-1095 nm
    assert fit.values["order2"] == pytest.approx(1.0, abs=0.01)
