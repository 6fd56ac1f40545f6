"""Where everything lives in a repository ``REPO`` (the night runner's, the registry's and
the report's), defined once.

::

    REPO/night/index.sqlite3                 night index: raw files and task status
    REPO/night/summary.ecsv, .parquet        night summary table
    REPO/night/plots/                        night plots
    REPO/calib/registry.sqlite3              calibration registry
    REPO/calib/<kind>/                       registered products
    REPO/calib/night/<day_obs>/              products built from a night, before registration
    REPO/exposures/<day_obs>/<OBSID>_*       per-exposure outputs (post-ISR, catalogue, ...)
    REPO/report/                             HTML report (index.html)
    REPO/report/exposures/<OBSID>/           figures of one exposure (and figures.json)

Every function takes the repository (or an output) directory and returns a path below it;
`exposure_file` makes the name of every per-exposure output, here and for ``atmospec isr``
(docs/night.md gives the contract of each file).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

__all__ = [
    "EXPOSURE_FILES",
    "INDEX_FILE",
    "REGISTRY_FILE",
    "SUMMARY_STEM",
    "calib_dir",
    "exposure_dir",
    "exposure_figure_dir",
    "exposure_file",
    "night_build_dir",
    "night_plot_dir",
    "report_dir",
]

#: The night index, relative to the repository.
INDEX_FILE = Path("night") / "index.sqlite3"
#: The night summary table without its suffix (``.ecsv``, ``.parquet``), relative.
SUMMARY_STEM = Path("night") / "summary"
#: The calibration registry's database, relative to the repository.
REGISTRY_FILE = Path("calib") / "registry.sqlite3"


def calib_dir(repo: Path, kind: str | None = None) -> Path:
    """``REPO/calib`` (or the folder of one kind of registered product)."""
    base = Path(repo) / "calib"
    return base if kind is None else base / kind


def night_build_dir(repo: Path) -> Path:
    """``REPO/calib/night``: products built from a night's frames, before registration."""
    return calib_dir(repo) / "night"


def night_plot_dir(repo: Path) -> Path:
    """``REPO/night/plots``."""
    return Path(repo) / "night" / "plots"


def exposure_dir(repo: Path, day_obs: int) -> Path:
    """``REPO/exposures/<day_obs>``: the outputs of the night's exposures."""
    return Path(repo) / "exposures" / str(int(day_obs))


def report_dir(repo: Path) -> Path:
    """``REPO/report``: the HTML report."""
    return Path(repo) / "report"


def exposure_figure_dir(report: Path, obs_id: str | None = None) -> Path:
    """``<report>/exposures/<OBSID>``: the figures of one exposure under a report folder
    (``<report>/exposures``, where the exposure pages are, without ``obs_id``)."""
    base = Path(report) / "exposures"
    return base if obs_id is None else base / obs_id


#: Per-exposure outputs: role -> suffix of ``<OBSID>_<suffix>``.
EXPOSURE_FILES: Mapping[str, str] = MappingProxyType({
    "postisr": "postisr.fits",
    "isrstats": "isrstats.json",
    "catalog": "sources.ecsv",
    "centroid": "centroid.json",
    "spectrum": "spectrum.fits",
    "atmosphere": "atmosphere.json",
})


def exposure_file(directory: Path, obs_id: str, role: str) -> Path:
    """``<directory>/<OBSID>_<suffix>``, the output of one role (`EXPOSURE_FILES`).

    Raises
    ------
    KeyError
        For a role that is not one of `EXPOSURE_FILES`.
    """
    return Path(directory) / f"{obs_id}_{EXPOSURE_FILES[role]}"
