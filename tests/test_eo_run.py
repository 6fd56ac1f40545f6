"""``atmospec eo``: the EO figures of a simulated BOT acquisition against the simulator's
truth, their verdicts against the specifications, and eotest's real e2v PTC points.

One small acquisition of one ITL detector (R10_S11) is simulated once for the module: 3
biases, 2 darks of 300 s, 6 flat pairs from 1 to 100 ke⁻, one low- and one high-flux
superflat and a crosstalk spot frame per amp (35 raws, uncompressed), with serial CTI
injected on two amps (C07 at 8e-6, out of specification; C06 at 4e-6, within), cold
pixels, bright pixels above 8 e⁻/s, bright half-columns, a 2 % non-linearity and crosstalk
of ~3e-4 between neighbouring amps. The simulation and the reduction take minutes (full
4k × 4k frames; the run is reduced once, by ``atmospec eo``, whose in-memory result the
truth tests read): the module is marked slow, apart from the PTC and specification tests.
"""

from __future__ import annotations

import configparser
import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from atmospec.calib.eo import REFERENCE_LIMITS, max_fractional_deviation
from atmospec.calib.eo_crosstalk import eo_crosstalk
from atmospec.calib.eo_run import BOT_PATTERNS, DetectorEo, classify_bot_run
from atmospec.calib.eo_specs import load_specs, spec_by_id, specs_for, verdict_table
from atmospec.calib.products.crosstalk import Crosstalk
from atmospec.calib.ptc import fit_ptc
from atmospec.camera.description import load_camera
from atmospec.cli import main
from atmospec.isr.defects import defect_mask
from atmospec.night import eo as eo_app
from atmospec.sim.bot import BotConfig, detector_config, write_bot_run
from atmospec.sim.detector import DetectorSimConfig, sensor_model

DATA = Path(__file__).parent / "data"
DET = "R10_S11"
SIM = DetectorSimConfig(
    cti_serial_by_amp=(("C07", 8e-6), ("C06", 4e-6)), cold_pixel_fraction=2e-5,
    nonlinearity=0.02,
    # Injected defects away from the 5 e⁻/s threshold, so that truth and verdict are clear.
    hot_pixel_rate_e_per_s=(8.0, 50.0), hot_column_rate_e_per_s=(6.0, 10.0))
BOT = BotConfig(detectors=(DET,), n_bias=3, n_dark=2, dark_exptime_s=300.0,
                flat_levels_e=(1000.0, 3000.0, 8000.0, 20000.0, 45000.0, 100000.0),
                n_sflat_low=1, n_sflat_high=1, n_xtalk=1, crosstalk=3e-4, compress=False,
                detector=SIM)


# --------------------------------------------------------------------------- no frames needed


def test_specification_table():
    """The shipped table holds the camera's numbers (MANIFEST section 8), once each."""
    assert spec_by_id("CCD-007").upper == 8.0
    assert spec_by_id("CCD-008").upper == 175_000.0
    assert spec_by_id("CCD-014").figure == "dark_current_95"
    assert spec_by_id("CCD-014").upper == 0.2
    assert spec_by_id("CCD-012").upper == 0.5  # percent
    assert spec_by_id("PTC-TURNOFF").lower == 90_000.0
    assert [s.spec for s in specs_for("cti_serial_high")] == ["CCD-010"]
    assert specs_for("cti_parallel_low")[0].upper == 3e-6
    itl, = specs_for("ptc_a00", "ITL")
    e2v, = specs_for("ptc_a00", "E2V")
    assert (itl.lower, itl.upper) == (-4.56e-6, 6.91e-7)
    assert (e2v.lower, e2v.upper) == (-3.52e-6, -2.61e-6)
    assert e2v.passes(-3e-6) and not e2v.passes(0.0) and e2v.passes(float("nan")) is None
    # The plot's reference lines are the specifications (no 9 e⁻, no "> 90 ke⁻" full well).
    assert REFERENCE_LIMITS["read_noise"][:2] == ("<", 8.0)
    assert REFERENCE_LIMITS["full_well"][:2] == ("<", 175_000.0)
    assert all(s.source for s in load_specs())
    # Issue 18's figures: PRNU's camera specification, eo_pipe's divisadero scale.
    assert [s.spec for s in specs_for("prnu")] == ["CCD-027"]
    assert specs_for("prnu")[0].upper == 5.0
    assert spec_by_id("DIVISADERO").figure == "divisadero_max"
    assert spec_by_id("DIVISADERO").upper == 0.05


