"""Spectractor-compatible spectrum I/O, checked against real Spectractor outputs (CTIO HD111980).

Expected values are read independently with plain astropy from the same files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from atmospec.errors import BadInputError
from atmospec.spectro.spectrum import ImageExtension, Spectrogram, Spectrum, find_line
from spectractor_bridge.spectrum import read_spectrum, write_spectrum

DATA = Path(__file__).parent / "data" / "spectractor_ctio"
V24 = DATA / "reduc_20170530_134_spectrum_v2.4_selfcontained.fits.gz"
V2021 = DATA / "reduc_20170530_134_spectrum_2021_rebin2.fits.gz"
# The 2023 file (3.6 MB) is not shipped; it is checked when the shared data folder is present.
SHARED = Path(__file__).parents[2] / "shared" / "data" / "spectractor_ctio"
V2023 = SHARED / "reduc_20170530_134_spectrum_2023.fits"

SPECTRACTOR_24_EXTENSIONS = ["PRIMARY", "SPEC_COV", "ORDER2", "ORDER0", "S_DATA", "S_ERR",
                             "S_BGD", "S_BGD_ER", "S_FIT", "S_RES", "PSF_TAB", "LINES", "CONFIG"]


@pytest.fixture(scope="module")
def v24() -> Spectrum:
    return read_spectrum(V24)


def _raw(path: Path) -> tuple[fits.Header, np.ndarray, dict[str, fits.FitsHDU]]:
    with fits.open(path) as hdul:
        return (hdul[0].header.copy(), np.array(hdul[0].data),
                {h.name: h.copy() for h in hdul[1:]})


def _assert_table_equal(a: Table, b: Table) -> None:
    assert a.colnames == b.colnames
    assert len(a) == len(b)
    for name in a.colnames:
        assert a[name].dtype.kind == b[name].dtype.kind
        assert a[name].dtype.itemsize == b[name].dtype.itemsize
        assert str(a[name].unit) == str(b[name].unit)
        np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]))


def _assert_spectrum_equal(a: Spectrum, b: Spectrum) -> None:
    for name in ("wavelength", "flux", "flux_err"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert (a.covariance is None) == (b.covariance is None)
    if a.covariance is not None:
        np.testing.assert_array_equal(a.covariance, b.covariance)
    assert (a.flux_unit, a.wavelength_unit) == (b.flux_unit, b.wavelength_unit)
    # Every header value survives, duplicates and COMMENT/HISTORY included (provenance is
    # the only thing a write adds).
    def cards(h: fits.Header) -> list[tuple]:
        return [(c.keyword, c.value) for c in h.cards if not c.keyword.startswith("ATM")]
    assert cards(a.header) == cards(b.header)
    for ext in ("order2", "order0"):
        ea, eb = getattr(a, ext), getattr(b, ext)
        assert (ea is None) == (eb is None)
        if ea is not None:
            np.testing.assert_array_equal(ea.data, eb.data)
            assert ea.data.dtype == eb.data.dtype
            assert dict(ea.header) == dict(eb.header)
    assert (a.spectrogram is None) == (b.spectrogram is None)
    if a.spectrogram is not None:
        pa, pb = a.spectrogram.extensions(), b.spectrogram.extensions()
        assert [n for n, _ in pa] == [n for n, _ in pb]
        for (_, ea), (_, eb) in zip(pa, pb, strict=True):
            np.testing.assert_array_equal(ea.data, eb.data)
            assert dict(ea.header) == dict(eb.header)
    for tab in ("psf_table", "lines"):
        ta, tb = getattr(a, tab), getattr(b, tab)
        assert (ta is None) == (tb is None)
        if ta is not None:
            _assert_table_equal(ta, tb)
    assert [h.name for h in a.extra_hdus] == [h.name for h in b.extra_hdus]
    for ha, hb in zip(a.extra_hdus, b.extra_hdus, strict=True):
        assert list(ha.header.items()) == list(hb.header.items())


# --- real Spectractor files ---------------------------------------------------------------------
def test_read_spectractor_24_selfcontained(v24: Spectrum) -> None:
    header, data, ext = _raw(V24)
    assert data.shape == (3, 335)
    assert v24.n_points == 335
    np.testing.assert_array_equal(v24.wavelength, data[0])
    np.testing.assert_array_equal(v24.flux, data[1])
    np.testing.assert_array_equal(v24.flux_err, data[2])
    assert 343.4 < v24.wavelength[0] < 343.5 and 1082.0 < v24.wavelength[-1] < 1082.1
    assert v24.target == "HD111980" and v24.disperser == "HoloAmAg"
    assert v24.d2ccd == header["D2CCD"] == pytest.approx(56.28521534562122, abs=0)
    assert v24.rotation_angle == header["ROTANGLE"] == pytest.approx(-1.563706682540535, abs=0)
    assert v24.target_xy == (header["TARGETX"], header["TARGETY"])
    assert v24.airmass == 1.131 and v24.exptime == 120.0
    assert v24.lambda_ref == header["LBDA_REF"] and v24.pixshift == header["PIXSHIFT"]
    assert v24.header["VERSION"] == "2.4" and v24.header["REBIN"] == 2
    assert (v24.wavelength_unit, v24.flux_unit) == ("nanometer", "erg/s/cm$^2$/nm")
    assert v24.flux_unit_astropy().to_string() == "erg / (nm s cm2)"
    # Spectractor 2.4 writes SPEC_COV with diag = err² exactly.
    np.testing.assert_allclose(np.diag(v24.covariance), data[2] ** 2, rtol=1e-12)
    np.testing.assert_array_equal(v24.covariance, ext["SPEC_COV"].data)
    np.testing.assert_array_equal(v24.order2.data, ext["ORDER2"].data)
    assert v24.order0.data.shape == (100, 100)
    assert v24.order0_center == (ext["ORDER0"].header["IM_X0"], ext["ORDER0"].header["IM_Y0"])
    # Spectrogram cutout and its placement in the 2x2-rebinned frame.
    assert v24.spectrogram_origin == (511, 229)
    np.testing.assert_array_equal(v24.spectrogram.data.data, ext["S_DATA"].data)
    assert v24.spectrogram.data.data.shape == (210, 335)
    assert v24.spectrogram.data.header["UNIT1"] == "erg/s/cm$^2$/nm"
    assert v24.spectrogram.fit.data.shape == (10050,)
    np.testing.assert_array_equal(v24.spectrogram.residuals.data, ext["S_RES"].data)
    assert len(v24.psf_table) == 335
    assert v24.psf_table.colnames[:3] == ["lambdas", "Dx", "Dy"]
    np.testing.assert_array_equal(v24.psf_table["gamma"], ext["PSF_TAB"].data["gamma"])
    assert [h.name for h in v24.extra_hdus] == ["CONFIG"]


def test_lines_table_has_halpha(v24: Spectrum) -> None:
    raw = fits.getdata(V24, "LINES")
    lines = v24.lines
    assert len(lines) == 10
    assert lines.colnames[:6] == ["Line", "Tabulated", "Detected", "Shift", "Err", "FWHM"]
    assert str(lines["Detected"].unit) == "nm"
    halpha = find_line(lines, 656.3)
    assert halpha is not None and halpha["Line"] == r"$H\alpha$"
    i = list(raw["Line"]).index(r"$H\alpha$")
    assert halpha["Tabulated"] == raw["Tabulated"][i] == np.float32(656.6393)
    assert halpha["Detected"] == raw["Detected"][i] == np.float32(656.1409)
    assert halpha["Shift"] == pytest.approx(-0.498, abs=1e-3)
    assert find_line(lines, 1000.0) is None


def test_read_spectractor_2021() -> None:
    header, data, ext = _raw(V2021)
    s = read_spectrum(V2021)
    assert s.n_points == 334
    np.testing.assert_array_equal(s.flux, data[1])
    assert 340.7 < s.wavelength[0] < 340.8 and 1080.5 < s.wavelength[-1] < 1080.6
    assert s.target == "HD111980" and s.header["EXTNAME"] == "SPECTRUM"
    assert s.d2ccd == header["D2CCD"] and s.rotation_angle == header["ROTANGLE"]
    assert "VERSION" not in s.header
    # 2021 files store some numbers as strings.
    assert header["REDSHIFT"] == "0.000517" and s.get_float("REDSHIFT") == 0.000517
    np.testing.assert_allclose(np.diag(s.covariance), data[2] ** 2, rtol=1e-13)
    np.testing.assert_array_equal(s.order2.data, ext["ORDER2"].data)
    assert s.order0 is None and s.spectrogram is None and s.lines is None
    assert s.psf_table is None and s.spectrogram_origin is None and s.extra_hdus == ()


@pytest.mark.skipif(not V2023.is_file(), reason="shared CTIO data folder not available")
def test_read_spectractor_2023() -> None:
    header, data, ext = _raw(V2023)
    s = read_spectrum(V2023)
    assert s.n_points == 669 and header["REBIN"] == 1
    assert 345.0 < s.wavelength[0] < 345.1 and 1083.1 < s.wavelength[-1] < 1083.2
    assert s.d2ccd == header["D2CCD"] and s.rotation_angle == header["ROTANGLE"]
    np.testing.assert_allclose(np.diag(s.covariance), data[2] ** 2, rtol=1e-13)
    assert s.order0_center == (ext["ORDER0"].header["IM_X0"], ext["ORDER0"].header["IM_Y0"])
    assert s.spectrogram is None and s.lines is None


# --- round trips ----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [V24, V2021], ids=["v2.4", "2021"])
def test_round_trip_real(path: Path, tmp_path: Path) -> None:
    original = read_spectrum(path)
    out = write_spectrum(original, tmp_path / "spec.fits")
    again = read_spectrum(out)
    _assert_spectrum_equal(original, again)
    # ... and against the raw file's own cards, in order (UNIT1/UNIT2 are dataclass fields).
    structural = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "UNIT1", "UNIT2"}
    raw_cards = [(c.keyword, c.value) for c in fits.getheader(path).cards
                 if c.keyword not in structural]
    assert [(c.keyword, c.value) for c in again.header.cards
            if not c.keyword.startswith("ATM")] == raw_cards
    with fits.open(out) as hdul:
        assert (hdul[0].header["UNIT1"], hdul[0].header["UNIT2"]) == (
            fits.getval(path, "UNIT1"), fits.getval(path, "UNIT2"))
    # A second write replaces the provenance instead of piling it up.
    twice = read_spectrum(write_spectrum(again, tmp_path / "spec2.fits"))
    assert list(twice.header.keys()).count("ATMSTAGE") == 1
    _assert_spectrum_equal(original, twice)


def _synthetic() -> Spectrum:
    rng = np.random.default_rng(3)
    n = 50
    wl = np.linspace(350.0, 1050.0, n)
    err = rng.uniform(0.01, 0.02, n)
    cov = np.diag(err ** 2) + 1e-6
    header = fits.Header()
    header["TARGET"] = ("HD185975", "name of the target in the image")
    header["GRATING"] = "holo4_003"
    for key, value in dict(D2CCD=186.97, PIXSHIFT=0.12, ROTANGLE=-0.3, TARGETX=1650.5,
                           TARGETY=2400.25, AIRMASS=1.42, EXPTIME=30.0, LBDA_REF=650.0,
                           S_XMIN=100, S_YMIN=200).items():
        header[key] = value
    header["COMMENTS"] = "a long string that must survive being split over CONTINUE cards " * 3
    header.add_history("made by the test")
    lines = Table({"Line": ["$H\\alpha$", "$O_2$"], "Tabulated": np.float32([656.3, 760.3]),
                   "Detected": np.float32([656.1, 760.0]), "Shift": np.float32([-0.2, -0.3]),
                   "Err": np.float32([0.05, 0.1]), "FWHM": np.float32([2.0, 3.0])})
    for col in ("Tabulated", "Detected", "Shift", "Err"):
        lines[col].unit = "nm"
    psf = Table({"lambdas": wl, "Dx": np.arange(n, dtype=float), "gamma": np.full(n, 3.0)})
    spectrogram = Spectrogram(
        data=ImageExtension(rng.normal(size=(20, n)), fits.Header({"UNIT1": "ADU/s"})),
        err=ImageExtension(np.ones((20, n))))
    config = fits.ImageHDU(name="CONFIG")
    config.header["PSF_TYPE"] = "Moffat"
    return Spectrum(wavelength=wl, flux=rng.normal(1.0, 0.1, n), flux_err=err, flux_unit="ADU/s",
                    header=header, covariance=cov,
                    order2=ImageExtension(np.vstack([wl, 0.01 * wl, 0.001 * wl])),
                    order0=ImageExtension(rng.normal(size=(30, 30)),
                                          fits.Header({"IM_X0": 15.2, "IM_Y0": 14.8})),
                    spectrogram=spectrogram, psf_table=psf, lines=lines, extra_hdus=(config,))


def test_round_trip_synthetic(tmp_path: Path) -> None:
    spec = _synthetic()
    again = read_spectrum(write_spectrum(spec, tmp_path / "nested" / "synthetic.fits"))
    _assert_spectrum_equal(spec, again)
    assert again.target == "HD185975" and again.disperser == "holo4_003"
    assert again.header.comments["TARGET"] == "name of the target in the image"
    assert again.spectrogram.background is None and again.spectrogram.err is not None
    assert list(tmp_path.joinpath("nested").iterdir()) == [tmp_path / "nested/synthetic.fits"]


def test_written_file_is_spectractor_layout(v24: Spectrum, tmp_path: Path) -> None:
    path = write_spectrum(v24, tmp_path / "out_spectrum.fits")
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == SPECTRACTOR_24_EXTENSIONS
        assert hdul[0].data.shape == (3, 335) and hdul[0].data.dtype == np.dtype(">f8")
        hdr = hdul[0].header
        assert (hdr["UNIT1"], hdr["UNIT2"]) == ("nanometer", "erg/s/cm$^2$/nm")
        assert hdr["TARGET"] == "HD111980" and hdr["GRATING"] == "HoloAmAg"
        assert hdr["ATMSTAGE"] == "spectrum" and "ATMVERS" in hdr
        assert hdul["SPEC_COV"].data.shape == (335, 335)
        lambdas, flux, err = hdul["ORDER2"].data  # how Spectractor unpacks it
        assert lambdas.shape == flux.shape == err.shape == (335,)
        assert float(hdul["ORDER0"].header["IM_X0"]) == v24.order0_center[0]
        lines = hdul["LINES"].header
        assert lines["TFORM1"] == "12A" and lines["TFORM3"] == "E"
        assert lines["TUNIT3"] == "nm" and lines["TUNIT6"] == "erg/s/cm$^2$/nm"
        assert hdul["PSF_TAB"].columns.formats == ["D"] * 16
        assert Table.read(hdul["LINES"], unit_parse_strict="silent")["Detected"][5] == \
            np.float32(656.1409)


def test_custom_provenance(tmp_path: Path) -> None:
    spec = _synthetic()
    path = write_spectrum(spec, tmp_path / "p.fits",
                          provenance=[("ATMSTAGE", "extract", "stage"), ("ATMIN0", "raw.fits", "")])
    hdr = fits.getheader(path)
    assert hdr["ATMSTAGE"] == "extract" and hdr["ATMIN0"] == "raw.fits"


# --- bad input --------------------------------------------------------------------------------
def _write_primary(path: Path, data: np.ndarray) -> Path:
    fits.PrimaryHDU(data).writeto(path)
    return path


@pytest.mark.parametrize(("case", "problem"), [
    ("missing", "no such file"),
    ("text", "not a readable FITS file"),
    ("two_rows", "is not (3, N)"),
    ("no_data", "is not (3, N)"),
    ("spectrogram", "is not (3, N)"),
    ("nan", "NaN"),
    ("decreasing", "not strictly increasing"),
    ("bad_cov", "SPEC_COV shape"),
])
def test_bad_input(case: str, problem: str, tmp_path: Path) -> None:
    path = tmp_path / f"{case}.fits"
    wl = np.linspace(400.0, 900.0, 10)
    good = np.vstack([wl, np.ones(10), np.ones(10)])
    if case == "text":
        path.write_text("this is not FITS\n")
    elif case == "two_rows":
        _write_primary(path, good[:2])
    elif case == "no_data":
        fits.PrimaryHDU().writeto(path)
    elif case == "spectrogram":  # a Spectractor spectrogram file handed over by mistake
        _write_primary(path, np.zeros((21, 34)))
    elif case == "nan":
        good[0, 3] = np.nan
        _write_primary(path, good)
    elif case == "decreasing":
        _write_primary(path, good[:, ::-1])
    elif case == "bad_cov":
        fits.HDUList([fits.PrimaryHDU(good),
                      fits.ImageHDU(np.eye(9), name="SPEC_COV")]).writeto(path)
    with pytest.raises(BadInputError) as info:
        read_spectrum(path)
    assert info.value.path == str(path)
    assert str(info.value).startswith(f"{path}: ")
    assert problem in str(info.value)
    assert "\n" not in str(info.value)


def test_spectrum_validates_its_arrays() -> None:
    wl = np.array([400.0, 500.0, 450.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        Spectrum(wavelength=wl, flux=np.ones(3), flux_err=np.ones(3))
    with pytest.raises(ValueError, match="shapes differ"):
        Spectrum(wavelength=np.sort(wl), flux=np.ones(2), flux_err=np.ones(3))
    with pytest.raises(ValueError, match="covariance shape"):
        Spectrum(wavelength=np.sort(wl), flux=np.ones(3), flux_err=np.ones(3),
                 covariance=np.eye(2))
    spec = Spectrum(wavelength=np.sort(wl), flux=np.ones(3), flux_err=np.full(3, 0.5))
    np.testing.assert_array_equal(spec.covariance_or_diagonal(), np.diag([0.25] * 3))
    with pytest.raises(ValueError):
        spec.flux[0] = 2.0  # frozen means the arrays too
