"""The old ``spectractor_bridge.<module>`` names of code that moved into `atmospec`."""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Mapping
from types import MappingProxyType, ModuleType
from typing import Any

#: Old module (below ``spectractor_bridge``) to its home since atmospec 0.2; a module whose
#: content was split lists every module its names went to.
MOVED: Mapping[str, str | tuple[str, ...]] = MappingProxyType({
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
    "wavelength": ("atmospec.spectro.wavelength.calibration",
                   "atmospec.spectro.wavelength.solution",
                   "atmospec.spectro.wavelength.template",
                   "atmospec.spectro.wavelength.features"),
})


def alias(old: str) -> None:
    """Make the module named ``old`` the module it moved to, with a `DeprecationWarning`.

    The new module object itself takes the old name in `sys.modules`, so every name of it
    (private ones too) and every class keep their identity under both names. A module whose
    content was split becomes a module that finds each name in the new modules, in order.
    """
    new = MOVED[old.rpartition(".")[2]]
    targets = (new,) if isinstance(new, str) else new
    warnings.warn(f"{old} moved to {', '.join(targets)}; the old name will be removed in the "
                  "next release", DeprecationWarning, stacklevel=3)
    modules = [importlib.import_module(name) for name in targets]
    sys.modules[old] = modules[0] if len(modules) == 1 else _Split(old, modules)


class _Split(ModuleType):
    """An old module whose names now live in several modules."""

    def __init__(self, name: str, modules: list[ModuleType]) -> None:
        super().__init__(name, f"Deprecated: moved to {', '.join(m.__name__ for m in modules)}.")
        self._modules = modules

    def __getattr__(self, attr: str) -> Any:
        for module in self._modules:
            if hasattr(module, attr):
                return getattr(module, attr)
        raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r}")

    def __dir__(self) -> list[str]:
        return sorted({n for m in self._modules for n in dir(m)})
