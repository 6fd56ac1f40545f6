"""Simulated raws of the LSST Camera's detectors (e2v and ITL), and BOT EO acquisitions.

The per-amp headers are compared card by card with real LSSTCam and ComCam raws
(tests/data/lsstcam/raw) and LATISS's template; simulated frames are read back by
`read_raw`, reduced by ISR and compared with the simulator's truth; the photodiode records
are integrated as an analysis would. The PTC of a simulated raft (9 e2v CCDs, 6 pairs
each: 108 frames, about 12 minutes) is measured by ``benchmarks/bench_lsstcam.py --ptc``,
not here: the suite's budget cannot hold it.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.io import fits
from astropy.table import Table

from atmospec.calib.isr_inputs import CalibrationFiles, load_calibrations
from atmospec.calib.products.detector import detector_meta
from atmospec.camera.assembly import disassemble
from atmospec.camera.description import Camera, load_camera
from atmospec.camera.raw import read_raw
from atmospec.camera.translator import translate_header
from atmospec.cli import main
from atmospec.errors import BadInputError
from atmospec.isr.driver import IsrConfig, run_isr
from atmospec.isr.overscan import OverscanConfig, parallel_overscan_rows, serial_overscan_columns
from atmospec.sim.bot import (
    TRUTH_FILE,
    BotConfig,
    BotExposure,
    BotFrame,
    bot_plan,
    detector_config,
    expand_detectors,
    photodiode_charge,
    write_bot_run,
    write_photodiode_file,
)
from atmospec.sim.detector import sensor_model
from atmospec.sim.rawfile import _binned_amp_header, amp_header, lsst_primary_header, write_raw

DATA = Path(__file__).parent / "data" / "lsstcam"
E2V = load_camera("LSSTCam", "R22_S11")
ITL = load_camera("LSSTCam", "R10_S11")

#: The structural cards of an amplifier HDU (`amp_header`).
AMP_KEYS = ("CHANNEL", "EXTNAME", "CCDSUM", "DATASEC", "DETSEC", "DETSIZE", "DTV1", "DTV2",
            "DTM1_1", "DTM2_2", "DTM1_2", "DTM2_1")

#: eotest's BOT_jh_glob_patterns.ini (lsst-camera-dh/eotest), the patterns selecting
#: acquisition folders by the analysis that reads them.
EOTEST_PATTERNS = {
    "bias_frame": "*_bias_*", "read_noise": "bias_bias_*", "dark_current": "dark_dark_*",
    "bright_defects": "dark_dark_*", "dark_defects": "sflat_flat_*H*",
    "cte_high": "sflat_flat_*H*", "cte_low": "sflat_flat_*L*", "flat_pairs": "flat_*_flat?_*",
    "ptc": "flat_*_flat?_*",
}


def _section(text: str) -> tuple[int, int, int, int]:
    """``[x1:x2,y1:y2]`` → (x1, x2, y1, y2), 1-based, as written (x1 > x2 when mirrored)."""
    match = re.fullmatch(r"\[(\d+):(\d+),(\d+):(\d+)\]", text)
    assert match is not None, text
    x1, x2, y1, y2 = (int(g) for g in match.groups())
    return x1, x2, y1, y2


# --------------------------------------------------------------------------- amp headers


@pytest.mark.parametrize(("raw", "instrument", "detector"), [
    ("lsstCam_bot_30211212000310-R22-S22-det098_zeroed.fits", "LSSTCam", "R22_S22"),
    ("lsstCam_bot_3019031900001-R10-S02-det029_zeroed.fits", "LSSTCam", "R10_S02"),
    ("comCam_3019053000001-R22-S00-det000_zeroed.fits", "LSSTComCam", "R22_S00"),
    (None, "LATISS", None),
])
def test_amp_headers_equal_real_raws(raw, instrument, detector):
    """Every structural card of every amp equals the real raw's (value and type): e2v and
    ITL LSSTCam raws of the BOT, a ComCam raw, the LATISS template."""
    camera = load_camera(instrument, detector)
    path = (DATA / "raw" / raw if raw else
            Path(str(resources.files("atmospec.data") / "latiss_raw_template.fits.gz")))
    with fits.open(path) as hdul:
        for amp in camera.amplifiers:
            real = hdul[amp.extname].header
            made = amp_header(camera, amp)
            assert list(made) == list(AMP_KEYS)
            for key in AMP_KEYS:
                value = real[key].strip() if isinstance(real[key], str) else real[key]
                assert (made[key], type(made[key])) == (value, type(value)), (amp.name, key)


def test_binned_amp_headers_unchanged():
    """A 2 × 2 LATISS readout: the generated cards are those the template's gave."""
    camera = load_camera("latiss")
    binned = camera.binned(2, 2)
    template = Path(str(resources.files("atmospec.data") / "latiss_raw_template.fits.gz"))
    with fits.open(template) as hdul:
        for amp in camera.amplifiers:
            old = _binned_amp_header(hdul[amp.extname].header, binned)
            new = amp_header(binned, amp)
            assert [new[k] for k in AMP_KEYS] == [old[k] for k in AMP_KEYS], amp.name
    assert new["DATASEC"] == "[3:256,1:1000]" and new["CCDSUM"] == "2 2"


