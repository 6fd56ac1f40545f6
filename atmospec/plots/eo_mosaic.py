"""Mosaics and histograms of one electro-optical figure over every amp of a run.

Both read the run-wide long table of ``atmospec eo`` (``REPO/eo/eo_figures.ecsv``: one row
per detector, amp, figure and specification, `atmospec.calib.eo_specs.verdict_table`) and
select one figure from it:

* `plot_eo_mosaic`: each amp a patch at its place on its detector (the camera description's
  amplifier grid, `atmospec.camera.description.amp_grid`), each detector at its slot in its
  raft and each raft at its bay in the focal plane
  (`atmospec.camera.description.detector_place`); only the detectors present are drawn, so
  a single detector or a raft fills the figure. Colour is the value (a logarithmic scale
  for CTI, dark current and the defect fraction), amps not measured are grey, amps failing
  a specification are outlined in red, and each specification limit is a line across the
  colour bar, as in the camera team's focal-plane summaries.
* `plot_eo_histogram`: the values of every amp with the specification limits as vertical
  lines and the number of failing amps in the title.

Built with `matplotlib.figure.Figure` and the Agg canvas (`atmospec.plots.common.save_png`):
no pyplot, no global state; each figure is dropped once written.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table
from matplotlib import colormaps
from matplotlib.collections import PatchCollection
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from atmospec.calib.eo_specs import DETECTOR_AMP
from atmospec.camera.description import amp_grid, detector_place
from atmospec.plots.common import save_png

log = logging.getLogger(__name__)

__all__ = [
    "AMP_HEIGHT",
    "AMP_WIDTH",
    "DETECTOR_PITCH",
    "FAIL_COLOUR",
    "RAFT_PITCH",
    "AmpValue",
    "SpecLimit",
    "amp_values",
    "detector_origins",
    "drawn_figures",
    "eo_histogram_figure",
    "eo_mosaic_figure",
    "figure_limits",
    "is_log_figure",
    "plot_eo_figures",
    "plot_eo_histogram",
    "plot_eo_mosaic",
]

#: Size of an amp's patch in the mosaic's units (a detector is 1 × 1: 8 × 2 segments of
#: 509 × 2000 or 512 × 2002 pixels, a square CCD).
AMP_WIDTH = 1.0 / 8
AMP_HEIGHT = 1.0 / 2
#: Distance between neighbouring detectors of a raft (a thin gap between them).
DETECTOR_PITCH = 1.06
#: Distance between neighbouring raft bays (a wider gap between rafts).
RAFT_PITCH = 3 * DETECTOR_PITCH + 0.25
#: Outline of the amps failing a specification.
FAIL_COLOUR = "red"
#: Colour of amps not measured.
_MISSING = "0.85"
#: Figures drawn on a logarithmic scale: they span decades (CTI, dark current, defects).
_LOG_PREFIXES = ("cti_", "dark_current", "defect_fraction")
DPI = 100


def is_log_figure(figure: str) -> bool:
    """Whether ``figure`` is drawn on a logarithmic scale (CTI, dark current, defects)."""
    return figure.startswith(_LOG_PREFIXES)


@dataclass(frozen=True)
class AmpValue:
    """One amp's value of a figure, and its verdict over every specification."""

    detector: str
    """Detector (``R22_S11``)."""
    vendor: str
    """Sensor vendor of the detector (``ITL``, ``E2V``)."""
    amp: str
    """Amp (``C10``)."""
    value: float
    """The figure (NaN: not measured)."""
    failed: tuple[str, ...]
    """Specifications it fails (empty: passes or has none)."""


@dataclass(frozen=True)
class SpecLimit:
    """One limit of one specification on the figure."""

    spec: str
    """Identifier (``CCD-007``)."""
    value: float
    """The limit."""
    side: str
    """``upper`` (values must stay below) or ``lower`` (must exceed)."""
    vendor: str
    """Vendor it holds for when it differs between the run's vendors, else empty."""

    @property
    def label(self) -> str:
        """``CCD-007 < 8`` (``PTC-A00 > -3.52e-06 (E2V)``)."""
        sign = "<" if self.side == "upper" else ">"
        tail = f" ({self.vendor})" if self.vendor else ""
        return f"{self.spec} {sign} {self.value:.3g}{tail}"


def _text(value: object) -> str:
    return "" if np.ma.is_masked(value) else str(value)


def _float(value: object) -> float:
    return math.nan if np.ma.is_masked(value) else float(value)  # type: ignore[arg-type]


def _rows(table: Table, figure: str) -> Table:
    """The amps' rows of ``figure``: rows judging a whole detector (CCD-012 over the CCD,
    amp `DETECTOR_AMP`) have no place among the amps."""
    return table[(np.asarray(table["figure"], dtype=str) == figure)
                 & (np.asarray(table["amp"], dtype=str) != DETECTOR_AMP)]


