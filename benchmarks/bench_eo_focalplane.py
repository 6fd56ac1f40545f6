"""EO at the scale of the focal plane: the read noise of the LSST Camera's 189 science CCDs
from their biases, on a Dask cluster of 2 workers (issue 18's scale path).

Run: ``python benchmarks/bench_eo_focalplane.py [--workdir DIR] [--keep] [--rafts R22,…]``.

1. The science CCDs are every detector of the LSSTCam description in a raft slot
   ``S00``…``S22`` (`atmospec.camera.description.detector_place`: the corner rafts' guide
   and wavefront sensors have none): 21 rafts × 9 = 189, ITL and e2v in their real places.
2. ``atmospec simulate bot`` writes 2 biases of each (nothing else; RICE-compressed as the
   camera writes them), in two processes, each half of the detectors, into ``DIR/sim_0``
   and ``DIR/sim_1``, merged into ``DIR/run`` (same exposures, one file per detector).
3. A ``dask.distributed.LocalCluster(n_workers=2, threads_per_worker=1)`` started here;
   `atmospec.night.eo.run_eo` with ``executor="dask"`` (as ``atmospec eo RUN --repo REPO
   --executor dask --scheduler ADDR``) measures what biases support on each detector (read
   and total noise, bias stability, shifts, amp correlations), without cp_verify's
   per-frame tests (``EoRunConfig.verify_frames`` off: no master bias), then the focal-plane
   mosaics and histograms are drawn.
4. Printed: simulation and EO wall and CPU time, time per detector, each worker's peak
   memory, and the read noise recovered against the simulator's truth per amp. The read
   noise is converted to e⁻ with the nominal gains (no PTC in a bias run): it is compared
   with the truth in ADU (measured e⁻ / nominal gain against the true ADU noise), and also
   in e⁻ (where the true gains' scatter about the nominal ones enters).

The work folder is deleted at the end unless ``--keep``.

Measured once on the 2-core development machine shared with other jobs (load average
8–14, every process of this run at nice 10; 2026-12-07): simulation of the 378 raws (4.50
GB) 2330 s wall, 702 s CPU. The EO phase was stopped after 114 of the 189 detectors (45
ITL, 69 e2v), 29 min after it started, the machine's load leaving the two workers ~10–40
% of a core each: 686 s of CPU in the two workers for 114–116 detectors, 5.9 s CPU per
detector (2 biases: read, overscan-subtracted, noise and bias figures), 15 s of wall per
detector with 2 workers at that load; peak memory of a worker 0.60 GB, of this process
0.18 GB. Read noise against the truth over those 1824 amps (in ADU): max |relative
error| 1.37 % (R24_S11 C03), median 0.28 %, mean −0.27 %; in e⁻ with the nominal gains,
max 7.6 % (the true gains scatter 2 % about the nominal ones).

Run to the end after the faster raw reader and the one-thread cosmic-ray and BLAS fixes
(2026-12-07, at nice 15 beside the test suite, load average 3.7 at the start, 2.2 at the
end): simulation 1224 s wall, 458 s CPU; EO on the 2 Dask workers: **189 of 189 detectors
in 136 s wall**, 258 s of CPU in the workers (1.4 s per detector; 0.72 s of wall per
detector), peak memory 0.55 GB per worker, 0.30 GB in this process; the 8 focal-plane
mosaics and histograms in 4.1 s. Read noise against the truth over the 3024 amps (ADU):
max |relative error| 1.59 % (R33_S12 C13), median 0.29 %, mean −0.28 %; in e⁻ with the
nominal gains max 7.6 %, median 1.4 %.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from astropy.table import Table

from atmospec.calib.eo_run import EoRunConfig
from atmospec.camera.description import detector_place, list_detectors, load_camera
from atmospec.layout import EO_FIGURES_STEM, eo_dir
from atmospec.night.eo import run_eo, write_eo_plots

INSTRUMENT = "LSSTCam"


def science_detectors(rafts: list[str] | None = None) -> list[str]:
    """The science CCDs (a slot in a raft's 3 × 3 grid), in detector-number order."""
    out = [d for d in list_detectors(INSTRUMENT) if detector_place(d).cell is not None]
    if rafts:
        out = [d for d in out if detector_place(d).raft in rafts]
    return out


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def simulate(work: Path, detectors: list[str], processes: int = 2) -> Path:
    """Two biases of each detector, by ``atmospec simulate bot`` in ``processes`` at once,
    merged into ``work/run``; returns it."""
    halves = [detectors[i::processes] for i in range(processes)]
    procs = []
    for i, half in enumerate(halves):
        cmd = [sys.executable, "-m", "atmospec", "simulate", "bot", "--out",
               str(work / f"sim_{i}"), "--instrument", INSTRUMENT, "--detectors",
               ",".join(half), "--n-bias", "2", "--n-dark", "0", "--levels", "",
               "--n-sflat", "0"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL))
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"simulation failed (exit {p.returncode})")
    run = work / "run"
    truth: dict = {}
    for i in range(processes):
        part = work / f"sim_{i}"
        doc = json.loads((part / "truth.json").read_text())
        if truth:
            truth["detectors"].update(doc["detectors"])
        else:
            truth = doc
        for raw in part.glob("*/*.fits"):
            (run / raw.parent.name).mkdir(parents=True, exist_ok=True)
            raw.rename(run / raw.parent.name / raw.name)
        shutil.rmtree(part)
    (run / "truth.json").write_text(json.dumps(truth) + "\n")
    return run