@pytest.mark.parametrize("camera", [E2V, ITL], ids=["e2v", "itl"])
def test_amp_sections_place_pixels_as_the_camera(camera: Camera):
    """Parsed back, DATASEC is the camera's data box; placing every amp's data section at
    its DETSEC (in the order the bounds are written) rebuilds the assembled image mirrored
    top to bottom, and DTM/DTV map each DATASEC corner onto the DETSEC one."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 1000, camera.detector_shape).astype(np.int32)
    sections = disassemble(image, camera)
    ny, nx = camera.detector_shape
    placed = np.full((ny, nx), -1, dtype=np.int32)
    for i, amp in enumerate(camera.amplifiers):
        h = amp_header(camera, amp)
        x1, x2, y1, y2 = _section(h["DATASEC"])
        box = camera.data_bbox
        assert (x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1) == (box.x0, box.y0, box.nx, box.ny)
        assert h["DETSIZE"] == f"[1:{nx},1:{ny}]"
        dx1, dx2, dy1, dy2 = _section(h["DETSEC"])
        for (sx, sy), (dx, dy) in (((x1, y1), (dx1, dy1)), ((x2, y2), (dx2, dy2))):
            assert (h["DTM1_1"] * sx + h["DTV1"], h["DTM2_2"] * sy + h["DTV2"]) == (dx, dy)
        xs = np.arange(dx1, dx2 + (1 if dx2 >= dx1 else -1), 1 if dx2 >= dx1 else -1) - 1
        ys = np.arange(dy1, dy2 + (1 if dy2 >= dy1 else -1), 1 if dy2 >= dy1 else -1) - 1
        placed[np.ix_(ys, xs)] = sections[i]
    np.testing.assert_array_equal(placed, image[::-1])


# --------------------------------------------------------------------------- primary headers


def _primary_keys(name: str) -> list[str]:
    """Keys of a real header file's primary header (the amp headers follow XTENSION)."""
    keys = list(yaml.safe_load((DATA / "headers" / name).read_text()))
    return keys[: keys.index("XTENSION")]


@pytest.mark.parametrize(("instrument", "detector", "obs_id", "stand"), [
    ("LSSTCam", "R22_S11", "MC_C_20211212_000310", "BOT"),
    ("LSSTCam", "R10_S11", "MC_C_20211212_000310", "BOT"),
    ("LSSTComCam", "R22_S12", "CC_C_20211212_000310", "EOCCv0_IR2"),
    ("LSST-TS8", "RTM-010_S11", "TS_C_20211212_000310", "TS8"),
])
def test_lsst_primary_header_translates(instrument, detector, obs_id, stand):
    """The header builder's cards read back through the translator: instrument, detector,
    vendor, serial, exposure, test stand, run, test type and times."""
    camera = load_camera(instrument, detector)
    cards = lsst_primary_header(camera, obs_id, "flat", 15.0, 15.311, test_type="SFLAT",
                                date="2021-12-13T04:58:56.398", run="13162", test_seq=7,
                                filter2="ND_OD0.5", seed=4)
    info = translate_header(cards)
    assert info.instrument == instrument and info.detector == detector
    assert info.detector_id == camera.detector_id
    assert info.vendor == camera.vendor and info.detector_serial == camera.detector_serial
    assert info.exposure_id == obs_id and info.obs_id == f"{obs_id}_{detector}"
    assert (info.day_obs, info.seq_num) == (20211212, 310)
    assert (info.test_stand, info.run, info.test_type, info.controller) == (
        stand, "13162", "SFLAT", "C")
    assert info.image_type == "flat" and info.exposure_time == 15.0
    assert info.dark_time == pytest.approx(15.311)
    assert info.datetime_begin.tai.isot == "2021-12-13T04:58:56.398"
    assert info.physical_filter == "SDSSi~ND_OD0.5" and info.disperser == "empty"
    ny, nx = camera.detector_shape
    assert cards["DETSIZE"] == f"[1:{nx},1:{ny}]"
    assert cards["CCD_TYPE"] == {"E2V": "CCD250", "ITL": "3800C"}[camera.vendor]
    assert not {"GRATING", "LINSPOS", "RA", "DEC", "AMSTART", "ELSTART"} & set(cards)


