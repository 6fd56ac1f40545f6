"""Where the spectrogram (2D) atmosphere fit's bias comes from (the chain test's scene).

Run: ``python benchmarks/study_spectrogram_bias.py [--noisy 20] [--cache /tmp/sgbias]
[--scenes libradtran model] [--variants all]``.

The scene is `tests/test_atmosphere_chain.py`'s: one full-size 4000 × 4072 holo4_003
exposure of HD142331 (6 s, the disperser at LINSPOS 68.6 mm, the header saying 68.0), flat
sky of 8 e⁻/s, binned 2 × 2, read noise 9 e⁻ per unbinned pixel. Two atmospheres:

* ``libradtran``: node 0 of the CTIO libRadtran grid (PWV 5 mm, ozone 300 DU, VAOD 0.05,
  libRadtran's aerosol), as the chain test;
* ``model``: the same parameters through atmospec's own transmission model
  (``atmosphere_table=None``, libRadtran's default aerosol shape): no model mismatch.

Each scene is rendered once and cached (binned noiseless signal as ``.npy``, the truth as
``.json``); the extraction (`process_dispersed`, < 1 s on the binned frame) is redone. The
noise-free spectrum is the extraction of the binned signal itself (variance = signal +
4 · 9², the zeroth order given at its true position: without noise the finder finds
nothing); the noisy ones draw Poisson and read noise as the test does (seed 6000 + index).
The "truth" γ is the simulator's unbinned Moffat halved: the 2 × 2 binning widens the
binned PSF by ~1 % more (``PSF_TAB``'s γ is 1.3 % above it), so that variant measures the
fit's sensitivity to the PSF width rather than a perfect PSF.

Variants, one change at a time on the noise-free spectrum (and on the noisy ones for the
variants marked noisy): the PSF disc (``support_fwhm``), the order-2 scale fixed, the fine
grid, the fitted range (red end 1045 nm — where the third order of holo4_003 does not land
— or 1000 nm; blue end 450 nm), the side-band background replaced by the known flat sky,
``PSF_TAB``'s γ/α, trace centre or wavelengths replaced by the simulator's truth, the third
order left out of the 2D model (``SpectrogramFitConfig.order3``), and for the 1D fit the
resolution fixed at 1 and the 1045 nm range. Printed: the bias (fit − truth) of PWV,
ozone, VAOD, the order-2 scale and χ²/ndof of each.
"""

from __future__ import annotations

import os
import sys

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import fields, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402

from atmospec.atmosphere.spectrogram_fit import (  # noqa: E402
    SpectrogramFitConfig,
    fit_atmosphere_spectrogram,
)
from atmospec.atmosphere.spectrum_fit import AtmosphereFitConfig, fit_atmosphere  # noqa: E402
from atmospec.exposure import Exposure  # noqa: E402
from atmospec.sim.dispersed import (  # noqa: E402
    DispersedSceneConfig,
    DispersedSpectrumModel,
    render_dispersed_exposure,
    wavelength_from_offset_px,
)
from atmospec.spectro.chain import process_dispersed  # noqa: E402
from atmospec.spectro.spectrum import ImageExtension, Spectrum  # noqa: E402

# The scene is the chain test's: its numbers are read from it, not copied.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_atmosphere_chain import (  # noqa: E402
    DISPERSER,
    EXPTIME_S,
    LINSPOS_HEADER,
    LINSPOS_TRUE,
    NODE,
    NODES,
    PARAMETERS,
    READ_NOISE,
    SHAPE,
    SKY_E_PER_S,
    TARGET,
    X0,
    Y0,
)

BETA = DispersedSceneConfig().beta


# --------------------------------------------------------------------------- the scene


