"""Electro-optical figures of the sensor, per amplifier, as the camera team lists them.

One table, one row per amp (HDU order), columns:

================== ========== ==========================================================
column             unit       how
================== ========== ==========================================================
gain               e⁻/ADU     PTC product (``GAIN``), else the camera's nominal gain
read_noise         e⁻         clipped σ of the overscan-subtracted serial overscan of the
                              bias frames (RMS over frames) × gain
total_noise        e⁻         median over boxes of `EoConfig.noise_box_rows` rows of the
                              σ of the raw serial overscan (no overscan subtraction: row
                              drifts and pickup stay in), RMS over the bias frames, × gain
full_well          e⁻         PTC ``TURNOFF`` (ADU) × gain; NaN without a PTC
dark_current       e⁻/s/px    median of the amp in the master dark
dark_current_95    e⁻/s/px    95th percentile of the amp in the master dark (CCD-014)
bright_pixels      pix        hot pixels of the master dark outside bright columns
bright_columns                columns masked whole in the dark
dark_pixels        pix        cold pixels of the master flat outside dark columns
dark_columns                  columns masked whole in the flat
defect_fraction    %          pixels of the amp that are bright or dark pixels or in a
                              bright or dark column (CCD-012)
cti_serial                    EPER on flat raws: charge in the first ``eper_columns``
                              serial-overscan columns / (last data column level × number
                              of serial transfers of that column)
cti_parallel                  EPER, the same with the first ``eper_rows`` parallel-overscan
                              rows and the parallel transfers of the last data row
linearity_residual %          max |fractional residual| of a straight line fitted to the
                              PTC ramp (``PTC_MEAN`` vs ``PTC_EXPTIME``); NaN without
================== ========== ==========================================================

`REFERENCE_LIMITS` holds the values drawn as reference lines in the summary plot: the
specifications of `atmospec.calib.eo_specs` (the shipped table ``data/eo/specs.ecsv``),
never numbers of their own. No figure passes or fails here: `atmospec.calib.eo_specs
.verdict_table` judges them.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
from astropy import units as u
from astropy.table import MaskedColumn, Table

from atmospec.calib.defects import DefectMaps, FindDefectsConfig, detect_defects
from atmospec.calib.eo_specs import spec_by_id, specs_for
from atmospec.calib.inputs import frames_of_kind, handle_bad_inputs
from atmospec.calib.products.detector import detector_meta
from atmospec.calib.products.ptc import Ptc
from atmospec.camera.description import Camera, load_camera
from atmospec.camera.raw import RawFrame, read_raw
from atmospec.errors import BadInputError
from atmospec.exposure import Exposure
from atmospec.io import write_text_atomic
from atmospec.isr.gain import AmpGains, nominal_gains
from atmospec.isr.overscan import (
    OverscanConfig,
    overscan_noise,
    robust_sigma,
    serial_overscan_columns,
    subtract_overscan,
)

log = logging.getLogger(__name__)

__all__ = [
    "EO_COLUMNS",
    "REFERENCE_LIMITS",
    "EoConfig",
    "eo_figures",
    "eper_cti",
    "max_fractional_deviation",
    "read_noise_adu",
    "reference_limits",
    "total_noise_adu",
    "write_eo",
]

#: The specification each reference line of the summary plot shows: column -> spec id.
#: ``cti_serial``/``cti_parallel`` (EPER on any flats) are judged as the superflats'
#: figures are; ``linearity_residual`` (against exposure time) stands in for the
#: photodiode-based figure of CCD-009 when there is no photodiode.
_REFERENCE_SPECS: Mapping[str, str] = MappingProxyType({
    "read_noise": "CCD-007",
    "dark_current_95": "CCD-014",
    "cti_serial": "CCD-010",
    "cti_parallel": "CCD-011",
    "full_well": "CCD-008",
    "linearity_residual": "CCD-009",
})


def _reference(column: str, spec_id: str) -> tuple[str, float, str]:
    # The row written for this very figure if there is one (its title says which frames).
    own = [s for s in specs_for(column) if s.spec == spec_id]
    spec = own[0] if own else spec_by_id(spec_id)
    return spec.comparison, spec.threshold, f"{spec.spec}: {spec.title}"


#: Reference limits drawn on the summary plot: column -> (comparison, value, label), from
#: the specification table (`atmospec.calib.eo_specs`): read noise < 8 e⁻ (CCD-007), dark
#: current 95th percentile < 0.2 e⁻/s (CCD-014), serial CTI < 5e-6 (CCD-010), parallel
#: < 3e-6 (CCD-011), full well < 175 ke⁻ (CCD-008, the blooming full well eotest compares
#: its PTC full well with), non-linearity < 2 % (CCD-009). Defect counts are limited by
#: `DEFECT_REFERENCE_FRACTION` of an amp's pixels (see `reference_limits`).
REFERENCE_LIMITS: Mapping[str, tuple[str, float, str]] = MappingProxyType(
    {column: _reference(column, spec_id) for column, spec_id in _REFERENCE_SPECS.items()})

#: Reference limit of the bright (and of the dark) defective pixels of an amp, as a fraction
#: of its pixels (CCD-012, "< 0.5 % defective pixels").
DEFECT_REFERENCE_FRACTION = spec_by_id("CCD-012").threshold / 100.0


def reference_limits(camera: Camera | None = None) -> dict[str, tuple[str, float, str]]:
    """`REFERENCE_LIMITS` plus the defect-count limits for ``camera``'s amp size."""
    camera = camera or load_camera("latiss")
    n_pix = camera.data_bbox.nx * camera.data_bbox.ny
    label = f"CCD-012: < {100 * DEFECT_REFERENCE_FRACTION:g} % of amp"
    limit = DEFECT_REFERENCE_FRACTION * n_pix
    return {**REFERENCE_LIMITS, "bright_pixels": ("<", limit, label),
            "dark_pixels": ("<", limit, label)}