def test_lsst_primary_header_keys_in_real_order():
    """The keys a real BOT header shares with the builder's come in the real order."""
    real = _primary_keys("lsstCam_MC_C_20231125_000600_R12_S10.yaml")
    made = list(lsst_primary_header(E2V, "MC_C_20231125_000600", "FLAT", 15.0, 18.15))
    shared = [k for k in real if k in made]
    assert len(shared) >= 35
    assert [k for k in made if k in shared] == shared
    # What the builder adds and the 2023 header lacks: DETSIZE (in 2021 BOT headers) and the
    # simulation's own cards.
    assert set(made) - set(real) == {"DETSIZE", "SIMULATE", "SIMSEED"}


def test_ts8_frame_read_back(tmp_path):
    """A TS8 raft's CCD through the same writer: read back with its detector (the raft of
    RAFTNAME), geometry and the pixels as written. (ComCam: `test_cli_simulate_bot`.)"""
    camera = load_camera("LSST-TS8", "RTM-010_S02")
    obs_id = "TS_C_20211212_000001"
    segments = np.arange(camera.n_amps, dtype=np.int32)[:, None, None] + np.full(
        (camera.n_amps, *camera.raw_bbox.shape), 20_000, dtype=np.int32)
    cards = lsst_primary_header(camera, obs_id, "BIAS", 0.0, 0.311)
    path = write_raw(tmp_path / cards["FILENAME"], segments, cards, compress=True,
                     camera=camera)
    raw = read_raw(path)
    assert raw.camera is camera and raw.info.detector == "RTM-010_S02"
    assert raw.info.instrument == "LSST-TS8" and raw.info.vendor == "E2V"
    assert raw.info.obs_id == f"{obs_id}_RTM-010_S02"
    np.testing.assert_array_equal(raw.segments, segments)


# --------------------------------------------------------------------------- a BOT run

#: A small acquisition on one e2v and one ITL detector: a bias and a flat pair at 1 ke⁻
#: (low enough that the mean of 10⁶ pixels of an amp is known to 0.03 e⁻).
RUN = BotConfig(detectors=("R22_S11", "R10_S11"), n_bias=1, n_dark=0,
                flat_levels_e=(1_000.0,), n_sflat_low=0, n_sflat_high=0, compress=False,
                seed=5)


@dataclass
class FrameCheck:
    """What the ISR of one read-back frame gave against its truth."""

    exposure: BotExposure
    detector: str
    vendor: str
    residual_e: np.ndarray
    """Per amp: mean of (ISR image − true electrons), e⁻."""
    noise_ratio: np.ndarray
    """Per amp: std of the residual / √(true signal + read noise²)."""
    model_noise_ratio: np.ndarray
    """Per amp: std of the residual / the noise with ISR's own terms (`_isr_noise_e2`)."""
    pair_noise_ratio: np.ndarray | None
    """Second flat of a pair, per amp: std of the pair difference / √2 / √(signal + rn²)."""
    mean_e: np.ndarray
    """Per amp: mean true signal, e⁻."""


def _truth_ptc(frame: BotFrame, work: Path) -> Path:
    """A PTC product holding the detector's true gains and read noise."""
    path = work / f"ptc_{frame.camera.detector}.fits"
    Table({"AMP": list(frame.camera.amp_names), "GAIN": frame.truth.gains,
           "READ_NOISE": frame.truth.read_noise_e},
          meta=detector_meta(frame.camera)).write(path, overwrite=True)
    return path


