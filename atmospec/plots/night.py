"""Night diagnostics drawn from the night summary table and the exposures' catalogues:
image quality, source counts, spectroscopic figures and the atmosphere against time and
airmass, and where sources fell on the detector.

The time series take ``sidecar=True`` to write, beside the PNG, the values drawn (read
back from the figure's artists, `atmospec.plots.common.drawn_data`): panels are keyed
``<column>/time`` and ``<column>/airmass``, series by `config_label`."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.table import Table
from astropy.time import Time
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from atmospec.camera.description import load_camera
from atmospec.plots.common import config_colour, config_label, save_png

log = logging.getLogger(__name__)


def _hours(table: Table) -> tuple[np.ndarray, str]:
    """Exposure start in hours from the first exposure's UTC midnight, and the axis label."""
    mjd = np.asarray(table["mjd"], dtype=float)
    good = np.isfinite(mjd)
    if not good.any():
        return mjd, "time (no timestamps)"
    t0 = Time(np.floor(np.nanmin(Time(mjd[good], format="mjd", scale="tai").utc.mjd)),
              format="mjd", scale="utc")
    hours = (Time(np.where(good, mjd, mjd[good][0]), format="mjd", scale="tai").utc.mjd
             - t0.mjd) * 24.0
    return np.where(good, hours, np.nan), f"UTC hours since {t0.iso[:10]}"


def plot_night_quality(table: Table, path: str | os.PathLike[str], *,
                       sidecar: bool = False) -> Path:
    """FWHM, ellipticity and sky against time and airmass, one colour per configuration.

    Parameters
    ----------
    table : astropy.table.Table
        Night summary (`atmospec.night.summary.summary_table`).
    path : path
        PNG to write.
    sidecar : bool
        Also write the values drawn as JSON beside it (``.json``).

    Returns
    -------
    pathlib.Path
    """
    rows = table[(table["status"] == "done") & np.isfinite(np.asarray(table["fwhm_px"],
                                                                      dtype=float))]
    panels = (("fwhm_arcsec", "PSF FWHM (arcsec)"), ("ellipticity", "PSF ellipticity"),
              ("sky_e_per_s", "sky (e⁻/s/pixel)"))
    fig = _time_airmass_panels(rows, panels, errors=False, legend_title="filter",
                               empty="no characterized exposure")
    fig.suptitle(f"Image quality of the night ({len(rows)} exposures)")
    return save_png(fig, path, sidecar=sidecar)


def _as_float(table: Table, column: str) -> np.ndarray:
    """A column as floats, NaN where masked (a masked integer count has no value)."""
    col = table[column]
    values = np.array(col, dtype=float)
    mask = getattr(col, "mask", None)
    if mask is not None:
        values[np.asarray(mask, dtype=bool)] = np.nan
    return values


def plot_source_counts(table: Table, path: str | os.PathLike[str], *,
                       sidecar: bool = False) -> Path:
    """Sources detected and saturated sources per characterized exposure, against time and
    airmass, one colour per configuration.

    Parameters
    ----------
    table : astropy.table.Table
        Night summary (`atmospec.night.summary.summary_table`).
    path : path
        PNG to write.
    sidecar : bool
        Also write the values drawn as JSON beside it (``.json``).

    Returns
    -------
    pathlib.Path
    """
    rows = table[(table["status"] == "done") & np.isfinite(_as_float(table, "n_sources"))]
    rows = Table(rows, copy=True)
    for column in ("n_sources", "n_saturated"):
        rows[column] = _as_float(rows, column)  # masked counts drawn as gaps, not zeros
    panels = (("n_sources", "sources detected (per exposure)"),
              ("n_saturated", "saturated sources (per exposure)"))
    fig = _time_airmass_panels(rows, panels, errors=False, legend_title="filter",
                               empty="no characterized exposure", height=6.5)
    for ax in fig.axes:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"Source counts of the night ({len(rows)} exposures)")
    return save_png(fig, path, sidecar=sidecar)