#: Columns of the EO table after ``amp``: (name, unit).
EO_COLUMNS: tuple[tuple[str, u.UnitBase | None], ...] = (
    ("gain", u.electron / u.adu),
    ("read_noise", u.electron),
    ("total_noise", u.electron),
    ("full_well", u.electron),
    ("dark_current", u.electron / u.s),
    ("dark_current_95", u.electron / u.s),
    ("bright_pixels", u.pix),
    ("bright_columns", None),
    ("dark_pixels", u.pix),
    ("dark_columns", None),
    ("defect_fraction", u.percent),
    ("cti_serial", None),
    ("cti_parallel", None),
    ("linearity_residual", u.percent),
)


@dataclass(frozen=True)
class EoConfig:
    """How the electro-optical figures are measured."""

    overscan: OverscanConfig = field(default_factory=OverscanConfig)
    """Overscan subtraction of the bias frames before their noise is measured."""
    noise_box_rows: int = 100
    """Rows of each box of the serial overscan whose σ gives the total noise (eotest's read
    noise boxes; the median over the boxes is kept)."""
    dark_percentile: float = 95.0
    """Percentile of the master dark's pixels reported as ``dark_current_95`` (CCD-014)."""
    eper_columns: int = 3
    """Serial-overscan columns right after the data summed for the serial EPER."""
    eper_rows: int = 3
    """Parallel-overscan rows right after the data summed for the parallel EPER."""
    eper_bias_skip: int = 10
    """Overscan columns (rows) skipped before the bias level of the EPER is measured, so
    that no deferred charge enters it."""
    eper_clip_sigma: float = 5.0
    """Rows (columns) whose EPER charge or last-pixel level is further than this many robust
    σ from the median are left out (cosmic rays, defects)."""
    eper_min_level_adu: float = 1000.0
    """Flats whose last data pixels are fainter than this (ADU) give no CTI."""
    linearity_range_e: tuple[float, float] = (1_000.0, 90_000.0)
    """Signal range (e⁻) of the PTC ramp points in the linearity fit (capped at the turnoff)."""
    defects: FindDefectsConfig = field(default_factory=FindDefectsConfig)
    """Defect finding on the masters (bright and dark pixel counts)."""


def read_noise_adu(raw: RawFrame, config: EoConfig | None = None) -> np.ndarray:
    """Read noise of every amp of one bias frame, ADU, from its serial overscan.

    The raw segments are copied, overscan-subtracted row by row, and the clipped standard
    deviation of the serial overscan is taken (`atmospec.isr.overscan.overscan_noise`).
    """
    config = config or EoConfig()
    segments = np.array(raw.segments, dtype=np.float32, copy=True)
    subtract_overscan(segments, raw.camera, config.overscan)
    return overscan_noise(segments, raw.camera, config.overscan)