def _column_structure_adu(frame: BotFrame) -> np.ndarray:
    """The bias column offsets the parallel-overscan step removes: their zero-mean part,
    ``(n_amps, data nx)`` ADU in readout order (they run down the whole column)."""
    camera = frame.camera
    fixed = sensor_model(detector_config(RUN, camera), camera).fixed_pattern_adu
    rows = camera.parallel_overscan_bbox.slices[0]
    cols = fixed[:, rows, camera.data_bbox.slices[1]].mean(axis=1)
    return cols - cols.mean(axis=1, keepdims=True)


class _Checker:
    """Reads each frame back as it is written, runs ISR and keeps only the numbers (memory
    holds one frame, and the first flat of a pair until the second)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.checks: list[FrameCheck] = []
        self._first_flat: np.ndarray | None = None

    def __call__(self, frame: BotFrame, path: Path) -> None:
        raw = read_raw(path)
        camera = raw.camera
        calibs = load_calibrations(CalibrationFiles(ptc=str(_truth_ptc(frame, self.work))),
                                   camera)
        image = run_isr(raw, IsrConfig(steps=("overscan", "gain", "assemble")),
                        calibs).exposure.image
        truth = frame.truth
        columns = _column_structure_adu(frame) * truth.gains[:, None]
        residual, ratio, model_ratio, pair_ratio = [], [], [], []
        extra = _isr_noise_e2(camera, truth.read_noise_e, truth.gains)
        for i, amp in enumerate(camera.amplifiers):
            sl = camera.amp_slices(amp)
            cols = columns[i][::-1] if amp.flip_x else columns[i]
            expected = truth.expected_e[sl]
            resid = image[sl] - (expected + truth.fixed_pattern_e[sl] - cols[None, :])
            noise = np.sqrt(expected + np.float32(truth.read_noise_e[i] ** 2))
            good = ~frame.cosmic_ray_mask[sl]
            residual.append(np.mean(resid[good], dtype=np.float64))
            ratio.append(_clipped_std((resid / noise)[good]))
            model_ratio.append(_clipped_std((resid / np.sqrt(noise**2 + extra[i]))[good]))
            if frame.exposure.pair == 1 and self._first_flat is not None:
                diff = (self._first_flat[sl] - image[sl])[good] / np.float32(np.sqrt(2.0))
                pair_ratio.append(_clipped_std(diff) / float(np.mean(noise)))
        self._first_flat = image if frame.exposure.pair == 0 else None
        self.checks.append(FrameCheck(
            exposure=frame.exposure, detector=camera.detector, vendor=camera.vendor,
            residual_e=np.array(residual), noise_ratio=np.array(ratio),
            model_noise_ratio=np.array(model_ratio),
            pair_noise_ratio=np.array(pair_ratio) if pair_ratio else None,
            mean_e=frame.amp_means_e()))


def _isr_noise_e2(camera: Camera, read_noise_e: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Per amp, the variance ISR adds to every pixel, e⁻²: the noise of the serial level
    (each row's median of the serial overscan columns used) and of the parallel one (each
    column's median of the parallel overscan rows), π/2 · σ²/n for a median of n, and the
    ADC's rounding, gain²/12."""
    config = OverscanConfig()
    cols = serial_overscan_columns(camera, config)
    rows = parallel_overscan_rows(camera, config)
    n_serial, n_parallel = cols.stop - cols.start, rows.stop - rows.start
    return (read_noise_e**2 * np.pi / 2 * (1 / n_serial + 1 / n_parallel) + gains**2 / 12)


def _clipped_std(x: np.ndarray) -> float:
    """Standard deviation within 5σ of the mean (cosmic-ray halos, the other flat's hits)."""
    mean, std = float(np.mean(x, dtype=np.float64)), float(np.std(x, dtype=np.float64))
    core = np.abs(x - np.float32(mean)) < np.float32(5 * std)
    return float(np.std(x[core], dtype=np.float64))


@pytest.fixture(scope="module")
def bot_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("bot")
    checker = _Checker(work)
    run = write_bot_run(work / "run", RUN, on_frame=checker)
    return run, checker.checks


pytestmark = pytest.mark.xdist_group("sim_lsstcam")


