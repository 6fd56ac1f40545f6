"""Diagnostics of an atmosphere fit (`atmospec.atmosphere.spectrum_fit.AtmosphereFit`).

`plot_atmosphere_fit` draws, in one figure:

* the data with their 1σ band and the best-fit model against wavelength (flux in the
  spectrum's unit), with the fitted values and χ²/ndof in the title and the main telluric
  features marked (O₂ A and B bands, H₂O bands, ozone Chappuis band);
* the residuals ``(data − model) / σ`` per wavelength (σ the diagonal error);
* the correlation matrix of the free parameters, with the values written in the cells.

Figures use `matplotlib.figure.Figure` and the Agg canvas (no pyplot) and are written
atomically by `atmospec.plots.common.save_png`.
"""

from __future__ import annotations

import logging
import os
import textwrap
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure
from matplotlib.mathtext import MathTextParser

from atmospec.plots.common import save_png

if TYPE_CHECKING:
    from atmospec.atmosphere.spectrum_fit import AtmosphereFit

__all__ = ["atmosphere_fit_figure", "fit_from_document", "plot_atmosphere_fit"]

log = logging.getLogger(__name__)

_MATH = MathTextParser("agg")

#: Telluric features marked on the spectrum: (label, low nm, high nm).
_FEATURES = (
    ("O$_3$", 540.0, 650.0),
    ("O$_2$ B", 686.0, 690.0),
    ("H$_2$O", 715.0, 735.0),
    ("O$_2$ A", 759.0, 766.0),
    ("H$_2$O", 810.0, 835.0),
    ("H$_2$O", 925.0, 980.0),
)
#: Axis labels of the parameters.
_LABELS = MappingProxyType({
    "grey": "grey", "pwv_mm": "PWV", "ozone_du": "O$_3$", "vaod": "VAOD",
    "angstrom": "Ångström", "dlambda_nm": "δλ", "resolution": "resolution",
})


def _unit_label(unit: str) -> str:
    """The flux unit as matplotlib can render it (Spectractor writes LaTeX ``cm$^2$``)."""
    text = unit.strip() or "arbitrary units"
    if "$" in text:
        try:
            if text.count("$") % 2:
                raise ValueError("unbalanced $")
            _MATH.parse(text)
        except ValueError:
            text = text.replace("$", "").replace("^", "")
    return text.replace("electron", "e$^-$")


def _title(fit: AtmosphereFit) -> str:
    # The errors every output quotes, and how they were made (`AtmosphereFit.errors_label`).
    v, e = fit.values, fit.errors_quoted

    def fmt(name: str, unit: str, digits: int) -> str:
        val = v.get(name)
        if val is None:
            return f"{name} libRadtran shape"
        err = e.get(name)
        if err is None:
            return f"{val:.{digits}f}{unit} (fixed)"
        return f"{val:.{digits}f} ± {err:.{digits}f}{unit}"

    info = fit.info
    head = " · ".join(str(x) for x in (info.get("source"), info.get("target"),
                                         info.get("disperser")) if x)
    # Three lines: as two, the second (with the errors' label) was wider than the panel and
    # its start, the fitted values, was cut off at the figure's left edge.
    return (f"{head}  (airmass {info.get('airmass', float('nan')):.3f}, "
            f"{info.get('pressure_hpa', float('nan')):.0f} hPa)\n"
            f"PWV {fmt('pwv_mm', ' mm', 2)},  O$_3$ {fmt('ozone_du', ' DU', 0)},  "
            f"VAOD {fmt('vaod', '', 4)},  χ²/ndof {fit.chi2_ndof:.2f} ({fit.ndof} dof, "
            f"covariance {fit.covariance_used.split(' ')[0]})\n{fit.errors_label}")


def fit_from_document(doc: dict) -> AtmosphereFit:
    """An `AtmosphereFit` rebuilt from its JSON form (``AtmosphereFit.to_dict``, the night's
    ``<OBSID>_atmosphere.json``), for drawing it again without refitting.

    The document holds everything the figure shows: values and errors, correlations, χ²,
    and the fitted data, errors and model per wavelength (``residuals``). Nulls (non-finite
    numbers in JSON) come back as NaN in the arrays.

    Parameters
    ----------
    doc : dict
        Parsed ``<OBSID>_atmosphere.json``.

    Returns
    -------
    AtmosphereFit

    Raises
    ------
    KeyError, TypeError, ValueError
        A document that is not an atmosphere fit.
    """
    from atmospec.atmosphere.spectrum_fit import AtmosphereFit

    def array(values) -> np.ndarray:
        return np.array([np.nan if v is None else v for v in values], dtype=float)

    res = doc["residuals"]
    corr = doc.get("correlation") or []
    return AtmosphereFit(
        values=dict(doc["values"]), errors=dict(doc["errors"]),
        free_parameters=tuple(doc["free_parameters"]),
        correlation=np.array([[np.nan if v is None else v for v in row] for row in corr],
                             dtype=float).reshape(len(corr), -1) if corr else np.zeros((0, 0)),
        chi2=float(doc["chi2"]) if doc.get("chi2") is not None else np.nan,
        ndof=int(doc["ndof"]), fixed=dict(doc.get("fixed") or {}),
        wavelength_range_nm=tuple(doc["wavelength_range_nm"]),
        wavelength=array(res["wavelength_nm"]), flux=array(res["flux"]),
        flux_err=array(res["flux_err"]), model=array(res["model"]),
        flux_unit=str(doc.get("flux_unit", "")), covariance_used=str(doc["covariance_used"]),
        success=bool(doc["success"]), message=str(doc.get("message", "")),
        nfev=int(doc.get("nfev", 0)), fit_time_s=float(doc.get("fit_time_s", 0.0)),
        info=dict(doc.get("info") or {}), problems=tuple(doc.get("problems") or ()),
        systematic=dict(doc.get("systematic_errors") or {}))


