"""Per-exposure work of a night: the tasks a pipeline may name, and the job a worker runs.

A job is everything one exposure needs (its raw file, the tasks still to run with their
configurations, the calibration files chosen for it); `run_job` runs them in order in a
worker process (local pool or Dask worker), passing the post-ISR exposure in memory from
task to task, writes every output atomically, and returns one `TaskOutcome` per task. A
failing task fails with a one-line reason and the tasks reading its output are not run;
the job itself never raises, so one bad exposure never stops the night.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from atmospec.calib.isr_inputs import CalibrationFiles
from atmospec.camera.description import Camera
from atmospec.errors import BadInputError, ProcessingError, short_error
from atmospec.io import provenance_cards, to_jsonable, write_text_atomic
from atmospec.layout import exposure_file

log = logging.getLogger(__name__)


class TaskSkipped(Exception):
    """Raised by a task that does not apply to its exposure (the atmosphere fit of a target
    with no SED): recorded ``done``, its message the note in ``reason``, not a failure; the
    tasks reading its output are skipped too."""


@dataclass(frozen=True)
class TaskType:
    """A task a pipeline can name."""

    config_path: str
    """``module:Class`` of its frozen configuration dataclass (imported when needed, so the
    pipeline module loads without importing every stage)."""
    applies_to: tuple[str, ...]
    """Default exposure classes."""
    inputs: tuple[str, ...]
    """Default input tasks."""
    run: Callable[..., dict[str, Any]]
    """``run(context, config) -> metrics``; writes its outputs through the context."""

    @property
    def config_type(self) -> type:
        """The configuration class."""
        module, name = self.config_path.split(":")
        return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class TaskSpec:
    """One task to run in a job."""

    name: str
    """Task name."""
    config: Any
    """Its configuration."""
    config_hash: str
    """Hash of configuration, inputs and upstream hashes (see `task_hash`)."""
    inputs: tuple[str, ...]
    """Tasks whose outputs it reads."""


@dataclass(frozen=True)
class ExposureJob:
    """The work of one exposure, sent to a worker."""

    obs_id: str
    """Exposure."""
    raw: str
    """Raw file."""
    out_dir: str
    """Directory of the exposure's outputs."""
    tasks: tuple[TaskSpec, ...]
    """Tasks to run, in order."""
    calibs: CalibrationFiles
    """Products chosen for the exposure."""
    missing_calibs: str | None = None
    """Why the exposure cannot be calibrated (a missing required product), or None."""
    done_outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    """Outputs of tasks already done in an earlier run (read instead of recomputed)."""
    figure_dir: str | None = None
    """Where the report's figures of the exposure go, drawn by the worker right after its
    tasks (`atmospec.plots.exposure.refresh_figures`); None: not drawn here."""
    figure_groups: tuple[str, ...] | None = None
    """The figure groups drawn with the tasks (``atmospec watch``: those its live page
    shows, the others drawn later); None: all of them."""


@dataclass(frozen=True)
class TaskOutcome:
    """What one task did."""

    obs_id: str
    """Exposure."""
    task: str
    """Task name."""
    status: str
    """``done`` or ``failed``."""
    reason: str | None
    """One-line reason of a failure, or the note of a skipped task (``done``, ``skipped:
    …``)."""
    config_hash: str
    """`TaskSpec.config_hash`."""
    started: datetime
    """Start (UTC)."""
    duration_s: float
    """Wall time, s."""
    outputs: dict[str, str]
    """Files written, by role."""
    metrics: dict[str, Any]
    """Figures for the summary; ``timings_s`` holds the stage split."""


