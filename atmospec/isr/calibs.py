"""Loading master calibration products (bias, dark, flat) for ISR, with checks.

A product is an `Exposure` file whose primary header says what it is (``OBSTYPE``: bias,
dark or flat), for which instrument (``INSTRUME``) and, for flats, which physical filter
(``FILTER``). The master dark is in e⁻/s; the master flat is normalised to about 1.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from atmospec.camera.description import Camera
from atmospec.errors import BadInputError
from atmospec.exposure import Exposure

log = logging.getLogger(__name__)

CALIB_KINDS = ("bias", "dark", "flat")


def load_calibration(path: str | Path, kind: str, camera: Camera,
                     physical_filter: str | None = None) -> Exposure:
    """Read a master calibration and check it fits the exposure being processed.

    Parameters
    ----------
    path : path
        Product written by `Exposure.write`.
    kind : {"bias", "dark", "flat"}
        Expected product type.
    camera : Camera
        Camera of the exposure: the product must match its instrument and image shape.
    physical_filter : str, optional
        Filter of the exposure; a flat of another filter is used with a warning.

    Returns
    -------
    Exposure
        Non-finite pixels are set to 0 (1 for a flat) and flagged BAD; ``variance`` is a
        read-only zero array (not loaded).

    Raises
    ------
    BadInputError
        Wrong shape, instrument or product type, or an unreadable file.
    """
    if kind not in CALIB_KINDS:
        raise ValueError(f"unknown calibration kind {kind!r}")
    path = Path(path)
    # The variance of a master is not used by ISR: not loading it saves 65 MB per product.
    return check_calibration(Exposure.read(path, load_variance=False), kind, camera, path,
                             physical_filter)


def check_calibration(calib: Exposure, kind: str, camera: Camera, path: str | Path,
                      physical_filter: str | None = None) -> Exposure:
    """Check a master calibration already read fits the exposure, as `load_calibration`.

    Parameters
    ----------
    calib : Exposure
        The product (e.g. read by a Butler; modified in place: non-finite pixels).
    kind : {"bias", "dark", "flat"}
        Expected product type.
    camera : Camera
        Camera of the exposure.
    path : path
        Where it came from, for messages.
    physical_filter : str, optional
        Filter of the exposure; a flat of another filter is used with a warning.

    Returns
    -------
    Exposure
        ``calib``, non-finite pixels set to 0 (1 for a flat) and flagged BAD.

    Raises
    ------
    BadInputError
        Wrong shape, instrument or product type.
    """
    if kind not in CALIB_KINDS:
        raise ValueError(f"unknown calibration kind {kind!r}")
    if calib.shape != camera.detector_shape:
        raise BadInputError(path, f"{kind} has shape {calib.shape}, expected "
                                  f"{camera.detector_shape} for {camera.name}")
    instrument = calib.metadata.get("INSTRUME")
    if instrument and str(instrument).upper() not in (camera.name.upper(), "LSST_ATISS"):
        raise BadInputError(path, f"{kind} is for instrument {instrument}, not {camera.name}")
    obstype = str(calib.metadata.get("OBSTYPE", kind)).strip().lower()
    if obstype != kind:
        raise BadInputError(path, f"product is a {obstype}, not a {kind}")
    if kind == "flat" and physical_filter:
        flat_filter = calib.metadata.get("FILTER")
        if flat_filter and str(flat_filter) != physical_filter:
            log.warning("%s: flat is for %s, exposure is %s", path, flat_filter,
                        physical_filter)
    bad = ~np.isfinite(calib.image)
    if bad.any():
        calib.image[bad] = 1.0 if kind == "flat" else 0.0
        calib.set_mask("BAD", bad)
    return calib
