"""Night throughput: exposures per minute with 1 and 2 local workers, and the stage split.

Run: ``python benchmarks/bench_night.py [--workdir DIR] [--science 12] [--dispersed 3]``
(or ``make bench``).

A simulated night (biases, darks, flats, imaging frames and dispersed exposures, plus
damaged files) is written once into ``WORKDIR/raw``. Then, in this process:

1. ``run_night`` with 1 worker into a fresh repository: the calibration stage (building bias,
   dark and flat from the night's frames) and the exposure stage are timed apart;
2. ``run_night`` with 2 workers into a second repository holding a copy of the first one's
   calibration products (the "picks certified products" path), so only the exposures run.

Printed: exposures per minute of each run (the 1-worker run is the baseline of the ratio),
the mean per-exposure time of every stage (read, each ISR step, write, characterization
stages, zeroth order), and the projection to a 300-exposure night on 2 cores.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

from atmospec.night.index import NightIndex  # noqa: E402
from atmospec.night.runner import NightRunConfig, run_night  # noqa: E402
from atmospec.sim.night import NightConfig, simulate_night  # noqa: E402


def prepare(workdir: Path, n_science: int, n_dispersed: int) -> Path:
    raw = workdir / "raw"
    if raw.is_dir() and any(raw.glob("AT_O_*.fits")):
        return raw
    simulate_night(raw, NightConfig(
        day_obs=20250301, n_bias=3, n_dark=3, n_flat=3,
        flat_filters=("SDSSr_65mm", "empty_1"), n_science=n_science, n_dispersed=n_dispersed,
        n_corrupt=3))
    return raw


def stage_split(repo: Path) -> dict[str, list[float]]:
    """Per-stage times of every exposure, from the night index."""
    split: dict[str, list[float]] = defaultdict(list)
    for task in NightIndex(repo).tasks():
        for stage, seconds in task.metrics.get("timings_s", {}).items():
            split[stage].append(float(seconds))
    return split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/atmospec-bench-night")
    parser.add_argument("--science", type=int, default=12, help="imaging frames")
    parser.add_argument("--dispersed", type=int, default=3, help="dispersed exposures")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    raw = prepare(workdir, args.science, args.dispersed)
    rates = {}
    results = {}
    for workers in (1, 2):
        repo = workdir / f"repo_{workers}"
        shutil.rmtree(repo, ignore_errors=True)
        if workers > 1:
            shutil.copytree(workdir / "repo_1" / "calib", repo / "calib")
        result = run_night(raw, repo, NightRunConfig(workers=workers, plots=False,
                                                     progress=False))
        results[workers] = result
        rates[workers] = result.n_run / (result.exposures_s / 60.0)
        print(f"{workers} worker(s): {result.n_run} exposures in {result.exposures_s:.1f} s "
              f"= {rates[workers]:.2f} exposures/min; calibration stage "
              f"{result.calibrations_s:.1f} s ({len(result.calibrations)} products built); "
              f"{result.n_failed} failed")
    print(f"speed-up 2 workers / 1 worker: {rates[2] / rates[1]:.2f}x")

    split = stage_split(workdir / "repo_1")
    # A stage's ``total`` is the sum of its own sub-stages: shown apart, not added twice.
    totals = {k: split.pop(k) for k in [k for k in split if k.endswith(".total")]}
    total = sum(sum(v) for v in split.values())
    n_exp = results[1].n_run
    print(f"\nper-exposure stage split (1 worker, mean over {n_exp} exposures):")
    for stage, values in sorted(split.items(), key=lambda kv: -sum(kv[1])):
        share = sum(values) / total
        print(f"  {stage:<34} {statistics.mean(values):6.2f} s  x{len(values):<3} "
              f"{100 * share:5.1f} %")
    for stage, values in totals.items():
        print(f"  ({stage}: {statistics.mean(values):.2f} s per exposure)")
    per_exp_2 = results[2].exposures_s / max(results[2].n_run, 1)
    projected = 300 * per_exp_2 / 60.0
    print(f"\nprojected 300-exposure night on 2 workers: {projected:.1f} min "
          f"(goal 15 min); calibration stage adds {results[1].calibrations_s / 60:.1f} min "
          f"for {len(results[1].calibrations)} products")


if __name__ == "__main__":
    main()
