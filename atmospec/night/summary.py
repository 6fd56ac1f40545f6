"""The night summary: one row per exposure (time, type, filter/disperser, airmass, image
quality, status), written as ECSV and Parquet, with its plots.

Built from the night index alone (raw metadata + the figures each task recorded), so it can
be rebuilt at any time, e.g. while the night is still running.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
from astropy.table import MaskedColumn, Table

from atmospec.io import atomic_path, provenance_cards
from atmospec.layout import SUMMARY_STEM, night_plot_dir
from atmospec.night.index import NightIndex, RawRecord, TaskRecord

log = logging.getLogger(__name__)


#: Summary columns taken from the characterize task's figures: (column, metric key, unit).
_QUALITY = (
    ("fwhm_px", "fwhm_px", u.pix),
    ("fwhm_arcsec", "fwhm_arcsec", u.arcsec),
    ("ellipticity", "ellipticity", u.dimensionless_unscaled),
    ("psf_pa", "position_angle_deg", u.deg),
    ("sky_e", "sky_e", u.electron),
    ("sky_e_per_s", "sky_e_per_s", u.electron / u.s),
    ("n_sources", "n_sources", None),
    ("n_saturated", "n_saturated", None),
)

#: Columns from the zeroth-order and extract tasks: (column, metric key, unit).
_SPECTRO = (("zeroth_order_x", "zeroth_order_x", u.pix),
            ("zeroth_order_y", "zeroth_order_y", u.pix),
            ("zeroth_order_saturated", "zeroth_order_saturated", None),
            ("rotation_angle", "spectrum_rotangle_deg", u.deg),
            ("d2ccd", "spectrum_d2ccd_mm", u.mm),
            ("flux_450nm", "spectrum_flux_450nm", u.electron / u.nm),
            ("flux_650nm", "spectrum_flux_650nm", u.electron / u.nm),
            ("flux_850nm", "spectrum_flux_850nm", u.electron / u.nm),
            ("pwv_mm", "atmosphere_pwv_mm", u.mm),
            ("pwv_mm_err", "atmosphere_pwv_mm_err", u.mm),
            ("ozone_du", "atmosphere_ozone_du", None),
            ("ozone_du_err", "atmosphere_ozone_du_err", None),
            ("vaod", "atmosphere_vaod", u.dimensionless_unscaled),
            ("vaod_err", "atmosphere_vaod_err", u.dimensionless_unscaled),
            ("atmosphere_chi2_ndof", "atmosphere_chi2_ndof", None),
            ("atmosphere_error_scale", "atmosphere_error_scale", None))

#: What the ``*_err`` columns of the atmosphere are (the same errors as the fit's plot).
ATMOSPHERE_ERRORS_NOTE = ("pwv_mm_err, ozone_du_err, vaod_err: the fit's errors scaled by "
                          "atmosphere_error_scale = sqrt(chi2/ndof) when above 1 (1: "
                          "unscaled), plus in quadrature the fit's systematic errors "
                          "(docs/atmosphere.md), as the title of each exposure's "
                          "atmosphere plot")


def _number(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return math.nan
    return v


def summary_table(index: NightIndex) -> Table:
    """One row per indexed exposure, in (day_obs, seq_num) order.

    Parameters
    ----------
    index : NightIndex
        The night.

    Returns
    -------
    astropy.table.Table
        Columns ``obs_id, day_obs, seq_num, time_begin, mjd, image_type, target, filter,
        disperser, exptime, airmass``, the image-quality figures (``fwhm_px, fwhm_arcsec,
        ellipticity, psf_pa, sky_e, sky_e_per_s, n_sources, n_saturated``), for dispersed
        exposures the zeroth order (``zeroth_order_x, zeroth_order_y``, and
        ``zeroth_order_saturated``: 1 when its core had saturated pixels, else 0), the
        trace's rotation angle, D2CCD, the extracted flux
        at 450, 650 and 850 nm (e⁻/nm) and the fitted atmosphere (``pwv_mm, ozone_du,
        vaod`` with ``*_err``, ``atmosphere_chi2_ndof``, ``atmosphere_error_scale``: the
        ``*_err`` are the fit's errors × that scale ⊕ its systematic errors,
        `ATMOSPHERE_ERRORS_NOTE`, also in the
        table's ``ATMERRS`` meta), ``status`` (``done``, ``failed``,
        ``pending`` or ``calibration``), ``reason`` (of the failure; of a ``done`` exposure
        the notes of its skipped tasks, e.g. ``fit_atmosphere: skipped: target … is not a
        CALSPEC standard``) and ``duration_s`` (sum of the task times).
    """
    tasks: dict[str, list[TaskRecord]] = {}
    for t in index.tasks():
        tasks.setdefault(t.obs_id, []).append(t)
    return table_of_rows([summary_row(r, tasks.get(r.obs_id, [])) for r in index.raws()])


#: The summary's columns, in order.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "obs_id", "day_obs", "seq_num", "time_begin", "mjd", "image_type", "target", "filter",
    "disperser", "exptime", "airmass", *(c for c, _, _ in _QUALITY),
    *(c for c, _, _ in _SPECTRO), "status", "reason", "duration_s")


def summary_row(record: RawRecord, tasks: Sequence[TaskRecord]) -> dict[str, Any]:
    """One exposure's row of the summary (`summary_table`), from its raw's record and its
    tasks' records.

    Parameters
    ----------
    record : RawRecord
        The indexed raw.
    tasks : sequence of TaskRecord
        The tasks recorded for it (`NightIndex.tasks` of its OBSID).

    Returns
    -------
    dict
        Column → value, every column of `SUMMARY_COLUMNS`.
    """
    info = record.info
    metrics: dict[str, Any] = {}
    for t in tasks:
        metrics.update(t.metrics)
    failed = [t for t in tasks if t.status == "failed"]
    if info.image_type in ("bias", "dark", "flat"):
        status = "calibration"
    elif failed:
        status = "failed"
    elif tasks:
        status = "done"
    else:
        status = "pending"
    row = {
        "obs_id": info.obs_id, "day_obs": info.day_obs, "seq_num": info.seq_num,
        "time_begin": info.datetime_begin.isot if info.datetime_begin is not None else "",
        "mjd": float(info.datetime_begin.mjd) if info.datetime_begin is not None
        else math.nan,
        "image_type": info.image_type, "target": info.target_name or "",
        "filter": info.filter, "disperser": info.disperser,
        "exptime": _number(info.exposure_time), "airmass": _number(info.airmass),
        "status": status,
        # A failure's reason; else the notes of tasks skipped as not applicable.
        "reason": "; ".join(f"{t.task}: {t.reason}" for t in (
            failed or [t for t in tasks if t.status == "done" and t.reason])),
        "duration_s": float(sum(t.duration_s for t in tasks)),
    }
    for column, key, _ in _QUALITY:
        row[column] = _number(metrics.get(key))
    for column, key, _ in _SPECTRO:
        row[column] = _number(metrics.get(key))
    return row


def table_of_rows(rows: Sequence[dict[str, Any]]) -> Table:
    """The summary table of rows made by `summary_row`, in their order (`summary_table`'s
    units, masks and meta).

    Parameters
    ----------
    rows : sequence of dict
        `summary_row` results.

    Returns
    -------
    astropy.table.Table
    """
    names = list(SUMMARY_COLUMNS)
    table = Table(rows=[[r[n] for n in names] for r in rows], names=names) if rows else \
        Table(names=names, dtype=[_dtype(n) for n in names])
    units = {"exptime": u.s, "mjd": u.day, "duration_s": u.s,
             **{c: unit for c, _, unit in _QUALITY + _SPECTRO if unit}}
    for name, unit in units.items():
        table[name].unit = unit
    for name in ("n_sources", "n_saturated"):
        values = np.asarray(table[name], dtype=float)
        bad = ~np.isfinite(values)
        table[name] = MaskedColumn(np.where(bad, 0, values).astype(np.int64), mask=bad,
                                   name=name)
    table.meta["TIMESYS"] = "TAI"
    table.meta["TIMEREF"] = "time_begin and mjd are the exposure starts, TAI"
    table.meta["ATMERRS"] = ATMOSPHERE_ERRORS_NOTE
    return table


def _dtype(name: str) -> type:
    if name in ("day_obs", "seq_num", "n_sources", "n_saturated"):
        return np.int64
    if name in ("obs_id", "time_begin", "image_type", "target", "filter", "disperser",
                "status", "reason"):
        return str
    return np.float64


def write_summary(index: NightIndex, repo: str | Path, *, plots: bool = True,
                  table: Table | None = None) -> dict[str, Path]:
    """Write ``REPO/night/summary.ecsv`` and ``.parquet`` (and the plots).

    Parameters
    ----------
    index : NightIndex
        The night.
    repo : path
        Repository.
    plots : bool
        Also draw the night plots into ``REPO/night/plots/``.
    table : astropy.table.Table, optional
        The summary, when the caller keeps it up to date row by row (``atmospec watch``);
        default: `summary_table` of the index.

    Returns
    -------
    dict
        ``ecsv``, ``parquet`` and plot paths.
    """
    repo = Path(repo)
    table = summary_table(index) if table is None else table.copy(copy_data=False)
    for key, value, _ in provenance_cards("night_summary"):
        if key != "HISTORY":
            table.meta[key] = value
    stem = repo / SUMMARY_STEM
    stem.parent.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    with atomic_path(stem.with_suffix(".ecsv")) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    out["ecsv"] = stem.with_suffix(".ecsv")
    parquet = table.copy()
    for name in ("n_sources", "n_saturated"):
        parquet[name] = parquet[name].filled(-1)
    with atomic_path(stem.with_suffix(".parquet")) as tmp:
        parquet.write(tmp, format="parquet", overwrite=True)
    out["parquet"] = stem.with_suffix(".parquet")
    if plots:
        from atmospec.plots.night import (
            plot_atmosphere_series,
            plot_night_quality,
            plot_source_positions,
        )

        plot_dir = night_plot_dir(repo)
        out["quality_plot"] = plot_night_quality(table, plot_dir / "image_quality.png")
        out["atmosphere_plot"] = plot_atmosphere_series(table, plot_dir / "atmosphere.png")
        catalogs = [Path(t.outputs["catalog"]) for t in index.tasks()
                    if t.task == "characterize" and t.status == "done" and "catalog" in
                    t.outputs]
        out["positions_plot"] = plot_source_positions(table, catalogs,
                                                      plot_dir / "source_positions.png")
    log.info("night summary: %s (%d exposures)", out["ecsv"], len(table))
    return out
