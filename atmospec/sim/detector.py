"""The simulated electronics of one CCD: from electrons on the sensor to raw ADU segments.

Any detector description works (`atmospec.camera.description.Camera`): LATISS's ITL sensor,
or an ITL or e2v detector of LSSTCam, ComCam or a TS8 raft. The geometry (data section,
prescan, overscans, flips) and the nominal gains and read noise come from the description;
the crosstalk matrix from the detector's shipped products.

`expose` applies, in the order they happen in the camera: photon (Poisson) noise on the
illuminated signal plus dark current, charge deposited by cosmic rays, full-well clipping
with charge bleeding along the columns, on-chip binning (the charge of ``bx`` × ``by``
pixels summed before it is read), conversion to ADU with each amp's true gain (in readout
orientation), crosstalk between amps, the bias (a per-amp level with a slow drift along
rows, seen by the overscan, plus a fixed 2D pattern it does not see) and Gaussian read
noise (once per pixel read, binned or not), then rounding to integers as the ADC does.

The sensor's fixed properties (true gains, bias levels, bias structure, hot pixels) are drawn
from ``DetectorSimConfig.sensor_seed``, so that every frame of a night shares them; the
frame's generator passed to `expose` drives only what changes between frames (noise, bias
drift).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from atmospec.calib.products import Crosstalk
from atmospec.camera.assembly import assemble, bin_image, bin_segments, disassemble
from atmospec.camera.description import Camera, load_camera
from atmospec.isr.crosstalk import crosstalk_signal
from atmospec.sim.scenes import SENSOR_SEED

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectorSimConfig:
    """Physical parameters of the simulated sensor and its electronics."""

    gain_scatter: float = 0.02
    """Fractional scatter of the true gains around the nominal ones (0: nominal gains)."""
    bias_level_range: tuple[float, float] = (15_000.0, 25_000.0)
    """Range (uniform) of the amps' bias levels, ADU."""
    bias_jitter_adu: float = 1.0
    """Frame-to-frame scatter of an amp's bias level, ADU."""
    row_drift_adu: float = 5.0
    """Amplitude of the slow bias variation along rows (per frame, per amp), ADU. It is the
    same for every column of a row, overscans included, so overscan subtraction removes it."""
    fixed_pattern_ramp_adu: float = 4.0
    """Typical amplitude of the bias ramp at the first rows read out, ADU (not in the serial
    overscan, identical in every frame: removed only by a master bias)."""
    fixed_pattern_ramp_rows: float = 12.0
    """e-folding length of that ramp, rows (it has died out after ~50 rows)."""
    fixed_pattern_column_adu: float = 1.0
    """Column-to-column bias offsets (Gaussian sigma), ADU, in the imaging columns only."""
    dark_current_e_per_s: float = 0.002
    """Dark current of ordinary pixels, e⁻/s (the ITL sensor at -100 °C)."""
    hot_pixel_fraction: float = 1.0e-5
    """Fraction of hot pixels."""
    hot_pixel_rate_e_per_s: tuple[float, float] = (1.0, 50.0)
    """Range (log-uniform) of the hot pixels' dark current, e⁻/s."""
    n_hot_columns: int = 3
    """Number of hot column segments (one amp's half of a column each)."""
    hot_column_rate_e_per_s: tuple[float, float] = (0.05, 0.3)
    """Range of the hot columns' extra dark current, e⁻/s per pixel."""
    full_well_e: float = 130_000.0
    """Full-well capacity, e⁻: excess charge bleeds along the column (charge conserved)."""
    crosstalk: bool = True
    """Add crosstalk with the detector's shipped matrix (LATISS: DM-37819). A detector
    without one (the LSST cameras ship none) gets no crosstalk, as ISR then corrects none."""
    crosstalk_coeffs: tuple[tuple[float, ...], ...] = ()
    """``[target, source]`` matrix of ADU ratios (HDU order) replacing the shipped one when
    ``crosstalk`` is on (a detector that ships none: `atmospec.sim.bot.synthetic_crosstalk`);
    empty: the shipped matrix."""
    adc_max_adu: int = 2**18 - 1
    """Largest value the 18-bit ADC can output, ADU."""
    sensor_seed: int = SENSOR_SEED
    """Seed of the fixed sensor properties (gains, bias levels and structure, hot pixels)."""
    nonlinearity: float = 0.0
    """Fractional response deficit at 100 kADU: ADU_out = ADU · (1 − f·ADU/1e5) with
    f = ``nonlinearity`` × a per-amp factor in [0.8, 1.2] (ITL amps: f ≈ 0.01–0.02)."""
    cti_serial: float = 0.0
    """Serial charge-transfer inefficiency per transfer (first order: each pixel leaves
    ε·n of its charge to the next one read, n its number of transfers)."""
    cti_parallel: float = 0.0
    """Parallel charge-transfer inefficiency per transfer (same model along columns)."""
    cti_serial_by_amp: tuple[tuple[str, float], ...] = ()
    """Serial CTI of named amps, ``(("C07", 8e-6), …)``, replacing ``cti_serial`` for them
    (an amp out of specification among good ones)."""
    cti_parallel_by_amp: tuple[tuple[str, float], ...] = ()
    """Parallel CTI of named amps, replacing ``cti_parallel`` for them."""
    cold_pixel_fraction: float = 0.0
    """Fraction of pixels with a low response to light (0.2–0.7 of normal)."""
    n_cold_columns: int = 0
    """Number of dark column segments (one amp's half of a column each, its whole height),
    of response 0.3–0.7: the camera team's dark columns."""
    brighter_fatter: tuple[float, float] = (0.0, 0.0)
    """``(α_x, α_y)``, 1/e⁻ (≥ 0): charge redistribution of strength ∝ signal
    (`brighter_fatter`): a flat of μ e⁻ gets the variance of Astier et al. 2019's eq. 16,
    ``(exp(2·a00·μ) − 1)/(2·a00)`` with a_00 = −4(α_x + α_y), exactly, and covariances
    a_10·μ² and a_01·μ² between neighbours along x and y, a_10 = 2α_x, a_01 = 2α_y (to
    first order). (0, 0): no effect."""