def test_bot_run_layout(bot_run):
    """One folder per exposure holding one raw per detector, named as the BOT names them;
    a photodiode record in each flat folder only; the truth file."""
    run, _ = bot_run
    folders = sorted(p.name for p in run.run_dir.iterdir() if p.is_dir())
    assert folders == ["bias_bias_000", "flat_empty_SDSSi_1000.0_flat0_001",
                       "flat_empty_SDSSi_1000.0_flat1_002"]
    for exposure in run.plan:
        files = sorted(p.name for p in (run.run_dir / exposure.folder).iterdir())
        raws = [f"{exposure.obs_id}_{d}.fits" for d in sorted(RUN.detectors)]
        photodiode = [exposure.photodiode_file] if exposure.image_type == "FLAT" else []
        assert files == sorted(raws + photodiode)
    assert [e.obs_id for e in run.plan] == [f"MC_C_20211212_{s:06d}" for s in (300, 301, 302)]
    truth = json.loads((run.run_dir / TRUTH_FILE).read_text())
    assert set(truth["detectors"]) == set(RUN.detectors)
    for name, det in truth["detectors"].items():
        assert len(det["gains"]) == 16 and len(det["frames"]) == len(run.plan)
        assert det["vendor"] == load_camera("LSSTCam", name).vendor
        # True gains scatter around the detector's nominal ones (2 %), not LATISS's.
        ratio = np.array(det["gains"]) / np.array(det["nominal_gains"])
        assert 0.003 < np.std(ratio) < 0.05 and abs(np.mean(ratio) - 1) < 0.03
        assert all(15_000 < b < 25_000 for b in det["bias_levels_adu"])
    flats = [e for e in truth["exposures"] if e["image_type"] == "FLAT"]
    assert [f["pair"] for f in flats] == [0, 1]
    assert flats[0]["exptime"] == flats[1]["exptime"] == 0.5


def test_plan_folders_match_eotest_patterns():
    """Every kind of exposure of a full acquisition is selected by eotest's pattern for it,
    and by no pattern of another kind."""
    plan = bot_plan(replace(BotConfig(), interleaved_biases=True))
    kinds = {e.folder: (e.test_type, e.image_type) for e in plan}

    def selected(pattern: str) -> set[str]:
        return {f for f in kinds if fnmatch.fnmatch(f, pattern)}

    assert selected(EOTEST_PATTERNS["read_noise"]) == {
        f for f, k in kinds.items() if k == ("BIAS", "BIAS")}
    assert selected(EOTEST_PATTERNS["bias_frame"]) == {
        f for f, k in kinds.items() if k[1] == "BIAS"}
    assert selected(EOTEST_PATTERNS["dark_current"]) == {
        f for f, k in kinds.items() if k == ("DARK", "DARK")}
    assert selected(EOTEST_PATTERNS["ptc"]) == {
        f for f, k in kinds.items() if k == ("FLAT", "FLAT")}
    sflats = {f for f, k in kinds.items() if k == ("SFLAT", "FLAT")}
    high, low = selected(EOTEST_PATTERNS["cte_high"]), selected(EOTEST_PATTERNS["cte_low"])
    assert high | low == sflats and not high & low
    by_folder = {e.folder: e for e in plan}
    assert {by_folder[f].level_e for f in high} == {50_000.0}
    assert {by_folder[f].level_e for f in low} == {1_000.0}
    # 5 biases, 2 darks, 7 pairs, 2 + 2 superflats, and a bias before each of the last.
    assert len(plan) == 5 + 2 * 2 + 7 * 3 + 4 * 2
    assert [e.index for e in plan] == list(range(len(plan)))


@pytest.mark.parametrize("detector", RUN.detectors)
def test_read_back(bot_run, detector):
    """Each raw is read back with the right instrument, detector, vendor and geometry."""
    run, _ = bot_run
    camera = load_camera("LSSTCam", detector)
    expected_box = {"E2V": (10, 0, 512, 2002), "ITL": (3, 0, 509, 2000)}[camera.vendor]
    for exposure in run.plan:
        raw = read_raw(run.run_dir / exposure.folder / f"{exposure.obs_id}_{detector}.fits")
        info = raw.info
        assert (info.instrument, info.detector, info.vendor) == (
            "LSSTCam", detector, camera.vendor)
        assert info.exposure_id == exposure.obs_id
        assert info.obs_id == f"{exposure.obs_id}_{detector}"
        assert (info.test_stand, info.test_type) == ("BOT", exposure.test_type)
        assert info.image_type == exposure.image_type.lower()
        assert info.exposure_time == exposure.exptime
        box = raw.camera.data_bbox
        assert (box.x0, box.y0, box.nx, box.ny) == expected_box
        assert raw.segments.shape == (16, 2048, 576)
        assert raw.camera.detector_shape == (2 * box.ny, 8 * box.nx)
        for amp, header in zip(raw.camera.amplifiers, raw.amp_headers, strict=True):
            assert header["DATASEC"] == box.fits_section
            assert header["DETSEC"] == amp_header(raw.camera, amp)["DETSEC"]


