"""The HTML night report: every exposure reachable from the night page, every relative link
and image resolving, the observing log's cells and the plotted values equal to the summary
table, figures cached between runs, and the pages of a failed exposure, an empty night, a
calibrations-only night and a non-repository.

The reference night (`night_reference` in conftest) already holds ``report/``: ``atmospec
night`` writes it at the end of the run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from astropy.time import Time

from atmospec.cli import main
from atmospec.night.index import NightIndex
from atmospec.night.summary import write_summary
from atmospec.plots.common import config_label
from atmospec.plots.night import TRUTH_LABEL
from atmospec.report import ReportConfig, build_report
from atmospec.report.html import fmt_number
from atmospec.report.truth import TRUTH_SUFFIX, read_truth


class _Page(HTMLParser):
    """Links, images and table cells of one page."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.srcs: list[str] = []
        self.tables: dict[str, dict] = {}
        self._table: str | None = None
        self._row: list | None = None
        self._cell: dict | None = None
        self.feed(path.read_text())

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and "href" in a:
            self.hrefs.append(a["href"])
            if self._cell is not None:
                self._cell["href"] = a["href"]
        elif tag == "img":
            self.srcs.append(a["src"])
        elif tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[self._table] = {"columns": [], "rows": []}
        elif tag == "th" and self._table and "data-column" in a:
            self.tables[self._table]["columns"].append(a["data-column"])
        elif tag == "tr" and self._table:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = {"value": a.get("data-value"), "text": ""}

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row:
                self.tables[self._table]["rows"].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None


def _assert_links_resolve(report: Path) -> None:
    """Every href/src of every page is relative and names an existing file."""
    pages = sorted(report.rglob("*.html"))
    assert pages
    for page in pages:
        parsed = _Page(page)
        for target in parsed.hrefs + parsed.srcs:
            assert "://" not in target and not target.startswith("/"), (page, target)
            path = target.split("#")[0]
            if path:
                assert (page.parent / path).exists(), (page, target)


def test_report_structure(night_reference):
    repo, _ = night_reference
    report = repo / "report"
    index = report / "index.html"
    assert index.is_file()
    summary = Table.read(repo / "night" / "summary.ecsv")
    links = set(_Page(index).hrefs)
    for obs_id in summary["obs_id"]:
        assert f"exposures/{obs_id}.html" in links
        assert (report / "exposures" / f"{obs_id}.html").is_file()
    _assert_links_resolve(report)
    # Imaging exposures show their thumbnail and PSF figures; the dispersed one its spectrum
    # diagnostics and atmosphere fit; the calibration pages their verification figure.
    for row in summary[summary["status"] == "done"]:
        srcs = _Page(report / "exposures" / f"{row['obs_id']}.html").srcs
        wanted = ["postisr.png"] + (["sources.png", "psf.png"] if row["disperser"] == "empty"
                                    else ["spectrum_spectrum.png", "atmosphere_fit.png"])
        for name in wanted:
            assert f"{row['obs_id']}/{name}" in srcs
    calibs = sorted((report / "calibs").glob("*.html"))
    assert calibs and all("verify.png" in " ".join(_Page(p).srcs) for p in calibs)


def _same(html_value: str, value) -> bool:
    if value is np.ma.masked:
        return html_value == ""
    if isinstance(value, str | np.str_):
        return html_value == str(value)
    if isinstance(value, np.integer | int):
        return int(html_value) == int(value)
    v = float(value)
    return (math.isnan(v) and html_value == "nan") or float(html_value) == v


def test_report_table_matches_summary(night_reference):
    repo, _ = night_reference
    summary = Table.read(repo / "night" / "summary.ecsv")
    table = _Page(repo / "report" / "index.html").tables["summary"]
    assert len(table["rows"]) == len(summary)
    assert {"obs_id", "filter", "disperser", "fwhm_arcsec", "sky_e_per_s", "n_sources",
            "pwv_mm", "status"} <= set(table["columns"])
    for row, cells in zip(summary, table["rows"], strict=True):
        for column, cell in zip(table["columns"], cells, strict=True):
            if column.endswith(TRUTH_SUFFIX):  # the simulator's, not the summary's
                continue
            value = row[column]
            assert _same(cell["value"], value), (row["obs_id"], column, cell, value)
            if isinstance(value, float | np.floating):
                assert cell["text"] in (fmt_number(value, 1), fmt_number(value, 3),
                                        fmt_number(value, 4)), (column, cell)


