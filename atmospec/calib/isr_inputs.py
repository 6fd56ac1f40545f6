"""The products of an ISR run: which files (`CalibrationFiles`), read once and checked
(`load_calibrations`) into what the ISR driver takes (`atmospec.isr.driver.IsrCalibrations`),
and whether they may serve a given exposure (`check_exposure`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from atmospec.calib.products import (
    Bias,
    Crosstalk,
    Dark,
    Defects,
    Flat,
    Linearizer,
    MasterImage,
    Ptc,
)
from atmospec.calib.products.detector import check_detector
from atmospec.calib.products.images import check_flat_serves
from atmospec.camera.description import Camera
from atmospec.camera.translator import ObservationInfo
from atmospec.isr.driver import IsrCalibrations
from atmospec.isr.gain import nominal_gains

#: The master images, by kind, in the order ISR applies them.
MASTER_CLASSES: Mapping[str, type[MasterImage]] = MappingProxyType(
    {"bias": Bias, "dark": Dark, "flat": Flat})


@dataclass(frozen=True)
class CalibrationFiles:
    """Calibration product files for an ISR run (``None``: not used, or the shipped default)."""

    bias: str | None = None
    """Master bias (Exposure file, e⁻)."""
    dark: str | None = None
    """Master dark (Exposure file, e⁻/s)."""
    flat: str | None = None
    """Master flat (Exposure file, normalised)."""
    defects: str | None = None
    """Defects table; ``None``: the detector's shipped list (LATISS), else none."""
    ptc: str | None = None
    """PTC table giving gains and read noise; ``None``: nominal values."""
    linearizer: str | None = None
    """Linearizer table."""
    crosstalk: str | None = None
    """Crosstalk table; ``None``: the detector's shipped matrix (LATISS), else none."""


def load_calibrations(files: CalibrationFiles, camera: Camera,
                      products: Mapping[str, MasterImage] | None = None, *,
                      exposure: ObservationInfo | None = None) -> IsrCalibrations:
    """Read every product once (they are shared by all exposures of a run).

    Each product is checked as its class reads it: the file intact (checksums, not
    truncated), of its kind, instrument, detector and shape, its values possible
    (`atmospec.calib.products.MasterImage.check_values`). The detector is ``camera``'s
    (`atmospec.calib.products.detector.check_detector`): ``bias is for LSSTCam R22_S12,
    this frame is R22_S11`` naming the file; a product that names no detector serves an
    instrument of one detector (LATISS). The shipped defects and crosstalk of LATISS are
    not checked.

    Parameters
    ----------
    files : CalibrationFiles
        Product files (``None``: not used, or the shipped default).
    camera : Camera
        The camera.
    products : mapping, optional
        Master ``bias``, ``dark``, ``flat`` already in memory and checked (e.g. from a Gen3
        Butler: `MasterImage.checked`); each takes the place of the file of its kind.
    exposure : ObservationInfo, optional
        An exposure they must serve (`check_exposure`); a run of several exposures loads
        once and calls `check_exposure` for each.

    Returns
    -------
    IsrCalibrations
        ``sources`` names the file (or dataset) of each product used.

    Raises
    ------
    BadInputError
        A product that cannot be read, is damaged, has impossible values or does not fit
        ``camera`` (or ``exposure``); one line naming it.
    """
    products = products or {}
    ptc = Ptc.read(files.ptc, camera) if files.ptc else None
    gains = ptc.gains(camera) if ptc else nominal_gains(camera)
    crosstalk = (Crosstalk.read(files.crosstalk, camera.n_amps, camera=camera)
                 if files.crosstalk else Crosstalk.default(camera))
    defects = (Defects.read(files.defects, camera=camera) if files.defects
               else Defects.default(camera))
    linearizer = Linearizer.read(files.linearizer, camera) if files.linearizer else None
    calibs = IsrCalibrations(
        gains=gains,
        crosstalk=crosstalk.matrix(camera.n_amps),
        defects=defects.table,
        linearizer=linearizer.correction(camera) if linearizer else None,
    )
    sources: dict[str, str] = {}
    for kind, cls in MASTER_CLASSES.items():
        path = getattr(files, kind)
        master = products.get(kind)
        if master is not None:
            # Checked by whoever read it, perhaps for another camera than this one.
            check_detector(master.exposure.metadata, camera, master.source or None, kind)
        elif path:
            # The variance of a master is not used by ISR: not loading it saves 65 MB.
            master = cls.read(path, camera, load_variance=False)
        if master is not None:
            setattr(calibs, kind, master.exposure)
            sources[kind] = master.name
    sources["defects"] = defects.name
    sources["crosstalk"] = crosstalk.name
    if ptc:
        sources["ptc"] = ptc.name
    if linearizer:
        sources["linearizer"] = linearizer.name
    calibs.sources = sources
    if exposure is not None:
        check_exposure(calibs, exposure)
    return calibs


