"""Axis limits that one bad point cannot set, and arrows at the edge for the points left
outside them.

A diagnostic panel is read for its trend: a single failed fit (a 355 nm PSF bin with a
γ of 50 ± 170 pixels) must not flatten the other two hundred points into a line. The
limits come from percentiles of the points whose error bars are sane, widened to hold the
reference curve drawn with them; points beyond are drawn as arrows on the edge they left
by, counted in the legend, so nothing is hidden silently.
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes

from atmospec.stats import robust_sigma

__all__ = ["mark_outside", "robust_limits"]

#: An error bar larger than this many times the points' robust spread marks a failed fit
#: (it says nothing about the trend): its point does not take part in the limits. Against
#: the spread, not the median error: the noisy ends of a spectrum have errors many times the
#: median and still belong on the axis.
ERROR_FACTOR = 10.0
#: Percentiles of the sane points spanned by the axis.
PERCENTILES = (1.0, 99.0)
#: Margin added on each side, as a fraction of the span.
MARGIN = 0.12


def robust_limits(values: np.ndarray, errors: np.ndarray | None = None,
                  include: np.ndarray | None = None) -> tuple[float, float] | None:
    """Y-limits spanning the bulk of ``values`` and all of ``include``.

    Parameters
    ----------
    values : numpy.ndarray
        The points (NaN ignored).
    errors : numpy.ndarray, optional
        Their 1σ errors; points with a non-finite error or one above `ERROR_FACTOR` times
        the robust standard deviation of the values (the median error when that is 0) are
        left out of the limits.
    include : numpy.ndarray, optional
        Values the axis must show whole (e.g. the fitted curve drawn with the points).

    Returns
    -------
    (float, float) or None
        ``(low, high)`` with a `MARGIN`; None when there is nothing finite to span (let
        matplotlib choose).
    """
    values = np.asarray(values, dtype=float)
    sane = np.isfinite(values)
    if errors is not None:
        errors = np.asarray(errors, dtype=float)
        finite_err = np.isfinite(errors) & sane
        spread = float(robust_sigma(values[sane])) if sane.sum() >= 3 else 0.0
        # The median error stands in for a spread of zero (a constant series).
        scale = max(spread, float(np.median(errors[finite_err])) if finite_err.any() else 0.0)
        if scale > 0:
            sane &= finite_err & (errors <= ERROR_FACTOR * scale)
    parts = []
    if sane.sum() >= 3:
        parts.append(np.percentile(values[sane], PERCENTILES))
    elif sane.any():
        parts.append(values[sane])
    if include is not None:
        curve = np.asarray(include, dtype=float)
        parts.append(curve[np.isfinite(curve)])
    span = np.concatenate([np.ravel(p) for p in parts]) if parts else np.empty(0)
    if span.size == 0:
        return None
    low, high = float(span.min()), float(span.max())
    pad = MARGIN * (high - low) if high > low else max(abs(low) * 0.05, 0.5)
    return low - pad, high + pad


def mark_outside(ax: Axes, x: np.ndarray, y: np.ndarray, limits: tuple[float, float], *,
                 color: str = "#606060", gid: str | None = None) -> int:
    """Draw the points of ``(x, y)`` beyond ``limits`` as arrows on the edge they left by.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Panel whose y-limits are ``limits`` (set by the caller).
    x, y : numpy.ndarray
        The points.
    limits : (float, float)
        The panel's y-limits.
    color : str
        Arrow colour.
    gid : str, optional
        Gid of the arrows' artists (``<gid>_above``, ``<gid>_below``).

    Returns
    -------
    int
        How many points are outside (0: nothing drawn).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    low, high = limits
    # Just inside the edge, so the marker is not cut in half by the frame.
    inset = 0.03 * (high - low)
    n = 0
    for side, sel, at, marker in (("above", y > high, high - inset, "^"),
                                  ("below", y < low, low + inset, "v")):
        if not sel.any():
            continue
        n += int(sel.sum())
        ax.plot(x[sel], np.full(int(sel.sum()), at), ls="none", marker=marker, ms=6,
                color=color, gid=None if gid is None else f"{gid}_{side}",
                label="_outside")
    return n