@pytest.mark.parametrize("detector", RUN.detectors)
def test_isr_matches_truth(bot_run, detector):
    """ISR (overscan, gain, assemble, with the true gains) of each read-back frame: every
    amp's mean within 0.2 e⁻ of the true electrons, its scatter around them within 5 % of
    √(signal + read noise²) and within 1 % of that noise with ISR's own terms
    (`_isr_noise_e2`: 3.5-4 % more at zero signal), the flat pair's difference too."""
    _, checks = bot_run
    mine = [c for c in checks if c.detector == detector]
    assert [c.exposure.image_type for c in mine] == ["BIAS", "FLAT", "FLAT"]
    for check in mine:
        label = f"{detector} {check.exposure.folder}"
        assert np.all(np.abs(check.residual_e) <= 0.2), (label, check.residual_e)
        assert np.all(np.abs(check.noise_ratio - 1) <= 0.05), (label, check.noise_ratio)
        assert np.all(np.abs(check.model_noise_ratio - 1) <= 0.01), (
            label, check.model_noise_ratio)
    flats = [c for c in mine if c.exposure.image_type == "FLAT"]
    assert np.all(np.abs(flats[0].mean_e / 1_000.0 - 1) < 0.02)  # the ~1 ke⁻ flats
    ratio = flats[1].pair_noise_ratio
    assert ratio is not None and np.all(np.abs(ratio - 1) <= 0.05), ratio


def test_photodiode_charge_proportional_to_illumination(tmp_path):
    """Every lit exposure of a full acquisition: the record's charge (trapezoid minus the
    baseline read before and after the light) is photodiode_c_per_e × the flat's true
    illumination to 0.1 %, while the illumination departs from the target level by the
    lamp's jitter."""
    config = BotConfig(interleaved_biases=True)
    lit = [e for e in bot_plan(config) if e.has_light]
    assert len(lit) == 2 * len(config.flat_levels_e) + 4
    ratios, off_target = [], []
    for exposure in lit:
        path = write_photodiode_file(tmp_path / exposure.folder, exposure, config)
        assert path.name == f"Photodiode_Readings_20211212_{exposure.seq_num:06d}.txt"
        t, current = np.loadtxt(path, unpack=True)
        assert np.allclose(np.diff(t), 0.0167, atol=1e-9)
        baseline = np.median(np.concatenate([current[:15], current[-15:]]))
        assert baseline == pytest.approx(1e-13, abs=5e-14)
        charge = np.trapezoid(current - baseline, t)
        ratios.append(charge / exposure.illumination_e)
        off_target.append(exposure.illumination_e / exposure.level_e - 1)
        assert photodiode_charge(exposure, config) == pytest.approx(charge, rel=1e-3)
    np.testing.assert_allclose(ratios, config.photodiode_c_per_e, rtol=1e-3)
    assert np.max(np.abs(off_target)) > 2e-3


def test_run_photodiode_files_match_truth(bot_run):
    """The run's photodiode records are those of its truth file's flats."""
    run, _ = bot_run
    truth = json.loads(run.truth.read_text())
    for exposure in truth["exposures"]:
        if exposure["photodiode_file"] is None:
            continue
        path = run.run_dir / exposure["folder"] / exposure["photodiode_file"]
        t, current = np.loadtxt(path, unpack=True)
        charge = np.trapezoid(current - np.median(current[:15]), t)
        assert charge == pytest.approx(exposure["photodiode_charge_c"], rel=1e-3)
        assert charge / exposure["illumination_e"] == pytest.approx(
            truth["photodiode_c_per_e"], rel=1e-3)


