"""Simulated electro-optical (EO) acquisitions of LSST camera detectors, laid out as the BOT
writes them.

The BOT (the LSSTCam test stand at SLAC) characterised the focal plane with acquisitions of
biases, darks, flat pairs over a signal ramp (photon-transfer curve, linearity) and stacks
of low- and high-flux superflats (CTE, defects), read by every detector at once. This
module simulates such an acquisition for any list of detectors of one instrument (a raft,
detectors of both vendors, ComCam's 9) and writes it as the BOT's acquisition scripts do
(lsst-camera-dh/fp-scripts ``lib/acquire.py``): one folder per exposure, named
``<test>_<image>_<NNN>`` with the exposure's number in the acquisition, which eotest's
``BOT_jh_glob_patterns.ini`` selects by kind::

    RUNDIR/bias_bias_000/MC_C_20211212_000300_R22_S11.fits        bias_bias_*
    RUNDIR/dark_dark_005/MC_C_20211212_000305_R22_S11.fits        dark_dark_*
    RUNDIR/flat_empty_SDSSi_1000.0_flat0_007/MC_C_…_R22_S11.fits  flat_*_flat?_*
    RUNDIR/flat_empty_SDSSi_1000.0_flat0_007/Photodiode_Readings_20211212_000307.txt
    RUNDIR/sflat_flat_SDSSi_L_021/…                                sflat_flat_*L*
    RUNDIR/sflat_flat_SDSSi_H_023/…                                sflat_flat_*H*
    RUNDIR/xtalk_C10_025/…                                         xtalk_*
    RUNDIR/truth.json

Each folder holds one raw per detector, ``<OBSID>_<detector>.fits`` (the exposure's OBSID
is shared by its detectors, `atmospec.sim.rawfile.lsst_primary_header`), and, for the
exposures with light, the photodiode record of the flat projector: two columns, time (s)
and current (A), one reading every 0.0167 s from before the shutter opens to after it
closes. Each reading is the current averaged over its interval (as a picoammeter
integrating one power-line cycle gives it), so the trapezoid rule over the record, minus
the dark baseline, is the charge the photodiode collected, and that charge is
``photodiode_c_per_e`` × the flat's true illumination (e⁻ per pixel at the median flat-field
response). The lamp's flux varies from exposure to exposure (``lamp_jitter``): the two
flats of a pair differ slightly, and the photodiode follows.

The crosstalk spot frames (``n_xtalk``) have no photodiode record: each is dark but for
one bright spot at the centre of one amp, the aggressor its folder names.

Every detector is its own sensor: its fixed properties (true gains, bias levels and
structure, hot pixels, flat-field response) are drawn from the CCD's serial number, so the
same CCD is the same sensor in any instrument. Frames are reproducible from ``seed``, the
detector and the exposure's number. `write_bot_run` simulates one detector at a time, so
memory holds one 4k × 4k frame (plus the simulator's caches) whatever the number of
detectors.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
from astropy.time import Time

from atmospec.camera.assembly import assemble
from atmospec.camera.description import Camera, list_detectors, load_camera
from atmospec.errors import BadInputError
from atmospec.io import write_text_atomic
from atmospec.sim.detector import (
    DetectorSimConfig,
    ExposureTruth,
    expose,
    injected_crosstalk,
    parallel_cti_per_amp,
    sensor_model,
    serial_cti_per_amp,
)
from atmospec.sim.rawfile import lsst_instrument, lsst_primary_header, write_raw
from atmospec.sim.scenes import (
    SENSOR_SEED,
    CosmicRayConfig,
    IlluminationConfig,
    cosmic_rays,
    illumination,
)

log = logging.getLogger(__name__)

#: Dark time beyond the exposure time, s (the BOT's shutter overhead: DARKTIME 8.143 s for
#: EXPTIME 7.832 s in run 13162).
_EXTRA_DARK_S = 0.311

#: Time from the end of one exposure's integration to the start of the next, s (readout,
#: clears, the next command).
_OVERHEAD_S = 3.0

#: Name of the truth file in the run folder.
TRUTH_FILE = "truth.json"


def _bot_flat_field() -> IlluminationConfig:
    # The BOT's projector lights a CCD evenly: a 1 % fall-off towards its corners and no dust
    # shadows (no window or filter in focus above the sensor); the sensor's own PRNU.
    return IlluminationConfig(vignetting=0.01, vignetting_offset_px=0.0, n_donuts=0,
                              n_filter_donuts=0)


@dataclass(frozen=True)
class BotConfig:
    """A simulated BOT EO acquisition."""

    instrument: str = "LSSTCam"
    """Instrument of the detectors (``LSSTCam``, ``LSSTComCam``, ``LSST-TS8``)."""
    detectors: tuple[str, ...] = ("R22_S11",)
    """Detectors read at every exposure (``R22_S11``; the vendors may differ)."""
    run: str = "13162"
    """Acquisition run, ``RUNNUM``."""
    test_stand: str | None = None
    """``TSTAND``; the instrument's lab stand by default (``BOT`` for LSSTCam)."""
    day_obs: int = 20211212
    """Observing day ``YYYYMMDD`` of the OBSIDs."""
    first_seq: int = 300
    """SEQNUM of the first exposure; the others follow without gaps."""
    start: str = "2021-12-13T04:00:00.000"
    """Start of the first exposure (TAI)."""
    n_bias: int = 5
    """Biases (``bias_bias_NNN``)."""
    n_dark: int = 2
    """Darks (``dark_dark_NNN``)."""
    dark_exptime_s: float = 60.0
    """Exposure time of a dark, s."""
    flat_levels_e: tuple[float, ...] = (1_000.0, 2_000.0, 5_000.0, 10_000.0, 20_000.0,
                                        50_000.0, 100_000.0)
    """Target signal of each flat pair, e⁻ per pixel at the median response; one pair
    (``flat_<filter2>_<filter>_<level>_flat0_NNN``, ``…_flat1_NNN``) per level."""
    n_sflat_low: int = 2
    """Low-flux superflats (``sflat_flat_<filter>_L_NNN``)."""
    sflat_low_e: float = 1_000.0
    """Signal of a low-flux superflat, e⁻ (the BOT's 1 ke⁻)."""
    n_sflat_high: int = 2
    """High-flux superflats (``sflat_flat_<filter>_H_NNN``)."""
    sflat_high_e: float = 50_000.0
    """Signal of a high-flux superflat, e⁻ (the BOT's 50 ke⁻)."""
    interleaved_biases: bool = False
    """Take a bias before every dark, flat pair and superflat (``dark_bias_NNN``,
    ``flat_bias_NNN``, ``sflat_bias_NNN``) as the BOT's scripts do (``bcount`` = 1); off by
    default, as they double the number of frames."""
    flux_e_per_s: float = 2_000.0
    """Lamp flux at the median response, e⁻/s per pixel: exposure time = level / flux."""
    exptime_resolution_s: float = 0.001
    """Exposure times are rounded to this (as EXPTIME records them); the signal uses the
    rounded time."""
    lamp_jitter: float = 0.002
    """Exposure-to-exposure scatter of the lamp flux (fraction, Gaussian sigma): the CCDs
    and the photodiode both see it."""
    filter_name: str = "SDSSi"
    """Colour filter of the flat projector, ``FILTER``."""
    filter2: str = "empty"
    """Neutral-density filter of the flat projector, ``FILTER2``."""
    photodiode_current_a: float = 2.0e-9
    """Photodiode current at ``flux_e_per_s``, A (the BOT's ~2 nA)."""
    photodiode_baseline_a: float = 1.0e-13
    """Dark current of the photodiode, A, read before and after the light."""
    photodiode_noise_a: float = 8.0e-14
    """Noise of one photodiode reading, A (Gaussian sigma)."""
    photodiode_resolution_a: float = 1.0e-14
    """Readings are rounded to this, A."""
    photodiode_interval_s: float = 0.0167
    """Interval between readings, s (one per power-line cycle, written as the BOT's records
    write it: 0.0167 s)."""
    photodiode_lead_s: float = 0.33
    """Record before the shutter opens, s."""
    photodiode_tail_s: float = 2.5
    """Record after the shutter closes, s."""
    cr_rate_per_s: float = 0.25
    """Cosmic-ray events per second of dark time on a CCD (sea-level muons, ~1 cm⁻² min⁻¹
    on the 16 cm² of a CCD)."""
    seed: int = 1
    """Seed of the frames' noise, cosmic rays and lamp jitter."""
    sensor_seed: int = SENSOR_SEED
    """Seed of the sensors; each detector's own comes from it and the CCD's serial."""
    compress: bool = True
    """RICE tile-compress the amplifier HDUs (lossless, as the camera writes them)."""
    detector: DetectorSimConfig = field(default_factory=DetectorSimConfig)
    """Sensor and electronics (gain scatter, bias, dark current, full well, …); its
    ``sensor_seed`` is replaced by each detector's."""
    flat_field: IlluminationConfig = field(default_factory=_bot_flat_field)
    """Relative flat-field response: the projector's fall-off and the sensors' PRNU."""
    cosmics: CosmicRayConfig = field(default_factory=CosmicRayConfig)
    """Cosmic-ray physics."""
    tearing: tuple[str, ...] = ()
    """Detectors whose lit frames show tearing (`tearing_pattern`): in the first
    ``tearing_rows`` rows read, the outermost imaging column at each edge of every amp hands
    ``tearing_amplitude`` of its charge to its neighbour."""
    tearing_amplitude: float = 0.04
    """Fraction of the edge column's charge moved to its neighbour where there is tearing
    (their ratio becomes (1 + f)/(1 − f) ≈ 1.083 instead of 1)."""
    tearing_rows: int = 400
    """Rows, from the first read, with tearing."""
    n_xtalk: int = 0
    """Sets of crosstalk spot frames, taken last: one frame per amp (``xtalk_<amp>_NNN``),
    dark but for a bright spot at the centre of that amp (the aggressor) only."""
    xtalk_amps: tuple[str, ...] = ()
    """Aggressor amps of the spot frames (names, HDU order kept); empty: every amp."""
    xtalk_spot_e: float = 100_000.0
    """Peak signal of a spot, e⁻ (below the full well: no bleeding)."""
    xtalk_spot_radius_px: float = 25.0
    """Radius of a spot's flat top, px (~2000 pixels above 90 % of the peak)."""
    crosstalk: float = 0.0
    """Typical coupling between amps read next to each other, ADU ratio: every detector
    gets its own `synthetic_crosstalk` matrix (the LSST cameras ship none to simulate
    with); 0: the detector's shipped matrix, if any (`DetectorSimConfig.crosstalk`)."""

    def __post_init__(self) -> None:
        if not self.detectors:
            raise ValueError("BotConfig: no detectors")
        if len(set(self.detectors)) != len(self.detectors):
            raise ValueError(f"BotConfig: a detector is listed twice: {self.detectors}")
        counts = (self.n_bias, self.n_dark, self.n_sflat_low, self.n_sflat_high, self.n_xtalk)
        if min(counts) < 0:
            raise ValueError("BotConfig: frame counts must not be negative")
        levels = (*self.flat_levels_e, self.sflat_low_e, self.sflat_high_e)
        if min(levels) <= 0 or self.flux_e_per_s <= 0 or self.dark_exptime_s <= 0:
            raise ValueError("BotConfig: signal levels, flux and dark time must be positive")
        if not 19_000_101 <= self.day_obs <= 29_991_231:
            raise ValueError(f"BotConfig: day_obs {self.day_obs} is not YYYYMMDD")
        unknown = sorted(set(self.tearing) - set(self.detectors))
        if unknown:
            raise ValueError(f"BotConfig: tearing on {', '.join(unknown)}, not a detector "
                             "of the run")
        if self.xtalk_spot_e <= 0 or self.xtalk_spot_radius_px <= 0 or self.crosstalk < 0:
            raise ValueError("BotConfig: the spots' signal and radius must be positive and "
                             "crosstalk not negative")
        if not 0.0 <= self.tearing_amplitude < 0.5 or self.tearing_rows < 1:
            raise ValueError("BotConfig: tearing_amplitude must be in [0, 0.5) and "
                             "tearing_rows positive")

    @property
    def photodiode_c_per_e(self) -> float:
        """Photodiode charge per electron of illumination, C per (e⁻/pixel): the
        proportionality between a photodiode record's charge and its flat's level."""
        return self.photodiode_current_a / self.flux_e_per_s


