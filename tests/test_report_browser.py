"""Browser test of the HTML night report (issue 7): the report renders in headless Chromium.

The index page, one imaging and one dispersed exposure page of the small simulated night are
rendered and screenshotted at 1400 px, and every page reachable from the index is checked: it
loads completely, every image is present, the console shows no error and no link points to a
missing file; every science exposure of the night summary has its page reachable from the index,
and no exposure page is an orphan. The observing log fits the window: no horizontal overflow, the
key columns (FWHM, sky, sources, PWV, status...) displayed, the others one click away.

Chromium and chromedriver come from the Debian packages ``chromium`` and ``chromium-driver``,
installed with apt by the test set-up when missing; the tests are skipped, with the reason,
only when that install is impossible. The harness (`browser.py`) is itself tested first on
hand-written pages, so that the report checks cannot pass vacuously. Set
``ATMOSPEC_SCREENSHOT_DIR`` to keep the report screenshots for a human to look at.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import browser as harness
import matplotlib.image as mpimg
import numpy as np
import pytest
from astropy.table import Table
from browser import Browser, BrowserUnavailable, PageReport, ensure_chromium
from matplotlib.figure import Figure

WIDTH = 1400  # CSS pixels of the browser window, hence of the screenshots


@pytest.fixture(scope="session")
def chromium() -> tuple[Path, Path]:
    """The (chromium, chromedriver) paths, installed with apt if needed; skip if impossible."""
    try:
        return ensure_chromium()
    except BrowserUnavailable as err:
        pytest.skip(f"headless Chromium is unavailable: {err}")


@pytest.fixture(scope="module")
def browser(chromium: tuple[Path, Path]) -> Iterator[Browser]:
    """One headless Chromium session shared by the tests of this module."""
    with Browser(*chromium, width=WIDTH) as session:
        yield session


def _write_png(path: Path) -> Path:
    """Write a small, valid PNG plot."""
    fig = Figure(figsize=(3, 2), dpi=80)
    fig.add_subplot().plot([0, 1, 2], [0, 1, 4])
    fig.savefig(path)
    return path


def _write_page(path: Path, body: str, title: str = "page") -> Path:
    """Write a minimal HTML5 page."""
    path.write_text(f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{title}</title>'
                    f"</head>\n<body>\n{body}\n</body></html>\n", encoding="utf-8")
    return path


def _assert_rendered(shot: Path | None) -> None:
    """The screenshot is a PNG as wide as the window, and not a blank page."""
    assert shot is not None and shot.is_file()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = mpimg.imread(shot)
    assert pixels.shape[1] == WIDTH
    assert np.ptp(pixels[..., :3]) > 0.5, f"{shot} is blank"


def _problems(report: PageReport) -> list[str]:
    """Human-readable list of what is wrong with a page (empty when all is well)."""
    out = []
    if report.ready_state != "complete":
        out.append(f"readyState is {report.ready_state!r}")
    out += [f"broken image {src}" for src in report.broken_images]
    out += [f"console error: {msg}" for msg in report.console_errors]
    out += [f"link to missing file {p}" for p in report.dangling_links()]
    return [f"{report.path.name}: {p}" for p in out]


# --- the harness itself -------------------------------------------------------------------


def test_ensure_chromium_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Chromium and without root, the stated reason is that apt cannot be run."""
    monkeypatch.setattr(harness, "_find_binaries", lambda: None)
    monkeypatch.setattr(harness.os, "geteuid", lambda: 1000)
    with pytest.raises(BrowserUnavailable, match="do not run as root"):
        ensure_chromium()


