"""The live page of ``atmospec watch``: ``REPO/report/live.html``, the latest exposure and
the night so far, updated as each exposure is reduced.

The page is static and needs no server: it is rewritten (atomically) at every update, and
the page already open in a browser updates itself in place. Every `LiveConfig.refresh_s`
it loads ``live.js``, a script holding the page's content (also written as ``live.json``
for other readers) wrapped in a call: a script loads from ``file://``, where Chromium
refuses a ``fetch`` of a local file. When the content changed, its HTML replaces the
page's: no reload, no flicker. A browser without JavaScript reloads the page instead
(``<noscript>`` refresh). ``atmospec watch --serve PORT`` serves the report folder on
localhost (`serve_report`) for a browser that is not on the machine's file system.

What the page shows: the night's counts, the alerts in plain words
(`atmospec.night.alerts.live_alerts`), the latest exposure (its quick-look image as the
worker drew it for the report, `atmospec.plots.exposure`; FWHM, ellipticity, sky, sources),
the latest spectrum with its atmosphere fit, the night's image-quality and transparency
trends (`atmospec.plots.night`, redrawn at most every `LiveConfig.trend_interval_s` so that
an update stays quick), the recent exposures and the files skipped.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from atmospec import layout
from atmospec.camera.translator import is_dispersed_name
from atmospec.errors import BadInputError
from atmospec.io import write_text_atomic
from atmospec.night.watch import WatchUpdate
from atmospec.plots.exposure import read_manifest
from atmospec.report import html as H

log = logging.getLogger(__name__)

__all__ = ["LiveConfig", "LivePage", "live_document", "serve_report"]

#: Version of the ``live.json`` layout.
LIVE_VERSION = 1

#: The trend figures: (file stem, `atmospec.plots.night` function, what it shows, whether
#: imaging (else dispersed) exposures change it).
_TRENDS: tuple[tuple[str, str, str, bool], ...] = (
    ("image_quality", "plot_night_quality",
     "Image quality: PSF FWHM, ellipticity and sky of every characterized exposure against "
     "time and airmass.", True),
    ("spectra", "plot_spectro_series",
     "Transparency: the standard's flux at 450, 650 and 850 nm (and D2CCD) of every "
     "spectrum against time and airmass.", False),
    ("atmosphere", "plot_atmosphere_series",
     "Atmosphere: PWV, ozone and aerosols fitted on every spectrum.", False),
)


@dataclass(frozen=True)
class LiveConfig:
    """How the live page is written."""

    refresh_s: float = 2.0
    """How often an open page looks for an update, s."""
    trend_interval_s: float = 60.0
    """Shortest time between two drawings of the trend figures, s (an exposure's update
    is written first, with the trends as they were; the last update redraws them all).
    Drawing the three costs ~4 s of CPU in the watch's own process: every 60 s, a few
    per cent of a core, taken from the workers."""
    recent: int = 12
    """Science exposures in the table of recent exposures."""
    rejected: int = 10
    """Skipped files listed (the latest ones)."""


def _value(row: Any, name: str) -> Any:
    """A summary row's value (None when absent or masked)."""
    try:
        value = row[name]
    except (KeyError, IndexError):
        return None
    return None if value is None or value is np.ma.masked else value


def _number(row: Any, name: str) -> float:
    value = _value(row, name)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _text(row: Any, name: str) -> str:
    value = _value(row, name)
    return "" if value is None else str(value)


def _versioned(path: Path, out: Path) -> str:
    """A relative link to a file that is redrawn under the same name: its modification
    time in the query, so a browser holding the old one fetches the new one."""
    return f"{H.rel(path, out)}?v={path.stat().st_mtime_ns}"


def _figures(out: Path, obs_id: str, groups: tuple[str, ...]) -> list[tuple[Path, str]]:
    """The PNGs of an exposure's figure groups that exist, with the group name."""
    directory = layout.exposure_figure_dir(out, obs_id)
    manifest = read_manifest(directory)
    found = []
    for group in groups:
        for name in (manifest.get(group) or {}).get("files", []):
            if (directory / name).is_file():
                found.append((directory / name, group))
    return found


