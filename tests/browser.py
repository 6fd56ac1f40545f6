"""A small headless-Chromium harness for the browser tests of the HTML night report.

`ensure_chromium` finds (or, as root on Debian, installs with ``apt-get``) the Debian packages
``chromium`` and ``chromium-driver``; `Browser` drives one headless Chromium session through
Selenium and checks local ``file://`` pages: it loads a page, waits for it and all its images,
takes a full-page screenshot and reports broken images, console errors and the page's links.
`crawl` follows the relative links of a report from its index page.

Selenium is given the chromedriver and Chromium paths explicitly, so Selenium Manager never
tries to download a browser or a driver (the test machines have no general network access).
"""

from __future__ import annotations

import base64
import math
import os
import shutil
import subprocess
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

#: The Chromium switches needed on the test machines: headless, no sandbox (we run as root in a
#: container), no GPU, and none of the background network traffic (updates, sync, QUIC) that
#: makes Chromium hang or fail on a closed network.
CHROMIUM_FLAGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)

#: The Debian packages providing ``/usr/bin/chromium`` and ``/usr/bin/chromedriver``.
APT_PACKAGES: tuple[str, ...] = ("chromium", "chromium-driver")

#: Markers in ``apt-get install`` errors that mean the package lists are missing or stale, so
#: that an ``apt-get update`` followed by a second attempt may help.
_MISSING_LIST_MARKERS: tuple[str, ...] = (
    "Unable to locate package",
    "has no installation candidate",
    "is not available",
    "404",
    "Failed to fetch",
)


class BrowserUnavailable(RuntimeError):
    """Chromium or chromedriver is missing and cannot be installed; the message says why."""


def _find_binaries() -> tuple[Path, Path] | None:
    """Return the (chromium, chromedriver) paths if both are installed, else None."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return Path(chromium), Path(driver)
    return None


def _first_error_line(text: str) -> str:
    """The first ``E:`` line of an apt error output, else its first non-empty line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("E:"):
            return line
    return lines[0] if lines else "(no error output)"


