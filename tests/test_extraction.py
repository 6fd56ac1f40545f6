"""First-order extraction (`atmospec.spectro.extract`) against the simulator's truth.

Full-size (4000 × 4072) holo4_003 frames: `render_dispersed` (orders 0 and 1 only unless
said otherwise) + flat sky + Poisson and read noise, wrapped directly as an `Exposure`
with the exact variance plane (signal + sky + read noise²): ISR adds nothing here.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from astropy.io import fits

from atmospec.errors import BadInputError
from atmospec.exposure import Exposure
from atmospec.sim.dispersed import DispersedSceneConfig, render_dispersed, stellar_sed
from atmospec.spectro.extract import (
    ExtractionConfig,
    ExtractionResult,
    extract_spectrum,
    result_to_spectrum,
)
from atmospec.spectro.psf import moffat1d_fwhm
from spectractor_bridge.spectrum import read_spectrum, write_spectrum

SHAPE = (4000, 4072)
X0, Y0 = 1750.3, 3699.6
FWHM = 6.0
LINSPOS = 72.1
FLUX = 2e7
SKY, READ_NOISE = 300.0, 9.0
NO_ORDER2 = DispersedSceneConfig(orders=(0, 1))


def _noisy(signal: np.ndarray, seed: int, obsid: str = "AT_O_20261123_000042") -> Exposure:
    rng = np.random.default_rng(seed)
    image = rng.poisson(signal + SKY).astype(np.float32)
    image += rng.normal(0.0, READ_NOISE, signal.shape).astype(np.float32)
    exp = Exposure.from_image(image, metadata=fits.Header({"OBSID": obsid}))
    exp.variance[:] = signal + SKY + READ_NOISE**2
    return exp


def _truth_per_nm(truth: dict, cfg: DispersedSceneConfig, lam: np.ndarray,
                  order: int = 1) -> np.ndarray:
    """e⁻ per nm sent into ``order`` (the simulator's SED sampling, normalised to the
    truth's per-order flux)."""
    lo, hi = cfg.wavelength_range_nm
    n = max(round((hi - lo) / cfg.wavelength_step_nm), 2)
    step = (hi - lo) / n
    grid = lo + (np.arange(n) + 0.5) * step
    sed = stellar_sed(grid, cfg)
    dens = truth["orders"][order]["flux_e"] * sed / sed.sum() / step
    return np.interp(lam, grid, dens)


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, dict]:
    return render_dispersed(SHAPE, X0, Y0, FLUX, FWHM, "holo4_003", LINSPOS,
                            np.random.default_rng(1), config=NO_ORDER2)


@pytest.fixture(scope="module")
def results(scene) -> list[ExtractionResult]:
    signal, _ = scene
    out = []
    for seed in (11, 12, 13):
        exp = _noisy(signal, seed)
        t = time.perf_counter()
        out.append(extract_spectrum(exp, X0, Y0, "holo4_003", LINSPOS))
        print(f"\nfull-frame extraction: {time.perf_counter() - t:.2f} s")
    return out


def test_rotation_angle(results, scene):
    _, truth = scene
    for r in results:
        assert abs(r.angle_deg - truth["tilt_deg"]) < 0.02
        assert 0 < r.angle_err_deg < 0.01
        # the prior (the disperser's map) differs from the simulated constant tilt
        assert abs(r.angle_prior_deg - truth["tilt_deg"]) < 0.1


def test_trace_centre(results, scene):
    _, truth = scene
    o = truth["orders"][1]
    lam, tx, ty = (np.asarray(o[k]) for k in ("wavelength_nm", "x", "y"))
    sel = (lam >= 400) & (lam <= 1000)
    for r in results:
        x_at = np.interp(ty[sel][::-1], r.rows, r.x_trace)[::-1]
        assert np.max(np.abs(x_at - tx[sel])) < 0.1


def test_transverse_fwhm(results):
    # The simulated trace's transverse profile is the 1D marginal of a 2D Moffat (β = 3):
    # a 1D Moffat with the same γ and α = β − ½.
    beta = NO_ORDER2.beta
    for lam in (450.0, 600.0, 750.0, 900.0):
        fwhm2d = FWHM * (lam / NO_ORDER2.reference_wavelength_nm) ** NO_ORDER2.seeing_exponent
        gamma = fwhm2d / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
        expected = moffat1d_fwhm(gamma, beta - 0.5)
        for r in results:
            got = np.interp(lam, r.wavelength_nm[::-1], r.fwhm_px[::-1])
            assert abs(got / expected - 1.0) < 0.03, (lam, got, expected)