def test_bot_patterns_are_eotests():
    """The roles' folder patterns are those of eotest's BOT job harness configuration."""
    ini = configparser.ConfigParser()
    ini.read(DATA / "lsstcam" / "eotest" / "BOT_jh_glob_patterns.ini")
    eotest = ini["BOT_acq"]
    # The crosstalk spot frames are ours: eotest's file names no such acquisition.
    assert {k: v for k, v in BOT_PATTERNS.items() if k != "xtalk"} == {
        "bias": eotest["bias_frame"], "read_noise": eotest["read_noise"],
        "dark": eotest["dark_current"], "flat_pairs": eotest["flat_pairs"],
        "sflat_high": eotest["cte_high"], "sflat_low": eotest["cte_low"]}
    assert eotest["dark_defects"] == BOT_PATTERNS["sflat_high"]
    assert eotest["bright_defects"] == BOT_PATTERNS["dark"]
    assert eotest["ptc"] == BOT_PATTERNS["flat_pairs"]


def test_verdict_table_statuses():
    figures = Table({"amp": ["C00", "C01"], "read_noise": [5.0, 9.0],
                     "cti_serial_high": [1e-6, float("nan")], "gain": [1.5, 1.6],
                     "dark_current": [float("nan")] * 2})
    table = verdict_table(figures, DET, "ITL")
    status = {(r["amp"], r["figure"]): r["status"] for r in table}
    assert status[("C00", "read_noise")] == "pass"
    assert status[("C01", "read_noise")] == "fail"
    assert status[("C01", "cti_serial_high")] == "not measured"
    assert status[("C00", "gain")] == "no spec"
    assert ("C00", "dark_current") not in status  # measured on no amp: left out
    # Unless the run could not measure it (biases only): then "not measured" if specified.
    figures["dark_current_95"] = [float("nan")] * 2
    table = verdict_table(figures, DET, "ITL", not_measured=("dark_current", "dark_current_95"))
    status = {(r["amp"], r["figure"], r["spec"]): r["status"] for r in table}
    assert status[("C01", "dark_current_95", "CCD-014")] == "not measured"
    assert ("C00", "dark_current", "") not in status  # no specification: left out


def test_ccd012_over_the_ccd_beside_the_amps():
    """eotest judges CCD-012 on the defect fraction of the whole CCD: a detector-level row
    (amp ``CCD``) beside the amps'. One amp at 2 % fails per amp while the CCD (0.22 %)
    passes; half the amps at 1 % make the CCD fail (0.55 %). The row judges no amp (16
    amps in the summary) and is not drawn among them."""
    from atmospec.calib.eo_specs import DETECTOR_AMP
    from atmospec.plots import eo_mosaic

    amps = list(load_camera("LSSTCam", DET).amp_names)
    for per_amp, whole, status in (([0.1] * 15 + [2.0], 0.21875, "pass"),
                                   ([1.0] * 8 + [0.1] * 8, 0.55, "fail")):
        figures = Table({"amp": amps, "defect_fraction": per_amp})
        figures["defect_fraction"].unit = "percent"
        table = verdict_table(figures, DET, "ITL",
                              detector_values={"defect_fraction": whole})
        ccd = table[table["amp"] == DETECTOR_AMP]
        assert len(ccd) == 1 and ccd["spec"][0] == "CCD-012"
        assert ccd["value"][0] == whole and ccd["status"][0] == status
        summary = eo_app.detector_summary(table)
        n_failing = sum(v > 0.5 for v in per_amp)
        assert summary["n_amps"] == 16 and summary["n_pass_all"] == 16 - n_failing
        line = eo_app.summary_line(DET, "ITL", summary)
        assert (f"CCD fails CCD-012 (defect_fraction {whole:.3g})" in line) == (
            status == "fail")
        title = eo_mosaic.eo_histogram_figure(table, "defect_fraction").axes[0].get_title()
        assert title.startswith(f"defect_fraction: {n_failing} of 16 amps fail")


