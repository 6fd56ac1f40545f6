"""The registry's SQLite index: schema, transactions and records.

One table, ``products``, holds a row per stored product; ``schema_version`` and
``registry_info`` (the instrument) describe the file. Times are the fixed-width UTC strings
of `atmospec.calib.registry.times`, so intervals compare in SQL; validity is half-open,
``valid_from <= t < valid_to``, and a NULL ``valid_to`` never ends.

`RegistryIndex` opens (or creates) the file, upgrades an older schema in place and runs
transactions; the functions below are the statements the registry runs inside them.

Schema versions: 1, products of an instrument; 2, each product of one detector
(``products.detector``). A version-1 file is upgraded when opened (`RegistryIndex`): its
rows get the instrument's only detector (version-1 registries held LATISS products).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

from atmospec.calib.products.detector import instrument_detectors, only_detector
from atmospec.calib.registry.identify import KINDS
from atmospec.calib.registry.times import now_utc
from atmospec.errors import BadInputError
from atmospec.layout import calib_dir

__all__ = [
    "SCHEMA_VERSION",
    "CalibRecord",
    "RegistryIndex",
    "candidates",
    "find_duplicate",
    "insert_product",
    "uncertify_overlapping",
]

log = logging.getLogger(__name__)

#: Version of the SQLite schema written by this code. A schema change bumps it, adds a row
#: to ``schema_version`` and an upgrade step where `RegistryIndex` finds an older one
#: (`_UPGRADES`).
SCHEMA_VERSION = 2

#: Seconds a writer waits for another writer's transaction before giving up.
_BUSY_TIMEOUT_S = 60.0

#: The registry's time form (`atmospec.calib.registry.times.format_utc`): fixed width, so
#: that string order is time order, which the selection's SQL comparisons rely on.
_UTC_FORM = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}")

_SCHEMA = """
CREATE TABLE schema_version (
    version INTEGER NOT NULL PRIMARY KEY,
    applied_at TEXT NOT NULL
);
CREATE TABLE registry_info (
    key TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);
