"""PTC speed: 20 flat pairs of full-size LATISS raws, end to end, with a baseline.

Run: ``python benchmarks/bench_ptc.py [--workdir DIR]``.

The 40 raws (uncompressed, 100 e⁻ to 148 ke⁻, 2 % non-linearity) are simulated once into the
work directory, in a child process so that the simulation's memory does not count. Then, in
this process, on one core (thread pools limited to 1 before numpy is imported):

1. ``build_ptc_file`` end to end (header checks → per pair: read, overscan noise, ISR,
   clipped statistics → fit → verification → write): TOTAL and peak memory (``ru_maxrss``);
2. the same steps timed phase by phase, and on the same ISR'd amp regions the baseline
   statistics: astropy ``sigma_clipped_stats`` per amp (5σ, 3 iterations, the usual way) and
   plain unclipped ``np.mean``/``np.var``, with the gains each gives against the truth.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import logging  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from astropy.stats import sigma_clipped_stats  # noqa: E402

from atmospec.calib.files import build_ptc_file  # noqa: E402
from atmospec.calib.products import Ptc  # noqa: E402
from atmospec.calib.ptc import (  # noqa: E402
    PairStats,
    PtcConfig,
    fit_ptc,
    isr_regions,
    overscan_pair_variance,
    pair_flats,
    pair_statistics,
    ptc_calibrations,
    ptc_table,
    verify_ptc,
)
from atmospec.camera.description import load_camera  # noqa: E402
from atmospec.camera.raw import read_raw  # noqa: E402
from atmospec.io import provenance_cards  # noqa: E402
from atmospec.sim.detector import sensor_model  # noqa: E402
from atmospec.sim.sequences import PtcSequenceConfig, write_flat_pairs  # noqa: E402

#: 15 log-spaced levels from 100 e⁻, then 100, 112, 124, 136 and 148 ke⁻ (full well 130 ke⁻).
SEQUENCE = PtcSequenceConfig(n_log_levels=15, n_dense_levels=5, dense_from_e=100_000.0,
                             max_level_e=148_000.0, seed=2024)


def raw_paths(workdir: Path) -> list[Path]:
    """The sequence's raw files in the work directory."""
    n = 2 * SEQUENCE.n_pairs
    return [workdir / f"AT_O_{SEQUENCE.day_obs}_{SEQUENCE.first_seq + i:06d}.fits"
            for i in range(n)]


def prepare(workdir: Path) -> list[Path]:
    """Simulate the raws in a child process unless they are already there."""
    paths = raw_paths(workdir)
    if not all(p.exists() for p in paths):
        print(f"simulating {len(paths)} raws into {workdir} (once; a few minutes)...",
              flush=True)
        subprocess.run([sys.executable, __file__, "--simulate", "--workdir", str(workdir)],
                       check=True)
    return paths