def _latest(summary: Table, dispersed: bool) -> Any | None:
    """The latest reduced (done or failed) science exposure of one kind."""
    for row in reversed(summary):
        if (_text(row, "image_type") == "science" and _text(row, "status") in ("done", "failed")
                and is_dispersed_name(_text(row, "disperser")) == dispersed):
            return row
    return None


def _page_link(out: Path, obs_id: str) -> str:
    """The exposure's name, linked to its report page when the report has one."""
    page = layout.exposure_figure_dir(out) / f"{obs_id}.html"
    return H.link(H.rel(page, out), obs_id) if page.is_file() else H.esc(obs_id)


def _counts(update: WatchUpdate) -> str:
    status = [str(s) for s in update.summary["status"]] if len(update.summary) else []
    n = {s: status.count(s) for s in ("done", "failed", "pending", "calibration")}
    science = n["done"] + n["failed"] + n["pending"]
    text = (f"{len(status)} frames: {science} science ({n['done']} done, {n['failed']} "
            f"failed, {n['pending']} waiting), {n['calibration']} calibration")
    if update.rejected:
        text += f"; {len(update.rejected)} files skipped"
    return text


def _alerts_section(alerts: tuple[str, ...]) -> list[str]:
    if not alerts:
        return ["<h2>Alerts</h2>", '<p class="note">No alert.</p>']
    return ["<h2>Alerts</h2>", *(H.note(a, "error") for a in alerts)]


def _latest_section(out: Path, row: Any | None) -> list[str]:
    if row is None:
        return ["<h2>Latest exposure</h2>", '<p class="note">No exposure reduced yet.</p>']
    obs_id = _text(row, "obs_id")
    config = " ~ ".join(t for t in (_text(row, "filter"), _text(row, "disperser")) if t)
    body = [f"<h2>Latest exposure: {_page_link(out, obs_id)}</h2>",
            f"<p>{H.esc(_text(row, 'target'))} · {H.esc(config)} · "
            f"{H.fmt_number(_number(row, 'exptime'))} s · airmass "
            f"{H.fmt_number(_number(row, 'airmass'), 4)} · {H.esc(_text(row, 'time_begin'))} "
            f"TAI</p>"]
    if _text(row, "status") == "failed":
        body.append(H.note(f"Failed: {_text(row, 'reason')}", "error"))
    dispersed = is_dispersed_name(_text(row, "disperser"))
    columns = ((("zeroth_order_x", "zeroth order x (px)", 5),
                ("zeroth_order_y", "zeroth order y (px)", 5))
               if dispersed else
               (("fwhm_arcsec", "FWHM (″)", 3), ("fwhm_px", "FWHM (px)", 3),
                ("ellipticity", "ellipticity", 3), ("sky_e_per_s", "sky (e⁻/s/px)", 3),
                ("n_sources", "sources", 0), ("n_saturated", "saturated sources", 0)))
    cells = [H.Cell(H.fmt_number(_value(row, c), d), H.data_value(_value(row, c)),
                    numeric=True) for c, _, d in columns]
    body.append(H.table([t for _, t, _ in columns], [cells], table_id="latest-values",
                        columns=[c for c, _, _ in columns]))
    for png, _ in _figures(out, obs_id, ("postisr",)):
        body.append(H.figure(_versioned(png, out), "Quick look: post-ISR image (ZScale) with "
                             "its mask planes, detected sources (circles) or the zeroth "
                             "order (cross).", href=H.rel(png, out)))
    return body


