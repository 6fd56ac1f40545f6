"""A simulated LATISS night: biases, darks, flats, star-field images and dispersed
exposures of a spectroscopic standard, with truth.

`night_plan` lays the exposures out as an observer would (afternoon biases, darks and
flats, then science frames through the night at changing airmass, seeing and sky, with a
dispersed exposure of the standard star every few frames); `simulate_exposure` builds any of
them in memory from the night's seed; `simulate_night` writes them all as raw files
``<OBSID>.fits`` with a small JSON truth sidecar ``<OBSID>_truth.json``, plus, on request,
the damaged files a real night directory collects (truncated, empty, foreign).

Every frame is reproducible: its noise comes from ``(seed, seq)``, the star field from the
night's seed and the sensor (gains, bias structure, hot pixels, flat-field pattern) from
the sensor seed, so truth images never need to be stored.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import astropy.units as u
import numpy as np
from astropy.table import Table
from astropy.time import Time
from tqdm import tqdm

from atmospec.calib.products import Crosstalk
from atmospec.camera.assembly import bin_image
from atmospec.camera.description import load_camera
from atmospec.camera.spectrograph import load_instrument
from atmospec.camera.translator import kasten_young_airmass
from atmospec.exposure import Exposure
from atmospec.io import atomic_path, to_jsonable, write_text_atomic
from atmospec.isr.driver import IsrCalibrations
from atmospec.isr.gain import AmpGains
from atmospec.sim.detector import DetectorSimConfig, ExposureTruth, expose
from atmospec.sim.dispersed import (
    DispersedSpectrumModel,
    adr_reference_of_zeroth_order,
    render_dispersed_exposure,
)
from atmospec.sim.rawfile import primary_header, write_raw
from atmospec.sim.scenes import (
    CosmicRayConfig,
    IlluminationConfig,
    StarFieldConfig,
    cosmic_rays,
    draw_star_catalog,
    filter_qe_scale,
    illumination,
    render_stars,
)
from atmospec.sim.seds import simulated_sed
from atmospec.sim.sequences import PtcSequenceConfig, quick_sequence
from atmospec.spectro.adr import zenith_in_image_deg

log = logging.getLogger(__name__)

#: Exposure kinds in the order they are taken, with their IMGTYPE.
KINDS: Mapping[str, str] = MappingProxyType({
    "bias": "BIAS", "dark": "DARK", "flat": "FLAT", "science": "OBJECT", "dispersed": "OBJECT"})

#: Dark time beyond the exposure time, s (shutter and clocking overheads of real headers:
#: 30.0096 s for a 30 s dark, 30.2407 s for a 30 s science frame).
_EXTRA_DARK_S = MappingProxyType({"bias": 0.0096, "dark": 0.0096, "flat": 0.2407, "science": 0.2407,
                 "dispersed": 0.2407})

#: Time between the end of one exposure and the start of the next, s (readout + setup).
_OVERHEAD_S = 3.3

#: Filter in which the flat level, sky and star rates of `NightConfig` are given.
_REFERENCE_FILTER = "SDSSr_65mm"

#: Site latitude / longitude of the Auxiliary Telescope, degrees.
_LATITUDE = -30.2447889
#: ``ROTPA`` of the simulated frames, degrees (position angle of the image's +y).
_ROTPA = 0.0
_LONGITUDE = -70.7476862

#: Where the telescope parks for calibrations (flat-field screen), degrees.
_FLAT_POSITION = MappingProxyType({"elevation": 38.99, "azimuth": -171.24})


@dataclass(frozen=True)
class NightConfig:
    """One simulated night of LATISS data."""

    day_obs: int = 20240624
    """Observing day ``YYYYMMDD`` (the local date of the evening)."""
    seed: int = 1
    """Seed of the night: star field and the noise of every frame."""
    n_bias: int = 5
    """Number of bias frames."""
    n_dark: int = 3
    """Number of dark frames."""
    dark_exptime: float = 30.0
    """Dark exposure time, s."""
    n_flat: int = 3
    """Number of flats per filter."""
    flat_filters: tuple[str, ...] = ("SDSSr_65mm",)
    """Filters in which flats are taken."""
    flat_exptime: float = 5.0
    """Flat exposure time, s."""
    flat_level_e: float = 40_000.0
    """Flat level in SDSSr, e⁻ per pixel; other filters scale with the band-averaged QE."""
    n_science: int = 4
    """Number of science (star-field) frames."""
    science_filter: str = "SDSSr_65mm"
    """Filter of the science frames."""
    science_disperser: str = "empty_1"
    """Disperser of the science frames (``empty_1``: imaging)."""
    science_exptime: float = 30.0
    """Science exposure time, s."""
    n_stars: tuple[int, int] = (200, 500)
    """Range of the number of ordinary stars in the field (drawn once per night)."""
    n_saturated: tuple[int, int] = (2, 3)
    """Range of the number of saturated stars in the field (drawn once per night)."""
    seeing_arcsec: tuple[float, float] = (0.95, 1.25)
    """Range of the zenith seeing FWHM, arcsec (1.1″ = 11.6 px): it wanders slowly through
    the night between these values and grows with airmass as X^0.6."""
    sky_e_per_s: tuple[float, float] = (2.0, 8.0)
    """Range of the sky level in SDSSr, e⁻/s/px (60–240 e⁻ in 30 s): the first frames
    start near the top (end of twilight) and the sky darkens over the first hours."""
    extinction_mag: float = 0.12
    """Atmospheric extinction of the stars, mag per airmass."""
    dither_px: float = 5.0
    """Pointing scatter of the field between science frames, pixels (sigma)."""
    cr_rate_per_s: float = 7.0
    """Cosmic-ray events per second of dark time on the whole sensor (~200 in 30 s)."""
    target: str = "sim_field"
    """OBJECT of the science frames."""
    n_dispersed: int = 0
    """Number of dispersed exposures of the spectroscopic standard, interleaved with the
    science frames (one after every ``dispersed_every`` imaging frames)."""
    dispersed_every: int = 3
    """Imaging frames between two dispersed exposures."""
    dispersed_disperser: str = "holo4_003"
    """GRATING of the dispersed exposures."""
    dispersed_filter: str = "empty_1"
    """FILTER of the dispersed exposures."""
    dispersed_exptime: float = 20.0
    """Exposure time of the dispersed exposures, s."""
    dispersed_target: str = "HD142331"
    """OBJECT of the dispersed exposures: a CALSPEC standard, or one of the simulated
    non-CALSPEC targets of `atmospec.sim.seds.simulated_sed` (``planetary-nebula``,
    ``planetary-nebula+continuum``, ``star``)."""
    dispersed_spectrum: DispersedSpectrumModel = field(
        default_factory=lambda: DispersedSpectrumModel(pwv_mm=3.0, ozone_du=300.0, vaod=0.03,
                                                       angstrom=None, adr=True,
                                                       relative_humidity=20.0))
    """Atmosphere and instrument of the dispersed exposures (aerosols with libRadtran's
    default shape, as Spectractor's grids and the atmosphere fit): the CALSPEC SED of
    ``dispersed_target`` × telescope × QE × disperser efficiency per order × atmosphere
    (target, disperser, exposure time, airmass and filter are set per frame), and the
    differential refraction of the frame's pointing (``adr``: the zenith direction from its
    altitude, azimuth and ``ROTPA`` = 0 by the instrument's convention,
    `atmospec.spectro.adr.zenith_in_image_deg`, the zeroth order at the frame's position;
    the header carries the model's pressure, temperature and humidity)."""
    linspos_mm: float = 68.0
    """LINSPOS of the dispersed exposures, mm (D2CCD: the instrument's law, base + LINSPOS +
    the disperser's offset)."""
    pointing_error_px: float = 20.0
    """Scatter of the standard's position around the nominal zeroth-order position, px."""
    n_corrupt: int = 0
    """Damaged files added to the night directory by `simulate_night`, in turn: a truncated
    raw, an empty file, a FITS file from another instrument."""
    target_dec: float = -30.0
    """Declination of the science field, degrees (transits near the zenith)."""
    ha_start_h: float = -2.5
    """Hour angle of the field at the first science frame, hours."""
    science_cadence_s: float = 900.0
    """Time between the starts of consecutive science frames, s."""
    calib_start_utc: str = "20:00:00"
    """UTC time of the first bias on ``day_obs`` (afternoon in Chile)."""
    science_start_utc: str = "00:30:00"
    """UTC time of the first science frame on the day after ``day_obs``."""
    compress: bool = True
    """Write RICE tile-compressed raws (lossless)."""
    binning: tuple[int, int] = (1, 1)
    """On-chip binning ``(BINX, BINY)`` of every frame: the scene is drawn on the unbinned
    pixels and the charge of each block summed before it is read (`expose`)."""
    detector: DetectorSimConfig = field(default_factory=DetectorSimConfig)
    """Sensor and electronics (gains scatter, bias, dark, full well, crosstalk, sensor seed)."""
    flat_field: IlluminationConfig = field(default_factory=IlluminationConfig)
    """Vignetting, dust and PRNU."""
    stars: StarFieldConfig = field(default_factory=StarFieldConfig)
    """Flux distribution and PSF index of the field (``n_saturated`` is set from above)."""
    cosmics: CosmicRayConfig = field(default_factory=CosmicRayConfig)
    """Cosmic-ray physics."""


@dataclass(frozen=True)
class PlannedExposure:
    """One exposure of the night's plan."""

    day_obs: int
    """Observing day ``YYYYMMDD``."""
    seq: int
    """Sequence number (SEQNUM)."""
    kind: str
    """``bias``, ``dark``, ``flat``, ``science`` or ``dispersed``."""
    index: int
    """Index of the exposure among those of its kind (and filter, for flats)."""
    filter_name: str
    """FILTER."""
    disperser: str
    """GRATING."""
    exptime: float
    """Exposure time, s."""
    darktime: float
    """Dark time, s."""
    start: Time
    """Start of the exposure (TAI)."""
    airmass: float | None
    """Airmass at the start (science frames only)."""
    elevation: float
    """Telescope elevation, degrees."""
    azimuth: float
    """Telescope azimuth, degrees."""
    ra: float
    """Commanded RA, degrees (0 for calibrations, as in real headers)."""
    dec: float
    """Commanded Dec, degrees (0 for calibrations)."""
    seeing_arcsec: float | None = None
    """Seeing FWHM at the exposure's airmass, arcsec (on-sky frames)."""
    sky_e_per_s: float | None = None
    """Sky level in SDSSr, e⁻/s/px (on-sky frames)."""

    @property
    def obs_id(self) -> str:
        """``AT_O_<day_obs>_<seq:06d>``."""
        return f"AT_O_{self.day_obs}_{self.seq:06d}"


@dataclass
class FrameTruth:
    """Everything known about one simulated frame (in memory; see `to_json`)."""

    plan: PlannedExposure
    """Where the frame sits in the night."""
    seed: int
    """The night's seed."""
    sensor_seed: int
    """Seed of the sensor's fixed properties."""
    detector: ExposureTruth
    """Electronics truth (gains, bias, noiseless image, saturation, crosstalk, dark)."""
    stars: Table | None
    """Stars on the frame: ``x``, ``y``, ``flux_e``, ``peak_e``, ``saturated``."""
    cosmic_ray_mask: np.ndarray
    """bool, assembled: pixels hit by cosmic rays above the mask threshold."""
    n_cosmic_rays: int
    """Number of cosmic-ray events."""
    illumination: np.ndarray | None
    """Flat-field response applied to the light (None for bias and dark)."""
    sky_e: float
    """Sky level, e⁻/px (science)."""
    flat_level_e: float
    """Flat level before the flat-field response, e⁻/px (flats)."""
    fwhm_px: float | None
    """PSF FWHM, pixels (science)."""
    dispersed: dict[str, Any] | None = None
    """Truth of a dispersed scene (zeroth-order position, orders; see
    `atmospec.sim.dispersed.render_dispersed`)."""
    binning: tuple[int, int] = (1, 1)
    """On-chip binning of the frame: the images here (`detector`, `cosmic_ray_mask`,
    `illumination`) are in its binned geometry; star positions, `fwhm_px` and `sky_e` are
    per unbinned pixel."""

    def perfect_calibrations(self) -> IsrCalibrations:
        """The products a perfect calibration would give for this frame's sensor: true gains
        and read noise, the shipped crosstalk matrix (the one simulated), the true bias
        structure and dark current, and the frame's flat-field response (if it has one)."""
        def product(a: np.ndarray) -> Exposure:
            return Exposure.from_image(np.asarray(a, dtype=np.float32))

        det = self.detector
        return IsrCalibrations(
            gains=AmpGains(np.asarray(det.gains), np.asarray(det.read_noise_e),
                           "simulator truth"),
            crosstalk=Crosstalk.read().matrix(), bias=product(det.fixed_pattern_e),
            dark=product(det.dark_current_e_per_s),
            flat=None if self.illumination is None else product(self.illumination))

    def to_json(self) -> dict[str, Any]:
        """Small JSON-serialisable summary (the sidecar written next to the raw file)."""
        camera = load_camera("latiss")
        det = self.detector
        stars = None
        if self.stars is not None:
            stars = [
                {"x": round(float(r["x"]), 3), "y": round(float(r["y"]), 3),
                 "flux_e": round(float(r["flux_e"]), 1), "peak_e": round(float(r["peak_e"]), 1),
                 "saturated": bool(r["saturated"])}
                for r in self.stars
            ]
        p = self.plan
        return {
            "obs_id": p.obs_id,
            "seq_num": p.seq,
            "kind": p.kind,
            "seed": self.seed,
            "sensor_seed": self.sensor_seed,
            "filter": p.filter_name,
            "disperser": p.disperser,
            "exptime": p.exptime,
            "darktime": p.darktime,
            "airmass": p.airmass,
            "amp_names": list(camera.amp_names),
            "gains": [float(g) for g in det.gains],
            "read_noise_e": [float(r) for r in det.read_noise_e],
            "read_noise_adu": [float(r) for r in det.read_noise_adu],
            "bias_levels_adu": [float(b) for b in det.bias_levels_adu],
            "full_well_e": det.full_well_e,
            "flat_level_e": self.flat_level_e,
            "sky_e": self.sky_e,
            "fwhm_px": self.fwhm_px,
            "dispersed": self.dispersed,
            "binning": list(self.binning),
            "n_cosmic_rays": self.n_cosmic_rays,
            "n_cr_pixels": int(self.cosmic_ray_mask.sum()),
            "n_saturated_pixels": det.n_saturated,
            "stars": stars,
        }


def demo_night_config(seed: int = 1) -> NightConfig:
    """The night ``atmospec demo`` simulates: 3 biases, 3 darks, 3 flats in SDSSr and in the
    dispersed exposures' ``empty_1``, 4 star fields, 2 dispersed exposures of HD142331
    (PWV 3 mm, ozone 300 DU, VAOD 0.03) and 2 damaged files, unbinned.

    Parameters
    ----------
    seed : int
        The night's seed.

    Returns
    -------
    NightConfig
    """
    return NightConfig(day_obs=20261123, seed=seed, n_bias=3, n_dark=3, n_flat=3,
                       flat_filters=("SDSSr_65mm", "empty_1"), n_science=4, n_dispersed=2,
                       n_corrupt=2)


def demo_ptc_config(config: NightConfig) -> PtcSequenceConfig:
    """The flat pairs from which ``atmospec demo`` builds its PTC: 6 pairs of the night's
    sensor, 1 ke⁻ to 115 ke⁻, on the night's day.

    Parameters
    ----------
    config : NightConfig
        The night (`demo_night_config`): its day, seed and detector.

    Returns
    -------
    atmospec.sim.sequences.PtcSequenceConfig
    """
    d = str(config.day_obs)
    return quick_sequence(day_obs=config.day_obs, first_seq=200,
                          start=f"{d[:4]}-{d[4:6]}-{d[6:]}T19:00:00.000", seed=config.seed,
                          detector=config.detector)


def _gmst_deg(time: Time) -> float:
    """Greenwich mean sidereal time, degrees (IAU 1982 linear term; UT1 ≈ UTC is enough)."""
    return (280.46061837 + 360.98564736629 * (time.utc.jd - 2451545.0)) % 360.0


def _with_refraction(model: DispersedSpectrumModel, p: PlannedExposure
                     ) -> DispersedSpectrumModel:
    """The model with the frame's differential refraction (`NightConfig.dispersed_spectrum`):
    the zenith in the image from the frame's pointing, the zeroth order at the reference
    wavelength of its own light; none at the zenith."""
    if not model.adr or p.elevation is None or p.azimuth is None or model.airmass <= 1.0 + 1e-9:
        return replace(model, adr=False)
    zenith, _ = zenith_in_image_deg(p.elevation, p.azimuth, _ROTPA,
                                    load_instrument(model.instrument))
    model = replace(model, adr_zenith_angle_deg=zenith)
    return replace(model, adr_reference_nm=adr_reference_of_zeroth_order(model))


def _alt_az(ha_deg: float, dec_deg: float) -> tuple[float, float]:
    """Altitude and azimuth (N through E), degrees, of a source at the site."""
    ha, dec, lat = map(math.radians, (ha_deg, dec_deg, _LATITUDE))
    sin_alt = math.sin(lat) * math.sin(dec) + math.cos(lat) * math.cos(dec) * math.cos(ha)
    alt = math.asin(sin_alt)
    az = math.atan2(-math.cos(dec) * math.sin(ha),
                    math.sin(dec) * math.cos(lat) - math.cos(dec) * math.sin(lat) * math.cos(ha))
    return math.degrees(alt), math.degrees(az) % 360.0


def _day_start(day_obs: int, hms: str, next_day: bool) -> Time:
    day = f"{day_obs // 10000:04d}-{day_obs // 100 % 100:02d}-{day_obs % 100:02d}"
    t = Time(f"{day}T{hms}", scale="utc")
    return (t + 1 * u.day if next_day else t).tai


def night_plan(config: NightConfig) -> list[PlannedExposure]:
    """Lay out the night: biases, darks, flats (per filter), then science frames.

    Parameters
    ----------
    config : NightConfig
        The night.

    Returns
    -------
    list of PlannedExposure
        In SEQNUM order, starting at 1.
    """
    plan: list[PlannedExposure] = []
    t = _day_start(config.day_obs, config.calib_start_utc, next_day=False)
    calibs: list[tuple[str, int, str, float]] = []
    calibs += [("bias", i, "empty_1", 0.0) for i in range(config.n_bias)]
    calibs += [("dark", i, "empty_1", config.dark_exptime) for i in range(config.n_dark)]
    for f in config.flat_filters:
        calibs += [("flat", i, f, config.flat_exptime) for i in range(config.n_flat)]
    for kind, index, filt, exptime in calibs:
        plan.append(PlannedExposure(
            day_obs=config.day_obs, seq=len(plan) + 1, kind=kind, index=index,
            filter_name=filt, disperser="empty_1", exptime=exptime,
            darktime=exptime + _EXTRA_DARK_S[kind], start=t, airmass=None, ra=0.0, dec=0.0,
            **_FLAT_POSITION))
        t = t + (exptime + _OVERHEAD_S) * u.s

    t0 = _day_start(config.day_obs, config.science_start_utc, next_day=True)
    ra = (_gmst_deg(t0) + _LONGITUDE - 15.0 * config.ha_start_h) % 360.0
    n_slots = config.n_science + config.n_dispersed
    seeing, sky = _conditions(config, n_slots)
    counts = {"science": 0, "dispersed": 0}
    for i in range(n_slots):
        every = max(config.dispersed_every, 0)
        slot_is_dispersed = (counts["dispersed"] < config.n_dispersed
                             and (counts["science"] >= config.n_science
                                  or (i + 1) % (every + 1) == 0))
        kind = "dispersed" if slot_is_dispersed else "science"
        t = t0 + i * config.science_cadence_s * u.s
        ha = (_gmst_deg(t) + _LONGITUDE - ra + 180.0) % 360.0 - 180.0
        alt, az = _alt_az(ha, config.target_dec)
        if alt <= 0.0:
            raise ValueError(
                f"{n_slots} on-sky exposures every {config.science_cadence_s:g} s span "
                f"{(n_slots - 1) * config.science_cadence_s / 3600.0:.1f} h: the target (dec "
                f"{config.target_dec:g} deg) has set by exposure {i + 1}; ask for fewer "
                "exposures or a shorter science cadence")
        # Kasten & Young's formula gives 0.9997 at the zenith: no light goes through less
        # than one atmosphere, and the header must say the airmass the light went through.
        airmass = max(kasten_young_airmass(alt), 1.0)
        if kind == "dispersed":
            filt, disp, exptime = (config.dispersed_filter, config.dispersed_disperser,
                                   config.dispersed_exptime)
        else:
            filt, disp, exptime = (config.science_filter, config.science_disperser,
                                   config.science_exptime)
        plan.append(PlannedExposure(
            day_obs=config.day_obs, seq=len(plan) + 1, kind=kind, index=counts[kind],
            filter_name=filt, disperser=disp, exptime=exptime,
            darktime=exptime + _EXTRA_DARK_S[kind], start=t, airmass=airmass,
            elevation=alt, azimuth=az, ra=ra, dec=config.target_dec,
            seeing_arcsec=float(seeing[i] * airmass**0.6), sky_e_per_s=float(sky[i])))
        counts[kind] += 1
    return plan


def _conditions(config: NightConfig, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Zenith seeing (arcsec) and sky (e⁻/s/px) of each on-sky slot of the night.

    The seeing wanders smoothly (a random-phase sinusoid over ~3 h plus 3 % jitter) inside
    ``config.seeing_arcsec``; the sky falls from the top of ``config.sky_e_per_s`` (end of
    twilight) towards the bottom with a 1 h e-folding, plus 5 % jitter.
    """
    rng = np.random.default_rng([config.seed, 0x5EE1])
    lo, hi = config.seeing_arcsec
    hours = np.arange(n) * config.science_cadence_s / 3600.0
    phase = rng.uniform(0, 2 * np.pi)
    wander = 0.5 + 0.4 * np.sin(2 * np.pi * hours / 3.0 + phase)
    seeing = lo + (hi - lo) * np.clip(wander + rng.normal(0, 0.03, n), 0.0, 1.0)
    s_lo, s_hi = config.sky_e_per_s
    sky = (s_lo + (s_hi - s_lo) * np.exp(-hours)) * rng.normal(1.0, 0.05, n).clip(0.85, 1.15)
    return seeing, sky


def _field_catalog(config: NightConfig, fwhm: float) -> Table:
    """The night's star field (same stars in every science frame)."""
    rng = np.random.default_rng([config.seed, 0xF1E1D])
    n_stars = int(rng.integers(config.n_stars[0], config.n_stars[1] + 1))
    n_sat = int(rng.integers(config.n_saturated[0], config.n_saturated[1] + 1))
    cfg = replace(config.stars, n_saturated=n_sat)
    return draw_star_catalog(load_camera("latiss").detector_shape, n_stars, rng, fwhm=fwhm,
                             exptime=config.science_exptime, config=cfg)


def simulate_exposure(
    kind: str, config: NightConfig, seq: int
) -> tuple[np.ndarray, FrameTruth, dict[str, Any]]:
    """Build one frame of the night in memory.

    Parameters
    ----------
    kind : str
        ``bias``, ``dark``, ``flat``, ``science`` or ``dispersed`` (``object`` accepted for
        either of the last two); must match the plan's kind for ``seq``.
    config : NightConfig
        The night.
    seq : int
        SEQNUM of the frame in `night_plan`.

    Returns
    -------
    segments : numpy.ndarray
        ``(16, 2048, 576)`` int32 raw segments (``(16, 1024, 288)`` binned 2 × 2).
    truth : FrameTruth
        What was simulated.
    primary_cards : dict
        Primary header of the raw file.
    """
    kind = kind.lower()
    if kind == "object":  # an OBJECT frame is a science or a dispersed one
        kind = next((p.kind for p in night_plan(config) if p.seq == seq), "science")
    by_seq = {p.seq: p for p in night_plan(config)}
    if seq not in by_seq:
        raise ValueError(f"no exposure with seq {seq} in this night ({len(by_seq)} planned)")
    p = by_seq[seq]
    if p.kind != kind:
        raise ValueError(f"seq {seq} is a {p.kind}, not a {kind}")
    camera = load_camera("latiss")
    shape = camera.detector_shape
    det = config.detector
    scene_ss, cr_ss, noise_ss = np.random.SeedSequence([config.seed, seq]).spawn(3)
    scene_rng = np.random.default_rng(scene_ss)

    qe_ratio = filter_qe_scale(p.filter_name) / filter_qe_scale(_REFERENCE_FILTER)
    signal = np.zeros(shape, dtype=np.float32)
    illum = None
    stars = None
    sky = flat_level = 0.0
    fwhm = None
    dispersed = None
    if kind in ("flat", "science", "dispersed"):
        illum = illumination(shape, p.filter_name, config=config.flat_field,
                             sensor_seed=det.sensor_seed)
    if kind == "flat":
        flat_level = config.flat_level_e * qe_ratio
        signal += np.float32(flat_level)
    elif kind == "science":
        nominal = float(np.mean(config.seeing_arcsec)) / camera.plate_scale
        cat = _field_catalog(config, nominal)
        fwhm = float(p.seeing_arcsec) / camera.plate_scale
        dx, dy = scene_rng.normal(0.0, config.dither_px, 2)
        x = np.asarray(cat["x"]) + dx
        y = np.asarray(cat["y"]) + dy
        transmission = 10.0 ** (-0.4 * config.extinction_mag * (p.airmass or 1.0))
        flux = np.asarray(cat["flux_e_per_s"]) * p.exptime * transmission * qe_ratio
        signal, peak = render_stars(shape, x, y, flux, fwhm=fwhm, beta=config.stars.beta,
                                    config=config.stars)
        sky = float(p.sky_e_per_s) * p.exptime * qe_ratio
        signal += np.float32(sky)
        stars = Table({"x": x, "y": y, "flux_e": flux, "peak_e": peak,
                       "saturated": cat["saturated"]})
    elif kind == "dispersed":
        fwhm = float(p.seeing_arcsec) / camera.plate_scale
        spec = load_instrument("latiss").disperser_spec(p.disperser)
        x0, y0 = np.asarray(spec.nominal_zeroth_order) + scene_rng.normal(
            0.0, config.pointing_error_px, 2)
        # The model holds the atmosphere, telescope, QE and disperser efficiencies.
        sed = simulated_sed(config.dispersed_target)
        model = replace(config.dispersed_spectrum,
                        target=config.dispersed_target if sed is None else sed,
                        disperser=p.disperser, exptime_s=p.exptime,
                        airmass=p.airmass or 1.0, filter_name=p.filter_name)
        model = _with_refraction(model, p)
        signal, dispersed = render_dispersed_exposure(
            shape, float(x0), float(y0), fwhm, config.linspos_mm, scene_rng, model)
        sky = float(p.sky_e_per_s) * p.exptime
        signal += np.float32(sky)

    cr_rng = np.random.default_rng(cr_ss)
    n_cr = int(cr_rng.poisson(config.cr_rate_per_s * p.darktime))
    deposits, cr_mask = cosmic_rays(shape, n_cr, cr_rng, config.cosmics)

    segments, det_truth = expose(signal, det, np.random.default_rng(noise_ss),
                                 exptime=p.exptime, darktime=p.darktime, illumination=illum,
                                 deposits_e=deposits, camera=camera, binning=config.binning)
    if config.binning != (1, 1):
        frame = camera.binned(*config.binning)
        cr_mask = bin_image(cr_mask, frame, "any")
        illum = None if illum is None else bin_image(illum, frame, "mean")
    truth = FrameTruth(plan=p, seed=config.seed, sensor_seed=det.sensor_seed,
                       detector=det_truth, stars=stars, cosmic_ray_mask=cr_mask,
                       n_cosmic_rays=n_cr, illumination=illum, sky_e=float(sky),
                       flat_level_e=float(flat_level), fwhm_px=fwhm,
                       dispersed=to_jsonable(dispersed) if dispersed is not None else None,
                       binning=config.binning)
    target = {"science": config.target, "dispersed": config.dispersed_target}.get(
        kind, "FlatField position")
    cards = primary_header(
        p.obs_id, KINDS[kind], p.exptime, p.darktime, p.filter_name, p.disperser, p.start,
        p.airmass, p.ra, p.dec, target, elevation=p.elevation, azimuth=p.azimuth,
        seed=config.seed, linspos=config.linspos_mm, binning=config.binning,
        # the air the dispersed light went through (pressure hPa → Pa, as LATISS writes it)
        pressure_pa=100.0 * float(config.dispersed_spectrum.pressure_hpa),
        air_temp_c=config.dispersed_spectrum.temperature_c,
        humidity=config.dispersed_spectrum.relative_humidity, rotpa=_ROTPA,
    )
    return segments, truth, cards


def simulate_night(out_dir: str | Path, config: NightConfig | None = None) -> list[Path]:
    """Simulate and write a whole night.

    Parameters
    ----------
    out_dir : path
        Directory for ``<OBSID>.fits`` raws and ``<OBSID>_truth.json`` sidecars (created).
    config : NightConfig, optional
        The night; defaults to `NightConfig()`.

    Returns
    -------
    list of pathlib.Path
        The raw files, in SEQNUM order.
    """
    config = config or NightConfig()
    camera = load_camera("latiss").binned(*config.binning)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    # disable=None: a bar on a terminal, silence in logs and CI.
    for p in tqdm(night_plan(config), desc="simulating", unit="frame", disable=None):
        segments, truth, cards = simulate_exposure(p.kind, config, p.seq)
        raw = write_raw(out / f"{p.obs_id}.fits", segments, cards, compress=config.compress,
                        camera=camera)
        write_text_atomic(json.dumps(truth.to_json(), indent=1) + "\n",
                          out / f"{p.obs_id}_truth.json")
        log.info("wrote %s (%s, %s, %.1f s) and its truth sidecar", raw, p.kind,
                 p.filter_name, p.exptime)
        paths.append(raw)
    paths += write_damaged_files(out, paths, config)
    return paths


def write_damaged_files(out_dir: Path, raws: list[Path], config: NightConfig) -> list[Path]:
    """The damaged files of a real night directory, ``config.n_corrupt`` of them in turn:
    a raw cut in the middle of its pixel data (an interrupted transfer), an empty file, and
    a valid FITS file from another instrument (ComCam). They take the SEQNUMs after the
    night's last exposure.

    Parameters
    ----------
    out_dir : pathlib.Path
        The night directory.
    raws : list of pathlib.Path
        The night's raw files (the truncated file is cut from the first on-sky one).
    config : NightConfig
        The night (``day_obs``, ``n_corrupt``).

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    from astropy.io import fits

    if config.n_corrupt <= 0:
        return []
    source = next((r for r in raws if "_O_" in r.name), raws[-1] if raws else None)
    seq = max((int(r.stem.split("_")[-1]) for r in raws), default=0)
    written = []
    for i in range(config.n_corrupt):
        seq += 1
        path = out_dir / f"AT_O_{config.day_obs}_{seq:06d}.fits"
        kind = ("truncated", "empty", "foreign")[i % 3]
        if kind == "truncated" and source is not None:
            data = source.read_bytes()
            with atomic_path(path) as tmp:
                tmp.write_bytes(data[: len(data) // 2])
        elif kind == "foreign":
            path = out_dir / f"CC_O_{config.day_obs}_{seq:06d}.fits"
            hdu = fits.PrimaryHDU(np.zeros((8, 8), dtype=np.int16))
            hdu.header["INSTRUME"] = "ComCam"
            hdu.header["OBSID"] = path.stem
            with atomic_path(path) as tmp:
                hdu.writeto(tmp, output_verify="silentfix")
        else:
            with atomic_path(path) as tmp:
                tmp.write_bytes(b"")
        log.info("wrote a damaged file %s (%s)", path.name, kind)
        written.append(path)
    return written