@dataclass(frozen=True)
class BotExposure:
    """One exposure of the acquisition (read by every detector)."""

    index: int
    """Number of the exposure in the acquisition (``TSEQNUM``, the folder's ``NNN``)."""
    seq_num: int
    """``SEQNUM``."""
    obs_id: str
    """``MC_C_YYYYMMDD_NNNNNN`` (the instrument's code)."""
    folder: str
    """Folder of the run holding its files, e.g. ``flat_empty_SDSSi_1000.0_flat0_007``."""
    test_type: str
    """``TESTTYPE``: ``BIAS``, ``DARK``, ``FLAT`` or ``SFLAT``."""
    image_type: str
    """``IMGTYPE``: ``BIAS``, ``DARK`` or ``FLAT``."""
    exptime: float
    """Exposure time, s."""
    darktime: float
    """Dark time, s."""
    start: str
    """Start of the integration, TAI ISO."""
    level_e: float
    """Target signal, e⁻ per pixel at the median response (0 without light)."""
    illumination_e: float
    """True signal: the target's flux with this exposure's lamp jitter × the exposure time,
    e⁻ per pixel at the median response (0 without light)."""
    pair: int | None = None
    """0 or 1 within a flat pair; None otherwise."""
    spot_amp: str | None = None
    """The amp lit by a crosstalk spot frame's spot (``C10``); None otherwise."""

    @property
    def has_light(self) -> bool:
        """Lit by the projector (flats and superflats): it has a photodiode record."""
        return self.illumination_e > 0

    @property
    def photodiode_file(self) -> str | None:
        """``Photodiode_Readings_<DAYOBS>_<SEQNUM>.txt`` for a lit exposure, else None."""
        if not self.has_light:
            return None
        day = self.obs_id.split("_")[2]
        return f"Photodiode_Readings_{day}_{self.seq_num:06d}.txt"


