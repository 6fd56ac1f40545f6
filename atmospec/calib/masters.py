"""Master bias, dark and flat (and spectroscopic flat) from raw LATISS frames, in memory.

Every builder follows the same path, Rubin's cpBias / cpDark / cpFlat in spirit:

1. check the inputs from their headers (readable, LATISS, the right image type, one physical
   filter for flats, a dark time for darks, no duplicates, at least ``min_inputs``);
2. ISR each input with only the steps the product needs, one frame in memory at a time, and
   store its image as a float32 ``.npy`` file with a boolean ``.npy`` of the pixels it must
   not contribute (SAT, BAD, NO_DATA; cosmic rays for darks) in a temporary working
   directory (``workdir``: on disk, not in RAM);
3. combine the stack by row chunks (`atmospec.calib.combine`), so the memory does not grow
   with the number of inputs;
4. return the master (`atmospec.calib.products.Bias`, `Dark` or `Flat`: primary header
   ``OBSTYPE``, ``INSTRUME``, ``DETECTOR``, ``DETSER``, ``FILTER``, ``CALIBDATE``,
   ``NCOMBINE``, ``COMBMETH``, ``GAINSRC``; its provenance cards ready for ``write``) and its
   verification (`atmospec.calib.verify`), run on the product in memory.

Writing the product and ``<stem>.verify.json`` is left to the caller
(`atmospec.calib.files.build_master_file` for the command line and the night runner).

A bad input (unreadable, wrong type, wrong filter, wrong shape) raises `BadInputError`
naming it, or, with ``skip_bad=True``, is logged and left out; either way no product is
made from fewer than ``min_inputs`` frames, and the skipped files are recorded in the
product's HISTORY.

Units: bias in e⁻, dark in e⁻/s, flat normalised to median 1 over its good pixels.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
from astropy.io import fits
from scipy import ndimage
from tqdm import tqdm

from atmospec.calib.combine import CombineConfig, combine_stack, input_median
from atmospec.calib.inputs import frames_of_kind, handle_bad_inputs
from atmospec.calib.products import Bias, Crosstalk, Dark, Flat, MasterImage, Ptc
from atmospec.calib.products.calibdate import calib_date
from atmospec.calib.products.detector import detector_cards
from atmospec.calib.verification import VerificationReport
from atmospec.calib.verify import verify_bias, verify_dark, verify_flat
from atmospec.camera.description import Camera, frame_camera, load_camera
from atmospec.camera.raw import read_raw
from atmospec.camera.translator import ObservationInfo
from atmospec.errors import BadInputError
from atmospec.exposure import Exposure
from atmospec.io import add_cards, provenance_cards
from atmospec.isr.cosmic_rays import CosmicRayConfig, find_cosmic_rays_by_region
from atmospec.isr.driver import IsrCalibrations, IsrConfig, run_isr
from atmospec.isr.gain import nominal_gains
from atmospec.isr.masking import grow_mask
from atmospec.isr.overscan import OverscanConfig
from atmospec.isr.saturation import SaturationConfig

log = logging.getLogger(__name__)

__all__ = [
    "DarkConfig",
    "FlatConfig",
    "MasterConfig",
    "build_bias",
    "build_dark",
    "build_flat",
    "build_spectro_flat",
    "cosmic_ray_mask",
    "large_scale_response",
]

#: Mask planes of a post-ISR input whose pixels are left out of the combination.
EXCLUDED_PLANES: tuple[str, ...] = ("SAT", "BAD", "NO_DATA")

#: Border (pixels) added around a dark for cosmic-ray detection.
_CR_PAD = 4

#: Image unit of each product.
UNITS: Mapping[str, str] = MappingProxyType(
    {"bias": "electron", "dark": "electron/s", "flat": "dimensionless"})

#: Product class and verification of each kind.
_PRODUCTS: Mapping[str, tuple[type[MasterImage], Callable[..., VerificationReport]]] = (
    MappingProxyType({"bias": (Bias, verify_bias), "dark": (Dark, verify_dark),
                      "flat": (Flat, verify_flat)}))

#: ISR steps applied to the inputs of each product (assembly is implicit).
ISR_STEPS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "bias": ("overscan", "saturation", "gain", "crosstalk"),
    "dark": ("overscan", "saturation", "gain", "crosstalk", "bias"),
    "flat": ("overscan", "saturation", "gain", "crosstalk", "bias"),
})


@dataclass(frozen=True)
class MasterConfig:
    """Settings shared by every master calibration (the whole of a bias's)."""

    min_inputs: int = 3
    """Fewest usable input frames a product is made from."""
    skip_bad: bool = False
    """Leave out (and log) unusable inputs instead of raising `BadInputError`."""
    combine: CombineConfig = field(default_factory=CombineConfig)
    """Pixel-by-pixel combination (method, clipping, chunk size, scaling)."""
    overscan: OverscanConfig = field(default_factory=OverscanConfig)
    """Overscan subtraction of the inputs."""
    saturation: SaturationConfig = field(default_factory=SaturationConfig)
    """Saturation levels (saturated pixels are left out of the combination)."""
    workdir: str | None = None
    """Parent of the temporary directory of per-input ``.npy`` files; ``None``: the one the
    caller gives (the output's directory when a file is written), else the current
    directory (not the system's temporary directory: ``/tmp`` is often a RAM-backed tmpfs,
    which would defeat the memory bound)."""
    verify: bool = True
    """Verify the product (the report is returned; written as ``<stem>.verify.json`` beside
    a product file, its figure ``<stem>.verify.png`` drawn by the apps:
    `atmospec.plots.verify`)."""


@dataclass(frozen=True)
class DarkConfig(MasterConfig):
    """Settings of a master dark (e⁻/s)."""

    combine: CombineConfig = field(default_factory=lambda: CombineConfig(scale="darktime"))
    """Combination; each input is divided by its dark time (``scale="darktime"``)."""
    reject_cosmic_rays: bool = True
    """Find cosmic rays in each input and leave their pixels out of the combination."""
    cosmic_rays: CosmicRayConfig = field(default_factory=lambda: CosmicRayConfig(niter=1))
    """Cosmic-ray detection (L.A.Cosmic, as the ISR step) on each input. One iteration: on
    a simulated 150 s dark it finds 96.7 % of the cosmic-ray pixels (99.7 % with two) in
    half the time (12 s against 21 s per frame), and with the mask grown by ``cr_grow``
    both reach 99.9 %."""
    cr_grow: int = 1
    """Pixels by which each input's cosmic-ray mask is grown (the faint edges of the tracks,
    below the detection threshold, would otherwise reach the master; Rubin's cpDark grows
    by 2)."""
    max_chance_repeats: float = 0.1
    """A pixel flagged as a cosmic ray in at least ``k`` inputs is a persistent sharp feature
    (a hot pixel) and is kept, ``k`` being the smallest count (at least 2) at which cosmic
    rays would hit fewer than this many pixels that often by chance, given the fraction of
    pixels flagged per input. Long darks have many cosmic rays: three 150 s darks have ~100
    pixels hit twice by chance, so there ``k`` is 3."""


@dataclass(frozen=True)
class FlatConfig(MasterConfig):
    """Settings of a master flat (normalised to median 1)."""

    combine: CombineConfig = field(default_factory=lambda: CombineConfig(scale="median"))
    """Combination; each input is divided by its median (``scale="median"``)."""
    spectro: bool = False
    """Spectroscopic flat: divide out the large-scale illumination, keep the pixel response."""
    smooth_bin: int = 4
    """Spectro flat: side of the bins (pixels) on which the large scale is estimated."""
    smooth_size: int = 7
    """Spectro flat: median-filter width in bins (7 × 4 px: structure larger than ~30 px
    is illumination; the median follows the sharp edges of dust shadows better than a mean)."""


@dataclass
class _Input:
    """An input that passed the header checks, then what its ISR produced."""

    path: Path
    info: ObservationInfo
    image: Path | None = None
    mask: Path | None = None
    cr: Path | None = None
    level: float = float("nan")


#: What a builder returns: the product and its verification (``None``: not verified).
Built = tuple[MasterImage, VerificationReport | None]


def build_bias(raws: Sequence[str | Path], config: MasterConfig | None = None, *,
               ptc: Ptc | None = None, crosstalk: Crosstalk | None = None,
               workdir: str | Path | None = None) -> tuple[Bias, VerificationReport | None]:
    """Build a master bias (e⁻) from raw bias frames.

    Parameters
    ----------
    raws : sequence of path
        Raw bias files (read one at a time).
    config : MasterConfig, optional
        Settings.
    ptc : Ptc, optional
        Gains and read noise of the ISR of the inputs; ``None``: the camera's nominal values.
    crosstalk : Crosstalk, optional
        Crosstalk matrix; ``None``: the shipped LATISS one.
    workdir : path, optional
        Parent of the temporary directory of the per-input images when
        ``config.workdir`` is None; ``None``: the current directory.

    Returns
    -------
    bias : Bias
        The product, its provenance cards in ``bias.provenance``.
    report : VerificationReport or None
        Its verification (``file`` empty: set it when writing); ``None`` without
        ``config.verify``.

    Raises
    ------
    BadInputError
        A bad input (when not skipped) or too few usable inputs.
    """
    return _build("bias", raws, config or MasterConfig(), ptc=ptc, crosstalk=crosstalk,
                  workdir=workdir)


def build_dark(raws: Sequence[str | Path], bias: Bias, config: DarkConfig | None = None, *,
               ptc: Ptc | None = None, crosstalk: Crosstalk | None = None,
               workdir: str | Path | None = None) -> tuple[Dark, VerificationReport | None]:
    """Build a master dark (e⁻/s) from raw dark frames.

    Each input is bias-subtracted with ``bias``, its cosmic rays found and left out, and
    divided by its dark time before the combination.

    Parameters
    ----------
    raws : sequence of path
        Raw dark files.
    bias : Bias
        Master bias (required: the darks' bias structure is far above their dark signal).
    config : DarkConfig, optional
        Settings.
    ptc, crosstalk, workdir
        As for `build_bias`.

    Returns
    -------
    dark : Dark
    report : VerificationReport or None

    Raises
    ------
    BadInputError
        A bad input, or too few usable inputs.
    """
    return _build("dark", raws, config or DarkConfig(), bias=bias, ptc=ptc,
                  crosstalk=crosstalk, workdir=workdir)


def build_flat(raws: Sequence[str | Path], bias: Bias, dark: Dark | None = None,
               config: FlatConfig | None = None, *, ptc: Ptc | None = None,
               crosstalk: Crosstalk | None = None, workdir: str | Path | None = None
               ) -> tuple[Flat, VerificationReport | None]:
    """Build a master flat (median 1) from raw flats of one physical filter.

    Each input is bias- (and dark-) subtracted and divided by its median; the combination
    is normalised to median 1 over its good pixels, over the whole detector (not per amp:
    keeping the amps' relative response makes the flat consistent with the ISR gains, so a
    gain error is absorbed identically in flats and science frames).

    Parameters
    ----------
    raws : sequence of path
        Raw flat files, all of the same physical filter (filter and disperser).
    bias : Bias
        Master bias.
    dark : Dark, optional
        Master dark (e⁻/s); flats are short and the dark current small, so it is optional.
    config : FlatConfig, optional
        Settings (``spectro=True`` for a spectroscopic flat).
    ptc, crosstalk, workdir
        As for `build_bias`.

    Returns
    -------
    flat : Flat
    report : VerificationReport or None

    Raises
    ------
    BadInputError
        A bad input, mixed filters (when not skipped), or too few usable inputs.
    """
    return _build("flat", raws, config or FlatConfig(), bias=bias, dark=dark, ptc=ptc,
                  crosstalk=crosstalk, workdir=workdir)


def build_spectro_flat(raws: Sequence[str | Path], bias: Bias, dark: Dark | None = None,
                       config: FlatConfig | None = None, *, ptc: Ptc | None = None,
                       crosstalk: Crosstalk | None = None, workdir: str | Path | None = None
                       ) -> tuple[Flat, VerificationReport | None]:
    """Build a spectroscopic flat: `build_flat` with ``spectro=True``.

    Only the pixel-scale response remains (the large-scale illumination, divided out, is
    not that of dispersed light); normalised to median 1.

    Parameters
    ----------
    raws, bias, dark, config, ptc, crosstalk, workdir
        As for `build_flat`.

    Returns
    -------
    flat : Flat
    report : VerificationReport or None
    """
    return build_flat(raws, bias, dark, replace(config or FlatConfig(), spectro=True),
                      ptc=ptc, crosstalk=crosstalk, workdir=workdir)


# --------------------------------------------------------------------------- input checks


def _check_inputs(kind: str, raws: Sequence[str | Path], config: MasterConfig
                  ) -> tuple[list[_Input], list[tuple[Path, str]]]:
    """Header checks of every input: the usable ones and the (file, problem) of the rest.

    A master belongs to one detector: the detector of most inputs is the product's (a tie
    goes to the first input's), and frames of another instrument or detector are bad
    inputs, as frames of another filter are for a flat.

    Raises
    ------
    BadInputError
        Naming the bad file(s), unless ``config.skip_bad``.
    """
    usable: list[_Input] = []
    seen: dict[str, Path] = {}
    typed, issues = frames_of_kind(raws, kind)
    for path, info in typed:
        if kind == "dark" and not (info.dark_time and info.dark_time > 0):
            issues.append((path, "no positive dark time: cannot scale to e-/s"))
        elif info.obs_id in seen:
            issues.append((path, f"duplicate of {seen[info.obs_id].name} ({info.obs_id})"))
        else:
            seen[info.obs_id] = path
            usable.append(_Input(path, info))
    usable, issues = _majority(usable, issues, _detector_key, "", "the other frames are")
    if kind == "flat":
        usable, issues = _majority(usable, issues, lambda info: info.physical_filter,
                                   "physical filter ", "the other flats are")
    handle_bad_inputs(issues, config.skip_bad, log)
    return usable, issues


def _detector_key(info: ObservationInfo) -> str:
    """The instrument and detector of a frame, as a message shows them."""
    return f"{info.instrument} {info.detector}" if info.detector else info.instrument


def _majority(usable: list[_Input], issues: list[tuple[Path, str]],
              key: Callable[[ObservationInfo], str], prefix: str, what: str
              ) -> tuple[list[_Input], list[tuple[Path, str]]]:
    """Keep the inputs of the most common ``key`` (ties: the first input's); the others
    become issues, ``"<prefix><theirs>, <what> <majority>"``."""
    if not usable:
        return usable, issues
    counts = Counter(key(i.info) for i in usable)
    best = max(counts.values())
    majority = next(key(i.info) for i in usable if counts[key(i.info)] == best)
    issues = issues + [(i.path, f"{prefix}{key(i.info)}, {what} {majority}") for i in usable
                       if key(i.info) != majority]
    return [i for i in usable if key(i.info) == majority], issues


def _require_count(kind: str, usable: Sequence[_Input], issues: list[tuple[Path, str]],
                   config: MasterConfig) -> None:
    if len(usable) >= max(config.min_inputs, 1):
        return
    skipped = f"; skipped: {', '.join(p.name for p, _ in issues)}" if issues else ""
    names = ", ".join(i.path.name for i in usable) or "none"
    raise BadInputError(None, f"master {kind}: {len(usable)} usable input frame(s) ({names}), "
                              f"at least {config.min_inputs} needed{skipped}")


# --------------------------------------------------------------------------- building


def inputs_camera(kind: str, raws: Sequence[str | Path],
                  config: MasterConfig | None = None) -> Camera:
    """The detector a master of ``kind`` built from ``raws`` is for, from their headers.

    The detector of most usable inputs (`_check_inputs`): the products a build needs
    (bias, dark, PTC) are read against it before the build starts.

    Raises
    ------
    BadInputError
        As the build would: bad inputs (unless ``config.skip_bad``), too few usable ones, a
        detector atmospec cannot reduce.
    """
    config = config or MasterConfig()
    usable, issues = _check_inputs(kind, raws, config)
    _require_count(kind, usable, issues, config)
    return _input_camera(usable)


def _input_camera(usable: Sequence[_Input]) -> Camera:
    """The inputs' detector at their binning (the products it reads must match the frames:
    a 2×2-binned night's bias is 2×2-binned)."""
    first = usable[0]
    try:
        return frame_camera(load_camera(first.info.instrument, first.info.detector),
                            first.info.binning, first.path)
    except BadInputError as exc:
        raise BadInputError(first.path, exc.problem) from None


def _build(kind: str, raws: Sequence[str | Path], config: MasterConfig, *,
           bias: Bias | None = None, dark: Dark | None = None, ptc: Ptc | None = None,
           crosstalk: Crosstalk | None = None, workdir: str | Path | None = None) -> Built:
    usable, issues = _check_inputs(kind, raws, config)
    _require_count(kind, usable, issues, config)
    camera = _input_camera(usable)

    matrix = (crosstalk or Crosstalk.default(camera)).matrix(camera.n_amps)
    calibs = IsrCalibrations(gains=ptc.gains(camera) if ptc else nominal_gains(camera),
                             crosstalk=matrix)
    steps = ISR_STEPS[kind]
    products: list[MasterImage] = []
    if kind in ("dark", "flat"):
        if bias is None:
            raise ValueError(f"a master {kind} needs a master bias")
        calibs.bias = bias.exposure
        products.append(bias)
    if dark is not None:
        calibs.dark = dark.exposure
        products.append(dark)
        steps = (*steps, "dark")
    isr_config = IsrConfig(steps=steps, overscan=config.overscan, saturation=config.saturation)
    calibs.sources = {p.kind: p.name for p in products}

    workdir = Path(config.workdir or workdir or Path.cwd())
    workdir.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    clock = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".atmospec-combine-", dir=workdir) as tmp:
        done = _isr_inputs(kind, usable, issues, isr_config, calibs, config, camera,
                           Path(tmp))
        _require_count(kind, done, issues, config)
        if kind == "dark" and isinstance(config, DarkConfig) and config.reject_cosmic_rays:
            _exclude_cosmic_rays(done, config.max_chance_repeats, config.cr_grow)
        clock = _lap(times, "isr", clock)
        scales = _scales(config.combine, done)
        log.info("combining %d %s frames (%s)", len(done), kind, config.combine.method)
        image, variance, n_used = combine_stack([i.image for i in done], config.combine,
                                                masks=[i.mask for i in done], scales=scales)
        clock = _lap(times, "combine", clock)
    master = _master_exposure(kind, image, variance, n_used, done, calibs, config, camera)
    del image, variance, n_used
    cards = provenance_cards(f"cpp.{kind}", [i.path for i in done]
                             + [p.source for p in products], config)
    cards += [("HISTORY", f"skipped {p.name}: {why}"[:72], "") for p, why in issues]
    product_class, verify = _PRODUCTS[kind]
    # The bounds a reader holds the product to: refused here, it is never written nor
    # registered (e.g. a flat whose inputs were all saturated, NaN nearly everywhere).
    product_class.check_values(master, None)
    product = product_class(master, provenance=tuple(cards))
    report = None
    if config.verify:
        # A flat's noise is its Poisson noise; the overscan's share of a bias's or a
        # dark's is expected by their tests.
        report = (verify(master, camera=camera) if kind == "flat"
                  else verify(master, camera=camera, overscan=config.overscan))
        clock = _lap(times, "verify", clock)
        if report.passed:
            log.info("master %s: verification passed", kind)
        else:
            log.warning("master %s: verification FAILED: %s", kind,
                        ", ".join(report.failures()))
    times["frames"] = len(done)
    # The phase times travel as a record attribute too, for benchmarks and monitoring.
    log.info("master %s from %d frames: read+ISR %.1f s, combine %.1f s, verify %.1f s", kind,
             len(done), times["isr"], times["combine"], times.get("verify", 0.0),
             extra={"phase_times": times})
    return product, report


