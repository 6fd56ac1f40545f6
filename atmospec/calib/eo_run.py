"""One detector's electro-optical figures from a BOT-style EO acquisition.

A BOT acquisition (``atmospec.sim.bot`` writes one; the camera team's runs are laid out the
same way) holds one folder per exposure, named by the acquisition scripts; eotest selects
the frames of each analysis by glob patterns on the folder names
(``BOT_jh_glob_patterns.ini``). `BOT_PATTERNS` are those patterns, `classify_bot_run` sorts
a run's raws by detector and role with them, and `detector_figures` measures one
detector, in memory, with the builders the ``atmospec calib`` commands use:

1. PTC from the flat pairs (`atmospec.calib.ptc.build_ptc`): gain, a00, noise, turnoff;
2. master bias from every bias, master dark from the darks, master superflat from the
   high-flux superflats (`atmospec.calib.masters`), all with the PTC's gains (e⁻);
3. defects by the camera team's definitions (`EoRunConfig.defects`: bright pixel > 5 e⁻/s
   in the dark, dark pixel < 0.8 × the amp's median in the superflat, a column with ≥ 20
   of either is a column defect);
4. `atmospec.calib.eo.eo_figures` on the ``bias_bias_*`` frames and those products: read
   and total noise, gain, full well, dark current median and 95th percentile, defect
   counts and fraction;
5. serial and parallel EPER CTI on the high- and the low-flux superflats separately, and
   on every flat of the PTC ramp (CTI against signal; the figure at the faintest level);
6. the PTC checks of cp_verify, the linearity against the photodiode charge of each flat
   pair (maximum fractional deviation from a line, CCD-009), and the brighter-fatter
   coefficients a_10, a_01 from the pairs' covariances (`atmospec.calib.ptc`);
7. bias stability, bias shifts and the amps' noise correlations on the ``bias_bias_*``
   frames (`atmospec.calib.eo_bias`); PRNU (CCD-027) and the divisadero response of the
   master superflat, tearing on each high-flux superflat (`atmospec.calib.eo_flat`);
8. cp_verify's per-exposure tests of each ``bias_bias_*`` frame and each dark reduced with
   the run's own masters (`atmospec.calib.verify.verify_frame`; a dark's noise after its
   cosmic rays are rejected, found with each amp's read noise): the fraction of the
   frames each amp passes;
9. with spot frames (``xtalk_*``, biases-only runs too), the crosstalk matrix, CCD-013's
   largest coupling per aggressor amp and cp_verify's residual after correction
   (`atmospec.calib.eo_crosstalk`).

Each frame is read once (of a spot frame, the rows around its spot are kept for the
residual after correction): the per-frame figures run inside the loops of the builders
that read it (`atmospec.calib.ptc.build_ptc`'s ``on_pair``,
`atmospec.calib.eo.eo_figures`'s ``on_bias``), their time booked under their own names.

The specification and verdict of each figure are `atmospec.calib.eo_specs.verdict_table`'s;
nothing is written here (the app writes the tables: `atmospec.night.eo`).
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
from astropy import units as u
from astropy.table import Table

from atmospec.calib.defects import DefectMaps, FindDefectsConfig, detect_defects, mask_to_boxes
from atmospec.calib.eo import EoConfig, eo_figures, eper_cti, max_fractional_deviation
from atmospec.calib.eo_bias import BIAS_COLUMNS, BiasFiguresConfig, BiasSequence
from atmospec.calib.eo_crosstalk import EoCrosstalk, EoCrosstalkConfig, eo_crosstalk
from atmospec.calib.eo_flat import (
    DivisaderoConfig,
    PrnuConfig,
    TearingConfig,
    divisadero_response,
    master_flat_noise,
    prnu_percent,
    tearing_counts,
)
from atmospec.calib.inputs import raw_info
from atmospec.calib.masters import (
    ISR_STEPS,
    DarkConfig,
    FlatConfig,
    MasterConfig,
    build_bias,
    build_dark,
    build_flat,
    cosmic_ray_mask,
)
from atmospec.calib.photodiode import (
    PhotodiodeConfig,
    integrate_photodiode,
    photodiode_file_for,
    read_photodiode,
)
from atmospec.calib.products.crosstalk import Crosstalk
from atmospec.calib.products.ptc import Ptc
from atmospec.calib.ptc import PtcConfig, build_ptc, covariance_coefficients
from atmospec.calib.verify import FRAME_TESTS, VerifyConfig, overscan_noise_factor, verify_frame
from atmospec.camera.description import Camera
from atmospec.camera.raw import RawFrame, read_raw
from atmospec.errors import BadInputError
from atmospec.exposure import Exposure
from atmospec.isr.driver import IsrCalibrations, IsrConfig, run_isr
from atmospec.isr.gain import AmpGains, nominal_gains
from atmospec.isr.masking import grow_mask
from atmospec.isr.overscan import OverscanConfig

log = logging.getLogger(__name__)

__all__ = [
    "BOT_PATTERNS",
    "EO_RUN_COLUMNS",
    "DetectorEo",
    "EoFrames",
    "EoRunConfig",
    "classify_bot_run",
    "detector_figures",
    "photodiode_linearity",
]

#: Folder-name patterns of each role: those the camera team's EO job harness gives eotest
#: (``lsst-camera-dh/EO-analysis-jobs`` ``data/BOT_jh_glob_patterns.ini``, section ``BOT_acq``:
#: ``bias_frame``, ``read_noise``, ``dark_current``, ``flat_pairs``, ``cte_high``,
#: ``cte_low``; tests/test_eo_run.py compares them with the file).
BOT_PATTERNS: Mapping[str, str] = MappingProxyType({
    "bias": "*_bias_*",
    "read_noise": "bias_bias_*",
    "dark": "dark_dark_*",
    "flat_pairs": "flat_*_flat?_*",
    "sflat_high": "sflat_flat_*H*",
    "sflat_low": "sflat_flat_*L*",
    # Not in eotest's file (its BOT harness measured crosstalk in separate jobs): the spot
    # frames `atmospec.sim.bot` writes, one aggressor amp each.
    "xtalk": "xtalk_*",
})

#: Columns `detector_figures` adds to `atmospec.calib.eo.EO_COLUMNS`: (name, unit).
EO_RUN_COLUMNS: tuple[tuple[str, u.UnitBase | None], ...] = (
    ("cti_serial_high", None),
    ("cti_parallel_high", None),
    ("cti_serial_low", None),
    ("cti_parallel_low", None),
    ("ptc_gain_vs_nominal", None),
    ("ptc_noise", u.electron),
    ("ptc_noise_vs_nominal", None),
    ("ptc_a00", 1 / u.electron),
    ("ptc_turnoff_e", u.electron),
    ("ptc_a10", 1 / u.electron),
    ("ptc_a01", 1 / u.electron),
    ("linearity_max_frac_dev", u.percent),
    ("cti_serial_lowest", None),
    ("cti_parallel_lowest", None),
    ("prnu", u.percent),
    ("divisadero_max", None),
    ("tearing_detections", None),
    *((name, None if unit is None else u.Unit(unit)) for name, unit in BIAS_COLUMNS),
    ("verify_bias_pass", None),
    ("verify_dark_pass", None),
    ("crosstalk_max", u.percent),
    ("verify_crosstalk_pass", None),
)

#: Figures of the spot frames only (`atmospec.calib.eo_crosstalk`): a run without spot
#: frames leaves them out rather than counting them not measured.
_SPOT_FIGURES = ("crosstalk_max", "verify_crosstalk_pass")


@dataclass(frozen=True)
class EoFrames:
    """One detector's raws of a BOT acquisition, by role (each sorted by path)."""

    detector: str
    """Detector name (``R22_S11``)."""
    bias: tuple[Path, ...] = ()
    """Every bias (``*_bias_*``): the master bias."""
    read_noise: tuple[Path, ...] = ()
    """The bias acquisition's biases (``bias_bias_*``): read and total noise."""
    dark: tuple[Path, ...] = ()
    """Darks (``dark_dark_*``)."""
    flat_pairs: tuple[Path, ...] = ()
    """Flat pairs (``flat_*_flat?_*``): PTC and linearity."""
    sflat_high: tuple[Path, ...] = ()
    """High-flux superflats (``sflat_flat_*H*``): dark defects, CTI."""
    sflat_low: tuple[Path, ...] = ()
    """Low-flux superflats (``sflat_flat_*L*``): CTI."""
    xtalk: tuple[Path, ...] = ()
    """Crosstalk spot frames (``xtalk_*``), one aggressor amp each: CCD-013."""

    @property
    def n_frames(self) -> int:
        """Distinct raws."""
        return len({*self.bias, *self.read_noise, *self.dark, *self.flat_pairs,
                    *self.sflat_high, *self.sflat_low, *self.xtalk})