def total_noise_adu(raw: RawFrame, config: EoConfig | None = None) -> np.ndarray:
    """Total noise of every amp of one bias frame, ADU: the σ of the raw serial overscan in
    boxes of ``noise_box_rows`` rows, median over the boxes.

    Nothing is subtracted but each box's mean, so what varies along the rows within a box
    (bias drifts, pickup) counts, as in the camera team's total noise; the read noise
    (`read_noise_adu`) is that noise after the row-by-row overscan subtraction.
    """
    config = config or EoConfig()
    camera = raw.camera
    ny = camera.data_bbox.ny
    rows = max(2, min(config.noise_box_rows, ny))
    n_box = ny // rows
    cols = serial_overscan_columns(camera, config.overscan)
    region = np.asarray(raw.segments[:, : n_box * rows, cols], dtype=np.float64)
    boxes = region.reshape(camera.n_amps, n_box, -1)
    return np.median(np.std(boxes, axis=2, ddof=1), axis=1)


def _clipped_ratio(num: np.ndarray, den: np.ndarray, n_sigma: float) -> np.ndarray:
    """Per amp (first axis), Σ num / Σ den over the entries where neither is an outlier."""
    keep = np.ones(num.shape, dtype=bool)
    for x in (num, den):
        med = np.median(x, axis=1, keepdims=True)
        sig = np.maximum(robust_sigma(x, axis=1), 1e-6)[:, None]
        keep &= np.abs(x - med) <= n_sigma * sig
    # A frame without light (level ~0) gives inf/NaN here; the caller blanks it.
    with np.errstate(divide="ignore", invalid="ignore"):
        return (num * keep).sum(axis=1) / (den * keep).sum(axis=1)


