"""What the report reads from a repository: the night (summary table, task outcomes,
rejected files, notes on its state), the calibration products (registry records and their
verification reports, EO tables) and which products each exposure's ISR used.

Nothing here writes, except the calibrations used, which are cached in the exposure's
figure manifest (the caller writes it).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from atmospec import layout
from atmospec.calib.registry import CalibrationRegistry, CalibRecord
from atmospec.errors import BadInputError, short_error
from atmospec.layout import INDEX_FILE, REGISTRY_FILE, SUMMARY_STEM
from atmospec.night.calibs import read_builds
from atmospec.night.index import NightIndex, unusable_file
from atmospec.night.summary import summary_table
from atmospec.plots.exposure import ExposureOutputs
from atmospec.report.truth import read_truth

__all__ = [
    "SUMMARY_FILE",
    "Night",
    "Product",
    "calibs_used",
    "check_repo",
    "read_eo",
    "read_night",
    "read_products",
    "read_summary",
    "row_value",
    "summary_is_stale",
]

log = logging.getLogger(__name__)

#: The night summary the report reads, relative to the repository.
SUMMARY_FILE = SUMMARY_STEM.with_suffix(".ecsv")

#: The run-wide table of ``atmospec eo``, relative to the repository.
EO_TABLE = layout.eo_run_table(Path())

#: Columns of a summary the report reads, for a repository without a night.
_EMPTY_COLUMNS = ("obs_id", "day_obs", "seq_num", "time_begin", "mjd", "image_type", "target",
                  "filter", "disperser", "exptime", "airmass", "status", "reason")


@dataclass
class Night:
    """What the report knows of the night."""

    summary: Table
    """The summary table (one row per exposure)."""
    summary_file: Path | None
    """File it was read from; None when rebuilt in memory."""
    tasks: dict[str, list] = field(default_factory=dict)
    """Task records (`atmospec.night.index.TaskRecord`) by OBSID."""
    rejected: list[tuple[Path, str]] = field(default_factory=list)
    """Files of the night directory that are not usable raws, with the reason."""
    notes: list[tuple[str, str]] = field(default_factory=list)
    """(kind, sentence) shown at the top of the night page."""
    indexed: bool = True
    """Whether the repository has a night (an index or a summary)."""
    truth: dict[str, dict[str, float]] = field(default_factory=dict)
    """Simulator truth by OBSID (`atmospec.report.truth.read_truth`); empty for a real
    night."""
    builds: list[dict[str, str | None]] = field(default_factory=list)
    """What the last night run's calibration stage built, failed or skipped
    (`atmospec.night.calibs.read_builds`)."""


@dataclass(frozen=True)
class Product:
    """A registered calibration product and its page."""

    name: str
    """Page name: the stored file's stem (``bias.f2de856ef7b9``)."""
    record: CalibRecord | None
    """Its registry record (None for an EO table)."""
    path: Path
    """Product file."""
    verification: dict[str, Any] | None
    """Its ``.verify.json`` document."""
    verification_path: Path | None
    """That file."""
    kind: str
    """Product kind (``eo`` for electro-optical tables)."""


def check_repo(repo: str | os.PathLike[str]) -> Path:
    """The repository as a path, checked to be an atmospec repository.

    Raises
    ------
    BadInputError
        ``repo`` is not a directory (missing, a file, a dangling link: the message says
        which), or holds no night index, summary, registry or EO table.
    """
    repo = Path(repo)
    if not repo.is_dir():
        raise BadInputError(repo, _not_a_directory(repo))
    # lexists: an index or summary that is there but unusable (a FIFO, a dangling link) is
    # reported as such by `read_night`, not taken for a missing night.
    if not any(os.path.lexists(repo / f) for f in (INDEX_FILE, SUMMARY_FILE, REGISTRY_FILE,
                                                    EO_TABLE)):
        raise BadInputError(repo, f"not an atmospec repository (no {INDEX_FILE}, "
                                  f"{SUMMARY_FILE}, {REGISTRY_FILE} or {EO_TABLE}); run "
                                  "atmospec night RAWDIR --repo REPO first")
    return repo