def test_wavelength_law(results, scene):
    _, truth = scene
    o = truth["orders"][1]
    lam, ty = np.asarray(o["wavelength_nm"]), np.asarray(o["y"])
    sel = (lam >= 360) & (lam <= 1050)
    for r in results:
        got = np.interp(ty[sel][::-1], r.rows, r.wavelength_nm)[::-1]
        assert np.max(np.abs(got - lam[sel])) < 0.5


def test_flux_per_nm(results, scene):
    _, truth = scene
    for r in results:
        sel = (r.wavelength_nm > 450) & (r.wavelength_nm < 950)
        expected = _truth_per_nm(truth, NO_ORDER2, r.wavelength_nm[sel])
        rel = r.flux_per_nm[sel] / expected - 1.0
        assert abs(np.median(rel)) < 0.005
        assert np.median(np.abs(rel)) < 0.02  # per row, noise included
        # 5 nm bins average the noise: 1 %
        bins = np.floor(r.wavelength_nm[sel] / 5.0)
        _, inv = np.unique(bins, return_inverse=True)
        binned = np.bincount(inv, r.flux_e[sel]) / np.bincount(
            inv, (expected * r.dlambda_drow[sel]))
        assert np.median(np.abs(binned - 1.0)) < 0.01
        ap = r.aperture_flux_e[sel] / r.dlambda_drow[sel] / expected - 1.0
        assert abs(np.median(ap)) < 0.01
        # the optimal extraction is less noisy than the aperture sum
        assert np.median(r.flux_err_e / r.aperture_err_e) < 0.9


def test_error_bars_match_scatter(results):
    rows = results[0].rows
    for r in results[1:]:
        assert np.array_equal(r.rows, rows)
    flux = np.stack([r.flux_e for r in results])
    err = np.stack([r.flux_err_e for r in results])
    sel = (results[0].wavelength_nm > 400) & (results[0].wavelength_nm < 1000)
    n = len(results)
    pulls = (flux - flux.mean(axis=0)) / err * np.sqrt(n / (n - 1.0))
    width = np.std(pulls[:, sel])
    assert abs(width - 1.0) < 0.2, width


def test_spectrum_output(results, tmp_path):
    r = results[0]
    spec = result_to_spectrum(r)
    assert np.all(np.diff(spec.wavelength) > 0)
    assert spec.target_xy == pytest.approx((X0, Y0))
    # Spectractor's frame is a reflection of ours: its ROTANGLE is minus our tilt.
    assert spec.rotation_angle == pytest.approx(-r.angle_deg)
    assert spec.pixshift == 0.0 and spec.header["WAVECAL"] == "prior"
    assert spec.d2ccd == pytest.approx(191.1)
    assert spec.disperser == "holo4_003"
    assert spec.covariance is not None
    assert np.allclose(np.sqrt(np.diag(spec.covariance)), spec.flux_err)
    assert {"lambdas", "x_c", "gamma", "alpha", "fwhm"} <= set(spec.psf_table.colnames)
    path = write_spectrum(spec, tmp_path / "spec.fits")
    back = read_spectrum(path)
    assert np.allclose(back.flux, spec.flux)
    # PSF_TAB: one row per sample, trace in cutout pixels; the bin fits in PSF_BINS.
    assert len(back.psf_table) == spec.n_points
    c0, r0 = r.cutout_origin
    i = int(np.argmin(np.abs(r.wavelength_nm - 600.0)))
    row = back.psf_table[int(np.argmin(np.abs(back.psf_table["lambdas"] - 600.0)))]
    assert (row["x_c"] + c0, row["y_c"] + r0) == pytest.approx((r.x_trace[i], r.rows[i]))
    bins = next(h for h in back.extra_hdus if h.name == "PSF_BINS")
    assert len(bins.data) == len(r.psf_bins)
    # PSF_BINS in PSF_TAB's frame (cutout pixels), not the extraction frame's full-image
    # pixels (issue 21: the bins were drawn ~1670 px off the trace).
    order = np.argsort(np.asarray(r.psf_bins["lambdas"]))
    assert np.asarray(bins.data["x_c"]) + c0 == pytest.approx(
        np.asarray(r.psf_bins["x_c"])[order], nan_ok=True)
    assert np.asarray(bins.data["y_c"]) + r0 == pytest.approx(
        np.asarray(r.psf_bins["row"])[order])
    used = np.asarray(bins.data["used"], dtype=bool)
    on_trace = np.interp(bins.data["y_c"][used], back.psf_table["y_c"][::-1],
                         back.psf_table["x_c"][::-1])
    assert np.abs(bins.data["x_c"][used] - on_trace).max() < 1.0


