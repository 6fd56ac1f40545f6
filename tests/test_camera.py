"""Camera description and amplifier assembly against real ITL/LATISS data."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from conftest import DATA

from atmospec.camera.assembly import assemble, disassemble
from atmospec.camera.description import load_camera
from atmospec.camera.raw import read_raw


@pytest.fixture(scope="module")
def camera():
    return load_camera("latiss")


def test_latiss_facts(camera):
    assert camera.n_amps == 16
    assert camera.detector_shape == (4000, 4072)
    assert camera.raw_bbox.shape == (2048, 576)
    assert camera.data_bbox.shape == (2000, 509)
    assert camera.serial_overscan_bbox.nx == 64 and camera.parallel_overscan_bbox.ny == 48
    assert camera.amp_names[:8] == tuple(f"C1{i}" for i in range(8))
    assert camera.amp_names[8:] == tuple(f"C0{i}" for i in range(7, -1, -1))
    # obs_lsst RXX.yaml: gains 1.047–1.105 e-/ADU, read noise 8.0–10.3 e-
    assert camera.nominal_gains.min() == pytest.approx(1.047)
    assert camera.nominal_gains.max() == pytest.approx(1.1047)
    assert camera.nominal_read_noise[camera.amp_index("C05")] == pytest.approx(10.3)
    assert camera.plate_scale == pytest.approx(0.0952)


def test_itl_spot_assembles_exactly(camera):
    """Rubin's assembled image of the real ITL spot frame, reproduced pixel for pixel."""
    raw = read_raw_segments(DATA / "itl_bot_spot_raw_binarized.fits.gz", camera)
    expected = fits.getdata(DATA / "itl_bot_spot_expected_assembled.fits.gz")
    image = assemble(raw, camera)
    assert image.shape == expected.shape
    assert np.count_nonzero(image != expected) == 0
    assert expected.sum() > 3e5  # the spot pattern is really there


def test_header_detsec_would_flip(camera):
    """The raw DETSEC keywords give a y-flipped image for ITL: we must not follow them."""
    raw = read_raw_segments(DATA / "itl_bot_spot_raw_binarized.fits.gz", camera)
    expected = fits.getdata(DATA / "itl_bot_spot_expected_assembled.fits.gz")
    assert np.count_nonzero(assemble(raw, camera)[::-1] != expected) > 0


def test_disassemble_inverts_assemble(camera):
    rng = np.random.default_rng(3)
    image = rng.normal(size=camera.detector_shape).astype(np.float32)
    sections = disassemble(image, camera)
    assert sections.shape == (16, 2000, 509)
    np.testing.assert_array_equal(assemble(sections, camera, trimmed=True), image)


def test_amp_map_matches_slices(camera):
    amp_map = camera.amp_map()
    for i, amp in enumerate(camera.amplifiers):
        assert np.all(amp_map[camera.amp_slices(amp)] == i)
    # C10 sits top-left in Rubin's orientation, C00 bottom-left.
    assert amp_map[-1, 0] == camera.amp_index("C10")
    assert amp_map[0, 0] == camera.amp_index("C00")


def read_raw_segments(path, camera):
    """The spot file is lsstCam (BOT), not LATISS: read its segments directly."""
    with fits.open(path) as hdul:
        return np.stack([hdul[a.extname].data for a in camera.amplifiers])


def test_read_raw_template(template_raw, camera):
    raw = read_raw(template_raw)
    assert raw.camera is camera
    assert raw.segments.shape == (16, 2048, 576)
    assert raw.segments.dtype == np.float32
    assert raw.info.obs_id == "AT_C_20180920_000065"
    assert len(raw.amp_headers) == 16
    assert raw.amp_headers[0]["DATASEC"] == "[4:512,1:2000]"