#: The products without which a frame is not calibrated: the ISR skips their steps (nominal
#: gains without a PTC) and says so (`missing_products`).
ESSENTIAL_KINDS: tuple[str, ...] = ("bias", "dark", "flat", "ptc")


def missing_products(calibs: IsrCalibrations, steps: Sequence[str] | None = None
                     ) -> tuple[str, ...]:
    """Which of `ESSENTIAL_KINDS` a run has not got, for the one warning that says so.

    Parameters
    ----------
    calibs : IsrCalibrations
        The loaded products (``sources`` names them).
    steps : sequence of str, optional
        The ISR steps asked for (`IsrConfig.steps`); None: every step whose product exists,
        so that each missing product is a silently skipped step. A product whose step was
        not asked for is not missing (the PTC's step is ``gain``).

    Returns
    -------
    tuple of str
        Missing kinds, in `ESSENTIAL_KINDS` order; empty when bias, dark and flat are all
        there (the nominal gains alone are the camera team's measured values, a legitimate
        choice not worth a warning on every run).
    """
    def wanted(kind: str) -> bool:
        return steps is None or ("gain" if kind == "ptc" else kind) in steps

    missing = tuple(k for k in ESSENTIAL_KINDS if k not in calibs.sources and wanted(k))
    return () if missing in ((), ("ptc",)) else missing


def missing_products_message(missing: Sequence[str], where: str | None = None) -> str:
    """The one line saying a frame is reduced without some products (`missing_products`).

    ``where``: the repository searched (None: none was given)."""
    found = f"none valid in {where}" if where else "none given (--calibs REPO or --bias ...)"
    steps = [k for k in missing if k != "ptc"]
    consequences = []
    if steps:
        consequences.append(f"the {', '.join(steps)} step{'s' if len(steps) > 1 else ''} "
                            "skipped")
    if "ptc" in missing:
        consequences.append("nominal gains used")
    return (f"no {', '.join(missing)} ({found}): {' and '.join(consequences)}; the result is "
            "not fully calibrated")


def check_exposure(calibs: IsrCalibrations, info: ObservationInfo) -> None:
    """Refuse products that cannot serve this exposure: a flat of another filter.

    The products of a run are loaded once (`load_calibrations`) and shared; this is the
    per-exposure check, cheap (header values only). A registry's selection obeys the same
    rule (`atmospec.calib.products.images.flat_configurations`), so it matters for products
    given explicitly.

    Parameters
    ----------
    calibs : IsrCalibrations
        The loaded products (``sources`` names them).
    info : ObservationInfo
        The exposure.

    Raises
    ------
    BadInputError
        ``<flat>: flat is for <filter~disperser>; exposure <OBSID> is <filter~disperser>``.
    """
    if calibs.flat is not None:
        check_flat_serves(calibs.flat.metadata, calibs.sources.get("flat"), info)