def amp_values(table: Table, figure: str) -> list[AmpValue]:
    """Every amp's value of ``figure`` in the long table, in table order.

    Parameters
    ----------
    table : astropy.table.Table
        Long EO table (columns ``detector, vendor, amp, figure, value, spec, status``).
    figure : str
        Figure to select (``read_noise``).

    Returns
    -------
    list of AmpValue
        One per (detector, amp); an amp judged by several specifications is failed by
        each row of status ``fail``.
    """
    found: dict[tuple[str, str], tuple[str, float, list[str]]] = {}
    for row in _rows(table, figure):
        key = (_text(row["detector"]), _text(row["amp"]))
        entry = found.setdefault(key, (_text(row["vendor"]), _float(row["value"]), []))
        if _text(row["status"]) == "fail":
            entry[2].append(_text(row["spec"]))
    return [AmpValue(det, vendor, amp, value, tuple(failed))
            for (det, amp), (vendor, value, failed) in found.items()]


def figure_limits(table: Table, figure: str) -> list[SpecLimit]:
    """The distinct specification limits on ``figure`` in the table (finite ones only).

    A limit holding for some vendors only (PTC-A00's ranges) is labelled with them.
    """
    rows = _rows(table, figure)
    vendors_all = {_text(v) for v in rows["vendor"]} if len(rows) else set()
    by_limit: dict[tuple[str, float, str], set[str]] = {}
    for row in rows:
        spec = _text(row["spec"])
        if not spec:
            continue
        for side in ("lower", "upper"):
            value = _float(row[side])
            if math.isfinite(value):
                by_limit.setdefault((spec, value, side), set()).add(_text(row["vendor"]))
    limits = []
    for (spec, value, side), vendors in by_limit.items():
        vendor = "" if vendors == vendors_all else ", ".join(sorted(vendors))
        limits.append(SpecLimit(spec, value, side, vendor))
    return sorted(limits, key=lambda s: (s.spec, s.value))


def drawn_figures(table: Table) -> list[str]:
    """Figures of the table measured on at least one amp, in table order."""
    names = np.asarray(table["figure"], dtype=str)
    values = np.array([_float(v) for v in table["value"]], dtype=float)
    amps = np.asarray(table["amp"], dtype=str) != DETECTOR_AMP
    return [f for f in dict.fromkeys(names) if np.isfinite(values[(names == f) & amps]).any()]


def _unit(table: Table, figure: str) -> str:
    rows = _rows(table, figure)
    return _text(rows["unit"][0]) if len(rows) and "unit" in rows.colnames else ""


def _norm(values: np.ndarray, limits: Iterable[SpecLimit], log_scale: bool
          ) -> Normalize:
    """Colour range over the values and the limits (so each limit shows on the bar)."""
    points = np.concatenate([values[np.isfinite(values)],
                             np.array([s.value for s in limits], dtype=float)])
    if log_scale:
        points = points[points > 0]
    if points.size == 0:
        return Normalize(0.0, 1.0)
    lo, hi = float(points.min()), float(points.max())
    # A margin of 3 % of the range on each side: a limit at an end stays visible.
    if log_scale:
        if not hi > lo:
            lo, hi = lo / 2, hi * 2
        pad = (hi / lo) ** 0.03
        return LogNorm(lo / pad, hi * pad)
    if not hi > lo:
        half = 0.5 * abs(lo) if lo else 0.5
        lo, hi = lo - half, hi + half
    pad = 0.03 * (hi - lo)
    return Normalize(lo - pad, hi + pad)


def _log_scale(figure: str, values: np.ndarray) -> bool:
    """Log scale for the figures spanning decades, when every value is positive."""
    finite = values[np.isfinite(values)]
    return is_log_figure(figure) and finite.size > 0 and bool(np.all(finite > 0))


def detector_origins(detectors: Iterable[str]) -> dict[str, tuple[float, float]]:
    """Lower-left corner of each detector in the mosaic's units.

    A detector of a focal-plane bay is at ``bay × RAFT_PITCH + cell × DETECTOR_PITCH``
    (`atmospec.camera.description.detector_place`); rafts naming no bay (TS8's
    ``RTM-010``, LATISS) are laid side by side in name order on the bottom row; detectors
    with no cell in their raft (corner-raft guide sensors) follow in a row below.
    """
    places = {d: detector_place(d) for d in dict.fromkeys(detectors)}
    loose_rafts = sorted({p.raft for p in places.values() if p.bay is None})
    origins: dict[str, tuple[float, float]] = {}
    unplaced = []
    for det, place in places.items():
        if place.cell is None:
            unplaced.append(det)
            continue
        bay = place.bay if place.bay is not None else (loose_rafts.index(place.raft), 0)
        origins[det] = (bay[0] * RAFT_PITCH + place.cell[0] * DETECTOR_PITCH,
                        bay[1] * RAFT_PITCH + place.cell[1] * DETECTOR_PITCH)
    if unplaced:
        y = min((y for _, y in origins.values()), default=0.0) - 1.5 * DETECTOR_PITCH
        x0 = min((x for x, _ in origins.values()), default=0.0)
        for i, det in enumerate(sorted(unplaced)):
            origins[det] = (x0 + i * DETECTOR_PITCH, y)
    return origins


