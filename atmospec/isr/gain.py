"""Gains: ADU to electrons per amplifier, from a PTC product or the nominal values."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table

from atmospec.camera.description import Camera
from atmospec.errors import BadInputError


@dataclass(frozen=True)
class AmpGains:
    """Per-amplifier gain and read noise, in camera HDU order."""

    gain: np.ndarray
    """Gain, e⁻/ADU."""
    read_noise: np.ndarray
    """Read noise, e⁻."""
    source: str
    """Where the values come from (``nominal`` or the PTC file name)."""


def nominal_gains(camera: Camera) -> AmpGains:
    """The camera description's gains and read noise."""
    return AmpGains(camera.nominal_gains, camera.nominal_read_noise, "nominal")


def load_ptc_gains(path: str | Path, camera: Camera) -> AmpGains:
    """Gains and read noise from a PTC product (FITS table with AMP, GAIN, READ_NOISE).

    Raises
    ------
    BadInputError
        If the file is not a PTC table, lacks an amplifier, or has non-positive values.
    """
    path = Path(path)
    try:
        table = Table.read(path)
    except Exception as exc:
        raise BadInputError(path, f"not a PTC table ({exc})") from None
    missing = {"AMP", "GAIN", "READ_NOISE"} - set(table.colnames)
    if missing:
        raise BadInputError(path, f"PTC table lacks column(s) {', '.join(sorted(missing))}")
    instrument = table.meta.get("INSTRUME")
    if instrument and str(instrument).upper() != camera.name.upper():
        raise BadInputError(path, f"PTC is for {instrument}, not {camera.name}")
    rows = {str(a).strip(): i for i, a in enumerate(table["AMP"])}
    gain = np.empty(camera.n_amps)
    noise = np.empty(camera.n_amps)
    for i, name in enumerate(camera.amp_names):
        if name not in rows:
            raise BadInputError(path, f"PTC table has no row for amplifier {name}")
        gain[i] = float(table["GAIN"][rows[name]])
        noise[i] = float(table["READ_NOISE"][rows[name]])
    if not (np.all(np.isfinite(gain)) and np.all(gain > 0)):
        raise BadInputError(path, "PTC gains must be finite and positive")
    return AmpGains(gain, noise, path.name)
