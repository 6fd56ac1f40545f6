"""Real LSST Camera raws (BOT, ComCam, TS8): read, checked and assembled as Rubin does.

The files are obs_lsst's test data (tests/data/lsstcam/, GPL-3.0): two binarised spot raws
with DM's expected assembled images (ITL and e2v), four BOT raws and a ComCam raw with
real headers and zeroed pixels, and a TS8 e2v lambda flat whose Segment00 is real.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from atmospec.calib.isr_inputs import CalibrationFiles, load_calibrations
from atmospec.camera.raw import read_raw
from atmospec.cli import main
from atmospec.errors import BadInputError
from atmospec.isr.driver import IsrConfig, run_isr
from atmospec.isr.overscan import OverscanConfig, serial_overscan_columns

DATA = Path(__file__).parent / "data"
RAW = DATA / "lsstcam" / "raw"
TS8 = RAW / "ts8_6006D_201807241028453-RTM-010-S11-det067_one_real_amp.fits"

SPOT_PAIRS = {
    "itl": (DATA / "itl_bot_spot_raw_binarized.fits.gz",
            DATA / "itl_bot_spot_expected_assembled.fits.gz", "R02_S02", (4000, 4072)),
    "e2v": (DATA / "lsstcam" / "e2v_bot_spot_raw_binarized.fits.gz",
            DATA / "lsstcam" / "e2v_bot_spot_expected_assembled.fits.gz", "R22_S11",
            (4004, 4096)),
}


@pytest.mark.parametrize("vendor", sorted(SPOT_PAIRS))
def test_spot_pair_assembles_exactly_through_the_cli(vendor, tmp_path, capsys):
    """``atmospec isr --steps assemble`` on the real BOT spot raw gives DM's expected image,
    pixel for pixel (ITL: the raw LATISS's tests also use; e2v: its 10-column prescan,
    2002 data rows and unflipped bottom amps)."""
    raw, expected_file, detector, shape = SPOT_PAIRS[vendor]
    assert main(["isr", str(raw), "--steps", "assemble", "--out", str(tmp_path)]) == 0
    out = list(tmp_path.glob(f"*{detector}_postisr.fits"))
    assert len(out) == 1, sorted(p.name for p in tmp_path.iterdir())
    image = fits.getdata(out[0], "IMAGE")
    expected = fits.getdata(expected_file)
    assert image.shape == expected.shape == shape
    assert np.count_nonzero(image != expected) == 0
    assert expected.sum() > 1e5  # the spots are there


#: File → (instrument, detector, detector number, vendor, data section x0/ny, gain of C10
#: from obs_lsst's policy for that slot).
ZEROED = {
    "lsstCam_bot_3019031900001-R10-S02-det029_zeroed.fits":
        ("LSSTCam", "R10_S02", 29, "ITL", 3, 2000),
    # 2019: an engineering raft in bay R22, ITL CCDs where the focal plane has e2v ones.
    "lsstCam_bot_3019031900001-R22-S21-det097_zeroed.fits":
        ("LSSTCam", "R22_S21", 97, "ITL", 3, 2000),
    "lsstCam_bot_3019032200002-R10-S22-det035_zeroed.fits":
        ("LSSTCam", "R10_S22", 35, "ITL", 3, 2000),
    "lsstCam_bot_30211212000310-R22-S22-det098_zeroed.fits":
        ("LSSTCam", "R22_S22", 98, "E2V", 10, 2002),
    "comCam_3019053000001-R22-S00-det000_zeroed.fits":
        ("LSSTComCam", "R22_S00", 0, "ITL", 3, 2000),
    TS8.name: ("LSST-TS8", "RTM-010_S11", 67, "E2V", 10, 2002),
}


@pytest.mark.parametrize("name", sorted(ZEROED))
def test_real_lsst_raws_read_with_their_detector(name):
    instrument, detector, number, vendor, x0, ny = ZEROED[name]
    raw = read_raw(RAW / name)
    assert raw.info.instrument == instrument == raw.camera.name
    assert raw.info.detector == detector == raw.camera.detector
    assert raw.camera.detector_id == number
    assert raw.camera.vendor == vendor
    assert raw.camera.data_bbox.x0 == x0 and raw.camera.data_bbox.ny == ny
    assert raw.segments.shape == (16, 2048, 576)
    # The amp DATASEC of the file agrees with the sensor geometry (1-based inclusive).
    assert raw.amp_headers[0]["DATASEC"] == raw.camera.data_bbox.fits_section
    assert raw.info.obs_id.endswith("_" + detector)
    assert not raw.info.is_dispersed


def test_nominal_values_follow_the_detector_table():
    """R22_S22 of LSSTCam (E2V-CCD250-370): gains, read noise and saturation per amp as
    obs_lsst's policy/lsstCam/R22.yaml gives them."""
    raw = read_raw(RAW / "lsstCam_bot_30211212000310-R22-S22-det098_zeroed.fits")
    camera = raw.camera
    assert camera.detector_serial == raw.info.detector_serial
    c10, c00 = camera.amp_index("C10"), camera.amp_index("C00")
    assert camera.nominal_gains[c10] == pytest.approx(1.44576)
    assert camera.nominal_read_noise[c10] == pytest.approx(5.204)
    assert camera.saturation_levels[c10] == 134043
    assert camera.nominal_gains[c00] == pytest.approx(1.52082)
    assert camera.saturation_levels[c00] == 129244
    # Per-amp saturation: ISR flags each amp at its own level.
    assert len(set(camera.saturation_levels)) == 16


