"""The bias figures of an EO acquisition: stability over the run, level shifts within a
frame, and the correlation of the amps' noise.

Three figures of the camera team's EO analysis (eo_pipe's ``biasStabilityTask``,
``biasShiftsTask`` and ``raftAmpCorrelationsTask``; eotest's bias-stability job), measured
here on the bias acquisition's frames (``bias_bias_*``) one frame at a time
(`BiasSequence`), so that memory holds one frame and the previous frame's residual:

bias stability
    per frame and amp, the clipped mean of the raw imaging region and of the raw serial
    overscan (ADU: both follow the amp's bias level), and the clipped σ of the
    overscan-subtracted imaging region (one row in `BiasFiguresConfig.stats_row_step`);
    the figures are, per amp, the max − min of each mean over the frames
    (``bias_mean_range``, ``bias_overscan_range``) and the standard deviation over the
    frames of that σ (``bias_stdev_scatter``). The series (with each
    frame's MJD) is kept for the detector's JSON.
bias shifts
    abrupt jumps of the bias level along one frame's readout: the serial-overscan mean of
    each row, in readout order, is scanned with a step statistic (`find_bias_shifts`); the
    figures are the number of shifts per amp over the frames (``bias_shifts``) and the
    largest |amplitude| (``bias_shift_max``, ADU, 0 without any).
amp-to-amp correlation
    the correlation coefficient of every pair of amps' imaging pixels read at the same time
    (raw segments share the readout clock: pixel ``(y, x)`` of every segment is read at the
    same instant), after overscan subtraction, on the difference of consecutive frames (the
    fixed bias structure, identical in both, cancels; what is left is the read noise and
    whatever pickup the amps share). The figure is the largest |coefficient| of each amp
    with another (``amp_correlation_max``); the 16 × 16 matrix is kept for the detector's
    JSON.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table

from atmospec.camera.description import Camera
from atmospec.camera.raw import RawFrame
from atmospec.isr.overscan import OverscanConfig, serial_overscan_columns, subtract_overscan
from atmospec.stats import clipped_mean_var, robust_sigma

log = logging.getLogger(__name__)

__all__ = [
    "BIAS_COLUMNS",
    "BiasFigures",
    "BiasFiguresConfig",
    "BiasSequence",
    "BiasShift",
    "correlation_from_gram",
    "find_bias_shifts",
    "overscan_row_means",
]

#: Pixels per block of the amp correlations' float64 cross-products (16 MB for 16 amps).
_CHUNK = 131_072

#: Per-amp figures of `BiasFigures.figures`: (name, unit).
BIAS_COLUMNS: tuple[tuple[str, str | None], ...] = (
    ("bias_mean_range", "adu"),
    ("bias_overscan_range", "adu"),
    ("bias_stdev_scatter", "adu"),
    ("bias_shifts", None),
    ("bias_shift_max", "adu"),
    ("amp_correlation_max", None),
)


@dataclass(frozen=True)
class BiasFiguresConfig:
    """How the bias stability, shifts and amp correlations are measured."""

    overscan: OverscanConfig = field(default_factory=OverscanConfig)
    """Overscan columns used (its ``skip``) and the row-by-row subtraction before the σ of
    the imaging region and the amp correlations."""
    clip_sigma: float = 5.0
    """Pixels further than this many robust σ from an amp's median are left out of its
    means, σ and correlations (cosmic rays, hot pixels)."""
    shift_window: int = 30
    """Rows averaged on each side of a row by the step statistic of the bias shifts (eo_pipe
    scans with a 30-row kernel)."""
    shift_threshold: float = 3.0
    """A shift is a step larger than this many times the noise of one row's overscan mean
    (eo_pipe: 3)."""
    shift_skip_rows: int = 30
    """First rows read that are not searched (the bias settles at the start of the readout;
    eo_pipe skips 30)."""
    stats_row_step: int = 4
    """Every n-th row of the imaging region enters its mean and σ: the 130 000 pixels of
    one row in four of an LSST amp give them to 0.01 ADU at 6 ADU of noise, where every
    pixel would cost four times the time for nothing."""


def _clipped_mean_std(x: np.ndarray, n_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Clipped mean and standard deviation of each row of ``x``
    (`atmospec.stats.clipped_mean_var`, one round of clipping on its subsample)."""
    mean, var, count = clipped_mean_var(x, n_sigma, n_iter=1)
    ok = count >= 2
    return np.where(ok, mean, np.nan), np.where(ok, np.sqrt(np.maximum(var, 0.0)), np.nan)


