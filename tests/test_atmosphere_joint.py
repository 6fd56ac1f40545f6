"""Joint atmosphere fit of a night's spectra (atmospec.atmosphere.joint_fit): the block
model against `SpectrumForwardModel`, analytic derivatives against finite differences, recovery
of a throughput distortion and of each exposure's atmosphere from simulated spectra at
different airmasses, the aerosol/throughput degeneracy and its gauge, and bad input."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from scipy.linalg import cholesky_banded

# The same correlated e⁻ covariance as the single-spectrum tests (tests/ is on sys.path).
from test_atmosphere_fit import CORRELATION, electron_covariance

from atmospec.atmosphere.joint_fit import (
    EXPOSURE_PARAMETERS,
    JointFitConfig,
    _Block,
    fit_atmosphere_joint,
)
from atmospec.atmosphere.spectrum_fit import AtmosphereFitConfig, SpectrumForwardModel
from atmospec.errors import BadInputError
from atmospec.fitting import Whitener
from atmospec.spectro.spectrum import Spectrum
from spectractor_bridge.spectrum import read_spectrum, write_spectrum

CTIO_REAL = (Path(__file__).parent
             / "data/spectractor_ctio/reduc_20170530_134_spectrum_v2.4_selfcontained.fits.gz")
#: Correlation of neighbouring samples (lags 0–4): a banded covariance, as a 2D extraction's.
#: Known distortion of the tabulated throughput: a 5 % tilt over 400–1000 nm.
TILT = 0.05


def tilt(lam: np.ndarray) -> np.ndarray:
    """Multiplicative throughput distortion: linear, 0.975 at 400 nm, 1.025 at 1000 nm."""
    return 1.0 + TILT * (lam - 700.0) / 600.0


def layout(airmass: float, n: int = 900, disperser: str = "holo4_003") -> Spectrum:
    """LATISS spectrum layout in e⁻/nm (flux to be filled), PSF FWHM 4–6 px."""
    lam = np.linspace(372.0, 1085.0, n)
    header = fits.Header()
    for key, value in (("TARGET", "HD142331"), ("AIRMASS", airmass), ("OUTPRESS", 743.0),
                       ("EXPTIME", 30.0), ("GRATING", disperser), ("FILTER", "empty_1"),
                       ("INSTRMNT", "latiss")):
        header[key] = value
    psf = Table({"lambdas": lam[::10], "fwhm": 6.0 - 2.0 * (lam[::10] - 372.0) / 713.0})
    return Spectrum(wavelength=lam, flux=np.ones(n), flux_err=np.ones(n),
                    flux_unit="electron/nm", header=header, psf_table=psf)


def correlated_noise(cov: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``L z`` with ``L`` the Cholesky factor of the banded ``cov`` (band `CORRELATION`)."""
    n, bw = cov.shape[0], len(CORRELATION) - 1
    lower = np.zeros((bw + 1, n))
    for lag in range(bw + 1):
        lower[lag, : n - lag] = np.diagonal(cov, -lag)
    ab = cholesky_banded(lower, lower=True)
    out = np.zeros(n)
    for lag in range(bw + 1):
        out[lag:] += ab[lag, : n - lag] * z[: n - lag]
    return out


def simulate_night(n_exp: int = 10, seed: int = 3, distortion: bool = True,
                   ozone_shared: float | None = None, vaod_shared: float | None = None,
                   n: int = 900, noise: bool = True
                   ) -> tuple[list[Spectrum], list[dict[str, float]]]:
    """``n_exp`` noisy (``noise``) spectra at airmasses 1.0–2.2, each with its own
    atmosphere, grey, shift, resolution; the instrument throughput multiplied by `tilt`."""
    rng = np.random.default_rng(seed)
    airmasses = np.linspace(1.0, 2.2, n_exp)
    spectra, truths = [], []
    for x in airmasses:
        truth = {"pwv_mm": float(rng.uniform(1.0, 8.0)),
                 "ozone_du": (ozone_shared if ozone_shared is not None
                              else float(rng.uniform(240.0, 340.0))),
                 "vaod": (vaod_shared if vaod_shared is not None
                          else float(rng.uniform(0.01, 0.08))),
                 "grey": float(rng.uniform(0.7, 1.0)),
                 "dlambda_nm": float(rng.uniform(-0.3, 0.3)),
                 "resolution": float(rng.uniform(0.85, 1.15)), "airmass": float(x)}
        spec = layout(float(x), n=n)
        model = SpectrumForwardModel(spec, wavelength_range_nm=(350.0, 1095.0))
        t_fine = model.transmission_fine(truth["pwv_mm"], truth["ozone_du"], truth["vaod"])
        if distortion:
            t_fine = t_fine * tilt(model.fine_wavelength)
        expected = model.with_transmission(t_fine, truth["grey"], truth["dlambda_nm"],
                                           truth["resolution"])
        cov = electron_covariance(expected, model.wavelength)
        flux = expected.copy()
        if noise:
            flux += correlated_noise(cov, rng.standard_normal(expected.size))
        spectra.append(Spectrum(wavelength=model.wavelength, flux=flux,
                                flux_err=np.sqrt(np.diag(cov)), flux_unit=spec.flux_unit,
                                header=spec.header.copy(), covariance=cov,
                                psf_table=spec.psf_table))
        truths.append(truth)
    return spectra, truths


