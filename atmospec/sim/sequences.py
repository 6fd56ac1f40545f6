"""Simulated flat-pair sequences for photon-transfer curves (PTC) and linearity.

A PTC sequence is a ramp of flat-field exposures under a stable lamp: two flats at each
exposure time, from a few hundred electrons up to beyond full well, so that the variance of
the pair difference traces the photon-transfer curve and its turnoff, and the mean signal
against exposure time traces the linearity of the amplifiers.

Levels are log-spaced at low signal (the read-noise and shot-noise regimes each get several
points) and linearly spaced near full well, where the turnoff can only be located to within
the spacing of the levels. Every frame is reproducible from ``(seed, index)``; the sensor
(gains, bias structure, flat-field pattern, non-linearity) comes from the sensor seed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.time import Time

from atmospec.camera.description import Camera, load_camera
from atmospec.camera.raw import RawFrame
from atmospec.camera.translator import translate_header
from atmospec.io import write_text_atomic
from atmospec.sim.detector import DetectorSimConfig, ExposureTruth, expose
from atmospec.sim.rawfile import primary_header, write_raw
from atmospec.sim.scenes import CosmicRayConfig, IlluminationConfig, cosmic_rays, illumination

log = logging.getLogger(__name__)

#: Dark time beyond the exposure time of a flat, s (shutter overhead of real LATISS headers).
_EXTRA_DARK_S = 0.2407

#: Time between the end of one exposure and the start of the next, s (readout + setup).
_OVERHEAD_S = 3.3


def _default_detector() -> DetectorSimConfig:
    return DetectorSimConfig(nonlinearity=0.02)


@dataclass(frozen=True)
class PtcSequenceConfig:
    """A simulated PTC flat-pair sequence."""

    n_log_levels: int = 16
    """Levels log-spaced from ``min_level_e`` up to (not including) ``dense_from_e``."""
    n_dense_levels: int = 9
    """Levels linearly spaced from ``dense_from_e`` to ``max_level_e`` (both included): the
    turnoff is located to within their spacing."""
    min_level_e: float = 100.0
    """Lowest flat level, e⁻ per pixel at the median illumination."""
    dense_from_e: float = 80_000.0
    """Start of the dense, linearly spaced part of the ramp, e⁻."""
    max_level_e: float = 168_000.0
    """Highest flat level, e⁻: beyond the 130 ke⁻ full well so that the turnoff is seen. The
    default dense levels (80, 91, …, 168 ke⁻) step over the full well from 124 to 135 ke⁻:
    frames within a few per cent of it saturate in many short runs along the columns, which
    `atmospec.sim.detector.bleed` handles one run at a time (minutes per frame)."""
    flux_e_per_s: float = 2000.0
    """Lamp flux at the median illumination, e⁻/s/pixel; exposure time = level / flux."""
    exptime_resolution_s: float = 0.001
    """Exposure times are rounded to this (as the header records them); the signal uses the
    rounded time, so that signal ∝ EXPTIME holds exactly."""
    filter_name: str = "SDSSr_65mm"
    """FILTER of the flats."""
    day_obs: int = 20240624
    """Observing day ``YYYYMMDD`` of the OBSIDs."""
    first_seq: int = 100
    """SEQNUM of the first flat; the others follow without gaps."""
    start: str = "2024-06-24T20:00:00.000"
    """Start of the first flat (TAI)."""
    seed: int = 7
    """Seed of the frames' noise and cosmic rays (frame ``i`` uses ``(seed, i)``)."""
    cr_rate_per_s: float = 7.0
    """Cosmic-ray events per second of dark time on the whole sensor (real flats have them;
    the PTC statistics must reject them)."""
    detector: DetectorSimConfig = field(default_factory=_default_detector)
    """Sensor and electronics: gain scatter, non-linearity (2 % at 100 kADU by default),
    full well, crosstalk, sensor seed."""
    flat_field: IlluminationConfig = field(default_factory=IlluminationConfig)
    """Vignetting, dust and PRNU of the flat-field illumination."""
    cosmics: CosmicRayConfig = field(default_factory=CosmicRayConfig)
    """Cosmic-ray physics."""

    @property
    def n_pairs(self) -> int:
        """Number of flat pairs (exposure levels)."""
        return self.n_log_levels + self.n_dense_levels


