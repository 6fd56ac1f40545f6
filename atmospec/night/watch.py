"""Follow a night as it is taken: ``atmospec watch``.

The night's directory is watched for new raw files (`atmospec.night.arrivals`: file-system
events from ``watchdog``, or polling on network file systems that deliver no events). A
new file is taken once it is complete: its size and modification time unchanged over two
looks `WatchConfig.settle_s` apart (or at once when its writer closed it or it was moved
in), and its structure whole
(`atmospec.night.index.check_raw_file`: every HDU's header and data inside the file, every
amplifier there; a file still being written fails it). A file that stays incomplete or
damaged for `WatchConfig.incomplete_timeout_s` is recorded as rejected in the index with
its reason, once, and looked at again only if it changes.

Each complete raw is indexed (`NightIndex.index_files`), planned with the night runner's
`plan_jobs` and run on the worker pool (`run_job`, which also draws the exposure's report
figures); its outcomes are recorded by `record_outcomes`, as ``atmospec night`` records
them, so a later ``watch`` or ``night`` on the repository resumes where this one stopped.
After each exposure the night summary is written again (its rows are kept in memory and
only the new exposure's is rebuilt) and the caller's ``publish`` callback is given the
update (the CLI writes the live page, `atmospec.report.live`).

Calibrations: the masters the night lacks are built (`prepare_calibrations`, as the night
runner does) when the first science frame needing them is about to be reduced, from the
calibration frames present then; calibration frames arriving later are indexed, and build
what is still missing before the next science frame, but do not rebuild a master already
made (a master is valid for the whole observing night). When a build adds a product, every
exposure of the night is planned again: those that failed for want of it run again.

One night runs on a repository at a time: the watch holds the night lock for its whole
life. SIGINT (Ctrl-C) and SIGTERM stop it cleanly: no new exposure is started, the running
ones finish and are recorded, the summary is written and the lock released; a second
Ctrl-C aborts (the running exposures are lost, nothing half-written is left: every output
is written atomically).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from astropy.table import Table

from atmospec.calib.registry import CalibrationRegistry
from atmospec.layout import night_build_dir, report_dir
from atmospec.night.alerts import AlertConfig, live_alerts
from atmospec.night.arrivals import Arrivals, EventQueue, start_observer
from atmospec.night.calibs import prepare_calibrations, write_builds
from atmospec.night.index import (
    RAW_PATTERNS,
    NightIndex,
    RawRecord,
    is_raw_path,
    iter_raw_files,
)
from atmospec.night.lock import night_lock
from atmospec.night.pipeline import PipelineDefinition, load_pipeline
from atmospec.night.runner import (
    NightResult,
    check_raw_folder,
    clean_stale_temporaries,
    exposure_class,
    night_instrument,
    plan_jobs,
    record_outcomes,
)
from atmospec.night.summary import summary_row, table_of_rows, write_summary
from atmospec.night.tasks import ExposureJob, run_job
from atmospec.parallel import open_executor
from atmospec.plots.exposure import refresh_figures

log = logging.getLogger(__name__)

__all__ = ["WatchConfig", "WatchUpdate", "watch_night"]

#: Image types whose frames build the masters.
_CALIBRATION_TYPES = frozenset({"bias", "dark", "flat"})


@dataclass(frozen=True)
class WatchConfig:
    """How a night is followed."""

    workers: int | None = None
    """Local worker processes; ``None``: all cores."""
    pipeline: str | None = None
    """Pipeline definition (YAML); ``None``: the shipped ``pipelines/night.yaml``."""
    lossless: bool = False
    """Post-ISR images uncompressed (`atmospec.night.runner.NightRunConfig.lossless`)."""
    patterns: tuple[str, ...] = RAW_PATTERNS
    """Which files are raws (`atmospec.night.index.raw_files`)."""
    poll: bool = False
    """Look for new files by polling the directory instead of file-system events (network
    file systems: NFS, SMB, some FUSE mounts deliver no events)."""
    poll_interval_s: float = 1.0
    """Time between two polls of the directory, s (with `poll`)."""
    settle_s: float = 0.3
    """A file is looked at once its size and modification time did not change over two
    looks this far apart, s; at once when a close-after-write or a move into the folder was
    seen (inotify; a polling observer sees neither)."""
    incomplete_timeout_s: float = 60.0
    """A file that is still incomplete or damaged this long after its last change is
    recorded as rejected, s (a transfer that stalls longer than this is taken for a damaged
    file; it is looked at again when it changes)."""
    stop_after: int | None = None
    """Stop once this many exposures were reduced (``None``: run until stopped)."""
    idle_exit_s: float | None = None
    """Stop after this many seconds with no new file, no file waiting to be complete and no
    exposure running (``None``: run until stopped)."""
    max_in_flight: int | None = None
    """Exposures submitted to the workers at once (the rest wait in order, as file names);
    ``None``: twice the workers."""
    retry_failed: bool = True
    """Run again the tasks that failed in an earlier run (at start, as ``atmospec night``)."""
    figures: bool = True
    """Workers draw each exposure's report figures (the live page shows them)."""
    live_figures: tuple[str, ...] = ("postisr", "atmosphere")
    """The figure groups (`atmospec.plots.exposure`) drawn with an exposure's tasks, before
    its outcome comes back: the quick look and the atmosphere fit (the spectrum with its
    model), what the live page shows first. The others (sources, PSF, the spectrum's five
    diagnostics) are drawn next, when no exposure waits for a worker (on all workers but
    one, kept for the next arrival), and at the latest when the watch stops; the page is
    written again as they come."""
    progress: bool = True
    """Progress bar of the initial indexing on a terminal."""
    alerts: AlertConfig = field(default_factory=AlertConfig)
    """When the alerts speak (`atmospec.night.alerts`)."""
    tick_s: float = 0.1
    """Longest wait of the loop between two looks at the files and the workers, s."""
    summary_interval_s: float = 5.0
    """While exposures wait for a worker (a backlog), the summary files (``summary.ecsv``,
    ``.parquet``) are written again at most this often, s; whenever none waits, after every
    update. The live page still shows every update at once. Rewriting a 300-row summary
    costs ~30 ms of the watch process's CPU: after each of a 300-exposure backlog's
    exposures, 5 s of it."""


