"""Build the static HTML report of a repository: the night page, one page per exposure and
one per calibration product, under ``REPO/report/`` (or another directory).

What is read: the night summary (``REPO/night/summary.ecsv``; rebuilt from the index when
missing), the night index (task outcomes, rejected files), the calibration registry and the
verification reports beside its products, and the exposures' outputs under
``REPO/exposures/<day_obs>/``. Figures come from `atmospec.plots` (drawn by
`atmospec.report.figures`, cached between runs); pages are laid out by
`atmospec.report.html`. Every file is written atomically.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from astropy.table import Table

import atmospec
from atmospec import layout
from atmospec.errors import BadInputError, short_error
from atmospec.io import write_text_atomic
from atmospec.layout import INDEX_FILE, REGISTRY_FILE, SUMMARY_STEM
from atmospec.plots.exposure import (
    ExposureFigureJob,
    ExposureOutputs,
    exposure_groups,
    is_fresh,
    newer_than,
    read_manifest,
    write_manifest,
)
from atmospec.report import html as H
from atmospec.report.figures import draw_all

log = logging.getLogger(__name__)

__all__ = ["ReportConfig", "build_report"]

SUMMARY_FILE = SUMMARY_STEM.with_suffix(".ecsv")


@dataclass(frozen=True)
class ReportConfig:
    """How the report is built."""

    out: str | None = None
    """Report directory; None: ``REPO/report``."""
    force: bool = False
    """Redraw every figure, even those whose inputs did not change."""
    workers: int | None = None
    """Processes drawing the exposures' figures; None: all cores; 1: in this process."""
    pool_threshold: int = 4
    """Fewest exposures with figures to draw worth a process pool (a spawned worker costs
    about a second of imports)."""
    figures: bool = True
    """Draw the figures (night time series, each exposure's and each calibration
    product's); False: pages with tables, sentences and links only (a quick look)."""
    thumbnail_width: int = 1000
    """Largest width of a post-ISR thumbnail, pixels."""


# ----------------------------------------------------------------------------- reading


@dataclass
class _Night:
    """What the report knows of the night."""

    summary: Table
    """The summary table (one row per exposure)."""
    summary_file: Path | None
    """File it was read from; None when rebuilt in memory."""
    tasks: dict[str, list] = field(default_factory=dict)
    """Task records (`atmospec.night.index.TaskRecord`) by OBSID."""
    rejected: list[tuple[Path, str]] = field(default_factory=list)
    """Files of the night directory that are not usable raws, with the reason."""
    notes: list[tuple[str, str]] = field(default_factory=list)
    """(kind, sentence) shown at the top of the night page."""
    indexed: bool = True
    """Whether the repository has a night (an index or a summary)."""


#: Columns of a summary the report reads, for a repository without a night.
_EMPTY_COLUMNS = ("obs_id", "day_obs", "seq_num", "time_begin", "mjd", "image_type", "target",
                  "filter", "disperser", "exptime", "airmass", "status", "reason")


def _check_repo(repo: str | os.PathLike[str]) -> Path:
    repo = Path(repo)
    if not repo.is_dir():
        raise BadInputError(repo, "no such directory")
    if not any((repo / f).is_file() for f in (INDEX_FILE, SUMMARY_FILE, REGISTRY_FILE)):
        raise BadInputError(repo, f"not an atmospec repository (no {INDEX_FILE}, "
                                  f"{SUMMARY_FILE} or {REGISTRY_FILE}); run atmospec night "
                                  "RAWDIR --repo REPO first")
    return repo


def _summary_is_stale(saved: Table, fresh: Table) -> bool:
    """Whether the index now says more than the summary file (exposures, statuses or task
    times changed): compared by content, since copying a repository changes the files'
    modification times but not what they hold."""
    keys = ("obs_id", "status", "duration_s")
    if len(saved) != len(fresh) or any(k not in saved.colnames for k in keys):
        return True
    for key in keys:
        a, b = list(saved[key]), list(fresh[key])
        if key == "duration_s":
            if not np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float),
                               rtol=1e-9, atol=1e-6, equal_nan=True):
                return True
        elif [str(x) for x in a] != [str(x) for x in b]:
            return True
    return False


