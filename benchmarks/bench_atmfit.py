"""Atmosphere-fit speed: one spectrum, and the joint fit of a night of 50 spectra.

Run: ``python benchmarks/bench_atmfit.py [--repeat 3] [--n-spectra 50] [--n-samples 2000]``.

Simulated LATISS holo4_003 spectra of HD142331 in e⁻/nm (``--n-samples`` samples over
372–1085 nm, PSF FWHM 4–6 px) are drawn from `SpectrumForwardModel` at airmasses 1.0–2.2, each
with its own PWV, ozone, VAOD, grey, shift and resolution, through a throughput distorted by a
5 % tilt, with Poisson + background noise correlated between neighbouring samples (a
covariance with 4 off-diagonals). Preparing them is not timed.

On one core (thread pools limited to 1 before numpy is imported), median of ``--repeat`` runs:

1. ``fit_atmosphere`` of one spectrum with its full covariance (goal ≤ 2 s), split into
   set-up (forward model, Cholesky factor, starting values) and the lmfit minimisation;
2. ``fit_atmosphere_joint`` of ``--n-spectra`` spectra (goal ≤ 60 s for 50), split into
   set-up (forward models, covariance factors), Levenberg–Marquardt iterations and errors;
   twice: with the covariances factored as dense matrices (what a covariance from a 2D
   forward-model extraction, dense in general, costs) and as band matrices (what these
   banded ones allow), with the fit's tracemalloc peak (input spectra excluded).

Figures are printed with their ratio to the goals.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402
from astropy.table import Table  # noqa: E402
from scipy.linalg import cholesky_banded  # noqa: E402

from atmospec.atmosphere.joint_fit import (  # noqa: E402
    JointFitConfig,
    fit_atmosphere_joint,
)
from atmospec.atmosphere.spectrum_fit import SpectrumForwardModel, fit_atmosphere  # noqa: E402
from atmospec.spectro.spectrum import Spectrum  # noqa: E402

GOAL_SINGLE_S, GOAL_JOINT_S, GOAL_N = 2.0, 60.0, 50
CORRELATION = (1.0, 0.35, -0.25, -0.12, 0.05)


def simulate(n_spectra: int, n_samples: int, seed: int = 11) -> list[Spectrum]:
    """Noisy spectra of a night (see the module docstring)."""
    rng = np.random.default_rng(seed)
    lam = np.linspace(372.0, 1085.0, n_samples)
    psf = Table({"lambdas": lam[::10], "fwhm": 6.0 - 2.0 * (lam[::10] - 372.0) / 713.0})
    out = []
    for x in np.linspace(1.0, 2.2, n_spectra):
        header = fits.Header()
        for key, value in (("TARGET", "HD142331"), ("AIRMASS", float(x)), ("OUTPRESS", 743.0),
                           ("EXPTIME", 30.0), ("GRATING", "holo4_003"), ("FILTER", "empty_1"),
                           ("INSTRMNT", "latiss")):
            header[key] = value
        layout = Spectrum(wavelength=lam, flux=np.ones(n_samples), flux_err=np.ones(n_samples),
                          flux_unit="electron/nm", header=header, psf_table=psf)
        model = SpectrumForwardModel(layout, wavelength_range_nm=(350.0, 1095.0))
        t = model.transmission_fine(rng.uniform(1, 8), rng.uniform(240, 340),
                                    rng.uniform(0.01, 0.08))
        t = t * (1.0 + 0.05 * (model.fine_wavelength - 700.0) / 600.0)
        expected = model.with_transmission(t, rng.uniform(0.7, 1.0), rng.uniform(-0.3, 0.3),
                                           rng.uniform(0.85, 1.15))
        wl = model.wavelength
        dl = np.abs(np.gradient(wl))
        sigma = np.sqrt(np.clip(expected * dl, 0.0, None) + 400.0) / dl
        n = wl.size
        bands = np.array([np.full(n, r) for r in CORRELATION]) * sigma
        for lag in range(len(CORRELATION)):  # covariance (lower band form) = ρ σ_i σ_j
            bands[lag, : n - lag] *= sigma[lag:]
            bands[lag, n - lag:] = 0.0
        cov = np.zeros((n, n))
        for lag in range(len(CORRELATION)):
            cov += np.diag(bands[lag, : n - lag], -lag)
            if lag:
                cov += np.diag(bands[lag, : n - lag], lag)
        chol = cholesky_banded(bands, lower=True)
        # Correlated noise: L z with L the banded Cholesky factor.
        z = rng.standard_normal(n)
        noise = np.zeros(n)
        for lag in range(len(CORRELATION)):
            noise[lag:] += chol[lag, : n - lag] * z[: n - lag]
        out.append(Spectrum(wavelength=wl, flux=expected + noise,
                            flux_err=np.sqrt(np.diag(cov)), flux_unit="electron/nm",
                            header=header, covariance=cov, psf_table=psf))
    return out


def bench_single(spectrum: Spectrum, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fit = fit_atmosphere(spectrum, source="bench")
        total = time.perf_counter() - t
        runs.append((total, fit.fit_time_s, fit.nfev, fit.covariance_used))
    total = statistics.median(r[0] for r in runs)
    minim = statistics.median(r[1] for r in runs)
    print(f"fit_atmosphere, one spectrum of {spectrum.n_points} samples "
          f"(covariance: {runs[0][3]}; median of {repeat} runs, one core)")
    print(f"  {'set-up':<26s} {(total - minim) * 1000:9.1f} ms (forward model, Cholesky, "
          "start)")
    print(f"  {'minimisation (lmfit)':<26s} {minim * 1000:9.1f} ms ({runs[0][2]} evaluations, "
          f"{minim / runs[0][2] * 1000:.2f} ms each)")
    print(f"  {'total':<26s} {total * 1000:9.1f} ms")
    return total


def bench_joint(spectra: list[Spectrum], repeat: int, label: str,
                config: JointFitConfig) -> float:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fit = fit_atmosphere_joint(spectra, config)
        runs.append((time.perf_counter() - t, fit))
    total = statistics.median(r[0] for r in runs)
    fit = runs[0][1]
    stages = {k: statistics.median(r[1].timings[k] for r in runs) for k in fit.timings}
    n_samples = sum(fit.n_samples)
    print(f"fit_atmosphere_joint, {len(spectra)} spectra, {n_samples} samples, "
          f"{fit.info['n_free']} free parameters, covariance {label} "
          f"({fit.covariance_used[0]}); median of {repeat} runs, one core")
    for name, t in stages.items():
        print(f"  {name:<26s} {t * 1000:9.1f} ms")
    print(f"  {'total':<26s} {total * 1000:9.1f} ms ({fit.n_iterations} iterations, "
          f"{fit.nfev} evaluations of all spectra, χ²/ndof {fit.chi2_ndof:.3f}, "
          f"{fit.message})")
    print(f"  per spectrum: {total / len(spectra) * 1000:.1f} ms")
    tracemalloc.start()
    fit_atmosphere_joint(spectra, config)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    cov_bytes = sum(s.covariance.nbytes for s in spectra if s.covariance is not None)
    print(f"  memory: tracemalloc peak {peak / 2**20:.0f} MiB during the fit (the input "
          f"spectra's covariances, {cov_bytes / 2**20:.0f} MiB, not included)")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--n-spectra", type=int, default=GOAL_N)
    parser.add_argument("--n-samples", type=int, default=2000)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.basicConfig(level=logging.WARNING)
    t = time.perf_counter()
    spectra = simulate(args.n_spectra, args.n_samples)
    print(f"(simulated {len(spectra)} spectra in {time.perf_counter() - t:.1f} s, not counted)")

    single = bench_single(spectra[len(spectra) // 2], max(args.repeat, 3))
    print(f"SUMMARY single: {single:.2f} s (goal <= {GOAL_SINGLE_S:.0f} s: "
          f"{single / GOAL_SINGLE_S:.2f} of it)")
    scale = GOAL_N / len(spectra)
    dense = bench_joint(spectra, args.repeat, "dense",
                        JointFitConfig(banded_covariance_fraction=0.0))
    banded = bench_joint(spectra, args.repeat, "banded", JointFitConfig())
    note = "" if scale == 1 else f" (x{scale:.2f} for {GOAL_N} spectra, linear scaling)"
    for label, t in (("dense covariance", dense), ("banded covariance", banded)):
        print(f"SUMMARY joint {len(spectra)} spectra, {label}: {t:.2f} s (goal <= "
              f"{GOAL_JOINT_S:.0f} s for {GOAL_N}: {t * scale / GOAL_JOINT_S:.2f} of it{note})")


if __name__ == "__main__":
    main()
