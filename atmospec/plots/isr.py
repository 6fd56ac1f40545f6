"""Diagnostics of instrument signature removal: overscan profiles, post-ISR image, amp table.

Everything here reads ISR outputs (the post-ISR `Exposure` and the ``<OBSID>_isrstats.json``
dictionary written beside it) and never runs an ISR algorithm. Figures are built with
`matplotlib.figure.Figure` and the Agg canvas, without pyplot, so plotting is safe from worker
threads and leaves no global figure state behind. Every file is written atomically.
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from astropy import units as u
from astropy.table import MaskedColumn, Table
from matplotlib import colormaps
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from atmospec.camera.description import Camera, load_camera
from atmospec.camera.translator import optic_name
from atmospec.errors import BadInputError
from atmospec.exposure import DEFAULT_MASK_PLANES, Exposure
from atmospec.io import write_text_atomic
from atmospec.isr.preview import (
    PREVIEW_WIDTH,
    Preview,
    block_any,
    block_mean,
    make_preview,
)
from atmospec.plots.common import config_label, save_png, zscale_limits

log = logging.getLogger(__name__)

__all__ = [
    "AMP_STATS_COLUMNS",
    "amp_stats_table",
    "format_amp_stats",
    "plot_overscan_profiles",
    "plot_postisr",
    "plot_postisr_thumbnail",
    "write_amp_stats",
]

#: Resolution of every PNG written here.
DPI = 100

#: Overlay colour of the usual mask planes: saturated primaries that stay visible on a grey
#: image and differ from each other (Rubin's display defaults reuse green and yellow).
PLANE_COLORS: Mapping[str, str] = MappingProxyType({
    "BAD": "#ff2020",
    "SAT": "#ff30ff",
    "CR": "#30ff30",
    "INTRP": "#20c0ff",
    "EDGE": "#ffd700",
    "SUSPECT": "#ff8c00",
    "DETECTED": "#4060ff",
    "DETECTED_NEGATIVE": "#00ffd0",
    "NO_DATA": "#a0522d",
})
_FALLBACK_COLORS = ("#ffffff", "#8b4513", "#9acd32", "#ff69b4", "#7fffd4", "#d2b48c")

#: Amp-table columns after ``amp``: (stats key, unit or ``"image"`` for the image unit, kind).
AMP_STATS_COLUMNS: tuple[tuple[str, u.UnitBase | str | None, type], ...] = (
    ("gain", u.electron / u.adu, float),
    ("read_noise_e", u.electron, float),
    ("overscan_level_adu", u.adu, float),
    ("overscan_noise_e", u.electron, float),
    ("median", "image", float),
    ("robust_std", "image", float),
    ("n_sat", u.pix, int),
    ("n_bad", u.pix, int),
    ("n_cr", u.pix, int),
    ("n_suspect", u.pix, int),
)

#: Display formats for the terminal table (the ECSV file keeps full precision).
_TEXT_FORMATS = MappingProxyType({
    "gain": ".3f",
    "read_noise_e": ".2f",
    "overscan_level_adu": ".1f",
    "overscan_noise_e": ".2f",
    "median": ".2f",
    "robust_std": ".2f",
})

_UNIT_LABELS = MappingProxyType({"electron": "e⁻", "adu": "ADU"})


# --------------------------------------------------------------------------------- helpers


def _unit_label(unit: str) -> str:
    """Short axis label for an image unit name."""
    return _UNIT_LABELS.get(unit.lower(), unit)


def _as_float(value: Any) -> float:
    """JSON number (or null / missing) as a float, NaN when absent."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _amp_order(stats_amps: Mapping[str, Any], camera: Camera) -> list[str]:
    """Amp names of ``stats_amps`` in camera HDU order, unknown names last (sorted)."""
    known = [name for name in camera.amp_names if name in stats_amps]
    extra = sorted(set(stats_amps) - set(camera.amp_names))
    if extra:
        log.warning("ISR stats name amps unknown to %s: %s", camera.name, ", ".join(extra))
    return known + extra


# ------------------------------------------------------------------------ overscan profiles


