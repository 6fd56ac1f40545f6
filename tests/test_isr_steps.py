"""ISR building blocks against synthetic data whose truth is known exactly."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table
from scipy import ndimage

from atmospec.calib.products import Crosstalk, Linearizer
from atmospec.camera.description import load_camera
from atmospec.isr.crosstalk import crosstalk_signal
from atmospec.isr.driver import STEPS, resolve_steps
from atmospec.isr.interpolate import InterpolationConfig, fill_masked
from atmospec.isr.masking import grow_mask, mask_coordinates
from atmospec.isr.overscan import OverscanConfig, subtract_overscan

CAMERA = load_camera("latiss")


def _segments(rng, drift, n_amps=16, noise=7.0):
    """Raw-like segments: per-amp bias + row drift everywhere, a signal in the data."""
    ny, nx = CAMERA.raw_bbox.shape
    seg = np.empty((n_amps, ny, nx), np.float32)
    levels = rng.uniform(15000, 25000, n_amps)
    seg[:] = levels[:, None, None] + drift[None, :, None]
    seg += rng.normal(0, noise, seg.shape).astype(np.float32)
    signal = np.zeros_like(seg)
    signal[(slice(None), *CAMERA.data_bbox.slices)] = 1000.0
    return seg + signal, signal, levels


@pytest.mark.parametrize("method", ["median_per_row", "poly", "spline"])
def test_overscan_removes_bias_and_drift(method):
    rng = np.random.default_rng(5)
    rows = np.arange(CAMERA.raw_bbox.ny)
    drift = 6.0 * np.sin(rows / 300.0) + 0.002 * rows  # smooth: every model can follow it
    seg, signal, levels = _segments(rng, drift)
    # A cosmic ray in the overscan must not bias its row.
    seg[3, 500, 530:540] += 5000.0
    levels_out = subtract_overscan(seg, CAMERA, OverscanConfig(method=method))
    data = (slice(None), *CAMERA.data_bbox.slices)
    resid = seg[data] - signal[data]
    # Per amp: the mean residual is the noise of the overscan estimate, well below 0.2 ADU.
    assert np.abs(resid.mean(axis=(1, 2))).max() < 0.2
    np.testing.assert_allclose(np.median(levels_out["serial"], axis=1),
                               levels + np.median(drift), atol=1.0)
    assert abs(levels_out["serial"][3, 500] - (levels[3] + drift[500])) < 3.0
    assert levels_out["parallel"].shape == (16, 509)


def test_parallel_overscan_removes_column_offsets():
    rng = np.random.default_rng(6)
    seg, signal, _ = _segments(rng, np.zeros(CAMERA.raw_bbox.ny))
    cols = rng.normal(0, 3.0, (16, CAMERA.raw_bbox.nx)).astype(np.float32)
    seg += cols[:, None, :]  # column structure in data and parallel overscan rows
    subtract_overscan(seg, CAMERA, OverscanConfig())
    data = (slice(None), *CAMERA.data_bbox.slices)
    col_resid = (seg[data] - signal[data]).mean(axis=1)
    # Only the noise of a 42-row median remains: 1.25*7/sqrt(42) ≈ 1.35 ADU per column.
    assert col_resid.std() < 1.6
    assert col_resid.std() < 0.6 * cols.std()


def test_interpolation_linear_along_rows():
    y, x = np.mgrid[0:50, 0:60]
    image = (3.0 * x + 2.0 * y).astype(np.float32)
    truth = image.copy()
    bad = np.zeros_like(image, bool)
    bad[:, 20:24] = True  # a bad column group
    bad[10:12, 40:45] = True
    image[bad] = -999.0
    filled = fill_masked(image, bad, InterpolationConfig(max_width=10))
    np.testing.assert_array_equal(filled, bad)
    np.testing.assert_allclose(image, truth, atol=1e-3)


def test_interpolation_falls_back_for_wide_defects():
    image = np.full((40, 200), 7.0, np.float32)
    image[:, :100] = 5.0
    bad = np.zeros_like(image, bool)
    bad[5:30, 20:150] = True  # wider than max_width: not interpolated
    fill_masked(image, bad, InterpolationConfig(max_width=50))
    good_median = np.median(image[~bad])
    assert np.all(image[bad] == good_median)


def test_grow_mask():
    m = np.zeros((30, 30), bool)
    m[10, 10] = True
    g = grow_mask(m, 2)
    assert g.sum() == 25 and g[8:13, 8:13].all()
    # Near an edge the square is cut, as a dilation of the image would cut it.
    m[0, 29] = True
    assert np.array_equal(grow_mask(m, 1), ndimage.binary_dilation(m, np.ones((3, 3), bool)))


def test_mask_coordinates_as_nonzero():
    rng = np.random.default_rng(3)
    mask = rng.random((40, 57)) < 0.05
    for m in (mask, mask[5:30, 3:50], np.zeros((4, 6), bool)):  # a view, none set
        ys, xs = mask_coordinates(m)
        ref = np.nonzero(m)
        assert np.array_equal(ys, ref[0]) and np.array_equal(xs, ref[1])


def test_real_crosstalk_matrix():
    xt = Crosstalk.read().matrix()
    assert xt.coeffs.shape == (16, 16)
    assert np.all(np.diag(xt.coeffs) == 0)
    assert xt.units == "adu"
    # Strongest couplings are between neighbours in readout order, ~1e-4 to 2e-3.
    assert 1e-4 < xt.coeffs.max() < 3e-3
    src = np.zeros((16, 4, 4), np.float32)
    src[0] = 1e5
    ghost = crosstalk_signal(src, xt.coeffs)
    np.testing.assert_allclose(ghost[:, 0, 0], 1e5 * xt.coeffs[:, 0], rtol=1e-5)
    gains = np.linspace(1.0, 1.2, 16)
    np.testing.assert_allclose(xt.in_electrons(gains)[1, 0], xt.coeffs[1, 0] * gains[1] / gains[0])


def test_linearizer_polynomial_and_spline(tmp_path):
    names = CAMERA.amp_names
    t = Table({"AMP": list(names), "TYPE": ["POLYNOMIAL"] * 15 + ["SPLINE"],
               "COEFFS": [np.array([1e-6, 0.0, 0.0, 0.0])] * 15 + [np.array([0, 1e5, 0, 500.])]})
    path = tmp_path / "lin.fits"
    t.write(path)
    lin = Linearizer.read(path, CAMERA).correction(CAMERA)
    x = np.array([0.0, 1e4, 5e4], np.float32)
    np.testing.assert_allclose(lin.correct(x, 0), x + 1e-6 * x**2, rtol=1e-6)
    np.testing.assert_allclose(lin.correct(x, 15), x + 500.0 * x / 1e5, rtol=1e-6)


def test_resolve_steps():
    assert resolve_steps(None, set()) == tuple(
        s for s in STEPS if s not in ("bias", "dark", "flat", "linearity", "crosstalk", "defects"))
    assert resolve_steps(("assemble",), set()) == ("assemble",)
    assert resolve_steps(("gain", "overscan"), set()) == ("overscan", "gain", "assemble")
    with pytest.raises(ValueError, match="needs a dark"):
        resolve_steps(("gain", "dark"), {"bias"})
    with pytest.raises(ValueError, match="add step 'gain'"):
        resolve_steps(("overscan", "bias"), {"bias"})


def test_defect_mask_cached_per_table_and_geometry(tmp_path):
    """The binned defect mask is computed once per product and binning, and a new defects
    product (a new file: a new set of products for the night's workers) or a new table on
    the same products never reuses the old mask."""
    from atmospec.calib.isr_inputs import CalibrationFiles
    from atmospec.calib.products import Defects
    from atmospec.isr.defects import frame_defect_mask
    from atmospec.night.tasks import _calibrations

    camera = load_camera("latiss")
    binned = camera.binned(2, 2)
    boxes = {"a": Table({"x0": [10], "y0": [20], "width": [3], "height": [2]},
                        meta={"OBSTYPE": "defects"}),
             "b": Table({"x0": [1000], "y0": [0], "width": [1], "height": [4000]},
                        meta={"OBSTYPE": "defects"})}
    files = {k: CalibrationFiles(defects=str(Defects(t).write(tmp_path / f"{k}.ecsv")))
             for k, t in boxes.items()}
    calibs = _calibrations(files["a"], binned)
    first = calibs.defect_mask(binned)
    assert calibs.defect_mask(binned) is first and not first.flags.writeable
    np.testing.assert_array_equal(first, frame_defect_mask(boxes["a"], binned))
    assert first.sum() == 2  # x 10–12, y 20–21 unbinned: binned columns 5–6 of row 10
    unbinned = calibs.defect_mask(camera)  # another geometry: its own mask
    assert unbinned.shape == camera.detector_shape and unbinned.sum() == 3 * 2
    # A new product: its own mask, not the cached one.
    other = _calibrations(files["b"], binned).defect_mask(binned)
    np.testing.assert_array_equal(other, frame_defect_mask(boxes["b"], binned))
    assert other.sum() == 2000 and not other[10, 5]
    # A table replaced on the same products.
    calibs.defects = boxes["b"]
    np.testing.assert_array_equal(calibs.defect_mask(binned), other)


def test_isrstats_text_layout() -> None:
    """``<OBSID>_isrstats.json``: the document read back exactly (NaN included), one line
    per top-level key and per amplifier, whatever the length of its lists."""
    import json
    import math

    from atmospec.isr.statistics import stats_json

    doc = {"obs_id": "AT_O_20250301_000010", "binning": [1, 1], "timings_s": {"bias": 0.01},
           "amps": {f"C{i:02d}": {"gain": 1.1 + i, "median": math.nan,
                                  "overscan_rows_adu": [20000.125 + k for k in range(2048)]}
                    for i in range(3)}}
    text = stats_json(doc)
    back = json.loads(text)
    for name, entry in doc["amps"].items():
        assert math.isnan(back["amps"][name].pop("median"))
        entry.pop("median")
    assert back == doc
    lines = text.splitlines()
    assert len(lines) == 1 + 3 + 1 + 3 + 1 + 1  # braces, keys, "amps": {, amps, }, }
    assert sum(line.startswith('  "C0') for line in lines) == 3


@pytest.mark.parametrize("binning", [(1, 1), (2, 2), (4, 1)])
def test_edge_regions_cover_the_border_only(binning) -> None:
    """The EDGE border as slices (set without a full-frame pass) flags exactly the pixels
    within ⌈10 / binning⌉ of an edge, corners once; an image narrower than the border is
    flagged whole."""
    from atmospec.isr.edge import edge_mask, edge_regions

    ny, nx = 37, 53
    wx, wy = -(-10 // binning[0]), -(-10 // binning[1])
    yy, xx = np.mgrid[:ny, :nx]
    expected = (xx < wx) | (xx >= nx - wx) | (yy < wy) | (yy >= ny - wy)
    mask = np.zeros((ny, nx), dtype=np.int32)
    for region in edge_regions((ny, nx), 10, binning):
        mask[region] |= 4
    np.testing.assert_array_equal(mask == 4, expected)
    np.testing.assert_array_equal(edge_mask((ny, nx), 10, binning), expected)
    assert edge_mask((6, 30), 10).all()
    assert edge_regions((ny, nx), 0) == []


def test_amp_stats_plane_counts() -> None:
    """Per-amp mask-plane counts of the ISR statistics (counted among the flagged pixels
    only) equal a direct count of each plane's bit, planes overlapping."""
    from atmospec.exposure import Exposure
    from atmospec.isr.driver import _amp_stats
    from atmospec.isr.gain import AmpGains

    camera = load_camera("latiss").binned(8, 8)
    rng = np.random.default_rng(3)
    exp = Exposure.from_image(rng.normal(100.0, 5.0, camera.detector_shape).astype(np.float32))
    for plane, fraction in (("SAT", 0.01), ("BAD", 0.05), ("CR", 0.02), ("SUSPECT", 0.03),
                            ("EDGE", 0.1)):
        exp.set_mask(plane, rng.random(camera.detector_shape) < fraction)
    n = camera.n_amps
    gains = AmpGains(gain=np.ones(n), read_noise=np.full(n, 5.0), source="test")
    stats = _amp_stats(exp, camera, gains, {}, np.full(n, np.nan))
    for amp in camera.amplifiers:
        m = exp.mask[camera.amp_slices(amp)]
        for plane in ("SAT", "BAD", "CR", "SUSPECT"):
            assert stats[amp.name][f"n_{plane.lower()}"] == np.count_nonzero(
                m & exp.bitmask(plane))
