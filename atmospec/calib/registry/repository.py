"""`CalibrationRegistry`: products stored in a repository, indexed, and chosen per exposure.

The registry ties the other modules of this package together: it identifies a product
(`identify`), stages its file (`staging`), indexes it (`store`) and selects, for one
exposure, the product of each kind to use (the rules of `CalibrationRegistry.select`).

Every product is of one detector (``DETECTOR``; a product naming none is for the
instrument's only detector): a frame gets the products of its own detector, and
certification and storage are per detector too.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

from astropy.time import Time

from atmospec.calib.isr_inputs import CalibrationFiles
from atmospec.calib.products.images import flat_configurations
from atmospec.calib.registry.identify import (
    FILTER_KINDS,
    KINDS,
    Identity,
    check_contents,
    check_kind,
    identify,
    read_verification,
)
from atmospec.calib.registry.staging import (
    fsync_directory,
    sha256_file,
    stage,
    stored_sha256,
    stored_stem,
)
from atmospec.calib.registry.store import (
    CalibRecord,
    RegistryIndex,
    candidates,
    find_duplicate,
    insert_product,
    uncertify_overlapping,
)
from atmospec.calib.registry.times import exposure_time_utc, format_utc, now_utc, to_utc_iso
from atmospec.calib.verification import verification_name
from atmospec.camera.translator import ObservationInfo, canonical_instrument
from atmospec.errors import BadInputError, short_error
from atmospec.layout import REGISTRY_FILE, calib_dir

__all__ = ["CalibrationRegistry"]

log = logging.getLogger(__name__)


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
        requested = canonical_instrument(instrument) if instrument else None
        if not self.db_path.is_file():
            if not create:
                raise BadInputError(self.repo, f"no calibration registry here ({REGISTRY_FILE} "
                                               "is missing); register a product first")
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._index = RegistryIndex(self.db_path, self.repo)
        stored = self._index.stored_instrument()
        if stored is None:
            self._refuse_lost_index()
            if not create:
                raise BadInputError(self.db_path, "registry file holds no registry")
            stored = self._index.create(requested or "LATISS")
        self.instrument = stored
        if requested is not None and requested != self.instrument:
            raise BadInputError(self.db_path, f"registry is for {self.instrument}, not "
                                              f"{requested}")

    def _refuse_lost_index(self) -> None:
        """Refuse an index file that holds no registry while products are stored.

        A new registry's file is empty only before its first product is stored, so an empty
        (or table-less) file beside stored products is an index that was lost: creating a
        fresh one would silently orphan them, and the exposures would be reduced with
        nominal calibrations.

        Raises
        ------
        BadInputError
            ``holds no registry, but N products are stored ...``, naming the file.
        """
        stored = _stored_products(self.repo)
        if stored:
            raise BadInputError(self.db_path, f"holds no registry, but {len(stored)} products "
                                              f"are stored beside it (e.g. {stored[0]}): the "
                                              "registry is damaged; restore it from a backup")

    def __repr__(self) -> str:
        return f"CalibrationRegistry({str(self.repo)!r}, instrument={self.instrument!r})"

    # ------------------------------------------------------------------ registering

    def register(self, path: str | Path, *, valid_from: str | date | datetime | Time | None = None,
                 valid_to: str | date | datetime | Time | None = None, certify: bool = False,
                 link: bool = True) -> CalibRecord:
        """Store a product in the repository and index it.

        Parameters
        ----------
        path : path
            Product file: an `Exposure` FITS file (bias, dark, flat) or a table (defects,
            PTC, linearizer, crosstalk) whose metadata gives ``OBSTYPE``, ``INSTRUME`` and,
            for an instrument of several detectors, ``DETECTOR`` (flats also ``FILTER``).
            A ``<stem>.verify.json`` beside it is stored too.
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
            Missing or unidentifiable file, a damaged file or values its kind cannot have
            (`check_contents`: truncated, checksum mismatch, an all-NaN flat, a bias far
            from 0 e⁻), unknown kind, another instrument, no or an unknown detector, no
            usable date, an empty validity interval, or a product already registered.
        """
        source = Path(path)
        if not source.is_file():
            raise BadInputError(source, "no such file")
        ident = identify(source, self.instrument)
        check_contents(source, ident.kind)
        verify_source = source.with_name(verification_name(source))
        verification = read_verification(verify_source) if verify_source.is_file() else None
        start, end = _validity(source, ident, valid_from, valid_to)
        product_id = self._store(source, ident, verification, (start, end), certify, link)
        record = self.get(product_id)
        log.info("registered %s id %d (%s, %s, valid %s to %s)%s", record.kind, record.id,
                 record.detector, record.physical_filter or "any filter", record.valid_from,
                 record.valid_to or "open end", ", certified" if record.certified else "")
        if record.verification_passed is False:
            log.warning("%s id %d failed verification: %s", record.kind, record.id,
                        ", ".join(record.verification_failures))
        return record

    def _store(self, source: Path, ident: Identity,
               verification: tuple[bool, tuple[str, ...]] | None,
               validity: tuple[str, str | None], certify: bool, link: bool) -> int:
        """Stage the product (and its report), rename and index them in one write
        transaction; return the new id. Anything placed is removed when it fails."""
        # Per detector for an instrument of several: two detectors' products apart.
        directory = self._index.folder(ident.kind, ident.detector)
        staged: list[Path] = []
        placed: list[Path] = []
        committed = False
        try:
            tmp_product, sha = stage(source, directory, link)
            staged.append(tmp_product)
            stem, suffix = stored_stem(source.name)
            final = directory / f"{stem}.{sha[:12]}{suffix}"
            final_verify = final.with_name(verification_name(final))
            if verification is not None:
                verify_source = source.with_name(verification_name(source))
                staged.append(stage(verify_source, directory, link=False)[0])
            with self._index.transaction(write=True) as conn:
                # Checked under the write lock, so two processes registering the same file
                # cannot both pass and overwrite each other's stored copy.
                duplicate = find_duplicate(conn, sha)
                if duplicate is not None:
                    raise BadInputError(source, f"already registered as {duplicate['kind']} id "
                                                f"{duplicate['id']} ({duplicate['path']})")
                os.replace(staged[0], final)
                placed.append(final)
                if verification is not None:
                    os.replace(staged[1], final_verify)
                    placed.append(final_verify)
                fsync_directory(directory)
                values = self._row_values(source, ident, validity, (final, sha),
                                          verification, final_verify)
                values["id"] = insert_product(conn, values)
                if certify:
                    replaced = uncertify_overlapping(conn, values)
                    if replaced:
                        log.info("uncertified %s %s", ident.kind, replaced)
            committed = True
        finally:
            if not committed:
                for leftover in staged + placed:
                    leftover.unlink(missing_ok=True)
        return int(values["id"])

    def _row_values(self, source: Path, ident: Identity, validity: tuple[str, str | None],
                    stored: tuple[Path, str],
                    verification: tuple[bool, tuple[str, ...]] | None,
                    final_verify: Path) -> dict[str, Any]:
        """The ``products`` columns of a product being registered."""
        start, end = validity
        final, sha = stored
        return {
            "kind": ident.kind,
            "instrument": ident.instrument,
            "detector": ident.detector,
            "physical_filter": ident.physical_filter,
            "disperser": ident.disperser,
            "valid_from": start,
            "valid_to": end,
            "calib_date": ident.calib_date or start,
            "path": final.relative_to(self.repo).as_posix(),
            "sha256": sha,
            "registered_at": now_utc(),
            "certified": 0,
            "provenance": json.dumps(ident.provenance, sort_keys=True, default=str),
            "verification_passed": None if verification is None else int(verification[0]),
            "verification_failures": json.dumps(
                [] if verification is None else list(verification[1])),
            "verification_path": (final_verify.relative_to(self.repo).as_posix()
                                  if verification is not None else None),
            "source": str(source.resolve()),
        }

    # ------------------------------------------------------------------ reading, curating

    def get(self, product_id: int) -> CalibRecord:
        """Return the record of one product.

        Raises
        ------
        BadInputError
            If there is no product with that id.
        """
        with self._index.transaction(write=False) as conn:
            return self._index.record(self._index.row(conn, product_id))

    def list(self, kind: str | None = None, detector: str | None = None
             ) -> list[CalibRecord]:
        """Registered products, by kind, detector, configuration, start of validity and id.

        Parameters
        ----------
        kind : str, optional
            Only this kind (one of `KINDS`).
        detector : str, optional
            Only this detector's products (``R22_S11``).

        Raises
        ------
        ValueError
            If ``kind`` is not one of `KINDS`.
        """
        conditions, params = [], []
        if kind is not None:
            check_kind(kind)
            conditions.append("kind = ?")
            params.append(kind)
        if detector is not None:
            conditions.append("detector = ?")
            params.append(detector)
        query = "SELECT * FROM products"
        if conditions:
            query += " WHERE " + " AND ".join(conditions)
        query += " ORDER BY kind, detector, physical_filter, valid_from, id"
        with self._index.transaction(write=False) as conn:
            records = [self._index.record(row) for row in conn.execute(query, params)]
        order = {name: i for i, name in enumerate(KINDS)}
        return sorted(records, key=lambda r: order[r.kind])  # stable: keeps the SQL order

    def certify(self, product_id: int) -> CalibRecord:
        """Make a product the certified default of its kind, detector and configuration.

        Certified products of the same kind, instrument, detector and configuration
        (physical filter for flats) whose validity overlaps this one's are uncertified, so
        that at any time at most one product per kind, detector and configuration is
        certified.

        The stored file is checked first (`check_stored`): a product that is missing,
        changed since it was registered, damaged, or with values its kind cannot have is
        not certified.

        Returns
        -------
        CalibRecord
            The updated record.

        Raises
        ------
        BadInputError
            No product with that id, or ``not certified: <reason>`` naming the stored file.
        """
        self.check_stored(self.get(product_id))
        with self._index.transaction(write=True) as conn:
            row = self._index.row(conn, product_id)
            replaced = uncertify_overlapping(conn, row)
        record = self.get(product_id)
        log.info("certified %s id %d%s", record.kind, record.id,
                 f"; uncertified {replaced}" if replaced else "")
        if record.verification_passed is False:
            log.warning("certified %s id %d although it failed verification: %s", record.kind,
                        record.id, ", ".join(record.verification_failures))
        return record

    def check_stored(self, record: CalibRecord) -> None:
        """Refuse a stored product that is not the one registered, or not usable.

        Parameters
        ----------
        record : CalibRecord
            The product.

        Raises
        ------
        BadInputError
            ``not certified: <reason>`` naming the stored file: missing, its SHA-256 not the
            one recorded at registration, or refused by `check_contents`.
        """
        path = record.absolute_path
        try:
            _check_unchanged(record)
            check_contents(path, record.kind)
        except BadInputError as exc:
            raise BadInputError(path, f"not certified: {exc.problem}") from None

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
        with self._index.transaction(write=True) as conn:
            record = self._index.record(self._index.row(conn, product_id))
            conn.execute("DELETE FROM products WHERE id = ?", (product_id,))
        record.absolute_path.unlink(missing_ok=True)
        if record.verification_path is not None:
            (self.repo / record.verification_path).unlink(missing_ok=True)
        log.info("removed %s id %d (%s)", record.kind, record.id, record.path)
        return record

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
            elif sha256_file(record.absolute_path) != record.sha256:
                problems[record.id] = "sha256 mismatch"
        return problems

    # ------------------------------------------------------------------ selection

    def select(self, kind: str, info: ObservationInfo) -> CalibRecord | None:
        """The product of ``kind`` to use for one exposure.

        Candidates have the exposure's instrument and detector (`ObservationInfo.detector`;
        for an instrument of one detector, that one), a matching configuration and a
        validity interval containing the exposure time (`exposure_time_utc`). Configuration: for
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
            A corrupt row in the index (`RegistryIndex.check_rows`), the chosen product
            missing from the repository or not the file registered (`check_stored`), or an
            exposure of an instrument of several detectors that names none.
        """
        check_kind(kind)
        if canonical_instrument(info.instrument) != self.instrument:
            log.warning("%s: exposure is from %s; the registry holds %s products",
                        info.obs_id, info.instrument, self.instrument)
            return None
        detector = self._frame_detector(info)
        when = exposure_time_utc(info)
        stamp = format_utc(when)
        configurations = _configurations(kind, info)
        with self._index.transaction(write=False) as conn:
            self._index.check_rows(conn)
            for configuration in configurations:
                rows = candidates(conn, kind, self.instrument, detector, configuration, stamp)
                if rows:
                    break
            else:
                log.info("%s: no %s of %s valid at %s for %s", info.obs_id, kind, detector,
                         stamp, " or ".join(str(c) for c in configurations))
                return None
        best = self._index.record(min(rows, key=lambda row: _preference(row, when)))
        if configuration != configurations[0]:
            log.info("%s: no %s flat valid at %s; using the %s flat", info.obs_id,
                     configurations[0], stamp, configuration)
        _check_unchanged(best)
        log.info("%s: %s id %d (%s)", info.obs_id, kind, best.id, best.path)
        return best

    def _frame_detector(self, info: ObservationInfo) -> str:
        """The detector whose products serve ``info``: its own, or the instrument's only
        one (LATISS frames name none).

        Raises
        ------
        BadInputError
            An exposure of an instrument of several detectors that names none: any one
            detector's products would be a guess.
        """
        if info.detector is not None:
            return info.detector
        detectors = self._index.detectors
        if len(detectors) != 1:
            raise BadInputError(None, f"{info.obs_id}: a {self.instrument} exposure that "
                                      "names no detector: its products cannot be chosen")
        return next(iter(detectors))

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
            Absolute paths (str) of the products `select` chose (of the exposure's detector);
            None where none qualifies.
        """
        chosen: dict[str, str] = {}
        for kind in kinds:
            record = self.select(kind, info)
            if record is not None:
                chosen[kind] = str(record.absolute_path)
        return CalibrationFiles(**chosen)