def test_second_order_contamination_is_present():
    """holo4_003 with its second order: order 2 (λ/2 light) lands on order 1 above
    ~700 nm and is not corrected yet; below it the extraction is unaffected."""
    cfg = DispersedSceneConfig()
    signal, truth = render_dispersed(SHAPE, X0, Y0, FLUX, FWHM, "holo4_003", LINSPOS,
                                     np.random.default_rng(1), config=cfg)
    assert 2 in truth["orders"]
    r = extract_spectrum(_noisy(signal, 21), X0, Y0, "holo4_003", LINSPOS)
    ratio = r.flux_per_nm / _truth_per_nm(truth, cfg, r.wavelength_nm)
    blue = (r.wavelength_nm > 450) & (r.wavelength_nm < 650)
    red = (r.wavelength_nm > 800) & (r.wavelength_nm < 950)
    assert abs(np.median(ratio[blue]) - 1.0) < 0.02
    assert np.median(ratio[red]) > 1.05


def test_not_dispersed(scene):
    signal, _ = scene
    hdr = fits.Header({"OBSID": "AT_O_20261123_000007"})
    exp = Exposure.from_image(signal.copy(), metadata=hdr)
    exp.variance[:] = signal + 1.0
    for grating in ("empty_1", "", None):
        with pytest.raises(BadInputError, match=r"AT_O_20261123_000007.*not a dispersed"):
            extract_spectrum(exp, X0, Y0, grating)


def test_star_too_close_to_edge(scene):
    signal, _ = scene
    hdr = fits.Header({"OBSID": "AT_O_20261123_000008"})
    exp = Exposure.from_image(signal.copy(), metadata=hdr)
    exp.variance[:] = signal + 1.0
    with pytest.raises(BadInputError, match=r"AT_O_20261123_000008.*edge"):
        extract_spectrum(exp, X0, 1500.0, "holo4_003", LINSPOS)
    with pytest.raises(BadInputError, match=r"some/path.fits.*edge"):
        extract_spectrum(exp, 20.0, Y0, "holo4_003", LINSPOS, source="some/path.fits")


def test_all_masked_trace(scene):
    signal, _ = scene
    exp = _noisy(signal, 5, obsid="AT_O_20261123_000009")
    exp.set_mask("BAD", np.s_[:, 1720:1790])
    with pytest.raises(BadInputError, match=r"AT_O_20261123_000009.*masked"):
        extract_spectrum(exp, X0, Y0, "holo4_003", LINSPOS)
    # the same frame is fine when BAD pixels are not rejected (config honoured)
    cfg = ExtractionConfig(bad_planes=("SAT",))
    assert extract_spectrum(exp, X0, Y0, "holo4_003", LINSPOS, cfg).flux_e.size > 1000


