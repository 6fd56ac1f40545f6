"""Atmospheric transmission model (atmospec.atmosphere.transmission): physical sanity on the
shipped tables, and agreement with independent libRadtran and MODTRAN outputs from the shared
data (skipped where those files are absent)."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from atmospec.atmosphere.transmission import AtmosphereModel, load_tables, transmission

SHARED = Path("/work/shared/data")
SIMS_365 = SHARED / "atmosphere/photomcorrectauxtel/lsst_atm_10year_01.fits"
PATTERNS = SHARED / "atmosphere/photomcorrectauxtel/absorption_pattern.csv"
CTIO_GRID = SHARED / "spectractor_ctio/reduc_20170530_134_atmsim_libradtran_grid.fits"
MODTRAN = SHARED / "atmosphere/lsst_throughputs_atmos"
LAM = np.arange(350.0, 1100.5, 1.0)
P_LSST = 731.5


@pytest.fixture(scope="module")
def model() -> AtmosphereModel:
    return AtmosphereModel(LAM)


def at(lam: np.ndarray, value: float) -> int:
    return int(np.argmin(np.abs(lam - value)))


def test_tables_shape_and_function_matches_model(model: AtmosphereModel) -> None:
    t = load_tables()
    assert t.wavelength_nm[0] == 300.0 and t.wavelength_nm[-1] == 1100.0
    assert t.o2_tau.shape == (t.wavelength_nm.size, t.o2_airmass.size)
    args = (1.3, 740.0, 3.0, 280.0, 0.04)
    np.testing.assert_allclose(transmission(LAM, *args), model.transmission(*args), rtol=1e-12)
    lam2d = LAM[:100].reshape(10, 10)
    assert transmission(lam2d, *args).shape == (10, 10)
    with pytest.raises(ValueError):
        AtmosphereModel(np.array([250.0, 500.0]))
    with pytest.raises(ValueError):
        model.transmission(0.5, 740.0, 3.0, 280.0, 0.04)


def test_rayleigh_at_400nm_matches_bodhaine(model: AtmosphereModel) -> None:
    # Bodhaine et al. (1999) sea-level (1013.25 hPa) Rayleigh optical depth, λ in µm.
    lam_um = 0.4
    tau_sea = 0.0021520 * (1.0455996 - 341.29061 * lam_um**-2 - 0.90230850 * lam_um**2) / (
        1 + 0.0027059889 * lam_um**-2 - 85.968563 * lam_um**2
    )
    expected = np.exp(-tau_sea * P_LSST / 1013.25)
    t = model.transmission(1.0, P_LSST, 0.0, 0.0, 0.0)[at(LAM, 400.0)]
    print(f"Rayleigh T(400 nm, X=1, {P_LSST} hPa) = {t:.4f}, Bodhaine {expected:.4f}")
    assert t == pytest.approx(expected, abs=0.005)
    # Rayleigh optical depth proportional to pressure.
    taus = model.optical_depths(1.0, 2 * P_LSST, 0.0, 0.0, 0.0)["rayleigh"]
    np.testing.assert_allclose(taus, 2 * model.optical_depths(1.0, P_LSST, 0, 0, 0)["rayleigh"])


def test_monotonic_in_every_parameter(model: AtmosphereModel) -> None:
    base = dict(airmass=1.2, pressure_hpa=P_LSST, pwv_mm=4.0, ozone_du=300.0, vaod=0.05)
    t0 = model.transmission(**base)
    for key, bigger in [("airmass", 1.8), ("pwv_mm", 8.0), ("ozone_du", 450.0),
                        ("vaod", 0.1), ("pressure_hpa", 800.0)]:
        t1 = model.transmission(**{**base, key: bigger})
        assert np.all(t1 <= t0 + 1e-12), key
        assert np.mean(t1) < np.mean(t0), key
    assert np.all((t0 > 0) & (t0 <= 1))
    # Water has no effect where there are no water lines, a strong one at 940 nm.
    dry = model.transmission(**{**base, "pwv_mm": 0.0})
    assert dry[at(LAM, 500.0)] == pytest.approx(t0[at(LAM, 500.0)], abs=1e-4)
    assert t0[at(LAM, 940.0)] < 0.9 * dry[at(LAM, 940.0)]


def test_o2_a_band_depth(model: AtmosphereModel) -> None:
    t = model.transmission(1.0, P_LSST, 0.0, 0.0, 0.0)
    band = t[at(LAM, 760.0)] / t[at(LAM, 750.0)]
    print(f"O2 A band 760 nm / 750 nm at X=1: {band:.3f}")
    assert 0.2 < band < 0.7
    t2 = model.transmission(2.0, P_LSST, 0.0, 0.0, 0.0)
    assert t2[at(LAM, 760.0)] / t2[at(LAM, 750.0)] < band


def test_aerosol_power_law(model: AtmosphereModel) -> None:
    taus = model.optical_depths(1.5, P_LSST, 0.0, 0.0, 0.1, angstrom=1.3)["aerosol"]
    assert taus[at(LAM, 500.0)] == pytest.approx(0.15, rel=1e-9)
    assert taus[at(LAM, 1000.0)] == pytest.approx(0.15 * 2**-1.3, rel=1e-9)
    shape = model.optical_depths(1.0, P_LSST, 0.0, 0.0, 1.0, angstrom=None)["aerosol"]
    assert shape[at(LAM, 500.0)] == pytest.approx(1.0, abs=0.01)


def test_speed(model: AtmosphereModel) -> None:
    n = 500
    t0 = time.perf_counter()
    for i in range(n):
        model.transmission(1.1 + 1e-3 * i, P_LSST, 4.0, 300.0, 0.05)
    rate = n / (time.perf_counter() - t0)
    print(f"{rate:.0f} evaluations/s on a 1 nm grid 350–1100 nm ({LAM.size} points)")


@pytest.mark.skipif(not SIMS_365.exists(), reason="shared libRadtran atmospheres absent")
def test_reproduces_365_libradtran_atmospheres() -> None:
    d = fits.getdata(SIMS_365)
    keep = (d[0, 7:] >= 350) & (d[0, 7:] <= 1100)
    lam, sims, par = d[0, 7:][keep], d[1:, 7:][:, keep], d[1:, :7]
    model = AtmosphereModel(lam)
    for angstrom, rms_med_max, rms_max_max in [(None, 0.002, 0.006), (1.3, 0.003, 0.008)]:
        dt = np.array([
            model.transmission(p[2], P_LSST, p[4], p[5], p[3], angstrom) - s
            for p, s in zip(par, sims, strict=True)
        ])
        rms = np.sqrt((dt**2).mean(axis=1))
        print(f"365 atmospheres, angstrom={angstrom}: RMS median {np.median(rms):.4f}, "
              f"worst {rms.max():.4f}, max |dT| {np.abs(dt).max():.4f}")
        assert np.median(rms) < rms_med_max
        assert rms.max() < rms_max_max
        assert np.abs(dt).max() < 0.04


@pytest.mark.skipif(not PATTERNS.exists(), reason="shared absorption patterns absent")
def test_water_and_ozone_patterns_versus_airmass() -> None:
    rows = list(csv.reader(PATTERNS.open()))
    col = {h: i for i, h in enumerate(rows[0]) if h}
    tab = np.asarray(rows[1:], dtype=float)
    keep = (tab[:, col["wl"]] >= 350) & (tab[:, col["wl"]] <= 1100)
    model = AtmosphereModel(tab[keep, col["wl"]])
    for x10 in (10, 15, 20, 25):
        x = x10 / 10
        tw = np.exp(-model.optical_depths(x, P_LSST, 4.0, 0.0, 0.0)["water"])
        dw = tw - tab[keep, col[f"h2o_{x10}"]]
        to = np.exp(-model.optical_depths(x, P_LSST, 0.0, 300.0, 0.0)["ozone"])
        do = to - tab[keep, col[f"o3_{x10}"]]
        print(f"X={x}: H2O 4 mm RMS {np.sqrt(np.mean(dw**2)):.4f} max {np.abs(dw).max():.4f}; "
              f"O3 300 DU RMS {np.sqrt(np.mean(do**2)):.5f}")
        assert np.sqrt(np.mean(dw**2)) < 0.004 and np.abs(dw).max() < 0.025
        assert np.abs(do).max() < 0.003


@pytest.mark.skipif(not CTIO_GRID.exists(), reason="shared CTIO libRadtran grid absent")
def test_ctio_libradtran_grid() -> None:
    hdu = fits.open(CTIO_GRID)[0]
    airmass, pressure = hdu.header["AIRMASS"], hdu.header["PRESSURE"]
    data = hdu.data
    model = AtmosphereModel(data[0, 4:])
    rms = np.array([
        np.sqrt(np.mean((model.transmission(airmass, pressure, r[2], r[3], r[1], None)
                         - r[4:]) ** 2))
        for r in data[1:]
    ])
    print(f"CTIO grid (X={airmass}, {pressure} hPa, {rms.size} nodes): RMS median "
          f"{np.median(rms):.4f}, worst {rms.max():.4f}")
    assert rms.size == 175
    assert np.median(rms) < 0.004 and rms.max() < 0.006


@pytest.mark.skipif(not MODTRAN.exists(), reason="shared MODTRAN curves absent")
def test_modtran_curves() -> None:
    for name in ("10", "15", "20", "25"):
        wl, t_ref = np.loadtxt(MODTRAN / f"atmos_{name}.dat", unpack=True)
        keep = (wl >= 350) & (wl <= 1100)
        model = AtmosphereModel(wl[keep])
        t = model.transmission(int(name) / 10, 744.0, 4.5, 300.0, 0.0)
        dt = t - t_ref[keep]
        print(f"MODTRAN X={int(name) / 10}: RMS {np.sqrt(np.mean(dt**2)):.4f}, "
              f"max {np.abs(dt).max():.3f}")
        assert np.sqrt(np.mean(dt**2)) < 0.025
        cont = (wl[keep] > 400) & (wl[keep] < 680)
        assert np.abs(dt[cont]).max() < 0.03