def _check_unchanged(record: CalibRecord) -> None:
    """Refuse a stored product that is missing, or not the file registered: its SHA-256
    (`stored_sha256`: hashed once per version of the file per process) differs from the
    one recorded.

    Raises
    ------
    BadInputError
        ``<kind> id N is registered but missing from the repository``, or ``<kind> id N
        changed since it was registered (sha256 mismatch)``, naming the stored file.
    """
    path = record.absolute_path
    what = f"{record.kind} id {record.id}"
    if not path.is_file():
        raise BadInputError(path, f"{what} is registered but missing from the repository")
    try:
        digest = stored_sha256(path)
    except OSError as exc:
        raise BadInputError(path, f"{what} cannot be read ({short_error(exc)})") from None
    if digest != record.sha256:
        raise BadInputError(path, f"{what} changed since it was registered (sha256 "
                                  "mismatch)")


def _stored_products(repo: Path) -> list[str]:
    """Products stored in the repository's folders of each kind, and of each detector
    within them (relative paths, sorted); the hidden temporaries of an interrupted
    registration are not products, nor are the (possibly empty) detector folders."""
    found = []
    for kind in KINDS:
        folder = calib_dir(repo, kind)
        if folder.is_dir():
            found += [p.relative_to(repo).as_posix() for p in folder.rglob("*")
                      if p.is_file() and not p.name.startswith(".")]
    return sorted(found)


