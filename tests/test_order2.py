"""Order-2 contamination correction (`atmospec.spectro.order2`) against the simulator.

Full-frame (4000 × 4072) holo4_003 exposures of HD142331 drawn by `render_dispersed_exposure`
(physical model: CALSPEC SED, atmosphere, throughput, disperser tables), with orders 0–2 and,
for comparison, orders 0–1 only; Poisson + read noise and the exact variance plane; extracted
by `extract_spectrum` and corrected by `correct_extraction`.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from astropy.io import fits

from atmospec.exposure import Exposure
from atmospec.sim.dispersed import (
    DispersedSceneConfig,
    DispersedSpectrumModel,
    electrons_per_nm,
    render_dispersed_exposure,
)
from atmospec.spectro.dispersers import load_disperser
from atmospec.spectro.extract import extract_spectrum, result_to_spectrum
from atmospec.spectro.order2 import correct_extraction, correct_order2, with_order2
from atmospec.spectro.spectrum import Spectrum
from spectractor_bridge.spectrum import read_spectrum, write_spectrum

SHAPE = (4000, 4072)
X0, Y0 = 1750.3, 3699.6
FWHM = 6.0
LINSPOS = 72.1
SKY, READ_NOISE = 300.0, 9.0
MODEL = DispersedSpectrumModel(target="HD142331", disperser="holo4_003", exptime_s=30.0,
                               airmass=1.2, pressure_hpa=743.0)
# the renderer's own wavelength samples (0.1 nm over 350–1100 nm)
GRID = np.arange(350.0, 1100.0, 0.1) + 0.05
BIN_NM = 10.0


def _exposure(orders: tuple[int, ...], seed: int):
    signal, truth = render_dispersed_exposure(
        SHAPE, X0, Y0, FWHM, LINSPOS, np.random.default_rng(1), MODEL,
        config=DispersedSceneConfig(orders=orders))
    rng = np.random.default_rng(seed)
    image = rng.poisson(signal + SKY).astype(np.float32)
    image += rng.normal(0.0, READ_NOISE, signal.shape).astype(np.float32)
    exp = Exposure.from_image(image, metadata=fits.Header({"OBSID": "AT_O_20261123_000077"}))
    exp.variance[:] = signal + SKY + READ_NOISE**2
    return exp, truth


@pytest.fixture(scope="module")
def truth_per_nm() -> dict[int, np.ndarray]:
    return electrons_per_nm(MODEL, GRID)


@pytest.fixture(scope="module")
def runs():
    out = {}
    for key, orders, seed in (("with", (0, 1, 2), 21), ("without", (0, 1), 22)):
        exp, truth = _exposure(orders, seed)
        t = time.perf_counter()
        r = extract_spectrum(exp, X0, Y0, "holo4_003", LINSPOS)
        c = correct_extraction(r)
        print(f"\n{key} order 2: extraction + correction {time.perf_counter() - t:.2f} s, "
              f"{c.iterations} fixed-point steps")
        out[key] = (r, c, truth)
    return out


def _binned_ratio(r, flux_per_nm: np.ndarray, reference: np.ndarray, lo: float, hi: float
                  ) -> np.ndarray:
    """Per ``BIN_NM`` bin of λ₁: Σ rows' e⁻ / Σ e⁻ of ``reference`` (e⁻/nm on ``GRID``)
    over the rows' wavelength extent, minus 1."""
    lam, dl = r.wavelength_nm, r.dlambda_drow
    out = []
    for a in np.arange(lo, hi, BIN_NM):
        s = (lam >= a) & (lam < a + BIN_NM)
        got = np.sum(flux_per_nm[s] * dl[s])
        i, j = np.argmin(lam[s]), np.argmax(lam[s])
        lmin, lmax = lam[s][i] - 0.5 * dl[s][i], lam[s][j] + 0.5 * dl[s][j]
        q = (GRID >= lmin) & (GRID < lmax)
        out.append(got / (reference[q].sum() * 0.1) - 1.0)
    return np.array(out)


