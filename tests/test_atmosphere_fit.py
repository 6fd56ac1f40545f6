"""Atmosphere fit of one spectrum (atmospec.atmosphere.spectrum_fit): forward model against the
simulator, recovery of libRadtran atmospheres from noisy spectra (atmospec's e⁻/nm format
with a correlated covariance, and Spectractor's erg format with a CTIO header), the real CTIO
HD111980 spectrum against the libRadtran grid of that exposure, and bad input."""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from atmospec.atmosphere.spectrum_fit import (
    AtmosphereFitConfig,
    SpectrumForwardModel,
    fit_atmosphere,
)
from atmospec.atmosphere.transmission import transmission
from atmospec.camera.spectrograph import load_instrument
from atmospec.cli import main
from atmospec.errors import BadInputError
from atmospec.sim.dispersed import DispersedSpectrumModel, electrons_per_nm
from atmospec.spectro.calspec import load_sed
from atmospec.spectro.dispersers import load_disperser
from atmospec.spectro.spectrum import Spectrum
from spectractor_bridge.spectrum import read_spectrum

DATA = Path(__file__).parent / "data"
CTIO_REAL = DATA / "spectractor_ctio/reduc_20170530_134_spectrum_v2.4_selfcontained.fits.gz"
NODES = DATA / "atmosphere/ctio_134_libradtran_nodes.npz"
GRID_CHI2 = DATA / "atmosphere/ctio_134_grid_chi2.csv"
SHARED_GRID = (Path(__file__).resolve().parents[2]
               / "shared/data/spectractor_ctio/reduc_20170530_134_atmsim_libradtran_grid.fits")
#: Fitted range of the grid comparison: the libRadtran grid covers 350–1099 nm, so the
#: kernels' margins (shift ≤ 1 nm, resolution ≤ 1.5) keep the samples inside 375–1080 nm.
GRID_CONFIG = AtmosphereFitConfig(wavelength_range_nm=(375.0, 1080.0), max_shift_nm=1.0,
                                  resolution_bounds=(0.0, 1.5))
#: Correlation of neighbouring samples of the synthetic e⁻ spectra (lags 0–4): the
#: alternating pattern of a 2D forward-model (deconvolved) extraction, as in SPEC_COV files.
CORRELATION = (1.0, 0.35, -0.25, -0.12, 0.05)


# ---------------------------------------------------------------------- synthetic spectra
def latiss_spectrum(n: int = 2000, airmass: float = 1.131, pressure: float = 784.0,
                    filter_name: str = "empty_1", target: str = "HD142331") -> Spectrum:
    """A LATISS holo4_003 spectrum layout in e⁻/nm (flux to be filled), PSF FWHM 4–6 px."""
    lam = np.linspace(372.0, 1085.0, n)
    header = fits.Header()
    for key, value in (("TARGET", target), ("AIRMASS", airmass), ("OUTPRESS", pressure),
                       ("EXPTIME", 30.0), ("GRATING", "holo4_003"), ("FILTER", filter_name),
                       ("INSTRMNT", "latiss")):
        header[key] = value
    psf = Table({"lambdas": lam[::10], "fwhm": 6.0 - 2.0 * (lam[::10] - 372.0) / 713.0})
    return Spectrum(wavelength=lam, flux=np.ones(n), flux_err=np.ones(n),
                    flux_unit="electron/nm", header=header, psf_table=psf)


def electron_covariance(expected: np.ndarray, lam: np.ndarray,
                        background_e: float = 400.0) -> np.ndarray:
    """Covariance (e⁻/nm)² of a spectrum: Poisson + background per pixel row, correlated
    between neighbours by `CORRELATION`."""
    dl = np.abs(np.gradient(lam))
    sigma = np.sqrt(np.clip(expected * dl, 0.0, None) + background_e) / dl
    n = lam.size
    corr = np.zeros((n, n))
    for lag, rho in enumerate(CORRELATION):
        corr += np.diag(np.full(n - lag, rho), lag)
        if lag:
            corr += np.diag(np.full(n - lag, rho), -lag)
    return corr * np.outer(sigma, sigma)