def _lap(times: dict[str, float], name: str, start: float) -> float:
    now = time.perf_counter()
    times[name] = now - start
    return now


def _isr_inputs(kind: str, usable: list[_Input], issues: list[tuple[Path, str]],
                isr_config: IsrConfig, calibs: IsrCalibrations, config: MasterConfig,
                camera: Camera, tmp: Path) -> list[_Input]:
    """ISR every input in turn and store its image and exclusion mask as ``.npy`` files.

    The long part of a build (seconds per frame): a progress bar on a terminal (tqdm's
    ``disable=None``, as the simulator and the night runner do: silent in logs and CI).
    """
    done: list[_Input] = []
    what = " ".join(p for p in (kind, usable[0].info.detector,
                                usable[0].info.physical_filter if kind == "flat" else None)
                    if p)
    for n, item in enumerate(tqdm(usable, desc=f"master {what}", unit="frame",
                                  disable=None, leave=False)):
        try:
            raw = read_raw(item.path, camera=camera)
        except BadInputError as exc:
            _skip(item.path, exc.problem, issues, config.skip_bad)
            continue
        result = run_isr(raw, isr_config, calibs)
        del raw
        exposure = result.exposure
        exclude = exposure.get_mask(*EXCLUDED_PLANES)
        item.image, item.mask = tmp / f"{n:04d}_image.npy", tmp / f"{n:04d}_mask.npy"
        if kind == "dark" and isinstance(config, DarkConfig) and config.reject_cosmic_rays:
            item.cr = tmp / f"{n:04d}_cr.npy"
            np.save(item.cr, cosmic_ray_mask(exposure, calibs.gains.read_noise, camera,
                                             config.cosmic_rays))
        if kind == "flat":
            item.level = input_median(exposure.image, exclude)
            if not (np.isfinite(item.level) and item.level > 0):
                _skip(item.path, f"median level {item.level:.3g} e-: not an illuminated flat",
                      issues, config.skip_bad)
                continue
        np.save(item.image, exposure.image)
        np.save(item.mask, exclude)
        done.append(item)
        del result, exposure, exclude
    return done


