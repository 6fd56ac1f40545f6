"""2D forward model of the spectrogram (`atmospec.spectro.forward_model`) against simulator truth.

The frame is the one of `test_extraction`: a full-size holo4_003 scene drawn by
`render_dispersed` (orders 0 and 1, FWHM 6 px at 500 nm, Moffat β = 3, the simple SED with
its Hγ, Hβ, Hα and O₂ A lines) + flat sky + Poisson and read noise, wrapped as an `Exposure`
with the exact variance plane. The scene is rendered once; three noise realisations are
extracted in 1D and then fitted in 2D.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from astropy.io import fits

from atmospec.errors import BadInputError
from atmospec.exposure import Exposure
from atmospec.sim.dispersed import DispersedSceneConfig, render_dispersed, stellar_sed
from atmospec.spectro.extract import ExtractionResult, extract_spectrum
from atmospec.spectro.forward_model import (
    ForwardModelConfig,
    ForwardModelResult,
    ForwardModelTimeout,
    fit_forward_model,
    moffat2d_fwhm,
)

SHAPE = (4000, 4072)
X0, Y0 = 1750.3, 3699.6
FWHM = 6.0
LINSPOS = 72.1
FLUX = 2e7
SKY, READ_NOISE = 300.0, 9.0
SCENE = DispersedSceneConfig(orders=(0, 1))
SEEDS = (11, 12, 13)


def _noisy(signal: np.ndarray, seed: int, obsid: str = "AT_O_20261123_000042") -> Exposure:
    rng = np.random.default_rng(seed)
    image = rng.poisson(signal + SKY).astype(np.float32)
    image += rng.normal(0.0, READ_NOISE, signal.shape).astype(np.float32)
    exp = Exposure.from_image(image, metadata=fits.Header({"OBSID": obsid}))
    exp.variance[:] = signal + SKY + READ_NOISE**2
    return exp


def _truth_per_nm(truth: dict, cfg: DispersedSceneConfig, lam: np.ndarray) -> np.ndarray:
    """e⁻ per nm sent into order 1 (the simulator's SED sampling, normalised to the truth's
    order-1 flux)."""
    lo, hi = cfg.wavelength_range_nm
    n = max(round((hi - lo) / cfg.wavelength_step_nm), 2)
    step = (hi - lo) / n
    grid = lo + (np.arange(n) + 0.5) * step
    sed = stellar_sed(grid, cfg)
    dens = truth["orders"][1]["flux_e"] * sed / sed.sum() / step
    return np.interp(lam, grid, dens)


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, dict]:
    return render_dispersed(SHAPE, X0, Y0, FLUX, FWHM, "holo4_003", LINSPOS,
                            np.random.default_rng(1), config=SCENE)


@pytest.fixture(scope="module")
def fits_2d(scene) -> list[tuple[Exposure | None, ExtractionResult, ForwardModelResult]]:
    signal, _ = scene
    out = []
    for seed in SEEDS:
        exp = _noisy(signal, seed)
        r = extract_spectrum(exp, X0, Y0, "holo4_003", LINSPOS)
        t = time.perf_counter()
        f = fit_forward_model(exp, r)
        print(f"\nFFM: {time.perf_counter() - t:.2f} s, χ²/ndof {f.chi2_ndof:.3f}, "
              f"μ {f.regularisation:.3g}, τ {f.effective_parameters:.0f}")
        # only the first exposure is used again: drop the others (200 MB each)
        out.append((exp if not out else None, r, f))
    return out


def _selected(f: ForwardModelResult, lo: float, hi: float) -> np.ndarray:
    return (f.wavelength_nm > lo) & (f.wavelength_nm < hi)


def test_reduced_chi2_and_outputs(fits_2d):
    for _, r, f in fits_2d:
        assert 0.9 < f.chi2_ndof < 1.15
        n = r.background.shape[0]
        assert f.rows.size == n and f.amplitudes.shape == (n,)
        assert f.model.shape == r.background.shape and f.model.dtype == np.float32
        assert f.residual.shape == r.background.shape
        assert f.cutout_origin == r.cutout_origin
        assert 0 < f.effective_parameters < n
        lo, hi = f.config.log10_mu_bounds
        assert 10**lo <= f.regularisation <= 10**hi
        # the normalised residuals of the trace core are unit Gaussian
        core = np.abs(np.arange(f.model.shape[1])[None, :] + r.cutout_origin[0]
                      - f.x_c[:, None]) < 5
        z = f.residual[core & np.isfinite(f.residual)]
        assert abs(np.std(z) - 1.0) < 0.05
        assert abs(np.mean(z)) < 0.02


def test_prior_is_the_1d_extraction(fits_2d):
    """With nothing masked beyond the mask planes the Tikhonov prior is exactly the 1D
    Horne flux of `extract_spectrum`."""
    checked = 0
    for _, r, f in fits_2d:
        if f.outliers.any():
            continue
        at = np.isin(f.rows, r.rows)
        assert np.allclose(f.prior_e[at], r.flux_e, rtol=1e-6, atol=1e-3)
        assert np.allclose(f.prior_err_e[at], r.flux_err_e, rtol=1e-6)
        checked += 1
    assert checked >= 1


def test_flux_per_nm(fits_2d, scene):
    _, truth = scene
    for _, _, f in fits_2d:
        sel = _selected(f, 450.0, 700.0)
        expected = _truth_per_nm(truth, SCENE, f.wavelength_nm[sel])
        rel = f.flux_per_nm[sel] / expected - 1.0
        assert abs(np.median(rel)) < 0.005
        # 5 nm bins average the noise
        bins = np.floor(f.wavelength_nm[sel] / 5.0)
        _, inv = np.unique(bins, return_inverse=True)
        binned = np.bincount(inv, f.amplitudes[sel]) / np.bincount(
            inv, expected * f.dlambda_drow[sel])
        assert np.median(np.abs(binned - 1.0)) < 0.01
        # the residual scatter is what the errors say (truth is known row by row)
        pull = (f.flux_per_nm[sel] - expected) / f.flux_per_nm_err[sel]
        assert 0.8 < np.std(pull) < 1.25


def test_psf_fwhm(fits_2d):
    for lam in (450.0, 600.0, 750.0, 900.0):
        expected = FWHM * (lam / SCENE.reference_wavelength_nm) ** SCENE.seeing_exponent
        for _, _, f in fits_2d:
            ok = np.isfinite(f.wavelength_nm)
            got = np.interp(lam, f.wavelength_nm[ok][::-1], f.fwhm_px[ok][::-1])
            assert abs(got / expected - 1.0) < 0.03, (lam, got, expected)
            beta = np.interp(lam, f.wavelength_nm[ok][::-1], f.beta[ok][::-1])
            assert abs(beta - SCENE.beta) < 0.3


def test_trace_centre(fits_2d, scene):
    _, truth = scene
    o = truth["orders"][1]
    lam, tx, ty = (np.asarray(o[k]) for k in ("wavelength_nm", "x", "y"))
    sel = (lam >= 400) & (lam <= 1000)
    for _, _, f in fits_2d:
        x_at = np.interp(ty[sel][::-1], f.rows, f.x_c)[::-1]
        assert np.max(np.abs(x_at - tx[sel])) < 0.1


def test_errors_match_scatter(fits_2d):
    """Amplitude errors (diagonal of the covariance) against the scatter over the three
    noise realisations, and the covariance of 10-row sums (its off-diagonal terms)."""
    fs = [f for _, _, f in fits_2d]
    sel = _selected(fs[0], 400.0, 1000.0)
    amp = np.stack([f.amplitudes for f in fs])
    err = np.stack([f.amplitude_err for f in fs])
    n = len(fs)
    pulls = (amp - amp.mean(axis=0)) / err * np.sqrt(n / (n - 1.0))
    assert 0.8 < np.std(pulls[:, sel]) < 1.25
    cov = fs[0].covariance
    assert np.allclose(np.sqrt(np.diag(cov)), fs[0].amplitude_err, rtol=1e-6)
    assert np.allclose(cov, cov.T)
    # off-diagonal terms: the deconvolved amplitudes of neighbouring rows are correlated
    # (oscillating with the lag); the empirical correlation of the deviations follows
    dev = (amp - amp.mean(axis=0))[:, sel]
    idx = np.flatnonzero(sel)
    sig = np.sqrt(np.diag(cov))
    for lag in (1, 3, 5):
        predicted = np.mean(cov[idx[:-lag], idx[lag:]] / (sig[idx[:-lag]] * sig[idx[lag:]]))
        measured = np.sum(dev[:, :-lag] * dev[:, lag:]) / np.sqrt(
            np.sum(dev[:, :-lag] ** 2) * np.sum(dev[:, lag:] ** 2))
        assert abs(measured - predicted) < 0.06, (lag, measured, predicted)
    assert abs(np.mean(cov[idx[:-1], idx[1:]] / (sig[idx[:-1]] * sig[idx[1:]]))) > 0.1


def _line_depth(lam: np.ndarray, flux_per_nm: np.ndarray, cont_per_nm: np.ndarray,
                centre: float, half: float) -> float:
    near = np.abs(lam - centre) < half
    return 1.0 - float(np.mean(flux_per_nm[near] / cont_per_nm[near]))


@pytest.mark.parametrize(("centre", "sigma", "depth"), [(760.3, 1.5, 0.6),
                                                         (434.05, 1.5, 0.35)])
def test_narrow_line_deeper_than_1d(fits_2d, scene, centre, sigma, depth):
    """The 1D flux per row is the spectrum blurred by the along-trace PSF; the 2D
    amplitudes undo it: the line comes out deeper, close to the truth."""
    _, truth = scene
    assert (centre, sigma, depth) in SCENE.absorption_lines
    no_lines = DispersedSceneConfig(orders=(0, 1), absorption_lines=())
    lam_ref = np.linspace(350.0, 1100.0, 7501)
    scale = _truth_per_nm(truth, SCENE, lam_ref) / (
        stellar_sed(lam_ref, SCENE) / stellar_sed(lam_ref, no_lines))
    d_true = _line_depth(lam_ref, _truth_per_nm(truth, SCENE, lam_ref), scale, centre, 1.0)
    d_2d, d_1d = [], []
    for _, r, f in fits_2d:
        ok = np.isfinite(f.wavelength_nm)
        cont = np.interp(f.wavelength_nm[ok], lam_ref, scale)
        d_2d.append(_line_depth(f.wavelength_nm[ok], f.flux_per_nm[ok], cont, centre, 1.0))
        cont1 = np.interp(r.wavelength_nm, lam_ref, scale)
        d_1d.append(_line_depth(r.wavelength_nm, r.flux_per_nm, cont1, centre, 1.0))
    d_2d, d_1d = np.mean(d_2d), np.mean(d_1d)
    print(f"\nline {centre} nm: depth truth {d_true:.3f}, 2D {d_2d:.3f}, 1D {d_1d:.3f}")
    assert d_2d > d_1d + 0.25 * (d_true - d_1d)
    assert abs(d_2d - d_true) < abs(d_1d - d_true)


def test_cosmic_rays_masked_column_and_star(fits_2d, scene):
    """Cosmic rays flagged in the CR plane, weaker unflagged cosmic-ray residue on the
    trace, a masked column segment across it and a field star next to it leave the
    amplitudes within their errors."""
    signal, _ = scene
    _, r_clean, f_clean = fits_2d[0]
    exp = _noisy(signal, SEEDS[0])  # the same realisation
    rng = np.random.default_rng(99)
    rows = r_clean.rows.astype(int)
    hit_rows = rng.choice(rows[100:-100], 80, replace=False)
    hit_x = np.round(np.interp(hit_rows, r_clean.rows, r_clean.x_trace)).astype(int)
    hit_x += rng.integers(-3, 4, hit_x.size)
    exp.image[hit_rows, hit_x] += 5e4
    exp.set_mask("CR", (hit_rows[:40], hit_x[:40]))
    exp.image[hit_rows[40:], hit_x[40:]] -= 5e4 - 3e3  # residue: not flagged, ≥ 10 σ
    x_mid = round(float(np.interp(2000, r_clean.rows, r_clean.x_trace)))
    exp.set_mask("BAD", np.s_[1900:1960, x_mid + 1])
    yy, xx = np.mgrid[2250:2350, x_mid - 50:x_mid + 50]
    star = 2e4 * np.exp(-0.5 * ((xx - x_mid - 13.0) ** 2 + (yy - 2300) ** 2) / 1.5**2)
    exp.image[2250:2350, x_mid - 50:x_mid + 50] += star.astype(np.float32)
    exp.variance[2250:2350, x_mid - 50:x_mid + 50] += star.astype(np.float32)
    r = extract_spectrum(exp, X0, Y0, "holo4_003", LINSPOS)
    # the 1D fit of the clean frame as the start: only the pixels differ
    f = fit_forward_model(exp, r_clean)
    c0, r0 = f.cutout_origin
    in_column = (hit_rows >= 1900) & (hit_rows < 1960) & (hit_x == x_mid + 1)
    residue = np.arange(hit_rows.size) >= 40
    hit = (hit_rows - r0, hit_x - c0)
    assert f.outliers[hit][residue & ~in_column].all()
    assert not f.outliers[hit][~residue | in_column].any()  # already masked
    assert f.outliers.sum() < 400  # the residue and the star's core, not the trace
    assert 0.9 < f.chi2_ndof < 1.15
    # Masking a pixel moves the deconvolved amplitudes of its rows by up to ~their noise,
    # with alternating signs; the flux around each defect (sum over ±8 rows) must not
    # move by more than its error (from the covariance).
    cov = f_clean.covariance
    centres = np.r_[hit_rows, 1930, 2300] - r0

    def moves(fit: ForwardModelResult) -> np.ndarray:
        z = []
        for c in centres:
            i = np.arange(c - 8, c + 9)
            z.append(np.sum(fit.amplitudes[i] - f_clean.amplitudes[i])
                     / np.sqrt(cov[np.ix_(i, i)].sum()))
        return np.array(z)

    z = moves(f)
    print(f"\nCR/column/star: flux around the defects moves by {np.sqrt(np.mean(z**2)):.2f} σ "
          f"rms, {np.max(np.abs(z)):.2f} σ at most; {f.outliers.sum()} outlier pixels")
    assert np.max(np.abs(z)) < 1.0
    assert np.sqrt(np.mean(z**2)) < 0.3
    dev = (f.amplitudes - f_clean.amplitudes) / f_clean.amplitude_err
    assert np.median(np.abs(dev[_selected(f_clean, 380.0, 1050.0)])) < 0.1
    # without the clipping the residue is fitted as flux
    raw = fit_forward_model(exp, r_clean, ForwardModelConfig(clip_sigma=1e30,
                                                             fit_shape=False))
    assert not raw.outliers.any()
    assert np.sqrt(np.mean(moves(raw)[40:80] ** 2)) > 3.0
    # the 1D extraction, which does not know the residue pixels are bad, is off there
    at = np.isin(f.rows, r.rows)
    assert np.max(np.abs(r.flux_e - f_clean.amplitudes[at]) / r.flux_err_e) > 5.0


def test_regularisation_limits(fits_2d):
    """A huge μ returns the prior (the 1D extraction); no shape fit keeps the 1D PSF."""
    exp, r, f = fits_2d[0]
    cfg = ForwardModelConfig(regularisation=1e6, fit_shape=False, clip_iterations=0)
    g = fit_forward_model(exp, r, cfg)
    ok = np.isfinite(g.prior_err_e)
    assert np.allclose(g.amplitudes[ok], g.prior_e[ok], rtol=0, atol=0.01 * np.median(
        g.prior_err_e[ok]))
    assert g.regularisation == 1e6 and g.n_iterations == 0
    at = np.isin(g.rows, r.rows)
    inner = (r.wavelength_nm > 400) & (r.wavelength_nm < 1000)
    assert np.allclose(g.gamma[at][inner], r.gamma[inner], rtol=0.02)
    assert np.all(moffat2d_fwhm(g.gamma, g.alpha + 0.5) == g.fwhm_px)
    # the GCV choice is a real compromise: far fewer effective parameters than rows,
    # far more than none
    assert 50 < f.effective_parameters < 0.5 * f.rows.size


def test_too_few_usable_pixels(fits_2d, scene):
    signal, _ = scene
    _, r, _ = fits_2d[0]
    exp = _noisy(signal, 5, obsid="AT_O_20261123_000077")
    c0 = r.cutout_origin[0]
    x_mid = round(float(np.median(r.x_trace)))
    exp.set_mask("BAD", np.s_[:, x_mid - 8:x_mid + 9])
    with pytest.raises(BadInputError, match=r"AT_O_20261123_000077.*too few usable pixels"):
        fit_forward_model(exp, r)
    # a result that does not belong to the exposure
    small = Exposure.from_image(np.zeros((100, 100), dtype=np.float32))
    with pytest.raises(BadInputError, match="cutout"):
        fit_forward_model(small, r)
    assert c0 > 0


def test_wall_time_bound(fits_2d):
    """Past `max_seconds` the fit stops with `ForwardModelTimeout` naming the exposure (the
    chain then keeps the 1D extraction); a silly bound is refused."""
    exp, r, _ = fits_2d[0]
    with pytest.raises(ForwardModelTimeout, match=r"AT_O_20261123_000042: the 2D model did "
                                                  r"not finish in 0\.01 s"):
        fit_forward_model(exp, r, ForwardModelConfig(max_seconds=0.01))
    with pytest.raises(ValueError, match="max_seconds"):
        ForwardModelConfig(max_seconds=0.0)


# --------------------------------------------------------------------------- internals:
# the chunked sums and the cross-validation's trace against dense matrices on a small grid


def _small_problem(seed: int = 3, n: int = 60, n_cols: int = 34, radius: int = 6):
    """A problem on a small window grid: a tilted trace running off the cutout's left edge
    at the top, random data, weights with masked pixels, a 1D prior and Horne weights."""
    from atmospec.spectro.forward_model import _make_grid, _Problem

    rng = np.random.default_rng(seed)
    xc = 3.0 + 0.4 * np.arange(n) + 0.3 * np.sin(np.arange(n) / 5.0)
    grid = _make_grid(n, n_cols, xc, radius)
    shape = grid.cols.shape
    weight = np.where(rng.random(shape) < 0.05, 0.0, rng.uniform(0.5, 2.0, shape))
    weight = np.where(grid.in_cut, weight, 0.0)
    data = rng.normal(10.0, 3.0, shape)
    nd = 2 * radius + 1
    prob = _Problem(grid, data, weight, {}, rng.uniform(50, 100, n), rng.uniform(0.5, 2, n),
                    rng.uniform(0.5, 2, n), rng.uniform(0, 0.1, shape), mu=0.3)
    gamma = rng.uniform(2.0, 3.0, n)
    beta = rng.uniform(2.5, 3.5, n)
    return prob, xc, gamma, beta, rng.uniform(0, 0.2, (n, nd))


def _dense_design(prob, p: np.ndarray) -> np.ndarray:
    """M[(row, window column), source] of the PSF ``p`` (n, 2R+1, Wc)."""
    g = prob.grid
    n, wc = g.n, g.width
    m = np.zeros((n * wc, n))
    for r in range(n):
        for k in range(2 * g.radius + 1):
            if g.src_ok[r, k]:
                m[r * wc:(r + 1) * wc, g.src[r, k]] += p[r, k]
    return m


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_psf_chunks_give_the_same_bits(monkeypatch, dtype):
    """The PSF computed chunk by chunk of rows is the one computed in one piece, bit for
    bit, and a truncated, normalised Moffat: zero outside the disc and outside the cutout."""
    import atmospec.spectro.forward_model as fm

    prob, xc, gamma, beta, _ = _small_problem()
    whole = fm._psf(prob.grid, xc, gamma, beta, dtype=dtype)
    monkeypatch.setattr(fm, "_CHUNK_ELEMENTS", 3 * (2 * 6 + 1) * prob.grid.width)
    chunks = []
    parts = fm._psf(prob.grid, xc, gamma, beta, dtype=dtype,
                    each=lambda lo, hi, p: chunks.append((lo, hi, p.copy())))
    for name in ("p", "dx", "q"):
        assert np.array_equal(getattr(whole, name), getattr(parts, name))
    assert [c[:2] for c in chunks] == [(lo, min(lo + 3, 60)) for lo in range(0, 60, 3)]
    assert all(np.array_equal(p, whole.p[lo:hi]) for lo, hi, p in chunks)
    g = prob.grid
    r, k, c = 30, 6 + 2, 10  # source 28, two rows above
    s = g.src[r, k]
    dx = g.cols[r, c] - xc[s]
    expected = (beta[s] - 1) / (np.pi * gamma[s] ** 2) * (1 + (dx**2 + 4) / gamma[s] ** 2) ** (
        -beta[s])
    assert whole.p[r, k, c] == pytest.approx(expected, rel=1e-6)
    dx_all = g.cols[:, None, :] - xc[g.src][:, :, None]
    dy = np.arange(-6, 7)[None, :, None]
    outside = (dx_all**2 + dy**2 > 36) | ~g.in_cut[:, None, :] | ~g.src_ok[:, :, None]
    assert np.all(whole.p[outside] == 0) and np.all(whole.p[~outside] > 0)


def test_normal_matrix_against_dense_product(monkeypatch):
    """The banded ``Mᵀ W M`` and ``Mᵀ W D`` summed chunk by chunk are those of the dense
    design matrix, and the same bits whatever the chunk size."""
    import atmospec.spectro.forward_model as fm

    prob, xc, gamma, beta, _ = _small_problem()
    psf = fm._psf(prob.grid, xc, gamma, beta)
    band, rhs, done = fm._normal(prob, psf)
    assert done == slice(0, prob.grid.n)
    m = _dense_design(prob, psf.p.astype(np.float64))
    w = prob.weight.ravel()
    dense = m.T @ (w[:, None] * m)
    n, nd = prob.grid.n, 2 * prob.grid.radius + 1
    assert band.shape == (nd, n)  # sources up to 2R apart share pixels
    assert not np.any(np.diagonal(dense, -nd))
    for u in range(nd):
        expected = np.r_[np.diagonal(dense, -u), np.zeros(u)]
        np.testing.assert_allclose(band[u], expected, rtol=2e-6,
                                   atol=2e-6 * np.abs(dense).max())
    np.testing.assert_allclose(rhs, m.T @ (w * prob.data.ravel()), rtol=2e-6,
                               atol=1e-6 * np.abs(rhs).max())
    # the same bits as one sum along each skewed diagonal of the row blocks at once (the
    # earlier implementation): rows summed in increasing order, in float64
    p32 = psf.p
    blk = (p32 * prob.weight.astype(np.float32)[:, None, :]) @ np.transpose(p32, (0, 2, 1))
    r = prob.grid.radius
    for u in range(nd):
        padded = np.zeros((n + 2 * r + 1, nd - u))
        padded[r:r + n] = np.diagonal(blk, offset=u, axis1=1, axis2=2)
        st0, st1 = padded.strides
        view = np.lib.stride_tricks.as_strided(padded[u:], shape=(n, nd - u),
                                               strides=(st0, st0 + st1), writeable=False)
        assert np.array_equal(band[u], view.sum(axis=1))
    for rows in (1, 7, 1000):
        monkeypatch.setattr(fm, "_CHUNK_ELEMENTS", rows * nd * prob.grid.width)
        b2, r2, _ = fm._normal(prob, psf)
        assert np.array_equal(b2, band) and np.array_equal(r2, rhs)
        acc = fm._NormalSum(prob)
        fm._psf(prob.grid, xc, gamma, beta, each=acc.add)
        b3, r3 = acc.result()
        assert np.array_equal(b3, band) and np.array_equal(r3, rhs)


@pytest.mark.parametrize("masked_rows", [[0], [29], [59], [5, 9, 50], list(range(0, 60, 4))])
def test_renormal_is_the_full_sum(masked_rows):
    """Masking pixels sums again only the band columns their rows reach: the same bits as
    the whole sum with the new weights (few rows, rows at the edges, rows close together,
    and so many that the whole sum is redone)."""
    import dataclasses

    import atmospec.spectro.forward_model as fm

    prob, xc, gamma, beta, _ = _small_problem()
    psf = fm._psf(prob.grid, xc, gamma, beta)
    band, rhs, _ = fm._normal(prob, psf)
    like = fm._Eval(np.zeros(1), np.zeros(prob.grid.n), 0.0, 0.0, np.zeros(1), band, rhs,
                    psf, prob.weight)
    weight = prob.weight.copy()
    for r in masked_rows:
        weight[r, np.flatnonzero(weight[r])[:2]] = 0.0
    masked = dataclasses.replace(prob, weight=weight)
    new_band, new_rhs = fm._renormal(masked, like)
    full_band, full_rhs, _ = fm._normal(masked, psf)
    assert np.array_equal(new_band, full_band) and np.array_equal(new_rhs, full_rhs)
    assert not np.array_equal(new_band, band)
    # the old evaluation's arrays are left alone
    assert np.array_equal(like.band, fm._normal(prob, psf)[0])


@pytest.mark.parametrize("mu", [1e-4, 0.3, 30.0])
def test_influence_trace_against_dense_inverse(mu):
    """τ = tr[(N + μQ)⁻¹ (N + μ Q G)] and the diagonal of (N + μQ)⁻¹ from the
    block-tridiagonal recursion match dense linear algebra; one `_Influence` serves every μ
    with the numbers `_influence` gives for that μ alone."""
    import atmospec.spectro.forward_model as fm

    prob, xc, gamma, beta, horne_g = _small_problem()
    psf = fm._psf(prob.grid, xc, gamma, beta)
    band, _, _ = fm._normal(prob, psf)
    g = prob.grid
    n = g.n
    dense = np.zeros((n, n))
    for u in range(band.shape[0]):
        idx = np.arange(n - u)
        dense[idx + u, idx] = band[u, :n - u]
        dense[idx, idx + u] = band[u, :n - u]
    gmat = np.zeros((n, n))
    rows = np.broadcast_to(np.arange(n)[:, None], g.src.shape)
    gmat[rows[g.src_ok], g.src[g.src_ok]] = horne_g[g.src_ok]
    q = np.diag(prob.prior_q)
    c = np.linalg.inv(dense + mu * q)
    tau = np.trace(c @ (dense + mu * q @ gmat))
    influence = fm._Influence(band, prob, horne_g)
    for m in (7.0, mu):  # an earlier μ must not leave anything behind
        c_diag, t, blocks = influence(m)
    assert t == pytest.approx(tau, rel=1e-9)
    np.testing.assert_allclose(c_diag, np.diag(c), rtol=1e-9)
    alone = fm._influence(band, prob, mu, horne_g)
    assert np.array_equal(alone[0], c_diag) and alone[1] == t
    assert all(np.array_equal(a, b) for a, b in zip(alone[2][:2], blocks[:2], strict=True))


def test_jacobian_gradient_and_chunks(monkeypatch):
    """The shape Jacobian's gradient ``Jᵀ W (D − M)`` is −½ the derivative of the projected
    objective along γ and α (central differences; along x_c pixels cross the truncated
    disc's edge and the objective jumps), and the Gauss–Newton matrices are the same bits
    whatever the chunk size."""
    from numpy.polynomial import legendre

    import atmospec.spectro.forward_model as fm

    prob, xc, gamma, beta, _ = _small_problem()
    n = prob.grid.n
    t = np.linspace(-1.0, 1.0, n)
    prob.bases = {"gamma": legendre.legvander(t, 3), "alpha": legendre.legvander(t, 2),
                  "x_c": legendre.legvander(t, 2)}
    theta = np.concatenate([np.linalg.lstsq(prob.bases[k], v, rcond=None)[0]
                            for k, v in (("gamma", gamma), ("alpha", beta - 0.5),
                                         ("x_c", xc))])
    cfg = ForwardModelConfig()
    ev = fm._evaluate(theta, prob, cfg)
    fm._jacobian(ev, prob, cfg)
    for i in (0, 1, 3, 4, 5, 6):  # γ and α coefficients
        h = np.zeros_like(theta)
        h[i] = 1e-3
        slope = (fm._evaluate(theta + h, prob, cfg).objective
                 - fm._evaluate(theta - h, prob, cfg).objective) / 2e-3
        assert -2.0 * ev.jtr[i] == pytest.approx(slope, rel=1e-3, abs=0.5)
    monkeypatch.setattr(fm, "_CHUNK_ELEMENTS", 5 * 13 * prob.grid.width)
    other = fm._evaluate(theta, prob, cfg)
    fm._jacobian(other, prob, cfg)
    assert np.array_equal(other.band, ev.band) and np.array_equal(other.amplitudes,
                                                                  ev.amplitudes)
    for name in ("jtj", "jtr", "damp"):
        assert np.array_equal(getattr(other, name), getattr(ev, name))
