"""The ISR driver: applies the configured steps, in Rubin's IsrTaskLSST order, to a raw frame.

Per-amp steps work on the raw segments (readout orientation, ADU); assembly then builds
the detector image on which the calibration products are applied:

overscan → saturation → linearity → gain → crosstalk → assemble → bias → variance → dark
→ flat → defects → interpolate → cosmic_rays → edge

Assembly always happens (the output is a detector image); listing ``assemble`` alone gives
the trimmed, assembled raw ADU.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

import numpy as np
from astropy.table import Table
from scipy.linalg.blas import saxpy

from atmospec.camera.assembly import assemble
from atmospec.camera.description import Camera
from atmospec.camera.raw import RawFrame
from atmospec.compression import CompressionConfig
from atmospec.errors import BadInputError
from atmospec.exposure import Exposure
from atmospec.isr import STEPS
from atmospec.isr.cosmic_rays import CosmicRayConfig, binned_config, find_cosmic_rays
from atmospec.isr.crosstalk import CrosstalkConfig, CrosstalkMatrix, subtract_crosstalk
from atmospec.isr.defects import frame_defect_mask
from atmospec.isr.edge import EdgeConfig, edge_regions
from atmospec.isr.gain import AmpGains
from atmospec.isr.interpolate import InterpolationConfig, fill_masked
from atmospec.isr.linearity import Linearizer
from atmospec.isr.masking import grow_mask
from atmospec.isr.overscan import OverscanConfig, overscan_noise, subtract_overscan
from atmospec.isr.saturation import SaturationConfig, saturation_masks
from atmospec.isr.variance import variance_plane
from atmospec.stats import median_and_robust_sigma

log = logging.getLogger(__name__)


class StepConfigError(ValueError):
    """The requested ISR steps cannot run with the products at hand."""


_NEEDS_PRODUCT = MappingProxyType(
    {"bias": "bias", "dark": "dark", "flat": "flat", "linearity": "linearizer"})
_NEEDS_ELECTRONS = ("bias", "dark", "flat")


@dataclass(frozen=True)
class IsrConfig:
    """Which ISR steps run and how."""

    steps: tuple[str, ...] | None = None
    """Steps to apply (any order; applied in `STEPS` order). ``None``: every step whose
    inputs are available (bias, dark, flat and linearity only when a product is given)."""
    overscan: OverscanConfig = field(default_factory=OverscanConfig)
    """Serial/parallel overscan."""
    saturation: SaturationConfig = field(default_factory=SaturationConfig)
    """SAT/SUSPECT levels and growth."""
    crosstalk: CrosstalkConfig = field(default_factory=CrosstalkConfig)
    """Crosstalk correction."""
    interpolation: InterpolationConfig = field(default_factory=InterpolationConfig)
    """Filling of BAD and SAT pixels."""
    cosmic_rays: CosmicRayConfig = field(default_factory=CosmicRayConfig)
    """Cosmic-ray detection."""
    edge: EdgeConfig = field(default_factory=EdgeConfig)
    """Edge mask."""
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    """How the post-ISR exposure is written: image and variance quantised at a step of
    their noise / 10, tile-compressed (``enabled: false``, ``--lossless``: as computed)."""
    amp_stats: bool = True
    """Per-amp summary statistics (`IsrResult.amp_stats`, and the gain, read noise and
    overscan level of each amp in the header) and the overscan noise they need. A caller
    that only takes the pixels (the PTC: 40 frames per detector) leaves them out: ~0.1 s
    of CPU per LSSTCam frame."""


@dataclass
class IsrCalibrations:
    """Calibration inputs of one ISR run (``None``: not available)."""

    gains: AmpGains
    """Per-amp gain and read noise (PTC or nominal)."""
    crosstalk: CrosstalkMatrix | None = None
    """Crosstalk matrix."""
    linearizer: Linearizer | None = None
    """Linearity correction."""
    bias: Exposure | None = None
    """Master bias (e⁻)."""
    dark: Exposure | None = None
    """Master dark (e⁻/s)."""
    flat: Exposure | None = None
    """Master flat (normalised)."""
    defects: Table | None = None
    """Defect boxes."""
    sources: dict[str, str] = field(default_factory=dict)
    """File name of each product used, by kind (for provenance)."""

    min_flat: float = 0.05
    """Flat values at or below this are BAD (unilluminated or dead pixels)."""
    _defect_masks: dict[Camera, tuple[Table, np.ndarray]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    @cached_property
    def bad_pixels(self) -> np.ndarray | None:
        """Pixels BAD in any product (and where the flat is unusable); computed once per run
        since the same products serve every exposure."""
        bad = None
        for product in (self.bias, self.dark, self.flat):
            if product is not None:
                this = product.get_mask("BAD")
                bad = this if bad is None else bad | this
        if self.flat is not None:
            bad = bad | ~(self.flat.image > self.min_flat)
        return bad if bad is not None and bad.any() else None

    @cached_property
    def flat_divisor(self) -> np.ndarray | None:
        """The flat with unusable pixels set to 1, so division needs no mask."""
        if self.flat is None:
            return None
        return np.where(self.flat.image > self.min_flat, self.flat.image,
                        np.float32(1.0)).astype(np.float32)

    def defect_mask(self, camera: Camera) -> np.ndarray | None:
        """`frame_defect_mask` of `defects` on a frame of ``camera``'s geometry (read-only).

        Computed once per defects table and geometry: the same products serve every
        exposure of a run, and re-binning the full-frame mask cost 0.2–0.75 s per binned
        exposure. A table assigned to `defects` since is a new key (tables are not modified
        in place: products are read, then shared).
        """
        if self.defects is None:
            return None
        cached = self._defect_masks.get(camera)
        if cached is None or cached[0] is not self.defects:
            mask = frame_defect_mask(self.defects, camera)
            mask.flags.writeable = False
            cached = self._defect_masks[camera] = (self.defects, mask)
        return cached[1]

    def available(self) -> set[str]:
        """Kinds of product present (names as in `resolve_steps`)."""
        kinds = ("bias", "dark", "flat", "linearizer", "crosstalk", "defects")
        return {k for k in kinds if getattr(self, k) is not None}


@dataclass
class IsrResult:
    """What one ISR run produced."""

    exposure: Exposure
    """The post-ISR exposure."""
    steps: tuple[str, ...]
    """Steps actually applied."""
    overscan: dict[str, np.ndarray]
    """Serial (per row) and parallel (per column) overscan levels, ADU, per amp."""
    amp_stats: dict[str, dict[str, float]]
    """Per-amp figures (levels, noise, masked-pixel counts); empty without
    `IsrConfig.amp_stats`."""
    timings: dict[str, float]
    """Wall time of each step, s."""


def resolve_steps(steps: tuple[str, ...] | None, available: set[str]) -> tuple[str, ...]:
    """The steps that will run, in order.

    Parameters
    ----------
    steps : tuple of str or None
        Requested steps (`IsrConfig.steps`); ``None`` for every step whose inputs exist.
    available : set of str
        Products at hand: any of ``bias, dark, flat, linearizer, crosstalk, defects``.

    Raises
    ------
    ValueError
        On an unknown step or a step whose product or prerequisite is missing.
    """
    needs = {**_NEEDS_PRODUCT, "crosstalk": "crosstalk", "defects": "defects"}
    if steps is None:
        return tuple(s for s in STEPS if s not in needs or needs[s] in available)
    unknown = set(steps) - set(STEPS)
    if unknown:
        raise StepConfigError(f"unknown ISR step(s): {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(STEPS)}")
    chosen = tuple(s for s in STEPS if s in steps or s == "assemble")
    for step in chosen:
        if step in needs and needs[step] not in available:
            raise StepConfigError(f"step {step!r} needs a {needs[step]} product")
    if "saturation" in chosen and "overscan" not in chosen:
        raise StepConfigError("step 'saturation' needs 'overscan' (levels are above the bias)")
    if "gain" not in chosen and any(s in chosen for s in _NEEDS_ELECTRONS):
        raise StepConfigError("bias, dark and flat products are in electrons: add step 'gain'")
    return chosen


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def __call__(self, name: str) -> _Timer:
        self._name = name
        return self

    def __enter__(self) -> None:
        self._t0 = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        self.timings[self._name] = self.timings.get(self._name, 0.0) + (
            time.perf_counter() - self._t0)


def run_isr(raw: RawFrame, config: IsrConfig, calibs: IsrCalibrations) -> IsrResult:
    """Apply instrument-signature removal to one raw frame.

    Parameters
    ----------
    raw : RawFrame
        Raw frame; its segments are modified in place (pass a copy to keep them).
    config : IsrConfig
        Steps and their settings.
    calibs : IsrCalibrations
        Products to use.

    Returns
    -------
    IsrResult
        Its exposure carries ``config.compression``: `Exposure.write` stores it so.

    Raises
    ------
    StepConfigError
        If the requested steps are impossible (missing product, wrong order of units).
    BadInputError
        If the frame lacks what a step needs (e.g. a dark time).
    """
    steps = resolve_steps(config.steps, calibs.available())
    _check_binning(raw, steps, calibs)
    timer = _Timer()
    segments = _segment_steps(raw, steps, config, calibs, timer)
    exposure = _assemble(raw, segments, config, timer)
    _product_steps(exposure, raw, steps, calibs, timer)
    _cleaning_steps(exposure, steps, config, calibs.gains, raw.camera, timer)
    amp_stats = (_amp_stats(exposure, raw.camera, calibs.gains, segments.overscan,
                            segments.overscan_sigma) if config.amp_stats else {})
    _record(exposure, steps, calibs.gains, amp_stats, calibs)
    exposure.compression = config.compression
    log.info("%s: ISR %s in %.2f s", raw.info.obs_id, ",".join(steps),
             sum(timer.timings.values()))
    return IsrResult(exposure, steps, segments.overscan, amp_stats, timer.timings)


def _check_binning(raw: RawFrame, steps: tuple[str, ...], calibs: IsrCalibrations) -> None:
    """Refuse master images of another shape than the frame (another binning, most often):
    whoever loaded them, the frame cannot be corrected with them."""
    camera = raw.camera
    for kind in ("bias", "dark", "flat"):
        product = getattr(calibs, kind)
        if kind not in steps or product is None or product.shape == camera.detector_shape:
            continue
        bx, by = camera.binning
        name = calibs.sources.get(kind, "")
        raise BadInputError(raw.path, f"{kind} {name} is {product.shape[1]}×{product.shape[0]}"
                                      f" px, this frame (BINX={bx}, BINY={by}) is "
                                      f"{camera.detector_shape[1]}×{camera.detector_shape[0]}")


@dataclass
class _Segments:
    """What the per-amp steps leave for assembly and the statistics."""

    electrons: bool
    """The segments were multiplied by the gains."""
    overscan: dict[str, np.ndarray] = field(default_factory=dict)
    """Serial and parallel overscan levels (empty without the overscan step)."""
    overscan_sigma: np.ndarray | None = None
    """Overscan noise per amp, ADU (NaN without the overscan step)."""
    saturated: np.ndarray | None = None
    """SAT pixels of the data sections (without the saturation step: None)."""
    suspect: np.ndarray | None = None
    """SUSPECT pixels of the data sections."""


def _segment_steps(raw: RawFrame, steps: tuple[str, ...], config: IsrConfig,
                   calibs: IsrCalibrations, timer: _Timer) -> _Segments:
    """overscan → saturation → linearity → gain → crosstalk, on the raw segments in place."""
    camera = raw.camera
    seg = raw.segments
    gains = calibs.gains
    dsl = (slice(None), *camera.data_bbox.slices)
    out = _Segments(electrons="gain" in steps,
                    overscan_sigma=np.full(camera.n_amps, np.nan))
    if "overscan" in steps:
        with timer("overscan"):
            out.overscan = subtract_overscan(seg, camera, config.overscan)
            if config.amp_stats:  # only the summary statistics use it
                out.overscan_sigma = overscan_noise(seg, camera, config.overscan)
    if "saturation" in steps:
        with timer("saturation"):
            # Per amp: the detector table's levels (LSSTCam gives one per amp), unless the
            # configuration sets one level for all.
            sat_level = (np.full(camera.n_amps, config.saturation.saturation_adu)
                         if config.saturation.saturation_adu else camera.saturation_levels)
            sus_level = config.saturation.suspect_adu or camera.suspect_adu
            out.saturated, out.suspect = saturation_masks(
                seg[dsl], sat_level[:, None, None].astype(np.float32), sus_level)
    if "linearity" in steps:
        with timer("linearity"):
            for i in range(camera.n_amps):
                seg[i][camera.data_bbox.slices] = calibs.linearizer.correct(seg[dsl][i], i)
    if out.electrons:
        with timer("gain"):
            seg[dsl] *= gains.gain.astype(np.float32)[:, None, None]
    if "crosstalk" in steps:
        with timer("crosstalk"):
            coeffs = (calibs.crosstalk.in_electrons(gains.gain) if out.electrons
                      else calibs.crosstalk.coeffs)
            subtract_crosstalk(seg[dsl], coeffs, config.crosstalk.min_source_level)
    return out


def _assemble(raw: RawFrame, segments: _Segments, config: IsrConfig, timer: _Timer
              ) -> Exposure:
    """The detector image of the segments, with the saturation masks."""
    camera = raw.camera
    with timer("assemble"):
        image = assemble(raw.segments, camera)
        exposure = Exposure.from_image(image, raw.header.copy(),
                                       unit="electron" if segments.electrons else "adu")
        if segments.saturated is not None:
            sat = assemble(segments.saturated, camera, trimmed=True)
            sat = grow_mask(sat, config.saturation.grow)
            exposure.set_mask("SAT", sat)
            exposure.set_mask("SUSPECT", assemble(segments.suspect, camera, trimmed=True) & ~sat)
    return exposure


def _product_steps(exposure: Exposure, raw: RawFrame, steps: tuple[str, ...],
                   calibs: IsrCalibrations, timer: _Timer) -> None:
    """bias → variance → dark → flat → defects, on the assembled exposure in place."""
    gains = calibs.gains
    electrons = "gain" in steps
    if "bias" in steps:
        with timer("bias"):
            exposure.image -= calibs.bias.image
    if "variance" in steps:
        with timer("variance"):
            exposure.variance = variance_plane(exposure.image, raw.camera, gains.read_noise,
                                               None if electrons else gains.gain)
    if "dark" in steps:
        with timer("dark"):
            _subtract_dark(exposure, raw, calibs.dark)
    if "flat" in steps:
        with timer("flat"):
            flat = calibs.flat_divisor
            exposure.image /= flat
            exposure.variance /= flat
            exposure.variance /= flat
    if any(s in steps for s in ("bias", "dark", "flat")) and calibs.bad_pixels is not None:
        exposure.set_mask("BAD", calibs.bad_pixels)
    if "defects" in steps:
        with timer("defects"):
            exposure.set_mask("BAD", calibs.defect_mask(raw.camera))


def _subtract_dark(exposure: Exposure, raw: RawFrame, dark: Exposure) -> None:
    """Subtract the dark (e⁻/s) scaled by the frame's dark time."""
    dark_time = raw.info.dark_time
    if dark_time is None:
        raise BadInputError(raw.path, "no DARKTIME or EXPTIME: cannot scale the dark")
    # In place (y += a·x): no full-frame temporary. saxpy copies instead when the target is
    # not a contiguous float32 array, hence the check.
    out = saxpy(dark.image.reshape(-1), exposure.image.reshape(-1), a=-float(dark_time))
    if not np.shares_memory(out, exposure.image):
        exposure.image = out.reshape(exposure.shape)


