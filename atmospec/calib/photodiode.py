"""The BOT photodiode: its readings per exposure, integrated into the flat's illumination.

On the LSST Camera's Bench for Optical Testing (BOT) a photodiode in the flat-field
projector is read by an ammeter during every exposure, and each exposure's readings are
written to ``Photodiode_Readings_<YYYYMMDD>_<seq:06d>.txt`` (exposure ``MC_C_<day>_<seq>``):
two whitespace-separated columns, time (s) from the start of the record and current (A),
one reading every ~0.0167 s (one 60 Hz power-line cycle). The record starts before the
shutter opens and ends after it closes, so it holds the dark current of the diode (the
*baseline*, ~1e-13 A) on both sides of the illuminated plateau (~2e-9 A for a bright flat).
The charge collected while the light is on is the flat's relative illumination, the abscissa
of the linearity measurement.

What the camera team does (read, not copied): Rubin's ``ip_isr`` ``PhotodiodeCalib.integrate``
offers ``DIRECT_SUM`` (trapezoid over every sample, optionally minus the median of the
samples after the last one above half-range), ``TRIMMED_SUM`` (baseline = median of the
samples below min + (max − min)/5, subtracted from every sample, trapezoid over the whole
record), ``CHARGE_SUM`` (for ammeters that report charge per interval: baseline from the
samples outside the signal above 1/20 of the range widened by 2 samples, subtracted per
interval) and an iterative baseline fit; ``cp_pipe``'s PTC and linearity tasks pick one by
``photodiodeIntegrationMethod`` and ``eo_pipe``'s linearity task calls ``integrate()`` and
applies a per-filter correction factor. None of them uses a nominal sample interval: the
time column is integrated as given. Their edges are handled by integrating the whole record
(the baseline-subtracted samples outside the exposure add only noise).

Here (``method="baseline"``, the default):

1. single-reading spikes are removed: a reading further from the running median of three
   readings (``spike_samples``) than ``spike_fraction`` of the record's range is replaced
   by that median. A running median leaves a monotonic rise or fall untouched, so the
   partial readings on the shutter's edges are kept;
2. a first baseline and plateau are the medians of the readings below and above the level
   that splits them into two classes of largest between-class variance (Otsu's threshold,
   which a tall glitch of a few readings does not move, unlike mid-range); the record is
   dark (charge 0, flag ``no_illumination``) unless the plateau is ``detection_sigma``
   baseline σ above the baseline. The illuminated interval is the longest run of readings
   above baseline + ``threshold_fraction`` × plateau; any other run is flagged
   ``several_runs`` and kept out of both the charge and the baseline (a flat whose light is
   interrupted for longer than ``spike_samples`` readings thus loses its shorter part: the
   flag says not to use it);
3. the integration window is that run, widened while the current stays ``tail_sigma``
   baseline σ above the baseline (the slow edge readings), then by ``edge_samples``
   baseline readings on each side so that the trapezoid closes on the baseline;
4. the baseline is the median of every reading outside the window and the other runs, and
   the charge the trapezoid integral of the baseline-subtracted current over the window.
   With the window ending on baseline readings this equals Σ (I − baseline) × Δt. The edge
   readings of the real record (68 % and 75 % of the plateau) show that each reading is the
   mean current over its interval, so the partial readings carry the exact share of the
   edge intervals and the sum has no edge error.

``method="direct"`` is ``ip_isr``'s ``DIRECT_SUM``: the trapezoid over every raw sample, no
baseline, no spike removal; it is biased by baseline × record length.

The uncertainty is statistical only: the sample-to-sample scatter of the plateau (lamp
flicker included, so an upper bound on the ammeter's noise) over the window, and the
median's error of the baseline times the window length. It does not include the time
column's scale: the BOT files give times as n × 0.0167 s, while one power-line cycle is
1/60 s = 0.016667 s; if that is the true interval every charge is 0.2 % high, a common
factor that cancels in signal against charge.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from astropy.io import fits
from numpy.lib.stride_tricks import sliding_window_view

from atmospec.errors import BadInputError, short_error
from atmospec.stats import robust_sigma

__all__ = [
    "MIN_READINGS",
    "PhotodiodeCharge",
    "PhotodiodeConfig",
    "PhotodiodeReadings",
    "integrate_photodiode",
    "photodiode_file_for",
    "read_photodiode",
]

#: Fewest readings a photodiode file must hold to be integrated.
MIN_READINGS = 5

#: An exposure identifier as the camera names it: telescope code, controller, day, sequence
#: number (``MC_C_20211212_000310``).
_OBS_ID = re.compile(r"^(?P<tel>[A-Z]{2})_(?P<ctrl>[A-Z])_(?P<day>\d{8})_(?P<seq>\d{1,6})$")

#: Median of Gaussian samples: its σ over the sample σ / √n.
_MEDIAN_EFFICIENCY = math.sqrt(math.pi / 2.0)


@dataclass(frozen=True, eq=False)
class PhotodiodeReadings:
    """One exposure's photodiode record (arrays read-only).

    Attributes
    ----------
    times : numpy.ndarray
        Time of each reading, s from the start of the record, strictly increasing.
    currents : numpy.ndarray
        Photodiode current of each reading, A.
    path : pathlib.Path or None
        The file read, None for readings built in memory.
    """

    times: np.ndarray
    currents: np.ndarray
    path: Path | None = None

    def __post_init__(self) -> None:
        times = np.array(self.times, dtype=float)
        currents = np.array(self.currents, dtype=float)
        if times.ndim != 1 or times.shape != currents.shape:
            raise ValueError(f"times {times.shape} and currents {currents.shape} must be two "
                             "1-d arrays of one length")
        times.flags.writeable = False
        currents.flags.writeable = False
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "currents", currents)

    def __len__(self) -> int:
        return int(self.times.size)

    @property
    def sample_interval(self) -> float:
        """Median interval between readings, s."""
        return float(np.median(np.diff(self.times))) if len(self) > 1 else math.nan

    @property
    def record_length(self) -> float:
        """Time from the first reading to the last, s."""
        return float(self.times[-1] - self.times[0]) if len(self) else 0.0


@dataclass(frozen=True)
class PhotodiodeConfig:
    """How a photodiode record is integrated into a charge."""

    method: Literal["baseline", "direct"] = "baseline"
    """``"baseline"``: baseline-subtracted trapezoid over the illuminated interval (see the
    module description); ``"direct"``: trapezoid over every raw sample, no baseline, for
    comparison (Rubin ip_isr's ``DIRECT_SUM``)."""
    threshold_fraction: float = 0.5
    """Level, as a fraction of the plateau above the baseline, that samples must exceed to be
    in the illuminated interval; the interval's start and end (``on_interval``) are the
    interpolated crossings of that level, so 0.5 gives the full width at half maximum."""
    edge_samples: int = 2
    """Baseline samples added to each side of the integration window (and kept out of the
    baseline), so that the trapezoid closes on the baseline after the last edge reading."""
    tail_sigma: float = 5.0
    """The window is widened over the neighbouring samples that are more than this many
    baseline σ above the baseline (partial readings and slow tails of the edges)."""
    spike_samples: int = 1
    """Longest spike, in readings, that is removed: a reading is compared with the running
    median over ``2 × spike_samples + 1`` readings, which leaves any monotonic rise or fall,
    hence the partial edge readings, untouched, but erases an exposure lit for no more than
    ``spike_samples`` full readings (at 1: the charge is right from ~3 readings, 0.05 s).
    A longer glitch is a second lit run, flagged ``several_runs``."""
    spike_fraction: float = 0.1
    """A reading further than this fraction of the record's range (of the running median)
    from the running median is a spike and replaced by that median."""
    detection_sigma: float = 10.0
    """The record is illuminated only if the plateau is more than this many baseline σ above
    the baseline; otherwise (bias, dark) the charge is 0 and ``no_illumination`` flagged."""
    min_baseline_samples: int = 5
    """Fewest samples outside the window for a baseline to be measured; with fewer the
    baseline is taken as 0 and ``no_baseline`` flagged."""
    current_scale: float = 1.0
    """Every current is multiplied by this first (-1 for a diode read with the opposite
    polarity, as ip_isr's ``currentScale``)."""

    def __post_init__(self) -> None:
        if self.method not in ("baseline", "direct"):
            raise ValueError(f"method must be 'baseline' or 'direct', not {self.method!r}")
        if not 0.0 < self.threshold_fraction < 1.0:
            raise ValueError(f"threshold_fraction must be in (0, 1), not {self.threshold_fraction}")
        if self.edge_samples < 1:
            raise ValueError(f"edge_samples must be at least 1, not {self.edge_samples}")
        if self.spike_samples < 1:
            raise ValueError(f"spike_samples must be at least 1, not {self.spike_samples}")
        if not self.spike_fraction > 0.0:
            raise ValueError(f"spike_fraction must be positive, not {self.spike_fraction}")
        if self.tail_sigma < 0.0 or self.detection_sigma < 0.0:
            raise ValueError("tail_sigma and detection_sigma must not be negative")
        if self.min_baseline_samples < 1:
            raise ValueError("min_baseline_samples must be at least 1")
        if not (math.isfinite(self.current_scale) and self.current_scale != 0.0):
            raise ValueError(f"current_scale must be finite and non-zero, not "
                             f"{self.current_scale}")


@dataclass(frozen=True)
class PhotodiodeCharge:
    """The charge of one photodiode record and how it was found.

    Attributes
    ----------
    charge : float
        Integrated charge, C (0 when the record is not illuminated, for ``"baseline"``).
    charge_err : float
        Its statistical uncertainty, C (NaN when not illuminated).
    baseline : float
        Baseline (dark) current subtracted, A (0 for ``"direct"`` or ``no_baseline``).
    baseline_err : float
        Uncertainty of the baseline, A (NaN when not measured).
    plateau : float
        Median baseline-subtracted current over the illuminated interval, A (NaN if none).
    on_interval : tuple of float, or None
        Start and end of the illuminated interval (interpolated threshold crossings), s.
    window : tuple of float, or None
        Times of the first and last sample integrated, s.
    n_samples : int
        Samples integrated.
    n_baseline : int
        Samples the baseline is the median of.
    n_spikes : int
        Spike readings replaced (``"baseline"`` with light only: in a dark record the spike
        filter's scale is the noise, and what it replaces is not counted).
    method : str
        The method used.
    illuminated : bool
        Whether an illuminated interval was found.
    flags : tuple of str
        ``no_illumination``, ``no_baseline``, ``open_at_start``, ``open_at_end`` (the light
        is on at the first or last reading: the record may miss part of the exposure),
        ``several_runs`` (other samples above the threshold, outside the interval).
    """

    charge: float
    charge_err: float
    baseline: float
    baseline_err: float
    plateau: float
    on_interval: tuple[float, float] | None
    window: tuple[float, float] | None
    n_samples: int
    n_baseline: int
    n_spikes: int
    method: str
    illuminated: bool
    flags: tuple[str, ...] = ()

    @property
    def duration(self) -> float:
        """Length of the illuminated interval, s (NaN if none)."""
        if self.on_interval is None:
            return math.nan
        return self.on_interval[1] - self.on_interval[0]

    @property
    def effective_duration(self) -> float:
        """Charge over plateau current: the length of a square pulse of the same charge, s."""
        if not (self.illuminated and self.plateau > 0.0):
            return math.nan
        return self.charge / self.plateau


# --------------------------------------------------------------------------------------
# Reading


def read_photodiode(path: str | Path) -> PhotodiodeReadings:
    """Read a two-column photodiode readings file (time s, current A).

    Blank lines and lines starting with ``#`` are skipped.

    Parameters
    ----------
    path : str or pathlib.Path
        A ``Photodiode_Readings_<day>_<seq>.txt`` file.

    Returns
    -------
    PhotodiodeReadings

    Raises
    ------
    BadInputError
        Naming the file: missing, a folder, unreadable, not text, a line without exactly two
        numbers, a non-finite value, times not strictly increasing, fewer than
        `MIN_READINGS` readings.
    """
    path = Path(path)
    text = _read_text(path)
    lines: list[int] = []
    values: list[tuple[float, float]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        values.append(_parse_line(path, number, stripped))
        lines.append(number)
    if len(values) < MIN_READINGS:
        what = "empty file" if not text.strip() else f"only {len(values)} readings"
        raise BadInputError(path, f"{what}: a photodiode record needs at least {MIN_READINGS} "
                                  "(time s, current A) lines")
    data = np.array(values, dtype=float)
    times, currents = data[:, 0], data[:, 1]
    for column, name in ((times, "time"), (currents, "current")):
        bad = np.flatnonzero(~np.isfinite(column))
        if bad.size:
            raise BadInputError(path, f"line {lines[bad[0]]}: {name} is {column[bad[0]]}, "
                                      "not a finite number")
    steps = np.diff(times)
    back = np.flatnonzero(steps <= 0.0)
    if back.size:
        k = back[0] + 1
        raise BadInputError(path, f"line {lines[k]}: times do not increase ({times[k - 1]:g} s "
                                  f"then {times[k]:g} s)")
    return PhotodiodeReadings(times, currents, path)


def _read_text(path: Path) -> str:
    """The file's text, or a one-line BadInputError."""
    if path.is_dir():
        raise BadInputError(path, "is a folder, not a photodiode readings file")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BadInputError(path, "no such file") from None
    except OSError as exc:
        raise BadInputError(path, f"cannot be read ({short_error(exc)})") from None
    if b"\0" in raw:
        raise BadInputError(path, "not a text file (it holds NUL bytes)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInputError(path, "not a text file (not UTF-8)") from None


def _parse_line(path: Path, number: int, line: str) -> tuple[float, float]:
    """``(time, current)`` of one data line, or a BadInputError naming the line."""
    fields = line.split()
    if len(fields) != 2:
        raise BadInputError(path, f"line {number}: {len(fields)} column"
                                  f"{'s' if len(fields) != 1 else ''}, expected 2 "
                                  "(time s, current A)")
    try:
        return float(fields[0]), float(fields[1])
    except ValueError:
        raise BadInputError(path, f"line {number}: not two numbers: {line[:40]!r}") from None


# --------------------------------------------------------------------------------------
# Integration


@dataclass(frozen=True)
class _Window:
    """The illuminated run, the integration window and the baseline found around them."""

    run: tuple[int, int]  # first and last sample above the threshold
    window: tuple[int, int]  # first and last sample integrated
    baseline: float
    baseline_sigma: float  # robust σ of one baseline sample (NaN if not measured)
    n_baseline: int
    plateau: float
    level: float  # the threshold current
    flags: tuple[str, ...]


def integrate_photodiode(readings: PhotodiodeReadings,
                         config: PhotodiodeConfig | None = None) -> PhotodiodeCharge:
    """Integrate a photodiode record into the charge collected while the light was on.

    Parameters
    ----------
    readings : PhotodiodeReadings
        The record (see `read_photodiode`).
    config : PhotodiodeConfig, optional
        Method and its parameters (defaults: baseline-subtracted, threshold at half the
        plateau).

    Returns
    -------
    PhotodiodeCharge
        For ``"baseline"``, charge 0 and ``illuminated=False`` (flag ``no_illumination``)
        when no illuminated interval is found, e.g. for a bias or dark record.
    """
    config = config or PhotodiodeConfig()
    times = readings.times
    raw = readings.currents * config.current_scale
    currents, n_spikes = _despike(raw, config)
    found = _find_window(currents, config)
    if config.method == "direct":
        return _direct(times, raw, currents, found)
    if found is None or "no_illumination" in found.flags:
        return _dark(currents, found)
    j0, j1 = found.window
    t = times[j0:j1 + 1]
    signal = currents[j0:j1 + 1] - found.baseline
    charge = float(np.trapezoid(signal, t))
    i0, i1 = found.run
    noise = _sample_noise(currents[i0:i1 + 1], found.baseline_sigma)
    baseline_err = _baseline_err(found)
    var = (noise * readings.sample_interval) ** 2 * t.size
    if math.isfinite(baseline_err):
        var += (baseline_err * float(t[-1] - t[0])) ** 2
    return PhotodiodeCharge(
        charge=charge, charge_err=math.sqrt(var), baseline=found.baseline,
        baseline_err=baseline_err, plateau=found.plateau,
        on_interval=_crossings(times, currents, found), window=(float(t[0]), float(t[-1])),
        n_samples=int(t.size), n_baseline=found.n_baseline, n_spikes=n_spikes,
        method="baseline", illuminated=True, flags=found.flags)


def _direct(times: np.ndarray, raw: np.ndarray, currents: np.ndarray,
            found: _Window | None) -> PhotodiodeCharge:
    """ip_isr's DIRECT_SUM: every raw sample, no baseline; the interval found is reported."""
    lit = found is not None and "no_illumination" not in found.flags
    noise = _sample_noise(currents[found.run[0]:found.run[1] + 1] if lit else currents,
                          found.baseline_sigma if found is not None else math.nan)
    dt = float(np.median(np.diff(times)))
    flags = found.flags if found is not None else ("no_illumination",)
    return PhotodiodeCharge(
        charge=float(np.trapezoid(raw, times)), charge_err=noise * dt * math.sqrt(raw.size),
        baseline=0.0, baseline_err=math.nan,
        plateau=found.plateau if lit else math.nan,
        on_interval=_crossings(times, currents, found) if lit else None,
        window=(float(times[0]), float(times[-1])), n_samples=int(raw.size), n_baseline=0,
        n_spikes=0, method="direct", illuminated=lit, flags=flags)


def _dark(currents: np.ndarray, found: _Window | None) -> PhotodiodeCharge:
    """The result for a record with no illuminated interval."""
    if found is None:  # a constant record
        baseline, baseline_err, n_baseline = float(np.median(currents)), 0.0, int(currents.size)
    else:
        baseline, n_baseline = found.baseline, found.n_baseline
        baseline_err = _baseline_err(found)
    return PhotodiodeCharge(
        charge=0.0, charge_err=math.nan, baseline=baseline, baseline_err=baseline_err,
        plateau=math.nan, on_interval=None, window=None, n_samples=0, n_baseline=n_baseline,
        n_spikes=0, method="baseline", illuminated=False, flags=("no_illumination",))


def _despike(currents: np.ndarray, config: PhotodiodeConfig) -> tuple[np.ndarray, int]:
    """Replace spikes of up to ``spike_samples`` readings by the running median; return the
    series and the number of readings replaced."""
    k = config.spike_samples
    if currents.size < 2 * k + 1:
        return currents.copy(), 0
    windows = sliding_window_view(np.pad(currents, k, mode="edge"), 2 * k + 1)
    median = np.median(windows, axis=1)
    scale = float(median.max() - median.min())
    spikes = np.abs(currents - median) > config.spike_fraction * scale
    if scale <= 0.0 or not spikes.any():
        return currents.copy(), 0
    return np.where(spikes, median, currents), int(spikes.sum())


def _runs(above: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last index of every run of True."""
    edges = np.diff(np.concatenate([[False], above, [False]]).astype(np.int8))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1


def _level_stats(values: np.ndarray) -> tuple[float, float]:
    """Median and robust σ (the standard deviation if the readings are so quantized that
    the MAD is 0) of some readings; (0, NaN) for none."""
    if values.size == 0:
        return 0.0, math.nan
    sigma = float(robust_sigma(values)) or float(np.std(values))
    return float(np.median(values)), sigma


def _first_guess(currents: np.ndarray) -> tuple[float, float, float]:
    """Baseline, its σ and the plateau: the medians of the readings below and above the
    level that splits them into two classes of largest between-class variance (Otsu's
    threshold). Unlike mid-range, that level is not moved by a tall glitch of a few readings.
    """
    ordered = np.sort(currents)
    n = ordered.size
    k = np.arange(1, n)  # readings in the lower class
    below_sum = np.cumsum(ordered)[:-1]
    mean_low = below_sum / k
    mean_high = (ordered.sum() - below_sum) / (n - k)
    between = k * (n - k) * (mean_high - mean_low) ** 2
    between[ordered[1:] == ordered[:-1]] = -1.0  # split only between distinct values
    split = int(k[np.argmax(between)])
    baseline, sigma = _level_stats(ordered[:split])
    return baseline, sigma, float(np.median(ordered[split:])) - baseline


def _find_window(currents: np.ndarray, config: PhotodiodeConfig) -> _Window | None:
    """The illuminated run and integration window, or None for a constant record.

    A record found dark is returned with the flag ``no_illumination`` and its baseline.
    """
    n, pad = currents.size, config.edge_samples
    if not currents.max() > currents.min():
        return None
    baseline, sigma, plateau = _first_guess(currents)
    if not plateau > config.detection_sigma * sigma:
        baseline, sigma = _level_stats(currents)
        return _Window((0, n - 1), (0, n - 1), baseline, sigma, n, math.nan, math.nan,
                       ("no_illumination",))
    starts, ends = _runs(currents > baseline + config.threshold_fraction * plateau)
    main = int(np.argmax(ends - starts))
    i0, i1 = int(starts[main]), int(ends[main])
    j0, j1 = i0, i1
    tail = baseline + config.tail_sigma * sigma
    while j0 > 0 and currents[j0 - 1] > tail:
        j0 -= 1
    while j1 < n - 1 and currents[j1 + 1] > tail:
        j1 += 1
    j0, j1 = max(j0 - pad, 0), min(j1 + pad, n - 1)
    # The baseline: every reading outside the window and away from any other lit run.
    keep = np.ones(n, dtype=bool)
    keep[j0:j1 + 1] = False
    for a, b in zip(starts, ends, strict=True):
        keep[max(a - pad, 0):b + pad + 1] = False
    n_baseline = int(keep.sum())
    if n_baseline >= config.min_baseline_samples:
        baseline, sigma = _level_stats(currents[keep])
    else:
        baseline, sigma = 0.0, math.nan
    plateau = float(np.median(currents[i0:i1 + 1])) - baseline
    flags = [name for name, on in (("no_baseline", not math.isfinite(sigma)),
                                   ("open_at_start", i0 == 0), ("open_at_end", i1 == n - 1),
                                   ("several_runs", starts.size > 1)) if on]
    return _Window((i0, i1), (j0, j1), baseline, sigma, n_baseline, plateau,
                   baseline + config.threshold_fraction * plateau, tuple(flags))


def _crossings(times: np.ndarray, currents: np.ndarray, found: _Window) -> tuple[float, float]:
    """Times at which the current crosses the threshold level, linearly interpolated."""
    i0, i1 = found.run
    level = found.level

    def cross(a: int, b: int) -> float:  # a outside the run (below level), b inside
        ca, cb = currents[a], currents[b]
        frac = (level - ca) / (cb - ca) if cb != ca else 0.5
        return float(times[a] + min(max(frac, 0.0), 1.0) * (times[b] - times[a]))

    start = cross(i0 - 1, i0) if i0 > 0 else float(times[0])
    end = cross(i1 + 1, i1) if i1 < currents.size - 1 else float(times[-1])
    return start, end


def _sample_noise(plateau: np.ndarray, fallback: float) -> float:
    """Noise of one reading from the sample-to-sample differences (robust σ / √2)."""
    if plateau.size >= 3:
        steps = np.diff(plateau)
        sigma = float(robust_sigma(steps)) or float(np.std(steps))
        return sigma / math.sqrt(2.0)
    return fallback if math.isfinite(fallback) else 0.0


def _baseline_err(found: _Window) -> float:
    """Error of the baseline median, A (NaN if not measured)."""
    if not math.isfinite(found.baseline_sigma) or found.n_baseline <= 0:
        return math.nan
    return _MEDIAN_EFFICIENCY * found.baseline_sigma / math.sqrt(found.n_baseline)


# --------------------------------------------------------------------------------------
# Pairing exposures with their readings


def _day_and_seq(raw_path_or_obs_id: str | Path) -> tuple[str, int, str]:
    """Day (``YYYYMMDD``), sequence number and OBSID of an exposure or its raw file."""
    if isinstance(raw_path_or_obs_id, str):
        match = _OBS_ID.match(raw_path_or_obs_id.strip())
        if match:
            return match["day"], int(match["seq"]), raw_path_or_obs_id.strip()
    path = Path(raw_path_or_obs_id)
    try:
        header = fits.getheader(path, 0)
    except FileNotFoundError:
        raise BadInputError(path, "no such file (neither a raw file nor an OBSID such as "
                                  "MC_C_20211212_000310)") from None
    except Exception as exc:  # astropy raises many types for damaged files
        raise BadInputError(path, f"not a readable FITS file ({short_error(exc)})") from None
    obs_id = str(header.get("OBSID", "")).strip()
    match = _OBS_ID.match(obs_id)
    if match:
        return match["day"], int(match["seq"]), obs_id
    day, seq = str(header.get("DAYOBS", "")).strip(), header.get("SEQNUM")
    if re.fullmatch(r"\d{8}", day) and isinstance(seq, int) and not isinstance(seq, bool):
        return day, seq, obs_id
    raise BadInputError(path, f"no exposure identifier: OBSID {obs_id!r} is not of the form "
                              "MC_C_<YYYYMMDD>_<seq> and DAYOBS/SEQNUM are missing")


def photodiode_file_for(raw_path_or_obs_id: str | Path, folder: str | Path) -> Path | None:
    """The photodiode readings file of an exposure, by the BOT's naming.

    The exposure ``MC_C_<day>_<seq>`` has its readings in
    ``Photodiode_Readings_<day>_<seq:06d>.txt``, looked for in ``folder`` itself, then in
    ``folder/<OBSID>/`` and ``folder/<day>/<OBSID>/`` (the BOT's storage layout).

    Parameters
    ----------
    raw_path_or_obs_id : str or pathlib.Path
        The exposure's OBSID (``"MC_C_20211212_000310"``), or one of its raw FITS files,
        whose primary header gives ``OBSID`` (or ``DAYOBS`` and ``SEQNUM``).
    folder : str or pathlib.Path
        The folder of the EO run's readings files.

    Returns
    -------
    pathlib.Path or None
        The readings file, None when there is none.

    Raises
    ------
    BadInputError
        When ``folder`` is not a folder, or the raw file is missing, unreadable or carries no
        exposure identifier.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInputError(folder, "no such folder of photodiode readings")
    day, seq, obs_id = _day_and_seq(raw_path_or_obs_id)
    name = f"Photodiode_Readings_{day}_{seq:06d}.txt"
    places = [folder]
    if obs_id:
        places += [folder / obs_id, folder / day / obs_id]
    for place in places:
        candidate = place / name
        if candidate.is_file():
            return candidate
    return None
