"""Linearity correction of raw ADU, per amplifier, from a linearizer product
(`atmospec.calib.products.Linearizer`).

The product is a FITS table with one row per amplifier: ``AMP``, ``TYPE`` (``POLYNOMIAL``
or ``SPLINE``) and ``COEFFS`` (float array). ``POLYNOMIAL``: corrected = x + Σₖ cₖ xᵏ for
k = 2, 3, … (``COEFFS`` holds c₂, c₃, …). ``SPLINE``: ``COEFFS`` holds n knot positions
followed by n correction values (ADU added at each knot), interpolated linearly between
knots and held constant outside.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