def libradtran_node(i: int) -> dict:
    """Node ``i`` of the stored CTIO libRadtran transmissions (X = 1.131, 784 hPa)."""
    with np.load(NODES) as z:
        return {"wavelength_nm": z["wavelength_nm"], "transmission": z["transmission"][i],
                "pwv_mm": float(z["pwv_mm"][i]), "ozone_du": float(z["ozone_du"][i]),
                "vaod": float(z["vaod"][i]), "airmass": float(z["airmass"]),
                "pressure_hpa": float(z["pressure_hpa"])}


def truth_flux(model: SpectrumForwardModel, node: dict, grey: float = 1.0) -> np.ndarray:
    """Expected flux at the model's samples with the libRadtran transmission of ``node``."""
    t = np.interp(model.fine_wavelength, node["wavelength_nm"], node["transmission"])
    return model.with_transmission(t, grey=grey)


def fill(spectrum: Spectrum, model: SpectrumForwardModel, flux: np.ndarray,
         cov: np.ndarray) -> Spectrum:
    """``spectrum`` restricted to the model's samples, with this flux and covariance."""
    idx = model.index
    header = spectrum.header.copy()
    return Spectrum(wavelength=spectrum.wavelength[idx], flux=flux,
                    flux_err=np.sqrt(np.diag(cov)), flux_unit=spectrum.flux_unit,
                    header=header, covariance=cov, psf_table=spectrum.psf_table)


# ---------------------------------------------------------------------- forward model
@pytest.mark.parametrize("filter_name", ["empty_1", "SDSSg"])
def test_forward_model_matches_simulator(filter_name: str) -> None:
    spec = latiss_spectrum(airmass=1.4, pressure=740.0, filter_name=filter_name)
    model = SpectrumForwardModel(spec)
    atm = {"pwv_mm": 4.2, "ozone_du": 280.0, "vaod": 0.04, "angstrom": 1.3}
    sim = DispersedSpectrumModel(target="HD142331", disperser="holo4_003", exptime_s=30.0,
                                 airmass=1.4, pressure_hpa=740.0, filter_name=filter_name,
                                 instrument="latiss", orders=(1,), **atm)
    lam = model.wavelength
    truth = electrons_per_nm(sim, lam)[1]
    ours = model.unconvolved(lam, **atm)
    np.testing.assert_allclose(ours, truth, rtol=1e-6)
    # Without PSF (resolution 0) the convolved model only smooths over one pixel (~0.36 nm).
    sharp = model(**atm, resolution=0.0)
    lit = truth > 1e-3 * truth.max()
    assert np.median(np.abs(sharp[lit] / truth[lit] - 1.0)) < 2e-3


def test_forward_model_spectractor_units() -> None:
    """Spectractor's flux is e⁻/s/nm × hc/λ / area = F_λ · T_inst · η₁ · T_atm."""
    spec = read_spectrum(CTIO_REAL)
    model = SpectrumForwardModel(spec)
    assert model.instrument == "ctio" and not model.electrons
    atm = {"pwv_mm": 3.0, "ozone_du": 300.0, "vaod": 0.03, "angstrom": 1.3}
    # The simulator has no CTIO description: the same product, written out.
    lam = model.wavelength
    truth = (load_sed("HD111980").flux_at(lam) * load_instrument("ctio").throughput(lam)
             * load_disperser("HoloAmAg", "ctio").transmission(lam)
             * transmission(lam, 1.131, 784.0, **atm))
    np.testing.assert_allclose(model.unconvolved(lam, **atm), truth, rtol=1e-6)
    # And it describes the real file to a few per cent over 420–900 nm.
    ratio = spec.flux[model.index] / model(**atm)
    mid = (lam > 420) & (lam < 900)
    assert np.median(np.abs(ratio[mid] - 1.0)) < 0.03


