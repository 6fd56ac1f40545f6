"""Spectroscopic description of an instrument: its dispersers, the disperser–CCD distance
and where the target's zeroth order is put, read from ``data/<instrument>_spectroscopy.yaml``.

Used by the zeroth-order finder, the dispersed-scene simulator and the spectroscopy.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType

import yaml

from atmospec.errors import BadInputError

__all__ = ["DisperserSpec", "SpectroTable", "load_spectro_table"]

#: Disperser names meaning "nothing in the beam" (``empty``, ``empty_1``, ``none``, "").
_EMPTY = re.compile(r"(?i)^(empty(_\d+)?|none|unknown)?$")


@dataclass(frozen=True)
class DisperserSpec:
    """One disperser of the spectrograph, as in ``data/<instrument>_spectroscopy.yaml``."""

    name: str
    """Disperser name as in the ``GRATING`` header keyword, e.g. ``holo4_003``."""
    lines_per_mm: float
    """Groove density N, lines per mm (0 for no disperser)."""
    distance_offset_mm: float
    """Added to ``base_distance_mm + LINSPOS`` to give the disperser-CCD distance, mm."""
    dispersion_direction: tuple[float, float]
    """Unit vector ``(dx, dy)`` of the +1 order in the assembled image, before the tilt."""
    tilt_deg: float
    """Counter-clockwise rotation of the dispersion axis in the assembled image, degrees."""
    nominal_zeroth_order: tuple[float, float]
    """Where the target's zeroth order is put, ``(x, y)`` unbinned pixel centres."""
    order_fractions: tuple[tuple[int, float], ...]
    """``(order, fraction of the star's light)`` pairs, a simple transmission model."""

    @property
    def direction(self) -> tuple[float, float]:
        """Unit vector ``(dx, dy)`` of the +1 order after the tilt."""
        dx, dy = self.dispersion_direction
        t = math.radians(self.tilt_deg)
        c, s = math.cos(t), math.sin(t)
        norm = math.hypot(dx, dy)
        return ((c * dx - s * dy) / norm, (s * dx + c * dy) / norm)

    def order_fraction(self, order: int) -> float:
        """Fraction of the light in ``order`` (0 when the table does not list it)."""
        return dict(self.order_fractions).get(order, 0.0)


@dataclass(frozen=True)
class SpectroTable:
    """The spectroscopic description of an instrument: dispersers and distances."""

    base_distance_mm: float
    """Disperser-CCD distance at ``LINSPOS = 0`` before the disperser's own offset, mm."""
    default_d2ccd_mm: float
    """Disperser-CCD distance used when a header has no ``LINSPOS``, mm."""
    sky_parity: int
    """+1: with the position angle 0 (+y North) East is towards -x; -1: towards +x."""
    dispersers: Mapping[str, DisperserSpec]
    """Disperser name to description (``empty`` stands for every empty slot)."""

    def get(self, name: str) -> DisperserSpec:
        """The description of disperser ``name`` (``empty_1`` and the like map to ``empty``).

        Raises
        ------
        KeyError
            If the disperser is not in the table.
        """
        key = "empty" if _EMPTY.match(name.strip()) else name.strip()
        try:
            return self.dispersers[key]
        except KeyError:
            known = ", ".join(sorted(self.dispersers))
            raise KeyError(f"unknown disperser {name!r} (known: {known})") from None

    def d2ccd_mm(self, name: str, linspos_mm: float | None) -> float:
        """Disperser-CCD distance: ``base + LINSPOS + offset``, or the default without LINSPOS."""
        if linspos_mm is None:
            return self.default_d2ccd_mm
        return self.base_distance_mm + float(linspos_mm) + self.get(name).distance_offset_mm


def load_spectro_table(instrument: str = "latiss") -> SpectroTable:
    """Load ``data/<instrument>_spectroscopy.yaml`` shipped with atmospec (cached).

    Parameters
    ----------
    instrument : str
        Instrument name, case-insensitive.

    Returns
    -------
    SpectroTable
        The frozen table (the same object on every call).

    Raises
    ------
    BadInputError
        If no table is shipped for the instrument.
    """
    return _load_spectro_table(instrument.lower())


@cache
def _load_spectro_table(instrument: str) -> SpectroTable:
    ref = resources.files("atmospec.data") / f"{instrument}_spectroscopy.yaml"
    if not ref.is_file():
        raise BadInputError(instrument, "no spectroscopy description shipped for this instrument")
    raw = yaml.safe_load(ref.read_text())
    dispersers = {}
    for name, d in raw["dispersers"].items():
        dispersers[name] = DisperserSpec(
            name=name,
            lines_per_mm=float(d["lines_per_mm"]),
            distance_offset_mm=float(d["distance_offset_mm"]),
            dispersion_direction=tuple(float(v) for v in d["dispersion_direction_xy"]),
            tilt_deg=float(d["tilt_deg"]),
            nominal_zeroth_order=tuple(float(v) for v in d["nominal_zeroth_order_xy"]),
            order_fractions=tuple(sorted((int(k), float(v))
                                         for k, v in d["order_fractions"].items())),
        )
    return SpectroTable(
        base_distance_mm=float(raw["base_distance_mm"]),
        default_d2ccd_mm=float(raw["default_d2ccd_mm"]),
        sky_parity=int(raw.get("sky_parity", 1)),
        dispersers=MappingProxyType(dispersers),
    )
