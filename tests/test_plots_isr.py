"""Tests for atmospec.plots.isr: overscan profiles, post-ISR image, amp statistics table."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.table import Table
from matplotlib.image import imread

from atmospec.camera.description import load_camera
from atmospec.exposure import Exposure
from atmospec.isr.preview import make_preview, read_preview, write_preview
from atmospec.plots import isr as pisr
from atmospec.plots.isr import (
    amp_stats_table,
    format_amp_stats,
    plot_overscan_profiles,
    plot_postisr,
    write_amp_stats,
)

CAMERA = load_camera("latiss")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _stats(unit: str = "electron") -> dict[str, Any]:
    """ISR statistics shaped like ``<OBSID>_isrstats.json`` (after a JSON round trip)."""
    rng = np.random.default_rng(12)
    rows = np.arange(2048)
    amps = {}
    for i, name in enumerate(CAMERA.amp_names):
        level = 20000.0 + 50.0 * i
        profile = level + 2.0 * np.sin(2 * np.pi * rows / 400.0) + rng.normal(0, 0.3, rows.size)
        amps[name] = {
            "gain": 1.0 + 0.01 * i,
            "read_noise_e": 8.0 + 0.1 * i,
            "median": 100.0 + i,
            "robust_std": 10.0 + 0.5 * i,
            "overscan_level_adu": float(np.median(profile)),
            "overscan_noise_adu": 7.0 + 0.1 * i,
            "overscan_noise_e": (7.0 + 0.1 * i) * (1.0 + 0.01 * i),
            "n_sat": i,
            "n_bad": 2 * i,
            "n_cr": 100 + i,
            "n_suspect": 3 * i,
            "overscan_rows_adu": profile.tolist(),
            "overscan_row_step": 1,
            "parallel_cols_adu": (level + rng.normal(0, 0.3, 509)).tolist(),
        }
    stats = {
        "obs_id": "AT_O_20261123_000012",
        "raw": "AT_O_20261123_000012.fits",
        "steps": ["overscan", "gain", "crosstalk"],
        "unit": unit,
        "timings_s": {"overscan": 0.05, "gain": 0.01, "crosstalk": 0.1},
        "amps": amps,
    }
    # Go through JSON as the real file does, so types are what a reader really gets.
    return json.loads(json.dumps(stats))


def _exposure(ny: int = 400, nx: int = 500) -> Exposure:
    rng = np.random.default_rng(3)
    header = fits.Header()
    header["OBSID"] = "AT_O_20261123_000012"
    header["FILTER"] = "SDSSr_65mm"
    exp = Exposure.from_image(rng.normal(100.0, 5.0, (ny, nx)), header)
    yy, xx = np.mgrid[:ny, :nx]
    exp.set_mask("EDGE", (xx < 5) | (xx >= nx - 5) | (yy < 5) | (yy >= ny - 5))
    exp.set_mask("BAD", (xx == 250) & (yy > 100))
    exp.set_mask("SAT", (xx - 100) ** 2 + (yy - 300) ** 2 < 8**2)
    exp.set_mask("CR", (xx == 400) & (yy == 50))
    exp.set_mask("INTRP", exp.get_mask("BAD", "CR"))
    return exp


def _check_png(path: Path) -> np.ndarray:
    """Assert ``path`` is a readable PNG with no temporary file left beside it."""
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_MAGIC
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    assert not list(path.parent.glob("*.tmp")), "temporary file left behind"
    return pixels


# --------------------------------------------------------------------------------- overscan


def test_overscan_profiles_png(tmp_path: Path) -> None:
    out = plot_overscan_profiles(_stats(), tmp_path / "overscan.png")
    assert out == tmp_path / "overscan.png"
    pixels = _check_png(out)
    # 16 x 6 inches at 100 dpi.
    assert pixels.shape[:2] == (600, 1600)


def test_overscan_profiles_without_profiles(tmp_path: Path) -> None:
    stats = _stats()
    del stats["amps"]["C03"]["overscan_rows_adu"]
    del stats["amps"]["C03"]["parallel_cols_adu"]
    stats["amps"]["C12"]["overscan_rows_adu"] = None
    stats["amps"]["C12"]["overscan_level_adu"] = math.nan
    del stats["amps"]["C00"]  # an amp missing altogether gets an explanatory panel
    stats["amps"]["C11"]["overscan_row_step"] = 4  # a decimated profile
    stats["amps"]["C11"]["overscan_rows_adu"] = stats["amps"]["C11"]["overscan_rows_adu"][::4]
    _check_png(plot_overscan_profiles(stats, tmp_path / "overscan.png"))


def test_overscan_profiles_no_overscan_at_all(tmp_path: Path) -> None:
    stats = _stats()
    for entry in stats["amps"].values():
        for key in ("overscan_rows_adu", "parallel_cols_adu", "overscan_row_step"):
            entry.pop(key)
        entry["overscan_level_adu"] = math.nan
        entry["overscan_noise_adu"] = math.nan
    _check_png(plot_overscan_profiles(stats, tmp_path / "sub" / "overscan.png"))


# --------------------------------------------------------------------------------- post-ISR


def test_postisr_png(tmp_path: Path) -> None:
    exp = _exposure()
    planes_before = dict(exp.mask_planes)
    mask_before = exp.mask.copy()
    planes = ("BAD", "SAT", "CR", "INTRP", "EDGE", "SUSPECT", "NOT_A_PLANE")
    out = plot_postisr(exp, tmp_path / "postisr.png", planes=planes)
    pixels = _check_png(out)
    assert max(pixels.shape[:2]) < 1400
    # Plotting reads the exposure only: no plane added, no bit changed.
    assert exp.mask_planes == planes_before
    np.testing.assert_array_equal(exp.mask, mask_before)


def test_postisr_full_size_is_bounded(tmp_path: Path) -> None:
    ny, nx = CAMERA.detector_shape
    exp = Exposure.from_image(np.zeros((ny, nx), dtype=np.float32))
    exp.set_mask("SAT", np.eye(ny, nx, dtype=bool))
    pixels = _check_png(plot_postisr(exp, tmp_path / "full.png"))
    assert max(pixels.shape[:2]) < 1400


def test_postisr_tall_and_nonfinite(tmp_path: Path) -> None:
    exp = _exposure(ny=900, nx=120)
    exp.image[:30, :30] = np.nan
    exp.unit = "adu"
    exp.metadata = fits.Header()  # no OBSID / FILTER
    pixels = _check_png(plot_postisr(exp, tmp_path / "tall.png", max_size=256))
    assert max(pixels.shape[:2]) < 1400
    assert pixels.shape[0] > pixels.shape[1]  # the figure follows the image aspect


def test_postisr_rejects_bad_max_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_size"):
        plot_postisr(_exposure(), tmp_path / "x.png", max_size=0)
    assert not list(tmp_path.iterdir())


def test_thumbnail_names_curated_defects_and_config(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The thumbnail's BAD entry says the curated defect list drew it, and the title names
    the configuration as the report's tables do (``empty~holo4_003``, not ``empty_1``)."""
    exp = _exposure()
    exp.metadata["INSTRUME"] = "LATISS"
    exp.metadata["FILTER"] = "empty_1"
    exp.metadata["GRATING"] = "holo4_003"
    exp.metadata["HIERARCH ATM CALIB DEFECTS"] = "latiss_defects.ecsv"
    postisr = exp.write(tmp_path / "postisr.fits")
    drawn = {}
    monkeypatch.setattr(pisr, "save_png", lambda fig, path, dpi: drawn.setdefault("fig", fig))
    pisr.plot_postisr_thumbnail(postisr, tmp_path / "thumb.png")
    fig = drawn["fig"]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    bad = next(t for t in labels if t.startswith("BAD:"))
    # A 400×500 test image is no LATISS detector: the list is named, no amplifier.
    assert "curated defects" in bad and "latiss_defects.ecsv" in bad and "amp" not in bad
    assert "mask planes drawn" in fig.legends[0].get_title().get_text()
    assert "empty~holo4_003" in fig.axes[0].get_title(loc="left")
    assert "empty_1" not in fig.axes[0].get_title(loc="left")


