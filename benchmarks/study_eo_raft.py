"""A simulated 9-CCD raft against its truth: every EO figure ``atmospec eo`` measures, and
the verdict of every amp on every specification (issue 18's "must show").

Run: ``python benchmarks/study_eo_raft.py [--workdir DIR] [--keep] [--raft R22]
[--workers 2]`` (``--check-only`` compares a kept run again).

The raft (R22: nine e2v CCDs, as the LSSTCam description has them) is simulated by
`atmospec.sim.bot.write_bot_run` with what the simulator injects and writes as truth:

- per amp: true gains (2 % scatter about the nominal ones), read noise (the nominal
  values: 3.9–8.1 e⁻ on R22), non-linearity (2 % at 100 kADU × 0.8–1.2 per amp);
- dark current 0.002 e⁻/s with hot pixels (8–50 e⁻/s, 1e-5 of the pixels) and three bright
  half-columns (6–10 e⁻/s) per CCD; cold pixels (2e-5, response 0.2–0.7) and two dark
  half-columns (response 0.3–0.7) per CCD;
- serial CTI 8e-6 on C07 (fails CCD-010) and 4e-6 on C06; parallel CTI 6e-6 on C03 (fails
  CCD-011) and 2e-6 on C02; the others none;
- brighter-fatter α_x = α_y = 3.8e-7 /e⁻ (a00 = −3.04e-6, inside both vendors' PTC-A00
  ranges);
- tearing on one CCD (S00: 4 % of the edge columns' charge in the first 400 rows read).

To bound its cost the acquisition is 3 biases, 2 darks of 300 s, **6 flat pairs** (1, 3, 8,
20, 45 and 100 ke⁻; the BOT takes ~20), one low- and one high-flux superflat per CCD. It
is reduced by ``atmospec eo RUN --repo REPO --workers 2`` (a child process; its wall and
CPU time are printed), and each figure is set against the truth with issue 18's tolerances:

=================== ================================================================
figure              truth and tolerance
=================== ================================================================
gain                true gain, ≤ 1 %
read noise          true read noise, ≤ 3 %
DC95                the 95th percentile of the true dark-current map of the amp plus
                    the per-pixel noise of the master dark (the darks' shot and read
                    noise, the master bias's, the overscan subtraction's), ≤ 5 %
defects             true bright (> 5 e⁻/s) and dark (< 0.8 response) pixels: ≥ 99 %
                    found, ≤ 0.5 % of those found false
CTI (high flux)     injected amps within 10 %; the others |CTI| < 5e-7
linearity           the same line fit on the noiseless amp means and the true
                    photodiode charges, within 0.2 % absolute
=================== ================================================================

and the CTI of the 1 ke⁻ superflats, PRNU, a_ij and tearing are printed beside their
truth. The verdict of every (amp, specification) is compared with what the truth says it
should be; amps whose true value lies within the measurement tolerance of a limit are
counted apart (a wrong verdict there would be within the stated tolerances).

The work folder is deleted at the end unless ``--keep``.

Run once, on 3 of the 9 CCDs (``--slots S00,S11,S22``: the machine, shared and loaded,
left no time for 9), load average 11.5 at the start: simulation 1253 s wall, 294 s CPU;
``atmospec eo --workers 2`` 279 s wall, 169 s CPU, 1.44 GB peak per process. Worst
errors: gain 0.98 %, read noise 1.56 %, PTC noise 1.22 %, DC95 3.57 %, CTI high flux
(injected amps) serial 0.93 %, parallel 2.11 % (others < 6e-8), linearity 0.12 %
absolute; defects 18509/18509 bright and 12995/12995 dark found, 0 false; tearing flagged
on S00 only (32 detections). Outside: the parallel CTI of the 1 ke⁻ superflat at 2e-6
(+46 %: one frame's EPER noise is ~1–2e-6, as the non-injected amps show). Verdicts:
723 judged, 42 wrong, all PTC-A00: the fitted a00 ~1e-6 below the brighter-fatter truth.

Why, found on one amp without non-linearity or CTI (16–20 flat pairs, 4–16 seeds): the
simulator's brighter-fatter filter had the right a00 to first order only (variance
μ[(1 − 4b)² + 4b²], b = α·μ, which curves less than Astier's eq. 16): the PTC fit put a00
0.37e-6 and the gain 0.5 % low, −0.43e-6 even on the noiseless curve at these six levels.
The simulator now sets b so that the variance is eq. 16 exactly
(`atmospec.sim.detector.brighter_fatter_strength`); the same amp then gives a00 − truth =
+0.02e-6 ± 0.007e-6 over 40 seeds (scatter 0.045e-6, the fit's own error). The rest was
this script's truth: the non-linearity's share of a00 was taken to first order (−3c/g),
which misses a further −0.10 to −0.17e-6 at 100 kADU; `expected_ptc_a00` now fits the
noiseless raw ramp.

Run again after both (same CCDs, load average 1.8 → 7.8): simulation 291 s wall, 136 s CPU;
``atmospec eo --workers 2`` 307 s wall, 116 s CPU, 1.45 GB peak. a00 against the expected
raw ramp: +0.04e-6 ± 0.035e-6 on the amps without injected CTI (worst +0.10e-6), up to
+0.14e-6 on those with (S00 C03); against the brighter-fatter truth alone −0.43 to −0.69e-6,
the non-linearity's share. Gain within 0.53 % on the amps without injected CTI; those with
are high by ≈ 2·CTI·transfers (deferred charge smooths a flat's noise): +1.2 to +1.6 % at
parallel 6e-6 (C03), +0.6 to +0.7 % at serial 8e-6 (C07) — the earlier −0.5 % bias hid it.
Other figures as before (read noise 1.27 %, PTC noise 1.85 %, DC95 4.21 %, CTI 0.93 % /
2.1 %, linearity 0.118 %, defects all found and none false, tearing on S00 only; the 1 ke⁻
parallel CTI still +46 %). Verdicts: 723 judged, 14 wrong (13 PTC-A00, 1 PTC-GAIN), every
one on an amp whose truth lies within the measurement tolerance of the limit (46 such:
42 PTC-A00 — the raw ramp's a00 here, −3.47 to −3.73e-6, straddles e2v's −3.52e-6 —,
3 CCD-010, 1 PTC-GAIN), 0 wrong elsewhere.

Run on the whole raft (9 CCDs, 2026-12-07, at nice 10 beside the test suite, load average
2.8 at the start): simulation 2001 s wall, 373 s CPU; ``atmospec eo --workers 2`` 160 s
wall, 223 s CPU, 1.54 GB peak per process (load 3.5). Worst errors: gain +0.76 % (no
injected CTI; +1.61 % at parallel CTI 6e-6, as above), read noise +1.46 %, PTC noise
+2.02 %, DC95 +4.21 %, CTI high flux on the injected amps serial +1.05 %, parallel +3.86 %
(others < 6e-8), serial CTI at 1 ke⁻ −22.5 %, linearity 0.118 % absolute; bright defects
55527 of 55527 found with 1 false (0.002 %), dark 38987 of 38987 with none; tearing
flagged on S00 only. Outside its tolerance: the 1 ke⁻ superflat's parallel CTI at 2e-6
(+74 % on S20 C02, one low-flux frame's EPER noise, as before). Verdicts: 2169 judged on
144 amps, 38 wrong, 37 of them on the 150 amps whose truth lies within the measurement
tolerance of a limit (PTC-A00 and PTC-GAIN); the one wrong elsewhere is that same S20 C02
parallel CTI at 1 ke⁻ (CCD-011 failed at 3.48e-6 against a truth of 2e-6).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from astropy.table import Table

from atmospec.calib.eo import max_fractional_deviation
from atmospec.calib.eo_specs import DETECTOR_AMP
from atmospec.calib.ptc import astier_model, fit_ptc
from atmospec.camera.description import Camera, load_camera
from atmospec.isr.defects import defect_mask
from atmospec.layout import EO_FIGURES_STEM, eo_dir, eo_table
from atmospec.sim.bot import BotConfig, detector_config
from atmospec.sim.detector import DetectorSimConfig, sensor_model

SIM = DetectorSimConfig(
    cti_serial_by_amp=(("C07", 8e-6), ("C06", 4e-6)),
    cti_parallel_by_amp=(("C03", 6e-6), ("C02", 2e-6)),
    cold_pixel_fraction=2e-5, n_cold_columns=2, nonlinearity=0.02,
    hot_pixel_rate_e_per_s=(8.0, 50.0), hot_column_rate_e_per_s=(6.0, 10.0),
    brighter_fatter=(3.8e-7, 3.8e-7))

LEVELS = (1000.0, 3000.0, 8000.0, 20000.0, 45000.0, 100000.0)

#: Tolerances of issue 18 (relative unless said).
TOL = {"gain": 0.01, "read_noise": 0.03, "dark_current_95": 0.05, "cti": 0.10,
       "cti_low": 0.25, "linearity_abs": 0.2, "found": 0.99, "false": 0.005}

#: Absolute measurement tolerances of figures judged against a limit, to call a truth "at
#: the limit": a00 0.15e-6 /e⁻ (fitted − expected on this run's amps without injected CTI:
#: +0.04e-6 ± 0.035e-6, worst +0.10e-6; with CTI up to +0.14e-6), the gain's 1 % on
#: ``ptc_gain_vs_nominal``.
ABS_TOL = {"ptc_a00": 0.15e-6, "ptc_gain_vs_nominal": TOL["gain"]}


ALL_SLOTS = tuple(f"S{r}{c}" for r in range(3) for c in range(3))


def bot_config(raft: str, slots: tuple[str, ...] = ALL_SLOTS) -> BotConfig:
    """The acquisition; tearing on the first slot's CCD."""
    detectors = tuple(f"{raft}_{s}" for s in slots)
    return BotConfig(detectors=detectors, n_bias=3, n_dark=2, dark_exptime_s=300.0,
                     flat_levels_e=LEVELS, n_sflat_low=1, n_sflat_high=1, detector=SIM,
                     tearing=(detectors[0],))


