"""Line catalogue, line detection and line-based wavelength calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from atmospec.spectro.dispersers import load_disperser
from atmospec.spectro.spectrum import find_line
from atmospec.spectro.wavelength.calibration import (
    LineDetectionConfig,
    calibrate_wavelength,
    detect_lines,
)
from atmospec.spectro.wavelength.lines import (
    CALIBRATION_FEATURES,
    Line,
    calibration_lines,
    line_catalog,
)
from spectractor_bridge.spectrum import read_spectrum

V24 = (Path(__file__).parent / "data" / "spectractor_ctio"
       / "reduc_20170530_134_spectrum_v2.4_selfcontained.fits.gz")

DISPERSER = load_disperser("holo4_003")
PIXEL_MM = 0.010
THETA0 = 2.0e-3
D_PRIOR = 187.0
D_TRUE = D_PRIOR + 1.5
SHIFT_TRUE = 3.0
DIST = np.arange(1000.0, 3000.0)
# (name, depth, FWHM nm) of the injected absorption features
INJECTED = {"HGAMMA": (0.30, 2.5), "HBETA": (0.30, 2.5), "HALPHA": (0.30, 3.0),
            "O2B": (0.25, 2.0), "O2A": (0.50, 3.0), "H2O_1": (0.20, 15.0)}
FEATURES = {ln.name: ln for ln in CALIBRATION_FEATURES}


def _law(dist, d, s):
    return DISPERSER.wavelength_nm(dist - s, 1, d, PIXEL_MM, THETA0)


def _synthetic(rng, names=tuple(INJECTED), fake_nm=None, level=2.0e4):
    wl = _law(DIST, D_TRUE, SHIFT_TRUE)
    cont = level * (1.0 + 0.3 * np.sin(wl / 170.0))
    trans = np.ones_like(wl)
    for name in names:
        depth, fwhm = INJECTED[name]
        sigma = fwhm / 2.3548
        trans -= depth * np.exp(-0.5 * ((wl - FEATURES[name].wavelength_nm) / sigma) ** 2)
    if fake_nm is not None:
        trans -= 0.6 * np.exp(-0.5 * ((wl - fake_nm) / 1.0) ** 2)
    model = cont * trans
    err = np.sqrt(model + 30.0 ** 2)
    return model + rng.normal(0.0, 1.0, wl.size) * err, err


def _calibrate(flux, err, lines=CALIBRATION_FEATURES):
    return calibrate_wavelength(DIST, flux, err, DISPERSER, D_PRIOR, PIXEL_MM, THETA0, lines)


# --------------------------------------------------------------------------- catalogue


def test_catalogue_loads_with_flags():
    cat = line_catalog()
    assert len(cat) == 89
    by = {ln.name: ln for ln in cat}
    assert by["HALPHA"].wavelength_nm == pytest.approx(656.3)
    assert by["O2B"].atmospheric and by["O2B"].use_for_calibration
    assert not by["HALPHA"].atmospheric
    assert by["H2O_1"].width_bounds_nm == (5.0, 30.0)
    assert by["HG10"].emission and not by["HBETA"].emission
    with pytest.raises(AttributeError):
        by["HBETA"].wavelength_nm = 1.0  # frozen
    o2a = FEATURES["O2A"]
    assert o2a.wavelength_nm == pytest.approx(761.7) and o2a.components == ("O2_1", "O2_2")
    # radial velocity moves stellar lines only
    assert by["HALPHA"].observed_nm(1e-3) == pytest.approx(656.9563)
    assert by["O2B"].observed_nm(1e-3) == pytest.approx(687.472)
    assert {ln.name for ln in calibration_lines(include_water=False)} == {
        "HGAMMA", "HBETA", "HALPHA", "O2B", "O2A"}


# --------------------------------------------------------------------------- detection


def test_detect_lines_on_real_ctio_spectrum():
    spec = read_spectrum(V24)
    ref = spec.lines
    # Spectractor's tabulated Hα 656.639 = 656.3 (1 + z): HD111980's radial velocity
    z = float(find_line(ref, 656.64)["Tabulated"]) / 656.3 - 1.0
    table = detect_lines(spec.wavelength, spec.flux, spec.flux_err, calibration_lines(),
                         LineDetectionConfig(redshift=z))
    assert list(table.colnames[:9]) == ["Line", "Tabulated", "Detected", "Shift", "Err",
                                        "FWHM", "Amplitude", "SNR", "Chisq"]
    got = {row["Name"]: row for row in table}
    for name, tab in [("HBETA", 486.551), ("HALPHA", 656.639), ("O2B", 687.472)]:
        want = float(find_line(ref, tab, tol_nm=0.01)["Detected"])
        assert abs(got[name]["Detected"] - want) < 1.0, name
        assert got[name]["Amplitude"] < 0 and got[name]["Err"] < 1.0
    # O2 A: one feature against the mean of Spectractor's two components
    o2a = np.mean([float(find_line(ref, t, tol_nm=0.01)["Detected"]) for t in (760.3, 763.1)])
    assert abs(got["O2A"]["Detected"] - o2a) < 1.0
    assert got["O2A"]["SNR"] > 10


def test_detect_lines_rejects_absent_and_wrong_sign():
    rng = np.random.default_rng(5)
    flux, err = _synthetic(rng, names=("HALPHA",))
    wl = _law(DIST, D_TRUE, SHIFT_TRUE)
    table = detect_lines(wl, flux, err, CALIBRATION_FEATURES)
    assert list(table["Name"]) == ["HALPHA"]
    assert abs(table["Shift"][0]) < 0.1
    emission = Line("FAKE", 656.3, emission=True)
    assert len(detect_lines(wl, flux, err, [emission])) == 0
    assert len(detect_lines(wl[:100], flux[:100], err[:100], [emission])) == 0  # out of range


# --------------------------------------------------------------------------- calibration


def test_calibration_recovers_d2ccd_and_shift_with_honest_errors():
    wl_true = _law(DIST, D_TRUE, SHIFT_TRUE)
    in_range = (wl_true >= 400) & (wl_true <= 1000)
    before = np.sqrt(np.mean((_law(DIST, D_PRIOR, 0.0) - wl_true)[in_range] ** 2))
    assert before > 3.0
    rng = np.random.default_rng(2024)
    pulls_d, pulls_s = [], []
    for k in range(20):
        flux, err = _synthetic(rng)
        sol = _calibrate(flux, err)
        assert sol.converged and sol.iterations <= 6
        assert sol.n_lines == 6
        assert abs(sol.d2ccd_mm - D_TRUE) < 0.1
        assert abs(sol.pixel_shift - SHIFT_TRUE) < 0.3
        pulls_d.append((sol.d2ccd_mm - D_TRUE) / sol.d2ccd_err_mm)
        pulls_s.append((sol.pixel_shift - SHIFT_TRUE) / sol.pixel_shift_err)
        rms = np.sqrt(np.mean((sol.wavelength_nm - wl_true)[in_range] ** 2))
        assert rms < 0.3
        if k == 0:
            assert np.all(np.abs(sol.lines["Residual"]) < 0.5)
            assert sol.lines["Used"].all()
            assert np.all(sol.wavelength_err_nm[in_range] < 0.3)
            print(f"before {before:.2f} nm RMS, after {rms:.3f} nm; D {sol.d2ccd_mm:.3f}"
                  f" ± {sol.d2ccd_err_mm:.3f} mm, s {sol.pixel_shift:.3f}"
                  f" ± {sol.pixel_shift_err:.3f} px, chi2/ndof {sol.chisq:.1f}/{sol.ndof}")
    width_d, width_s = np.std(pulls_d, ddof=1), np.std(pulls_s, ddof=1)
    print(f"pull widths: D {width_d:.2f}, shift {width_s:.2f}")
    assert 0.7 < width_d < 1.3
    assert 0.7 < width_s < 1.3


def test_calibration_with_half_the_lines():
    rng = np.random.default_rng(11)
    flux, err = _synthetic(rng, names=("HBETA", "O2B", "O2A"))
    sol = _calibrate(flux, err)
    assert sol.converged and sol.n_lines == 3
    assert abs(sol.d2ccd_mm - D_TRUE) < 0.1
    assert abs(sol.pixel_shift - SHIFT_TRUE) < 0.3


def test_calibration_with_two_lines_uses_the_prior():
    rng = np.random.default_rng(12)
    flux, err = _synthetic(rng, names=("HBETA", "O2A"))
    sol = _calibrate(flux, err)
    assert sol.n_lines == 2 and sol.ndof == 1
    assert abs(sol.d2ccd_mm - D_TRUE) < 0.1


def test_calibration_rejects_a_fake_deep_feature():
    rng = np.random.default_rng(13)
    names = tuple(n for n in INJECTED if n != "HGAMMA")
    # a deep fake dip 2.5 nm from Hγ's tabulated wavelength, with no real Hγ
    flux, err = _synthetic(rng, names=names, fake_nm=FEATURES["HGAMMA"].wavelength_nm + 2.5)
    sol = _calibrate(flux, err)
    rows = {r["Name"]: r for r in sol.lines}
    assert "HGAMMA" in rows and not rows["HGAMMA"]["Used"]
    assert sol.converged and sol.n_lines == 5
    assert abs(sol.d2ccd_mm - D_TRUE) < 0.1
    assert abs(sol.pixel_shift - SHIFT_TRUE) < 0.3


def test_calibration_needs_lines():
    flux = np.full(DIST.size, 1e4)
    with pytest.raises(ValueError, match="line"):
        _calibrate(flux, np.full(DIST.size, 100.0))
