"""Diagnostics of the photon-transfer curve and of the linearity correction.

Both figures read the products (the PTC table of `atmospec.calib.ptc`, the linearizer table of
`atmospec.calib.linearity`) and never refit anything: the model curves are evaluated from the
stored parameters. Figures are built with `matplotlib.figure.Figure` and the Agg canvas,
without pyplot, and written atomically as PNG.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from astropy.table import Table
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from atmospec.calib.linearity import apply_correction
from atmospec.calib.ptc import astier_model
from atmospec.plots.common import save_png

log = logging.getLogger(__name__)

__all__ = ["plot_linearity", "plot_ptc"]

#: Resolution of every PNG written here.
DPI = 100

#: Residuals beyond this (per cent) are drawn at the edge of the residual panel.
_RESID_CLIP_PCT = 5.0


def _table(table: Table | str | os.PathLike[str]) -> Table:
    return table if isinstance(table, Table) else Table.read(table)


def _amp_colors(n: int) -> list[tuple[float, float, float, float]]:
    """One distinct colour per amp (tab20 holds 20)."""
    cmap = colormaps["tab20"]
    return [cmap(i % 20) for i in range(n)]


def _scatter_used(ax: Axes, x: np.ndarray, y: np.ndarray, used: np.ndarray, color,
                  label: str | None = None) -> None:
    """Used points filled, rejected ones open."""
    ax.plot(x[used], y[used], "o", ms=4, color=color, label=label)
    ax.plot(x[~used], y[~used], "o", ms=4, mfc="none", color=color, alpha=0.7)


def _clip_for_panel(y: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """Values clipped to ±limit, and which ones were clipped."""
    out = np.clip(y, -limit, limit)
    return out, np.abs(y) > limit


def plot_ptc(ptc_table: Table | str | os.PathLike[str], path: str | os.PathLike[str]
             ) -> Path:
    """Photon-transfer curves of every amp with their fits, turnoffs and residuals.

    Three panels share the mean-signal axis (ADU, log): the variance (ADU², log) with the
    Astier et al. 2019 model of each amp and its turnoff (▼); the fractional residual to the
    model (%), rejected points open; and variance / mean (ADU; ≈ 1/gain in ADU/e⁻), which
    shows each amp's gain as a plateau and the turnover as a drop.

    Parameters
    ----------
    ptc_table : astropy.table.Table or path
        PTC product.
    path : path
        PNG to write.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    table = _table(ptc_table)
    fig = Figure(figsize=(11, 12), layout="constrained")
    ax_var, ax_res, ax_ratio = fig.subplots(3, 1, sharex=True,
                                            gridspec_kw={"height_ratios": [3, 1.4, 1.6]})
    curves = []
    for row in table:
        mean = np.asarray(row["PTC_MEAN"], float)
        var = np.asarray(row["PTC_VAR"], float)
        used = np.asarray(row["PTC_USED"], bool)
        ok = np.isfinite(mean) & np.isfinite(var) & (mean > 0) & (var > 0)
        noise = float(row["NOISE_FIT"]) ** 2 if np.isfinite(row["NOISE_FIT"]) else 0.0
        params = (float(row["A00"]), float(row["GAIN"]), noise)
        resid = 100.0 * (var[ok] / astier_model(mean[ok], *params) - 1.0)
        curves.append((row, mean[ok], var[ok], used[ok], params, resid))
    # Residual panel range: the used points' spread, clipped points drawn at its edge.
    used_res = np.concatenate([c[5][c[3]] for c in curves]) if curves else np.zeros(0)
    used_res = used_res[np.isfinite(used_res)]
    lim = float(np.clip(1.5 * np.max(np.abs(used_res)), 0.2, _RESID_CLIP_PCT)
                ) if used_res.size else _RESID_CLIP_PCT

    for (row, mean, var, used, params, resid), color in zip(
            curves, _amp_colors(len(curves)), strict=True):
        gain = params[1]
        _scatter_used(ax_var, mean, var, used, color,
                      f"{str(row['AMP']).strip()}  g={gain:.3f}")
        _scatter_used(ax_ratio, mean, var / mean, used, color)
        shown, clipped = _clip_for_panel(resid, lim)
        _scatter_used(ax_res, mean[~clipped], shown[~clipped], used[~clipped], color)
        ax_res.plot(mean[clipped], shown[clipped], "d", ms=5, mfc="none", color=color)
        if not np.isfinite(gain) or mean.size == 0:
            continue
        grid = np.geomspace(mean.min(), mean.max(), 200)
        model = astier_model(grid, *params)
        ax_var.plot(grid, model, "-", lw=1, color=color)
        ax_ratio.plot(grid, model / grid, "-", lw=1, color=color)
        turnoff = float(row["TURNOFF"])
        if np.isfinite(turnoff):
            ax_var.plot([turnoff], astier_model(np.array([turnoff]), *params), "v", ms=9,
                        color=color, mec="k", mew=0.5)

    ax_var.set_xscale("log")
    ax_var.set_yscale("log")
    ax_var.set_ylabel("variance of pair difference / 2 [ADU²]")
    ax_var.set_title("Photon-transfer curves: Astier et al. 2019 fit, ▼ turnoff; "
                     "open symbols: not used")
    ax_var.legend(ncol=4, fontsize=7, loc="upper left")
    ax_var.grid(True, which="both", alpha=0.3)
    ax_res.set_ylim(-1.1 * lim, 1.1 * lim)
    ax_res.axhline(0.0, color="k", lw=0.8)
    ax_res.set_ylabel("(var − model) / model [%]")
    ax_res.set_title(f"residuals (◇: beyond ±{lim:.2g} %)", fontsize=9)
    ax_res.grid(True, which="both", alpha=0.3)

    ax_ratio.set_ylabel("variance / mean [ADU]")
    ax_ratio.set_xlabel("mean signal [ADU]")
    ax_ratio.grid(True, which="both", alpha=0.3)
    ratios = [np.asarray(r["PTC_VAR"], float) / np.asarray(r["PTC_MEAN"], float)
              for r in table]
    used_ratio = np.concatenate([q[np.asarray(r["PTC_USED"], bool) &
                                   (np.asarray(r["PTC_MEAN"], float) > 1000.0)]
                                 for q, r in zip(ratios, table, strict=True)])
    if used_ratio.size:
        lo, hi = np.nanmin(used_ratio), np.nanmax(used_ratio)
        pad = 0.3 * (hi - lo) + 0.02 * hi
        ax_ratio.set_ylim(lo - pad, hi + pad)
    return save_png(fig, path, DPI)


