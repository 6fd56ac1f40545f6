"""The executors work runs on: a local process pool (the default) or the executor of a
`dask.distributed` client connected to an existing scheduler.

Local workers die with the process that started them: a night killed by SIGKILL (or the
out-of-memory killer) cannot shut its pool down, and its workers would otherwise run on
as orphans, finishing exposures nobody records and holding memory and files. On Linux
each worker asks the kernel for SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``);
elsewhere a watchdog thread notices that its parent changed.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from types import MappingProxyType
from typing import Literal

from atmospec.errors import BadInputError
from atmospec.memory import keep_freed_memory
from atmospec.warnings_log import route_warnings_to_log

__all__ = ["WORKER_ENVIRONMENT", "open_executor"]

log = logging.getLogger(__name__)

#: Environment of local worker processes: one thread each for the numerical libraries, as
#: Dask's nanny sets for its workers. Parallelism comes from the processes; more threads
#: would oversubscribe the cores, and a BLAS product summed in a different order by another
#: thread count changes the last bit of a few pixels, so local and Dask runs would differ.
WORKER_ENVIRONMENT: Mapping[str, str] = MappingProxyType({
    "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})


@contextmanager
def open_executor(workers: int | None = None, executor: Literal["local", "dask"] = "local",
                  scheduler: str | None = None, *, ignore_interrupt: bool = False
                  ) -> Iterator[Executor]:
    """An executor, closed on exit.

    Parameters
    ----------
    workers : int, optional
        Local worker processes; ``None``: all cores (ignored with Dask).
    executor : {"local", "dask"}
        A local process pool or a Dask cluster.
    scheduler : str, optional
        Address of the Dask scheduler (``tcp://host:8786``); required with ``dask``.
    ignore_interrupt : bool
        Local workers ignore SIGINT. A Ctrl-C in a terminal reaches every process of the
        foreground group: ``atmospec watch`` stops on the first one by letting the running
        exposures finish, which the workers must survive. A `KeyboardInterrupt` leaving
        the block (the second Ctrl-C) then ends them at once.

    Raises
    ------
    BadInputError
        A Dask run without a scheduler address, or a scheduler that cannot be reached.
    """
    if executor == "dask":
        if not scheduler:
            raise BadInputError("--scheduler", "a Dask run needs the scheduler address")
        from distributed import Client  # only Dask runs pay for its import

        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise BadInputError(scheduler, f"cannot reach the Dask scheduler ({exc})"
                                ) from None
        try:
            log.info("running on the Dask cluster at %s (%d workers)", scheduler,
                     len(client.scheduler_info().get("workers", {})))
            yield client.get_executor()
        finally:
            client.close()
        return
    n = workers or os.cpu_count() or 1
    # spawn: workers start clean (no inherited threads of progress bars, no copied SQLite
    # handles), at the cost of ~1 s of imports per worker. They inherit the environment at
    # start, so the thread limits reach their BLAS/OpenMP libraries at load.
    with _worker_environment(WORKER_ENVIRONMENT), ProcessPoolExecutor(
            max_workers=n, mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(logging.getLogger("atmospec").getEffectiveLevel(), os.getpid(),
                      ignore_interrupt)) as pool:
        try:
            yield pool
        except KeyboardInterrupt:
            if ignore_interrupt:  # they would finish their jobs before the pool closes
                _terminate_workers(pool)
            raise


@contextmanager
def _worker_environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the processes started inside the block."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


#: ``prctl`` option: the signal a process receives when its parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1

#: How often a worker without ``PR_SET_PDEATHSIG`` checks that its parent lives, s.
_WATCHDOG_PERIOD_S = 1.0


def _terminate_workers(pool: ProcessPoolExecutor) -> None:
    """End a pool's worker processes now and drop its queued work (an abort)."""
    # The executor has no public way to end running work: its processes, by their pids
    # (taken first: shutdown forgets them).
    pids = list(getattr(pool, "_processes", None) or ())
    pool.shutdown(wait=False, cancel_futures=True)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)


def _init_worker(level: int, parent_pid: int, ignore_interrupt: bool = False) -> None:
    """Tie a spawned worker's life to its parent's, keep its freed memory for reuse
    (`atmospec.memory`), and give it the main process's log level and format (it starts
    bare); with ``ignore_interrupt`` it ignores SIGINT."""
    _die_with_parent(parent_pid)
    keep_freed_memory()
    if ignore_interrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s [worker]: %(message)s")
    # A worker writes to the terminal's stderr: the same no-flood rule as the CLI.
    route_warnings_to_log()


def _die_with_parent(parent_pid: int) -> None:
    """End this process when ``parent_pid`` (its parent) dies."""
    if sys.platform.startswith("linux") and _set_parent_death_signal():
        # The parent may have died before the request: then nobody would send the signal.
        if os.getppid() != parent_pid:
            os._exit(1)
        return
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="atmospec-parent-watch",
                     daemon=True).start()


def _set_parent_death_signal() -> bool:
    """Ask Linux for SIGKILL when the parent dies; False if the request failed.

    The kernel sends it when the *thread* that started this process ends: the pool's
    workers are started by the main thread or the pool's manager thread, which both live
    as long as the pool.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    """Portable fallback: an orphan is adopted by another process, so its parent id changes."""
    while os.getppid() == parent_pid:
        time.sleep(_WATCHDOG_PERIOD_S)
    os._exit(1)