# ---------------------------------------------------------------------- recovery
def _recover(spec: Spectrum, node: dict, n_real: int, seed: int,
             cov_scale: np.ndarray | None = None, grey: float = 0.93
             ) -> tuple[np.ndarray, np.ndarray, list]:
    model = SpectrumForwardModel(spec, wavelength_range_nm=(350.0, 1095.0))
    expected = truth_flux(model, node, grey=grey)
    if cov_scale is None:
        cov = electron_covariance(expected, model.wavelength)
    else:
        cov = cov_scale
    chol = np.linalg.cholesky(cov)
    rng = np.random.default_rng(seed)
    names = ("pwv_mm", "ozone_du", "vaod")
    values, errors, fits_ = [], [], []
    for _ in range(n_real):
        noisy = fill(spec, model, expected + chol @ rng.standard_normal(expected.size), cov)
        fit = fit_atmosphere(noisy, AtmosphereFitConfig(), source="sim")
        assert fit.success and fit.covariance_used == "full" and not fit.fixed.keys() - {
            "angstrom"}
        values.append([fit.values[k] for k in names])
        errors.append([fit.errors[k] for k in names])
        fits_.append(fit)
    return np.array(values), np.array(errors), fits_


def test_recovers_libradtran_atmosphere_from_electron_spectra() -> None:
    node = libradtran_node(0)
    # 1200 samples (a binned LATISS spectrum): the 20 Cholesky factorisations stay cheap.
    spec = latiss_spectrum(n=1200, airmass=node["airmass"], pressure=node["pressure_hpa"])
    values, errors, fits_ = _recover(spec, node, n_real=20, seed=1)
    truth = np.array([node["pwv_mm"], node["ozone_du"], node["vaod"]])
    pulls = (values - truth) / errors
    mean = values.mean(axis=0)
    print(f"libRadtran node PWV {truth[0]} mm, O3 {truth[1]} DU, VAOD {truth[2]}: "
          f"mean fit {mean[0]:.3f} ± {errors[:, 0].mean():.3f} mm, "
          f"{mean[1]:.1f} ± {errors[:, 1].mean():.1f} DU, "
          f"{mean[2]:.4f} ± {errors[:, 2].mean():.4f}; pull std "
          f"{pulls.std(axis=0, ddof=1).round(2)}, pull mean {pulls.mean(axis=0).round(2)}; "
          f"χ²/ndof median {np.median([f.chi2_ndof for f in fits_]):.3f}, fit time median "
          f"{np.median([f.fit_time_s for f in fits_]):.3f} s")
    assert np.all(np.abs(values[:, 0] - truth[0]) < 0.5)
    assert np.all(np.abs(values[:, 1] - truth[1]) < 30.0)
    assert np.all(np.abs(values[:, 2] - truth[2]) < 0.01)
    std = pulls.std(axis=0, ddof=1)
    assert np.all((std > 0.7) & (std < 1.5)), std
    d = fits_[0].to_dict()
    json.dumps(d)
    assert d["values"]["angstrom"] is None and "angstrom" in d["fixed"]
    assert len(d["residuals"]["wavelength_nm"]) == d["ndof"] + len(d["free_parameters"])


def test_recovers_libradtran_atmosphere_in_spectractor_format() -> None:
    """A spectrum given as Spectractor writes it: CTIO header, erg/s/cm²/nm, HoloAmAg."""
    node = libradtran_node(1)
    real = read_spectrum(CTIO_REAL)
    model = SpectrumForwardModel(real, wavelength_range_nm=(350.0, 1095.0))
    expected = truth_flux(model, node, grey=1.05)
    # The real file's noise level and correlations, on the simulated flux.
    idx = model.index
    rel = real.flux_err[idx] / np.abs(real.flux[idx])
    d_real = np.sqrt(np.diag(real.covariance))[idx]
    corr = real.covariance[np.ix_(idx, idx)] / np.outer(d_real, d_real)
    sigma = rel * expected
    cov = corr * np.outer(sigma, sigma)
    spec = Spectrum(wavelength=real.wavelength, flux=real.flux, flux_err=real.flux_err,
                    flux_unit=real.flux_unit, header=real.header, psf_table=real.psf_table)
    values, errors, _ = _recover(spec, node, n_real=8, seed=2, cov_scale=cov, grey=1.05)
    truth = np.array([node["pwv_mm"], node["ozone_du"], node["vaod"]])
    print(f"Spectractor-format, node {truth}: mean fit {values.mean(axis=0).round(4)}, "
          f"errors {errors.mean(axis=0).round(4)}")
    assert np.all(np.abs(values[:, 0] - truth[0]) < 0.5)
    assert np.all(np.abs(values[:, 1] - truth[1]) < 30.0)
    assert np.all(np.abs(values[:, 2] - truth[2]) < 0.01)