def _spectrum_section(out: Path, row: Any | None) -> list[str]:
    if row is None:
        return []
    obs_id = _text(row, "obs_id")
    body = [f"<h2>Latest spectrum: {_page_link(out, obs_id)}</h2>"]
    values = []
    for column, label, unit in (("pwv_mm", "PWV", " mm"), ("ozone_du", "ozone", " DU"),
                                ("vaod", "VAOD", "")):
        v, e = _number(row, column), _number(row, f"{column}_err")
        if math.isfinite(v):
            values.append(f"{label} {H.fmt_number(v)} ± {H.fmt_number(e)}{unit}")
    if values:
        body.append(f"<p>{H.esc(' · '.join(values))} (χ²/ndof "
                    f"{H.fmt_number(_number(row, 'atmosphere_chi2_ndof'))})</p>")
    elif _text(row, "reason"):
        body.append(H.note(_text(row, "reason"), "warn"))
    captions = {"spectrum_spectrum.png": "Extracted first-order spectrum.",
                "atmosphere_fit.png": "Atmosphere fit: data, model and residuals."}
    for png, _ in _figures(out, obs_id, ("atmosphere", "spectrum")):
        if png.name in captions:
            body.append(H.figure(_versioned(png, out), captions[png.name],
                                 href=H.rel(png, out)))
    return body


def _columns(*sections: list[str]) -> str:
    """Sections side by side while the window is wide enough (`_LIVE_CSS`)."""
    return '<div class="cols">' + "".join(
        f"<section>{''.join(s)}</section>" for s in sections if s) + "</div>"


def _trends_section(out: Path) -> list[str]:
    directory = layout.live_file(out, "figures")
    shown = [H.figure(_versioned(directory / f"{stem}.png", out), caption,
                      href=H.rel(directory / f"{stem}.png", out))
             for stem, _, caption, _ in _TRENDS if (directory / f"{stem}.png").is_file()]
    return ["<h2>The night so far</h2>", *shown] if shown else []


def _recent_section(out: Path, summary: Table, n: int) -> list[str]:
    rows = [r for r in summary if _text(r, "image_type") == "science"][-n:][::-1]
    if not rows:
        return []
    columns = (("seq_num", "seq", 0), ("filter", "filter", None),
               ("disperser", "disperser", None), ("airmass", "airmass", 4),
               ("fwhm_arcsec", "FWHM (″)", 3), ("sky_e_per_s", "sky (e⁻/s/px)", 3),
               ("n_sources", "sources", 0), ("pwv_mm", "PWV (mm)", 3),
               ("status", "status", None))
    cells = []
    for r in rows:
        line = [H.Cell(_page_link(out, _text(r, "obs_id")), _text(r, "obs_id"),
                       raw_html=True)]
        for c, _, d in columns:
            v = _value(r, c)
            line.append(H.Cell(_text(r, c)) if d is None else
                        H.Cell(H.fmt_number(v, d), H.data_value(v), numeric=True))
        cells.append(line)
    return ["<h2>Recent exposures</h2>",
            H.table(["exposure", *(t for _, t, _ in columns)], cells, table_id="recent",
                    columns=["obs_id", *(c for c, _, _ in columns)],
                    row_classes=[_text(r, "status") for r in rows])]


def _rejected_section(rejected: tuple[tuple[Path, str], ...], n: int) -> list[str]:
    if not rejected:
        return []
    items = "".join(f"<li><code>{H.esc(p.name)}</code>: {H.esc(r)}</li>"
                    for p, r in rejected[-n:])
    return [f"<h2>Skipped files ({len(rejected)})</h2>", f'<ul id="rejected">{items}</ul>']


