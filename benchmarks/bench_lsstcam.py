"""LSST Camera raft: ISR of one 9-CCD exposure, master biases of 10 raft exposures, raft PTC.

Run: ``python benchmarks/bench_lsstcam.py [--workdir DIR] [--ptc]``.

A BOT acquisition of LSSTCam's raft R22 (9 e2v CCD250, 144 amplifiers) is simulated once
into ``WORKDIR`` (`atmospec.sim.bot`, one run folder per detector, built on 2 processes):
10 biases and one flat pair at 20 ke⁻ per detector, tile-compressed as the camera writes
them. Then, in this process:

1. ISR of the raft's first flat exposure (9 files: read → overscan → saturation → gain →
   assemble → variance → write), one detector after the other in this process (the
   baseline), then on 2 local worker processes, one job per detector; then once more, one
   after the other, under tracemalloc (numpy reports its buffers to it) for each job's own
   peak memory (untimed: tracemalloc slows the run), with the workers' peak RSS.
2. The 9 master biases (one per detector, 10 raw biases each, `build_master_file`) on 1
   and on 2 workers.
3. With ``--ptc`` (about 10 minutes more): 6 flat pairs from 1 to 90 ke⁻ per detector and
   the PTC of each detector from its files: the largest relative gain error per detector
   against the simulator's truth (the issue asks ≤ 1 %).

Printed: wall times, the speed-up of 2 workers against 1, and the per-detector peak memory.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from atmospec.calib.files import build_master_file  # noqa: E402
from atmospec.calib.isr_inputs import CalibrationFiles, load_calibrations  # noqa: E402
from atmospec.calib.masters import MasterConfig  # noqa: E402
from atmospec.calib.ptc import PtcConfig, build_ptc  # noqa: E402
from atmospec.camera.description import load_camera  # noqa: E402
from atmospec.camera.raw import read_raw  # noqa: E402
from atmospec.isr.driver import IsrConfig, run_isr  # noqa: E402
from atmospec.parallel import open_executor  # noqa: E402
from atmospec.sim.bot import BotConfig, expand_detectors, write_bot_run  # noqa: E402

DETECTORS = expand_detectors("LSSTCam", ["R22"])
ISR_STEPS = ("overscan", "saturation", "gain", "assemble", "variance")


def _simulate(run_dir: str, config: BotConfig) -> str:
    write_bot_run(run_dir, config)
    return run_dir


def prepare(workdir: Path, name: str, config: BotConfig) -> dict[str, Path]:
    """One run folder per detector (simulated on 2 processes), once."""
    runs = {d: workdir / f"{name}_{d}" for d in DETECTORS}
    todo = [d for d, run in runs.items() if not (run / "truth.json").is_file()]
    if todo:
        t0 = time.perf_counter()
        with ProcessPoolExecutor(2) as pool:
            list(pool.map(_simulate, [str(runs[d]) for d in todo],
                          [_for(config, d) for d in todo]))
        print(f"simulated {name} for {len(todo)} detectors in {time.perf_counter() - t0:.0f} s")
    return runs


def _for(config: BotConfig, detector: str) -> BotConfig:
    from dataclasses import replace

    return replace(config, detectors=(detector,))


def _frames(run: Path, pattern: str) -> list[Path]:
    return sorted(p for folder in run.glob(pattern) for p in folder.glob("*.fits"))


def isr_job(path: str, out_dir: str, trace: bool = False) -> dict[str, float]:
    """ISR of one detector's raw, written; its time, and with ``trace`` its own peak
    memory (tracemalloc slows the run about 2.5 times: timed runs go without it)."""
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    raw = read_raw(path)
    calibs = load_calibrations(CalibrationFiles(), raw.camera)
    result = run_isr(raw, IsrConfig(steps=ISR_STEPS), calibs)
    result.exposure.write(Path(out_dir) / f"{raw.info.obs_id}_postisr.fits")
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] if trace else 0
    if trace:
        tracemalloc.stop()
    return {"s": seconds, "peak_mb": peak / 2**20,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def bench_isr(runs: dict[str, Path], workdir: Path) -> None:
    files = [str(_frames(run, "flat_*_flat0_*")[0]) for run in runs.values()]
    out = workdir / "isr_out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    t0 = time.perf_counter()
    for f in files:
        isr_job(f, str(out))
    t_serial = time.perf_counter() - t0
    t0 = time.perf_counter()
    with open_executor(2) as executor:
        jobs = [executor.submit(isr_job, f, str(out)) for f in files]
        parallel = [j.result() for j in jobs]
    t_parallel = time.perf_counter() - t0
    traced = [isr_job(f, str(out), trace=True) for f in files]
    shutil.rmtree(out)
    print(f"ISR of a 9-CCD raft exposure (144 amps): 1 process {t_serial:.1f} s "
          f"({t_serial / len(files):.2f} s per detector), 2 workers {t_parallel:.1f} s, "
          f"speed-up {t_serial / t_parallel:.2f}x")
    print(f"  per-detector peak memory (tracemalloc): "
          f"{max(r['peak_mb'] for r in traced):.0f} MB max, "
          f"worker peak RSS (interpreter included) {max(r['rss_mb'] for r in parallel):.0f} MB")


def _master(args: tuple[list[str], str]) -> float:
    raws, out = args
    t0 = time.perf_counter()
    build_master_file("bias", raws, out, config=MasterConfig())
    return time.perf_counter() - t0


def bench_master_bias(runs: dict[str, Path], workdir: Path) -> None:
    out = workdir / "masters"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    jobs = [([str(p) for p in _frames(run, "bias_bias_*")], str(out / f"bias_{d}.fits"))
            for d, run in runs.items()]
    assert all(len(raws) == 10 for raws, _ in jobs)
    times = {}
    for workers in (1, 2):
        t0 = time.perf_counter()
        with open_executor(workers) as executor:
            per_detector = list(executor.map(_master, jobs))
        times[workers] = time.perf_counter() - t0
        print(f"9 master biases from 10 raft exposures (90 raws), {workers} worker(s): "
              f"{times[workers]:.1f} s ({np.mean(per_detector):.1f} s per detector)")
    print(f"  speed-up 2 workers / 1 worker: {times[1] / times[2]:.2f}x")
    shutil.rmtree(out)


def _ptc(args: tuple[str, list[str]]) -> list[float]:
    detector, files = args
    ptc, _ = build_ptc(files, PtcConfig(), camera=load_camera("LSSTCam", detector),
                       verify=False)
    return [float(g) for g in ptc.table["GAIN"]]


def bench_ptc(workdir: Path) -> None:
    config = BotConfig(n_bias=0, n_dark=0, n_sflat_low=0, n_sflat_high=0, seed=9,
                       flat_levels_e=(1_000.0, 3_000.0, 10_000.0, 25_000.0, 50_000.0,
                                      90_000.0))
    runs = prepare(workdir, "ptc", config)
    t0 = time.perf_counter()
    jobs = [(d, [str(p) for p in _frames(run, "flat_*_flat?_*")]) for d, run in runs.items()]
    with open_executor(2) as executor:
        gains = list(executor.map(_ptc, jobs))
    print(f"PTC of 9 detectors (6 pairs each) on 2 workers: {time.perf_counter() - t0:.0f} s")
    for (detector, _), measured in zip(jobs, gains, strict=True):
        truth = json.loads((runs[detector] / "truth.json").read_text())
        true = np.array(truth["detectors"][detector]["gains"])
        error = np.abs(np.array(measured) / true - 1)
        print(f"  {detector}: largest |gain error| {100 * error.max():.2f} % "
              f"(median {100 * np.median(error):.2f} %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/atmospec-bench-lsstcam")
    parser.add_argument("--ptc", action="store_true", help="also the raft PTC (~10 min)")
    parser.add_argument("--no-masters", action="store_true", help="skip the master biases")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    runs = prepare(workdir, "run", BotConfig(n_bias=10, n_dark=0, flat_levels_e=(20_000.0,),
                                             n_sflat_low=0, n_sflat_high=0))
    bench_isr(runs, workdir)
    if not args.no_masters:
        bench_master_bias(runs, workdir)
    if args.ptc:
        bench_ptc(workdir)


if __name__ == "__main__":
    main()