def _apt(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``apt-get`` non-interactively; a timeout becomes `BrowserUnavailable`."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Wait for a dpkg lock held by another apt process instead of failing at once.
    cmd = ["apt-get", "-o", "DPkg::Lock::Timeout=120", *args]
    try:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as err:
        raise BrowserUnavailable(
            f"`{' '.join(cmd)}` did not finish within {timeout:.0f} s") from err


def ensure_chromium(timeout: float = 900.0) -> tuple[Path, Path]:
    """Return the paths of Chromium and chromedriver, installing them with apt when missing.

    Parameters
    ----------
    timeout : float
        Time limit in seconds for each ``apt-get`` command.

    Returns
    -------
    chromium, chromedriver : pathlib.Path
        The browser executable and its WebDriver.

    Raises
    ------
    BrowserUnavailable
        When they are missing and cannot be installed: not running as root, no ``apt-get``,
        the install failed (the message carries the first error line of apt) or timed out.

    Notes
    -----
    The install is ``apt-get install -y --no-install-recommends chromium chromium-driver``
    with ``DEBIAN_FRONTEND=noninteractive``; ``apt-get update`` is run (and the install tried
    again) only when the first attempt fails for a missing or stale package list.
    """
    found = _find_binaries()
    if found is not None:
        return found
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        raise BrowserUnavailable(
            "chromium/chromedriver are not installed and the tests do not run as root, so "
            f"`apt-get install {' '.join(APT_PACKAGES)}` is impossible")
    if shutil.which("apt-get") is None:
        raise BrowserUnavailable("chromium/chromedriver are not installed and there is no "
                                 "apt-get to install the Debian packages with")
    install = ["install", "-y", "--no-install-recommends", *APT_PACKAGES]
    result = _apt(install, timeout)
    if result.returncode != 0 and any(m in result.stderr for m in _MISSING_LIST_MARKERS):
        update = _apt(["update"], timeout)
        if update.returncode != 0:
            raise BrowserUnavailable(
                f"apt-get update failed: {_first_error_line(update.stderr)}")
        result = _apt(install, timeout)
    if result.returncode != 0:
        raise BrowserUnavailable(
            f"apt-get install {' '.join(APT_PACKAGES)} failed: "
            f"{_first_error_line(result.stderr)}")
    found = _find_binaries()
    if found is None:
        raise BrowserUnavailable(f"apt-get installed {' '.join(APT_PACKAGES)} but chromium or "
                                 "chromedriver is still not on PATH")
    return found


def file_url_to_path(url: str) -> Path | None:
    """Return the local path of a ``file://`` URL (query and fragment dropped), else None."""
    parts = urlsplit(url)
    if parts.scheme != "file":
        return None
    return Path(url2pathname(unquote(parts.path)))


@dataclass
class PageReport:
    """What `Browser.check_page` found on one page.

    Attributes
    ----------
    path : pathlib.Path
        The page that was loaded.
    title : str
        The document title.
    ready_state : str
        ``document.readyState`` once loading finished (``'complete'`` for a loaded page).
    n_images : int
        The number of ``<img>`` elements.
    broken_images : list of str
        The resolved ``src`` of every ``<img>`` that did not load (``!img.complete`` or
        ``img.naturalWidth == 0``).
    console_errors : list of str
        The messages of the browser console at level SEVERE: ``console.error`` calls,
        uncaught JavaScript exceptions, resources that failed to load.
    links : list of str
        The resolved absolute URL of every ``<a href>``, in document order.
    page_width : int
        The document's scroll width in CSS pixels; more than the viewport width means the page
        scrolls sideways (informative only, not part of `ok`).
    screenshot : pathlib.Path or None
        The full-page PNG screenshot, if one was taken.
    """

    path: Path
    title: str
    ready_state: str
    n_images: int
    broken_images: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    page_width: int = 0
    screenshot: Path | None = None

    @property
    def ok(self) -> bool:
        """True when the page loaded with every image and without console errors."""
        return (self.ready_state == "complete" and not self.broken_images
                and not self.console_errors)

    def local_links(self) -> list[Path]:
        """The local files the ``<a href>`` links point to (``file://`` URLs only)."""
        paths = (file_url_to_path(url) for url in self.links)
        return [p for p in paths if p is not None]

    def dangling_links(self) -> list[Path]:
        """The local link targets that do not exist on disk."""
        return [p for p in self.local_links() if not p.exists()]


#: JavaScript returning what `Browser.check_page` reports about the loaded document.
_INSPECT_JS = """
const imgs = Array.from(document.images);
return {
  title: document.title,
  readyState: document.readyState,
  nImages: imgs.length,
  broken: imgs.filter(i => !i.complete || i.naturalWidth === 0)
              .map(i => i.currentSrc || i.src || i.getAttribute('src') || ''),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
  pageWidth: document.documentElement.scrollWidth,
};
"""

#: JavaScript making lazily loaded images load now, and telling whether all have settled.
_EAGER_IMAGES_JS = """
for (const i of document.images) { if (i.loading === 'lazy') { i.loading = 'eager'; } }
return Array.from(document.images).every(i => i.complete);
"""


class Browser:
    """One headless Chromium session (Selenium), reused for several pages.

    Use it as a context manager; the browser and its empty profile directory are removed on
    exit.

    Parameters
    ----------
    chromium, chromedriver : pathlib.Path or None
        The executables; by default those `ensure_chromium` returns.
    width : int
        Viewport width in CSS pixels (the screenshots' width).
    min_height : int
        Viewport height; full-page screenshots grow the viewport to the page height.
    max_height : int
        Cap on the screenshot height (very long pages are cut).
    timeout : float
        Seconds allowed for a page, and then for its images, to load.
    """

    def __init__(self, chromium: Path | None = None, chromedriver: Path | None = None, *,
                 width: int = 1400, min_height: int = 1000, max_height: int = 12000,
                 timeout: float = 30.0) -> None:
        if chromium is None or chromedriver is None:
            chromium, chromedriver = ensure_chromium()
        self.chromium = Path(chromium)
        self.chromedriver = Path(chromedriver)
        self.width = width
        self.min_height = min_height
        self.max_height = max_height
        self.timeout = timeout
        self._driver: Any = None
        self._profile: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Browser:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self._profile = tempfile.TemporaryDirectory(prefix="atmospec-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = str(self.chromium)
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self._profile.name}")
        options.add_argument(f"--window-size={self.width},{self.min_height}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(executable_path=str(self.chromedriver))
        try:
            self._driver = webdriver.Chrome(service=service, options=options)
        except Exception:
            self._profile.cleanup()
            raise
        self._driver.set_page_load_timeout(self.timeout)
        self._set_viewport(self.min_height)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if self._driver is not None:
                self._driver.quit()
        finally:
            self._driver = None
            if self._profile is not None:
                self._profile.cleanup()
                self._profile = None

    @property
    def driver(self) -> Any:
        """The Selenium WebDriver (only inside the ``with`` block)."""
        if self._driver is None:
            raise RuntimeError("Browser is not started; use it as a context manager")
        return self._driver

    def _wait(self, script: str, what: str) -> None:
        """Poll a JavaScript predicate until true, or raise TimeoutError after the timeout."""
        deadline = time.monotonic() + self.timeout
        while not self.driver.execute_script(script):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not within {self.timeout:.0f} s")
            time.sleep(0.05)

    def check_page(self, html_path: Path, screenshot_path: Path | None = None) -> PageReport:
        """Load a local page, wait for it and its images, and report what is wrong.

        Parameters
        ----------
        html_path : pathlib.Path
            The HTML file, opened as a ``file://`` URL.
        screenshot_path : pathlib.Path or None
            Where to write a full-page PNG screenshot; none is taken when None.

        Returns
        -------
        PageReport
            Title, broken images, console errors (level SEVERE) and links of the page.
        """
        driver = self.driver
        html_path = Path(html_path).resolve()
        driver.get_log("browser")  # drop the messages of the previous page
        driver.get(html_path.as_uri())
        self._wait("return document.readyState === 'complete';", f"{html_path} loading")
        self._wait(_EAGER_IMAGES_JS, f"the images of {html_path}")
        info = driver.execute_script(_INSPECT_JS)
        shot = None
        if screenshot_path is not None:
            shot = self.screenshot(Path(screenshot_path))
        errors = [str(entry.get("message", entry)) for entry in driver.get_log("browser")
                  if entry.get("level") == "SEVERE"]
        return PageReport(path=html_path, title=str(info["title"]),
                          ready_state=str(info["readyState"]), n_images=int(info["nImages"]),
                          broken_images=list(info["broken"]), console_errors=errors,
                          links=list(info["links"]), page_width=int(info["pageWidth"]),
                          screenshot=shot)

    def _set_viewport(self, height: int) -> None:
        """Make the viewport exactly ``self.width`` x ``height`` CSS pixels (DevTools)."""
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": self.width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def screenshot(self, path: Path) -> Path:
        """Write a full-page PNG screenshot of the current page (height capped).

        The viewport is grown to the page's content height for the capture, so the image is
        ``width`` pixels wide and as tall as the page (at least ``min_height``, at most
        ``max_height``).
        """
        driver = self.driver
        metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        height = math.ceil(metrics["cssContentSize"]["height"])
        height = min(max(height, self.min_height), self.max_height)
        self._set_viewport(height)
        try:
            shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
        finally:
            self._set_viewport(self.min_height)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def crawl(self, index_html: Path,
              reports: dict[Path, PageReport] | None = None) -> set[Path]:
        """Return the local HTML pages reachable by links from an index page (breadth first).

        Only ``file://`` links to existing ``.html``/``.htm`` files inside the index's
        directory (or below it) are followed; query strings and fragments are ignored.

        Parameters
        ----------
        index_html : pathlib.Path
            The start page.
        reports : dict or None
            If given, filled with the `PageReport` of every page visited, keyed by its path,
            so the caller can check all reachable pages at no extra cost.

        Returns
        -------
        set of pathlib.Path
            The resolved paths of the reachable pages, the index included.
        """
        index_html = Path(index_html).resolve()
        root = index_html.parent
        seen = {index_html}
        queue = deque([index_html])
        while queue:
            page = queue.popleft()
            report = self.check_page(page)
            if reports is not None:
                reports[page] = report
            for target in report.local_links():
                target = target.resolve()
                if (target.suffix.lower() in (".html", ".htm") and target.is_file()
                        and target.is_relative_to(root) and target not in seen):
                    seen.add(target)
                    queue.append(target)
        return seen


def check_page(html_path: Path, screenshot_path: Path | None = None) -> PageReport:
    """Check one page in a fresh browser session (see `Browser.check_page`).

    Parameters
    ----------
    html_path : pathlib.Path
        The HTML file to load.
    screenshot_path : pathlib.Path or None
        Where to write a full-page screenshot.

    Returns
    -------
    PageReport
        What was found on the page.
    """
    with Browser() as browser:
        return browser.check_page(html_path, screenshot_path)


def crawl(index_html: Path) -> set[Path]:
    """Return the local pages reachable from an index page (see `Browser.crawl`).

    Parameters
    ----------
    index_html : pathlib.Path
        The start page.

    Returns
    -------
    set of pathlib.Path
        The reachable pages, the index included.
    """
    with Browser() as browser:
        return browser.crawl(index_html)