def _skip(path: Path, problem: str, issues: list[tuple[Path, str]], skip_bad: bool) -> None:
    """An input found bad while processing: raise, or log it and record it as skipped."""
    handle_bad_inputs([(path, problem)], skip_bad, log)
    issues.append((path, problem))


def cosmic_ray_mask(exposure: Exposure, read_noise_e: np.ndarray, camera: Camera,
                    config: CosmicRayConfig) -> np.ndarray:
    """Cosmic-ray mask of one post-ISR dark (or dark residual), e⁻.

    Detected here rather than by the ISR ``cosmic_rays`` step, which replaces the flagged
    pixels by interpolated values: in a dark L.A.Cosmic flags the (sharp, single-pixel) hot
    pixels too, and their true values must reach the combination once they are recognised
    as persistent (`_exclude_cosmic_rays`). Each amp is searched with its own read noise
    (`atmospec.isr.cosmic_rays.find_cosmic_rays_by_region`): with one value for the
    detector, the noise peaks of its noisy amps were flagged (R10_S11, 5.95–9.45 e⁻).

    Parameters
    ----------
    exposure : Exposure
        The frame, e⁻.
    read_noise_e : numpy.ndarray
        Read noise of each amp (HDU order), e⁻.
    camera : Camera
        Amp layout.
    config : CosmicRayConfig
        Detection parameters.

    Returns
    -------
    numpy.ndarray
        bool, the frame's shape.
    """
    # Each amp padded with its median level: astroscrappy never flags the outermost pixels
    # of its image, which then are found like the others (on a simulated 150 s dark: all
    # 25 cosmic-ray pixels within 3 px of the detector's edges, against none unpadded).
    mask = find_cosmic_rays_by_region(
        exposure.image, [camera.amp_slices(a) for a in camera.amplifiers],
        np.square(np.asarray(read_noise_e, dtype=float)),
        exposure.get_mask("BAD", "SAT", "SUSPECT"), config, pad=_CR_PAD)
    log.debug("%d cosmic-ray pixels", int(mask.sum()))
    return mask


