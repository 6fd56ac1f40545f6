"""Diagnostics of the imaging characterization, drawn from the source catalogue.

Everything here reads a catalogue written by `atmospec.imaging` (an
`astropy.table.Table`, in memory or read back with `atmospec.imaging.catalog.read_catalog`)
and never runs a measurement. Figures are built with `matplotlib.figure.Figure` and the Agg
canvas (no pyplot, no global state) and written atomically by `save_png`.

* `plot_sources`: where the sources are on the detector, marker area growing with
  brightness, saturated sources and PSF stars highlighted.
* `plot_psf`: FWHM and ellipticity of the PSF stars across the detector (whiskers along
  the major axis, coloured by FWHM) and the FWHM histogram.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from atmospec.camera.description import load_camera
from atmospec.plots.common import fixed_margins, save_png

log = logging.getLogger(__name__)

__all__ = ["plot_psf", "plot_sources"]

#: Resolution of every PNG written here.
DPI = 100


def _values(table: Table, name: str, default: float = math.nan) -> np.ndarray:
    """Column as a float array (``default`` when the column is missing)."""
    if name not in table.colnames:
        return np.full(len(table), default)
    col = table[name]
    return np.asarray(getattr(col, "value", col), dtype=float)


def _flags(table: Table, name: str) -> np.ndarray:
    if name not in table.colnames:
        return np.zeros(len(table), dtype=bool)
    return np.asarray(table[name], dtype=bool)


def _shape(table: Table, shape: tuple[int, int] | None) -> tuple[int, int]:
    """The frame of the catalogue's coordinates: ``shape``, else the one it records
    (``image_shape``: a 2×2-binned frame is half the detector), else LATISS's detector."""
    if shape is not None:
        return shape
    recorded = table.meta.get("image_shape")
    if isinstance(recorded, list | tuple) and len(recorded) == 2:
        return int(recorded[0]), int(recorded[1])
    return load_camera("latiss").detector_shape


def _title(table: Table, what: str) -> str:
    obs_id = table.meta.get("OBSID", "")
    return f"{obs_id}: {what}" if obs_id else what


def _quality(table: Table) -> dict[str, Any]:
    quality = table.meta.get("image_quality", {})
    return quality if isinstance(quality, dict) else {}