def test_expand_detectors():
    """Rafts expand to their reducible detectors (a corner raft's guide sensors, not its
    wavefront sensors); detectors are kept once."""
    assert expand_detectors("LSSTCam", ["R22_S11", "R22"]) == (
        "R22_S11", "R22_S00", "R22_S01", "R22_S02", "R22_S10", "R22_S12", "R22_S20",
        "R22_S21", "R22_S22")
    assert expand_detectors("LSSTCam", ["R00"]) == ("R00_SG0", "R00_SG1")
    assert len(expand_detectors("LSSTComCam", ["R22"])) == 9
    with pytest.raises(ValueError, match="R99"):
        expand_detectors("LSSTCam", ["R99"])


def test_cli_simulate_bot(tmp_path, capsys):
    """``atmospec simulate bot``: one bias of a ComCam detector, then a usage error."""
    out = tmp_path / "run"
    assert main(["simulate", "bot", "--out", str(out), "--instrument", "LSSTComCam",
                 "--detectors", "R22_S11", "--n-bias", "1", "--n-dark", "0", "--levels", "",
                 "--n-sflat", "0", "--seed", "3"]) == 0
    assert "1 exposure(s) x 1 detector(s)" in capsys.readouterr().out
    raw = read_raw(out / "bias_bias_000" / "CC_C_20261123_000300_R22_S11.fits")
    assert raw.info.instrument == "LSSTComCam" and raw.camera.vendor == "ITL"
    assert main(["simulate", "bot", "--out", str(out), "--detectors", "R99"]) == 2
    assert "R99" in capsys.readouterr().err


def test_night_over_a_bot_acquisition_builds_one_master_per_detector(bot_run, tmp_path):
    """`atmospec night` over a BOT run (one folder per exposure, one raw per detector, an e2v
    and an ITL detector): every frame is indexed from its folder under its own obs_id, and
    the bias the flats need is built, verified and registered once per detector."""
    from atmospec.calib.registry import CalibrationRegistry
    from atmospec.night.index import NightIndex
    from atmospec.night.runner import NightRunConfig, run_night

    run, _ = bot_run
    shipped = Path(resources.files("atmospec.pipelines") / "night.yaml").read_text()
    pipeline = tmp_path / "night.yaml"
    pipeline.write_text(shipped.replace("min_frames: {bias: 3,", "min_frames: {bias: 1,"))
    repo = tmp_path / "repo"
    result = run_night(run.run_dir, repo, NightRunConfig(workers=1, plots=False,
                                                         progress=False,
                                                         pipeline=str(pipeline)))
    raws = NightIndex(repo, create=False).raws()
    assert len(raws) == 3 * len(RUN.detectors)  # a bias and a flat pair per detector
    assert {r.info.detector for r in raws} == set(RUN.detectors)
    assert len({r.info.obs_id for r in raws}) == len(raws)
    built = {p.path.name: p.status for p in result.calibrations if p.status != "not built"}
    assert set(built) == {"bias_R22_S11.fits", "bias_R10_S11.fits"}, built
    registry = CalibrationRegistry(repo, create=False)
    assert registry.instrument == "LSSTCam"
    for detector in RUN.detectors:
        (record,) = registry.list("bias", detector)
        assert record.detector == detector
        with fits.open(record.absolute_path) as hdul:
            assert hdul[0].header["DETECTOR"] == detector
            assert hdul[0].header["DETSER"] == load_camera("LSSTCam", detector).detector_serial


def test_master_flat_reads_its_bias_against_the_raws_detector(bot_run, tmp_path):
    """A flat of LSSTCam R22_S11 is built with R22_S11's bias; R10_S11's bias (an ITL
    detector: another shape too) is refused in one line naming it, before any work."""
    from atmospec.calib.files import build_master_file
    from atmospec.calib.masters import FlatConfig, MasterConfig

    run, _ = bot_run
    biases, flats = {}, {}
    for detector in RUN.detectors:
        biases[detector] = build_master_file(
            "bias", sorted(run.run_dir.glob(f"bias_bias_*/*_{detector}.fits")),
            tmp_path / f"bias_{detector}.fits", config=MasterConfig(min_inputs=1))
        flats[detector] = sorted(run.run_dir.glob(f"flat_*/*_{detector}.fits"))
    out = build_master_file("flat", flats["R22_S11"], tmp_path / "flat.fits",
                            bias=biases["R22_S11"], config=FlatConfig(min_inputs=2))
    with fits.open(out) as hdul:
        assert hdul[0].header["DETECTOR"] == "R22_S11"
        assert hdul["IMAGE"].data.shape == (4004, 4096)
    with pytest.raises(BadInputError, match=r"bias is for LSSTCam R10_S11"):
        build_master_file("flat", flats["R22_S11"], tmp_path / "flat2.fits",
                          bias=biases["R10_S11"], config=FlatConfig(min_inputs=2))
    assert not (tmp_path / "flat2.fits").exists()


