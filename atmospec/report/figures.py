"""The exposures' figures of the report: which are missing or stale, linking those the
night drew (each exposure's figure store, `atmospec.layout.exposure_figure_store`), drawing
the others (in this process or a process pool) into that store, and each exposure's figure
manifest (one exposure's figures: `atmospec.plots.exposure`)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astropy.table import Table

from atmospec import layout
from atmospec.errors import short_error
from atmospec.parallel import open_executor
from atmospec.plots.exposure import (
    ExposureFigureJob,
    ExposureOutputs,
    draw_exposure,
    exposure_groups,
    is_fresh,
    publish_figures,
    read_manifest,
    write_manifest,
)
from atmospec.report.config import ReportConfig
from atmospec.report.read import calibs_used

__all__ = ["ExposureFigures", "draw_all", "refresh_exposure_figures"]


@dataclass(frozen=True)
class ExposureFigures:
    """The exposures' outputs, figures and calibrations used, by OBSID."""

    outputs: dict[str, ExposureOutputs]
    """Output files of each exposure."""
    manifests: dict[str, dict[str, Any]]
    """Figure manifest of each exposure (its figure groups, as drawn or cached)."""
    used: dict[str, dict[str, str]]
    """Calibration products each exposure's ISR used (kind → file name)."""
    n_drawn: int
    """Exposures whose figures were drawn by this run."""
    draw_s: float
    """Wall time spent drawing them, s."""
    n_linked: int = 0
    """Exposures whose figures (some or all) were linked from their figure store."""


def refresh_exposure_figures(repo: Path, out: Path, summary: Table,
                             config: ReportConfig) -> ExposureFigures:
    """Bring the figures of every exposure of the summary up to date in the report folder
    and update their manifests (with the calibrations used, cached there).

    A missing or stale group is linked from the exposure's figure store when the store
    holds it fresh (drawn by the night's workers, or by an earlier report); else it is drawn
    into the store (into the report folder when the repository cannot be written), then
    linked. ``--force`` draws every group again.

    Parameters
    ----------
    repo : pathlib.Path
        The repository.
    out : pathlib.Path
        Report directory.
    summary : astropy.table.Table
        Night summary (one row per exposure).
    config : ReportConfig
        Figures on or off, forced redraw, workers, thumbnail width.

    Returns
    -------
    ExposureFigures
    """
    outputs: dict[str, ExposureOutputs] = {}
    manifests: dict[str, dict[str, Any]] = {}
    jobs: list[ExposureFigureJob] = []
    stores: dict[str, Path] = {}
    n_linked = 0
    for row in summary:
        obs_id = str(row["obs_id"])
        exposure_dir = layout.exposure_dir(repo, int(row["day_obs"]))
        outputs[obs_id] = ExposureOutputs.find(exposure_dir, obs_id)
        directory = layout.exposure_figure_dir(out, obs_id)
        # --force forgets the cache records (so every group is drawn again); without
        # figures the records stay, so the pages keep showing the PNGs they name.
        forget = config.force and config.figures
        manifests[obs_id] = {} if forget else read_manifest(directory)
        if not config.figures:
            continue
        stale = [g for g in exposure_groups(outputs[obs_id])
                 if not is_fresh(manifests[obs_id].get(g.name), g, directory)]
        if not stale:
            continue
        store = layout.exposure_figure_store(exposure_dir, obs_id)
        if not forget:
            # What the night (or an earlier report) drew and is still good: linked, not
            # drawn again (a cold report is mostly this).
            linked = publish_figures(store, directory, stale)
            if linked:
                n_linked += 1
                manifests[obs_id].update(linked)
                stale = [g for g in stale if g.name not in linked]
        if stale:
            target = store if _writable(store) else directory
            stores[obs_id] = target
            jobs.append(ExposureFigureJob(outputs[obs_id], target, tuple(stale),
                                          config.thumbnail_width))
    t_draw = time.perf_counter()
    drawn = draw_all(jobs, config.workers or os.cpu_count() or 1, config.pool_threshold)
    t_draw = time.perf_counter() - t_draw
    for obs_id, entries in drawn.items():
        directory = layout.exposure_figure_dir(out, obs_id)
        target = stores[obs_id]
        if target != directory:
            # Drawn into the store: its manifest records them, then they are linked here
            # (a group that failed is recorded here only, with its reason).
            stored = read_manifest(target)
            stored.update({k: v for k, v in entries.items() if not v.get("error")})
            write_manifest(target, stored)
            groups = [g for g in exposure_groups(outputs[obs_id]) if g.name in entries]
            entries = {**entries, **publish_figures(target, directory, groups)}
        drawn[obs_id] = entries
    used: dict[str, dict[str, str]] = {}
    for obs_id, manifest in manifests.items():
        before = json.dumps(manifest, sort_keys=True)
        manifest.update(drawn.get(obs_id, {}))
        used[obs_id] = calibs_used(outputs[obs_id], manifest)
        if json.dumps(manifest, sort_keys=True) != before:
            write_manifest(layout.exposure_figure_dir(out, obs_id), manifest)
    return ExposureFigures(outputs, manifests, used, len(jobs), t_draw, n_linked)


def _writable(store: Path) -> bool:
    """Whether figures can be drawn into an exposure's figure store (a read-only
    repository: no, they are drawn into the report folder)."""
    try:
        store.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(store, os.W_OK)


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