def test_thumbnail_from_memory_equals_from_file(tmp_path: Path) -> None:
    """The night's worker draws the thumbnail from the exposure it just wrote (no read
    back): the PNG equals the one drawn from the file, quantised and tile-compressed, also
    after characterize set a plane the thumbnail does not draw (DETECTED) in memory; and
    from the exposure's preview file."""
    from atmospec.compression import CompressionConfig

    exp = _exposure()
    exp.variance[...] = 25.0
    exp.metadata["INSTRUME"] = "LATISS"
    exp.metadata["HIERARCH ATM CALIB DEFECTS"] = "latiss_defects.ecsv"
    exp.compression = CompressionConfig()
    postisr = exp.write(tmp_path / "postisr.fits")  # quantises exp's planes as stored
    exp.set_mask("DETECTED", exp.image > 110.0)
    sources = (np.array([50.0, 320.5]), np.array([60.0, 200.0]))
    from_file = pisr.plot_postisr_thumbnail(postisr, tmp_path / "file.png", sources=sources,
                                            max_width=400)
    from_memory = pisr.plot_postisr_thumbnail(exp, tmp_path / "memory.png", sources=sources,
                                              max_width=400)
    np.testing.assert_array_equal(_check_png(from_memory), _check_png(from_file))
    # From the preview the night's ISR writes beside the post-ISR file: the same figure.
    preview = write_preview(make_preview(exp.image, exp.mask, dict(exp.mask_planes), exp.unit,
                                         exp.metadata, max_width=400),
                            tmp_path / "preview.fits")
    from_preview = pisr.plot_postisr_thumbnail(read_preview(preview), tmp_path / "preview.png",
                                               sources=sources, max_width=400)
    np.testing.assert_array_equal(_check_png(from_preview), _check_png(from_file))


