"""Coverage of the atmosphere errors on the demo night's path (issue 21).

Run: ``python benchmarks/study_atmosphere_pulls.py [--n 20] [--workers 2] [--calibs night]``.

Simulates ``--n`` full-frame (unbinned) holo4_003 exposures of HD142331 with the demo
night's truth (`atmospec.sim.night.demo_night_config`: PWV 3 mm, ozone 300 DU, VAOD 0.03,
libRadtran's aerosol shape) and independent noise: the demo's night with every on-sky slot
a dispersed exposure, so the airmass runs over the night as the demo's does. Each exposure
goes through what ``atmospec demo`` runs on it: the night runner's job
(`atmospec.night.tasks.run_job`: ISR with the night pipeline's configuration, zeroth order,
extraction, atmosphere fit) with the products the night builds from its calibration frames
(`--calibs night`: master bias, dark and ``empty_1`` flat from the demo's 3 + 3 + 3 frames,
the demo's PTC; built once). ``--calibs truth`` instead runs ISR with the simulator's
perfect products (`FrameTruth.perfect_calibrations`), ``--calibs ideal`` skips the detector
(the light with Poisson and read noise and its true variance is the post-ISR exposure):
both to bisect. ``--truth PWV OZONE VAOD`` sets another atmosphere than the fit's starting
values. About 20 s of CPU per exposure, plus ~2 minutes for the products (docs/atmosphere.md
has the numbers of ``--n 20``).

Printed: one line per exposure (airmass, fitted value and error of PWV, ozone, VAOD, the
pulls, χ²/ndof) and the summary per parameter: mean value, bias, scatter, mean error, pull
mean and width (standard deviation) for the covariance's errors and for the quoted ones
(``errors_quoted``: scaled by √(χ²/ndof) when above 1, ⊕ the fit's systematic); then
the same for the joint fit (`atmospec.atmosphere.joint_fit.fit_atmosphere_joint`, defaults as
``atmospec fit-atmosphere --joint``) of consecutive groups of ``--joint-size`` spectra (2:
the demo's night), per exposure.

Everything is written in a temporary directory removed at the end (``--keep DIR`` keeps the
spectra and fit files in DIR instead, for a second look).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

PARAMETERS = ("pwv_mm", "ozone_du", "vaod")
WIDTH_GOAL = (0.7, 1.5)
MEAN_GOAL = 0.5


@dataclass(frozen=True)
class Setup:
    """What every worker needs to process one exposure."""

    config: Any
    """The night (`atmospec.sim.night.NightConfig`)."""
    calibs: Any
    """`atmospec.calib.isr_inputs.CalibrationFiles` (``--calibs night``) or None (truth)."""
    work: str
    """Working directory."""
    keep_postisr: bool = False
    mode: str = "night"
    """``--calibs``."""


def _truth(config) -> dict[str, float]:
    m = config.dispersed_spectrum
    return {"pwv_mm": m.pwv_mm, "ozone_du": m.ozone_du, "vaod": m.vaod}


def build_calibrations(config, work: Path):
    """The products ``atmospec demo`` uses for a dispersed exposure, built as it builds them:
    the PTC from the demo's flat pairs, master bias, dark and the ``empty_1`` flat from the
    night's calibration frames (`atmospec.night.calibs`' configurations)."""
    from atmospec.calib.files import build_master_file, build_ptc_file
    from atmospec.calib.isr_inputs import CalibrationFiles
    from atmospec.calib.masters import DarkConfig, FlatConfig, MasterConfig
    from atmospec.night.pipeline import load_pipeline
    from atmospec.sim.night import demo_ptc_config, night_plan, simulate_exposure
    from atmospec.sim.rawfile import write_raw
    from atmospec.sim.sequences import write_flat_pairs

    built = {k: work / f"{k}.fits" for k in ("bias", "dark", "flat", "ptc")}
    if all(p.is_file() for p in built.values()):  # --keep: built by an earlier run
        return CalibrationFiles(**{k: str(p) for k, p in built.items()})
    raw_dir = work / "calib_raw"
    raw_dir.mkdir(parents=True)
    dispersed_filter = config.dispersed_filter
    frames: dict[str, list[str]] = {"bias": [], "dark": [], "flat": []}
    for p in night_plan(config):
        if p.kind in ("bias", "dark") or (p.kind == "flat" and p.filter_name == dispersed_filter):
            segments, _, cards = simulate_exposure(p.kind, config, p.seq)
            frames[p.kind].append(str(write_raw(raw_dir / f"{p.obs_id}.fits", segments, cards,
                                                compress=config.compress)))
    pairs = write_flat_pairs(work / "flat_pairs", demo_ptc_config(config))
    ptc = build_ptc_file(pairs, work / "ptc.fits")
    policy = load_pipeline().calibrations
    out: dict[str, str | None] = {"ptc": str(ptc)}
    for kind, cls in (("bias", MasterConfig), ("dark", DarkConfig), ("flat", FlatConfig)):
        path = build_master_file(
            kind, frames[kind], work / f"{kind}.fits", bias=out.get("bias"),
            dark=out.get("dark") if kind == "flat" else None, ptc=str(ptc),
            config=cls(skip_bad=True, min_inputs=policy.min_frames.get(kind, 1)))
        out[kind] = str(path)
    shutil.rmtree(raw_dir)
    shutil.rmtree(work / "flat_pairs")
    return CalibrationFiles(bias=out["bias"], dark=out["dark"], flat=out["flat"], ptc=out["ptc"])


def process(seq: int, setup: Setup) -> dict[str, Any]:
    """One dispersed exposure of the night through the night's job; its fit."""
    from atmospec.night.pipeline import load_pipeline
    from atmospec.night.tasks import ExposureJob, TaskSpec, run_job
    from atmospec.sim.night import simulate_exposure
    from atmospec.sim.rawfile import write_raw

    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    config = setup.config
    out_dir = Path(setup.work) / f"seq{seq:04d}"
    out_dir.mkdir(parents=True, exist_ok=True)
    segments, truth, cards = simulate_exposure("dispersed", config, seq)
    raw = write_raw(out_dir / f"{truth.plan.obs_id}.fits", segments, cards,
                    compress=config.compress)
    del segments
    pipeline = load_pipeline()
    tasks = tuple(TaskSpec(t.name, t.config, "study", t.inputs)
                  for t in pipeline.tasks_for("dispersed"))
    if setup.mode == "ideal":
        outcomes = _run_on_ideal_exposure(raw, truth, cards, tasks, out_dir, seq, config)
    elif setup.calibs is None:
        outcomes = _run_with_truth_calibrations(raw, truth, tasks, out_dir)
    else:
        job = ExposureJob(truth.plan.obs_id, str(raw), str(out_dir), tasks, setup.calibs)
        outcomes = run_job(job)
    raw.unlink()
    failed = [f"{o.task}: {o.reason}" for o in outcomes if o.status != "done"]
    result: dict[str, Any] = {"seq": seq, "airmass": truth.plan.airmass, "failed": failed}
    for o in outcomes:
        if o.task == "isr" and not setup.keep_postisr:
            for path in o.outputs.values():
                Path(path).unlink(missing_ok=True)
        if o.task == "extract":
            result["spectrum"] = o.outputs.get("spectrum")
        if o.task == "fit_atmosphere" and o.status == "done":
            fit = json.loads(Path(o.outputs["fit"]).read_text())
            result.update(values=fit["values"], errors=fit["errors"],
                          errors_quoted=fit["errors_quoted"], chi2_ndof=fit["chi2_ndof"],
                          label=fit["errors_label"])
    return result


