"""The executors work runs on: a local process pool (the default) or the executor of a
`dask.distributed` client connected to an existing scheduler."""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Iterator, Mapping
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from types import MappingProxyType
from typing import Literal

from atmospec.errors import BadInputError

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
                  scheduler: str | None = None) -> Iterator[Executor]:
    """An executor, closed on exit.

    Parameters
    ----------
    workers : int, optional
        Local worker processes; ``None``: all cores (ignored with Dask).
    executor : {"local", "dask"}
        A local process pool or a Dask cluster.
    scheduler : str, optional
        Address of the Dask scheduler (``tcp://host:8786``); required with ``dask``.

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
            initargs=(logging.getLogger("atmospec").getEffectiveLevel(),)) as pool:
        yield pool


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


def _init_worker(level: int) -> None:
    """Give a spawned worker the main process's log level and format (it starts bare)."""
    logging.basicConfig(level=level, format="%(levelname)s %(name)s [worker]: %(message)s")
