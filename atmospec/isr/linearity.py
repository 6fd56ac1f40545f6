"""Linearity correction of raw ADU, per amplifier, from a linearizer product.

The product is a FITS table with one row per amplifier: ``AMP``, ``TYPE`` (``POLYNOMIAL``
or ``SPLINE``) and ``COEFFS`` (float array). ``POLYNOMIAL``: corrected = x + Σₖ cₖ xᵏ for
k = 2, 3, … (``COEFFS`` holds c₂, c₃, …). ``SPLINE``: ``COEFFS`` holds n knot positions
followed by n correction values (ADU added at each knot), interpolated linearly between
knots and held constant outside.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table

from atmospec.camera.description import Camera
from atmospec.errors import BadInputError


@dataclass(frozen=True)
class Linearizer:
    """Per-amp linearity corrections."""

    kinds: tuple[str, ...]
    """``POLYNOMIAL`` or ``SPLINE`` per amp (HDU order)."""
    coeffs: tuple[np.ndarray, ...]
    """Coefficient arrays per amp (see module docstring)."""

    def correct(self, data: np.ndarray, amp: int) -> np.ndarray:
        """Corrected ADU of one amp's overscan-subtracted data."""
        c = self.coeffs[amp]
        if self.kinds[amp] == "POLYNOMIAL":
            out = data.astype(np.float32, copy=True)
            for k, ck in enumerate(c, start=2):
                if ck != 0.0:
                    out += np.float32(ck) * data**k
            return out
        n = c.size // 2
        return data + np.interp(data, c[:n], c[n:]).astype(np.float32)


def load_linearizer(path: str | Path, camera: Camera) -> Linearizer:
    """Read a linearizer table; every amplifier must have a row."""
    path = Path(path)
    try:
        table = Table.read(path)
    except Exception as exc:
        raise BadInputError(path, f"not a linearizer table ({exc})") from None
    missing = {"AMP", "TYPE", "COEFFS"} - set(table.colnames)
    if missing:
        raise BadInputError(path, f"linearizer lacks column(s) {', '.join(sorted(missing))}")
    rows = {str(a).strip(): i for i, a in enumerate(table["AMP"])}
    kinds, coeffs = [], []
    for name in camera.amp_names:
        if name not in rows:
            raise BadInputError(path, f"linearizer has no row for amplifier {name}")
        kind = str(table["TYPE"][rows[name]]).strip().upper()
        c = np.asarray(table["COEFFS"][rows[name]], dtype=float).ravel()
        if kind not in ("POLYNOMIAL", "SPLINE") or (kind == "SPLINE" and c.size % 2):
            raise BadInputError(path, f"amplifier {name}: bad linearity type {kind!r} or "
                                      "coefficient count")
        kinds.append(kind)
        coeffs.append(c)
    return Linearizer(tuple(kinds), tuple(coeffs))