_SIMULATE = """
import pickle, sys
from atmospec.sim.bot import write_bot_run
write_bot_run(sys.argv[1], pickle.loads(bytes.fromhex(sys.argv[2])))
"""


def _children() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime, r.ru_maxrss / 1024


def figures_of(repo: Path, detector: str) -> dict[str, dict[str, float]]:
    """figure → amp → value, from the detector's long table."""
    table = Table.read(eo_dir(repo, detector) / f"{EO_FIGURES_STEM}.ecsv", format="ascii.ecsv")
    out: dict[str, dict[str, float]] = {}
    for r in table:
        out.setdefault(str(r["figure"]), {})[str(r["amp"])] = float(r["value"])
    return out


def predicted_dc95(sensor, camera: Camera, det: dict, darktime: float, n_dark: int,
                   n_bias: int, rng: np.random.Generator) -> np.ndarray:
    """The 95th percentile of each amp's true dark-current map plus the master dark's
    per-pixel noise, e⁻/s."""
    n_os = camera.serial_overscan_bbox.nx - 6
    out = []
    for i, amp in enumerate(camera.amplifiers):
        rate = sensor.dark_current_e_per_s[camera.amp_slices(amp)].ravel()
        rn2 = det["read_noise_e"][i] ** 2 * (1.0 + np.pi / 2 / n_os)
        sigma = np.sqrt((rate * darktime + rn2) / n_dark + rn2 / n_bias) / darktime
        out.append(np.percentile(rate + sigma * rng.standard_normal(rate.size), 95))
    return np.array(out)