def bot_plan(config: BotConfig) -> tuple[BotExposure, ...]:
    """The exposures of the acquisition, in the order they are taken (no pixels).

    Biases, darks, the flat pairs by increasing level, the low then the high superflats,
    then the crosstalk spot frames (amps in HDU order); with ``interleaved_biases`` a bias
    before each dark, pair and superflat.

    Parameters
    ----------
    config : BotConfig
        The acquisition.

    Returns
    -------
    tuple of BotExposure
    """
    camcode = lsst_instrument(load_camera(config.instrument, config.detectors[0])).camcode
    res = config.exptime_resolution_s
    exposures: list[BotExposure] = []
    start = Time(config.start, scale="tai")

    def add(folder: str, test_type: str, image_type: str, exptime: float, level: float,
            pair: int | None = None, spot_amp: str | None = None) -> None:
        nonlocal start
        index = len(exposures)
        seq = config.first_seq + index
        # The lamp's flux this exposure: its own stream, so that adding exposures elsewhere
        # in the plan leaves the others' illumination alone.
        jitter = np.random.default_rng([config.seed, 7, index]).standard_normal()
        flux = config.flux_e_per_s * (1.0 + config.lamp_jitter * float(jitter))
        darktime = round(exptime + _EXTRA_DARK_S, 6)
        exposures.append(BotExposure(
            index=index, seq_num=seq, obs_id=f"{camcode}_C_{config.day_obs}_{seq:06d}",
            folder=f"{folder}_{index:03d}", test_type=test_type, image_type=image_type,
            exptime=exptime, darktime=darktime, start=str(start.isot), level_e=level,
            illumination_e=flux * exptime if level > 0 and spot_amp is None else 0.0,
            pair=pair, spot_amp=spot_amp))
        start = start + (darktime + _OVERHEAD_S) * u.s

    def lit_exptime(level: float) -> float:
        t = round(level / config.flux_e_per_s / res) * res
        if t <= 0:
            raise ValueError(f"level {level} e- gives no exposure time at "
                             f"{config.flux_e_per_s} e-/s")
        return round(t, 6)

    def bias(test: str) -> None:
        if config.interleaved_biases:
            add(f"{test}_bias", test.upper(), "BIAS", 0.0, 0.0)

    for _ in range(config.n_bias):
        add("bias_bias", "BIAS", "BIAS", 0.0, 0.0)
    for _ in range(config.n_dark):
        bias("dark")
        add("dark_dark", "DARK", "DARK", config.dark_exptime_s, 0.0)
    for level in config.flat_levels_e:
        bias("flat")
        exptime = lit_exptime(level)
        for pair in (0, 1):
            add(f"flat_{config.filter2}_{config.filter_name}_{level:.1f}_flat{pair}", "FLAT",
                "FLAT", exptime, level, pair)
    for n, level, tag in ((config.n_sflat_low, config.sflat_low_e, "L"),
                          (config.n_sflat_high, config.sflat_high_e, "H")):
        for _ in range(n):
            bias("sflat")
            add(f"sflat_flat_{config.filter_name}_{tag}", "SFLAT", "FLAT",
                lit_exptime(level), level)
    amps = load_camera(config.instrument, config.detectors[0]).amp_names
    unknown = sorted(set(config.xtalk_amps) - set(amps))
    if unknown:
        raise ValueError(f"xtalk_amps: {', '.join(unknown)} not amps of {config.instrument}")
    amps = tuple(a for a in amps if a in config.xtalk_amps) if config.xtalk_amps else amps
    spot_time = lit_exptime(config.xtalk_spot_e)
    for _ in range(config.n_xtalk):
        for amp in amps:
            add(f"xtalk_{amp}", "SPOT", "SPOT", spot_time, config.xtalk_spot_e,
                spot_amp=amp)
    return tuple(exposures)


