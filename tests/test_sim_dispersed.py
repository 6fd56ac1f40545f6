"""Physical dispersed-exposure simulator: CALSPEC SED × instrument × disperser × atmosphere.

Full-frame (4000 × 4072) holo4_003 renders of HD142331 by `render_dispersed_exposure`; the
rendered electrons are summed across the trace (image rows, since LATISS disperses along −y)
and compared with `electrons_per_nm`, the disperser tables and the atmosphere model.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from atmospec.atmosphere.transmission import AtmosphereModel
from atmospec.sim.dispersed import (
    DispersedSceneConfig,
    DispersedSpectrumModel,
    differential_refraction_arcsec,
    dispersion_offset_px,
    electrons_per_nm,
    model_transmissions,
    render_dispersed_exposure,
)
from atmospec.spectro.dispersers import load_disperser

SHAPE = (4000, 4072)
X0, Y0 = 1750.0, 3699.0
FWHM = 3.0
MODEL = DispersedSpectrumModel(target="HD142331", disperser="holo4_003", exptime_s=30.0,
                               airmass=1.2, pressure_hpa=743.0)
FINE = np.arange(350.0, 1100.0, 0.002) + 0.001  # quadrature grid for the model, nm


def _render(model: DispersedSpectrumModel = MODEL, orders: tuple[int, ...] = (1,), **kw):
    cfg = DispersedSceneConfig(orders=orders, **kw)
    return render_dispersed_exposure(SHAPE, X0, Y0, FWHM, None, np.random.default_rng(0),
                                     model, config=cfg)


def _row_of(truth: dict, wavelength_nm, order: int = 1) -> np.ndarray:
    """Row (y) where λ lands in ``order`` (the grating law the renderer uses)."""
    u = dispersion_offset_px(np.asarray(wavelength_nm, dtype=float), order,
                             truth["lines_per_mm"], truth["d2ccd_mm"], 0.010,
                             truth["theta0_rad"])
    return Y0 + u * truth["direction"][1]


def _band_e(rows: np.ndarray, y_a: float, y_b: float) -> float:
    """Rendered e⁻ between rows y_a and y_b (pixel i covers i ± 0.5; partial rows prorated)."""
    lo, hi = sorted((y_a, y_b))
    edges = np.arange(rows.size + 1) - 0.5
    overlap = np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0.0, 1.0)
    return float(np.sum(rows * overlap))


def _rendered_band(rows: np.ndarray, truth: dict, lo: float, hi: float, order: int = 1):
    return _band_e(rows, *_row_of(truth, [lo, hi], order))


def _model_band(per_nm: np.ndarray, lo: float, hi: float) -> float:
    sel = (FINE >= lo) & (FINE < hi)
    return float(per_nm[sel].sum() * 0.002)


@pytest.fixture(scope="module")
def first_order():
    image, truth = _render()
    return image.sum(axis=1, dtype=np.float64), truth


@pytest.fixture(scope="module")
def model_e():
    return electrons_per_nm(MODEL, FINE)


def test_first_order_band_flux_equals_model(first_order, model_e):
    rows, truth = first_order
    rendered = _rendered_band(rows, truth, 500.0, 510.0)
    expected = _model_band(model_e[1], 500.0, 510.0)
    print(f"500-510 nm order 1: rendered {rendered:.6g} e-, model {expected:.6g} e- "
          f"({rendered / expected - 1:+.3%})")
    assert rendered == pytest.approx(expected, rel=5e-3)
    # Per-order truth on the 1 nm grid matches the model.
    spec = truth["spectrum"]
    i = spec["wavelength_nm"].index(505.0)
    e505 = electrons_per_nm(MODEL, np.array([505.0]))[1][0]
    assert spec["electrons_per_nm"][1][i] == pytest.approx(e505, rel=1e-9)
    assert truth["spectrum_model"]["sed_name"] == "HD142331"
    assert truth["spectrum_model"]["pwv_mm"] == 3.0
    for key in ("x0", "y0", "disperser", "lines_per_mm", "d2ccd_mm", "theta0_rad", "direction",
                "tilt_deg", "fwhm_px", "star_flux_e", "orders", "zeroth_order_peak_e",
                "second_star"):
        assert key in truth
    assert {"fraction", "flux_e", "flux_on_chip_e", "wavelength_nm", "x", "y"} <= set(
        truth["orders"][1])


def test_photons_per_nm_is_the_product_of_its_factors():
    lam = np.array([450.0, 500.0, 800.0])
    t = model_transmissions(MODEL, lam)
    from atmospec.spectro.calspec import load_sed
    flux = load_sed("HD142331").flux_at(lam)
    photons = flux * lam / 1.98644586e-9 * t["collecting_area_cm2"]
    eff1 = load_disperser("holo4_003").order_efficiency(1, lam)
    expected = photons * t["throughput"] * t["atmosphere"] * eff1 * MODEL.exptime_s
    assert np.allclose(electrons_per_nm(MODEL, lam)[1], expected, rtol=1e-12)
    assert np.all(t["filter"] == 1.0)  # empty_1
    sdss = electrons_per_nm(replace(MODEL, filter_name="SDSSg"), lam)[1]
    assert sdss[2] < 1e-2 * expected[2]  # g filter blocks 800 nm


def test_order2_over_order1_follows_disperser_table(first_order):
    rows1, truth1 = first_order
    image2, truth2 = _render(orders=(2,))
    rows2 = image2.sum(axis=1, dtype=np.float64)
    disp = load_disperser("holo4_003")
    weights = electrons_per_nm(MODEL, FINE)[1]
    for lo in (420.0, 500.0, 580.0):
        hi = lo + 10.0
        measured = (_rendered_band(rows2, truth2, lo, hi, order=2)
                    / _rendered_band(rows1, truth1, lo, hi, order=1))
        sel = (FINE >= lo) & (FINE < hi)
        table = float(np.sum(weights[sel] * disp.ratio_order_2over1(FINE[sel]))
                      / np.sum(weights[sel]))
        print(f"order 2/1 over {lo:.0f}-{hi:.0f} nm: rendered {measured:.4f}, table {table:.4f}")
        assert measured == pytest.approx(table, rel=5e-3)


def test_o2_a_band_depth_matches_atmosphere(first_order):
    rows, truth = first_order
    lam = FINE
    t = model_transmissions(MODEL, lam)
    no_atm = electrons_per_nm(MODEL, lam)[1] / t["atmosphere"]
    band, sides = (758.0, 771.0), ((744.0, 754.0), (775.0, 785.0))

    def integral(y, lo, hi):
        return _model_band(y, lo, hi)

    s_band = integral(no_atm, *band)
    s_sides = sum(integral(no_atm, *s) for s in sides)
    st_band = integral(no_atm * t["atmosphere"], *band)
    st_sides = sum(integral(no_atm * t["atmosphere"], *s) for s in sides)
    depth_atm = 1.0 - (st_band / s_band) / (st_sides / s_sides)
    r_band = _rendered_band(rows, truth, *band)
    r_sides = sum(_rendered_band(rows, truth, *s) for s in sides)
    depth_render = 1.0 - (r_band / s_band) / (r_sides / s_sides)
    print(f"O2 A band depth 758-771 nm: rendered {depth_render:.4f}, atmosphere {depth_atm:.4f}")
    assert depth_atm > 0.1
    assert depth_render == pytest.approx(depth_atm, abs=3e-3)


@pytest.mark.parametrize("name, vacuum_nm", [("Halpha", 656.461), ("Hbeta", 486.269)])
def test_balmer_lines_at_grating_law_pixel(first_order, name, vacuum_nm):
    rows, truth = first_order
    y_line = float(_row_of(truth, vacuum_nm))
    # Linear continuum from the rows 6–15 nm either side, then the deepest row near the line.
    y_blue = _row_of(truth, [vacuum_nm - 15, vacuum_nm - 6])
    y_red = _row_of(truth, [vacuum_nm + 6, vacuum_nm + 15])
    idx = np.arange(rows.size)
    cont_rows = ((idx >= y_blue.min()) & (idx <= y_blue.max())) | (
        (idx >= y_red.min()) & (idx <= y_red.max()))
    coef = np.polyfit(idx[cont_rows], rows[cont_rows], 1)
    near = np.arange(round(y_line) - 8, round(y_line) + 9)
    norm = rows[near] / np.polyval(coef, near)
    k = int(np.argmin(norm))
    a, b, c = norm[k - 1], norm[k], norm[k + 1]
    y_min = near[k] + 0.5 * (a - c) / (a - 2 * b + c)  # parabola through the minimum
    depth = 1.0 - b
    print(f"{name}: predicted row {y_line:.2f}, rendered minimum {y_min:.2f}, depth {depth:.3f}")
    assert abs(y_min - y_line) < 1.0
    assert depth > 0.05


def test_doubling_airmass_dims_400nm_by_rayleigh_factor():
    clear = replace(MODEL, airmass=1.0, pwv_mm=0.0, ozone_du=0.0, vaod=0.0)
    rows = {}
    for x in (1.0, 2.0):
        image, truth = _render(replace(clear, airmass=x))
        rows[x] = _rendered_band(image.sum(axis=1, dtype=np.float64), truth, 395.0, 405.0)
    measured = rows[2.0] / rows[1.0]
    sel = (FINE >= 395.0) & (FINE < 405.0)
    lam = FINE[sel]
    above = electrons_per_nm(clear, lam)[1] / model_transmissions(clear, lam)["atmosphere"]
    atm = AtmosphereModel(lam)
    tau1 = atm.optical_depths(1.0, clear.pressure_hpa, 0.0, 0.0, 0.0)["rayleigh"]
    tau2 = atm.optical_depths(2.0, clear.pressure_hpa, 0.0, 0.0, 0.0)["rayleigh"]
    expected = float(np.sum(above * np.exp(-tau2)) / np.sum(above * np.exp(-tau1)))
    print(f"400 nm flux X=2 / X=1: rendered {measured:.5f}, Rayleigh factor {expected:.5f} "
          f"(tau_R(400 nm, X=1) = {np.interp(400.0, lam, tau1):.4f})")
    assert measured == pytest.approx(expected, rel=3e-3)


def test_zeroth_order_flux_equals_model():
    image, truth = _render(orders=(0,))
    expected = _model_band(electrons_per_nm(MODEL, FINE)[0], 350.0, 1100.0)
    print(f"zeroth order: rendered {image.sum(dtype=np.float64):.6g} e-, model {expected:.6g}")
    assert image.sum(dtype=np.float64) == pytest.approx(expected, rel=5e-3)
    # No zeroth-order table ships: the YAML constant (15 % for holo4_003) is the efficiency.
    assert truth["orders"][0]["fraction"] == pytest.approx(0.15, rel=1e-12)


def test_adr_moves_blue_light_towards_zenith():
    model = replace(MODEL, airmass=1.5, adr=True, adr_zenith_angle_deg=0.0)  # zenith at +x
    _, truth = _render(model)
    _, flat = _render(replace(model, adr=False))
    lam = np.asarray(truth["orders"][1]["wavelength_nm"])
    dx = np.asarray(truth["orders"][1]["x"]) - np.asarray(flat["orders"][1]["x"])
    expected = differential_refraction_arcsec(lam, model) / 0.0952
    assert np.allclose(dx, expected, atol=2e-3)
    i400 = int(np.argmin(abs(lam - 400.0)))
    assert dx[i400] > 0.0 and differential_refraction_arcsec(
        np.array([500.0]), model)[0] == 0.0


def test_full_frame_render_speed():
    cfg = DispersedSceneConfig()
    t0 = time.perf_counter()
    image, truth = render_dispersed_exposure(SHAPE, X0, Y0, 8.0, None,
                                             np.random.default_rng(1), MODEL, config=cfg)
    dt = time.perf_counter() - t0
    print(f"full-frame render, orders {sorted(truth['orders'])}: {dt:.2f} s, "
          f"{image.sum():.4g} e- on chip")
    assert set(truth["orders"]) == {0, 1, 2, 3}