def expected_linearity(truth: dict, det: dict) -> np.ndarray:
    """Max fractional deviation (%) of each amp from the truth: the noiseless amp means
    (true gain, the simulated non-linearity) against the true photodiode charges."""
    exposures = {e["folder"]: e for e in truth["exposures"]}
    by_level: dict[float, list[tuple[float, np.ndarray]]] = {}
    for frame in det["frames"]:
        e = exposures[frame["folder"]]
        if e["test_type"] == "FLAT":
            by_level.setdefault(e["level_e"], []).append(
                (e["photodiode_charge_c"], np.asarray(frame["mean_e"])))
    gains = np.asarray(det["gains"])
    f = np.asarray(det["nonlinearity"]) / 1e5
    x = np.array([np.mean([c for c, _ in v]) for v in by_level.values()])
    adu = np.array([np.mean([m for _, m in v], axis=0) for v in by_level.values()]) / gains
    adu = adu * (1.0 - f * adu)
    return np.array([max_fractional_deviation(x, adu[:, i], 1_000.0 / g, 90_000.0 / g)
                     for i, g in enumerate(gains)])


class Worst:
    """The worst error of each figure, with its tolerance."""

    def __init__(self) -> None:
        self.rows: dict[str, list] = {}

    def add(self, name: str, errors: np.ndarray, labels: list[str], tol: float | None,
            unit: str = "") -> None:
        errors = np.asarray(errors, dtype=float)
        prev = self.rows.get(name)
        if not np.isfinite(errors).any():  # not measured: shown as NaN, never hidden
            if prev is None:
                self.rows[name] = [float("nan"), "not measured", tol, unit]
            return
        i = int(np.nanargmax(np.abs(errors)))
        if prev is None or not np.isfinite(prev[0]) or abs(errors[i]) > abs(prev[0]):
            self.rows[name] = [float(errors[i]), labels[i], tol, unit]

    def print(self) -> int:
        bad = 0
        print(f"{'figure':34s} {'worst error':>14s} {'where':>14s} {'tolerance':>10s}  ok")
        for name, (err, where, tol, unit) in self.rows.items():
            ok = "-" if tol is None else ("yes" if abs(err) <= tol else "NO")  # NaN: NO
            bad += ok == "NO"
            scale, u = (100.0, "%") if unit == "%" else (1.0, unit)
            tol_s = "-" if tol is None else f"{scale * tol:.3g}{u}"
            print(f"{name:34s} {scale * err:+13.3g}{u:1s} {where:>14s} {tol_s:>10s}  {ok}")
        return bad


