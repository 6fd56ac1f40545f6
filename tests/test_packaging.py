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
                 "calspec/hd142331_stis_005.fits.gz", "calspec/getCalspec_calspec_index.csv",
                 "examples/ctio_20170530_134_HD111980_HoloAmAg.fits.gz", "eo/specs.ecsv"):
        assert (data / name).is_file(), name


def test_every_data_file_is_shipped():
    """Every file of the data folders is matched by a package-data glob of its package, so
    an install holds what the source tree does (include-package-data is off: a file no glob
    matches would silently be left out of the wheel)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["include-package-data"] is False
    for package, folder in config["package-dir"].items():
        if not package:
            continue
        base = ROOT / folder
        matched = {f for pattern in config["package-data"].get(package, [])
                   for f in base.glob(pattern) if f.is_file()}
        present = {f for f in base.rglob("*") if f.is_file() and f.suffix not in (".py", ".pyc")
                   and "__pycache__" not in f.parts}
        missing = sorted(str(f.relative_to(ROOT)) for f in present - matched)
        assert missing == [], f"add globs for these to package-data of {package}"


def test_python_m_atmospec():
    out = subprocess.run([sys.executable, "-m", "atmospec", "--version"], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0
    assert out.stdout.startswith("atmospec ")