def _exclude_cosmic_rays(done: list[_Input], max_chance: float, grow: int) -> None:
    """Add the transient cosmic-ray pixels of each input, grown by ``grow`` pixels, to its
    exclusion mask; pixels flagged in too many inputs to be chance hits are kept (hot)."""
    from scipy.stats import binom

    count = np.zeros(np.load(done[0].cr, mmap_mode="r").shape, dtype=np.int16)
    fractions = []
    for item in done:
        cr = np.load(item.cr)
        fractions.append(float(cr.mean()))
        count += cr
    n = len(done)
    # chance[k - 1]: expected number of pixels flagged in k or more inputs by chance.
    chance = count.size * binom.sf(np.arange(n), n, float(np.mean(fractions)))
    min_repeats = next((k for k in range(2, n + 1) if chance[k - 1] < max_chance), n)
    persistent = count >= min_repeats
    log.info("cosmic rays: %d pixels flagged in >= %d of %d inputs kept as persistent (hot)",
             int(persistent.sum()), min_repeats, n)
    # L.A.Cosmic also flags, now and then, a neighbour of a bright hot pixel: grown, such a
    # flag would cover the hot pixel in that input, and in every input by bad luck. The
    # persistent pixels and their surroundings (as far as the growth reaches) are protected.
    protected = grow_mask(persistent, grow) if grow > 0 else persistent
    for item in done:
        cr = np.load(item.cr) & ~persistent
        if grow > 0:
            cr = grow_mask(cr, grow)
        cr &= ~protected
        mask = np.load(item.mask) | cr
        np.save(item.mask, mask)
        log.debug("%s: %d cosmic-ray pixels excluded", item.info.obs_id, int(cr.sum()))


