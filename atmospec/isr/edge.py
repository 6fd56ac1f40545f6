"""Edge mask: the outermost pixels of the sensor (ITL edge roll-off and glow)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EdgeConfig:
    """Width of the masked border."""

    width: int = 10
    """Pixels from each detector edge flagged EDGE."""


def edge_mask(shape: tuple[int, int], width: int) -> np.ndarray:
    """Boolean mask of a ``width``-pixel border."""
    mask = np.zeros(shape, dtype=bool)
    if width > 0:
        mask[:width] = mask[-width:] = True
        mask[:, :width] = mask[:, -width:] = True
    return mask
