"""The night page of the report (``index.html``) and its figures: a header with notes on
anything unusual, then the observing log, failures, image quality, calibrations, the
electro-optical tests when the repository has them (`atmospec.report.eo_section`) and
spectroscopy, one small function per section."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from astropy.table import Table

import atmospec
from atmospec import layout
from atmospec.plots.common import FIGURE_VERSION, config_label
from atmospec.plots.exposure import newer_than
from atmospec.report import html as H
from atmospec.report.read import SUMMARY_FILE, Night, Product, row_value
from atmospec.report.truth import TRUTH_SUFFIX, with_truth

__all__ = ["LOG_COLUMNS", "NIGHT_FIGURES", "LogColumn", "night_figures", "night_page"]


@dataclass(frozen=True)
class LogColumn:
    """One column of the observing log."""

    column: str
    """Summary column (the cells' ``data-value`` and ``data-column``)."""
    title: str
    """Header text."""
    digits: int | None = None
    """Significant digits of a number; None for text."""
    extra: bool = False
    """Hidden until the reader ticks "all columns": the log fits a 1400 px window with the
    key columns alone (issue 21: 14 columns in a row scrolled sideways)."""


#: Columns of the observing log, in order. Truth columns (`TRUTH_SUFFIX`) are added after
#: their measurement on a simulated night.
LOG_COLUMNS: tuple[LogColumn, ...] = (
    LogColumn("seq_num", "seq"), LogColumn("obs_id", "exposure", extra=True),
    LogColumn("time_begin", "start (TAI)"), LogColumn("image_type", "type"),
    LogColumn("target", "target"), LogColumn("filter", "filter~disperser"),
    LogColumn("disperser", "disperser", extra=True),
    LogColumn("exptime", "exptime (s)", 3), LogColumn("airmass", "airmass", 4),
    LogColumn("fwhm_arcsec", "FWHM (″)", 3), LogColumn("fwhm_px", "FWHM (pixel)", 3, extra=True),
    LogColumn("ellipticity", "ellipticity", 3, extra=True),
    LogColumn("sky_e_per_s", "sky (e⁻/s/px)", 3), LogColumn("n_sources", "sources", 0),
    LogColumn("n_saturated", "saturated sources", 0, extra=True),
    LogColumn("pwv_mm", "PWV (mm)", 3), LogColumn("ozone_du", "ozone (DU)", 4, extra=True),
    LogColumn("vaod", "VAOD", 3, extra=True),
    LogColumn("status", "status"),
)

#: Truth columns shown with the key columns (beside FWHM and PWV); the others are extra.
_KEY_TRUTH = frozenset({"fwhm_arcsec", "pwv_mm"})

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

#: Exposure states counted in the header.
_STATES = ("done", "failed", "pending", "calibration")


# ----------------------------------------------------------------------------- figures


def night_figures(summary: Table, source: Path | None, directory: Path,
                  force: bool) -> dict[str, tuple[Path, int]]:
    """Draw (or keep) the night figures with their sidecars.

    Parameters
    ----------
    summary : astropy.table.Table
        Night summary.
    source : pathlib.Path or None
        File the summary was read from (figures newer than it are kept); None: redraw.
    directory : pathlib.Path
        Where the figures go (``<report>/night``).
    force : bool
        Redraw even when up to date.

    Returns
    -------
    dict
        Figure stem → (PNG, exposures shown); figures with nothing to show are left out.
    """
    from atmospec.plots import night as night_plots

    counts = _figure_counts(summary)
    written = {}
    for stem, function, _, _ in NIGHT_FIGURES:
        if not counts[stem]:
            continue
        png = directory / f"{stem}.png"
        fresh = (not force and source is not None and newer_than(png, [source])
                 and newer_than(png.with_suffix(".json"), [source])
                 and _sidecar_version(png.with_suffix(".json")) == FIGURE_VERSION)
        if not fresh:
            plot: Callable[..., Path] = getattr(night_plots, function)
            plot(summary, png, sidecar=True)
        written[stem] = (png, counts[stem])
    return written


def _sidecar_version(sidecar: Path) -> int | None:
    """The `FIGURE_VERSION` a night figure was drawn by (1 before it was recorded)."""
    try:
        doc = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    return int(doc.get("figure_version", 1)) if isinstance(doc, dict) else None


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


def _figure_html(figures: dict[str, tuple[Path, int]], out: Path, section: str,
                 empty: str) -> list[str]:
    parts = []
    for stem, _, caption, where in NIGHT_FIGURES:
        if where != section or stem not in figures:
            continue
        png, count = figures[stem]
        sidecar = png.with_suffix(".json")
        parts.append(H.figure(H.rel(png, out), f"{caption} ({count} exposures; values drawn: "
                              f"{sidecar.name})"))
    return parts or [H.note(empty)]


# ----------------------------------------------------------------------------- the page


def night_page(repo: Path, out: Path, night: Night, figures: dict[str, tuple[Path, int]],
               products: Sequence[Product], calib_pages: dict[str, Path],
               used: dict[str, dict[str, str]], eo: Sequence[str] = ()) -> str:
    """The HTML of the night page.

    Parameters
    ----------
    repo : pathlib.Path
        The repository.
    out : pathlib.Path
        Report directory (links are relative to it).
    night : Night
        What the report read of the night.
    figures : dict
        Night figures drawn (`night_figures`).
    products : sequence of Product
        Calibration products.
    calib_pages : dict
        Calibration pages by product file name.
    used : dict
        Calibrations used, by OBSID (kind → file name).
    eo : sequence of str
        The electro-optical section (`atmospec.report.eo_section.eo_section`); empty: none.

    Returns
    -------
    str
        The page.
    """
    summary = night.summary
    status = np.asarray(summary["status"], dtype=str) if len(summary) else np.array([], str)
    counts = {s: int((status == s).sum()) for s in _STATES}
    day_obs = sorted({int(d) for d in summary["day_obs"]}) if len(summary) else []
    title = f"Night {', '.join(map(str, day_obs))}" if day_obs else "atmospec report"
    shown = with_truth(summary, night.truth)  # a real night: the summary itself
    body = [*_header(repo, night, counts, bool(eo)),
            *_observing_log(night, shown, out),
            *_failures(night, status),
            *_image_quality(repo, out, figures),
            *_calibrations(out, products, calib_pages, used, night.builds),
            *eo,
            *_spectroscopy(out, shown, figures)]
    return H.page(f"{title} — atmospec report", "\n".join(body), sortable=True)


def _header(repo: Path, night: Night, n: dict[str, int], eo: bool = False) -> list[str]:
    """Counts, generation stamp, notes on anything unusual and the section links."""
    summary = night.summary
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
    unbuilt = [b for b in night.builds if b["status"] in ("failed", "not built")]
    if unbuilt:
        notes.append(("error" if any(b["status"] == "failed" for b in unbuilt) else "warn",
                      f"{len(unbuilt)} calibration product(s) of the night could not be "
                      "built: see Calibrations."))
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
                + ('<a href="#eo">electro-optical tests</a>' if eo else "")
                + '<a href="#spectro">spectroscopy</a></nav>')
    return body