def _amp_box(origin: tuple[float, float], vendor: str, amp: str) -> tuple[float, float]:
    """Lower-left corner of an amp's patch."""
    ix, iy = amp_grid(vendor)[amp]
    return origin[0] + ix * AMP_WIDTH, origin[1] + iy * AMP_HEIGHT


def _title(table: Table, figure: str, amps: list[AmpValue]) -> str:
    unit = _unit(table, figure)
    n_fail = sum(bool(a.failed) for a in amps)
    n_measured = sum(math.isfinite(a.value) for a in amps)
    detectors = len({a.detector for a in amps})
    return (f"{figure}" + (f" ({unit})" if unit else "") + f": {detectors} detector"
            f"{'s' if detectors != 1 else ''}, {n_measured} amps measured, {n_fail} fail")


def eo_mosaic_figure(table: Table, figure: str) -> Figure:
    """The mosaic of ``figure`` (see `plot_eo_mosaic`), not written.

    The amps' patches are the axes' first collection (gid ``amps``, its array the values
    in `amp_values` order), the failing amps' outlines the second (gid ``failing``); each
    limit is a line of gid ``spec`` on the colour bar's axes.
    """
    amps = amp_values(table, figure)
    limits = figure_limits(table, figure)
    values = np.array([a.value for a in amps], dtype=float)
    log_scale = _log_scale(figure, values)
    norm = _norm(values, limits, log_scale)
    cmap = colormaps["viridis"].with_extremes(bad=_MISSING)
    origins = detector_origins(a.detector for a in amps)

    xs = [x for x, _ in origins.values()]
    ys = [y for _, y in origins.values()]
    xlim = (min(xs) - 0.05, max(xs) + 1.05)
    ylim = (min(ys) - 0.05, max(ys) + 1.12)
    # The axes keep the mosaic's aspect: 5.5 in high for a raft or less, 9.5 for several
    # rafts; as wide as the detectors need.
    rafts = {detector_place(d).raft for d in origins}
    ax_h = 5.5 if len(rafts) == 1 else 9.5
    ax_w = float(np.clip(ax_h * (xlim[1] - xlim[0]) / (ylim[1] - ylim[0]), 4.0, 12.0))
    width, height = ax_w + 2.2, ax_h + 1.6
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0.3 / width, 1.0 / height, ax_w / width, ax_h / height))
    cax = fig.add_axes(((0.3 + ax_w + 0.5) / width, 1.2 / height, 0.25 / width,
                        (ax_h - 0.4) / height))
    boxes = [_amp_box(origins[a.detector], a.vendor, a.amp) for a in amps]
    patches = [Rectangle(xy, AMP_WIDTH, AMP_HEIGHT) for xy in boxes]
    shown = np.ma.masked_invalid(np.where(values > 0, values, np.nan) if log_scale
                                 else values)
    collection = PatchCollection(patches, cmap=cmap, norm=norm, edgecolor="white",
                                 linewidth=0.3)
    collection.set_array(shown)
    collection.set_gid("amps")
    ax.add_collection(collection)
    failing = [Rectangle(xy, AMP_WIDTH, AMP_HEIGHT)
               for xy, a in zip(boxes, amps, strict=True) if a.failed]
    outline = PatchCollection(failing, facecolor="none", edgecolor=FAIL_COLOUR,
                              linewidth=1.6)
    outline.set_gid("failing")
    ax.add_collection(outline)

    single = len(origins) == 1
    if len(rafts) == 1:  # one raft or less: every detector named
        for det, (x, y) in origins.items():
            ax.text(x + 0.5, y + 1.0 + 0.01, det, ha="center", va="bottom",
                    fontsize=10 if single else 6)
    else:  # several: each raft named above its detectors
        for raft in sorted(rafts):
            mine = [origins[d] for d in origins if detector_place(d).raft == raft]
            x = (min(p[0] for p in mine) + max(p[0] for p in mine) + 1.0) / 2
            ax.text(x, max(p[1] for p in mine) + 1.01, raft, ha="center", va="bottom",
                    fontsize=8)
    if single:
        for (x, y), a in zip(boxes, amps, strict=True):
            # Dark text on the bright end of viridis, light on the dark end.
            bright = np.isfinite(a.value) and float(norm(a.value)) > 0.6
            ax.text(x + AMP_WIDTH / 2, y + AMP_HEIGHT / 2, a.amp, ha="center", va="center",
                    fontsize=8, color="black" if bright or not np.isfinite(a.value)
                    else "white")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])

    bar = fig.colorbar(collection, cax=cax)
    unit = _unit(table, figure)
    bar.set_label(f"{figure}" + (f" ({unit})" if unit else ""))
    for limit in limits:
        line = cax.axhline(limit.value, color=FAIL_COLOUR, lw=2.0, ls="--")
        line.set_gid("spec")
        line.set_label(limit.label)
    handles = [Patch(facecolor="none", edgecolor=FAIL_COLOUR, linewidth=1.6,
                     label=f"fails its specification ({len(failing)} amps)")]
    handles += [Patch(facecolor=_MISSING, label="not measured")] if not np.isfinite(
        values).all() else []
    handles += [Patch(facecolor="none", edgecolor=FAIL_COLOUR, linestyle="--",
                      label=f"limit on the colour bar: {s.label}") for s in limits]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.0, -0.005), ncol=2,
              fontsize=7, frameon=False)
    ax.set_title(_title(table, figure, amps), fontsize=10, pad=6 if len(rafts) == 1 else 16)
    return fig