def plot_spectro_series(table: Table, path: str | os.PathLike[str], *,
                        sidecar: bool = False) -> Path:
    """Extracted flux at 450, 650 and 850 nm and the fitted disperser–CCD distance of the
    night's spectra, against time and airmass, one colour per configuration.

    Parameters
    ----------
    table : astropy.table.Table
        Night summary (`atmospec.night.summary.summary_table`) with ``flux_450nm``,
        ``flux_650nm``, ``flux_850nm`` (e⁻/nm) and ``d2ccd`` (mm).
    path : path
        PNG to write.
    sidecar : bool
        Also write the values drawn as JSON beside it (``.json``).

    Returns
    -------
    pathlib.Path
    """
    columns = ("flux_450nm", "flux_650nm", "flux_850nm", "d2ccd")
    has = np.zeros(len(table), dtype=bool)
    for column in columns:
        has |= np.isfinite(_as_float(table, column))
    rows = table[has]
    panels = (("flux_450nm", "flux at 450 nm (e⁻/nm)"), ("flux_650nm", "flux at 650 nm (e⁻/nm)"),
              ("flux_850nm", "flux at 850 nm (e⁻/nm)"), ("d2ccd", "D2CCD (mm)"))
    fig = _time_airmass_panels(rows, panels, errors=False, legend_title="filter~disperser",
                               empty="no spectrum extracted")
    fig.suptitle(f"Spectra of the night ({len(rows)} dispersed exposures)")
    return save_png(fig, path, sidecar=sidecar)


def plot_atmosphere_series(table: Table, path: str | os.PathLike[str], *,
                           sidecar: bool = False) -> Path:
    """PWV, ozone and aerosol optical depth fitted on the night's spectra, against time and
    airmass, with their errors, one colour per configuration.

    Parameters
    ----------
    table : astropy.table.Table
        Night summary (`atmospec.night.summary.summary_table`) with the ``pwv_mm``,
        ``ozone_du``, ``vaod`` columns and their ``*_err``.
    path : path
        PNG to write.
    sidecar : bool
        Also write the values drawn as JSON beside it (``.json``).

    Returns
    -------
    pathlib.Path
    """
    rows = table[np.isfinite(np.asarray(table["pwv_mm"], dtype=float))]
    panels = (("pwv_mm", "PWV (mm)"), ("ozone_du", "ozone (DU)"),
              ("vaod", "aerosol optical depth at 500 nm"))
    fig = _time_airmass_panels(rows, panels, errors=True, legend_title="filter, disperser",
                               empty="no atmosphere fitted")
    fig.suptitle(f"Atmosphere of the night ({len(rows)} spectra)")
    return save_png(fig, path, sidecar=sidecar)


#: Suffix of a column holding the simulator's truth of another (``pwv_mm_truth``).
TRUTH_SUFFIX = "_truth"
#: Legend label (and sidecar series) of the truth markers.
TRUTH_LABEL = "simulator truth"


def _time_airmass_panels(rows: Table, panels: Sequence[tuple[str, str]], *, errors: bool,
                         legend_title: str, empty: str, height: float = 9.0) -> Figure:
    """One row of panels per ``(column, label)``: against time (left) and airmass (right),
    one colour per filter/disperser; ``errors``: ``<column>_err`` as error bars. A
    ``<column>_truth`` column (a simulated night) is drawn as open diamonds, `TRUTH_LABEL`;
    a series that is constant says so on its panels (`_say_if_constant`).

    Each axes gets the gid ``<column>/time`` or ``<column>/airmass`` (for
    `atmospec.plots.common.drawn_data`)."""
    hours, time_label = _hours(rows)
    fig = Figure(figsize=(11, height), layout="constrained")
    axes = fig.subplots(len(panels), 2, sharex="col")
    configs = sorted({(str(f), str(d)) for f, d in zip(rows["filter"], rows["disperser"],
                                                        strict=True)})
    airmass = np.asarray(rows["airmass"], dtype=float)
    for i, (column, label) in enumerate(panels):
        for filt, disp in configs:
            sel = (rows["filter"] == filt) & (rows["disperser"] == disp)
            style = {"color": config_colour(filt, disp), "label": config_label(filt, disp),
                     "fmt": "o", "ms": 4}
            y = np.asarray(rows[column], dtype=float)[sel]
            err = np.asarray(rows[f"{column}_err"], dtype=float)[sel] if errors else None
            axes[i, 0].errorbar(hours[sel], y, yerr=err, capsize=2 if errors else 0, **style)
            axes[i, 1].errorbar(airmass[sel], y, yerr=err, capsize=2 if errors else 0,
                                **style)
        _draw_truth(axes[i], rows, column, hours, airmass)
        for ax in axes[i]:
            _say_if_constant(ax, _as_float(rows, column))
        axes[i, 0].set_ylabel(label)
        axes[i, 1].set_ylabel(label)
        axes[i, 0].set_gid(f"{column}/time")
        axes[i, 1].set_gid(f"{column}/airmass")
    axes[-1, 0].set_xlabel(time_label)
    axes[-1, 1].set_xlabel("airmass")
    if configs:
        axes[0, 1].legend(fontsize="small", title=legend_title, loc="best")
    else:
        axes[0, 0].text(0.5, 0.5, empty, ha="center", transform=axes[0, 0].transAxes)
    return fig