def _not_a_directory(path: Path) -> str:
    """Why ``path``, which is not a directory, cannot be a repository (one line).

    ``is_dir`` is False for a file, a FIFO, a dangling link and a missing path alike: saying
    "no such directory" of a file that is there sends the reader looking for the wrong
    problem. ``lstat``/``exists`` only stat the path, so a FIFO is never opened.
    """
    expected = (f"expected a directory with {INDEX_FILE}, {SUMMARY_FILE} or {REGISTRY_FILE}, "
                "written by atmospec night RAWDIR --repo REPO")
    if path.is_symlink() and not path.exists():
        return f"a symbolic link to nothing, not a night repository ({expected})"
    if not path.exists():
        return f"no such directory ({expected})"
    kind = "a file" if path.is_file() else "not a regular file or directory"
    return f"is {kind}, not a night repository ({expected})"


def summary_is_stale(saved: Table, fresh: Table) -> bool:
    """Whether the index now says more than the summary file (exposures, statuses or task
    times changed): compared by content, since copying a repository changes the files'
    modification times but not what they hold."""
    keys = ("obs_id", "status", "duration_s")
    if len(saved) != len(fresh) or any(k not in saved.colnames for k in keys):
        return True
    for key in keys:
        a, b = list(saved[key]), list(fresh[key])
        if key == "duration_s":
            if not np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float),
                               rtol=1e-9, atol=1e-6, equal_nan=True):
                return True
        elif [str(x) for x in a] != [str(x) for x in b]:
            return True
    return False


def read_summary(path: Path) -> Table:
    """The night summary file, checked to hold the columns the report reads.

    Raises
    ------
    BadInputError
        The file is not a regular file (a directory, a FIFO, a dangling link: examined with
        ``stat`` before it is opened, since a FIFO would block), cannot be read as an ECSV
        table (damaged, truncated, not text) or lacks those columns; the message says how to
        have it rebuilt from the night index.
    """
    rebuild = ("remove it to have the report rebuild it from the night index, or run "
               "atmospec night again")
    problem = unusable_file(path)
    if problem is not None:
        raise BadInputError(path, f"unusable night summary ({problem}); {rebuild}")
    try:
        with warnings.catch_warnings():  # the error below says it all, once
            warnings.simplefilter("ignore")
            summary = Table.read(path, format="ascii.ecsv")
    except Exception as exc:  # astropy and the YAML and text decoders raise many types
        raise BadInputError(path, f"unreadable night summary ({type(exc).__name__}: "
                                  f"{short_error(exc)}); {rebuild}") from None
    missing = [c for c in _EMPTY_COLUMNS if c not in summary.colnames]
    if missing:
        raise BadInputError(path, f"not a night summary (no column {', '.join(missing)}); "
                                  f"{rebuild}")
    return summary


def read_night(repo: Path) -> Night:
    """The night summary (the file, else rebuilt from the index, else empty), its task
    records and rejected files, with notes on anything unusual.

    Raises
    ------
    BadInputError
        The index or the summary is there but unusable (not a regular file, damaged, not
        atmospec's): the report never shows a night without the file that says it.
    """
    # lexists, not is_file: anything at those paths is read, and refused when unusable.
    index = NightIndex(repo, create=False) if os.path.lexists(repo / INDEX_FILE) else None
    notes: list[tuple[str, str]] = []
    summary_file = repo / SUMMARY_FILE
    if os.path.lexists(summary_file):
        summary = read_summary(summary_file)
        if index is not None and summary_is_stale(summary, summary_table(index)):
            notes.append(("warn", f"The night index changed after {SUMMARY_FILE} was "
                                  "written (a run in progress?): the tables show the summary "
                                  "file; run atmospec night again to refresh it."))
    elif index is not None:
        summary, summary_file = summary_table(index), None
        notes.append(("warn", f"No {SUMMARY_FILE}: the summary was rebuilt from the index."))
    else:
        summary, summary_file = Table(names=_EMPTY_COLUMNS,
                                      dtype=[str if c not in ("day_obs", "seq_num", "mjd",
                                                              "exptime", "airmass")
                                             else float for c in _EMPTY_COLUMNS]), None
        held = ("electro-optical test results" if not (repo / REGISTRY_FILE).exists()
                and os.path.lexists(repo / EO_TABLE) else "calibration products")
        notes.append(("warn", f"This repository holds {held} only: no night was reduced in "
                              "it."))
    night = Night(summary, summary_file, notes=notes,
                  indexed=index is not None or summary_file is not None)
    if index is not None:
        for t in index.tasks():
            night.tasks.setdefault(t.obs_id, []).append(t)
        night.rejected = index.rejected()
        night.truth = read_truth((r.obs_id, r.path) for r in index.raws())
    night.builds = read_builds(repo)
    return night


