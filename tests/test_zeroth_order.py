"""Zeroth order of dispersed LATISS frames, against the simulator's truth.

Full-size frames go through the whole chain: `render_dispersed` (holo4_003, ronchi170lpmm,
saturated, second star) + sky + cosmic rays → `expose` (noise, bleeding, crosstalk, real
gains) → `run_isr` (overscan, saturation, gain), each simulated once per module. The
no-star frame and the scoring-rule scenes are built directly as signal + Poisson noise:
ISR adds nothing to what they test.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from astropy.io import fits

from atmospec.camera.description import load_camera
from atmospec.camera.raw import RawFrame
from atmospec.camera.spectrograph import load_instrument
from atmospec.camera.translator import translate_header
from atmospec.errors import BadInputError
from atmospec.exposure import Exposure
from atmospec.io import provenance_cards
from atmospec.isr.driver import IsrCalibrations, IsrConfig, run_isr
from atmospec.isr.gain import nominal_gains
from atmospec.layout import exposure_file
from atmospec.sim.detector import DetectorSimConfig, expose
from atmospec.sim.dispersed import (
    DispersedSceneConfig,
    DispersedSpectrumModel,
    adr_reference_of_zeroth_order,
    dispersion_offset_px,
    render_dispersed,
    render_dispersed_exposure,
    star_flux_for_zeroth_peak,
    wavelength_from_offset_px,
)
from atmospec.sim.rawfile import primary_header, raw_frame
from atmospec.sim.scenes import cosmic_rays, render_stars
from atmospec.spectro.adr import TraceRefraction
from atmospec.spectro.zeroth_order import (
    ZerothOrderConfig,
    find_zeroth_order,
    write_centroid,
    zeroth_order_prior,
)

CAMERA = load_camera("latiss")
PROFILE = load_instrument("latiss")
SHAPE = CAMERA.detector_shape
LINSPOS = 67.0
FWHM = 11.0  # 1.05" seeing at 500 nm
SKY_E = 150.0  # 30 s of dark-time sky
STAR_E = 2.0e7  # a V ~ 9 CALSPEC standard in 30 s
NOMINAL = PROFILE.disperser_spec("holo4_003").nominal_zeroth_order


def _header(seq: int, disperser: str) -> fits.Header:
    cards = primary_header(f"AT_O_20240624_{seq:06d}", "OBJECT", 30.0, 30.24, "empty_1",
                           disperser, target="HD185975", linspos=LINSPOS)
    return fits.Header(cards)


def _raw(seq: int, disperser: str, x0: float, y0: float, flux: float,
         config: DispersedSceneConfig | None = None):
    """Simulated raw frame of a dispersed star, its truth and noiseless signal."""
    rng = np.random.default_rng([20240624, seq])
    signal, truth = render_dispersed(SHAPE, x0, y0, flux, FWHM, disperser, LINSPOS, rng,
                                     config=config)
    deposits, _ = cosmic_rays(SHAPE, 200, rng)
    segments, _ = expose(signal + np.float32(SKY_E), DetectorSimConfig(), rng, exptime=30.0,
                         darktime=30.24, deposits_e=deposits, camera=CAMERA)
    raw = raw_frame(segments, _header(seq, disperser), CAMERA)
    return raw, truth, signal


def _isr(raw: RawFrame, steps=("overscan", "saturation", "gain")) -> Exposure:
    raw = replace(raw, segments=raw.segments.copy())  # ISR works in place
    return run_isr(raw, IsrConfig(steps=steps), IsrCalibrations(gains=nominal_gains(CAMERA))
                   ).exposure


@pytest.fixture(scope="module")
def holo():
    """holo4_003 frame, target placed 150 px from the nominal position (the header prior)."""
    x0 = NOMINAL[0] + 150.0 / math.sqrt(2.0) + 0.37
    y0 = NOMINAL[1] - 150.0 / math.sqrt(2.0) + 0.21
    raw, truth, signal = _raw(101, "holo4_003", x0, y0, STAR_E)
    return _isr(raw), truth, signal


@pytest.fixture(scope="module")
def ronchi():
    nominal = PROFILE.disperser_spec("ronchi170lpmm").nominal_zeroth_order
    raw, truth, _ = _raw(102, "ronchi170lpmm", nominal[0] - 3.62, nominal[1] + 2.45, STAR_E)
    return _isr(raw), truth


@pytest.fixture(scope="module")
def saturated():
    """holo4_003 frame whose zeroth order peaks at 1.5 Me- (full well 130 ke-): bleeds."""
    flux = star_flux_for_zeroth_peak(1.5e6, FWHM, "holo4_003")
    raw, truth, _ = _raw(103, "holo4_003", NOMINAL[0] + 12.58, NOMINAL[1] - 7.33, flux)
    return raw, truth


@pytest.fixture(scope="module")
def two_stars():
    """Target on the nominal position, a 3x brighter star (and its spectrum) 600 px away."""
    cfg = DispersedSceneConfig(second_star_flux_ratio=3.0, second_star_offset_px=(-580.0, 153.6))
    raw, truth, _ = _raw(104, "holo4_003", NOMINAL[0] + 0.44, NOMINAL[1] - 0.71, STAR_E, cfg)
    return _isr(raw), truth


def _error(result, truth) -> float:
    return math.hypot(result.x - truth["x0"], result.y - truth["y0"])


# --------------------------------------------------------------------------- full frames


def test_holo4_003_centroid_150px_off_the_prior(holo):
    """Header prior 150 px away: found near the prior, within 0.1 px of truth, warned."""
    exposure, truth, _ = holo
    result = find_zeroth_order(exposure)
    assert (result.prior_x, result.prior_y) == pytest.approx(NOMINAL)
    assert _error(result, truth) < 0.1
    assert result.search == "near_prior" and result.method == "moffat_fit"
    assert not result.saturated
    assert result.distance_to_prior == pytest.approx(150.0, abs=1.0)
    assert any("150 px from the expected position" in w for w in result.warnings)
    assert result.fwhm == pytest.approx(FWHM, rel=0.1)
    # Flux of the 0th order (15 % of the star) within 3 %.
    assert result.flux == pytest.approx(truth["orders"][0]["flux_e"], rel=0.03)
    # Photon-limited: the error is a few of the fit's own uncertainties (~0.004 px).
    assert 0 < result.x_err < 0.05 and 0 < result.y_err < 0.05
    assert _error(result, truth) < 5.0 * math.hypot(result.x_err, result.y_err)


def test_explicit_prior_150px_off(holo):
    exposure, truth, _ = holo
    prior = (truth["x0"] - 120.0, truth["y0"] + 90.0)
    result = find_zeroth_order(exposure, prior=prior)
    assert _error(result, truth) < 0.1
    assert result.distance_to_prior == pytest.approx(150.0, abs=0.5)


def test_ronchi170_centroid(ronchi):
    exposure, truth = ronchi
    result = find_zeroth_order(exposure)
    assert _error(result, truth) < 0.1
    assert result.warnings == ()


def test_saturated_zeroth_order(saturated):
    """Saturated, bled core: centred from the wings within 0.1 px, with the SAT plane and
    (ISR without the saturation step) from the ``saturation_e`` level alone."""
    raw, truth = saturated
    for steps in (("overscan", "saturation", "gain"), ("overscan", "gain")):
        exposure = _isr(raw, steps)
        result = find_zeroth_order(exposure)
        assert result.saturated, steps
        assert result.method == "moffat_fit_masked_core", steps
        assert _error(result, truth) < 0.1, steps
        assert result.flux == pytest.approx(truth["orders"][0]["flux_e"], rel=0.05), steps


def test_brighter_second_star_600px_away(two_stars):
    exposure, truth = two_stars
    second = truth["second_star"]
    assert math.hypot(second["x0"] - truth["x0"], second["y0"] - truth["y0"]) == pytest.approx(
        600.0, abs=1.0)
    result = find_zeroth_order(exposure)
    assert _error(result, truth) < 0.1


def test_whole_frame_fallback(holo):
    """A prior with nothing compact near it: the brightest compact source of the frame (the
    zeroth order, not its spectrum) is taken, with a warning."""
    exposure, truth, _ = holo
    result = find_zeroth_order(exposure, prior=(600.0, 1500.0))
    assert result.search == "whole_frame"
    assert _error(result, truth) < 0.1
    assert any("whole frame" in w for w in result.warnings)


def test_no_star_raises_naming_the_exposure():
    """Sky, noise, hot pixels and cosmic rays only (built directly: ISR adds nothing)."""
    rng = np.random.default_rng(7)
    image = np.full(SHAPE, SKY_E, dtype=np.float32)
    hot = rng.choice(image.size, 200, replace=False)
    image.ravel()[hot] += rng.uniform(100.0, 3000.0, hot.size).astype(np.float32)
    deposits, _ = cosmic_rays(SHAPE, 200, rng)
    image = rng.poisson(image).astype(np.float32) + deposits
    image += rng.normal(0.0, 8.5, SHAPE).astype(np.float32)
    exposure = Exposure.from_image(image, _header(105, "holo4_003"))
    with pytest.raises(BadInputError, match=r"AT_O_20240624_000105: no star found near the "
                                            r"expected zeroth-order position \(1750, 3699\)"):
        find_zeroth_order(exposure)
    with pytest.raises(BadInputError, match=r"^night/AT_O_20240624_000105.fits: no star"):
        find_zeroth_order(exposure, source="night/AT_O_20240624_000105.fits")


# --------------------------------------------------------------------------- scoring rule


def _scene(stars: list[tuple[float, float, float]], seed: int) -> Exposure:
    """Small noisy image of round stars ``(x, y, flux)`` (no header: prior passed in)."""
    rng = np.random.default_rng(seed)
    x, y, flux = (np.array(v) for v in zip(*stars, strict=True))
    image, _ = render_stars((1400, 1400), x, y, flux, fwhm=FWHM)
    image = rng.poisson(image + SKY_E).astype(np.float32) - np.float32(SKY_E)
    return Exposure.from_image(image)


@pytest.mark.parametrize(
    ("d_target", "d_star", "ratio"),
    [(50.0, 300.0, 2.0), (50.0, 350.0, 6.0), (0.0, 450.0, 1000.0)],
)
def test_score_rule(d_target, d_star, ratio):
    """flux · exp(-d²/2σ²) decides inside the search radius; outside it never wins."""
    cfg = ZerothOrderConfig()
    prior = (700.0, 700.0)
    target = (prior[0] + d_target, prior[1], 2.0e6)
    star = (prior[0] - d_star, prior[1] + 3.0, 2.0e6 * ratio)
    result = find_zeroth_order(_scene([target, star], seed=int(ratio)), cfg, prior=prior)
    sigma = cfg.prior_sigma_px
    star_wins = (d_star <= cfg.search_radius_px
                 and ratio * math.exp(-d_star**2 / (2 * sigma**2))
                 > math.exp(-d_target**2 / (2 * sigma**2)))
    winner = star if star_wins else target
    assert math.hypot(result.x - winner[0], result.y - winner[1]) < 0.1


# --------------------------------------------------------------------------- prior, output


def test_prior_binning_and_pointing_offset():
    info = translate_header(_header(106, "holo4_003"))
    assert zeroth_order_prior(info, CAMERA, PROFILE) == pytest.approx(NOMINAL)
    binned = replace(info, binning=(2, 2))
    assert zeroth_order_prior(binned, CAMERA, PROFILE) == pytest.approx(
        ((NOMINAL[0] + 0.5) / 2 - 0.5, (NOMINAL[1] + 0.5) / 2 - 0.5))
    # Target 10" North of the pointing, position angle 0 (+y North): 105 px up.
    pointed = replace(info, ra=150.0, dec=-30.0, rotation_angle=0.0)
    x, y = zeroth_order_prior(pointed, CAMERA, PROFILE, target_radec=(150.0, -30.0 + 10 / 3600))
    assert (x, y) == pytest.approx((NOMINAL[0], NOMINAL[1] + 10 / 0.0952))
    # A 0/0 placeholder pointing (some real headers) leaves the nominal position.
    unpointed = replace(info, ra=0.0, dec=0.0)
    assert zeroth_order_prior(unpointed, CAMERA, PROFILE, target_radec=(150.0, -30.0)) == (
        pytest.approx(NOMINAL))
    empty = replace(info, disperser="empty_1")
    assert zeroth_order_prior(empty, CAMERA, PROFILE) == pytest.approx(
        PROFILE.disperser_spec("empty").nominal_zeroth_order)


def test_write_centroid(holo, tmp_path):
    exposure, _, _ = holo
    result = find_zeroth_order(exposure, prior=(NOMINAL[0] + 106, NOMINAL[1] - 106))
    path = exposure_file(tmp_path, "AT_O_20240624_000101", "centroid")
    assert path.name == "AT_O_20240624_000101_centroid.json"
    path = write_centroid(result, path,
                          provenance_cards("zeroth_order", ["AT_O_20240624_000101.fits"],
                                           ZerothOrderConfig()))
    record = json.loads(path.read_text())
    assert record["centroid"] == [result.x, result.y]
    assert record["astrometricMatch"] is False
    assert record["x_err"] == result.x_err and record["method"] == "moffat_fit"
    assert record["provenance"]["ATMSTAGE"] == "zeroth_order"
    assert json.loads(record["provenance"]["HISTORY"])["search_radius_px"] == 400.0
    assert not list(tmp_path.glob(".*.tmp"))


# --------------------------------------------------------------------------- simulator


def test_grating_equation_round_trip_and_holo_span():
    lam = np.linspace(350.0, 1100.0, 76)
    d2ccd = PROFILE.d2ccd_mm("holo4_003", 68.0)
    assert d2ccd == pytest.approx(187.0)
    for order in (1, 2, -1):
        u = dispersion_offset_px(lam, order, 150.0, d2ccd, theta0=1e-3)
        back = wavelength_from_offset_px(u, order, 150.0, d2ccd, theta0=1e-3)
        np.testing.assert_allclose(back, lam, atol=1e-9)
    # DESIGN.md: the holo4_003 first order spans ~1100-2900 px for 400-1000 nm at D ~ 187 mm.
    u400, u1000 = dispersion_offset_px([400.0, 1000.0], 1, 150.0, d2ccd)
    assert 1050 < u400 < 1200
    assert 2750 < u1000 < 2950
    with pytest.raises(ValueError):
        wavelength_from_offset_px(10.0, 0, 150.0, d2ccd)


def test_rendered_trace_follows_the_truth(holo):
    """The noiseless first order sits where the truth mapping says; flux is conserved."""
    _, truth, signal = holo
    on_chip = sum(o["flux_on_chip_e"] for o in truth["orders"].values())
    assert float(signal.sum(dtype=np.float64)) == pytest.approx(on_chip, rel=1e-3)
    first = truth["orders"][1]
    assert first["fraction"] == 0.55
    for lam in (500.0, 700.0, 900.0):
        i = first["wavelength_nm"].index(lam)
        row = round(first["y"][i])
        cols = np.arange(round(first["x"][i]) - 40, round(first["x"][i]) + 41)
        profile = signal[row, cols]
        x_trace = float((profile * cols).sum() / profile.sum())
        assert x_trace == pytest.approx(first["x"][i] + (row - first["y"][i]) * math.tan(
            math.radians(PROFILE.disperser_spec("holo4_003").tilt_deg)) * -1, abs=0.2)
    # The first order runs down (-y) from the zeroth order, 400-1000 nm over ~1100-2900 px.
    i400, i1000 = first["wavelength_nm"].index(400.0), first["wavelength_nm"].index(1000.0)
    assert truth["y0"] - first["y"][i400] == pytest.approx(1120, abs=60)
    assert truth["y0"] - first["y"][i1000] == pytest.approx(2820, abs=80)


# --------------------------------------------------------------------------- refraction

#: A crop of an unbinned LATISS frame around the zeroth order (the first order runs off its
#: bottom edge): what the finder looks at, without simulating 4k × 4k.
ADR_SHAPE = (1200, 1000)
ADR_X0, ADR_Y0 = 500.3, 1000.6


def _smeared_zeroth_order(zenith_deg: float, seeing_arcsec: float, exptime_s: float
                          ) -> tuple[Exposure, TraceRefraction, tuple[float, float]]:
    """HD142331 through holo4_003 at airmass 2 with ADR (743 hPa, 10 °C, 30 %), orders 0 and
    1, unbinned, sky + Poisson + read noise; the truth is the flux centroid of the noiseless
    zeroth order (the position the trace's ADR refers to)."""
    model = DispersedSpectrumModel(target="HD142331", disperser="holo4_003",
                                   exptime_s=exptime_s, airmass=2.0, pressure_hpa=743.0,
                                   temperature_c=10.0, relative_humidity=30.0, adr=True,
                                   adr_zenith_angle_deg=zenith_deg)
    model = replace(model, adr_reference_nm=adr_reference_of_zeroth_order(model))
    fwhm = seeing_arcsec / PROFILE.plate_scale_arcsec * 2.0**0.6
    signal, truth = render_dispersed_exposure(ADR_SHAPE, ADR_X0, ADR_Y0, fwhm, 68.6,
                                              np.random.default_rng(1), model,
                                              config=DispersedSceneConfig(orders=(0, 1)))
    assert set(truth["orders"]) == {0, 1}
    zeroth, _ = render_dispersed_exposure(ADR_SHAPE, ADR_X0, ADR_Y0, fwhm, 68.6,
                                          np.random.default_rng(1), model,
                                          config=DispersedSceneConfig(orders=(0,)))
    yy, xx = np.mgrid[:ADR_SHAPE[0], :ADR_SHAPE[1]]
    w = np.where(np.hypot(xx - ADR_X0, yy - ADR_Y0) < 150.0, zeroth, 0.0)
    centroid = (float((w * xx).sum() / w.sum()), float((w * yy).sum() / w.sum()))
    sky = 8.0 * exptime_s
    rng = np.random.default_rng(7)
    image = rng.poisson(signal + sky).astype(np.float32)
    image += rng.normal(0.0, 9.0, ADR_SHAPE).astype(np.float32)
    exposure = Exposure.from_image(image, metadata=fits.Header({"OBSID": "AT_O_20261123_000002"}))
    exposure.variance[:] = signal + sky + 81.0
    refraction = TraceRefraction(airmass=2.0, pressure_hpa=743.0, temperature_c=10.0,
                                 relative_humidity=30.0, zenith_angle_deg=zenith_deg,
                                 plate_scale_arcsec=PROFILE.plate_scale_arcsec,
                                 reference_nm=600.0)
    return exposure, refraction, centroid


@pytest.mark.parametrize(("zenith_deg", "seeing", "exptime"), [(150.0, 0.45, 4.0),
                                                               (240.0, 0.75, 12.0)])
def test_refraction_smeared_zeroth_order(zenith_deg, seeing, exptime):
    """Airmass 2, unbinned: the zeroth order is smeared ~3″ towards the zenith (blue light).
    Told the refraction, the finder measures its flux centroid within 0.05 px of the truth.
    Without it (measured when this was written): at 0.45″ seeing the smeared star
    (elongation 1.7) is rejected and nothing is found; at 0.75″ the Moffat peak lands
    0.9 px from the centroid (0.88–0.93 px over five zenith directions)."""
    exposure, refraction, (cx, cy) = _smeared_zeroth_order(zenith_deg, seeing, exptime)
    prior = (ADR_X0 + 30.0, ADR_Y0 - 20.0)
    found = find_zeroth_order(exposure, ZerothOrderConfig(), prior, refraction=refraction)
    distance = math.hypot(found.x - cx, found.y - cy)
    print(f"\nzenith {zenith_deg:.0f} deg, {seeing}\" seeing: flux centroid found "
          f"{distance:.3f} px from the truth ({found.method}, ± {found.x_err:.3f}, "
          f"{found.y_err:.3f} px)")
    assert found.method == "flux_centroid" and found.search == "near_prior"
    assert distance <= 0.05
    assert 0.0 < found.x_err < 0.05 and 0.0 < found.y_err < 0.05
    if seeing < 0.5:
        with pytest.raises(BadInputError, match="no star found"):
            find_zeroth_order(exposure, ZerothOrderConfig(), prior)
    else:
        peak = find_zeroth_order(exposure, ZerothOrderConfig(), prior)
        assert peak.method == "moffat_fit" and math.hypot(peak.x - cx, peak.y - cy) > 0.5