@dataclass(frozen=True)
class SensorModel:
    """Fixed properties of one simulated sensor (shared by every frame of a night)."""

    gains: np.ndarray
    """True gains, e⁻/ADU, HDU order."""
    read_noise_e: np.ndarray
    """Read noise, e⁻, HDU order (the nominal values)."""
    bias_levels_adu: np.ndarray
    """Mean bias level of each amp, ADU, before the per-frame jitter."""
    fixed_pattern_adu: np.ndarray
    """``(n_amps, ny, nx)`` raw-segment bias structure, ADU (zero in the serial prescan and
    overscan)."""
    fixed_pattern_e: np.ndarray
    """The data-section part of `fixed_pattern_adu` in e⁻, assembled."""
    dark_current_e_per_s: np.ndarray
    """Assembled dark-current map, e⁻/s."""
    hot_pixels: np.ndarray
    """bool, assembled: hot pixels and hot-column pixels (dark current ≥ 0.05 e⁻/s)."""
    response: np.ndarray
    """Assembled relative response to light of each pixel: 1, or 0.2–0.7 for cold pixels."""
    nonlinearity: np.ndarray
    """Per-amp fractional response deficit at 100 kADU (HDU order)."""


@dataclass
class ExposureTruth:
    """What `expose` did, for tests and benchmarks. Arrays may be shared read-only caches."""

    gains: np.ndarray
    """True gains, e⁻/ADU, HDU order."""
    read_noise_e: np.ndarray
    """Read noise, e⁻, HDU order."""
    read_noise_adu: np.ndarray
    """Read noise in ADU (``read_noise_e / gains``), HDU order."""
    bias_levels_adu: np.ndarray
    """This frame's bias level of each amp, ADU (mean over rows; drift excluded)."""
    row_drift_adu: np.ndarray
    """``(n_amps, raw ny)`` zero-mean bias drift along rows, ADU, same in every column."""
    expected_e: np.ndarray
    """Noiseless image, e⁻, assembled: signal × illumination × cold-pixel response + dark
    current × dark time. Without cosmic rays, bleeding, crosstalk, CTI or non-linearity
    (those are given separately)."""
    fixed_pattern_e: np.ndarray
    """Bias structure absent from the serial overscan, converted to e⁻, assembled."""
    saturated: np.ndarray
    """bool, assembled: pixels left at full well after bleeding (cores and trails)."""
    crosstalk_e: np.ndarray | None
    """Crosstalk each pixel received, e⁻ (its amp's true gain), assembled; None if off."""
    dark_current_e_per_s: np.ndarray
    """Dark-current map, e⁻/s, assembled."""
    exptime: float
    """Exposure time, s."""
    darktime: float
    """Dark time, s."""
    full_well_e: float
    """Full-well capacity used, e⁻."""
    bled_e: float
    """Charge that was moved by bleeding, e⁻ (0 when nothing saturated)."""
    hot_pixels: np.ndarray | None = None
    """bool, assembled: hot pixels and hot-column pixels of the sensor."""
    response: np.ndarray | None = None
    """Assembled relative response to light (cold pixels < 1)."""
    nonlinearity: np.ndarray | None = None
    """Per-amp fractional response deficit at 100 kADU (0 when linear)."""
    cti_serial: float = 0.0
    """Serial CTI per transfer."""
    cti_parallel: float = 0.0
    """Parallel CTI per transfer."""

    @property
    def n_saturated(self) -> int:
        """Number of saturated (full-well) pixels."""
        return int(self.saturated.sum())