def read_noise_errors(repo: Path, truth: dict, detectors: list[str]
                      ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Relative read-noise errors of every amp: in ADU (measured e⁻ / nominal gain against
    the true ADU noise) and in e⁻ (against the true e⁻ noise); the amps' labels."""
    adu, electrons, labels = [], [], []
    for det in detectors:
        camera = load_camera(INSTRUMENT, det)
        table = Table.read(eo_dir(repo, det) / f"{EO_FIGURES_STEM}.ecsv", format="ascii.ecsv")
        measured = {str(r["amp"]): float(r["value"]) for r in table
                    if r["figure"] == "read_noise"}
        t = truth["detectors"][det]
        nominal = dict(zip(camera.amp_names, camera.nominal_gains, strict=True))
        for k, amp in enumerate(t["amps"]):
            value = measured.get(amp, np.nan)
            adu.append(value / nominal[amp] / t["read_noise_adu"][k] - 1.0)
            electrons.append(value / t["read_noise_e"][k] - 1.0)
            labels.append(f"{det} {amp}")
    return np.array(adu), np.array(electrons), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="bench_eo_focalplane", help="work folder")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--rafts", help="only these rafts (comma list; default all 21)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from distributed import Client, LocalCluster

    # The cluster's own INFO lines (workers started and retired) are not the results.
    logging.getLogger("distributed").setLevel(logging.WARNING)

    work = Path(args.workdir)
    if work.exists():
        raise SystemExit(f"{work} exists: remove it or choose another --workdir")
    detectors = science_detectors(args.rafts.split(",") if args.rafts else None)
    vendors = [load_camera(INSTRUMENT, d).vendor for d in detectors]
    print(f"{len(detectors)} science CCDs ({vendors.count('ITL')} ITL, "
          f"{vendors.count('E2V')} e2v), 2 biases each; load average at start "
          f"{os.getloadavg()[0]:.1f}")
    try:
        t0, c0 = time.perf_counter(), _children_cpu()
        run = simulate(work, detectors)
        sim_wall, sim_cpu = time.perf_counter() - t0, _children_cpu() - c0
        n_raws = len(list(run.glob("*/*.fits")))
        size = sum(p.stat().st_size for p in run.glob("*/*.fits")) / 1e9
        print(f"simulation: {n_raws} raws ({size:.2f} GB) in {sim_wall:.0f} s wall, "
              f"{sim_cpu:.0f} s CPU (2 processes)")

        repo = work / "repo"
        config = EoRunConfig(verify_frames=False)
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            t0 = time.perf_counter()
            outcomes = run_eo(run, repo, detectors, executor="dask",
                              scheduler=cluster.scheduler_address, config=config,
                              plots=False)
            eo_wall = time.perf_counter() - t0

            def usage() -> tuple[float, float]:
                r = resource.getrusage(resource.RUSAGE_SELF)
                return r.ru_utime + r.ru_stime, r.ru_maxrss / 1024

            per_worker = client.run(usage)
        eo_cpu = sum(cpu for cpu, _ in per_worker.values())
        peaks = sorted(mb for _, mb in per_worker.values())
        t0 = time.perf_counter()
        drawn = write_eo_plots(repo)
        plot_wall = time.perf_counter() - t0
        failed = [o for o in outcomes if o.status != "done"]
        seconds = np.array([o.seconds for o in outcomes if o.status == "done"])
        print(f"EO on Dask (2 workers x 1 thread): {len(outcomes) - len(failed)} of "
              f"{len(outcomes)} detectors in {eo_wall:.0f} s wall, {eo_cpu:.0f} s CPU in the "
              f"workers; {eo_wall / len(outcomes):.2f} s per detector (wall / detectors), "
              f"{np.median(seconds):.1f} s median per detector task")
        for o in failed[:5]:
            print(f"  {o.line}")
        print(f"peak memory per worker: {', '.join(f'{mb:.0f} MB' for mb in peaks)}; "
              f"this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}"
              f" MB")
        print(f"focal-plane mosaics and histograms of {len(drawn)} figures in "
              f"{plot_wall:.1f} s")

        truth = json.loads((run / "truth.json").read_text())
        done = [o.detector for o in outcomes if o.status == "done"]
        adu, electrons, labels = read_noise_errors(repo, truth, done)
        worst = int(np.nanargmax(np.abs(adu)))
        print(f"read noise vs truth over {len(adu)} amps: max |relative error| "
              f"{100 * np.nanmax(np.abs(adu)):.2f} % in ADU ({labels[worst]}), median "
              f"{100 * np.nanmedian(np.abs(adu)):.2f} %, mean {100 * np.nanmean(adu):+.3f} %; "
              f"in e- with the nominal gains: max {100 * np.nanmax(np.abs(electrons)):.2f} %,"
              f" median {100 * np.nanmedian(np.abs(electrons)):.2f} %")
        print(f"load average at end {os.getloadavg()[0]:.1f}")
    finally:
        if not args.keep and work.exists():
            shutil.rmtree(work)


if __name__ == "__main__":
    main()