def _read_night(repo: Path) -> _Night:
    from atmospec.night.index import NightIndex
    from atmospec.night.summary import summary_table

    index = NightIndex(repo) if (repo / INDEX_FILE).is_file() else None
    notes: list[tuple[str, str]] = []
    summary_file = repo / SUMMARY_FILE
    if summary_file.is_file():
        summary = Table.read(summary_file, format="ascii.ecsv")
        if index is not None and _summary_is_stale(summary, summary_table(index)):
            notes.append(("warn", f"The night index changed after {SUMMARY_FILE} was "
                                  "written (a run in progress?): the tables show the summary "
                                  "file; run atmospec night again to refresh it."))
    elif index is not None:
        summary, summary_file = summary_table(index), None
        notes.append(("warn", f"No {SUMMARY_FILE}: the summary was rebuilt from the index."))
    else:
        summary, summary_file = Table(names=_EMPTY_COLUMNS,
                                      dtype=[str if c not in ("day_obs", "seq_num", "mjd",
                                                              "exptime", "airmass")
                                             else float for c in _EMPTY_COLUMNS]), None
        notes.append(("warn", "This repository holds calibration products only: no night "
                              "was reduced in it."))
    night = _Night(summary, summary_file, notes=notes,
                   indexed=index is not None or summary_file is not None)
    if index is not None:
        for t in index.tasks():
            night.tasks.setdefault(t.obs_id, []).append(t)
        night.rejected = index.rejected()
    return night


@dataclass(frozen=True)
class _Product:
    """A registered calibration product and its page."""

    name: str
    """Page name: the stored file's stem (``bias.f2de856ef7b9``)."""
    record: Any
    """`atmospec.calib.registry.CalibRecord` (None for an EO table)."""
    path: Path
    """Product file."""
    verification: dict[str, Any] | None
    """Its ``.verify.json`` document."""
    verification_path: Path | None
    """That file."""
    kind: str
    """Product kind (``eo`` for electro-optical tables)."""


def _read_products(repo: Path) -> tuple[list[_Product], list[str]]:
    """Registered products (and EO tables under ``REPO/calib``), and problems met."""
    from atmospec.calib.registry import CalibrationRegistry

    products: list[_Product] = []
    problems: list[str] = []
    if (repo / REGISTRY_FILE).is_file():
        try:
            records = CalibrationRegistry(repo, create=False).list()
        except BadInputError as exc:
            records = []
            problems.append(str(exc))
        for rec in records:
            verification, vpath = None, None
            if rec.verification_path:
                vpath = repo / rec.verification_path
                try:
                    verification = json.loads(vpath.read_text())
                except (OSError, ValueError) as exc:
                    problems.append(f"{vpath}: unreadable verification report ({exc})")
            products.append(_Product(Path(rec.path).stem, rec, rec.absolute_path, verification,
                                     vpath, rec.kind))
    calib_dir = layout.calib_dir(repo)
    if calib_dir.is_dir():
        for table in sorted(calib_dir.rglob("eo_figures*.ecsv")):
            products.append(_Product(f"eo_{table.parent.name}_{table.stem}", None, table, None,
                                     None, "eo"))
    return products, problems


def _calibs_used(outputs: ExposureOutputs, manifest: dict[str, Any]) -> dict[str, str]:
    """Products an exposure's ISR used (kind → file name), from its post-ISR header; kept in
    the figure manifest so a warm report reads no FITS header."""
    if outputs.postisr is None:
        return {}
    st = outputs.postisr.stat()
    key = [st.st_size, st.st_mtime]
    cached = manifest.get("_calibs")
    if cached and cached.get("postisr") == key:
        return dict(cached["used"])
    from astropy.io import fits

    try:
        header = fits.getheader(outputs.postisr, 0)
    except (OSError, ValueError) as exc:
        log.warning("%s: cannot read the header (%s)", outputs.postisr, short_error(exc))
        return {}
    used = {k[len("ATM CALIB "):].lower(): str(v) for k, v in header.items()
            if k.startswith("ATM CALIB ")}
    if "ATM GAIN SOURCE" in header:
        used.setdefault("gains", str(header["ATM GAIN SOURCE"]))
    manifest["_calibs"] = {"postisr": key, "used": used}
    return used


# ----------------------------------------------------------------------------- helpers


def _rel(target: Path, start: Path) -> str:
    """Relative link from a page in ``start`` to ``target`` (POSIX separators)."""
    return Path(os.path.relpath(target, start)).as_posix()


def _value(row: Any, column: str) -> Any:
    if column not in row.colnames:
        return None
    value = row[column]
    return None if value is np.ma.masked else value


def _data_value(value: Any) -> str:
    """Exact value of a cell for ``data-value`` (what a test or a script compares)."""
    if value is None:
        return ""
    if isinstance(value, np.integer | int) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, np.floating | float):
        return repr(float(value))
    return str(value)


def _swatch(filter_name: str, disperser: str) -> str:
    from atmospec.plots.common import config_colour

    return (f'<span class="swatch" style="background:{config_colour(filter_name, disperser)}">'
            "</span>")


