"""What every diagnostic plot shares: writing a figure as a PNG, atomically."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from astropy.visualization import ZScaleInterval
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from atmospec.io import atomic_path

log = logging.getLogger(__name__)

#: Resolution of every PNG atmospec writes.
DPI = 100


def save_png(fig: Figure, path: str | os.PathLike[str], dpi: int = DPI) -> Path:
    """Render ``fig`` to ``path`` as PNG, atomically (temporary file, then rename).

    The Agg canvas is attached explicitly: no pyplot and no global backend, so plotting is
    safe in worker processes and threads.
    """
    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        # The temporary name ends in .tmp, so the format cannot be guessed from it.
        fig.savefig(tmp, format="png", dpi=dpi)
    log.info("wrote %s", path)
    return path


#: Colours of the LATISS filters (and of dispersers, for dispersed exposures), used by every
#: plot so one configuration has one colour across the report.
_CONFIG_COLOURS = {
    "SDSSg_65mm": "#2ca02c", "SDSSr_65mm": "#d62728", "SDSSi_65mm": "#8c564b",
    "SDSSz_65mm": "#7f7f7f", "SDSSy_65mm": "#17becf", "BG40_65mm": "#1f77b4",
    "OG550_65mm": "#ff7f0e", "empty": "#000000",
    "holo4_003": "#9467bd", "ronchi170lpmm": "#e377c2", "ronchi90lpmm": "#bcbd22",
}
_FALLBACK = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d")


def config_colour(filter_name: str, disperser: str = "empty") -> str:
    """Colour of an instrument configuration: the disperser's for a dispersed exposure, else
    the filter's; unknown names get a stable colour from their name."""
    name = disperser if disperser not in ("empty", "unknown", "none", "") else filter_name
    if name in _CONFIG_COLOURS:
        return _CONFIG_COLOURS[name]
    return _FALLBACK[sum(name.encode()) % len(_FALLBACK)]


def config_label(filter_name: str, disperser: str = "empty") -> str:
    """Legend label of an instrument configuration, ``filter`` or ``filter~disperser``."""
    if disperser in ("empty", "unknown", "none", ""):
        return filter_name
    return f"{filter_name}~{disperser}"


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