@pytest.fixture(scope="module")
def night() -> tuple[list[Spectrum], list[dict[str, float]]]:
    return simulate_night()


# ---------------------------------------------------------------------- model
def test_block_matches_forward_model_and_derivatives() -> None:
    spec = layout(1.4)
    model = SpectrumForwardModel(spec, wavelength_range_nm=(350.0, 1095.0))
    sel = np.arange(model.wavelength.size)
    flux = model(4.0, 280.0, 0.05)
    cov = electron_covariance(flux, model.wavelength)
    whiten = Whitener(cov, np.sqrt(np.diag(cov)), True, 0.125, "x")
    assert whiten.label == "banded (lag <= 4)"
    # Banded whitening equals the dense Cholesky one.
    r = np.random.default_rng(0).standard_normal(flux.size)
    np.testing.assert_allclose(whiten(r), np.linalg.solve(np.linalg.cholesky(cov), r),
                               rtol=1e-8, atol=1e-10)
    lam = model.fine_wavelength
    basis = np.column_stack([(lam - 700.0) / 400.0, ((lam - 700.0) / 400.0) ** 2])
    block = _Block(model, sel, np.zeros_like(flux), whiten, basis, None)
    p = {"grey": 0.9, "pwv_mm": 4.0, "ozone_du": 280.0, "vaod": 0.05, "dlambda_nm": 0.2,
         "resolution": 1.1}
    c = np.array([0.03, -0.01])
    resid, jac = block.evaluate(p, c, True)
    m_block = whiten(np.zeros_like(flux)) - resid
    t = model.transmission_fine(4.0, 280.0, 0.05) * np.exp(basis @ c)
    expected = model.with_transmission(t, 0.9, 0.2, 1.1)
    np.testing.assert_allclose(m_block, whiten(expected), rtol=1e-9, atol=1e-9)
    # Analytic derivatives against central differences.
    steps = {"grey": 1e-4, "pwv_mm": 1e-3, "ozone_du": 0.05, "vaod": 1e-4,
             "dlambda_nm": 1e-4, "resolution": 1e-4}
    for j, name in enumerate(EXPOSURE_PARAMETERS):
        hi = dict(p, **{name: p[name] + steps[name]})
        lo = dict(p, **{name: p[name] - steps[name]})
        fd = (block.evaluate(lo, c, False)[0] - block.evaluate(hi, c, False)[0]) / (
            2 * steps[name])
        scale = np.max(np.abs(jac[:, j]))
        assert np.max(np.abs(fd - jac[:, j])) < 1e-4 * scale, name
    for j in range(c.size):
        dc = np.zeros_like(c)
        dc[j] = 1e-5
        fd = (block.evaluate(p, c - dc, False)[0] - block.evaluate(p, c + dc, False)[0]) / 2e-5
        col = jac[:, len(EXPOSURE_PARAMETERS) + j]
        assert np.max(np.abs(fd - col)) < 1e-4 * np.max(np.abs(col))


def test_truncated_band_whitening_matches_dense() -> None:
    """A dense covariance with fast-decaying correlations (AR(1), ρ = 0.6^|i-j|) is whitened
    as a band (correlations below 1e-6 neglected) to the dense result; the real CTIO
    covariance, whose blue-end samples correlate over ~270 samples, keeps the dense factor."""
    n = 1500
    lags = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
    err = np.linspace(1.0, 3.0, n)
    cov = 0.6 ** lags * np.outer(err, err)
    band = Whitener(cov, err, True, 0.125, "ar1", band_tolerance=1e-6)
    dense = Whitener(cov, err, True, 0.0, "ar1")
    assert band.label == "banded (lag <= 27; |ρ| < 1e-06 beyond neglected)", band.label
    assert dense.label == "full"
    r = np.random.default_rng(1).standard_normal((n, 3)) * err[:, None]
    np.testing.assert_allclose(np.sum(band(r) ** 2, axis=0), np.sum(dense(r) ** 2, axis=0),
                               rtol=1e-5)
    ctio = read_spectrum(CTIO_REAL).covariance
    w = Whitener(ctio, np.sqrt(np.diag(ctio)), True, 0.125, "ctio", band_tolerance=1e-6)
    assert w.label == "full"