def _log_columns(summary: Table) -> list[LogColumn]:
    """`LOG_COLUMNS` the summary has, each followed by its truth column when there is one."""
    out = []
    for c in LOG_COLUMNS:
        if c.column not in summary.colnames:
            continue
        out.append(c)
        if c.column + TRUTH_SUFFIX in summary.colnames:
            out.append(LogColumn(c.column + TRUTH_SUFFIX, f"{c.title} truth", c.digits,
                                 extra=c.column not in _KEY_TRUTH))
    return out


def _observing_log(night: Night, summary: Table, out: Path) -> list[str]:
    """One sortable row per exposure of the summary: the key columns of `LOG_COLUMNS`,
    the others behind a pure-CSS toggle. ``summary`` is the night's with its truth columns
    (`atmospec.report.truth.with_truth`)."""
    body = ['<h2 id="log">Observing log</h2>']
    if night.summary_file is not None:
        body.append(f"<p>From {H.link(H.rel(night.summary_file, out), SUMMARY_FILE.as_posix())}; "
                    "click a column title to sort, an exposure to open its page"
                    + ("; <i>truth</i> columns: the simulator's values" if night.truth else "")
                    + ".</p>")
    if not len(summary):
        body.append("<p>No exposures.</p>")
        return body
    columns = _log_columns(summary)
    rows = [[_log_cell(row, c) for c in columns] for row in summary]
    classes = [str(row["status"]) for row in summary]
    extra = [c.title for c in columns if c.extra]
    table = H.table([c.title for c in columns], rows, table_id="summary",
                    columns=[c.column for c in columns], row_classes=classes, sortable=True,
                    column_classes=[_column_class(c) for c in columns])
    body.append(H.column_toggle("log-all-columns", f"show all columns ({', '.join(extra)})",
                                table) if extra else table)
    return body