"""

#: The ``products`` table (``{table}``: its name, another while an upgrade rebuilds it).
_PRODUCTS_TABLE = """
CREATE TABLE {table} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    instrument TEXT NOT NULL,
    detector TEXT NOT NULL,
    physical_filter TEXT,
    disperser TEXT,
    valid_from TEXT NOT NULL,
    valid_to TEXT,
    calib_date TEXT NOT NULL,
    path TEXT NOT NULL UNIQUE,
    sha256 TEXT NOT NULL UNIQUE,
    registered_at TEXT NOT NULL,
    certified INTEGER NOT NULL DEFAULT 0,
    provenance TEXT NOT NULL,
    verification_passed INTEGER,
    verification_failures TEXT NOT NULL DEFAULT '[]',
    verification_path TEXT,
    source TEXT NOT NULL,
    CHECK (valid_to IS NULL OR valid_to > valid_from)
)
"""

_PRODUCTS_INDEX = ("CREATE INDEX products_by_configuration ON products "
                   "(kind, instrument, detector, physical_filter)")

#: The columns of a version-1 ``products`` row (all but ``detector``), copied by the upgrade.
_V1_COLUMNS = ("id", "kind", "instrument", "physical_filter", "disperser", "valid_from",
               "valid_to", "calib_date", "path", "sha256", "registered_at", "certified",
               "provenance", "verification_passed", "verification_failures",
               "verification_path", "source")


@dataclass(frozen=True)
class CalibRecord:
    """One registered calibration product, as stored in the index."""

    id: int
    """Registry identifier (never reused)."""
    kind: str
    """Product kind, one of `KINDS`."""
    instrument: str
    """Canonical instrument name, e.g. ``"LATISS"``."""
    detector: str
    """Detector the product is for (``"R22_S11"``; LATISS: ``"RXX_S00"``)."""
    physical_filter: str | None
    """``"<filter>~<disperser>"`` for flats, e.g. ``"SDSSr_65mm~empty"``; None otherwise."""
    disperser: str | None
    """Disperser of a flat (``"empty"`` for an imaging flat); None for other kinds."""
    valid_from: str
    """Start of validity, UTC ISO (inclusive)."""
    valid_to: str | None
    """End of validity, UTC ISO (exclusive); None: open-ended."""
    calib_date: str
    """Product date (``CALIBDATE``, else the registered ``valid_from``), UTC ISO."""
    path: str
    """Stored file, relative to the repository (POSIX separators)."""
    sha256: str
    """SHA-256 of the stored file, hex."""
    registered_at: str
    """When the product was registered, UTC ISO."""
    certified: bool
    """Whether this is the certified default of its kind and configuration."""
    provenance: str
    """JSON object: the product's provenance header keys, ``inputs`` and ``config``."""
    verification_passed: bool | None
    """Verdict of the ``.verify.json`` report registered with it; None: no report."""
    verification_failures: tuple[str, ...]
    """Failed tests of that report, as ``amp:test`` names."""
    verification_path: str | None
    """Stored report, relative to the repository; None when there is none."""
    source: str
    """Path the product was registered from (for the record only; it may since be gone)."""
    absolute_path: Path
    """Absolute path of the stored file."""

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable form (provenance parsed, paths as strings).

        Returns
        -------
        dict
            One entry per field.
        """
        out = {field.name: getattr(self, field.name) for field in fields(self)}
        out["provenance"] = json.loads(self.provenance)
        out["verification_failures"] = list(self.verification_failures)
        out["absolute_path"] = str(self.absolute_path)
        return out


class RegistryIndex:
    """The index file of a registry: its schema, transactions and records.

    Parameters
    ----------
    db_path : pathlib.Path
        The SQLite file.
    repo : pathlib.Path
        Repository directory (stored paths are relative to it).
    """

    def __init__(self, db_path: Path, repo: Path) -> None:
        self.db_path = db_path
        self.repo = repo
        self._detectors: frozenset[str] | None = None
        self._instrument: str | None = None

    @contextlib.contextmanager
    def transaction(self, write: bool) -> Iterator[sqlite3.Connection]:
        """A connection inside one transaction: committed on success, rolled back on error.

        A write transaction starts with ``BEGIN IMMEDIATE`` so that concurrent writers queue
        for the lock at the start instead of failing halfway.

        Raises
        ------
        BadInputError
            If the file cannot be opened or is not a usable database.
        """
        try:
            conn = sqlite3.connect(self.db_path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise BadInputError(self.db_path, f"cannot open the registry ({exc})") from None
        conn.row_factory = sqlite3.Row
        try:
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.IntegrityError:
            raise  # a constraint the caller checks for; not a damaged file
        except sqlite3.DatabaseError as exc:
            raise BadInputError(self.db_path, f"not a usable calibration registry "
                                              f"({exc})") from None
        finally:
            conn.close()

    def stored_instrument(self) -> str | None:
        """The instrument the file records after checking its schema (and upgrading an
        older one in place); None when the file holds no registry yet (empty, or a database
        without tables).

        Raises
        ------
        BadInputError
            Not a registry (a database with other tables); corrupt; a newer schema; an
            older one that cannot be upgraded (`_upgrade`).
        """
        with self.transaction(write=False) as conn:
            found = self._inspect(conn)
        if found is not None and found[1] < SCHEMA_VERSION:
            # Under the write lock, checked again: another process may have upgraded it.
            with self.transaction(write=True) as conn:
                found = self._inspect(conn)
                if found is not None:
                    self._upgrade(conn, *found)
        return self._use(None if found is None else found[0])

    def create(self, instrument: str) -> str:
        """Write the schema into a file that holds no registry (unless another process
        just did); return the instrument the file records."""
        try:
            wal = sqlite3.connect(self.db_path, timeout=_BUSY_TIMEOUT_S)
            # WAL lets readers (ISR runs) go on while a product is registered; the mode
            # is stored in the file, so setting it once at creation is enough.
            wal.execute("PRAGMA journal_mode=WAL")
            wal.close()
        except sqlite3.DatabaseError as exc:
            raise BadInputError(self.db_path, f"not a usable calibration registry "
                                              f"({exc})") from None
        with self.transaction(write=True) as conn:
            # Another process may have created it since the caller's check.
            found = self._inspect(conn)
            if found is None:
                # Statement by statement: executescript would commit mid-transaction.
                for statement in (*_SCHEMA.split(";"), _PRODUCTS_TABLE.format(table="products"),
                                  _PRODUCTS_INDEX):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO schema_version VALUES (?, ?)",
                             (SCHEMA_VERSION, now_utc()))
                conn.execute("INSERT INTO registry_info VALUES ('instrument', ?)",
                             (instrument,))
                log.info("created calibration registry %s for %s", self.db_path, instrument)
                found = (instrument, SCHEMA_VERSION)
            else:
                self._upgrade(conn, *found)
        return self._use(found[0])

    def _inspect(self, conn: sqlite3.Connection) -> tuple[str, int] | None:
        """The stored instrument and schema version after checking the schema; None for an
        empty database."""
        tables = {row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "schema_version" not in tables:
            if tables - {"sqlite_sequence"}:
                raise BadInputError(self.db_path, "not a calibration registry (unexpected "
                                                  f"tables: {', '.join(sorted(tables))})")
            return None
        try:
            version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
            row = conn.execute(
                "SELECT value FROM registry_info WHERE key = 'instrument'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise BadInputError(self.db_path, f"corrupt calibration registry ({exc})") from None
        if not isinstance(version, int) or row is None or "products" not in tables:
            raise BadInputError(self.db_path, "corrupt calibration registry (no schema version, "
                                              "instrument or products table)")
        if version > SCHEMA_VERSION:
            raise BadInputError(self.db_path, f"registry schema version {version} is newer than "
                                              f"this atmospec supports ({SCHEMA_VERSION}); "
                                              "upgrade atmospec")
        if version not in _UPGRADES and version != SCHEMA_VERSION:
            raise BadInputError(self.db_path, f"registry schema version {version} needs an "
                                              "upgrade this atmospec does not provide")
        return str(row[0]), version

    def _upgrade(self, conn: sqlite3.Connection, instrument: str, version: int) -> None:
        """Bring a schema of ``version`` to `SCHEMA_VERSION`, step by step, inside the
        caller's write transaction: an upgrade that fails leaves the file as it was."""
        while version < SCHEMA_VERSION:
            _UPGRADES[version](conn, instrument, self.db_path)
            version += 1
            conn.execute("INSERT INTO schema_version VALUES (?, ?)", (version, now_utc()))
            log.info("upgraded calibration registry %s to schema version %d", self.db_path,
                     version)

    def _use(self, instrument: str | None) -> str | None:
        """Remember the registry's instrument (its detectors decide the stored layout)."""
        self._instrument = instrument
        self._detectors = None
        return instrument

    @property
    def detectors(self) -> frozenset[str]:
        """Detectors of the registry's instrument (empty for an instrument without a camera
        description: no product of it can be registered)."""
        if self._detectors is None:
            try:
                self._detectors = frozenset(instrument_detectors(self._instrument or ""))
            except BadInputError:
                self._detectors = frozenset()
        return self._detectors

    def folder(self, kind: str, detector: str, repo: Path | None = None) -> Path:
        """Where products of ``kind`` for ``detector`` are stored (`calib_dir`): a folder
        per detector for an instrument of several, the kind's folder for one of one.

        Parameters
        ----------
        kind : str
            One of `KINDS`.
        detector : str
            The product's detector.
        repo : pathlib.Path, optional
            Repository the folder is in; default: this registry's.
        """
        base = self.repo if repo is None else repo
        return calib_dir(base, kind, detector if len(self.detectors) > 1 else None)

    def check_rows(self, conn: sqlite3.Connection) -> None:
        """Refuse the registry when any ``products`` row is corrupt (`check_row`).

        Every row, not only those a query matches: a row whose kind, detector or time was
        damaged no longer matches any query, and the selection would silently fall back to
        another product, or to nominal values.
        """
        for row in conn.execute("SELECT id, kind, detector, valid_from, valid_to, calib_date, "
                                "path FROM products"):
            self.check_row(row)

    def check_row(self, row: Mapping[str, Any]) -> None:
        """Refuse a ``products`` row whose fields are not what `insert_product` writes.

        Raises
        ------
        BadInputError
            ``corrupt registry: product row id N: <problem>``, naming the index file.
        """
        problem = self._row_problem(row)
        if problem is not None:
            raise BadInputError(self.db_path, f"corrupt registry: product row id {row['id']}: "
                                              f"{problem}")

    def _row_problem(self, row: Mapping[str, Any]) -> str | None:
        """What is wrong with a row's kind, detector, times and path; None when sound."""
        kind = row["kind"]
        if kind not in KINDS:
            return f"unknown kind {kind!r}"
        detector = row["detector"]
        if detector not in self.detectors:
            return f"detector {detector!r} is not one of {self._instrument}'s"
        for key in ("valid_from", "valid_to", "calib_date"):
            value = row[key]
            if not (value is None and key == "valid_to") and \
                    not (isinstance(value, str) and _UTC_FORM.fullmatch(value)):
                return f"{key} {value!r} is not a registry time (YYYY-MM-DDTHH:MM:SS.sss)"
        # Where `CalibrationRegistry.register` stores a product: a plain name in its kind's
        # (and detector's) folder. Anything else (``..``, an absolute path) could make ISR
        # read any file.
        path = row["path"]
        stored = PurePosixPath(path) if isinstance(path, str) else None
        folder = PurePosixPath(self.folder(kind, detector, Path()).as_posix())
        if stored is None or stored.parent != folder or stored.name.startswith("."):
            return f"path {path!r} is not in the repository's {folder} folder"
        return None

    def record(self, row: sqlite3.Row) -> CalibRecord:
        """The record of a ``products`` row (checked by `check_row`)."""
        self.check_row(row)
        passed = row["verification_passed"]
        return CalibRecord(
            id=int(row["id"]),
            kind=row["kind"],
            instrument=row["instrument"],
            detector=row["detector"],
            physical_filter=row["physical_filter"],
            disperser=row["disperser"],
            valid_from=row["valid_from"],
            valid_to=row["valid_to"],
            calib_date=row["calib_date"],
            path=row["path"],
            sha256=row["sha256"],
            registered_at=row["registered_at"],
            certified=bool(row["certified"]),
            provenance=row["provenance"],
            verification_passed=None if passed is None else bool(passed),
            verification_failures=tuple(json.loads(row["verification_failures"])),
            verification_path=row["verification_path"],
            source=row["source"],
            absolute_path=self.repo / row["path"],
        )

    def row(self, conn: sqlite3.Connection, product_id: int) -> sqlite3.Row:
        """The ``products`` row of one id.

        Raises
        ------
        BadInputError
            If there is no product with that id.
        """
        row = conn.execute("SELECT * FROM products WHERE id = ?", (product_id,)).fetchone()
        if row is None:
            raise BadInputError(self.db_path, f"no calibration product with id {product_id}")
        return row