def expected_status(truth_value: float, lower: float, upper: float) -> str:
    """The verdict the true value gets."""
    ok = (np.isnan(lower) or truth_value > lower) and (np.isnan(upper) or truth_value < upper)
    return "pass" if ok else "fail"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="study_eo_raft", help="work folder")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--raft", default="R22", help="raft (its 9 CCDs)")
    parser.add_argument("--workers", type=int, default=2, help="detectors at once")
    parser.add_argument("--slots", default=",".join(ALL_SLOTS),
                        help="slots of the raft (default all 9; fewer to bound the cost)")
    parser.add_argument("--check-only", action="store_true",
                        help="compare a kept run's tables with its truth again (--keep)")
    args = parser.parse_args()
    work = Path(args.workdir)
    if work.exists() and not (work / "run" / "truth.json").is_file():
        raise SystemExit(f"{work} exists without a simulated run: remove it")
    run, repo = work / "run", work / "repo"
    config = bot_config(args.raft, tuple(x.strip() for x in args.slots.split(",")))
    print(f"load average at start {os.getloadavg()[0]:.1f}")
    if args.check_only:
        check(run, repo, config)
        return
    try:
        import pickle

        if not (run / "truth.json").is_file():
            t0, (c0, _) = time.perf_counter(), _children()
            subprocess.run([sys.executable, "-c", _SIMULATE, str(run),
                            pickle.dumps(config).hex()], check=True)
            print(f"simulated {len(config.detectors)} CCDs in {time.perf_counter() - t0:.0f}"
                  f" s wall, {_children()[0] - c0:.0f} s CPU")
        if repo.exists():
            shutil.rmtree(repo)
        t0, (c0, _) = time.perf_counter(), _children()
        done = subprocess.run([sys.executable, "-m", "atmospec", "eo", str(run), "--repo",
                               str(repo), "--workers", str(args.workers)],
                              capture_output=True, text=True)
        wall, (cpu, peak) = time.perf_counter() - t0, _children()
        print(done.stdout, end="")
        if done.returncode not in (0, 1):
            raise SystemExit(f"atmospec eo failed: {done.stderr.strip()}")
        print(f"atmospec eo --workers {args.workers}: {wall:.0f} s wall, {cpu - c0:.0f} s CPU"
              f" (user + sys of it and its workers), peak memory of a process {peak:.0f} MB; "
              f"load average {os.getloadavg()[0]:.1f}")
        check(run, repo, config)
    finally:
        if not args.keep and work.exists():
            shutil.rmtree(work)


