"""Summary plot of the electro-optical figures: one panel per figure, one point per amp.

Built with `matplotlib.figure.Figure` and the Agg canvas (no pyplot: thread-safe, no global
state); written atomically.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table
from matplotlib.figure import Figure

from atmospec.calib.eo import reference_limits
from atmospec.plots.common import save_png

log = logging.getLogger(__name__)

__all__ = ["EO_PANELS", "plot_eo_summary"]

#: Panels in reading order: (column, title, y-axis label, y scale, column counted in the
#: title). Figures spanning decades below their reference (dark current, CTI, defect counts)
#: get a logarithmic axis so that both the values and the reference line are readable.
EO_PANELS: tuple[tuple[str, str, str, str, str | None], ...] = (
    ("read_noise", "read noise", "e⁻", "linear", None),
    ("gain", "gain", "e⁻/ADU", "linear", None),
    ("full_well", "full well", "e⁻", "linear", None),
    ("dark_current", "dark current (median)", "e⁻/s/px", "log", None),
    ("dark_current_95", "dark current (95th percentile)", "e⁻/s/px", "log", None),
    ("bright_pixels", "bright pixels", "pixels", "symlog", "bright_columns"),
    ("dark_pixels", "dark pixels", "pixels", "symlog", "dark_columns"),
    ("cti_serial", "serial CTI (EPER)", "per transfer", "log", None),
    ("cti_parallel", "parallel CTI (EPER)", "per transfer", "log", None),
    ("linearity_residual", "max linearity residual", "%", "linear", None),
)

DPI = 100


def _values(table: Table, name: str) -> np.ndarray:
    """Float values of a column, NaN where masked or missing."""
    if name not in table.colnames:
        return np.full(len(table), np.nan)
    col = table[name]
    data = np.asarray(col, dtype=float)
    mask = np.asarray(getattr(col, "mask", np.zeros(len(col), dtype=bool)), dtype=bool)
    return np.where(mask, np.nan, data)


def _limits(table: Table) -> dict[str, tuple[str, float, str]]:
    """Reference limits recorded in the table, else the module defaults."""
    meta = table.meta.get("REFERENCE_LIMITS")
    if isinstance(meta, dict) and meta:
        return {k: (str(v["comparison"]), float(v["value"]), str(v["label"]))
                for k, v in meta.items()}
    return reference_limits()


def _panel(ax: Any, x: np.ndarray, y: np.ndarray, names: list[str], title: str, ylabel: str,
           scale: str, limit: tuple[str, float, str] | None) -> None:
    """Draw one figure's per-amp values and its reference line on ``ax``."""
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_xticks(x, names, rotation=90, fontsize=7)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlim(-0.5, len(x) - 0.5)
    finite = np.isfinite(y)
    if not finite.any():
        ax.set_title(title, fontsize=10)
        ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", va="center",
                fontsize=9, color="0.4")
        return
    median = float(np.median(y[finite]))
    ax.set_title(f"{title}: median {median:.3g}", fontsize=10)
    # A log axis needs positive values (noise can make a tiny CTI negative).
    if scale == "log" and np.all(y[finite] > 0):
        ax.set_yscale("log")
    elif scale == "symlog":
        ax.set_yscale("symlog", linthresh=1.0)
    else:
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 6), useMathText=True)
    ax.plot(x[finite], y[finite], "o", ms=4, color="tab:blue")
    ax.axhline(median, lw=0.6, color="tab:blue", alpha=0.5)
    if limit is not None:
        comparison, value, label = limit
        ax.axhline(value, ls="--", lw=1.0, color="tab:red", label=label)
        beyond = finite & ((y >= value) if comparison == "<" else (y <= value))
        if beyond.any():
            ax.plot(x[beyond], y[beyond], "o", ms=6, mfc="none", mec="tab:red")
        ax.legend(fontsize=7, loc="best")


def plot_eo_summary(table: Table, path: str | os.PathLike[str]) -> Path:
    """Plot every electro-optical figure per amplifier, with reference lines.

    Parameters
    ----------
    table : astropy.table.Table
        Output of `atmospec.calib.eo.eo_figures` (column ``amp`` and the figure columns; a
        missing or all-NaN figure gets a "not measured" panel).
    path : path
        Output PNG (written atomically).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    names = [str(a) for a in table["amp"]]
    x = np.arange(len(names))
    limits = _limits(table)
    n_cols = 3
    n_rows = math.ceil(len(EO_PANELS) / n_cols)
    fig = Figure(figsize=(14, 3.4 * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    # A fixed layout: constrained layout would double the rendering time of this grid.
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.07, top=0.93, hspace=0.55, wspace=0.22)
    for ax, (name, title, ylabel, scale, count_col) in zip(axes, EO_PANELS, strict=False):
        if count_col is not None:
            cols = _values(table, count_col)
            if np.isfinite(cols).any():
                title = f"{title} (+{int(np.nansum(cols))} columns)"
        _panel(ax, x, _values(table, name), names, title, ylabel, scale, limits.get(name))
    for ax in axes[len(EO_PANELS):]:
        ax.set_visible(False)
    instrument = table.meta.get("INSTRUME", "")
    source = table.meta.get("GAIN_SOURCE", "")
    fig.suptitle(f"{instrument} electro-optical figures per amplifier (gains: {source}); "
                 "red dashed: reference values, circled: beyond them", fontsize=11)
    return save_png(fig, path, DPI)