def _verdict(passed: bool | None) -> H.Cell:
    if passed is None:
        return H.Cell("not verified")
    return H.Cell("pass" if passed else "FAIL", css="pass" if passed else "fail")


#: Columns of the observing log: (summary column, title, digits or None for text).
LOG_COLUMNS: tuple[tuple[str, str, int | None], ...] = (
    ("obs_id", "exposure", None), ("time_begin", "start (TAI)", None),
    ("image_type", "type", None), ("target", "target", None), ("filter", "filter", None),
    ("disperser", "disperser", None), ("exptime", "exposure time (s)", 3),
    ("airmass", "airmass", 4), ("fwhm_arcsec", "FWHM (arcsec)", 3),
    ("ellipticity", "ellipticity", 3), ("sky_e_per_s", "sky (e⁻/s/pixel)", 3),
    ("n_sources", "sources", 0), ("pwv_mm", "PWV (mm)", 3), ("status", "status", None),
)

#: Night figures: (file stem, plot function name in atmospec.plots.night, caption, section).
NIGHT_FIGURES: tuple[tuple[str, str, str, str], ...] = (
    ("image_quality", "plot_night_quality",
     "PSF FWHM, ellipticity and sky of every characterized exposure against time (left) and "
     "airmass (right), one colour per filter.", "quality"),
    ("source_counts", "plot_source_counts",
     "Sources detected and saturated sources per exposure against time and airmass.",
     "quality"),
    ("spectra", "plot_spectro_series",
     "Extracted first-order flux at 450, 650 and 850 nm and the fitted disperser–CCD "
     "distance (D2CCD) of every spectrum against time and airmass.", "spectro"),
    ("atmosphere", "plot_atmosphere_series",
     "PWV, ozone and vertical aerosol optical depth fitted on every spectrum, with their "
     "1σ errors (scaled by √(χ²/ndof) when above 1), against time and airmass.", "spectro"),
)


def _has(table: Table, column: str, extra: np.ndarray | None = None) -> int:
    if column not in table.colnames or len(table) == 0:
        return 0
    col = table[column]
    values = np.array(col, dtype=float)
    ok = np.isfinite(values)
    if getattr(col, "mask", None) is not None:
        ok &= ~np.asarray(col.mask, dtype=bool)
    if extra is not None:
        ok &= extra
    return int(ok.sum())


def _figure_counts(summary: Table) -> dict[str, int]:
    """How many exposures each night figure would show (0: the figure is not drawn)."""
    done = (np.asarray(summary["status"]) == "done") if len(summary) else None
    spectro = max((_has(summary, c) for c in ("flux_450nm", "flux_650nm", "flux_850nm",
                                              "d2ccd")), default=0)
    return {"image_quality": _has(summary, "fwhm_px", done),
            "source_counts": _has(summary, "n_sources", done),
            "spectra": spectro, "atmosphere": _has(summary, "pwv_mm")}


# ----------------------------------------------------------------------------- build


