"""Cost of the 1D order-2/3 correction's capture fraction (issue 19) on refracted frames.

Run: ``python benchmarks/bench_order2_capture.py [--workdir DIR] [--repeat 5]``.

An airmass-2 holo4_003 exposure of HD142331 with orders 0–3 drawn and the differential
refraction on (the zenith at 240° in the image, as ``tests/test_adr.py`` draws it: order 2
lies ~4 px beside order 1 at 950 nm, binned) is simulated once, unbinned (4000 × 4072) and
2×2-binned, in a child process, into ``WORKDIR``. Then, in this process, on one core, CPU
time (``time.process_time``, median of ``--repeat`` runs) of:

1. the 1D chain, ``process_dispersed(..., forward_model=None)`` (zeroth order, extraction,
   wavelength calibration, order-2 correction, spectrum);
2. its extraction alone, ``extract_spectrum`` (now keeping its profile weights);
3. the order-2 correction, ``correct_extraction``, with the capture fraction (the result
   with its weights) and without it (the same result without weights: the full-light
   subtraction, the code before) — the baseline, in the same process.

The issue's rule: no extraction slower by more than 10 %. ``--chain-only`` prints step 1
alone (to run the same script against another checkout's ``PYTHONPATH``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402
from bench_extract import write_frame_pair  # noqa: E402 (the same frame writer)

from atmospec.exposure import Exposure  # noqa: E402
from atmospec.spectro.chain import SpectroscopyConfig, process_dispersed  # noqa: E402

SHAPE = (4000, 4072)
AIRMASS, ROTPA, ZENITH_IN_IMAGE = 2.0, 30.0, 240.0
PRESSURE_HPA, TEMPERATURE_C, HUMIDITY = 743.0, 10.0, 30.0
CONFIG = SpectroscopyConfig(forward_model=None)


def simulate(workdir: Path) -> None:
    """Render the refracted exposure and its 2×2-binned copy into ``workdir``."""
    from atmospec.sim.dispersed import (
        DispersedSceneConfig,
        DispersedSpectrumModel,
        render_dispersed_exposure,
    )

    workdir.mkdir(parents=True, exist_ok=True)
    model = DispersedSpectrumModel(
        target="HD142331", disperser="holo4_003", exptime_s=6.0 * AIRMASS, airmass=AIRMASS,
        pressure_hpa=PRESSURE_HPA, temperature_c=TEMPERATURE_C, relative_humidity=HUMIDITY,
        adr=True, adr_zenith_angle_deg=ZENITH_IN_IMAGE)
    signal, _ = render_dispersed_exposure(
        SHAPE, 1745.2, 3702.7, 0.75 / 0.0952 * AIRMASS**0.6, 68.6,
        np.random.default_rng(511), model, config=DispersedSceneConfig(orders=None))
    signal += np.float32(8.0 * model.exptime_s)
    header = fits.Header({
        "OBSID": "AT_O_20261123_000511", "INSTRUME": "LATISS", "DAYOBS": "20261123",
        "SEQNUM": 511, "DATE-OBS": "2026-11-24T03:00:00", "EXPTIME": model.exptime_s,
        "GRATING": "holo4_003", "FILTER": "empty_1", "LINSPOS": 68.6, "OBJECT": "HD142331",
        "AMSTART": AIRMASS, "ELSTART": 90.0 - math.degrees(math.acos(1.0 / AIRMASS)),
        "AZSTART": 0.0, "ROTPA": ROTPA, "PRESSURE": PRESSURE_HPA * 100.0,
        "AIRTEMP": TEMPERATURE_C, "HUMIDITY": HUMIDITY})
    write_frame_pair(workdir, "adr", signal, header, np.random.default_rng(512))


def cpu(fn, repeat: int) -> tuple[float, object]:
    """Median CPU seconds of ``fn()`` over ``repeat`` runs, and its last value."""
    times, out = [], None
    for _ in range(repeat):
        t = time.process_time()
        out = fn()
        times.append(time.process_time() - t)
    return statistics.median(times), out


def bench(label: str, path: Path, repeat: int, chain_only: bool) -> None:
    exposure = Exposure.read(path)
    t_chain, _ = cpu(lambda: process_dispersed(exposure, config=CONFIG), repeat)
    print(f"{label}: 1D chain process_dispersed {t_chain * 1000:8.1f} ms CPU "
          f"(median of {repeat})")
    if chain_only:
        return
    from atmospec.spectro import chain
    from atmospec.spectro.extract import extract_spectrum
    from atmospec.spectro.order2 import correct_extraction

    seen: dict = {}

    def spy_extract(*args, **kwargs):
        seen["args"], seen["kwargs"] = args, kwargs
        return extract_spectrum(*args, **kwargs)

    def spy_correct(result, disp, **kwargs):
        seen["result"], seen["disp"], seen["ckw"] = result, disp, kwargs
        return correct_extraction(result, disp, **kwargs)

    chain.extract_spectrum, chain.correct_extraction = spy_extract, spy_correct
    try:
        process_dispersed(exposure, config=CONFIG)
    finally:
        chain.extract_spectrum, chain.correct_extraction = extract_spectrum, correct_extraction
    t_ext, _ = cpu(lambda: extract_spectrum(*seen["args"], **seen["kwargs"]), repeat)
    result, disp, kw = seen["result"], seen["disp"], seen["ckw"]
    bare = replace(result, profile_weights=None)
    t_full, _ = cpu(lambda: correct_extraction(bare, disp, **kw), repeat)
    t_cap, corr = cpu(lambda: correct_extraction(result, disp, **kw), repeat)
    n_w = result.profile_weights.nbytes
    print(f"  extract_spectrum {t_ext * 1000:8.1f} ms CPU; profile weights kept "
          f"{result.profile_weights.shape} float32 = {n_w / 2**20:.1f} MiB")
    print(f"  correct_extraction: full-light (before) {t_full * 1000:7.1f} ms, with capture "
          f"(after) {t_cap * 1000:7.1f} ms: +{(t_cap - t_full) * 1000:.1f} ms")
    print(f"  extraction + order 2: after / before = "
          f"{(t_ext + t_cap) / (t_ext + t_full):.3f}; 1D chain: after / (after - capture "
          f"cost) = {t_chain / (t_chain - (t_cap - t_full)):.3f}")
    on = corr.gain > 0
    print(f"  capture of order 2 where it lands: {corr.capture2[on].min():.3f} - "
          f"{corr.capture2[on].max():.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="bench-work/order2_capture", type=Path)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--chain-only", action="store_true")
    parser.add_argument("--simulate-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.simulate_only:
        simulate(args.workdir)
        return
    files = {b: args.workdir / f"adr_{b}.fits" for b in ("2x2", "1x1")}
    if not all(p.exists() for p in files.values()):
        subprocess.run([sys.executable, __file__, "--simulate-only", "--workdir",
                        str(args.workdir)], check=True)
    print(f"load average {os.getloadavg()[0]:.2f} (1 min)")
    for label, path in files.items():
        bench(label, path, args.repeat, args.chain_only)


if __name__ == "__main__":
    main()