def truth_values(det: dict, sensor, camera: Camera, config: BotConfig, dc95: np.ndarray,
                 lin: np.ndarray) -> dict[str, tuple[np.ndarray, float | None]]:
    """What the truth says each specified figure of each amp is, with the measurement's
    tolerance (relative; None: not used to call a truth "at the limit")."""
    n = len(det["amps"])
    rn = np.asarray(det["read_noise_e"])
    cti_s, cti_p = np.asarray(det["cti_serial"]), np.asarray(det["cti_parallel"])
    defective = (sensor.dark_current_e_per_s > 5.0) | (sensor.response < 0.8)
    top = max(LEVELS)  # the ramp stops below full well: its top is the turnoff
    divisadero = det["tearing"]["amplitude"] if det["tearing"] is not None else 0.0
    return {
        "read_noise": (rn, TOL["read_noise"]),
        "full_well": (np.full(n, top), None),
        "linearity_max_frac_dev": (lin, None),
        "cti_serial_high": (cti_s, TOL["cti"]), "cti_serial_low": (cti_s, TOL["cti_low"]),
        "cti_parallel_high": (cti_p, TOL["cti"]), "cti_parallel_low": (cti_p, TOL["cti_low"]),
        "defect_fraction": (np.array([100 * float(defective[camera.amp_slices(a)].mean())
                                      for a in camera.amplifiers]), None),
        "dark_current_95": (dc95, TOL["dark_current_95"]),
        "prnu": (np.full(n, 100 * config.flat_field.prnu), None),
        "ptc_gain_vs_nominal": (np.asarray(det["gains"]) / np.asarray(det["nominal_gains"])
                                - 1, None),
        "ptc_noise_vs_nominal": (rn / camera.nominal_read_noise - 1, None),
        "ptc_turnoff_e": (np.full(n, top), None),
        "ptc_a00": (expected_ptc_a00(det), None),
        "divisadero_max": (np.full(n, divisadero), None),
    }


def expected_ptc_a00(det: dict) -> np.ndarray:
    """The a00 the PTC fit gives on each amp's noiseless raw ramp, 1/e⁻.

    The PTC sees the raw (not linearised) ramp: the true signal x (ADU) has the Astier
    variance of the brighter-fatter a00 (the simulator's, exact), the response
    m = x(1 − c·x) (c = f/1e5 per ADU) makes it var·(1 − 2c·x)² at mean m. To first order
    that is m/g + (a00 − 3c/g)·m², but at 100 ke⁻ (c·x up to 0.024) the higher orders move
    the fitted a00 by a further −0.10 to −0.17e-6: the truth is the fit
    (`atmospec.calib.ptc.fit_ptc`) of that noiseless curve at the run's levels."""
    gains = np.asarray(det["gains"])
    c = np.asarray(det["nonlinearity"]) / 1e5
    rn = np.asarray(det["read_noise_e"])
    a00 = det["brighter_fatter"]["a00"]
    out = []
    for g, ci, r in zip(gains, c, rn, strict=True):
        x = np.asarray(LEVELS) / g
        var = astier_model(x, a00, g, r * r) * (1.0 - 2.0 * ci * x) ** 2
        out.append(fit_ptc(x * (1.0 - ci * x), var, np.full(x.size, 1e6)).a00)
    return np.array(out)