def render(kind: str, cache: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """The binned noiseless signal (sky included) and the truth, rendered once per kind."""
    npy, js = cache / f"scene_{kind}.npy", cache / f"scene_{kind}.json"
    if npy.exists() and js.exists():
        return np.load(npy), json.loads(js.read_text())
    nodes = np.load(NODES)
    airmass, pressure = float(nodes["airmass"]), float(nodes["pressure_hpa"])
    values = {"pwv_mm": float(nodes["pwv_mm"][NODE]), "ozone_du": float(nodes["ozone_du"][NODE]),
              "vaod": float(nodes["vaod"][NODE])}
    table = ((tuple(nodes["wavelength_nm"].tolist()), tuple(nodes["transmission"][NODE].tolist()))
             if kind == "libradtran" else None)
    model = DispersedSpectrumModel(
        target=TARGET, disperser=DISPERSER, exptime_s=EXPTIME_S, airmass=airmass,
        pressure_hpa=pressure, pwv_mm=values["pwv_mm"], ozone_du=values["ozone_du"],
        vaod=values["vaod"], angstrom=None, atmosphere_table=table)
    fwhm_px = 0.75 / 0.0952 * airmass**0.6
    t0 = time.perf_counter()
    signal, sim = render_dispersed_exposure(SHAPE, X0, Y0, fwhm_px, LINSPOS_TRUE,
                                            np.random.default_rng(1), model,
                                            config=DispersedSceneConfig())
    signal += np.float32(SKY_E_PER_S * EXPTIME_S)
    ny, nx = signal.shape
    binned = signal.reshape(ny // 2, 2, nx // 2, 2).sum(axis=(1, 3), dtype=np.float64)
    truth = {"values": values, "airmass": airmass, "pressure_hpa": pressure,
             "fwhm_px": fwhm_px, "lines_per_mm": sim["lines_per_mm"],
             "d2ccd_mm": sim["d2ccd_mm"], "theta0_rad": sim["theta0_rad"],
             "direction": sim["direction"], "x0": X0, "y0": Y0}
    print(f"rendered {kind} in {time.perf_counter() - t0:.1f} s", flush=True)
    np.save(npy, binned)
    js.write_text(json.dumps(truth))
    return binned, truth


def exposure(binned: np.ndarray, truth: dict[str, Any], index: int | None) -> Exposure:
    """Realisation ``index`` (None: the noiseless signal itself) with the test's header."""
    if index is None:
        image = binned.astype(np.float32)
        seq = 400
    else:
        rng = np.random.default_rng(6000 + index)
        image = rng.poisson(binned).astype(np.float32)
        image += rng.normal(0.0, 2.0 * READ_NOISE, binned.shape).astype(np.float32)
        seq = index + 401
    header = fits.Header({
        "OBSID": f"AT_O_20261123_{seq:06d}", "INSTRUME": "LATISS",
        "DAYOBS": "20261123", "SEQNUM": seq, "DATE-OBS": "2026-11-24T03:00:00",
        "EXPTIME": EXPTIME_S, "GRATING": DISPERSER, "FILTER": "empty_1",
        "LINSPOS": LINSPOS_HEADER, "OBJECT": TARGET, "AMSTART": truth["airmass"],
        "PRESSURE": truth["pressure_hpa"], "CCDSUM": "2 2",
    })
    exp = Exposure.from_image(image, metadata=header)
    exp.variance[:] = (binned + 4.0 * READ_NOISE**2).astype(np.float32)
    return exp


def spectrum_of(kind: str, index: int | None, cache: Path) -> tuple[Spectrum, dict[str, Any]]:
    """The chain's spectrum of realisation ``index`` of scene ``kind``."""
    binned, truth = render(kind, cache)
    t0 = time.perf_counter()
    # Without noise the zeroth-order finder's detection threshold (from the sky's scatter)
    # is zero and it finds nothing: the noise-free chain is given the true position.
    xy = None if index is not None else ((X0 - 0.5) / 2.0, (Y0 - 0.5) / 2.0)
    spectrum, _ = process_dispersed(exposure(binned, truth, index), xy=xy)
    tag = "noise-free" if index is None else f"realisation {index}"
    print(f"extracted {kind} {tag} in {time.perf_counter() - t0:.1f} s", flush=True)
    return spectrum, truth


# --------------------------------------------------------------------------- truth planes


def _origin(spectrum: Spectrum) -> tuple[float, float]:
    return float(spectrum.header["S_XMIN"]), float(spectrum.header["S_YMIN"])


def truth_row_wavelength(spectrum: Spectrum, truth: dict[str, Any], y_cut: np.ndarray
                         ) -> np.ndarray:
    """Order-1 wavelength landing at the centre of cutout row ``y_cut`` (binned), nm: the
    simulator's grating law (its true D2CCD and θ₀)."""
    _, y0c = _origin(spectrum)
    y_unbinned = 2.0 * (np.asarray(y_cut, dtype=np.float64) + y0c) + 0.5
    u = (y_unbinned - truth["y0"]) / truth["direction"][1]
    return np.asarray(wavelength_from_offset_px(u, 1, truth["lines_per_mm"], truth["d2ccd_mm"],
                                                0.010, truth["theta0_rad"]), dtype=np.float64)


def truth_x_centre(spectrum: Spectrum, truth: dict[str, Any], y_cut: np.ndarray) -> np.ndarray:
    """The simulator's trace centre (cutout column, binned) at cutout row ``y_cut``."""
    x0c, y0c = _origin(spectrum)
    y_unbinned = 2.0 * (np.asarray(y_cut, dtype=np.float64) + y0c) + 0.5
    dx, dy = truth["direction"]
    x_unbinned = truth["x0"] + (y_unbinned - truth["y0"]) * dx / dy
    return (x_unbinned - 0.5) / 2.0 - x0c


def truth_gamma(truth: dict[str, Any], lam: np.ndarray) -> np.ndarray:
    """γ of the simulator's Moffat at λ, binned pixels (its FWHM ∝ λ^-0.2 over 2)."""
    cfg = DispersedSceneConfig()
    fwhm = truth["fwhm_px"] * (lam / cfg.reference_wavelength_nm) ** cfg.seeing_exponent / 2.0
    return fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / BETA) - 1.0))