@lru_cache(maxsize=2)
def sensor_model(config: DetectorSimConfig, camera: Camera) -> SensorModel:
    """Draw (once, cached) the fixed properties of the sensor from ``config.sensor_seed``.

    Parameters
    ----------
    config : DetectorSimConfig
        Amplitudes and the sensor seed.
    camera : Camera
        Geometry and nominal gains / read noise.

    Returns
    -------
    SensorModel
        Read-only arrays.
    """
    rng = np.random.default_rng([config.sensor_seed, 2])
    n = camera.n_amps
    # Draw everything unconditionally so that changing one amplitude leaves the others alone.
    gains = camera.nominal_gains * (1.0 + config.gain_scatter * rng.standard_normal(n))
    bias = rng.uniform(*config.bias_level_range, n)

    raw_ny, raw_nx = camera.raw_bbox.shape
    data_rows, data_cols = camera.data_bbox.slices
    ramp_amp = config.fixed_pattern_ramp_adu * rng.uniform(0.5, 1.5, n)
    rows = np.arange(raw_ny, dtype=np.float32)
    ramp = ramp_amp[:, None] * np.exp(-rows / config.fixed_pattern_ramp_rows)[None, :]
    ramp[:, data_rows.stop:] = 0.0  # the ramp belongs to the imaging rows
    col_off = config.fixed_pattern_column_adu * rng.standard_normal((n, camera.data_bbox.nx))
    fixed = np.zeros((n, raw_ny, raw_nx), dtype=np.float32)
    # Column offsets run down the whole column (parallel overscan rows too), the ramp only
    # over the imaging rows; serial prescan/overscan stay clean, as on the real sensor.
    fixed[:, :, data_cols] = (ramp[:, :, None] + col_off[:, None, :]).astype(np.float32)
    data_adu = fixed[(slice(None), *camera.data_bbox.slices)]
    fixed_e = assemble((data_adu * gains[:, None, None]).astype(np.float32), camera,
                       trimmed=True)

    shape = camera.detector_shape
    dark = np.full(shape, config.dark_current_e_per_s, dtype=np.float32)
    n_hot = round(config.hot_pixel_fraction * dark.size)
    hot_idx = rng.choice(dark.size, n_hot, replace=False)
    dark.ravel()[hot_idx] += np.exp(rng.uniform(*np.log(config.hot_pixel_rate_e_per_s),
                                                n_hot)).astype(np.float32)
    half = shape[0] // 2
    for _ in range(config.n_hot_columns):
        col = int(rng.integers(0, shape[1]))
        rows = slice(half, None) if rng.integers(0, 2) else slice(0, half)
        dark[rows, col] += np.float32(rng.uniform(*config.hot_column_rate_e_per_s))

    # Properties added later draw from their own stream, so the ones above stay as they were.
    rng2 = np.random.default_rng([config.sensor_seed, 3])
    nonlin = config.nonlinearity * rng2.uniform(0.8, 1.2, n)
    response = np.ones(shape, dtype=np.float32)
    n_cold = round(config.cold_pixel_fraction * response.size)
    if n_cold:
        cold_idx = rng2.choice(response.size, n_cold, replace=False)
        response.ravel()[cold_idx] = rng2.uniform(0.2, 0.7, n_cold).astype(np.float32)
    # Dark columns: a stream of their own again (adding them changes nothing else).
    rng3 = np.random.default_rng([config.sensor_seed, 4])
    for _ in range(config.n_cold_columns):
        col = int(rng3.integers(0, shape[1]))
        rows = slice(half, None) if rng3.integers(0, 2) else slice(0, half)
        response[rows, col] = np.float32(rng3.uniform(0.3, 0.7))
    hot = dark >= np.float32(config.dark_current_e_per_s + 0.05)

    model = SensorModel(gains, camera.nominal_read_noise.copy(), bias, fixed, fixed_e, dark,
                        hot, response, nonlin)
    for arr in (model.gains, model.read_noise_e, model.bias_levels_adu, fixed, fixed_e, dark,
                hot, response, nonlin):
        arr.flags.writeable = False
    return model