def _run_with_truth_calibrations(raw: Path, truth, tasks, out_dir: Path):
    """The night's job with ISR given the simulator's perfect products."""
    import atmospec.night.tasks as night_tasks
    from atmospec.calib.isr_inputs import CalibrationFiles

    perfect = truth.perfect_calibrations()
    original = night_tasks._calibrations
    night_tasks._calibrations = lambda files, camera: perfect
    try:
        job = night_tasks.ExposureJob(truth.plan.obs_id, str(raw), str(out_dir), tasks,
                                      CalibrationFiles())
        return night_tasks.run_job(job)
    finally:
        night_tasks._calibrations = original


def _run_on_ideal_exposure(raw: Path, truth, cards, tasks, out_dir: Path, seq: int, config):
    """The night's job after ISR, on the light alone: Poisson noise on the noiseless
    signal (no flat-field response, dark, bias, cosmic rays, crosstalk or saturation) and
    the read noise, with its true variance, as the post-ISR exposure."""
    from astropy.io import fits

    import atmospec.night.tasks as night_tasks
    from atmospec.calib.isr_inputs import CalibrationFiles
    from atmospec.exposure import Exposure

    det = truth.detector
    signal = (np.asarray(det.expected_e, dtype=np.float64)
              - np.asarray(det.dark_current_e_per_s) * truth.plan.darktime)
    if truth.illumination is not None:
        signal /= truth.illumination
    signal = np.clip(signal, 0.0, None)
    rng = np.random.default_rng([config.seed, seq, 77])
    rn = float(np.mean(det.read_noise_e))
    image = (rng.poisson(signal) + rng.normal(0.0, rn, signal.shape)).astype(np.float32)
    exposure = Exposure.from_image(image, metadata=fits.Header(cards))
    exposure.variance[:] = (signal + rn**2).astype(np.float32)
    job = night_tasks.ExposureJob(truth.plan.obs_id, str(raw), str(out_dir), tasks,
                                  CalibrationFiles())
    ctx = night_tasks._Context(job)
    ctx.postisr = exposure
    ctx.outputs["isr"] = {"postisr": "(in memory)"}
    outcomes = []
    for spec in tasks:
        if spec.name == "isr":
            continue
        try:
            night_tasks.TASKS[spec.name].run(ctx, spec.config)
            outcomes.append(night_tasks.TaskOutcome(
                job.obs_id, spec.name, "done", None, "", None, 0.0,
                ctx.outputs.get(spec.name, {}), {}))
        except Exception as exc:
            outcomes.append(night_tasks.TaskOutcome(
                job.obs_id, spec.name, "failed", str(exc), "", None, 0.0, {}, {}))
            break
    return outcomes


