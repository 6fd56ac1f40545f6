"""Defects, electro-optical figures and crosstalk measured on simulated LATISS frames, against
the simulator's truth.

The sensor has hot pixels (5e-5 of the pixels, 1–50 e⁻/s), three hot column segments
(0.05–0.3 e⁻/s) and cold pixels (5e-5, response 0.2–0.7). Masters are built here from ISR'd
frames (mean of biases, CR-clipped mean of seven 1200 s darks, mean of 50 ke⁻ flats; darks and
flats crosstalk-corrected): just enough for these tests; the real master builders live
elsewhere.

The flats (for the master flat and the EPER CTI) come from the same sensor with serial and
parallel CTI of 1e-5. The darks do not: with that CTI every hot pixel leaves up to 2 % of its
charge in the next pixel read, which the defect search rightly flags but which is not a
simulated defect, and would blur the false-detection count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from atmospec.calib.crosstalk import (
    CrosstalkMeasurement,
    compare_crosstalk,
    measure_crosstalk,
)
from atmospec.calib.defects import (
    DefectMaps,
    FindDefectsConfig,
    detect_defects,
    find_defects,
    mask_to_boxes,
)
from atmospec.calib.eo import EO_COLUMNS, eo_figures, write_eo
from atmospec.calib.files import build_defects_file
from atmospec.calib.products import Crosstalk, Defects, Ptc
from atmospec.camera.description import load_camera
from atmospec.camera.raw import RawFrame
from atmospec.errors import BadInputError
from atmospec.exposure import Exposure
from atmospec.isr.defects import defect_mask
from atmospec.isr.driver import IsrCalibrations, IsrConfig, run_isr
from atmospec.isr.overscan import robust_sigma
from atmospec.plots.eo import plot_eo_summary
from atmospec.sim.detector import DetectorSimConfig, SensorModel, sensor_model
from atmospec.sim.night import NightConfig, night_plan, simulate_exposure
from atmospec.sim.rawfile import raw_frame
from atmospec.sim.scenes import StarFieldConfig

CAMERA = load_camera("latiss")
DETECTOR = DetectorSimConfig(hot_pixel_fraction=5e-5, cold_pixel_fraction=5e-5, n_hot_columns=3)
CTI = 1e-5
NIGHT = NightConfig(n_bias=4, n_dark=7, dark_exptime=1200.0, n_flat=4, flat_level_e=50_000.0,
                    n_science=1, compress=False, detector=DETECTOR)
NIGHT_CTI = replace(NIGHT, detector=replace(DETECTOR, cti_serial=CTI, cti_parallel=CTI))
#: Three fields (night seeds) with many saturated stars, kept away from the edges by less than
#: the default so that the outer amps get sources too, under a dark sky (2–4 e⁻/s: the ghosts
#: of 1e-4 couplings are a few e⁻, measured against the sky's noise).
CROSSTALK_NIGHTS = [replace(NIGHT, seed=seed, n_saturated=(24, 24), sky_e_per_s=(2.0, 4.0),
                            stars=StarFieldConfig(saturated_margin_px=60))
                    for seed in (1, 2, 3)]
#: Non-linearity (fractional deficit at 100 kADU, the simulator's model) of the odd amps'
#: ramp in the PTC; the even amps' ramps are linear.
RAMP_NONLINEARITY = 0.02


def _frame(night: NightConfig, kind: str, seq: int) -> RawFrame:
    segments, _, cards = simulate_exposure(kind, night, seq)
    return raw_frame(segments, cards, CAMERA)


def _seqs(night: NightConfig, kind: str) -> list[int]:
    return [p.seq for p in night_plan(night) if p.kind == kind]


def _product(image: np.ndarray, kind: str) -> Exposure:
    return Exposure.from_image(image.astype(np.float32), fits.Header(
        {"OBSTYPE": kind, "INSTRUME": "LATISS", "FILTER": "SDSSr_65mm~empty",
         "DATE-OBS": "2024-06-24T20:00:00"}))


@dataclass
class Calib:
    sensor: SensorModel
    bias_raws: list[RawFrame]
    flat_raws: list[RawFrame]
    dark: Exposure
    flat: Exposure


@pytest.fixture(scope="module")
def ptc_path(tmp_path_factory) -> Path:
    """A PTC product with the true gains and full well, and an analytic ramp per amp."""
    sensor = sensor_model(DETECTOR, CAMERA)
    times = np.linspace(0.5, 100.0, 40)
    means = []
    for i in range(CAMERA.n_amps):
        adu = 950.0 * times / sensor.gains[i]  # up to ~90 kADU
        f = RAMP_NONLINEARITY if i % 2 else 0.0
        means.append(adu * (1.0 - f * adu / 1e5))
    path = tmp_path_factory.mktemp("ptc") / "ptc.fits"
    Table({"AMP": list(CAMERA.amp_names), "GAIN": sensor.gains,
           "READ_NOISE": sensor.read_noise_e, "TURNOFF": DETECTOR.full_well_e / sensor.gains,
           "PTC_MEAN": np.array(means), "PTC_EXPTIME": np.tile(times, (CAMERA.n_amps, 1))},
          meta={"INSTRUME": "LATISS"}).write(path)
    return path


@pytest.fixture(scope="module")
def calib(ptc_path) -> Calib:
    # Crosstalk is corrected: in a 1200 s dark a 50 e⁻/s hot pixel has 60 ke⁻, whose ghost
    # (up to 1.5e-3 of it) would be a hot pixel of its own in the neighbouring amp.
    base = IsrCalibrations(gains=Ptc.read(ptc_path, CAMERA).gains(CAMERA),
                           crosstalk=Crosstalk.read().matrix())
    bias_raws, biases = [], []
    for seq in _seqs(NIGHT, "bias"):
        raw = _frame(NIGHT, "bias", seq)
        if len(bias_raws) < 2:
            bias_raws.append(replace(raw, segments=raw.segments.copy()))
        biases.append(run_isr(raw, IsrConfig(steps=("overscan", "gain")), base).exposure.image)
    with_bias = replace(base, bias=_product(np.mean(biases, axis=0), "bias"))
    del biases

    darks = []
    for seq in _seqs(NIGHT, "dark"):
        raw = _frame(NIGHT, "dark", seq)
        image = run_isr(raw, IsrConfig(steps=("overscan", "gain", "crosstalk", "bias")),
                        with_bias)
        darks.append(image.exposure.image / np.float32(raw.info.dark_time))
    stack = np.array(darks)
    del darks
    # Mean of the darks without the cosmic rays: values more than 5 σ above the pixel's median
    # are left out (a plain median would be biased up by the ~5 % of pixels hit in one frame,
    # by as much as the dark current). Seven darks, because 0.7 % of the pixels are hit in
    # each: with five, ~80 pixels are hit in three frames, beyond what a median rejects.
    excess = stack - np.median(stack, axis=0)
    keep = excess < 5.0 * float(robust_sigma(excess[:, ::16, ::16].ravel()))
    dark = _product((stack * keep).sum(axis=0) / keep.sum(axis=0), "dark")
    del stack, excess, keep

    with_dark = replace(with_bias, dark=dark)
    flat_raws, flats = [], []
    for seq in _seqs(NIGHT_CTI, "flat"):
        raw = _frame(NIGHT_CTI, "flat", seq)
        flat_raws.append(replace(raw, segments=raw.segments.copy()))
        steps = ("overscan", "gain", "crosstalk", "bias", "dark")
        flats.append(run_isr(raw, IsrConfig(steps=steps), with_dark).exposure.image)
    flat = np.mean(flats, axis=0)
    flat = _product(flat / np.median(flat), "flat")
    return Calib(sensor_model(DETECTOR, CAMERA), bias_raws, flat_raws, dark, flat)


@pytest.fixture(scope="module")
def masters_on_disk(calib, tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("masters")
    return calib.dark.write(out / "dark.fits"), calib.flat.write(out / "flat.fits")


@pytest.fixture(scope="module")
def defects_product(masters_on_disk, tmp_path_factory) -> Path:
    dark_path, flat_path = masters_on_disk
    return build_defects_file(dark_path, flat_path, tmp_path_factory.mktemp("defects") /
                              "defects.ecsv")


@pytest.fixture(scope="module")
def defect_maps(calib) -> DefectMaps:
    return detect_defects(calib.dark, calib.flat)


@pytest.fixture(scope="module")
def eo_table(calib, ptc_path, defect_maps) -> Table:
    return eo_figures(calib.bias_raws, calib.flat_raws, calib.dark, calib.flat,
                      Ptc.read(ptc_path, CAMERA), defects=defect_maps)


@pytest.fixture(scope="module")
def crosstalk() -> CrosstalkMeasurement:
    raws = [_frame(night, "science", _seqs(night, "science")[0]) for night in CROSSTALK_NIGHTS]
    return measure_crosstalk(raws)


# ----------------------------------------------------------------------------- defects


def test_defects_found_against_truth(defects_product, calib):
    """≥ 98 % of the detectable simulated defects are in the product, ≤ 2 % of its pixels
    are not simulated defects.

    Detectable truth: the simulator's hot-pixel map (dark current ≥ 0.05 e⁻/s above the
    ordinary 0.002 e⁻/s, hot columns included: twice the ~0.024 e⁻/s 4.8σ threshold of these
    masters) and the pixels with a response < 0.8 (all simulated cold pixels, 0.2–0.7).
    False: found pixels that are neither hot in the truth map nor of response < 1.
    """
    sensor = calib.sensor
    excess = sensor.dark_current_e_per_s - DETECTOR.dark_current_e_per_s
    detectable = sensor.hot_pixels | (sensor.response < 0.8)
    simulated = sensor.hot_pixels | (sensor.response < 1.0)
    table = Defects.read(defects_product).table
    found = defect_mask(table, CAMERA.detector_shape)
    completeness = (found & detectable).sum() / detectable.sum()
    false_fraction = (found & ~simulated).sum() / found.sum()
    print(f"defects: {detectable.sum()} detectable, {found.sum()} found in {len(table)} boxes; "
          f"completeness {completeness:.4f}, false {false_fraction:.4f}")
    assert detectable.sum() > 1500  # ~815 hot, ~815 cold pixels and hot columns
    assert completeness >= 0.98
    assert false_fraction <= 0.02
    # Each simulated hot column (one amp's half of a detector column) is one box.
    n_rows = CAMERA.data_bbox.ny
    columns = np.nonzero((excess >= 0.05).sum(axis=0) >= n_rows)[0]
    assert columns.size == DETECTOR.n_hot_columns
    for col in columns:
        assert np.any((table["x0"] == col) & (table["width"] == 1) & (table["height"] == n_rows))


def test_defects_product_metadata_and_verification(defects_product, calib):
    table = Defects.read(defects_product).table
    meta = table.meta
    assert meta["OBSTYPE"] == "defects" and meta["INSTRUME"] == "LATISS"
    assert meta["CALIBDATE"].startswith("2024-06-24")
    # The counts agree with the truth: every cold pixel of the sensor is found, and the hot
    # pixels outside columns are those above threshold (a few are below 0.05 e⁻/s).
    n_cold_truth = int((calib.sensor.response < 1.0).sum())
    assert abs(meta["N_COLD"] - n_cold_truth) <= 0.02 * n_cold_truth
    assert meta["N_HOT_COLUMNS"] >= 2
    assert sum(c["n_hot"] for c in meta["AMP_COUNTS"].values()) == meta["N_HOT"]
    report = json.loads(defects_product.with_name("defects.verify.json").read_text())
    assert report["pass"] is True
    assert set(report["amps"]) == set(CAMERA.amp_names)
    fraction = report["detector"]["tests"]["defect_fraction"]["value"]
    assert fraction == pytest.approx(meta["N_DEFECTIVE"] / np.prod(CAMERA.detector_shape))


def test_value_thresholds_and_edges(calib):
    """Value mode (LCA-128: > 5 e⁻/s is a bright pixel) on the dark alone, with an 8-pixel
    edge: hot pixels well above 5 e⁻/s are found, those well below are not."""
    config = FindDefectsConfig(threshold_type="value", hot_threshold_e_per_s=5.0,
                               edge_pixels=8, n_sigma_column=None)
    maps = detect_defects(calib.dark, None, config)
    dark_current = calib.sensor.dark_current_e_per_s
    inner = ~maps.edge
    above = (dark_current > 5.5) & inner
    below = (dark_current < 4.5) & (dark_current > 0.5) & inner
    assert above.sum() > 300 and below.sum() > 200
    assert maps.hot[above].mean() == 1.0
    assert maps.hot[below].mean() == 0.0
    assert maps.edge.sum() == 2 * 8 * (4000 + 4072) - 4 * 64
    table = find_defects(calib.dark, None, config, maps=maps)
    assert np.array_equal(defect_mask(table, CAMERA.detector_shape), maps.mask)


def test_faint_columns():
    """The column test finds a hot column 3σ above normal (few of its pixels pass 4.8σ)
    and a column with 3 % less response, but not a 0.5 % response dip, which the flat
    corrects (it is far less deep than a cold pixel)."""
    rng = np.random.default_rng(3)
    rows, cols = CAMERA.amp_slices(CAMERA.amplifiers[2])
    sigma = 0.01
    dark = 0.002 + sigma * rng.standard_normal(CAMERA.detector_shape, dtype=np.float32)
    dark[rows, cols.start + 100] += 3 * sigma
    flat = 1.0 + 0.007 * rng.standard_normal(CAMERA.detector_shape, dtype=np.float32)
    flat[rows, cols.start + 200] *= 0.97
    flat[rows, cols.start + 300] *= 0.995
    # Premise: too few of the hot column's pixels pass 4.8σ for the pixel-count rule.
    assert np.mean(dark[rows, cols.start + 100] > 0.002 + 4.8 * sigma) < 0.1
    maps = detect_defects(_product(dark, "dark"), _product(flat, "flat"))
    assert np.flatnonzero(maps.hot_columns.any(axis=0)).tolist() == [cols.start + 100]
    assert np.flatnonzero(maps.cold_columns.any(axis=0)).tolist() == [cols.start + 200]
    assert maps.hot_columns[rows, cols.start + 100].all()
    assert maps.cold_columns[rows, cols.start + 200].all()


def test_mask_to_boxes_is_exact():
    rng = np.random.default_rng(5)
    mask = rng.random((300, 200)) < 0.05
    mask[40:90, 10:15] = True
    assert np.array_equal(defect_mask(mask_to_boxes(mask), mask.shape), mask)
    # A column segment, a block and two pixels are four boxes.
    mask = np.zeros((300, 200), dtype=bool)
    mask[20:280, 77] = True
    mask[100:110, 30:60] = True
    mask[5, 5] = mask[290, 190] = True
    table = mask_to_boxes(mask)
    assert len(table) == 4
    assert np.array_equal(defect_mask(table, mask.shape), mask)
    assert {tuple(r) for r in table.iterrows()} == {(77, 20, 1, 260), (30, 100, 30, 10),
                                                   (5, 5, 1, 1), (190, 290, 1, 1)}


def test_build_defects_rejects_wrong_product(masters_on_disk, tmp_path):
    _, flat_path = masters_on_disk
    with pytest.raises(BadInputError, match="not a dark"):
        build_defects_file(flat_path, None, tmp_path / "defects.ecsv")
    assert not (tmp_path / "defects.ecsv").exists()


# -------------------------------------------------------------------------- EO figures


def test_eo_table_against_truth(eo_table, calib, defect_maps):
    """Read noise within 3 %, dark current within 5 %, CTI within 20 % of the truth."""
    table = eo_table
    sensor = calib.sensor
    assert list(table["amp"]) == list(CAMERA.amp_names)
    assert table.colnames == ["amp", *(name for name, _ in EO_COLUMNS)]
    for name, _ in EO_COLUMNS:
        assert np.all(np.isfinite(np.asarray(table[name], dtype=float))), name
    print(table)
    np.testing.assert_allclose(table["read_noise"], sensor.read_noise_e, rtol=0.03)
    truth_dark = np.array([np.median(sensor.dark_current_e_per_s[CAMERA.amp_slices(a)])
                           for a in CAMERA.amplifiers])
    np.testing.assert_allclose(table["dark_current"], truth_dark, rtol=0.05)
    np.testing.assert_allclose(table["cti_serial"], CTI, rtol=0.2)
    np.testing.assert_allclose(table["cti_parallel"], CTI, rtol=0.2)
    np.testing.assert_allclose(table["gain"], sensor.gains, rtol=1e-9)
    np.testing.assert_allclose(table["full_well"], DETECTOR.full_well_e, rtol=1e-9)
    # Bright pixels per amp: the simulated hot pixels of the amp outside hot columns, within
    # a few (false detections and hot pixels just below the threshold).
    hot_alone = calib.sensor.hot_pixels & ~defect_maps.hot_columns
    for i, amp in enumerate(CAMERA.amplifiers):
        truth_hot = int(hot_alone[CAMERA.amp_slices(amp)].sum())
        assert abs(int(table["bright_pixels"][i]) - truth_hot) <= 0.1 * truth_hot + 3, amp.name
    assert int(np.sum(table["bright_columns"])) >= 2
    assert int(np.sum(table["dark_columns"])) == 0


def test_eo_linearity_from_ptc_ramp(eo_table):
    """Linear ramps give no residual; a 2 % deficit at 100 kADU leaves a residual of a few
    tenths of a percent after the best line, never more than the deficit itself."""
    residual = np.asarray(eo_table["linearity_residual"])
    assert np.all(residual[0::2] < 1e-3)
    assert np.all((residual[1::2] > 0.1) & (residual[1::2] < 100 * RAMP_NONLINEARITY))


def test_eo_without_ptc_or_masters(calib):
    table = eo_figures(calib.bias_raws[:1], [])
    np.testing.assert_allclose(table["gain"], CAMERA.nominal_gains)
    assert np.all(np.isnan(table["full_well"])) and np.all(np.isnan(table["cti_serial"]))
    assert np.all(table["bright_pixels"].mask)
    # Nominal gains differ from the true ones by ~2 %: read noise stays within 8 %.
    np.testing.assert_allclose(table["read_noise"], calib.sensor.read_noise_e, rtol=0.08)


def test_write_eo(eo_table, tmp_path):
    # The table is written by the product's module, its figure by the plots (a leaf).
    ecsv = write_eo(eo_table, tmp_path)
    png = plot_eo_summary(eo_table, ecsv.with_suffix(".png"))
    back = Table.read(ecsv, format="ascii.ecsv")
    np.testing.assert_allclose(back["cti_serial"], eo_table["cti_serial"])
    assert back["read_noise"].unit == "electron"
    assert back.meta["REFERENCE_LIMITS"]["read_noise"]["value"] == 8.0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- crosstalk


def test_crosstalk_recovered(crosstalk):
    """The strongest couplings of the real LATISS matrix are recovered from three fields:
    ≥ 3e-4 within 10 %, ≥ 1.5e-4 within 15 % (pairs with ≥ 1000 source pixels); uncoupled
    pairs stay below 1e-4."""
    comparison = compare_crosstalk(crosstalk)
    comparison["measured"].format = comparison["reference"].format = ".3e"
    print(comparison[:25])
    well_sampled = comparison[comparison["count"] >= 1000]
    strongest = well_sampled[well_sampled["reference"] >= 3e-4]
    strong = well_sampled[well_sampled["reference"] >= 1.5e-4]
    assert len(strongest) >= 5 and len(strong) >= 15
    assert np.all(np.abs(strongest["ratio"] - 1) < 0.10)
    assert np.all(np.abs(strong["ratio"] - 1) < 0.15)
    uncoupled = comparison[comparison["reference"] == 0]
    assert len(uncoupled) > 50
    assert np.all(np.abs(uncoupled["measured"]) < 1e-4)


def test_crosstalk_product_roundtrip(crosstalk, tmp_path):
    path = crosstalk.product().write(tmp_path / "crosstalk.ecsv")
    matrix = Crosstalk.read(path).matrix()
    assert matrix.units == "adu"
    np.testing.assert_allclose(matrix.coeffs, crosstalk.coeffs, rtol=1e-12)
    table = Table.read(path, format="ascii.ecsv")
    assert table.meta["CROSSTALK_RATIOS_UNITS"] == "adu"
    counts = np.asarray(table["CT_COUNTS"][0]).reshape(16, 16)
    # Stored in Rubin's [source, target] order.
    np.testing.assert_array_equal(counts.T, crosstalk.counts)
    # Dated by its first frame in UTC (not the clock at building): registered later, it is
    # still valid for the frames it was measured on.
    first = min((p.start for night in CROSSTALK_NIGHTS for p in night_plan(night)
                 if p.kind == "science" and p.seq == _seqs(night, "science")[0]),
                key=lambda t: t.mjd)
    assert table.meta["CALIBDATE"] == first.utc.isot