def serial_cti_per_amp(config: DetectorSimConfig, camera: Camera) -> np.ndarray:
    """Serial CTI of every amp (HDU order): ``cti_serial`` but where ``cti_serial_by_amp``
    names the amp.

    Raises
    ------
    ValueError
        For an amp name the detector does not have.
    """
    return _per_amp(config.cti_serial, config.cti_serial_by_amp, "cti_serial_by_amp", camera)


def parallel_cti_per_amp(config: DetectorSimConfig, camera: Camera) -> np.ndarray:
    """Parallel CTI of every amp (HDU order): ``cti_parallel`` but where
    ``cti_parallel_by_amp`` names the amp.

    Raises
    ------
    ValueError
        For an amp name the detector does not have.
    """
    return _per_amp(config.cti_parallel, config.cti_parallel_by_amp, "cti_parallel_by_amp",
                    camera)


def _per_amp(default: float, by_amp: tuple[tuple[str, float], ...], what: str,
             camera: Camera) -> np.ndarray:
    cti = np.full(camera.n_amps, default, dtype=np.float64)
    names = list(camera.amp_names)
    for name, value in by_amp:
        if name not in names:
            raise ValueError(f"{what}: {camera.label} has no amp {name!r}")
        cti[names.index(name)] = value
    return cti


def apply_cti(charge: np.ndarray, cti: float | np.ndarray, axis: int) -> np.ndarray:
    """First-order charge-transfer inefficiency along ``axis`` of readout-ordered segments.

    The pixel at index i along ``axis`` is transferred i + 1 times and leaves a fraction
    ``cti·(i+1)`` of its charge to the pixel read after it (i + 1), as in the EPER picture:
    the first overscan pixel after a flat of level S receives ``cti·N·S``.

    Parameters
    ----------
    charge : numpy.ndarray
        ``(n_amps, ny, nx)`` charge in readout orientation (index 0 read first).
    cti : float or numpy.ndarray
        Inefficiency per transfer, one value or one per amp (first axis).
    axis : int
        1 for parallel transfers (rows), 2 for serial transfers (columns).

    Returns
    -------
    numpy.ndarray
        The charge after transfer (a new array; total charge conserved within the array).
    """
    per_amp = np.broadcast_to(np.asarray(cti, dtype=np.float32), (charge.shape[0],))
    if not np.any(per_amp > 0.0):
        return charge
    n = charge.shape[axis]
    shape = [1, 1, 1]
    shape[axis] = n
    lost = charge * (per_amp[:, None, None]
                     * np.arange(1, n + 1, dtype=np.float32).reshape(shape))
    out = charge - lost
    idx_to = [slice(None)] * 3
    idx_from = [slice(None)] * 3
    idx_to[axis] = slice(1, None)
    idx_from[axis] = slice(0, -1)
    out[tuple(idx_to)] += lost[tuple(idx_from)]
    return out


@lru_cache(maxsize=4)
def _crosstalk_adu(camera: Camera, gains: tuple[float, ...]) -> np.ndarray | None:
    """The detector's shipped crosstalk matrix as ADU ratios (``[target, source]``); None
    when it ships none (`Crosstalk.default` gives a zero matrix): no crosstalk to add."""
    matrix = Crosstalk.default(camera).matrix(camera.n_amps)
    if not np.any(matrix.coeffs):
        return None
    if matrix.units == "adu":
        return matrix.coeffs
    # An electron-unit matrix c_e becomes c_e * g_source / g_target between ADU signals.
    g = np.asarray(gains)
    return matrix.coeffs * g[None, :] / g[:, None]


