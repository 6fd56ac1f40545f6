"""HTML report speed on a 300-exposure night: cold (every figure drawn) and warm (cached).

Run: ``python benchmarks/bench_report.py [--workdir DIR] [--source REPO] [--n 300]
[--workers N]`` (or ``make bench``).

1. A small reduced night is the source of the exposures' outputs: ``--source REPO`` (e.g.
   the demo's ``atmospec-demo/repo``), else one simulated and reduced once into
   ``WORKDIR/source`` (4 imaging, 2 dispersed exposures, with the night's figures; a few
   minutes, then reused).
2. A synthetic night of ``--n`` exposures is built in ``WORKDIR/night``: the source's
   science exposures replicated in turn under new OBSIDs, 30 s apart, their output files
   and the figures the night drew (each exposure's figure store,
   `atmospec.layout.exposure_figure_store`) hard-linked (no copy of the post-ISR images),
   a night index holding their raw records and task outcomes, and its summary table. The
   calibration registry is hard-linked too.
3. Where a rebuild with nothing drawn costs CPU: each figure group of one exposure of each
   kind drawn here (CPU time of this process), and the CPU the night's exposures need at
   those costs.
4. ``build_report`` is timed twice: cold (``report/`` deleted, the night's products there:
   the night's figures are linked, the night-level and calibration figures drawn) and warm
   (nothing changed: every figure cached).
5. With ``--draw-n N`` (default 12), a night of N exposures without the night's figures
   (``atmospec night --no-report`` on an older version, figures of an older
   ``FIGURE_VERSION``): every figure drawn, in a process pool of ``--workers``.

Printed: each figure against the issue's goal (a cold rebuild of 300 exposures in ≤ 60 s
on 2 cores, i.e. ≤ 0.40 s of CPU per exposure), the CPU time of each (this process and its
workers), the mix of imaging and dispersed exposures, and the load average.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402

from astropy.time import TimeDelta  # noqa: E402

from atmospec.layout import EXPOSURE_FILES, exposure_figure_store  # noqa: E402
from atmospec.night.index import NightIndex  # noqa: E402
from atmospec.night.summary import write_summary  # noqa: E402
from atmospec.plots.exposure import (  # noqa: E402
    ExposureFigureJob,
    ExposureOutputs,
    draw_exposure,
    exposure_groups,
)
from atmospec.report import ReportConfig, build_report  # noqa: E402

#: Output files of an exposure, by suffix (docs/night.md; those present are replicated).
SUFFIXES = tuple(EXPOSURE_FILES.values())


def source_night(workdir: Path) -> Path:
    """A small reduced night (simulated and reduced once, then reused)."""
    from atmospec.night.runner import NightRunConfig, run_night
    from atmospec.sim.night import NightConfig, simulate_night

    repo = workdir / "source" / "repo"
    if (repo / "night" / "summary.ecsv").is_file():
        return repo
    raw = workdir / "source" / "raw"
    if not any(raw.glob("AT_O_*.fits")):
        print(f"simulating a small night in {raw} ...", flush=True)
        simulate_night(raw, NightConfig(day_obs=20250301, n_bias=3, n_dark=2, n_flat=2,
                                        flat_filters=("SDSSr_65mm", "empty_1"), n_science=4,
                                        n_dispersed=2))
    print(f"reducing it into {repo} ...", flush=True)
    run_night(raw, repo, NightRunConfig(progress=False))
    return repo


def link_figure_store(src_dir: Path, src_id: str, dst_dir: Path, dst_id: str) -> None:
    """Replicate an exposure's figure store under a new OBSID: its PNGs hard-linked, its
    manifest with the new OBSID's input names (as the night would have written it)."""
    src = exposure_figure_store(src_dir, src_id)
    manifest = src / "figures.json"
    if not manifest.is_file():
        return
    dst = exposure_figure_store(dst_dir, dst_id)
    dst.mkdir(parents=True, exist_ok=True)
    for png in src.glob("*.png"):
        os.link(png, dst / png.name)
    (dst / "figures.json").write_text(manifest.read_text().replace(src_id, dst_id))


