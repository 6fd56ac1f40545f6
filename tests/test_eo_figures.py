"""The EO figures of issue 18 on small synthetic frames whose truth is set here: bias
stability, bias shifts and amp correlations (`atmospec.calib.eo_bias`), PRNU, divisadero
and tearing (`atmospec.calib.eo_flat`), the pair covariances and a_ij of the PTC
(`atmospec.calib.ptc`).

The frames are those of an LSSTCam detector's 16 amps shrunk to a few hundred pixels each
(`tiny_camera`): the algorithms take any geometry, and the whole module runs in seconds.
The same figures on full simulated BOT frames are in tests/test_eo_run.py (slow).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from atmospec.calib.eo_bias import BiasFiguresConfig, BiasSequence, find_bias_shifts
from atmospec.calib.eo_flat import (
    TearingConfig,
    divisadero_response,
    master_flat_noise,
    prnu_percent,
    tearing_counts,
)
from atmospec.calib.ptc import covariance_coefficients, difference_covariances
from atmospec.camera.assembly import assemble, disassemble
from atmospec.camera.description import BBox, load_camera
from atmospec.isr.overscan import OverscanConfig
from atmospec.sim.detector import brighter_fatter, brighter_fatter_strength


def tiny_camera(ny: int = 300, nx: int = 60, n_serial: int = 64, n_parallel: int = 48):
    """LSSTCam R10_S11 (ITL, 16 amps, their flips and places) with ``ny`` × ``nx`` data
    sections, a 3-column prescan and the real overscans."""
    camera = load_camera("LSSTCam", "R10_S11")
    pre = 3
    return replace(camera, raw_bbox=BBox(0, 0, pre + nx + n_serial, ny + n_parallel),
                   data_bbox=BBox(pre, 0, nx, ny), serial_prescan_bbox=BBox(0, 0, pre, ny),
                   serial_overscan_bbox=BBox(pre + nx, 0, n_serial, ny),
                   parallel_overscan_bbox=BBox(pre, ny, nx, n_parallel), base=None)


# --------------------------------------------------------------------------- bias shifts


def _rows(rng: np.random.Generator, n: int = 2000) -> np.ndarray:
    """Overscan row means: white noise of 0.5 ADU on a slow drift (3.5 ADU over ~2500
    rows) and a 250-row wave of 1 ADU, as the BOT simulator draws them."""
    r = np.arange(n)
    return (3.5 * np.sin(2 * np.pi * r / 2500 + 0.3) + 1.0 * np.sin(2 * np.pi * r / 250)
            + 0.5 * rng.standard_normal(n))


def test_bias_shift_found_at_its_row_with_its_amplitude():
    """A +4 ADU jump at row 700 and a −2.5 ADU one at row 1500 (8σ and 5σ of a row's mean)
    are found there (± 1 row), their amplitudes within 3σ of the jump between the two
    30-row line fits (σ 0.52 × 0.5 ADU = 0.26 ADU); drifts alone and a 10 ADU ramp give
    none."""
    rng = np.random.default_rng(7)
    rows = np.stack([_rows(rng) for _ in range(4)])
    rows[0, 700:] += 4.0
    rows[1, 1500:] -= 2.5
    rows[3] += np.linspace(0.0, 10.0, rows.shape[1])
    found = find_bias_shifts(rows)
    assert [len(f) for f in found] == [1, 1, 0, 0]
    assert abs(found[0][0].row - 700) <= 1
    assert found[0][0].amplitude == pytest.approx(4.0, abs=0.8)
    assert abs(found[1][0].row - 1500) <= 1
    assert found[1][0].amplitude == pytest.approx(-2.5, abs=0.8)
    assert found[0][0].noise == pytest.approx(0.5, rel=0.1)
    # Below the threshold (3σ = 1.5 ADU), nothing; in the first 30 rows read, nothing.
    quiet = _rows(rng)
    quiet[900:] += 1.0
    quiet[20:] += 6.0
    assert find_bias_shifts(quiet) == [[]]


# --------------------------------------------------------------------------- bias sequence


def _bias_frames(camera, rng, levels, sigmas, common=0.0, shift=None):
    """Raw bias segments: per amp a level, white noise σ (per frame), a fixed column
    pattern (the same in every frame) and, on amps 3 and 7, a shared noise of σ ``common``
    in the imaging pixels (pickup read at the same instants)."""
    n = camera.n_amps
    ny, nx = camera.raw_bbox.shape
    fixed = rng.normal(0.0, 2.0, (n, 1, camera.data_bbox.nx)).astype(np.float32)
    frames = []
    for k, (level, sigma) in enumerate(zip(levels, sigmas, strict=True)):
        seg = (rng.standard_normal((n, ny, nx), dtype=np.float32) * np.float32(sigma)
               + np.asarray(level, np.float32)[:, None, None])
        data = (slice(None), *camera.data_bbox.slices)
        seg[data] += fixed
        if common:
            z = rng.standard_normal(camera.data_bbox.shape, dtype=np.float32) * common
            seg[3][camera.data_bbox.slices] += z
            seg[7][camera.data_bbox.slices] += z
        if shift is not None and shift[0] == k:
            _, amp, row, amplitude = shift
            seg[amp, row:] += amplitude
        frames.append(seg)
    return frames


def test_bias_stability_shifts_and_amp_correlation():
    """Four bias frames of known levels, noise, pickup and one shift.

    Truth: amp i's level drifts by 0.8·(i + 1) ADU per frame (range 2.4·(i + 1) ADU over
    the four; amp 5's frame 2 also jumps by +6 ADU from row 120 of 300, which moves its
    means by 3.6 ADU), the noise σ is 5, 5.5, 6, 6.5 ADU, and amps 3 and 7 share a pickup
    of σ c = 3 ADU in their imaging pixels. The amp correlation is measured on consecutive
    frames' differences: ρ = 2c² / (2c² + σ_k² + σ_k+1² + v_k + v_k+1), v = (π/2)σ²(1/58 +
    1/42) the noise of the row and column medians of the overscans subtracted (~0.26).
    """
    camera = tiny_camera()
    rng = np.random.default_rng(11)
    n = camera.n_amps
    base = rng.uniform(15_000, 25_000, n)
    levels = [base + 0.8 * (np.arange(n) + 1) * k for k in range(4)]
    sigmas = [5.0, 5.5, 6.0, 6.5]
    frames = _bias_frames(camera, rng, levels, sigmas, common=3.0, shift=(2, 5, 120, 6.0))
    seq = BiasSequence(camera, BiasFiguresConfig(overscan=OverscanConfig(), stats_row_step=1))
    for k, seg in enumerate(frames):
        seq.add_segments(seg, f"frame{k}", 60000.0 + k / 1440)
    result = seq.result()
    f = result.figures
    truth_range = 2.4 * (np.arange(n) + 1)
    # The imaging range has the shift's share of frame 2 on amp 5: 6 ADU × 180/300 rows.
    truth_imaging = truth_range.copy()
    truth_imaging[5] = np.ptp([levels[k][5] + (6.0 * 180 / 300 if k == 2 else 0.0)
                               for k in range(4)])
    np.testing.assert_allclose(f["bias_mean_range"], truth_imaging, atol=0.2)
    truth_os = truth_range.copy()
    truth_os[5] = np.ptp([levels[k][5] + (6.0 * 180 / 300 if k == 2 else 0.0)
                          for k in range(4)])
    np.testing.assert_allclose(f["bias_overscan_range"], truth_os, atol=0.2)
    # σ of the overscan-subtracted imaging pixels: the noise, that of the row and column
    # medians subtracted (58 columns, 42 rows: π/2 σ²/n each) and the fixed column pattern
    # (2 ADU, the same in every frame); each σ is measured to σ/√(2·18 000) = 0.03 ADU.
    var = np.array(sigmas) ** 2
    os_var = np.pi / 2 * var * (1 / 58 + 1 / 42)
    np.testing.assert_allclose(f["bias_stdev_scatter"], np.std(np.sqrt(var + os_var + 4.0),
                                                               ddof=1), atol=0.1)
    assert list(f["bias_shifts"]) == [0] * 5 + [1] + [0] * 10
    assert f["bias_shift_max"][5] == pytest.approx(6.0, abs=0.4)
    assert result.shifts["row"][0] == 120 and result.shifts["frame"][0] == "frame2"
    # Amp correlations of consecutive frames' differences.
    expected = np.mean([2 * 9.0 / (2 * 9.0 + var[k] + var[k + 1] + os_var[k] + os_var[k + 1])
                        for k in range(3)])
    corr = np.array([list(r)[1:] for r in result.correlation])
    assert corr[3, 7] == pytest.approx(expected, abs=0.015)
    assert f["amp_correlation_max"][3] == pytest.approx(expected, abs=0.015)
    others = [i for i in range(n) if i not in (3, 7)]
    assert np.all(f["amp_correlation_max"][others] < 0.03)
    np.testing.assert_allclose(np.diag(corr), 1.0)
    assert len(result.series) == 4 * n
    assert np.all(np.diff(result.series["mjd"][::n]) > 0)


# --------------------------------------------------------------------------- PRNU


def _flat(camera, rng, prnu, level_e, n_combined, slope=0.05):
    """A master flat: a 5 % tilt across the detector × (1 + PRNU), with the noise of
    ``n_combined`` flats of ``level_e``; the PRNU of amp i is ``prnu[i]``."""
    shape = camera.detector_shape
    y, x = np.mgrid[0: shape[0], 0: shape[1]]
    large = 1.0 + slope * (x / shape[1] - 0.5) + 0.02 * (y / shape[0] - 0.5)
    response = disassemble(np.ones(shape, np.float32), camera)
    response *= 1.0 + np.asarray(prnu, np.float32)[:, None, None] * rng.standard_normal(
        response.shape, dtype=np.float32)
    image = large * assemble(response, camera, trimmed=True)
    noise = np.sqrt(1.0 / (n_combined * level_e))
    return (image * (1.0 + noise * rng.standard_normal(shape))).astype(np.float32)


def test_prnu_against_injected_sigma():
    """PRNU 1 % on every amp but C03 (3 %) and C14 (0.3 %), under a 5 % illumination
    tilt, in a master of two 20 ke⁻ flats (noise 0.5 %, subtracted in quadrature): 1 ± 0.03,
    3 ± 0.06, 0.3 ± 0.03 %. 200 pixels made cold (× 0.3) and masked are left out; not
    masked, clipping keeps them out too."""
    camera = tiny_camera(ny=200, nx=100)
    rng = np.random.default_rng(3)
    prnu = np.full(camera.n_amps, 0.01)
    prnu[camera.amp_index("C03")] = 0.03
    prnu[camera.amp_index("C14")] = 0.003
    flat = _flat(camera, rng, prnu, 20_000.0, 2)
    good = np.ones(flat.shape, bool)
    cold = (rng.integers(0, flat.shape[0], 200), rng.integers(0, flat.shape[1], 200))
    flat[cold] *= 0.3
    good[cold] = False
    noise = master_flat_noise(np.full(camera.n_amps, 20_000.0), np.full(camera.n_amps, 6.0), 2)
    measured = prnu_percent(flat, good, camera, noise)
    np.testing.assert_allclose(measured, 100 * prnu, atol=0.03, rtol=0.02)
    # Without the noise subtraction the shot noise adds in quadrature: √(1 + 0.25) %.
    raw = prnu_percent(flat, good, camera)
    assert raw[0] == pytest.approx(100 * np.hypot(0.01, 0.005), abs=0.03)
    unmasked = prnu_percent(flat, np.ones(flat.shape, bool), camera, noise)
    np.testing.assert_allclose(unmasked, measured, atol=0.03)
    assert master_flat_noise(np.array([1e4]), np.array([0.0]), 3, median_combined=True)[0] \
        == pytest.approx(np.pi / 2 / 3e4)


# --------------------------------------------------------------------------- divisadero


def test_divisadero_at_a_boundary_with_a_known_deficit():
    """Between C02 and C03 (side by side on the bottom row), the last column of C02 reads
    3 % low and the first of C03 1.5 % high; on top of a 4 % tilt and 0.3 % noise. C02 and
    C03 give 0.030 ± 0.002, the others (their boundaries clean) < 0.003."""
    camera = tiny_camera(ny=300, nx=80)
    rng = np.random.default_rng(5)
    flat = _flat(camera, rng, np.full(camera.n_amps, 0.003), 1e9, 1, slope=0.04)
    left, right = camera.amplifiers[camera.amp_index("C02")], \
        camera.amplifiers[camera.amp_index("C03")]
    assert left.iy == right.iy and abs(left.ix - right.ix) == 1
    first, second = sorted((left, right), key=lambda a: a.ix)
    _, cols_a = camera.amp_slices(first)
    _, cols_b = camera.amp_slices(second)
    flat[:, cols_a.stop - 1][: flat.shape[0] // 2] *= 0.97
    flat[:, cols_b.start][: flat.shape[0] // 2] *= 1.015
    maximum, profiles = divisadero_response(flat, camera)
    hit = [camera.amp_index("C02"), camera.amp_index("C03")]
    np.testing.assert_allclose(maximum[hit], 0.03, atol=0.002)
    rest = [i for i in range(camera.n_amps) if i not in hit]
    assert np.all(maximum[rest] < 0.003)
    # The tilt is divided out: the profiles are flat to the noise away from the edges.
    assert np.nanstd(profiles[:, 10:-10]) < 0.001


# --------------------------------------------------------------------------- tearing


def _torn_segments(camera, rng, torn_amps, amplitude=0.04, rows=100, level=30_000.0):
    """Raw flat segments (1 % noise) whose amps ``torn_amps`` move ``amplitude`` of the
    edge columns' charge to their neighbours in the first ``rows`` rows read."""
    n = camera.n_amps
    seg = np.full((n, *camera.raw_bbox.shape), 20_000.0, np.float32)
    seg += rng.normal(0, 5, seg.shape).astype(np.float32)
    d = camera.data_bbox
    data = level * (1 + 0.01 * rng.standard_normal((n, *d.shape)))
    for i in torn_amps:
        data[i, :rows, 0] *= 1 - amplitude
        data[i, :rows, 1] *= 1 + amplitude
        data[i, :rows, -1] *= 1 - amplitude
        data[i, :rows, -2] *= 1 + amplitude
    seg[(slice(None), *d.slices)] += data.astype(np.float32)
    return seg