def _scales(config: CombineConfig, done: list[_Input]) -> list[float] | None:
    """Divisor of each input implementing ``config.scale``."""
    if config.scale == "median":
        return [i.level if np.isfinite(i.level) else input_median(i.image, i.mask)
                for i in done]
    if config.scale == "darktime":
        return [float(i.info.dark_time) for i in done]
    if config.scale == "exptime":
        times = [i.info.exposure_time for i in done]
        bad = [i.path for i, t in zip(done, times, strict=True) if not (t and t > 0)]
        if bad:
            raise BadInputError(bad[0], "no positive exposure time: cannot scale")
        return [float(t) for t in times]
    return None


def _master_exposure(kind: str, image: np.ndarray, variance: np.ndarray, n_used: np.ndarray,
                     done: list[_Input], calibs: IsrCalibrations, config: MasterConfig,
                     camera: Camera) -> Exposure:
    """The product: combined image, NO_DATA/BAD where nothing was combined, header."""
    exposure = Exposure(image, np.zeros(image.shape, dtype=np.int32), variance,
                        unit=UNITS[kind])
    no_data = n_used == 0
    exposure.set_mask("NO_DATA", no_data)
    exposure.set_mask("BAD", no_data)
    # One input: a value but no variance estimate.
    exposure.set_mask("SUSPECT", n_used == 1)
    header = _header(kind, done, calibs, config, camera)
    if kind == "flat":
        good = ~no_data
        norm = float(np.median(image[good])) if good.any() else float("nan")
        if not (np.isfinite(norm) and norm > 0):
            raise BadInputError(None, f"master flat: median {norm:.3g} of the combined flats "
                                      "is not positive")
        image /= np.float32(norm)
        variance /= np.float32(norm * norm)
        header["FLATNORM"] = (norm, "combined median-scaled flats divided by this")
        if isinstance(config, FlatConfig) and config.spectro:
            large = large_scale_response(image, good, camera, config.smooth_bin,
                                         config.smooth_size)
            image /= large
            variance /= large * large
            renorm = float(np.median(image[good]))
            image /= np.float32(renorm)
            variance /= np.float32(renorm * renorm)
            header["SPECTRO"] = (True, "large-scale illumination divided out")
        image[no_data] = 1.0
    else:
        image[no_data] = 0.0
    exposure.metadata = header
    n_bad = int(no_data.sum())
    if n_bad:
        log.warning("master %s: %d pixels without any valid input (NO_DATA, BAD)", kind, n_bad)
    return exposure


