"""What every diagnostic plot shares: writing a figure as a PNG, atomically (with, on
request, a JSON sidecar of the values drawn), one colour per instrument configuration and
ZScale limits."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from astropy.visualization import ZScaleInterval
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from atmospec.camera.translator import optic_name
from atmospec.io import atomic_path, write_text_atomic

log = logging.getLogger(__name__)

#: Resolution of every PNG atmospec writes.
DPI = 100
#: zlib level of the PNGs (Pillow's default is 6). Measured on 40 of a night's figures:
#: level 3 encodes in 0.64× the CPU and writes 14 % smaller files than 6 (level 1: 0.56×,
#: 12 % smaller); the encoder is 0.07 s of the 0.33 s a quick-look thumbnail costs at 6.
PNG_COMPRESS_LEVEL = 3

#: Version of the figures' drawing code, recorded in each exposure's figure manifest and in
#: the night figures' sidecars: a figure drawn by an older version is stale though its
#: inputs did not change, so a report refreshed after an upgrade shows the new figures
#: without ``--force``. Raise it when a figure changes.
#: 2: issue 21 (PSF figure frames and ranges, thumbnail legend, truth markers, constant
#: series, one configuration name).
#: 3: issue 20 (the spectrum, atmosphere fit, sources and PSF figures laid out with fixed
#: margins, `fixed_margins`; a binned exposure's sources and PSF figures in its frame).
FIGURE_VERSION = 3


def fixed_margins(fig: Figure, *, left: float, right: float, bottom: float, top: float,
                  hspace: float | None = None, wspace: float | None = None) -> None:
    """Place a figure's subplots with margins fixed in inches (whatever its size).

    For figures drawn for every exposure, instead of matplotlib's constrained layout:
    that measures the extent of every tick label and title on each draw, ~40 % of the CPU
    of the spectrum figures (0.43 of 1.15 s for the five of a 2×2 LATISS exposure). Call
    it before adding colour bars, which then take their share of their axes' cell.

    Parameters
    ----------
    fig : Figure
        The figure (without a layout engine).
    left, right, bottom, top : float
        Margins, inches: room for the axis labels, tick labels and titles.
    hspace, wspace : float, optional
        Space between rows and between columns, inches.
    """
    width, height = fig.get_size_inches()
    rows, cols = _grid_shape(fig)
    inner_h = height - top - bottom
    inner_w = width - left - right
    kwargs: dict[str, float] = {}
    if hspace is not None and rows > 1:
        kwargs["hspace"] = hspace / ((inner_h - (rows - 1) * hspace) / rows)
    if wspace is not None and cols > 1:
        kwargs["wspace"] = wspace / ((inner_w - (cols - 1) * wspace) / cols)
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                        top=1 - top / height, **kwargs)


def _grid_shape(fig: Figure) -> tuple[int, int]:
    """Rows and columns of the grid of a figure's first subplot (1, 1 without one)."""
    for ax in fig.axes:
        spec = ax.get_subplotspec()
        if spec is not None:
            return spec.get_gridspec().get_geometry()
    return 1, 1


def save_png(fig: Figure, path: str | os.PathLike[str], dpi: int = DPI, *,
             sidecar: bool = False) -> Path:
    """Render ``fig`` to ``path`` as PNG, atomically (temporary file, then rename).

    The Agg canvas is attached explicitly: no pyplot and no global backend, so plotting is
    safe in worker processes and threads.

    Parameters
    ----------
    fig : Figure
        The figure.
    path : path
        PNG to write.
    dpi : int
        Resolution.
    sidecar : bool
        Also write ``path`` with the suffix ``.json``: `drawn_data` of the figure, read
        from its artists after drawing (what a reader of the PNG sees, as numbers), and
        the `FIGURE_VERSION` that drew it (``figure_version``).
    """
    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        # The temporary name ends in .tmp, so the format cannot be guessed from it.
        fig.savefig(tmp, format="png", dpi=dpi,
                    pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
    log.info("wrote %s", path)
    if sidecar:
        doc = {**drawn_data(fig), "figure_version": FIGURE_VERSION}
        write_text_atomic(json.dumps(doc, indent=1) + "\n", path.with_suffix(".json"))
    return path


def _json_floats(values: np.ndarray) -> list[float | None]:
    """Floats for strict JSON: NaN and infinities become null."""
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, dtype=float)]