def plot_sources(
    catalog: Table, path: str | os.PathLike[str], shape: tuple[int, int] | None = None
) -> Path:
    """Source positions on the detector.

    Marker area grows with brightness (instrumental magnitude from ``aperture_flux_0``,
    else ``segment_flux``); saturated sources are drawn in red, PSF stars circled in green.

    Parameters
    ----------
    catalog : astropy.table.Table
        Source catalogue.
    path : path
        Output PNG (written atomically).
    shape : tuple of int, optional
        Frame shape ``(ny, nx)``; by default the catalogue's ``image_shape`` (written by
        `atmospec.imaging.characterize`), else LATISS's detector.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    ny, nx = _shape(catalog, shape)
    x = _values(catalog, "xcentroid")
    y = _values(catalog, "ycentroid")
    flux = _values(catalog, "aperture_flux_0")
    if not np.any(np.isfinite(flux) & (flux > 0)):
        flux = _values(catalog, "segment_flux")
    with np.errstate(invalid="ignore", divide="ignore"):
        mag = -2.5 * np.log10(flux)
    finite = np.isfinite(mag)
    if finite.any():
        faint = np.nanmax(mag[finite])
        bright = np.nanmin(mag[finite])
        span = max(faint - bright, 1e-6)
        size = 4.0 + 120.0 * ((faint - np.where(finite, mag, faint)) / span) ** 1.5
    else:
        size = np.full(len(catalog), 8.0)
    saturated = _flags(catalog, "flag_saturated")
    psf = _flags(catalog, "psf_star")

    fig = Figure(figsize=(8.4, 8.0))
    ax = fig.add_subplot()
    # Fixed margins, not constrained layout (a third of this figure's CPU, drawn for every
    # imaging exposure): room for the axis labels and a two-line title.
    fixed_margins(fig, left=0.85, right=0.2, bottom=0.6, top=0.6)
    normal = ~saturated
    ax.scatter(x[normal], y[normal], s=size[normal], c="#3060c0", alpha=0.6, linewidths=0,
               label=f"sources ({int(normal.sum())})")
    if saturated.any():
        ax.scatter(x[saturated], y[saturated], s=np.maximum(size[saturated], 60), c="#e02020",
                   marker="*", label=f"saturated ({int(saturated.sum())})")
    if psf.any():
        ax.scatter(x[psf], y[psf], s=size[psf] + 60, facecolors="none", edgecolors="#10a030",
                   linewidths=1.2, label=f"PSF stars ({int(psf.sum())})")
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(-0.5, ny - 0.5)
    ax.set_aspect("equal")
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("y (pixel)")
    if len(catalog):
        ax.legend(loc="upper right", fontsize=8, title="marker area: brighter = larger",
                  title_fontsize=8)
    else:
        ax.text(0.5, 0.5, "no source detected", transform=ax.transAxes, ha="center",
                va="center", color="0.4")
    quality = _quality(catalog)
    subtitle = ""
    if quality:
        subtitle = (f"\n{quality.get('n_sources', len(catalog))} sources, FWHM "
                    f"{quality.get('fwhm_arcsec', math.nan):.2f}\u2033, sky "
                    f"{quality.get('sky_e', math.nan):.0f} e\u207b/px")
    ax.set_title(_title(catalog, "detected sources") + subtitle, fontsize=10, loc="left")
    return save_png(fig, path, DPI)


def plot_psf(
    catalog: Table, path: str | os.PathLike[str], shape: tuple[int, int] | None = None,
    whisker_scale: float | None = None,
) -> Path:
    """PSF figures of the PSF stars: whisker map and FWHM histogram.

    Left: one whisker per PSF star along the PSF major axis, its length proportional to
    the ellipticity, coloured by FWHM (arcsec); a reference whisker gives the scale.
    Right: histogram of the stars' FWHM with the median marked.

    Parameters
    ----------
    catalog : astropy.table.Table
        Source catalogue with the ``psf_*`` columns.
    path : path
        Output PNG (written atomically).
    shape : tuple of int, optional
        Frame shape ``(ny, nx)``; by default the catalogue's ``image_shape`` (written by
        `atmospec.imaging.characterize`), else LATISS's detector.
    whisker_scale : float, optional
        Whisker length per unit ellipticity, pixels; by default an ellipticity of 0.05
        draws a tenth of the detector's long side.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    ny, nx = _shape(catalog, shape)
    psf = _flags(catalog, "psf_star")
    x = _values(catalog, "xcentroid")[psf]
    y = _values(catalog, "ycentroid")[psf]
    fwhm = _values(catalog, "psf_fwhm_arcsec")[psf]
    fwhm_px = _values(catalog, "psf_fwhm")[psf]
    if not np.any(np.isfinite(fwhm)):
        fwhm = fwhm_px
        fwhm_unit = "pixel"
    else:
        fwhm_unit = "arcsec"
    ell = _values(catalog, "psf_ellipticity")[psf]
    angle = np.radians(_values(catalog, "psf_orientation")[psf])
    scale = whisker_scale if whisker_scale is not None else max(nx, ny) / 10.0 / 0.05

    fig = Figure(figsize=(13.0, 6.0))
    ax, hx = fig.subplots(1, 2, width_ratios=(1.15, 1.0))
    # Fixed margins (`fixed_margins`): between the panels, the colour bar's label and the
    # histogram's axis label.
    fixed_margins(fig, left=0.85, right=0.2, bottom=0.6, top=0.45, wspace=1.1)
    if len(x):
        dx = 0.5 * scale * ell * np.cos(angle)
        dy = 0.5 * scale * ell * np.sin(angle)
        segments = np.stack([np.column_stack([x - dx, y - dy]),
                             np.column_stack([x + dx, y + dy])], axis=1)
        lines = LineCollection(segments, array=fwhm, cmap="viridis", linewidths=2.5)
        ax.add_collection(lines)
        ax.scatter(x, y, c=fwhm, cmap="viridis", s=12, zorder=3)
        cbar = fig.colorbar(lines, ax=ax, shrink=0.85)
        cbar.set_label(f"FWHM ({fwhm_unit})")
        # Reference whisker: ellipticity 0.05 in the lower-left corner.
        ref = 0.05 * scale
        x0, y0 = 0.05 * nx, 0.05 * ny
        ax.plot([x0, x0 + ref], [y0, y0], color="k", lw=2.5)
        ax.text(x0 + ref / 2, y0 + 0.02 * ny, "ellipticity 0.05", ha="center", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no PSF star", transform=ax.transAxes, ha="center", va="center",
                color="0.4")
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(-0.5, ny - 0.5)
    ax.set_aspect("equal")
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("y (pixel)")
    ax.set_title(_title(catalog, "PSF whiskers (major axis, length \u221d ellipticity)"),
                 fontsize=10, loc="left")

    good = np.isfinite(fwhm)
    if good.any():
        values = fwhm[good]
        bins = max(5, min(30, int(np.sqrt(values.size)) * 2))
        hx.hist(values, bins=bins, color="#3060c0", alpha=0.8)
        median = float(np.median(values))
        hx.axvline(median, color="#e02020", lw=1.5)
        hx.legend(handles=[Line2D([], [], color="#e02020", lw=1.5,
                                  label=f"median {median:.3f} {fwhm_unit}")], fontsize=9)
    else:
        hx.text(0.5, 0.5, "no FWHM measured", transform=hx.transAxes, ha="center",
                va="center", color="0.4")
    hx.set_xlabel(f"FWHM ({fwhm_unit})")
    hx.set_ylabel("number of PSF stars")
    quality = _quality(catalog)
    if quality:
        hx.set_title(f"ellipticity {quality.get('ellipticity', math.nan):.3f}, "
                     f"PA {quality.get('position_angle_deg', math.nan):.0f}\u00b0, "
                     f"{quality.get('n_psf_stars', int(psf.sum()))} stars", fontsize=10)
    return save_png(fig, path, DPI)