def plot_overscan_profiles(
    stats: Mapping[str, Any], path: str | os.PathLike[str], camera: Camera | None = None
) -> Path:
    """Plot each amp's serial overscan level along the rows, laid out as on the detector.

    Each panel shows the per-row serial overscan level minus its median against the raw row
    number, with the median level and the overscan noise in the panel. Panels share their
    y axis so that an amp with an unusual drift or jump stands out.

    Parameters
    ----------
    stats : mapping
        ISR statistics as loaded from ``<OBSID>_isrstats.json``; per-amp ``overscan_rows_adu``
        (and ``overscan_row_step``, default 1) are used. Amps without a profile (overscan not
        applied) get a panel saying so.
    path : path
        Output PNG file (written atomically).
    camera : Camera, optional
        Camera giving the amp layout; LATISS by default.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    camera = load_camera("latiss") if camera is None else camera
    amps: Mapping[str, Any] = stats.get("amps", {}) or {}
    n_cols = 1 + max(a.ix for a in camera.amplifiers)
    n_rows = 1 + max(a.iy for a in camera.amplifiers)

    fig = Figure(figsize=(16, 6), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, sharex=True, sharey=True, squeeze=False)
    for amp in camera.amplifiers:
        # Row 0 of the subplot grid is the top of the figure, and iy counts from the bottom.
        ax = axes[n_rows - 1 - amp.iy, amp.ix]
        _overscan_panel(ax, amp.name, amps.get(amp.name))
    for ax in axes[-1, :]:
        ax.set_xlabel("raw row")
    for ax in axes[:, 0]:
        ax.set_ylabel("level − median (ADU)")
    unplaced = sorted(set(amps) - set(camera.amp_names))
    if unplaced:
        log.warning("overscan plot: amps unknown to %s not shown: %s", camera.name,
                    ", ".join(unplaced))

    obs_id = stats.get("obs_id", "unknown exposure")
    fig.suptitle(f"{obs_id}: serial overscan level per row, minus its median")
    return save_png(fig, path, DPI)


def _overscan_panel(ax: Any, name: str, entry: Mapping[str, Any] | None) -> None:
    """Draw one amp's overscan profile (or say why there is none) on ``ax``."""
    ax.tick_params(labelsize=7)
    if entry is None:
        ax.set_title(name, fontsize=9)
        ax.text(0.5, 0.5, "amp not in ISR stats", transform=ax.transAxes, ha="center",
                va="center", fontsize=8, color="0.4")
        return
    level = _as_float(entry.get("overscan_level_adu"))
    noise_adu = _as_float(entry.get("overscan_noise_adu"))
    noise_e = _as_float(entry.get("overscan_noise_e"))
    profile = entry.get("overscan_rows_adu")
    rows_adu = np.asarray(profile if profile is not None else [], dtype=float)
    finite = np.isfinite(rows_adu)
    if not finite.any():
        ax.set_title(name, fontsize=9)
        ax.text(0.5, 0.5, "no overscan profile\n(overscan not applied)",
                transform=ax.transAxes, ha="center", va="center", fontsize=8, color="0.4")
        return

    # The recorded per-amp level is the median of this profile, but recompute it so the
    # curve is centred even if the two ever come from different estimators.
    median = float(np.median(rows_adu[finite]))
    step = int(entry.get("overscan_row_step") or 1)
    rows = np.arange(rows_adu.size) * step
    ax.plot(rows, rows_adu - median, lw=0.6, color="tab:blue")
    ax.axhline(0.0, lw=0.5, color="0.5")
    shown_level = level if math.isfinite(level) else median
    ax.set_title(f"{name}: median {shown_level:.1f} ADU", fontsize=9)
    noise = f"σ = {noise_adu:.2f} ADU" if math.isfinite(noise_adu) else "σ = n/a"
    if math.isfinite(noise_e):
        noise += f" ({noise_e:.2f} e⁻)"
    ax.text(0.03, 0.95, noise, transform=ax.transAxes, ha="left", va="top", fontsize=7,
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.7})


# ------------------------------------------------------------------------------ post-ISR image


