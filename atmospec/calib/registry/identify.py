"""What a calibration product file is, read from its own metadata.

`identify` reads ``OBSTYPE`` (the kind), ``INSTRUME``, ``DETECTOR``, ``FILTER`` (flats) and
``CALIBDATE`` from a product's FITS header or ECSV table meta, with the provenance the
product carries;
`check_contents` refuses a damaged file or values its kind cannot have;
`read_verification` reads the verdict of the ``.verify.json`` report beside it.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from astropy.io import fits
from astropy.table import Table

from atmospec.calib.isr_inputs import MASTER_CLASSES
from atmospec.calib.products.detector import clean_meta_value, product_detector
from atmospec.calib.products.images import flat_configuration
from atmospec.calib.products.integrity import check_product_file, check_regular_file
from atmospec.calib.registry.times import to_utc_iso
from atmospec.camera.translator import canonical_instrument
from atmospec.errors import BadInputError, short_error
from atmospec.exposure import Exposure

__all__ = [
    "FILTER_KINDS",
    "KINDS",
    "Identity",
    "check_contents",
    "check_kind",
    "identify",
    "read_metadata",
    "read_verification",
]

#: Product kinds the registry stores: the fields of `CalibrationFiles`, in ISR order.
KINDS: tuple[str, ...] = ("bias", "dark", "flat", "defects", "ptc", "linearizer", "crosstalk")

#: Kinds whose choice depends on the exposure's filter and disperser.
FILTER_KINDS: frozenset[str] = frozenset({"flat"})

#: Kinds stored as `Exposure` files (FITS with an IMAGE extension).
_IMAGE_KINDS = frozenset({"bias", "dark", "flat"})

#: Other ``OBSTYPE`` spellings of a kind (Rubin's linearizer files say ``LINEARITY``).
_KIND_ALIASES: Mapping[str, str] = MappingProxyType({"linearity": "linearizer"})

#: Header keys copied into the provenance record when present (atmospec's own, then
#: those of Rubin's calibration products).
_PROVENANCE_KEYS = ("ATMVERS", "ATMSTAGE", "ATMDATE", "CALIBCLS", "CALIB_ID",
                    "CALIB_CREATION_DATE", "CALIB_CREATION_TIME")

#: Numbered input-file keys: atmospec's ``ATMIN<i>`` and Rubin's ``CALIB_INPUT_<i>``.
_INPUT_KEY = re.compile(r"^(?:ATMIN|.*INPUT[_ ]?)(\d+)$")

#: Prefix of the HISTORY cards holding the producing configuration (`provenance_cards`).
_CONFIG_HISTORY = "atmospec config: "


@dataclass(frozen=True)
class Identity:
    """What a product file says it is."""

    kind: str
    """Product kind, one of `KINDS`."""
    instrument: str
    """Canonical instrument name."""
    detector: str
    """Detector of the instrument's table (``R22_S11``; LATISS: ``RXX_S00``)."""
    physical_filter: str | None
    """Normalised ``filter~disperser`` for flats, else None."""
    disperser: str | None
    """Disperser for flats, else None."""
    calib_date: str | None
    """``CALIBDATE`` as UTC ISO, None when absent."""
    provenance: dict[str, Any]
    """Provenance keys, input list and configuration found in the metadata."""