def build_report(repo: str | os.PathLike[str], config: ReportConfig | None = None) -> Path:
    """Write the HTML report of a repository.

    Parameters
    ----------
    repo : path
        Repository reduced by ``atmospec night`` (or holding a calibration registry).
    config : ReportConfig, optional
        Output directory, caching, workers.

    Returns
    -------
    pathlib.Path
        The night page, ``<out>/index.html``.

    Raises
    ------
    BadInputError
        ``repo`` is not a directory or not an atmospec repository.
    """
    config = config or ReportConfig()
    t0 = time.perf_counter()
    repo = _check_repo(repo)
    out = Path(config.out) if config.out else layout.report_dir(repo)
    night = _read_night(repo)
    products, problems = _read_products(repo)
    night.notes += [("error", p) for p in problems]
    summary = night.summary

    # Exposures: outputs, cached figures, what is left to draw.
    exp_dir = layout.exposure_figure_dir(out)
    outputs: dict[str, ExposureOutputs] = {}
    manifests: dict[str, dict[str, Any]] = {}
    jobs: list[ExposureFigureJob] = []
    for row in summary:
        obs_id = str(row["obs_id"])
        outputs[obs_id] = ExposureOutputs.find(layout.exposure_dir(repo, int(row["day_obs"])),
                                               obs_id)
        directory = layout.exposure_figure_dir(out, obs_id)
        # --force forgets the cache records (so every group is drawn again); without
        # figures the records stay, so the pages keep showing the PNGs they name.
        forget = config.force and config.figures
        manifests[obs_id] = {} if forget else read_manifest(directory)
        if not config.figures:
            continue
        stale = tuple(g for g in exposure_groups(outputs[obs_id])
                      if not is_fresh(manifests[obs_id].get(g.name), g, directory))
        if stale:
            jobs.append(ExposureFigureJob(outputs[obs_id], directory, stale,
                                          config.thumbnail_width))
    t_draw = time.perf_counter()
    drawn = draw_all(jobs, config.workers or os.cpu_count() or 1, config.pool_threshold)
    t_draw = time.perf_counter() - t_draw
    used: dict[str, dict[str, str]] = {}
    for obs_id, manifest in manifests.items():
        before = json.dumps(manifest, sort_keys=True)
        manifest.update(drawn.get(obs_id, {}))
        used[obs_id] = _calibs_used(outputs[obs_id], manifest)
        if json.dumps(manifest, sort_keys=True) != before:
            write_manifest(layout.exposure_figure_dir(out, obs_id), manifest)

    night_figures = (_night_figures(summary, night.summary_file, out / "night", config.force)
                     if config.figures else {})
    calib_pages = _calibration_pages(products, used, out / "calibs", config.force,
                                     config.figures)
    ids = [str(r["obs_id"]) for r in summary]
    for i, row in enumerate(summary):
        obs_id = ids[i]
        text = _exposure_page(row, night, outputs[obs_id], manifests[obs_id], used[obs_id],
                              calib_pages, exp_dir,
                              ids[i - 1] if i > 0 else None,
                              ids[i + 1] if i + 1 < len(ids) else None)
        write_text_atomic(text, exp_dir / f"{obs_id}.html")
    index = out / "index.html"
    write_text_atomic(_night_page(repo, out, night, night_figures, products, calib_pages, used),
                      index)
    log.info("report %s: %d exposures (%d with figures drawn now, %.1f s), %d calibration "
             "pages, %.1f s", index, len(summary), len(jobs), t_draw, len(calib_pages),
             time.perf_counter() - t0)
    return index


def _night_figures(summary: Table, source: Path | None, directory: Path,
                   force: bool) -> dict[str, tuple[Path, int]]:
    """Draw (or keep) the night figures with their sidecars; name → (PNG, exposures shown)."""
    from atmospec.plots import night as night_plots

    counts = _figure_counts(summary)
    written = {}
    for stem, function, _, _ in NIGHT_FIGURES:
        if not counts[stem]:
            continue
        png = directory / f"{stem}.png"
        fresh = (not force and source is not None and newer_than(png, [source])
                 and newer_than(png.with_suffix(".json"), [source]))
        if not fresh:
            plot: Callable[..., Path] = getattr(night_plots, function)
            plot(summary, png, sidecar=True)
        written[stem] = (png, counts[stem])
    return written


# ----------------------------------------------------------------------------- calibrations


def _product_figure_specs(product: _Product, certified_ptc: Path | None
                          ) -> list[tuple[str, str, list[Path], Callable[[Path], Any]]]:
    """The figures a product gets: (PNG name, caption, inputs, draw(png))."""
    specs: list[tuple[str, str, list[Path], Callable[[Path], Any]]] = []
    if product.verification is not None and product.verification_path is not None:
        from atmospec.plots.verify import plot_verification

        doc = product.verification
        specs.append(("verify.png", "Verification tests per amplifier: value (bar, green pass, "
                      "red fail) against the threshold (black tick).",
                      [product.verification_path], lambda png: plot_verification(doc, png)))
    path = product.path
    if product.kind == "ptc":
        from atmospec.plots.ptc import plot_ptc

        specs.append(("ptc.png", "Photon-transfer curves per amplifier with their fits, "
                      "residuals and variance/mean.", [path], lambda png: plot_ptc(path, png)))
    if product.kind == "linearizer" and certified_ptc is not None:
        from atmospec.plots.ptc import plot_linearity

        specs.append(("linearity.png", "Ramp non-linearity before and after the correction "
                      "(ramp of the certified PTC).", [path, certified_ptc],
                      lambda png: plot_linearity(certified_ptc, path, png)))
    if product.kind == "eo":
        from atmospec.plots.eo import plot_eo_summary

        specs.append(("eo.png", "Electro-optical figures per amplifier against their "
                      "reference values.", [path],
                      lambda png: plot_eo_summary(Table.read(path, format="ascii.ecsv"), png)))
    return specs