def _header(kind: str, done: list[_Input], calibs: IsrCalibrations, config: MasterConfig,
            camera: Camera) -> fits.Header:
    """Primary header of a master: what it is, from what, how."""
    infos = [i.info for i in done]
    start = calib_date([i.datetime_begin for i in infos], [i.day_obs for i in infos])
    h = fits.Header()
    h["OBSTYPE"] = (kind, "calibration product type")
    add_cards(h, detector_cards(camera))
    h["TELESCOP"] = ("Rubin Auxiliary Telescope", "telescope")
    if kind == "flat":
        h["FILTER"] = (infos[0].physical_filter, "physical filter (filter~disperser)")
    else:
        h["FILTER"] = ("NONE", "not filter-dependent")
    # Nine letters: a HIERARCH card (set explicitly, so that astropy does not warn).
    h["HIERARCH CALIBDATE"] = (start, "start of first input, UTC")
    h["NCOMBINE"] = (len(done), "number of frames combined")
    h["COMBMETH"] = ("MEANCLIP" if config.combine.method == "meanclip" else "MEDIAN",
                     "pixel combination")
    h["COMBSCAL"] = (str(config.combine.scale), "inputs divided by")
    h["GAINSRC"] = (calibs.gains.source, "gains: nominal or PTC file")
    h["BUNIT"] = (UNITS[kind], "image unit")
    exptimes = [i.exposure_time for i in infos if i.exposure_time is not None]
    darktimes = [i.dark_time for i in infos if i.dark_time is not None]
    if exptimes:
        h["EXPTIME"] = (float(np.mean(exptimes)), "mean exposure time of the inputs, s")
    if darktimes:
        h["DARKTIME"] = (float(np.mean(darktimes)), "mean dark time of the inputs, s")
    if kind == "flat":
        h["FLATLVL"] = (float(np.mean([i.level for i in done])),
                        "mean median level of the input flats, e-")
    if kind == "dark" and isinstance(config, DarkConfig):
        h["CRREJECT"] = (config.reject_cosmic_rays, "cosmic rays rejected per input")
    for i, amp in enumerate(camera.amp_names):
        h[f"HIERARCH ATM GAIN {amp}"] = (round(float(calibs.gains.gain[i]), 5), "e-/ADU")
        h[f"HIERARCH ATM RDNOISE {amp}"] = (round(float(calibs.gains.read_noise[i]), 3), "e-")
    return h