def test_cosmic_rays_and_band_source(scene, results):
    """Masked cosmic rays on the trace and an unmasked star in a side band leave the
    spectrum within its errors (mask planes honoured, band pixels sigma-clipped)."""
    signal, _ = scene
    clean = results[0]
    exp = _noisy(signal, 11)  # the same realisation as results[0]
    rng = np.random.default_rng(99)
    hit_rows = rng.choice(clean.rows.astype(int), 40, replace=False)
    hit_x = np.round(np.interp(hit_rows, clean.rows, clean.x_trace)).astype(int)
    exp.image[hit_rows, hit_x] += 5e4
    exp.set_mask("CR", (hit_rows, hit_x))
    yy, xx = np.mgrid[1950:2050, 1740:1840]
    xs = float(np.interp(2000, clean.rows, clean.x_trace)) + 34.0
    star = 3e4 * np.exp(-0.5 * ((xx - xs) ** 2 + (yy - 2000) ** 2) / 1.5**2)
    exp.image[1950:2050, 1740:1840] += star.astype(np.float32)
    exp.variance[1950:2050, 1740:1840] += star.astype(np.float32)
    r = extract_spectrum(exp, X0, Y0, "holo4_003", LINSPOS)
    assert np.array_equal(r.rows, clean.rows)
    dev = (r.flux_e - clean.flux_e) / clean.flux_err_e
    # a masked central pixel changes a row's estimate by a fraction of its noise
    assert np.max(np.abs(dev)) < 3.0
    assert np.median(np.abs(dev)) < 0.05
    # without the CR plane rejected the hits are obvious
    cfg = ExtractionConfig(bad_planes=("BAD", "SAT"))
    raw = extract_spectrum(exp, X0, Y0, "holo4_003", LINSPOS, cfg)
    assert np.max(np.abs(raw.flux_e - clean.flux_e) / clean.flux_err_e) > 10.0


def test_ronchi170_geometry_and_flux():
    """A Ronchi grating (tilt −1.05°, 10 % in order 1): angle, trace, law and flux level."""
    cfg = DispersedSceneConfig(orders=(0, 1))
    signal, truth = render_dispersed(SHAPE, X0, Y0, 5e7, FWHM, "ronchi170lpmm", LINSPOS,
                                     np.random.default_rng(1), config=cfg)
    r = extract_spectrum(_noisy(signal, 3), X0, Y0, "ronchi170lpmm", LINSPOS)
    assert abs(r.angle_deg - truth["tilt_deg"]) < 0.02
    o = truth["orders"][1]
    lam, tx, ty = (np.asarray(o[k]) for k in ("wavelength_nm", "x", "y"))
    sel = (lam >= 400) & (lam <= 1000)
    assert np.max(np.abs(np.interp(ty[sel][::-1], r.rows, r.wavelength_nm)[::-1]
                         - lam[sel])) < 0.5
    assert np.max(np.abs(np.interp(ty[sel][::-1], r.rows, r.x_trace)[::-1] - tx[sel])) < 0.1
    keep = (r.wavelength_nm > 450) & (r.wavelength_nm < 950)
    rel = r.flux_per_nm[keep] / _truth_per_nm(truth, cfg, r.wavelength_nm[keep]) - 1.0
    assert abs(np.median(rel)) < 0.02


def _horne_fluxes(data: np.ndarray, variance: np.ndarray, profile: np.ndarray) -> np.ndarray:
    """Horne's optimal flux of every row: Σ P D / V / Σ P² / V."""
    return (np.sum(profile * data / variance, axis=1)
            / np.sum(profile**2 / variance, axis=1))


def test_leave_one_out_variance_removes_the_weighting_bias():
    """Issue 21: ISR's VARIANCE plane (the pixel's own counts + read noise²) weights a low
    fluctuation up, so a fit weighted by it is biased low by about a count per pixel;
    the variance of the neighbours along the trace, the pixel left out, is not. 20 000
    rows of a faint trace (1500 e⁻ per row over a 50 e⁻ sky, the blue end of a demo-night
    spectrum): the flux from the plane is ≥ 10σ low, from `leave_one_out_variance` within
    4σ of the truth (σ the error of the mean over the rows)."""
    from atmospec.spectro.extract import horne_profile, leave_one_out_variance

    rng = np.random.default_rng(21)
    n_rows, n_cols, flux, sky, rn = 20_000, 61, 1500.0, 50.0, 9.0
    xcols = np.arange(n_cols, dtype=np.float64)
    centre, gamma, alpha = np.full(n_rows, 30.0), np.full(n_rows, 6.0), np.full(n_rows, 2.5)
    window, profile = horne_profile(xcols, centre, gamma, alpha, 4.0)
    expected = flux * profile + sky
    data = rng.poisson(expected) + rng.normal(0.0, rn, expected.shape)
    true_var = expected + rn**2
    plane = np.clip(data, 0.0, None) + rn**2  # what ISR's variance step writes
    profile = np.where(window, profile, 0.0)
    sub = data - sky
    sigma_mean = float(np.mean(1.0 / np.sqrt(np.sum(profile**2 / true_var, axis=1)))
                       / np.sqrt(n_rows))
    bias_plane = float(np.mean(_horne_fluxes(sub, plane, profile))) - flux
    loo = leave_one_out_variance(plane, np.ones(plane.shape, dtype=bool), 3)
    bias_loo = float(np.mean(_horne_fluxes(sub, loo.astype(np.float64), profile))) - flux
    bias_true = float(np.mean(_horne_fluxes(sub, true_var, profile))) - flux
    print(f"\nflux bias: plane {bias_plane:+.2f} e⁻, leave-one-out {bias_loo:+.2f} e⁻, "
          f"true variance {bias_true:+.2f} e⁻ (σ of the mean {sigma_mean:.2f} e⁻)")
    assert bias_plane < -10.0 * sigma_mean
    assert abs(bias_loo) < 4.0 * sigma_mean
    assert abs(bias_true) < 4.0 * sigma_mean
    # The chain (1D extraction and 2D model alike) weights with it by default.
    from atmospec.spectro.chain import SpectroscopyConfig

    assert SpectroscopyConfig().variance_half_rows >= 1