# ---------------------------------------------------------------------- real CTIO spectrum
def grid_chi2(spectrum: Spectrum, wavelength_nm: np.ndarray, transmissions: np.ndarray
              ) -> np.ndarray:
    """χ² of ``spectrum`` against each libRadtran transmission (rows of ``transmissions`` on
    ``wavelength_nm``), with the nuisance parameters (grey, shift, resolution) refitted for
    each: how well each grid node describes the data, with nothing from our atmosphere."""
    import lmfit
    from scipy.linalg import cholesky, solve_triangular

    cfg = GRID_CONFIG
    model = SpectrumForwardModel(spectrum, wavelength_range_nm=cfg.wavelength_range_nm,
                                 max_shift_nm=cfg.max_shift_nm,
                                 max_resolution=cfg.resolution_bounds[1])
    idx = model.index
    chol = cholesky(spectrum.covariance[np.ix_(idx, idx)], lower=True)
    data = spectrum.flux[idx]
    out = []
    for t in transmissions:
        t_fine = np.interp(model.fine_wavelength, wavelength_nm, t)
        p = lmfit.Parameters()
        p.add("grey", 1.0, min=0.0)
        p.add("dlambda_nm", 0.0, min=-cfg.max_shift_nm, max=cfg.max_shift_nm)
        p.add("resolution", 1.0, min=cfg.resolution_bounds[0], max=cfg.resolution_bounds[1])

        def resid(q: lmfit.Parameters, t_fine: np.ndarray = t_fine) -> np.ndarray:
            v = q.valuesdict()
            m = model.with_transmission(t_fine, v["grey"], v["dlambda_nm"], v["resolution"])
            return solve_triangular(chol, data - m, lower=True)

        out.append(float(lmfit.minimize(resid, p, method="leastsq").chisqr))
    return np.array(out)


def grid_region(table: np.ndarray, ndof: int, delta_chi2: float = 7.81
                ) -> dict[str, tuple[float, float]]:
    """Best-matching region of the libRadtran grid for the data.

    The nodes compatible with the data at 95 % for 3 parameters (``Δχ² ≤ 7.81``), with the
    errors inflated so that the best node has χ²/ndof = 1 (the data are not described to
    their noise: throughput), each extended by half a grid step on both sides (the part of
    parameter space that node represents best). Returns ``(low, high)`` per parameter.
    """
    chi2 = table[:, 3]
    scale = max(1.0, chi2.min() / ndof)
    ok = table[chi2 <= chi2.min() + delta_chi2 * scale]
    region = {}
    for j, name in enumerate(("vaod", "pwv_mm", "ozone_du")):
        nodes = np.unique(table[:, j])
        half = 0.5 * float(np.min(np.diff(nodes)))
        region[name] = (max(float(nodes[0]), float(ok[:, j].min()) - half),
                        float(ok[:, j].max()) + half)
    return region


def read_grid_chi2() -> np.ndarray:
    with GRID_CHI2.open() as f:
        rows = [r for r in csv.reader(f) if r and not r[0].startswith("#")]
    return np.array(rows[1:], dtype=float)


@pytest.mark.skipif(not SHARED_GRID.exists(), reason="shared CTIO libRadtran grid absent")
def test_grid_chi2_table_is_reproducible() -> None:
    """The stored χ² table is what `grid_chi2` gives on the full libRadtran grid."""
    data = fits.getdata(SHARED_GRID)
    chi2 = grid_chi2(read_spectrum(CTIO_REAL), data[0, 4:], data[1:, 4:])
    stored = read_grid_chi2()
    np.testing.assert_allclose(stored[:, :3], data[1:, 1:4])
    np.testing.assert_allclose(stored[:, 3], chi2, rtol=1e-3)