def live_document(update: WatchUpdate, out: Path, config: LiveConfig) -> dict[str, Any]:
    """The content of the live page for an update (what ``live.json`` holds).

    Parameters
    ----------
    update : WatchUpdate
        The night now.
    out : pathlib.Path
        Report folder (links are relative to it).
    config : LiveConfig
        How many recent exposures and skipped files to list.

    Returns
    -------
    dict
        ``version``, ``id`` (changes at every update), ``updated`` (UTC, ISO 8601),
        ``updated_unix``, ``final``, ``latest`` and ``latest_spectrum`` (OBSIDs or None),
        ``alerts``, ``rejected`` (``[name, reason]``), ``counts`` (a sentence), and
        ``html``, the page's body.
    """
    now = datetime.now(UTC)
    latest = _latest(update.summary, dispersed=False)
    spectrum = _latest(update.summary, dispersed=True)
    newest = max((r for r in (latest, spectrum) if r is not None),
                 key=lambda r: (_number(r, "day_obs"), _number(r, "seq_num")), default=None)
    state = ("stopped" if update.final else "watching")
    index = out / "index.html"
    header = (f'<p class="note" id="state" data-updated="{now.timestamp():.3f}" '
              f'data-final="{int(update.final)}">{H.esc(_counts(update))}. '
              f"<b>{state}</b>, updated {now:%Y-%m-%d %H:%M:%S} UTC "
              f'<span id="age"></span>'
              + (f" · {H.link(H.rel(index, out), 'the night report')}" if index.is_file()
                 else "") + "</p>")
    trends = _trends_section(out)
    body = [header, *_alerts_section(update.alerts),
            _columns(_latest_section(out, newest), _spectrum_section(out, spectrum)),
            *trends[:1], _columns(*([t] for t in trends[1:])),
            *_recent_section(out, update.summary, config.recent),
            *_rejected_section(update.rejected, config.rejected)]
    return {"version": LIVE_VERSION, "id": f"{time.time_ns()}",
            "updated": now.isoformat(timespec="seconds"), "updated_unix": now.timestamp(),
            "final": update.final,
            "latest": None if newest is None else _text(newest, "obs_id"),
            "latest_spectrum": None if spectrum is None else _text(spectrum, "obs_id"),
            "alerts": list(update.alerts),
            "rejected": [[p.name, r] for p, r in update.rejected],
            "counts": _counts(update), "html": "\n".join(body)}


#: The live page's layout beyond the report's style sheet: sections side by side.
_LIVE_CSS = (".cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));"
             "gap:0 1.5em;align-items:start}.cols h2{margin-top:1em}")

#: The page's script: load ``live.js`` every few seconds (a script element: it loads from
#: ``file://``, a fetch does not), replace the content when it changed, and show the age
#: of the content (a watch that died leaves an old page; the age says so).
_LIVE_JS = """
(function(){
 var current = %(id)s, every = %(every)d;
 window.atmospecLive = function(d){
  if (!d || d.id === current) { return; }
  current = d.id;
  document.getElementById("live").innerHTML = d.html;
  age();
 };
 function poll(){
  var s = document.createElement("script");
  s.src = "%(script)s?t=" + Date.now();
  s.onload = s.onerror = function(){ s.remove(); };
  document.head.appendChild(s);
 }
 function age(){
  var st = document.getElementById("state"), a = document.getElementById("age");
  if (!st || !a) { return; }
  var s = Math.max(0, Math.round(Date.now() / 1000 - parseFloat(st.dataset.updated)));
  a.textContent = "(" + s + " s ago)";
 }
 setInterval(poll, every);
 setInterval(age, 1000);
 age();
})();
"""


def live_html(document: Mapping[str, Any], config: LiveConfig) -> str:
    """The live page for a `live_document`."""
    script = _LIVE_JS % {"id": json.dumps(document["id"]),
                         "every": round(1000 * config.refresh_s),
                         "script": layout.LIVE_FILES["script"]}
    # Without JavaScript the page reloads itself instead.
    head = (f'<noscript><meta http-equiv="refresh" content="{max(1, round(config.refresh_s))}">'
            f"</noscript>\n<style>{_LIVE_CSS}</style>\n")
    return H.page("atmospec watch — live", f'<div id="live">\n{document["html"]}\n</div>',
                  head=head, script=script)


def write_live(document: Mapping[str, Any], out: Path, config: LiveConfig) -> Path:
    """Write ``live.json``, ``live.js`` and ``live.html`` in ``out``, each atomically (the
    script before the page that loads it).

    Returns
    -------
    pathlib.Path
        The page.
    """
    text = json.dumps(document, indent=1, allow_nan=False)
    write_text_atomic(text + "\n", layout.live_file(out, "data"))
    write_text_atomic(f"atmospecLive({text});\n", layout.live_file(out, "script"))
    return write_text_atomic(live_html(document, config), layout.live_file(out, "page"))


