"""Product classes: what ISR takes from each product, its checks, and its files, on small
products whose content is known."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from atmospec.calib.isr_inputs import CalibrationFiles, load_calibrations
from atmospec.calib.products import Bias, Crosstalk, Defects, Flat, Linearizer, Ptc
from atmospec.calib.products.detector import check_detector, detector_cards, detector_meta
from atmospec.camera.description import load_camera
from atmospec.errors import BadInputError
from atmospec.exposure import Exposure
from atmospec.io import add_cards, provenance_cards

CAMERA = load_camera("latiss")
GAINS = np.linspace(1.1, 1.6, CAMERA.n_amps)
NOISE = np.linspace(5.0, 8.0, CAMERA.n_amps)


def _ptc_table(**meta) -> Table:
    # Rows in reverse camera order: the product is read by amplifier name, not by position.
    names = list(CAMERA.amp_names)[::-1]
    return Table({"AMP": names, "GAIN": GAINS[::-1], "READ_NOISE": NOISE[::-1],
                  "PTC_MEAN": np.tile([10.0, 20.0], (CAMERA.n_amps, 1))},
                 meta={"OBSTYPE": "ptc", "INSTRUME": "LATISS", "CALIBDATE": "2024-06-24",
                       **meta})


def _master(kind: str, value: float) -> Exposure:
    image = np.full(CAMERA.detector_shape, value, dtype=np.float32)
    return Exposure.from_image(image, fits.Header({"OBSTYPE": kind, "INSTRUME": "LATISS"}))


def test_ptc_gains_by_amplifier_name(tmp_path):
    """The gains come out in camera order whatever the row order, named by the file."""
    path = Ptc(_ptc_table()).write(tmp_path / "ptc_a.fits")
    gains = Ptc.read(path, CAMERA).gains(CAMERA)
    np.testing.assert_array_equal(gains.gain, GAINS)
    np.testing.assert_array_equal(gains.read_noise, NOISE)
    assert gains.source == "ptc_a.fits"


def test_ptc_as_stored_is_the_file_read_back(tmp_path):
    """What a Gen3 Butler stores equals the product file read back, provenance included
    (the file's checksum cards describe the file and are not part of the table read)."""
    cards = provenance_cards("ptc", ["a.fits", "b.fits"], {"x": 1})
    product = Ptc(_ptc_table(LONG_KEYWORD="hierarch"))
    stored = product.as_stored(cards)
    path = product.write(tmp_path / "ptc.fits", cards)
    assert {"CHECKSUM", "DATASUM"} <= set(Table.read(path).meta)
    from_file = Ptc.read(path, CAMERA).table
    assert stored.colnames == from_file.colnames
    for name in stored.colnames:
        assert np.array_equal(np.asarray(stored[name]), np.asarray(from_file[name])), name
    assert dict(stored.meta) == dict(from_file.meta)
    assert stored.meta["ATMIN1"] == "b.fits" and stored.meta["LONG_KEYWORD"] == "hierarch"


@pytest.mark.parametrize(("change", "problem"), [
    (lambda t: t.remove_row(3), "no row for amplifier"),
    (lambda t: t["GAIN"].__setitem__(0, 0.0), "finite and positive"),
    (lambda t: t.meta.__setitem__("INSTRUME", "LSSTCam"), "PTC is for LSSTCam"),
    (lambda t: t.remove_column("READ_NOISE"), r"lacks column\(s\) READ_NOISE"),
])
def test_ptc_problems_name_the_file(tmp_path, change, problem):
    table = _ptc_table()
    change(table)
    path = tmp_path / "bad_ptc.fits"
    table.write(path)
    with pytest.raises(BadInputError, match=problem) as info:
        Ptc.read(path, CAMERA).gains(CAMERA)
    assert info.value.path == str(path)


def test_master_checks_and_non_finite_pixels():
    """A non-finite pixel becomes 0 in a bias and 1 in a flat, flagged BAD; another kind or
    instrument is refused, naming the source."""
    bias = _master("bias", 3.0)
    bias.image[10, 20] = np.nan
    checked = Bias.checked(bias, "bias@1")
    assert checked.exposure.image[10, 20] == 0.0
    assert checked.exposure.get_mask("BAD").sum() == 1
    flat = _master("flat", 1.02)
    flat.image[5, 5] = np.inf
    assert Flat.checked(flat, "flat@2").exposure.image[5, 5] == 1.0
    with pytest.raises(BadInputError, match="product is a flat, not a bias") as info:
        Bias.checked(_master("flat", 1.0), "flat@3")
    assert info.value.path == "flat@3"
    other = _master("bias", 0.0)
    other.metadata["INSTRUME"] = "LSSTCam"
    with pytest.raises(BadInputError, match="for instrument LSSTCam"):
        Bias.checked(other, "bias@4")


def test_crosstalk_matrix_from_rubin_order(tmp_path):
    """``CT_COEFFS`` is [source, target]: coupling 1e-3 from amp 2 into amp 5 is matrix
    element [5, 2]; the diagonal is zeroed and NaN read as 0."""
    n = CAMERA.n_amps
    stored = np.zeros((n, n))
    stored[2, 5] = 1e-3
    stored[7, 7] = 0.5
    stored[9, 1] = np.nan
    table = Table({"CT_COEFFS": stored.reshape(1, n * n)},
                  meta={"CROSSTALK_RATIOS_UNITS": "electron"})
    path = Crosstalk(table).write(tmp_path / "xt.ecsv")
    matrix = Crosstalk.read(path).matrix()
    expected = np.zeros((n, n))
    expected[5, 2] = 1e-3
    np.testing.assert_array_equal(matrix.coeffs, expected)
    assert matrix.units == "electron"
    with pytest.raises(BadInputError, match="256 terms, expected 4x4"):
        Crosstalk.read(path, n_amps=4)


def test_defects_roundtrip_with_provenance(tmp_path):
    """Boxes written with provenance read back as the same mask, the provenance in meta."""
    table = Table({"x0": [10, 100], "y0": [20, 0], "width": [3, 1], "height": [2, 4000]},
                  meta={"OBSTYPE": "defects"})
    cards = provenance_cards("defects", ["dark.fits"], {"n_sigma": 5})
    path = Defects(table).write(tmp_path / "defects.ecsv", cards)
    back = Defects.read(path)
    mask = back.mask(CAMERA.detector_shape)
    assert mask.sum() == 3 * 2 + 4000
    assert mask[21, 12] and not mask[22, 12] and mask[:, 100].all()
    assert back.table.meta["ATMIN0"] == "dark.fits"
    assert back.table.meta["HISTORY"][0].startswith("atmospec config:")


def test_linearizer_correction_and_bad_type(tmp_path):
    names = list(CAMERA.amp_names)
    table = Table({"AMP": names, "TYPE": ["POLYNOMIAL"] * len(names),
                   "COEFFS": [np.array([2e-6, 0.0])] * len(names)})
    path = Linearizer(table).write(tmp_path / "lin.fits")
    correction = Linearizer.read(path, CAMERA).correction(CAMERA)
    x = np.array([1e4], dtype=np.float32)
    np.testing.assert_allclose(correction.correct(x, 3), x + 2e-6 * x**2, rtol=1e-6)
    table["TYPE"][4] = "TABLE"
    table.write(tmp_path / "bad_lin.fits")
    with pytest.raises(BadInputError, match=f"amplifier {names[4]}: bad linearity type"):
        Linearizer.read(tmp_path / "bad_lin.fits", CAMERA)


def test_load_calibrations_names_each_product(tmp_path):
    """A run's products: gains from the PTC, masters without their variance, and the name
    of every product used (the shipped defects and crosstalk by default)."""
    ptc = Ptc(_ptc_table()).write(tmp_path / "ptc.fits")
    bias = _master("bias", 2.5).write(tmp_path / "bias.fits")
    calibs = load_calibrations(CalibrationFiles(bias=str(bias), ptc=str(ptc)), CAMERA,
                               products={"flat": Flat.checked(_master("flat", 1.0), "flat@9")})
    np.testing.assert_array_equal(calibs.gains.gain, GAINS)
    assert float(calibs.bias.image.mean()) == 2.5 and not calibs.bias.variance.any()
    assert calibs.dark is None and calibs.flat is not None
    assert calibs.sources == {"bias": "bias.fits", "flat": "flat@9", "ptc": "ptc.fits",
                              "defects": "latiss_defects.ecsv",
                              "crosstalk": "latiss_crosstalk.ecsv"}


def test_product_of_another_detector_is_refused(tmp_path):
    """Products given explicitly must be for the frame's detector. R22_S11 and R22_S12 are
    e2v sensors of one shape: only DETECTOR tells their products apart, so the check comes
    before the shape's. A product naming no detector serves LATISS (one detector), not
    LSSTCam."""
    s11, s12 = load_camera("lsstcam", "R22_S11"), load_camera("lsstcam", "R22_S12")
    assert s11.detector_shape == s12.detector_shape

    def bias(camera, name, shape=(10, 10)):
        header = fits.Header({"OBSTYPE": "bias"})
        add_cards(header, detector_cards(camera))
        return Exposure.from_image(np.zeros(shape, np.float32), header), tmp_path / name

    image, path = bias(s12, "bias_R22_S12.fits")
    image.write(path)
    with pytest.raises(BadInputError) as info:
        load_calibrations(CalibrationFiles(bias=str(path)), s11)
    assert info.value.path == str(path)
    assert info.value.problem == "bias is for LSSTCam R22_S12, this frame is R22_S11"
    # The full-size product of the other detector, in memory: the shape would pass.
    same_shape, _ = bias(s12, "", s12.detector_shape)
    with pytest.raises(BadInputError, match="bias is for LSSTCam R22_S12, this frame is "
                                            "R22_S11"):
        Bias.checked(same_shape, "bias@R22_S12", s11)
    assert Bias.checked(same_shape, "bias@R22_S12", s12).exposure.metadata["DETSER"] == \
        s12.detector_serial

    table = _ptc_table()
    table.meta.update(detector_meta(s12))
    table["AMP"] = list(s12.amp_names)[::-1]
    ptc = Ptc(table).write(tmp_path / "ptc_R22_S12.fits")
    with pytest.raises(BadInputError, match="PTC is for LSSTCam R22_S12, this frame is R22_S11"):
        load_calibrations(CalibrationFiles(ptc=str(ptc)), s11)
    assert load_calibrations(CalibrationFiles(ptc=str(ptc)), s12).sources["ptc"] == ptc.name

    image, path = bias(s11, "bias_anon.fits")
    del image.metadata["DETECTOR"]
    image.write(path)
    with pytest.raises(BadInputError, match="product for LSSTCam names no DETECTOR"):
        load_calibrations(CalibrationFiles(bias=str(path)), s11)
    # The same for LATISS serves its only detector (as this file's other products do).
    image.metadata["INSTRUME"] = "LATISS"
    check_detector(image.metadata, CAMERA, str(path), "bias")