# ---------------------------------------------------------------------- recovery
def _report(fit, truths, label: str) -> dict[str, np.ndarray]:
    out = {}
    for name in ("pwv_mm", "ozone_du", "vaod"):
        v = np.array([fit.values[e][name] for e in range(len(truths))])
        t = np.array([tr[name] for tr in truths])
        s = np.array([fit.errors[e][name] or np.nan for e in range(len(truths))])
        out[name], out[name + "_err"], out[name + "_truth"] = v, s, t
    print(f"{label}: χ²/ndof {fit.chi2_ndof:.3f}, {fit.n_iterations} iterations, "
          f"{fit.nfev} evaluations, timings {({k: round(v, 2) for k, v in fit.timings.items()})}"
          f", gauge {fit.gauge}")
    for name in ("pwv_mm", "ozone_du", "vaod"):
        d = out[name] - out[name + "_truth"]
        pulls = np.round(d / out[name + "_err"], 2)
        print(f"  {name}: max |fit - truth| {np.max(np.abs(d)):.4f}, errors "
              f"{np.nanmedian(out[name + '_err']):.4f}, pulls {pulls}")
    return out


def mahalanobis(fit, name: str, deviation: np.ndarray) -> float:
    """``dᵀ Σ⁻¹ d / N`` of the per-exposure deviations of ``name`` with their covariance."""
    cols = [fit.parameter_names.index(f"{name}[{e}]") for e in range(deviation.size)]
    cov = fit.parameter_covariance[np.ix_(cols, cols)]
    return float(deviation @ np.linalg.solve(cov, deviation)) / deviation.size


def test_joint_fit_recovers_throughput_and_atmospheres() -> None:
    """With one external VAOD (a photometer's, σ 0.003) and one ozone column for the night,
    the 5 % tilt of the throughput and every exposure's atmosphere are recovered."""
    spectra, truths = simulate_night(ozone_shared=295.0)
    config = JointFitConfig(share_ozone=True, vaod_priors=((0, truths[0]["vaod"], 0.003),))
    fit = fit_atmosphere_joint(spectra, config, sources=[f"exp{i}" for i in range(10)])
    out = _report(fit, truths, "VAOD prior + shared ozone")
    assert fit.success and fit.gauge == ("mean",)
    assert all(u.startswith("banded (lag <= 4;") for u in fit.covariance_used)
    assert np.all(np.abs(out["pwv_mm"] - out["pwv_mm_truth"]) < 0.5)
    assert np.all(np.abs(out["ozone_du"] - out["ozone_du_truth"]) < 30.0)
    assert np.all(np.abs(out["vaod"] - out["vaod_truth"]) < 0.01)
    assert abs(fit.shared["ozone_du"][0] - 295.0) < 3 * fit.shared["ozone_du"][1] + 1.0
    # The distortion, up to its geometric mean (the grey terms' share), to 0.5 %.
    lam = fit.correction_wavelength_nm
    want = tilt(lam) / math.exp(np.mean(np.log(tilt(np.linspace(*fit.correction_range_nm,
                                                                1024)))))
    dev = fit.correction / want - 1.0
    print(f"  correction: max |C/truth - 1| {np.max(np.abs(dev)):.4f}, median error "
          f"{np.median(fit.correction_err):.4f}, pulls max "
          f"{np.max(np.abs(dev * want / fit.correction_err)):.2f}")
    assert np.max(np.abs(dev)) < 0.005
    assert np.max(np.abs(dev * want / fit.correction_err)) < 4.0
    assert 0.9 < fit.chi2_ndof < 1.1
    # Pulls: the exposures' errors are correlated (through the correction and the VAOD
    # anchor), so test the deviations with their full covariance: χ²/N of one realisation
    # (N = 10: 95 % of χ²_10 / 10 lies within 0.33-2.05).
    for name in ("pwv_mm", "vaod"):
        chi2 = mahalanobis(fit, name, out[name] - out[name + "_truth"])
        print(f"  {name}: deviations' χ²/N with the full covariance {chi2:.2f}")
        assert 0.25 < chi2 < 2.5, name
    json.dumps(fit.to_dict())