def test_contaminated_spectrum_is_corrected(runs, truth_per_nm):
    r, c, _ = runs["with"]
    truth1 = truth_per_nm[1]
    raw = _binned_ratio(r, r.flux_per_nm, truth1, 800.0, 1000.0)
    corr = _binned_ratio(r, c.flux_per_nm, truth1, 800.0, 1000.0)
    blue_raw = _binned_ratio(r, r.flux_per_nm, truth1, 450.0, 650.0)
    blue = _binned_ratio(r, c.flux_per_nm, truth1, 450.0, 650.0)
    print(f"\n800-1000 nm, {BIN_NM:.0f} nm bins: before median {np.median(raw):+.4f}, after "
          f"median {np.median(corr):+.4f}, median |.| {np.median(np.abs(corr)):.4f}, "
          f"max |.| {np.max(np.abs(corr)):.4f}; 450-650 nm median |.| "
          f"{np.median(np.abs(blue)):.4f}")
    assert np.median(raw) > 0.10
    assert np.median(np.abs(corr)) < 0.01
    assert abs(np.median(corr)) < 0.005
    # the blue part carries no second order: untouched
    sel = (r.wavelength_nm > 450.0) & (r.wavelength_nm < 650.0)
    assert np.all(c.order2_per_px[sel] == 0.0)
    assert np.allclose(c.flux_per_nm[sel], r.flux_per_nm[sel], rtol=1e-12, atol=0.0)
    assert np.allclose(blue, blue_raw, rtol=0.0, atol=1e-12)
    assert np.median(np.abs(blue)) < 0.01
    # the correction's wavelengths are the extraction's
    assert np.max(np.abs(c.wavelength_nm - r.wavelength_nm)) < 1e-6
    # errors grow (a little) where the model is subtracted
    red = (r.wavelength_nm > 800.0) & (r.wavelength_nm < 1000.0)
    assert np.all(c.flux_per_nm_err[red] >= r.flux_per_nm_err[red])
    assert np.median(c.flux_per_nm_err[red] / r.flux_per_nm_err[red]) < 1.1


def test_subtracted_model_matches_disperser_table(runs, truth_per_nm):
    r0, c0, truth0 = runs["without"]
    r2, _, _ = runs["with"]
    assert set(truth0["orders"]) == {0, 1}
    disp = load_disperser("holo4_003")
    red = (r0.wavelength_nm > 800.0) & (r0.wavelength_nm < 1000.0)
    lam2 = c0.wavelength_order2_nm[red]
    assert np.all(np.abs(lam2 / r0.wavelength_nm[red] - 0.5) < 0.01)
    assert np.allclose(c0.ratio_2over1[red], disp.ratio_order_2over1(lam2))
    # the subtracted model is r₂₁(λ₂) F₁(λ₂) |dλ₂/du|: compare with the truth's order 2
    # (the model the simulator draws), per nm of λ₂ ...
    model2 = c0.order2_spectrum_per_nm[red]
    truth2 = np.interp(lam2, GRID, truth_per_nm[2])
    ratio = model2 / truth2 - 1.0
    # ... and in e⁻ per nm of λ₁, with 10 nm bins
    jac = c0.dlambda2_du / c0.dlambda1_du
    assert np.all(np.abs(jac[red] - 0.5) < 0.02)
    model_nm = c0.order2_per_nm
    truth_o2_in_lam1 = np.interp(c0.wavelength_order2_nm, GRID, truth_per_nm[2]) * jac
    lam = r0.wavelength_nm
    bins = np.floor(lam[red] / BIN_NM)
    _, inv = np.unique(bins, return_inverse=True)
    b = np.bincount(inv, model_nm[red]) / np.bincount(inv, truth_o2_in_lam1[red]) - 1.0
    # the frame without order 2: the correction removes what the table predicts, so the
    # corrected flux falls short of the truth by that amount
    deficit = _binned_ratio(r0, c0.flux_per_nm, truth_per_nm[1], 800.0, 1000.0)
    predicted = _binned_ratio(r0, -model_nm, truth_per_nm[1], 800.0, 1000.0) + 1.0
    # the measured contamination: contaminated minus clean extraction (independent noise)
    assert np.array_equal(r0.rows, r2.rows)
    measured = r2.flux_per_nm[red] - r0.flux_per_nm[red]
    m = np.bincount(inv, measured) / np.bincount(inv, model_nm[red]) - 1.0
    print(f"\norder-2 model / truth order 2: per row median {np.median(ratio):+.4f} "
          f"(median |.| {np.median(np.abs(ratio)):.4f}); 10 nm bins median {np.median(b):+.4f}"
          f"; (contaminated - clean) / model: median {np.median(m):+.4f}, median |.| "
          f"{np.median(np.abs(m)):.4f}; clean frame after correction median "
          f"{np.median(deficit):+.4f} vs predicted {np.median(predicted):+.4f}")
    assert abs(np.median(ratio)) < 0.02
    assert np.median(np.abs(b)) < 0.02
    assert abs(np.median(m)) < 0.02
    assert np.median(np.abs(m)) < 0.05
    assert np.median(predicted) < -0.10
    assert abs(np.median(deficit - predicted)) < 0.01
    # nothing is subtracted where λ₂ falls below the extracted range
    blue = r0.wavelength_nm < 650.0
    assert np.all(c0.order2_per_px[blue] == 0.0)