#: Rows each night figure draws (the rule of its plot function, written out again here).
def _drawn_rows(summary: Table, figure: str) -> Table:
    def finite(column):
        return np.isfinite(_column_floats(summary[column]))

    done = summary["status"] == "done"
    return summary[{"image_quality": done & finite("fwhm_px"),
                    "source_counts": done & finite("n_sources"),
                    "spectra": finite("flux_450nm") | finite("flux_650nm")
                    | finite("flux_850nm") | finite("d2ccd"),
                    "atmosphere": finite("pwv_mm")}[figure]]


def _column_floats(col) -> np.ndarray:
    """A summary column as floats, NaN where masked (a missing count)."""
    values = np.array(col, dtype=float)
    values[np.asarray(getattr(col, "mask", np.zeros(len(col), bool)), dtype=bool)] = np.nan
    return values


def _floats(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def test_plotted_values_equal_summary(night_reference):
    """The values read back from the drawn figures (sidecars) are the summary's."""
    repo, _ = night_reference
    summary = Table.read(repo / "night" / "summary.ecsv")
    sidecars = {p.stem: json.loads(p.read_text())
                for p in (repo / "report" / "night").glob("*.json")}
    assert set(sidecars) == {"image_quality", "source_counts", "spectra", "atmosphere"}
    n_points = 0
    for figure, doc in sidecars.items():
        rows = _drawn_rows(summary, figure)
        labels = np.array([config_label(f, d) for f, d in zip(rows["filter"], rows["disperser"],
                                                               strict=True)])
        time_label = next(p["xlabel"] for p in doc["panels"].values() if p["xlabel"]
                          .startswith("UTC hours since "))
        origin = Time(time_label.removeprefix("UTC hours since "), scale="utc").mjd
        hours = (Time(np.asarray(rows["mjd"], dtype=float), format="mjd", scale="tai").utc.mjd
                 - origin) * 24.0
        for gid, panel in doc["panels"].items():
            column, axis = gid.split("/")
            assert set(panel["series"]) - {TRUTH_LABEL} == set(labels), (figure, gid)
            for label, drawn in panel["series"].items():
                if label == TRUTH_LABEL:  # test_truth_beside_measurements
                    continue
                sel = labels == label
                x = hours[sel] if axis == "time" else np.asarray(rows["airmass"])[sel]
                y = _column_floats(rows[column])[sel]
                np.testing.assert_allclose(_floats(drawn["x"]), x, rtol=0, atol=1e-9)
                np.testing.assert_array_equal(_floats(drawn["y"]), y)
                if f"{column}_err" in rows.colnames and figure == "atmosphere":
                    err = np.asarray(rows[f"{column}_err"], dtype=float)[sel]
                    np.testing.assert_allclose(_floats(drawn["yerr"]), err, rtol=1e-9)
                n_points += len(drawn["y"])
    assert n_points > 0
    assert any(_drawn_rows(summary, "atmosphere")["pwv_mm"] > 0)


def _truth_docs(repo: Path) -> dict[str, dict]:
    """The simulator's truth sidecars of the night's raws, by OBSID."""
    docs = {}
    for record in NightIndex(repo, create=False).raws():
        path = record.path.parent / f"{record.obs_id}_truth.json"
        if path.is_file():
            docs[record.obs_id] = json.loads(path.read_text())
    return docs


def test_truth_beside_measurements(night_reference):
    """A simulated night shows the simulator's truth beside each measurement it knows: the
    log (FWHM, sky, PWV...), the atmosphere table, the exposure pages and the night
    figures (issue 21)."""
    repo, _ = night_reference
    report = repo / "report"
    docs = _truth_docs(repo)
    summary = Table.read(repo / "night" / "summary.ecsv")
    parsed = _Page(report / "index.html")
    log = parsed.tables["summary"]
    assert {"fwhm_arcsec_truth", "sky_e_per_s_truth", "pwv_mm_truth"} <= set(log["columns"])
    imaging = summary[np.isfinite(np.asarray(summary["fwhm_px"], dtype=float))]
    dispersed = summary[np.isfinite(np.asarray(summary["pwv_mm"], dtype=float))]
    assert len(imaging) and len(dispersed)
    by_id = {r[log["columns"].index("obs_id")]["value"]: r for r in log["rows"]}
    for row in imaging:
        doc = docs[str(row["obs_id"])]
        cells = by_id[str(row["obs_id"])]
        scale = float(row["fwhm_arcsec"]) / float(row["fwhm_px"])
        true_fwhm = float(cells[log["columns"].index("fwhm_arcsec_truth")]["value"])
        assert true_fwhm == pytest.approx(doc["fwhm_px"] * scale, rel=1e-12)
        assert float(row["fwhm_arcsec"]) == pytest.approx(true_fwhm, rel=0.05)  # a good sim
        sky = float(cells[log["columns"].index("sky_e_per_s_truth")]["value"])
        assert sky == pytest.approx(doc["sky_e"] / doc["exptime"], rel=1e-12)
    atmosphere = parsed.tables["atmosphere"]
    for row in atmosphere["rows"]:
        obs_id = row[0]["text"]
        model = docs[obs_id]["dispersed"]["spectrum_model"]
        for column in ("pwv_mm", "ozone_du", "vaod"):
            cell = row[atmosphere["columns"].index(column + TRUTH_SUFFIX)]
            assert float(cell["value"]) == model[column]
        page = _Page(report / "exposures" / f"{obs_id}.html").tables["exposure-summary"]
        values = {r[0]["text"]: r for r in page["rows"]}
        assert float(values["pwv_mm"][2]["value"]) == model["pwv_mm"]
        assert values["mjd"][1]["text"].endswith(" (TAI)") and " d" not in \
            values["mjd"][1]["text"]
    assert "simulator truth" in (report / "exposures" / f"{dispersed['obs_id'][0]}.html"
                                 ).read_text()
    drawn = json.loads((report / "night" / "atmosphere.json").read_text())["panels"]
    truth = drawn["pwv_mm/airmass"]["series"][TRUTH_LABEL]
    np.testing.assert_allclose(_floats(truth["x"]), np.asarray(dispersed["airmass"]))
    assert truth["y"] == [docs[str(o)]["dispersed"]["spectrum_model"]["pwv_mm"]
                          for o in dispersed["obs_id"]]


def test_real_night_shows_no_truth(night_reference, tmp_path):
    """Raws without truth sidecars (a real night) add no truth column, figure series or
    exposure-page column."""
    reference, _ = night_reference
    raw = tmp_path / "raw"
    raw.mkdir()
    for record in NightIndex(reference).raws():
        # Hard links: the index resolves a symbolic link to the simulated night's folder,
        # where the truth sidecars are.
        os.link(record.path, raw / record.path.name)
    repo = tmp_path / "repo"
    index = NightIndex(repo)
    index.index_directory(raw, progress=False)
    write_summary(index, repo, plots=False)
    assert read_truth((r.obs_id, r.path) for r in index.raws()) == {}
    page = build_report(repo, ReportConfig(figures=False))
    columns = _Page(page).tables["summary"]["columns"]
    assert not [c for c in columns if c.endswith(TRUTH_SUFFIX)]
    text = page.read_text()
    assert "truth</th>" not in text and "simulator" not in text
    assert not any("simulator truth" in p.read_text()
                   for p in (page.parent / "exposures").glob("*.html"))


def test_report_figures_are_cached(night_reference):
    repo, _ = night_reference
    pngs = sorted((repo / "report" / "exposures").rglob("*.png"))
    assert pngs
    before = {p: p.stat().st_mtime_ns for p in pngs}
    t0 = time.perf_counter()
    build_report(repo, ReportConfig(workers=1))
    elapsed = time.perf_counter() - t0
    assert {p: p.stat().st_mtime_ns for p in pngs} == before
    assert elapsed < 10.0


def test_cold_report_links_the_nights_figures(night_reference, tmp_path):
    """A report into an empty folder (a cold rebuild: the report folder deleted, the night's
    products there) draws no exposure figure: it links those the night's workers drew into
    each exposure's figure store, and the pages show them."""
    repo, _ = night_reference
    stores = sorted((repo / "exposures").glob("*/figures/*/figures.json"))
    assert stores
    stored = {p: p.stat().st_mtime_ns for p in (repo / "exposures").rglob("figures/*/*.png")}
    assert stored
    out = tmp_path / "cold"
    build_report(repo, ReportConfig(out=out, workers=1))
    assert {p: p.stat().st_mtime_ns for p in stored} == stored  # nothing drawn again
    for manifest in stores:
        obs_id = manifest.parent.name
        shown = out / "exposures" / obs_id
        entries = json.loads((shown / "figures.json").read_text())
        names = [n for g in entries.values() if isinstance(g, dict) and "files" in g
                 for n in g["files"]]
        assert names
        for name in names:
            assert os.path.samefile(shown / name, manifest.parent / name)
        assert f"{obs_id}/{names[0]}" in (out / "exposures" / f"{obs_id}.html").read_text()
    _assert_links_resolve(out)


def _night_copy(reference: Path, repo: Path) -> Path:
    """A repository sharing the reference's outputs (links), with its own index."""
    repo.mkdir(parents=True)
    shutil.copytree(reference / "night", repo / "night", ignore=shutil.ignore_patterns("plots"))
    shutil.copytree(reference / "calib", repo / "calib", copy_function=os.link)
    (repo / "exposures").symlink_to(reference / "exposures", target_is_directory=True)
    return repo


def test_failed_exposure_page(night_reference, tmp_path):
    reference, _ = night_reference
    repo = _night_copy(reference, tmp_path / "repo")
    index = NightIndex(repo)
    victim = next(t for t in index.tasks() if t.task == "characterize")
    # Recorded as the runner records a failing task (tasks reading its output not run).
    index.record_task(victim.obs_id, "characterize", status="failed",
                      config_hash=victim.config_hash, started=_now(), duration_s=0.1,
                      reason="synthetic failure: no PSF star")
    write_summary(index, repo, plots=False)
    page = build_report(repo, ReportConfig(figures=False))
    text = (page.parent / "exposures" / f"{victim.obs_id}.html").read_text()
    assert "Failed in task characterize: synthetic failure: no PSF star" in text
    parsed = _Page(page)
    failures = parsed.tables["failures"]["rows"]
    assert [[c["text"] for c in r] for r in failures] == [
        [victim.obs_id, "characterize", "synthetic failure: no PSF star"]]
    assert "1 exposure(s) failed" in page.read_text()
    assert parsed.tables["rejected"]["rows"]  # the damaged raw files, with their reasons
    _assert_links_resolve(page.parent)


def _now():
    from datetime import UTC, datetime

    return datetime.now(UTC)


def test_empty_night(tmp_path):
    repo = tmp_path / "repo"
    NightIndex(repo)  # an index with no raw file
    page = build_report(repo)
    text = page.read_text()
    assert "This night has no exposures" in text
    assert "No exposure failed." in text
    assert not list((page.parent / "exposures").glob("*.html"))
    _assert_links_resolve(page.parent)


def test_calibrations_only_night(night_reference, tmp_path):
    reference, _ = night_reference
    raw = tmp_path / "raw"
    raw.mkdir()
    biases = NightIndex(reference).raws(image_type="bias")
    for record in biases:
        (raw / record.path.name).symlink_to(record.path)
    repo = tmp_path / "repo"
    index = NightIndex(repo)
    index.index_directory(raw, progress=False)
    write_summary(index, repo, plots=False)
    page = build_report(repo)
    text = page.read_text()
    assert f"Only calibration frames this night ({len(biases)})" in text
    assert "No characterized exposure" in text and "No spectrum was extracted" in text
    for record in biases:
        exposure = (page.parent / "exposures" / f"{record.obs_id}.html").read_text()
        assert "Calibration frame (bias)" in exposure
    _assert_links_resolve(page.parent)


@pytest.mark.parametrize(("make", "says"), [
    ("missing", "no such directory"), ("plain_dir", "not an atmospec repository"),
    ("file", "is a file, not a night repository (expected a directory with"),
    ("dangling", "a symbolic link to nothing")])
def test_report_cli_bad_repo(tmp_path, capsys, make, says):
    """One line naming the path and what it is (issue 21: a file that exists was called
    "no such directory"), exit status 2."""
    target = tmp_path / "nope"
    if make == "plain_dir":
        target.mkdir()
    elif make == "file":
        target = tmp_path / "README.md"
        target.write_text("# a readme\n")
    elif make == "dangling":
        target.symlink_to(tmp_path / "gone")
    assert main(["report", str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(target) in err[0] and "Traceback" not in err[0]
    assert says in err[0]
    if make == "file":
        assert "no such directory" not in err[0]


def test_calibration_repository_only(night_reference, tmp_path):
    """A repository with a calibration registry and no night: product pages, said in words."""
    reference, _ = night_reference
    repo = tmp_path / "repo"
    shutil.copytree(reference / "calib", repo / "calib", copy_function=os.link)
    page = build_report(repo, ReportConfig(figures=False))
    text = page.read_text()
    assert "calibration products only" in text
    parsed = _Page(page)
    assert len(parsed.tables["calibrations"]["rows"]) == len(list((page.parent / "calibs")
                                                                  .glob("*.html")))
    _assert_links_resolve(page.parent)


def _eo_table() -> Table:
    """A run-wide EO table of two detectors (in memory, the real verdicts): R22_S11 with
    two amps above CCD-007's 8 e⁻, R22_S00 within it; the gain has no specification."""
    from atmospec.calib.eo_specs import verdict_table
    from atmospec.camera.description import load_camera

    amps = list(load_camera("lsstcam", "R22_S11").amp_names)
    tables = []
    for det, noisy in (("R22_S11", {"C03": 8.6, "C14": 9.2}), ("R22_S00", {})):
        figures = Table({"amp": amps,
                         "read_noise": [noisy.get(a, 6.0 + 0.1 * i) for i, a in
                                        enumerate(amps)],
                         "gain": np.linspace(1.4, 1.6, len(amps))})
        figures["read_noise"].unit = "electron"
        tables.append(verdict_table(figures, det, "E2V"))
    from astropy.table import vstack

    return vstack(tables)


def test_eo_section(tmp_path):
    """With REPO/eo/eo_figures.ecsv: a section with a table per detector and every
    measured figure's mosaic and histogram; without it: no section at all."""
    repo = tmp_path / "repo"
    NightIndex(repo)
    page = build_report(repo)
    assert 'id="eo"' not in page.read_text()
    assert "Electro-optical" not in page.read_text()

    table = _eo_table()
    (repo / "eo").mkdir()
    table.write(repo / "eo" / "eo_figures.ecsv", format="ascii.ecsv")
    page = build_report(repo)
    text = page.read_text()
    assert '<h2 id="eo">Electro-optical tests</h2>' in text
    assert '<a href="#eo">' in text
    parsed = _Page(page)
    rows = {r[0]["text"]: r for r in parsed.tables["eo-R22_S11"]["rows"]}
    assert set(rows) == {"read_noise", "gain"}
    noise = rows["read_noise"]
    # figure, unit, measured, pass, fail, worst amp, worst value, median, specification
    assert [c["value"] for c in noise[2:5]] == ["16", "14", "2"]
    assert noise[5]["text"] == "C14" and float(noise[6]["value"]) == 9.2
    assert noise[8]["text"] == "CCD-007 < 8"
    assert [c["value"] for c in parsed.tables["eo-R22_S00"]["rows"][0][2:5]] == ["16", "16",
                                                                                 "0"]
    assert rows["gain"][8]["text"] == "no specification"
    assert "R22_S11 (E2V): 16 amps, 14 pass every specification" in text
    for figure in ("read_noise", "gain"):
        for kind in ("mosaic", "hist"):
            assert f"eo/{figure}_{kind}.png" in parsed.srcs
    _assert_links_resolve(page.parent)

    # Figures are kept while the table is unchanged.
    mosaic = page.parent / "eo" / "read_noise_mosaic.png"
    stamp = mosaic.stat().st_mtime_ns
    build_report(repo)
    assert mosaic.stat().st_mtime_ns == stamp


def test_eo_only_repository(tmp_path):
    """A repository where only atmospec eo ran is reported; a damaged table is a sentence."""
    repo = tmp_path / "repo"
    (repo / "eo").mkdir(parents=True)
    _eo_table().write(repo / "eo" / "eo_figures.ecsv", format="ascii.ecsv")
    text = build_report(repo, ReportConfig(figures=False)).read_text()
    assert "electro-optical test results only" in text
    assert "eo-R22_S11" in text and "<img" not in text
    (repo / "eo" / "eo_figures.ecsv").write_text("# %ECSV 1.0\nnot a table\n")
    text = build_report(repo, ReportConfig(figures=False)).read_text()
    assert '<h2 id="eo">' in text and "unreadable EO table" in text