def test_ts8_real_amplifier_overscan_level_and_noise():
    """The real e2v segment (Segment00 = C00) of a TS8 lambda flat: the ISR overscan level
    and noise equal a direct measurement on the file's own serial overscan columns.

    Direct: the median of the serial overscan columns kept by the default configuration
    (columns 525–572 of the segment: 3 skipped at each end for the EPER trail, which
    shows as +4 ADU in the first overscan column) is 27026 ADU, their σ about 6.5 ADU
    (from per-column σ 6.3–6.8 ADU); the data level is 47803 ADU, 20777 ADU above it."""
    raw = read_raw(TS8)
    camera = raw.camera
    i = camera.amp_index("C00")
    direct = raw.segments[i][: camera.data_bbox.ny,
                             serial_overscan_columns(camera, OverscanConfig())].astype(float)
    direct_level = float(np.median(direct))
    direct_sigma = float(np.std(direct - np.median(direct, axis=1, keepdims=True)))
    assert direct_level == pytest.approx(27026, abs=1.0)
    assert 6.0 < direct_sigma < 7.0
    # EPER: the first overscan column holds the deferred charge of the 20 800 ADU flat.
    first = float(np.median(raw.segments[i][: camera.data_bbox.ny, camera.data_bbox.x0
                                            + camera.data_bbox.nx]))
    assert first - direct_level > 2.0

    calibs = load_calibrations(CalibrationFiles(), camera)
    result = run_isr(raw, IsrConfig(steps=("overscan", "assemble")), calibs)
    stats = result.amp_stats["C00"]
    assert stats["overscan_level_adu"] == pytest.approx(direct_level, abs=0.5)
    assert stats["overscan_noise_adu"] == pytest.approx(direct_sigma, rel=0.03)
    data = result.exposure.image[camera.amp_slices(camera.amplifiers[i])]
    # After overscan subtraction the flat sits at data − overscan: 20777 ADU.
    assert float(np.median(data)) == pytest.approx(47803 - direct_level, abs=2.0)


def _copy_with(tmp_path: Path, name: str, **cards) -> Path:
    path = tmp_path / name
    shutil.copyfile(RAW / name, path)
    with fits.open(path, mode="update") as hdul:
        for key, value in cards.items():
            hdul[0].header[key] = value
    return path


@pytest.mark.parametrize(("cards", "message"), [
    # The header names an ITL CCD but describes (and holds) an e2v one.
    ({"CCD_MANU": "ITL"}, "DETSIZE = '[1:4096,1:4004]' is not the 4072×4000 of an ITL "
                          "sensor (LSSTCam R22_S22): vendor and geometry disagree"),
    ({"DETSIZE": "[1:4072,1:4000]"}, "DETSIZE = '[1:4072,1:4000]' is not the 4096×4004"),
    ({"CCD_MANU": "STA"}, "CCD_MANU = 'STA' is not a sensor vendor"),
    ({"RAFTBAY": "R99"}, "R99"),
    ({"RAFTBAY": "R44", "CCDSLOT": "SW0"}, "wavefront sensor"),
])
def test_disagreeing_lsst_raws_are_refused_in_one_line(tmp_path, capsys, cards, message):
    path = _copy_with(tmp_path, "lsstCam_bot_30211212000310-R22-S22-det098_zeroed.fits",
                      **cards)
    with pytest.raises(BadInputError, match=re.escape(message)):
        read_raw(path)
    assert main(["isr", str(path), "--steps", "overscan", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "Traceback" not in err[0]