def test_ensure_chromium_apt_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing package list triggers one apt-get update; a failure reports apt's error."""
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        assert kwargs["env"]["DEBIAN_FRONTEND"] == "noninteractive"  # type: ignore[index]
        if "update" in cmd:
            return subprocess.CompletedProcess(cmd, 0, "", "")
        return subprocess.CompletedProcess(cmd, 100, "Reading package lists...\n",
                                           "W: a warning\nE: Unable to locate package chromium\n")

    monkeypatch.setattr(harness, "_find_binaries", lambda: None)
    monkeypatch.setattr(harness.os, "geteuid", lambda: 0)
    monkeypatch.setattr(harness.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(harness.subprocess, "run", fake_run)
    with pytest.raises(BrowserUnavailable) as err:
        ensure_chromium(timeout=5)
    assert str(err.value) == ("apt-get install chromium chromium-driver failed: "
                              "E: Unable to locate package chromium")
    assert [c[c.index("DPkg::Lock::Timeout=120") + 1] for c in calls] == [
        "install", "update", "install"]
    assert calls[0][-4:] == ["-y", "--no-install-recommends", "chromium", "chromium-driver"]


def test_harness_reports_broken_image_and_console_error(browser: Browser, tmp_path: Path
                                                        ) -> None:
    """A page with one good and one missing image and a console.error is caught exactly."""
    _write_png(tmp_path / "good.png")
    page = _write_page(tmp_path / "bad.html", "<h1>bad page</h1>\n"
                       '<img src="good.png" alt="good"> <img src="missing.png" alt="missing">\n'
                       "<script>console.log('not an error'); console.warn('not an error');"
                       " console.error('boom');</script>", title="bad page")
    report = browser.check_page(page, tmp_path / "bad.png")
    assert report.title == "bad page"
    assert report.ready_state == "complete"
    assert report.n_images == 2
    assert report.broken_images == [(tmp_path / "missing.png").as_uri()]
    # The console.error, and Chromium's own error for the missing image: nothing else.
    assert len(report.console_errors) == 2, report.console_errors
    assert sum('"boom"' in msg for msg in report.console_errors) == 1
    assert sum("missing.png" in msg and "Failed to load resource" in msg
               for msg in report.console_errors) == 1
    assert not report.ok
    _assert_rendered(report.screenshot)


def test_harness_uncaught_exception(browser: Browser, tmp_path: Path) -> None:
    """An uncaught JavaScript exception is a console error."""
    page = _write_page(tmp_path / "throw.html", "<p>x</p><script>throw new Error('kaboom');"
                       "</script>")
    report = browser.check_page(page)
    assert len(report.console_errors) == 1 and "kaboom" in report.console_errors[0]
    assert report.broken_images == [] and report.screenshot is None


def test_harness_clean_page(browser: Browser, tmp_path: Path) -> None:
    """A correct page (one image lazily loaded below the fold) has no problems."""
    _write_png(tmp_path / "good.png")
    page = _write_page(tmp_path / "clean.html", '<h1>clean page</h1><img src="good.png">\n'
                       '<div style="height: 3000px"></div>\n'
                       '<img src="good.png" loading="lazy">\n'
                       '<a href="sub/other.html#top">other</a> <a href="https://example.org/">'
                       "external</a>", title="clean page")
    report = browser.check_page(page, tmp_path / "clean.png")
    assert report.ok, _problems(report)
    assert report.n_images == 2
    assert report.links == [(tmp_path / "sub" / "other.html").as_uri() + "#top",
                            "https://example.org/"]
    # The missing link target is reported, but only by dangling_links().
    assert report.dangling_links() == [tmp_path / "sub" / "other.html"]
    _assert_rendered(report.screenshot)


def test_harness_crawl(browser: Browser, tmp_path: Path) -> None:
    """The crawl follows local links to existing pages under the index's folder only."""
    site = tmp_path / "site"
    (site / "sub").mkdir(parents=True)
    _write_page(tmp_path / "outside.html", "<p>outside the report</p>")
    index = _write_page(site / "index.html", '<a href="a.html">a</a> <a href="a.html#x">a</a>'
                        ' <a href="gone.html">gone</a> <a href="../outside.html">out</a>'
                        ' <a href="https://example.org/">ext</a>')
    _write_page(site / "a.html", '<a href="sub/b.html?q=1">b</a> <a href="index.html">up</a>')
    _write_page(site / "sub" / "b.html", '<a href="../a.html">a</a>')
    _write_page(site / "unlinked.html", "<p>nobody links here</p>")
    reports: dict[Path, PageReport] = {}
    pages = browser.crawl(index, reports)
    expected = {site / "index.html", site / "a.html", site / "sub" / "b.html"}
    assert pages == expected
    assert set(reports) == expected
    assert reports[site / "index.html"].dangling_links() == [site / "gone.html"]


# --- the report of the simulated night ----------------------------------------------------


def _report_index(repo: Path) -> Path:
    """The report's index page, built with `atmospec.report.build_report` if not there yet."""
    index = repo / "report" / "index.html"
    if not index.is_file():
        from atmospec.report import build_report

        index = Path(build_report(repo))
    return index


def _keep_screenshots(*shots: Path | None) -> None:
    """Copy screenshots to $ATMOSPEC_SCREENSHOT_DIR, when set, for a human to look at."""
    out = os.environ.get("ATMOSPEC_SCREENSHOT_DIR")
    if not out:
        return
    Path(out).mkdir(parents=True, exist_ok=True)
    for shot in shots:
        if shot is not None:
            shutil.copy2(shot, Path(out) / shot.name)


def check_report(browser: Browser, repo: Path, shots: Path) -> None:
    """Render a reduced night's report and assert it is complete and clean.

    Parameters
    ----------
    browser : Browser
        The running browser session.
    repo : pathlib.Path
        The repository reduced by ``atmospec night``.
    shots : pathlib.Path
        Folder for the screenshots of the index and of one exposure page.
    """
    index = _report_index(repo)
    assert index == repo / "report" / "index.html" and index.is_file()
    summary = Table.read(repo / "night" / "summary.ecsv")
    science = summary[summary["image_type"] == "science"]
    assert len(science) > 0
    pages = {str(obs): (repo / "report" / "exposures" / f"{obs}.html").resolve()
             for obs in science["obs_id"]}

    # Every page reachable from the index is loaded and checked.
    reports: dict[Path, PageReport] = {}
    reachable = browser.crawl(index, reports)
    unreachable = sorted(obs for obs, page in pages.items() if page not in reachable)
    assert not unreachable, f"exposure pages not reachable from the index: {unreachable}"
    orphans = sorted(p.name for p in (repo / "report" / "exposures").glob("*.html")
                     if p.resolve() not in reachable)
    assert not orphans, f"exposure pages no link leads to: {orphans}"
    problems = [p for report in reports.values() for p in _problems(report)]
    assert not problems, "\n".join(problems)

    # Screenshots of the index, of one imaging and of one dispersed exposure page.
    index_report = browser.check_page(index, shots / "report_index.png")
    _assert_log_fits(browser)
    reports = [index_report]
    for kind in (science[science["disperser"] == "empty"],
                 science[science["disperser"] != "empty"]):
        if len(kind):
            obs_id = str(kind["obs_id"][0])
            reports.append(browser.check_page(pages[obs_id], shots / f"report_{obs_id}.png"))
    for report in reports:
        assert report.ok, _problems(report)
        _assert_rendered(report.screenshot)
        assert report.n_images > 0
        assert report.page_width <= WIDTH, f"{report.path.name} scrolls sideways"
    _keep_screenshots(*(r.screenshot for r in reports))


#: The observing log's columns a reader needs without scrolling or clicking (issue 21).
KEY_LOG_COLUMNS = ("seq_num", "time_begin", "filter", "fwhm_arcsec", "sky_e_per_s",
                   "n_sources", "pwv_mm", "status")

#: JavaScript measuring the observing log of the loaded index page: its scrolling box, the
#: viewport and where each column header is (and whether it is displayed).
_LOG_LAYOUT_JS = """
const table = document.querySelector('table#summary');
const wrap = table.closest('.table-wrap');
const box = wrap.getBoundingClientRect();
const columns = {};
for (const th of table.querySelectorAll('thead th')) {
  const r = th.getBoundingClientRect();
  columns[th.dataset.column] = {left: r.left, right: r.right, shown: th.offsetParent !== null};
}
return {scrollWidth: wrap.scrollWidth, clientWidth: wrap.clientWidth, boxRight: box.right,
        viewport: document.documentElement.clientWidth, columns: columns};
"""


def _assert_log_fits(browser: Browser) -> None:
    """On the loaded index page, at `WIDTH`: the observing log does not overflow its box,
    its key columns are displayed inside the window, and ticking "show all columns"
    displays the others (then the log may scroll inside its box, never the page)."""
    layout = browser.driver.execute_script(_LOG_LAYOUT_JS)
    assert layout["viewport"] == WIDTH
    assert layout["scrollWidth"] <= layout["clientWidth"], layout
    for column in KEY_LOG_COLUMNS:
        where = layout["columns"][column]
        assert where["shown"], column
        assert 0 <= where["left"] < where["right"] <= min(layout["boxRight"], WIDTH), (
            column, where)
    hidden = [c for c, w in layout["columns"].items() if not w["shown"]]
    assert "obs_id" in hidden and "disperser" in hidden
    browser.driver.find_element("css selector", "label[for=log-all-columns]").click()
    shown = browser.driver.execute_script(_LOG_LAYOUT_JS)
    assert all(shown["columns"][c]["shown"] for c in hidden)
    assert browser.driver.execute_script(
        "return document.documentElement.scrollWidth") <= WIDTH


def test_night_report_in_browser(browser: Browser, night_reference: tuple[Path, int],
                                 tmp_path: Path) -> None:
    """The simulated night's report renders cleanly, every exposure page reachable."""
    repo, status = night_reference
    assert status == 0
    check_report(browser, repo, tmp_path)


# --- the live page of atmospec watch -------------------------------------------------------


#: Whether every image of the page has loaded (an image still loading counts as not yet).
_IMAGES_LOADED_JS = """
for (const i of document.images) { if (i.loading === 'lazy') { i.loading = 'eager'; } }
return Array.from(document.images).every(i => i.complete);
"""


def _wait_for(browser: Browser, script: str, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not browser.driver.execute_script(script):
        assert time.monotonic() < deadline, f"{what} not within {timeout:.0f} s"
        time.sleep(0.05)


def test_live_page_updates_in_browser(browser: Browser, night_reference: tuple[Path, int],
                                      tmp_path: Path) -> None:
    """The live page opened from disk follows the night: each update replaces its content in
    place (no reload), the latest exposure's quick look, the latest spectrum and the trends
    show, with no console error and no broken image."""
    from atmospec.night.watch import WatchUpdate
    from atmospec.report.live import LiveConfig, LivePage

    repo, status = night_reference
    assert status == 0
    out = tmp_path / "report"
    # The exposures' figures, as the watch's workers draw them.
    shutil.copytree(repo / "report" / "exposures", out / "exposures")
    summary = Table.read(repo / "night" / "summary.ecsv")
    science = [i for i, row in enumerate(summary) if row["image_type"] == "science"]
    page = LivePage(repo, LiveConfig(refresh_s=0.2, trend_interval_s=3600.0), out=out)

    def arrive(n: int, final: bool = False) -> str | None:
        """Publish the night with its first ``n`` science exposures reduced; their last."""
        night = summary.copy()
        for i in science[n:]:
            night["status"][i] = "pending"
        latest = str(summary["obs_id"][science[n - 1]]) if n else None
        page(WatchUpdate(repo, night, (latest,) if latest else (), (), (), final))
        return latest

    arrive(0)
    first = browser.check_page(out / "live.html", tmp_path / "live_start.png")
    assert first.ok, _problems(first)
    assert "No exposure reduced yet" in browser.driver.find_element("id", "live").text
    browser.driver.execute_script("window.notReloaded = true;")
    for n in range(1, len(science) + 1):
        latest = arrive(n, final=n == len(science))
        heading = json.dumps(f"Latest exposure: {latest}")
        _wait_for(browser, "return Array.from(document.querySelectorAll('#live h2'))"
                  f".some(h => h.textContent === {heading});", f"the page showing {latest}")
    _wait_for(browser, "return document.getElementById('state').dataset.final === '1';",
              "the final update")
    assert browser.driver.execute_script("return window.notReloaded === true;"), "reloaded"
    _wait_for(browser, _IMAGES_LOADED_JS, "the images")
    info = browser.driver.execute_script(harness._INSPECT_JS)
    errors = [e["message"] for e in browser.driver.get_log("browser")
              if e.get("level") == "SEVERE"]
    assert info["broken"] == [] and errors == [], (info["broken"], errors)
    text = browser.driver.find_element("id", "live").text
    dispersed = [str(summary["obs_id"][i]) for i in science
                 if summary["disperser"][i] != "empty"]
    assert f"Latest spectrum: {dispersed[-1]}" in text
    sources = [img.split("?")[0] for img in browser.driver.execute_script(
        "return Array.from(document.images).map(i => i.getAttribute('src'));")]
    assert {"live/image_quality.png", "live/spectra.png", "live/atmosphere.png"} <= set(sources)
    assert any(s.endswith("/postisr.png") for s in sources)
    assert any(s.endswith("/atmosphere_fit.png") for s in sources)
    shot = browser.screenshot(tmp_path / "live_final.png")
    _assert_rendered(shot)
    _keep_screenshots(first.screenshot, shot)