def test_report_draws_the_thumbnail_from_the_preview(tmp_path: Path, monkeypatch) -> None:
    """A report of a night whose figures were not drawn (``--no-report``) draws each
    thumbnail from ``<OBSID>_preview.fits``, not by decompressing the post-ISR file; a
    preview binned too coarsely for the thumbnail's width, or older than its post-ISR file
    (an ISR re-run stopped between the two writes), is not used."""
    import os

    from atmospec.compression import CompressionConfig
    from atmospec.plots.exposure import read_manifest, refresh_figures

    exp = _exposure()
    exp.variance[...] = 25.0
    exp.compression = CompressionConfig()
    obs_id = exp.metadata["OBSID"]
    postisr = exp.write(tmp_path / f"{obs_id}_postisr.fits")
    preview = write_preview(make_preview(exp.image, exp.mask, dict(exp.mask_planes), exp.unit,
                                         exp.metadata), tmp_path / f"{obs_id}_preview.fits")
    reference = pisr.plot_postisr_thumbnail(postisr, tmp_path / "reference.png")

    def no_file(*args, **kwargs):
        raise AssertionError("the post-ISR file was read")

    monkeypatch.setattr(pisr, "_preview_of_file", no_file)
    assert refresh_figures(tmp_path, obs_id, tmp_path / "report") == ["postisr"]
    shown = tmp_path / "report" / "postisr.png"
    np.testing.assert_array_equal(_check_png(shown), _check_png(reference))

    # A preview binned for narrower thumbnails (4×4 blocks, where 1000 px need none) is
    # too coarse for this one: the post-ISR file is read.
    write_preview(make_preview(exp.image, exp.mask, dict(exp.mask_planes), exp.unit,
                               exp.metadata, max_width=200), preview)
    assert read_preview(preview).factor == 4
    assert refresh_figures(tmp_path, obs_id, tmp_path / "report") == ["postisr"]
    store = next(tmp_path.glob(f"figures/{obs_id}"))
    assert "the post-ISR file was read" in read_manifest(store)["postisr"]["error"]

    write_preview(make_preview(exp.image, exp.mask, dict(exp.mask_planes), exp.unit,
                               exp.metadata), preview)
    assert refresh_figures(tmp_path, obs_id, tmp_path / "report") == ["postisr"]
    assert read_manifest(store)["postisr"]["error"] is None
    stamp = postisr.stat().st_mtime
    os.utime(preview, (stamp - 10.0, stamp - 10.0))  # older than the post-ISR file
    os.utime(postisr, (stamp + 1.0, stamp + 1.0))  # and the figure now stale
    assert refresh_figures(tmp_path, obs_id, tmp_path / "report") == ["postisr"]
    assert "the post-ISR file was read" in read_manifest(store)["postisr"]["error"]


def test_thumbnail_sources_from_memory_equal_the_catalogue(tmp_path: Path) -> None:
    """The night's worker passes the centroids of the catalogue it just wrote instead of
    parsing the file back: the thumbnail equals the one a report draws from the catalogue
    (whose circles it does draw: a thumbnail without them differs)."""
    from astropy.table import Table

    from atmospec.imaging.catalog import write_catalog
    from atmospec.plots.exposure import refresh_figures

    exp = _exposure()
    obs_id = exp.metadata["OBSID"]
    exp.write(tmp_path / f"{obs_id}_postisr.fits")
    rng = np.random.default_rng(5)
    table = Table({"label": np.arange(1, 41), "xcentroid": rng.uniform(0, 500, 40),
                   "ycentroid": rng.uniform(0, 400, 40)})
    write_catalog(table, tmp_path / f"{obs_id}_sources.ecsv")
    memory = (np.asarray(table["xcentroid"]), np.asarray(table["ycentroid"]))
    drawn = {}
    for name, sources in (("file", None), ("memory", memory), ("none", (memory[0][:0],) * 2)):
        report = tmp_path / name
        store = next(tmp_path.glob(f"figures/{obs_id}"), None)
        if store is not None:  # draw again: the figure store holds the last one
            shutil.rmtree(store)
        assert refresh_figures(tmp_path, obs_id, report, groups=("postisr",),
                               sources=sources) == ["postisr"]
        drawn[name] = _check_png(report / "postisr.png")
    np.testing.assert_array_equal(drawn["memory"], drawn["file"])
    assert not np.array_equal(drawn["none"], drawn["file"])