def synthetic_night(source: Path, out: Path, n: int, night_figures: bool = True
                    ) -> tuple[int, int]:
    """``n`` exposures replicated from the source's science exposures (with the figures the
    night drew, or without); (imaging, dispersed)."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(source / "calib", out / "calib", copy_function=os.link)
    src_index = NightIndex(source)
    tasks: dict[str, list] = {}
    for t in src_index.tasks():
        tasks.setdefault(t.obs_id, []).append(t)
    templates = [r for r in src_index.raws(image_type="science")
                 if tasks.get(r.obs_id) and all(t.status == "done" for t in tasks[r.obs_id])]
    if not templates:
        raise SystemExit(f"{source}: no science exposure done to replicate")
    index = NightIndex(out)
    start = templates[0].info.datetime_begin
    counts = [0, 0]
    for i in range(n):
        record = templates[i % len(templates)]
        info = record.info
        seq = 1000 + i
        obs_id = f"AT_O_{info.day_obs}_{seq:06d}"
        new = dataclasses.replace(info, obs_id=obs_id, seq_num=seq,
                                  datetime_begin=start + TimeDelta(30.0 * i, format="sec"))
        src_dir = source / "exposures" / str(info.day_obs)
        dst_dir = out / "exposures" / str(info.day_obs)
        dst_dir.mkdir(parents=True, exist_ok=True)
        outputs = {}
        for suffix in SUFFIXES:
            src = src_dir / f"{record.obs_id}_{suffix}"
            if src.is_file():
                dst = dst_dir / f"{obs_id}_{suffix}"
                os.link(src, dst)
                outputs[suffix] = str(dst)
        if night_figures:
            link_figure_store(src_dir, record.obs_id, dst_dir, obs_id)
        # The index's own writer, as the night runner uses it (the raw path is a name only:
        # the report never reads raws).
        index._add(out / "raw" / f"{obs_id}.fits", 0, 0.0, new)
        for t in tasks[record.obs_id]:
            index.record_task(obs_id, t.task, status=t.status, config_hash=t.config_hash,
                              started=datetime.now(UTC), duration_s=t.duration_s,
                              outputs={}, metrics=t.metrics)
        counts[info.is_dispersed] += 1
    write_summary(index, out, plots=False)
    return counts[0], counts[1]


#: The issue's goal: a cold rebuild of a 300-exposure night's report on 2 cores, s.
COLD_GOAL_S = 60.0
#: The night of that goal, exposures (a smaller ``--n`` is held to its share of it).
GOAL_EXPOSURES = 300


def cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (the report's pool), s."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def group_costs(source: Path, workdir: Path) -> dict[str, dict[str, float]]:
    """CPU seconds of each figure group of the source's first imaging and first dispersed
    exposure, drawn here (the second of two draws: imports and caches warm)."""
    costs: dict[str, dict[str, float]] = {}
    for record in NightIndex(source).raws(image_type="science"):
        kind = "dispersed" if record.info.is_dispersed else "imaging"
        if kind in costs:
            continue
        outputs = ExposureOutputs.find(source / "exposures" / str(record.info.day_obs),
                                       record.obs_id)
        costs[kind] = {}
        for group in exposure_groups(outputs):
            job = ExposureFigureJob(outputs, workdir / "sample" / record.obs_id, (group,))
            for _ in range(2):
                t0 = time.process_time()
                draw_exposure(job)
                costs[kind][group.name] = time.process_time() - t0
    return costs


def timed_report(night: Path, config: ReportConfig) -> tuple[float, float]:
    """Wall and CPU time (this process and its workers) of one ``build_report``, s."""
    t0, c0 = time.perf_counter(), cpu_seconds()
    build_report(night, config)
    return time.perf_counter() - t0, cpu_seconds() - c0


def verdict(value: float, goal: float) -> str:
    return "met" if value <= goal else f"MISSED ({value / goal:.1f}x)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="bench-work/report")
    parser.add_argument("--source", help="a reduced repository to replicate")
    parser.add_argument("--n", type=int, default=300, help="exposures of the synthetic night")
    parser.add_argument("--draw-n", type=int, default=12,
                        help="exposures of the night without the night's figures (0: skip)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    workdir = Path(args.workdir)
    source = Path(args.source) if args.source else source_night(workdir)
    night = workdir / "night"
    t0 = time.perf_counter()
    n_imaging, n_dispersed = synthetic_night(source, night, args.n)
    print(f"synthetic night: {args.n} exposures ({n_imaging} imaging, {n_dispersed} dispersed) "
          f"from {source}, with the night's figures, built in {time.perf_counter() - t0:.1f} s",
          flush=True)
    goal = COLD_GOAL_S * args.n / GOAL_EXPOSURES
    cpu_goal = 2 * COLD_GOAL_S / GOAL_EXPOSURES
    config = ReportConfig(workers=args.workers)
    load = os.getloadavg()[0]
    cold, cold_cpu = timed_report(night, config)
    print(f"cold report (report/ deleted; the night's figures linked, {args.workers} workers): "
          f"{cold:.1f} s; goal <= {goal:.0f} s ({COLD_GOAL_S:.0f} s for {GOAL_EXPOSURES} "
          f"exposures on 2 cores): {verdict(cold, goal)}; CPU {cold_cpu:.1f} s = "
          f"{cold_cpu / args.n:.3f} s per exposure (goal <= {cpu_goal:.2f}: "
          f"{verdict(cold_cpu / args.n, cpu_goal)}); load average {load:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end", flush=True)
    warm, warm_cpu = timed_report(night, config)
    print(f"warm report (figures cached): {warm:.1f} s (CPU {warm_cpu:.1f} s) = "
          f"{1000 * warm / args.n:.1f} ms per exposure; goal <= {goal:.0f} s: "
          f"{verdict(warm, goal)}", flush=True)
    if args.draw_n <= 0:
        return
    costs = group_costs(source, workdir)
    per_kind = {k: sum(v.values()) for k, v in costs.items()}
    for kind, groups in costs.items():
        split = ", ".join(f"{g} {s:.2f} s" for g, s in groups.items())
        print(f"figures of one {kind} exposure, drawn here: {per_kind[kind]:.2f} s CPU "
              f"({split})")
    need = n_imaging * per_kind.get("imaging", 0.0) + n_dispersed * per_kind.get("dispersed", 0.0)
    print(f"    a night of {args.n} without its figures at these costs: {need:.0f} s CPU = "
          f"{need / 2:.0f} s on 2 busy cores (goal {goal:.0f} s)", flush=True)
    bare = workdir / "night-bare"
    synthetic_night(source, bare, args.draw_n, night_figures=False)
    drawn, drawn_cpu = timed_report(bare, config)
    per = drawn_cpu / args.draw_n
    print(f"cold report of {args.draw_n} exposures without the night's figures (every figure "
          f"drawn, {args.workers} workers): {drawn:.1f} s, CPU {drawn_cpu:.1f} s = {per:.2f} s "
          f"per exposure (goal <= {cpu_goal:.2f}: {verdict(per, cpu_goal)}); "
          f"{GOAL_EXPOSURES} such exposures: ~{GOAL_EXPOSURES * per / 2:.0f} s on 2 cores",
          flush=True)


if __name__ == "__main__":
    main()