def overscan_row_means(segments: np.ndarray, camera: Camera,
                       config: OverscanConfig | None = None) -> np.ndarray:
    """Mean of the serial overscan of every data row, in readout order.

    Parameters
    ----------
    segments : numpy.ndarray
        ``(n_amps, ny, nx)`` raw segments (readout orientation: row 0 read first), ADU.
    camera : Camera
        Serial-overscan box.
    config : OverscanConfig, optional
        Columns skipped at either end of the overscan.

    Returns
    -------
    numpy.ndarray
        ``(n_amps, data rows)`` float64, ADU.
    """
    config = config or OverscanConfig()
    rows = slice(camera.data_bbox.y0, camera.data_bbox.y0 + camera.data_bbox.ny)
    cols = serial_overscan_columns(camera, config)
    return np.mean(segments[:, rows, cols], axis=2, dtype=np.float64)


@dataclass(frozen=True)
class BiasShift:
    """One abrupt change of an amp's bias level along the readout."""

    row: int
    """First row (readout order) at the new level."""
    amplitude: float
    """New level − old one, ADU: the jump at the row between the straight lines fitted to
    the `BiasFiguresConfig.shift_window` rows on each side (a drift's slope does not bias
    it, as it would the difference of the two windows' means)."""
    noise: float
    """Noise of one row's overscan mean, ADU (what the threshold is in units of)."""


def _row_noise(rows: np.ndarray) -> np.ndarray:
    # The row-to-row differences see the white noise of each row's mean (√2 of it) but
    # hardly the slow drifts or the few steps: a high-pass estimate, robust by the MAD.
    return np.maximum(robust_sigma(np.diff(rows, axis=-1), axis=-1) / np.sqrt(2.0), 1e-6)


def _line_at(x: np.ndarray, at: float) -> float:
    """Value at index ``at`` of the least-squares line through ``x`` against its index."""
    t = np.arange(x.size, dtype=np.float64)
    tm = t.mean()
    slope = np.dot(t - tm, x - x.mean()) / np.dot(t - tm, t - tm)
    return float(x.mean() + slope * (at - tm))


def find_bias_shifts(rows: np.ndarray, config: BiasFiguresConfig | None = None
                     ) -> list[list[BiasShift]]:
    """Abrupt shifts of the bias level in each amp's sequence of row means.

    For every row ``r`` the step statistic is ``S(r) = mean(x[r : r + w]) − mean(x[r − w :
    r])`` (``w`` = ``shift_window``): a level change of amplitude A at ``r`` gives ``S = A``,
    white noise of σ per row gives ``S`` a noise of ``σ·√(2/w)``. Rows where ``|S|`` exceeds
    ``shift_threshold`` × σ (σ from the row-to-row differences, `_row_noise`) form runs;
    each run is one candidate, at its largest ``|S|``. A candidate is kept only if the
    level jumps *at* that row: the straight lines fitted to the ``w`` rows before and to the
    ``w`` rows after it, both evaluated at the boundary between them, must differ by more
    than the threshold too, in the direction of the step. A linear drift gives no such
    jump (the two lines meet), nor does a smooth wave whose period is a few windows (the
    lines follow its slopes), however large ``S`` grows on them; eo_pipe's
    ``biasShiftsTask`` rejects drifts with a test on the two windows' slopes instead.

    Parameters
    ----------
    rows : numpy.ndarray
        ``(n_amps, n_rows)`` or ``(n_rows,)`` row means (`overscan_row_means`), ADU.
    config : BiasFiguresConfig, optional
        Window, threshold and the first rows skipped.

    Returns
    -------
    list of list of BiasShift
        Per amp, its shifts in row order (empty for an amp with none, and for rows too few
        for two windows).
    """
    config = config or BiasFiguresConfig()
    x = np.atleast_2d(np.asarray(rows, dtype=np.float64))
    n_amps, n = x.shape
    w = int(config.shift_window)
    out: list[list[BiasShift]] = [[] for _ in range(n_amps)]
    if w < 2 or n < 2 * w + 1:
        return out
    noise = _row_noise(x)
    csum = np.concatenate([np.zeros((n_amps, 1)), np.cumsum(x, axis=1)], axis=1)
    r = np.arange(w, n - w + 1)
    step = np.zeros((n_amps, n))
    step[:, r] = ((csum[:, r + w] - csum[:, r]) - (csum[:, r] - csum[:, r - w])) / w
    over = np.abs(step) > config.shift_threshold * noise[:, None]
    over[:, : max(config.shift_skip_rows, w)] = False
    for i in range(n_amps):
        if not over[i].any():
            continue
        edges = np.flatnonzero(np.diff(np.concatenate([[0], over[i].view(np.int8), [0]])))
        for start, stop in edges.reshape(-1, 2):
            peak = int(start + np.argmax(np.abs(step[i, start:stop])))
            amplitude = float(step[i, peak])
            jump = (_line_at(x[i, peak: peak + w], -0.5)
                    - _line_at(x[i, peak - w: peak], w - 0.5))
            if np.sign(jump) == np.sign(amplitude) and abs(jump) >= 0.7 * abs(amplitude) and \
                    abs(jump) > config.shift_threshold * noise[i]:
                out[i].append(BiasShift(peak, float(jump), float(noise[i])))
    return out