def plot_postisr(
    exposure: Exposure,
    path: str | os.PathLike[str],
    planes: Sequence[str] = ("BAD", "SAT", "CR", "INTRP", "EDGE", "SUSPECT"),
    max_size: int = 1024,
) -> Path:
    """Show a post-ISR image with its mask planes overlaid.

    The image is block-averaged by the smallest integer factor that brings its long side to
    at most ``max_size`` pixels, so the PNG stays small whatever the input. A downsampled
    pixel is coloured for a plane if any full-resolution pixel in its block has that plane;
    planes earlier in ``planes`` are drawn on top of later ones.

    Parameters
    ----------
    exposure : Exposure
        Post-ISR exposure (read only: unknown planes are not added to its mask).
    path : path
        Output PNG file (written atomically).
    planes : sequence of str
        Mask planes to overlay, each in its own colour; the legend gives the number of
        full-resolution pixels flagged in each.
    max_size : int
        Largest number of displayed pixels along either axis.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    if max_size < 1:
        raise ValueError(f"max_size must be positive, got {max_size}")
    ny, nx = exposure.image.shape
    factor = max(1, math.ceil(max(ny, nx) / max_size))
    small = block_mean(exposure.image, factor)
    vmin, vmax = zscale_limits(small)
    # A downsampled pixel (i, j) covers full-resolution pixels [i*f, (i+1)*f), whose centres
    # run from i*f to (i+1)*f - 1; with edges at -0.5 the axes read in full-res pixel indices.
    extent = (-0.5, small.shape[1] * factor - 0.5, -0.5, small.shape[0] * factor - 0.5)

    # Lay the figure out by hand in inches: the axes box follows the image aspect with its
    # long side fixed, so the PNG is at most 1200×875 px whatever the input, and the
    # colourbar matches the image height exactly (constrained layout clipped the y label of
    # a fixed-aspect image placed beside an outside legend).
    long_in, short_min = 7.5, 2.5
    ax_w = long_in if nx >= ny else max(long_in * nx / ny, short_min)
    ax_h = long_in if ny > nx else max(long_in * ny / nx, short_min)
    left, bottom, top, gap, cb_w, cb_labels, legend_w = 0.9, 0.6, 0.65, 0.15, 0.25, 0.9, 2.3
    width = left + ax_w + gap + cb_w + cb_labels + legend_w
    height = bottom + ax_h + top
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((left / width, bottom / height, ax_w / width, ax_h / height))
    cax = fig.add_axes(((left + ax_w + gap) / width, bottom / height, cb_w / width,
                        ax_h / height))
    cmap = colormaps["gray"].with_extremes(bad="#30305a")
    # aspect="auto" fills the box, whose aspect is the image's except for images more than
    # 3:1, which are stretched rather than shown as a sliver.
    im = ax.imshow(small, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, extent=extent,
                   interpolation="nearest", aspect="auto")
    cbar = fig.colorbar(im, cax=cax)
    cbar.set_label(f"signal ({_unit_label(exposure.unit)})")

    handles = []
    fallback = iter(_FALLBACK_COLORS * (1 + len(planes) // len(_FALLBACK_COLORS)))
    colors = {p: PLANE_COLORS.get(p) or next(fallback) for p in planes}
    for plane in reversed(planes):
        if plane not in exposure.mask_planes:
            continue
        flagged = (exposure.mask & (1 << exposure.mask_planes[plane])) != 0
        n_flagged = int(np.count_nonzero(flagged))
        if n_flagged:
            overlay = np.zeros((*small.shape, 4), dtype=np.float32)
            overlay[block_any(flagged, factor)] = to_rgba(colors[plane], alpha=0.85)
            ax.imshow(overlay, origin="lower", extent=extent, interpolation="nearest",
                      aspect="auto")
        handles.append(Patch(color=colors[plane], label=f"{plane}: {n_flagged:,} px"))
    handles.reverse()  # back to the order asked for
    for plane in planes:
        if plane not in exposure.mask_planes:
            handles.append(Patch(facecolor="none", edgecolor="0.5",
                                 label=f"{plane}: no such plane"))
    n_nonfinite = int(np.count_nonzero(~np.isfinite(exposure.image)))
    if n_nonfinite:
        handles.append(Patch(color="#30305a", label=f"non-finite: {n_nonfinite:,} px"))
    if handles:
        fig.legend(handles=handles, loc="upper left", title="mask planes", fontsize=8,
                   title_fontsize=9, alignment="left",
                   bbox_to_anchor=((width - legend_w + 0.05) / width, (bottom + ax_h) / height))

    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(-0.5, ny - 0.5)
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("y (pixel)")
    # Left-aligned so a long title over a narrow image runs into the free top margin.
    ax.set_title(_postisr_title(exposure, factor), fontsize=10, loc="left")
    return save_png(fig, path, DPI)


def _postisr_title(exposure: Exposure, factor: int) -> str:
    """Two-line title: OBSID and FILTER keys when present, then size and display binning."""
    meta = exposure.metadata
    parts = [str(meta["OBSID"]) if meta.get("OBSID") else "post-ISR image"]
    if meta.get("FILTER"):
        parts.append(f"filter {optic_name(meta['FILTER'], meta.get('INSTRUME'))}")
    ny, nx = exposure.image.shape
    size = f"{nx}×{ny} px" + (f", shown as {factor}×{factor} block means" if factor > 1 else "")
    return " — ".join(parts) + "\n" + size


def _thumbnail_title(meta: Mapping[str, Any]) -> str:
    """OBSID and the configuration as the night summary and the report's tables name it."""
    config = (config_label(optic_name(meta.get("FILTER"), meta.get("INSTRUME")),
                           optic_name(meta.get("GRATING"), meta.get("INSTRUME")))
              if meta.get("FILTER") or meta.get("GRATING") else None)
    return " — ".join(str(v) for v in (meta.get("OBSID"), config) if v)


