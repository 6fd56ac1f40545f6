"""The old ``spectractor_bridge.<module>`` names of code that moved into `atmospec`."""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Mapping
from types import MappingProxyType

#: Old module (below ``spectractor_bridge``) to its home since atmospec 0.2.
MOVED: Mapping[str, str] = MappingProxyType({
    "atmfit": "atmospec.atmosphere.spectrum_fit",
    "atmfit2d": "atmospec.atmosphere.spectrogram_fit",
    "atmfit_joint": "atmospec.atmosphere.joint_fit",
    "atmosphere": "atmospec.atmosphere.transmission",
    "calspec": "atmospec.spectro.calspec",
    "chain": "atmospec.spectro.chain",
    "dispersers": "atmospec.spectro.dispersers",
    "extract": "atmospec.spectro.extract",
    "ffm": "atmospec.spectro.forward_model",
    "instrument": "atmospec.camera.spectrograph",
    "lines": "atmospec.spectro.wavelength.lines",
    "order2": "atmospec.spectro.order2",
    "psf1d": "atmospec.spectro.psf",
    "wavelength": "atmospec.spectro.wavelength.calibration",
})


def alias(old: str) -> None:
    """Make the module named ``old`` the module it moved to, with a `DeprecationWarning`.

    The new module object itself takes the old name in `sys.modules`, so every name of it
    (private ones too) and every class keep their identity under both names.
    """
    new = MOVED[old.rpartition(".")[2]]
    warnings.warn(f"{old} moved to {new}; the old name will be removed in the next release",
                  DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