def injected_crosstalk(config: DetectorSimConfig, camera: Camera, gains: np.ndarray
                       ) -> np.ndarray | None:
    """The crosstalk `expose` adds: ``[target, source]`` ADU ratios, HDU order.

    Parameters
    ----------
    config : DetectorSimConfig
        ``crosstalk`` and ``crosstalk_coeffs``.
    camera : Camera
        The detector (its shipped matrix when ``crosstalk_coeffs`` is empty).
    gains : numpy.ndarray
        True gains, e⁻/ADU (to convert a shipped matrix in electrons).

    Returns
    -------
    numpy.ndarray or None
        None when no crosstalk is added.
    """
    if not config.crosstalk:
        return None
    if not config.crosstalk_coeffs:
        return _crosstalk_adu(camera, tuple(np.asarray(gains, dtype=float)))
    coeffs = np.asarray(config.crosstalk_coeffs, dtype=np.float64)
    n = camera.n_amps
    if coeffs.shape != (n, n):
        raise ValueError(f"crosstalk_coeffs is {coeffs.shape}, not ({n}, {n})")
    return coeffs


def bleed(image_e: np.ndarray, full_well_e: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Clip pixels at full well and spread the excess along their column.

    The excess of each saturated run of pixels is shared equally between the two
    directions of its column and fills the nearest pixels below full well, as charge
    spilling over the potential barriers between pixels of a CCD column does. Charge
    reaching the top or bottom edge of the image is lost (it would be clocked away).

    Parameters
    ----------
    image_e : numpy.ndarray
        Assembled image in e⁻ (columns are CCD columns).
    full_well_e : float
        Capacity of a pixel, e⁻.

    Returns
    -------
    image : numpy.ndarray
        float32 copy with the charge redistributed.
    mask : numpy.ndarray
        bool: pixels at full well.
    moved : float
        Total charge moved out of saturated pixels, e⁻.
    """
    out = np.array(image_e, dtype=np.float32, copy=True)
    over = out > full_well_e
    moved = 0.0
    for col in np.nonzero(over.any(axis=0))[0]:
        q = out[:, col].astype(np.float64)
        moved += _bleed_column(q, full_well_e)
        out[:, col] = q
    # Pixels filled by a bleed are at full well up to float32 rounding.
    mask = out >= np.float32(full_well_e) * np.float32(1.0 - 1e-6)
    return out, mask, moved


def _bleed_column(q: np.ndarray, fw: float) -> float:
    """Bleed one column in place; return the charge that moved."""
    sat = q > fw
    edges = np.diff(np.concatenate([[0], sat.astype(np.int8), [0]]))
    starts, stops = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    moved = 0.0
    for a, b in zip(starts, stops, strict=True):
        excess = float(np.sum(q[a:b] - fw))
        # An earlier run may already have filled this one: nothing left to push.
        if excess <= 0.0:
            continue
        q[a:b] = np.minimum(q[a:b], fw)
        moved += excess
        _fill(q[b:], excess / 2.0, fw)
        _fill(q[:a][::-1], excess / 2.0, fw)
    return moved


def _fill(q: np.ndarray, amount: float, fw: float) -> None:
    """Fill ``q`` (a view, in order of distance from the source) up to ``fw`` with charge."""
    if q.size == 0 or amount <= 0.0:
        return
    # Look only as far as needed: most runs are absorbed by their first neighbours, and a
    # cumulative sum over the whole rest of the column for every run is quadratic.
    n = 16
    while True:
        window = q[:n]
        room = np.clip(fw - window, 0.0, None)
        cum = np.cumsum(room)
        if cum[-1] >= amount or n >= q.size:
            break
        n *= 4
    k = int(np.searchsorted(cum, amount))
    if k >= window.size:  # more charge than room: the rest leaves the array
        q[:] = np.maximum(q, fw)
        return
    q[:k] = np.maximum(q[:k], fw)
    q[k] += amount - (cum[k - 1] if k > 0 else 0.0)


def brighter_fatter_strength(level: np.ndarray | float, alpha_x: float, alpha_y: float
                              ) -> tuple[np.ndarray, np.ndarray]:
    """Fractions ``(b_x, b_y)`` of its charge a pixel at ``level`` e⁻ hands to each
    neighbour along x and along y (`brighter_fatter`).

    The filter of `brighter_fatter` turns Poisson noise of mean μ into a variance
    ``μ·[(1 − 2s)² + 2b_x² + 2b_y²]`` (``s = b_x + b_y``). With ``b = α·μ`` that is
    ``μ − 4(α_x + α_y)μ² + O(μ³)``, right to first order only: its μ³ term is not that of a
    charge that builds up over the exposure (Astier et al. 2019, eq. 16, what a PTC is
    fitted with), and the fit of that model moved a00 by −0.4e-6 and the gain by −0.6 %
    at a00 = −3e-6 up to 100 ke⁻. Here ``s`` solves the quadratic so that the variance is
    eq. 16 exactly, ``(exp(2·a00·μ) − 1)/(2·a00)`` with ``a00 = −4(α_x + α_y)``, at every
    level; ``b_x : b_y = α_x : α_y``; ``s = (α_x + α_y)·μ`` to first order.

    Parameters
    ----------
    level : numpy.ndarray or float
        Expected (noiseless) charge, e⁻.
    alpha_x, alpha_y : float
        Strength, 1/e⁻, both ≥ 0.

    Returns
    -------
    b_x, b_y : numpy.ndarray
        float32, the shape of ``level``.
    """
    if alpha_x < 0 or alpha_y < 0:
        raise ValueError(f"brighter-fatter strengths must be >= 0, got {alpha_x}, {alpha_y}")
    level = np.asarray(level, dtype=np.float32)
    total = alpha_x + alpha_y
    if total == 0:
        zero = np.zeros_like(level)
        return zero, zero.copy()
    rx, ry = alpha_x / total, alpha_y / total
    k = np.float32(4.0 + 2.0 * (rx * rx + ry * ry))
    x = np.float32(-8.0 * total) * level  # 2·a00·μ ≤ 0
    small = np.abs(x) < 1e-4
    # 1 − expm1(x)/x, the variance deficit d; its series where x → 0 (float32 cancels).
    deficit = np.where(small, -0.5 * x - x * x / 6.0,
                       1.0 - np.expm1(x) / np.where(small, np.float32(1.0), x))
    # Past |a00|·μ ≈ 1.4 (far beyond full well at real a00) no filter of this shape reaches
    # the deficit: the strongest one (zero discriminant) stands in.
    deficit = np.minimum(deficit, 4.0 / k).astype(np.float32)
    # The small root of k·s² − 4s + d = 0, written without cancellation.
    s = deficit / (2.0 + np.sqrt(np.maximum(4.0 - k * deficit, 0.0)))
    return (np.float32(rx) * s).astype(np.float32), (np.float32(ry) * s).astype(np.float32)


def brighter_fatter(electrons: np.ndarray, expected: np.ndarray, alpha_x: float,
                    alpha_y: float) -> np.ndarray:
    """A brighter-fatter-like charge redistribution with known covariances.

    Each pixel hands a fraction ``b_x`` of its charge to each of its two neighbours along
    x and ``b_y`` to each along y, growing with its expected (noiseless) level ``L``
    (`brighter_fatter_strength`: ``b = α·L`` to first order): the more charge a region
    collects, the more of it ends up next door. For Poisson charge of mean μ this is a
    linear filter of the noise: its variance is Astier et al. 2019's eq. 16 exactly,
    ``(exp(2·a00·μ) − 1)/(2·a00)`` with ``a_00 = −4(α_x + α_y)``, and its neighbour
    covariances ``Cov(x, x ± 1) = 2b_x(1 − 2b_x − 2b_y)·μ``, ``Cov(y, y ± 1) =
    2b_y(1 − 2b_x − 2b_y)·μ``: ``a_10 = 2α_x``, ``a_01 = 2α_y`` to first order, the a_ij
    summing to zero as theirs do. Charge is conserved but at the image's edges (what would
    leave it stays). The mean image is smoothed by the same filter (a fraction ~4b of the
    PRNU's variance is lost).

    Parameters
    ----------
    electrons : numpy.ndarray
        Collected charge (Poisson draws), assembled, e⁻.
    expected : numpy.ndarray
        Its expectation, e⁻.
    alpha_x, alpha_y : float
        Strength, 1/e⁻, both ≥ 0.

    Returns
    -------
    numpy.ndarray
        float32, the redistributed charge.
    """
    bx, by = brighter_fatter_strength(expected, alpha_x, alpha_y)
    gx = bx * electrons
    gy = by * electrons
    out = electrons - 2.0 * (gx + gy)
    out[:, 1:] += gx[:, :-1]
    out[:, :-1] += gx[:, 1:]
    out[1:, :] += gy[:-1, :]
    out[:-1, :] += gy[1:, :]
    # At the edges the charge with no neighbour to go to stays.
    out[:, 0] += gx[:, 0]
    out[:, -1] += gx[:, -1]
    out[0, :] += gy[0, :]
    out[-1, :] += gy[-1, :]
    return out


def row_drift(n_amps: int, n_rows: int, amplitude: float,
              rng: np.random.Generator) -> np.ndarray:
    """Slow zero-mean bias variation along rows: two sinusoids with random periods/phases.

    Parameters
    ----------
    n_amps, n_rows : int
        Output shape.
    amplitude : float
        Peak amplitude, ADU.
    rng : numpy.random.Generator
        Frame generator.

    Returns
    -------
    numpy.ndarray
        ``(n_amps, n_rows)`` float32, ADU, zero mean along rows (so that the overscan
        median is the bias level).
    """
    rows = np.arange(n_rows)[None, :]
    slow = rng.uniform(1000.0, 4000.0, (n_amps, 1))
    fast = rng.uniform(100.0, 400.0, (n_amps, 1))
    ph1, ph2 = rng.uniform(0.0, 2 * np.pi, (2, n_amps, 1))
    drift = amplitude * (0.7 * np.sin(2 * np.pi * rows / slow + ph1)
                         + 0.3 * np.sin(2 * np.pi * rows / fast + ph2))
    drift -= drift.mean(axis=1, keepdims=True)
    return drift.astype(np.float32)


def _binned(image: np.ndarray, frame: Camera, how: str) -> np.ndarray:
    """An unbinned assembled truth image in the frame's geometry (itself when unbinned)."""
    return image if frame.binning == (1, 1) else bin_image(image, frame, how)


def _fixed_pattern(sensor: SensorModel, frame: Camera) -> tuple[np.ndarray, np.ndarray]:
    """The sensor's fixed bias pattern as the frame reads it: raw segments (ADU) and the
    assembled data sections (e⁻). A bias offset is a level, not charge: a binned pixel
    carries the mean of its pixels' offsets."""
    if frame.binning == (1, 1):
        return sensor.fixed_pattern_adu, sensor.fixed_pattern_e
    adu = bin_segments(sensor.fixed_pattern_adu, *frame.binning, how="mean").astype(np.float32)
    data = adu[(slice(None), *frame.data_bbox.slices)] * sensor.gains[:, None, None]
    return adu, assemble(data.astype(np.float32), frame, trimmed=True)


def expose(
    signal_e: np.ndarray,
    config: DetectorSimConfig,
    rng: np.random.Generator,
    *,
    exptime: float,
    darktime: float,
    illumination: np.ndarray | None = None,
    deposits_e: np.ndarray | None = None,
    camera: Camera | None = None,
    binning: tuple[int, int] = (1, 1),
) -> tuple[np.ndarray, ExposureTruth]:
    """Read out a sensor exposed to ``signal_e``.

    Parameters
    ----------
    signal_e : numpy.ndarray
        Noiseless light reaching the sensor, e⁻, assembled orientation
        (``camera.detector_shape``); zeros for a bias or a dark.
    config : DetectorSimConfig
        Sensor and electronics.
    rng : numpy.random.Generator
        The frame's generator (noise and bias drift only).
    exptime : float
        Exposure time, s (recorded in the truth; the signal already includes it).
    darktime : float
        Dark-current integration time, s.
    illumination : numpy.ndarray, optional
        Relative flat-field response multiplying ``signal_e`` (not the dark current).
    deposits_e : numpy.ndarray, optional
        Charge created in the silicon (cosmic rays), e⁻: added after the Poisson draw, not
        multiplied by the illumination.
    camera : Camera, optional
        Geometry; LATISS by default (its unbinned description is used).
    binning : tuple of int
        On-chip binning ``(x, y)`` of the readout: the sensor's pixels (light, dark current,
        full well) are unbinned; the charge of each block is summed and read once.

    Returns
    -------
    segments : numpy.ndarray
        ``(n_amps, ny, nx)`` int32 raw segments in HDU order and readout orientation,
        ``camera.binned(*binning).raw_bbox.shape`` (``(2048, 576)`` unbinned).
    truth : ExposureTruth
        What went in; its images are in the binned frame's assembled geometry (the truth a
        post-ISR image of this frame is compared with).
    """
    camera = (camera or load_camera("latiss")).unbinned
    frame = camera.binned(*binning)
    if signal_e.shape != camera.detector_shape:
        raise ValueError(f"signal shape {signal_e.shape} is not {camera.detector_shape}")
    sensor = sensor_model(config, camera)
    gains = sensor.gains
    n = camera.n_amps

    expected = np.asarray(signal_e, dtype=np.float32)
    if illumination is not None:
        expected = expected * illumination
    if config.cold_pixel_fraction > 0 or config.n_cold_columns > 0:
        expected = expected * sensor.response
    expected = expected + sensor.dark_current_e_per_s * np.float32(darktime)
    electrons = rng.poisson(expected).astype(np.float32)
    if any(config.brighter_fatter):
        electrons = brighter_fatter(electrons, expected, *config.brighter_fatter)
    if deposits_e is not None:
        electrons += deposits_e
    electrons, saturated, moved = bleed(electrons, config.full_well_e)
    if moved:
        log.debug("%d pixels at full well, %.3g e- bled", saturated.sum(), moved)

    data_adu = disassemble(electrons, camera)
    raw_ny, raw_nx = frame.raw_bbox.shape
    data_box = (slice(None), *frame.data_bbox.slices)
    cti_trails = None
    cti_serial = serial_cti_per_amp(config, camera)
    cti_parallel = parallel_cti_per_amp(config, camera)
    if np.any(cti_parallel > 0) or np.any(cti_serial > 0) or frame is not camera:
        full = np.zeros((n, *camera.raw_bbox.shape), dtype=np.float32)
        full[(slice(None), *camera.data_bbox.slices)] = data_adu
        full = bin_segments(full, *frame.binning)
        # Transfers run over the whole segment: deferred charge reaches the overscans (EPER).
        full = apply_cti(apply_cti(full, cti_parallel, axis=1), cti_serial, axis=2)
        data_adu = np.ascontiguousarray(full[data_box])
        # What is left is read outside the data section: CTI trails, and the binned pixels
        # straddling the data section's edge.
        full[data_box] = 0.0
        cti_trails = full / gains.astype(np.float32)[:, None, None]
    data_adu /= gains.astype(np.float32)[:, None, None]
    if config.nonlinearity > 0:
        f = (sensor.nonlinearity / 1e5).astype(np.float32)[:, None, None]
        data_adu *= 1.0 - f * data_adu
    ghost = None
    coeffs = injected_crosstalk(config, camera, gains)
    if coeffs is not None:
        ghost = crosstalk_signal(data_adu, coeffs)
        data_adu += ghost

    bias = sensor.bias_levels_adu + config.bias_jitter_adu * rng.standard_normal(n)
    drift = row_drift(n, raw_ny, config.row_drift_adu, rng)
    read_noise_adu = sensor.read_noise_e / gains
    seg = rng.standard_normal((n, raw_ny, raw_nx), dtype=np.float32)
    seg *= read_noise_adu.astype(np.float32)[:, None, None]
    seg += (bias.astype(np.float32)[:, None] + drift)[:, :, None]
    fixed_adu, fixed_e = _fixed_pattern(sensor, frame)
    seg += fixed_adu
    seg[data_box] += data_adu
    if cti_trails is not None:
        seg += cti_trails
    np.rint(seg, out=seg)
    np.clip(seg, 0, config.adc_max_adu, out=seg)
    segments = seg.astype(np.int32)

    crosstalk_e = None
    if ghost is not None:
        crosstalk_e = assemble(ghost * gains.astype(np.float32)[:, None, None], frame,
                               trimmed=True)
    truth = ExposureTruth(
        gains=gains,
        read_noise_e=sensor.read_noise_e,
        read_noise_adu=read_noise_adu,
        bias_levels_adu=bias,
        row_drift_adu=drift,
        expected_e=_binned(expected, frame, "sum"),
        fixed_pattern_e=fixed_e,
        saturated=_binned(saturated, frame, "any"),
        crosstalk_e=crosstalk_e,
        dark_current_e_per_s=_binned(sensor.dark_current_e_per_s, frame, "sum"),
        exptime=float(exptime),
        darktime=float(darktime),
        full_well_e=config.full_well_e,
        bled_e=moved,
        hot_pixels=_binned(sensor.hot_pixels, frame, "any"),
        response=_binned(sensor.response, frame, "mean"),
        nonlinearity=sensor.nonlinearity if config.nonlinearity > 0 else np.zeros(n),
        cti_serial=config.cti_serial,
        cti_parallel=config.cti_parallel,
    )
    return segments, truth