def _column_class(c: LogColumn) -> str | None:
    classes = [name for name, on in (("extra", c.extra), ("clip", c.column == "target"),
                                     ("truth", c.column.endswith(TRUTH_SUFFIX))) if on]
    return " ".join(classes) or None


def _log_cell(row: Table.Row, c: LogColumn) -> H.Cell:
    value = row_value(row, c.column)
    if c.column == "seq_num":  # short, and a link to the page named by the OBSID
        obs_id = str(row["obs_id"])
        return H.Cell(str(value), value=H.data_value(value), href=f"exposures/{obs_id}.html",
                      numeric=True, title=obs_id)
    if c.column == "obs_id":
        return H.Cell(str(value), value=str(value), href=f"exposures/{value}.html")
    if c.column == "time_begin":  # the date is the night's; the full time is the tooltip
        text = str(value or "")
        return H.Cell(text.partition("T")[2][:8] or text, value=H.data_value(value),
                      title=text)
    if c.column == "filter":  # the configuration's name and colour in every plot
        label = config_label(str(row["filter"]), str(row["disperser"]))
        return H.Cell(_swatch(str(row["filter"]), str(row["disperser"])) + H.esc(label),
                      value=str(value), raw_html=True)
    if c.column == "target":
        return H.Cell(str(value or ""), value=H.data_value(value), title=str(value or ""))
    if c.digits is None:
        return H.Cell(str(value) if value is not None else "", value=H.data_value(value))
    return H.Cell(H.fmt_number(value, max(c.digits, 1)), value=H.data_value(value),
                  numeric=True)


def _swatch(filter_name: str, disperser: str) -> str:
    from atmospec.plots.common import config_colour

    return (f'<span class="swatch" style="background:{config_colour(filter_name, disperser)}">'
            "</span>")


def _failures(night: Night, status: np.ndarray) -> list[str]:
    """Failed tasks (or the summary's reason), then the rejected files of the night."""
    summary = night.summary
    body = ['<h2 id="failures">Failures</h2>']
    failed_rows = []
    for row in summary[status == "failed"] if len(summary) else []:
        obs_id = str(row["obs_id"])
        failed = [t for t in night.tasks.get(obs_id, []) if t.status == "failed"]
        for t in failed:
            failed_rows.append([H.Cell(obs_id, href=f"exposures/{obs_id}.html"), t.task,
                                t.reason or ""])
        if not failed:
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
    return body


def _image_quality(repo: Path, out: Path, figures: dict[str, tuple[Path, int]]) -> list[str]:
    body = ['<h2 id="quality">Image quality</h2>']
    body += _figure_html(figures, out, "quality",
                         "No characterized exposure: no image-quality plot.")
    positions = layout.night_plot_dir(repo) / "source_positions.png"
    if positions.is_file() and "image_quality" in figures:
        body.append(H.figure(H.rel(positions, out), "Where sources fell on the detector over "
                             "the night, and the dispersed exposures' zeroth orders (drawn "
                             "by atmospec night)."))
    return body


def _calibrations(out: Path, products: Sequence[Product], calib_pages: dict[str, Path],
                  used: dict[str, dict[str, str]],
                  builds: Sequence[dict[str, str | None]] = ()) -> list[str]:
    """What the night's calibration stage built or could not build; every product with its
    validity, verdict and users; then products used from outside the registry."""
    body = ['<h2 id="calibrations">Calibrations</h2>']
    if builds:
        rows = [[b["file"] or "", b["kind"] or "", b["detector"] or "", b["filter"] or "",
                 H.Cell(b["status"] or "", css="fail" if b["status"] in ("failed", "not built")
                        else None), b["detail"] or ""] for b in builds]
        body.append("<h3>Built from the night's frames</h3>")
        body.append(H.table(["product", "kind", "detector", "filter", "status", "detail"],
                            rows, table_id="builds"))
    if products:
        rows = [_product_row(p, out, calib_pages, used) for p in products]
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
    return body


