"""The night's index: every raw file of a night directory with its translated metadata, and
the status of every task run on it (SQLite, standard library).

One database per repository, ``REPO/night/index.sqlite3``:

``raws``
    one row per usable raw file (path, size, modification time, the `ObservationInfo`
    fields used for queries, and the whole record as JSON);
``rejected``
    every file of the night directory that is skipped, with the one-line reason (logged
    too): not a usable raw frame, a directory, FIFO or other special file, a
    dangling symbolic link, unreadable, vanished after indexing, or one of several files
    with the same OBSID (all of them held back, with that OBSID, until one remains);
``tasks``
    one row per (exposure, task): status ``done`` or ``failed``, the reason of a failure,
    start, duration, attempts, the outputs written and the figures the night summary shows.

Only the night runner's main process writes; workers return results and never touch the
database, so a cluster worker needs no access to it.

The database says what it is: its SQLite ``application_id`` is `APPLICATION_ID`, set when
atmospec creates it (an index written before it had one, holding only atmospec's tables, is
adopted). A database with another identity, or with other tables, is refused rather than
filled with a night's tables; so is an index path that is not a regular file (examined with
``stat`` before SQLite opens it) and a row whose JSON record does not decode.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from astropy.time import Time

from atmospec.camera.raw import check_raw_structure
from atmospec.camera.translator import ObservationInfo
from atmospec.errors import BadInputError, short_error
from atmospec.io import special_file_kind
from atmospec.layout import INDEX_FILE
from atmospec.night.lock import not_writable

log = logging.getLogger(__name__)


#: File names the indexer looks at in a night directory.
RAW_PATTERNS = ("*.fits", "*.fits.gz", "*.fits.fz", "*.fz")

#: Folder levels below the night's directory searched for raws (a BOT run has 1, a
#: Butler-style tree 3 or 4): a bound, so a deep tree cannot make indexing endless.
MAX_DEPTH = 6


def raw_files(raw_dir: Path, skip: tuple[Path, ...] = (),
              patterns: tuple[str, ...] = RAW_PATTERNS) -> list[Path]:
    """The files of ``raw_dir`` and its sub-folders matching ``patterns``.

    Links to folders are not followed (a loop cannot be walked twice; links to files are
    listed, and `_examine` resolves them), folders named like a raw are listed (to be
    refused as folders) but not walked into, hidden folders (``.git``, ``.cache``) and the
    folders of ``skip`` (the repository, when it sits in the raw folder: its post-ISR
    images are not raws) are left out, and the walk stops `MAX_DEPTH` levels down.

    Parameters
    ----------
    raw_dir : pathlib.Path
        The night's directory.
    skip : tuple of pathlib.Path
        Folders not walked.
    patterns : tuple of str
        Shell patterns (`fnmatch`, case-sensitive) of the raws: a pattern with a ``/``
        matches the path relative to ``raw_dir`` (``*/raw/*.fits``), any other the file
        name (``MC_C_*_R22_S11.fits``). Default `RAW_PATTERNS`.

    Returns
    -------
    list of pathlib.Path
        Absolute paths, sorted.
    """
    return sorted(iter_raw_files(raw_dir, skip, patterns))


def iter_raw_files(raw_dir: Path, skip: tuple[Path, ...] = (),
                   patterns: tuple[str, ...] = RAW_PATTERNS) -> Iterator[Path]:
    """`raw_files` as they are found (unsorted), for a caller that needs only the first."""
    root = raw_dir.absolute()
    skipped = {p.absolute() for p in skip}

    def is_raw(here: Path, name: str) -> bool:
        return _matches(root, here / name, patterns)

    for folder, dirs, files in os.walk(root, followlinks=False):
        here = Path(folder)
        # A folder named like a raw is listed (and refused as a folder by `_examine`), not
        # walked into.
        yield from (here / name for name in (*files, *dirs) if is_raw(here, name))
        depth = len(here.relative_to(root).parts)
        dirs[:] = [] if depth >= MAX_DEPTH else sorted(
            d for d in dirs if not d.startswith(".") and not is_raw(here, d)
            and here / d not in skipped)


def _matches(root: Path, path: Path, patterns: tuple[str, ...]) -> bool:
    """Whether ``path`` (below ``root``) is named like a raw: a pattern with a ``/`` matches
    its path relative to ``root``, any other its name."""
    if any(fnmatch.fnmatchcase(path.name, pat) for pat in patterns if "/" not in pat):
        return True
    relative = path.relative_to(root).as_posix()
    return any(fnmatch.fnmatchcase(relative, pat) for pat in patterns if "/" in pat)


def is_raw_path(raw_dir: Path, path: Path, skip: tuple[Path, ...] = (),
                patterns: tuple[str, ...] = RAW_PATTERNS) -> bool:
    """Whether `raw_files` would list ``path``: for a file reported by a file-system event.

    Parameters
    ----------
    raw_dir : pathlib.Path
        The night's directory.
    path : pathlib.Path
        A path below it.
    skip : tuple of pathlib.Path
        Folders not walked (their files are not raws).
    patterns : tuple of str
        Shell patterns of the raws (`raw_files`).

    Returns
    -------
    bool
        False for a path outside ``raw_dir``, below a hidden or skipped folder, below a
        folder named like a raw, deeper than `MAX_DEPTH` levels, or not matching.
    """
    root = raw_dir.absolute()
    path = path.absolute()
    if not path.is_relative_to(root) or path == root:
        return False
    skipped = {p.absolute() for p in skip}
    parents = path.relative_to(root).parts[:-1]
    if len(parents) > MAX_DEPTH:
        return False
    here = root
    for part in parents:
        here = here / part
        if part.startswith(".") or here in skipped or _matches(root, here, patterns):
            return False
    return _matches(root, path, patterns)


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
    reason TEXT NOT NULL,
    obs_id TEXT
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

#: SQLite ``application_id`` of a night index: the bytes ``ATNI`` (AtmoSpec Night Index).
APPLICATION_ID = int.from_bytes(b"ATNI", "big")
#: The tables of a night index (`_SCHEMA`).
_TABLES = frozenset({"raws", "rejected", "tasks"})

#: Beginnings of the reasons that describe a file's state rather than its content: a file
#: recorded so is looked at again at every indexing, whatever its size and modification
#: time (a duplicate OBSID may be gone, a permission granted, a vanished raw back).
_DUPLICATE = "duplicate OBSID"
_UNREADABLE = "unreadable"
_VANISHED = "vanished"
_STATE_REASONS = (_DUPLICATE, _UNREADABLE, _VANISHED)
#: ``defer(path, reason) -> bool``: whether to leave a file that is not a usable raw unrecorded.
Defer = Callable[[Path, str], bool]

#: A raw that was indexed and is gone: kept as a skip while it is gone (its exposure may
#: have been processed), where the records of other files that are gone are dropped.
_GONE_RAW = f"{_VANISHED} after indexing"


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
    """One-line reason of a failure, or the note of a task skipped as not applicable
    (``done``, ``skipped: …``)."""
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
    OSError
        When the file cannot be opened or read (gone, permission denied).
    """
    return check_raw_structure(path).info


def _check(path: Path) -> ObservationInfo:
    """`check_raw_file`: a frame of any instrument and detector the pipeline reduces (the
    check loads its detector's description, and refuses the others in one line)."""
    return check_raw_file(path)


def _os_reason(exc: OSError, when: str) -> str:
    """The recorded reason of a file the system would not give us."""
    if isinstance(exc, FileNotFoundError):
        return f"{_VANISHED} {when}"
    return f"{_UNREADABLE}: {exc.strerror or short_error(exc)}"


def _after_indexing(obs_id: str | None) -> str:
    """When a raw went missing: after indexing, and which exposure it was."""
    return "after indexing" if obs_id is None else f"after indexing (was {obs_id})"


def unusable_file(path: Path) -> str | None:
    """Why a file atmospec keeps (an index, a summary) cannot be opened as one, found with
    ``stat`` before anything opens it (a FIFO would block its reader).

    Parameters
    ----------
    path : pathlib.Path
        The file.

    Returns
    -------
    str or None
        The problem (``a FIFO (named pipe), not a regular file``, ``dangling symbolic link
        (to ...)``, ...); None for a regular file, or when there is nothing at ``path``.
    """
    try:
        st = path.stat()  # through a symbolic link
    except FileNotFoundError:
        try:
            return f"dangling symbolic link (to {os.readlink(path)})"
        except OSError:  # nothing there: the caller decides whether it may be created
            return None
    except OSError as exc:  # a loop of links, a file system error
        return f"{_UNREADABLE}: {exc.strerror or short_error(exc)}"
    kind = special_file_kind(st.st_mode)
    return None if kind is None else f"{kind}, not a regular file"


def _examine(entry: Path) -> tuple[Path, int, float, str | None]:
    """What an entry of the night directory is, before anything opens it (a FIFO would block
    the reader): ``(path, size, mtime, reason)``, the path resolved and the reason None for
    a readable regular file, else the entry's own path and why it is skipped."""
    try:
        st = entry.stat()  # through a symbolic link
    except FileNotFoundError:
        try:
            st = entry.lstat()
            target = os.readlink(entry)
        except OSError:
            return entry, -1, -1.0, f"{_VANISHED} while indexing"
        return entry, st.st_size, st.st_mtime, f"dangling symbolic link (to {target})"
    except OSError as exc:  # a loop of links, a file system error
        return entry, -1, -1.0, _os_reason(exc, "while indexing")
    kind = special_file_kind(st.st_mode)
    if kind is not None:
        return entry, st.st_size, st.st_mtime, f"{kind}, not a regular file"
    if not os.access(entry, os.R_OK):
        return entry, st.st_size, st.st_mtime, f"{_UNREADABLE}: permission denied"
    try:
        path = entry.resolve(strict=True)
    except (OSError, RuntimeError):
        return entry, -1, -1.0, f"{_VANISHED} while indexing"
    return path, st.st_size, st.st_mtime, None


def _duplicate_reason(obs_id: str, path: Path, others: list[Path]) -> str:
    """Why a file sharing its OBSID with ``others`` is held back, naming them."""
    names = ", ".join(o.name if o.parent == path.parent else str(o) for o in sorted(others))
    return (f"{_DUPLICATE} {obs_id}: also in {names}; none of them is used until only one "
            "file has this OBSID")


def _insert_raw(conn: sqlite3.Connection, path: Path, size: int, mtime: float,
                info: ObservationInfo) -> None:
    t = info.datetime_begin
    conn.execute("DELETE FROM rejected WHERE path = ?", (str(path),))
    conn.execute(
        "INSERT OR REPLACE INTO raws VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (str(path), size, mtime, info.obs_id, info.instrument, info.day_obs,
         info.seq_num, info.image_type, info.target_name, info.physical_filter,
         info.filter, info.disperser, int(info.is_dispersed), info.exposure_time,
         info.airmass, None if t is None else float(t.mjd),
         None if t is None else t.isot, json.dumps(info.to_dict())))


class NightIndex:
    """SQLite index of a night's raw files and of the tasks run on them.

    Parameters
    ----------
    repo : path
        Repository directory; the database is ``REPO/night/index.sqlite3``.
    create : bool
        Create the index if there is none (and mark an index written before the mark
        existed); False opens an existing index for reading and changes nothing.

    Raises
    ------
    BadInputError
        The index is not a regular file, not an atmospec night index, damaged, or (with
        ``create=False``) absent; the repository cannot be written (with ``create``).
    """

    def __init__(self, repo: str | Path, *, create: bool = True) -> None:
        self.repo = Path(repo)
        self.db_path = self.repo / INDEX_FILE
        problem = unusable_file(self.db_path)
        if problem is not None:
            raise BadInputError(self.db_path, f"unusable night index: {problem}")
        if not create:
            if not self.db_path.exists():
                raise BadInputError(self.db_path, "no night index")
            self._check_identity(adopt=False)
            return
        try:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise (not_writable(self.repo, exc) or BadInputError(
                self.db_path.parent, f"cannot create ({exc.strerror})")) from None
        self._check_identity(adopt=True)
        with self._connect() as conn:
            conn.executescript(_SCHEMA)
            # Indexes written before duplicate OBSIDs were held back lack the column.
            if "obs_id" not in {r["name"] for r in conn.execute("PRAGMA table_info(rejected)")}:
                conn.execute("ALTER TABLE rejected ADD COLUMN obs_id TEXT")

    def _check_identity(self, *, adopt: bool) -> None:
        """Refuse a database that is not a night index, before anything changes it.

        A database marked with `APPLICATION_ID` is ours. An unmarked one holding no table
        but atmospec's is a new file or an index written before the mark existed: it is
        marked when ``adopt`` (a reader, the report, leaves it as it is).

        Raises
        ------
        BadInputError
            Another application's mark, or tables atmospec does not write.
        """
        # No WAL switch here: it would rewrite the header of someone else's database.
        with self._connect(wal=False) as conn:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            if app_id == APPLICATION_ID:
                return
            foreign = sorted({r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%'")} - _TABLES)
            if app_id != 0 or foreign:
                what = (f"application id {app_id:#010x}" if app_id != 0
                        else f"tables {', '.join(foreign[:5])}")
                raise BadInputError(self.db_path, f"not an atmospec night index ({what})")
            if adopt:
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")

    def __repr__(self) -> str:
        return f"NightIndex({str(self.repo)!r})"

    @contextmanager
    def _connect(self, *, wal: bool = True) -> Iterator[sqlite3.Connection]:
        """A connection in one transaction; SQLite errors become one-line `BadInputError`.

        ``wal`` switches the database to write-ahead logging (left out only while its
        identity is unchecked).
        """
        try:
            conn = sqlite3.connect(self.db_path, timeout=_BUSY_TIMEOUT_S)
        except sqlite3.Error as exc:
            raise BadInputError(self.db_path, f"cannot open the night index ({exc})") from None
        conn.row_factory = sqlite3.Row
        try:
            if wal:  # readers (the report, a second terminal) never block the runner
                conn.execute("PRAGMA journal_mode=WAL")
            with conn:  # one transaction: committed on success, rolled back on error
                yield conn
        except sqlite3.DatabaseError as exc:
            raise self._database_error(exc) from None
        finally:
            conn.close()

    def _database_error(self, exc: sqlite3.DatabaseError) -> BadInputError:
        """The one-line error for a failed database operation: a repository that cannot be
        written is not a damaged index."""
        name = getattr(exc, "sqlite_errorname", "")
        readonly = name.startswith("SQLITE_READONLY") or (
            name.startswith("SQLITE_CANTOPEN") and not os.access(self.db_path.parent, os.W_OK))
        if readonly:
            return BadInputError(self.db_path, f"night index not writable ({exc}); atmospec "
                                               "night needs to write its repository")
        return BadInputError(self.db_path, f"damaged night index ({exc})")

    # -- raws ---------------------------------------------------------------------------

    def index_directory(self, raw_dir: str | Path, *, progress: bool = True,
                        patterns: tuple[str, ...] = RAW_PATTERNS,
                        defer: Defer | None = None) -> dict[str, int]:
        """Index every raw file of a directory and its sub-folders; unchanged files are
        skipped.

        Real data is laid out in folders: a BOT acquisition has one folder per exposure
        (``flat_…_flat0_007/MC_C_…_R22_S11.fits``), a Butler-style tree one per day. The walk
        (`raw_files`) does not follow links to folders, skips hidden folders and the
        repository itself, and goes `MAX_DEPTH` levels deep at most.

        Parameters
        ----------
        raw_dir : path
            The night's directory.
        progress : bool
            Show a progress bar on a terminal.
        patterns : tuple of str
            Which files are raws (`raw_files`).
        defer : callable, optional
            ``defer(path, reason) -> bool``, asked about each file that is not a usable raw:
            True leaves it unrecorded (``atmospec watch``: a file that may still be being
            written), counted ``deferred``.

        Returns
        -------
        dict
            Counts: ``added``, ``unchanged``, ``rejected`` (and ``deferred`` with
            ``defer``).

        Raises
        ------
        BadInputError
            If ``raw_dir`` is not a directory.
        """
        raw_dir = Path(raw_dir)
        if not raw_dir.is_dir():
            raise BadInputError(raw_dir, "not a directory")
        entries = raw_files(raw_dir, skip=(self.repo,), patterns=patterns)
        vanished = self._forget_vanished()
        states = self._index_entries(entries, progress=progress, defer=defer)
        counts = {"added": 0, "unchanged": 0, "rejected": vanished}
        if defer is not None:
            counts["deferred"] = 0
        for state in states.values():
            counts[state] += 1
        log.info("indexed %s: %d new, %d unchanged, %d rejected", raw_dir, counts["added"],
                 counts["unchanged"], counts["rejected"])
        return counts

    def index_files(self, paths: Iterable[str | Path], *,
                    defer: Defer | None = None) -> dict[Path, str]:
        """Index the given files, as `index_directory` indexes those it finds.

        For ``atmospec watch``, which learns of each new file from the file system and
        indexes it alone, without walking the night's directory again.

        Parameters
        ----------
        paths : iterable of path
            Files (as `raw_files` lists them: links are resolved, special files refused).
        defer : callable, optional
            ``defer(path, reason) -> bool``: True leaves a file that is not a usable raw
            unrecorded (`index_directory`).

        Returns
        -------
        dict
            The state of each file, by the path given: ``added``, ``unchanged``,
            ``rejected`` (refused, or held back as a duplicate OBSID) or ``deferred``.
        """
        return self._index_entries([Path(p) for p in paths], progress=False, defer=defer)

    def _index_entries(self, entries: list[Path], *, progress: bool,
                       defer: Defer | None) -> dict[Path, str]:
        """`index_files`: examine, check and record each entry; the state of each."""
        from tqdm import tqdm

        known = self._known()
        seen: dict[Path, Path] = {}  # resolved path -> the entry it was found as
        states: dict[Path, str] = {}
        candidates: dict[Path, tuple[int, float, ObservationInfo]] = {}
        for entry in tqdm(entries, desc="indexing", unit="file",
                          disable=None if progress else True):
            path, size, mtime, reason = _examine(entry)
            if path in seen:  # a link to a file of the directory
                continue
            seen[path] = entry
            prev = known.get(str(path))
            if reason is None:
                if (prev is not None and prev[:2] == (size, mtime)
                        and not (prev[2] or "").startswith(_STATE_REASONS)):
                    states[entry] = "unchanged"
                    continue
                try:
                    candidates[path] = (size, mtime, _check(path))
                    continue
                except BadInputError as exc:
                    reason = exc.problem
                except OSError as exc:  # gone or unreadable since it was examined
                    reason = _os_reason(exc, "while indexing")
            if prev == (size, mtime, reason):
                states[entry] = "unchanged"
            elif defer is not None and defer(entry, reason):
                states[entry] = "deferred"
            else:
                self._reject(path, size, mtime, reason)
                states[entry] = "rejected"
        _, held_back = self._admit(candidates)
        with self._connect() as conn:
            indexed = {row["path"] for row in conn.execute("SELECT path FROM raws")}
        for path in candidates:
            states[seen[path]] = "added" if str(path) in indexed else "rejected"
        # An indexed raw held back now that another file has its OBSID: no longer usable.
        for path in held_back:
            entry = seen.get(path, path)
            if states.get(entry, "unchanged") == "unchanged":
                states[entry] = "rejected"
        return states

    def withdraw(self, path: Path, error: OSError) -> str:
        """Record an indexed raw that can no longer be read as skipped, and return why.

        For a raw that vanishes (or becomes unreadable) after indexing, e.g. while the night
        is being planned; the next indexing looks at it again.
        """
        with self._connect() as conn:
            row = conn.execute("SELECT size, mtime, obs_id FROM raws WHERE path = ?",
                               (str(path),)).fetchone()
        size, mtime = (row["size"], row["mtime"]) if row else (-1, -1.0)
        reason = _os_reason(error, _after_indexing(row["obs_id"] if row else None))
        self._reject(path, size, mtime, reason)
        return reason

    def _known(self) -> dict[str, tuple[int, float, str | None]]:
        """(size, mtime, reason of a skip or None) of every recorded file, by path."""
        with self._connect() as conn:
            return {row["path"]: (row["size"], row["mtime"], row["reason"]) for row in
                    conn.execute("SELECT path, size, mtime, NULL AS reason FROM raws UNION ALL "
                                 "SELECT path, size, mtime, reason FROM rejected")}

    def _forget_vanished(self) -> int:
        """Records of files that are gone: an indexed raw becomes a skip saying so (counted),
        other skips are dropped (there is nothing left to skip)."""
        n = 0
        with self._connect() as conn:
            for row in conn.execute("SELECT path, obs_id FROM raws").fetchall():
                if not os.path.lexists(row["path"]):
                    reason = f"{_VANISHED} {_after_indexing(row['obs_id'])}"
                    log.warning("skipped %s: %s", row["path"], reason)
                    conn.execute("INSERT OR REPLACE INTO rejected (path, size, mtime, reason) "
                                 "SELECT path, size, mtime, ? FROM raws WHERE path = ?",
                                 (reason, row["path"]))
                    conn.execute("DELETE FROM raws WHERE path = ?", (row["path"],))
                    n += 1
            for row in conn.execute("SELECT path, reason FROM rejected").fetchall():
                if not row["reason"].startswith(_GONE_RAW) and not os.path.lexists(row["path"]):
                    conn.execute("DELETE FROM rejected WHERE path = ?", (row["path"],))
        return n

    def _admit(self, candidates: dict[Path, tuple[int, float, ObservationInfo]]
               ) -> tuple[int, set[Path]]:
        """Index the checked raws, except those sharing an OBSID with another file (indexed,
        held back or checked now): all of those are held back, each reason naming the
        others, so that neither the wrong frame nor a frame chosen by its name is reduced.
        Returns the number of raws added and the indexed raws held back."""
        by_obs_id: dict[str, list[Path]] = {}
        for path, (_, _, info) in candidates.items():
            by_obs_id.setdefault(info.obs_id, []).append(path)
        added = 0
        withdrawn: set[Path] = set()
        with self._connect() as conn:
            for path in candidates:  # their records are replaced below
                conn.execute("DELETE FROM raws WHERE path = ?", (str(path),))
            for obs_id, paths in by_obs_id.items():
                members = {p: candidates[p][:2] for p in paths}
                for row in conn.execute(
                        "SELECT path, size, mtime FROM raws WHERE obs_id = ? UNION ALL "
                        "SELECT path, size, mtime FROM rejected WHERE obs_id = ?",
                        (obs_id, obs_id)).fetchall():
                    if Path(row["path"]) not in candidates:  # else its fresh header decides
                        members[Path(row["path"])] = (row["size"], row["mtime"])
                if len(members) == 1:
                    _insert_raw(conn, paths[0], *candidates[paths[0]])
                    added += 1
                    continue
                indexed = {Path(r["path"]) for r in conn.execute(
                    "SELECT path FROM raws WHERE obs_id = ?", (obs_id,))}
                withdrawn |= indexed
                for path, (size, mtime) in members.items():
                    reason = _duplicate_reason(obs_id, path, [m for m in members if m != path])
                    log.warning("skipped %s: %s", path, reason)
                    conn.execute("DELETE FROM raws WHERE path = ?", (str(path),))
                    conn.execute("INSERT OR REPLACE INTO rejected (path, size, mtime, reason, "
                                 "obs_id) VALUES (?,?,?,?,?)",
                                 (str(path), size, mtime, reason, obs_id))
        return added, withdrawn

    def _add(self, path: Path, size: int, mtime: float, info: ObservationInfo) -> None:
        """Index one checked raw (held back if another file has its OBSID)."""
        self._admit({Path(path): (size, mtime, info)})

    def _reject(self, path: Path, size: int, mtime: float, reason: str) -> None:
        log.warning("skipped %s: %s", path, reason)
        with self._connect() as conn:
            conn.execute("DELETE FROM raws WHERE path = ?", (str(path),))
            conn.execute("INSERT OR REPLACE INTO rejected (path, size, mtime, reason) "
                         "VALUES (?,?,?,?)", (str(path), size, mtime, reason))

    def raws(self, *, image_type: str | Iterable[str] | None = None,
             filter: str | None = None, disperser: str | None = None,
             dispersed: bool | None = None, start: Time | str | None = None,
             end: Time | str | None = None,
             paths: Iterable[str | Path] | None = None) -> list[RawRecord]:
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
        paths : iterable of path, optional
            Only these files (absolute, resolved: as `index_files` records them).

        Returns
        -------
        list of RawRecord
        """
        where, args = [], []
        if paths is not None:
            wanted = [str(p) for p in paths]
            where.append(f"path IN ({','.join('?' * len(wanted))})")
            args += wanted
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
        sql = "SELECT path, obs_id, info FROM raws"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._connect() as conn:
            rows = conn.execute(sql + " ORDER BY day_obs, seq_num", args).fetchall()
        return [self._raw_record(r) for r in rows]

    def _raw_record(self, row: sqlite3.Row) -> RawRecord:
        """A ``raws`` row decoded; a record that does not decode is a damaged index.

        Raises
        ------
        BadInputError
            The row's JSON record is not an `ObservationInfo`, naming the row's OBSID.
        """
        try:
            return RawRecord(Path(row["path"]), info_from_json(row["info"]))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # ValueError covers JSONDecodeError and a bad time; the others a record that is
            # JSON but not an ObservationInfo's.
            raise self._damaged_row("raws", row["obs_id"], "info",
                                    f"{type(exc).__name__}: {short_error(exc)}") from None

    def _damaged_row(self, table: str, obs_id: str, column: str, why: str) -> BadInputError:
        """The one-line error for a row whose JSON column does not decode: the index file,
        the row's OBSID and what is wrong."""
        return BadInputError(self.db_path, f"damaged night index: row {obs_id} of table "
                                           f"{table}, {column} unreadable ({why})")

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
        return [self._task_record(r) for r in rows]

    def _task_record(self, row: sqlite3.Row) -> TaskRecord:
        """A ``tasks`` row decoded; JSON that does not decode to an object is a damaged
        index.

        Raises
        ------
        BadInputError
            ``outputs`` or ``metrics`` is not a JSON object, naming the row's OBSID.
        """
        decoded = {}
        for column in ("outputs", "metrics"):
            try:
                decoded[column] = json.loads(row[column])
            except (ValueError, TypeError) as exc:  # ValueError: JSONDecodeError
                raise self._damaged_row("tasks", row["obs_id"], column,
                                        f"{type(exc).__name__}: {short_error(exc)}") from None
            if not isinstance(decoded[column], dict):  # the callers read it as a mapping
                raise self._damaged_row("tasks", row["obs_id"], column,
                                        f"a JSON {type(decoded[column]).__name__}, not an "
                                        "object")
        return TaskRecord(row["obs_id"], row["task"], row["status"], row["reason"],
                          row["config_hash"], row["started"], row["duration_s"],
                          row["attempts"], decoded["outputs"], decoded["metrics"])

    def task_map(self) -> dict[tuple[str, str], TaskRecord]:
        """Recorded outcomes keyed by ``(obs_id, task)``."""
        return {(t.obs_id, t.task): t for t in self.tasks()}