def correlation_from_gram(gram: np.ndarray) -> np.ndarray:
    """Correlation coefficients from a matrix of centred cross-products (sums of x_a·x_b)."""
    d = np.sqrt(np.diag(gram))
    with np.errstate(invalid="ignore", divide="ignore"):
        return gram / np.outer(d, d)


@dataclass(frozen=True)
class BiasFigures:
    """The bias figures of one detector."""

    figures: dict[str, np.ndarray]
    """Per-amp figures (HDU order), `BIAS_COLUMNS`."""
    series: Table
    """One row per (frame, amp): ``frame``, ``mjd``, ``amp``, ``mean``, ``overscan_mean``
    (ADU, raw), ``corrected_mean`` (imaging − overscan mean, ADU), ``stdev`` (ADU,
    overscan-subtracted imaging)."""
    shifts: Table
    """One row per shift: ``frame``, ``amp``, ``row``, ``amplitude`` (ADU), ``noise``
    (ADU)."""
    correlation: Table
    """``amp`` and one column per amp: the correlation coefficients (NaN with fewer than
    two frames)."""


class BiasSequence:
    """Collects the bias figures frame by frame (`add`), then gives them (`result`).

    Memory: the overscan-subtracted imaging pixels of the previous frame (one frame's data
    sections, float32), for the difference the amp correlations are measured on.

    Parameters
    ----------
    camera : Camera
        The detector.
    config : BiasFiguresConfig, optional
        Settings.
    """

    def __init__(self, camera: Camera, config: BiasFiguresConfig | None = None) -> None:
        self.camera = camera
        self.config = config or BiasFiguresConfig()
        n = camera.n_amps
        self._rows: list[dict[str, object]] = []
        self._shift_rows: list[dict[str, object]] = []
        self._n_shifts = np.zeros(n, dtype=np.int64)
        self._max_shift = np.zeros(n)
        self._gram = np.zeros((n, n))
        self._n_diffs = 0
        self._previous: np.ndarray | None = None
        self._n_frames = 0

    def add(self, raw: RawFrame) -> None:
        """Measure one bias frame (its segments are not modified)."""
        begin = raw.info.datetime_begin
        self.add_segments(raw.segments, raw.path.name,
                          float(begin.mjd) if begin is not None else float("nan"))

    def add_segments(self, seg: np.ndarray, frame: str, mjd: float) -> None:
        """Measure one bias frame given as its raw segments (not modified).

        Parameters
        ----------
        seg : numpy.ndarray
            ``(n_amps, ny, nx)`` raw segments, ADU, readout orientation.
        frame : str
            Its name in the tables.
        mjd : float
            Start of its exposure, MJD (NaN if unknown).
        """
        camera, config = self.camera, self.config
        n = camera.n_amps
        data = camera.data_bbox
        step = max(int(config.stats_row_step), 1)
        imaging = seg[:, data.y0: data.y0 + data.ny: step, data.x0: data.x0 + data.nx]
        mean, _ = _clipped_mean_std(imaging.reshape(n, -1), config.clip_sigma)
        cols = serial_overscan_columns(camera, config.overscan)
        overscan = seg[:, data.y0: data.y0 + data.ny, cols].reshape(n, -1)
        os_mean, _ = _clipped_mean_std(overscan, config.clip_sigma)

        shifts = find_bias_shifts(overscan_row_means(seg, camera, config.overscan), config)
        for i, found in enumerate(shifts):
            for s in found:
                self._shift_rows.append({"frame": frame, "amp": camera.amp_names[i],
                                         "row": s.row, "amplitude": s.amplitude,
                                         "noise": s.noise})
                self._max_shift[i] = max(self._max_shift[i], abs(s.amplitude))
            self._n_shifts[i] += len(found)

        corrected = np.array(seg, dtype=np.float32, copy=True)
        subtract_overscan(corrected, camera, config.overscan)
        residual = np.ascontiguousarray(corrected[(slice(None), *data.slices)])
        del corrected
        _, stdev = _clipped_mean_std(residual[:, ::step].reshape(n, -1), config.clip_sigma)
        if self._previous is not None:
            self._accumulate(self._previous - residual)
        self._previous = residual
        for i, amp in enumerate(camera.amp_names):
            self._rows.append({"frame": frame, "mjd": mjd, "amp": amp,
                               "mean": float(mean[i]), "overscan_mean": float(os_mean[i]),
                               "corrected_mean": float(mean[i] - os_mean[i]),
                               "stdev": float(stdev[i])})
        self._n_frames += 1

    def _accumulate(self, diff: np.ndarray) -> None:
        """Add one frame difference's centred cross-products between amps."""
        n = diff.shape[0]
        flat = diff.reshape(n, -1)
        centre = np.median(flat[:, ::16], axis=1)
        sigma = np.maximum(robust_sigma(flat[:, ::16], axis=1), 1e-6)
        flat -= centre[:, None].astype(np.float32)
        # A pixel that is an outlier in any amp (a cosmic ray) is left out of every amp, so
        # that each cross-product sums the same instants.
        good = np.all(np.abs(flat) <= (self.config.clip_sigma * sigma)[:, None], axis=0)
        n_good = int(good.sum())
        mean = np.zeros(n)
        sums = np.zeros((n, n))
        # float64 products in chunks: float32 sums of a million products lose the 1e-4
        # precision a weak correlation needs, a float64 copy of the frame would be 130 MB.
        for start in range(0, flat.shape[1], _CHUNK):
            block = flat[:, start: start + _CHUNK][:, good[start: start + _CHUNK]]
            block = block.astype(np.float64)
            mean += block.sum(axis=1)
            sums += block @ block.T
        if n_good < 2:
            return
        mean /= n_good
        self._gram += sums - n_good * np.outer(mean, mean)
        self._n_diffs += 1

    def result(self) -> BiasFigures:
        """The figures of the frames added so far."""
        camera = self.camera
        n = camera.n_amps
        names = ("frame", "mjd", "amp", "mean", "overscan_mean", "corrected_mean", "stdev")
        series = Table(rows=[[r[k] for k in names] for r in self._rows], names=names) \
            if self._rows else Table(names=names, dtype=(str, float, str, float, float,
                                                         float, float))
        nan = np.full(n, np.nan)
        mean_range, os_range, stdev_scatter = nan.copy(), nan.copy(), nan.copy()
        if self._n_frames:
            by_amp = {name: series[series["amp"] == name] for name in camera.amp_names}
            mean_range = np.array([np.ptp(by_amp[a]["mean"]) for a in camera.amp_names])
            os_range = np.array([np.ptp(by_amp[a]["overscan_mean"])
                                 for a in camera.amp_names])
            if self._n_frames > 1:
                stdev_scatter = np.array([np.std(by_amp[a]["stdev"], ddof=1)
                                          for a in camera.amp_names])
        shift_names = ("frame", "amp", "row", "amplitude", "noise")
        shifts = Table(rows=[[r[k] for k in shift_names] for r in self._shift_rows],
                       names=shift_names) if self._shift_rows else \
            Table(names=shift_names, dtype=(str, str, int, float, float))
        if self._n_diffs:
            corr = correlation_from_gram(self._gram)
            off = np.abs(corr - np.diag(np.diag(corr)))
            corr_max = off.max(axis=1)
        else:
            corr = np.full((n, n), np.nan)
            corr_max = nan.copy()
        correlation = Table({"amp": list(camera.amp_names),
                             **{a: corr[:, j] for j, a in enumerate(camera.amp_names)}})
        counts = self._n_shifts if self._n_frames else nan.copy()
        max_shift = self._max_shift if self._n_frames else nan.copy()
        figures = {"bias_mean_range": mean_range, "bias_overscan_range": os_range,
                   "bias_stdev_scatter": stdev_scatter,
                   "bias_shifts": np.asarray(counts, dtype=float),
                   "bias_shift_max": np.asarray(max_shift, dtype=float),
                   "amp_correlation_max": corr_max}
        log.info("%s: bias of %d frames: mean range median %.2f ADU, %d shifts, amp "
                 "correlation up to %.3f", camera.label, self._n_frames,
                 float(np.nanmedian(mean_range)) if self._n_frames else float("nan"),
                 int(self._n_shifts.sum()),
                 float(np.nanmax(corr_max)) if self._n_diffs else float("nan"))
        return BiasFigures(figures, series, shifts, correlation)
