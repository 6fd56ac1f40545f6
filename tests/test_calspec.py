"""CALSPEC standard-star library (atmospec.spectro.calspec), checked against the real
shipped CALSPEC files read independently with astropy."""

from __future__ import annotations

import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.table import Table

from atmospec.errors import BadInputError
from atmospec.spectro.calspec import (
    CalspecEntry,
    StellarSED,
    load_sed,
    resolve_target,
    shipped_standards,
)

CALSPEC_DIR = Path(str(resources.files("atmospec.data") / "calspec"))
SHIPPED = sorted(p.name for p in CALSPEC_DIR.glob("*_stis_*.fits.gz"))
VEGA_V_FLAM = 3.63e-9  # erg/s/cm²/Å at V = 0


def raw_table(file_name: str) -> dict[str, np.ndarray]:
    """The CALSPEC table as stored (Å, FLAM), read without the module under test."""
    with fits.open(CALSPEC_DIR / file_name) as hdul:
        assert hdul[1].columns["WAVELENGTH"].unit == "ANGSTROMS"
        assert hdul[1].columns["FLUX"].unit == "FLAM"
        return {k: np.array(hdul[1].data[k], dtype=float)
                for k in ("WAVELENGTH", "FLUX", "STATERROR", "SYSERROR")}


def load_quietly(name: str | Path) -> StellarSED:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return load_sed(name)


def test_twelve_standards_shipped():
    assert len(SHIPPED) == 12
    assert {e.calspec_file for e in shipped_standards()} == set(SHIPPED)


def test_units_angstrom_to_nm_and_flam_times_ten():
    raw = raw_table("hd111980_stis_006.fits.gz")
    sed = load_sed("HD111980")
    np.testing.assert_allclose(sed.wavelength_nm, raw["WAVELENGTH"] / 10.0, rtol=1e-15)
    np.testing.assert_allclose(sed.flux, raw["FLUX"] * 10.0, rtol=1e-15)
    np.testing.assert_allclose(sed.stat_error, raw["STATERROR"] * 10.0, rtol=1e-15)
    np.testing.assert_allclose(sed.sys_error, raw["SYSERROR"] * 10.0, rtol=1e-15)
    assert sed.name == "HD111980"
    assert sed.source_file.endswith("hd111980_stis_006.fits.gz")
    with pytest.raises(ValueError):
        sed.flux[0] = 0.0  # shared cached SED: read-only


def test_hd111980_flux_at_550nm_matches_raw_table():
    raw = raw_table("hd111980_stis_006.fits.gz")
    expected = np.interp(5500.0, raw["WAVELENGTH"], raw["FLUX"]) * 10.0
    sed = load_sed("hd 111980")
    assert sed.flux_at(550.0) == pytest.approx(expected, rel=1e-12)
    assert 1.0e-11 < sed.flux_at(550.0) < 3.0e-11  # V = 8.38: ~1.7e-12 FLAM
    # At a tabulated wavelength the interpolation returns the table value.
    i = int(np.searchsorted(raw["WAVELENGTH"], 6000.0))
    assert sed.flux_at(raw["WAVELENGTH"][i] / 10.0) == pytest.approx(raw["FLUX"][i] * 10.0)
    lo, hi = sed.coverage_nm
    assert np.isnan(sed.flux_at(lo - 1.0)) and np.isnan(sed.flux_at(hi + 1.0))
    assert np.all(np.isfinite(sed.flux_at(np.array([400.0, 700.0, 1000.0]))))


@pytest.mark.parametrize("file_name", SHIPPED)
def test_every_shipped_target_resolves_and_loads(file_name):
    stem = file_name.split("_stis_")[0]
    entry = resolve_target(stem)
    assert isinstance(entry, CalspecEntry)
    assert entry.calspec_file == file_name
    assert entry.hd_number is not None and resolve_target(f"HD {entry.hd_number}") is entry
    assert entry.ra_deg is not None and 0.0 <= entry.ra_deg < 360.0
    assert entry.dec_deg is not None and -90.0 <= entry.dec_deg <= 90.0
    assert entry.v_mag is not None and entry.spectral_type
    raw = raw_table(file_name)
    if stem == "hd60753":
        with pytest.warns(UserWarning, match=r"covers only 114\.9–1022\.5 nm"):
            sed = load_sed(stem)
        assert sed.coverage_nm[1] == pytest.approx(1022.4991, abs=1e-3)
        assert sed.coverage_nm[1] < 1100.0
        assert np.isnan(sed.flux_at(1050.0))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            sed = load_sed(stem)
        assert sed.coverage_nm[0] <= 350.0 and sed.coverage_nm[1] >= 1100.0
    assert sed.coverage_nm == pytest.approx(
        (raw["WAVELENGTH"][0] / 10.0, raw["WAVELENGTH"][-1] / 10.0), rel=1e-15)
    band = np.linspace(350.0, min(1100.0, sed.coverage_nm[1]), 200)
    assert np.all(sed.flux_at(band) > 0)