def test_tearing_counts_the_torn_edges():
    """Amps 2 and 9 torn at both edges (ratio 1.083 in the first 100 rows): 2 detections
    each, 0 elsewhere; one edge torn by 2 % only: below the 5 % cut."""
    camera = tiny_camera(ny=300)
    config = TearingConfig(row_centres=(50, 150, 250), half_window=25)
    rng = np.random.default_rng(9)
    counts = tearing_counts(_torn_segments(camera, rng, (2, 9)), camera, config)
    assert list(np.flatnonzero(counts)) == [2, 9] and set(counts[[2, 9]]) == {2}
    weak = tearing_counts(_torn_segments(camera, rng, (4,), amplitude=0.01), camera, config)
    assert not weak.any()
    with pytest.raises(ValueError, match="do not fit"):
        tearing_counts(_torn_segments(camera, rng, ()), camera, TearingConfig())


# --------------------------------------------------------------------------- covariances


def test_pair_covariances_and_brighter_fatter_coefficients():
    """Flat pairs from 2 to 100 ke⁻ through the simulator's charge redistribution with
    α_x = 2e-7, α_y = 3e-7 /e⁻ (truth a_10 = 4e-7, a_01 = 6e-7, a_00 = −2e-6; read noise
    5 e⁻, gain 1.6 e⁻/ADU). The variance and neighbour covariance follow the model's exact
    expressions; the fitted a_10, a_01 within 0.7e-7 and a_00 within 1.5e-7 (3σ of the
    estimator on 800 × 500 pixels per pair: a Monte Carlo of 8 seeds on 500 × 500 gives
    σ = 2.8e-8, 2.0e-8, 6.0e-8 and no bias); lag 2 and the diagonal ~0 (second order)."""
    rng = np.random.default_rng(13)
    gain, ax, ay = 1.6, 2e-7, 3e-7
    levels = np.array([2e3, 5e3, 1e4, 2e4, 4e4, 6e4, 8e4, 1e5])
    shape = (800, 500)
    means, covs = [], []
    for level in levels:
        expected = np.full(shape, level, np.float32)
        frames = []
        for _ in range(2):
            e = brighter_fatter(rng.poisson(expected).astype(np.float32), expected, ax, ay)
            frames.append((e + 5.0 * rng.standard_normal(shape).astype(np.float32)) / gain)
        cov = difference_covariances((frames[0] - frames[1])[None], 2)[0] / 2.0
        means.append(0.5 * (frames[0].mean() + frames[1].mean()))
        covs.append(cov)
    covs = np.array(covs)
    # The filter's exact variance and neighbour covariance (b = α·μ to first order):
    # μ[(1 − 2b_x − 2b_y)² + 2b_x² + 2b_y²] + RN² and 2b_x(1 − 2b_x − 2b_y)μ, e⁻².
    mu = np.array(means) * gain
    bx, by = (b.astype(float) for b in brighter_fatter_strength(mu, ax, ay))
    np.testing.assert_allclose(covs[:, 0, 0] * gain**2,
                               mu * ((1 - 2 * bx - 2 * by) ** 2 + 2 * bx**2 + 2 * by**2) + 25.0,
                               rtol=0.005)
    # Each covariance is known to ~C_00/√N (N = 400 000 pixels): within 3 of that.
    assert np.all(np.abs(covs[:, 1, 0] * gain**2 - 2 * bx * (1 - 2 * bx - 2 * by) * mu)
                  < 3 * mu / np.sqrt(4e5))
    a = covariance_coefficients(np.array(means), covs, gain, np.full(len(levels), 4e5))
    assert a[1, 0] == pytest.approx(2 * ax, abs=0.7e-7)
    assert a[0, 1] == pytest.approx(2 * ay, abs=0.7e-7)
    assert a[0, 0] == pytest.approx(-4 * (ax + ay), abs=1.5e-7)
    assert abs(a[2, 0]) < 0.1e-6 and abs(a[1, 1]) < 0.25e-6
    # Too few usable pairs: NaN, not a number from nothing.
    assert np.isnan(covariance_coefficients(np.array(means[:3]), covs[:3], gain,
                                            np.full(3, 4e5))).all()


