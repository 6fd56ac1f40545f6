"""Benchmark: master bias from N full-size LATISS raws, against a naive in-memory median.

Usage::

    python benchmarks/bench_master_bias.py [--n 20] [--workdir DIR]

Simulates N uncompressed raw biases in ``DIR/raws`` (reused when already there), builds
the master bias in memory with `atmospec.calib.masters.build_bias` (read + ISR of each frame
to a ``.npy``, chunked clipped-mean combination, verification; gains from a PTC table holding
the simulator's true gains), writes it with `atmospec.calib.files.write_product` and prints
the wall time of each phase, the total and the peak resident memory of the process
(``ru_maxrss``). Then, in the same process, the naive baseline: every frame ISR'd into
memory and ``np.median(np.stack(frames), axis=0)``, with its time and the process peak
after it. Goals (issue): 20 raws in at most 30 s on one core and 4 GB.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.table import Table

from atmospec.calib.files import write_product
from atmospec.calib.masters import ISR_STEPS, MasterConfig, build_bias
from atmospec.calib.products import Crosstalk, Ptc
from atmospec.camera.description import load_camera
from atmospec.camera.raw import read_raw
from atmospec.isr.driver import IsrCalibrations, IsrConfig, run_isr
from atmospec.isr.gain import nominal_gains
from atmospec.sim.detector import DetectorSimConfig, sensor_model
from atmospec.sim.night import NightConfig, night_plan, simulate_night

log = logging.getLogger("bench_master_bias")

GOAL_SECONDS = 30.0
GOAL_GB = 4.0


class _PhaseTimes(logging.Handler):
    """Collects the phase times `build_bias` attaches to its final log record."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.times: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        times = getattr(record, "phase_times", None)
        if times:
            self.times = dict(times)


def peak_gb() -> float:
    """Peak resident memory of this process so far, GB (``ru_maxrss`` is kB on Linux)."""
    scale = 1.0 if platform.system() == "Darwin" else 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9


def raw_biases(n: int, directory: Path) -> list[Path]:
    """N simulated uncompressed full-size raw biases, simulated only if missing."""
    night = NightConfig(n_bias=n, n_dark=0, n_flat=0, n_science=0, compress=False)
    paths = [directory / f"{p.obs_id}.fits" for p in night_plan(night)]
    if all(p.is_file() for p in paths):
        print(f"reusing {n} raw biases in {directory}")
        return paths
    t0 = time.perf_counter()
    # In a child process, so that its memory does not count in this process's peak.
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pool.apply(simulate_night, (directory, night))
    print(f"simulated {n} raw biases in {time.perf_counter() - t0:.1f} s ({directory})")
    return paths


def truth_ptc(directory: Path) -> Path:
    """A PTC table with the simulator's true gains and read noise (a perfect PTC).

    With the nominal gains instead, the simulated sensor's 2 % gain scatter makes the
    noise in electrons differ from the read noise by as much, and the verification's
    ``noise_matches_read_noise`` fails on the amps whose gain is furthest off.
    """
    camera = load_camera("latiss")
    sensor = sensor_model(DetectorSimConfig(), camera)
    path = directory / "ptc_truth.fits"
    Table({"AMP": list(camera.amp_names), "GAIN": sensor.gains,
           "READ_NOISE": sensor.read_noise_e}, meta={"INSTRUME": camera.name}).write(
        path, overwrite=True)
    return path


def naive_median(paths: list[Path]) -> tuple[float, float]:
    """ISR every frame into memory, then ``np.median(np.stack(frames))``: (ISR s, median s)."""
    calibs = IsrCalibrations(gains=nominal_gains(read_raw(paths[0]).camera),
                             crosstalk=Crosstalk.read().matrix())
    config = IsrConfig(steps=ISR_STEPS["bias"])
    t0 = time.perf_counter()
    frames = [run_isr(read_raw(p), config, calibs).exposure.image for p in paths]
    t1 = time.perf_counter()
    median = np.median(np.stack(frames), axis=0)
    t2 = time.perf_counter()
    del frames, median
    return t1 - t0, t2 - t1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="number of raw biases (default 20)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="directory for raws and outputs (default: a temporary one)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the naive in-memory median")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    phases = _PhaseTimes()
    logging.getLogger("atmospec.calib.masters").addHandler(phases)
    logging.getLogger("atmospec.calib.masters").setLevel(logging.INFO)

    with tempfile.TemporaryDirectory(prefix="bench_master_bias_") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        paths = raw_biases(args.n, workdir / "raws")
        start_gb = peak_gb()
        out = workdir / "master_bias.fits"
        t0 = time.perf_counter()
        bias, report = build_bias(paths, MasterConfig(), ptc=Ptc.read(truth_ptc(workdir)),
                                  workdir=workdir)
        t1 = time.perf_counter()
        write_product(bias, report, out)
        total = time.perf_counter() - t0
        pipeline_gb = peak_gb()
        t = {**phases.times, "write": time.perf_counter() - t1}
        n = int(t.get("frames", args.n))
        print(f"master bias from {n} frames -> {out}")
        print(f"  read+ISR     {t.get('isr', float('nan')):7.2f} s  "
              f"({t.get('isr', float('nan')) / n:.2f} s/frame, incl. .npy writes)")
        print(f"  combine      {t.get('combine', float('nan')):7.2f} s")
        print(f"  write        {t.get('write', float('nan')):7.2f} s")
        print(f"  verify       {t.get('verify', float('nan')):7.2f} s")
        print(f"  total        {total:7.2f} s  (goal {GOAL_SECONDS:.0f} s)")
        print(f"  peak memory  {pipeline_gb:7.2f} GB (process; {start_gb:.2f} GB before the "
              f"build; goal {GOAL_GB:.0f} GB)")
        summary = (f"SUMMARY n={n} total={total:.1f}s (goal {GOAL_SECONDS:.0f}s) "
                   f"peak={pipeline_gb:.2f}GB (goal {GOAL_GB:.0f}GB) "
                   f"{'OK' if total <= GOAL_SECONDS and pipeline_gb <= GOAL_GB else 'MISSED'}")
        if not args.no_baseline:
            isr_s, median_s = naive_median(paths)
            baseline_gb = peak_gb()
            print(f"naive baseline: read+ISR {isr_s:.2f} s, np.median(np.stack) "
                  f"{median_s:.2f} s, process peak after it {baseline_gb:.2f} GB")
            if baseline_gb <= pipeline_gb:
                print("  (baseline peak not above the pipeline's: not separable by ru_maxrss)")
            summary += (f"; naive median: combine {median_s:.1f}s vs "
                        f"{t.get('combine', float('nan')):.1f}s, "
                        f"total {isr_s + median_s:.1f}s, peak {baseline_gb:.2f}GB "
                        f"(x{baseline_gb / pipeline_gb:.1f})")
        print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
