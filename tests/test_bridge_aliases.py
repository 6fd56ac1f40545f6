"""The old ``spectractor_bridge.<module>`` names of the code that moved into atmospec (0.2)
still import, for one release, with a DeprecationWarning, and give the same objects; the old
Gen3 storage-class type name still resolves."""

from __future__ import annotations

import importlib
import sys

import pytest

from spectractor_bridge._moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_module_name_imports_with_a_warning(old):
    name = f"spectractor_bridge.{old}"
    sys.modules.pop(name, None)
    with pytest.warns(DeprecationWarning, match=f"{name} moved to"):
        module = importlib.import_module(name)
    targets = MOVED[old] if isinstance(MOVED[old], tuple) else (MOVED[old],)
    for target in targets:
        new = importlib.import_module(target)
        for attr in getattr(new, "__all__", ()):
            assert getattr(module, attr) is getattr(new, attr), (name, attr)


def test_old_names_of_a_split_module_resolve():
    sys.modules.pop("spectractor_bridge.wavelength", None)
    with pytest.warns(DeprecationWarning):
        from spectractor_bridge.wavelength import (
            WavelengthSolution,
            absorption_template,
            calibrate_on_features,
            template_dispersion_solution,
        )
    from atmospec.spectro.wavelength import calibration, features, solution, template

    assert absorption_template is calibration.absorption_template
    assert calibrate_on_features is features.calibrate_on_features
    assert WavelengthSolution is solution.WavelengthSolution
    assert template_dispersion_solution is template.template_dispersion_solution
    with pytest.raises(AttributeError):
        sys.modules["spectractor_bridge.wavelength"].no_such_name  # noqa: B018


def test_old_storage_class_type_resolves():
    """Gen3 repositories made before 0.2 name ``spectractor_bridge.spectrum.Spectrum``."""
    from atmospec.spectro.spectrum import Spectrum
    from spectractor_bridge.spectrum import Spectrum as Old

    assert Old is Spectrum