class LivePage:
    """The ``publish`` callback of `atmospec.night.watch.watch_night` that keeps
    ``REPO/report/live.html`` up to date.

    Parameters
    ----------
    repo : path
        Repository.
    config : LiveConfig, optional
        Refresh and trend intervals.
    out : path, optional
        Report folder; default ``REPO/report``.
    """

    def __init__(self, repo: str | Path, config: LiveConfig | None = None,
                 out: str | Path | None = None) -> None:
        self.config = config or LiveConfig()
        self.out = Path(out) if out is not None else layout.report_dir(Path(repo))
        self.stale: set[str] = {stem for stem, _, _, _ in _TRENDS}
        self.drawn_at = -math.inf
        self.published = 0

    def __call__(self, update: WatchUpdate) -> None:
        """Write the page for ``update`` (`write`), then redraw the trends it changed when
        due and write the page again with them (`refresh_trends`); the last update draws
        them first and writes the page once, complete."""
        if not update.final:
            self.write(update)
        self.refresh_trends(update)

    def write(self, update: WatchUpdate) -> Path:
        """Write the page for ``update`` with the trends as they are.

        Returns
        -------
        pathlib.Path
            The page.
        """
        self.published += 1
        return write_live(live_document(update, self.out, self.config), self.out,
                          self.config)

    def refresh_trends(self, update: WatchUpdate) -> bool:
        """Redraw the trends ``update`` changed when due (always for the last update) and
        write the page again if any was; whether it was written."""
        for obs_id in update.finished:
            rows = update.summary[update.summary["obs_id"] == obs_id]
            if len(rows):
                dispersed = is_dispersed_name(_text(rows[0], "disperser"))
                self.stale |= {stem for stem, _, _, imaging in _TRENDS if imaging != dispersed}
        due = update.final or time.monotonic() - self.drawn_at >= self.config.trend_interval_s
        drawn = bool(self.stale) and due and self._draw_trends(update.summary)
        if drawn or update.final:
            self.write(update)
        return drawn or update.final

    def _draw_trends(self, summary: Table) -> bool:
        """Draw the stale trend figures that have something to show; whether any was."""
        from atmospec.plots import night as night_plots  # matplotlib: only when drawing

        self.drawn_at = time.monotonic()
        directory = layout.live_file(self.out, "figures")
        drawn = False
        for stem, function, _, imaging in _TRENDS:
            if stem not in self.stale:
                continue
            self.stale.discard(stem)
            if not _has_trend(summary, imaging):
                continue
            plot: Callable[..., Path] = getattr(night_plots, function)
            plot(summary, directory / f"{stem}.png")
            drawn = True
        return drawn


def _has_trend(summary: Table, imaging: bool) -> bool:
    """Whether the night has an exposure the trend draws."""
    column = "fwhm_arcsec" if imaging else "flux_650nm"
    return any(math.isfinite(_number(r, column)) for r in summary
               if _text(r, "status") == "done")


class _QuietHandler(SimpleHTTPRequestHandler):
    """The report's files, its requests logged at debug level (not on the terminal)."""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("serve: " + format, *args)

    def end_headers(self) -> None:
        # The page and its data change under the same names: never from a cache.
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


@contextlib.contextmanager
def serve_report(directory: str | Path, port: int) -> Iterator[str]:
    """Serve a report folder on localhost (127.0.0.1 only) while the block runs.

    Parameters
    ----------
    directory : path
        The report folder (``REPO/report``).
    port : int
        TCP port; 0 picks a free one.

    Yields
    ------
    str
        The address of the live page, ``http://127.0.0.1:PORT/live.html``.

    Raises
    ------
    BadInputError
        The port cannot be used (taken, or privileged).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    handler = functools.partial(_QuietHandler, directory=str(directory))
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as exc:
        raise BadInputError(f"--serve {port}", f"cannot serve on 127.0.0.1:{port} "
                                               f"({exc.strerror or exc})") from None
    thread = threading.Thread(target=server.serve_forever, name="atmospec-serve", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/{layout.LIVE_FILES['page']}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5.0)
