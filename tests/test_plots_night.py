"""Tests for atmospec.plots.night: constant series said and drawn from 0, simulator truth
drawn beside the measurements only when present, the zeroth-order legend clear of its
markers (issue 21). Small in-memory summaries: no night is reduced here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from matplotlib.figure import Figure

from atmospec.plots import night as pnight


def _summary(n: int = 4) -> Table:
    """A night summary of ``n`` characterized imaging exposures and two spectra."""
    mjd = 61368.0 + 0.01 * np.arange(n + 2)
    disperser = ["empty"] * n + ["holo4_003"] * 2
    return Table({
        "obs_id": [f"AT_O_20261123_{i:06d}" for i in range(n + 2)], "mjd": mjd,
        "filter": ["SDSSr_65mm"] * n + ["empty", "empty"], "disperser": disperser,
        "airmass": 1.0 + 0.05 * np.arange(n + 2), "status": ["done"] * (n + 2),
        "fwhm_px": [12.0, 12.5, 13.0, 12.2][:n] + [np.nan] * 2,
        "fwhm_arcsec": [1.14, 1.19, 1.24, 1.16][:n] + [np.nan] * 2,
        "ellipticity": [0.01] * n + [np.nan] * 2, "sky_e_per_s": [8.0, 7.0, 6.0, 5.0][:n]
        + [np.nan] * 2, "n_sources": [415.0, 415.0, 419.0, 416.0][:n] + [np.nan] * 2,
        "n_saturated": [2.0] * n + [np.nan] * 2,
        "pwv_mm": [np.nan] * n + [3.1, 2.9], "pwv_mm_err": [np.nan] * n + [0.04, 0.04],
        "ozone_du": [np.nan] * n + [288.0, 284.0], "ozone_du_err": [np.nan] * n + [6.0, 6.0],
        "vaod": [np.nan] * n + [0.024, 0.033], "vaod_err": [np.nan] * n + [0.002, 0.002],
    })


def _capture(monkeypatch: pytest.MonkeyPatch) -> dict[str, Figure]:
    """Make the night plots hand their figure here instead of writing a PNG."""
    drawn: dict[str, Figure] = {}

    def save(fig: Figure, path: Path, *args: object, **kwargs: object) -> Path:
        drawn["fig"] = fig
        return Path(path)

    monkeypatch.setattr(pnight, "save_png", save)
    return drawn


def _axes(fig: Figure, gid: str):
    return next(ax for ax in fig.axes if ax.get_gid() == gid)


def test_constant_series_is_said_and_drawn_from_zero(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    """2 saturated sources in every exposure: an axis from 0 and a sentence, not 1.9–2.1;
    a series that varies keeps matplotlib's range and no sentence."""
    drawn = _capture(monkeypatch)
    pnight.plot_source_counts(_summary(), tmp_path / "counts.png")
    fig = drawn["fig"]
    for axis in ("time", "airmass"):
        ax = _axes(fig, f"n_saturated/{axis}")
        assert ax.get_ylim()[0] == 0.0 and ax.get_ylim()[1] >= 2.0
        notes = [t.get_text() for t in ax.texts if t.get_gid() == "constant_note"]
        assert notes == ["constant: 2 in all 4 exposures"]
        assert not _axes(fig, f"n_sources/{axis}").texts
    zero = _summary()
    zero["n_saturated"] = [0.0] * 4 + [np.nan] * 2
    pnight.plot_source_counts(zero, tmp_path / "counts.png")
    ax = _axes(drawn["fig"], "n_saturated/time")
    assert ax.texts[0].get_text() == "all zero in all 4 exposures"
    assert ax.get_ylim() == (0.0, 1.0)


def test_truth_drawn_only_when_present(monkeypatch: pytest.MonkeyPatch, tmp_path: Path
                                       ) -> None:
    """A ``<column>_truth`` column is drawn as its own series beside the measurement (and
    read back into the sidecar); without one the figure has no truth series."""
    summary = _summary()
    pnight.plot_atmosphere_series(summary, tmp_path / "real.png", sidecar=True)
    real = json.loads((tmp_path / "real.json").read_text())
    assert all(pnight.TRUTH_LABEL not in p["series"] for p in real["panels"].values())
    for column, value in (("pwv_mm", 3.0), ("ozone_du", 300.0), ("vaod", 0.03)):
        summary[column + "_truth"] = [np.nan] * 4 + [value] * 2
    pnight.plot_atmosphere_series(summary, tmp_path / "sim.png", sidecar=True)
    sim = json.loads((tmp_path / "sim.png").with_suffix(".json").read_text())["panels"]
    for column, value in (("pwv_mm", 3.0), ("ozone_du", 300.0), ("vaod", 0.03)):
        truth = sim[f"{column}/airmass"]["series"][pnight.TRUTH_LABEL]
        assert truth["y"] == [value, value] and truth["x"] == pytest.approx([1.2, 1.25])
        assert "empty~holo4_003" in sim[f"{column}/time"]["series"]


def test_zeroth_order_legend_clear_of_markers(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    """The zeroth-order legend sits below the detector map, so it covers none of the
    markers (LATISS's zeroth order is near the top of the detector)."""
    drawn = _capture(monkeypatch)
    summary = _summary()
    summary["zeroth_order_x"] = [np.nan] * 4 + [1730.0, 1745.0]
    summary["zeroth_order_y"] = [np.nan] * 4 + [3708.0, 3700.0]
    pnight.plot_source_positions(summary, [], tmp_path / "positions.png")
    fig = drawn["fig"]
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    assert legend.y1 < ax.get_window_extent().y0  # entirely below the map
    assert ax.get_legend().get_texts()[0].get_text().startswith("zeroth order")


def test_one_display_name_per_configuration() -> None:
    """A header's ``empty_1`` and the summary's ``empty`` are one name and one colour
    everywhere (`optic_name` behind `config_label` and `config_colour`)."""
    from atmospec.camera.translator import optic_name
    from atmospec.plots.common import config_colour, config_label

    assert optic_name("empty_1", "LATISS") == optic_name("empty") == "empty"
    assert optic_name(None) == "unknown" and optic_name(" SDSSr_65mm ") == "SDSSr_65mm"
    assert config_label("empty_1", "holo4_003") == config_label("empty", "holo4_003") \
        == "empty~holo4_003"
    assert config_label("SDSSr_65mm", "empty_1") == "SDSSr_65mm"
    assert config_colour("empty_1") == config_colour("empty")


def test_figures_of_an_older_version_are_stale(tmp_path: Path) -> None:
    """A figure drawn before `FIGURE_VERSION` (no version recorded) is redrawn though its
    inputs did not change, so a refreshed report shows the fixed figures without --force;
    the night figures' sidecars record the version."""
    from atmospec.plots.common import FIGURE_VERSION
    from atmospec.plots.exposure import FigureGroup, _identity, is_fresh

    source = tmp_path / "x_sources.ecsv"
    source.write_text("# a catalogue\n")
    (tmp_path / "psf.png").write_bytes(b"png")
    group = FigureGroup("psf", (source,))
    entry = {"inputs": _identity(group.inputs), "files": ["psf.png"], "error": None}
    assert not is_fresh(entry, group, tmp_path)
    assert is_fresh({**entry, "version": FIGURE_VERSION}, group, tmp_path)
    pnight.plot_source_counts(_summary(), tmp_path / "counts.png", sidecar=True)
    doc = json.loads((tmp_path / "counts.json").read_text())
    assert doc["figure_version"] == FIGURE_VERSION and doc["panels"]