def judge(repo: Path, name: str, amps: list[str],
          truth_of: dict[str, tuple[np.ndarray, float | None]], wrong: list, marginal: list
          ) -> int:
    """Compare every verdict of a detector's table with the truth's; returns how many were
    judged, appends the wrong ones and those whose truth is within tolerance of a limit."""
    judged = 0
    table = Table.read(eo_dir(repo, name) / f"{EO_FIGURES_STEM}.ecsv", format="ascii.ecsv")
    for r in table:
        if r["status"] == "no spec":
            continue
        figure, amp = str(r["figure"]), str(r["amp"])
        if figure not in truth_of:
            wrong.append((name, amp, f"{r['spec']} {figure}: no truth rule", r["status"]))
            continue
        values, tol = truth_of[figure]
        # The whole detector's row (CCD-012 over the CCD): the mean of its equal amps'.
        t = float(np.mean(values)) if amp == DETECTOR_AMP else float(values[amps.index(amp)])
        judged += 1
        if r["status"] != expected_status(t, float(r["lower"]), float(r["upper"])):
            wrong.append((name, amp, f"{r['spec']} {figure} truth {t:.4g}", r["status"]))
        if (tol or figure in ABS_TOL) and any(
                np.isfinite(lim) and abs(t - lim) <= ABS_TOL.get(figure, (tol or 0) * abs(lim))
                for lim in (float(r["lower"]), float(r["upper"]))):
            marginal.append((name, amp, str(r["spec"]), t))
    return judged


