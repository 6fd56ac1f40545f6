"""Overhead of the Gen3 path (Butler, pipetask, BPS) over the native night runner.

Run: ``python benchmarks/bench_gen3.py [--workdir DIR] [--science 4] [--dispersed 2] [--bps]
[--imports-only]`` (needs the ``gen3`` extra; without it the benchmark says so and exits 0).

Steps, on one simulated night:

0. the import cost a quantum process pays before its task starts: the wall time of a fresh
   interpreter importing the middleware and one task class (median of 3), per task;
1. the native runner with 2 workers (calibrations built from the night, then the
   exposures): the wall time of its exposure stage is the reference;
2. the same exposures on the Gen3 path: ``atmospec butler init`` + ingest, the native
   run's products certified, ``pipetask qgraph`` (graph build) then ``pipetask run -j 2``
   of ``pipelines/gen3/night.yaml`` on the saved graph;
3. with ``--bps``, ``bps submit`` of the same pipeline on Parsl's local site (2 cores).

Printed: each wall time, the time spent inside the tasks (from pipetask's "took" lines),
and the per-quantum overhead, i.e. the run's wall time on 2 processes less the in-task
time, divided by the number of quanta.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = ROOT / "pipelines" / "gen3"
BIN = Path(sys.executable).parent
DAY_OBS = 20250301
_TOOK = re.compile(r"Execution of task '(\w+)' on quantum .* took ([0-9.]+) seconds")


def _timed(cmd: list[str], log: Path, cwd: Path) -> float:
    t0 = time.perf_counter()
    with log.open("w") as out:
        status = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                check=False).returncode
    if status:
        sys.exit(f"{cmd[0]} failed ({status}); see {log}")
    return time.perf_counter() - t0


#: The task classes of the pipelines, as pipetask imports them in a quantum process.
TASKS = ("CpBiasTask", "CpPtcTask", "IsrTask", "CharacterizeTask", "ZerothOrderTask",
         "SpectractorTask", "AtmosphereFitTask")


def import_costs(repeat: int = 3) -> dict[str, float]:
    """Wall time of a fresh interpreter importing the middleware and one task class.

    This is what ``pipetask run -j N`` pays per quantum before the task runs (it spawns a new
    process for each), beyond the executor's own start-up.

    Parameters
    ----------
    repeat : int
        Runs per task; the median is kept.

    Returns
    -------
    dict
        Task class name (and ``"(middleware only)"``) to seconds.
    """
    out: dict[str, float] = {}
    # The first entry is the floor: what any quantum imports whatever its task.
    codes = {"(middleware only)": "import lsst.pipe.base, lsst.daf.butler"}
    codes |= {name: f"import lsst.pipe.base; from atmospec.gen3 import tasks; tasks.{name}"
              for name in TASKS}
    for name, code in codes.items():
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/atmospec-bench-gen3")
    parser.add_argument("--science", type=int, default=4, help="imaging frames")
    parser.add_argument("--dispersed", type=int, default=2, help="dispersed exposures")
    parser.add_argument("--bps", action="store_true", help="also time bps submit (Parsl)")
    parser.add_argument("--imports-only", action="store_true",
                        help="only the import cost of each task (step 0)")
    args = parser.parse_args()

    from atmospec.gen3 import gen3_available

    if not gen3_available():
        print("bench_gen3: skipped, needs the [gen3] extra (pip install 'atmospec[gen3]')")
        return
    for name, seconds in import_costs().items():
        print(f"fresh interpreter importing {name}: {seconds:.2f} s")
    if args.imports_only:
        return
    from atmospec.gen3.repo import certify_files, ingest_raws, init_repo
    from atmospec.night.runner import NightRunConfig, run_night
    from atmospec.sim.night import NightConfig, simulate_night

    work = Path(args.workdir)
    raw = work / "raw"
    if not any(raw.glob("AT_O_*.fits")):
        simulate_night(raw, NightConfig(
            day_obs=DAY_OBS, n_bias=3, n_dark=3, n_flat=3,
            flat_filters=("SDSSr_65mm", "empty_1"), n_science=args.science,
            n_dispersed=args.dispersed, dispersed_every=2, n_corrupt=0))
    for old in ("native", "butler", "submit"):
        shutil.rmtree(work / old, ignore_errors=True)

    native = run_night(raw, work / "native",
                       NightRunConfig(workers=2, plots=False, figures=False, progress=False))
    n_exp = native.n_exposures
    print(f"native runner, 2 workers: {n_exp} exposures in {native.exposures_s:.1f} s "
          f"(calibrations {native.calibrations_s:.1f} s, total {native.wall_s:.1f} s)")

    repo = work / "butler"
    t0 = time.perf_counter()
    init_repo(repo)
    t_init = time.perf_counter() - t0
    t0 = time.perf_counter()
    ingested = ingest_raws(repo, [raw], transfer="direct")
    t_ingest = time.perf_counter() - t0
    calib = work / "native" / "calib" / "night" / str(DAY_OBS)
    t0 = time.perf_counter()
    # The night's masters (nominal gains) may fail verification: certified as it uses them.
    for kind in ("bias", "dark"):
        certify_files(repo, kind, [calib / f"{kind}.fits"], force=True)
    certify_files(repo, "flat", sorted(calib.glob("flat_*.fits")), force=True)
    t_certify = time.perf_counter() - t0
    print(f"butler init {t_init:.1f} s, ingest of {len(ingested.ingested)} raws "
          f"{t_ingest:.1f} s, certify 4 products {t_certify:.1f} s")

    query = f"instrument='LATISS' AND exposure.observation_type='science' AND day_obs={DAY_OBS}"
    common = ["-b", str(repo), "-i", "LATISS/raw/all,LATISS/calib", "-o", "u/bench/night"]
    graph = work / "night.qg"
    t_graph = _timed([str(BIN / "pipetask"), "qgraph", *common, "-p",
                      str(PIPELINES / "night.yaml"), "-d", query, "--save-qgraph", str(graph)],
                     work / "qgraph.log", work)
    run_log = work / "run.log"
    t_run = _timed([str(BIN / "pipetask"), "run", *common, "-g", str(graph), "-j", "2",
                    "--register-dataset-types"], run_log, work)
    took = [float(m.group(2)) for m in _TOOK.finditer(run_log.read_text())]
    n_quanta = len(took)
    per_quantum = (2 * t_run - sum(took)) / max(n_quanta, 1)
    print(f"pipetask qgraph (graph build): {t_graph:.1f} s for {n_quanta} quanta")
    print(f"pipetask run -j 2: {t_run:.1f} s wall, {sum(took):.1f} s inside the tasks; "
          f"overhead {per_quantum:.2f} s per quantum (2 processes)")
    gen3_total = t_graph + t_run
    print(f"Gen3 exposure stage {gen3_total:.1f} s against native {native.exposures_s:.1f} s: "
          f"x{gen3_total / max(native.exposures_s, 1e-9):.2f}")

    if args.bps:
        from atmospec.cli.gen3 import bps_environment

        bps_log = work / "bps.log"
        t0 = time.perf_counter()
        with bps_log.open("w") as out:
            status = subprocess.run(
                [str(BIN / "bps"), "submit", str(PIPELINES / "bps_parsl_local.yaml"),
                 "-b", str(repo), "-p", str(PIPELINES / "night.yaml"),
                 "-i", "LATISS/raw/all,LATISS/calib", "-o", "u/bench/bps", "-d", query],
                cwd=work, env=bps_environment(cwd=work), stdout=out, stderr=subprocess.STDOUT,
                check=False).returncode
        t_bps = time.perf_counter() - t0
        if status:
            sys.exit(f"bps submit failed ({status}); see {bps_log}")
        print(f"bps submit (Parsl local, 2 cores): {t_bps:.1f} s wall "
              f"({(t_bps - sum(took) / 2) / max(n_quanta, 1) * 2:.2f} s per quantum beyond "
              f"the in-task time)")


if __name__ == "__main__":
    main()
