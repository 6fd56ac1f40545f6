"""A calibration registry: products stored in a repository and chosen per exposure.

Layout of a repository directory ``REPO``::

    REPO/calib/registry.sqlite3          index (SQLite, WAL mode)
    REPO/calib/<kind>/<stem>.<sha12><ext> the stored products (copies or hard links)
    REPO/calib/<kind>/<stem>.<sha12>.verify.json   their verification reports, if any

`CalibrationRegistry.register` reads what a product is from its own metadata (``OBSTYPE``,
``INSTRUME``, ``FILTER``, ``CALIBDATE``), stores it under a unique name and indexes it with
a validity interval. `CalibrationRegistry.select` picks, for one exposure, the product of a
kind that matches the exposure's instrument and filter configuration and whose validity
contains the exposure's start time; `CalibrationRegistry.select_all` does that for every
kind and returns the `CalibrationFiles` ISR takes.

Safety: a product is first written under a hidden temporary name, renamed to its final
name, and only then indexed, all in one write transaction; so the index never names a
file that is not (yet) there. Readers never block (WAL), writers are serialised.

Times are stored as fixed-width UTC ISO strings (``YYYY-MM-DDTHH:MM:SS.sss``, no zone),
so that string order is time order and intervals can be compared in SQL. Validity
intervals are half-open, ``valid_from <= t < valid_to``; a NULL ``valid_to`` never ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import sqlite3
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from astropy.io import fits
from astropy.table import Table
from astropy.time import Time
from erfa import ErfaWarning

from atmospec.calib.isr_inputs import CalibrationFiles
from atmospec.calib.verification import verification_name
from atmospec.camera.translator import TRANSLATORS, HeaderTranslator, ObservationInfo
from atmospec.errors import BadInputError
from atmospec.layout import REGISTRY_FILE, calib_dir

__all__ = [
    "KINDS",
    "REGISTRY_FILE",
    "SCHEMA_VERSION",
    "CalibRecord",
    "CalibrationRegistry",
    "exposure_time_utc",
    "to_utc_iso",
]

log = logging.getLogger(__name__)

#: Product kinds the registry stores: the fields of `CalibrationFiles`, in ISR order.
KINDS: tuple[str, ...] = ("bias", "dark", "flat", "defects", "ptc", "linearizer", "crosstalk")

#: Kinds whose choice depends on the exposure's filter and disperser.
FILTER_KINDS: frozenset[str] = frozenset({"flat"})

#: Kinds stored as `Exposure` files (FITS with an IMAGE extension).
_IMAGE_KINDS = frozenset({"bias", "dark", "flat"})

#: Other ``OBSTYPE`` spellings of a kind (Rubin's linearizer files say ``LINEARITY``).
_KIND_ALIASES: Mapping[str, str] = MappingProxyType({"linearity": "linearizer"})

#: Version of the SQLite schema written by this code. A schema change bumps it, adds a row
#: to ``schema_version`` and an upgrade step where `CalibrationRegistry` finds an older one.
SCHEMA_VERSION = 1

#: Index file, relative to the repository directory.

#: Seconds a writer waits for another writer's transaction before giving up.
_BUSY_TIMEOUT_S = 60.0

#: Header keys copied into the provenance record when present (atmospec's own, then
#: those of Rubin's calibration products).
_PROVENANCE_KEYS = ("ATMVERS", "ATMSTAGE", "ATMDATE", "CALIBCLS", "CALIB_ID",
                    "CALIB_CREATION_DATE", "CALIB_CREATION_TIME")

#: Numbered input-file keys: atmospec's ``ATMIN<i>`` and Rubin's ``CALIB_INPUT_<i>``.
_INPUT_KEY = re.compile(r"^(?:ATMIN|.*INPUT[_ ]?)(\d+)$")

#: Prefix of the HISTORY cards holding the producing configuration (`provenance_cards`).
_CONFIG_HISTORY = "atmospec config: "

_SCHEMA = """
CREATE TABLE schema_version (
    version INTEGER NOT NULL PRIMARY KEY,
    applied_at TEXT NOT NULL
);
CREATE TABLE registry_info (
    key TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE products (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    instrument TEXT NOT NULL,
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
);
CREATE INDEX products_by_configuration ON products (kind, instrument, physical_filter);
"""


@dataclass(frozen=True)
class CalibRecord:
    """One registered calibration product, as stored in the index."""

    id: int
    """Registry identifier (never reused)."""
    kind: str
    """Product kind, one of `KINDS`."""
    instrument: str
    """Canonical instrument name, e.g. ``"LATISS"``."""
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


@dataclass(frozen=True)
class _Identity:
    """What a product file says it is."""

    kind: str
    """Product kind, one of `KINDS`."""
    instrument: str
    """Canonical instrument name."""
    physical_filter: str | None
    """Normalised ``filter~disperser`` for flats, else None."""
    disperser: str | None
    """Disperser for flats, else None."""
    calib_date: str | None
    """``CALIBDATE`` as UTC ISO, None when absent."""
    provenance: dict[str, Any]
    """Provenance keys, input list and configuration found in the metadata."""


# --------------------------------------------------------------------------- times


def to_utc_iso(value: str | date | datetime | Time) -> str:
    """Normalise a time to the registry's UTC ISO form ``YYYY-MM-DDTHH:MM:SS.sss``.

    Parameters
    ----------
    value : str, datetime.date, datetime.datetime or astropy.time.Time
        An ISO 8601 string (``2024-06-24``, ``20240624``, ``2024-06-24T03:00:00Z``, ...; no
        zone means UTC), a date (its midnight UTC), a datetime (naive means UTC) or a
        `~astropy.time.Time` in any scale (converted to UTC).

    Returns
    -------
    str
        Fixed-width UTC string; string order is time order.

    Raises
    ------
    BadInputError
        If a string is not an ISO date.
    """
    return _format(_to_datetime(value))


def exposure_time_utc(info: ObservationInfo) -> datetime:
    """The time at which an exposure's products must be valid, as a naive UTC datetime.

    Parameters
    ----------
    info : ObservationInfo
        The exposure.

    Returns
    -------
    datetime.datetime
        ``datetime_begin`` converted to UTC; without it, the middle of the observing night
        ``day_obs``: Rubin's day_obs is the date in UTC-12h, so the night runs from day_obs
        12:00 UTC to the next day 12:00 UTC and its middle is the next day 00:00 UTC.
    """
    if info.datetime_begin is not None:
        return _to_datetime(info.datetime_begin)
    night = datetime.strptime(f"{info.day_obs:08d}", "%Y%m%d")
    return night + timedelta(days=1)


def _to_datetime(value: str | date | datetime | Time) -> datetime:
    """Convert to a naive UTC datetime (see `to_utc_iso`)."""
    if isinstance(value, Time):
        with warnings.catch_warnings():
            # ERFA warns of a "dubious year" past its leap-second table; a second of error
            # is irrelevant to calibration validity.
            warnings.simplefilter("ignore", ErfaWarning)
            text = value.utc.isot
        # A time inside a leap second (hh:mm:60) has no datetime; the second before will do.
        return _to_datetime(text.replace(":60.", ":59."))
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    try:
        return _to_datetime(datetime.fromisoformat(str(value).strip()))
    except ValueError:
        raise BadInputError(None, f"{value!r} is not an ISO date or time") from None


def _format(value: datetime) -> str:
    """Fixed-width UTC ISO string of a naive UTC datetime."""
    return value.isoformat(timespec="milliseconds")


def _now() -> str:
    return _format(datetime.now(UTC).replace(tzinfo=None))


# --------------------------------------------------------------------------- reading products


def _canonical_instrument(name: str) -> str:
    """Map an ``INSTRUME`` alias (e.g. the 2018 ``LSST_ATISS``) to the canonical name."""
    upper = name.strip().upper()
    for translator in TRANSLATORS:
        if upper in {alias.upper() for alias in translator.instrument_aliases}:
            return translator.name
    return upper


def _normalise_optic(name: str) -> str:
    """``empty`` for an empty slot (``""``, ``EMPTY``, ``empty_1``), else the name unchanged."""
    # The same rule the header translator applies to exposures, so the two compare equal.
    return "empty" if HeaderTranslator.empty_optic_pattern.match(name.strip()) else name.strip()


def _clean(value: Any) -> Any:
    """None for a missing, undefined or blank metadata value; strings stripped."""
    if value is None or isinstance(value, fits.card.Undefined):
        return None
    if isinstance(value, str):
        return value.strip() or None
    return value


def _read_metadata(path: Path) -> tuple[dict[str, Any], list[str] | None]:
    """Metadata of a product file, keys upper-cased, and its HDU names (None for ECSV).

    For FITS the primary header is used, or the first extension's when only that one has
    ``OBSTYPE`` (astropy writes a table's ``meta`` there).
    """
    with open(path, "rb") as stream:
        magic = stream.read(8)
    if magic.startswith((b"SIMPLE", b"\x1f\x8b")):
        try:
            with fits.open(path, memmap=False) as hdul:
                names = [hdu.name for hdu in hdul]
                header = hdul[0].header
                if "OBSTYPE" not in header and len(hdul) > 1 and "OBSTYPE" in hdul[1].header:
                    header = hdul[1].header
                meta: dict[str, Any] = {
                    key.upper(): value for key, value in header.items()
                    if key not in ("HISTORY", "COMMENT", "")
                }
                meta["HISTORY"] = [str(card) for card in header.get("HISTORY", [])]
        except Exception as exc:  # astropy raises many types for damaged files
            raise BadInputError(path, f"not a readable FITS file ({exc})") from None
        return meta, names
    if magic.startswith(b"# %ECSV"):
        try:
            table_meta = Table.read(path, format="ascii.ecsv").meta
        except Exception as exc:  # as above, for the ECSV reader
            raise BadInputError(path, f"not a readable ECSV table ({exc})") from None
        meta = {str(key).upper(): value for key, value in table_meta.items()}
        history = meta.get("HISTORY") or []
        meta["HISTORY"] = [history] if isinstance(history, str) else [str(h) for h in history]
        return meta, None
    raise BadInputError(path, "cannot identify the file: neither FITS nor ECSV")


def _provenance(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Provenance found in product metadata: known keys, ``inputs``, ``config``."""
    out: dict[str, Any] = {}
    for key in _PROVENANCE_KEYS:
        value = _clean(meta.get(key))
        if value is not None:
            out[key] = value
    inputs = sorted((int(match[1]), str(value)) for key, value in meta.items()
                    if (match := _INPUT_KEY.match(key)) and _clean(value) is not None)
    if inputs:
        out["inputs"] = [name for _, name in inputs]
    config = "".join(h[len(_CONFIG_HISTORY):] for h in meta.get("HISTORY", [])
                     if h.startswith(_CONFIG_HISTORY))
    if config:
        try:
            out["config"] = json.loads(config)
        except ValueError:
            # FITS may strip blanks at the end of a HISTORY chunk; keep the text then.
            out["config"] = config
    return out


def _identify(path: Path, registry_instrument: str) -> _Identity:
    """Read what a product is and check the registry can hold it.

    Raises
    ------
    BadInputError
        Unreadable or unidentifiable file, unknown kind, another instrument, a flat
        without ``FILTER``, an image product without an IMAGE extension, a bad CALIBDATE.
    """
    meta, hdu_names = _read_metadata(path)
    obstype = _clean(meta.get("OBSTYPE"))
    if obstype is None:
        raise BadInputError(path, "cannot identify the product: no OBSTYPE in its metadata")
    kind = str(obstype).lower()
    kind = _KIND_ALIASES.get(kind, kind)
    if kind not in KINDS:
        raise BadInputError(path, f"OBSTYPE {obstype!r} is not a calibration kind the registry "
                                  f"knows ({', '.join(KINDS)})")
    if kind in _IMAGE_KINDS and (hdu_names is None or "IMAGE" not in hdu_names):
        raise BadInputError(path, f"a {kind} must be an Exposure FITS file with an IMAGE "
                                  "extension")
    instrument_value = _clean(meta.get("INSTRUME"))
    if instrument_value is None:
        raise BadInputError(path, "cannot identify the product: no INSTRUME in its metadata")
    instrument = _canonical_instrument(str(instrument_value))
    if instrument != registry_instrument:
        raise BadInputError(path, f"product is for instrument {instrument_value}; this "
                                  f"registry is for {registry_instrument}")
    physical_filter = disperser = None
    if kind in FILTER_KINDS:
        filter_value = _clean(meta.get("FILTER"))
        if filter_value is None:
            raise BadInputError(path, f"a {kind} needs a FILTER (physical filter) key")
        band, tilde, grating = str(filter_value).partition("~")
        if not tilde:
            # A FILTER without "~" is a raw-style header (the product kept its inputs' keys):
            # the disperser is then in GRATING, as in raw LATISS headers; none means empty.
            grating = str(_clean(meta.get("GRATING")) or "")
        disperser = _normalise_optic(grating)
        physical_filter = f"{_normalise_optic(band)}~{disperser}"
    calib_date_value = _clean(meta.get("CALIBDATE"))
    calib_date = None
    if calib_date_value is not None:
        try:
            calib_date = to_utc_iso(str(calib_date_value))
        except BadInputError:
            raise BadInputError(path, f"CALIBDATE {calib_date_value!r} is not an ISO "
                                      "date") from None
    return _Identity(kind, instrument, physical_filter, disperser, calib_date,
                     _provenance(meta))


def _read_verification(path: Path) -> tuple[bool, tuple[str, ...]]:
    """Verdict and failed tests of a ``.verify.json`` report (`VerificationReport` form)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadInputError(path, f"unreadable verification report ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("pass"), bool):
        raise BadInputError(path, "verification report has no true/false 'pass'")
    failures = doc.get("failures")
    if failures is None:
        # Older or hand-written reports: collect the failed tests from the per-amp blocks.
        blocks = dict(doc.get("amps") or {})
        blocks["detector"] = doc.get("detector") or {}
        failures = [f"{where}:{name}" for where, block in blocks.items()
                    for name, test in (block.get("tests") or {}).items()
                    if not test.get("pass", True)]
    return doc["pass"], tuple(str(f) for f in failures)


# --------------------------------------------------------------------------- storing files


def _stage(source: Path, directory: Path, link: bool) -> tuple[Path, str]:
    """Put a copy (or hard link) of ``source`` under a hidden temporary name in ``directory``.

    Returns
    -------
    (Path, str)
        The temporary file and the SHA-256 (hex) of its content.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{source.name}.{secrets.token_hex(8)}.tmp"
    if link:
        try:
            os.link(source, tmp)
        except OSError as exc:  # another file system, no permission, no hard links: copy
            log.debug("cannot hard-link %s (%s); copying", source, exc)
        else:
            return tmp, _sha256(tmp)
    digest = hashlib.sha256()
    try:
        with open(source, "rb") as src, open(tmp, "xb") as dst:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                dst.write(chunk)
            dst.flush()
            # On disk before the rename and the index commit, so a power cut cannot leave
            # an indexed but empty file.
            os.fsync(dst.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_directory(directory: Path) -> None:
    """Make renames in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _stored_stem(name: str) -> tuple[str, str]:
    """Split a file name into stem and extension, keeping ``.fits.gz`` whole."""
    for suffix in (".fits.gz", ".fits.fz", ".fits", ".ecsv"):
        if name.endswith(suffix):
            return name[: -len(suffix)], suffix
    path = Path(name)
    return path.stem, path.suffix


# --------------------------------------------------------------------------- the registry


class CalibrationRegistry:
    """Calibration products of one instrument in a repository directory.

    Parameters
    ----------
    repo : path
        Repository directory; the index is ``REPO/calib/registry.sqlite3``.
    instrument : str, optional
        Instrument of the products. A new registry is for LATISS unless told otherwise; an
        existing one remembers its instrument and refuses another.
    create : bool
        Create the registry when it does not exist. Give False for read-only uses (listing,
        selecting): a mistyped ``--repo`` is then an error, not a new empty registry.

    Raises
    ------
    BadInputError
        No registry and ``create`` is False; the index file is not a registry, is corrupt,
        has a newer schema than this code, or belongs to another instrument.
    """

    def __init__(self, repo: str | Path, *, instrument: str | None = None,
                 create: bool = True) -> None:
        self.repo = Path(repo).resolve()
        self.db_path = self.repo / REGISTRY_FILE
        requested = _canonical_instrument(instrument) if instrument else None
        if not self.db_path.is_file() or self.db_path.stat().st_size == 0:
            if not create:
                raise BadInputError(self.repo, f"no calibration registry here ({REGISTRY_FILE} "
                                               "is missing); register a product first")
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.instrument = self._open(requested or "LATISS", create)
        if requested is not None and requested != self.instrument:
            raise BadInputError(self.db_path, f"registry is for {self.instrument}, not "
                                              f"{requested}")

    def __repr__(self) -> str:
        return f"CalibrationRegistry({str(self.repo)!r}, instrument={self.instrument!r})"

    # ------------------------------------------------------------------ database plumbing

    @contextlib.contextmanager
    def _transaction(self, write: bool) -> Iterator[sqlite3.Connection]:
        """A connection inside one transaction: committed on success, rolled back on error.

        A write transaction starts with ``BEGIN IMMEDIATE`` so that concurrent writers queue
        for the lock at the start instead of failing halfway.
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

    def _open(self, instrument: str, create: bool) -> str:
        """Check (or create) the schema; return the registry's instrument."""
        with self._transaction(write=False) as conn:
            stored = self._inspect(conn)
        if stored is None:
            if not create:
                raise BadInputError(self.db_path, "registry file holds no registry")
            try:
                wal = sqlite3.connect(self.db_path, timeout=_BUSY_TIMEOUT_S)
                # WAL lets readers (ISR runs) go on while a product is registered; the mode
                # is stored in the file, so setting it once at creation is enough.
                wal.execute("PRAGMA journal_mode=WAL")
                wal.close()
            except sqlite3.DatabaseError as exc:
                raise BadInputError(self.db_path, f"not a usable calibration registry "
                                                  f"({exc})") from None
            with self._transaction(write=True) as conn:
                # Another process may have created it since the check above.
                stored = self._inspect(conn)
                if stored is None:
                    # Statement by statement: executescript would commit mid-transaction.
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute("INSERT INTO schema_version VALUES (?, ?)",
                                 (SCHEMA_VERSION, _now()))
                    conn.execute("INSERT INTO registry_info VALUES ('instrument', ?)",
                                 (instrument,))
                    log.info("created calibration registry %s for %s", self.db_path,
                             instrument)
                    stored = instrument
        return stored

    def _inspect(self, conn: sqlite3.Connection) -> str | None:
        """The stored instrument after checking the schema; None for an empty database."""
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
        if version < SCHEMA_VERSION:
            # Only possible once a second schema exists: its upgrade step goes here, and until
            # then an old registry must be refused rather than misread.
            raise BadInputError(self.db_path, f"registry schema version {version} needs an "
                                              "upgrade this atmospec does not provide")
        return str(row[0])

    def _record(self, row: sqlite3.Row) -> CalibRecord:
        passed = row["verification_passed"]
        return CalibRecord(
            id=int(row["id"]),
            kind=row["kind"],
            instrument=row["instrument"],
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

    def _row(self, conn: sqlite3.Connection, product_id: int) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM products WHERE id = ?", (product_id,)).fetchone()
        if row is None:
            raise BadInputError(self.db_path, f"no calibration product with id {product_id}")
        return row

    @staticmethod
    def _uncertify_overlapping(conn: sqlite3.Connection, row: Mapping[str, Any]) -> list[int]:
        """Uncertify the products of ``row``'s kind and configuration whose validity overlaps.

        Two half-open intervals overlap when each starts before the other ends.
        """
        query = (
            "SELECT id FROM products WHERE certified = 1 AND id != ? AND kind = ? "
            "AND instrument = ? AND physical_filter IS ? "
            "AND (? IS NULL OR valid_from < ?) AND (valid_to IS NULL OR valid_to > ?)"
        )
        ids = [r[0] for r in conn.execute(query, (
            row["id"], row["kind"], row["instrument"], row["physical_filter"],
            row["valid_to"], row["valid_to"], row["valid_from"]))]
        for other in ids:
            conn.execute("UPDATE products SET certified = 0 WHERE id = ?", (other,))
        conn.execute("UPDATE products SET certified = 1 WHERE id = ?", (row["id"],))
        return ids

    # ------------------------------------------------------------------ public API

    def register(self, path: str | Path, *, valid_from: str | date | datetime | Time | None = None,
                 valid_to: str | date | datetime | Time | None = None, certify: bool = False,
                 link: bool = True) -> CalibRecord:
        """Store a product in the repository and index it.

        Parameters
        ----------
        path : path
            Product file: an `Exposure` FITS file (bias, dark, flat) or a table (defects,
            PTC, linearizer, crosstalk) whose metadata gives ``OBSTYPE`` and ``INSTRUME``
            (flats also ``FILTER``). A ``<stem>.verify.json`` beside it is stored too.
        valid_from : str, date, datetime or Time, optional
            Start of validity (inclusive, UTC when no zone is given); default: the product's
            ``CALIBDATE``.
        valid_to : str, date, datetime or Time, optional
            End of validity (exclusive); default: open-ended.
        certify : bool
            Also make it the certified default (see `certify`).
        link : bool
            Hard-link instead of copying when the file system allows. A hard link shares the
            bytes with ``path``: a later in-place edit of ``path`` would change the stored
            product (`check` detects it through the recorded SHA-256).

        Returns
        -------
        CalibRecord
            The new record.

        Raises
        ------
        BadInputError
            Missing or unidentifiable file, unknown kind, another instrument, no usable
            date, an empty validity interval, or a product already registered.
        """
        source = Path(path)
        if not source.is_file():
            raise BadInputError(source, "no such file")
        ident = _identify(source, self.instrument)
        verify_source = source.with_name(verification_name(source))
        verification = _read_verification(verify_source) if verify_source.is_file() else None
        try:
            start = to_utc_iso(valid_from) if valid_from is not None else ident.calib_date
            end = to_utc_iso(valid_to) if valid_to is not None else None
        except BadInputError as exc:
            raise BadInputError(source, f"validity: {exc.problem}") from None
        if start is None:
            raise BadInputError(source, "no CALIBDATE in the product: give valid_from")
        if end is not None and end <= start:
            raise BadInputError(source, f"valid_to {end} is not after valid_from {start}")

        directory = calib_dir(self.repo, ident.kind)
        staged: list[Path] = []
        placed: list[Path] = []
        committed = False
        try:
            tmp_product, sha = _stage(source, directory, link)
            staged.append(tmp_product)
            stem, suffix = _stored_stem(source.name)
            final = directory / f"{stem}.{sha[:12]}{suffix}"
            final_verify = final.with_name(verification_name(final))
            if verification is not None:
                staged.append(_stage(verify_source, directory, link=False)[0])
            with self._transaction(write=True) as conn:
                # Checked under the write lock, so two processes registering the same file
                # cannot both pass and overwrite each other's stored copy.
                duplicate = conn.execute("SELECT id, kind, path FROM products WHERE sha256 = ?",
                                         (sha,)).fetchone()
                if duplicate is not None:
                    raise BadInputError(source, f"already registered as {duplicate['kind']} id "
                                                f"{duplicate['id']} ({duplicate['path']})")
                os.replace(staged[0], final)
                placed.append(final)
                if verification is not None:
                    os.replace(staged[1], final_verify)
                    placed.append(final_verify)
                _fsync_directory(directory)
                values = {
                    "kind": ident.kind,
                    "instrument": ident.instrument,
                    "physical_filter": ident.physical_filter,
                    "disperser": ident.disperser,
                    "valid_from": start,
                    "valid_to": end,
                    "calib_date": ident.calib_date or start,
                    "path": final.relative_to(self.repo).as_posix(),
                    "sha256": sha,
                    "registered_at": _now(),
                    "certified": 0,
                    "provenance": json.dumps(ident.provenance, sort_keys=True, default=str),
                    "verification_passed": None if verification is None else int(verification[0]),
                    "verification_failures": json.dumps(
                        [] if verification is None else list(verification[1])),
                    "verification_path": (final_verify.relative_to(self.repo).as_posix()
                                          if verification is not None else None),
                    "source": str(source.resolve()),
                }
                columns = ", ".join(values)
                marks = ", ".join(f":{name}" for name in values)
                cursor = conn.execute(f"INSERT INTO products ({columns}) VALUES ({marks})",
                                      values)
                values["id"] = cursor.lastrowid
                if certify:
                    replaced = self._uncertify_overlapping(conn, values)
                    if replaced:
                        log.info("uncertified %s %s", ident.kind, replaced)
            committed = True
        finally:
            if not committed:
                for leftover in staged + placed:
                    leftover.unlink(missing_ok=True)
        record = self.get(int(values["id"]))
        log.info("registered %s id %d (%s, valid %s to %s)%s", record.kind, record.id,
                 record.physical_filter or "any filter", record.valid_from,
                 record.valid_to or "open end", ", certified" if record.certified else "")
        if record.verification_passed is False:
            log.warning("%s id %d failed verification: %s", record.kind, record.id,
                        ", ".join(record.verification_failures))
        return record

    def get(self, product_id: int) -> CalibRecord:
        """Return the record of one product.

        Raises
        ------
        BadInputError
            If there is no product with that id.
        """
        with self._transaction(write=False) as conn:
            return self._record(self._row(conn, product_id))

    def list(self, kind: str | None = None) -> list[CalibRecord]:
        """Registered products, by kind, configuration, start of validity and id.

        Parameters
        ----------
        kind : str, optional
            Only this kind (one of `KINDS`).

        Raises
        ------
        ValueError
            If ``kind`` is not one of `KINDS`.
        """
        query = "SELECT * FROM products"
        params: tuple[Any, ...] = ()
        if kind is not None:
            _check_kind(kind)
            query += " WHERE kind = ?"
            params = (kind,)
        query += " ORDER BY kind, physical_filter, valid_from, id"
        with self._transaction(write=False) as conn:
            records = [self._record(row) for row in conn.execute(query, params)]
        order = {name: i for i, name in enumerate(KINDS)}
        return sorted(records, key=lambda r: order[r.kind])  # stable: keeps the SQL order

    def certify(self, product_id: int) -> CalibRecord:
        """Make a product the certified default of its kind and configuration.

        Certified products of the same kind, instrument and configuration (physical filter
        for flats) whose validity overlaps this one's are uncertified, so that at any time
        at most one product per kind and configuration is certified.

        Returns
        -------
        CalibRecord
            The updated record.

        Raises
        ------
        BadInputError
            If there is no product with that id.
        """
        with self._transaction(write=True) as conn:
            row = self._row(conn, product_id)
            replaced = self._uncertify_overlapping(conn, row)
        record = self.get(product_id)
        log.info("certified %s id %d%s", record.kind, record.id,
                 f"; uncertified {replaced}" if replaced else "")
        if record.verification_passed is False:
            log.warning("certified %s id %d although it failed verification: %s", record.kind,
                        record.id, ", ".join(record.verification_failures))
        return record

    def remove(self, product_id: int) -> CalibRecord:
        """Unregister a product and delete its stored files.

        The index entry goes first: an interruption leaves an unindexed file, never an
        entry without its file.

        Returns
        -------
        CalibRecord
            The record removed.

        Raises
        ------
        BadInputError
            If there is no product with that id.
        """
        with self._transaction(write=True) as conn:
            record = self._record(self._row(conn, product_id))
            conn.execute("DELETE FROM products WHERE id = ?", (product_id,))
        record.absolute_path.unlink(missing_ok=True)
        if record.verification_path is not None:
            (self.repo / record.verification_path).unlink(missing_ok=True)
        log.info("removed %s id %d (%s)", record.kind, record.id, record.path)
        return record

    def select(self, kind: str, info: ObservationInfo) -> CalibRecord | None:
        """The product of ``kind`` to use for one exposure.

        Candidates have the exposure's instrument, a matching configuration and a validity
        interval containing the exposure time (`exposure_time_utc`). Configuration: for
        flats, the same filter with no disperser (``<filter>~empty``) for an imaging
        exposure; for a dispersed exposure the flat with the same filter *and* disperser,
        and only if none is valid then the same filter with ``empty`` disperser; other
        kinds do not depend on the filter. Among candidates: a certified product first,
        then the latest ``calib_date`` not after the exposure, then the nearest later one;
        equal dates go to the latest registered.

        Parameters
        ----------
        kind : str
            One of `KINDS`.
        info : ObservationInfo
            The exposure.

        Returns
        -------
        CalibRecord or None
            None when no product qualifies.

        Raises
        ------
        ValueError
            If ``kind`` is not one of `KINDS`.
        BadInputError
            If the chosen product's file is missing from the repository.
        """
        _check_kind(kind)
        if _canonical_instrument(info.instrument) != self.instrument:
            log.warning("%s: exposure is from %s; the registry holds %s products",
                        info.obs_id, info.instrument, self.instrument)
            return None
        when = exposure_time_utc(info)
        stamp = _format(when)
        query = ("SELECT * FROM products WHERE kind = ? AND instrument = ? "
                 "AND physical_filter IS ? AND valid_from <= ? "
                 "AND (valid_to IS NULL OR valid_to > ?)")
        configurations = _configurations(kind, info)
        with self._transaction(write=False) as conn:
            for configuration in configurations:
                rows = conn.execute(query, (kind, self.instrument, configuration, stamp,
                                            stamp)).fetchall()
                if rows:
                    break
            else:
                log.info("%s: no %s valid at %s for %s", info.obs_id, kind, stamp,
                         " or ".join(str(c) for c in configurations))
                return None
        best = self._record(min(rows, key=lambda row: _preference(row, when)))
        if configuration != configurations[0]:
            log.info("%s: no %s flat valid at %s; using the %s flat", info.obs_id,
                     configurations[0], stamp, configuration)
        if not best.absolute_path.is_file():
            raise BadInputError(best.absolute_path, f"{kind} id {best.id} is registered but "
                                                    "missing from the repository")
        log.info("%s: %s id %d (%s)", info.obs_id, kind, best.id, best.path)
        return best

    def select_all(self, info: ObservationInfo,
                   kinds: Iterable[str] = KINDS) -> CalibrationFiles:
        """Products of every kind for one exposure, as the files ISR takes.

        Parameters
        ----------
        info : ObservationInfo
            The exposure.
        kinds : iterable of str
            Kinds to look up (default: all); the others stay None.

        Returns
        -------
        CalibrationFiles
            Absolute paths (str) of the products `select` chose; None where none qualifies.
        """
        chosen: dict[str, str] = {}
        for kind in kinds:
            record = self.select(kind, info)
            if record is not None:
                chosen[kind] = str(record.absolute_path)
        return CalibrationFiles(**chosen)

    def check(self) -> dict[int, str]:
        """Re-hash every stored product against its recorded SHA-256.

        Returns
        -------
        dict
            Product id to problem (``"missing"`` or ``"sha256 mismatch"``); empty when all
            products are intact.
        """
        problems: dict[int, str] = {}
        for record in self.list():
            if not record.absolute_path.is_file():
                problems[record.id] = "missing"
            elif _sha256(record.absolute_path) != record.sha256:
                problems[record.id] = "sha256 mismatch"
        return problems


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown calibration kind {kind!r} (known: {', '.join(KINDS)})")


def _configurations(kind: str, info: ObservationInfo) -> list[str | None]:
    """Physical filters acceptable for ``kind`` and ``info``, best first (None: any)."""
    if kind not in FILTER_KINDS:
        return [None]
    imaging = f"{info.filter}~empty"
    if info.is_dispersed:
        return [f"{info.filter}~{info.disperser}", imaging]
    return [imaging]


def _preference(row: Mapping[str, Any], when: datetime) -> tuple[bool, bool, float, int]:
    """Sort key, smallest best: certified, dated before ``when``, nearest, newest id."""
    calib_date = datetime.fromisoformat(row["calib_date"])
    return (not row["certified"], calib_date > when,
            abs((when - calib_date).total_seconds()), -int(row["id"]))
