"""Simulator truth beside the measurements, for a simulated night.

`atmospec simulate` and `atmospec demo` write, next to every raw ``<OBSID>.fits``, a
sidecar ``<OBSID>_truth.json`` (`atmospec.sim.night.FrameTruth.to_json`): the seeing
(``fwhm_px``, per unbinned pixel), the sky (``sky_e`` over the exposure), and for a
dispersed exposure the atmosphere the light went through
(``dispersed.spectrum_model``: ``pwv_mm``, ``ozone_du``, ``vaod``). The report finds them
through the night index's raw paths; a real night has none, and shows nothing extra.

Truth columns are named ``<summary column>_truth`` and added to an in-memory copy of the
summary (never to ``night/summary.ecsv``): tables and night figures show them beside the
measured column when present.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

__all__ = ["TRUTH_COLUMNS", "TRUTH_SUFFIX", "read_truth", "truth_column", "truth_of",
           "with_truth"]

log = logging.getLogger(__name__)

#: Suffix of a truth column: ``fwhm_arcsec`` → ``fwhm_arcsec_truth``.
TRUTH_SUFFIX = "_truth"

#: Summary columns that can have a truth, in display order.
TRUTH_COLUMNS: tuple[str, ...] = ("fwhm_px", "fwhm_arcsec", "sky_e_per_s", "pwv_mm",
                                  "ozone_du", "vaod")


def _finite(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def truth_of(doc: Mapping[str, Any]) -> dict[str, float]:
    """The summary-column truths of one ``_truth.json`` document (those it has).

    ``fwhm_arcsec`` is not here: the plate scale is the measurement's (`with_truth`
    takes it from the summary row), so truth and measurement share it.
    """
    out: dict[str, float] = {}
    if doc.get("kind") not in ("science", "dispersed"):
        # A calibration frame's "sky" of 0 is no measurement's truth.
        return out
    fwhm = _finite(doc.get("fwhm_px"))
    if fwhm is not None:
        out["fwhm_px"] = fwhm
    sky, exptime = _finite(doc.get("sky_e")), _finite(doc.get("exptime"))
    if sky is not None and exptime:
        out["sky_e_per_s"] = sky / exptime
    model = (doc.get("dispersed") or {}).get("spectrum_model") or {}
    # A model given a transmission table instead of an atmosphere has no such parameters.
    if not model.get("atmosphere_table"):
        for key in ("pwv_mm", "ozone_du", "vaod"):
            value = _finite(model.get(key))
            if value is not None:
                out[key] = value
    return out


def read_truth(raws: Iterable[tuple[str, Path]]) -> dict[str, dict[str, float]]:
    """The truth of every exposure with a ``<OBSID>_truth.json`` beside its raw file.

    Parameters
    ----------
    raws : iterable of (str, pathlib.Path)
        OBSID and raw file of each exposure (the night index's records).

    Returns
    -------
    dict
        OBSID → summary column → true value; empty for a real night. An unreadable
        sidecar is skipped with a warning: truth is a convenience of simulated nights.
    """
    truth: dict[str, dict[str, float]] = {}
    for obs_id, raw in raws:
        path = Path(raw).parent / f"{obs_id}_truth.json"
        if not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable truth sidecar (%s): not shown", path, exc)
            continue
        values = truth_of(doc) if isinstance(doc, dict) else {}
        if values:
            truth[obs_id] = values
    return truth


def with_truth(summary: Table, truth: Mapping[str, Mapping[str, float]]) -> Table:
    """The summary with a ``<column>_truth`` column for every column some exposure has a
    truth of (NaN elsewhere); the summary itself when there is no truth.

    ``fwhm_arcsec_truth`` is the true ``fwhm_px`` at the row's measured plate scale
    (``fwhm_arcsec / fwhm_px``), so it is shown only where the FWHM was measured.
    """
    if not truth or not len(summary):
        return summary
    out = summary.copy(copy_data=False)
    ids = [str(o) for o in summary["obs_id"]]
    for column in TRUTH_COLUMNS:
        if column == "fwhm_arcsec":
            if "fwhm_px_truth" not in out.colnames or not {"fwhm_px", "fwhm_arcsec"} <= set(
                    summary.colnames):
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                scale = (np.asarray(summary["fwhm_arcsec"], dtype=float)
                         / np.asarray(summary["fwhm_px"], dtype=float))
            values = np.asarray(out["fwhm_px_truth"], dtype=float) * scale
        else:
            values = np.array([truth.get(i, {}).get(column, np.nan) for i in ids], dtype=float)
        if np.isfinite(values).any():
            unit = summary[column].unit if column in summary.colnames else None
            out[column + TRUTH_SUFFIX] = values
            out[column + TRUTH_SUFFIX].unit = unit
    return out


def truth_column(row: Any, column: str, truth: Mapping[str, float]) -> float | None:
    """The truth of one summary column of one row (``truth``: that exposure's), else None;
    ``fwhm_arcsec`` at the row's measured plate scale, as in `with_truth`."""
    if column == "fwhm_arcsec":
        px = truth.get("fwhm_px")
        try:
            scale = float(row["fwhm_arcsec"]) / float(row["fwhm_px"])
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            return None
        return px * scale if px is not None and math.isfinite(scale) else None
    return truth.get(column)