def with_psf_table(spectrum: Spectrum, **columns: Callable[[Any], np.ndarray]) -> Spectrum:
    """``spectrum`` with ``PSF_TAB`` columns replaced by ``columns[name](table)``."""
    table = spectrum.psf_table.copy()
    for name, make in columns.items():
        table[name] = make(table)
    return replace(spectrum, psf_table=table)


def with_background(spectrum: Spectrum, level: float) -> Spectrum:
    """``spectrum`` with ``S_BGD`` replaced by a flat ``level``."""
    sg = spectrum.spectrogram
    bkg = ImageExtension(np.full_like(sg.background.data, level), sg.background.header)
    return replace(spectrum, spectrogram=replace(sg, background=bkg))


# --------------------------------------------------------------------------- variants


def variants(truth: dict[str, Any]) -> dict[str, tuple[str, Callable[[Spectrum], Spectrum],
                                                       Any]]:
    """name → (kind ``1d``/``2d``, spectrum transform, config)."""
    a = AtmosphereFitConfig()
    sg = SpectrogramFitConfig()
    same: Callable[[Spectrum], Spectrum] = lambda s: s  # noqa: E731
    sky = 4.0 * SKY_E_PER_S * EXPTIME_S
    has_order3 = any(f.name == "order3" for f in fields(SpectrogramFitConfig))
    out: dict[str, tuple[str, Callable[[Spectrum], Spectrum], Any]] = {
        "1d baseline": ("1d", same, a),
        "1d resolution fixed 1": ("1d", same, replace(a, fit_resolution=False)),
        "1d range 350-1045": ("1d", same, replace(a, wavelength_range_nm=(350.0, 1045.0))),
        "2d baseline": ("2d", same, sg),
        "2d support 5 FWHM": ("2d", same, replace(sg, support_fwhm=5.0)),
        "2d support 6 FWHM": ("2d", same, replace(sg, support_fwhm=6.0)),
        "2d A2 fixed 1": ("2d", same, replace(sg, fit_order2=False)),
        "2d fine step 0.05": ("2d", same, replace(sg, atmosphere=replace(a, fine_step_nm=0.05))),
        "2d fine step 0.5": ("2d", same, replace(sg, atmosphere=replace(a, fine_step_nm=0.5))),
        "2d range 350-1045": ("2d", same, replace(sg, atmosphere=replace(
            a, wavelength_range_nm=(350.0, 1045.0)))),
        "2d range 350-1000": ("2d", same, replace(sg, atmosphere=replace(
            a, wavelength_range_nm=(350.0, 1000.0)))),
        "2d range 450-1095": ("2d", same, replace(sg, atmosphere=replace(
            a, wavelength_range_nm=(450.0, 1095.0)))),
        "2d S_BGD = true sky": ("2d", lambda s: with_background(s, sky), sg),
        "2d PSF γ,α = truth": ("2d", lambda s: with_psf_table(
            s, gamma=lambda t: truth_gamma(truth, np.asarray(t["lambdas"], dtype=float)),
            alpha=lambda t: np.full(len(t), BETA - 0.5)), sg),
        "2d x_c = truth": ("2d", lambda s: with_psf_table(
            s, x_c=lambda t: truth_x_centre(s, truth, np.asarray(t["y_c"], dtype=float))), sg),
        "2d λ = truth": ("2d", lambda s: with_psf_table(
            s, lambdas=lambda t: truth_row_wavelength(s, truth,
                                                      np.asarray(t["y_c"], dtype=float))), sg),
    }
    if has_order3:
        out["2d order 3 left out"] = ("2d", same, replace(sg, order3=False))
        out["2d order 3 left out, range 350-1045"] = ("2d", same, replace(
            sg, order3=False, atmosphere=replace(a, wavelength_range_nm=(350.0, 1045.0))))
    return out


NOISY = ("1d baseline", "2d baseline", "2d support 6 FWHM", "2d A2 fixed 1", "2d range 350-1045",
         "2d range 450-1095", "2d order 3 left out")


