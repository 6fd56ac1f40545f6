"""Binned LATISS raws (BINX = BINY = 2) are read and processed; a raw whose BINX/BINY
disagree with its pixels, or a product of another binning, is refused in one line.

No binned LATISS raw is public: the geometry (docs/isr.md, "Binned raws") follows the
sequencer's readout order. The expected numbers below are written out by hand from the
unbinned geometry (576 × 2048 segments, 3 prescan, 509 × 2000 data, 64 serial and 48
parallel overscan), not taken from the code under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from conftest import make_template_raw
from scipy import ndimage

import atmospec.cli
from atmospec.calib.products import Bias
from atmospec.camera.assembly import bin_image
from atmospec.camera.description import load_camera
from atmospec.camera.raw import read_raw
from atmospec.errors import BadInputError
from atmospec.exposure import Exposure
from atmospec.imaging.characterize import characterize
from atmospec.isr.defects import frame_defect_mask
from atmospec.isr.driver import IsrConfig, run_isr
from atmospec.isr.edge import edge_mask
from atmospec.sim.detector import DetectorSimConfig
from atmospec.sim.night import NightConfig, night_plan, simulate_exposure
from atmospec.sim.rawfile import raw_frame, write_raw

pytestmark = pytest.mark.reliability

CAMERA = load_camera("latiss")
BINNED = CAMERA.binned(2, 2)

#: A 2 × 2 star field with true gains equal to the nominal ones (so that `atmospec isr`
#: without a PTC calibrates exactly) and no cosmic rays (their repair is tested elsewhere).
NIGHT = NightConfig(n_bias=0, n_dark=0, n_flat=0, n_science=1, compress=False,
                    binning=(2, 2), cr_rate_per_s=0.0, n_stars=(150, 150),
                    n_saturated=(1, 1), detector=DetectorSimConfig(gain_scatter=0.0))


def _one_error_line(err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def _bias_file(image: np.ndarray, path: Path) -> Path:
    header = fits.Header({"OBSTYPE": "bias", "INSTRUME": "LATISS"})
    Bias(Exposure.from_image(np.asarray(image, dtype=np.float32), header, unit="electron"),
         "").write(path)
    return path


@pytest.fixture(scope="module")
def binned_frame(tmp_path_factory):
    """The simulated 2 × 2 raw on disk, its truth, and a bias product of the true bias
    structure (what a perfect master bias of this binning holds)."""
    out = tmp_path_factory.mktemp("binned")
    seq = next(p.seq for p in night_plan(NIGHT) if p.kind == "science")
    segments, truth, cards = simulate_exposure("science", NIGHT, seq)
    raw = write_raw(out / f"{cards['OBSID']}.fits", segments, cards, camera=BINNED)
    bias = _bias_file(truth.detector.fixed_pattern_e, out / "bias_2x2.fits")
    return raw, truth, bias


@pytest.mark.timeout(30)
def test_binned_geometry_from_the_unbinned_one():
    """2 × 2: every box halves, rounded inward; the binned pixel holding the last prescan
    and the first data column belongs to no box."""
    assert BINNED.binning == (2, 2) and BINNED.unbinned is CAMERA
    assert BINNED.raw_bbox.shape == (1024, 288)
    assert (BINNED.data_bbox.x0, BINNED.data_bbox.y0) == (2, 0)
    assert BINNED.data_bbox.shape == (1000, 254)
    assert BINNED.serial_prescan_bbox.shape == (1000, 1)
    assert (BINNED.serial_overscan_bbox.x0, BINNED.serial_overscan_bbox.nx) == (256, 32)
    assert (BINNED.parallel_overscan_bbox.y0, BINNED.parallel_overscan_bbox.ny) == (1000, 24)
    assert BINNED.detector_shape == (2000, 2032)
    assert BINNED.data_bbox.fits_section == "[3:256,1:1000]"
    assert CAMERA.data_bbox.fits_section == "[4:512,1:2000]"  # the real raws' DATASEC
    assert BINNED.binned(1, 1) is CAMERA and CAMERA.binned(2, 2) is BINNED
    assert BINNED.pixel_scale == pytest.approx(2 * CAMERA.plate_scale)
    with pytest.raises(ValueError, match="parallel_overscan"):
        CAMERA.binned(64, 64)


@pytest.mark.timeout(30)
def test_bin_image_matches_hand_slicing():
    """Each amp's 509 data columns bin to 254: the column read first (the amp's rightmost
    in the assembled image, all LATISS amps being x-flipped) shares its binned pixel with
    the prescan and is dropped; the rest sum in pairs, rows in pairs."""
    rng = np.random.default_rng(7)
    image = rng.normal(size=CAMERA.detector_shape).astype(np.float64)
    expected = np.empty(BINNED.detector_shape)
    for ix in range(8):
        for iy in range(2):
            block = image[iy * 2000:(iy + 1) * 2000, ix * 509: ix * 509 + 508]
            expected[iy * 1000:(iy + 1) * 1000, ix * 254:(ix + 1) * 254] = (
                block.reshape(1000, 2, 254, 2).sum(axis=(1, 3)))
    np.testing.assert_allclose(bin_image(image, BINNED, "sum"), expected, rtol=1e-12)


@pytest.mark.timeout(30)
def test_defects_and_edge_follow_the_binning():
    # (0, 0) is C00's last column read: binned (0, 0). x = 508 is C00's first column read,
    # which no binned data pixel holds.
    table = Table({"x0": [0, 508], "y0": [0, 100], "width": [1, 1], "height": [1, 1]})
    mask = frame_defect_mask(table, BINNED)
    assert mask.shape == (2000, 2032)
    assert np.argwhere(mask).tolist() == [[0, 0]]
    # The 10-pixel edge of the sensor is 5 binned pixels.
    edge = edge_mask(BINNED.detector_shape, 10, BINNED.binning)
    assert edge[5:-5, 5:-5].sum() == 0 and edge[4, 100] and edge[100, 4]


@pytest.mark.timeout(180)
def test_binned_raw_through_isr_matches_truth(binned_frame, tmp_path, capsys):
    """``atmospec isr RAW --bias B --out DIR`` on the 2 × 2 raw: exit 0; a 2032 × 2000
    image equal to the binned truth within its noise; the bias level of every amp found."""
    raw, truth, bias = binned_frame
    with fits.open(raw) as hdul:
        assert hdul[0].header["BINX"] == 2 and hdul[1].data.shape == (1024, 288)
        assert hdul[1].header["DATASEC"] == "[3:256,1:1000]"
        assert hdul[1].header["CCDSUM"] == "2 2"
    status = atmospec.cli.main(["isr", str(raw), "--bias", str(bias), "--out", str(tmp_path)])
    _, err = capsys.readouterr()
    assert status == 0, err
    assert err == ""
    obs_id = raw.stem
    post = Exposure.read(tmp_path / f"{obs_id}_postisr.fits")
    assert post.image.shape == (4000 // 2, (4072 - 8) // 2)

    det = truth.detector
    resid = post.image - det.expected_e
    noise = np.sqrt(det.expected_e + BINNED.amp_map().choose(det.read_noise_e) ** 2)
    flagged = (post.mask != 0) | ndimage.binary_dilation(det.saturated, iterations=5)
    good = ~flagged & (det.expected_e < 5 * 4 * truth.sky_e)
    checked = []
    for amp in BINNED.amplifiers:
        sl = BINNED.amp_slices(amp)
        if post.get_mask("BAD")[sl].mean() > 0.99:  # the shipped defects: amp C07 is bad
            continue
        r, n = resid[sl][good[sl]], noise[sl][good[sl]]
        assert r.size > 200_000, amp.name
        assert abs(np.median(r)) < 1.0, amp.name  # sky ≈ 900 e- per binned pixel
        assert np.std(r / n) == pytest.approx(1.0, abs=0.05), amp.name
        checked.append(amp.name)
    assert len(checked) == 15

    stats = json.loads((tmp_path / f"{obs_id}_isrstats.json").read_text())
    assert stats["binning"] == [2, 2]
    for i, amp in enumerate(BINNED.amp_names):
        level = stats["amps"][amp]["overscan_level_adu"]
        assert level == pytest.approx(det.bias_levels_adu[i], abs=0.5), amp
        noise_adu = stats["amps"][amp]["overscan_noise_adu"]
        assert noise_adu == pytest.approx(det.read_noise_adu[i], rel=0.05), amp

    # Downstream: the PSF in arcsec uses the binned pixel (2 × 0.0952″).
    quality = characterize(post).image_quality
    seeing = truth.fwhm_px * CAMERA.plate_scale
    assert quality.fwhm_arcsec == pytest.approx(seeing, rel=0.1)


@pytest.mark.timeout(60)
def test_binx_2_on_unbinned_data_refused(tmp_path, capsys):
    raw = make_template_raw(tmp_path / "binx.fits")
    with fits.open(raw, mode="update") as hdul:
        hdul[0].header["BINX"] = 2
        hdul[0].header["BINY"] = 2
    status = atmospec.cli.main(["isr", str(raw), "--out", str(tmp_path / "out")])
    _, err = capsys.readouterr()
    assert status == 2
    _one_error_line(err, "binx.fits", "BINX=2", "(2048, 576)", "(1024, 288)")


@pytest.mark.timeout(60)
def test_impossible_binning_refused(tmp_path):
    raw = make_template_raw(tmp_path / "bin64.fits")
    with fits.open(raw, mode="update") as hdul:
        hdul[0].header["BINX"] = 64
        hdul[0].header["BINY"] = 64
    with pytest.raises(BadInputError, match="BINX=64") as exc:
        read_raw(raw)
    assert exc.value.path == str(raw)


@pytest.mark.timeout(120)
def test_product_of_another_binning_refused(binned_frame, tmp_path, capsys):
    """An unbinned bias for the 2 × 2 raw: from the command line (the product is checked
    against the frame's geometry) and in memory (the ISR driver checks it)."""
    raw, truth, _ = binned_frame
    unbinned_bias = _bias_file(np.zeros(CAMERA.detector_shape), tmp_path / "bias_1x1.fits")
    status = atmospec.cli.main(["isr", str(raw), "--bias", str(unbinned_bias),
                                "--out", str(tmp_path / "out")])
    _, err = capsys.readouterr()
    assert status == 2
    _one_error_line(err, "bias_1x1.fits", "(4000, 4072)", "(2000, 2032)")

    with fits.open(raw) as hdul:
        frame = raw_frame(np.stack([h.data for h in hdul[1:]]), hdul[0].header)
    calibs = truth.perfect_calibrations()
    calibs.bias = Exposure.from_image(np.zeros(CAMERA.detector_shape, dtype=np.float32))
    calibs.sources = {"bias": "bias_1x1.fits"}
    with pytest.raises(BadInputError, match=r"bias bias_1x1.fits is 4072×4000 px, this "
                                            r"frame \(BINX=2, BINY=2\) is 2032×2000"):
        run_isr(frame, IsrConfig(steps=("overscan", "gain", "bias")), calibs)