# --------------------------------------------------------------------------- photodiode


def photodiode_charge(exposure: BotExposure, config: BotConfig) -> float:
    """True charge the photodiode collected during ``exposure``, C (0 without light)."""
    return exposure.illumination_e * config.photodiode_c_per_e


def photodiode_readings(exposure: BotExposure, config: BotConfig) -> np.ndarray:
    """The photodiode record of a lit exposure: ``(n, 2)`` time (s), current (A).

    The shutter opens ``photodiode_lead_s`` after the record starts and stays open for the
    exposure time; each reading is the dark baseline plus the lamp current averaged over the
    reading's window (one interval), plus noise, rounded to the resolution. The windows tile the
    record, so the trapezoid sum of the readings minus the baseline is the collected charge
    (`photodiode_charge`) up to the noise.

    Parameters
    ----------
    exposure : BotExposure
        A lit exposure (`BotExposure.has_light`).
    config : BotConfig
        Photodiode current, noise and timing.

    Returns
    -------
    numpy.ndarray
        float64 readings.
    """
    if not exposure.has_light:
        raise ValueError(f"{exposure.folder} has no light: no photodiode record")
    dt = config.photodiode_interval_s
    duration = config.photodiode_lead_s + exposure.exptime + config.photodiode_tail_s
    n = math.ceil(duration / dt) + 1
    t = np.arange(n) * dt
    opens = config.photodiode_lead_s
    closes = opens + exposure.exptime
    # Fraction of each reading's window during which the shutter is open.
    overlap = np.clip(np.minimum(t + dt / 2, closes) - np.maximum(t - dt / 2, opens), 0.0,
                      None) / dt
    lamp = photodiode_charge(exposure, config) / exposure.exptime
    rng = np.random.default_rng([config.seed, 11, exposure.index])
    current = (config.photodiode_baseline_a + lamp * overlap
               + config.photodiode_noise_a * rng.standard_normal(n))
    res = config.photodiode_resolution_a
    current = np.round(current / res) * res
    return np.column_stack([np.round(t, 4), current])