def _cleaning_steps(exposure: Exposure, steps: tuple[str, ...], config: IsrConfig,
                    gains: AmpGains, camera: Camera, timer: _Timer) -> None:
    """interpolate → cosmic_rays → edge, on the calibrated exposure in place."""
    if "interpolate" in steps:
        with timer("interpolate"):
            planes = ["BAD"] + (["SAT"] if config.saturation.interpolate else [])
            todo = exposure.get_mask(*planes)
            if todo.any():
                filled = fill_masked(exposure.image, todo, config.interpolation)
                exposure.set_mask("INTRP", filled)
    if "cosmic_rays" in steps:
        with timer("cosmic_rays"):
            rn2 = float(np.median(gains.read_noise) ** 2)
            if "gain" not in steps:
                rn2 /= float(np.median(gains.gain) ** 2)
            exclude = exposure.get_mask("BAD", "SAT", "SUSPECT")
            cr, cleaned = find_cosmic_rays(exposure.image, rn2, exclude,
                                           binned_config(config.cosmic_rays, camera.binning))
            exposure.image[cr] = cleaned[cr]
            exposure.set_mask("CR", cr)
    if "edge" in steps:
        with timer("edge"):
            for region in edge_regions(exposure.shape, config.edge.width, camera.binning):
                exposure.set_mask("EDGE", region)