def test_stable_night_langley_lever_arm_recovers_throughput() -> None:
    """Aerosols and ozone stable over the night (one VAOD, one ozone column), clouds free
    (grey per exposure): the airmass lever arm alone separates the tilt from the aerosols."""
    spectra, truths = simulate_night(n_exp=8, seed=7, ozone_shared=310.0, vaod_shared=0.045)
    fit = fit_atmosphere_joint(spectra, JointFitConfig(share_ozone=True, share_vaod=True))
    out = _report(fit, truths, "shared VAOD + ozone")
    assert fit.success and fit.gauge == ("mean",)
    (vaod, s_vaod), (ozone, s_ozone) = fit.shared["vaod"], fit.shared["ozone_du"]
    print(f"  shared VAOD {vaod:.4f} ± {s_vaod:.4f}, ozone {ozone:.1f} ± {s_ozone:.1f}")
    assert abs(vaod - 0.045) < 0.01 and abs(ozone - 310.0) < 30.0
    assert np.all(np.abs(out["pwv_mm"] - out["pwv_mm_truth"]) < 0.5)
    lam = fit.correction_wavelength_nm
    grid = np.linspace(*fit.correction_range_nm, 1024)
    want = tilt(lam) / math.exp(np.mean(np.log(tilt(grid))))
    assert np.max(np.abs(fit.correction / want - 1.0)) < 0.005


def test_default_gauge_puts_aerosol_shaped_throughput_error_into_vaod(night) -> None:
    """Per-exposure VAOD and ozone with no external information: the throughput is fixed along
    the aerosol and ozone shapes (gauge), so the tilt's aerosol-like part appears in every
    VAOD as a / X_e (and ozone as b / X_e), while PWV is unaffected and the data are fitted
    to their noise."""
    spectra, truths = night
    fit = fit_atmosphere_joint(spectra)
    out = _report(fit, truths, "default gauge")
    assert fit.success and fit.gauge == ("mean", "aerosol", "ozone")
    assert 0.9 < fit.chi2_ndof < 1.1
    assert np.all(np.abs(out["pwv_mm"] - out["pwv_mm_truth"]) < 0.5)
    inv_x = 1.0 / np.array(fit.airmass)
    for name, tol in (("vaod", 0.003), ("ozone_du", 8.0)):
        bias = out[name] - out[name + "_truth"]
        a = float(np.sum(bias * inv_x) / np.sum(inv_x ** 2))
        print(f"  {name}: bias = {a:.4g} / X, residual scatter {np.std(bias - a * inv_x):.4g}")
        assert np.max(np.abs(bias - a * inv_x)) < tol, name
    # Without distortion the same fit is unbiased.
    clean, truths0 = simulate_night(distortion=False, seed=4, n_exp=6)
    fit0 = fit_atmosphere_joint(clean)
    out0 = _report(fit0, truths0, "no distortion")
    assert np.all(np.abs(out0["vaod"] - out0["vaod_truth"]) < 0.01)
    assert np.all(np.abs(out0["ozone_du"] - out0["ozone_du_truth"]) < 30.0)
    assert np.max(np.abs(fit0.correction - 1.0)) < 0.01


def test_pulls_over_realisations() -> None:
    """Errors against the scatter of repeated simulations of one night (6 exposures, tilted
    throughput, a photometer's VAOD for exposure 0 with its own noise, shared ozone)."""
    n_real, sigma_prior = 20, 0.003
    pulls: dict[str, list[float]] = {"pwv_mm": [], "vaod": [], "ozone_du": [],
                                     "correction": []}
    rng = np.random.default_rng(99)
    probe = np.array([450.0, 600.0, 750.0, 950.0])
    clean, truths = simulate_night(n_exp=6, seed=21, ozone_shared=280.0, noise=False)
    for _ in range(n_real):
        spectra = [replace(s, flux=s.flux + correlated_noise(s.covariance,
                                                             rng.standard_normal(s.n_points)))
                   for s in clean]
        prior = truths[0]["vaod"] + sigma_prior * rng.standard_normal()
        fit = fit_atmosphere_joint(spectra, JointFitConfig(
            share_ozone=True, vaod_priors=((0, prior, sigma_prior),)))
        assert fit.success
        for e, tr in enumerate(truths):
            pulls["pwv_mm"].append((fit.values[e]["pwv_mm"] - tr["pwv_mm"])
                                   / fit.errors[e]["pwv_mm"])
            pulls["vaod"].append((fit.values[e]["vaod"] - tr["vaod"]) / fit.errors[e]["vaod"])
        value, err = fit.shared["ozone_du"]
        pulls["ozone_du"].append((value - 280.0) / err)
        corr, corr_err = fit.correction_at(probe)
        grid = np.linspace(*fit.correction_range_nm, 1024)
        want = tilt(probe) / math.exp(np.mean(np.log(tilt(grid))))
        pulls["correction"].extend((corr - want) / corr_err)
    stats = {k: (float(np.mean(v)), float(np.std(v, ddof=1))) for k, v in pulls.items()}
    print("pulls (mean, std) over realisations:",
          {k: (round(m, 2), round(sd, 2)) for k, (m, sd) in stats.items()})
    for name, (mean, std) in stats.items():
        assert 0.65 < std < 1.5 and abs(mean) < 0.8, (name, mean, std)