def _calibration_pages(products: Sequence[_Product], used: dict[str, dict[str, str]],
                       directory: Path, force: bool, figures_on: bool = True
                       ) -> dict[str, Path]:
    """One page per product; file name of the product → page."""
    pages: dict[str, Path] = {}
    certified_ptc = next((p.path for p in products if p.kind == "ptc" and p.record is not None
                          and p.record.certified), None)
    for product in products:
        page = directory / f"{product.name}.html"
        figures: list[tuple[str, str]] = []
        errors: list[str] = []
        specs = _product_figure_specs(product, certified_ptc) if figures_on else []
        for name, caption, inputs, function in specs:
            png = directory / product.name / name
            try:
                if force or not newer_than(png, inputs):
                    function(png)
                figures.append((_rel(png, directory), caption))
            except Exception as exc:  # an unreadable product costs its figure only
                log.warning("%s: no %s (%s)", product.path, name, short_error(exc))
                errors.append(f"{name}: {type(exc).__name__}: {short_error(exc)}")
        n_used = sum(product.path.name in u.values() for u in used.values())
        write_text_atomic(_calibration_page(product, figures, errors, n_used, directory), page)
        pages[product.path.name] = page
    return pages


def _calibration_page(product: _Product, figures: list[tuple[str, str]], errors: list[str],
                      n_used: int, directory: Path) -> str:
    rec = product.record
    rows: list[tuple[str, H.Cell | str]] = [("kind", product.kind),
                                            ("file", H.Cell(product.path.name,
                                                            href=_rel(product.path, directory)))]
    if rec is not None:
        rows += [("registry id", str(rec.id)), ("filter~disperser", rec.physical_filter or "–"),
                 ("valid from (UTC)", rec.valid_from), ("valid to (UTC)", rec.valid_to or "open"),
                 ("product date", rec.calib_date), ("certified", "yes" if rec.certified else "no"),
                 ("registered at", rec.registered_at), ("registered from", rec.source)]
    verdict = None if product.verification is None else bool(product.verification.get("pass"))
    rows.append(("verification", _verdict(verdict)))
    if product.verification_path is not None:
        rows.append(("verification report", H.Cell(product.verification_path.name,
                                                   href=_rel(product.verification_path,
                                                             directory))))
    rows.append(("used by", f"{n_used} exposure(s) of this report"))
    body = [H.table(["field", "value"], [[k, v] for k, v in rows])]
    if product.verification is not None:
        failures = product.verification.get("failures") or []
        if failures:
            body.append(H.note("Failed tests: " + ", ".join(map(str, failures)), "error"))
        body.append("<h2>Verification tests</h2>")
        body.append(_verification_table(product.verification))
    elif product.kind != "eo":
        body.append(H.note("No verification report was registered with this product."))
    if figures:
        body.append("<h2>Figures</h2>")
        body += [H.figure(src, caption) for src, caption in figures]
    body += [H.note(f"Figure not drawn: {e}", "error") for e in errors]
    nav = (f'<nav>{H.link("../index.html", "night")}'
           f'{H.link("../index.html#calibrations", "calibrations")}</nav>')
    return H.page(f"{product.name} — {product.kind}", "\n".join(body), nav=nav)


def _verification_table(doc: dict[str, Any]) -> str:
    """Amps (and the detector) × tests: value, threshold, verdict."""
    entries: dict[str, dict[str, Any]] = {a: e.get("tests", {}) for a, e in
                                          doc.get("amps", {}).items()}
    if doc.get("detector", {}).get("tests"):
        entries["detector"] = doc["detector"]["tests"]
    names = sorted({n for tests in entries.values() for n in tests})
    rows = []
    for amp, tests in entries.items():
        cells: list[H.Cell | str] = [amp]
        for name in names:
            t = tests.get(name)
            if t is None:
                cells.append("–")
                continue
            unit = f" {t['unit']}" if t.get("unit") else ""
            rule = (str(t.get("comparison", "")).replace("value", "v")
                    .replace("threshold", H.fmt_number(t.get("threshold")))
                    .replace("<=", "≤").replace(">=", "≥"))
            text = f"{H.fmt_number(t.get('value'))}{unit} ({rule})"
            cells.append(H.Cell(text, css="pass" if t.get("pass") else "fail"))
        rows.append(cells)
    return H.table(["amp", *names], rows)


# ----------------------------------------------------------------------------- pages


def _status_sentence(row: Any, tasks: list) -> tuple[str, str]:
    status = str(row["status"])
    if status == "failed":
        failed = [t for t in tasks if t.status == "failed"]
        first = failed[0] if failed else None
        what = (f"Failed in task {first.task}: {first.reason}" if first is not None
                else f"Failed: {row['reason']}")
        return "error", what
    if status == "pending":
        return "warn", "Not processed yet: no task has run on this exposure."
    if status == "calibration":
        return "", (f"Calibration frame ({row['image_type']}): an input of the night's "
                    f"{row['image_type']} product when it was built from this night (see the "
                    "calibration pages).")
    return "", "Every task of this exposure is done."