def read_eo(repo: Path) -> tuple[Table | None, str | None]:
    """The run-wide EO table of ``atmospec eo`` (``REPO/eo/eo_figures.ecsv``).

    Returns
    -------
    table : astropy.table.Table or None
        None when there is none, or when it cannot be read.
    problem : str or None
        Why a table that is there could not be read (one line), else None.
    """
    path = repo / EO_TABLE
    if not os.path.lexists(path):
        return None, None
    try:
        table = Table.read(path, format="ascii.ecsv")
    except Exception as exc:  # a damaged table is a sentence, never a failed report
        return None, f"{path}: unreadable EO table ({short_error(exc)})"
    missing = {"detector", "vendor", "amp", "figure", "value", "status"} - set(table.colnames)
    if missing:
        return None, f"{path}: not an EO figures table (no {', '.join(sorted(missing))})"
    return table, None


def read_products(repo: Path) -> tuple[list[Product], list[str]]:
    """Registered products (and EO tables under ``REPO/calib``), and problems met."""

    products: list[Product] = []
    problems: list[str] = []
    if (repo / REGISTRY_FILE).is_file():
        try:
            records = CalibrationRegistry(repo, create=False).list()
        except BadInputError as exc:
            records = []
            problems.append(str(exc))
        for rec in records:
            verification, vpath = None, None
            if rec.verification_path:
                vpath = repo / rec.verification_path
                try:
                    verification = json.loads(vpath.read_text())
                except (OSError, ValueError) as exc:
                    problems.append(f"{vpath}: unreadable verification report ({exc})")
            products.append(Product(Path(rec.path).stem, rec, rec.absolute_path, verification,
                                    vpath, rec.kind))
    calib_dir = layout.calib_dir(repo)
    if calib_dir.is_dir():
        for table in sorted(calib_dir.rglob("eo_figures*.ecsv")):
            products.append(Product(f"eo_{table.parent.name}_{table.stem}", None, table, None,
                                    None, "eo"))
    return products, problems


def calibs_used(outputs: ExposureOutputs, manifest: dict[str, Any]) -> dict[str, str]:
    """Products an exposure's ISR used (kind → file name), from its post-ISR header; kept in
    the figure manifest so a warm report reads no FITS header."""
    if outputs.postisr is None:
        return {}
    st = outputs.postisr.stat()
    key = [st.st_size, st.st_mtime]
    cached = manifest.get("_calibs")
    if cached and cached.get("postisr") == key:
        return dict(cached["used"])
    from astropy.io import fits

    try:
        header = fits.getheader(outputs.postisr, 0)
    except (OSError, ValueError) as exc:
        log.warning("%s: cannot read the header (%s)", outputs.postisr, short_error(exc))
        return {}
    used = {k[len("ATM CALIB "):].lower(): str(v) for k, v in header.items()
            if k.startswith("ATM CALIB ")}
    if "ATM GAIN SOURCE" in header:
        used.setdefault("gains", str(header["ATM GAIN SOURCE"]))
    manifest["_calibs"] = {"postisr": key, "used": used}
    return used


def row_value(row: Any, column: str) -> Any:
    """A summary row's value in ``column``; None when the column is absent or masked."""
    if column not in row.colnames:
        return None
    value = row[column]
    return None if value is np.ma.masked else value