def classify_bot_run(paths: Iterable[str | Path], *, skip_bad: bool = True
                     ) -> dict[str, EoFrames]:
    """Sort a BOT acquisition's raws by detector (from each header) and role (from the
    folder name, `BOT_PATTERNS`).

    Parameters
    ----------
    paths : iterable of path
        Raw files of the run (``RUNDIR/<folder>/<file>.fits``).
    skip_bad : bool
        Log and leave out a file whose header cannot be read or has no detector, instead
        of raising.

    Returns
    -------
    dict
        Detector name → `EoFrames`, in detector order; a detector appears when at least
        one of its raws is in a folder of some role. Files in other folders are ignored.

    Raises
    ------
    BadInputError
        A bad file without ``skip_bad``.
    """
    roles: dict[str, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(Path(p) for p in paths):
        folder = path.parent.name
        matched = [role for role, pattern in BOT_PATTERNS.items()
                   if fnmatch.fnmatchcase(folder, pattern)]
        if not matched:
            log.debug("%s: folder %s is not an EO role", path.name, folder)
            continue
        try:
            info = raw_info(path)
            if not info.detector:
                raise BadInputError(path, "no detector in the header")
        except BadInputError as exc:
            if not skip_bad:
                raise
            log.warning("skipping %s", exc)
            continue
        for role in matched:
            roles[info.detector][role].append(path)
    return {det: EoFrames(det, **{role: tuple(files) for role, files in by_role.items()})
            for det, by_role in sorted(roles.items())}


def _eo_defects() -> FindDefectsConfig:
    # The camera team's definitions (LCA-128, eotest): absolute thresholds against the
    # amp's median (no local background), columns of 20 defective pixels; no column-outlier
    # test, which would also flag the faint columns the specification does not count.
    return FindDefectsConfig(threshold_type="value", flat_background_box=0,
                             n_sigma_column=None, min_column_pixels=20)


def _eo_figures_config() -> EoConfig:
    # A 1 ke⁻ superflat is ~600 ADU at the LSST CCDs' gains: EPER down to 200 ADU.
    return EoConfig(eper_min_level_adu=200.0, defects=_eo_defects())


@dataclass(frozen=True)
class EoRunConfig:
    """How one detector of a BOT acquisition is measured."""

    eo: EoConfig = field(default_factory=_eo_figures_config)
    """Noise, dark, EPER and linearity settings (`atmospec.calib.eo.EoConfig`); its
    ``defects`` are the camera team's definitions."""
    ptc: PtcConfig = field(default_factory=PtcConfig)
    """PTC measurement and fit (its ``exptime_tolerance_s`` also groups the flats of a pair
    for their photodiode charge)."""
    min_master_inputs: int = 2
    """Fewest frames a master bias, dark or superflat is made from (a BOT acquisition has
    few darks and superflats of each flux)."""
    reject_cosmic_rays: bool = True
    """Leave the cosmic rays of each dark out of the master dark (else each is a bright
    pixel)."""
    photodiode: PhotodiodeConfig = field(default_factory=PhotodiodeConfig)
    """Integration of the photodiode records."""
    bias: BiasFiguresConfig = field(default_factory=BiasFiguresConfig)
    """Bias stability, shifts and amp correlations of the ``bias_bias_*`` frames."""
    prnu: PrnuConfig = field(default_factory=PrnuConfig)
    """PRNU of the master superflat."""
    divisadero: DivisaderoConfig = field(default_factory=DivisaderoConfig)
    """Response of the master superflat at the amp boundaries."""
    tearing: TearingConfig = field(default_factory=TearingConfig)
    """Tearing statistic of each high-flux superflat."""
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    """cp_verify's per-exposure tests of the biases and darks re-processed with the run's
    masters (tolerances)."""
    crosstalk: EoCrosstalkConfig = field(default_factory=EoCrosstalkConfig)
    """Crosstalk of the spot frames and its residual after correction."""
    verify_frames: bool = True
    """Run those tests (``verify_bias_pass``, ``verify_dark_pass``); off, a run of biases
    only needs no master bias, a third of its cost (a focal plane's read noise)."""


def photodiode_linearity(ptc: Ptc, flats: Iterable[Path], camera: Camera,
                         config: EoRunConfig | None = None) -> np.ndarray:
    """Maximum fractional deviation from linearity of each amp against the photodiode, %.

    Each flat's photodiode record (`atmospec.calib.photodiode.photodiode_file_for`, in the
    flat's folder) is integrated into a charge; the PTC points (mean signal of each pair,
    ADU) are set against the mean charge of the flats of the same exposure time, and
    `atmospec.calib.eo.max_fractional_deviation` fits the line over
    ``config.eo.linearity_range_e`` (capped at the turnoff).

    Parameters
    ----------
    ptc : Ptc
        PTC of the flats (``PTC_MEAN``, ``PTC_EXPTIME``, ``GAIN``, ``TURNOFF``).
    flats : iterable of pathlib.Path
        The flat pairs' raws.
    camera : Camera
        Amp order.
    config : EoRunConfig, optional
        Ranges and tolerances.

    Returns
    -------
    numpy.ndarray
        Per amp (HDU order), %; NaN for an amp with fewer than 3 points with a charge, or
        all NaN when no flat has a photodiode record.
    """
    config = config or EoRunConfig()
    n = camera.n_amps
    charges: list[tuple[float, float]] = []
    for path in flats:
        record = photodiode_file_for(path, path.parent)
        if record is None:
            continue
        info = raw_info(path)
        charge = integrate_photodiode(read_photodiode(record), config.photodiode)
        if charge.illuminated and info.exposure_time is not None:
            charges.append((float(info.exposure_time), charge.charge))
    if not charges:
        log.info("%s: no photodiode record: linearity against the photodiode not measured",
                 camera.label)
        return np.full(n, np.nan)
    times = np.array([t for t, _ in charges])
    values = np.array([c for _, c in charges])
    table = ptc.table
    rows = {str(a).strip(): i for i, a in enumerate(table["AMP"])}
    tol = config.ptc.exptime_tolerance_s
    lo_e, hi_e = config.eo.linearity_range_e
    out = np.full(n, np.nan)
    for i, name in enumerate(camera.amp_names):
        row = rows[name]
        means = np.asarray(table["PTC_MEAN"][row], dtype=float)
        exptimes = np.asarray(table["PTC_EXPTIME"][row], dtype=float)
        pd = np.array([values[np.abs(times - t) <= tol].mean()
                       if np.any(np.abs(times - t) <= tol) else np.nan for t in exptimes])
        gain = float(table["GAIN"][row])
        turnoff = float(table["TURNOFF"][row])
        hi = hi_e / gain if not np.isfinite(turnoff) else min(hi_e / gain, turnoff)
        out[i] = max_fractional_deviation(pd, means, lo_e / gain, hi)
    return out


def _cti(paths: Iterable[Path], camera: Camera, config: EoConfig,
         also: Callable[[RawFrame], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean serial and parallel EPER CTI of the frames (NaN without any); ``also`` is
    called with each frame read (not to be modified)."""
    results = []
    for path in paths:
        raw = read_raw(path, camera)
        results.append(eper_cti(raw, config))
        if also is not None:
            also(raw)
        del raw
    if not results:
        nan = np.full(camera.n_amps, np.nan)
        return nan, nan.copy()
    with np.errstate(all="ignore"):
        serial = np.nanmean([r[0] for r in results], axis=0)
        parallel = np.nanmean([r[1] for r in results], axis=0)
    return serial, parallel


class _CtiVsSignal:
    """Serial and parallel EPER CTI of every flat of the PTC ramp, pair by pair (called by
    `atmospec.calib.ptc.build_ptc` with each pair's raws before it reduces them)."""

    def __init__(self, camera: Camera, config: EoConfig) -> None:
        self.camera = camera
        self.config = config
        self._pairs: list[tuple[float, np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, first: RawFrame, second: RawFrame) -> None:
        """EPER of both flats of a pair, and their signal level (ADU)."""
        cti = [eper_cti(raw, self.config) for raw in (first, second)]
        levels = [_flat_level_adu(raw) for raw in (first, second)]
        with np.errstate(all="ignore"):
            serial = np.nanmean([c[0] for c in cti], axis=0)
            parallel = np.nanmean([c[1] for c in cti], axis=0)
        self._pairs.append((float(first.info.exposure_time or 0.0),
                            np.mean(levels, axis=0), serial, parallel))

    def _by_level(self) -> list[tuple[float, np.ndarray, np.ndarray, np.ndarray]]:
        return sorted(self._pairs, key=lambda p: float(np.nanmedian(p[1])))

    def table(self, gains: np.ndarray) -> Table:
        """One row per (pair, amp) in order of signal: ``exptime`` (s), ``amp``,
        ``level_e`` (the amp's mean signal, e⁻), ``cti_serial``, ``cti_parallel``."""
        rows = []
        for exptime, level, serial, parallel in self._by_level():
            for i, amp in enumerate(self.camera.amp_names):
                rows.append((exptime, amp, float(level[i] * gains[i]), float(serial[i]),
                             float(parallel[i])))
        names = ("exptime", "amp", "level_e", "cti_serial", "cti_parallel")
        if not rows:
            return Table(names=names, dtype=(float, str, float, float, float))
        return Table(rows=rows, names=names)

    def lowest(self) -> tuple[np.ndarray, np.ndarray]:
        """Per amp, the serial and the parallel CTI at the faintest pair that gives one
        (fainter flats are NaN: below `EoConfig.eper_min_level_adu`)."""
        n = self.camera.n_amps
        out = (np.full(n, np.nan), np.full(n, np.nan))
        for _, _, serial, parallel in self._by_level():
            for values, found in ((serial, out[0]), (parallel, out[1])):
                fill = np.isnan(found) & np.isfinite(values)
                found[fill] = values[fill]
        return out


def _flat_level_adu(raw: RawFrame) -> np.ndarray:
    """Mean signal of every amp of a raw flat above its serial overscan, ADU (medians of
    a 1-in-64 sample of the data section, and of the overscan)."""
    camera = raw.camera
    data = camera.data_bbox
    rows = slice(data.y0, data.y0 + data.ny, 8)
    signal = np.median(raw.segments[:, rows, data.x0: data.x0 + data.nx: 8]
                       .reshape(camera.n_amps, -1), axis=1)
    sov = camera.serial_overscan_bbox
    bias = np.median(raw.segments[:, rows, sov.x0 + 3: sov.x0 + sov.nx - 3]
                     .reshape(camera.n_amps, -1), axis=1)
    return np.asarray(signal - bias, dtype=float)


class _FrameVerification:
    """cp_verify's per-exposure tests (`atmospec.calib.verify.verify_frame`) of the run's
    biases and darks, each re-processed with the run's own masters."""

    def __init__(self, camera: Camera, gains: AmpGains, bias: Exposure, overscan: OverscanConfig,
                 config: VerifyConfig, dark: DarkConfig | None = None) -> None:
        self.camera = camera
        self.config = config
        self.overscan = overscan
        dark = dark or DarkConfig()
        self.cosmic_rays, self.cr_grow = dark.cosmic_rays, dark.cr_grow
        self.calibs = IsrCalibrations(
            gains=gains, crosstalk=Crosstalk.default(camera).matrix(camera.n_amps), bias=bias)
        self.read_noise = np.asarray(gains.read_noise, dtype=float)
        self.os_factor = overscan_noise_factor(camera, overscan)
        self.n_bias = int(bias.metadata.get("NCOMBINE", 1))
        self._rows: list[tuple] = []

    def _record(self, kind: str, frame: str, result: dict[str, np.ndarray],
                expected: np.ndarray) -> None:
        for i, amp in enumerate(self.camera.amp_names):
            self._rows.append((frame, kind, amp, float(result["mean"][i]),
                               float(result["sigma"][i]), float(result["sigma_plain"][i]),
                               float(expected[i]),
                               *(bool(result[t][i]) for t in FRAME_TESTS),
                               bool(result["passed"][i])))

    def bias(self, raw: RawFrame) -> None:
        """Verify one bias frame, an input of the master bias (a copy is reduced)."""
        steps = (*ISR_STEPS["bias"], "bias")
        result = run_isr(replace(raw, segments=raw.segments.copy()),
                         IsrConfig(steps=steps, overscan=self.overscan), self.calibs)
        # The master holds 1/n of this frame's noise, which its subtraction removes.
        expected = self.read_noise * np.sqrt((1.0 + self.os_factor)
                                             * (1.0 - 1.0 / max(self.n_bias, 2)))
        self._record("bias", raw.path.name, verify_frame(result.exposure, expected,
                                                         self.camera, self.config), expected)

    def darks(self, paths: Iterable[Path], dark: Exposure) -> None:
        """Verify the darks, the inputs of the master ``dark`` (e⁻/s)."""
        calibs = replace(self.calibs, dark=dark)
        steps = (*ISR_STEPS["dark"], "dark")
        n_dark = int(dark.metadata.get("NCOMBINE", 1))
        rate = np.array([np.nanmedian(dark.image[self.camera.amp_slices(a)])
                         for a in self.camera.amplifiers])
        for path in paths:
            raw = read_raw(path, self.camera)
            darktime = float(raw.info.dark_time or 0.0)
            result = run_isr(raw, IsrConfig(steps=steps, overscan=self.overscan), calibs)
            variance = self.read_noise**2 * (1.0 + self.os_factor) + np.maximum(
                rate * darktime, 0.0)
            expected = np.sqrt(variance * (1.0 - 1.0 / max(n_dark, 2)))
            # Every dark has cosmic rays: cp_verify's CR test takes the noise once they are
            # rejected (found with each amp's read noise, grown as the master dark's are).
            cosmic_rays = grow_mask(cosmic_ray_mask(result.exposure, self.read_noise,
                                                    self.camera, self.cosmic_rays),
                                    self.cr_grow)
            self._record("dark", path.name, verify_frame(result.exposure, expected,
                                                         self.camera, self.config,
                                                         cosmic_rays=cosmic_rays), expected)

    def table(self) -> Table:
        """One row per (frame, amp): ``frame``, ``kind``, ``amp``, ``mean``, ``sigma``,
        ``sigma_plain``, ``expected`` (e⁻), each test and ``passed``."""
        names = ("frame", "kind", "amp", "mean", "sigma", "sigma_plain", "expected",
                 *FRAME_TESTS, "passed")
        if not self._rows:
            return Table(names=names, dtype=(str, str, str, float, float, float, float,
                                             bool, bool, bool, bool))
        return Table(rows=self._rows, names=names)

    def pass_fraction(self, kind: str) -> np.ndarray:
        """Per amp, the fraction of the frames of ``kind`` that pass every test (NaN
        without any)."""
        out = np.full(self.camera.n_amps, np.nan)
        for i, amp in enumerate(self.camera.amp_names):
            passed = [r[-1] for r in self._rows if r[1] == kind and r[2] == amp]
            if passed:
                out[i] = float(np.mean(passed))
        return out


@dataclass(frozen=True)
class DetectorEo:
    """One detector's EO measurement."""

    figures: Table
    """One row per amp: ``amp``, `atmospec.calib.eo.EO_COLUMNS` then `EO_RUN_COLUMNS`;
    ``meta["DETECTOR_FIGURES"]`` the figures over the whole detector (``defect_fraction``
    of the CCD, CCD-012 as eotest judges it)."""
    defects: DefectMaps | None
    """The defects by the camera team's definitions (bright and dark pixels and columns),
    whose counts and fraction are in the table; None without darks and flats."""
    tables: Mapping[str, Table] = field(default_factory=dict)
    """The detector's further tables, by name: ``bias_stability`` (per frame and amp),
    ``bias_shifts`` (one row per shift), ``amp_correlation`` (16 × 16), ``cti_vs_signal``
    (per flat pair and amp), ``covariances`` (a_ij per amp and lag), ``tearing`` (per
    high-flux superflat and amp), ``frame_verification`` (cp_verify's tests per bias or
    dark and amp), ``bright_defects`` and ``dark_defects`` (boxes ``x0, y0, width,
    height`` of assembled pixels covering the defects, `atmospec.calib.defects
    .mask_to_boxes`)."""


def _require(frames: EoFrames, role: str, pattern: str) -> tuple[Path, ...]:
    files = getattr(frames, role)
    if not files:
        raise BadInputError(None, f"{frames.detector}: no {role.replace('_', ' ')} frames "
                                  f"(folders {pattern})")
    return files


def _superflat_figures(flat: Exposure, maps: DefectMaps, read_noise_e: np.ndarray,
                       camera: Camera, config: EoRunConfig) -> tuple[np.ndarray, np.ndarray]:
    """PRNU (%) and the divisadero maximum of every amp of the master superflat.

    The noise the master carries is the shot and read noise of its inputs averaged: one
    input's level on an amp is the amp's median × ``FLATNORM`` × ``FLATLVL`` (the master
    is the inputs divided by their medians, combined, then by ``FLATNORM``).
    """
    h = flat.metadata
    good = ~(maps.mask | flat.get_mask("NO_DATA", "BAD")) & np.isfinite(flat.image)
    medians = np.array([np.median(flat.image[camera.amp_slices(a)][good[camera.amp_slices(a)]])
                        if good[camera.amp_slices(a)].any() else np.nan
                        for a in camera.amplifiers])
    level = medians * float(h.get("FLATNORM", 1.0)) * float(h.get("FLATLVL", np.nan))
    noise = master_flat_noise(level, read_noise_e, int(h.get("NCOMBINE", 1)),
                              str(h.get("COMBMETH", "")).upper() == "MEDIAN")
    prnu = prnu_percent(flat.image, good, camera, noise, config.prnu)
    divisadero, _ = divisadero_response(flat.image, camera, config.divisadero)
    return prnu, divisadero


def _covariance_table(ptc: Ptc, idx: list[int], camera: Camera) -> Table:
    """a_ij of every amp and lag from the PTC's pair covariances
    (`atmospec.calib.ptc.covariance_coefficients`): ``amp``, ``lag_x``, ``lag_y``, ``a``
    (1/e⁻); empty without ``PTC_COV``."""
    names = ("amp", "lag_x", "lag_y", "a")
    t = ptc.table
    if "PTC_COV" not in t.colnames:
        return Table(names=names, dtype=(str, int, int, float))
    rows = []
    for amp, row in zip(camera.amp_names, idx, strict=True):
        a = covariance_coefficients(np.asarray(t["PTC_MEAN"][row], float),
                                    np.asarray(t["PTC_COV"][row], float),
                                    float(t["GAIN"][row]),
                                    np.asarray(t["PTC_NPIX"][row], float),
                                    np.asarray(t["PTC_USED"][row], bool))
        rows.extend((amp, i, j, float(a[i, j])) for i in range(a.shape[0])
                    for j in range(a.shape[1]))
    return Table(rows=rows, names=names)


class _Tearing:
    """Tearing detections of each high-flux superflat (`tearing_counts`), frame by frame."""

    def __init__(self, camera: Camera, config: TearingConfig) -> None:
        self.camera = camera
        self.config = config
        self._counts: list[tuple[str, np.ndarray]] = []

    def add(self, raw: RawFrame) -> None:
        """Count the detections of one raw superflat (not modified)."""
        self._counts.append((raw.path.name, tearing_counts(raw.segments, self.camera,
                                                           self.config)))

    def detections(self) -> np.ndarray:
        """Per amp, the detections summed over the frames (NaN without any frame)."""
        if not self._counts:
            return np.full(self.camera.n_amps, np.nan)
        return np.sum([c for _, c in self._counts], axis=0).astype(float)

    def torn_frames(self) -> int:
        """Frames whose amps total more than ``min_detections`` (eotest's ``has_tearing``)."""
        return sum(int(c.sum() > self.config.min_detections) for _, c in self._counts)

    def table(self) -> Table:
        """One row per (frame, amp): ``frame``, ``amp``, ``detections``."""
        rows = [(name, amp, int(c[i])) for name, c in self._counts
                for i, amp in enumerate(self.camera.amp_names)]
        names = ("frame", "amp", "detections")
        return Table(rows=rows, names=names) if rows else Table(names=names,
                                                                dtype=(str, str, int))


class _Clock:
    """Wall and CPU time (this process's user + sys) of each phase of a detector's
    measurement, s.

    The per-frame figures run inside the loops of the builders that read the frames
    (`timed`): their time is booked under their own name and taken off the phase they
    ran in. On a loaded machine the wall times scatter; the CPU times are what to compare.
    """

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._start = time.perf_counter()
        self._cpu_start = time.process_time()
        self._inside: dict[str, float] = defaultdict(float)
        self._cpu_inside: dict[str, float] = defaultdict(float)

    def lap(self, name: str) -> None:
        """End phase ``name``."""
        now, cpu = time.perf_counter(), time.process_time()
        self.timings[name] = round(now - self._start - self._inside.pop(name, 0.0), 2)
        self.cpu[name] = round(cpu - self._cpu_start - self._cpu_inside.pop(name, 0.0), 2)
        self._start, self._cpu_start = now, cpu

    def timed(self, name: str, function: Callable[..., None], within: str
              ) -> Callable[..., None]:
        """``function``, its time added to ``name`` and taken off phase ``within``."""
        def call(*args: RawFrame) -> None:
            start, cpu = time.perf_counter(), time.process_time()
            function(*args)
            spent = time.perf_counter() - start
            spent_cpu = time.process_time() - cpu
            self.timings[name] = round(self.timings.get(name, 0.0) + spent, 2)
            self.cpu[name] = round(self.cpu.get(name, 0.0) + spent_cpu, 2)
            self._inside[within] += spent
            self._cpu_inside[within] += spent_cpu
        return call


def detector_figures(frames: EoFrames, camera: Camera, workdir: str | Path,
                     config: EoRunConfig | None = None) -> DetectorEo:
    """Measure every EO figure of one detector from its frames of a BOT acquisition.

    Parameters
    ----------
    frames : EoFrames
        The detector's raws by role (`classify_bot_run`); biases, darks, flat pairs and
        high-flux superflats are required, low-flux superflats optional.
    camera : Camera
        The detector (`atmospec.camera.raw.camera_for` of one of its raws).
    workdir : path
        Parent of the masters' temporary per-input files (on disk, not in ``/tmp``).
    config : EoRunConfig, optional
        Settings.

    Returns
    -------
    DetectorEo
        The table, one row per amp: ``amp``, `atmospec.calib.eo.EO_COLUMNS` then
        `EO_RUN_COLUMNS` (units attached), ``meta`` the detector, vendor, frame counts,
        phase timings and ``TEARING_FRAMES`` (high-flux superflats with tearing); the defect
        maps; and the further tables (`DetectorEo.tables`).

    Raises
    ------
    BadInputError
        A role without frames (biases only are a run: `_bias_only_figures`), a bad raw,
        too few frames for a product.
    """
    config = config or EoRunConfig()
    p = BOT_PATTERNS
    if not (frames.flat_pairs or frames.dark or frames.sflat_high or frames.sflat_low):
        return _bias_only_figures(frames, camera, workdir, config)
    pairs = _require(frames, "flat_pairs", p["flat_pairs"])
    biases = _require(frames, "bias", p["bias"])
    darks = _require(frames, "dark", p["dark"])
    sflats = _require(frames, "sflat_high", p["sflat_high"])
    noise_frames = frames.read_noise or biases
    clock = _Clock()
    lap = clock.lap
    cti_ramp = _CtiVsSignal(camera, config.eo)
    ptc, _ = build_ptc(pairs, config.ptc, camera=camera, verify=False,
                       on_pair=clock.timed("cti_vs_signal", cti_ramp.add, within="ptc"))
    lap("ptc")
    master = MasterConfig(min_inputs=config.min_master_inputs, verify=False)
    bias, _ = build_bias(biases, master, ptc=ptc, workdir=workdir)
    lap("bias")
    dark_config = replace(DarkConfig(), min_inputs=config.min_master_inputs, verify=False,
                          reject_cosmic_rays=config.reject_cosmic_rays)
    dark, _ = build_dark(darks, bias, dark_config, ptc=ptc, workdir=workdir)
    lap("dark")
    verification = _FrameVerification(camera, ptc.gains(camera), bias.exposure,
                                       master.overscan, config.verify, dark_config)
    if config.verify_frames:
        verification.darks(darks, dark.exposure)
    lap("verify_darks")
    flat_config = replace(FlatConfig(), min_inputs=min(config.min_master_inputs, len(sflats)),
                          verify=False)
    sflat, _ = build_flat(sflats, bias, dark, flat_config, ptc=ptc, workdir=workdir)
    lap("superflat")
    maps = detect_defects(dark.exposure, sflat.exposure, config.eo.defects, camera)
    bias_sequence = BiasSequence(camera, config.bias)
    sequence_add = clock.timed("bias_sequence", bias_sequence.add, within="figures")
    verify_bias = clock.timed("verify_biases", verification.bias, within="figures")

    def per_bias(raw: RawFrame) -> None:
        sequence_add(raw)
        if config.verify_frames:
            verify_bias(raw)

    table = eo_figures(noise_frames, (), dark_master=dark.exposure,
                       flat_master=sflat.exposure, ptc=ptc, config=config.eo, camera=camera,
                       defects=maps, on_bias=per_bias)
    lap("figures")
    ptc_rows = {str(a).strip(): i for i, a in enumerate(ptc.table["AMP"])}
    idx = [ptc_rows[name] for name in camera.amp_names]

    def ptc_col(name: str) -> np.ndarray:
        return np.asarray(ptc.table[name], dtype=float)[idx]

    prnu, divisadero = _superflat_figures(sflat.exposure, maps, ptc_col("READ_NOISE"),
                                             camera, config)
    lap("prnu_divisadero")
    del bias, dark, sflat
    tearing = _Tearing(camera, config.tearing)
    serial_h, parallel_h = _cti(sflats, camera, config.eo,
                                also=clock.timed("tearing", tearing.add, within="cti"))
    serial_l, parallel_l = _cti(frames.sflat_low, camera, config.eo)
    lap("cti")
    linearity = photodiode_linearity(ptc, pairs, camera, config)
    lap("linearity")
    covariances = _covariance_table(ptc, idx, camera)
    lap("covariances")
    xtalk = eo_crosstalk(frames.xtalk, camera, config.crosstalk) if frames.xtalk else None
    lap("crosstalk")
    timings = clock.timings

    bias_figures = bias_sequence.result()
    lowest_serial, lowest_parallel = cti_ramp.lowest()
    a_matrix = {(int(r["lag_x"]), int(r["lag_y"]), str(r["amp"])): float(r["a"])
                for r in covariances}
    values = {
        "cti_serial_high": serial_h, "cti_parallel_high": parallel_h,
        "cti_serial_low": serial_l, "cti_parallel_low": parallel_l,
        "ptc_gain_vs_nominal": ptc_col("GAIN") / camera.nominal_gains - 1.0,
        "ptc_noise": ptc_col("READ_NOISE"),
        "ptc_noise_vs_nominal": ptc_col("READ_NOISE") / camera.nominal_read_noise - 1.0,
        "ptc_a00": ptc_col("A00"),
        "ptc_turnoff_e": ptc_col("TURNOFF_E"),
        "ptc_a10": np.array([a_matrix.get((1, 0, a), np.nan) for a in camera.amp_names]),
        "ptc_a01": np.array([a_matrix.get((0, 1, a), np.nan) for a in camera.amp_names]),
        "linearity_max_frac_dev": linearity,
        "cti_serial_lowest": lowest_serial, "cti_parallel_lowest": lowest_parallel,
        "prnu": prnu, "divisadero_max": divisadero,
        "tearing_detections": tearing.detections(),
        **bias_figures.figures,
        "verify_bias_pass": verification.pass_fraction("bias"),
        "verify_dark_pass": verification.pass_fraction("dark"),
        **_crosstalk_figures(xtalk, camera),
    }
    for name, unit in EO_RUN_COLUMNS:
        table[name] = np.asarray(values[name], dtype=np.float64)
        table[name].unit = unit
    table.meta.update({
        "DETECTOR": frames.detector, "VENDOR": camera.vendor,
        "N_BIAS": len(biases), "N_READ_NOISE": len(noise_frames), "N_DARK": len(darks),
        "N_FLAT_PAIRS": len(pairs) // 2, "N_SFLAT_HIGH": len(sflats),
        "N_SFLAT_LOW": len(frames.sflat_low), "N_XTALK": len(frames.xtalk),
        "TIMINGS_S": timings,
        "CPU_S": clock.cpu,
        "TEARING_FRAMES": tearing.torn_frames(),
        # CCD-012 as eotest judges it: the defective fraction of the whole CCD.
        "DETECTOR_FIGURES": {"defect_fraction": 100.0 * float((maps.hot | maps.cold).mean())},
    })
    tables = {"bias_stability": bias_figures.series, "bias_shifts": bias_figures.shifts,
              "amp_correlation": bias_figures.correlation,
              "cti_vs_signal": cti_ramp.table(ptc_col("GAIN")),
              "covariances": covariances, "tearing": tearing.table(),
              "frame_verification": verification.table(),
              # The defects themselves, as the camera team's masks (whole columns first:
              # one box each).
              "bright_defects": mask_to_boxes(maps.hot_columns, maps.hot),
              "dark_defects": mask_to_boxes(maps.cold_columns, maps.cold)}
    _add_crosstalk(xtalk, camera, table, tables)
    log.info("%s: EO figures in %.0f s (%s)", frames.detector, sum(timings.values()),
             ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    return DetectorEo(table, maps, tables)


#: Figures of `atmospec.calib.eo.eo_figures` a BOT run never measures: its EPER on any
#: flats and its linearity against exposure time give way to the superflats' EPER and the
#: photodiode's linearity (`EO_RUN_COLUMNS`).
_NOT_RUN_FIGURES = ("cti_serial", "cti_parallel", "linearity_residual")


def _crosstalk_figures(xtalk: EoCrosstalk | None, camera: Camera) -> dict[str, np.ndarray]:
    """The spot frames' per-amp figures (NaN without spot frames)."""
    if xtalk is None:
        nan = np.full(camera.n_amps, np.nan)
        return {"crosstalk_max": nan, "verify_crosstalk_pass": nan}
    return {"crosstalk_max": xtalk.crosstalk_max(), "verify_crosstalk_pass": xtalk.amp_pass()}


def _add_crosstalk(xtalk: EoCrosstalk | None, camera: Camera, table: Table,
                   tables: dict[str, Table]) -> None:
    """The residual check's summary in ``table.meta``; the crosstalk product (Rubin's
    CrosstalkCalib layout: `atmospec.calib.products.Crosstalk.read` reads it back) and its
    pairs with their residuals after correction in ``tables``."""
    if xtalk is None:
        return
    table.meta["CROSSTALK_RESIDUAL"] = xtalk.summary()
    tables["crosstalk"] = xtalk.measurement.product(camera).table
    tables["crosstalk_pairs"] = xtalk.pairs(camera)


def _bias_only_figures(frames: EoFrames, camera: Camera, workdir: str | Path,
                       config: EoRunConfig) -> DetectorEo:
    """What biases alone support: read and total noise, bias stability, shifts and amp
    correlations, and cp_verify's tests of each bias against the master of the others.

    Without flat pairs there is no PTC: the noises are converted to e⁻ with the camera
    description's nominal gains (``meta["GAIN_SOURCE"]`` says so) and the ``gain`` column
    is NaN, as is every figure that needs darks or flats; ``meta["NOT_MEASURED"]`` names
    those, for the verdicts (`atmospec.calib.eo_specs.verdict_table`). A single bias gives
    no master: no frame verification then (nor with ``config.verify_frames`` off).
    """
    biases = _require(frames, "bias", BOT_PATTERNS["bias"])
    noise_frames = frames.read_noise or biases
    clock = _Clock()
    gains = nominal_gains(camera)
    verification = None
    if config.verify_frames and len(biases) >= config.min_master_inputs:
        master = MasterConfig(min_inputs=config.min_master_inputs, verify=False)
        bias, _ = build_bias(biases, master, workdir=workdir)
        verification = _FrameVerification(camera, gains, bias.exposure, master.overscan,
                                           config.verify)
        del bias
    clock.lap("bias")
    bias_sequence = BiasSequence(camera, config.bias)
    calls = [clock.timed("bias_sequence", bias_sequence.add, within="figures")]
    if verification is not None:
        calls.append(clock.timed("verify_biases", verification.bias, within="figures"))

    def per_bias(raw: RawFrame) -> None:
        for call in calls:
            call(raw)

    table = eo_figures(noise_frames, (), config=config.eo, camera=camera, on_bias=per_bias)
    clock.lap("figures")
    xtalk = eo_crosstalk(frames.xtalk, camera, config.crosstalk) if frames.xtalk else None
    clock.lap("crosstalk")
    table["gain"] = np.full(camera.n_amps, np.nan)  # not measured: no PTC
    bias_figures = bias_sequence.result()
    nan = np.full(camera.n_amps, np.nan)
    values = {**bias_figures.figures,
              "verify_bias_pass": (verification.pass_fraction("bias")
                                   if verification is not None else nan),
              **_crosstalk_figures(xtalk, camera)}
    for name, unit in EO_RUN_COLUMNS:
        table[name] = np.asarray(values.get(name, nan), dtype=np.float64)
        table[name].unit = unit
    # Masked counts (no dark, no flat) are not measured either.
    not_measured = [name for name in table.colnames[1:]
                    if name not in _NOT_RUN_FIGURES and name not in _SPOT_FIGURES
                    and not np.isfinite(np.ma.filled(np.ma.asarray(table[name], dtype=float),
                                                     np.nan)).any()]
    table.meta.update({
        "DETECTOR": frames.detector, "VENDOR": camera.vendor, "GAIN_SOURCE": gains.source,
        "N_BIAS": len(biases), "N_READ_NOISE": len(noise_frames), "N_DARK": 0,
        "N_FLAT_PAIRS": 0, "N_SFLAT_HIGH": 0, "N_SFLAT_LOW": 0, "N_XTALK": len(frames.xtalk),
        "TIMINGS_S": clock.timings, "CPU_S": clock.cpu, "TEARING_FRAMES": 0,
        "NOT_MEASURED": not_measured,
    })
    tables = {"bias_stability": bias_figures.series, "bias_shifts": bias_figures.shifts,
              "amp_correlation": bias_figures.correlation}
    if verification is not None:
        tables["frame_verification"] = verification.table()
    _add_crosstalk(xtalk, camera, table, tables)
    log.info("%s: bias figures only (no flat pairs, darks or superflats) in %.0f s",
             frames.detector, sum(clock.timings.values()))
    return DetectorEo(table, None, tables)
