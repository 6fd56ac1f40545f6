"""Dispersers and instrument profiles (atmospec.spectro.dispersers / .instrument)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from atmospec.camera.description import load_camera
from atmospec.camera.spectrograph import load_instrument
from atmospec.errors import BadInputError
from atmospec.spectro.dispersers import (
    grating_offset_px,
    grating_wavelength_nm,
    load_disperser,
)

CTIO_SPECTRUM = Path("/work/shared/data/spectractor_ctio/"
                     "reduc_20170530_134_spectrum_v2.4_selfcontained.fits")
ALL = [("latiss", "holo4_003"), ("latiss", "ronchi170lpmm"), ("latiss", "ronchi90lpmm"),
       ("ctio", "Thor300"), ("ctio", "HoloAmAg"), ("ctio", "HoloPhAg")]


def test_holo4_003_first_order_span():
    d = load_disperser("holo4_003")
    latiss = load_instrument("latiss")
    d2ccd = d.d2ccd_mm(68.0)  # 115 + 68 + 4 mm window = 187 mm (DESIGN.md)
    assert d2ccd == pytest.approx(187.0)
    u = d.offset_px([400.0, 1000.0], 1, d2ccd, latiss.pixel_size_mm())
    assert u[0] == pytest.approx(1125.0, abs=5.0)  # 187 mm · tan(asin(0.06)) / 10 µm
    assert u[1] == pytest.approx(2837.0, abs=5.0)
    assert 1050 < u[0] < 1200 and 2750 < u[1] < 2950
    assert d.offset_px(700.0, 0, d2ccd, 0.01) == 0.0


@pytest.mark.parametrize("order", [1, 2, 3, -1])
def test_round_trip(order):
    d = load_disperser("holo4_003")
    lam = np.linspace(350.0, 1100.0 / abs(order), 200)
    for theta0 in (0.0, 2e-3, -3e-3):
        u = d.offset_px(lam, order, 187.1, 0.01, theta0)
        assert np.all(np.isfinite(u))
        back = d.wavelength_nm(u, order, 187.1, 0.01, theta0)
        np.testing.assert_allclose(back, lam, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="zeroth order"):
        d.wavelength_nm(10.0, 0, 187.1, 0.01)


def test_higher_orders_are_multiples_of_first():
    n, D, pix = 150.0, 187.1, 0.01
    lam = np.array([400.0, 500.0, 600.0])
    for m in (2, 3):
        um = grating_offset_px(lam, m, n, D, pix)
        u1 = grating_offset_px(m * lam, 1, n, D, pix)
        # Exactly: order m of λ is order 1 of mλ (the law depends on m·λ only).
        np.testing.assert_allclose(um, u1, rtol=1e-14)
        # Small angles: u ≈ D m N λ / pixel; tan(asin x) = x (1 + x²/2 + 3x⁴/8 ...).
        small = D * m * n * lam * 1e-6 / pix
        x = m * n * lam * 1e-6
        np.testing.assert_allclose(um / small, 1.0 + 0.5 * x**2 + 0.375 * x**4, rtol=2e-4)
        assert np.all(um / small - 1.0 > 0.4 * x**2)
    # Orders beyond |sin θ| = 1 do not exist.
    assert np.isnan(grating_offset_px(1000.0, 7, 150.0, D, pix))
    assert grating_wavelength_nm(1125.0, 1, n, D, pix) == pytest.approx(400.0, abs=0.3)


def test_sim_helpers_delegate():
    from atmospec.sim.dispersed import dispersion_offset_px, wavelength_from_offset_px
    lam = np.linspace(400, 1000, 7)
    np.testing.assert_array_equal(dispersion_offset_px(lam, 2, 150.0, 187.0, theta0=1e-3),
                                  grating_offset_px(lam, 2, 150.0, 187.0, 0.010, 1e-3))
    assert wavelength_from_offset_px(2000.0, 1, 150.0, 187.0) == pytest.approx(
        float(grating_wavelength_nm(2000.0, 1, 150.0, 187.0, 0.010)), rel=1e-15)


def test_agrees_with_instrument_profile():
    # The profile keeps a constant tilt per disperser for the simulator: it must agree with
    # the disperser's tables at the nominal position, as the nominal N with the groove map.
    profile = load_instrument("latiss")
    for name in profile.dispersers:
        d = load_disperser(name)
        spec = profile.disperser_spec(name)
        x0, y0 = spec.nominal_zeroth_order
        assert float(d.lines_per_mm_at(x0, y0)) == pytest.approx(d.lines_per_mm, abs=0.5)
        assert float(d.tilt_deg_at(x0, y0)) == pytest.approx(spec.tilt_deg, abs=0.01)
        for linspos in (None, 68.0):
            assert d.d2ccd_mm(linspos) == pytest.approx(profile.d2ccd_mm(name, linspos))


def test_latiss_frame_and_rotation_map():
    d = load_disperser("holo4_003")
    # Spectractor frame (x_S, y_S) = (3999 - y, 4071 - x); round trip.
    xs, ys = d.to_table_frame(1750.0, 3699.0)
    assert (float(xs), float(ys)) == (300.0, 2321.0)
    assert tuple(map(float, d.from_table_frame(xs, ys))) == (1750.0, 3699.0)
    # At the hologram centre (400, 2750) the map lies between its neighbours (400, 2400)
    # -0.2572° and (400, 2800) -0.2065°, close to the linear value.
    cx, cy = d.center
    assert (cx, cy) == (400.0, 2750.0)
    at_center = float(d.tilt_map(cx, cy))
    linear = -0.25719371726406187 + (2750 - 2400) / 400 * (-0.2064646058111586
                                                            + 0.25719371726406187)
    assert at_center == pytest.approx(linear, abs=0.01)
    assert -0.2572 < at_center < -0.2065
    assert d.tilt_deg == pytest.approx(at_center)
    # In the assembled frame the angle changes sign.
    x, y = d.from_table_frame(cx, cy)
    assert float(d.tilt_deg_at(x, y)) == pytest.approx(-at_center, abs=1e-9)
    # Measured points are reproduced exactly; binned coordinates map to the same place.
    m = d.tilt_map
    np.testing.assert_allclose(m(m.x, m.y), m.values, atol=1e-9)
    assert float(d.tilt_deg_at(875.0, 1849.5, binning=2)) == pytest.approx(
        float(d.tilt_deg_at(1750.5, 3699.5)), abs=1e-12)


@pytest.mark.parametrize(("instrument", "name"), ALL)
def test_efficiencies_positive_finite(instrument, name):
    d = load_disperser(name, instrument)
    lam = np.linspace(350.0, 1100.0, 301)
    for order in (1, 2, 3):
        eff = d.order_efficiency(order, lam)
        assert np.all(np.isfinite(eff))
        if order < 3 or d.ratio_3over2_table is not None:
            assert np.all(eff > 0), (name, order)
    for f in (d.transmission, d.ratio_order_2over1):
        v = f(lam)
        assert np.all(np.isfinite(v)) and np.all(v > 0)
    assert np.all(d.transmission(lam) <= 1.0)


def test_tabulated_values():
    holo = load_disperser("holo4_003")
    # transmission.txt row 300 nm: 7.788978e-02; ratio tables row 300 nm.
    assert float(holo.transmission(300.0)) == pytest.approx(7.788978094581229528e-02)
    assert float(holo.ratio_order_2over1(300.0)) == pytest.approx(1.519544011494232405e-01)
    assert float(holo.ratio_order_3over2(300.0)) == pytest.approx(7.961299851462676214e-02)
    # No table: the instrument default (auxtel.ini GRATING_ORDER_2OVER1) and no third order.
    ronchi = load_disperser("ronchi170lpmm")
    assert float(ronchi.ratio_order_2over1(600.0)) == 0.1
    assert float(ronchi.ratio_order_3over2(600.0)) == 0.0
    assert float(ronchi.transmission(600.0)) == pytest.approx(0.1)
    assert load_disperser("Thor300", "ctio").lines_per_mm == pytest.approx(299.5116576736)
    with pytest.raises(ValueError):
        holo.order_efficiency(4, 500.0)


def test_unknown_disperser():
    with pytest.raises(BadInputError, match=r"unknown disperser .*known: holo4_003, "
                                            r"ronchi170lpmm, ronchi90lpmm"):
        load_disperser("holo9_999")
    with pytest.raises(BadInputError, match="known: Thor300, HoloAmAg, HoloPhAg"):
        load_disperser("holo4_003", "ctio")
    with pytest.raises(BadInputError, match="unknown instrument"):
        load_instrument("hst")


def test_ctio_profile():
    p = load_instrument("ctio")
    assert p.pixel_size_um == 24.0
    assert p.pixel_size_mm(2) == pytest.approx(0.048)
    assert p.plate_scale_arcsec == 0.401 and p.plate_scale_at(2) == pytest.approx(0.802)
    assert p.detector_shape == (2048, 2048) and p.shape_at(2) == (1024, 1024)
    assert p.d2ccd_default_mm == 55.45 and p.d2ccd_error_mm == 0.19
    assert load_disperser("HoloAmAg", "ctio").d2ccd_mm(12.0) == 55.45  # no stage at CTIO
    assert p.collecting_area_cm2 == 6361.0 and p.telescope_diameter_m == 0.9
    assert p.gain_e_per_adu == 3.0 and p.read_noise_e == 12.0
    assert p.filters == ("FGB37", "RG715")
    lam = np.linspace(400.0, 1000.0, 61)
    assert np.all((p.throughput(lam) > 0) & (p.throughput(lam) < 1))
    assert float(p.filter_transmission("RG715", 900.0)) > 0.8
    assert float(p.filter_transmission("RG715", 600.0)) < 0.01
    np.testing.assert_array_equal(p.filter_transmission("empty", lam), 1.0)
    with pytest.raises(BadInputError, match="unknown filter"):
        p.filter_transmission("SDSSr", 500.0)
    with pytest.raises(ValueError):
        p.pixel_size_mm(0)


def test_latiss_profile():
    p = load_instrument("latiss")
    cam = load_camera("latiss")
    assert p.pixel_size_um == 10.0
    assert p.pixel_size_mm() == pytest.approx(cam.pixel_size_mm)
    assert p.plate_scale_arcsec == pytest.approx(cam.plate_scale)
    assert p.detector_shape == (4000, 4072)
    assert p.d2ccd_mm("holo4_003", 68.0) == 187.0 and p.d2ccd_mm("ronchi170lpmm", 68.0) == 183.0
    assert p.d2ccd_mm("holo4_003", None) == 187.1
    lam = np.linspace(400.0, 1000.0, 61)
    assert np.all(np.isfinite(p.throughput(lam))) and p.throughput(600.0) > 0.1
    assert 0.8 < float(p.filter_transmission("BG40", 450.0)) <= 1.0
    assert float(p.filter_transmission("BG40", 1000.0)) < 0.05
    # Binning scales distances: 1 mm is 100 unbinned or 50 binned-2 pixels.
    assert float(p.to_pixels(1.0)) == pytest.approx(100.0)
    assert float(p.to_pixels(1.0, binning=2)) == pytest.approx(50.0)


def test_profile_holds_each_spectrograph_fact():
    latiss, ctio = load_instrument("latiss"), load_instrument("ctio")
    assert latiss.standard_pressure_hpa == 743.0 and ctio.standard_pressure_hpa == 784.0
    # holo4_003's 4 mm window is its slot's offset, the one term of the law that differs.
    assert latiss.disperser_spec("holo4_003").distance_offset_mm == 4.0
    assert latiss.d2ccd_mm("holo4_003", 68.0) - latiss.d2ccd_mm("ronchi90lpmm", 68.0) == 4.0
    assert tuple(latiss.dispersers) == ("holo4_003", "ronchi170lpmm", "ronchi90lpmm")
    # Empty slots share one description; the +1 order runs along -y, turned by the tilt.
    assert latiss.disperser_spec("empty_1") is latiss.disperser_spec("empty")
    assert latiss.disperser_spec("empty_2").order_fraction(0) == 1.0
    dx, dy = latiss.disperser_spec("holo4_003").direction
    assert dx == pytest.approx(math.sin(math.radians(0.26))) and dy < -0.9999
    with pytest.raises(KeyError, match="unknown disperser"):
        latiss.disperser_spec("holo9_999")
    # CTIO: a fixed distance, no sweet spot, direction +x; a fixed sky orientation (North
    # towards -y, East towards -x: Spectractor's ctio.ini and the image's WCS).
    holo = ctio.disperser_spec("HoloAmAg")
    assert holo.nominal_zeroth_order is None
    assert ctio.sky_parity == -1 and ctio.rotation_angle(None) == 180.0
    east, north = ctio.sky_to_image(1.0, 0.0, 180.0), ctio.sky_to_image(0.0, 1.0, 180.0)
    assert np.allclose(east, (-1.0, 0.0)) and np.allclose(north, (0.0, -1.0))
    assert holo.dispersion_direction == (1.0, 0.0) and ctio.d2ccd_mm("HoloAmAg", 12.0) == 55.45


def test_d2ccd_from_observation_info():
    class Info:  # the one field of ObservationInfo that d2ccd_mm reads
        linspos = 67.5
    assert load_disperser("holo4_003").d2ccd_mm(Info()) == pytest.approx(186.5)


@pytest.mark.skipif(not CTIO_SPECTRUM.exists(), reason="shared CTIO spectrum not available")
def test_ctio_spectractor_spectrum():
    from astropy.io import fits
    with fits.open(CTIO_SPECTRUM) as hdul:
        header = hdul[0].header
        lam_spectractor = np.array(hdul[0].data[0], dtype=np.float64)
    d = load_disperser(header["GRATING"], "ctio")
    p = load_instrument("ctio")
    rebin = int(header["REBIN"])
    # D2CCD fitted by Spectractor is within 1.5 % (5 σ of ctio.ini's 0.19 mm) of the profile.
    assert header["D2CCD"] == pytest.approx(d.d2ccd_mm(), abs=5 * p.d2ccd_error_mm)
    # The rotation-angle map at the target reproduces Spectractor's THETAINT (interpolated
    # from the disperser scan) to 0.01° (Spectractor's v2.4 interpolant differed slightly).
    x0, y0 = header["TARGETX"], header["TARGETY"]  # 2×2-rebinned detector frame
    assert float(d.tilt_deg_at(x0, y0, binning=rebin)) == pytest.approx(header["THETAINT"],
                                                                        abs=0.01)
    n_at_target = float(d.lines_per_mm_at(x0, y0, binning=rebin))
    assert 340.0 < n_at_target < 352.0
    # Dispersion scale: Spectractor's wavelengths of the cutout's columns (u = column − S_X0
    # rebinned pixels from the zeroth order) follow our law with N at the target and the
    # header D2CCD to 3.5 nm (0.3 %) from 343 to 1082 nm, with no fitting.
    pix = p.pixel_size_mm(rebin)
    theta0 = math.radians((x0 - p.shape_at(rebin)[1] / 2) * p.plate_scale_at(rebin) / 3600)
    u = np.arange(lam_spectractor.size) - header["S_X0"] + header["PIXSHIFT"]
    lam = d.wavelength_nm(u, 1, header["D2CCD"], pix, theta0, at=(x0, y0), binning=rebin)
    assert np.max(np.abs(lam - lam_spectractor)) < 3.5
    # The local dispersion (nm per pixel) agrees to 2 % everywhere, 0.5 % in the median.
    ratio = np.gradient(lam) / np.gradient(lam_spectractor)
    assert np.all(np.abs(ratio - 1.0) < 0.02)
    assert abs(np.median(ratio) - 1.0) < 5e-3
    # A 10 % wrong groove density would be off by > 30 nm: the check has teeth.
    wrong = grating_wavelength_nm(u, 1, 1.1 * n_at_target, header["D2CCD"], pix, theta0)
    assert np.max(np.abs(wrong - lam_spectractor)) > 30.0
