"""Where everything lives in a repository ``REPO`` (the night runner's, the registry's and
the report's), defined once.

::

    REPO/night/index.sqlite3                 night index: raw files and task status
    REPO/night/night.lock                    held by the night running on the repository
    REPO/night/summary.ecsv, .parquet        night summary table
    REPO/night/plots/                        night plots
    REPO/calib/registry.sqlite3              calibration registry
    REPO/calib/<kind>/                       registered products (one detector: LATISS)
    REPO/calib/<kind>/<detector>/            those of an instrument of several (LSSTCam)
    REPO/calib/night/<day_obs>/              products built from a night, before registration
    REPO/exposures/<day_obs>/<OBSID>_*       per-exposure outputs (post-ISR, catalogue, ...)
    REPO/exposures/<day_obs>/figures/<OBSID>/  its figures as drawn by the night (and
                                             figures.json): what a report links
    REPO/eo/<detector>/eo_figures.ecsv, .json  one detector's EO figures and verdicts
    REPO/eo/<detector>/eo_<table>.ecsv       its further tables (bias stability, CTI
                                             against signal, amp correlations, ...)
    REPO/eo/eo_figures.ecsv                  every detector's, the run-wide table
    REPO/eo/plots/<figure>_mosaic.png, _hist.png  its mosaic and histogram of each figure
    REPO/report/                             HTML report (index.html)
    REPO/report/exposures/<OBSID>/           figures of one exposure (and figures.json)
    REPO/report/live.html, live.json, live.js  the live page of ``atmospec watch``
    REPO/report/live/                        its trend figures

Every function takes the repository (or an output) directory and returns a path below it;
`exposure_file` makes the name of every per-exposure output, here and for ``atmospec isr``
(docs/night.md gives the contract of each file).

No value read from a file decides where we write: a name taken from a header (an OBSID) is
checked by `safe_component` wherever it becomes part of an output path, so it can neither
leave the output folder (``..``, a path separator) nor name something odd (control
characters, a leading dot or dash, an empty or very long name).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

__all__ = [
    "CALIBRATION_BUILDS_FILE",
    "EO_FIGURES_STEM",
    "EXPOSURE_FILES",
    "INDEX_FILE",
    "LIVE_FILES",
    "NIGHT_LOCK_FILE",
    "REGISTRY_FILE",
    "SUMMARY_STEM",
    "calib_dir",
    "eo_dir",
    "eo_plot_dir",
    "eo_run_table",
    "eo_table",
    "exposure_dir",
    "exposure_figure_dir",
    "exposure_figure_store",
    "exposure_file",
    "live_file",
    "night_build_dir",
    "night_plot_dir",
    "report_dir",
    "safe_component",
]

#: The night index, relative to the repository.
INDEX_FILE = Path("night") / "index.sqlite3"
#: The lock held by the night running on the repository (pid, host and start inside).
NIGHT_LOCK_FILE = Path("night") / "night.lock"
#: The night summary table without its suffix (``.ecsv``, ``.parquet``), relative.
SUMMARY_STEM = Path("night") / "summary"
#: The calibration registry's database, relative to the repository.
REGISTRY_FILE = Path("calib") / "registry.sqlite3"
#: What the last night run built, failed to build or could not build (JSON list), relative.
CALIBRATION_BUILDS_FILE = Path("night") / "calibration_builds.json"


#: Base name of the EO figures tables (``.ecsv``, ``.json``) in `eo_dir`.
EO_FIGURES_STEM = "eo_figures"


#: What a header value may hold to become part of a file name: letters, digits, ``_ . + -``
#: (every LATISS, ComCam and LSSTCam OBSID is of the form ``AT_O_20250301_000012``), at most
#: 128 characters, starting with a letter or digit.
_SAFE_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")


def safe_component(value: object, what: str = "name") -> str:
    """``value`` as one path component safe to build an output name from.

    Parameters
    ----------
    value : object
        A value read from a file (usually a header's OBSID); converted with ``str``.
    what : str
        What the value is, for the message (e.g. ``"OBSID"``).

    Returns
    -------
    str
        The value, unchanged.

    Raises
    ------
    ValueError
        If it is empty, longer than 128 characters, holds ``..``, a path separator, a control
        or non-ASCII character, or starts with anything but a letter or a digit; the message
        shows the value (``repr``, cut to 60 characters).
    """
    text = str(value)
    if _SAFE_COMPONENT.fullmatch(text) is None or ".." in text:
        shown = repr(text) if len(text) <= 60 else repr(text[:57]) + "..."
        raise ValueError(f"{what} {shown} cannot name an output file (letters, digits and "
                         "_ . + - only, at most 128, no '..')")
    return text


def calib_dir(repo: Path, kind: str | None = None, detector: str | None = None) -> Path:
    """``REPO/calib``, the folder of one kind of registered product ``REPO/calib/<kind>``,
    or of one detector's products of that kind ``REPO/calib/<kind>/<detector>``.

    The registry stores the products of an instrument of several detectors (LSSTCam) by
    detector, so two detectors' biases of one night are apart; an instrument of one
    (LATISS) keeps ``REPO/calib/<kind>``.

    Raises
    ------
    ValueError
        For a detector that cannot name a folder (`safe_component`).
    """
    base = Path(repo) / "calib"
    if kind is None:
        return base
    return base / kind if detector is None else base / kind / safe_component(detector,
                                                                               "detector")


def eo_dir(repo: Path, detector: str | None = None) -> Path:
    """``REPO/eo`` (the run-wide EO table), or ``REPO/eo/<detector>`` (one detector's).

    Raises
    ------
    ValueError
        For a detector that cannot name a folder (`safe_component`).
    """
    base = Path(repo) / "eo"
    return base if detector is None else base / safe_component(detector, "detector")


def eo_run_table(repo: Path) -> Path:
    """``REPO/eo/eo_figures.ecsv``: every detector's EO figures and verdicts, stacked."""
    return eo_dir(repo) / f"{EO_FIGURES_STEM}.ecsv"


def eo_table(repo: Path, detector: str, name: str) -> Path:
    """``REPO/eo/<detector>/eo_<name>.ecsv``: one of a detector's further EO tables
    (``bias_stability``, ``cti_vs_signal``, ...; `atmospec.calib.eo_run.DetectorEo.tables`).

    Raises
    ------
    ValueError
        For a detector or a table name that cannot name a file (`safe_component`).
    """
    return eo_dir(repo, detector) / f"eo_{safe_component(name, 'table')}.ecsv"


def eo_plot_dir(repo: Path) -> Path:
    """``REPO/eo/plots``: the mosaic and the histogram of each EO figure of the run-wide
    table (``<figure>_mosaic.png``, ``<figure>_hist.png``)."""
    return eo_dir(repo) / "plots"


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
    return base if obs_id is None else base / safe_component(obs_id, "OBSID")


def exposure_figure_store(directory: Path, obs_id: str) -> Path:
    """``<directory>/figures/<OBSID>`` beside an exposure's outputs (``directory`` is
    ``REPO/exposures/<day_obs>``): its figures as the night drew them, a product of the night
    like its catalogue, which every report (even one whose folder was deleted) links
    instead of drawing them again."""
    return Path(directory) / "figures" / safe_component(obs_id, "OBSID")


#: The live page of ``atmospec watch`` in a report folder: role -> name. ``page`` is the
#: HTML, ``data`` its content as JSON, ``script`` the same wrapped in a call (what the page
#: loads to update itself: a script loads from ``file://``, where a fetch is refused),
#: ``figures`` the folder of its trend figures.
LIVE_FILES: Mapping[str, str] = MappingProxyType({
    "page": "live.html", "data": "live.json", "script": "live.js", "figures": "live"})


def live_file(report: Path, role: str) -> Path:
    """``<report>/<name>`` of one role of the live page (`LIVE_FILES`).

    Raises
    ------
    KeyError
        For a role that is not one of `LIVE_FILES`.
    """
    return Path(report) / LIVE_FILES[role]


#: Per-exposure outputs: role -> suffix of ``<OBSID>_<suffix>``.
EXPOSURE_FILES: Mapping[str, str] = MappingProxyType({
    "postisr": "postisr.fits",
    "preview": "preview.fits",
    "isrstats": "isrstats.json",
    "catalog": "sources.ecsv",
    "centroid": "centroid.json",
    "spectrum": "spectrum.fits",
    "atmosphere": "atmosphere.json",
    "overscan_plot": "overscan.png",
    "postisr_plot": "postisr.png",
})


def exposure_file(directory: Path, obs_id: str, role: str) -> Path:
    """``<directory>/<OBSID>_<suffix>``, the output of one role (`EXPOSURE_FILES`).

    Raises
    ------
    KeyError
        For a role that is not one of `EXPOSURE_FILES`.
    ValueError
        For an OBSID that cannot name a file (`safe_component`).
    """
    return Path(directory) / f"{safe_component(obs_id, 'OBSID')}_{EXPOSURE_FILES[role]}"