def peak_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def baseline_astropy(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-amp mean and variance with astropy's sigma_clipped_stats, amp by amp."""
    mean = np.empty(a.shape[0])
    var = np.empty(a.shape[0])
    for i in range(a.shape[0]):
        mu_a = sigma_clipped_stats(a[i], sigma=5.0, maxiters=3)[0]
        mu_b = sigma_clipped_stats(b[i], sigma=5.0, maxiters=3)[0]
        std = sigma_clipped_stats(a[i] - (mu_a / mu_b) * b[i], sigma=5.0, maxiters=3)[2]
        mean[i] = 0.5 * (mu_a + mu_b)
        var[i] = std**2 / 2.0
    return mean, var


def baseline_plain(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-amp unclipped mean and variance (numpy, all amps at once)."""
    mu_a = a.mean(axis=1, dtype=np.float64)
    mu_b = b.mean(axis=1, dtype=np.float64)
    diff = a - (mu_a / mu_b).astype(np.float32)[:, None] * b
    return 0.5 * (mu_a + mu_b), diff.var(axis=1, dtype=np.float64) / 2.0


def phases(paths: list[Path], out: Path, config: PtcConfig) -> tuple[dict[str, float], dict]:
    """The PTC steps timed one by one, plus the baselines on the same regions."""
    camera = load_camera("latiss")
    timings: dict[str, float] = {}

    def add(name: str, seconds: float) -> None:
        timings[name] = timings.get(name, 0.0) + seconds

    t = time.perf_counter()
    pairs = pair_flats(paths, camera, config)
    calibs = ptc_calibrations(camera, config)
    add("pairing", time.perf_counter() - t)
    stats: list[PairStats] = []
    base = {"astropy": ([], [], 0.0), "plain": ([], [], 0.0)}
    for pa, pb in pairs:
        t = time.perf_counter()
        first, second = read_raw(pa, camera), read_raw(pb, camera)
        add("read raw", time.perf_counter() - t)
        t = time.perf_counter()
        ov = overscan_pair_variance(first.segments, second.segments, camera, config)
        add("overscan noise", time.perf_counter() - t)
        t = time.perf_counter()
        a, b = isr_regions(first, config, calibs), isr_regions(second, config, calibs)
        add("isr", time.perf_counter() - t)
        for name, func in (("astropy", baseline_astropy), ("plain", baseline_plain)):
            t = time.perf_counter()
            m, v = func(a, b)
            means, variances, spent = base[name]
            base[name] = ([*means, m], [*variances, v], spent + time.perf_counter() - t)
        t = time.perf_counter()
        mean, var, npix, ratio = pair_statistics(a, b, config)
        add("statistics", time.perf_counter() - t)
        stats.append(PairStats(first.info.exposure_time, (first.info.obs_id,
                                                          second.info.obs_id),
                               mean, var, npix, ov, ratio, first.info.datetime_begin))
        del first, second, a, b
    t = time.perf_counter()
    table = ptc_table(stats, camera, config)
    add("fit + table", time.perf_counter() - t)
    t = time.perf_counter()
    Ptc(table).write(out, provenance_cards("ptc", paths, config))
    add("write", time.perf_counter() - t)
    t = time.perf_counter()
    verify_ptc(table, camera, file=out.name).write(out)
    add("verify", time.perf_counter() - t)
    timings["TOTAL"] = sum(timings.values())
    return timings, {"table": table, "npix": np.array([s.n_pixels for s in stats]).T,
                     **base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="bench-work/ptc", type=Path)
    parser.add_argument("--simulate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.simulate:
        write_flat_pairs(args.workdir, SEQUENCE, compress=False)
        return
    logging.basicConfig(level=logging.WARNING)
    paths = prepare(args.workdir)
    config = PtcConfig()
    size = sum(p.stat().st_size for p in paths) / 2**30
    print(f"PTC from {len(paths) // 2} flat pairs ({len(paths)} uncompressed raws, "
          f"{size:.1f} GiB), one core")

    mem0 = peak_mib()
    t = time.perf_counter()
    build_ptc_file(paths, args.workdir / "ptc.fits", config)
    total = time.perf_counter() - t
    mem = peak_mib()

    timings, results = phases(paths, args.workdir / "ptc_phases.fits", config)
    print("phases (second, instrumented run):")
    for name, seconds in timings.items():
        print(f"  {name:<15s} {seconds:7.2f} s")

    truth = sensor_model(SEQUENCE.detector, load_camera("latiss"))
    table = results["table"]
    gain_err = np.asarray(table["GAIN"]) / truth.gains - 1.0
    rn_err = np.asarray(table["READ_NOISE"]) / truth.read_noise_e - 1.0
    print(f"accuracy: max |gain - truth| {100 * np.max(np.abs(gain_err)):.2f} %, "
          f"max |read noise - truth| {100 * np.max(np.abs(rn_err)):.2f} %")
    ours = timings["statistics"]
    for name in ("astropy", "plain"):
        means, variances, spent = results[name]
        mean, var = np.array(means).T, np.array(variances).T
        gains = np.array([fit_ptc(mean[i], var[i], results["npix"][i], config).gain
                          for i in range(mean.shape[0])])
        err = gains / truth.gains - 1.0
        print(f"baseline {name:<8s} statistics {spent:7.2f} s ({spent / ours:5.1f}x ours), "
              f"max |gain - truth| {100 * np.nanmax(np.abs(err)):.2f} %")
    print(f"SUMMARY: PTC of {len(paths) // 2} pairs {total:.1f} s (goal <= 60 s), "
          f"per-pair statistics {ours:.1f} s vs astropy sigma_clipped_stats "
          f"{results['astropy'][2]:.1f} s (ratio {results['astropy'][2] / ours:.1f}x), "
          f"peak memory {mem:.0f} MiB (before the PTC {mem0:.0f} MiB)")


if __name__ == "__main__":
    main()