def _preview_of_file(postisr: Path, max_width: int) -> Preview:
    """The preview of a post-ISR file (IMAGE and MASK memory-mapped when stored plain; the
    VARIANCE not read)."""
    from astropy.io import fits

    try:
        with fits.open(postisr, memmap=True) as hdul:
            image_hdu, mask_hdu = hdul["IMAGE"], hdul["MASK"]
            bits = {k[3:]: int(v) for k, v in mask_hdu.header.items() if k.startswith("MP_")}
            return make_preview(image_hdu.data, mask_hdu.data,
                                bits or dict(DEFAULT_MASK_PLANES),
                                str(image_hdu.header.get("BUNIT", "electron")),
                                hdul[0].header.copy(), max_width)
    except (OSError, KeyError, ValueError) as exc:
        raise BadInputError(postisr, f"not a readable post-ISR file ({exc})") from None


def plot_postisr_thumbnail(
    postisr: str | os.PathLike[str] | Exposure | Preview,
    path: str | os.PathLike[str],
    *,
    sources: tuple[np.ndarray, np.ndarray] | None = None,
    zeroth_order: tuple[float, float] | None = None,
    planes: Sequence[str] = ("BAD", "SAT", "CR", "INTRP", "EDGE", "SUSPECT"),
    max_width: int = PREVIEW_WIDTH,
) -> Path:
    """A small view of a post-ISR exposure with its mask planes and detections overlaid.

    For reports of many exposures: image and mask are each read once (block mean of the
    image, bitwise OR of the mask bits per block, one histogram of the mask values for the
    per-plane counts); the variance is not used. The PNG is at most ``max_width`` pixels
    wide. Sources are drawn as open circles, the zeroth order of a dispersed exposure as a
    cross. ZScale display limits.

    Parameters
    ----------
    postisr : path, Exposure or Preview
        Post-ISR exposure: a file (Rubin ExposureF layout; IMAGE and MASK memory-mapped
        when stored plain), the exposure in memory, as written (the night's worker right
        after ISR: reading the file back would decompress it again), or its preview
        (`atmospec.isr.preview`, e.g. read from ``<OBSID>_preview.fits``). All give the
        same figure.
    path : path
        Output PNG (written atomically).
    sources : (x, y) arrays, optional
        Detected sources, full-resolution pixel coordinates (e.g. a catalogue's
        ``xcentroid``, ``ycentroid``).
    zeroth_order : (x, y), optional
        Zeroth-order centroid of a dispersed exposure.
    planes : sequence of str
        Mask planes to overlay (earlier ones on top), in `PLANE_COLORS`.
    max_width : int
        Largest PNG width, pixels.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    BadInputError
        The file is missing or has no IMAGE/MASK extension.
    """
    if isinstance(postisr, Preview):
        preview, name = postisr, "post-ISR preview"
    elif isinstance(postisr, Exposure):
        preview = make_preview(postisr.image, postisr.mask,
                               dict(postisr.mask_planes) or dict(DEFAULT_MASK_PLANES),
                               postisr.unit, postisr.metadata, max_width)
        name = "post-ISR exposure"
    else:
        postisr = Path(postisr)
        preview, name = _preview_of_file(postisr, max_width), postisr.name
    small, small_mask, factor = preview.image, preview.mask, preview.factor
    bits = preview.bits
    counts, unit, meta, (ny, nx) = preview.counts, preview.unit, preview.metadata, preview.shape
    vmin, vmax = zscale_limits(small)
    extent = (-0.5, small.shape[1] * factor - 0.5, -0.5, small.shape[0] * factor - 0.5)

    width = max_width / DPI
    fig = Figure(figsize=(width, width * 0.74))
    ax = fig.add_axes((0.08, 0.08, 0.62, 0.83))
    cax = fig.add_axes((0.715, 0.08, 0.02, 0.83))
    cmap = colormaps["gray"].with_extremes(bad="#30305a")
    im = ax.imshow(small, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, extent=extent,
                   interpolation="nearest", aspect="auto")
    fig.colorbar(im, cax=cax).set_label(f"signal ({_unit_label(unit)})")
    # One RGBA overlay, planes painted last-first so the first listed ends on top.
    overlay = np.zeros((*small.shape, 4), dtype=np.float32)
    handles = []
    for plane in reversed(planes):
        if plane not in bits:
            continue
        color = PLANE_COLORS.get(plane, _FALLBACK_COLORS[0])
        on = (small_mask & (1 << bits[plane])) != 0
        overlay[on] = to_rgba(color, alpha=0.85)
        label = f"{plane}: {counts.get(plane, 0):,} px"
        if plane == "BAD":
            label += _bad_source(meta, on, factor)
        handles.append(Patch(color=color, label=label))
    handles.reverse()
    if overlay[..., 3].any():
        ax.imshow(overlay, origin="lower", extent=extent, interpolation="nearest",
                  aspect="auto")
    if sources is not None and len(sources[0]):
        ax.scatter(sources[0], sources[1], s=30, facecolors="none", edgecolors="#30c0ff",
                   linewidths=0.6, label=f"sources ({len(sources[0])})")
        handles.append(ax.collections[-1])
    if zeroth_order is not None and all(np.isfinite(zeroth_order)):
        (marker,) = ax.plot([zeroth_order[0]], [zeroth_order[1]], "+", color="#ff3030",
                            ms=16, mew=2, label="zeroth order")
        handles.append(marker)
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.80, 0.91), fontsize=8,
               title="mask planes drawn\n& overlays", title_fontsize=9, alignment="left",
               frameon=False)
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(-0.5, ny - 0.5)
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("y (pixel)")
    shown = f"{nx}×{ny} px" + (f", {factor}×{factor} block means" if factor > 1 else "")
    ax.set_title(f"{_thumbnail_title(meta) or name}\n{shown}", fontsize=10, loc="left")
    return save_png(fig, path, DPI)