# --------------------------------------------------------------------------- cp_verify per frame


def test_verify_frame_per_amp():
    """A residual bias frame of 5 e⁻ noise: amp 1 left 6 e⁻ above 0 fails
    ``mean_below_sigma``; amp 2 with 10 % more noise fails ``noise_matches_read_noise``;
    amp 3 with a 40-pixel cosmic ray of 2000 e⁻ fails ``cr_noise_consistent`` (its clipped
    noise still matches), which a dark's check without CR test lets pass; all else passes."""
    from atmospec.calib.verify import FRAME_TESTS, verify_frame
    from atmospec.exposure import Exposure

    camera = tiny_camera(ny=200, nx=100)
    rng = np.random.default_rng(17)
    segs = rng.normal(0.0, 5.0, (camera.n_amps, 200, 100)).astype(np.float32)
    segs[1] += 6.0
    segs[2] *= 1.1
    segs[3, 50:55, 20:28] += 2000.0
    image = assemble(segs, camera, trimmed=True)
    exposure = Exposure(image, np.zeros(image.shape, np.int32), np.ones_like(image),
                        unit="electron")
    result = verify_frame(exposure, np.full(camera.n_amps, 5.0), camera)
    failed = {t: list(np.flatnonzero(~result[t])) for t in FRAME_TESTS}
    assert failed == {"mean_below_sigma": [1], "noise_matches_read_noise": [2],
                      "cr_noise_consistent": [3]}
    assert list(np.flatnonzero(~result["passed"])) == [1, 2, 3]
    np.testing.assert_allclose(result["mean"][[0, 1]], [0.0, 6.0], atol=0.1)
    lenient = verify_frame(exposure, np.full(camera.n_amps, 5.0), camera, cr_check=False)
    assert list(np.flatnonzero(~lenient["passed"])) == [1, 2]