def test_coordinates_from_index():
    hd = resolve_target("HD111980")  # 12 53 15.053 -18 31 20.01
    assert hd.ra_deg == pytest.approx(15.0 * (12 + 53 / 60 + 15.053 / 3600), abs=1e-9)
    assert hd.dec_deg == pytest.approx(-(18 + 31 / 60 + 20.01 / 3600), abs=1e-9)
    assert hd.spectral_type == "F7V" and hd.v_mag == pytest.approx(8.38)
    assert hd.gaia_source_id == 3510294882898890880


@pytest.mark.parametrize(("alias", "canonical", "hd"), [
    ("HD111980", "HD111980", 111980), ("hd 111980", "HD111980", 111980),
    ("HD-111980", "HD111980", 111980), ("hd_111980", "HD111980", 111980),
    ("mu Col", "MU COL", 38666), ("MUCOL", "MU COL", 38666), ("* MU. COL", "MU COL", 38666),
    ("HD38666", "MU COL", 38666), ("18 Sco", "18 SCO", 146233), ("18sco", "18 SCO", 146233),
    ("HD146233", "18 SCO", 146233), ("eta1 Dor", "ETA1 DOR", 42525),
    ("ETA01 DOR", "ETA1 DOR", 42525), ("HD 42525", "ETA1 DOR", 42525),
    ("HD074000", "HD074000", 74000), ("hd74000", "HD074000", 74000),
    ("HD 60753", "HD60753", 60753), ("3510294882898890880", "HD111980", 111980),
])
def test_alias_resolution(alias, canonical, hd):
    entry = resolve_target(alias)
    assert entry.name == canonical and entry.hd_number == hd


@pytest.mark.parametrize("name", ["Vega", "HD 111981", "", "mu Cen"])
def test_unknown_target(name):
    with pytest.raises(BadInputError, match="not a CALSPEC standard shipped with atmospec "
                                            r"\(known: 18 SCO, .*MU COL\); give a SED file "
                                            "with --sed"):
        resolve_target(name)
    with pytest.raises(BadInputError):
        load_sed(name) if name else resolve_target(name)


def test_binned_conserves_integral_on_random_grid():
    sed = load_sed("mu Col")
    rng = np.random.default_rng(7)
    edges = np.sort(rng.uniform(330.0, 1110.0, 257))
    means = sed.binned(edges)
    assert means.shape == (256,) and np.all(np.isfinite(means))
    # Independent integral of the linear interpolant: insert the edges in the grid, trapezoid.
    w = np.union1d(sed.wavelength_nm[(sed.wavelength_nm > edges[0])
                                     & (sed.wavelength_nm < edges[-1])], edges)
    exact = np.trapezoid(np.interp(w, sed.wavelength_nm, sed.flux), w)
    total = np.sum(means * np.diff(edges))
    assert total == pytest.approx(exact, rel=1e-10)
    # Per bin as well, and a bin inside one sample interval is the mid-point value.
    for k in (0, 100, 255):
        sub = w[(w >= edges[k]) & (w <= edges[k + 1])]
        one = np.trapezoid(np.interp(sub, sed.wavelength_nm, sed.flux), sub)
        assert means[k] * (edges[k + 1] - edges[k]) == pytest.approx(one, rel=1e-10)
    a, b = sed.wavelength_nm[3000], sed.wavelength_nm[3001]
    tiny = sed.binned([a + 0.1 * (b - a), a + 0.3 * (b - a)])
    assert tiny[0] == pytest.approx(sed.flux_at(a + 0.2 * (b - a)), rel=1e-12)


def test_binned_outside_coverage_and_bad_edges():
    sed = load_quietly("hd60753")
    out = sed.binned([1000.0, 1020.0, 1030.0])
    assert np.isfinite(out[0]) and np.isnan(out[1])
    for bad in ([500.0], [600.0, 500.0], [[400.0, 500.0]]):
        with pytest.raises(ValueError):
            sed.binned(bad)