def eo_histogram_figure(table: Table, figure: str) -> Figure:
    """The histogram of ``figure`` (see `plot_eo_histogram`), not written.

    Each limit is a vertical line of gid ``spec``.
    """
    amps = amp_values(table, figure)
    limits = figure_limits(table, figure)
    values = np.array([a.value for a in amps], dtype=float)
    finite = values[np.isfinite(values)]
    log_scale = _log_scale(figure, values)
    fig = Figure(figsize=(7.0, 4.5))
    ax = fig.add_axes((0.1, 0.12, 0.86, 0.76))
    if log_scale:
        lo, hi = float(finite.min()), float(finite.max())
        bins = np.geomspace(lo, hi if hi > lo else lo * 2, 31)
        ax.set_xscale("log")
    else:
        bins = 30
    failed = np.array([bool(a.failed) for a in amps])
    ok = np.isfinite(values)
    ax.hist([values[ok & ~failed], values[ok & failed]], bins=bins, stacked=True,
            color=["tab:blue", FAIL_COLOUR], label=["pass or no specification", "fail"])
    for limit in limits:
        line = ax.axvline(limit.value, color="black", ls="--", lw=1.4, label=limit.label)
        line.set_gid("spec")
    unit = _unit(table, figure)
    ax.set_xlabel(f"{figure}" + (f" ({unit})" if unit else ""))
    ax.set_ylabel("amps")
    ax.legend(fontsize=8)
    n_fail = int(failed.sum())
    specs = ", ".join(dict.fromkeys(s.spec for s in limits)) or "no specification"
    ax.set_title(f"{figure}: {n_fail} of {int(ok.sum())} amps fail ({specs}); median "
                 f"{np.median(finite):.3g}" if finite.size else f"{figure}: not measured",
                 fontsize=10)
    return fig


def plot_eo_mosaic(table: Table, figure: str, path: str | os.PathLike[str]) -> Path:
    """Draw the focal-plane (raft, detector) mosaic of one EO figure.

    Parameters
    ----------
    table : astropy.table.Table
        Long EO table (``REPO/eo/eo_figures.ecsv``).
    figure : str
        Figure of merit (``read_noise``).
    path : path
        PNG to write (atomically).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    return save_png(eo_mosaic_figure(table, figure), path, DPI)


def plot_eo_histogram(table: Table, figure: str, path: str | os.PathLike[str]) -> Path:
    """Draw the histogram of one EO figure over every amp, with its specification limits.

    Parameters
    ----------
    table : astropy.table.Table
        Long EO table (``REPO/eo/eo_figures.ecsv``).
    figure : str
        Figure of merit (``read_noise``).
    path : path
        PNG to write (atomically).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    return save_png(eo_histogram_figure(table, figure), path, DPI)


def plot_eo_figures(table: Table, directory: str | os.PathLike[str]
                    ) -> dict[str, tuple[Path, Path]]:
    """Draw the mosaic and the histogram of every figure measured on some amp.

    Parameters
    ----------
    table : astropy.table.Table
        Long EO table (``REPO/eo/eo_figures.ecsv``).
    directory : path
        Output folder (created): ``<figure>_mosaic.png`` and ``<figure>_hist.png``.

    Returns
    -------
    dict
        Figure → (mosaic, histogram) paths, in table order; figures not measured on any
        amp are not drawn.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for figure in drawn_figures(table):
        out[figure] = (plot_eo_mosaic(table, figure, directory / f"{figure}_mosaic.png"),
                       plot_eo_histogram(table, figure, directory / f"{figure}_hist.png"))
    return out
