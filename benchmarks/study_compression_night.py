"""A night reduced with quantised post-ISR images against the same night lossless.

Run: ``python benchmarks/study_compression_night.py [--workdir DIR] [--science 2]
[--dispersed 2]`` (several minutes: two full nights on one worker each).

A small simulated night (calibration frames, imaging and dispersed exposures of a CALSPEC
standard) is reduced twice by ``run_night``, the second time with ``lossless=True``.
Printed, per exposure: the source count, the largest centroid and aperture-flux changes
of the catalogue over their statistical errors (centroid: FWHM / (2.355 S/N)), the PSF
FWHM, the zeroth-order centroid, the spectrum's largest and rms change per point over its
error, and the atmosphere's PWV, ozone and VAOD with their quoted errors; then the sizes
of the post-ISR files. The budget says: a quantity changes by about 2.9 % of its own
statistical error (σ_q / σ at q = 10), so changes over errors of a few percent, rarely
above 0.15, are what quantisation does.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from astropy.table import Table  # noqa: E402

from atmospec.night.runner import NightRunConfig, run_night  # noqa: E402
from atmospec.sim.night import NightConfig, simulate_night  # noqa: E402
from spectractor_bridge.spectrum import read_spectrum  # noqa: E402


def _reduce(raw: Path, repo: Path, lossless: bool) -> None:
    if not (repo / "night" / "summary.ecsv").exists():
        run_night(raw, repo, NightRunConfig(workers=1, plots=False, progress=False,
                                            lossless=lossless))


def _catalogue(a: Path, b: Path) -> str:
    ta, tb = Table.read(a), Table.read(b)
    if len(ta) == 0 or len(tb) == 0:
        return f"{len(ta)} / {len(tb)} sources"
    d = np.hypot(ta["xcentroid"][:, None] - tb["xcentroid"][None],
                 ta["ycentroid"][:, None] - tb["ycentroid"][None])
    tb = tb[d.argmin(axis=1)]
    err = ta["fwhm"] / (2.355 * ta["snr"])
    dc = np.hypot(tb["xcentroid"] - ta["xcentroid"], tb["ycentroid"] - ta["ycentroid"]) / err
    df = np.abs(tb["aperture_flux_0"] - ta["aperture_flux_0"]) / ta["aperture_fluxerr_0"]
    return (f"{len(ta)} / {len(tb)} sources, centroid max {np.nanmax(dc):.3f} σ, "
            f"aperture flux max {np.nanmax(df):.3f} σ rms {math.sqrt(np.nanmean(df**2)):.3f} σ")


def _spectrum(a: Path, b: Path) -> str:
    sa, sb = read_spectrum(a), read_spectrum(b)
    if sa.flux.shape != sb.flux.shape:
        return f"{sa.flux.size} / {sb.flux.size} points"
    r = (sb.flux - sa.flux) / sa.flux_err
    r = r[np.isfinite(r)]
    return f"{r.size} points, max {np.abs(r).max():.3f} σ, rms {math.sqrt(np.mean(r**2)):.3f} σ"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="bench-work/compression-night", type=Path)
    parser.add_argument("--science", type=int, default=2)
    parser.add_argument("--dispersed", type=int, default=2)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    raw = args.workdir / "raw"
    if not raw.is_dir():
        simulate_night(raw, NightConfig(n_bias=3, n_dark=2, n_flat=2, n_science=args.science,
                                        n_dispersed=args.dispersed, dispersed_every=1,
                                        flat_filters=("SDSSr_65mm", "empty_1")))
    repos = {"quantised": args.workdir / "quantised", "lossless": args.workdir / "lossless"}
    for name, repo in repos.items():
        _reduce(raw, repo, lossless=name == "lossless")
    q = Table.read(repos["quantised"] / "night" / "summary.ecsv")
    ll = Table.read(repos["lossless"] / "night" / "summary.ecsv")
    ll = {row["obs_id"]: row for row in ll}
    for row in q:
        other = ll[row["obs_id"]]
        day = str(row["day_obs"])
        a = repos["lossless"] / "exposures" / day
        b = repos["quantised"] / "exposures" / day
        obs = row["obs_id"]
        print(f"{obs} ({row['disperser'] or 'imaging'}): status {other['status']} / "
              f"{row['status']}")
        name = f"{obs}_sources.ecsv"
        if (a / name).exists():
            print(f"  catalogue: {_catalogue(a / name, b / name)}")
            print(f"  PSF FWHM {other['fwhm_px']:.4f} -> {row['fwhm_px']:.4f} px")
        if (a / f"{obs}_centroid.json").exists():
            ca = json.loads((a / f"{obs}_centroid.json").read_text())["centroid"]
            cb = json.loads((b / f"{obs}_centroid.json").read_text())["centroid"]
            print(f"  zeroth order moved {math.hypot(cb[0] - ca[0], cb[1] - ca[1]):.4f} px")
        name = f"{obs}_spectrum.fits"
        if (a / name).exists():
            print(f"  spectrum: {_spectrum(a / name, b / name)}")
        for key in ("pwv_mm", "ozone_du", "vaod"):
            if key in q.colnames and np.isfinite(other[key]):
                err = other[f"{key}_err"]
                print(f"  {key} {other[key]:.4f} -> {row[key]:.4f} (change "
                      f"{(row[key] - other[key]) / err:+.3f} of its error {err:.4f})")
    sizes = {name: sum(p.stat().st_size for p in repo.glob("exposures/*/*_postisr.fits"))
             for name, repo in repos.items()}
    print(f"post-ISR files: {sizes['quantised'] / 1e6:.0f} MB quantised, "
          f"{sizes['lossless'] / 1e6:.0f} MB lossless "
          f"({sizes['lossless'] / sizes['quantised']:.1f}x)")


if __name__ == "__main__":
    main()
