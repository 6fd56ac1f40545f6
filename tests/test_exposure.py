"""Exposure: Rubin ExposureF layout, CCDData round trip, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty

from atmospec.errors import BadInputError
from atmospec.exposure import DEFAULT_MASK_PLANES, Exposure
from atmospec.io import provenance_cards


def _exposure() -> Exposure:
    rng = np.random.default_rng(1)
    exp = Exposure.from_image(rng.normal(100, 10, (60, 80)), fits.Header({"OBSID": "X_1"}))
    exp.variance[:] = 100.0
    exp.set_mask("SAT", exp.image > 120)
    exp.set_mask("CR", np.eye(60, 80, dtype=bool))
    return exp


def test_rubin_layout(tmp_path):
    exp = _exposure()
    path = exp.write(tmp_path / "e.fits", provenance_cards("isr", ["raw.fits"], {"a": 1}))
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "IMAGE", "MASK", "VARIANCE"]
        assert hdul["IMAGE"].data.dtype == np.dtype(">f4")
        assert hdul["MASK"].data.dtype == np.dtype(">i4")
        assert hdul["VARIANCE"].data.dtype == np.dtype(">f4")
        for name, bit in DEFAULT_MASK_PLANES.items():
            assert hdul["MASK"].header[f"MP_{name}"] == bit
        assert hdul[0].header["OBSID"] == "X_1"
        assert hdul[0].header["ATMSTAGE"] == "isr"
        assert hdul[0].header["ATMIN0"] == "raw.fits"
        assert any("atmospec config" in str(h) for h in hdul[0].header["HISTORY"])
        assert hdul["IMAGE"].header["BUNIT"] == "electron"


def test_roundtrip(tmp_path):
    exp = _exposure()
    back = Exposure.read(exp.write(tmp_path / "e.fits"))
    np.testing.assert_array_equal(back.image, exp.image)
    np.testing.assert_array_equal(back.mask, exp.mask)
    np.testing.assert_array_equal(back.variance, exp.variance)
    assert back.mask_planes == exp.mask_planes
    assert back.get_mask("SAT").sum() == exp.get_mask("SAT").sum() > 0
    assert back.get_mask("CR").sum() == 60


def test_ccddata_roundtrip():
    exp = _exposure()
    ccd = exp.to_ccddata()
    assert ccd.unit == u.electron
    assert ccd.mask.sum() == np.count_nonzero(exp.mask)
    np.testing.assert_allclose(ccd.uncertainty.array, 100.0)
    back = Exposure.from_ccddata(ccd)
    np.testing.assert_array_equal(back.mask, exp.mask)
    np.testing.assert_allclose(back.variance, exp.variance)
    assert back.mask_planes == exp.mask_planes
    assert "MP_SAT" not in back.metadata


def test_from_plain_ccddata():
    data = np.ones((10, 12))
    mask = np.zeros((10, 12), bool)
    mask[2, 3] = True
    sigma = StdDevUncertainty(np.full((10, 12), 3.0))
    ccd = CCDData(data, unit="adu", mask=mask, uncertainty=sigma)
    exp = Exposure.from_ccddata(ccd)
    assert exp.unit == "adu"
    assert exp.get_mask("BAD")[2, 3] and exp.get_mask("BAD").sum() == 1
    np.testing.assert_allclose(exp.variance, 9.0)


def test_write_is_atomic(tmp_path, monkeypatch):
    """A failed write leaves neither a partial file nor a temporary file."""
    exp = _exposure()

    def boom(self, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(fits.HDUList, "writeto", boom)
    with pytest.raises(OSError):
        exp.write(tmp_path / "e.fits")
    assert list(tmp_path.iterdir()) == []


def test_read_rejects_non_exposure(tmp_path):
    path = tmp_path / "plain.fits"
    fits.PrimaryHDU(np.zeros((4, 4))).writeto(path)
    with pytest.raises(BadInputError, match=r"plain\.fits: not a post-ISR exposure"):
        Exposure.read(path)
    with pytest.raises(BadInputError, match="no such file"):
        Exposure.read(tmp_path / "missing.fits")


def test_shape_mismatch_rejected():
    with pytest.raises(ValueError):
        Exposure(np.zeros((3, 3), np.float32), np.zeros((3, 4), np.int32),
                 np.zeros((3, 3), np.float32))