def _java_double(value: float) -> str:
    """A number as the camera software (Java's Double.toString) writes it: ``0.0167``,
    ``1.99776E-9``, ``-4.0E-14``."""
    if value == 0.0:
        return "0.0"
    if 1e-3 <= abs(value) < 1e7:
        return repr(float(value))
    mantissa, exponent = f"{value:.6E}".split("E")
    mantissa = mantissa.rstrip("0")
    if mantissa.endswith("."):
        mantissa += "0"
    return f"{mantissa}E{int(exponent)}"


def write_photodiode_file(folder: str | Path, exposure: BotExposure, config: BotConfig
                          ) -> Path:
    """Write ``<folder>/Photodiode_Readings_<DAYOBS>_<SEQNUM>.txt`` of a lit exposure.

    Parameters
    ----------
    folder : path
        The exposure's folder (created).
    exposure : BotExposure
        A lit exposure.
    config : BotConfig
        Photodiode settings.

    Returns
    -------
    pathlib.Path
        The file: one reading per line, ``<time s> <current A>``.
    """
    readings = photodiode_readings(exposure, config)
    lines = (f"{_java_double(t)} {_java_double(i)}" for t, i in readings)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = exposure.photodiode_file
    assert name is not None
    return write_text_atomic("\n".join(lines) + "\n", folder / name)


# --------------------------------------------------------------------------- frames


def detector_sensor_seed(config: BotConfig, camera: Camera) -> int:
    """Seed of one detector's sensor: from ``config.sensor_seed`` and the CCD's serial, so
    that a CCD is the same sensor in every instrument and every run."""
    serial = zlib.crc32(camera.detector_serial.encode())
    return int(np.random.SeedSequence([config.sensor_seed, serial]).generate_state(1)[0])


def detector_config(config: BotConfig, camera: Camera) -> DetectorSimConfig:
    """``config.detector`` with the detector's own sensor seed, and its own
    `synthetic_crosstalk` matrix when ``config.crosstalk`` is set."""
    seed = detector_sensor_seed(config, camera)
    sensor = replace(config.detector, sensor_seed=seed)
    if config.crosstalk > 0 and not sensor.crosstalk_coeffs:
        coeffs = synthetic_crosstalk(camera, config.crosstalk, seed)
        sensor = replace(sensor, crosstalk=True,
                         crosstalk_coeffs=tuple(tuple(map(float, row)) for row in coeffs))
    return sensor


