"""Drawing the missing figures of many exposures at once, in this process or a process
pool (one exposure's figures: `atmospec.plots.exposure`)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import as_completed
from typing import Any

from atmospec.errors import short_error
from atmospec.parallel import open_executor
from atmospec.plots.exposure import ExposureFigureJob, draw_exposure

__all__ = ["draw_all"]


def draw_all(jobs: Sequence[ExposureFigureJob], workers: int, pool_threshold: int
             ) -> dict[str, dict[str, dict[str, Any]]]:
    """Draw every job, in a process pool when there are enough of them.

    Parameters
    ----------
    jobs : sequence of ExposureFigureJob
        Exposures with figures to draw.
    workers : int
        Worker processes (1: draw here).
    pool_threshold : int
        Fewest jobs worth starting a pool for (each spawned worker imports matplotlib and
        astropy, about a second).

    Returns
    -------
    dict
        Manifest entries by OBSID, then group.
    """
    results: dict[str, dict[str, dict[str, Any]]] = {}
    if workers <= 1 or len(jobs) < pool_threshold:
        for job in jobs:
            results[job.outputs.obs_id] = draw_exposure(job)
        return results
    # The costliest first (spectra), so no worker is left with a long job at the end.
    ordered = sorted(jobs, key=lambda j: -sum(g.name in ("spectrum", "atmosphere")
                                              for g in j.groups))
    with open_executor(min(workers, len(jobs))) as pool:
        futures = {pool.submit(draw_exposure, job): job for job in ordered}
        for future in as_completed(futures):
            job = futures[future]
            try:
                results[job.outputs.obs_id] = future.result()
            except Exception as exc:  # a worker died: these figures are missing, say why
                reason = f"worker lost: {type(exc).__name__}: {short_error(exc)}"
                results[job.outputs.obs_id] = {
                    g.name: {"inputs": {}, "files": [], "error": reason} for g in job.groups}
    return results
