"""The night's index: every raw file of a night directory with its translated metadata, and
the status of every task run on it (SQLite, standard library).

One database per repository, ``REPO/night/index.sqlite3``:

``raws``
    one row per usable raw file (path, size, modification time, the `ObservationInfo`
    fields used for queries, and the whole record as JSON);
``rejected``
    files that are not usable raw LATISS frames, with the one-line reason (logged too);
``tasks``
    one row per (exposure, task): status ``done`` or ``failed``, the reason of a failure,
    start, duration, attempts, the outputs written and the figures the night summary shows.

Only the night runner's main process writes; workers return results and never touch the
database, so a cluster worker needs no access to it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from astropy.time import Time

from atmospec.camera.raw import check_raw_structure
from atmospec.camera.translator import ObservationInfo
from atmospec.errors import BadInputError
from atmospec.layout import INDEX_FILE

log = logging.getLogger(__name__)


#: File names the indexer looks at in a night directory.
RAW_PATTERNS = ("*.fits", "*.fits.gz", "*.fits.fz", "*.fz")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS raws (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    obs_id TEXT NOT NULL UNIQUE,
    instrument TEXT NOT NULL,
    day_obs INTEGER NOT NULL,
    seq_num INTEGER NOT NULL,
    image_type TEXT NOT NULL,
    target TEXT,
    physical_filter TEXT NOT NULL,
    filter TEXT NOT NULL,
    disperser TEXT NOT NULL,
    dispersed INTEGER NOT NULL,
    exposure_time REAL,
    airmass REAL,
    mjd REAL,
    datetime_begin TEXT,
    info TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS raws_by_type ON raws (image_type, filter, disperser);
CREATE INDEX IF NOT EXISTS raws_by_time ON raws (mjd);
CREATE TABLE IF NOT EXISTS rejected (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    obs_id TEXT NOT NULL,
    task TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    config_hash TEXT NOT NULL,
    started TEXT NOT NULL,
    duration_s REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    outputs TEXT NOT NULL DEFAULT '{}',
    metrics TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (obs_id, task)
);
"""

_BUSY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class RawRecord:
    """One indexed raw file."""

    path: Path
    """Absolute path of the raw file."""
    info: ObservationInfo
    """Its translated metadata."""

    @property
    def obs_id(self) -> str:
        """The exposure's OBSID."""
        return self.info.obs_id


@dataclass(frozen=True)
class TaskRecord:
    """The recorded outcome of one task on one exposure."""

    obs_id: str
    """Exposure."""
    task: str
    """Task name (as in the pipeline definition)."""
    status: str
    """``done`` or ``failed``."""
    reason: str | None
    """One-line reason of a failure."""
    config_hash: str
    """Hash of the task's configuration and inputs; a change makes the task run again."""
    started: str
    """UTC start time, ISO 8601."""
    duration_s: float
    """Wall time of the task, s."""
    attempts: int
    """How many times the task was run."""
    outputs: dict[str, str]
    """Files written, by role."""
    metrics: dict[str, Any]
    """Figures for the night summary (FWHM, sky, ...)."""


def info_from_json(text: str) -> ObservationInfo:
    """Rebuild an `ObservationInfo` from `ObservationInfo.to_dict` JSON."""
    d = json.loads(text)
    if d.get("datetime_begin"):
        d["datetime_begin"] = Time(d["datetime_begin"], scale="tai")
    d["binning"] = tuple(d["binning"])
    return ObservationInfo(**d)


def check_raw_file(path: Path) -> ObservationInfo:
    """Check a raw file from its headers, without reading the pixels.

    The checks are `atmospec.camera.raw.check_raw_structure`'s, the same `read_raw` makes
    before it reads pixels, for plain, gzip-compressed (``.fits.gz``) and tile-compressed
    (``.fz``) files alike.

    Parameters
    ----------
    path : pathlib.Path
        Candidate raw file.

    Returns
    -------
    ObservationInfo
        The translated primary header.

    Raises
    ------
    BadInputError
        Empty, truncated, not FITS, a damaged header, a foreign instrument, a missing or
        duplicated amplifier HDU, a wrong segment shape.
    """
    return check_raw_structure(path).info


