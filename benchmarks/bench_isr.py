"""ISR speed on one full-size LATISS frame: atmospec against an equivalent ccdproc sequence.

Run: ``python benchmarks/bench_isr.py [--workdir DIR] [--repeat 3]`` (or ``make bench``).

Both pipelines run in this process, on one core (thread pools limited to 1 before numpy is
imported), with freed memory kept for reuse as in ``atmospec``'s own processes
(`atmospec.memory.keep_freed_memory`), on the same simulated raw frame and master products:

* atmospec: read raw → overscan → saturation → gain → crosstalk → assemble → bias →
  variance → dark → flat → defects → interpolate → edge → write (quantised and
  tile-compressed, the default; `bench_write.py` compares it with the uncompressed write;
  cosmic rays timed apart);
  the same with ``--lossless``'s write (float32 planes, uncompressed, as ccdproc writes),
  the run compared with ccdproc;
* ccdproc: per amp CCDData from the raw HDU → subtract_overscan (median per row) →
  trim_image → gain_correct; assemble; subtract_bias → subtract_dark (exposure scaled) →
  flat_correct → defect mask → create_deviation → write. ccdproc has no crosstalk or
  saturation step, so the baseline does less work than atmospec.

Peak memory of the atmospec ISR is the tracemalloc peak (numpy reports its buffers to it).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402

from atmospec.calib.isr_inputs import CalibrationFiles, load_calibrations  # noqa: E402
from atmospec.camera.description import load_camera  # noqa: E402
from atmospec.camera.raw import read_raw  # noqa: E402
from atmospec.compression import CompressionConfig  # noqa: E402
from atmospec.exposure import Exposure  # noqa: E402
from atmospec.isr.driver import STEPS, IsrConfig, run_isr  # noqa: E402
from atmospec.memory import keep_freed_memory  # noqa: E402
from atmospec.sim.night import NightConfig, night_plan, simulate_exposure  # noqa: E402
from atmospec.sim.rawfile import write_raw  # noqa: E402

STEPS_NO_CR = tuple(s for s in STEPS if s not in ("cosmic_rays", "linearity"))


def prepare(workdir: Path) -> dict[str, Path]:
    """Simulate one science raw (uncompressed) and master products, once."""
    workdir.mkdir(parents=True, exist_ok=True)
    files = {k: workdir / f"{k}.fits" for k in ("raw", "bias", "dark", "flat")}
    if all(p.exists() for p in files.values()):
        return files
    night = NightConfig(n_bias=1, n_dark=1, n_flat=1, n_science=1, compress=False)
    seq = next(p.seq for p in night_plan(night) if p.kind == "science")
    segments, truth, cards = simulate_exposure("science", night, seq)
    write_raw(files["raw"], segments, cards, compress=False)
    det = truth.detector
    products = {"bias": det.fixed_pattern_e, "dark": det.dark_current_e_per_s,
                "flat": truth.illumination / np.median(truth.illumination)}
    for kind, image in products.items():
        hdr = fits.Header({"OBSTYPE": kind, "INSTRUME": "LATISS",
                           "FILTER": "SDSSr_65mm~empty"})
        Exposure.from_image(np.asarray(image, np.float32), hdr).write(files[kind])
    return files


def run_atmospec(files: dict[str, Path], out: Path, lossless: bool = False
                 ) -> dict[str, float]:
    camera = load_camera("latiss")
    calibs = load_calibrations(CalibrationFiles(bias=str(files["bias"]), dark=str(files["dark"]),
                                                flat=str(files["flat"])), camera)
    # Computed once per run (per worker), not per frame: the defect mask too (a library
    # without `defect_mask` computes it in the step).
    calibs.bad_pixels, calibs.flat_divisor  # noqa: B018
    if hasattr(calibs, "defect_mask"):
        calibs.defect_mask(camera)
    c0 = time.process_time()
    t0 = time.perf_counter()
    raw = read_raw(files["raw"])
    t1 = time.perf_counter()
    config = IsrConfig(steps=STEPS_NO_CR, compression=CompressionConfig(enabled=not lossless))
    result = run_isr(raw, config, calibs)
    t2 = time.perf_counter()
    result.exposure.write(out)
    t3 = time.perf_counter()
    timings = {"read raw": t1 - t0, **result.timings, "write": t3 - t2}
    timings["TOTAL"] = t3 - t0
    timings["TOTAL CPU"] = time.process_time() - c0
    return timings


def run_ccdproc(files: dict[str, Path], out: Path) -> float:
    import ccdproc
    from astropy import units as u
    from astropy.nddata import CCDData

    camera = load_camera("latiss")
    bias = CCDData.read(files["bias"], hdu="IMAGE", unit="electron")
    dark = CCDData.read(files["dark"], hdu="IMAGE", unit="electron")
    flat = CCDData.read(files["flat"], hdu="IMAGE", unit="electron")
    defects = np.zeros(camera.detector_shape, bool)
    defects[0:2000, 3562:4071] = True
    t0 = time.perf_counter()
    image = np.empty(camera.detector_shape, np.float32)
    with fits.open(files["raw"], memmap=False) as hdul:
        header = hdul[0].header
        for amp in camera.amplifiers:
            ccd = CCDData(hdul[amp.extname].data.astype(np.float32), unit="adu")
            ccd = ccdproc.subtract_overscan(ccd, fits_section="[516:573,1:2048]",
                                            overscan_axis=1, median=True)
            ccd = ccdproc.trim_image(ccd, fits_section="[4:512,1:2000]")
            ccd = ccdproc.gain_correct(ccd, amp.gain * u.electron / u.adu)
            data = ccd.data[:: -1 if amp.flip_y else 1, :: -1 if amp.flip_x else 1]
            image[camera.amp_slices(amp)] = data
    ccd = CCDData(image, unit="electron", meta=header)
    ccd = ccdproc.subtract_bias(ccd, bias)
    ccd = ccdproc.subtract_dark(ccd, dark, dark_exposure=1 * u.s,
                                data_exposure=header["DARKTIME"] * u.s, scale=True)
    ccd = ccdproc.flat_correct(ccd, flat)
    ccd.mask = defects
    ccd = ccdproc.create_deviation(ccd, readnoise=9.0 * u.electron, disregard_nan=True)
    ccd.write(out, overwrite=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="bench-work", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    keep_freed_memory()
    files = prepare(args.workdir)

    runs = [run_atmospec(files, args.workdir / "out_atmospec.fits") for _ in range(args.repeat)]
    steps = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"atmospec ISR of one 4072x4000 LATISS frame (median of {args.repeat} runs, one core)")
    for name, t in steps.items():
        print(f"  {name:<12s} {t * 1000:8.1f} ms" + (" (this process)" if "CPU" in name else ""))

    tracemalloc.start()
    run_atmospec(files, args.workdir / "out_atmospec.fits")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    camera = load_camera("latiss")
    raw = read_raw(files["raw"])
    calibs = load_calibrations(CalibrationFiles(), camera)
    t = time.perf_counter()
    run_isr(raw, IsrConfig(steps=("overscan", "saturation", "gain", "cosmic_rays")), calibs)
    cr = time.perf_counter() - t

    lossless = [run_atmospec(files, args.workdir / "out_atmospec.fits", lossless=True)["TOTAL"]
                for _ in range(args.repeat)]
    base = [run_ccdproc(files, args.workdir / "out_ccdproc.fits") for _ in range(args.repeat)]
    t_base = statistics.median(base)
    t_ours = statistics.median(lossless)
    print(f"  {'cosmic rays':<12s} {cr * 1000:8.1f} ms (L.A.Cosmic, separate, incl. "
          "overscan+gain)")
    print(f"  {'lossless':<12s} {t_ours * 1000:8.1f} ms (the same ISR, --lossless write)")
    print(f"ccdproc sequence (less work: no crosstalk/saturation/interp.): {t_base:.2f} s")
    print(f"SUMMARY: atmospec ISR {steps['TOTAL']:.2f} s wall, {steps['TOTAL CPU']:.2f} s CPU "
          f"(goal <= 0.6 s with the write; load average {os.getloadavg()[0]:.1f}); with the "
          f"lossless write {t_ours:.2f} s against ccdproc's {t_base:.2f} s, "
          f"ratio {t_base / t_ours:.1f}x (goal >= 5x); peak memory {peak / 2**20:.0f} MiB "
          "(goal <= 1024)")


if __name__ == "__main__":
    main()