def _validity(source: Path, ident: Identity,
              valid_from: str | date | datetime | Time | None,
              valid_to: str | date | datetime | Time | None) -> tuple[str, str | None]:
    """Validity interval of a product being registered: the one given, else from its
    ``CALIBDATE`` on, open-ended."""
    try:
        start = to_utc_iso(valid_from) if valid_from is not None else ident.calib_date
        end = to_utc_iso(valid_to) if valid_to is not None else None
    except BadInputError as exc:
        raise BadInputError(source, f"validity: {exc.problem}") from None
    if start is None:
        raise BadInputError(source, "no CALIBDATE in the product: give valid_from")
    if end is not None and end <= start:
        raise BadInputError(source, f"valid_to {end} is not after valid_from {start}")
    return start, end


def _configurations(kind: str, info: ObservationInfo) -> list[str | None]:
    """Physical filters acceptable for ``kind`` and ``info``, best first (None: any)."""
    if kind not in FILTER_KINDS:
        return [None]
    return list(flat_configurations(info))


def _preference(row: Mapping[str, Any], when: datetime) -> tuple[bool, bool, float, int]:
    """Sort key, smallest best: certified, dated before ``when``, nearest, newest id."""
    calib_date = datetime.fromisoformat(row["calib_date"])
    return (not row["certified"], calib_date > when,
            abs((when - calib_date).total_seconds()), -int(row["id"]))