def eper_cti(raw: RawFrame, config: EoConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Serial and parallel CTI of every amp of one flat, by extended pixel edge response.

    With a charge-transfer inefficiency ε per transfer, a pixel transferred n times leaves
    about ε·n of its charge behind, which is read in the pixels that follow it: the first
    overscan pixels after a flat of level S hold ε·n·S in all. Hence

        ε = Σ (first overscan pixels − bias) / (n × (last data pixel − bias)),

    with n = number of transfers of the last data pixel (its readout index + 1: 512 serial
    transfers for LATISS, 3 prescan + 509 data columns; 2000 parallel ones). The bias of
    each row is the median of the serial overscan beyond ``eper_bias_skip`` columns; for the
    parallel EPER, the column's level in the parallel overscan beyond ``eper_bias_skip``
    rows is removed as well (column bias structure runs into those rows).

    Parameters
    ----------
    raw : RawFrame
        A flat-field raw frame (segments in readout orientation, ADU; not modified).
    config : EoConfig, optional
        Number of overscan pixels summed, skips and clipping.

    Returns
    -------
    serial, parallel : numpy.ndarray
        ``(n_amps,)`` CTI per transfer (NaN where the flat is too faint).
    """
    config = config or EoConfig()
    camera = raw.camera
    seg = raw.segments
    data = camera.data_bbox
    sov = camera.serial_overscan_bbox
    pov = camera.parallel_overscan_bbox
    first_col = data.x0 + data.nx
    first_row = data.y0 + data.ny
    if sov.x0 != first_col or pov.y0 != first_row:
        raise ValueError(f"{camera.name}: EPER needs the overscans right after the data "
                         f"(serial overscan at column {sov.x0}, data ends at {first_col})")

    bias_cols = seg[:, :, sov.x0 + config.eper_bias_skip: sov.x0 + sov.nx]
    row_bias = np.median(bias_cols, axis=2)
    rows = slice(data.y0, data.y0 + data.ny)
    level_rows = seg[:, rows, first_col - 1] - row_bias[:, rows]
    trail_rows = (seg[:, rows, first_col: first_col + config.eper_columns]
                  - row_bias[:, rows, None]).sum(axis=2)
    serial = _clipped_ratio(trail_rows, level_rows, config.eper_clip_sigma) / first_col

    cols = slice(data.x0, data.x0 + data.nx)
    # Only the last data row and the parallel overscan: not a copy of the whole segment.
    top = slice(first_row - 1, pov.y0 + pov.ny)
    sub = seg[:, top, cols] - row_bias[:, top, None]
    col_bias = np.median(sub[:, 1 + config.eper_bias_skip:], axis=1)
    level_cols = sub[:, 0] - col_bias
    trail_cols = (sub[:, 1: 1 + config.eper_rows] - col_bias[:, None, :]).sum(axis=1)
    parallel = _clipped_ratio(trail_cols, level_cols, config.eper_clip_sigma) / first_row

    faint_s = np.median(level_rows, axis=1) < config.eper_min_level_adu
    faint_p = np.median(level_cols, axis=1) < config.eper_min_level_adu
    serial[faint_s] = np.nan
    parallel[faint_p] = np.nan
    if faint_s.any() or faint_p.any():
        log.warning("%s: %d amps too faint for EPER (< %.0f ADU)", raw.path.name,
                    int((faint_s | faint_p).sum()), config.eper_min_level_adu)
    return serial, parallel


#: Column names (first found wins) of the PTC ramp: mean signal (ADU) and exposure time (s)
#: of each flat pair, one array per amp row (``PTC_*``: atmospec's PTC product; ``RAW_*``:
#: Rubin's PtcDataset names, upper-cased).
_RAMP_MEANS = ("PTC_MEAN", "RAW_MEANS")
_RAMP_TIMES = ("PTC_EXPTIME", "RAW_EXP_TIMES", "EXP_TIMES")


@dataclass(frozen=True)
class _Ptc:
    gains: AmpGains
    turnoff_adu: np.ndarray
    linearity_pct: np.ndarray


def max_fractional_deviation(x: np.ndarray, means: np.ndarray, lo: float, hi: float
                             ) -> float:
    """Max |fractional residual| (%) of a line fitted to a ramp between ``lo`` and ``hi``.

    Parameters
    ----------
    x : numpy.ndarray
        What the signal should be proportional to: exposure time, or the photodiode charge
        (the camera team's linearity, CCD-009).
    means : numpy.ndarray
        Mean signal of each point, ADU.
    lo, hi : float
        Range of ``means`` fitted and judged, ADU.

    Returns
    -------
    float
        %, NaN with fewer than 3 points in the range.

    Notes
    -----
    The fit minimises the fractional residuals (weights 1/signal), as the figure of merit
    is fractional; an intercept absorbs a shutter-timing offset.
    """
    ok = np.isfinite(x) & np.isfinite(means) & (means >= lo) & (means <= hi)
    if ok.sum() < 3:
        return float("nan")
    t, m = x[ok], means[ok]
    design = np.column_stack([t, np.ones_like(t)]) / m[:, None]
    coef, *_ = np.linalg.lstsq(design, np.ones_like(m), rcond=None)
    fit = coef[0] * t + coef[1]
    return float(100.0 * np.max(np.abs(m - fit) / fit))


def _read_ptc(ptc: Ptc, camera: Camera, config: EoConfig) -> _Ptc:
    """Gains, turnoff and (if the ramp is there) linearity residual from a PTC table."""
    gains = ptc.gains(camera)
    table = ptc.table
    rows = {str(a).strip(): i for i, a in enumerate(table["AMP"])}
    idx = [rows[name] for name in camera.amp_names]
    n = camera.n_amps
    if "TURNOFF" in table.colnames:
        turnoff = np.asarray(table["TURNOFF"], dtype=float)[idx]
    else:
        log.info("%s: no TURNOFF column: full well left NaN", ptc.name)
        turnoff = np.full(n, np.nan)
    means_col = next((c for c in _RAMP_MEANS if c in table.colnames), None)
    times_col = next((c for c in _RAMP_TIMES if c in table.colnames), None)
    linearity = np.full(n, np.nan)
    if means_col is not None and times_col is not None:
        lo_e, hi_e = config.linearity_range_e
        for i, row in enumerate(idx):
            means = np.asarray(table[means_col][row], dtype=float).ravel()
            times = np.asarray(table[times_col][row], dtype=float).ravel()
            if means.shape != times.shape:
                raise BadInputError(ptc.source or None, f"{means_col} and {times_col} of amp "
                                                        f"{camera.amp_names[i]} differ in length")
            g = gains.gain[i]
            hi = hi_e / g if not np.isfinite(turnoff[i]) else min(hi_e / g, turnoff[i])
            linearity[i] = max_fractional_deviation(times, means, lo_e / g, hi)
    else:
        log.info("%s: no PTC ramp (%s / %s): linearity residual left NaN", ptc.name,
                 "|".join(_RAMP_MEANS), "|".join(_RAMP_TIMES))
    return _Ptc(gains, turnoff, linearity)


def _check_master(product: Exposure | None, kind: str, camera: Camera) -> None:
    if product is None:
        return
    if product.shape != camera.detector_shape:
        raise BadInputError(None, f"master {kind} has shape {product.shape}, expected "
                                  f"{camera.detector_shape}")
    obstype = str(product.metadata.get("OBSTYPE", kind)).strip().lower()
    if obstype != kind:
        raise BadInputError(None, f"master {kind} is a {obstype}")


def eo_figures(
    bias_raws: Sequence[RawFrame | str | Path],
    flat_raws: Sequence[RawFrame | str | Path],
    dark_master: Exposure | None = None,
    flat_master: Exposure | None = None,
    ptc: Ptc | None = None,
    config: EoConfig | None = None,
    camera: Camera | None = None,
    defects: DefectMaps | None = None,
    *,
    skip_bad: bool = False,
    on_bias: Callable[[RawFrame], None] | None = None,
) -> Table:
    """Measure the camera team's electro-optical figures of every amplifier.

    Parameters
    ----------
    bias_raws : sequence of RawFrame or path
        Bias frames (read noise); may be empty (read noise NaN).
    flat_raws : sequence of RawFrame or path
        Flat-field raws (serial and parallel CTI by EPER, averaged over the flats); may be
        empty (CTI NaN).
    dark_master : Exposure, optional
        Master dark in e⁻/s (dark current, bright pixels and columns).
    flat_master : Exposure, optional
        Normalised master flat (dark pixels and columns).
    ptc : Ptc, optional
        PTC product: table with ``AMP``, ``GAIN``, ``READ_NOISE``, optionally
        ``TURNOFF`` (ADU) and the ramp arrays ``PTC_MEAN`` (ADU) / ``PTC_EXPTIME`` (s)
        (``RAW_MEANS`` / ``RAW_EXP_TIMES`` accepted).
        Without it the nominal gains are used and full well and linearity are NaN.
    config : EoConfig, optional
        Measurement settings.
    camera : Camera, optional
        Detector layout; LATISS by default.
    defects : DefectMaps, optional
        Defects already found in these masters (`atmospec.calib.defects.detect_defects`):
        reused for the counts instead of searching again.
    skip_bad : bool
        Log and leave out unusable raw frames (unreadable, damaged, truncated, of another
        image type) instead of raising, as the other builders do
        (`atmospec.calib.inputs.handle_bad_inputs`).
    on_bias : callable, optional
        Called with each bias frame once read (not to be modified): further per-frame
        figures (`atmospec.calib.eo_bias.BiasSequence.add`) without reading it again.

    Returns
    -------
    astropy.table.Table
        Column ``amp`` then `EO_COLUMNS` (units attached); defect counts are masked when the
        corresponding master is absent. ``meta`` records the inputs and the reference limits.
    """
    config = config or EoConfig()
    camera = camera or load_camera("latiss")
    n = camera.n_amps
    _check_master(dark_master, "dark", camera)
    _check_master(flat_master, "flat", camera)

    if ptc is not None:
        ptc_data = _read_ptc(ptc, camera, config)
        gains = ptc_data.gains
        full_well = ptc_data.turnoff_adu * gains.gain
        linearity = ptc_data.linearity_pct
    else:
        log.info("no PTC given: nominal gains, full well and linearity left NaN")
        gains = nominal_gains(camera)
        full_well = np.full(n, np.nan)
        linearity = np.full(n, np.nan)

    noise_var, total_var = [], []
    for raw in _checked_raws(bias_raws, "bias", camera, skip_bad):
        noise_var.append(read_noise_adu(raw, config) ** 2)
        total_var.append(total_noise_adu(raw, config) ** 2)
        if on_bias is not None:
            on_bias(raw)
    read_noise = (np.sqrt(np.mean(noise_var, axis=0)) * gains.gain if noise_var
                  else np.full(n, np.nan))
    total_noise = (np.sqrt(np.mean(total_var, axis=0)) * gains.gain if total_var
                   else np.full(n, np.nan))

    cti = [eper_cti(raw, config) for raw in _checked_raws(flat_raws, "flat", camera, skip_bad)]
    if cti:
        cti_serial = np.nanmean([c[0] for c in cti], axis=0)
        cti_parallel = np.nanmean([c[1] for c in cti], axis=0)
    else:
        cti_serial = cti_parallel = np.full(n, np.nan)

    dark_current = np.full(n, np.nan)
    dark_95 = np.full(n, np.nan)
    if dark_master is not None:
        for i, amp in enumerate(camera.amplifiers):
            values = dark_master.image[camera.amp_slices(amp)]
            values = values[np.isfinite(values)]
            dark_current[i] = float(np.median(values))
            dark_95[i] = float(np.percentile(values, config.dark_percentile))

    table = Table()
    table["amp"] = np.array(camera.amp_names, dtype=str)
    values = {"gain": gains.gain, "read_noise": read_noise, "total_noise": total_noise,
              "full_well": full_well, "dark_current": dark_current,
              "dark_current_95": dark_95, "cti_serial": cti_serial,
              "cti_parallel": cti_parallel, "linearity_residual": linearity}
    counts: dict[str, np.ndarray] = {}
    if dark_master is not None or flat_master is not None:
        maps = defects
        if maps is None:
            maps = detect_defects(dark_master, flat_master, config.defects, camera)
        stats = [maps.amp_stats[name] for name in camera.amp_names]
        counts = {"bright_pixels": "n_hot", "bright_columns": "n_hot_columns",
                  "dark_pixels": "n_cold", "dark_columns": "n_cold_columns"}
        counts = {col: np.array([s[key] for s in stats], dtype=np.int64)
                  for col, key in counts.items()}
        # Bright and dark pixels and columns only: pixels the masters have no data for
        # (e.g. lost to cosmic rays in every dark) are not defects of the sensor.
        defective = maps.hot | maps.cold
        values["defect_fraction"] = np.array([100.0 * float(defective[camera.amp_slices(a)]
                                                            .mean()) for a in camera.amplifiers])
    for name, unit in EO_COLUMNS:
        if name == "defect_fraction":
            data = values.get(name, np.full(n, np.nan))
            table[name] = MaskedColumn(data, mask=~np.isfinite(data))
        elif name in values:
            table[name] = np.asarray(values[name], dtype=np.float64)
        else:
            source = dark_master if name.startswith("bright") else flat_master
            data = counts.get(name, np.zeros(n, dtype=np.int64))
            table[name] = MaskedColumn(data, mask=np.full(n, source is None))
        table[name].unit = unit
    table.meta.update({
        **detector_meta(camera),
        "GAIN_SOURCE": gains.source,
        "N_BIAS": len(noise_var),
        "N_FLAT": len(cti),
        "EPER_COLUMNS": config.eper_columns,
        "EPER_ROWS": config.eper_rows,
        "REFERENCE_LIMITS": {k: {"comparison": c, "value": v, "label": lbl}
                             for k, (c, v, lbl) in reference_limits(camera).items()},
    })
    log.info("EO figures: median read noise %.2f e-, dark current %.4f e-/s, serial CTI "
             "%.2e, parallel CTI %.2e", np.nanmedian(read_noise) if noise_var else np.nan,
             np.nanmedian(dark_current) if dark_master is not None else np.nan,
             np.nanmedian(cti_serial) if cti else np.nan,
             np.nanmedian(cti_parallel) if cti else np.nan)
    return table


def _checked_raws(raws: Sequence[RawFrame | str | Path], kind: str, camera: Camera,
                  skip_bad: bool) -> Iterator[RawFrame]:
    """The usable frames of ``raws``, read one at a time.

    Every file's header is checked first (`atmospec.calib.inputs.frames_of_kind`: readable, a
    ``kind`` frame), then each is read (`read_raw`: truncated or damaged data); a bad one is
    refused, or logged and left out with ``skip_bad``, as the masters' inputs are.
    """
    frames = [item for item in raws if isinstance(item, RawFrame)]
    usable, issues = frames_of_kind([item for item in raws if not isinstance(item, RawFrame)],
                                    kind)
    checked: list[RawFrame | Path] = [*frames, *(path for path, _ in usable)]
    handle_bad_inputs(issues, skip_bad, log)
    for item in checked:
        if isinstance(item, RawFrame):
            yield item
            continue
        try:
            raw = read_raw(item, camera)
        except BadInputError as exc:
            handle_bad_inputs([(item, exc.problem)], skip_bad, log)
            continue
        yield raw


def write_eo(table: Table, out_dir: str | Path, stem: str = "eo_figures") -> Path:
    """Write the EO table as ECSV, atomically (its summary plot is
    `atmospec.plots.eo.plot_eo_summary`).

    Parameters
    ----------
    table : astropy.table.Table
        Output of `eo_figures`.
    out_dir : path
        Directory (created if needed).
    stem : str
        Base name of ``<stem>.ecsv``.

    Returns
    -------
    pathlib.Path
        The ECSV path.
    """
    out_dir = Path(out_dir)
    buf = io.StringIO()
    table.write(buf, format="ascii.ecsv")
    ecsv = write_text_atomic(buf.getvalue(), out_dir / f"{stem}.ecsv")
    log.info("wrote %s", ecsv)
    return ecsv
