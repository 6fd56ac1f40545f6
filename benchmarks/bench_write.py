"""Post-ISR write: quantised tile-compressed against uncompressed, on one full LATISS frame.

Run: ``python benchmarks/bench_write.py [--workdir DIR] [--repeat 5]`` (or ``make bench``).

One simulated science raw and its master products (those of ``bench_isr.py``, shared
``--workdir``) are reduced once; then, in this process, on one core (thread pools limited to
1 before numpy is imported):

* the post-ISR exposure written uncompressed (``--lossless``, the baseline: today's 195 MB
  file) and quantised + tile-compressed (the default), each ``--repeat`` times on a fresh
  copy: wall and CPU time, file size, and the ratios;
* each file read back (`Exposure.read`, sums checked);
* the quantisation budget measured on the frame: the error's σ over the step (1/√12 =
  0.289 promised), its mean, the largest |error| over half a step, σ_q over the median pixel
  noise (1/(q√12) = 0.029 at q = 10), the image's mean, median and σ against the lossless
  ones;
* the whole ISR of the frame (read raw → write), uncompressed and compressed, against the
  goal of 0.6 s per frame on one core.

Timings are medians (wall) and minima (CPU time of this process) of the repeats: the
machine is shared, and CPU time is the least disturbed figure.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402

from atmospec.calib.isr_inputs import CalibrationFiles, load_calibrations  # noqa: E402
from atmospec.camera.description import load_camera  # noqa: E402
from atmospec.camera.raw import read_raw  # noqa: E402
from atmospec.compression import CompressionConfig, noise_fraction  # noqa: E402
from atmospec.exposure import Exposure  # noqa: E402
from atmospec.isr.driver import IsrConfig, run_isr  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from bench_isr import STEPS_NO_CR, prepare  # noqa: E402

LOSSLESS = CompressionConfig(enabled=False)
QUANTISED = CompressionConfig()


def _copy(exp: Exposure, compression: CompressionConfig) -> Exposure:
    return Exposure(exp.image.copy(), exp.mask.copy(), exp.variance.copy(),
                    exp.metadata.copy(), dict(exp.mask_planes), exp.unit, compression)


def _timed(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of ``fn()``."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def _figures(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r[0] for r in runs), min(r[1] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="bench-work", type=Path)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    files = prepare(args.workdir)
    camera = load_camera("latiss")
    calibs = load_calibrations(CalibrationFiles(bias=str(files["bias"]), dark=str(files["dark"]),
                                                flat=str(files["flat"])), camera)
    calibs.bad_pixels, calibs.flat_divisor  # noqa: B018 - once per run, not per frame
    truth = run_isr(read_raw(files["raw"]), IsrConfig(steps=STEPS_NO_CR), calibs).exposure
    out = {"lossless": args.workdir / "write_lossless.fits",
           "quantised": args.workdir / "write_quantised.fits"}

    write, read, size = {}, {}, {}
    for name, compression in (("lossless", LOSSLESS), ("quantised", QUANTISED)):
        runs = []
        for _ in range(args.repeat):
            exp = _copy(truth, compression)
            runs.append(_timed(lambda exp=exp, name=name: exp.write(out[name])))
        write[name] = _figures(runs)
        size[name] = out[name].stat().st_size
        read[name] = _figures([_timed(lambda name=name: Exposure.read(out[name]))
                               for _ in range(args.repeat)])

    print(f"post-ISR write of one {truth.shape[1]}x{truth.shape[0]} LATISS frame "
          f"(median wall / min CPU of {args.repeat}, one core)")
    for name in ("lossless", "quantised"):
        print(f"  {name:<10s} write {write[name][0]:6.3f} s / {write[name][1]:6.3f} s CPU   "
              f"read {read[name][0]:6.3f} s / {read[name][1]:6.3f} s CPU   "
              f"{size[name] / 1e6:7.1f} MB")
    ratio = size["lossless"] / size["quantised"]
    print(f"  size ratio {ratio:.1f}x (goal >= 3x); write CPU ratio quantised/lossless "
          f"{write['quantised'][1] / write['lossless'][1]:.2f}")

    back = Exposure.read(out["quantised"])
    with fits.open(out["quantised"]) as hdul:
        steps = {n: hdul[n].header["ATMQSTEP"] for n in ("IMAGE", "VARIANCE")}
        q = hdul[0].header["ATMQLEVL"]
    print(f"quantisation budget (q = {q:g}: σ_q / σ = {noise_fraction(q):.4f} promised)")
    for name, step in steps.items():
        a = getattr(truth, name.lower()).astype(np.float64)
        b = getattr(back, name.lower()).astype(np.float64)
        ok = np.isfinite(a)
        err = b[ok] - a[ok]
        print(f"  {name:<8s} step {step:.4g}: error σ/step {err.std() / step:.4f} (1/√12 = "
              f"{1 / math.sqrt(12):.4f}), mean/step {err.mean() / step:+.1e}, "
              f"max|error|/(step/2) {np.abs(err).max() / (step / 2):.4f}")
    sigma = math.sqrt(float(np.median(truth.variance)))
    print(f"  σ_q / median pixel noise {steps['IMAGE'] / math.sqrt(12) / sigma:.4f}")
    good = truth.mask == 0
    a, b = truth.image[good].astype(np.float64), back.image[good].astype(np.float64)
    print(f"  image mean {a.mean():.4f} -> {b.mean():.4f}, median {np.median(a):.4f} -> "
          f"{np.median(b):.4f}, σ {a.std():.4f} -> {b.std():.4f} "
          f"(σ_q² adds {(steps['IMAGE'] ** 2 / 12) / a.var() * 50:.3f} % to σ)")

    isr = {}
    for name, compression in (("lossless", LOSSLESS), ("quantised", QUANTISED)):
        config = replace(IsrConfig(steps=STEPS_NO_CR), compression=compression)
        runs = []
        for _ in range(args.repeat):
            def frame(config=config, name=name) -> None:
                run_isr(read_raw(files["raw"]), config, calibs).exposure.write(out[name])
            runs.append(_timed(frame))
        isr[name] = _figures(runs)
    print("ISR of the frame, read raw -> write (cosmic rays not searched)")
    for name in ("lossless", "quantised"):
        print(f"  {name:<10s} {isr[name][0]:6.3f} s wall, {isr[name][1]:6.3f} s CPU")
    print(f"SUMMARY: post-ISR file {size['quantised'] / 1e6:.1f} MB against "
          f"{size['lossless'] / 1e6:.1f} MB ({ratio:.1f}x, goal >= 3x); write "
          f"{write['quantised'][1]:.2f} s CPU against {write['lossless'][1]:.2f} s; ISR per "
          f"frame {isr['quantised'][1]:.2f} s CPU (goal <= 0.6 s), lossless "
          f"{isr['lossless'][1]:.2f} s")
    for path in out.values():
        path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