@dataclass
class FlatTruth:
    """What went into one simulated flat of a PTC sequence."""

    obs_id: str
    """OBSID of the frame."""
    index: int
    """Frame index in the sequence (0-based)."""
    pair: int
    """Index of the exposure level (pair) the frame belongs to."""
    member: int
    """0 for the first flat of the pair, 1 for the second."""
    exptime: float
    """Exposure time, s."""
    darktime: float
    """Dark time, s."""
    level_e: float
    """Lamp signal at the median illumination, e⁻ (flux × exposure time)."""
    gains: np.ndarray
    """True gains, e⁻/ADU, HDU order."""
    read_noise_e: np.ndarray
    """Read noise, e⁻, HDU order."""
    read_noise_adu: np.ndarray
    """Read noise, ADU, HDU order."""
    nonlinearity: np.ndarray
    """Per-amp fractional response deficit at 100 kADU (ADU_out = x·(1 − f·x/1e5))."""
    full_well_e: float
    """Full-well capacity, e⁻."""
    mean_e: np.ndarray
    """Mean noiseless signal of each amp's data section (light and dark current), e⁻."""
    n_saturated: int
    """Pixels at full well after bleeding."""
    detector: ExposureTruth | None
    """Full electronics truth (large arrays; ``None`` when not kept)."""

    @property
    def mean_adu_linear(self) -> np.ndarray:
        """Mean signal of each amp in ADU if the amplifiers were linear (``mean_e / gain``)."""
        return self.mean_e / self.gains

    @property
    def full_well_adu(self) -> np.ndarray:
        """Full well in output ADU per amp (through the gain and the non-linearity): the
        signal at which an amp's PTC turns over."""
        x = self.full_well_e / self.gains
        return x * (1.0 - self.nonlinearity * x / 1e5)

    def to_json(self) -> dict[str, Any]:
        """Small JSON summary (the sidecar written next to the raw file)."""
        return {
            "obs_id": self.obs_id, "index": self.index, "pair": self.pair,
            "member": self.member, "exptime": self.exptime, "darktime": self.darktime,
            "level_e": self.level_e, "gains": self.gains.tolist(),
            "read_noise_e": self.read_noise_e.tolist(),
            "read_noise_adu": self.read_noise_adu.tolist(),
            "nonlinearity": self.nonlinearity.tolist(), "full_well_e": self.full_well_e,
            "mean_e": self.mean_e.tolist(), "n_saturated": self.n_saturated,
        }


class SimulatedFlat(NamedTuple):
    """One simulated flat: unpacks as ``segments, cards, truth``."""

    segments: np.ndarray
    """``(16, 2048, 576)`` int32 raw segments, HDU order."""
    cards: dict[str, Any]
    """Primary header of the raw file (IMGTYPE FLAT)."""
    truth: FlatTruth
    """What was simulated."""


def quick_sequence(**fields: Any) -> PtcSequenceConfig:
    """The short sequence of ``atmospec demo`` and ``atmospec simulate flat-pairs --quick``.

    Six pairs: five log-spaced levels from 1 ke⁻ and one at 115 ke⁻, below the 130 ke⁻ full
    well (frames near it are slow to simulate: see `PtcSequenceConfig.max_level_e`). Enough
    for the gains, read noise and a turnoff above 90 ke⁻ that the PTC's verification asks
    for; the full ramp, beyond the full well, is `PtcSequenceConfig()`.

    Parameters
    ----------
    **fields
        Other fields of `PtcSequenceConfig` (day, first sequence number, start, seed...).

    Returns
    -------
    PtcSequenceConfig
    """
    quick = {"n_log_levels": 5, "n_dense_levels": 1, "min_level_e": 1000.0,
             "dense_from_e": 115_000.0, "max_level_e": 115_000.0}
    return PtcSequenceConfig(**{**quick, **fields})


def ptc_levels(config: PtcSequenceConfig) -> np.ndarray:
    """Flat levels of the sequence, e⁻ at the median illumination, increasing.

    Parameters
    ----------
    config : PtcSequenceConfig
        The sequence.

    Returns
    -------
    numpy.ndarray
        ``n_log_levels`` log-spaced levels from ``min_level_e`` (below ``dense_from_e``)
        followed by ``n_dense_levels`` linearly spaced ones up to ``max_level_e``.
    """
    if not 0 < config.min_level_e < config.dense_from_e <= config.max_level_e:
        raise ValueError("need 0 < min_level_e < dense_from_e <= max_level_e")
    low = np.geomspace(config.min_level_e, config.dense_from_e, config.n_log_levels,
                       endpoint=False)
    high = np.linspace(config.dense_from_e, config.max_level_e, config.n_dense_levels)
    return np.concatenate([low, high])


def ptc_exposure_times(config: PtcSequenceConfig) -> np.ndarray:
    """Exposure time of each pair, s (levels / flux, rounded to the header resolution)."""
    res = config.exptime_resolution_s
    t = np.round(ptc_levels(config) / config.flux_e_per_s / res) * res
    if np.any(t <= 0) or np.any(np.diff(t) <= 0):
        raise ValueError("exposure times must be positive and distinct: raise the flux or "
                         "lower exptime_resolution_s")
    return t