def drawn_data(fig: Figure) -> dict[str, Any]:
    """The values a figure drew, panel by panel and series by series.

    Only axes given a ``gid`` (`matplotlib.artist.Artist.set_gid`) are read; their error-bar
    containers (from ``Axes.errorbar``) and labelled lines are the series, keyed by label.
    Values come from the artists themselves (``Line2D.get_xydata``, the error bars'
    segments), so they are what the PNG shows, whatever computed them.

    Parameters
    ----------
    fig : Figure
        A drawn figure.

    Returns
    -------
    dict
        ``{"panels": {gid: {"xlabel", "ylabel", "series": {label: {"x", "y"[, "yerr"]}}}}}``;
        ``yerr`` is the half-length of each error bar; non-finite values are null.
    """
    panels: dict[str, Any] = {}
    for ax in fig.axes:
        gid = ax.get_gid()
        if not gid:
            continue
        series: dict[str, Any] = {}
        in_containers = set()
        for container in ax.containers:
            if not isinstance(container, ErrorbarContainer):
                continue
            data_line, _, bars = container.lines
            in_containers.add(data_line)
            xy = np.asarray(data_line.get_xydata(), dtype=float).reshape(-1, 2)
            entry: dict[str, Any] = {"x": _json_floats(xy[:, 0]), "y": _json_floats(xy[:, 1])}
            if bars:
                # One segment per point; matplotlib leaves it empty where y or the error
                # is not finite.
                entry["yerr"] = _json_floats([
                    abs(seg[1][1] - seg[0][1]) / 2.0 if len(seg) == 2 else math.nan
                    for seg in bars[0].get_segments()])
            series[str(container.get_label())] = entry
        for line in ax.lines:
            label = str(line.get_label())
            if line in in_containers or label.startswith("_"):
                continue
            xy = np.asarray(line.get_xydata(), dtype=float).reshape(-1, 2)
            series[label] = {"x": _json_floats(xy[:, 0]), "y": _json_floats(xy[:, 1])}
        panels[gid] = {"xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(), "series": series}
    return {"panels": panels}


#: Colours of the LATISS filters (and of dispersers, for dispersed exposures), used by every
#: plot so one configuration has one colour across the report.
_CONFIG_COLOURS = MappingProxyType({
    "SDSSg_65mm": "#2ca02c", "SDSSr_65mm": "#d62728", "SDSSi_65mm": "#8c564b",
    "SDSSz_65mm": "#7f7f7f", "SDSSy_65mm": "#17becf", "BG40_65mm": "#1f77b4",
    "OG550_65mm": "#ff7f0e", "empty": "#000000",
    "holo4_003": "#9467bd", "ronchi170lpmm": "#e377c2", "ronchi90lpmm": "#bcbd22",
})
_FALLBACK = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d")


def config_colour(filter_name: str, disperser: str = "empty") -> str:
    """Colour of an instrument configuration: the disperser's for a dispersed exposure, else
    the filter's; unknown names get a stable colour from their name. Names are taken as
    `atmospec.camera.translator.optic_name` shows them (``empty_1`` is ``empty``)."""
    filter_name, disperser = optic_name(filter_name), optic_name(disperser)
    name = disperser if disperser not in _NO_DISPERSER else filter_name
    if name in _CONFIG_COLOURS:
        return _CONFIG_COLOURS[name]
    return _FALLBACK[sum(name.encode()) % len(_FALLBACK)]


def config_label(filter_name: str, disperser: str = "empty") -> str:
    """Label of an instrument configuration, ``filter`` or ``filter~disperser``, in every
    legend, title and table: the names as `atmospec.camera.translator.optic_name` shows
    them, so a header's ``empty_1`` and the summary's ``empty`` read alike."""
    filter_name, disperser = optic_name(filter_name), optic_name(disperser)
    if disperser in _NO_DISPERSER:
        return filter_name
    return f"{filter_name}~{disperser}"


#: Disperser names of an imaging configuration.
_NO_DISPERSER = frozenset({"empty", "unknown", "none", ""})


def zscale_limits(values: np.ndarray) -> tuple[float, float]:
    """ZScale limits of the finite ``values``; a usable range even for flat images."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    vmin, vmax = (float(v) for v in ZScaleInterval().get_limits(finite))
    if not vmax > vmin:
        # A constant image: centre a unit-wide range on it so the norm is not singular.
        vmin, vmax = vmin - 0.5, vmin + 0.5
    return vmin, vmax