def test_dark_cosmic_rays_per_amp_and_cr_rejected_noise():
    """A dark residual whose amps' read noise alternates between 4 and 12 e⁻, with cosmic
    rays on five amps and one track across an amp boundary, and, on amp 8, a smooth glow
    of 30 e⁻ that no cosmic-ray finder flags.

    Each amp searched with its own read noise (`cosmic_ray_mask`), every cosmic-ray pixel
    is found and almost no noise pixel flagged; with one read noise for the detector (the
    master dark's former way: the median, 8 e⁻) the 12 e⁻ amps' noise peaks are flagged.
    cp_verify's noise after cosmic-ray rejection then matches the clipped noise on every
    amp but the glowing one; without the rejection the amps with cosmic rays fail too."""
    from atmospec.calib.masters import cosmic_ray_mask
    from atmospec.calib.verify import verify_frame
    from atmospec.exposure import Exposure
    from atmospec.isr.cosmic_rays import CosmicRayConfig

    camera = tiny_camera(ny=200, nx=100)
    rng = np.random.default_rng(23)
    rn = np.where(np.arange(camera.n_amps) % 2, 12.0, 4.0)
    segs = (rng.standard_normal((camera.n_amps, 200, 100)) * rn[:, None, None]
            ).astype(np.float32)
    truth = np.zeros(segs.shape, bool)
    for amp, (y, x0, x1) in zip((0, 4, 7, 12, 15), ((40, 10, 40), (120, 50, 51),
                                                     (80, 20, 60), (150, 5, 25),
                                                     (30, 70, 90)), strict=True):
        segs[amp, y, x0:x1] += 2500.0
        segs[amp, y + 1, x0:x1] += 600.0
        truth[amp, y: y + 2, x0:x1] = True
    yy, xx = np.mgrid[:200, :100]
    segs[8] += (30.0 * np.exp(-((yy - 100) ** 2 + (xx - 50) ** 2) / (2 * 25.0**2))
                ).astype(np.float32)
    image = assemble(segs, camera, trimmed=True)
    true_cr = assemble(truth, camera, trimmed=True)
    # A track across the boundary of two amps of the top row (assembled columns 99/100).
    image[300, 90:110] += 2500.0
    true_cr[300, 90:110] = True
    exposure = Exposure(image, np.zeros(image.shape, np.int32), np.ones_like(image),
                        unit="electron")
    config = CosmicRayConfig()

    per_amp = cosmic_ray_mask(exposure, rn, camera, config)
    one = cosmic_ray_mask(exposure, np.full(camera.n_amps, np.median(rn)), camera, config)
    halo = ndimage.binary_dilation(true_cr, iterations=1)
    assert per_amp[true_cr].all() and one[true_cr].all()
    # L.A.Cosmic's own rate at the true noise (~1e-5 of the pixels: 2 here), against
    # hundreds of noise peaks of the 12 e⁻ amps judged at 8 e⁻.
    assert int((per_amp & ~halo).sum()) <= 5
    noisy = np.zeros(image.shape, bool)
    for i in np.flatnonzero(rn > np.median(rn)):
        noisy[camera.amp_slices(camera.amplifiers[i])] = True
    assert int((one & ~halo & noisy).sum()) > 50

    expected = rn
    rejected = verify_frame(exposure, expected, camera, cosmic_rays=per_amp)
    assert list(np.flatnonzero(~rejected["cr_noise_consistent"])) == [8]
    assert list(np.flatnonzero(~rejected["passed"])) == [8]
    raw_noise = verify_frame(exposure, expected, camera)
    hit = sorted({0, 4, 7, 8, 12, 15} | {i for i, a in enumerate(camera.amplifiers)
                                         if true_cr[camera.amp_slices(a)].any()})
    assert list(np.flatnonzero(~raw_noise["cr_noise_consistent"])) == hit