def run(kind: str, transform: Callable[[Spectrum], Spectrum], config: Any,
        spectrum: Spectrum) -> Any:
    s = transform(spectrum)
    return fit_atmosphere(s, config) if kind == "1d" else fit_atmosphere_spectrogram(s, config)


def line(name: str, fits_: list[Any], truth: dict[str, Any], seconds: float) -> str:
    v = {p: np.array([f.values[p] for f in fits_]) - truth["values"][p] for p in PARAMETERS}
    a2 = [f.values.get("order2") for f in fits_]
    a2s = f"{np.mean(a2):6.3f}" if a2[0] is not None else "     -"
    chi2 = np.mean([f.chi2_ndof for f in fits_])
    spread = ""
    if len(fits_) > 1:
        spread = "  ± " + " ".join(f"{v[p].std(ddof=1) / math.sqrt(len(fits_)):.4f}"
                                   for p in PARAMETERS)
    ok = all(f.success for f in fits_)
    return (f"  {name:38s} {v['pwv_mm'].mean():+8.3f} {v['ozone_du'].mean():+8.2f} "
            f"{v['vaod'].mean():+9.4f} {a2s} {chi2:7.3f} {seconds:6.2f}s"
            f"{'' if ok else ' (fit not ok)'}{spread}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path("/tmp/sgbias"))
    ap.add_argument("--scenes", nargs="+", default=["libradtran", "model"])
    ap.add_argument("--noisy", type=int, default=20, help="noisy realisations (0: none)")
    ap.add_argument("--variants", nargs="*", default=None,
                    help="names (substrings) of the variants to run; default all")
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore")
    logging.basicConfig(level=logging.ERROR)
    header = (f"  {'variant':38s} {'ΔPWV mm':>8s} {'Δozone':>8s} {'ΔVAOD':>9s} {'A2':>6s} "
              f"{'χ²/ndof':>7s} {'time':>7s}")
    for kind in args.scenes:
        spectrum, truth = spectrum_of(kind, None, args.cache)
        table = spectrum.psf_table
        y_c = np.asarray(table["y_c"], dtype=float)
        lam_true = truth_row_wavelength(spectrum, truth, y_c)
        dl = np.asarray(table["lambdas"], dtype=float) - lam_true
        xc = np.asarray(table["x_c"], dtype=float) - truth_x_centre(spectrum, truth, y_c)
        g = np.asarray(table["gamma"], dtype=float) / truth_gamma(
            truth, np.asarray(table["lambdas"], dtype=float))
        sel = (lam_true > 400) & (lam_true < 1050)
        print(f"\n[{kind}] noise-free spectrum: PSF_TAB λ − truth {np.mean(dl[sel]):+.3f} "
              f"(range {np.min(dl[sel]):+.3f} … {np.max(dl[sel]):+.3f}) nm; x_c − truth "
              f"{np.mean(xc[sel]):+.3f} ± {np.std(xc[sel]):.3f} px; γ / truth γ "
              f"{np.mean(g[sel]):.3f} ({np.min(g[sel]):.3f} … {np.max(g[sel]):.3f}); α "
              f"{np.mean(np.asarray(table['alpha'], dtype=float)[sel]):.3f} (truth "
              f"{BETA - 0.5}); y_c fractional part {np.ptp(y_c - np.rint(y_c)):.3f}; S_BGD "
              f"median {np.median(spectrum.spectrogram.background.data):.2f} (sky "
              f"{4 * SKY_E_PER_S * EXPTIME_S:.0f})")
        print(f"[{kind}] truth {truth['values']}; bias = fit − truth, noise-free:")
        print(header)
        chosen = variants(truth)
        if args.variants:
            chosen = {k: v for k, v in chosen.items() if any(s in k for s in args.variants)}
        for name, (k, transform, config) in chosen.items():
            t0 = time.perf_counter()
            try:
                fit = run(k, transform, config, spectrum)
            except Exception as exc:  # a study: report and go on
                print(f"  {name:38s} failed: {exc}")
                continue
            print(line(name, [fit], truth, time.perf_counter() - t0), flush=True)
        if args.noisy <= 0:
            continue
        noisy = [spectrum_of(kind, i, args.cache)[0] for i in range(args.noisy)]
        print(f"[{kind}] {args.noisy} noisy realisations (mean bias, ± its standard error):")
        print(header)
        for name in NOISY:
            if name not in chosen:
                continue
            k, transform, config = chosen[name]
            t0 = time.perf_counter()
            fits_ = [run(k, transform, config, s) for s in noisy]
            print(line(name, fits_, truth, (time.perf_counter() - t0) / len(fits_)), flush=True)


if __name__ == "__main__":
    main()