def _bad_source(meta: Any, bad: np.ndarray, factor: int) -> str:
    """Where the BAD plane comes from, for its legend entry: the defect list ISR applied
    (``ATM CALIB DEFECTS``) and the amplifiers it covers whole (LATISS's shipped list masks
    amp C10, a 509×2000 block that was otherwise unexplained on every thumbnail).

    ``bad`` is the BAD plane of the ``factor``-binned thumbnail; amps are named from the
    camera description of ``INSTRUME`` when it is one atmospec ships (else only the list).
    """
    source = meta.get("ATM CALIB DEFECTS")
    if not source:
        return ""
    amps: list[str] = []
    try:
        camera = load_camera(str(meta.get("INSTRUME", "latiss")))
        if tuple(d // factor for d in camera.detector_shape) == bad.shape:
            for amp in camera.amplifiers:
                rows, cols = camera.amp_slices(amp)
                block = bad[rows.start // factor:rows.stop // factor,
                            cols.start // factor:cols.stop // factor]
                if block.size and block.mean() > 0.9:
                    amps.append(amp.name)
    except (BadInputError, KeyError, ValueError, OSError):  # an instrument not described
        amps = []
    where = f": amp {', '.join(amps)}" if amps else ""
    return f"\ncurated defects{where}\n({source})"


# ---------------------------------------------------------------------------- amp stats table


def amp_stats_table(stats: Mapping[str, Any], camera: Camera | None = None) -> Table:
    """Per-amp ISR statistics as a table, one row per amp in HDU order.

    Parameters
    ----------
    stats : mapping
        ISR statistics as loaded from ``<OBSID>_isrstats.json``.
    camera : Camera, optional
        Camera giving the HDU order; LATISS by default. Amps it does not know come last.

    Returns
    -------
    astropy.table.Table
        Columns ``amp`` then those of `AMP_STATS_COLUMNS`, with units (``median`` and
        ``robust_std`` in ``stats["unit"]``). A value missing from the stats is masked.
        ``meta`` holds ``obs_id``, ``raw``, ``unit`` and ``steps``.
    """
    camera = load_camera("latiss") if camera is None else camera
    amps: Mapping[str, Any] = stats.get("amps", {}) or {}
    names = _amp_order(amps, camera)
    image_unit = _parse_unit(stats.get("unit", "electron"))

    table = Table()
    table["amp"] = np.array(names, dtype=str)
    for key, unit, kind in AMP_STATS_COLUMNS:
        raw = [amps[name].get(key) for name in names]
        missing = np.array([v is None for v in raw], dtype=bool)
        if kind is int:
            data = np.array([0 if v is None else int(v) for v in raw], dtype=np.int64)
        else:
            data = np.array([_as_float(v) for v in raw], dtype=np.float64)
        col_unit = image_unit if unit == "image" else unit
        if missing.any():
            table[key] = MaskedColumn(data, mask=missing, unit=col_unit)
        else:
            table[key] = data
            table[key].unit = col_unit
    table.meta.update({
        "obs_id": stats.get("obs_id", ""),
        "raw": stats.get("raw", ""),
        "unit": stats.get("unit", "electron"),
        "steps": list(stats.get("steps", [])),
    })
    return table


def _parse_unit(name: Any) -> u.UnitBase | None:
    """Astropy unit for the stats' image unit name, None (with a warning) if unknown."""
    try:
        return u.Unit(str(name))
    except ValueError:
        log.warning("unknown image unit %r in ISR stats; median/robust_std left unitless", name)
        return None


def write_amp_stats(
    stats: Mapping[str, Any], path: str | os.PathLike[str], camera: Camera | None = None
) -> Path:
    """Write `amp_stats_table` as an ECSV file, atomically.

    Parameters
    ----------
    stats : mapping
        ISR statistics as loaded from ``<OBSID>_isrstats.json``.
    path : path
        Output ``.ecsv`` file.
    camera : Camera, optional
        Camera giving the HDU order; LATISS by default.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    buf = io.StringIO()
    amp_stats_table(stats, camera).write(buf, format="ascii.ecsv")
    out = write_text_atomic(buf.getvalue(), path)
    log.info("wrote %s", out)
    return out


def format_amp_stats(stats: Mapping[str, Any], camera: Camera | None = None) -> str:
    """Fixed-width text rendering of `amp_stats_table` for a terminal.

    Parameters
    ----------
    stats : mapping
        ISR statistics as loaded from ``<OBSID>_isrstats.json``.
    camera : Camera, optional
        Camera giving the HDU order; LATISS by default.

    Returns
    -------
    str
        A title line with the observation id, then the table with a units row, one line
        per amp, every line the same width (no trailing newline).
    """
    table = amp_stats_table(stats, camera)
    for key, fmt in _TEXT_FORMATS.items():
        table[key].info.format = fmt
    lines = table.pformat(max_lines=-1, max_width=-1, show_unit=True)
    title = f"ISR amp statistics: {stats.get('obs_id', 'unknown exposure')}"
    return "\n".join([title, *lines])
