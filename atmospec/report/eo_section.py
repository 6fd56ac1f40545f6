"""The "Electro-optical tests" section of the night page, from ``REPO/eo/eo_figures.ecsv``.

Written by ``atmospec eo`` (`atmospec.night.eo`), the run-wide long table holds one row per
detector, amp, figure and specification with its verdict. The section shows, per detector,
a table of figure × (amps passing and failing, the worst amp and its value, the
specification), then the mosaic and the histogram of every measured figure
(`atmospec.plots.eo_mosaic`), drawn into ``<report>/eo/`` and redrawn only when the table
is newer. A repository without the table has no such section.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table

from atmospec.calib.eo_specs import DETECTOR_AMP
from atmospec.plots.exposure import newer_than
from atmospec.report import html as H

__all__ = ["EoFigureRow", "eo_figures", "eo_section", "figure_rows"]

@dataclass(frozen=True)
class EoFigureRow:
    """One figure of one detector, over its amps."""

    figure: str
    """Figure of merit."""
    unit: str
    """Its unit."""
    spec: str
    """Specifications and their limits (``CCD-007 < 8``), empty when none applies."""
    n_measured: int
    """Amps with a value."""
    n_pass: int
    """Amps passing every specification (0 when there is none)."""
    n_fail: int
    """Amps failing one."""
    worst_amp: str
    """The amp nearest to (or furthest beyond) a limit; empty without a specification."""
    worst_value: float
    """Its value (NaN when none)."""
    median: float
    """Median over the measured amps."""


def _text(value: object) -> str:
    return "" if np.ma.is_masked(value) else str(value)


def _float(value: object) -> float:
    return math.nan if np.ma.is_masked(value) else float(value)  # type: ignore[arg-type]


def _limit_text(spec: str, lower: float, upper: float) -> str:
    if math.isfinite(lower) and math.isfinite(upper):
        return f"{spec} in ({lower:.3g}, {upper:.3g})"
    if math.isfinite(upper):
        return f"{spec} < {upper:.3g}"
    return f"{spec} > {lower:.3g}" if math.isfinite(lower) else spec


def figure_rows(table: Table, detector: str) -> list[EoFigureRow]:
    """The summary of every figure of one detector, in table order.

    The worst amp is the one with the smallest margin to a limit of its specifications
    (``upper − value``, ``value − lower``): the largest value under an upper limit, the
    smallest over a lower one.
    """
    rows = table[(np.asarray(table["detector"], dtype=str) == detector)
                 & (np.asarray(table["amp"], dtype=str) != DETECTOR_AMP)]
    figures = np.asarray(rows["figure"], dtype=str)
    out = []
    for figure in dict.fromkeys(figures):
        sel = rows[figures == figure]
        values: dict[str, float] = {}
        failed: set[str] = set()
        margins: dict[str, float] = {}
        specs: dict[str, str] = {}
        for r in sel:
            amp, value = _text(r["amp"]), _float(r["value"])
            values[amp] = value
            if _text(r["status"]) == "fail":
                failed.add(amp)
            spec = _text(r["spec"]) if "spec" in sel.colnames else ""
            if not spec:
                continue
            lower = _float(r["lower"]) if "lower" in sel.colnames else math.nan
            upper = _float(r["upper"]) if "upper" in sel.colnames else math.nan
            specs.setdefault(spec, _limit_text(spec, lower, upper))
            if math.isfinite(value):
                margin = min(upper - value if math.isfinite(upper) else math.inf,
                             value - lower if math.isfinite(lower) else math.inf)
                margins[amp] = min(margins.get(amp, math.inf), margin)
        measured = [a for a, v in values.items() if math.isfinite(v)]
        worst = min(margins, key=margins.__getitem__) if margins else ""
        finite = np.array([values[a] for a in measured], dtype=float)
        out.append(EoFigureRow(
            figure, _text(sel["unit"][0]) if "unit" in sel.colnames else "",
            "; ".join(specs.values()), len(measured),
            len([a for a in measured if a not in failed]) if specs else 0, len(failed),
            worst, values.get(worst, math.nan),
            float(np.median(finite)) if finite.size else math.nan))
    return out


def eo_figures(table: Table, source: Path, directory: Path, force: bool
               ) -> dict[str, tuple[Path, Path]]:
    """Draw (or keep) the mosaic and the histogram of every measured figure.

    Parameters
    ----------
    table : astropy.table.Table
        The run-wide EO table.
    source : pathlib.Path
        Its file: figures newer than it are kept.
    directory : pathlib.Path
        Where they go (``<report>/eo``).
    force : bool
        Redraw even when up to date.

    Returns
    -------
    dict
        Figure → (mosaic, histogram) PNGs.
    """
    from atmospec.plots import eo_mosaic

    directory.mkdir(parents=True, exist_ok=True)
    drawn = {}
    for figure in eo_mosaic.drawn_figures(table):
        mosaic = directory / f"{figure}_mosaic.png"
        hist = directory / f"{figure}_hist.png"
        if force or not newer_than(mosaic, [source]):
            eo_mosaic.plot_eo_mosaic(table, figure, mosaic)
        if force or not newer_than(hist, [source]):
            eo_mosaic.plot_eo_histogram(table, figure, hist)
        drawn[figure] = (mosaic, hist)
    return drawn


def _detector_table(rows: list[EoFigureRow], detector: str) -> str:
    cells = []
    for r in rows:
        fail = H.Cell(str(r.n_fail), value=str(r.n_fail), numeric=True,
                      css="fail" if r.n_fail else None)
        cells.append([
            r.figure, r.unit,
            H.Cell(str(r.n_measured), value=str(r.n_measured), numeric=True),
            H.Cell(str(r.n_pass) if r.spec else "–", value=str(r.n_pass), numeric=True,
                   css="pass" if r.spec and r.n_pass == r.n_measured else None),
            fail, r.worst_amp,
            H.Cell(H.fmt_number(r.worst_value), value=H.data_value(r.worst_value),
                   numeric=True),
            H.Cell(H.fmt_number(r.median), value=H.data_value(r.median), numeric=True),
            r.spec or "no specification"])
    return H.table(["figure", "unit", "amps measured", "pass", "fail", "worst amp",
                    "worst value", "median", "specification"], cells,
                   table_id=f"eo-{detector}", sortable=True)


def eo_section(table: Table | None, problem: str | None, out: Path,
               figures: dict[str, tuple[Path, Path]]) -> list[str]:
    """The HTML of the section; empty without an EO table (and without a problem).

    Parameters
    ----------
    table : astropy.table.Table or None
        The run-wide EO table (`atmospec.report.read.read_eo`).
    problem : str or None
        Why it could not be read.
    out : pathlib.Path
        Report directory (links are relative to it).
    figures : dict
        Drawn figures (`eo_figures`); empty when the report draws none.
    """
    if table is None and problem is None:
        return []
    body = ['<h2 id="eo">Electro-optical tests</h2>']
    if table is None:
        return [*body, H.note(str(problem), "error")]
    detectors = list(dict.fromkeys(np.asarray(table["detector"], dtype=str)))
    vendors = {d: _text(v) for d, v in zip(table["detector"], table["vendor"], strict=True)
               } if "vendor" in table.colnames else {}
    body.append(f"<p>{len(detectors)} detector(s) from eo/eo_figures.ecsv "
                "(written by atmospec eo): per figure, the amps passing and failing its "
                "specification, the amp nearest to (or furthest beyond) its limit, and the "
                "median.</p>")
    for det in detectors:
        rows = figure_rows(table, det)
        amps = {_text(a) for a, d in zip(table["amp"], table["detector"], strict=True)
                if _text(d) == det} - {DETECTOR_AMP}
        failing = {_text(a) for a, d, s in zip(table["amp"], table["detector"],
                                                table["status"], strict=True)
                   if _text(d) == det and _text(s) == "fail"}
        vendor = f" ({vendors[det]})" if vendors.get(det) else ""
        whole = "".join(f"; {_text(r['spec'])} over the CCD ({_text(r['figure'])} "
                        f"{_float(r['value']):.3g}): {_text(r['status'])}"
                        for r in table if _text(r["detector"]) == det
                        and _text(r["amp"]) == DETECTOR_AMP)
        body.append(f"<h3>{H.esc(det)}{H.esc(vendor)}: {len(amps)} amps, "
                    f"{len(amps - failing)} pass every specification{H.esc(whole)}</h3>")
        body.append(_detector_table(rows, det))
    if figures:
        body.append("<h3>Mosaics and histograms</h3>")
        body.append("<p>Each amp at its place on its detector and each detector at its "
                    "place in the focal plane; red outlines: amps failing a specification; "
                    "dashed lines: the specification limits.</p>")
        for figure, (mosaic, hist) in figures.items():
            body.append(H.figure(H.rel(mosaic, out), f"{figure}: every amp (mosaic)"))
            body.append(H.figure(H.rel(hist, out), f"{figure}: histogram over the amps"))
    return body