def _upgrade_1_to_2(conn: sqlite3.Connection, instrument: str, db_path: Path) -> None:
    """Version 2 gives every product a detector: the rows of a version-1 registry get the
    instrument's only detector (they name none; version-1 registries were LATISS's).

    SQLite cannot add a ``NOT NULL`` column without a default, so the table is rebuilt
    (copied into the new form, the old one dropped, the new renamed), keeping the ids and
    the AUTOINCREMENT counter: an id stays never reused.

    Raises
    ------
    BadInputError
        The registry holds products and its instrument has several detectors (or no camera
        description): which detector each is for cannot be known.
    """
    count = conn.execute("SELECT COUNT(*) FROM products").fetchone()[0]
    detector = ""
    if count:
        try:
            detector = only_detector(instrument) or ""
        except BadInputError as exc:
            raise BadInputError(db_path, f"cannot upgrade registry schema version 1: "
                                         f"{exc.problem}") from None
        if not detector:
            raise BadInputError(db_path, f"cannot upgrade registry schema version 1: its "
                                         f"{count} products name no detector and {instrument} "
                                         "has several")
    seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'products'").fetchone()
    columns = ", ".join(_V1_COLUMNS)
    conn.execute(_PRODUCTS_TABLE.format(table="products_v2"))
    conn.execute(f"INSERT INTO products_v2 ({columns}, detector) "
                 f"SELECT {columns}, ? FROM products", (detector,))
    conn.execute("DROP TABLE products")  # and its index
    conn.execute("ALTER TABLE products_v2 RENAME TO products")
    conn.execute(_PRODUCTS_INDEX)
    if seq is not None:
        # The old counter, which may be above every id left (products removed since).
        conn.execute("DELETE FROM sqlite_sequence WHERE name IN ('products', 'products_v2')")
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('products', ?)",
                     (seq[0],))
    log.info("registry %s: %d products given detector %s", db_path, count, detector or "-")


