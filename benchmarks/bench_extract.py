"""Spectroscopy-chain speed and memory on one full-size LATISS holo4_003 exposure.

Run: ``python benchmarks/bench_extract.py [--workdir DIR] [--repeat 3]`` (or ``make bench``).

A post-ISR exposure (4000 × 4072, unbinned, e⁻ with its variance plane) of HD142331 seen
through holo4_003 is simulated once by `render_dispersed_exposure` (orders 0–3, sky, Poisson
and read noise) and written to ``WORKDIR``, in a child process so that the simulation does
not count in this process's peak memory; a 2×2-binned copy (``CCDSUM = '2 2'``, summed
e⁻ and variance) is written beside it.

Then, in this process, on one core (thread pools limited to 1 before numpy is imported):

1. ``process_dispersed`` (the function ``atmospec extract`` and the night runner call)
   followed by ``write_spectrum``, ``--repeat`` times: the medians are the total wall and
   CPU times (on a machine shared with other work the wall time follows the load: compare
   CPU);
2. the chain's own split (``process_dispersed(..., timings=)``: zeroth order, extraction,
   wavelength calibration, order-2 estimate, 2D forward model, its covariance, spectrum
   assembly) and the write, median over the runs per stage;
3. peak memory of one ``process_dispersed`` + write: tracemalloc peak (Python and numpy
   allocations of the chain, the input exposure excluded) and the process's
   ``ru_maxrss`` (everything: interpreter, libraries, the exposure read from disk);
4. the same on the 2×2-binned frame;
5. the atmosphere fits of both spectra: on the spectrum (``fit_atmosphere``) and on the
   spectrogram's pixels (``fit_atmosphere_spectrogram``), goal ≤ 2 s each.

Printed against the goal (≤ 10 s and ≤ 2 GB per exposure) and the Spectractor anchor
(3 min 50 s – 14 min 50 s per AuxTel exposure at 2×2 binning; 22 min and 6 GB unbinned),
as ratios.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402

from atmospec.exposure import Exposure  # noqa: E402
from atmospec.spectro.chain import (  # noqa: E402
    SpectroscopyConfig,
    process_dispersed,
)
from spectractor_bridge.spectrum import write_spectrum  # noqa: E402

SHAPE = (4000, 4072)
TARGET = "HD142331"
GOAL_S, GOAL_BYTES = 10.0, 2 * 2**30
#: Spectractor on AuxTel: 3 min 50 s – 14 min 50 s per exposure at 2×2 binning; 22 min and
#: 6 GB unbinned.
SPECTRACTOR_2X2_S = (230.0, 890.0)
SPECTRACTOR_1X1_S, SPECTRACTOR_1X1_BYTES = 1320.0, 6 * 2**30
CONFIG = SpectroscopyConfig()


# --------------------------------------------------------------------------- input frames


def simulate(workdir: Path) -> None:
    """Render the exposure and its 2×2-binned copy into ``workdir`` (child process)."""
    from atmospec.sim.dispersed import DispersedSpectrumModel, render_dispersed_exposure

    workdir.mkdir(parents=True, exist_ok=True)
    model = DispersedSpectrumModel(target=TARGET, disperser="holo4_003", exptime_s=6.0,
                                   airmass=1.2)
    signal, _ = render_dispersed_exposure(SHAPE, 1745.2, 3702.7, 8.7, 68.6,
                                          np.random.default_rng(1), model)
    signal += np.float32(8.0 * model.exptime_s)  # sky, e⁻/px
    header = fits.Header({
        "OBSID": "AT_O_20261123_000300", "INSTRUME": "LATISS", "DAYOBS": "20261123",
        "SEQNUM": 300, "DATE-OBS": "2026-11-24T03:00:00", "EXPTIME": model.exptime_s,
        "GRATING": "holo4_003", "FILTER": "empty_1", "LINSPOS": 68.0, "OBJECT": TARGET,
        "AIRMASS": model.airmass, "AMSTART": model.airmass,  # LATISS's own key
    })
    write_frame_pair(workdir, "dispersed", signal, header, np.random.default_rng(2))


def write_frame_pair(workdir: Path, stem: str, signal: np.ndarray, header: fits.Header,
                     rng: np.random.Generator) -> None:
    """Write ``signal`` (e⁻, sky included) with Poisson and 9 e⁻ read noise as
    ``STEM_1x1.fits`` and its 2×2-binned sum as ``STEM_2x2.fits`` (``CCDSUM`` set)."""
    image = rng.poisson(signal).astype(np.float32)
    image += rng.normal(0.0, 9.0, signal.shape).astype(np.float32)
    exp = Exposure.from_image(image, metadata=header)
    exp.variance[:] = signal + np.float32(81.0)
    exp.write(workdir / f"{stem}_1x1.fits")

    def bin2(a: np.ndarray) -> np.ndarray:
        ny, nx = a.shape
        return a.reshape(ny // 2, 2, nx // 2, 2).sum(axis=(1, 3))

    binned_header = header.copy()
    binned_header["CCDSUM"] = "2 2"
    binned = Exposure.from_image(bin2(image), metadata=binned_header)
    binned.variance[:] = bin2(np.asarray(exp.variance))
    binned.write(workdir / f"{stem}_2x2.fits")


def prepare(workdir: Path) -> dict[str, Path]:
    files = {b: workdir / f"dispersed_{b}.fits" for b in ("1x1", "2x2")}
    if not all(p.exists() for p in files.values()):
        subprocess.run([sys.executable, __file__, "--simulate-only", "--workdir",
                        str(workdir)], check=True)
    return files


# --------------------------------------------------------------------------- chain


def run_chain(exposure: Exposure, out: Path) -> tuple[float, float, dict[str, float]]:
    """One ``process_dispersed`` + write: total wall and CPU time, and the chain's own stage
    split (wall)."""
    stages: dict[str, float] = {}
    t, cpu = time.perf_counter(), time.process_time()
    spectrum, _ = process_dispersed(exposure, config=CONFIG, timings=stages)
    t_write = time.perf_counter()
    write_spectrum(spectrum, out)
    stages["write"] = time.perf_counter() - t_write
    return time.perf_counter() - t, time.process_time() - cpu, stages


# --------------------------------------------------------------------------- report


def maxrss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # Linux: KiB


def bench(label: str, path: Path, out: Path, repeat: int) -> dict[str, float]:
    exposure = Exposure.read(path)
    size = exposure.image.nbytes + exposure.variance.nbytes + exposure.mask.nbytes
    runs = [run_chain(exposure, out) for _ in range(repeat)]
    total = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    stages = {k: statistics.median(r[2][k] for r in runs) for k in runs[0][2]}
    tracemalloc.start()
    run_chain(exposure, out)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = maxrss_bytes()
    ny, nx = exposure.image.shape
    print(f"{label}: {nx}x{ny} holo4_003 exposure of {TARGET} (median of {repeat} runs, "
          "one core)")
    for name, t in stages.items():
        print(f"  {name:<20s} {t * 1000:9.1f} ms")
    print(f"  {'sum of stages':<20s} {sum(stages.values()) * 1000:9.1f} ms")
    print(f"  {'process_dispersed+write':<20s} {total * 1000:9.1f} ms (total wall)")
    print(f"  {'process_dispersed+write':<20s} {cpu * 1000:9.1f} ms (total CPU: on a loaded "
          "machine, the figure to compare)")
    print(f"  memory: tracemalloc peak {peak / 2**20:.0f} MiB (input exposure "
          f"{size / 2**20:.0f} MiB not included), ru_maxrss {rss / 2**20:.0f} MiB "
          "(whole process so far)")
    return {"total": total, "peak": float(peak), "rss": float(rss)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="bench-work/extract", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--simulate-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.simulate_only:
        simulate(args.workdir)
        return
    files = prepare(args.workdir)

    full = bench("unbinned", files["1x1"], args.workdir / "spectrum_1x1.fits", args.repeat)
    t, rss = full["total"], full["rss"]
    print(f"SUMMARY unbinned: {t:.2f} s (goal <= {GOAL_S:.0f} s: {t / GOAL_S:.2f} of it), "
          f"ru_maxrss {rss / 2**30:.2f} GiB (goal <= {GOAL_BYTES / 2**30:.0f} GiB: "
          f"{rss / GOAL_BYTES:.2f} of it); Spectractor unbinned 22 min / 6 GB: "
          f"{SPECTRACTOR_1X1_S / t:.0f}x faster, {SPECTRACTOR_1X1_BYTES / rss:.1f}x less "
          "memory")

    try:
        binned = bench("2x2 binned", files["2x2"], args.workdir / "spectrum_2x2.fits",
                       args.repeat)
    except Exception as exc:  # the chain may not take binned frames yet: say so, go on
        print(f"2x2 binned: not supported by the chain yet ({type(exc).__name__}: {exc})")
        return
    t, rss = binned["total"], binned["rss"]
    lo, hi = SPECTRACTOR_2X2_S
    print(f"SUMMARY 2x2: {t:.2f} s (goal <= {GOAL_S:.0f} s); Spectractor 2x2 3 min 50 s - "
          f"14 min 50 s: {lo / t:.0f}x - {hi / t:.0f}x faster; ru_maxrss "
          f"{rss / 2**30:.2f} GiB (process high-water mark, includes the unbinned run)")
    for label in ("1x1", "2x2"):
        bench_atmosphere_fits(args.workdir / f"spectrum_{label}.fits", label, args.repeat)


def bench_atmosphere_fits(path: Path, label: str, repeat: int) -> None:
    """The atmosphere fits of the spectrum just written: on the spectrum (1D) and on its
    spectrogram's pixels (2D), median of ``repeat`` runs."""
    from atmospec.atmosphere.spectrogram_fit import fit_atmosphere_spectrogram
    from atmospec.atmosphere.spectrum_fit import fit_atmosphere
    from spectractor_bridge.spectrum import read_spectrum

    spectrum = read_spectrum(path)
    for name, fit in (("fit_atmosphere (1D)", fit_atmosphere),
                      ("fit_atmosphere_spectrogram (2D)", fit_atmosphere_spectrogram)):
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            result = fit(spectrum)
            times.append(time.perf_counter() - t)
        print(f"SUMMARY {label} {name}: {statistics.median(times):.2f} s (goal <= 2 s), "
              f"{result.nfev} evaluations, PWV {result.values['pwv_mm']:.2f} mm, VAOD "
              f"{result.values['vaod']:.4f}")


if __name__ == "__main__":
    main()
