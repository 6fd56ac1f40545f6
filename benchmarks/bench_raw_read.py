"""Reading raw pixels: our RICE tile loop against astropy's reader, in the same process.

Run: ``python benchmarks/bench_raw_read.py [--repeat 5]``.

One simulated RICE-compressed raw each of LATISS (16 amps of 2048×576, one row per tile)
and of an LSSTCam e2v and ITL CCD (16 amps each, one row per tile, as the cameras write
them) goes through `atmospec.camera.raw._read_segments` with the fast path
(`atmospec.compression.decompress_rice_image`) and with astropy alone, alternately. Printed:
median CPU time of each, their ratio, and whether the pixels are identical.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from atmospec.camera import raw as raw_module
from atmospec.sim.bot import BotConfig, write_bot_run
from atmospec.sim.night import NightConfig, simulate_night


def cpu(repeat: int, layout: raw_module.RawLayout) -> tuple[float, float, bool]:
    """Median CPU seconds of the fast and of the astropy read, and whether they agree."""
    fast_path = raw_module._decoded_tiles
    times: dict[str, list[float]] = {"fast": [], "astropy": []}
    pixels = {}
    for _ in range(repeat):
        for name in ("fast", "astropy"):
            raw_module._decoded_tiles = fast_path if name == "fast" else (lambda s, h: None)
            c0 = time.process_time()
            pixels[name] = raw_module._read_segments(layout)[0]
            times[name].append(time.process_time() - c0)
    raw_module._decoded_tiles = fast_path
    return (statistics.median(times["fast"]), statistics.median(times["astropy"]),
            np.array_equal(pixels["fast"], pixels["astropy"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="reads per path and raw")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_raw_read_") as tmp:
        work = Path(tmp)
        latiss = next(p for p in simulate_night(work / "latiss", NightConfig(
            n_bias=1, n_dark=0, n_flat=0, n_science=0, n_dispersed=0, compress=True))
            if p.suffix == ".fits")
        write_bot_run(work / "bot", BotConfig(detectors=("R22_S11", "R10_S11"), n_bias=1,
                                              n_dark=0, flat_levels_e=(), n_sflat_low=0,
                                              n_sflat_high=0))
        raws = {"LATISS": latiss}
        for detector, vendor in (("R22_S11", "e2v"), ("R10_S11", "ITL")):
            raws[f"LSSTCam {detector} ({vendor})"] = next(
                p for p in sorted((work / "bot").rglob("*.fits")) if detector in p.name)
        print(f"raw pixel read, median CPU of {args.repeat} alternating reads")
        ratios = []
        for name, path in raws.items():
            fast, slow, same = cpu(args.repeat, raw_module.check_raw_structure(path))
            ratios.append(slow / fast)
            print(f"  {name:28s} fast {fast:.3f} s  astropy {slow:.3f} s  "
                  f"ratio {slow / fast:.1f}x  pixels {'identical' if same else 'DIFFER'}")
        print(f"SUMMARY: raw reads {min(ratios):.1f}-{max(ratios):.1f}x less CPU than astropy's")


if __name__ == "__main__":
    main()