def _draw_truth(axes: Sequence[Axes], rows: Table, column: str, hours: np.ndarray,
                airmass: np.ndarray) -> None:
    """The simulator's value of ``column`` (``<column>_truth``) as open diamonds, where
    there is one; nothing for a real night."""
    name = column + TRUTH_SUFFIX
    if name not in rows.colnames:
        return
    truth = _as_float(rows, name)
    ok = np.isfinite(truth)
    if not ok.any():
        return
    style = {"ls": "none", "marker": "D", "ms": 7, "mfc": "none", "mec": "#000000",
             "mew": 1.2, "label": TRUTH_LABEL, "zorder": 3}
    axes[0].plot(hours[ok], truth[ok], **style)
    axes[1].plot(airmass[ok], truth[ok], **style)


def _say_if_constant(ax: Axes, values: np.ndarray) -> None:
    """A series of two or more points all equal (e.g. 2 saturated sources every exposure, or
    none) gets an axis from 0 and a sentence saying so: matplotlib would centre a ±0.1
    range on it (1.9–2.1), drawing a constant as if it were a measured scatter."""
    finite = values[np.isfinite(values)]
    if finite.size < 2 or np.ptp(finite) != 0:
        return
    value = float(finite[0])
    top = max(abs(value) * 1.5, 1.0)
    ax.set_ylim(-top if value < 0 else 0.0, top if value >= 0 else 0.0)
    text = ("all zero" if value == 0 else f"constant: {value:g}") + \
        f" in all {finite.size} exposures"
    ax.text(0.5, 0.85, text, transform=ax.transAxes, ha="center", va="center",
            fontsize=9, color="#444444", gid="constant_note",
            bbox={"boxstyle": "round", "fc": "white", "ec": "#cccccc", "alpha": 0.9})


def plot_source_positions(table: Table, catalogs: Sequence[str | os.PathLike[str]],
                          path: str | os.PathLike[str]) -> Path:
    """Where sources fell on the detector over the night, and the dispersed exposures'
    zeroth orders.

    Parameters
    ----------
    table : astropy.table.Table
        Night summary (for the zeroth-order positions).
    catalogs : sequence of path
        Source catalogues (ECSV with ``xcentroid``, ``ycentroid``).
    path : path
        PNG to write.

    Returns
    -------
    pathlib.Path
    """
    ny, nx = load_camera("latiss").detector_shape
    xs, ys = [], []
    for cat in catalogs:
        try:
            t = Table.read(cat, format="ascii.ecsv")
        except (OSError, ValueError) as exc:
            log.warning("cannot read %s: %s", cat, exc)
            continue
        xs.append(np.asarray(t["xcentroid"], dtype=float))
        ys.append(np.asarray(t["ycentroid"], dtype=float))
    x = np.concatenate(xs) if xs else np.empty(0)
    y = np.concatenate(ys) if ys else np.empty(0)
    fig = Figure(figsize=(7.5, 7), layout="constrained")
    ax = fig.subplots()
    if x.size:
        hb = ax.hexbin(x, y, gridsize=40, extent=(0, nx, 0, ny), mincnt=1, cmap="viridis")
        fig.colorbar(hb, ax=ax, label="sources per cell (all exposures)")
    zx = np.asarray(table["zeroth_order_x"], dtype=float)
    zy = np.asarray(table["zeroth_order_y"], dtype=float)
    ok = np.isfinite(zx) & np.isfinite(zy)
    if ok.any():
        ax.plot(zx[ok], zy[ok], "+", color="red", ms=12, mew=2,
                label=f"zeroth order ({int(ok.sum())} dispersed exposures)")
        # Below the axes: the zeroth order sits near the top of LATISS's detector, where a
        # legend inside the panel covered the very markers it names.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.09), fontsize="small",
                  frameon=False)
    ax.set_xlim(0, nx)
    ax.set_ylim(0, ny)
    ax.set_aspect("equal")
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("y (pixel)")
    ax.set_title(f"{x.size} sources from {len(xs)} exposures")
    return save_png(fig, path)