class NightIndex:
    """SQLite index of a night's raw files and of the tasks run on them.

    Parameters
    ----------
    repo : path
        Repository directory; the database is ``REPO/night/index.sqlite3`` (created).
    """

    def __init__(self, repo: str | Path) -> None:
        self.repo = Path(repo)
        self.db_path = self.repo / INDEX_FILE
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.executescript(_SCHEMA)

    def __repr__(self) -> str:
        return f"NightIndex({str(self.repo)!r})"

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = sqlite3.connect(self.db_path, timeout=_BUSY_TIMEOUT_S)
        except sqlite3.Error as exc:
            raise BadInputError(self.db_path, f"cannot open the night index ({exc})") from None
        conn.row_factory = sqlite3.Row
        try:
            # WAL: readers (the report, a second terminal) never block the runner.
            conn.execute("PRAGMA journal_mode=WAL")
            with conn:  # one transaction: committed on success, rolled back on error
                yield conn
        except sqlite3.DatabaseError as exc:
            raise BadInputError(self.db_path, f"damaged night index ({exc})") from None
        finally:
            conn.close()

    # -- raws ---------------------------------------------------------------------------

    def index_directory(self, raw_dir: str | Path, *, progress: bool = True) -> dict[str, int]:
        """Index every raw file of a directory (not recursive); unchanged files are skipped.

        Parameters
        ----------
        raw_dir : path
            The night's directory.
        progress : bool
            Show a progress bar on a terminal.

        Returns
        -------
        dict
            Counts: ``added``, ``unchanged``, ``rejected``.

        Raises
        ------
        BadInputError
            If ``raw_dir`` is not a directory.
        """
        from tqdm import tqdm

        raw_dir = Path(raw_dir)
        if not raw_dir.is_dir():
            raise BadInputError(raw_dir, "not a directory")
        files = sorted({p.resolve() for pat in RAW_PATTERNS for p in raw_dir.glob(pat)
                        if p.is_file()})
        with self._connect() as conn:
            known = {row["path"]: (row["size"], row["mtime"]) for row in
                     conn.execute("SELECT path, size, mtime FROM raws UNION ALL "
                                  "SELECT path, size, mtime FROM rejected")}
        counts = {"added": 0, "unchanged": 0, "rejected": 0}
        for path in tqdm(files, desc="indexing", unit="file", disable=None if progress else True):
            stat = path.stat()
            if known.get(str(path)) == (stat.st_size, stat.st_mtime):
                counts["unchanged"] += 1
                continue
            try:
                info = check_raw_file(path)
                self._add(path, stat.st_size, stat.st_mtime, info)
                counts["added"] += 1
            except BadInputError as exc:
                log.warning("skipped %s", exc)
                self._reject(path, stat.st_size, stat.st_mtime, exc.problem)
                counts["rejected"] += 1
        log.info("indexed %s: %d new, %d unchanged, %d rejected", raw_dir, counts["added"],
                 counts["unchanged"], counts["rejected"])
        return counts

    def _add(self, path: Path, size: int, mtime: float, info: ObservationInfo) -> None:
        if info.instrument != "LATISS":
            raise BadInputError(path, f"instrument {info.instrument}, not LATISS")
        t = info.datetime_begin
        with self._connect() as conn:
            other = conn.execute("SELECT path FROM raws WHERE obs_id = ? AND path != ?",
                                 (info.obs_id, str(path))).fetchone()
            if other is not None:
                raise BadInputError(path, f"OBSID {info.obs_id} already indexed from "
                                          f"{Path(other['path']).name}")
            conn.execute("DELETE FROM rejected WHERE path = ?", (str(path),))
            conn.execute(
                "INSERT OR REPLACE INTO raws VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (str(path), size, mtime, info.obs_id, info.instrument, info.day_obs,
                 info.seq_num, info.image_type, info.target_name, info.physical_filter,
                 info.filter, info.disperser, int(info.is_dispersed), info.exposure_time,
                 info.airmass, None if t is None else float(t.mjd),
                 None if t is None else t.isot, json.dumps(info.to_dict())))

    def _reject(self, path: Path, size: int, mtime: float, reason: str) -> None:
        with self._connect() as conn:
            conn.execute("DELETE FROM raws WHERE path = ?", (str(path),))
            conn.execute("INSERT OR REPLACE INTO rejected VALUES (?,?,?,?)",
                         (str(path), size, mtime, reason))

    def raws(self, *, image_type: str | Iterable[str] | None = None,
             filter: str | None = None, disperser: str | None = None,
             dispersed: bool | None = None, start: Time | str | None = None,
             end: Time | str | None = None) -> list[RawRecord]:
        """Indexed raw files, in (day_obs, seq_num) order.

        Parameters
        ----------
        image_type : str or iterable of str, optional
            ``bias``, ``dark``, ``flat``, ``science``, ...
        filter, disperser : str, optional
            Filter name (e.g. ``SDSSr_65mm``) and disperser (e.g. ``holo4_003``, ``empty``).
        dispersed : bool, optional
            Only dispersed (True) or only imaging (False) exposures.
        start, end : Time or str, optional
            Exposure start in ``[start, end)`` (strings are read as TAI ISO times).

        Returns
        -------
        list of RawRecord
        """
        where, args = [], []
        if image_type is not None:
            types = [image_type] if isinstance(image_type, str) else list(image_type)
            where.append(f"image_type IN ({','.join('?' * len(types))})")
            args += types
        for column, value in (("filter", filter), ("disperser", disperser)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if dispersed is not None:
            where.append("dispersed = ?")
            args.append(int(dispersed))
        for op, value in ((">=", start), ("<", end)):
            if value is not None:
                t = value if isinstance(value, Time) else Time(value, scale="tai")
                where.append(f"mjd {op} ?")
                args.append(float(t.tai.mjd))
        sql = "SELECT path, info FROM raws"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._connect() as conn:
            rows = conn.execute(sql + " ORDER BY day_obs, seq_num", args).fetchall()
        return [RawRecord(Path(r["path"]), info_from_json(r["info"])) for r in rows]

    def rejected(self) -> list[tuple[Path, str]]:
        """Files that are not usable raws, with the reason."""
        with self._connect() as conn:
            rows = conn.execute("SELECT path, reason FROM rejected ORDER BY path").fetchall()
        return [(Path(r["path"]), r["reason"]) for r in rows]

    # -- tasks --------------------------------------------------------------------------

    def record_task(self, obs_id: str, task: str, *, status: str, config_hash: str,
                    started: datetime, duration_s: float, reason: str | None = None,
                    outputs: dict[str, str] | None = None,
                    metrics: dict[str, Any] | None = None) -> None:
        """Record the outcome of one task (replacing an earlier one, attempts counted)."""
        if status not in ("done", "failed"):
            raise ValueError(f"status {status!r} is not 'done' or 'failed'")
        with self._connect() as conn:
            row = conn.execute("SELECT attempts FROM tasks WHERE obs_id = ? AND task = ?",
                               (obs_id, task)).fetchone()
            attempts = 1 + (row["attempts"] if row else 0)
            conn.execute(
                "INSERT OR REPLACE INTO tasks VALUES (?,?,?,?,?,?,?,?,?,?)",
                (obs_id, task, status, reason, config_hash,
                 started.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f"),
                 float(duration_s), attempts, json.dumps(outputs or {}),
                 json.dumps(metrics or {}, allow_nan=True)))

    def tasks(self, obs_id: str | None = None) -> list[TaskRecord]:
        """Recorded task outcomes (of one exposure, or all)."""
        sql, args = "SELECT * FROM tasks", ()
        if obs_id is not None:
            sql, args = sql + " WHERE obs_id = ?", (obs_id,)
        with self._connect() as conn:
            rows = conn.execute(sql + " ORDER BY obs_id, started", args).fetchall()
        return [TaskRecord(r["obs_id"], r["task"], r["status"], r["reason"], r["config_hash"],
                           r["started"], r["duration_s"], r["attempts"],
                           json.loads(r["outputs"]), json.loads(r["metrics"])) for r in rows]

    def task_map(self) -> dict[tuple[str, str], TaskRecord]:
        """Recorded outcomes keyed by ``(obs_id, task)``."""
        return {(t.obs_id, t.task): t for t in self.tasks()}