def _amp_stats(exposure: Exposure, camera: Camera, gains: AmpGains,
               overscan: dict[str, np.ndarray], overscan_noise: np.ndarray
               ) -> dict[str, dict[str, float]]:
    """Per-amp summary numbers (robust statistics on a 1-in-4 pixel subsample)."""
    stats: dict[str, dict[str, float]] = {}
    planes = {p: exposure.bitmask(p) for p in ("SAT", "BAD", "CR", "SUSPECT")}
    any_bad = exposure.bitmask("SAT", "BAD", "CR", "EDGE")
    any_plane = exposure.bitmask(*planes)
    for i, amp in enumerate(camera.amplifiers):
        sl = camera.amp_slices(amp)
        img = exposure.image[sl][::4, ::4]
        good = (exposure.mask[sl][::4, ::4] & any_bad) == 0
        vals = img[good] if good.any() else img.ravel()
        median, robust_std = median_and_robust_sigma(vals)
        entry = {
            "gain": float(gains.gain[i]),
            "read_noise_e": float(gains.read_noise[i]),
            "median": median,
            "robust_std": robust_std,
            "overscan_level_adu": float(np.median(overscan["serial"][i])) if overscan else
            float("nan"),
            "overscan_noise_adu": float(overscan_noise[i]),
            "overscan_noise_e": float(overscan_noise[i] * gains.gain[i]),
        }
        # The flagged pixels once, then each plane's bit among them: one pass over the amp's
        # mask instead of one per plane (masks are sparse, but for a defect box).
        m = exposure.mask[sl]
        flagged = m[(m & any_plane) != 0]
        for p, bit in planes.items():
            entry[f"n_{p.lower()}"] = int(np.count_nonzero(flagged & bit))
        stats[amp.name] = entry
    return stats


def _record(exposure: Exposure, steps: Iterable[str], gains: AmpGains,
            amp_stats: dict[str, dict[str, float]], calibs: IsrCalibrations) -> None:
    """Write what was done into the exposure's metadata."""
    h = exposure.metadata
    h["HIERARCH ATM ISR STEPS"] = ",".join(steps)
    h["HIERARCH ATM ISR UNITS"] = exposure.unit
    h["HIERARCH ATM GAIN SOURCE"] = gains.source
    for kind, name in calibs.sources.items():
        h[f"HIERARCH ATM CALIB {kind.upper()}"] = name
    for amp, s in amp_stats.items():
        h[f"HIERARCH ATM GAIN {amp}"] = round(s["gain"], 5)
        h[f"HIERARCH ATM RDNOISE {amp}"] = round(s["read_noise_e"], 3)
        if np.isfinite(s["overscan_level_adu"]):
            h[f"HIERARCH ATM OVERSCAN {amp}"] = round(s["overscan_level_adu"], 2)
