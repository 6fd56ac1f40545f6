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
5. serial and parallel EPER CTI on the high- and the low-flux superflats separately;
6. the PTC checks of cp_verify, and the linearity against the photodiode charge of each
   flat pair (maximum fractional deviation from a line, CCD-009).

The specification and verdict of each figure are `atmospec.calib.eo_specs.verdict_table`'s;
nothing is written here (the app writes the tables: `atmospec.night.eo`).
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
from astropy import units as u
from astropy.table import Table

from atmospec.calib.defects import DefectMaps, FindDefectsConfig, detect_defects
from atmospec.calib.eo import EoConfig, eo_figures, eper_cti, max_fractional_deviation
from atmospec.calib.inputs import raw_info
from atmospec.calib.masters import (
    DarkConfig,
    FlatConfig,
    MasterConfig,
    build_bias,
    build_dark,
    build_flat,
)
from atmospec.calib.photodiode import (
    PhotodiodeConfig,
    integrate_photodiode,
    photodiode_file_for,
    read_photodiode,
)
from atmospec.calib.products.ptc import Ptc
from atmospec.calib.ptc import PtcConfig, build_ptc
from atmospec.camera.description import Camera
from atmospec.camera.raw import read_raw
from atmospec.errors import BadInputError

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
    ("linearity_max_frac_dev", u.percent),
)


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

    @property
    def n_frames(self) -> int:
        """Distinct raws."""
        return len({*self.bias, *self.read_noise, *self.dark, *self.flat_pairs,
                    *self.sflat_high, *self.sflat_low})


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


def _cti(paths: Iterable[Path], camera: Camera, config: EoConfig
         ) -> tuple[np.ndarray, np.ndarray]:
    """Mean serial and parallel EPER CTI of the frames (NaN without any)."""
    results = [eper_cti(read_raw(p, camera), config) for p in paths]
    if not results:
        nan = np.full(camera.n_amps, np.nan)
        return nan, nan.copy()
    with np.errstate(all="ignore"):
        serial = np.nanmean([r[0] for r in results], axis=0)
        parallel = np.nanmean([r[1] for r in results], axis=0)
    return serial, parallel


@dataclass(frozen=True)
class DetectorEo:
    """One detector's EO measurement."""

    figures: Table
    """One row per amp: ``amp``, `atmospec.calib.eo.EO_COLUMNS` then `EO_RUN_COLUMNS`."""
    defects: DefectMaps
    """The defects by the camera team's definitions (bright and dark pixels and columns),
    whose counts and fraction are in the table."""


def _require(frames: EoFrames, role: str, pattern: str) -> tuple[Path, ...]:
    files = getattr(frames, role)
    if not files:
        raise BadInputError(None, f"{frames.detector}: no {role.replace('_', ' ')} frames "
                                  f"(folders {pattern})")
    return files


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
        `EO_RUN_COLUMNS` (units attached), ``meta`` the detector, vendor, frame counts and
        phase timings; and the defect maps.

    Raises
    ------
    BadInputError
        A role without frames, a bad raw, too few frames for a product.
    """
    config = config or EoRunConfig()
    p = BOT_PATTERNS
    pairs = _require(frames, "flat_pairs", p["flat_pairs"])
    biases = _require(frames, "bias", p["bias"])
    darks = _require(frames, "dark", p["dark"])
    sflats = _require(frames, "sflat_high", p["sflat_high"])
    noise_frames = frames.read_noise or biases
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t0
        now = time.perf_counter()
        timings[name] = round(now - t0, 2)
        t0 = now

    ptc, _ = build_ptc(pairs, config.ptc, camera=camera, verify=False)
    lap("ptc")
    master = MasterConfig(min_inputs=config.min_master_inputs, verify=False)
    bias, _ = build_bias(biases, master, ptc=ptc, workdir=workdir)
    lap("bias")
    dark_config = replace(DarkConfig(), min_inputs=config.min_master_inputs, verify=False,
                          reject_cosmic_rays=config.reject_cosmic_rays)
    dark, _ = build_dark(darks, bias, dark_config, ptc=ptc, workdir=workdir)
    lap("dark")
    flat_config = replace(FlatConfig(), min_inputs=min(config.min_master_inputs, len(sflats)),
                          verify=False)
    sflat, _ = build_flat(sflats, bias, dark, flat_config, ptc=ptc, workdir=workdir)
    lap("superflat")
    maps = detect_defects(dark.exposure, sflat.exposure, config.eo.defects, camera)
    table = eo_figures(noise_frames, (), dark_master=dark.exposure,
                       flat_master=sflat.exposure, ptc=ptc, config=config.eo, camera=camera,
                       defects=maps)
    lap("figures")
    del bias, dark, sflat
    serial_h, parallel_h = _cti(sflats, camera, config.eo)
    serial_l, parallel_l = _cti(frames.sflat_low, camera, config.eo)
    lap("cti")
    linearity = photodiode_linearity(ptc, pairs, camera, config)
    lap("linearity")

    ptc_rows = {str(a).strip(): i for i, a in enumerate(ptc.table["AMP"])}
    idx = [ptc_rows[name] for name in camera.amp_names]

    def ptc_col(name: str) -> np.ndarray:
        return np.asarray(ptc.table[name], dtype=float)[idx]

    values = {
        "cti_serial_high": serial_h, "cti_parallel_high": parallel_h,
        "cti_serial_low": serial_l, "cti_parallel_low": parallel_l,
        "ptc_gain_vs_nominal": ptc_col("GAIN") / camera.nominal_gains - 1.0,
        "ptc_noise": ptc_col("READ_NOISE"),
        "ptc_noise_vs_nominal": ptc_col("READ_NOISE") / camera.nominal_read_noise - 1.0,
        "ptc_a00": ptc_col("A00"),
        "ptc_turnoff_e": ptc_col("TURNOFF_E"),
        "linearity_max_frac_dev": linearity,
    }
    for name, unit in EO_RUN_COLUMNS:
        table[name] = np.asarray(values[name], dtype=np.float64)
        table[name].unit = unit
    table.meta.update({
        "DETECTOR": frames.detector, "VENDOR": camera.vendor,
        "N_BIAS": len(biases), "N_READ_NOISE": len(noise_frames), "N_DARK": len(darks),
        "N_FLAT_PAIRS": len(pairs) // 2, "N_SFLAT_HIGH": len(sflats),
        "N_SFLAT_LOW": len(frames.sflat_low), "TIMINGS_S": timings,
    })
    log.info("%s: EO figures in %.0f s (%s)", frames.detector, sum(timings.values()),
             ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    return DetectorEo(table, maps)
