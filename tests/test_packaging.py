"""Packaging: every subpackage is installed, data files ship, the console script exists."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("atmospec", "spectractor_bridge")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert found - listed == set(), "add these to [tool.setuptools] packages"
    assert "atmospec.data" in listed and config["package-dir"]["atmospec.data"] == "data"


def test_data_files_are_packaged():
    from importlib import resources

    data = resources.files("atmospec.data")
    for name in ("cameras/latiss.yaml", "cameras/sensors.yaml", "cameras/lsstcam_detectors.ecsv",
                 "latiss_crosstalk.ecsv", "latiss_defects.ecsv",
                 "latiss_raw_template.fits.gz", "latiss_sensor_qe.ecsv", "ATTRIBUTION.md",
                 "instruments/latiss.yaml", "dispersers/holo4_003/transmission.txt",
                 "dispersers/HoloAmAg/hologram_grooves_per_mm.txt", "instruments/ctio.yaml",
                 "calspec/hd142331_stis_005.fits.gz", "calspec/getCalspec_calspec_index.csv"):
        assert (data / name).is_file(), name


def test_python_m_atmospec():
    out = subprocess.run([sys.executable, "-m", "atmospec", "--version"], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0
    assert out.stdout.startswith("atmospec ")