@pytest.mark.parametrize("name", ["HD111980", "mu Col", "eta1 Dor", "HD205905"])
def test_synthetic_v_magnitude(name):
    entry = resolve_target(name)
    flam_550 = load_sed(name).flux_at(550.0) / 10.0  # back to erg/s/cm²/Å
    v_synthetic = -2.5 * np.log10(flam_550 / VEGA_V_FLAM)
    assert v_synthetic == pytest.approx(entry.v_mag, abs=0.1)


def test_user_text_sed_round_trip(tmp_path):
    sed = load_sed("HD111980")
    keep = (sed.wavelength_nm > 300.0) & (sed.wavelength_nm < 1150.0)
    w, f, e = sed.wavelength_nm[keep], sed.flux[keep], sed.stat_error[keep]
    three = tmp_path / "star.txt"
    np.savetxt(three, np.column_stack([w, f, e]), header="wavelength_nm flux error")
    back = load_sed(three)
    np.testing.assert_allclose(back.wavelength_nm, w, rtol=1e-15)
    np.testing.assert_allclose(back.flux, f, rtol=1e-15)
    np.testing.assert_allclose(back.stat_error, e, rtol=1e-15)
    assert np.all(back.sys_error == 0.0)
    assert back.name == "star" and back.source_file == str(three)
    assert back.flux_at(550.0) == pytest.approx(sed.flux_at(550.0), rel=1e-12)
    two = tmp_path / "star.csv"
    np.savetxt(two, np.column_stack([w, f]), delimiter=",")
    assert np.all(load_sed(str(two)).stat_error == 0.0)
    # ECSV with units in Å and FLAM: converted like a CALSPEC file.
    ecsv = tmp_path / "star.ecsv"
    Table({"wavelength": w * 10.0 * u.AA,
           "flux": f / 10.0 * u.erg / u.s / u.cm**2 / u.AA}).write(ecsv)
    from_ecsv = load_sed(ecsv)
    np.testing.assert_allclose(from_ecsv.wavelength_nm, w, rtol=1e-12)
    np.testing.assert_allclose(from_ecsv.flux, f, rtol=1e-12)


def test_user_calspec_fits_file(tmp_path):
    path = tmp_path / "my_hd111980.fits"
    with fits.open(CALSPEC_DIR / "hd111980_stis_006.fits.gz") as hdul:
        hdul.writeto(path)
    user = load_sed(path)
    np.testing.assert_array_equal(user.flux, load_sed("HD111980").flux)
    assert user.name == "my_hd111980"


def _write(path: Path, w, f) -> Path:
    np.savetxt(path, np.column_stack([w, f]))
    return path


def test_bad_user_files(tmp_path):
    w = np.linspace(300.0, 1150.0, 200)
    f = np.full_like(w, 1e-12)
    cases = {
        "missing": (tmp_path / "nothere.txt", "SED file not found"),
        "garbage": (tmp_path / "garbage.txt", "unparsable SED table"),
        "decreasing": (_write(tmp_path / "dec.txt", w[::-1], f), "not strictly increasing"),
        "repeated": (_write(tmp_path / "rep.txt", np.r_[w[:5], w[4:]], np.r_[f[:5], f[4:]]),
                     "not strictly increasing"),
        "negative": (_write(tmp_path / "neg.txt", w, np.where(w > 600, -1e-12, f)),
                     "negative"),
        "nan": (_write(tmp_path / "nan.txt", w, np.where(w > 600, np.nan, f)), "NaN"),
        "columns": (tmp_path / "four.txt", "has 4 columns"),
        "fits": (tmp_path / "image.fits", "no table extension"),
        "notfits": (tmp_path / "broken.fits", "unreadable FITS"),
    }
    (tmp_path / "garbage.txt").write_text("wavelength flux\nabc def\n")
    np.savetxt(tmp_path / "four.txt", np.ones((5, 4)))
    fits.PrimaryHDU(np.zeros((3, 3))).writeto(tmp_path / "image.fits")
    (tmp_path / "broken.fits").write_bytes(b"not a fits file at all")
    for label, (path, problem) in cases.items():
        with pytest.raises(BadInputError) as info:
            load_sed(path)
        assert info.value.path == str(path), label
        assert problem in info.value.problem, (label, info.value.problem)


def test_short_user_sed_warns_with_range(tmp_path):
    path = _write(tmp_path / "short.txt", np.linspace(400.0, 900.0, 51), np.full(51, 2e-12))
    with pytest.warns(UserWarning, match=r"covers only 400\.0–900\.0 nm, not all of 350–1100"):
        sed = load_sed(path)
    assert sed.coverage_nm == (400.0, 900.0)
    assert np.isnan(sed.flux_at(1000.0))
