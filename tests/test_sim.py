"""Physics and bookkeeping of the LATISS simulator (atmospec.sim)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits
from scipy import ndimage

from atmospec.calib.products import Crosstalk
from atmospec.camera.assembly import assemble, disassemble
from atmospec.camera.description import load_camera
from atmospec.camera.raw import read_raw
from atmospec.camera.translator import translate_header
from atmospec.sim.detector import DetectorSimConfig, bleed, expose, sensor_model
from atmospec.sim.night import NightConfig, night_plan, simulate_exposure, simulate_night
from atmospec.sim.rawfile import primary_header, write_raw
from atmospec.sim.scenes import (
    CosmicRayConfig,
    StarFieldConfig,
    cosmic_rays,
    filter_qe_scale,
    illumination,
    moffat_stamp,
    render_stars,
    star_field,
)

CAMERA = load_camera("latiss")
#: Small night: biases at seq 1-2, a dark at 3, a flat at 4, a science frame at 5.
NIGHT = NightConfig(seed=7, n_bias=2, n_dark=1, n_flat=1, n_science=1)
DATA = (slice(None), *CAMERA.data_bbox.slices)


@pytest.fixture(scope="module")
def bias():
    return simulate_exposure("bias", NIGHT, 1)


@pytest.fixture(scope="module")
def flat():
    return simulate_exposure("flat", NIGHT, 4)


@pytest.fixture(scope="module")
def science():
    return simulate_exposure("science", NIGHT, 5)


def electrons_from_raw(segments: np.ndarray, truth) -> np.ndarray:
    """Undo bias, drift, fixed pattern, gains and crosstalk with the truth: assembled e⁻."""
    rows = CAMERA.data_bbox.slices[0]
    data = segments[DATA].astype(np.float64)
    data -= truth.bias_levels_adu[:, None, None] + truth.row_drift_adu[:, rows, None]
    data *= truth.gains[:, None, None]
    image = assemble(data, CAMERA, trimmed=True) - truth.fixed_pattern_e
    if truth.crosstalk_e is not None:
        image -= truth.crosstalk_e
    return image


# --------------------------------------------------------------------------- scenes


def test_moffat_stamp_normalised_centred_and_right_width():
    stamp = moffat_stamp(0.3, -0.2, fwhm=6.0, beta=3.0, half_size=40)
    assert stamp.sum() == pytest.approx(1.0)
    yy, xx = np.mgrid[-40:41, -40:41]
    assert (stamp * xx).sum() == pytest.approx(0.3, abs=0.01)
    assert (stamp * yy).sum() == pytest.approx(-0.2, abs=0.01)
    centred = moffat_stamp(0.0, 0.0, fwhm=6.0, half_size=40)
    row = centred[40]
    # The pixel-integrated profile crosses half maximum at about ±FWHM/2.
    width = 2 * np.interp(0.5, row[40:][::-1] / row[40], np.arange(41)[::-1])
    assert width == pytest.approx(6.0, rel=0.05)


def test_star_field_truth_matches_image():
    rng = np.random.default_rng(3)
    shape = (600, 700)
    cfg = StarFieldConfig(n_saturated=1, saturated_margin_px=200)
    image, table = star_field(shape, 30, rng, fwhm=5.0, sky_e=100.0, exptime=10.0, config=cfg)
    assert image.dtype == np.float32 and image.shape == shape
    assert len(table) == 31 and table["saturated"].sum() == 1
    assert {"x", "y", "flux_e", "peak_e"} <= set(table.colnames)
    # All flux is on the image unless a stamp falls off an edge.
    inside = (table["x"] > 40) & (table["x"] < 660) & (table["y"] > 40) & (table["y"] < 560)
    lost = table["flux_e"][~inside].sum()
    total = image.sum() - 100.0 * image.size
    assert table["flux_e"][inside].sum() <= total + 1.0
    assert total <= table["flux_e"].sum() + 1.0
    assert total >= table["flux_e"].sum() - lost - 1.0
    bright = table[table["saturated"]][0]
    assert bright["peak_e"] > 5e5
    assert image[round(bright["y"]), round(bright["x"])] == pytest.approx(
        bright["peak_e"] + 100.0, rel=0.01)
    fluxes = table["flux_e"][~table["saturated"]]
    assert fluxes.min() >= 300 * 10.0 and fluxes.max() <= 3e5 * 10.0


def test_cosmic_rays_deposit_and_mask():
    rng = np.random.default_rng(5)
    cfg = CosmicRayConfig()
    image, mask = cosmic_rays((1000, 1000), 40, rng, cfg)
    assert image.dtype == np.float32 and mask.dtype == bool
    np.testing.assert_array_equal(mask, image > cfg.mask_threshold_e)
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    assert 25 <= n <= 45  # a few events leave the image or merge
    peaks = ndimage.maximum(image, labels, np.arange(1, n + 1))
    # ~80 e-/µm in 10 µm pixels: the brightest pixel of an event is of order 1000 e-.
    assert np.median(peaks) > 800
    assert image.sum() > 40 * 5000


def test_illumination_structure():
    shape = (800, 900)
    flat_r = illumination(shape, "SDSSr_65mm")
    assert flat_r.dtype == np.float32
    assert np.median(flat_r) == pytest.approx(1.0, abs=1e-6)
    assert illumination(shape, "SDSSr_65mm") is flat_r  # cached: same sensor every frame
    # PRNU: pixel-to-pixel scatter of ~0.7 %.
    assert np.std(np.diff(flat_r, axis=1)) / np.sqrt(2) == pytest.approx(0.007, rel=0.15)
    smooth = ndimage.uniform_filter(flat_r, 25)
    assert 0.005 < smooth.max() - smooth.min() < 0.1
    flat_g = illumination(shape, "SDSSg_65mm")
    ratio = flat_r / flat_g
    # Same PRNU in every filter: only the smooth vignetting (and filter dust) differ.
    assert np.std(np.diff(ratio, axis=1)) < 1e-3
    other_sensor = illumination(shape, "SDSSr_65mm", np.random.default_rng(1))
    assert not np.allclose(other_sensor, flat_r)


def test_filter_qe_scale():
    r, g, u = (filter_qe_scale(f"SDSS{b}_65mm") for b in "rgu")
    assert 0.85 < r < 0.97
    assert u < g < r
    assert 0.7 < filter_qe_scale("empty_1") < r
    with pytest.raises(KeyError):
        filter_qe_scale("no_such_filter")


# --------------------------------------------------------------------------- detector


def test_bleed_conserves_charge():
    col = np.zeros((200, 3), dtype=np.float32)
    col[90:110, 1] = 500.0
    col[100, 1] = 2000.0
    col[140, 1] = 350.0  # a second saturated spot, reached by the first one's trail
    out, mask, moved = bleed(col, 100.0)
    assert out.sum() == pytest.approx(col.sum(), rel=1e-6)
    assert out.max() <= 100.0 * (1 + 1e-6)
    assert moved == pytest.approx((col - 100.0).clip(0).sum())
    run = np.nonzero(mask[:, 1])[0]
    assert run.size > 20 and mask[:, [0, 2]].sum() == 0


def test_gains_from_sensor_seed():
    nominal = sensor_model(DetectorSimConfig(gain_scatter=0.0), CAMERA)
    np.testing.assert_array_equal(nominal.gains, CAMERA.nominal_gains)
    scattered = sensor_model(DetectorSimConfig(), CAMERA).gains
    rel = scattered / CAMERA.nominal_gains - 1
    assert 0.005 < np.std(rel) < 0.05


def test_deterministic_from_seed(bias):
    segments, truth, _ = bias
    again, truth2, _ = simulate_exposure("bias", NIGHT, 1)
    np.testing.assert_array_equal(segments, again)
    other, truth3, _ = simulate_exposure("bias", NightConfig(seed=8, n_bias=2), 1)
    assert segments.dtype == np.int32 and segments.shape == (16, 2048, 576)
    assert not np.array_equal(segments, other)
    # The sensor is the same whatever the frame seed.
    np.testing.assert_array_equal(truth.detector.gains, truth3.detector.gains)
    np.testing.assert_array_equal(truth2.detector.fixed_pattern_e,
                                  truth3.detector.fixed_pattern_e)


def test_bias_overscan_level_and_noise(bias):
    segments, truth, cards = bias
    det = truth.detector
    over = segments[(slice(None), *CAMERA.serial_overscan_bbox.slices)].astype(float)
    median = np.median(over, axis=(1, 2))
    np.testing.assert_allclose(median, det.bias_levels_adu, atol=1.0)
    assert np.all((det.bias_levels_adu > 15_000) & (det.bias_levels_adu < 25_000))
    # Remove the row drift (shared by a row's pixels) before measuring the noise.
    n = over.shape[2]
    resid = over - over.mean(axis=2, keepdims=True)
    std = resid.std(axis=(1, 2)) * np.sqrt(n / (n - 1))
    np.testing.assert_allclose(std, det.read_noise_adu, rtol=0.05)
    np.testing.assert_allclose(det.read_noise_adu, det.read_noise_e / det.gains)
    # The row drift is visible in the overscan: its row means follow the truth.
    row_mean = over.mean(axis=2) - det.bias_levels_adu[:, None]
    drift = det.row_drift_adu[:, : over.shape[1]]
    assert np.corrcoef(row_mean.ravel(), drift.ravel())[0, 1] > 0.8
    assert cards["IMGTYPE"] == "BIAS" and cards["EXPTIME"] == 0.0


def test_fixed_pattern_not_in_overscan(bias):
    segments, truth, _ = bias
    det = truth.detector
    fixed = sensor_model(NIGHT.detector, CAMERA).fixed_pattern_adu
    over_box = (slice(None), *CAMERA.serial_overscan_bbox.slices)
    assert np.all(fixed[over_box] == 0)
    level = det.bias_levels_adu[:, None, None] + det.row_drift_adu[:, :, None]
    # The overscan holds only the level and its drift ...
    over = segments[over_box] - level[:, CAMERA.serial_overscan_bbox.slices[0]]
    np.testing.assert_allclose(over.mean(axis=(1, 2)), 0.0, atol=0.15)
    # ... while the first rows of the imaging area also carry the ramp + column offsets.
    rows = slice(0, 5)
    data = segments[DATA][:, rows] - level[:, rows]
    expected = fixed[DATA][:, rows].mean(axis=(1, 2))
    np.testing.assert_allclose(data.mean(axis=(1, 2)), expected, atol=0.6)
    assert np.abs(expected).max() > 1.5
    assert np.allclose(disassemble(det.fixed_pattern_e, CAMERA),
                       fixed[DATA] * det.gains[:, None, None], atol=1e-3)


def test_flat_level_per_amp(flat):
    segments, truth, cards = flat
    det = truth.detector
    level = NIGHT.flat_level_e
    assert truth.flat_level_e == pytest.approx(level)  # SDSSr is the reference filter
    illum = disassemble(truth.illumination, CAMERA).mean(axis=(1, 2))
    measured = segments[DATA].mean(axis=(1, 2))
    simple = level * illum / det.gains + det.bias_levels_adu
    np.testing.assert_allclose(measured, simple, rtol=3e-3)
    # With every truth term the match is at the Poisson-noise level.
    rows = CAMERA.data_bbox.slices[0]
    exact = (disassemble(det.expected_e + det.fixed_pattern_e + det.crosstalk_e, CAMERA)
             .mean(axis=(1, 2)) / det.gains + det.bias_levels_adu
             + det.row_drift_adu[:, rows].mean(axis=1))
    np.testing.assert_allclose(measured, exact, atol=0.5)
    assert cards["IMGTYPE"] == "FLAT" and cards["FILTER"] == "SDSSr_65mm"


def test_saturated_star_bleeds_and_conserves_charge(science):
    segments, truth, cards = science
    det = truth.detector
    stars = truth.stars
    assert 2 <= stars["saturated"].sum() <= 3
    assert 200 <= (~stars["saturated"]).sum() <= 500
    # Sky within the night's range (±15 % jitter); seeing within its zenith range, times
    # airmass^0.6 (0.0952"/px).
    plan = truth.plan
    assert 2.0 * 0.85 * 30 <= truth.sky_e <= 8.0 * 1.15 * 30
    zenith_seeing = truth.fwhm_px * 0.0952 / plan.airmass**0.6
    assert 0.95 - 1e-9 <= zenith_seeing <= 1.25 + 1e-9
    electrons = electrons_from_raw(segments, det)
    for star in stars[stars["saturated"]]:
        x, y = round(star["x"]), round(star["y"])
        core = det.expected_e[:, x] > det.full_well_e
        labels, _ = ndimage.label(det.saturated[:, x])
        trail = labels == labels[y]
        assert labels[y] > 0 and trail.sum() > core.sum() + 10
        assert np.all(trail[core])
        # Sum over a box holding the star's wings and whole trail.
        rows = np.nonzero(trail)[0]
        box = (slice(rows[0] - 150, rows[-1] + 151), slice(x - 150, x + 151))
        assert np.sum(electrons[box]) == pytest.approx(np.sum(det.expected_e[box]), rel=0.01)
    assert det.n_saturated > 500
    assert cards["IMGTYPE"] == "OBJECT" and cards["AMSTART"] >= 1.0


def test_crosstalk_ghost_of_saturated_star():
    coeffs = Crosstalk.read().matrix().coeffs
    target, source = np.unravel_index(np.argmax(coeffs), coeffs.shape)
    amp = CAMERA.amplifiers[source]
    ys, xs = CAMERA.amp_slices(amp)
    signal = np.zeros(CAMERA.detector_shape, dtype=np.float32)
    x, y = (xs.start + xs.stop) / 2 + 0.3, (ys.start + ys.stop) / 2 - 0.2
    stars, _ = render_stars(signal.shape, np.array([x]), np.array([y]), np.array([3e8]),
                            fwhm=11.0)
    cfg = DetectorSimConfig()
    segments, truth = expose(stars, cfg, np.random.default_rng(0), exptime=30.0,
                             darktime=30.0)
    rows = CAMERA.data_bbox.slices[0]
    fixed = sensor_model(cfg, CAMERA).fixed_pattern_adu[DATA]
    sig = (segments[DATA] - truth.bias_levels_adu[:, None, None]
           - truth.row_drift_adu[:, rows, None] - fixed)
    src = sig[source] - sig[source][:, :5].mean()  # ignore the faint wings' baseline
    on = src > 20_000
    assert on.sum() > 500  # saturated core and bleed trail
    ratio = sig[target][on].sum() / sig[source][on].sum()
    assert ratio == pytest.approx(coeffs[target, source], rel=0.03)
    # Same readout coordinates: the ghost is where the source is bright, not elsewhere.
    assert abs(sig[target][~on].mean()) < 0.5
    ghost = disassemble(truth.crosstalk_e, CAMERA)[target] / truth.gains[target]
    assert np.unravel_index(np.argmax(ghost), ghost.shape) in set(zip(*np.nonzero(on),
                                                                      strict=True))


# --------------------------------------------------------------------------- files


def test_primary_header_translates():
    cards = primary_header("AT_O_20240624_000042", "object", 30.0, 30.24, "SDSSg_65mm",
                           "holo4_003", "2024-06-25T03:00:00.000", 1.3, 120.0, -25.0,
                           "HD 12345", seed=9)
    info = translate_header(cards)
    assert info.obs_id == "AT_O_20240624_000042" and info.seq_num == 42
    assert info.day_obs == 20240624 and info.image_type == "science"
    assert info.filter == "SDSSg_65mm" and info.disperser == "holo4_003"
    assert info.airmass == pytest.approx(1.3) and info.pressure == pytest.approx(740.0)
    assert info.datetime_begin.isot == "2024-06-25T03:00:00.000"
    assert cards["SIMULATE"] is True and cards["SIMSEED"] == 9
    assert cards["FILTBAND"] == "g" and cards["GRATBAND"] == "holo4_003"


def test_raw_file_round_trip(bias, tmp_path):
    segments, _, cards = bias
    plain = write_raw(tmp_path / "plain.fits", segments, cards)
    packed = write_raw(tmp_path / "packed.fits", segments, cards, compress=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["packed.fits", "plain.fits"]
    assert packed.stat().st_size < 0.4 * plain.stat().st_size
    for path in (plain, packed):
        with fits.open(path) as hdul:
            assert len(hdul) == 17
            assert [h.header["EXTNAME"] for h in hdul[1:]] == [a.extname for a in
                                                                CAMERA.amplifiers]
            assert hdul[0].header["OBSID"] == "AT_O_20240624_000001"
            assert hdul[0].header["IMGTYPE"] == "BIAS"
            for i, hdu in enumerate(hdul[1:]):
                assert hdu.data.dtype.kind == "i" and hdu.data.dtype.itemsize == 4
                assert hdu.header["DATASEC"] == "[4:512,1:2000]"
                assert "AVERAGE" not in hdu.header and "STDVBIAS" not in hdu.header
                np.testing.assert_array_equal(hdu.data, segments[i])
    frame = read_raw(packed)
    assert frame.info.image_type == "bias" and frame.info.detector_serial == "ITL-3800C-068"


def test_simulate_night_writes_raws_and_sidecars(tmp_path):
    cfg = NightConfig(seed=11, n_bias=1, n_dark=0, n_flat=0, n_science=1)
    assert [p.kind for p in night_plan(cfg)] == ["bias", "science"]
    paths = simulate_night(tmp_path, cfg)
    assert [p.name for p in paths] == ["AT_O_20240624_000001.fits", "AT_O_20240624_000002.fits"]
    sidecar = json.loads((tmp_path / "AT_O_20240624_000002_truth.json").read_text())
    assert sidecar["kind"] == "science" and sidecar["seed"] == 11
    assert len(sidecar["gains"]) == 16 and len(sidecar["bias_levels_adu"]) == 16
    assert sidecar["filter"] == "SDSSr_65mm" and sidecar["exptime"] == 30.0
    assert 100 <= sidecar["n_cosmic_rays"] <= 350 and sidecar["n_cr_pixels"] > 0
    assert sidecar["n_saturated_pixels"] > 0
    assert {"x", "y", "flux_e"} <= set(sidecar["stars"][0])
    bias_sidecar = json.loads((tmp_path / "AT_O_20240624_000001_truth.json").read_text())
    assert bias_sidecar["stars"] is None
    # Any frame can be rebuilt in memory from the seed.
    segments, _, _ = simulate_exposure("science", cfg, 2)
    with fits.open(paths[1]) as hdul:
        assert hdul[0].header["SEQNUM"] == 2
        np.testing.assert_array_equal(hdul["Segment00"].data, segments[15])
    with pytest.raises(ValueError):
        simulate_exposure("flat", cfg, 2)


def test_a_night_the_target_outlasts_is_refused(tmp_path, capsys):
    """50 on-sky exposures 900 s apart last 12 h: the target sets part-way. The plan says so
    in words (it was a ValueError of the airmass formula); the command is a usage error,
    one line, exit 2, nothing written; a shorter cadence makes the same night."""
    from atmospec.cli import main

    with pytest.raises(ValueError, match=r"50 on-sky exposures every 900 s span 12\.2 h: the "
                                         r"target \(dec -30 deg\) has set by exposure \d+"):
        night_plan(NightConfig(n_bias=0, n_dark=0, n_flat=0, n_science=50))
    plan = night_plan(NightConfig(n_bias=0, n_dark=0, n_flat=0, n_science=50,
                                  science_cadence_s=300.0))
    assert len(plan) == 50 and min(p.elevation for p in plan) > 20.0
    out = tmp_path / "raw"
    base = ["simulate", "night", "--out", str(out), "--n-bias", "0", "--n-dark", "0",
            "--n-flat", "0", "--n-science", "50"]
    for extra, message in (([], "has set by exposure"),
                           (["--science-cadence", "0"], "--science-cadence must be positive")):
        capsys.readouterr()
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("atmospec simulate night: ") and message in err
        assert "\n" not in err and not out.exists()