# --------------------------------------------------------------------------- spectro flat


def large_scale_response(image: np.ndarray, good: np.ndarray, camera: Camera,
                         bin_size: int = 4, filter_size: int = 7) -> np.ndarray:
    """Smooth large-scale version of a flat, amp by amp.

    Each amp (so that steps in gain between amps are not smeared) is binned into
    ``bin_size``² means of its good pixels, median-filtered over ``filter_size`` bins and
    interpolated back (bilinearly, between bin centres) to every pixel.

    Parameters
    ----------
    image : numpy.ndarray
        Assembled flat.
    good : numpy.ndarray
        bool, pixels to use.
    camera : Camera
        Amp layout.
    bin_size : int
        Bin side, pixels.
    filter_size : int
        Median-filter width, bins.

    Returns
    -------
    numpy.ndarray
        float32, like ``image``.
    """
    out = np.empty(image.shape, dtype=np.float32)
    for amp in camera.amplifiers:
        sl = camera.amp_slices(amp)
        out[sl] = _smooth_amp(image[sl], good[sl], bin_size, filter_size)
    return out


def _smooth_amp(image: np.ndarray, good: np.ndarray, b: int, size: int) -> np.ndarray:
    ny, nx = image.shape
    py, px = -ny % b, -nx % b
    img = np.pad(np.where(good, image, 0.0), ((0, py), (0, px)))
    w = np.pad(good.astype(np.float32), ((0, py), (0, px)))
    by, bx = img.shape[0] // b, img.shape[1] // b
    sums = img.reshape(by, b, bx, b).sum(axis=(1, 3))
    weights = w.reshape(by, b, bx, b).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        binned = sums / weights
    empty = weights == 0
    if empty.all():
        return np.ones(image.shape, dtype=np.float32)
    if empty.any():
        # Bins without good pixels take the value of the nearest bin that has some.
        idx = ndimage.distance_transform_edt(empty, return_distances=False, return_indices=True)
        binned = binned[tuple(idx)]
    smooth = ndimage.median_filter(binned, size=size, mode="nearest")
    return _upsample_linear(smooth, b, (ny, nx)).astype(np.float32)


def _upsample_linear(binned: np.ndarray, b: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear interpolation of bin-centre values onto the pixels (constant beyond the
    outermost centres)."""
    def axis_weights(n_pix: int, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n_pix) + 0.5) / b - 0.5, 0, n_bins - 1)
        i0 = np.floor(pos).astype(np.intp)
        i1 = np.minimum(i0 + 1, n_bins - 1)
        return i0, i1, pos - i0

    y0, y1, fy = axis_weights(shape[0], binned.shape[0])
    x0, x1, fx = axis_weights(shape[1], binned.shape[1])
    rows = binned[y0] * (1 - fy)[:, None] + binned[y1] * fy[:, None]
    return rows[:, x0] * (1 - fx)[None, :] + rows[:, x1] * fx[None, :]