def test_tearing_on_one_ccd_is_flagged_and_not_the_others():
    """`BotConfig.tearing` on R10_S11 only: its high-flux superflat has two tearing
    detections per amp (the edge columns' ratio steps to (1 + 0.04)/(1 − 0.04) = 1.083 in
    the first 400 rows), 32 > eotest's 10 per frame; R10_S10's, simulated alike, none. The
    truth records it for the torn detector only. Two 4k × 4k frames: ~10 s."""
    from atmospec.calib.eo_flat import TearingConfig, tearing_counts
    from atmospec.sim.bot import _detector_truth, bot_plan, simulate_bot_frame, tearing_pattern

    config = BotConfig(detectors=("R10_S11", "R10_S10"), n_bias=0, n_dark=0,
                       flat_levels_e=(), n_sflat_low=0, n_sflat_high=1,
                       tearing=("R10_S11",))
    sflat, = bot_plan(config)
    limit = TearingConfig().min_detections
    for detector, torn in (("R10_S11", True), ("R10_S10", False)):
        camera = load_camera("LSSTCam", detector)
        frame = simulate_bot_frame(sflat, camera, config)
        counts = tearing_counts(frame.segments, camera)
        truth = _detector_truth(camera, config, frame)["tearing"]
        if torn:
            assert list(counts) == [2] * 16 and counts.sum() > limit
            assert truth == {"amplitude": 0.04, "rows": 400}
        else:
            assert not counts.any() and truth is None
    # The pattern: in readout order, the edge columns of every amp in the first rows only.
    camera = load_camera("LSSTCam", "R10_S11")
    seg = disassemble(tearing_pattern(camera, 0.04, 400), camera)
    np.testing.assert_allclose(seg[:, :400, [0, -1]], 0.96)
    np.testing.assert_allclose(seg[:, :400, [1, -2]], 1.04)
    assert np.all(seg[:, 400:] == 1.0) and np.all(seg[:, :, 2:-2] == 1.0)
    with pytest.raises(ValueError, match="tearing on R22_S11"):
        BotConfig(detectors=("R10_S11",), tearing=("R22_S11",))
    assert main(["simulate", "bot", "--out", "unused", "--detectors", "R10_S11",
                 "--tearing", "R99"]) == 2
    assert main(["simulate", "bot", "--out", "unused", "--detectors", "R10_S11",
                 "--brighter-fatter", "1e-7"]) == 2


def test_parallel_cti_and_dark_columns_by_amp():
    """Parallel CTI on named amps (the others keep ``cti_parallel``), an unknown amp refused;
    dark columns: each one amp's half of a column, its whole height, response 0.3–0.7, and
    nothing else of the sensor changed by adding them."""
    from atmospec.sim.detector import DetectorSimConfig, parallel_cti_per_amp

    camera = load_camera("LSSTCam", "R22_S11")
    config = DetectorSimConfig(cti_parallel=1e-7, cti_parallel_by_amp=(("C03", 6e-6),))
    cti = parallel_cti_per_amp(config, camera)
    names = list(camera.amp_names)
    assert cti[names.index("C03")] == 6e-6
    assert np.all(np.delete(cti, names.index("C03")) == 1e-7)
    with pytest.raises(ValueError, match="C99"):
        parallel_cti_per_amp(DetectorSimConfig(cti_parallel_by_amp=(("C99", 1e-6),)), camera)

    plain = sensor_model(DetectorSimConfig(sensor_seed=11), camera)
    dark = sensor_model(DetectorSimConfig(sensor_seed=11, n_cold_columns=2), camera)
    low = dark.response < 0.8
    columns = np.flatnonzero(low.any(axis=0))
    half = camera.detector_shape[0] // 2
    assert len(columns) == 2 and low.sum() == 2 * half
    for col in columns:
        values = dark.response[low[:, col], col]
        assert values.size == half and np.all((values >= 0.3) & (values <= 0.7))
    np.testing.assert_array_equal(plain.dark_current_e_per_s, dark.dark_current_e_per_s)
    np.testing.assert_array_equal(plain.gains, dark.gains)
    assert not (plain.response < 1).any()