def plot_linearity(ptc_table: Table | str | os.PathLike[str],
                   linearizer_table: Table | str | os.PathLike[str],
                   path: str | os.PathLike[str]) -> Path:
    """Ramp non-linearity of every amp before and after the correction, and the correction.

    Panels against mean signal (ADU, log): deviation from the linear ramp ``μ/(s·t) − 1``
    (%), the same after correction (%, with ±``LINRESID`` marked), and the correction
    ``Δ(μ)`` added by the ISR (ADU). Open symbols: points outside the fitted range.

    Parameters
    ----------
    ptc_table : astropy.table.Table or path
        PTC product (the ramp: ``PTC_MEAN`` against ``PTC_EXPTIME``).
    linearizer_table : astropy.table.Table or path
        Linearizer product (``TYPE``, ``COEFFS``, ``LIN_SLOPE``, ``LIN_USED``).
    path : path
        PNG to write.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    ptc = _table(ptc_table)
    lin = _table(linearizer_table)
    rows = {str(a).strip(): i for i, a in enumerate(ptc["AMP"])}
    fig = Figure(figsize=(11, 11), layout="constrained")
    ax_before, ax_after, ax_corr = fig.subplots(3, 1, sharex=True)
    colors = _amp_colors(len(lin))
    used_dev: list[np.ndarray] = []
    for row, color in zip(lin, colors, strict=True):
        amp = str(row["AMP"]).strip()
        if amp not in rows:
            log.warning("amp %s of the linearizer is not in the PTC", amp)
            continue
        p = ptc[rows[amp]]
        mean = np.asarray(p["PTC_MEAN"], float)
        t = np.asarray(p["PTC_EXPTIME"], float)
        used = np.asarray(row["LIN_USED"], bool)
        ok = np.isfinite(mean) & (mean > 0) & (t > 0)
        linear = float(row["LIN_SLOPE"]) * t
        kind = str(row["TYPE"]).strip()
        coeffs = np.asarray(row["COEFFS"], float)
        corrected = apply_correction(kind, coeffs, mean)
        used_dev.append(100 * (mean[used & ok] / linear[used & ok] - 1))
        _scatter_used(ax_before, mean[ok], 100 * (mean[ok] / linear[ok] - 1), used[ok], color,
                      f"{amp}  {100 * float(row['LIN_MAXDEV']):.2f} % → "
                      f"{100 * float(row['LIN_RESID']):.3f} %")
        _scatter_used(ax_after, mean[ok], 100 * (corrected[ok] / linear[ok] - 1), used[ok],
                      color)
        grid = np.geomspace(max(mean[ok].min(), 1.0), mean[ok].max(), 200)
        ax_corr.plot(grid, apply_correction(kind, coeffs, grid) - grid, "-", color=color)
        ax_corr.plot(mean[used], corrected[used] - mean[used], "o", ms=3, color=color)

    resid = float(lin.meta.get("LINRESID", np.nanmax(lin["LIN_RESID"])))
    ax_before.set_xscale("log")
    # Saturated points fall by tens of per cent: scale the panel on the fitted range.
    dev = np.concatenate(used_dev) if used_dev else np.zeros(0)
    if dev.size:
        ax_before.set_ylim(min(-0.5, 1.4 * float(dev.min())), max(0.3, 1.4 * float(dev.max())))
    ax_before.set_ylabel("μ / (s·t) − 1 [%]")
    ax_before.set_title(f"Linearity ({lin.meta.get('LINTYPE', '')}): deviation from the "
                        "linear ramp before and after correction; open: not fitted")
    ax_before.legend(ncol=4, fontsize=7, loc="lower left")
    ax_after.axhspan(-100 * resid, 100 * resid, color="0.85", zorder=0,
                     label=f"± largest residual ({100 * resid:.3f} %)")
    ax_after.axhline(0.0, color="k", lw=0.8)
    ax_after.set_ylabel("corrected / (s·t) − 1 [%]")
    ax_after.legend(fontsize=8, loc="lower left")
    # Low-signal points measure the bias level, not the amplifier: keep the panel readable.
    ax_after.set_ylim(-max(0.5, 300 * resid), max(0.5, 300 * resid))
    ax_corr.set_ylabel("correction Δ(μ) [ADU]")
    ax_corr.set_xlabel("mean signal [ADU]")
    for ax in (ax_before, ax_after, ax_corr):
        ax.grid(True, which="both", alpha=0.3)
    return save_png(fig, path, DPI)
