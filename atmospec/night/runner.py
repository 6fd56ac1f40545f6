"""Reduce a whole night: index → calibrations → per-exposure tasks in parallel → summary.

Exposures run as independent jobs (`atmospec.night.tasks.run_job`) on a
`concurrent.futures` executor: a local process pool by default, or the executor of a
`dask.distributed` client connected to an existing scheduler. Only this process writes the
night index, as each job completes, so a run killed at any moment loses at most the jobs in
flight; every output file is written atomically, and a re-run skips every task recorded
``done`` whose configuration, inputs and output files are unchanged.

One night runs on a repository at a time (`atmospec.night.lock`). Holding that lock, the
runner removes the temporary files a killed run left (`atmospec.io.remove_stale_temporaries`),
when it starts and again when it ends; the local workers of a killed run die with it
(`atmospec.parallel`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from atmospec.calib.registry import CalibrationRegistry
from atmospec.errors import BadInputError, short_error
from atmospec.io import remove_stale_temporaries
from atmospec.layout import exposure_dir, exposure_figure_dir, night_build_dir, report_dir
from atmospec.night.calibs import (
    BuiltProduct,
    calibration_files,
    prepare_calibrations,
    write_builds,
)
from atmospec.night.index import MAX_DEPTH, RAW_PATTERNS, NightIndex, RawRecord
from atmospec.night.lock import night_lock
from atmospec.night.pipeline import PipelineDefinition, load_pipeline
from atmospec.night.summary import write_summary
from atmospec.night.tasks import ExposureJob, TaskOutcome, TaskSpec, run_job, task_hash
from atmospec.parallel import open_executor

log = logging.getLogger(__name__)

#: Age from which a temporary file of `atomic_path` under the repository is taken for a dead
#: writer's, s. The night lock excludes another night; the margin is for the other commands
#: that may write in a repository meanwhile (``atmospec report``): a live writer touches its
#: temporary file many times a second.
STALE_TEMPORARY_AGE_S = 10.0


@dataclass(frozen=True)
class NightRunConfig:
    """How a night is run."""

    workers: int | None = None
    """Local worker processes; ``None``: all cores (ignored with a Dask scheduler)."""
    executor: Literal["local", "dask"] = "local"
    """``local`` process pool or a ``dask`` cluster."""
    scheduler: str | None = None
    """Address of the Dask scheduler (``tcp://host:8786``); required with ``dask``."""
    pipeline: str | None = None
    """Pipeline definition (YAML); ``None``: the shipped ``pipelines/night.yaml``."""
    retry_failed: bool = True
    """Run again the tasks that failed in an earlier run (a fixed input may now pass)."""
    plots: bool = True
    """Draw the night summary plots."""
    figures: bool = True
    """Draw each exposure's report figures (`atmospec.plots.exposure`) in the worker as soon
    as its tasks finish, so that the HTML report written after the night
    (`atmospec.report.build_report`) only lays them out; only with `plots`."""
    progress: bool = True
    """Progress bars on a terminal."""
    patterns: tuple[str, ...] = RAW_PATTERNS
    """Which files of the raw folder and its sub-folders are raws (`raw_files`: a pattern
    with a ``/`` matches the path relative to the folder, any other the file name)."""
    lossless: bool = False
    """Write the post-ISR images as computed (float32, uncompressed, ~200 MB a LATISS
    frame) instead of quantised at noise / 10 and tile-compressed (~8× smaller): sets the
    pipeline's ``isr`` ``compression.enabled`` to false (`load_pipeline`), so a change
    re-runs ISR and the tasks after it."""


@dataclass
class NightResult:
    """What a night run did."""

    n_exposures: int = 0
    """Exposures the pipeline applies to."""
    n_run: int = 0
    """Exposures with at least one task run this time."""
    n_skipped: int = 0
    """Exposures whose tasks were all done already."""
    n_failed: int = 0
    """Exposures with a failed task after this run."""
    rejected: list[tuple[Path, str]] = field(default_factory=list)
    """Files of the night directory that are not usable raws, with the reason."""
    calibrations: list[BuiltProduct] = field(default_factory=list)
    """Products built this run."""
    outcomes: list[TaskOutcome] = field(default_factory=list)
    """Task outcomes of this run."""
    summary: dict[str, Path] = field(default_factory=dict)
    """Summary table and plot files."""
    wall_s: float = 0.0
    """Wall time of the run, s."""
    calibrations_s: float = 0.0
    """Wall time of the calibration stage (selection and building), s."""
    exposures_s: float = 0.0
    """Wall time of the per-exposure stage, s."""
    no_raw: str | None = None
    """When the raw folder held no file the patterns match: what was searched (an empty
    night is not an error, but "0 exposures" alone does not say why)."""


def exposure_class(record: RawRecord) -> str | None:
    """``imaging`` or ``dispersed`` for a science exposure; None for anything else."""
    if record.info.image_type != "science":
        return None
    return "dispersed" if record.info.is_dispersed else "imaging"


def _raw_identity(record: RawRecord) -> dict[str, object]:
    stat = record.path.stat()
    return {"raw": record.path.name, "size": stat.st_size, "mtime": stat.st_mtime}


def plan_jobs(index: NightIndex, registry: CalibrationRegistry, pipeline: PipelineDefinition,
              repo: Path, retry_failed: bool = True, figures_dir: Path | None = None,
              failed_builds: Sequence[BuiltProduct] = (),
              records: Sequence[RawRecord] | None = None
              ) -> tuple[list[ExposureJob], int]:
    """The jobs still to run, and how many exposures are already complete.

    A task is skipped when the index records it ``done`` with the same configuration hash
    (its configuration, raw file, calibration files and upstream hashes) and its outputs
    still exist; a task whose input task runs again runs again too. With ``figures_dir``
    (the report's directory) each job also draws its report figures. A raw that can no
    longer be read (deleted since it was indexed) is recorded as skipped
    (`NightIndex.withdraw`) and planned no job. An exposure that needed a product whose
    build failed this run (``failed_builds``) fails saying so (`calibration_files`).
    ``records`` plans only those raws (``atmospec watch``: the frames that just arrived),
    default every raw of the index.
    """
    if records is None:
        records = index.raws()
        recorded = index.task_map()
    else:
        recorded = {(t.obs_id, t.task): t for r in records for t in index.tasks(r.obs_id)}
    jobs: list[ExposureJob] = []
    complete = 0
    for record in records:
        cls = exposure_class(record)
        if cls is None:
            continue
        definitions = pipeline.tasks_for(cls)
        if not definitions:
            continue
        try:
            raw = _raw_identity(record)
        except OSError as exc:  # gone since it was indexed: a skip, not the end of the night
            index.withdraw(record.path, exc)
            continue
        files, missing = calibration_files(registry, record.info,
                                           pipeline.calibrations.require, failed_builds)
        identity = {**raw, "calibs": vars(files), "missing": missing}
        hashes: dict[str, str] = {}
        specs: list[TaskSpec] = []
        done_outputs: dict[str, dict[str, str]] = {}
        rerun: set[str] = set()
        for d in definitions:
            h = task_hash(d.name, d.config, {**identity,
                                             "upstream": {n: hashes[n] for n in d.inputs}})
            hashes[d.name] = h
            prev = recorded.get((record.obs_id, d.name))
            up_to_date = (prev is not None and prev.config_hash == h
                          and (prev.status == "done" or not retry_failed)
                          and all(Path(p).is_file() for p in prev.outputs.values())
                          and not rerun.intersection(d.inputs))
            if up_to_date:
                done_outputs[d.name] = prev.outputs
            else:
                rerun.add(d.name)
                specs.append(TaskSpec(d.name, d.config, h, d.inputs))
        if not specs:
            complete += 1
            continue
        figure_dir = (None if figures_dir is None
                      else str(exposure_figure_dir(figures_dir, record.obs_id)))
        jobs.append(ExposureJob(record.obs_id, str(record.path),
                                str(exposure_dir(repo, record.info.day_obs)), tuple(specs),
                                files, missing, done_outputs, figure_dir))
    return jobs, complete


def run_night(raw_dir: str | Path, repo: str | Path,
              config: NightRunConfig | None = None) -> NightResult:
    """Reduce every exposure of a night directory.

    Parameters
    ----------
    raw_dir : path
        Directory of the night's raw LATISS files (other files are indexed as rejected).
    repo : path
        Repository: night index, calibration registry, outputs (created if needed).
    config : NightRunConfig, optional
        Workers, executor, pipeline.

    Returns
    -------
    NightResult

    Raises
    ------
    BadInputError
        ``raw_dir`` is not a directory, a bad pipeline file, an unreachable scheduler,
        a repository that cannot be written, or another night running on it.
    """
    config = config or NightRunConfig()
    t_start = time.perf_counter()
    repo = Path(repo)
    check_raw_folder(raw_dir)
    pipeline = load_pipeline(config.pipeline, lossless=config.lossless)
    with night_lock(repo) as holder:
        log.info("night lock of %s taken (%s)", repo, holder.describe())
        clean_stale_temporaries(repo)
        result = _run_locked(raw_dir, repo, config, pipeline)
        clean_stale_temporaries(repo)
    result.wall_s = time.perf_counter() - t_start
    return result


def check_raw_folder(raw_dir: str | Path) -> None:
    """Refuse a raw folder that is not one before anything is created in the repository.

    The night lock and the index are files of the repository; made first, they would be
    left behind by a refused command (bad input writes nothing). `Path.is_dir` only stats
    the path, so a FIFO is not opened (opening it would block).

    Raises
    ------
    BadInputError
        ``raw_dir`` is missing (or a dangling link) or is not a directory.
    """
    path = Path(raw_dir)
    if path.is_dir():
        return
    if path.is_symlink() and not path.exists():
        raise BadInputError(path, "not a directory (a symbolic link to nothing)")
    if not path.exists():
        raise BadInputError(path, "no such directory")
    raise BadInputError(path, "not a directory")


def clean_stale_temporaries(repo: Path) -> None:
    """Remove what killed runs left half-written (only while holding the night lock)."""
    removed = remove_stale_temporaries(repo, older_than_s=STALE_TEMPORARY_AGE_S)
    if removed:
        log.warning("removed %d temporary files a killed run left in %s", len(removed), repo)


def _run_locked(raw_dir: str | Path, repo: Path, config: NightRunConfig,
                pipeline: PipelineDefinition) -> NightResult:
    """`run_night`'s work, once the night lock is held."""
    index = NightIndex(repo)
    counts = index.index_directory(raw_dir, progress=config.progress,
                                   patterns=config.patterns)
    registry = CalibrationRegistry(repo, instrument=night_instrument(index), create=True)
    result = NightResult(rejected=index.rejected())
    if not any(counts.values()):
        result.no_raw = (f"no raw file in {raw_dir}: nothing matches "
                         f"{', '.join(config.patterns)} in it or its sub-folders "
                         f"({MAX_DEPTH} levels down; --pattern chooses the files)")
    with open_executor(config.workers, config.executor, config.scheduler) as executor:
        t0 = time.perf_counter()
        result.calibrations = prepare_calibrations(index, registry, pipeline.calibrations,
                                                   executor.submit, night_build_dir(repo))
        result.calibrations_s = time.perf_counter() - t0
        write_builds(result.calibrations, repo)
        t0 = time.perf_counter()
        # The report's per-exposure figures are drawn by the workers as each exposure
        # finishes: the report at the end only lays them out.
        figures = report_dir(repo) if config.plots and config.figures else None
        jobs, result.n_skipped = plan_jobs(index, registry, pipeline, repo,
                                           config.retry_failed, figures, result.calibrations)
        result.rejected = index.rejected()  # with the raws planning found gone
        result.n_exposures = result.n_skipped + len(jobs)
        log.info("%d exposures: %d to run, %d already done", result.n_exposures, len(jobs),
                 result.n_skipped)
        futures: dict[Future, ExposureJob] = {executor.submit(run_job, job): job
                                              for job in jobs}
        bar = tqdm(total=len(futures), desc="exposures", unit="exp",
                   disable=None if config.progress else True)
        for future in as_completed(futures):
            outcomes = record_outcomes(index, futures[future], future)
            result.outcomes.extend(outcomes)
            result.n_run += 1
            bar.update(1)
        bar.close()
        result.exposures_s = time.perf_counter() - t0
    failed = {t.obs_id for t in index.tasks() if t.status == "failed"}
    result.n_failed = len(failed)
    result.summary = write_summary(index, repo, plots=config.plots)
    return result


def night_instrument(index: NightIndex) -> str | None:
    """The instrument of most of the night's frames: the registry's (a repository holds the
    products of one instrument; a frame of another finds none and fails saying so)."""
    counts = Counter(r.info.instrument for r in index.raws())
    if len(counts) > 1:
        log.warning("the night mixes instruments (%s): calibrations are those of %s",
                    ", ".join(f"{n} {name}" for name, n in counts.most_common()),
                    counts.most_common(1)[0][0])
    return counts.most_common(1)[0][0] if counts else None


def record_outcomes(index: NightIndex, job: ExposureJob, future: Future
                    ) -> list[TaskOutcome]:
    """Record in the index what a finished job did, and return its outcomes.

    The one place outcomes are recorded (``atmospec night`` and ``atmospec watch``): a
    failed task is logged with its reason; a job whose worker died (killed, out of memory,
    a crash: the future raises) fails every one of its tasks, saying so.

    Parameters
    ----------
    index : NightIndex
        The night (written by this process only).
    job : ExposureJob
        The job the future ran.
    future : concurrent.futures.Future
        Its finished future.

    Returns
    -------
    list of TaskOutcome
    """
    try:
        outcomes = future.result()
    except Exception as exc:  # the worker died (killed, out of memory, crash)
        outcomes = _lost(job, exc)
    for o in outcomes:
        index.record_task(o.obs_id, o.task, status=o.status, config_hash=o.config_hash,
                          started=o.started, duration_s=o.duration_s, reason=o.reason,
                          outputs=o.outputs, metrics=o.metrics)
        if o.status == "failed":
            log.warning("%s %s failed: %s", o.obs_id, o.task, o.reason)
    return outcomes


def _lost(job: ExposureJob, exc: BaseException) -> list[TaskOutcome]:
    reason = f"worker lost: {type(exc).__name__}: {short_error(exc)}"
    now = datetime.now(UTC)
    return [TaskOutcome(job.obs_id, s.name, "failed", reason, s.config_hash, now, 0.0, {}, {})
            for s in job.tasks]
