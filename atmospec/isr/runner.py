"""What running ISR on raw files needs around the driver: the product files of a run
(`CalibrationFiles`) loaded once (`load_calibrations`), and the statistics record of each run
(`stats_document`, written as ``<OBSID>_isrstats.json`` and read by the diagnostics in
`atmospec.plots`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from atmospec.camera.description import Camera
from atmospec.camera.raw import RawFrame
from atmospec.exposure import Exposure
from atmospec.isr.calibs import check_calibration, load_calibration
from atmospec.isr.crosstalk import load_crosstalk
from atmospec.isr.defects import load_defects
from atmospec.isr.driver import IsrCalibrations, IsrResult
from atmospec.isr.gain import load_ptc_gains, nominal_gains
from atmospec.isr.linearity import load_linearizer

log = logging.getLogger(__name__)


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
    """Defects table; ``None``: the shipped LATISS list."""
    ptc: str | None = None
    """PTC table giving gains and read noise; ``None``: nominal values."""
    linearizer: str | None = None
    """Linearizer table."""
    crosstalk: str | None = None
    """Crosstalk table; ``None``: the shipped LATISS matrix."""


def load_calibrations(files: CalibrationFiles, camera: Camera,
                      products: Mapping[str, tuple[Exposure, str]] | None = None
                      ) -> IsrCalibrations:
    """Read every product once (they are shared by all exposures of a run).

    Parameters
    ----------
    files : CalibrationFiles
        Product files (``None``: not used, or the shipped default).
    camera : Camera
        The camera.
    products : mapping, optional
        Master ``bias``, ``dark``, ``flat`` already read (e.g. by a Gen3 Butler), each as
        ``(exposure, source name)``; they are checked as the files are and take the place
        of the files of the same kind.

    Returns
    -------
    IsrCalibrations
    """
    products = products or {}
    sources: dict[str, str] = {}
    gains = load_ptc_gains(files.ptc, camera) if files.ptc else nominal_gains(camera)
    calibs = IsrCalibrations(
        gains=gains,
        crosstalk=load_crosstalk(files.crosstalk, camera.n_amps),
        defects=load_defects(files.defects),
        linearizer=load_linearizer(files.linearizer, camera) if files.linearizer else None,
    )
    for kind in ("bias", "dark", "flat"):
        path = getattr(files, kind)
        if kind in products:
            exposure, source = products[kind]
            setattr(calibs, kind, check_calibration(exposure, kind, camera, source))
            sources[kind] = source
        elif path:
            setattr(calibs, kind, load_calibration(path, kind, camera))
            sources[kind] = Path(path).name
    sources["defects"] = Path(files.defects).name if files.defects else "latiss_defects.ecsv"
    sources["crosstalk"] = (Path(files.crosstalk).name if files.crosstalk
                            else "latiss_crosstalk.ecsv")
    if files.ptc:
        sources["ptc"] = Path(files.ptc).name
    if files.linearizer:
        sources["linearizer"] = Path(files.linearizer).name
    calibs.sources = sources
    return calibs


def stats_document(raw: RawFrame, result: IsrResult) -> dict:
    """The JSON-able statistics record of one ISR run."""
    amps = {}
    for i, (name, entry) in enumerate(result.amp_stats.items()):
        entry = dict(entry)
        if result.overscan:
            entry["overscan_rows_adu"] = np.round(result.overscan["serial"][i], 3).tolist()
            entry["overscan_row_step"] = 1
            entry["parallel_cols_adu"] = np.round(result.overscan["parallel"][i], 3).tolist()
        amps[name] = entry
    return {
        "obs_id": raw.info.obs_id,
        "raw": raw.path.name,
        "physical_filter": raw.info.physical_filter,
        "image_type": raw.info.image_type,
        "steps": list(result.steps),
        "unit": result.exposure.unit,
        "timings_s": {k: round(v, 4) for k, v in result.timings.items()},
        "amps": amps,
    }