#: Upgrade steps: version → the function bringing a schema of that version to the next.
_UPGRADES: Mapping[int, Callable[[sqlite3.Connection, str, Path], None]] = MappingProxyType(
    {1: _upgrade_1_to_2})


def find_duplicate(conn: sqlite3.Connection, sha256: str) -> sqlite3.Row | None:
    """The product already stored with this content (``id``, ``kind``, ``detector``,
    ``path``), if any.

    By content over all detectors, as the ``sha256`` column is unique: a product names its
    detector in its own bytes, so the same bytes are the same detector's product.
    """
    return conn.execute("SELECT id, kind, detector, path FROM products WHERE sha256 = ?",
                        (sha256,)).fetchone()


def insert_product(conn: sqlite3.Connection, values: Mapping[str, Any]) -> int:
    """Insert a ``products`` row (column → value, ``id`` excluded); return its id."""
    columns = ", ".join(values)
    marks = ", ".join(f":{name}" for name in values)
    cursor = conn.execute(f"INSERT INTO products ({columns}) VALUES ({marks})", values)
    return int(cursor.lastrowid)


def candidates(conn: sqlite3.Connection, kind: str, instrument: str, detector: str,
               physical_filter: str | None, stamp: str) -> list[sqlite3.Row]:
    """Rows of one kind, instrument, detector and configuration whose validity contains
    ``stamp``."""
    query = ("SELECT * FROM products WHERE kind = ? AND instrument = ? AND detector = ? "
             "AND physical_filter IS ? AND valid_from <= ? "
             "AND (valid_to IS NULL OR valid_to > ?)")
    return conn.execute(query, (kind, instrument, detector, physical_filter, stamp,
                                stamp)).fetchall()


def uncertify_overlapping(conn: sqlite3.Connection, row: Mapping[str, Any]) -> list[int]:
    """Certify ``row``'s product and uncertify those of its kind, detector and configuration
    whose validity overlaps it; return the ids uncertified.

    Per detector: the bias of R22_S11 and that of R22_S12 are each their detector's
    default. Two half-open intervals overlap when each starts before the other ends.
    """
    query = (
        "SELECT id FROM products WHERE certified = 1 AND id != ? AND kind = ? "
        "AND instrument = ? AND detector = ? AND physical_filter IS ? "
        "AND (? IS NULL OR valid_from < ?) AND (valid_to IS NULL OR valid_to > ?)"
    )
    ids = [r[0] for r in conn.execute(query, (
        row["id"], row["kind"], row["instrument"], row["detector"], row["physical_filter"],
        row["valid_to"], row["valid_to"], row["valid_from"]))]
    for other in ids:
        conn.execute("UPDATE products SET certified = 0 WHERE id = ?", (other,))
    conn.execute("UPDATE products SET certified = 1 WHERE id = ?", (row["id"],))
    return ids
