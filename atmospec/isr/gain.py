"""Gains: ADU to electrons per amplifier, from a PTC product (`atmospec.calib.products.Ptc`)
or the nominal values."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atmospec.camera.description import Camera


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