def test_real_ctio_spectrum_inside_libradtran_best_region(caplog) -> None:
    spec = read_spectrum(CTIO_REAL)
    ndof = SpectrumForwardModel(spec, wavelength_range_nm=GRID_CONFIG.wavelength_range_nm,
                                max_shift_nm=GRID_CONFIG.max_shift_nm,
                                max_resolution=GRID_CONFIG.resolution_bounds[1]).index.size - 3
    region = grid_region(read_grid_chi2(), ndof)
    with caplog.at_level(logging.INFO):
        fit = fit_atmosphere(spec, GRID_CONFIG, source=CTIO_REAL.name)
        default = fit_atmosphere(spec, source=CTIO_REAL.name)
    v, e = fit.values, fit.errors
    print(f"CTIO HD111980 (375-1080 nm): PWV {v['pwv_mm']:.2f} ± {e['pwv_mm']:.2f} mm, "
          f"ozone {v['ozone_du']:.0f} ± {e['ozone_du']:.0f} DU, VAOD {v['vaod']:.4f} ± "
          f"{e['vaod']:.4f}, grey {v['grey']:.3f}, shift {v['dlambda_nm']:.2f} nm, "
          f"resolution {v['resolution']:.2f}, χ²/ndof {fit.chi2_ndof:.1f}; default range "
          f"{default.wavelength_range_nm[0]:.0f}-{default.wavelength_range_nm[1]:.0f} nm: "
          f"PWV {default.values['pwv_mm']:.2f}, ozone {default.values['ozone_du']:.0f}, "
          f"VAOD {default.values['vaod']:.4f}; libRadtran grid region {region}")
    assert fit.success and fit.covariance_used == "full"
    for name, (lo, hi) in region.items():
        assert lo <= v[name] <= hi, (name, v[name], lo, hi)