def check(run: Path, repo: Path, config: BotConfig) -> None:
    truth = json.loads((run / "truth.json").read_text())
    darktime = next(e["darktime"] for e in truth["exposures"] if e["test_type"] == "DARK")
    worst = Worst()
    rng = np.random.default_rng(5)
    found_true = {"bright": [0, 0, 0], "dark": [0, 0, 0]}  # true, found & true, found & false
    wrong, marginal, judged = [], [], 0
    notes = []
    for name in config.detectors:
        camera = load_camera(config.instrument, name)
        det = truth["detectors"][name]
        amps = list(det["amps"])
        labels = [f"{name[4:]} {a}" for a in amps]
        fig = figures_of(repo, name)

        def measured(figure: str, fig=fig, amps=amps) -> np.ndarray:
            return np.array([fig.get(figure, {}).get(a, np.nan) for a in amps])

        sensor = sensor_model(detector_config(config, camera), camera)
        gains = np.asarray(det["gains"])
        rn = np.asarray(det["read_noise_e"])
        dc95 = predicted_dc95(sensor, camera, det, darktime, config.n_dark, config.n_bias, rng)
        lin = expected_linearity(truth, det)
        cti_s, cti_p = np.asarray(det["cti_serial"]), np.asarray(det["cti_parallel"])
        # Deferred charge smooths the noise of a flat (by ≈ 2·CTI·transfers): the PTC gain
        # of an amp with injected CTI is high by that much (parallel 6e-6: ~1.2 %).
        clean = (np.asarray(det["cti_serial"]) == 0) & (np.asarray(det["cti_parallel"]) == 0)
        gain_err = measured("gain") / gains - 1
        worst.add("gain (no injected CTI)", gain_err[clean],
                  [lb for lb, c in zip(labels, clean, strict=True) if c], TOL["gain"], "%")
        worst.add("gain (injected CTI)", gain_err[~clean],
                  [lb for lb, c in zip(labels, clean, strict=True) if not c], None, "%")
        worst.add("read_noise", measured("read_noise") / rn - 1, labels, TOL["read_noise"],
                  "%")
        worst.add("ptc_noise", measured("ptc_noise") / rn - 1, labels, TOL["read_noise"], "%")
        worst.add("dark_current_95 (vs prediction)", measured("dark_current_95") / dc95 - 1,
                  labels, TOL["dark_current_95"], "%")
        for kind, true_cti in (("serial", cti_s), ("parallel", cti_p)):
            injected = true_cti > 0
            for flux, tol in (("high", TOL["cti"]), ("low", TOL["cti_low"])):
                m = measured(f"cti_{kind}_{flux}")
                worst.add(f"cti_{kind}_{flux} injected", m[injected] / true_cti[injected] - 1,
                          [lb for lb, i in zip(labels, injected, strict=True) if i], tol, "%")
                worst.add(f"cti_{kind}_{flux} others (abs)", m[~injected],
                          [lb for lb, i in zip(labels, injected, strict=True) if not i],
                          5e-7 if flux == "high" else None)
        worst.add("linearity_max_frac_dev (abs, %)", measured("linearity_max_frac_dev") - lin,
                  labels, TOL["linearity_abs"])
        prnu_truth = 100 * config.flat_field.prnu
        worst.add("prnu (abs, %)", measured("prnu") - prnu_truth, labels, None)
        bf = det["brighter_fatter"]
        for key in ("a00", "a10", "a01"):
            worst.add(f"ptc_{key} vs brighter-fatter (abs, 1/e-)",
                      measured(f"ptc_{key}") - bf[key], labels, None)
        worst.add("ptc_a00 vs expected raw ramp (abs, 1/e-)", measured("ptc_a00")
                  - truth_values(det, sensor, camera, config, dc95, lin)["ptc_a00"][0],
                  labels, None)
        # Defects: the maps `atmospec eo` wrote against the sensor's truth.
        shape = camera.detector_shape
        for kind, true_map in (("bright", sensor.dark_current_e_per_s > 5.0),
                               ("dark", sensor.response < 0.8)):
            found = defect_mask(Table.read(eo_table(repo, name, f"{kind}_defects"),
                                           format="ascii.ecsv"), shape)
            counts = found_true[kind]
            counts[0] += int(true_map.sum())
            counts[1] += int((found & true_map).sum())
            counts[2] += int((found & ~true_map).sum())
        doc = json.loads((eo_dir(repo, name) / f"{EO_FIGURES_STEM}.json").read_text())
        torn = doc["summary"].get("tearing_frames", 0)
        tear_truth = det["tearing"] is not None
        notes.append(f"{name}: tearing truth {'yes' if tear_truth else 'no '}, high-flux "
                     f"superflats with tearing {torn}, detections "
                     f"{int(np.nansum(measured('tearing_detections')))}")
        if (torn > 0) != tear_truth:
            wrong.append((name, "-", "tearing", torn))

        truth_of = truth_values(det, sensor, camera, config, dc95, lin)
        judged += judge(repo, name, amps, truth_of, wrong, marginal)
    for kind, (n_true, hit, false) in found_true.items():
        ok = hit >= TOL["found"] * n_true and false <= TOL["false"] * max(hit + false, 1)
        notes.append(f"{kind} defects: {hit} of {n_true} true found "
                     f"({100 * hit / n_true:.2f} %), {false} false "
                     f"({100 * false / max(hit + false, 1):.3f} % of found): "
                     f"{'within' if ok else 'OUTSIDE'} ≥ 99 % found, ≤ 0.5 % false")
    bad = worst.print()
    for note in notes:
        print(note)
    at_limit = {(m[0], m[1], m[2]) for m in marginal}
    clear = [w for w in wrong if (w[0], w[1], str(w[2]).split()[0]) not in at_limit]
    print(f"verdicts: {judged} (amp, specification) judged on "
          f"{16 * len(config.detectors)} amps, "
          f"{len(wrong)} wrong; {len(marginal)} with the truth within the tolerance of a "
          f"limit; {len(clear)} wrong outside those")
    for w in wrong[:20]:
        print(f"  WRONG {w}")
    for m in marginal[:10]:
        print(f"  at the limit: {m}")
    print(f"figures outside tolerance: {bad}")


if __name__ == "__main__":
    main()