def test_leave_one_out_variance_skips_masked_neighbours():
    """A masked pixel (a cosmic ray's huge variance) lends nothing to its neighbours; a
    pixel without a usable neighbour keeps its own value; 0 rows keeps the plane."""
    from atmospec.spectro.extract import leave_one_out_variance

    var = np.full((9, 3), 100.0, dtype=np.float32)
    var[4, 1] = 1e6
    good = np.ones(var.shape, dtype=bool)
    good[4, 1] = False
    out = leave_one_out_variance(var, good, 2)
    assert np.allclose(out, 100.0)
    lonely = np.zeros(var.shape, dtype=bool)
    lonely[4, 1] = True
    assert leave_one_out_variance(var, lonely, 2)[4, 1] == pytest.approx(1e6)
    assert leave_one_out_variance(var, good, 0) is var


def test_extraction_window_is_the_cutout(results):
    """`extraction_window` names the pixels `extract_spectrum` cut out (the chain prepares
    their variance there only)."""
    from atmospec.spectro.extract import extraction_window

    rows, cols = extraction_window(SHAPE, X0, Y0, "holo4_003", LINSPOS)
    c0, r0 = results[0].cutout_origin
    ny, nx = results[0].background.shape
    assert (rows.start, rows.stop, cols.start, cols.stop) == (r0, r0 + ny, c0, c0 + nx)


@pytest.mark.parametrize("rows", [slice(40, 300), slice(0, 120), slice(380, 400)])
def test_windowed_leave_one_out_variance_equals_the_full_frame(rows):
    """The chain's leave-one-out variance on the extraction window (computed on the window
    and `variance_half_rows` rows either side, also at the image's edges) equals the
    whole frame's there; outside the window the plane is kept."""
    from atmospec.spectro.chain import SpectroscopyConfig, _with_expected_variance
    from atmospec.spectro.extract import leave_one_out_variance

    rng = np.random.default_rng(5)
    exp = Exposure.from_image(rng.normal(0.0, 1.0, (400, 90)))
    exp.variance[:] = rng.uniform(50.0, 500.0, exp.shape).astype(np.float32)
    exp.variance[rng.uniform(size=exp.shape) < 0.01] = np.nan
    exp.set_mask("CR", rng.uniform(size=exp.shape) < 0.02)
    config = SpectroscopyConfig()
    window = (rows, slice(20, 70))
    out = _with_expected_variance(exp, config, window)
    good = (~exp.get_mask(*config.extraction.bad_planes) & np.isfinite(exp.variance)
            & (exp.variance > 0))
    full = leave_one_out_variance(exp.variance, good, config.variance_half_rows)
    assert np.allclose(out.variance[window], full[window], rtol=1e-6, equal_nan=True)
    outside = np.ones(exp.shape, dtype=bool)
    outside[window] = False
    assert np.array_equal(out.variance[outside], exp.variance[outside], equal_nan=True)
    assert not np.allclose(out.variance[window], exp.variance[window], equal_nan=True)