def test_fixed_point_on_a_synthetic_spectrum():
    """Exact inversion of the forward model (orders 2 and 3 of holo4_003, whose r₃₂ table
    gives the third) on a smooth spectrum, any sample order."""
    disp = load_disperser("holo4_003")
    assert disp.has_order3
    d2ccd, pix, theta0 = disp.d2ccd_mm(LINSPOS), 0.010, 1e-4
    u = np.arange(3200.0, 400.0, -1.0)  # rows run from red to blue, as on LATISS

    def lam(m):
        return disp.wavelength_nm(u, m, d2ccd, pix, theta0)

    def dl(m):
        return np.abs(np.gradient(lam(m), u))

    def f1(x):
        return 1e4 * np.exp(-0.5 * ((x - 550.0) / 200.0) ** 2) + 50.0 * (x > 0)

    lam1, lam2, lam3 = lam(1), lam(2), lam(3)
    contam = np.where(lam2 >= lam1.min(), disp.ratio_order_2over1(lam2) * f1(lam2), 0.0) * dl(2)
    contam3 = np.where(lam3 >= lam1.min(), disp.order_efficiency(3, lam3)
                       / disp.transmission(lam3) * f1(lam3), 0.0) * dl(3)
    assert np.count_nonzero(contam3) > 100  # order 3 is on these samples
    obs = f1(lam1) * dl(1) + contam + contam3
    c = correct_order2(u, obs, np.sqrt(obs), disp, d2ccd, pix, theta0)
    assert np.allclose(c.order2_per_px, contam, rtol=2e-3, atol=1e-6)
    assert np.allclose(c.order3_per_px, contam3, rtol=2e-3, atol=1e-6)
    assert np.allclose(c.flux_per_nm, f1(lam1), rtol=2e-3)
    assert c.has_order3

    # The linear operator reproduces the contamination the fixed point subtracted.
    k = c.operator()
    assert np.allclose(k @ c.flux_per_nm, c.order2_per_nm + c.order3_per_nm, rtol=1e-10,
                       atol=1e-9)
    # Order 3 left out: its light stays in the corrected flux.
    c2 = correct_order2(u, obs, np.sqrt(obs), disp, d2ccd, pix, theta0, max_order=2)
    assert not c2.has_order3 and np.all(c2.order3_per_px == 0.0)
    third = contam3 > 0.01 * obs
    assert np.all(c2.flux_per_px[third] - f1(lam1[third]) * dl(1)[third]
                  > 0.5 * contam3[third])


def test_no_third_order_without_a_table():
    """ronchi170lpmm ships no r₃₂: the correction is the order-2 one, exactly."""
    disp = load_disperser("ronchi170lpmm")
    assert not disp.has_order3
    d2ccd, pix = disp.d2ccd_mm(LINSPOS), 0.010
    u = np.arange(3200.0, 400.0, -1.0)
    lam1 = disp.wavelength_nm(u, 1, d2ccd, pix, 0.0)
    obs = 1e4 * np.exp(-0.5 * ((lam1 - 550.0) / 200.0) ** 2) + 50.0
    c3 = correct_order2(u, obs, np.sqrt(obs), disp, d2ccd, pix)
    c2 = correct_order2(u, obs, np.sqrt(obs), disp, d2ccd, pix, max_order=2)
    assert not c3.has_order3 and np.all(np.isnan(c3.wavelength_order3_nm))
    np.testing.assert_array_equal(c3.flux_per_px, c2.flux_per_px)
    np.testing.assert_array_equal(c3.flux_err_per_px, c2.flux_err_per_px)


