"""Diagnostics of an extracted spectrum, drawn only from a `spectractor_bridge.spectrum.Spectrum`.

Nothing here fits or extracts: every figure shows what the spectrum file holds (the ``S_*``
spectrogram planes, ``PSF_TAB``, ``LINES``, ``ORDER2`` and the optional ``PSF_BINS`` extra
HDU). Figures are built with `matplotlib.figure.Figure` and the Agg canvas (no pyplot, no
global state) and written atomically by `atmospec.plots.common.save_png`.

* `plot_spectrogram`: the ``S_DATA`` cutout (asinh stretch from the ZScale lower limit to a
  high percentile) with the trace of ``PSF_TAB`` and wavelength ticks along it.
* `plot_forward_model`: data, 2D model ``S_FIT`` and normalised residuals, with the residual
  histogram against a unit Gaussian.
* `plot_psf_vs_wavelength`: FWHM, γ, α and the trace centre against wavelength, with the
  per-bin fits of ``PSF_BINS`` when present (robust y-ranges, the order-2 region shaded).
* `plot_wavelength_residuals`: line positions minus their catalogue wavelengths.
* `plot_spectrum`: the flux with its error band, the detected lines and the second order.
* `plot_spectrum_diagnostics`: every figure the spectrum's content allows, as PNG files.

Orientation
-----------
Spectractor's cutouts have the dispersion along x (columns); atmospec's LATISS cutouts have
it along y (rows: LATISS disperses along −y, so a cutout is tall and narrow, e.g. 2500 × 121).
The dispersion axis is taken as the ``PSF_TAB`` coordinate (``x_c`` or ``y_c``) spanning the
larger range; images are transposed when it is y, and the horizontal axis is inverted when
the wavelength decreases along it, so the dispersion is always horizontal with the wavelength
increasing to the right. Axes keep the ``S_DATA`` pixel coordinates. Long strips are shown in
one wide panel with ``aspect='auto'`` (the cross-dispersion direction is stretched, not split).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.visualization import AsinhStretch, ImageNormalize
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.mathtext import MathTextParser

from atmospec.plots.common import (
    DPI,
    config_colour,
    config_label,
    fixed_margins,
    save_png,
    zscale_limits,
)
from atmospec.plots.limits import mark_outside, robust_limits
from atmospec.spectro.spectrum import Spectrum

log = logging.getLogger(__name__)

__all__ = [
    "FIGURES",
    "plot_forward_model",
    "plot_psf_vs_wavelength",
    "plot_spectrogram",
    "plot_spectrum",
    "plot_spectrum_diagnostics",
    "plot_wavelength_residuals",
]

#: Largest number of displayed image pixels along either axis (block means beyond).
MAX_DISPLAY_PX = 1200
#: Residual colour scale, ± this many σ.
RESIDUAL_RANGE = 5.0
#: Half-width of the "good calibration" band of the wavelength-residual plot, nm.
LINE_BAND_NM = 0.3
#: A trace more than this many pixels away from the data's ridge is drawn shifted onto it.
TRACE_MISMATCH_PX = 3.0

_MATH = MathTextParser("path")
_LATEX_CHARS = re.compile(r"[$\\{}]")


# ------------------------------------------------------------------------------ helpers


def _tex(text: str) -> str:
    """``text`` if matplotlib's mathtext renders it, else a plain version without markup."""
    text = str(text).strip()
    if "$" not in text:
        return text
    try:
        if text.count("$") % 2:
            raise ValueError("unbalanced $")
        _MATH.parse(text)
    except ValueError:
        plain = _LATEX_CHARS.sub("", text)
        return plain.replace("_", "").replace("^", "")
    return text


def _column(table: Table, name: str) -> np.ndarray:
    """Column as a float array (units dropped)."""
    col = table[name]
    return np.asarray(getattr(col, "value", col), dtype=float)


def _extra_table(spectrum: Spectrum, name: str) -> Table | None:
    """Extra HDU ``name`` (e.g. ``PSF_BINS``) as a table, or None."""
    for hdu in spectrum.extra_hdus:
        if hdu.name.upper() == name and isinstance(hdu, fits.BinTableHDU | fits.TableHDU):
            return Table.read(hdu, unit_parse_strict="silent")
    return None


@dataclass(frozen=True)
class _Geometry:
    """Where the trace runs in ``S_DATA`` and how to show it dispersion-horizontal."""

    vertical: bool
    """Dispersion along rows (y) of ``S_DATA``: atmospec's layout."""
    increasing: bool
    """Wavelength increases with the dispersion pixel coordinate."""
    lambdas: np.ndarray
    disp: np.ndarray
    """Trace position along the dispersion (``y_c`` if vertical, else ``x_c``), pixels."""
    cross: np.ndarray
    """Trace position across the dispersion, pixels."""

    @property
    def disp_name(self) -> str:
        return "y" if self.vertical else "x"

    @property
    def cross_name(self) -> str:
        return "x" if self.vertical else "y"

    def display(self, image: np.ndarray) -> np.ndarray:
        """``image`` with the dispersion along its second axis."""
        return image.T if self.vertical else image

    def orient(self, ax: Axes, n_disp: int) -> None:
        """Horizontal limits of a displayed image, wavelength increasing to the right."""
        lo, hi = -0.5, n_disp - 0.5
        ax.set_xlim((lo, hi) if self.increasing else (hi, lo))

    def wavelength_at(self, disp: np.ndarray | float) -> np.ndarray:
        order = np.argsort(self.disp)
        return np.interp(disp, self.disp[order], self.lambdas[order])


