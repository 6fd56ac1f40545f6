"""EO speed: one detector's full EO suite (issue 18: biases, darks, 20 flat pairs,
superflats) through ``atmospec eo``, end to end, phase by phase.

Run: ``python benchmarks/bench_eo.py [--workdir DIR] [--detectors R22_S11] [--workers N]``.

The acquisition (5 biases, 3 darks of 60 s, 20 flat pairs from 500 e⁻ to 110 ke⁻, 2 low-
and 2 high-flux superflats per detector: 52 raws each, RICE-compressed as the camera writes
them) is simulated once into ``DIR/run``, in a child process so that the simulation's memory
does not count. Then `atmospec.night.eo.run_eo` measures every detector again (``redo``)
on ``--workers`` processes (1: this process, one core: thread pools limited to 1 before
numpy is imported). Printed: wall time, time per detector, each phase (from the detectors'
``eo_figures.json``) and the peak memory (``ru_maxrss`` of this process, and of its largest
child).

Measured on the 2-core development machine shared with other jobs (load average 3.3–4.2),
R22_S11 (e2v), one worker: simulation 310 s; ``atmospec eo`` 159 s (PTC of 20 pairs 90 s,
master bias 12 s, master dark 19 s, superflat 15 s, noise/dark/defect figures 16 s, EPER on
4 superflats 6 s, photodiode linearity 0.2 s), peak memory 885 MB. Issue 18 asks ≤ 2 min on
one idle core.

With issue 18's further figures (same raws, load average 5.5–6.9, so the totals move by
tens of seconds with the machine's load: before 222 s, after 234 s), the phases they add:
cp_verify on the 3 darks re-read 12 s and on the 5 biases 9 s, bias stability, shifts and
amp correlations 10 s, EPER of the 40 ramp flats 2 s, PRNU and divisadero 2 s, tearing,
a_ij and the CTI table < 0.1 s; the pair covariances inside the PTC ~0.5 s per pair;
peak memory 1089 MB (the re-processed bias beside the masters).

December 2026: each phase's CPU time (user + sys, ``cpu_s``) is printed beside its wall
time; on this machine (load average 7–10 on 2 cores) the wall times of one suite ranged
101–229 s, its CPU time 65–73 s. Runs alternating the PTC's ISR with and without the
per-amp summary statistics and overscan noise (``IsrConfig.amp_stats``, results
identical): before 70 and 71 s of CPU (PTC 36.5 and 38.4 s), after 65 and 67 s (PTC 33.0
and 33.9 s); the process's own user + sys 78.8 s before, 74.5 s after (imports
included). Within issue 18's 2 minutes on one core. The PTC is still the largest phase;
half of it is astropy decompressing the 40 flats (~0.9 s of CPU per raw, 0.13 s of it the
RICE decoding, the rest its Python loop over 32 768 one-row tiles).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from atmospec.layout import EO_FIGURES_STEM, eo_dir  # noqa: E402
from atmospec.night.eo import run_eo  # noqa: E402

LEVELS = tuple(float(round(v, -1)) for v in np.geomspace(500.0, 110_000.0, 20))

_SIMULATE = """
import sys
from atmospec.sim.bot import BotConfig, write_bot_run
config = BotConfig(detectors=tuple(sys.argv[2].split(",")), n_bias=5, n_dark=3,
                   dark_exptime_s=60.0, flat_levels_e={levels}, n_sflat_low=2,
                   n_sflat_high=2)
write_bot_run(sys.argv[1], config)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="bench_eo", help="work directory")
    parser.add_argument("--detectors", default="R22_S11", help="comma-separated detectors")
    parser.add_argument("--workers", type=int, default=1, help="detectors at once")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(args.workdir)
    run, repo = work / "run", work / "repo"
    detectors = args.detectors.split(",")
    if not (run / "truth.json").is_file():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", _SIMULATE.format(levels=LEVELS), str(run),
                        args.detectors], check=True)
        print(f"simulated {run} in {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    outcomes = run_eo(run, repo, detectors, workers=args.workers, redo=True)
    wall = time.perf_counter() - t0
    for outcome in outcomes:
        print(outcome.line)
    print(f"TOTAL {wall:.0f} s for {len(outcomes)} detector(s) on {args.workers} worker(s): "
          f"{wall / len(outcomes):.0f} s per detector")
    for det in detectors:
        doc_path = eo_dir(repo, det) / f"{EO_FIGURES_STEM}.json"
        if doc_path.is_file():
            doc = json.loads(doc_path.read_text())
            phases = ", ".join(f"{k} {v:.0f} s" for k, v in doc["timings_s"].items())
            print(f"{det}: wall {sum(doc['timings_s'].values()):.0f} s ({phases}); "
                  f"frames {doc['frames']}")
            cpu = doc.get("cpu_s", {})
            phases = ", ".join(f"{k} {v:.1f} s" for k, v in cpu.items())
            print(f"{det}: CPU {sum(cpu.values()):.0f} s ({phases})")
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak memory: this process {own:.0f} MB; largest child (the workers, and the "
          f"simulation when it ran now) {child:.0f} MB")


if __name__ == "__main__":
    main()