def synthetic_crosstalk(camera: Camera, coupling: float, seed: int) -> np.ndarray:
    """A detector's crosstalk matrix drawn from ``coupling``, ``[target, source]`` ADU
    ratios in HDU order.

    The LSST cameras' measured matrices are largest between amps read next to each other
    (the same half of the CCD, neighbouring HDUs) and an order of magnitude smaller beyond:
    neighbours get ``coupling`` × U(0.5, 1.5), the amps two apart ± 0.1 × ``coupling`` ×
    U(0, 1), the others nothing.

    Parameters
    ----------
    camera : Camera
        The detector (its amps: two rows of ``n_amps / 2``).
    coupling : float
        Typical neighbours' coupling (e.g. 3e-4).
    seed : int
        The detector's sensor seed.

    Returns
    -------
    numpy.ndarray
        ``(n_amps, n_amps)``, zero diagonal.
    """
    n = camera.n_amps
    rng = np.random.default_rng([seed, 13])
    i, j = np.indices((n, n))
    same_row = (i // (n // 2)) == (j // (n // 2))
    distance = np.where(same_row, np.abs(i - j), n)
    near = coupling * rng.uniform(0.5, 1.5, (n, n))
    far = 0.1 * coupling * rng.uniform(-1.0, 1.0, (n, n))
    return np.where(distance == 1, near, np.where(distance == 2, far, 0.0))


def spot_image(camera: Camera, amp: str, peak_e: float, radius_px: float) -> np.ndarray:
    """A crosstalk spot: a flat-topped disc of ``peak_e`` at the centre of ``amp`` with a
    Gaussian edge (σ 2 px), assembled, zero elsewhere (every other amp dark).

    Returns
    -------
    numpy.ndarray
        float32, ``camera.detector_shape``.
    """
    ys, xs = camera.amp_slices(camera.amplifiers[camera.amp_names.index(amp)])
    yc, xc = (ys.start + ys.stop - 1) / 2.0, (xs.start + xs.stop - 1) / 2.0
    half = math.ceil(radius_px + 10)
    y0, x0 = int(yc) - half, int(xc) - half
    y, x = np.mgrid[y0:y0 + 2 * half + 1, x0:x0 + 2 * half + 1]
    r = np.hypot(y - yc, x - xc)
    disc = peak_e * np.exp(-0.5 * (np.clip(r - radius_px, 0.0, None) / 2.0) ** 2)
    out = np.zeros(camera.detector_shape, dtype=np.float32)
    out[y0:y0 + 2 * half + 1, x0:x0 + 2 * half + 1] = disc
    return out


@dataclass
class BotFrame:
    """One detector's raw of one exposure, with its truth."""

    exposure: BotExposure
    """The exposure."""
    camera: Camera
    """The detector."""
    segments: np.ndarray
    """``(16, 2048, 576)`` int32 raw segments, HDU order."""
    cards: dict[str, Any]
    """Primary header (`lsst_primary_header`)."""
    truth: ExposureTruth
    """The electronics' truth (true gains, bias levels, noiseless image …)."""
    cosmic_ray_mask: np.ndarray
    """bool, assembled: pixels hit by cosmic rays (above the mask threshold)."""
    n_cosmic_rays: int
    """Cosmic-ray events on the frame."""

    @property
    def file_name(self) -> str:
        """``<OBSID>_<detector>.fits``."""
        return f"{self.exposure.obs_id}_{self.camera.detector}.fits"

    def amp_means_e(self) -> np.ndarray:
        """Mean noiseless signal (light and dark current) of each amp, e⁻, HDU order."""
        image = self.truth.expected_e
        return np.array([float(np.mean(image[self.camera.amp_slices(a)], dtype=np.float64))
                         for a in self.camera.amplifiers])

    def summary(self) -> dict[str, Any]:
        """The frame's entry in the truth file."""
        return {
            "folder": self.exposure.folder, "obs_id": self.exposure.obs_id,
            "file": self.file_name,
            "bias_levels_adu": self.truth.bias_levels_adu.tolist(),
            "mean_e": self.amp_means_e().tolist(),
            "n_cosmic_rays": self.n_cosmic_rays, "n_saturated": self.truth.n_saturated,
        }


def tearing_pattern(camera: Camera, amplitude: float, rows: int) -> np.ndarray:
    """The response of a detector with tearing, assembled (1 where there is none).

    Tearing (charge moved between the columns next to an amp's edges while the first rows
    are clocked out, LSSTTD-1273) is drawn as a step-like pattern: in the first ``rows``
    rows read (readout order), the outermost imaging column at each side of every amp
    keeps ``1 − amplitude`` of its charge and its neighbour receives the rest, so that
    their ratio (Antilogus' statistic, `atmospec.calib.eo_flat.tearing_counts`) steps from
    1 to ``(1 + amplitude)/(1 − amplitude)`` and back.

    Parameters
    ----------
    camera : Camera
        The detector.
    amplitude : float
        Fraction of the edge column's charge moved.
    rows : int
        Rows with tearing, from the first read.

    Returns
    -------
    numpy.ndarray
        float32 multiplicative response, ``camera.detector_shape``.
    """
    n = camera.n_amps
    ny, nx = camera.data_bbox.shape
    seg = np.ones((n, ny, nx), dtype=np.float32)
    r = slice(0, min(rows, ny))
    seg[:, r, 0] -= amplitude
    seg[:, r, 1] += amplitude
    seg[:, r, nx - 1] -= amplitude
    seg[:, r, nx - 2] += amplitude
    return assemble(seg, camera, trimmed=True)


def simulate_bot_frame(exposure: BotExposure, camera: Camera, config: BotConfig) -> BotFrame:
    """Simulate one detector's raw of one exposure.

    Parameters
    ----------
    exposure : BotExposure
        From `bot_plan`.
    camera : Camera
        The detector (`load_camera`), unbinned.
    config : BotConfig
        The acquisition.

    Returns
    -------
    BotFrame
    """
    sensor = detector_config(config, camera)
    shape = camera.detector_shape
    frame_key = zlib.crc32(f"{camera.name}/{camera.detector}".encode())
    cr_ss, noise_ss = np.random.SeedSequence([config.seed, frame_key, exposure.index]).spawn(2)
    cr_rng = np.random.default_rng(cr_ss)
    n_cr = int(cr_rng.poisson(config.cr_rate_per_s * exposure.darktime))
    deposits, cr_mask = cosmic_rays(shape, n_cr, cr_rng, config.cosmics)
    response = None
    signal = np.zeros(shape, dtype=np.float32)
    if exposure.spot_amp is not None:
        signal += spot_image(camera, exposure.spot_amp, exposure.level_e,
                             config.xtalk_spot_radius_px)
    if exposure.has_light:
        signal += np.float32(exposure.illumination_e)
        response = illumination(shape, config.filter_name, config=config.flat_field,
                                sensor_seed=sensor.sensor_seed)
        if camera.detector in config.tearing and config.tearing_amplitude > 0:
            response = response * tearing_pattern(camera, config.tearing_amplitude,
                                                  config.tearing_rows)
    segments, truth = expose(signal, sensor, np.random.default_rng(noise_ss),
                             exptime=exposure.exptime, darktime=exposure.darktime,
                             illumination=response, deposits_e=deposits, camera=camera)
    del signal, deposits
    cards = lsst_primary_header(
        camera, exposure.obs_id, exposure.image_type, exposure.exptime, exposure.darktime,
        test_type=exposure.test_type, date=exposure.start, run=config.run,
        test_stand=config.test_stand, filter_name=config.filter_name,
        filter2=config.filter2, test_seq=exposure.index, seed=config.seed)
    return BotFrame(exposure, camera, segments, cards, truth, cr_mask, n_cr)


# --------------------------------------------------------------------------- run


@dataclass(frozen=True)
class BotRun:
    """What `write_bot_run` wrote."""

    run_dir: Path
    """The run folder."""
    plan: tuple[BotExposure, ...]
    """The exposures."""
    raws: tuple[Path, ...]
    """Every raw file, detector by detector, each in exposure order."""
    photodiode_files: tuple[Path, ...]
    """The photodiode records, in exposure order."""
    truth: Path
    """The truth file (`TRUTH_FILE`)."""


def _detector_truth(camera: Camera, config: BotConfig, first: BotFrame) -> dict[str, Any]:
    """The fixed truth of one detector (from its first frame)."""
    det = first.truth
    dark = det.dark_current_e_per_s
    return {
        "detector_id": camera.detector_id, "serial": camera.detector_serial,
        "vendor": camera.vendor, "sensor_type": camera.sensor_type,
        "sensor_seed": detector_sensor_seed(config, camera),
        "amps": list(camera.amp_names),
        "gains": det.gains.tolist(),
        "nominal_gains": camera.nominal_gains.tolist(),
        "read_noise_e": det.read_noise_e.tolist(),
        "read_noise_adu": det.read_noise_adu.tolist(),
        "bias_levels_adu": sensor_bias_levels(config, camera).tolist(),
        "dark_current_e_per_s": config.detector.dark_current_e_per_s,
        "dark_current_mean_e_per_s": [
            float(np.mean(dark[camera.amp_slices(a)], dtype=np.float64))
            for a in camera.amplifiers],
        "full_well_e": det.full_well_e,
        "cti_serial": serial_cti_per_amp(config.detector, camera).tolist(),
        "cti_parallel": parallel_cti_per_amp(config.detector, camera).tolist(),
        "nonlinearity": np.asarray(det.nonlinearity, dtype=float).tolist(),
        "brighter_fatter": _brighter_fatter_truth(config.detector),
        "crosstalk": _crosstalk_truth(config, camera, det.gains),
        "tearing": ({"amplitude": config.tearing_amplitude, "rows": config.tearing_rows}
                    if camera.detector in config.tearing and config.tearing_amplitude > 0
                    else None),
        "frames": [],
    }


def _crosstalk_truth(config: BotConfig, camera: Camera, gains: np.ndarray
                     ) -> list[list[float]] | None:
    """The crosstalk matrix injected in every frame of the detector, ``[target, source]``
    ADU ratios in HDU order; None without crosstalk."""
    coeffs = injected_crosstalk(detector_config(config, camera), camera, gains)
    return None if coeffs is None else np.asarray(coeffs, dtype=float).tolist()


def _brighter_fatter_truth(sensor: DetectorSimConfig) -> dict[str, float]:
    """Astier's coefficients of the simulated brighter-fatter effect (first order,
    `atmospec.sim.detector.brighter_fatter`), 1/e⁻."""
    ax, ay = sensor.brighter_fatter
    return {"alpha_x": ax, "alpha_y": ay, "a00": -4.0 * (ax + ay), "a10": 2.0 * ax,
            "a01": 2.0 * ay}


def sensor_bias_levels(config: BotConfig, camera: Camera) -> np.ndarray:
    """Mean bias level of each amp of the detector's sensor, ADU (before each frame's
    jitter)."""
    return np.asarray(sensor_model(detector_config(config, camera), camera).bias_levels_adu)


def write_bot_run(run_dir: str | Path, config: BotConfig | None = None, *,
                  on_frame: Callable[[BotFrame, Path], None] | None = None) -> BotRun:
    """Simulate the acquisition and write it in ``run_dir`` with its truth.

    Photodiode records first, then every exposure of one detector, then the next detector:
    memory holds one frame at a time. The truth file is written last.

    Parameters
    ----------
    run_dir : path
        The run folder (created; existing files of the same names are replaced).
    config : BotConfig, optional
        The acquisition; `BotConfig()` by default.
    on_frame : callable, optional
        Called with each frame and its file once written (progress, or keeping the truth
        of some frames); the frame is dropped afterwards.

    Returns
    -------
    BotRun

    Notes
    -----
    The truth file holds the configuration, ``photodiode_c_per_e``, per exposure its
    folder, OBSID, type, times, target and true illumination and photodiode charge, and
    per detector its serial, vendor, true and nominal gains, read noise, sensor bias levels,
    dark current (and its per-amp mean with hot pixels), full well, per-amp serial and
    parallel CTI, non-linearity (`DetectorSimConfig.nonlinearity`), brighter-fatter
    coefficients (`DetectorSimConfig.brighter_fatter`), crosstalk (the injected
    ``[target, source]`` ADU matrix in HDU order, or null) and tearing (amplitude and rows, or
    null; `BotConfig.tearing`), and per frame the bias levels, mean true signal per amp
    and cosmic-ray count.
    """
    config = config or BotConfig()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    plan = bot_plan(config)
    pd_files = tuple(write_photodiode_file(run_dir / e.folder, e, config)
                     for e in plan if e.has_light)
    raws: list[Path] = []
    detectors: dict[str, Any] = {}
    for name in config.detectors:
        camera = load_camera(config.instrument, name)
        for exposure in plan:
            frame = simulate_bot_frame(exposure, camera, config)
            folder = run_dir / exposure.folder
            folder.mkdir(exist_ok=True)
            path = write_raw(folder / frame.file_name, frame.segments, frame.cards,
                             compress=config.compress, camera=camera)
            if name not in detectors:
                detectors[name] = _detector_truth(camera, config, frame)
            detectors[name]["frames"].append(frame.summary())
            raws.append(path)
            log.info("wrote %s/%s (%s, %.3f s)", exposure.folder, path.name,
                     exposure.test_type, exposure.exptime)
            if on_frame is not None:
                on_frame(frame, path)
            del frame
    truth = {
        "instrument": config.instrument,
        "config": _config_json(config),
        "photodiode_c_per_e": config.photodiode_c_per_e,
        "exposures": [{**asdict(e), "photodiode_file": e.photodiode_file,
                       "photodiode_charge_c": photodiode_charge(e, config)} for e in plan],
        "detectors": detectors,
    }
    truth_path = write_text_atomic(json.dumps(truth, indent=1) + "\n", run_dir / TRUTH_FILE)
    return BotRun(run_dir, plan, tuple(raws), pd_files, truth_path)


def _config_json(config: BotConfig) -> dict[str, Any]:
    """The configuration as JSON values (tuples as lists)."""
    return json.loads(json.dumps(asdict(config)))


def expand_detectors(instrument: str, names: Sequence[str]) -> tuple[str, ...]:
    """Detector names from a list mixing detectors (``R22_S11``) and rafts (``R22``: its
    detectors in number order), without repeats.

    A raft's detectors the pipeline does not reduce (the corner rafts' wavefront sensors)
    are left out; a detector named explicitly is kept, for `load_camera` to refuse.

    Raises
    ------
    ValueError
        For a name that is neither a detector nor a raft of the instrument.
    """
    known = list_detectors(instrument)
    out: list[str] = []
    for name in names:
        name = name.strip()
        if not name:
            continue
        if name in known:
            matches = [name]
        else:
            matches = [d for d in known if d.split("_")[0] == name and _reducible(instrument, d)]
        if not matches:
            raise ValueError(f"{instrument} has no detector or raft {name!r}")
        out.extend(d for d in matches if d not in out)
    return tuple(out)


def _reducible(instrument: str, detector: str) -> bool:
    try:
        load_camera(instrument, detector)
    except BadInputError:
        return False
    return True