def simulate_flat_pairs(config: PtcSequenceConfig | None = None, *,
                        keep_detector_truth: bool = False,
                        camera: Camera | None = None) -> Iterator[SimulatedFlat]:
    """Simulate the sequence frame by frame (two flats per level, increasing exposure time).

    Frames are generated lazily, so a caller that processes and drops them holds one frame
    (or one pair) in memory at a time.

    Parameters
    ----------
    config : PtcSequenceConfig, optional
        The sequence; defaults to `PtcSequenceConfig()`.
    keep_detector_truth : bool
        Attach the full `ExposureTruth` (noiseless image, saturation mask, ...) to each
        frame's truth; off by default because it holds several full-frame arrays.
    camera : Camera, optional
        Geometry; LATISS by default.

    Yields
    ------
    SimulatedFlat
        ``(segments, cards, truth)`` of each flat, in OBSID order.
    """
    config = config or PtcSequenceConfig()
    camera = camera or load_camera("latiss")
    shape = camera.detector_shape
    illum = illumination(shape, config.filter_name, config=config.flat_field,
                         sensor_seed=config.detector.sensor_seed)
    slices = [camera.amp_slices(a) for a in camera.amplifiers]
    start = Time(config.start, scale="tai")
    index = 0
    for pair, exptime in enumerate(ptc_exposure_times(config)):
        level = config.flux_e_per_s * float(exptime)
        for member in (0, 1):
            darktime = float(exptime) + _EXTRA_DARK_S
            cr_ss, noise_ss = np.random.SeedSequence([config.seed, index]).spawn(2)
            cr_rng = np.random.default_rng(cr_ss)
            deposits = None
            if config.cr_rate_per_s > 0:
                n_cr = int(cr_rng.poisson(config.cr_rate_per_s * darktime))
                deposits, _ = cosmic_rays(shape, n_cr, cr_rng, config.cosmics)
            signal = np.full(shape, level, dtype=np.float32)
            segments, det = expose(signal, config.detector, np.random.default_rng(noise_ss),
                                   exptime=float(exptime), darktime=darktime,
                                   illumination=illum, deposits_e=deposits, camera=camera)
            del signal, deposits
            obs_id = f"AT_O_{config.day_obs}_{config.first_seq + index:06d}"
            cards = primary_header(obs_id, "FLAT", float(exptime), darktime,
                                   config.filter_name, "empty_1", start,
                                   target="FlatField position", seed=config.seed)
            mean_e = np.array([float(np.mean(det.expected_e[sl], dtype=np.float64))
                               for sl in slices])
            truth = FlatTruth(
                obs_id=obs_id, index=index, pair=pair, member=member, exptime=float(exptime),
                darktime=darktime, level_e=level, gains=det.gains,
                read_noise_e=det.read_noise_e, read_noise_adu=det.read_noise_adu,
                nonlinearity=det.nonlinearity, full_well_e=det.full_well_e, mean_e=mean_e,
                n_saturated=det.n_saturated,
                detector=det if keep_detector_truth else None)
            log.debug("simulated %s: pair %d/%d, %.3f s, %.0f e-", obs_id, pair + 1,
                      config.n_pairs, exptime, level)
            yield SimulatedFlat(segments, cards, truth)
            start = start + (float(exptime) + _OVERHEAD_S) * u.s
            index += 1


def raw_frame(flat: SimulatedFlat, camera: Camera | None = None) -> RawFrame:
    """The in-memory `RawFrame` of a simulated flat (what `read_raw` would return from its
    file), for processing without touching the disk.

    Parameters
    ----------
    flat : SimulatedFlat
        One frame from `simulate_flat_pairs`.
    camera : Camera, optional
        Geometry; LATISS by default.

    Returns
    -------
    RawFrame
        float32 segments (a copy) and the translated header.
    """
    camera = camera or load_camera("latiss")
    header = fits.Header(flat.cards)
    path = Path(f"{flat.cards['OBSID']}.fits")
    return RawFrame(path, header, [], flat.segments.astype(np.float32), translate_header(
        header, filename=str(path)), camera)


def write_flat_pairs(out_dir: str | Path, config: PtcSequenceConfig | None = None, *,
                     compress: bool = False) -> list[Path]:
    """Simulate the sequence and write raw FLAT files ``<OBSID>.fits`` with truth sidecars.

    Parameters
    ----------
    out_dir : path
        Directory for the raws and their ``<OBSID>_truth.json`` sidecars (created).
    config : PtcSequenceConfig, optional
        The sequence; defaults to `PtcSequenceConfig()`.
    compress : bool
        RICE tile-compress the amp HDUs (lossless; slower to write and read).

    Returns
    -------
    list of pathlib.Path
        The raw files, in OBSID (increasing exposure time) order.
    """
    config = config or PtcSequenceConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for segments, cards, truth in simulate_flat_pairs(config):
        path = write_raw(out / f"{truth.obs_id}.fits", segments, cards, compress=compress)
        write_text_atomic(json.dumps(truth.to_json(), indent=1) + "\n",
                          out / f"{truth.obs_id}_truth.json")
        log.info("wrote %s (pair %d, %.3f s, %.0f e-)", path.name, truth.pair, truth.exptime,
                 truth.level_e)
        paths.append(path)
    return paths