@dataclass(frozen=True)
class WatchUpdate:
    """What changed, given to the ``publish`` callback of `watch_night`."""

    repo: Path
    """The repository."""
    summary: Table
    """The night summary now (one row per indexed frame, `summary_table`'s columns)."""
    finished: tuple[str, ...]
    """OBSIDs of the exposures whose tasks just finished (done or failed), oldest first."""
    alerts: tuple[str, ...]
    """The night's alerts now (`atmospec.night.alerts.live_alerts`)."""
    rejected: tuple[tuple[Path, str], ...]
    """Files of the night directory that are not usable raws, with the reason."""
    final: bool = False
    """The watch is stopping: the last update."""


#: ``publish(update)``: shows an update (the CLI writes the live page); its errors are
#: logged, never fatal.
Publish = Callable[[WatchUpdate], None]


def watch_night(raw_dir: str | Path, repo: str | Path, config: WatchConfig | None = None,
                publish: Publish | None = None, stop: threading.Event | None = None
                ) -> NightResult:
    """Reduce a night's exposures as their raw files arrive, until stopped.

    Parameters
    ----------
    raw_dir : path
        Directory the raw files arrive in (sub-folders too).
    repo : path
        Repository: night index, calibration registry, outputs (created if needed).
    config : WatchConfig, optional
        Workers, detection of new files, when to stop.
    publish : callable, optional
        Called with a `WatchUpdate` at the start, after each exposure, each file indexed or
        rejected and each exposure's later figures, and once more when stopping
        (``final``).
    stop : threading.Event, optional
        Set to stop cleanly (as SIGINT does); for a watch run in a thread. Signal handlers
        are installed only when this runs in the main thread.

    Returns
    -------
    NightResult
        ``n_run`` exposures reduced by this watch, ``n_skipped`` found complete at start,
        ``n_exposures`` science exposures of the night, ``n_failed`` with a failed task.

    Raises
    ------
    BadInputError
        ``raw_dir`` is not a directory, a bad pipeline file, a repository that cannot be
        written, or another night running on it.
    """
    config = config or WatchConfig()
    t_start = time.perf_counter()
    repo = Path(repo)
    check_raw_folder(raw_dir)
    pipeline = load_pipeline(config.pipeline, lossless=config.lossless)
    stop = stop or threading.Event()
    with night_lock(repo) as holder, _stop_on_signals(stop):
        log.info("night lock of %s taken (%s)", repo, holder.describe())
        clean_stale_temporaries(repo)
        result = _Watch(Path(raw_dir).absolute(), repo, config, pipeline, publish, stop).run()
        clean_stale_temporaries(repo)
    result.wall_s = time.perf_counter() - t_start
    return result


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop``; a second SIGINT raises `KeyboardInterrupt` (abort).
    Only in the main thread (Python delivers signals there alone)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        log.warning("stopping: the running exposures finish and are recorded "
                    "(Ctrl-C again to abort them)")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class _Pool:
    """The worker pool (a context manager), opened again if a worker's death broke it."""

    def __init__(self, workers: int | None) -> None:
        self.workers = workers
        self.stack = contextlib.ExitStack()
        self.executor: Executor | None = None

    def __enter__(self) -> _Pool:
        self.executor = self.stack.enter_context(open_executor(self.workers,
                                                               ignore_interrupt=True))
        return self

    def __exit__(self, *exc: Any) -> bool | None:
        # The exception goes in: an abort (KeyboardInterrupt) ends the workers at once.
        return self.stack.__exit__(*exc)

    def reopen(self) -> None:
        log.warning("the worker pool broke (a worker died): starting a new one")
        with contextlib.suppress(Exception):
            self.stack.close()
        self.stack = contextlib.ExitStack()
        self.__enter__()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        assert self.executor is not None, "submit inside the pool's with block"
        try:
            return self.executor.submit(fn, *args)
        except BrokenProcessPool:
            self.reopen()
            return self.executor.submit(fn, *args)