def atmosphere_fit_figure(fit: AtmosphereFit) -> Figure:
    """The figure `plot_atmosphere_fit` writes.

    Parameters
    ----------
    fit : AtmosphereFit
        Result of `atmospec.atmosphere.spectrum_fit.fit_atmosphere`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = Figure(figsize=(14.0, 7.5))
    # Fixed margins (`fixed_margins`, here on the grid): constrained layout cost a third of
    # the figure's CPU. Between the columns: the correlation matrix's parameter names; right:
    # its colour bar's labels.
    w, h = fig.get_size_inches()
    grid = fig.add_gridspec(2, 2, width_ratios=(3.0, 1.2), height_ratios=(2.2, 1.0),
                            left=0.9 / w, right=1 - 0.9 / w, bottom=0.6 / h,
                            top=1 - 0.75 / h, hspace=0.06, wspace=0.22)
    ax = fig.add_subplot(grid[0, 0])
    axr = fig.add_subplot(grid[1, 0], sharex=ax)
    axc = fig.add_subplot(grid[:, 1])
    lam = fit.wavelength
    unit = _unit_label(fit.flux_unit)

    ax.fill_between(lam, fit.flux - fit.flux_err, fit.flux + fit.flux_err, color="0.75",
                    step="mid", label="data ±1σ", linewidth=0)
    ax.plot(lam, fit.flux, color="k", lw=0.7, drawstyle="steps-mid", label="data")
    ax.plot(lam, fit.model, color="tab:red", lw=1.0, label="model")
    top = float(np.nanmax(np.r_[fit.flux, fit.model])) if lam.size else 1.0
    for label, lo, hi in _FEATURES:
        if lo > lam[-1] or hi < lam[0]:
            continue
        ax.axvspan(lo, hi, color="tab:blue", alpha=0.08, linewidth=0)
        ax.text(0.5 * (lo + hi), 1.02 * top, label, ha="center", va="bottom", fontsize=8,
                color="tab:blue")
    ax.set_ylim(bottom=min(0.0, float(np.nanmin(fit.flux))), top=1.1 * top)
    ax.set_ylabel(f"flux [{unit}]")
    ax.legend(loc="best", fontsize=9)
    ax.set_title(_title(fit), fontsize=10)
    ax.tick_params(labelbottom=False)

    with np.errstate(invalid="ignore", divide="ignore"):
        pull = (fit.flux - fit.model) / fit.flux_err
    axr.axhline(0.0, color="k", lw=0.6)
    for k in (-3, 3):
        axr.axhline(k, color="0.5", lw=0.5, ls=":")
    axr.plot(lam, pull, color="k", lw=0.6, drawstyle="steps-mid")
    finite = pull[np.isfinite(pull)]
    lim = max(5.0, float(np.percentile(np.abs(finite), 99.5)) * 1.1) if finite.size else 5.0
    axr.set_ylim(-lim, lim)
    axr.set_xlabel("wavelength [nm]")
    axr.set_ylabel("(data − model) / σ")

    names = list(fit.free_parameters)
    corr = np.asarray(fit.correlation, dtype=float)
    if names and corr.shape == (len(names), len(names)):
        im = axc.imshow(corr, cmap="RdBu_r", vmin=-1.0, vmax=1.0)
        axc.set_xticks(range(len(names)), [_LABELS.get(n, n) for n in names], rotation=45,
                       ha="right")
        axc.set_yticks(range(len(names)), [_LABELS.get(n, n) for n in names])
        for i in range(len(names)):
            for j in range(len(names)):
                if np.isfinite(corr[i, j]):
                    axc.text(j, i, f"{corr[i, j]:.2f}", ha="center", va="center", fontsize=8,
                             color="w" if abs(corr[i, j]) > 0.6 else "k")
        fig.colorbar(im, ax=axc, shrink=0.6, label="correlation")
    else:
        axc.text(0.5, 0.5, "no parameter covariance", ha="center", va="center",
                 transform=axc.transAxes)
        axc.set_axis_off()
    axc.set_title("parameter correlations", fontsize=10)
    if fit.fixed:
        # A figure text (below the correlation matrix) so long reasons do not squeeze
        # the panels.
        lines = ["fixed parameters:"] + [
            textwrap.fill(f"{_LABELS.get(k, k)}: {why}", 60, subsequent_indent="    ")
            for k, why in fit.fixed.items()]
        fig.text(0.70, 0.01, "\n".join(lines), fontsize=7, va="bottom", ha="left")
    return fig


def plot_atmosphere_fit(fit: AtmosphereFit, path: str | os.PathLike[str]) -> Path:
    """Write the data/model/residual and correlation figure of an atmosphere fit as a PNG.

    Parameters
    ----------
    fit : AtmosphereFit
        Result of `atmospec.atmosphere.spectrum_fit.fit_atmosphere`.
    path : str or path-like
        Output PNG (written atomically).

    Returns
    -------
    Path
        ``path``.
    """
    return save_png(atmosphere_fit_figure(fit), path)
