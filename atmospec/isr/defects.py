"""Defects: boxes of bad pixels (a product table), masked BAD and later interpolated.

The table has integer columns ``x0, y0, width, height`` in assembled-image pixels (Rubin's
"Simple" defects schema, ECSV or FITS).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from astropy.table import Table

from atmospec.errors import BadInputError


@dataclass(frozen=True)
class DefectsConfig:
    """Which defect list to use."""

    defects_file: str | None = None
    """Defects table; ``None``: the shipped LATISS list (obs_lsst_data, one bad-amp box)."""


def load_defects(path: str | Path | None = None) -> Table:
    """Read a defects table (``x0, y0, width, height``)."""
    if path is None:
        path = Path(str(resources.files("atmospec.data") / "latiss_defects.ecsv"))
    path = Path(path)
    try:
        table = Table.read(path, format="ascii.ecsv" if path.suffix == ".ecsv" else None)
    except Exception as exc:
        raise BadInputError(path, f"not a defects table ({exc})") from None
    missing = {"x0", "y0", "width", "height"} - set(table.colnames)
    if missing:
        raise BadInputError(path, f"defects table lacks column(s) {', '.join(sorted(missing))}")
    return table


def defect_mask(table: Table, shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of the defect boxes (clipped to the image)."""
    mask = np.zeros(shape, dtype=bool)
    for x0, y0, w, h in zip(table["x0"], table["y0"], table["width"], table["height"],
                            strict=True):
        mask[max(int(y0), 0): int(y0) + int(h), max(int(x0), 0): int(x0) + int(w)] = True
    return mask