def test_without_correction_equals_independent_fits(tmp_path: Path) -> None:
    """``throughput_degree=0`` and nothing shared: the joint fit is N independent fits, and
    gives `fit_atmosphere`'s values and errors. Spectra given as files give the same fit."""
    from atmospec.atmosphere.spectrum_fit import fit_atmosphere

    spectra, _ = simulate_night(n_exp=3, seed=8, distortion=False)
    joint = fit_atmosphere_joint(spectra, JointFitConfig(throughput_degree=0))
    assert joint.gauge == () and joint.correction_coefficients.size == 0
    paths = [write_spectrum(s, tmp_path / f"s{i}.fits") for i, s in enumerate(spectra)]
    from_files = fit_atmosphere_joint([partial(read_spectrum, p) for p in paths],
                                      JointFitConfig(throughput_degree=0),
                                      sources=[str(p) for p in paths])
    assert from_files.sources == tuple(str(p) for p in paths)
    for e in range(3):
        for name in ("pwv_mm", "ozone_du", "vaod"):
            assert from_files.values[e][name] == pytest.approx(joint.values[e][name],
                                                               rel=1e-6, abs=1e-9)
    for e, spec in enumerate(spectra):
        single = fit_atmosphere(spec)
        for name in ("pwv_mm", "ozone_du", "vaod", "grey", "dlambda_nm", "resolution"):
            sigma = single.errors[name]
            assert abs(joint.values[e][name] - single.values[name]) < 0.05 * sigma, name
            assert joint.errors[e][name] == pytest.approx(sigma, rel=0.05), name


# ---------------------------------------------------------------------- bad input
def test_bad_input(night) -> None:
    spectra, _ = night
    with pytest.raises(BadInputError, match="no spectra"):
        fit_atmosphere_joint([])
    with pytest.raises(BadInputError, match="at least two"):
        fit_atmosphere_joint(spectra[:1])
    other = layout(1.2, disperser="ronchi170lpmm")
    header = other.header.copy()
    mixed = [*spectra[:2], replace(spectra[2], header=header)]
    with pytest.raises(BadInputError, match=r"spectrum 2: disperser .* differs"):
        fit_atmosphere_joint(mixed)
    with pytest.raises(BadInputError, match="vaod_priors names exposure 7"):
        fit_atmosphere_joint(spectra[:2], JointFitConfig(vaod_priors=((7, 0.05, 0.01),)))
    cfg = JointFitConfig(spectrum=AtmosphereFitConfig(fit_angstrom=True))
    with pytest.raises(BadInputError, match="fit_angstrom"):
        fit_atmosphere_joint(spectra[:2], cfg)


def test_cli_joint(tmp_path, capsys) -> None:
    """``atmospec fit-atmosphere A B --joint`` writes one JSON with both exposures; several
    spectra without ``--joint`` are a usage error (exit 2)."""
    import json
    import subprocess
    import sys
    from dataclasses import replace as _replace
    from pathlib import Path as _Path

    from spectractor_bridge.spectrum import read_spectrum, write_spectrum

    real = (_Path(__file__).parent / "data" / "spectractor_ctio"
            / "reduc_20170530_134_spectrum_v2.4_selfcontained.fits.gz")
    spec = read_spectrum(real)
    header = spec.header.copy()
    header["AIRMASS"] = 1.6
    paths = [str(real), str(write_spectrum(_replace(spec, header=header),
                                           tmp_path / "second.fits"))]
    out = tmp_path / "joint.json"
    run = subprocess.run([sys.executable, "-m", "atmospec", "fit-atmosphere", *paths,
                          "--joint", "--share-ozone", "--out", str(out)],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    saved = json.loads(out.read_text())
    assert len(saved["exposures"]) == 2 and "second.fits" in run.stdout
    assert saved["exposures"][1]["airmass"] == pytest.approx(1.6)
    from atmospec.cli import main

    assert main(["fit-atmosphere", *paths, "--out", str(tmp_path / "x.json")]) == 2
    assert "need --joint" in capsys.readouterr().err