def _geometry(spectrum: Spectrum) -> _Geometry:
    """Trace geometry from ``PSF_TAB`` (``lambdas``, ``x_c``, ``y_c``)."""
    psf = spectrum.psf_table
    if psf is None:
        raise ValueError("the spectrum has no PSF_TAB: no trace to draw")
    missing = [c for c in ("lambdas", "x_c", "y_c") if c not in psf.colnames]
    if missing:
        raise ValueError(f"PSF_TAB lacks column(s) {', '.join(missing)}")
    lam, x, y = (_column(psf, c) for c in ("lambdas", "x_c", "y_c"))
    ok = np.isfinite(lam) & np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2:
        raise ValueError("PSF_TAB has fewer than two finite trace points")
    lam, x, y = lam[ok], x[ok], y[ok]
    vertical = bool(np.ptp(y) > np.ptp(x))
    disp, cross = (y, x) if vertical else (x, y)
    if not np.ptp(disp) > 0 or not np.ptp(lam) > 0:
        raise ValueError("PSF_TAB trace does not move along the dispersion")
    slope = np.polyfit(disp, lam, 1)[0]
    return _Geometry(vertical=vertical, increasing=bool(slope > 0), lambdas=lam, disp=disp,
                     cross=cross)


def _spectrogram_planes(spectrum: Spectrum) -> np.ndarray:
    if spectrum.spectrogram is None:
        raise ValueError("the spectrum has no spectrogram (S_DATA)")
    data = np.asarray(spectrum.spectrogram.data.data, dtype=float)
    if data.ndim != 2 or min(data.shape) < 2:
        raise ValueError(f"S_DATA is not a 2-D image (shape {data.shape})")
    return data


def _image_unit(spectrum: Spectrum) -> str:
    """Unit of the ``S_*`` planes: their ``UNIT1``/``BUNIT``, else guessed from `flux_unit`."""
    assert spectrum.spectrogram is not None
    header = spectrum.spectrogram.data.header
    for key in ("BUNIT", "UNIT1"):
        if header.get(key):
            return _tex(str(header[key]))
    return "e⁻" if spectrum.flux_unit.lower().startswith("electron") else "ADU"