def _exposure_page(row: Any, night: _Night, outputs: ExposureOutputs,
                   manifest: dict[str, Any], used: dict[str, str], calib_pages: dict[str, Path],
                   directory: Path, prev_id: str | None, next_id: str | None) -> str:
    obs_id = str(row["obs_id"])
    tasks = night.tasks.get(obs_id, [])
    links = [H.link("../index.html", "night")]
    links.append(H.link(f"{prev_id}.html", f"← {prev_id}") if prev_id else "<span>first</span>")
    links.append(H.link(f"{next_id}.html", f"{next_id} →") if next_id else "<span>last</span>")
    nav = "<nav>" + " ".join(links) + "</nav>"
    kind, sentence = _status_sentence(row, tasks)
    body = [H.note(sentence, kind)]

    # What the summary says of it: every column with a value.
    cells = []
    for name in row.colnames:
        value = _value(row, name)
        if value is None or (isinstance(value, float | np.floating) and not np.isfinite(value)):
            continue
        if isinstance(value, str | np.str_) and not str(value):
            continue
        unit = row.table[name].unit
        text = str(value) if isinstance(value, str | np.str_) else H.fmt_number(value, 6)
        cells.append([name, H.Cell(text + (f" {unit}" if unit else ""),
                                   value=_data_value(value))])
    body.append("<h2>Summary</h2>")
    body.append(H.table(["column", "value"], cells, table_id="exposure-summary"))

    if tasks:
        body.append("<h2>Tasks</h2>")
        body.append(H.table(
            ["task", "status", "duration (s)", "attempts", "started (UTC)", "reason"],
            [[t.task, H.Cell(t.status, css="pass" if t.status == "done" else "fail"),
              H.Cell(H.fmt_number(t.duration_s), numeric=True), str(t.attempts), t.started,
              t.reason or ""] for t in tasks]))
    if used:
        body.append("<h2>Calibrations used</h2>")
        rows = []
        for role, name in sorted(used.items()):
            page = calib_pages.get(name)
            rows.append([role, H.Cell(name, href=_rel(page, directory) if page else None)])
        body.append(H.table(["product", "file (linked when registered in this repository)"],
                            rows))
    files = [(label, path) for label, path in (
        ("post-ISR image", outputs.postisr), ("source catalogue", outputs.catalog),
        ("zeroth order", outputs.centroid), ("spectrum", outputs.spectrum),
        ("atmosphere fit", outputs.atmosphere)) if path is not None]
    if files:
        body.append("<h2>Files</h2><ul>" + "".join(
            f"<li>{H.esc(label)}: {H.link(_rel(p, directory), p.name)}</li>"
            for label, p in files) + "</ul>")
    body.append(_exposure_figures(obs_id, outputs, manifest, directory, row))
    return H.page(f"{obs_id} — {row['image_type']}, {row['filter']}"
                  + (f"~{row['disperser']}" if str(row["disperser"]) not in ("empty", "")
                     else ""), "\n".join(body), nav=nav)


_GROUP_CAPTIONS = MappingProxyType({
    "postisr": "Post-ISR image (ZScale, block means) with mask planes, detected sources "
               "(circles) and the zeroth order (cross); click for the full FITS file.",
    "sources.png": "Detected sources on the detector (marker area grows with brightness).",
    "psf.png": "PSF whiskers across the detector and the FWHM histogram of the PSF stars.",
    "spectrum_spectrogram.png": "Spectrogram cutout with the fitted trace.",
    "spectrum_model.png": "Data, 2D forward model and normalised residuals.",
    "spectrum_psf.png": "PSF parameters against wavelength.",
    "spectrum_lines.png": "Wavelength calibration: line positions minus catalogue values.",
    "spectrum_spectrum.png": "Extracted first-order spectrum with its errors and lines.",
    "atmosphere_fit.png": "Atmosphere fit: data and model, normalised residuals and "
                          "parameter correlations (re-drawn from the stored fit).",
})