def test_order2_covariance_matches_monte_carlo():
    """The corrected flux's covariance, ``(I + K)⁻¹ C (I + K)⁻ᵀ``, against the scatter of 400
    noisy corrections: the red–blue anticorrelation of the subtracted contamination is in it
    (a diagonal-only error gets the variance of the blue–red flux difference wrong)."""
    disp = load_disperser("holo4_003")
    d2ccd, pix, theta0 = disp.d2ccd_mm(LINSPOS), 0.010, 1e-4
    u = np.arange(2900.0, 1100.0, -4.0)
    lam1 = disp.wavelength_nm(u, 1, d2ccd, pix, theta0)
    dl1 = np.abs(np.gradient(lam1, u))
    obs = 2e4 * np.exp(-0.5 * ((lam1 - 450.0) / 150.0) ** 2) * dl1 + 100.0
    err = np.sqrt(obs)
    c = correct_order2(u, obs, err, disp, d2ccd, pix, theta0)
    idx = np.argsort(c.wavelength_nm)
    spec = Spectrum(wavelength=c.wavelength_nm[idx], flux=(obs / dl1)[idx],
                    flux_err=(err / dl1)[idx], flux_unit="electron/nm",
                    header=fits.Header())
    cov = with_order2(spec, c).covariance
    rng = np.random.default_rng(4)
    draws = np.array([correct_order2(u, obs + err * rng.standard_normal(u.size), err, disp,
                                     d2ccd, pix, theta0).flux_per_nm[idx] for _ in range(400)])
    lam = c.wavelength_nm[idx]
    blue, red = (lam > 400) & (lam < 500), (lam > 800) & (lam < 1000)
    probe = np.where(blue, 1.0, 0.0) - np.where(red, 1.0, 0.0)  # a blue − red colour
    empirical = float(np.var(draws @ probe, ddof=1))
    predicted = float(probe @ cov @ probe)
    diagonal = float(probe**2 @ np.diag(cov))
    print(f"\nblue − red variance: Monte Carlo {empirical:.4g}, propagated {predicted:.4g}, "
          f"diagonal only {diagonal:.4g}")
    assert predicted == pytest.approx(empirical, rel=0.15)
    assert diagonal < 0.85 * empirical


def test_order2_hdu_round_trip(runs, tmp_path):
    r, c, _ = runs["with"]
    spec = with_order2(result_to_spectrum(r), c)
    assert spec.header["ORD2CORR"]
    path = tmp_path / "spec.fits"
    write_spectrum(spec, path)
    back = read_spectrum(path)
    assert back.order2 is not None
    data = np.asarray(back.order2.data)
    assert data.shape == (3, r.wavelength_nm.size)
    assert np.all(np.diff(data[0]) > 0)
    assert np.allclose(np.sort(c.wavelength_nm), data[0])
    assert np.allclose(back.flux, np.asarray(spec.flux))


def test_drawn_order_against_pixel_by_pixel_moffat():
    """`order2_image`'s drawing of one order: every source's truncated, normalised Moffat
    added pixel by pixel, discs crossing the cutout's four edges included (those pixels
    must not be lost nor land elsewhere)."""
    from types import SimpleNamespace

    from atmospec.spectro.order2 import _draw_order

    ny, nx, n = 70, 40, 60
    rng = np.random.default_rng(4)
    rows = np.arange(4, 4 + n, dtype=float)  # cutout rows 4 … 63 of a cutout at (3, 0)
    lam = np.linspace(400.0, 1000.0, n)
    result = SimpleNamespace(
        cutout_origin=(3, 0), rows=rows, wavelength_nm=lam, refraction=None,
        gamma=rng.uniform(2.0, 3.0, n), alpha=rng.uniform(2.0, 2.5, n),
        x_trace=np.linspace(3.0 - 2.0, 3.0 + nx + 1.0, n))  # off the left, then the right
    per_row = rng.uniform(10.0, 100.0, n)
    per_row[7] = 0.0  # not drawn
    lam_m = lam / 2.0 + 1.0
    image = np.full((ny, nx), 0.5)
    _draw_order(image, result, per_row, lam_m, 2.5)
    # reference: the same PSF read at λ_m, drawn source by source on every pixel
    expected = np.full((ny, nx), 0.5)
    gamma = np.interp(lam_m, lam, result.gamma)
    beta = np.interp(lam_m, lam, result.alpha) + 0.5
    fwhm = 2.0 * gamma * np.sqrt(2.0 ** (1.0 / beta) - 1.0)
    yy, xx = np.mgrid[:ny, :nx]
    for i in np.flatnonzero(per_row > 0):
        r2 = (xx - (result.x_trace[i] - 3.0)) ** 2 + (yy - rows[i]) ** 2
        psf = (beta[i] - 1.0) / (np.pi * gamma[i] ** 2) * (1.0 + r2 / gamma[i] ** 2) ** (
            -beta[i])
        expected += np.where(r2 <= (2.5 * fwhm[i]) ** 2, per_row[i] * psf, 0.0)
    np.testing.assert_allclose(image, expected, rtol=1e-12, atol=1e-12)
    # the discs of the first and last sources reach past the cutout's edges
    assert expected[:, 0].max() > 1.0 and expected[:, -1].max() > 1.0
    assert expected[-1].max() > 0.51 and expected[0].max() > 0.51