def _bin_axis(image: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """Mean of the finite pixels in blocks of ``factor`` along ``axis`` (edge padded, NaN
    where a block has none)."""
    if factor == 1:
        return image
    moved = np.moveaxis(image, axis, -1)
    pad = (-moved.shape[-1]) % factor
    moved = np.pad(moved, ((0, 0), (0, pad)), constant_values=np.nan)
    blocks = moved.reshape(moved.shape[0], -1, factor)
    finite = np.isfinite(blocks)
    count = finite.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(finite, blocks, 0.0).sum(axis=-1) / count
    return np.moveaxis(mean, -1, axis)


def _shown(image: np.ndarray, geom: _Geometry
           ) -> tuple[np.ndarray, tuple[float, ...], tuple[int, int]]:
    """Displayed image (dispersion horizontal), its extent and the binning factors.

    Each axis longer than `MAX_DISPLAY_PX` is averaged in blocks along itself only, so a
    2500 × 121 strip keeps its full cross-dispersion resolution.
    """
    shown = np.asarray(geom.display(image), dtype=np.float32)
    shown = np.where(np.isfinite(shown), shown, np.nan)
    fy, fx = (max(1, math.ceil(n / MAX_DISPLAY_PX)) for n in shown.shape)
    small = _bin_axis(_bin_axis(shown, fx, 1), fy, 0)
    # Extent in full-resolution pixel indices (block edges at -0.5, as in plots.isr).
    extent = (-0.5, small.shape[1] * fx - 0.5, -0.5, small.shape[0] * fy - 0.5)
    return small, extent, (fx, fy)


def _binning_note(factor: tuple[int, int]) -> str:
    """``', shown as 3×1 block means'`` (along × across the dispersion), or ``''``."""
    if factor == (1, 1):
        return ""
    return f", shown as {factor[0]}×{factor[1]} block means (along × across the dispersion)"


def _norm(values: np.ndarray) -> ImageNormalize:
    """Asinh stretch from the ZScale lower limit (sky) to the 99.7th percentile (trace)."""
    vmin, vmax = zscale_limits(values)
    finite = values[np.isfinite(values)]
    if finite.size:
        vmax = max(vmax, float(np.percentile(finite, 99.7)))
    if not vmax > vmin:
        vmax = vmin + 1.0
    return ImageNormalize(vmin=vmin, vmax=vmax, stretch=AsinhStretch(a=0.02), clip=True)


def _colorbar(fig: Figure, im: Any, ax: Axes, label: str) -> None:
    """Colour bar with ticks evenly spaced in the stretched scale (asinh crowds linear ones)."""
    cbar = fig.colorbar(im, ax=ax, pad=0.01, label=label)
    norm = im.norm
    if isinstance(norm, ImageNormalize) and norm.vmin is not None and norm.vmax is not None:
        raw = np.atleast_1d(norm.inverse(np.linspace(0.0, 1.0, 5)))
        scale = 10.0 ** np.floor(np.log10(max(abs(norm.vmax - norm.vmin), 1e-300))) / 10.0
        steps = np.round(np.asarray(raw, dtype=float) / scale)
        steps[0], steps[-1] = math.ceil(norm.vmin / scale), math.floor(norm.vmax / scale)
        ticks = np.unique(steps * scale)
        ticks = ticks[(ticks >= norm.vmin) & (ticks <= norm.vmax)]
        if ticks.size >= 2:
            cbar.set_ticks(ticks)


def _strip_height(geom: _Geometry, shape: tuple[int, int], width_in: float) -> float:
    """Panel height (inches) of a displayed cutout in a ``width_in`` wide panel."""
    n_cross, n_disp = geom.display(np.empty(shape)).shape
    return float(np.clip(width_in * n_cross / n_disp, 1.6, 4.5))


def _trace_offset(image: np.ndarray, geom: _Geometry) -> float:
    """Median (data ridge − ``PSF_TAB`` trace) across the dispersion, pixels.

    Spectractor 2.4's ``PSF_TAB`` gives ``y_c`` in the frame of its fitting window, not of
    the saved ``S_DATA`` (the CTIO test file is off by ≈ 90 px); the trace is then drawn on
    the ridge of the data and the shift reported.
    """
    shown = geom.display(image)
    idx = np.round(geom.disp).astype(int)
    ok = (idx >= 0) & (idx < shown.shape[1])
    if not ok.any():
        return 0.0
    profiles = shown[:, idx[ok]]
    good = np.isfinite(profiles).any(axis=0)
    if not good.any():
        return 0.0
    ridge = np.nanargmax(np.where(np.isfinite(profiles[:, good]), profiles[:, good], -np.inf),
                         axis=0)
    return float(np.median(ridge - geom.cross[ok][good]))


def _nice_step(span: float, target: int = 8) -> float:
    for step in (5.0, 10.0, 20.0, 25.0, 50.0, 100.0, 200.0, 250.0, 500.0):
        if span / step <= target:
            return step
    return 1000.0


def _summary(spectrum: Spectrum) -> str:
    """``target — filter~disperser — airmass — date`` from the header, the parts present
    (the configuration named as in the report's tables, `config_label`)."""
    parts = [spectrum.target or "unknown target"]
    if spectrum.disperser:
        parts.append(config_label(str(spectrum.header.get("FILTER", "empty")),
                                  spectrum.disperser))
    if spectrum.airmass is not None:
        parts.append(f"airmass {spectrum.airmass:.3f}")
    date = spectrum.header.get("DATE-OBS") or spectrum.header.get("DATE")
    if date:
        parts.append(str(date)[:19].replace("T", " "))
    return " — ".join(parts)


def _colour(spectrum: Spectrum) -> str:
    return config_colour(str(spectrum.header.get("FILTER", "empty")), spectrum.disperser or "")


# ------------------------------------------------------------------------- spectrogram


def plot_spectrogram(spectrum: Spectrum, ax: Axes | None = None) -> Figure:
    """The ``S_DATA`` cutout, dispersion horizontal, with the trace and wavelength ticks.

    The image is shown with an asinh stretch from its ZScale lower limit to its 99.7th
    percentile, block-averaged when longer than `MAX_DISPLAY_PX`, in one wide panel with
    ``aspect='auto'``. The trace is ``PSF_TAB`` ``(x_c, y_c)``; round wavelengths (from
    ``lambdas``) are marked on it and labelled on the top axis. If the trace lies more than
    `TRACE_MISMATCH_PX` off the data's ridge (Spectractor 2.4 files give ``y_c`` in another
    frame) it is drawn shifted onto the ridge, the shift stated in the legend.

    Parameters
    ----------
    spectrum : Spectrum
        Spectrum with ``S_DATA`` and ``PSF_TAB`` (``lambdas``, ``x_c``, ``y_c``).
    ax : matplotlib.axes.Axes, optional
        Axes to draw in; a new figure is made by default.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        No ``S_DATA`` image or no usable trace in ``PSF_TAB``.
    """
    data = _spectrogram_planes(spectrum)
    geom = _geometry(spectrum)
    if ax is None:
        width = 13.0
        fig = Figure(figsize=(width, _strip_height(geom, data.shape, 11.0) + 1.6))
        ax = fig.add_subplot()
        # Below: the axis label; above: two title lines and the wavelength axis.
        fixed_margins(fig, left=0.8, right=0.1, bottom=0.55, top=1.05)
    else:
        fig = ax.get_figure()
    small, extent, factor = _shown(data, geom)
    im = ax.imshow(small, origin="lower", extent=extent, aspect="auto", cmap="magma",
                   norm=_norm(small), interpolation="nearest")
    _colorbar(fig, im, ax, f"signal ({_image_unit(spectrum)})")
    n_cross, n_disp = geom.display(data).shape
    geom.orient(ax, n_disp)
    ax.set_ylim(-0.5, n_cross - 0.5)

    offset = _trace_offset(data, geom)
    cross = geom.cross
    label = f"trace (PSF_TAB {geom.disp_name}_c, {geom.cross_name}_c)"
    if abs(offset) > TRACE_MISMATCH_PX:
        log.warning("PSF_TAB %s_c is %.1f px off the spectrogram's ridge: trace drawn shifted",
                    geom.cross_name, offset)
        cross = cross + offset
        label += f", {geom.cross_name}_c shifted by {offset:+.1f} px onto the data"
    order = np.argsort(geom.disp)
    ax.plot(geom.disp[order], cross[order], color="#30d0ff", lw=1.0, alpha=0.8, label=label,
            gid="trace")

    lam_lo, lam_hi = float(geom.lambdas.min()), float(geom.lambdas.max())
    step = _nice_step(lam_hi - lam_lo)
    ticks = np.arange(math.ceil(lam_lo / step) * step, lam_hi + 1e-9, step)
    lam_order = np.argsort(geom.lambdas)
    pos = np.interp(ticks, geom.lambdas[lam_order], geom.disp[lam_order])
    at = np.interp(ticks, geom.lambdas[lam_order], cross[lam_order])
    ax.plot(pos, at, "|", color="white", ms=14, mew=1.5, gid="wavelength_ticks")
    for p, y, w in zip(pos, at, ticks, strict=True):
        ax.annotate(f"{w:g}", (p, y), xytext=(0, 9), textcoords="offset points", ha="center",
                    fontsize=7, color="white")
    top = ax.secondary_xaxis("top")
    top.set_xticks(pos, labels=[f"{w:g}" for w in ticks])
    top.set_xlabel("wavelength along the trace (nm)")

    ax.set_xlabel(f"{geom.disp_name} (S_DATA pixel, along the dispersion)")
    ax.set_ylabel(f"{geom.cross_name} (S_DATA pixel)")
    ax.legend(loc="lower left", fontsize=7, framealpha=0.6)
    shape = f"{data.shape[1]}×{data.shape[0]} px" + _binning_note(factor)
    ax.set_title(f"{_summary(spectrum)}\nspectrogram S_DATA ({shape}, asinh stretch)",
                 fontsize=9, loc="left")
    return fig


# ------------------------------------------------------------------------ forward model


def _model_planes(spectrum: Spectrum) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """``S_DATA``, ``S_FIT`` and the normalised residuals, checked for shape."""
    data = _spectrogram_planes(spectrum)
    sg = spectrum.spectrogram
    assert sg is not None
    if sg.fit is None:
        raise ValueError("the spectrum has no 2D model (S_FIT)")
    model = np.asarray(sg.fit.data, dtype=float)
    if model.shape != data.shape:
        raise ValueError(f"S_FIT has shape {model.shape}, not S_DATA's {data.shape} "
                         "(Spectractor 2.4 stores a flattened model): cannot show it as an "
                         "image")
    if sg.residuals is not None and sg.residuals.data.shape == data.shape:
        return data, model, np.asarray(sg.residuals.data, dtype=float), "S_RES"
    if sg.err is None or sg.err.data.shape != data.shape:
        raise ValueError("neither S_RES nor S_ERR has S_DATA's shape: no normalised residuals")
    err = np.asarray(sg.err.data, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        res = np.where(err > 0, (data - model) / err, np.nan)
    return data, model, res, "(S_DATA − S_FIT) / S_ERR"


def plot_forward_model(spectrum: Spectrum, fig: Figure | None = None) -> Figure:
    """Data, 2D model and normalised residuals of the spectrogram, and their histogram.

    Panels, top to bottom and dispersion horizontal as in `plot_spectrogram`: ``S_DATA``,
    ``S_FIT`` (same stretch), normalised residuals (``S_RES``, else
    ``(S_DATA − S_FIT)/S_ERR``) on a symmetric ±`RESIDUAL_RANGE` σ scale; on the right the
    residual histogram with a unit Gaussian.

    Parameters
    ----------
    spectrum : Spectrum
        Spectrum with ``S_DATA``, a 2D ``S_FIT`` of the same shape and ``S_RES`` or ``S_ERR``.
    fig : matplotlib.figure.Figure, optional
        Empty figure to draw in.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        No ``S_DATA``/``S_FIT``, or ``S_FIT`` not an image of ``S_DATA``'s shape (e.g.
        Spectractor 2.4's flattened model), or no way to normalise the residuals.
    """
    data, model, res, res_name = _model_planes(spectrum)
    try:
        geom = _geometry(spectrum)
    except ValueError:
        # No trace: guess the dispersion from the cutout's long side, wavelength rightwards.
        vertical = data.shape[0] > data.shape[1]
        geom = _Geometry(vertical, True, np.zeros(2), np.zeros(2), np.zeros(2))
    panel_h = _strip_height(geom, data.shape, 9.0)
    if fig is None:
        fig = Figure(figsize=(13.0, 3 * panel_h + 1.4))
    axes = fig.subplots(3, 2, width_ratios=(3.2, 1.0), sharex="col")
    # Room for the panel titles between the rows, the colour bars' labels and the
    # histogram's axis label between the columns.
    fixed_margins(fig, left=0.8, right=0.15, bottom=0.55, top=0.45, hspace=0.35,
                  wspace=0.85)
    for a in axes[1:, 1]:
        a.remove()
    hist_ax = axes[0, 1]
    # The histogram spans the right column.
    gs = axes[0, 0].get_gridspec()
    hist_ax.remove()
    hist_ax = fig.add_subplot(gs[:, 1])

    unit = _image_unit(spectrum)
    small_data, extent, factor = _shown(data, geom)
    small_model = _shown(model, geom)[0]
    small_res = _shown(res, geom)[0]
    norm = _norm(small_data)
    n_cross, n_disp = geom.display(data).shape
    panels = ((small_data, "S_DATA", norm, "magma", f"signal ({unit})"),
              (small_model, "S_FIT (2D model)", norm, "magma", f"model ({unit})"),
              (small_res, f"normalised residuals {res_name}", None, "RdBu_r",
               "residual (σ)"))
    for ax, (img, title, nrm, cmap, clabel) in zip(axes[:, 0], panels, strict=True):
        kwargs: dict[str, Any] = ({"norm": nrm} if nrm is not None else
                                  {"vmin": -RESIDUAL_RANGE, "vmax": RESIDUAL_RANGE})
        im = ax.imshow(img, origin="lower", extent=extent, aspect="auto", cmap=cmap,
                       interpolation="nearest", **kwargs)
        im.set_gid(title.split()[0])
        _colorbar(fig, im, ax, clabel)
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_ylabel(f"{geom.cross_name} (S_DATA pixel)")
        ax.set_ylim(-0.5, n_cross - 0.5)
    geom.orient(axes[0, 0], n_disp)
    axes[-1, 0].set_xlabel(f"{geom.disp_name} (S_DATA pixel, along the dispersion)")

    finite = res[np.isfinite(res)]
    edges = np.linspace(-RESIDUAL_RANGE, RESIDUAL_RANGE, 41)
    if finite.size:
        hist_ax.hist(np.clip(finite, -RESIDUAL_RANGE, RESIDUAL_RANGE), bins=edges,
                     density=True, color="#3060c0", alpha=0.7,
                     label=f"{finite.size:,} pixels\nmean {finite.mean():+.2f}, "
                           f"std {finite.std():.2f}")
    x = np.linspace(-RESIDUAL_RANGE, RESIDUAL_RANGE, 201)
    hist_ax.plot(x, np.exp(-0.5 * x**2) / math.sqrt(2 * math.pi), color="k", lw=1.2,
                 label="unit Gaussian", gid="unit_gaussian")
    hist_ax.set_xlabel("normalised residual (σ)")
    hist_ax.set_ylabel("probability density (1/σ)")
    hist_ax.legend(fontsize=8, loc="upper right")
    hist_ax.set_title("residual distribution (clipped at ±5σ)", fontsize=9)
    fig.suptitle(f"{_summary(spectrum)}: forward model{_binning_note(factor)}", fontsize=10)
    return fig


# ------------------------------------------------------------------------------- PSF


def _fwhm(table: Table) -> np.ndarray:
    """``fwhm`` column, else the Moffat FWHM ``2 γ √(2^(1/α) − 1)``."""
    if "fwhm" in table.colnames:
        return _column(table, "fwhm")
    gamma, alpha = _column(table, "gamma"), _column(table, "alpha")
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return 2.0 * gamma * np.sqrt(2.0 ** (1.0 / alpha) - 1.0)


def plot_psf_vs_wavelength(spectrum: Spectrum, fig: Figure | None = None) -> Figure:
    """PSF FWHM, Moffat γ and α, and the trace centre against wavelength.

    Lines are ``PSF_TAB`` (FWHM from its ``fwhm`` column, else computed from γ and α). The
    trace-centre panel shows the cross-dispersion centre (``x_c`` for a vertical trace, else
    ``y_c``, in cutout pixels) minus its median. When the spectrum carries a ``PSF_BINS``
    extra HDU its per-bin fits are drawn as points, in the same cutout pixels: filled when
    ``used``, red crosses when rejected, with the ``gamma_err``/``alpha_err`` error bars.
    Each panel's y-range spans the bulk of the points with sane errors and the whole
    ``PSF_TAB`` curve (`atmospec.plots.limits.robust_limits`); points beyond are arrows on
    the edge. Where the ``ORDER2`` light exceeds `ORDER2_SHADE` of the first order the
    wavelengths are shaded: the bins there are fits of both orders together.

    Parameters
    ----------
    spectrum : Spectrum
        Spectrum with ``PSF_TAB`` (``lambdas`` and ``gamma``/``alpha`` or ``fwhm``).
    fig : matplotlib.figure.Figure, optional
        Empty figure to draw in.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        No ``PSF_TAB`` or no ``lambdas`` column.
    """
    psf = spectrum.psf_table
    if psf is None or "lambdas" not in psf.colnames:
        raise ValueError("the spectrum has no PSF_TAB with a 'lambdas' column")
    lam = _column(psf, "lambdas")
    order = np.argsort(lam)
    try:
        geom: _Geometry | None = _geometry(spectrum)
    except ValueError:
        geom = None
    cross_col = None if geom is None else f"{geom.cross_name}_c"
    bins = _psf_bins(spectrum)

    panels: list[tuple[str, str, np.ndarray | None]] = [
        ("fwhm", "FWHM (pixel)",
         _fwhm(psf) if "fwhm" in psf.colnames or {"gamma", "alpha"} <= set(psf.colnames)
         else None),
        ("gamma", "Moffat γ (pixel)", _column(psf, "gamma") if "gamma" in psf.colnames
         else None),
        ("alpha", "Moffat α (dimensionless)", _column(psf, "alpha") if "alpha" in psf.colnames
         else None),
    ]
    ref = 0.0
    if cross_col is not None:
        cross = _column(psf, cross_col)
        ref = float(np.nanmedian(cross))
        panels.append(("trace", f"trace centre {cross_col} − {ref:.1f}\n(cutout pixel)",
                       cross - ref))
    panels = [p for p in panels if p[2] is not None]
    if not panels:
        raise ValueError("PSF_TAB has none of fwhm, gamma, alpha and no trace")
    if fig is None:
        fig = Figure(figsize=(10.0, 2.1 * len(panels) + 1.0))
    axes = np.atleast_1d(fig.subplots(len(panels), 1, sharex=True))
    # Below the panels: the axis label, then the legend (up to three rows).
    fixed_margins(fig, left=1.0, right=0.15, bottom=1.25, top=0.4, hspace=0.12)
    colour = _colour(spectrum)
    from_model = spectrum.header.get("SPECTYPE") == "forward_model"
    tab_label = "PSF_TAB (2D model)" if from_model else "PSF_TAB"
    shaded = _order2_span(spectrum)
    n_outside = 0
    for ax, (key, label, values) in zip(axes, panels, strict=True):
        assert values is not None
        ax.plot(lam[order], values[order], color=colour, lw=1.3, label=tab_label, gid=key)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if shaded is not None:
            ax.axvspan(*shaded, color="#e07020", alpha=0.12, lw=0, gid=f"order2_{key}",
                       label=f"order 2 > {ORDER2_SHADE:.0%} of order 1 (bins fit both)")
        drawn = None if bins is None else _draw_psf_bins(ax, bins, key, cross_col, ref)
        limits = robust_limits(*(drawn or (values, None)), include=values)
        if limits is not None:
            ax.set_ylim(*limits)
            if drawn is not None:
                n_outside += mark_outside(ax, bins["lambdas"], drawn[0], limits,
                                          gid=f"bins_{key}_outside")
    handles, labels = axes[0].get_legend_handles_labels()
    if n_outside:
        handles.append(Line2D([], [], ls="none", marker="^", color="#606060", ms=6))
        labels.append("bins outside the axis (arrow at the edge)")
    # Below the panels: inside one, it would hide the points it explains.
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncols=2)
    axes[-1].set_xlabel("wavelength (nm)")
    fig.suptitle(f"{_summary(spectrum)}: PSF along the trace", fontsize=10)
    return fig


#: Order-2 light above this fraction of the first order's shades the PSF figure.
ORDER2_SHADE = 0.05


def _order2_span(spectrum: Spectrum) -> tuple[float, float] | None:
    """The wavelengths from the first where the ``ORDER2`` light exceeds `ORDER2_SHADE` of
    the first-order flux to the end of the spectrum; None without order 2 there.

    The per-bin Moffat fits (``PSF_BINS``) are made before the order-2 correction, so there
    they fit the sum of both orders: a wider, second PSF on the first (holo4_003: ~20 % of
    the light at 850 nm, as much as the first order near 1000 nm)."""
    o2 = spectrum.order2
    if o2 is None or o2.data.ndim != 2 or o2.data.shape[0] < 2 or not o2.data.shape[1]:
        return None
    wl = np.asarray(spectrum.wavelength, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.interp(wl, o2.data[0], o2.data[1], left=0.0, right=0.0) / np.abs(
            np.asarray(spectrum.flux, dtype=float))
    above = np.flatnonzero(np.isfinite(ratio) & (ratio > ORDER2_SHADE))
    if not above.size:
        return None
    return float(wl[above[0]]), float(np.nanmax(wl))


def _psf_bins(spectrum: Spectrum) -> Table | None:
    """``PSF_BINS`` with its centres in ``PSF_TAB``'s cutout pixels.

    Files written before the bins had ``y_c`` (a ``row`` column instead) hold ``x_c`` in
    the extraction frame's full-image columns: ``S_XMIN`` (the cutout's first column in an
    unturned frame) takes them to the cutout."""
    bins = _extra_table(spectrum, "PSF_BINS")
    if bins is None or "lambdas" not in bins.colnames:
        return None
    if "y_c" not in bins.colnames and "row" in bins.colnames and "x_c" in bins.colnames:
        bins["x_c"] = _column(bins, "x_c") - float(spectrum.header.get("S_XMIN", 0))
    return bins


def _draw_psf_bins(ax: Axes, bins: Table, key: str, cross_col: str | None, ref: float
                   ) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Draw the bins of one panel (used and rejected); return what was drawn, ``(y, yerr)``,
    or None when the bins have no such column."""
    bcol = {"trace": cross_col}.get(key, key)
    if bcol is None or bcol not in bins.colnames:
        if key == "fwhm" and {"gamma", "alpha"} <= set(bins.colnames):
            by = _fwhm(bins)
        else:
            return None
    else:
        by = _column(bins, bcol) - (ref if key == "trace" else 0.0)
    bl = _column(bins, "lambdas")
    used = (np.asarray(bins["used"], dtype=bool) if "used" in bins.colnames
            else np.ones(len(bins), dtype=bool))
    berr = (_column(bins, f"{bcol}_err") if bcol and f"{bcol}_err" in bins.colnames
            else None)
    for sel, style, name in ((used, {"fmt": "o", "color": "k", "ms": 3.5}, "used"),
                             (~used, {"fmt": "x", "color": "#e02020", "ms": 5},
                              "rejected")):
        if sel.any():
            ax.errorbar(bl[sel], by[sel], yerr=None if berr is None else berr[sel],
                        lw=0.8, label=f"PSF_BINS {name} ({int(sel.sum())})",
                        gid=f"bins_{key}_{name}", **style)
    return by, berr


# --------------------------------------------------------------------- wavelength lines


def _line_residuals(lines: Table) -> tuple[np.ndarray, np.ndarray]:
    """Catalogue wavelength and residual (``Residual``, else ``Detected − Tabulated``), nm."""
    tab = _column(lines, "Tabulated")
    if "Residual" in lines.colnames:
        return tab, _column(lines, "Residual")
    return tab, _column(lines, "Detected") - tab


def plot_wavelength_residuals(spectrum: Spectrum, ax: Axes | None = None) -> Figure:
    """Residual of each fitted line's position against its catalogue wavelength.

    Points are ``Residual`` (else ``Detected − Tabulated``) in nm at ``Tabulated``, with the
    ``Err`` error bars, labelled with the line name (mathtext, or the plain name when it does
    not parse); lines with ``Used`` false are open markers. The title gives the RMS of the
    used lines (all lines without a ``Used`` column); the grey band is ±`LINE_BAND_NM`.

    Parameters
    ----------
    spectrum : Spectrum
        Spectrum with a ``LINES`` table (``Tabulated``, ``Detected`` or ``Residual``).
    ax : matplotlib.axes.Axes, optional
        Axes to draw in.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        No ``LINES`` table or no line in it.
    """
    lines = spectrum.lines
    if lines is None or len(lines) == 0:
        raise ValueError("the spectrum has no LINES table (or it is empty)")
    if "Tabulated" not in lines.colnames or not ({"Detected", "Residual"} & set(lines.colnames)):
        raise ValueError("LINES lacks 'Tabulated' and 'Detected'/'Residual'")
    tab, res = _line_residuals(lines)
    err = _column(lines, "Err") if "Err" in lines.colnames else np.zeros_like(res)
    used = (np.asarray(lines["Used"], dtype=bool) if "Used" in lines.colnames
            else np.ones(len(lines), dtype=bool))
    names = [str(n) for n in lines["Line"]] if "Line" in lines.colnames else [""] * len(lines)
    if ax is None:
        fig = Figure(figsize=(10.0, 5.0))
        ax = fig.add_subplot()
        fixed_margins(fig, left=0.8, right=0.15, bottom=0.55, top=0.6)
    else:
        fig = ax.get_figure()
    colour = _colour(spectrum)
    ax.axhspan(-LINE_BAND_NM, LINE_BAND_NM, color="0.85", zorder=0,
               label=f"±{LINE_BAND_NM:g} nm")
    ax.axhline(0.0, color="0.5", lw=0.8)
    ax.errorbar(tab, res, yerr=err, fmt="none", ecolor=colour, elinewidth=1, capsize=2)
    ax.scatter(tab, res, s=36, facecolors=[colour if u else "white" for u in used],
               edgecolors=colour, zorder=3, gid="line_residuals",
               label="used (open: rejected)" if not used.all() else "lines")
    for x, y, name in zip(tab, res, names, strict=True):
        text = _tex(name) or f"{x:.1f}"
        ax.annotate(text, (x, y), xytext=(4, 6), textcoords="offset points", fontsize=8)
    good = used & np.isfinite(res)
    rms = float(np.sqrt(np.mean(res[good] ** 2))) if good.any() else math.nan
    ax.set_xlabel("tabulated wavelength (nm)")
    ax.set_ylabel("detected − tabulated (nm)")
    span = max(LINE_BAND_NM * 1.5, float(np.nanmax(np.abs(res) + err)) * 1.15
               if np.isfinite(res).any() else 1.0)
    ax.set_ylim(-span, span)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"{_summary(spectrum)}\nline positions: RMS {rms:.3f} nm over "
                 f"{int(good.sum())} used lines", fontsize=9, loc="left")
    return fig


# ------------------------------------------------------------------------------ spectrum


def plot_spectrum(spectrum: Spectrum, ax: Axes | None = None) -> Figure:
    """Flux against wavelength with its 1σ band, detected lines and the second order.

    Lines of ``LINES`` are marked at their ``Detected`` wavelength (dashed for rejected ones)
    and labelled; ``ORDER2`` (row 1 against row 0) is overlaid when present. The title gives
    target, disperser, airmass and date from the header.

    Parameters
    ----------
    spectrum : Spectrum
        Any spectrum.
    ax : matplotlib.axes.Axes, optional
        Axes to draw in.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        The spectrum has no point.
    """
    if spectrum.n_points == 0:
        raise ValueError("the spectrum has no wavelength point")
    if ax is None:
        fig = Figure(figsize=(11.0, 5.5))
        ax = fig.add_subplot()
        fixed_margins(fig, left=0.9, right=0.15, bottom=0.55, top=0.4)
    else:
        fig = ax.get_figure()
    wl, flux, err = spectrum.wavelength, spectrum.flux, spectrum.flux_err
    colour = _colour(spectrum)
    ax.fill_between(wl, flux - err, flux + err, color=colour, alpha=0.3, lw=0,
                    label="±1σ", gid="flux_band")
    ax.plot(wl, flux, color=colour, lw=1.0, label="order 1", gid="flux")
    o2 = spectrum.order2
    if o2 is not None and o2.data.ndim == 2 and o2.data.shape[0] >= 2 and o2.data.shape[1]:
        ax.plot(o2.data[0], o2.data[1], color="#e07020", lw=1.0, ls="--",
                label="order 2 contribution", gid="order2")
    lines = spectrum.lines
    if lines is not None and len(lines) and "Detected" in lines.colnames:
        det = _column(lines, "Detected")
        used = (np.asarray(lines["Used"], dtype=bool) if "Used" in lines.colnames
                else np.ones(len(lines), dtype=bool))
        names = ([str(n) for n in lines["Line"]] if "Line" in lines.colnames
                 else [""] * len(lines))
        transform = ax.get_xaxis_transform()
        for x, u, name in zip(det, used, names, strict=True):
            if not np.isfinite(x):
                continue
            ax.axvline(x, color="0.35", lw=0.7, ls="-" if u else ":", gid="line_marker")
            ax.text(x, 0.98, _tex(name) or f"{x:.1f}", transform=transform, rotation=90,
                    ha="right", va="top", fontsize=7, color="0.25")
        ax.plot([], [], color="0.35", lw=0.7, label="detected lines (dotted: rejected)")
    if spectrum.n_points > 1:
        ax.set_xlim(float(wl[0]), float(wl[-1]))
    ax.set_xlabel("wavelength (nm)")
    ax.set_ylabel(f"flux ({_tex(spectrum.flux_unit) or 'unknown unit'})")
    ax.legend(fontsize=8, loc="upper right", bbox_to_anchor=(1.0, 0.88))
    ax.grid(alpha=0.3)
    ax.set_title(_summary(spectrum), fontsize=10, loc="left")
    return fig


# ----------------------------------------------------------------------------- all figures


#: Figure suffix → function, in the order `plot_spectrum_diagnostics` writes them.
FIGURES: Mapping[str, Callable[[Spectrum], Figure]] = MappingProxyType({
    "spectrogram": plot_spectrogram,
    "model": plot_forward_model,
    "psf": plot_psf_vs_wavelength,
    "lines": plot_wavelength_residuals,
    "spectrum": plot_spectrum,
})


def plot_spectrum_diagnostics(spectrum: Spectrum, out_dir: str | os.PathLike[str],
                              stem: str) -> list[Path]:
    """Write every diagnostic figure the spectrum's content allows.

    Files are ``<stem>_spectrogram.png``, ``_model.png``, ``_psf.png``, ``_lines.png`` and
    ``_spectrum.png`` in ``out_dir`` (created if needed), written atomically at
    `atmospec.plots.common.DPI`. A figure whose inputs are missing or unusable (e.g. no
    ``LINES``, or Spectractor 2.4's flattened ``S_FIT``) is skipped with an info log line.

    Parameters
    ----------
    spectrum : Spectrum
        The spectrum to show.
    out_dir : path
        Output folder.
    stem : str
        File name prefix, e.g. the exposure id.

    Returns
    -------
    list of pathlib.Path
        Files written, in the order above.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, function in FIGURES.items():
        try:
            fig = function(spectrum)
        except ValueError as exc:
            log.info("%s: no %s figure (%s)", stem, suffix, exc)
            continue
        try:
            written.append(save_png(fig, out / f"{stem}_{suffix}.png", DPI))
        finally:
            fig.clear()  # no pyplot: dropping the Figure frees it once cleared
    return written

