"""Saturated and suspect pixels, flagged on overscan-subtracted ADU before any scaling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SaturationConfig:
    """Levels and growth of the SAT and SUSPECT masks."""

    saturation_adu: float | None = None
    """Saturation level in ADU above the overscan; ``None``: the camera's value."""
    suspect_adu: float | None = None
    """Pixels above this ADU level (but not saturated) are SUSPECT; ``None``: the camera's."""
    grow: int = 1
    """Pixels by which the SAT mask is grown after assembly (bleed-trail edges)."""
    interpolate: bool = True
    """Replace saturated pixels by interpolation (and flag them INTRP)."""


def saturation_masks(data: np.ndarray, saturation: float | np.ndarray,
                     suspect: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean SAT and SUSPECT masks of overscan-subtracted ADU data.

    Parameters
    ----------
    data : numpy.ndarray
        Overscan-subtracted data in ADU (any shape).
    saturation, suspect : float or numpy.ndarray
        Levels in ADU, or arrays broadcasting against ``data`` (one level per amp:
        ``levels[:, None, None]`` for ``(n_amps, ny, nx)`` segments).

    Returns
    -------
    sat, suspect : numpy.ndarray
        Boolean arrays like ``data``; ``suspect`` excludes saturated pixels.
    """
    sat = data >= saturation
    sus = (data >= suspect) & ~sat
    return sat, sus