def check_kind(kind: str) -> None:
    """Refuse a kind that is not one of `KINDS`.

    Raises
    ------
    ValueError
        If ``kind`` is unknown.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown calibration kind {kind!r} (known: {', '.join(KINDS)})")


def read_metadata(path: Path) -> tuple[dict[str, Any], list[str] | None]:
    """Metadata of a product file, keys upper-cased, and its HDU names (None for ECSV).

    For FITS the primary header is used, or the first extension's when only that one has
    ``OBSTYPE`` (astropy writes a table's ``meta`` there).

    Raises
    ------
    BadInputError
        If the file is not a non-empty regular file (`check_regular_file`: examined before
        it is opened), or neither a readable FITS file nor a readable ECSV table.
    """
    check_regular_file(path)
    with open(path, "rb") as stream:
        magic = stream.read(8)
    if magic.startswith((b"SIMPLE", b"\x1f\x8b")):
        return _fits_metadata(path)
    if magic.startswith(b"# %ECSV"):
        return _ecsv_metadata(path), None
    raise BadInputError(path, "cannot identify the file: neither FITS nor ECSV")


def _fits_metadata(path: Path) -> tuple[dict[str, Any], list[str]]:
    try:
        # Headers only: a truncated or odd file is refused by `check_contents` in one line,
        # which astropy's warnings would only precede.
        with warnings.catch_warnings(), fits.open(path, memmap=False) as hdul:
            warnings.simplefilter("ignore")
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
        raise BadInputError(path, f"not a readable FITS file ({short_error(exc)})") from None
    return meta, names


def _ecsv_metadata(path: Path) -> dict[str, Any]:
    try:
        table_meta = Table.read(path, format="ascii.ecsv").meta
    except Exception as exc:  # as for FITS, the ECSV reader raises many types
        raise BadInputError(path, f"not a readable ECSV table ({short_error(exc)})") from None
    meta = {str(key).upper(): value for key, value in table_meta.items()}
    history = meta.get("HISTORY") or []
    meta["HISTORY"] = [history] if isinstance(history, str) else [str(h) for h in history]
    return meta


def _provenance(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Provenance found in product metadata: known keys, ``inputs``, ``config``."""
    out: dict[str, Any] = {}
    for key in _PROVENANCE_KEYS:
        value = clean_meta_value(meta.get(key))
        if value is not None:
            out[key] = value
    inputs = sorted((int(match[1]), str(value)) for key, value in meta.items()
                    if (match := _INPUT_KEY.match(key)) and clean_meta_value(value) is not None)
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


def identify(path: Path, registry_instrument: str) -> Identity:
    """Read what a product is and check that a registry of ``registry_instrument`` can
    hold it.

    Parameters
    ----------
    path : pathlib.Path
        Product file (FITS or ECSV).
    registry_instrument : str
        Canonical instrument of the registry.

    Returns
    -------
    Identity

    Raises
    ------
    BadInputError
        Unreadable or unidentifiable file, unknown kind, another instrument, no or an
        unknown detector (`atmospec.calib.products.detector.product_detector`: a product
        without ``DETECTOR`` is for the instrument's only detector, and refused for an
        instrument of several), a flat without ``FILTER``, an image product without an
        IMAGE extension, a bad CALIBDATE.
    """
    meta, hdu_names = read_metadata(path)
    kind = _kind(path, meta, hdu_names)
    instrument = _instrument(path, meta, registry_instrument)
    # As written (``LSSTCam``), for the messages; the detector table is looked up by alias.
    detector = product_detector(meta, str(clean_meta_value(meta["INSTRUME"])), path)
    physical_filter = disperser = None
    if kind in FILTER_KINDS:
        physical_filter, disperser = _physical_filter(path, meta, kind)
    return Identity(kind, instrument, detector, physical_filter, disperser,
                    _calib_date(path, meta), _provenance(meta))


def check_contents(path: Path, kind: str) -> None:
    """Refuse a product file that is damaged, or whose values its kind cannot have.

    It must be a non-empty regular file and, if FITS, complete with its checksums matching
    (`atmospec.calib.products.integrity.check_product_file`); a bias, dark or flat must have
    values within the bounds of its class (`atmospec.calib.products.MasterImage.
    check_values`; its shape is not checked: the registry holds products of any size).

    Parameters
    ----------
    path : pathlib.Path
        The product.
    kind : str
        Its kind (`identify`).

    Raises
    ------
    BadInputError
        One line naming the file and the reason.
    """
    check_product_file(path)
    master_class = MASTER_CLASSES.get(kind)
    if master_class is not None:
        # The sums were checked whole by `check_product_file` just before.
        exposure = Exposure.read(path, load_variance=False, check_sums=False)
        master_class.check_values(exposure, str(path))


def _kind(path: Path, meta: Mapping[str, Any], hdu_names: list[str] | None) -> str:
    """The product kind from ``OBSTYPE``, checked against the file's form."""
    obstype = clean_meta_value(meta.get("OBSTYPE"))
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
    return kind


def _instrument(path: Path, meta: Mapping[str, Any], registry_instrument: str) -> str:
    """The canonical instrument of ``INSTRUME``, which must be the registry's."""
    instrument_value = clean_meta_value(meta.get("INSTRUME"))
    if instrument_value is None:
        raise BadInputError(path, "cannot identify the product: no INSTRUME in its metadata")
    instrument = canonical_instrument(str(instrument_value))
    if instrument != registry_instrument:
        raise BadInputError(path, f"product is for instrument {instrument_value}; this "
                                  f"registry is for {registry_instrument}")
    return instrument


def _physical_filter(path: Path, meta: Mapping[str, Any], kind: str) -> tuple[str, str]:
    """Normalised ``filter~disperser`` and the disperser of a filter-dependent product."""
    configuration = flat_configuration(meta)
    if configuration is None:
        raise BadInputError(path, f"a {kind} needs a FILTER (physical filter) key")
    return configuration


def _calib_date(path: Path, meta: Mapping[str, Any]) -> str | None:
    """``CALIBDATE`` as UTC ISO; None when absent."""
    calib_date_value = clean_meta_value(meta.get("CALIBDATE"))
    if calib_date_value is None:
        return None
    try:
        return to_utc_iso(str(calib_date_value))
    except BadInputError:
        raise BadInputError(path, f"CALIBDATE {calib_date_value!r} is not an ISO "
                                  "date") from None


def read_verification(path: Path) -> tuple[bool, tuple[str, ...]]:
    """Verdict and failed tests of a ``.verify.json`` report (`VerificationReport` form).

    Parameters
    ----------
    path : pathlib.Path
        The report.

    Returns
    -------
    (bool, tuple of str)
        Whether it passed, and its failed tests as ``amp:test`` names.

    Raises
    ------
    BadInputError
        If the report is unreadable or has no true/false ``pass``.
    """
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadInputError(path, f"unreadable verification report ({short_error(exc)})") from None
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