def _exposure_figures(obs_id: str, outputs: ExposureOutputs, manifest: dict[str, Any],
                      directory: Path, row: Any) -> str:
    parts = []
    if str(row["status"]) == "calibration":
        return ""
    if outputs.postisr is None:
        parts.append(H.note("No post-ISR image in the repository: ISR did not run or "
                            "failed on this exposure."))
    for group in ("postisr", "psf", "spectrum", "atmosphere"):
        entry = manifest.get(group)
        if entry is None:
            continue
        if entry.get("error"):
            parts.append(H.note(f"{group} figure not drawn: {entry['error']}", "error"))
        for name in entry.get("files", []):
            src = f"{obs_id}/{name}"
            caption = _GROUP_CAPTIONS.get(name) or _GROUP_CAPTIONS.get(group, name)
            href = (_rel(outputs.postisr, directory) if group == "postisr" and outputs.postisr
                    else None)
            parts.append(H.figure(src, caption, href=href))
    is_dispersed = str(row["disperser"]) not in ("empty", "", "none", "unknown")
    if is_dispersed and outputs.spectrum is None and str(row["status"]) != "pending":
        parts.append(H.note("No spectrum: the extraction did not run or failed."))
    if is_dispersed and outputs.spectrum is not None and outputs.atmosphere is None:
        parts.append(H.note("No atmosphere fit for this spectrum."))
    return ("<h2>Figures</h2>\n" + "\n".join(parts)) if parts else ""