def test_plot_atmosphere_fit(tmp_path: Path) -> None:
    from atmospec.plots.atmosphere import plot_atmosphere_fit

    fit = fit_atmosphere(read_spectrum(CTIO_REAL), source=CTIO_REAL.name)
    out = plot_atmosphere_fit(fit, tmp_path / "atm.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000


def test_plot_title_and_outputs_quote_the_same_labelled_errors() -> None:
    """Issue 21: the plot's title, the command's line and the night's summary quote one set
    of errors (`AtmosphereFit.errors_quoted`: scaled ⊕ systematic), labelled with their
    scale and systematic. The real CTIO spectrum fits at χ²/ndof ≈ 21: its errors are
    scaled by √21 ≈ 4.6."""
    from atmospec.plots.atmosphere import atmosphere_fit_figure

    fit = fit_atmosphere(read_spectrum(CTIO_REAL), source=CTIO_REAL.name)
    scale = fit.error_scale
    assert scale == pytest.approx(np.sqrt(fit.chi2_ndof)) and scale > 3.0
    for name in ("pwv_mm", "ozone_du", "vaod"):
        assert fit.errors_scaled[name] == pytest.approx(fit.errors[name] * scale)
    assert fit.errors_label.startswith(f"errors scaled by √(χ²/ndof) = {scale:.2f} ⊕ "
                                       "systematic PWV 0.043 mm, O3 4.5 DU, VAOD 0.0076")
    config = AtmosphereFitConfig()
    for name, sys in (("pwv_mm", config.systematic_pwv_mm),
                      ("ozone_du", config.systematic_ozone_du), ("vaod", config.systematic_vaod)):
        assert fit.errors_quoted[name] == pytest.approx(np.hypot(fit.errors_scaled[name], sys))
    title = atmosphere_fit_figure(fit).axes[0].get_title()
    assert f"± {fit.errors_quoted['vaod']:.4f}" in title
    assert f"± {fit.errors['vaod']:.4f}" not in title
    assert fit.errors_label in title
    doc = fit.to_dict()
    assert doc["error_scale"] == pytest.approx(scale) and doc["errors_label"] == fit.errors_label
    assert doc["errors_quoted"]["vaod"] == pytest.approx(fit.errors_quoted["vaod"])
    unscaled = replace(fit, chi2=0.5 * fit.ndof, systematic={})
    assert unscaled.error_scale == 1.0 and unscaled.errors_quoted == unscaled.errors
    assert unscaled.errors_label == "errors unscaled (χ²/ndof = 0.50 ≤ 1)"


# ---------------------------------------------------------------------- bad input
def test_non_calspec_target_needs_sed(tmp_path: Path) -> None:
    spec = read_spectrum(CTIO_REAL)
    header = spec.header.copy()
    header["TARGET"] = "Vega-like mystery star"
    other = replace(spec, header=header)
    with pytest.raises(BadInputError, match=r"not a CALSPEC standard.*SED"):
        fit_atmosphere(other, source="x.fits")
    # With the star's SED given as a file the fit runs.
    from atmospec.spectro.calspec import load_sed as _load

    sed = _load("HD111980")
    keep = (sed.wavelength_nm > 300) & (sed.wavelength_nm < 1200)
    path = tmp_path / "sed.txt"
    np.savetxt(path, np.c_[sed.wavelength_nm[keep], sed.flux[keep]])
    fit = fit_atmosphere(other, AtmosphereFitConfig(sed_path=str(path)))
    assert fit.success and fit.info["sed"].endswith("sed.txt")


def test_nan_flux(caplog) -> None:
    spec = read_spectrum(CTIO_REAL)
    flux = spec.flux.copy()
    flux[150] = np.nan
    with caplog.at_level(logging.WARNING):
        fit = fit_atmosphere(replace(spec, flux=flux), source="one_nan.fits")
    assert fit.success and fit.info["dropped_samples"] == 1
    assert "dropping 1 samples" in caplog.text
    flux[100:200] = np.nan
    with pytest.raises(BadInputError, match="NaN"):
        fit_atmosphere(replace(spec, flux=flux), source="many_nan.fits")


def test_singular_covariance_falls_back_to_diagonal(caplog) -> None:
    spec = read_spectrum(CTIO_REAL)
    cov = spec.covariance.copy()
    cov[10, :] = cov[:, 10] = 0.0  # not positive definite
    with caplog.at_level(logging.WARNING):
        fit = fit_atmosphere(replace(spec, covariance=cov), source="singular.fits")
    assert fit.covariance_used.startswith("diagonal (") and "positive definite" in caplog.text


def test_short_range_fixes_pwv() -> None:
    spec = read_spectrum(CTIO_REAL)
    fit = fit_atmosphere(spec, AtmosphereFitConfig(wavelength_range_nm=(400.0, 880.0),
                                                   pwv_mm=2.0))
    assert "pwv_mm" in fit.fixed and "H2O" in fit.fixed["pwv_mm"]
    assert "pwv_mm" not in fit.free_parameters and fit.errors["pwv_mm"] is None
    assert fit.values["pwv_mm"] == 2.0
    assert fit.to_dict()["fixed"]["pwv_mm"].startswith("fitted range 4")
    # Too blue for the ozone band as well.
    blue = fit_atmosphere(spec, AtmosphereFitConfig(wavelength_range_nm=(660.0, 1080.0)))
    assert {"ozone_du", "vaod"} <= blue.fixed.keys() and "pwv_mm" in blue.free_parameters


def test_filter_blocking_the_water_band_fixes_pwv() -> None:
    spec = latiss_spectrum(n=800, filter_name="SDSSg")
    model = SpectrumForwardModel(spec)
    expected = model(3.0, 300.0, 0.03)
    err = np.sqrt(np.abs(expected) * 0.6 + 400.0) / 0.9
    fit = fit_atmosphere(fill(spec, model, expected, np.diag(err**2)))
    assert "pwv_mm" in fit.fixed and "no light" in fit.fixed["pwv_mm"]


def test_cli_fit_atmosphere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``atmospec fit-atmosphere`` as a user runs it: JSON equal to the library's fit, the
    plot, and one line with exit status 2 for a target without SED."""
    import subprocess
    import sys

    out = tmp_path / "fit.json"
    run = subprocess.run([sys.executable, "-m", "atmospec", "fit-atmosphere", str(CTIO_REAL),
                          "--out", str(out), "--plot"], capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stderr
    assert "PWV" in run.stdout and out.with_suffix(".png").is_file()
    saved = json.loads(out.read_text())
    fit = fit_atmosphere(read_spectrum(CTIO_REAL), source=str(CTIO_REAL))
    for key in ("pwv_mm", "ozone_du", "vaod"):
        assert saved["values"][key] == pytest.approx(fit.values[key], rel=1e-6)
    spec = read_spectrum(CTIO_REAL)
    header = spec.header.copy()
    header["TARGET"] = "Vega-like mystery star"
    from spectractor_bridge.spectrum import write_spectrum

    mystery = write_spectrum(replace(spec, header=header), tmp_path / "mystery.fits")
    # The error path in process (the same CLI code, without another Python start).
    assert main(["fit-atmosphere", str(mystery), "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "mystery.fits" in err and "not a CALSPEC standard" in err
    assert not (tmp_path / "x.json").exists()


def test_spectrogram_fit_refuses_spectractor_files(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``--mode 2d`` on Spectractor's own file (spectrogram in ADU/s, no per-row PSF in
    electrons): one line, exit status 2; ``--mode auto`` keeps the 1D fit (not degenerate
    here) and records which fit it is and its largest correlation."""
    assert main(["fit-atmosphere", str(CTIO_REAL), "--out", str(tmp_path / "x.json"),
                 "--mode", "2d"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert CTIO_REAL.name in err and "2D fit" in err
    assert not (tmp_path / "x.json").exists()
    assert main(["fit-atmosphere", str(CTIO_REAL), "--out", str(tmp_path / "a.json"),
                 "--mode", "auto"]) == 0
    saved = json.loads((tmp_path / "a.json").read_text())
    assert saved["info"]["fit"] == "spectrum" and "degeneracy" in saved["info"]


def test_range_covering_the_blue_fits_the_angstrom_exponent(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``--range 400 1000 --fit-angstrom`` on a spectrum sampled every 2.4 nm, whose first
    sample in the range is at 400.6 nm: the Ångström exponent is fitted (it used to be
    fixed because 400.6 > 400), and recovered; a range starting one step later does not
    cover the lever arm and fixes it, saying so once."""
    spec = latiss_spectrum(n=300)
    model = SpectrumForwardModel(spec)
    expected = model(3.0, 300.0, 0.08, angstrom=1.0)
    err = np.sqrt(np.abs(expected) * 0.6 + 400.0) / 0.9
    noiseless = fill(spec, model, expected, np.diag(err**2))
    config = AtmosphereFitConfig(wavelength_range_nm=(400.0, 1000.0), fit_angstrom=True)
    fit = fit_atmosphere(noiseless, config)
    assert fit.wavelength_range_nm[0] > 400.0
    assert "angstrom" not in fit.fixed and "angstrom" in fit.free_parameters
    assert fit.values["angstrom"] == pytest.approx(1.0, abs=0.05)
    later = fit_atmosphere(noiseless, replace(config, wavelength_range_nm=(404.0, 1000.0)))
    assert later.fixed["angstrom"].startswith("fitted range 40")
    # The command prints each fixed parameter's reason once, without "fixed: fixed:".
    from spectractor_bridge.spectrum import write_spectrum

    path = write_spectrum(noiseless, tmp_path / "spec.fits")
    assert main(["fit-atmosphere", str(path), "--out", str(tmp_path / "fit.json")]) == 0
    out = capsys.readouterr().out
    assert "  angstrom fixed: libRadtran's default aerosol shape" in out
    assert "fixed: fixed" not in out and "fixed: by configuration" not in out
