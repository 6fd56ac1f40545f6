"""ISR on simulated LATISS frames, against the simulator's truth.

The bias, dark and flat steps with products built from simulated frames are tested with
the product builders, in test_calib_masters.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table
from scipy import ndimage

from atmospec.calib.products import Crosstalk, Ptc
from atmospec.camera.description import load_camera
from atmospec.isr.driver import IsrCalibrations, IsrConfig, run_isr
from atmospec.isr.gain import AmpGains
from atmospec.sim.night import NightConfig, night_plan, simulate_exposure
from atmospec.sim.rawfile import raw_frame

CAMERA = load_camera("latiss")
NIGHT = NightConfig(n_bias=2, n_dark=0, n_flat=0, n_science=1, compress=False)


def _frame(kind: str, seq: int):
    segments, truth, cards = simulate_exposure(kind, NIGHT, seq)
    return raw_frame(segments, cards, CAMERA), truth


def _seqs(kind: str) -> list[int]:
    return [p.seq for p in night_plan(NIGHT) if p.kind == kind]


def _isr(raw, calibs, *steps):
    return run_isr(raw, IsrConfig(steps=steps), calibs)


@pytest.fixture(scope="module")
def truth_gains(tmp_path_factory) -> AmpGains:
    """A PTC product holding the simulator's true gains (what a perfect PTC would give)."""
    _, truth = _frame("bias", _seqs("bias")[0])
    path = tmp_path_factory.mktemp("ptc") / "ptc.fits"
    Table({"AMP": list(CAMERA.amp_names), "GAIN": truth.detector.gains,
           "READ_NOISE": truth.detector.read_noise_e}, meta={"INSTRUME": "LATISS"}).write(path)
    return Ptc.read(path, CAMERA).gains(CAMERA)


def test_overscan_gain_assembly_bias_frame(truth_gains):
    """Bias frame: residual to truth within 0.2 e-, scatter equals the read noise within 5 %."""
    raw, truth = _frame("bias", _seqs("bias")[1])
    result = _isr(raw, IsrCalibrations(gains=truth_gains), "overscan", "gain")
    image = result.exposure.image
    det = truth.detector
    noise = [s["overscan_noise_adu"] for s in result.amp_stats.values()]
    np.testing.assert_allclose(noise, det.read_noise_adu, rtol=0.02)
    resid = image - (det.expected_e + det.fixed_pattern_e)
    good = ~truth.cosmic_ray_mask
    for i, amp in enumerate(CAMERA.amplifiers):
        sl = CAMERA.amp_slices(amp)
        r = resid[sl][good[sl]]
        assert abs(np.median(r)) < 0.2, amp.name
        assert np.std(r) == pytest.approx(det.read_noise_e[i], rel=0.05), amp.name


def test_overscan_gain_assembly_science_frame(truth_gains):
    """Science frame: on every amp the mean residual to truth is within 0.2 e- and the
    normalised residual has unit scatter within 5 %."""
    raw, truth = _frame("science", _seqs("science")[0])
    image = _isr(raw, IsrCalibrations(gains=truth_gains), "overscan", "gain").exposure.image
    det = truth.detector
    model = det.expected_e + det.fixed_pattern_e + det.crosstalk_e
    resid = image - model
    noise = np.sqrt(det.expected_e + (CAMERA.amp_map().choose(det.read_noise_e)) ** 2)
    # Excluded: cosmic rays (and their faint halo) and bleed trails, whose charge the noiseless
    # truth image does not hold, with a margin where partially filled trail ends sit.
    skip = (ndimage.binary_dilation(truth.cosmic_ray_mask, iterations=2)
            | ndimage.binary_dilation(det.saturated, iterations=5))
    good = ~skip & (det.expected_e < 5 * truth.sky_e)
    for amp in CAMERA.amplifiers:
        sl = CAMERA.amp_slices(amp)
        r, n = resid[sl][good[sl]], noise[sl][good[sl]]
        # Mean within 5 sigma, not the median: at a sky of ~240 e- the Poisson skew and the
        # 1 e-/ADU quantisation move the median of a perfect residual by ~0.2 e-.
        core = np.abs(r / n) < 5
        assert abs(np.mean(r[core])) < 0.2, amp.name
        assert np.std(r / n) == pytest.approx(1.0, abs=0.05), amp.name


def test_crosstalk_removed(truth_gains):
    """At least 95 % of the simulated crosstalk ghost flux is removed."""
    raw, truth = _frame("science", _seqs("science")[0])
    calibs = IsrCalibrations(gains=truth_gains, crosstalk=Crosstalk.read().matrix())
    without = _isr(_frame("science", _seqs("science")[0])[0], calibs, "overscan", "gain")
    with_xt = _isr(raw, calibs, "overscan", "gain", "crosstalk")
    ghost = truth.detector.crosstalk_e
    removed = without.exposure.image - with_xt.exposure.image
    strong = ghost > 20.0  # ghosts of bright (saturated) stars
    assert strong.sum() > 100
    left = np.abs(ghost[strong] - removed[strong]).sum() / ghost[strong].sum()
    assert left < 0.05, left
    assert removed[strong].sum() / ghost[strong].sum() == pytest.approx(1.0, abs=0.05)


def test_saturation_and_bleed_masked(truth_gains):
    raw, truth = _frame("science", _seqs("science")[0])
    exp = _isr(raw, IsrCalibrations(gains=truth_gains), "overscan", "saturation",
               "gain").exposure
    sat_truth = truth.detector.saturated
    assert sat_truth.sum() > 500  # cores and bleed trails of the saturated stars
    sat = exp.get_mask("SAT")
    assert np.all(sat[sat_truth])
    # The saturated stars have bleed trails along their columns: the masked regions are
    # taller than wide, and all of them (cores and trails) are masked.
    labels, n = ndimage.label(sat_truth)
    sizes = ndimage.sum(sat_truth, labels, range(1, n + 1))
    biggest = np.argsort(sizes)[::-1][:2]
    for sl in (ndimage.find_objects(labels)[i] for i in biggest):
        height, width = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        assert height > 2 * width
        assert sat[sl].sum() >= sat_truth[sl].sum()
    # Masked but not saturated: only the 1-pixel growth ring.
    assert (sat & ~sat_truth).sum() < 4 * sat_truth.sum()


def test_cosmic_rays(truth_gains):
    """Cosmic-ray recall >= 95 % and false positives <= 0.05 % of pixels."""
    raw, truth = _frame("science", _seqs("science")[0])
    calibs = IsrCalibrations(gains=truth_gains)
    exp = _isr(raw, calibs, "overscan", "saturation", "gain", "cosmic_rays").exposure
    cr = exp.get_mask("CR")
    true_cr = truth.cosmic_ray_mask & ~truth.detector.saturated
    recall = (cr & true_cr).sum() / true_cr.sum()
    halo = ndimage.binary_dilation(true_cr, iterations=1)
    false_pos = (cr & ~halo).sum() / cr.size
    print(f"CR recall {recall:.4f}, false positives {false_pos:.2e} of pixels")
    assert recall >= 0.95
    assert false_pos <= 5e-4