class _Watch:
    """The state of one watch (a loop on the main thread; the observer's thread only
    queues paths)."""

    def __init__(self, raw_dir: Path, repo: Path, config: WatchConfig,
                 pipeline: PipelineDefinition, publish: Publish | None,
                 stop: threading.Event) -> None:
        self.raw_dir, self.repo, self.config = raw_dir, repo, config
        self.pipeline, self.publish_to, self.stop = pipeline, publish, stop
        self.index = NightIndex(repo)
        self.registry: CalibrationRegistry | None = None
        self.files = Arrivals(config.settle_s, config.incomplete_timeout_s)
        self.events = EventQueue()
        self.result = NightResult()
        self.figures = report_dir(repo) if config.figures else None
        self.ready: deque[RawRecord] = deque()  # science frames to plan, in arrival order
        self.jobs: deque[ExposureJob] = deque()  # planned, not submitted
        self.running: dict[Future, ExposureJob] = {}
        self.later: deque[ExposureJob] = deque()  # reduced, figures still to draw
        self.drawing: dict[Future, ExposureJob] = {}
        self.submitted = 0
        self.calibrations_wanted = True  # calibration frames arrived since the last build
        self.rows: dict[str, tuple[tuple[int, int], RawRecord, dict[str, Any]]] = {}
        self.alerts: tuple[str, ...] = ()
        self.last_activity = time.monotonic()
        self.publish_failed: str | None = None
        self.summary_at = -math.inf  # when the summary files were last written
        self.summary_stale = False  # an update is not in them yet

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> NightResult:
        observer = start_observer(self.raw_dir, self.events, self.config.poll,
                                  self.config.poll_interval_s)
        try:
            with _Pool(self.config.workers) as pool:
                self._start(pool)
                while not self._should_stop():
                    self._look(pool)
                    self._submit(pool)
                    self._collect(pool, self.config.tick_s)
                    if self.summary_stale:
                        self._write_summary()
                log.info("watch stopping: %d exposures running finish", len(self.running))
                for future in list(self.running):
                    future.cancel()  # not started yet: left pending for the next run
                while self.running or self.later or self.drawing:
                    self._submit_figures(pool, stopping=True)
                    self._collect(pool, self.config.tick_s)
        finally:
            observer.stop()
            with contextlib.suppress(RuntimeError):
                observer.join(timeout=5.0)
        return self._finish()

    def _should_stop(self) -> bool:
        if self.stop.is_set():
            return True
        c = self.config
        if c.stop_after is not None and self.result.n_run >= c.stop_after:
            log.info("%d exposures reduced (--stop-after): stopping", self.result.n_run)
            return True
        idle = not (self.running or self.jobs or self.ready or self.files.pending
                    or self.later or self.drawing)
        if (c.idle_exit_s is not None and idle
                and time.monotonic() - self.last_activity >= c.idle_exit_s):
            log.info("nothing new for %.0f s (--idle-exit): stopping", c.idle_exit_s)
            return True
        return False

    def _start(self, pool: _Pool) -> None:
        """Index what is there (files still being written are followed like new ones),
        then plan the whole night as ``atmospec night`` would: a resumed night goes on."""
        now = time.monotonic()

        def defer(path: Path, reason: str) -> bool:
            try:
                recent = time.time() - path.stat().st_mtime < self.config.incomplete_timeout_s
            except OSError:
                return False
            if recent:
                self.files.note(path, now)
            return recent

        self.index.index_directory(self.raw_dir, progress=self.config.progress,
                                   patterns=self.config.patterns, defer=defer)
        self._refresh_rows()
        science = [r for r in self.index.raws() if exposure_class(r) is not None]
        if science:
            self._prepare_calibrations(pool)
            self._plan(None)
        self.result.n_skipped = len(science) - len(self.jobs)
        self._publish(())

    def _look(self, pool: _Pool) -> None:
        """Take the files that are due: index them, queue their exposures."""
        now = time.monotonic()
        self._note_events(now)
        due = self.files.due(now)
        if not due:
            return
        self.last_activity = now
        states = self.index.index_files(due, defer=self.files.defer)
        added = []
        for path, state in states.items():
            if state == "deferred":
                continue
            self.files.done(path)
            if state in ("added", "unchanged"):
                added.append(path.resolve())
        records = self.index.raws(paths=added) if added else []
        for record in records:
            if record.info.image_type in _CALIBRATION_TYPES:
                self.calibrations_wanted = True
            elif exposure_class(record) is not None:
                self.ready.append(record)
        rejected = [p for p, s in states.items() if s == "rejected"]
        if rejected:  # a duplicate OBSID may have held an indexed raw back: all rows again
            self._refresh_rows()
        elif records:
            self._refresh_rows(records)
        if records or rejected:
            self._publish(())
        if self.ready:
            if self.calibrations_wanted:
                self._prepare_calibrations(pool)
            self._plan(list(self.ready))
            self.ready.clear()

    def _note_events(self, now: float) -> None:
        """Follow the files the observer named (all of the directory's after lost events
        or a folder moved in whole: its files raise no event of their own)."""
        rescan = False
        for event in self.events.drain():
            self.last_activity = now
            if event is None:
                rescan = True
            elif is_raw_path(self.raw_dir, event[0], (self.repo,), self.config.patterns):
                self.files.note(event[0], now, closed=event[1])
        if rescan:
            for path in iter_raw_files(self.raw_dir, (self.repo,), self.config.patterns):
                self.files.note(path, now)

    def _prepare_calibrations(self, pool: _Pool) -> None:
        """Build the masters the science frames lack from the calibration frames present
        (blocking: the frames after need them); plan the night again when one was made."""
        self.calibrations_wanted = False
        registry = self._registry()
        built = prepare_calibrations(self.index, registry, self.pipeline.calibrations,
                                     pool.submit, night_build_dir(self.repo))
        if not built:
            return
        # The latest attempt at each product stands (an earlier "not built" is history).
        made = {(b.kind, b.detector, b.filter) for b in built}
        self.result.calibrations = [b for b in self.result.calibrations
                                    if (b.kind, b.detector, b.filter) not in made] + built
        write_builds(self.result.calibrations, self.repo)
        if any(b.status in ("registered", "certified") for b in built) and self.submitted:
            # Exposures reduced without the new product (or failed for want of it).
            self._plan(None)

    def _registry(self) -> CalibrationRegistry:
        """The calibration registry, opened once the night's instrument is known."""
        if self.registry is None:
            self.registry = CalibrationRegistry(self.repo,
                                                instrument=night_instrument(self.index),
                                                create=True)
        return self.registry

    def _plan(self, records: list[RawRecord] | None) -> None:
        """Queue the jobs of ``records`` (None: every raw of the night) but those running; a
        job planned again replaces the one queued (the calibrations may have changed)."""
        jobs, _ = plan_jobs(self.index, self._registry(), self.pipeline, self.repo,
                            self.config.retry_failed, self.figures, self.result.calibrations,
                            records=records)
        if self.figures is not None:
            jobs = [replace(j, figure_groups=self.config.live_figures) for j in jobs]
        running = {j.obs_id for j in self.running.values()}
        planned = {j.obs_id for j in jobs}
        self.jobs = deque(j for j in self.jobs if j.obs_id not in planned)
        self.jobs.extend(j for j in jobs if j.obs_id not in running)

    def _submit(self, pool: _Pool) -> None:
        limit = self.config.max_in_flight or 2 * (self.config.workers or os.cpu_count() or 1)
        while self.jobs and len(self.running) < limit and not self.stop.is_set():
            if (self.config.stop_after is not None
                    and self.submitted >= self.config.stop_after):
                return
            job = self.jobs.popleft()
            self.running[pool.submit(run_job, job)] = job
            self.submitted += 1
        self._submit_figures(pool)

    def _submit_figures(self, pool: _Pool, stopping: bool = False) -> None:
        """Draw the rest of the reduced exposures' figures when no exposure waits for a
        worker (or the watch stops: the repository is left complete), keeping one worker
        free for the next arrival when there are two or more: a drawing cannot be
        interrupted, and an exposure landing while every worker drew (the spectrum's five
        figures take ~1 s) waited for them."""
        workers = self.config.workers or os.cpu_count() or 1
        free = workers - len(self.running) - (1 if workers > 1 else 0)
        while self.later and (stopping or (not self.jobs and len(self.drawing) < free)):
            job = self.later.popleft()
            assert job.figure_dir is not None
            future = pool.submit(refresh_figures, Path(job.out_dir), job.obs_id,
                                 Path(job.figure_dir))
            self.drawing[future] = job

    def _collect(self, pool: _Pool, timeout: float) -> None:
        """Record the jobs that finished within ``timeout`` and publish them."""
        if not (self.running or self.drawing):
            self.stop.wait(timeout)  # an idle tick, cut short by a stop
            return
        finished, _ = wait([*self.running, *self.drawing], timeout=timeout,
                           return_when=FIRST_COMPLETED)
        broken = False
        drawn = [f for f in finished if f in self.drawing]
        for future in drawn:
            del self.drawing[future]  # refresh_figures never raises: a dead worker might
            broken |= not future.cancelled() and isinstance(future.exception(),
                                                            BrokenProcessPool)
        done_ids = []
        for future in sorted((f for f in finished if f in self.running),
                             key=lambda f: self.running[f].obs_id):
            job = self.running.pop(future)
            if future.cancelled():
                continue
            broken |= isinstance(future.exception(), BrokenProcessPool)
            self.result.outcomes.extend(record_outcomes(self.index, job, future))
            self.result.n_run += 1
            done_ids.append(job.obs_id)
            if job.figure_dir is not None and job.figure_groups is not None:
                self.later.append(job)
        if broken:
            pool.reopen()
        if not done_ids:
            if drawn and not self.stop.is_set():
                self._publish(())  # the page shows the figures just drawn
            return
        self.last_activity = time.monotonic()
        self._refresh_rows([self.rows[o][1] for o in done_ids if o in self.rows])
        self._publish(tuple(done_ids))

    # -- summary and publication ----------------------------------------------------------

    def _refresh_rows(self, records: list[RawRecord] | None = None) -> None:
        """Build the summary rows of ``records`` (new raws, or exposures whose tasks just
        finished); None: of every raw of the index, forgetting those no longer there."""
        if records is None:
            records = self.index.raws()
            self.rows.clear()
        for record in records:
            key = (record.info.day_obs, record.info.seq_num)
            self.rows[record.obs_id] = (key, record, summary_row(
                record, self.index.tasks(record.obs_id)))

    def _summary_rows(self) -> list[dict[str, Any]]:
        return [row for _, _, row in sorted(self.rows.values(), key=lambda v: v[0])]

    def _publish(self, finished: tuple[str, ...], final: bool = False) -> None:
        """Give the update to the caller first (the live page: what people wait for), then
        write the summary files."""
        rows = self._summary_rows()
        table = table_of_rows(rows)
        alerts = tuple(live_alerts(rows, self.config.alerts))
        for alert in alerts:
            if alert not in self.alerts:
                log.warning("alert: %s", alert)
        self.alerts = alerts
        if final:  # the night plots beside it, as atmospec night draws them
            self.result.summary = write_summary(self.index, self.repo, plots=True, table=table)
        if self.publish_to is not None:
            update = WatchUpdate(self.repo, table, finished, alerts,
                                 tuple(self.index.rejected()), final)
            try:
                self.publish_to(update)
            except Exception as exc:  # the page is a view: the night goes on without it
                text = f"{type(exc).__name__}: {exc}"
                if text != self.publish_failed:
                    log.warning("live page not updated (%s)", text)
                    log.debug("publish failure", exc_info=True)
                self.publish_failed = text
        if not final:
            self.summary_stale = True
            self._write_summary(table)

    def _write_summary(self, table: Table | None = None) -> None:
        """Write the summary files of the last update if due (`WatchConfig.summary_interval_s`:
        at once when no exposure waits for a worker)."""
        now = time.monotonic()
        if self.jobs and now - self.summary_at < self.config.summary_interval_s:
            return
        if table is None:
            table = table_of_rows(self._summary_rows())
        self.result.summary = write_summary(self.index, self.repo, plots=False, table=table)
        self.summary_at, self.summary_stale = now, False

    def _finish(self) -> NightResult:
        result = self.result
        result.rejected = self.index.rejected()
        science = [r for r in self.index.raws() if exposure_class(r) is not None]
        result.n_exposures = len(science)
        result.n_failed = len({t.obs_id for t in self.index.tasks() if t.status == "failed"})
        self._publish((), final=True)
        return result
