"""Which detector a calibration product is for: the keys every writer puts in a product, and
how they are read back and checked against the frames a product serves.

Every product atmospec writes names its detector (`detector_cards`, the one place the keys
are made): ``INSTRUME`` (the instrument), ``DETECTOR`` (raft and slot, ``R22_S11``; LATISS's
only detector is ``RXX_S00``) and ``DETSER`` (the CCD serial). A bias of LSSTCam R22_S11 and
one of R22_S12 have the same shape and values of the same size: only these keys tell them
apart.

Reading them back (`product_detector`) also accepts products written before: a product
without ``DETECTOR`` is for the instrument's only detector when it has one (older atmospec
products, Rubin's shipped LATISS files), and refused otherwise; an integer ``DETECTOR`` is
Rubin's detector number (obs_lsst's, the ``detector_id`` of the instrument's detector
table: Rubin's products write ``DETECTOR: 0`` for LATISS).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from atmospec.camera.description import Camera, DetectorEntry, detector_table
from atmospec.camera.translator import canonical_instrument
from atmospec.errors import BadInputError

__all__ = [
    "check_detector",
    "clean_meta_value",
    "detector_cards",
    "detector_meta",
    "instrument_detectors",
    "only_detector",
    "product_detector",
]

Card = tuple[str, Any, str]


def detector_cards(camera: Camera) -> tuple[Card, ...]:
    """The cards naming a product's instrument and detector, as every writer puts them.

    Parameters
    ----------
    camera : Camera
        The detector the product was built for.

    Returns
    -------
    tuple of (key, value, comment)
        ``INSTRUME``, ``DETECTOR``, ``DETSER``.
    """
    return (("INSTRUME", camera.name, "instrument"),
            ("DETECTOR", camera.detector, "detector, raft_slot"),
            ("DETSER", camera.detector_serial, "CCD serial number"))


def detector_meta(camera: Camera) -> dict[str, str]:
    """`detector_cards` as a table's metadata (key → value).

    Parameters
    ----------
    camera : Camera
        The detector the product was built for.

    Returns
    -------
    dict
    """
    return {key: value for key, value, _ in detector_cards(camera)}


def instrument_detectors(instrument: str, source: str | Path | None = None
                         ) -> Mapping[str, DetectorEntry]:
    """The detector table of an instrument (`atmospec.camera.description.detector_table`).

    Parameters
    ----------
    instrument : str
        Instrument name or ``INSTRUME`` alias (``LSST_ATISS`` is LATISS).
    source : path or str, optional
        The file the instrument was read from, named by the error.

    Raises
    ------
    BadInputError
        For an instrument without a camera description.
    """
    try:
        return detector_table(canonical_instrument(instrument))
    except BadInputError as exc:
        raise BadInputError(source, exc.problem) from None


def only_detector(instrument: str, source: str | Path | None = None) -> str | None:
    """The detector of an instrument of one detector (LATISS: ``RXX_S00``); None when it
    has several.

    Raises
    ------
    BadInputError
        For an instrument without a camera description.
    """
    table = instrument_detectors(instrument, source)
    return next(iter(table)) if len(table) == 1 else None


def product_detector(meta: Mapping[str, Any], instrument: str,
                     source: str | Path | None = None) -> str:
    """The detector a product is for, from its metadata.

    Parameters
    ----------
    meta : mapping
        The product's header or table metadata (``DETECTOR``, ``DETECTOR_NAME``).
    instrument : str
        Its instrument (``INSTRUME``, as written: it names the instrument in messages).
    source : path or str, optional
        The product, named by the errors.

    Returns
    -------
    str
        A detector name of the instrument's table (``R22_S11``).

    Raises
    ------
    BadInputError
        ``product for LSSTCam names no DETECTOR`` (an instrument of several detectors), a
        ``DETECTOR`` the instrument does not have, a ``DETECTOR_NAME`` contradicting it, or
        an instrument without a camera description.
    """
    table = instrument_detectors(instrument, source)
    value = clean_meta_value(meta.get("DETECTOR"))
    if value is None:
        if len(table) == 1:
            return next(iter(table))
        raise BadInputError(source, f"product for {instrument} names no DETECTOR")
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        # Rubin's convention: the detector number (its name, when given, is DETECTOR_NAME).
        name = next((n for n, entry in table.items() if entry.detector_id == int(value)), None)
        if name is None:
            raise BadInputError(source, f"DETECTOR {value} is not a detector number of "
                                        f"{instrument}")
    else:
        name = str(value)
        if name not in table:
            raise BadInputError(source, f"DETECTOR {name!r} is not a detector of {instrument} "
                                        "(raft and slot such as R22_S11)")
    named = clean_meta_value(meta.get("DETECTOR_NAME"))
    if named is not None and str(named) != name:
        raise BadInputError(source, f"DETECTOR {value} is {name}, but DETECTOR_NAME says "
                                    f"{named}")
    return name


def check_detector(meta: Mapping[str, Any], camera: Camera, source: str | Path | None,
                   what: str, *, target: str = "this frame") -> None:
    """Refuse a product that is not for ``camera``'s instrument and detector.

    A product without ``INSTRUME`` is taken to be of ``camera``'s instrument (its other
    checks decide); one without ``DETECTOR`` is for the instrument's only detector, and
    refused for an instrument of several (`product_detector`).

    Parameters
    ----------
    meta : mapping
        The product's header or table metadata.
    camera : Camera
        The detector of the frames the product is to serve.
    source : path or str or None
        The product, named by the error.
    what : str
        The product's kind, for the message (``bias``).
    target : str
        What ``camera`` describes, for the message.

    Raises
    ------
    BadInputError
        One line naming the product: ``bias is for LSSTCam R22_S12, this frame is R22_S11``
        (another instrument: ``... this frame is LATISS RXX_S00``).
    """
    written = clean_meta_value(meta.get("INSTRUME"))
    instrument = camera.name if written is None else str(written)
    if canonical_instrument(instrument) != canonical_instrument(camera.name):
        detector = clean_meta_value(meta.get("DETECTOR"))
        what_for = instrument if detector is None else f"{instrument} {detector}"
        raise BadInputError(source, f"{what} is for {what_for}, {target} is {camera.label}")
    detector = product_detector(meta, instrument, source)
    if detector != camera.detector:
        raise BadInputError(source, f"{what} is for {instrument} {detector}, {target} is "
                                    f"{camera.detector}")


def clean_meta_value(value: Any) -> Any:
    """None for a missing, undefined or blank metadata value; strings stripped."""
    if value is None or isinstance(value, fits.card.Undefined):
        return None
    if isinstance(value, str):
        return value.strip() or None
    return value
