"""``atmospec eo RUNDIR --repo REPO``: the EO figures of every detector of a BOT-style
acquisition, with their specifications and verdicts, written per detector and run-wide.

The run's raws are found as the night finds them (`atmospec.night.index.raw_files`) and
sorted by detector and role by eotest's folder patterns
(`atmospec.calib.eo_run.classify_bot_run`). Each detector is one job
(`atmospec.calib.eo_run.detector_figures`, then
`atmospec.calib.eo_specs.verdict_table`), on the project's executor (`atmospec.parallel`);
a detector that fails is reported with its reason and never stops the others. On a Dask
cluster each detector is a task; its workers read the run and write the repository, so
both must be on a file system they share with this process. A detector
whose two tables exist is skipped (``redo`` measures it again). Outputs (`atmospec.layout`):

``REPO/eo/<DET>/eo_figures.ecsv``
    the long table: one row per (amp, figure, specification) with value, unit, limits and
    status (`atmospec.calib.eo_specs.verdict_table`);
``REPO/eo/<DET>/eo_figures.json``
    the same rows, the detector's summary (amps, amps passing every specification, the
    failures, the high-flux superflats with tearing), its frame counts and phase timings,
    and its further tables (``tables``: bias stability, bias shifts, amp correlations, CTI
    against signal, covariances, tearing);
``REPO/eo/<DET>/eo_<table>.ecsv``
    each further table (`atmospec.calib.eo_run.DetectorEo.tables`);
``REPO/eo/eo_figures.ecsv``
    every detector's rows, stacked (rewritten at each run from the detectors' tables);
``REPO/eo/plots/<figure>_mosaic.png``, ``<figure>_hist.png``
    of every figure measured on some amp of that table, its focal-plane mosaic and its
    histogram over the amps (`atmospec.plots.eo_mosaic`); a figure that cannot be drawn
    is a warning, never a failed run.
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from astropy.table import Table, vstack

from atmospec.calib.eo_run import (
    BOT_PATTERNS,
    EoFrames,
    EoRunConfig,
    classify_bot_run,
    detector_figures,
)
from atmospec.calib.eo_specs import DETECTOR_AMP, verdict_table
from atmospec.calib.inputs import raw_info
from atmospec.camera.raw import camera_for
from atmospec.errors import BadInputError, short_error
from atmospec.io import to_jsonable, write_text_atomic
from atmospec.layout import EO_FIGURES_STEM, eo_dir, eo_plot_dir, eo_run_table, eo_table
from atmospec.night.index import raw_files
from atmospec.parallel import open_executor

log = logging.getLogger(__name__)

__all__ = ["DetectorOutcome", "detector_summary", "run_eo", "summary_line",
           "write_eo_plots"]

#: Failures named on a detector's line before the rest are counted.
_MAX_NAMED = 4


@dataclass(frozen=True)
class DetectorOutcome:
    """What became of one detector."""

    detector: str
    """Detector name."""
    status: str
    """``done``, ``skipped`` (its tables existed) or ``failed``."""
    line: str
    """One line for the terminal (`summary_line`, or the reason of the failure)."""
    reason: str = ""
    """Why it failed (empty otherwise)."""
    seconds: float = 0.0
    """Wall time of its reduction, s (0 when skipped)."""


def _outputs(repo: Path, detector: str) -> tuple[Path, Path]:
    folder = eo_dir(repo, detector)
    return folder / f"{EO_FIGURES_STEM}.ecsv", folder / f"{EO_FIGURES_STEM}.json"


def _fmt(value: float) -> str:
    return "nan" if not math.isfinite(value) else f"{value:.3g}"


def detector_summary(verdicts: Table) -> dict[str, Any]:
    """Amps, amps passing every specification, and the failures of one detector's table.

    Parameters
    ----------
    verdicts : astropy.table.Table
        `atmospec.calib.eo_specs.verdict_table` of one detector.

    Returns
    -------
    dict
        ``n_amps``, ``n_pass_all`` (amps with no ``fail`` and no ``not measured``
        specification), ``failures`` (``amp, spec, figure, value`` of every failing row, in
        table order; a detector-level row's amp is `DETECTOR_AMP`) and ``not_measured``
        (the same for the specified figures left NaN).
    """
    amps = list(dict.fromkeys(str(a) for a in verdicts["amp"] if str(a) != DETECTOR_AMP))
    bad: set[str] = set()
    failures, missing = [], []
    for row in verdicts:
        entry = {"amp": str(row["amp"]), "spec": str(row["spec"]),
                 "figure": str(row["figure"]), "value": float(row["value"])}
        if row["status"] == "fail":
            failures.append(entry)
            bad.add(entry["amp"])
        elif row["status"] == "not measured":
            missing.append(entry)
            bad.add(entry["amp"])
    # A detector-level row (CCD-012 over the CCD) judges no amp.
    return {"n_amps": len(amps), "n_pass_all": len([a for a in amps if a not in bad]),
            "failures": failures, "not_measured": missing}


def summary_line(detector: str, vendor: str, summary: dict[str, Any]) -> str:
    """``R22_S11 (e2v): 16 amps, 15 pass all, C07 fails CCD-010 (cti_serial_high 7.1e-06)``.

    Failures are grouped by amp (one figure per specification); a specification failed by
    every amp is named once (``all amps fail PTC-A00``); the whole detector's failures
    come first (``CCD fails CCD-012 (defect_fraction 0.55)``); at most four amps are named,
    the others counted.
    """
    n_amps = summary["n_amps"]
    text = f"{detector} ({vendor}): {n_amps} amps, {summary['n_pass_all']} pass all"
    amps_of: dict[str, set[str]] = {}
    for f in summary["failures"]:
        if f["amp"] != DETECTOR_AMP:
            amps_of.setdefault(f["spec"], set()).add(f["amp"])
    everywhere = [s for s, amps in amps_of.items() if n_amps > 1 and len(amps) == n_amps]
    # The whole detector's verdicts first (CCD-012 over the CCD), then the amps'.
    by_amp: dict[str, dict[str, dict[str, Any]]] = {}
    for f in sorted(summary["failures"], key=lambda f: f["amp"] != DETECTOR_AMP):
        if f["amp"] == DETECTOR_AMP or f["spec"] not in everywhere:
            by_amp.setdefault(f["amp"], {}).setdefault(f["spec"], f)
    items = [f"all amps fail {spec}" for spec in everywhere]
    for amp, specs in by_amp.items():
        what = ", ".join(f"{spec} ({f['figure']} {_fmt(f['value'])})"
                         for spec, f in specs.items())
        items.append(f"{amp} fails {what}")
    if items:
        shown = items[:_MAX_NAMED]
        more = len(items) - len(shown)
        text += ", " + ", ".join(shown) + (f", and {more} more amps" if more else "")
    if summary["not_measured"]:
        figures = sorted({m["figure"] for m in summary["not_measured"]})
        text += f"; not measured: {', '.join(figures)}"
    if summary.get("tearing_frames"):
        text += f"; tearing in {summary['tearing_frames']} high-flux superflat(s)"
    xtalk = summary.get("crosstalk_residual")
    if xtalk and xtalk.get("passed") is not None:
        text += (f"; crosstalk residual {'passes' if xtalk['passed'] else 'FAILS'} "
                 f"({xtalk['n_significant']} of {xtalk['n_pairs']} pairs beyond "
                 f"{xtalk['threshold_sigma']:g} sigma)")
    return text


def _json_safe(value: Any) -> Any:
    """NaN and infinities as null (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _rows(table: Table) -> list[dict[str, Any]]:
    return [{name: to_jsonable(row[name]) for name in table.colnames} for row in table]


def _ecsv(table: Table) -> str:
    buf = io.StringIO()
    table.write(buf, format="ascii.ecsv")
    return buf.getvalue()


def _write(repo: Path, detector: str, figures: Table, verdicts: Table,
           summary: dict[str, Any], tables: Mapping[str, Table]) -> None:
    ecsv, js = _outputs(repo, detector)
    meta = {k: to_jsonable(v) for k, v in figures.meta.items()}
    doc = {"detector": detector, "vendor": meta.get("VENDOR", ""), "summary": summary,
           "frames": {k: v for k, v in meta.items() if k.startswith("N_")},
           "timings_s": meta.get("TIMINGS_S", {}), "cpu_s": meta.get("CPU_S", {}),
           "figures": _rows(verdicts),
           "tables": {name: _rows(t) for name, t in tables.items()}}
    for name, t in tables.items():
        write_text_atomic(_ecsv(t), eo_table(repo, detector, name))
    # The JSON, then the figures: the ECSV's presence marks the detector done.
    write_text_atomic(json.dumps(_json_safe(doc), indent=1) + "\n", js)
    write_text_atomic(_ecsv(verdicts), ecsv)


def _reduce(frames: EoFrames, repo: Path, config: EoRunConfig) -> DetectorOutcome:
    """One detector's job (in a worker): measure, judge, write; never raises."""
    t0 = time.perf_counter()
    detector = frames.detector
    try:
        first = next(iter(frames.bias or frames.flat_pairs or frames.dark or frames.sflat_high
                          or frames.sflat_low))
        camera = camera_for(raw_info(first), first)
        folder = eo_dir(repo, detector)
        folder.mkdir(parents=True, exist_ok=True)
        measured = detector_figures(frames, camera, folder, config)
        figures = measured.figures
        verdicts = verdict_table(figures, detector, camera.vendor,
                                 not_measured=figures.meta.get("NOT_MEASURED", ()),
                                 detector_values=figures.meta.get("DETECTOR_FIGURES"))
        summary = detector_summary(verdicts)
        summary["tearing_frames"] = int(figures.meta.get("TEARING_FRAMES", 0))
        if "CROSSTALK_RESIDUAL" in figures.meta:
            summary["crosstalk_residual"] = figures.meta["CROSSTALK_RESIDUAL"]
        _write(repo, detector, figures, verdicts, summary, measured.tables)
    except Exception as exc:  # one bad detector never stops the others
        reason = str(exc) if isinstance(exc, BadInputError) else \
            f"{type(exc).__name__}: {short_error(exc)}"
        log.debug("%s failed", detector, exc_info=True)
        return DetectorOutcome(detector, "failed", f"{detector}: FAILED: {reason}", reason,
                               time.perf_counter() - t0)
    return DetectorOutcome(detector, "done", summary_line(detector, camera.vendor, summary),
                           seconds=time.perf_counter() - t0)


def _skipped(repo: Path, detector: str) -> DetectorOutcome:
    ecsv, js = _outputs(repo, detector)
    verdicts = Table.read(ecsv, format="ascii.ecsv")
    vendor = str(verdicts["vendor"][0]) if len(verdicts) else ""
    summary = detector_summary(verdicts)
    try:
        summary["tearing_frames"] = int(json.loads(js.read_text())["summary"]
                                        .get("tearing_frames", 0))
    except (OSError, ValueError, KeyError, TypeError):
        log.debug("%s: no tearing count in %s", detector, js)
    line = summary_line(detector, vendor, summary)
    return DetectorOutcome(detector, "skipped", f"{line} (done before)")


def run_eo(run_dir: str | Path, repo: str | Path, detectors: Sequence[str] | None = None, *,
           workers: int = 1, executor: Literal["local", "dask"] = "local",
           scheduler: str | None = None, redo: bool = False,
           config: EoRunConfig | None = None, plots: bool = True) -> list[DetectorOutcome]:
    """Measure and judge the EO figures of the detectors of a BOT acquisition.

    Parameters
    ----------
    run_dir : path
        The acquisition (one folder per exposure, `atmospec.calib.eo_run.BOT_PATTERNS`).
    repo : path
        Output repository (``REPO/eo/…``).
    detectors : sequence of str, optional
        Only these detectors (default: every detector with frames in the run).
    workers : int
        Detectors measured at once (local processes, `atmospec.parallel.open_executor`);
        1 measures them in this process. Ignored with Dask.
    executor : {"local", "dask"}
        Local processes, or the Dask cluster at ``scheduler`` (every detector is a task
        there, whatever their number).
    scheduler : str, optional
        Address of the Dask scheduler (``tcp://host:8786``); required with ``dask``.
    redo : bool
        Measure detectors whose tables exist again.
    config : EoRunConfig, optional
        Measurement settings.
    plots : bool
        Draw the mosaic and the histogram of every measured figure of the run-wide table
        (`write_eo_plots`).

    Returns
    -------
    list of DetectorOutcome
        In detector order.

    Raises
    ------
    BadInputError
        ``run_dir`` is not a folder or holds no frame of any EO role; a requested detector
        has no frames in it; a Dask run without a scheduler, or one that cannot be reached.
    """
    run_dir, repo = Path(run_dir), Path(repo)
    config = config or EoRunConfig()
    if executor == "dask" and not scheduler:
        raise BadInputError("--scheduler", "a Dask run needs the scheduler address")
    if not run_dir.is_dir():
        raise BadInputError(run_dir, "no such folder (an EO acquisition: one folder per "
                                     "exposure)")
    skip = (repo,) if repo.resolve().is_relative_to(run_dir.resolve()) else ()
    found = classify_bot_run(raw_files(run_dir, skip))
    if not found:
        patterns = ", ".join(dict.fromkeys(BOT_PATTERNS.values()))
        raise BadInputError(run_dir, f"no raw frame in folders of an EO acquisition "
                                     f"({patterns})")
    if detectors:
        missing = [d for d in detectors if d not in found]
        if missing:
            raise BadInputError(run_dir, f"no frames of detector {', '.join(missing)} "
                                         f"(the run has {', '.join(found)})")
        selected = [found[d] for d in dict.fromkeys(detectors)]
    else:
        selected = list(found.values())
    outcomes: dict[str, DetectorOutcome] = {}
    todo: list[EoFrames] = []
    for frames in selected:
        ecsv, js = _outputs(repo, frames.detector)
        if not redo and ecsv.is_file() and js.is_file():
            outcomes[frames.detector] = _skipped(repo, frames.detector)
        else:
            todo.append(frames)
    log.info("EO run %s: %d detectors, %d to measure", run_dir, len(selected), len(todo))
    if todo and (executor == "dask" or (workers > 1 and len(todo) > 1)):
        with open_executor(min(workers, len(todo)), executor, scheduler) as pool:
            futures: list[tuple[str, Future]] = [
                (f.detector, pool.submit(_reduce, f, repo, config)) for f in todo]
            for detector, future in futures:
                try:
                    outcomes[detector] = future.result()
                except Exception as exc:  # a worker lost (killed, out of memory)
                    reason = f"{type(exc).__name__}: {short_error(exc)}"
                    outcomes[detector] = DetectorOutcome(
                        detector, "failed", f"{detector}: FAILED: {reason}", reason)
    else:
        for frames in todo:
            outcomes[frames.detector] = _reduce(frames, repo, config)
    ordered = [outcomes[f.detector] for f in selected]
    table = _write_run_table(repo, [o.detector for o in ordered if o.status != "failed"])
    if plots and table is not None:
        write_eo_plots(repo)
    return ordered


def write_eo_plots(repo: str | Path) -> dict[str, tuple[Path, Path]]:
    """Draw ``REPO/eo/plots/<figure>_mosaic.png`` and ``_hist.png`` from the run table.

    Figures measured on no amp are not drawn, and their earlier plots are removed. A
    failure to draw is logged as a warning (the tables are the result).

    Parameters
    ----------
    repo : path
        Repository holding ``REPO/eo/eo_figures.ecsv``.

    Returns
    -------
    dict
        Figure → (mosaic, histogram); empty without a table or when drawing failed.
    """
    # matplotlib only when drawing: the detectors' worker processes import this module.
    from atmospec.plots.eo_mosaic import plot_eo_figures

    repo = Path(repo)
    source = eo_run_table(repo)
    folder = eo_plot_dir(repo)
    if not source.is_file():
        return {}
    try:
        drawn = plot_eo_figures(Table.read(source, format="ascii.ecsv"), folder)
    except Exception as exc:  # a figure is never worth a failed run
        log.warning("EO plots not drawn: %s: %s", type(exc).__name__, short_error(exc))
        return {}
    keep = {p.name for pair in drawn.values() for p in pair}
    for old in [*folder.glob("*_mosaic.png"), *folder.glob("*_hist.png")]:
        if old.name not in keep:
            old.unlink()
    log.info("EO plots of %d figures in %s", len(drawn), folder)
    return drawn


def _write_run_table(repo: Path, detectors: Sequence[str]) -> Path | None:
    """Stack every measured detector's table (those of this run and of earlier ones)."""
    tables = []
    folder = eo_dir(repo)
    if folder.is_dir():
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            ecsv = sub / f"{EO_FIGURES_STEM}.ecsv"
            if ecsv.is_file():
                tables.append(Table.read(ecsv, format="ascii.ecsv"))
    if not tables:
        return None
    table = vstack(tables, metadata_conflicts="silent")
    buf = io.StringIO()
    table.write(buf, format="ascii.ecsv")
    out = write_text_atomic(buf.getvalue(), eo_run_table(repo))
    log.info("wrote %s (%d detectors measured in this run)", out, len(detectors))
    return out