def _product_row(p: Product, out: Path, calib_pages: dict[str, Path],
                 used: dict[str, dict[str, str]]) -> list[H.Cell | str]:
    rec = p.record
    verdict = None if p.verification is None else bool(p.verification.get("pass"))
    page = calib_pages.get(p.path.name)
    return [
        H.Cell(p.name, href=H.rel(page, out) if page else None), p.kind,
        (rec.physical_filter or "") if rec else "",
        rec.valid_from if rec else "", (rec.valid_to or "open") if rec else "",
        ("yes" if rec.certified else "no") if rec else "",
        H.verdict(verdict) if p.kind != "eo" else H.Cell("–"),
        ", ".join(p.verification.get("failures", [])) if p.verification else "",
        H.Cell(str(sum(p.path.name in u.values() for u in used.values())), numeric=True)]


def _spectroscopy(out: Path, summary: Table, figures: dict[str, tuple[Path, int]]
                  ) -> list[str]:
    """Night spectroscopy figures and the fitted atmosphere of each spectrum."""
    body = ['<h2 id="spectro">Spectroscopy</h2>']
    body += _figure_html(figures, out, "spectro",
                         "No spectrum was extracted this night: no spectroscopy plot.")
    if len(summary) and "pwv_mm" in summary.colnames:
        # Each fitted parameter, then the simulator's value beside it on a simulated night.
        params = (("pwv_mm", "PWV (mm)"), ("ozone_du", "ozone (DU)"), ("vaod", "VAOD"))
        truths = {name for name, _ in params if name + TRUTH_SUFFIX in summary.colnames}
        headers = ["exposure", "target", "airmass"]
        columns = ["obs_id", "target", "airmass"]
        for name, title in params:
            headers += [title] + ([f"{title} truth"] if name in truths else [])
            columns += [name] + ([name + TRUTH_SUFFIX] if name in truths else [])
        rows = []
        for row in summary[np.isfinite(np.asarray(summary["pwv_mm"], dtype=float))]:
            obs_id = str(row["obs_id"])
            cells = [H.Cell(obs_id, href=f"exposures/{obs_id}.html"), str(row["target"]),
                     H.Cell(H.fmt_number(row["airmass"], 4), numeric=True)]
            for name, _ in params:
                cells.append(_plus_minus(row, name))
                if name in truths:
                    cells.append(H.Cell(H.fmt_number(row[name + TRUTH_SUFFIX]), numeric=True,
                                        value=H.data_value(row[name + TRUTH_SUFFIX])))
            rows.append([*cells, H.Cell(H.fmt_number(row["atmosphere_chi2_ndof"]),
                                        numeric=True),
                         H.Cell(_error_scale(row), numeric=True)])
        if rows:
            extra = ["atmosphere_chi2_ndof", "atmosphere_error_scale"]
            body.append(H.table([*headers, "χ²/ndof", "error scale"], rows,
                                table_id="atmosphere", columns=[*columns, *extra],
                                sortable=True,
                                column_classes=[
                                    "truth" if c.endswith(TRUTH_SUFFIX) else None
                                    for c in [*columns, *extra]]))
            body.append("<p>Errors as in each exposure's atmosphere plot: the fit's, scaled "
                        "by √(χ²/ndof) when above 1 (the error scale; 1: unscaled), plus in "
                        "quadrature the fit's systematic errors (see the plot's title).</p>")
    body.append("<p>Line positions are shown per exposure (wavelength-calibration figure on "
                "each dispersed exposure's page); the night summary does not carry them.</p>")
    return body


def _error_scale(row: Table.Row) -> str:
    """The summary's ``atmosphere_error_scale`` (absent from a summary written before it)."""
    if "atmosphere_error_scale" not in row.colnames:
        return "–"
    return H.fmt_number(row["atmosphere_error_scale"], 3)


def _plus_minus(row: Table.Row, name: str) -> H.Cell:
    """``value ± error`` of a summary column and its ``_err`` twin."""
    return H.Cell(f"{H.fmt_number(row[name])} ± {H.fmt_number(row[name + '_err'], 2)}",
                  value=H.data_value(row[name]), numeric=True)