def _night_page(repo: Path, out: Path, night: _Night,
                figures: dict[str, tuple[Path, int]], products: Sequence[_Product],
                calib_pages: dict[str, Path], used: dict[str, dict[str, str]]) -> str:
    summary = night.summary
    status = np.asarray(summary["status"], dtype=str) if len(summary) else np.array([], str)
    n = {s: int((status == s).sum()) for s in ("done", "failed", "pending", "calibration")}
    day_obs = sorted({int(d) for d in summary["day_obs"]}) if len(summary) else []
    title = f"Night {', '.join(map(str, day_obs))}" if day_obs else "atmospec report"
    notes = list(night.notes)
    if len(summary) == 0 and night.indexed:
        notes.append(("warn", "This night has no exposures: the index lists no usable raw "
                              "file" + (f" ({len(night.rejected)} rejected, see below)."
                                        if night.rejected else ".")))
    elif len(summary) and n["calibration"] == len(summary):
        notes.append(("warn", f"Only calibration frames this night ({n['calibration']}): no "
                              "science exposure, so no image-quality or spectroscopy result."))
    if n["failed"]:
        notes.append(("error", f"{n['failed']} exposure(s) failed: see Failures."))
    if n["pending"]:
        notes.append(("warn", f"{n['pending']} exposure(s) not processed yet."))
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    body = [f"<p>Repository {H.esc(repo.resolve())} · "
            f"{len(summary)} exposures: {n['done']} done, {n['failed']} failed, "
            f"{n['pending']} pending, {n['calibration']} calibration frames · generated "
            f"{generated} by atmospec {H.esc(atmospec.__version__)}</p>"]
    body += [H.note(text, kind) for kind, text in notes]
    body.append('<nav><a href="#log">observing log</a><a href="#failures">failures</a>'
                '<a href="#quality">image quality</a><a href="#calibrations">calibrations</a>'
                '<a href="#spectro">spectroscopy</a></nav>')

    # Observing log.
    body.append('<h2 id="log">Observing log</h2>')
    if night.summary_file is not None:
        body.append(f"<p>From {H.link(_rel(night.summary_file, out), SUMMARY_FILE.as_posix())}; "
                    "click a column title to sort, an exposure to open its page.</p>")
    if len(summary):
        rows, classes = [], []
        for row in summary:
            cells: list[H.Cell | str] = []
            for column, _, digits in LOG_COLUMNS:
                value = _value(row, column)
                if column == "obs_id":
                    cells.append(H.Cell(str(value), value=str(value),
                                        href=f"exposures/{value}.html"))
                elif column == "filter":  # the configuration's colour in every plot
                    cells.append(H.Cell(_swatch(str(row["filter"]), str(row["disperser"]))
                                        + H.esc(value), value=str(value), raw_html=True))
                elif digits is None:
                    cells.append(H.Cell(str(value) if value is not None else "",
                                        value=_data_value(value)))
                else:
                    cells.append(H.Cell(H.fmt_number(value, max(digits, 1)),
                                        value=_data_value(value), numeric=True))
            rows.append(cells)
            classes.append(str(row["status"]))
        body.append(H.table([t for _, t, _ in LOG_COLUMNS], rows, table_id="summary",
                            columns=[c for c, _, _ in LOG_COLUMNS], row_classes=classes,
                            sortable=True))
    else:
        body.append("<p>No exposures.</p>")

    # Failures.
    body.append('<h2 id="failures">Failures</h2>')
    failed_rows = []
    for row in summary[status == "failed"] if len(summary) else []:
        obs_id = str(row["obs_id"])
        for t in night.tasks.get(obs_id, []):
            if t.status == "failed":
                failed_rows.append([H.Cell(obs_id, href=f"exposures/{obs_id}.html"), t.task,
                                    t.reason or ""])
        if not any(t.status == "failed" for t in night.tasks.get(obs_id, [])):
            failed_rows.append([H.Cell(obs_id, href=f"exposures/{obs_id}.html"), "",
                                str(row["reason"])])
    body.append(H.table(["exposure", "task", "reason"], failed_rows, table_id="failures")
                if failed_rows else "<p>No exposure failed.</p>")
    if night.rejected:
        body.append("<p>Files of the night directory that are not usable raw LATISS frames "
                    "(skipped):</p>")
        body.append(H.table(["file", "reason"], [[p.name, r] for p, r in night.rejected],
                            table_id="rejected"))
    else:
        body.append("<p>No raw file was rejected.</p>")

    # Image quality.
    body.append('<h2 id="quality">Image quality</h2>')
    body += _night_figure_html(figures, out, "quality",
                               "No characterized exposure: no image-quality plot.")
    positions = layout.night_plot_dir(repo) / "source_positions.png"
    if positions.is_file() and "image_quality" in figures:
        body.append(H.figure(_rel(positions, out), "Where sources fell on the detector over "
                             "the night, and the dispersed exposures' zeroth orders (drawn "
                             "by atmospec night)."))

    # Calibrations.
    body.append('<h2 id="calibrations">Calibrations</h2>')
    if products:
        rows = []
        for p in products:
            rec = p.record
            verdict = None if p.verification is None else bool(p.verification.get("pass"))
            page = calib_pages.get(p.path.name)
            rows.append([
                H.Cell(p.name, href=_rel(page, out) if page else None), p.kind,
                (rec.physical_filter or "") if rec else "",
                rec.valid_from if rec else "", (rec.valid_to or "open") if rec else "",
                ("yes" if rec.certified else "no") if rec else "",
                _verdict(verdict) if p.kind != "eo" else H.Cell("–"),
                ", ".join(p.verification.get("failures", [])) if p.verification else "",
                H.Cell(str(sum(p.path.name in u.values() for u in used.values())),
                       numeric=True)])
        body.append(H.table(["product", "kind", "filter~disperser", "valid from (UTC)",
                             "valid to (UTC)", "certified", "verification", "failed tests",
                             "exposures using it"], rows, table_id="calibrations",
                            sortable=True))
    else:
        body.append("<p>No calibration product is registered in this repository.</p>")
    shipped = sorted({name for u in used.values() for name in u.values()} - set(calib_pages))
    if shipped:
        body.append("<p>Also used, shipped with atmospec or given outside the registry (no "
                    "verification in this repository): " + ", ".join(map(H.esc, shipped))
                    + ".</p>")

    # Spectroscopy.
    body.append('<h2 id="spectro">Spectroscopy</h2>')
    body += _night_figure_html(figures, out, "spectro",
                               "No spectrum was extracted this night: no spectroscopy plot.")
    if len(summary) and "pwv_mm" in summary.colnames:
        rows = []
        for row in summary[np.isfinite(np.asarray(summary["pwv_mm"], dtype=float))]:
            obs_id = str(row["obs_id"])
            rows.append([H.Cell(obs_id, href=f"exposures/{obs_id}.html"),
                         str(row["target"]), H.Cell(H.fmt_number(row["airmass"], 4),
                                                    numeric=True),
                         _plus_minus(row, "pwv_mm"), _plus_minus(row, "ozone_du"),
                         _plus_minus(row, "vaod"),
                         H.Cell(H.fmt_number(row["atmosphere_chi2_ndof"]), numeric=True)])
        if rows:
            body.append(H.table(["exposure", "target", "airmass", "PWV (mm)", "ozone (DU)",
                                 "VAOD", "χ²/ndof"], rows, table_id="atmosphere",
                                sortable=True))
    body.append("<p>Line positions are shown per exposure (wavelength-calibration figure on "
                "each dispersed exposure's page); the night summary does not carry them.</p>")
    return H.page(f"{title} — atmospec report", "\n".join(body), sortable=True)


def _plus_minus(row: Any, name: str) -> H.Cell:
    """``value ± error`` of a summary column and its ``_err`` twin."""
    return H.Cell(f"{H.fmt_number(row[name])} ± {H.fmt_number(row[name + '_err'], 2)}",
                  value=_data_value(row[name]), numeric=True)


def _night_figure_html(figures: dict[str, tuple[Path, int]], out: Path, section: str,
                       empty: str) -> list[str]:
    parts = []
    for stem, _, caption, where in NIGHT_FIGURES:
        if where != section or stem not in figures:
            continue
        png, count = figures[stem]
        sidecar = png.with_suffix(".json")
        parts.append(H.figure(_rel(png, out), f"{caption} ({count} exposures; values drawn: "
                              f"{sidecar.name})"))
    return parts or [H.note(empty)]