def test_bad_source_names_the_amplifier() -> None:
    """LATISS's shipped defect box (x 3562–4070, y 0–1999) covers amp C07 of the camera
    description whole: the legend names it; a partial box names no amplifier."""
    factor = 8
    ny, nx = CAMERA.detector_shape
    bad = np.zeros((ny // factor, nx // factor), dtype=bool)
    bad[: 2000 // factor, 3562 // factor:] = True
    meta = {"INSTRUME": "LATISS", "ATM CALIB DEFECTS": "latiss_defects.ecsv"}
    assert pisr._bad_source(meta, bad, factor) == \
        "\ncurated defects: amp C07\n(latiss_defects.ecsv)"
    bad[: 1000 // factor] = False
    assert pisr._bad_source(meta, bad, factor) == "\ncurated defects\n(latiss_defects.ecsv)"
    assert pisr._bad_source({"INSTRUME": "LATISS"}, bad, factor) == ""


# ------------------------------------------------------------------------------- amp table


def test_amp_stats_table_values_and_units() -> None:
    stats = _stats()
    table = amp_stats_table(stats)
    assert len(table) == 16
    assert list(table["amp"]) == list(CAMERA.amp_names)
    assert table.colnames == ["amp"] + [c[0] for c in pisr.AMP_STATS_COLUMNS]
    for row in table:
        entry = stats["amps"][row["amp"]]
        for key, _, _ in pisr.AMP_STATS_COLUMNS:
            assert row[key] == pytest.approx(entry[key]), (row["amp"], key)
    assert table["gain"].unit == u.electron / u.adu
    assert table["read_noise_e"].unit == u.electron
    assert table["overscan_level_adu"].unit == u.adu
    assert table["overscan_noise_e"].unit == u.electron
    assert table["median"].unit == u.electron
    assert table["robust_std"].unit == u.electron
    assert table["n_cr"].dtype.kind == "i"
    assert table.meta["obs_id"] == "AT_O_20261123_000012"

    adu = amp_stats_table(_stats(unit="adu"))
    assert adu["median"].unit == u.adu and adu["robust_std"].unit == u.adu


def test_amp_stats_table_missing_values() -> None:
    stats = _stats()
    del stats["amps"]["C05"]["n_cr"]
    stats["amps"]["C06"]["gain"] = None
    table = amp_stats_table(stats)
    row5 = table[list(table["amp"]).index("C05")]
    row6 = table[list(table["amp"]).index("C06")]
    assert np.ma.is_masked(row5["n_cr"])
    assert np.ma.is_masked(row6["gain"])
    assert row5["gain"] == pytest.approx(stats["amps"]["C05"]["gain"])


def test_write_amp_stats_round_trip(tmp_path: Path) -> None:
    stats = _stats()
    path = write_amp_stats(stats, tmp_path / "amps.ecsv")
    assert path == tmp_path / "amps.ecsv"
    assert not list(tmp_path.glob("*.tmp"))
    back = Table.read(path, format="ascii.ecsv")
    table = amp_stats_table(stats)
    assert back.colnames == table.colnames
    assert list(back["amp"]) == list(CAMERA.amp_names)
    for name in table.colnames[1:]:
        assert back[name].unit == table[name].unit, name
        np.testing.assert_array_equal(np.asarray(back[name]), np.asarray(table[name]))
    assert back.meta["steps"] == stats["steps"]


def test_format_amp_stats() -> None:
    stats = copy.deepcopy(_stats())
    text = format_amp_stats(stats)
    lines = text.splitlines()
    assert "AT_O_20261123_000012" in lines[0]
    body = lines[1:]
    assert len({len(line) for line in body}) == 1  # fixed width
    assert len(body) == 3 + 16  # names, units, dashes, one line per amp
    assert [line.split()[0] for line in body[3:]] == list(CAMERA.amp_names)
    assert "electron / adu" in body[1]
