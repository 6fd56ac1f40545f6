"""Tests for atmospec.plots.eo_mosaic (issue 18): the focal-plane mosaic and the histogram of
one EO figure, drawn from the long table of ``atmospec eo``, and ``REPO/eo/plots`` written
from the run table. The tables are built in memory by the real verdict function from
synthetic per-amp values: no raw is simulated here."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from astropy.table import Table, vstack
from matplotlib import colormaps
from matplotlib.colors import LogNorm

from atmospec import layout
from atmospec.calib.eo_specs import spec_by_id, verdict_table
from atmospec.camera.description import detector_table, load_camera
from atmospec.night.eo import write_eo_plots
from atmospec.plots import eo_mosaic as M

AMPS = load_camera("lsstcam", "R22_S11").amp_names
#: obs_lsst's raft geometry (policy/camera.skl.yaml): slot centres in a raft, mm.
SLOT_OFFSETS_MM = {"S00": (-41.5, -40.5), "S01": (0.0, -40.5), "S02": (41.5, -40.5),
                   "S10": (-41.5, 0.0), "S11": (0.0, 0.0), "S12": (41.5, 0.0),
                   "S20": (-41.5, 40.5), "S21": (0.0, 40.5), "S22": (41.5, 40.5)}


def _detector(detector: str, vendor: str, read_noise: dict[str, float], *,
              seed: int = 0) -> Table:
    """One detector's long table: read noise (CCD-007 < 8 e⁻), serial CTI (CCD-010) and
    the gain (no specification), 6 e⁻, 1e-7 and 1.5 e⁻/ADU but where ``read_noise`` says."""
    rng = np.random.default_rng(seed)
    figures = Table({"amp": list(AMPS)})
    figures["read_noise"] = [read_noise.get(a, 6.0 + 0.1 * i) for i, a in enumerate(AMPS)]
    figures["read_noise"].unit = "electron"
    figures["cti_serial_high"] = 10 ** rng.uniform(-7.5, -6.5, len(AMPS))
    figures["gain"] = rng.normal(1.5, 0.05, len(AMPS))
    figures["gain"].unit = "electron / adu"
    return verdict_table(figures, detector, vendor)


def _rows(table: Table, figure: str) -> Table:
    return table[table["figure"] == figure]


def _amp_centres(origin: tuple[float, float], camera) -> dict[str, tuple[float, float]]:
    """Where the camera description puts each amp of a detector drawn at ``origin``."""
    return {a.name: (origin[0] + (a.ix + 0.5) * M.AMP_WIDTH,
                     origin[1] + (a.iy + 0.5) * M.AMP_HEIGHT) for a in camera.amplifiers}


def _by_gid(ax, gid: str):
    found = [c for c in ax.collections if c.get_gid() == gid]
    assert len(found) == 1, gid
    return found[0]


@pytest.fixture(scope="module")
def e2v_detector() -> Table:
    return _detector("R22_S11", "E2V", {"C03": 8.6, "C14": 9.2})


@pytest.fixture(scope="module")
def raft() -> Table:
    # R22 of the 2019 BOT: an engineering raft holding ITL CCDs in some of the bays the
    # focal plane fills with e2v ones (atmospec.camera.description.with_vendor).
    slots = sorted(SLOT_OFFSETS_MM)
    noisy = {"S00": {"C10": 8.4}, "S12": {"C07": 10.0, "C00": 8.1}, "S21": {"C15": 8.3}}
    return vstack([_detector(f"R22_{s}", "ITL" if i % 3 == 1 else "E2V", noisy.get(s, {}),
                             seed=i) for i, s in enumerate(slots)])


def test_single_detector_mosaic(e2v_detector, tmp_path):
    fig = M.eo_mosaic_figure(e2v_detector, "read_noise")
    ax = fig.axes[0]
    amps = _by_gid(ax, "amps")
    amps.update_scalarmappable()
    camera = load_camera("lsstcam", "R22_S11")
    origin = M.detector_origins(["R22_S11"])["R22_S11"]
    expected = _amp_centres(origin, camera)
    centres = [tuple(np.asarray(p.vertices[:4]).mean(axis=0)) for p in amps.get_paths()]
    assert len(centres) == 16
    where = {}
    for i, c in enumerate(centres):
        match = [a for a, e in expected.items() if np.allclose(c, e)]
        assert len(match) == 1, c
        where[match[0]] = i
    # The camera's order: C10 … C17 along the top from the left, C07 … C00 along the bottom.
    top = sorted((a for a in AMPS if expected[a][1] > origin[1] + 0.5),
                 key=lambda a: expected[a][0])
    assert top == [f"C1{i}" for i in range(8)]
    bottom = sorted((a for a in AMPS if expected[a][1] < origin[1] + 0.5),
                    key=lambda a: expected[a][0])
    assert bottom == [f"C0{i}" for i in range(8)]

    # Colour = the table's value through viridis and the colour bar's range.
    rows = _rows(e2v_detector, "read_noise")
    values = dict(zip(rows["amp"], rows["value"], strict=True))
    norm = amps.norm
    assert norm.vmin <= min(values.values()) and norm.vmax >= max(values.values())
    assert norm.vmin <= 8.0 <= norm.vmax  # the limit is on the bar
    faces = amps.get_facecolors()
    for amp, i in where.items():
        np.testing.assert_allclose(faces[i], colormaps["viridis"](norm(values[amp])),
                                   atol=1e-6)

    # Outlined: exactly the amps whose status is fail.
    failing = _by_gid(ax, "failing")
    outlined = set()
    for path in failing.get_paths():
        c = tuple(np.asarray(path.vertices[:4]).mean(axis=0))
        outlined |= {a for a, e in expected.items() if np.allclose(c, e)}
    assert outlined == {str(a) for a in rows["amp"][rows["status"] == "fail"]} == {"C03",
                                                                                    "C14"}
    assert "fails its specification (2 amps)" in [t.get_text()
                                                   for t in ax.get_legend().get_texts()]

    # The limit of CCD-007 is a line across the colour bar at 8 e⁻.
    cax = fig.axes[1]
    spec_lines = [ln for ln in cax.lines if ln.get_gid() == "spec"]
    assert len(spec_lines) == 1
    assert np.allclose(spec_lines[0].get_ydata(), spec_by_id("CCD-007").upper)

    png = M.plot_eo_mosaic(e2v_detector, "read_noise", tmp_path / "rn.png")
    image = mpimg.imread(png)
    assert image.shape[0] > 300 and image.shape[1] > 600
    assert len(np.unique(image.reshape(-1, image.shape[-1])[:, :3], axis=0)) > 50


def test_log_scale_for_cti(e2v_detector):
    fig = M.eo_mosaic_figure(e2v_detector, "cti_serial_high")
    amps = _by_gid(fig.axes[0], "amps")
    assert isinstance(amps.norm, LogNorm)
    assert amps.norm.vmax >= spec_by_id("CCD-010").upper
    assert not _by_gid(fig.axes[0], "failing").get_paths()
    hist = M.eo_histogram_figure(e2v_detector, "cti_serial_high")
    assert hist.axes[0].get_xscale() == "log"
    # No specification on the gain: no line, no failure.
    fig = M.eo_mosaic_figure(e2v_detector, "gain")
    assert not [ln for ln in fig.axes[1].lines if ln.get_gid() == "spec"]
    assert not isinstance(_by_gid(fig.axes[0], "amps").norm, LogNorm)


def test_histogram(e2v_detector, raft, tmp_path):
    fig = M.eo_histogram_figure(raft, "read_noise")
    ax = fig.axes[0]
    lines = [ln for ln in ax.lines if ln.get_gid() == "spec"]
    assert len(lines) == 1 and np.allclose(lines[0].get_xdata(), 8.0)
    n_fail = len({(d, a) for d, a, s in _rows(raft, "read_noise")[["detector", "amp",
                                                                    "status"]]
                  if s == "fail"})
    assert n_fail == 4
    assert ax.get_title().startswith(f"read_noise: {n_fail} of {9 * 16} amps fail (CCD-007)")
    # Every amp is counted once: the bars hold 144 amps, 4 of them failing (red).
    heights = [sum(p.get_height() for p in c) for c in ax.containers]
    assert heights == [9 * 16 - n_fail, n_fail]
    png = M.plot_eo_histogram(e2v_detector, "read_noise", tmp_path / "h.png")
    assert png.stat().st_size > 10_000


def test_raft_mosaic_places_detectors(raft, tmp_path):
    origins = M.detector_origins(np.asarray(raft["detector"], dtype=str))
    assert len(origins) == 9
    # Detector centres are obs_lsst's slot centres, up to a scale: S01 right of S00, S10
    # above it, evenly spaced.
    centres = {d.split("_")[1]: (x + 0.5, y + 0.5) for d, (x, y) in origins.items()}
    mm = np.array([SLOT_OFFSETS_MM[s] for s in sorted(centres)])
    drawn = np.array([centres[s] for s in sorted(centres)])
    for axis in (0, 1):
        scale = np.polyfit(mm[:, axis], drawn[:, axis], 1)
        np.testing.assert_allclose(np.polyval(scale, mm[:, axis]), drawn[:, axis], atol=1e-9)
        assert scale[0] > 0
    # Detectors do not overlap: neighbours are a pitch (more than a detector) apart.
    assert M.DETECTOR_PITCH > 1.0

    fig = M.eo_mosaic_figure(raft, "read_noise")
    amps = _by_gid(fig.axes[0], "amps")
    amps.update_scalarmappable()
    faces = amps.get_facecolors()
    rows = _rows(raft, "read_noise")
    cameras = {d: load_camera("lsstcam", d) for d in origins}
    expected = {}
    for d, origin in origins.items():
        for amp, c in _amp_centres(origin, cameras[d]).items():
            expected[(d, amp)] = c
    values = {(d, a): v for d, a, v in rows[["detector", "amp", "value"]]}
    assert len(amps.get_paths()) == len(values) == 144
    seen = set()
    for i, path in enumerate(amps.get_paths()):
        c = tuple(np.asarray(path.vertices[:4]).mean(axis=0))
        key = [k for k, e in expected.items() if np.allclose(c, e)]
        assert len(key) == 1
        seen.add(key[0])
        np.testing.assert_allclose(faces[i], colormaps["viridis"](amps.norm(values[key[0]])),
                                   atol=1e-6)
    assert seen == set(values)
    outlined = set()
    for path in _by_gid(fig.axes[0], "failing").get_paths():
        c = tuple(np.asarray(path.vertices[:4]).mean(axis=0))
        outlined |= {k for k, e in expected.items() if np.allclose(c, e)}
    assert outlined == {(d, a) for d, a, s in rows[["detector", "amp", "status"]]
                        if s == "fail"}
    labels = {t.get_text() for t in fig.axes[0].texts}
    assert labels == set(origins)


def test_focal_plane_places_rafts(raft):
    # R10_S11 joins R22: bays are R<row><column> counted from the lower left, as obs_lsst
    # numbers the detectors (R01_S00 is detector 0, R10 is the row above R01).
    table = vstack([raft, _detector("R10_S11", "ITL", {}), _detector("R01_S00", "ITL", {})])
    origins = M.detector_origins(np.asarray(table["detector"], dtype=str))
    ids = {d: detector_table("lsstcam")[d].detector_id for d in origins}
    assert ids["R01_S00"] == 0 and ids["R10_S11"] < ids["R22_S11"]
    r22, r10, r01 = origins["R22_S11"], origins["R10_S11"], origins["R01_S00"]
    assert r10[0] < r01[0] < r22[0]  # columns 0, 1, 2
    assert r01[1] < r10[1] < r22[1]  # rows 0, 1, 2
    assert math.isclose(r22[0] - r10[0] - (origins["R22_S11"][0] - origins["R22_S10"][0]),
                        2 * M.RAFT_PITCH - M.DETECTOR_PITCH)
    fig = M.eo_mosaic_figure(table, "read_noise")
    assert len(_by_gid(fig.axes[0], "amps").get_paths()) == 11 * 16
    # Several rafts: each raft is named above its detectors.
    assert {t.get_text() for t in fig.axes[0].texts} == {"R22", "R10", "R01"}


def test_mixed_vendor_limits(raft):
    # PTC-A00 has one range per vendor: both are drawn, each named with its vendor.
    figures = Table({"amp": list(AMPS), "ptc_a00": np.full(len(AMPS), -3.0e-6)})
    table = vstack([verdict_table(figures, "R22_S00", "E2V"),
                    verdict_table(figures, "R22_S01", "ITL")])
    limits = M.figure_limits(table, "ptc_a00")
    assert {(s.value, s.vendor) for s in limits} == {
        (spec_by_id("PTC-A00", "E2V").lower, "E2V"), (spec_by_id("PTC-A00", "E2V").upper, "E2V"),
        (spec_by_id("PTC-A00", "ITL").lower, "ITL"), (spec_by_id("PTC-A00", "ITL").upper, "ITL")}
    fig = M.eo_mosaic_figure(table, "ptc_a00")
    assert len([ln for ln in fig.axes[1].lines if ln.get_gid() == "spec"]) == 4
    # -3.0e-6 is inside the e2v range and the ITL one: nobody fails.
    assert not _by_gid(fig.axes[0], "failing").get_paths()


def test_eo_run_plots(raft, tmp_path):
    repo = tmp_path / "repo"
    # A figure measured nowhere (every amp "not measured") is not drawn.
    unmeasured = Table(rows=[("R22_S11", "E2V", a, "dark_current_95", np.nan, "electron / s",
                              "CCD-014", np.nan, 0.2, "not measured") for a in AMPS],
                       names=raft.colnames)
    table = vstack([raft, unmeasured])
    path = layout.eo_run_table(repo)
    path.parent.mkdir(parents=True)
    table.write(path, format="ascii.ecsv")
    folder = layout.eo_plot_dir(repo)
    folder.mkdir()
    (folder / "prnu_mosaic.png").write_bytes(b"old")  # from an earlier run: removed
    drawn = write_eo_plots(repo)
    assert list(drawn) == ["read_noise", "cti_serial_high", "gain"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{f}_{k}.png" for f in drawn for k in ("mosaic", "hist"))
    for mosaic, hist in drawn.values():
        assert mosaic.parent == hist.parent == folder == Path(repo) / "eo" / "plots"
        assert mpimg.imread(mosaic).std() > 0.01 and mpimg.imread(hist).std() > 0.01