def test_dask_run_needs_a_scheduler(tmp_path, capsys):
    """``--executor dask`` without ``--scheduler``: one line, exit 2, before any work."""
    assert main(["eo", str(tmp_path), "--repo", str(tmp_path / "repo"),
                 "--executor", "dask"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["atmospec eo: --executor dask needs --scheduler ADDR"]
    assert not (tmp_path / "repo").exists()


def test_ptc_fit_on_eotest_real_e2v_points():
    """eotest's real PTC points of an e2v amp (run 6006D, E2V-CCD250-266, amp 05).

    Our fit (Astier et al. 2019, as `atmospec calib ptc`) gives gain 0.7652 e⁻/ADU, a00
    −3.07e-6 /e⁻, noise 5.16 e⁻, turnoff 187 892 ADU. Computed directly from the same
    points: the quadratic var = n/g² + μ/g + a00·μ² (the model's expansion) fitted by
    least squares below 40 000 ADU gives gain 0.7663 e⁻/ADU and a00 −2.76e-6; a straight
    line below 5 000 ADU gives noise 5.29 e⁻ (gain 0.7756: without the a00 term the slope
    is biased by 1.4 %).
    """
    d = np.loadtxt(DATA / "lsstcam" / "eotest" / "PTC_mean_var_values.txt")
    mean, var = d[:, 0], d[:, 1]
    fit = fit_ptc(mean, var, np.full(len(mean), 1.0e6))
    low = mean < 40_000
    c2, c1, _c0 = np.polyfit(mean[low], var[low], 2)
    gain_direct = 1.0 / c1
    lowest = mean < 5_000
    slope, intercept = np.polyfit(mean[lowest], var[lowest], 1)
    noise_direct = np.sqrt(intercept) / slope
    assert fit.gain == pytest.approx(0.7652, abs=5e-4)
    assert fit.gain == pytest.approx(gain_direct, rel=0.005)
    assert np.sqrt(fit.noise) == pytest.approx(noise_direct, rel=0.05)
    assert fit.a00 == pytest.approx(c2, rel=0.15)
    # The vendor's a00 range of cp_verify holds for this real e2v amp.
    assert specs_for("ptc_a00", "e2v")[0].passes(fit.a00)
    # The turnoff is where saturation pulls the variance down (168–188 kADU here).
    assert 160_000 < fit.turnoff < 200_000


def test_real_ts8_amplifier_cti_and_noise():
    """The real e2v amplifier of a TS8 flat (RTM-010 S11, run 6006D, Segment00 = C00; the
    other segments are zeroed): 20 740 ADU above a 27 026 ADU bias, its serial overscan
    trail 4, 2, 1 ADU in the first three columns. Serial EPER CTI 6.3e-7, parallel 2e-8
    (within CCD-010 and CCD-011); read noise 6.38 ADU (overscan-subtracted), total noise
    6.43 ADU (the shared data manifest: overscan σ ≈ 6.4 ADU)."""
    from atmospec.calib.eo import eper_cti, read_noise_adu, total_noise_adu
    from atmospec.calib.eo_run import EoRunConfig
    from atmospec.camera.raw import read_raw

    raw = read_raw(DATA / "lsstcam" / "raw" /
                   "ts8_6006D_201807241028453-RTM-010-S11-det067_one_real_amp.fits")
    i = list(raw.camera.amp_names).index("C00")
    config = EoRunConfig().eo
    serial, parallel = eper_cti(raw, config)
    assert serial[i] == pytest.approx(6.3e-7, rel=0.05)
    assert abs(parallel[i]) < 1e-7
    assert spec_by_id("CCD-010").passes(float(serial[i]))
    assert read_noise_adu(raw, config)[i] == pytest.approx(6.38, rel=0.01)
    assert total_noise_adu(raw, config)[i] == pytest.approx(6.43, rel=0.01)


# --------------------------------------------------------------------------- crosstalk

#: Two spot frames (aggressors C12 and C03: 30 of the 240 pairs), crosstalk of ~3e-4
#: between neighbouring amps: a few seconds, unlike the full acquisition below.
SPOTS = BotConfig(detectors=(DET,), n_bias=0, n_dark=0, flat_levels_e=(), n_sflat_low=0,
                  n_sflat_high=0, n_xtalk=1, xtalk_amps=("C12", "C03"), crosstalk=3e-4,
                  compress=False)


@pytest.fixture(scope="module")
def spot_run(tmp_path_factory) -> tuple[list[Path], np.ndarray]:
    run_dir = tmp_path_factory.mktemp("spots") / "run"
    write_bot_run(run_dir, SPOTS)
    truth = json.loads((run_dir / "truth.json").read_text())["detectors"][DET]
    frames = classify_bot_run(sorted(run_dir.glob("*/*.fits")))[DET]
    return list(frames.xtalk), np.array(truth["crosstalk"])


def test_crosstalk_of_spot_frames_against_truth(spot_run, camera):
    """The matrix measured on the spot frames is the injected one; removed from them, no
    significant residual is left (cp_verify's check), and without the correction the same
    check fails.

    Tolerance: a pair's ratio is measured at the ~2300 pixels of a 100 ke⁻ spot; the read
    noise (6–9.5 e⁻ on R10_S11) gives one pixel's ratio an error of ~8e-5, 1.7e-6 on the
    median of them all (its reported error). The simulated bias has column-to-column
    offsets of 1 ADU (σ) that overscan subtraction leaves: the spot's ~55 columns average
    them to ~0.13 ADU, 2e-6 of the ~65 kADU spot, the same in all its pixels. Together
    ~3e-6: 1.5e-5 (5 % of the neighbours' coupling) is 5 of them.
    """
    spots, truth = spot_run
    assert len(spots) == 2
    result = eo_crosstalk(spots, camera)
    m = result.measurement
    names = camera.amp_names
    sources = [names.index("C12"), names.index("C03")]
    assert sorted(np.unique(np.nonzero(m.valid)[1])) == sorted(sources)
    assert m.valid.sum() == 30
    error = (m.coeffs - truth)[m.valid]
    assert np.abs(error).max() < 1.5e-5
    assert np.median(m.errors[m.valid]) < 3e-6
    # Every neighbour found, at its coupling (1.5e-4 to 4.5e-4): 5 % is the tolerance.
    neighbours = m.valid & (truth > 1e-4)
    assert neighbours.sum() == 4
    # CCD-013 per aggressor: the largest coupling, percent.
    xmax = result.crosstalk_max()
    assert np.isnan(np.delete(xmax, sources)).all()
    np.testing.assert_allclose(xmax[sources], 100 * np.abs(truth[:, sources]).max(axis=0),
                               atol=100 * 1.5e-5)
    # After correction: no pair further than 3 errors from zero.
    summary = result.summary()
    assert summary["passed"] is True and summary["n_pairs"] == 30
    assert summary["n_significant"] == 0 and summary["max_sigma"] < 3.0
    assert np.array_equal(result.amp_pass()[sources], [1.0, 1.0])
    # Without it, the neighbours' ghosts are tens of errors from zero.
    skipped = eo_crosstalk(spots, camera, correct=False)
    assert skipped.passed() is False
    assert skipped.summary()["n_significant"] >= 4
    assert np.array_equal(skipped.amp_pass()[sources], [0.0, 0.0])


# --------------------------------------------------------------------------- simulated run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("bot") / "run"
    write_bot_run(run_dir, BOT)
    return run_dir


@pytest.fixture(scope="module")
def truth(run) -> dict:
    return json.loads((run / "truth.json").read_text())


@pytest.fixture(scope="module")
def camera():
    return load_camera("LSSTCam", DET)


@pytest.fixture(scope="module")
def cli_run(run, tmp_path_factory) -> tuple[Path, int, str, DetectorEo]:
    """``atmospec eo RUN --repo REPO`` once; the detector's in-memory measurement (its
    defect maps are not written) is kept on the way, so that the run is reduced once."""
    repo = tmp_path_factory.mktemp("repo")
    kept: dict[str, DetectorEo] = {}
    real = eo_app.detector_figures

    def keep(frames, camera, workdir, config=None):
        kept[frames.detector] = real(frames, camera, workdir, config)
        return kept[frames.detector]

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setattr(eo_app, "detector_figures", keep)
        status = main(["eo", str(run), "--repo", str(repo)])
    return repo, status, out.getvalue(), kept[DET]


@pytest.fixture(scope="module")
def measured(cli_run) -> DetectorEo:
    return cli_run[3]


@pytest.mark.slow
def test_classification(run):
    frames = classify_bot_run(sorted(run.glob("*/*.fits")))[DET]
    assert (len(frames.bias), len(frames.read_noise), len(frames.dark)) == (3, 3, 2)
    assert (len(frames.flat_pairs), len(frames.sflat_high), len(frames.sflat_low)) == (12, 1, 1)
    assert len(frames.xtalk) == 16


@pytest.mark.slow
def test_figures_against_truth(measured, truth, camera):
    """Gain ≤ 1 %, read noise ≤ 3 %, CTI within 10 % where injected, PTC noise ≤ 3 %."""
    t = measured.figures
    det = truth["detectors"][DET]
    np.testing.assert_allclose(t["gain"], det["gains"], rtol=0.01)
    np.testing.assert_allclose(t["read_noise"], det["read_noise_e"], rtol=0.03)
    np.testing.assert_allclose(t["ptc_noise"], det["read_noise_e"], rtol=0.03)
    # Total noise holds the row drifts the overscan subtraction removes.
    assert np.all(t["total_noise"] >= t["read_noise"])
    cti = np.asarray(det["cti_serial"])
    injected = cti > 0
    np.testing.assert_allclose(t["cti_serial_high"][injected], cti[injected], rtol=0.10)
    assert np.all(np.abs(t["cti_serial_high"][~injected]) < 5e-7)
    # Low flux (1 ke⁻): 25 times less trail, noisier.
    np.testing.assert_allclose(t["cti_serial_low"][injected], cti[injected], rtol=0.25)
    assert np.all(np.abs(t["cti_parallel_high"]) < 5e-7)
    # The ramp stops at 100 ke⁻, below the 130 ke⁻ full well: the turnoff is its top point.
    assert np.all((t["ptc_turnoff_e"] > 90_000) & (t["ptc_turnoff_e"] < 110_000))


@pytest.mark.slow
def test_bias_figures_against_truth(measured, truth, camera):
    """Bias stability: the range of each amp's bias level over the three ``bias_bias``
    frames is the truth's (the simulator's per-frame level, 1 ADU of jitter) within 0.3
    ADU (the share of the row drift in the data rows, ≲ 0.1 ADU, and the noise); the σ of
    the frames is the same (scatter < 0.05 ADU). No shift (the simulated drifts are slow
    waves, none abrupt); the amps' noise is independent (|ρ| < 0.01); every bias and dark
    passes cp_verify's per-frame tests."""
    t = measured.figures
    det = truth["detectors"][DET]
    levels = np.array([f["bias_levels_adu"] for f in det["frames"]
                       if f["folder"].startswith("bias_bias")])
    assert levels.shape == (3, 16)
    np.testing.assert_allclose(t["bias_mean_range"], np.ptp(levels, axis=0), atol=0.3)
    np.testing.assert_allclose(t["bias_overscan_range"], np.ptp(levels, axis=0), atol=0.3)
    assert np.all(t["bias_stdev_scatter"] < 0.05)
    assert np.all(t["bias_shifts"] == 0) and np.all(t["bias_shift_max"] == 0)
    assert len(measured.tables["bias_shifts"]) == 0
    assert np.all(t["amp_correlation_max"] < 0.01)
    assert len(measured.tables["bias_stability"]) == 3 * 16
    np.testing.assert_array_equal(t["verify_bias_pass"], 1.0)
    np.testing.assert_array_equal(t["verify_dark_pass"], 1.0)


@pytest.mark.slow
def test_flat_figures_against_truth(measured, truth, camera):
    """PRNU: the simulated sensor's 0.7 % (within 0.02 %: the 2 % non-linearity scales it
    by 0.993); no divisadero (< 0.005), no tearing; no brighter-fatter (|a_10|, |a_01| <
    2e-7, 0 on average); the serial CTI at the faintest pair (1 ke⁻) within 30 % of the
    injected, and at every pair from 8 ke⁻ within 10 %."""
    t = measured.figures
    det = truth["detectors"][DET]
    np.testing.assert_allclose(t["prnu"], 100 * BOT.flat_field.prnu, atol=0.02)
    assert np.all(t["divisadero_max"] < 0.005)
    assert np.all(t["tearing_detections"] == 0) and t.meta["TEARING_FRAMES"] == 0
    assert det["tearing"] is None and det["brighter_fatter"]["a01"] == 0.0
    # Each a_ij from 6 pairs of 650 000 pixels is known to 4e-8 (a Monte Carlo of the fit
    # on pure Poisson pairs: σ 3.9e-8, 4.2e-8): within 5σ each, their mean over the 16 amps
    # within 6σ of 0.
    for name in ("ptc_a10", "ptc_a01"):
        assert np.all(np.abs(t[name]) < 2e-7) and abs(np.mean(t[name])) < 6e-8, name
    cti = np.asarray(det["cti_serial"])
    injected = cti > 0
    np.testing.assert_allclose(t["cti_serial_lowest"][injected], cti[injected], rtol=0.3)
    ramp = measured.tables["cti_vs_signal"]
    assert len(ramp) == len(BOT.flat_levels_e) * 16
    for i, amp in enumerate(camera.amp_names):
        rows = ramp[(ramp["amp"] == amp) & (ramp["level_e"] > 7000)]
        assert len(rows) == 4
        if injected[i]:
            np.testing.assert_allclose(rows["cti_serial"], cti[i], rtol=0.1)
        else:
            assert np.all(np.abs(rows["cti_serial"]) < 5e-7)


@pytest.mark.slow
def test_dark_current_95_against_truth(measured, truth, camera):
    """DC95 within 5 % of its prediction from the truth.

    The 95th percentile of a master dark of two 300 s darks is mostly noise: the true dark
    current (0.002 e⁻/s, and the hot pixels) is 0.6 e⁻ in a 300 s dark, the read noise
    ~6 e⁻. The prediction is the 95th percentile of the true dark-current map of the amp
    plus Gaussian noise of the true per-pixel σ: Poisson and read noise of the darks
    averaged, the master bias's read noise (3 biases) and the row-by-row overscan medians'
    (58 columns, efficiency π/2).
    """
    det = truth["detectors"][DET]
    sensor = sensor_model(detector_config(BOT, camera), camera)
    darktime = next(e["darktime"] for e in truth["exposures"] if e["test_type"] == "DARK")
    n_dark, n_bias = BOT.n_dark, BOT.n_bias
    n_os = camera.serial_overscan_bbox.nx - 6
    rng = np.random.default_rng(5)
    for i, amp in enumerate(camera.amplifiers):
        rate = sensor.dark_current_e_per_s[camera.amp_slices(amp)].ravel()
        rn2 = det["read_noise_e"][i] ** 2 * (1.0 + np.pi / 2 / n_os)
        sigma = np.sqrt((rate * darktime + rn2) / n_dark + rn2 / n_bias) / darktime
        predicted = np.percentile(rate + sigma * rng.standard_normal(rate.size), 95)
        assert measured.figures["dark_current_95"][i] == pytest.approx(predicted, rel=0.05), \
            amp.name


@pytest.mark.slow
def test_defects_against_truth(measured, camera):
    """Bright (> 5 e⁻/s) and dark (< 0.8 of the median) pixels and columns: ≥ 99 % found,
    ≤ 0.5 % of those found false."""
    sensor = sensor_model(detector_config(BOT, camera), camera)
    for found, true in ((measured.defects.hot, sensor.dark_current_e_per_s > 5.0),
                        (measured.defects.cold, sensor.response < 0.8)):
        assert true.sum() > 100
        assert (found & true).sum() >= 0.99 * true.sum()
        assert (found & ~true).sum() <= 0.005 * found.sum()
    # The three injected bright half-columns (6–10 e⁻/s) are bright columns.
    assert int(np.sum(measured.figures["bright_columns"])) == 3
    assert int(np.sum(measured.figures["dark_columns"])) == 0
    n_pix = camera.data_bbox.nx * camera.data_bbox.ny
    for i, amp in enumerate(camera.amplifiers):
        sl = camera.amp_slices(amp)
        fraction = 100 * ((sensor.dark_current_e_per_s[sl] > 5.0)
                          | (sensor.response[sl] < 0.8)).sum() / n_pix
        assert measured.figures["defect_fraction"][i] == pytest.approx(fraction, abs=0.005)
    # CCD-012 as eotest judges it: the whole CCD's fraction, the mean of the equal amps'.
    assert measured.figures.meta["DETECTOR_FIGURES"]["defect_fraction"] == pytest.approx(
        float(np.mean(measured.figures["defect_fraction"])), rel=1e-9)


@pytest.mark.slow
def test_linearity_against_photodiode_truth(measured, truth, camera):
    """Max fractional deviation within 0.2 % (absolute) of the truth's: the same line fit
    on the noiseless amp means (true gain, the simulated non-linearity) against the true
    photodiode charges."""
    det = truth["detectors"][DET]
    charges = {e["folder"]: e["photodiode_charge_c"] for e in truth["exposures"]}
    by_level: dict[float, list[tuple[float, np.ndarray]]] = {}
    for frame in det["frames"]:
        exposure = next(e for e in truth["exposures"] if e["folder"] == frame["folder"])
        if exposure["test_type"] == "FLAT":
            by_level.setdefault(exposure["level_e"], []).append(
                (charges[frame["folder"]], np.asarray(frame["mean_e"])))
    gains = np.asarray(det["gains"])
    f = np.asarray(det["nonlinearity"]) / 1e5
    x = np.array([np.mean([c for c, _ in v]) for v in by_level.values()])
    adu = np.array([np.mean([m for _, m in v], axis=0) for v in by_level.values()]) / gains
    adu = adu * (1.0 - f * adu)
    lo, hi = 1_000.0, 90_000.0
    for i in range(camera.n_amps):
        expected = max_fractional_deviation(x, adu[:, i], lo / gains[i], hi / gains[i])
        assert 0.1 < expected < 2.0
        assert measured.figures["linearity_max_frac_dev"][i] == pytest.approx(expected,
                                                                               abs=0.2)


def _expected_failures(truth) -> set[tuple[str, str]]:
    """The (amp, specification) pairs the truth fails: read noise (the detector's nominal
    values, 5.95–9.45 e⁻ on R10_S11) above 8 e⁻, serial CTI above 5e-6. Everything else the
    simulated sensor has within its specification: gains within 4.1 % of nominal, no
    parallel CTI, a00 = 0 (in the ITL range), full well 130 ke⁻, 2 % non-linearity at
    100 kADU, few defects, 0.002 e⁻/s dark current."""
    det = truth["detectors"][DET]
    failed = set()
    for amp, rn, cti in zip(det["amps"], det["read_noise_e"], det["cti_serial"], strict=True):
        if rn >= 8.0:
            failed.add((amp, "CCD-007"))
        if cti >= 5e-6:
            failed.add((amp, "CCD-010"))
    gains = np.asarray(det["gains"]) / np.asarray(det["nominal_gains"]) - 1
    assert np.all(np.abs(gains) < 0.05)
    return failed


@pytest.mark.slow
def test_verdicts_right_for_every_amp(measured, truth, camera):
    """Every verdict of every amp is the truth's: C07, C03, C02, C01 fail CCD-007 (read
    noise), C07 fails CCD-010 (serial CTI 8e-6, high- and low-flux), all else passes."""
    table = verdict_table(measured.figures, DET, camera.vendor)
    assert set(table["status"]) <= {"pass", "fail", "no spec"}
    failed = {(r["amp"], r["spec"]) for r in table if r["status"] == "fail"}
    assert failed == _expected_failures(truth)
    specs = set(table["spec"]) - {""}
    assert {"CCD-007", "CCD-008", "CCD-009", "CCD-010", "CCD-011", "CCD-012", "CCD-014",
            "CCD-027", "PTC-GAIN", "PTC-NOISE", "PTC-TURNOFF", "PTC-A00",
            "DIVISADERO"} <= specs


@pytest.mark.slow
def test_crosstalk_written_and_against_truth(cli_run, truth, camera):
    """The spot frames of the full run: the whole matrix against the truth (the tolerance
    of `test_crosstalk_of_spot_frames_against_truth`), CCD-013 on every amp, the product
    written and read back, the residual check passed and in the detector's line."""
    repo, _, printed, measured = cli_run
    coeffs = np.array(truth["detectors"][DET]["crosstalk"])
    product = Crosstalk.read(repo / "eo" / DET / "eo_crosstalk.ecsv", camera.n_amps)
    matrix = product.matrix(camera.n_amps).coeffs
    assert np.abs(matrix - coeffs).max() < 1.5e-5
    pairs = Table.read(repo / "eo" / DET / "eo_crosstalk_pairs.ecsv")
    assert len(pairs) == 240 and not pairs["significant"].any()
    doc = json.loads((repo / "eo" / DET / "eo_figures.json").read_text())
    residual = doc["summary"]["crosstalk_residual"]
    assert residual["passed"] is True and residual["n_pairs"] == 240
    assert "crosstalk residual passes (0 of 240 pairs" in printed
    rows = Table.read(repo / "eo" / DET / "eo_figures.ecsv")
    ccd013 = rows[rows["figure"] == "crosstalk_max"]
    assert len(ccd013) == 16 and set(ccd013["status"]) == {"pass"}
    np.testing.assert_allclose(np.asarray(ccd013["value"]),
                               100 * np.abs(coeffs).max(axis=0), atol=100 * 1.5e-5)
    assert set(measured.figures["verify_crosstalk_pass"]) == {1.0}


@pytest.mark.slow
def test_cli_run_rerun_and_bad_input(cli_run, run, tmp_path, capsys):
    """One line per detector, files written, a re-run skips, a failing detector is reported
    without stopping the others, bad input is one line (exit 2)."""
    repo, status, printed, _ = cli_run
    assert status == 0
    out = printed.strip().splitlines()
    assert len(out) == 1
    assert out[0].startswith(f"{DET} (ITL): 16 amps, 12 pass all, C07 fails CCD-007 "
                             "(read_noise 9.")
    assert "CCD-010 (cti_serial_high 8." in out[0]
    per_det = repo / "eo" / DET / "eo_figures.ecsv"
    doc = json.loads((repo / "eo" / DET / "eo_figures.json").read_text())
    assert doc["summary"]["n_pass_all"] == 12
    assert {f["spec"] for f in doc["summary"]["failures"]} == {"CCD-007", "CCD-010"}
    long = Table.read(per_det)
    assert set(long["status"]) == {"pass", "fail", "no spec"}
    # The further tables, in the JSON and beside it.
    assert set(doc["tables"]) == {"bias_stability", "bias_shifts", "amp_correlation",
                                  "cti_vs_signal", "covariances", "tearing",
                                  "frame_verification", "bright_defects", "dark_defects",
                                  "crosstalk", "crosstalk_pairs"}
    for name, rows in doc["tables"].items():
        assert len(Table.read(repo / "eo" / DET / f"eo_{name}.ecsv")) == len(rows)
    # The defect boxes written are the defects found.
    maps = cli_run[3].defects
    for name, found in (("bright_defects", maps.hot), ("dark_defects", maps.cold)):
        boxes = Table.read(repo / "eo" / DET / f"eo_{name}.ecsv")
        np.testing.assert_array_equal(defect_mask(boxes, found.shape), found)
    assert doc["summary"]["tearing_frames"] == 0 and "tearing" not in out[0]
    assert {"CCD-027", "DIVISADERO"} <= {str(v) for v in long["spec"]
                                          if v is not np.ma.masked}
    run_wide = Table.read(repo / "eo" / "eo_figures.ecsv")
    assert set(run_wide["detector"]) == {DET} and len(run_wide) == len(long)
    # The mosaic and the histogram of every measured figure (atmospec.plots.eo_mosaic).
    plots = repo / "eo" / "plots"
    assert {p.name for p in plots.glob("*.png")} == {
        f"{f}_{kind}.png" for f in dict.fromkeys(run_wide["figure"])
        for kind in ("mosaic", "hist")}
    mtime = per_det.stat().st_mtime_ns
    assert main(["eo", str(run), "--repo", str(repo)]) == 0
    assert capsys.readouterr().out.strip().endswith("(done before)")
    assert per_det.stat().st_mtime_ns == mtime

    # Two more detectors with biases only (in a copy of the run holding all three), on two
    # worker processes. R10_S10 has biases only: what biases support is measured, the other
    # specified figures are "not measured". R10_S12 has one bias seen as a dark too (a
    # partial run, no flat pairs): failed with its reason; the first detector done before.
    both = tmp_path / "both"
    run_b = tmp_path / "run_b"
    write_bot_run(run_b, BotConfig(
        detectors=("R10_S10", "R10_S12"), n_bias=2, n_dark=0, flat_levels_e=(),
        n_sflat_low=0, n_sflat_high=0, compress=False))
    for source in (run, run_b):
        for raw in source.glob("*/*.fits"):
            (both / raw.parent.name).mkdir(parents=True, exist_ok=True)
            (both / raw.parent.name / raw.name).symlink_to(raw)
    partial = next(run_b.glob("bias_bias_000/*R10_S12.fits"))
    (both / "dark_dark_999").mkdir()
    (both / "dark_dark_999" / partial.name).symlink_to(partial)
    assert main(["eo", str(both), "--repo", str(repo), "--workers", "2"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0].split()[0] for line in lines] == ["R10_S10", DET, "R10_S12"]
    # R10_S10's nominal read noise is 9.5-12.9 e⁻: every amp fails CCD-007.
    assert lines[0].startswith("R10_S10 (ITL): 16 amps, 0 pass all, all amps fail CCD-007; "
                               "not measured: ")
    missing = set(lines[0].split("not measured: ")[1].split(", "))
    assert {"cti_serial_high", "dark_current_95", "defect_fraction", "ptc_turnoff_e",
            "linearity_max_frac_dev", "prnu"} <= missing and "read_noise" not in missing
    assert "FAILED: " in lines[2] and "no flat pairs frames" in lines[2]
    assert lines[1].endswith("(done before)")
    biases_only = Table.read(repo / "eo" / "R10_S10" / "eo_figures.ecsv")
    status: dict[tuple[str, str], set[str]] = {}
    for r in biases_only:
        spec = "" if np.ma.is_masked(r["spec"]) else str(r["spec"])  # empty reads masked
        status.setdefault((str(r["figure"]), spec), set()).add(str(r["status"]))
    assert status[("read_noise", "CCD-007")] == {"fail"}
    assert status[("cti_serial_high", "CCD-010")] == {"not measured"}
    assert status[("dark_current_95", "CCD-014")] == {"not measured"}
    assert {"total_noise", "bias_mean_range", "amp_correlation_max",
            "verify_bias_pass"} <= set(biases_only["figure"])
    truth_b = json.loads((run_b / "truth.json").read_text())["detectors"]["R10_S10"]
    noise = {str(r["amp"]): float(r["value"]) for r in biases_only
             if r["figure"] == "read_noise"}
    nominal = load_camera("LSSTCam", "R10_S10").nominal_gains
    # In e⁻ with the nominal gains (no PTC): against the true noise in ADU.
    assert np.allclose([noise[a] / g for a, g in zip(truth_b["amps"], nominal, strict=True)],
                       truth_b["read_noise_adu"], rtol=0.03)

    # The same detector on a Dask cluster of two workers: the same table.
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        assert main(["eo", str(both), "--repo", str(tmp_path / "dask_repo"), "--detectors",
                     "R10_S10", "--executor", "dask", "--scheduler",
                     cluster.scheduler_address]) == 0
    on_dask = Table.read(tmp_path / "dask_repo" / "eo" / "R10_S10" / "eo_figures.ecsv")
    assert (on_dask.pformat(max_lines=-1, max_width=-1)
            == biases_only.pformat(max_lines=-1, max_width=-1))
    capsys.readouterr()

    (tmp_path / "empty").mkdir()
    for args, what in (([str(tmp_path / "empty")], "no raw frame"),
                       ([str(run), "--detectors", "R22_S11"], "no frames of detector R22_S11"),
                       ([str(run), "--workers", "0"], "--workers"),
                       ([str(run), "--executor", "dask"], "--scheduler")):
        assert main(["eo", *args, "--repo", str(repo)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and what in err[0]
