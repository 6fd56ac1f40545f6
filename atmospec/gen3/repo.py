"""Butler repositories for atmospec: create one, ingest raws, certify calibrations.

Only the generic daf_butler API is used (``Butler.makeRepo``, ``insertDimensionData`` /
``syncDimensionData``, ``registerDatasetType``, ``Butler.ingest``, ``Registry.certify``); the
records of the instruments (LATISS, LSSTCam, LSSTComCam, LSSTCamSim, LSST-TS8) come from
`atmospec.gen3.instrument`.

A repository holds one instrument, registered by `init_repo` (LATISS unless told) or, in a
repository without one, by the first raws ingested; raws of another instrument are refused.

Collections, named after the instrument (``LATISS``, ``LSSTCam`` ...):

``<instrument>/raw/all``
    RUN collection of the ingested raws (dataset type ``raw``).
``<instrument>/calib``
    CALIBRATION collection of certified products (``bias``, ``dark``, ``flat``, ``ptc``,
    ``defects``, ``linearizer``, ``crosstalk``), each with its validity range.
``<instrument>/calib/ingest/<kind>``
    RUN collections holding product files ingested by `certify_files`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from atmospec.errors import BadInputError, short_error
from atmospec.gen3 import require_gen3

require_gen3()

from lsst.daf.butler import (  # noqa: E402
    Butler,
    CollectionType,
    Config,
    DatasetRef,
    DatasetType,
    FileDataset,
    Timespan,
)

from atmospec.gen3.formatters import FORMATTERS, STORAGE_CLASSES  # noqa: E402
from atmospec.gen3.instrument import (  # noqa: E402
    DETECTOR_ID,
    INSTRUMENT,
    AtmospecInstrument,
    instrument_for,
    physical_filter_record,
)

log = logging.getLogger(__name__)

__all__ = [
    "CALIB_COLLECTION",
    "CALIB_DATASET_TYPES",
    "RAW_COLLECTION",
    "IngestResult",
    "calib_collection",
    "certify_files",
    "certify_run",
    "dataset_type",
    "ingest_raws",
    "init_repo",
    "open_butler",
    "raw_collection",
    "repo_calib_collection",
    "repo_config",
    "repo_instruments",
]

#: The LATISS collections (`raw_collection` and `calib_collection` name any instrument's).
RAW_COLLECTION = f"{INSTRUMENT}/raw/all"
CALIB_COLLECTION = f"{INSTRUMENT}/calib"

#: Calibration dataset types: name -> (dimensions, storage class). The storage class follows
#: the file format of the product (`atmospec.gen3.formatters`): masters are Exposure files,
#: the PTC and the linearizer FITS binary tables, defects and crosstalk ECSV tables.
CALIB_DATASET_TYPES: Mapping[str, tuple[tuple[str, ...], str]] = MappingProxyType({
    "bias": (("instrument", "detector"), "AtmospecExposure"),
    "dark": (("instrument", "detector"), "AtmospecExposure"),
    "flat": (("instrument", "detector", "band"), "AtmospecExposure"),
    "ptc": (("instrument", "detector"), "AtmospecFitsTable"),
    "linearizer": (("instrument", "detector"), "AtmospecFitsTable"),
    "defects": (("instrument", "detector"), "AtmospecCatalog"),
    "crosstalk": (("instrument", "detector"), "AtmospecCatalog"),
})

#: The verification dataset the calibration tasks write beside each product they build
#: (`atmospec.gen3.tasks`): `certify_run` reads its verdict.
VERIFY_DATASET_TYPES: Mapping[str, str] = MappingProxyType({
    "bias": "cpBiasVerify", "dark": "cpDarkVerify", "flat": "cpFlatVerify",
    "ptc": "cpPtcVerify"})

#: File patterns of raws in a directory given to `ingest_raws`.
RAW_PATTERNS = ("*.fits", "*.fits.gz", "*.fits.fz", "*.fz")


def repo_config() -> Config:
    """The configuration `init_repo` writes: our storage classes and formatters.

    Returns
    -------
    lsst.daf.butler.Config
        ``storageClasses`` and ``datastore.formatters`` sections (SQLite registry and a
        POSIX datastore in the repository directory are the Butler's defaults).
    """
    return Config({"storageClasses": {k: dict(v) for k, v in STORAGE_CLASSES.items()},
                   "datastore": {"formatters": dict(FORMATTERS)}})


def open_butler(repo: str | Path, *, writeable: bool = False, **kwargs: Any) -> Butler:
    """A Butler on an existing repository, with a clear error when there is none.

    Parameters
    ----------
    repo : path
        Repository root (holding ``butler.yaml``).
    writeable : bool
        Open for writing.
    **kwargs
        Passed to ``Butler.from_config`` (``collections``, ``run``).

    Returns
    -------
    lsst.daf.butler.Butler

    Raises
    ------
    BadInputError
        No Butler repository at ``repo``.
    """
    if not (Path(repo) / "butler.yaml").is_file():
        raise BadInputError(repo, "not a Butler repository (no butler.yaml; create one with: "
                                  f"atmospec butler init {repo})")
    return Butler.from_config(str(repo), writeable=writeable, **kwargs)


def dataset_type(butler: Butler, name: str, dimensions: Iterable[str], storage_class: str,
                 *, is_calibration: bool = False) -> DatasetType:
    """Register (or find) a dataset type.

    Parameters
    ----------
    butler : lsst.daf.butler.Butler
        Writeable Butler.
    name : str
        Dataset type name.
    dimensions : iterable of str
        Its dimensions.
    storage_class : str
        Storage class name (`atmospec.gen3.formatters.STORAGE_CLASSES` or the Butler's).
    is_calibration : bool
        Whether it may be certified into a CALIBRATION collection.

    Returns
    -------
    lsst.daf.butler.DatasetType
    """
    dt = DatasetType(name, tuple(dimensions), storage_class, universe=butler.dimensions,
                     isCalibration=is_calibration)
    butler.registry.registerDatasetType(dt)
    return dt


def raw_collection(instrument: str = INSTRUMENT) -> str:
    """RUN collection of an instrument's raws, ``<instrument>/raw/all``.

    Parameters
    ----------
    instrument : str
        Instrument name (default ``LATISS``).

    Returns
    -------
    str
    """
    return instrument_for(instrument)().makeDefaultRawIngestRunName()


def calib_collection(instrument: str = INSTRUMENT) -> str:
    """CALIBRATION collection of an instrument, ``<instrument>/calib``.

    Parameters
    ----------
    instrument : str
        Instrument name (default ``LATISS``).

    Returns
    -------
    str
    """
    return instrument_for(instrument)().makeCalibrationCollectionName()


def repo_instruments(butler: Butler) -> list[str]:
    """Names of the instruments registered in a repository (one for a repository of
    `init_repo`; none for an empty one).

    Parameters
    ----------
    butler : lsst.daf.butler.Butler
        Butler on the repository.

    Returns
    -------
    list of str
        Sorted.
    """
    return sorted(r.name for r in butler.query_dimension_records("instrument", explain=False))


def repo_calib_collection(butler: Butler) -> str:
    """The default CALIBRATION collection of a repository: ``<instrument>/calib`` of its
    instrument (``LATISS/calib`` when it has none or several).

    Parameters
    ----------
    butler : lsst.daf.butler.Butler
        Butler on the repository.

    Returns
    -------
    str
    """
    instruments = repo_instruments(butler)
    return calib_collection(instruments[0]) if len(instruments) == 1 else CALIB_COLLECTION


def _register_instrument(butler: Butler, instrument: type[AtmospecInstrument]) -> None:
    """Register an instrument's records, the ``raw`` and calibration dataset types and its
    CALIBRATION collection (all idempotent)."""
    instrument().register(butler.registry)
    raw = instrument.raw_definition
    assert raw is not None
    dataset_type(butler, raw[0], raw[1], raw[2])
    for name, (dims, storage) in CALIB_DATASET_TYPES.items():
        dataset_type(butler, name, dims, storage, is_calibration=True)
    butler.registry.registerCollection(calib_collection(instrument.getName()),
                                       CollectionType.CALIBRATION)


def init_repo(path: str | Path, *, instrument: str | None = None,
              update: bool = False) -> Path:
    """Create a Butler repository for one instrument (SQLite registry, POSIX datastore).

    Writes ``path/butler.yaml`` with atmospec's storage classes and formatters, registers the
    instrument, its detectors and base physical filters (`atmospec.gen3.instrument`), the
    ``raw`` and calibration dataset types, and the ``<instrument>/calib`` CALIBRATION
    collection.

    Parameters
    ----------
    path : path
        Repository root (created).
    instrument : str, optional
        ``LATISS`` (default for a new repository), ``LSSTCam``, ``LSSTComCam``,
        ``LSSTCamSim`` or ``LSST-TS8``. With ``update``, default: the repository's own.
    update : bool
        On an existing repository, keep its configuration and registry and only register
        what this version of atmospec adds (dataset types, instrument records); all of it is
        idempotent.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    BadInputError
        A repository already exists at ``path`` (without ``update``), or ``update`` where
        there is none; an unknown instrument; ``update`` naming an instrument other than
        the repository's.
    """
    path = Path(path)
    exists = (path / "butler.yaml").exists()
    if exists and not update:
        raise BadInputError(path, "a Butler repository already exists here (--update "
                                  "registers what this atmospec adds to it)")
    if update and not exists:
        raise BadInputError(path, "no Butler repository here to update")
    if instrument is not None:
        instrument_for(instrument)  # an unknown name fails before anything is created
    if not exists:
        path.mkdir(parents=True, exist_ok=True)
        Butler.makeRepo(str(path), config=repo_config())
    butler = Butler.from_config(str(path), writeable=True)
    try:
        registered = repo_instruments(butler) if exists else []
        if instrument is None:
            instrument = registered[0] if len(registered) == 1 else INSTRUMENT
        if registered and instrument not in registered:
            raise BadInputError(path, f"this repository is for {', '.join(registered)}, "
                                      f"not {instrument}")
        cls = instrument_for(instrument)
        _register_instrument(butler, cls)
    finally:
        butler.close()
    log.info("%s Butler repository %s (instrument %s)", "updated" if update else "created",
             path, cls.getName())
    return path


@dataclass
class IngestResult:
    """What `ingest_raws` did."""

    ingested: list[str] = field(default_factory=list)
    """Frames ingested (their ``obs_id``: the OBSID, with ``_<detector>`` for an
    instrument of several detectors)."""
    skipped: list[str] = field(default_factory=list)
    """Frames already in the repository."""
    rejected: list[tuple[str, str]] = field(default_factory=list)
    """Files that are not usable raws of the repository's instrument, with the one-line
    reason."""
    run: str | None = None
    """The RUN collection of the raws (None when no file was usable and none given)."""


def _raw_files(paths: Sequence[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = {f for pattern in RAW_PATTERNS for f in p.glob(pattern)}
            files.extend(sorted(found))
        else:
            files.append(p)
    return files


@dataclass
class _Frame:
    """One checked raw: its file, translated header, instrument, records and data ID."""

    path: Path
    info: Any
    instrument: type[AtmospecInstrument]
    exposure: dict[str, Any]
    data_id: dict[str, Any]


def _check_frame(path: Path) -> _Frame:
    """Check a raw as the native night index does (`atmospec.camera.raw.
    check_raw_structure`, which `atmospec.night.index.check_raw_file` runs) and make its
    exposure record and data ID.

    Raises
    ------
    BadInputError
        Unusable file, an instrument without Gen3 records, no exposure id (naming the file).
    """
    from atmospec.camera.raw import check_raw_structure

    if not path.is_file():
        raise BadInputError(path, "no such file")
    layout = check_raw_structure(path)
    info = layout.info
    try:
        instrument = instrument_for(info.instrument)
        date_obs = layout.header.get("DATE-OBS")
        record = instrument.exposure_record(info, None if date_obs is None else str(date_obs))
    except BadInputError as exc:
        raise BadInputError(path, exc.problem) from None
    # LATISS frames carry no detector id: its only detector is 0.
    detector = DETECTOR_ID if info.detector_id is None else int(info.detector_id)
    data_id = {"instrument": instrument.getName(), "detector": detector,
               "exposure": record["id"]}
    return _Frame(path, info, instrument, record, data_id)


def ingest_raws(repo: str | Path, paths: Sequence[str | Path], *, transfer: str = "auto",
                run: str | None = None) -> IngestResult:
    """Ingest raw files as ``raw`` datasets, dimension records from our translator.

    Each file is checked as the native night index checks it
    (`atmospec.night.index.check_raw_file`) and its primary header translated
    (`atmospec.camera.translator.translate_header`) into its ``day_obs``, ``group``,
    ``physical_filter`` and ``exposure`` records (`atmospec.gen3.instrument`); the data ID
    is (instrument, detector id, exposure id). Unusable files (empty, truncated, not FITS,
    an instrument without Gen3 records, or not the repository's instrument) are rejected
    with their one-line reason and the others still ingested. A frame already in the
    repository is skipped; the exposure record is written by the first frame of the
    exposure and shared by its other detectors.

    The repository's instrument decides: raws of another are refused. A repository without
    an instrument registers the instrument of the first usable raw.

    Parameters
    ----------
    repo : path
        Repository made by `init_repo`.
    paths : sequence of path
        Raw files, or directories whose ``*.fits``, ``*.fits.gz``, ``*.fz`` are taken.
    transfer : str
        Butler transfer mode: ``auto``, ``direct`` (leave files where they are), ``copy``,
        ``move``, ``symlink``, ``relsymlink``, ``hardlink``, ``link``.
    run : str, optional
        RUN collection (default ``<instrument>/raw/all``: ``LATISS/raw/all``).

    Returns
    -------
    IngestResult

    Raises
    ------
    BadInputError
        No repository at ``repo``.
    """
    result = IngestResult(run=run)
    butler = open_butler(repo, writeable=True)
    try:
        registry = butler.registry
        allowed = repo_instruments(butler)
        datasets: list[FileDataset] = []
        runs: set[str] = set()
        seen: set[tuple[int, int]] = set()  # (exposure, detector) of this call
        synced: dict[int, str] = {}  # exposure id -> OBSID, for records in the registry
        for path in _raw_files(paths):
            try:
                frame = _check_frame(path)
                name = frame.instrument.getName()
                if not allowed:  # an empty repository takes the instrument of its raws
                    _register_instrument(butler, frame.instrument)
                    allowed = [name]
                if name not in allowed:
                    raise BadInputError(path, f"instrument {name}, not {' or '.join(allowed)}"
                                              " of this repository (make one for it: atmospec "
                                              f"butler init REPO --instrument {name})")
                exposure = frame.exposure
                if exposure["id"] not in synced:
                    existing = next(iter(registry.queryDimensionRecords(
                        "exposure", instrument=name, exposure=exposure["id"])), None)
                    if existing is not None:
                        synced[exposure["id"]] = existing.obs_id
                known = synced.get(exposure["id"], exposure["obs_id"])
                if known != exposure["obs_id"]:
                    # Two OBSIDs on one id: a header's day, sequence or controller is wrong.
                    raise BadInputError(path, f"exposure id {exposure['id']} of "
                                              f"{exposure['obs_id']} is already exposure "
                                              f"{known} in this repository")
            except BadInputError as exc:
                log.warning("not ingested: %s", exc)
                result.rejected.append((str(path), exc.problem))
                continue
            info, data_id = frame.info, frame.data_id
            target = run or raw_collection(name)
            if target not in runs:
                registry.registerRun(target)
                runs.add(target)
            result.run = result.run or target
            raw_type = butler.get_dataset_type("raw")
            key = (data_id["exposure"], data_id["detector"])
            if key in seen or butler.query_datasets(
                    raw_type, collections=target, data_id=data_id, explain=False):
                result.skipped.append(info.obs_id)
                continue
            seen.add(key)
            if exposure["id"] not in synced:
                # The exposure's first frame writes its records and its other detectors
                # share them, as obs_base does: each CCD's header comes from its own readout
                # board, and a time differing in the last digit would fail a second sync.
                cls = frame.instrument
                registry.syncDimensionData("day_obs", cls.day_obs_record(info.day_obs))
                registry.syncDimensionData("group", {"instrument": name,
                                                     "name": exposure["group"]})
                registry.syncDimensionData("physical_filter",
                                           cls.physical_filter_record(info.physical_filter))
                registry.syncDimensionData("exposure", exposure)
                synced[exposure["id"]] = exposure["obs_id"]
            datasets.append(FileDataset(
                path=str(path.absolute()),
                refs=[DatasetRef(raw_type, data_id, run=target)]))
            result.ingested.append(info.obs_id)
        if datasets:
            butler.ingest(*datasets, transfer=transfer)
    finally:
        butler.close()
    log.info("ingested %d raws into %s (%d already there, %d rejected)",
             len(result.ingested), result.run, len(result.skipped), len(result.rejected))
    return result


def _timespan(begin: str | None, end: str | None) -> Timespan:
    from astropy.time import Time

    return Timespan(Time(begin, scale="utc") if begin else None,
                    Time(end, scale="utc") if end else None)


def _check_table_product(kind: str, path: Path) -> None:
    """Read a table product as ISR would (its product class); a file of another kind fails.

    Raises
    ------
    BadInputError
        ``<file>: not a <kind> product: <the loader's reason>``, on one line.
    """
    from atmospec.calib.products import Crosstalk, Defects, Linearizer, Ptc
    from atmospec.camera.description import load_camera

    camera = load_camera("latiss")
    try:
        if kind == "ptc":
            Ptc.read(path, camera).gains(camera)
        elif kind == "linearizer":
            Linearizer.read(path, camera)
        elif kind == "defects":
            Defects.read(path)
        elif kind == "crosstalk":
            Crosstalk.read(path, camera.n_amps)
    except BadInputError as exc:
        raise BadInputError(path, f"not a {kind} product: {short_error(exc.problem)}") from None
    except Exception as exc:  # a loader tripping over a foreign file
        raise BadInputError(path, f"not a {kind} product ({short_error(exc)})") from None


def _product_data_id(kind: str, path: Path) -> dict[str, Any]:
    """Data ID of a product file, from its header (``FILTER`` gives a flat's band), after
    checking that the file is a product of that kind."""
    from astropy.io import fits

    data_id: dict[str, Any] = {"instrument": INSTRUMENT, "detector": DETECTOR_ID}
    if kind not in ("bias", "dark", "flat"):
        _check_table_product(kind, path)
        return data_id
    try:
        header = fits.getheader(path, 0)
    except Exception as exc:
        raise BadInputError(path, f"not a readable FITS file ({short_error(exc)})") from None
    obstype = str(header.get("OBSTYPE", kind)).strip().lower()
    if obstype != kind:
        raise BadInputError(path, f"product is a {obstype}, not a {kind}")
    if kind == "flat":
        physical = str(header.get("FILTER", "")).strip()
        if not physical or physical.upper() == "NONE":
            raise BadInputError(path, "flat without a FILTER header key")
        data_id["band"] = physical_filter_record(physical)["band"]
    return data_id


def _verdict_problem(what: str | Path, doc: Mapping[str, Any]) -> str | None:
    """``verification FAILED (...)`` when a verification document (``.verify.json``, a
    ``cp*Verify`` dataset) says the product failed, else None."""
    if doc.get("pass", True) is not False:
        return None
    failures = [str(f) for f in doc.get("failures", [])]
    shown = ", ".join(failures[:3]) + (f" and {len(failures) - 3} more"
                                       if len(failures) > 3 else "")
    return f"verification FAILED ({shown or 'no test named'})"


def _file_verdict(path: Path) -> str | None:
    """The failure of a product file's ``<stem>.verify.json`` (written beside it by
    ``atmospec calib`` and the night runner), None when it passed or there is none."""
    import json

    from atmospec.calib.verification import verification_name

    report = path.with_name(verification_name(path))
    if not report.is_file():
        return None
    try:
        doc = json.loads(report.read_text())
    except (OSError, ValueError) as exc:
        raise BadInputError(report, f"unreadable verification report ({short_error(exc)})"
                            ) from None
    return _verdict_problem(report, doc) if isinstance(doc, Mapping) else None


def _refuse_failed(failed: Sequence[tuple[str, str]], force: bool) -> None:
    """Refuse products whose verification failed (one line naming the first), or, with
    ``force``, log one warning line for each."""
    if not failed:
        return
    if not force:
        what, problem = failed[0]
        more = f" (and {len(failed) - 1} more failed)" if len(failed) > 1 else ""
        raise BadInputError(what, f"{problem}{more}: not certified; certify it anyway with "
                                  "--force")
    for what, problem in failed:
        log.warning("%s: %s: certified anyway (--force)", what, problem)


def certify_files(repo: str | Path, kind: str, files: Sequence[str | Path], *,
                  begin: str | None = None, end: str | None = None,
                  collection: str | None = None, transfer: str = "copy",
                  force: bool = False) -> list[DatasetRef]:
    """Ingest product files (ours: ``atmospec calib ...`` or the night runner's) and certify
    them into a CALIBRATION collection with a validity range.

    Parameters
    ----------
    repo : path
        Repository.
    kind : {"bias", "dark", "flat", "ptc", "linearizer", "defects", "crosstalk"}
        Product kind (the dataset type).
    files : sequence of path
        Product files; a flat's band is the filter of its ``FILTER`` header key. Each is
        checked before anything is ingested: a master by its ``OBSTYPE``, a table product
        by its product class as ISR reads it (`atmospec.calib.products`: ``Ptc`` and its
        gains, ``Linearizer``, ``Defects``, ``Crosstalk``).
    begin, end : str, optional
        Validity range (ISO times, UTC); None: unbounded on that side.
    collection : str, optional
        CALIBRATION collection (default ``LATISS/calib``).
    transfer : str
        Butler transfer mode for the files (default ``copy``).
    force : bool
        Certify products whose verification report (``<stem>.verify.json`` beside the
        file) says they failed, with a warning; without it they are refused.

    Returns
    -------
    list of lsst.daf.butler.DatasetRef
        The certified datasets.

    Raises
    ------
    BadInputError
        Unknown kind, unreadable file, a product of another kind, a product that failed
        its verification without ``force`` (one line naming the file; nothing is ingested
        then); a repository of another instrument than LATISS.
    """
    if kind not in CALIB_DATASET_TYPES:
        raise BadInputError(None, f"unknown calibration kind {kind!r} "
                                  f"(known: {', '.join(CALIB_DATASET_TYPES)})")
    butler = open_butler(repo, writeable=True)
    try:
        instruments = repo_instruments(butler)
        if instruments and INSTRUMENT not in instruments:
            # Product files are checked against the LATISS camera and named by its one
            # detector: another instrument's would be certified under wrong data IDs.
            raise BadInputError(repo, f"product files are certified into LATISS repositories "
                                      f"only; this one is for {', '.join(instruments)} "
                                      "(certify a pipeline's products with --from-collection)")
        collection = collection or CALIB_COLLECTION
        # Every file is checked before the repository is touched: a wrong one changes
        # nothing.
        checked: list[tuple[Path, dict[str, Any]]] = []
        failed: list[tuple[str, str]] = []
        for f in map(Path, files):
            if not f.is_file():
                raise BadInputError(f, "no such file")
            checked.append((f, _product_data_id(kind, f)))
            problem = _file_verdict(f)
            if problem is not None:
                failed.append((str(f), problem))
        _refuse_failed(failed, force)
        try:
            dt = butler.get_dataset_type(kind)
        except Exception:  # MissingDatasetTypeError: a repository from an older atmospec
            dims, storage = CALIB_DATASET_TYPES[kind]
            dt = dataset_type(butler, kind, dims, storage, is_calibration=True)
        run = f"{collection}/ingest/{kind}"
        butler.registry.registerRun(run)
        butler.registry.registerCollection(collection, CollectionType.CALIBRATION)
        refs: list[DatasetRef] = []
        datasets = []
        for f, data_id in checked:
            if "band" in data_id:
                physical = f"{data_id['band']}~empty"
                butler.registry.syncDimensionData("physical_filter",
                                                  physical_filter_record(physical))
            ref = DatasetRef(dt, data_id, run=run)
            datasets.append(FileDataset(path=str(f.absolute()), refs=[ref]))
            refs.append(ref)
        butler.ingest(*datasets, transfer=transfer)
        butler.registry.certify(collection, refs, _timespan(begin, end))
    finally:
        butler.close()
    log.info("certified %d %s into %s", len(refs), kind, collection)
    return refs


def certify_run(repo: str | Path, input_collection: str, kinds: Sequence[str], *,
                begin: str | None = None, end: str | None = None,
                collection: str | None = None, force: bool = False) -> list[DatasetRef]:
    """Certify products a pipeline wrote (e.g. ``cpBias``'s ``bias``) into a CALIBRATION
    collection, as ``butler certify-calibrations`` does.

    Parameters
    ----------
    repo : path
        Repository.
    input_collection : str
        Collection holding them (the output collection of ``pipetask run``).
    kinds : sequence of str
        Dataset types to certify (``bias``, ``dark``, ``flat``, ``ptc``, ...).
    begin, end : str, optional
        Validity range (ISO times, UTC); None: unbounded on that side.
    collection : str, optional
        CALIBRATION collection (default ``<instrument>/calib`` of the repository's
        instrument: ``LATISS/calib``, ``LSSTCam/calib`` ...).
    force : bool
        Certify products whose verification (the ``cp*Verify`` dataset the task wrote
        beside each, `VERIFY_DATASET_TYPES`) failed, with a warning; without it they are
        refused.

    Returns
    -------
    list of lsst.daf.butler.DatasetRef

    Raises
    ------
    BadInputError
        Nothing of those kinds in ``input_collection``; a product that failed its
        verification, without ``force`` (nothing is certified then).
    """
    butler = open_butler(repo, writeable=True)
    try:
        collection = collection or repo_calib_collection(butler)
        butler.registry.registerCollection(collection, CollectionType.CALIBRATION)
        refs: list[DatasetRef] = []
        failed: list[tuple[str, str]] = []
        for kind in kinds:
            found = butler.query_datasets(kind, collections=input_collection, explain=False,
                                          find_first=True)
            if not found:
                raise BadInputError(input_collection, f"no {kind} dataset in this collection")
            refs.extend(found)
            failed += _run_verdicts(butler, kind, found, input_collection)
        _refuse_failed(failed, force)
        butler.registry.certify(collection, refs, _timespan(begin, end))
    finally:
        butler.close()
    log.info("certified %d datasets of %s into %s", len(refs), input_collection, collection)
    return refs


def _run_verdicts(butler: Butler, kind: str, refs: Sequence[DatasetRef],
                  input_collection: str) -> list[tuple[str, str]]:
    """(product, failure) of the ``refs`` whose verification dataset in ``input_collection``
    says they failed; a product without one (not built by our tasks) has no verdict."""
    verify_type = VERIFY_DATASET_TYPES.get(kind)
    if verify_type is None:
        return []
    failed: list[tuple[str, str]] = []
    try:
        butler.get_dataset_type(verify_type)
    except Exception:  # MissingDatasetTypeError: no task of ours wrote one here
        return []
    for ref in refs:
        found = butler.query_datasets(verify_type, collections=input_collection,
                                      data_id=ref.dataId, explain=False, find_first=True)
        for verify_ref in found:
            problem = _verdict_problem(verify_type, butler.get(verify_ref))
            if problem is not None:
                where = ", ".join(f"{k}={v}" for k, v in ref.dataId.required.items())
                failed.append((f"{input_collection}: {kind} ({where})", problem))
    return failed