def joint_fits(results: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    """Joint fits (``atmospec fit-atmosphere --joint`` defaults) of consecutive groups."""
    from atmospec.atmosphere.joint_fit import JointFitConfig, fit_atmosphere_joint
    from spectractor_bridge.spectrum import read_spectrum

    out = []
    usable = [r for r in results if r.get("spectrum") and not r["failed"]]
    for start in range(0, len(usable) - size + 1, size):
        group = usable[start:start + size]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_atmosphere_joint([partial(read_spectrum, r["spectrum"]) for r in group],
                                       JointFitConfig())
        for e, r in enumerate(group):
            out.append({"seq": r["seq"], "airmass": r["airmass"], "values": fit.values[e],
                        "errors": fit.errors[e], "errors_quoted": fit.errors_quoted[e],
                        "chi2_ndof": fit.chi2_ndof, "label": fit.errors_label,
                        "failed": [] if fit.success else list(fit.problems)})
    return out


def _pulls(rows: list[dict[str, Any]], truth: dict[str, float], errors: str
           ) -> dict[str, np.ndarray]:
    ok = [r for r in rows if "values" in r]
    return {p: np.array([(r["values"][p] - truth[p]) / r[errors][p] if r[errors][p]
                         else np.nan for r in ok]) for p in PARAMETERS}


def report(title: str, rows: list[dict[str, Any]], truth: dict[str, float]) -> dict[str, Any]:
    """Print the per-exposure table and the summary; return the summary."""
    print(f"\n{title}")
    print(f"{'seq':>5s} {'X':>6s} " + " ".join(f"{p:>17s} {'pull':>6s}" for p in PARAMETERS)
          + f" {'chi2/n':>7s}")
    for r in rows:
        if "values" not in r:
            print(f"{r['seq']:5d} failed: {'; '.join(r['failed'])}")
            continue
        cells = []
        for p in PARAMETERS:
            v, e = r["values"][p], r["errors"][p]
            pull = (v - truth[p]) / e if e else float("nan")
            cells.append(f"{v:8.4g} ± {e:6.2g} {pull:+6.2f}")
        flag = "" if not r["failed"] else "  (" + "; ".join(r["failed"]) + ")"
        print(f"{r['seq']:5d} {r['airmass']:6.3f} " + " ".join(cells)
              + f" {r['chi2_ndof']:7.3f}{flag}")
    pulls = _pulls(rows, truth, "errors")
    scaled = _pulls(rows, truth, "errors_quoted")
    summary: dict[str, Any] = {}
    n = len(next(iter(pulls.values())))
    print(f"summary over {n} fits (pull = (fit − truth)/σ; width = standard deviation; goal "
          f"width {WIDTH_GOAL[0]}–{WIDTH_GOAL[1]}, |mean| ≤ {MEAN_GOAL}; σ the covariance's "
          "errors, then the quoted ones: e.g. "
          f"{next((r['label'] for r in rows if 'label' in r), '')}):")
    ok = [r for r in rows if "values" in r]
    for p in PARAMETERS:
        v = np.array([r["values"][p] for r in ok])
        e = np.array([r["errors"][p] or np.nan for r in ok])
        width, mean = float(np.nanstd(pulls[p], ddof=1)), float(np.nanmean(pulls[p]))
        q_mean, q_width = float(np.nanmean(scaled[p])), float(np.nanstd(scaled[p], ddof=1))
        inside = WIDTH_GOAL[0] <= q_width <= WIDTH_GOAL[1] and abs(q_mean) <= MEAN_GOAL
        summary[p] = {"mean_pull": mean, "width": width, "mean_pull_quoted": q_mean,
                      "width_quoted": q_width}
        print(f"  {p:9s} truth {truth[p]:8.4g}  mean {v.mean():8.4g}  bias "
              f"{v.mean() - truth[p]:+9.3g}  scatter {v.std(ddof=1):8.3g}  mean σ "
              f"{np.nanmean(e):8.3g}  pull mean {mean:+5.2f} width {width:4.2f}  (quoted "
              f"errors: mean {q_mean:+5.2f}, width {q_width:4.2f})  "
              f"{'ok' if inside else 'OUTSIDE'}")
    return summary


def main(argv: list[str] | None = None) -> int:
    """Run the study (see the module docstring)."""
    from atmospec.sim.night import demo_night_config, night_plan

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20, help="dispersed exposures (default 20)")
    parser.add_argument("--workers", type=int, default=2, choices=(1, 2))
    parser.add_argument("--seed", type=int, default=1, help="the night's seed (demo: 1)")
    parser.add_argument("--calibs", choices=("night", "truth", "ideal"), default="night",
                        help="ISR products: built from the night's frames (as the demo), "
                             "or the simulator's perfect ones; ideal: no detector (the "
                             "light with Poisson and read noise is the post-ISR exposure)")
    parser.add_argument("--joint-size", type=int, default=2,
                        help="spectra per joint fit (0: no joint fit)")
    parser.add_argument("--truth", type=float, nargs=3, metavar=("PWV", "OZONE", "VAOD"),
                        help="another atmosphere than the demo's (3 mm, 300 DU, 0.03: the "
                             "fit's starting values)")
    parser.add_argument("--keep", help="keep the outputs in this directory (the products "
                                       "built there by an earlier run are reused)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)

    config = replace(demo_night_config(args.seed), n_science=0, n_dispersed=args.n,
                     n_corrupt=0)
    if args.truth:
        config = replace(config, dispersed_spectrum=replace(
            config.dispersed_spectrum, pwv_mm=args.truth[0], ozone_du=args.truth[1],
            vaod=args.truth[2]))
    truth = _truth(config)
    seqs = [p.seq for p in night_plan(config) if p.kind == "dispersed"]
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="atmospec-pulls-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        calibs = None
        if args.calibs == "night":
            print("building the demo's PTC, master bias, dark and empty_1 flat ...", flush=True)
            calibs = build_calibrations(config, work)
            print(f"  done in {time.perf_counter() - t0:.0f} s", flush=True)
        setup = Setup(config, calibs, str(work), keep_postisr=bool(args.keep),
                      mode=args.calibs)
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            results = []
            for r in pool.map(partial(process, setup=setup), seqs):
                print(f"  seq {r['seq']} done ({time.perf_counter() - t0:.0f} s)", flush=True)
                results.append(r)
        report(f"single-exposure fits ({args.n} full-frame exposures, calibrations: "
               f"{args.calibs})", results, truth)
        if args.joint_size > 1:
            report(f"joint fits of {args.joint_size} consecutive spectra (per exposure)",
                   joint_fits(results, args.joint_size), truth)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