def task_hash(name: str, config: Any, inputs: dict[str, Any]) -> str:
    """Stable hash of a task's configuration and inputs (a change re-runs the task).

    Parameters
    ----------
    name : str
        Task name.
    config : dataclass
        Its configuration.
    inputs : dict
        Anything else the result depends on: raw file identity, calibration files, the
        hashes of upstream tasks.

    Returns
    -------
    str
        16 hex digits.
    """
    text = json.dumps({"task": name, "config": to_jsonable(config), "inputs": to_jsonable(inputs)},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Context:
    """State shared by the tasks of one job inside the worker."""

    def __init__(self, job: ExposureJob) -> None:
        self.job = job
        self.out_dir = Path(job.out_dir)
        self.outputs: dict[str, dict[str, str]] = dict(job.done_outputs)
        self.postisr = None
        """The post-ISR exposure once this job's ISR ran or it was read (kept in memory for
        the tasks after ISR: reading 200 MB back would cost ~0.5 s per task)."""
        self.preview = None
        """Its preview (`atmospec.isr.preview`) once this job's ISR wrote it: what the
        exposure's thumbnail draws."""
        self.sources: tuple[np.ndarray, np.ndarray] | None = None
        """The centroids of the catalogue this job's `characterize` wrote (the thumbnail's
        circles, not parsed back from the file)."""

    def exposure(self):
        """The post-ISR exposure: from this job's ISR, else read from the earlier output."""
        if self.postisr is None:
            from atmospec.exposure import Exposure

            path = self.outputs.get("isr", {}).get("postisr")
            if not path:
                raise ProcessingError(f"{self.job.obs_id}: no post-ISR image to read")
            self.postisr = Exposure.read(path)
        return self.postisr


@lru_cache(maxsize=4)
def _calibrations(files: CalibrationFiles, camera: Camera):
    """Products loaded once per worker process and reused by its exposures (a cache, not
    shared state: the key is the immutable file set and the frame's geometry, binned or
    not, which the products must match)."""
    from atmospec.calib.isr_inputs import load_calibrations

    return load_calibrations(files, camera)


def _run_isr(ctx: _Context, config) -> dict[str, Any]:
    from atmospec.calib.isr_inputs import check_exposure
    from atmospec.camera.raw import read_raw
    from atmospec.isr.driver import run_isr
    from atmospec.isr.preview import make_preview, write_preview
    from atmospec.isr.statistics import stats_document, stats_json

    job = ctx.job
    if job.missing_calibs:
        raise BadInputError(job.raw, job.missing_calibs)
    t0 = time.perf_counter()
    raw = read_raw(job.raw)
    t_read = time.perf_counter() - t0
    calibs = _calibrations(job.calibs, raw.camera)
    # The registry chose them by this rule; checking costs header reads and catches a
    # product replaced or re-labelled since.
    check_exposure(calibs, raw.info)
    result = run_isr(raw, config, calibs)
    t0 = time.perf_counter()
    inputs = [raw.path] + [p for p in vars(job.calibs).values() if p]
    post = result.exposure.write(
        exposure_file(ctx.out_dir, job.obs_id, "postisr"),
        provenance_cards("isr", inputs, {"steps": result.steps, "config": config}))
    stats = write_text_atomic(stats_json(stats_document(raw, result)),
                              exposure_file(ctx.out_dir, job.obs_id, "isrstats"))
    t_write = time.perf_counter() - t0
    # The quick look's block means and mask, from the exposure as written (~0.1 s): the
    # worker's figure and a later report draw from them, not from the 25 MB file.
    t0 = time.perf_counter()
    exposure = result.exposure
    ctx.preview = make_preview(exposure.image, exposure.mask, dict(exposure.mask_planes),
                               exposure.unit, exposure.metadata)
    preview = write_preview(ctx.preview, exposure_file(ctx.out_dir, job.obs_id, "preview"),
                            provenance_cards("isr", [post]))
    t_preview = time.perf_counter() - t0
    ctx.postisr = exposure
    ctx.outputs["isr"] = {"postisr": str(post), "stats": str(stats), "preview": str(preview)}
    timings = {"read_raw": t_read, **{f"isr.{k}": v for k, v in result.timings.items()},
               "write_postisr": t_write, "preview": t_preview}
    return {"steps": list(result.steps), "timings_s": timings}


def _run_characterize(ctx: _Context, config) -> dict[str, Any]:
    from atmospec.imaging.catalog import write_catalog
    from atmospec.imaging.characterize import characterize

    job = ctx.job
    t0 = time.perf_counter()
    exposure = ctx.exposure()
    t_read = time.perf_counter() - t0
    result = characterize(exposure, config)
    path = write_catalog(result, exposure_file(ctx.out_dir, job.obs_id, "catalog"),
                         provenance=provenance_cards(
                             "characterize", [ctx.outputs["isr"]["postisr"]], config))
    ctx.outputs["characterize"] = {"catalog": str(path)}
    ctx.sources = (np.asarray(result.catalog["xcentroid"], dtype=float),
                   np.asarray(result.catalog["ycentroid"], dtype=float))
    metrics = dict(result.image_quality.to_dict())
    timings = {f"characterize.{k}": v for k, v in result.timings.items()}
    if t_read > 0.05:
        timings["read_postisr"] = t_read
    metrics["timings_s"] = timings
    return metrics


def zeroth_order_result(exposure, config, source: str | None = None):
    """Zeroth order of a dispersed post-ISR exposure, searched around its header prior.

    The ``zeroth_order`` task of the night runner and of the Gen3 path
    (`atmospec.gen3.tasks`) both call this.

    Parameters
    ----------
    exposure : atmospec.exposure.Exposure
        Post-ISR exposure (its metadata holds the raw header).
    config : atmospec.spectro.zeroth_order.ZerothOrderConfig
        Settings.
    source : str, optional
        File name for messages.

    Returns
    -------
    atmospec.spectro.zeroth_order.ZerothOrderResult
    """
    from atmospec.camera.description import load_camera
    from atmospec.camera.spectrograph import load_instrument
    from atmospec.camera.translator import translate_header
    from atmospec.spectro.adr import refraction_from_header
    from atmospec.spectro.zeroth_order import find_zeroth_order, zeroth_order_prior

    info = translate_header(exposure.metadata, source)
    profile = load_instrument("latiss")
    prior = zeroth_order_prior(info, load_camera("latiss"), profile)
    # The header's refraction smears the zeroth order: its flux centroid is then measured,
    # the position the extraction's ADR refers to (as `process_dispersed` finds it).
    refraction, _ = refraction_from_header(info, profile, int(info.binning[0]))
    return find_zeroth_order(exposure, config=config, prior=prior, refraction=refraction)


def _run_zeroth_order(ctx: _Context, config) -> dict[str, Any]:
    from atmospec.spectro.zeroth_order import write_centroid

    job = ctx.job
    exposure = ctx.exposure()
    t0 = time.perf_counter()
    result = zeroth_order_result(exposure, config, job.raw)
    path = write_centroid(result, exposure_file(ctx.out_dir, job.obs_id, "centroid"),
                          provenance_cards("zeroth_order", [ctx.outputs["isr"]["postisr"]],
                                           config))
    ctx.outputs["zeroth_order"] = {"centroid": str(path)}
    metrics = {f"zeroth_order_{k}": v for k, v in result.to_dict().items()
               if isinstance(v, int | float | str | bool) or v is None}
    metrics["timings_s"] = {"zeroth_order": time.perf_counter() - t0}
    return metrics


def _run_extract(ctx: _Context, config) -> dict[str, Any]:
    from atmospec.spectro.chain import process_dispersed
    from spectractor_bridge.spectrum import write_spectrum

    job = ctx.job
    exposure = ctx.exposure()
    t0 = time.perf_counter()
    xy = None
    centroid = ctx.outputs.get("zeroth_order", {}).get("centroid")
    if centroid:  # the zeroth_order task's answer, not a second search
        xy = tuple(json.loads(Path(centroid).read_text())["centroid"])
    spectrum, _ = process_dispersed(exposure, xy=xy, config=config, source=job.raw)
    path = write_spectrum(spectrum, exposure_file(ctx.out_dir, job.obs_id, "spectrum"),
                          provenance_cards("extract", [ctx.outputs["isr"]["postisr"]], config))
    ctx.outputs["extract"] = {"spectrum": str(path)}
    if spectrum.problems:  # written, flagged FITOK = F: the task failed, and says why
        raise ProcessingError(f"fit failed: {'; '.join(spectrum.problems)}")
    h = spectrum.header
    metrics = {"spectrum_rotangle_deg": float(h["ROTANGLE"]),
               "spectrum_d2ccd_mm": float(h["D2CCD"]),
               "spectrum_n_points": int(spectrum.n_points)}
    for lam in (450.0, 650.0, 850.0):  # flux at reference wavelengths, for the night plots
        inside = spectrum.wavelength[0] <= lam <= spectrum.wavelength[-1]
        metrics[f"spectrum_flux_{lam:.0f}nm"] = (
            float(np.interp(lam, spectrum.wavelength, spectrum.flux)) if inside else math.nan)
    metrics["timings_s"] = {"extract": time.perf_counter() - t0}
    return metrics


#: The tasks a pipeline definition may name.
def _run_fit_atmosphere(ctx: _Context, config) -> dict[str, Any]:
    from atmospec.atmosphere.spectrum_fit import NoReferenceSED, fit_atmosphere
    from spectractor_bridge.spectrum import read_spectrum

    job = ctx.job
    t0 = time.perf_counter()
    spectrum_path = ctx.outputs["extract"]["spectrum"]
    try:
        fit = fit_atmosphere(read_spectrum(spectrum_path), config, source=spectrum_path)
    except NoReferenceSED as exc:
        # Nights hold targets that are no standards (commissioning, emission-line objects):
        # their spectra are the product; no atmosphere can be fitted without an SED.
        raise TaskSkipped(" ".join(exc.problem.split())) from None
    path = write_text_atomic(json.dumps(to_jsonable(fit.to_dict()), indent=2) + "\n",
                             exposure_file(ctx.out_dir, job.obs_id, "atmosphere"))
    ctx.outputs["fit_atmosphere"] = {"fit": str(path)}
    if not fit.success:  # written with success false: the task failed, and says why
        raise ProcessingError(f"fit failed: {'; '.join(fit.problems)}")
    # The errors the fit's plot quotes (`AtmosphereFit.errors_quoted`), with their factor.
    metrics: dict[str, Any] = {"atmosphere_chi2_ndof": float(fit.chi2_ndof),
                               "atmosphere_error_scale": float(fit.error_scale)}
    for key in ("pwv_mm", "ozone_du", "vaod"):
        metrics[f"atmosphere_{key}"] = _number_or_nan(fit.values.get(key))
        metrics[f"atmosphere_{key}_err"] = _number_or_nan(fit.errors_quoted.get(key))
    metrics["timings_s"] = {"fit_atmosphere": time.perf_counter() - t0}
    return metrics


def _number_or_nan(value: Any) -> float:
    return math.nan if value is None else float(value)


TASKS: Mapping[str, TaskType] = MappingProxyType({
    "isr": TaskType("atmospec.isr.driver:IsrConfig", ("imaging", "dispersed"), (), _run_isr),
    "characterize": TaskType("atmospec.imaging.characterize:CharacterizeConfig", ("imaging",),
                             ("isr",), _run_characterize),
    "zeroth_order": TaskType("atmospec.spectro.zeroth_order:ZerothOrderConfig",
                             ("dispersed",), ("isr",), _run_zeroth_order),
    "extract": TaskType("atmospec.spectro.chain:SpectroscopyConfig", ("dispersed",),
                        ("isr", "zeroth_order"), _run_extract),
    "fit_atmosphere": TaskType("atmospec.atmosphere.spectrum_fit:AtmosphereFitConfig",
                               ("dispersed",), ("extract",), _run_fit_atmosphere),
})


def run_job(job: ExposureJob) -> list[TaskOutcome]:
    """Run the tasks of one exposure (in a worker process).

    Parameters
    ----------
    job : ExposureJob
        The exposure's work.

    Returns
    -------
    list of TaskOutcome
        One per task of the job, in order; never raises for a bad exposure.
    """
    ctx = _Context(job)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    failed: dict[str, str] = {}
    skipped: set[str] = set()
    outcomes = []
    for spec in job.tasks:
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        metrics: dict[str, Any] = {}
        reason = note = None
        upstream = [dep for dep in spec.inputs if dep in failed]
        if upstream:
            reason = f"not run: {upstream[0]} failed"
        elif upstream := [dep for dep in spec.inputs if dep in skipped]:
            note = f"skipped: {upstream[0]} skipped"
        else:
            try:
                metrics = TASKS[spec.name].run(ctx, spec.config)
            except TaskSkipped as exc:
                note = f"skipped: {exc}"
            except BadInputError as exc:
                # The raw file is the row's own: name only other files (products, outputs).
                where = "" if exc.path in (None, job.raw) else f"{exc.path}: "
                reason = where + " ".join(exc.problem.split())
            except ProcessingError as exc:
                reason = short_error(exc)
            except MemoryError:
                reason = "out of memory"
            except Exception as exc:  # a bug or unforeseen data: fail this exposure only
                reason = f"{type(exc).__name__}: {short_error(exc)}"
                log.debug("%s %s failed:\n%s", job.obs_id, spec.name, traceback.format_exc())
        if reason is not None:
            failed[spec.name] = reason
        if note is not None:
            skipped.add(spec.name)
            log.info("%s %s %s", job.obs_id, spec.name, note)
        outcomes.append(TaskOutcome(
            job.obs_id, spec.name, "failed" if reason else "done", reason or note,
            spec.config_hash, started, time.perf_counter() - t0,
            ctx.outputs.get(spec.name, {}) if reason is None and note is None else {},
            metrics))
    if job.figure_dir is not None:
        from atmospec.plots.exposure import refresh_figures  # matplotlib: only when drawing

        # The post-ISR exposure this job wrote (or read) is passed on, not read back.
        refresh_figures(ctx.out_dir, job.obs_id, Path(job.figure_dir),
                        groups=job.figure_groups,
                        postisr=ctx.preview if ctx.preview is not None else ctx.postisr,
                        sources=ctx.sources)
    return outcomes
