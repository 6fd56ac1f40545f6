"""Noiseless dispersed (slitless) LATISS scenes: a star's zeroth order and its spectra.

A disperser in the converging beam sends a fraction of the star's light into each
diffraction order m. Order 0 is an ordinary (if fainter) star image; order m ≠ 0 is a
spectrum whose wavelength λ lands at a distance ``u`` from the zeroth order, along the
dispersion axis, given by the grating equation as Spectractor writes it::

    sin θ − sin θ₀ = m N λ,        u · pixel / D = tan θ − tan θ₀

with N the groove density, D the disperser-CCD distance (the instrument's law,
`atmospec.camera.spectrograph.InstrumentProfile.d2ccd_mm`) and θ₀ the zeroth order's field
angle. `dispersion_offset_px` and `wavelength_from_offset_px` are that law and its inverse,
delegated to `atmospec.spectro.dispersers` (the one implementation of the law in atmospec).

Two sources of light share one renderer:

* `render_dispersed` (the simple scene used to test the zeroth-order finder and the
  extraction): a toy SED and constant order fractions, described below;
* `render_dispersed_exposure` with a `DispersedSpectrumModel`: the physical light of
  `photons_per_nm`, per order m = 0–3, ``CALSPEC F_λ · λ/hc · area · telescope×QE · filter ·
  disperser efficiency η_m(λ) · atmosphere(λ) · exptime``, from `spectractor_bridge`
  (calspec, instrument, dispersers, atmosphere). No disperser ships a zeroth-order table:
  η₀ is the ``order_fractions[0]`` constant of the instrument YAML. Optional atmospheric
  differential refraction (`differential_refraction_arcsec`, off by default) moves each
  wavelength towards the zenith.

What the simple scene draws, in the assembled (Rubin) orientation, in electrons:

* the SED: a blackbody photon spectrum (``temperature_k``) × the LATISS sensor QE × a few
  Gaussian absorption lines, normalised so that ``star_flux_e`` electrons would be
  detected over ``wavelength_range_nm`` without the disperser;
* each order m gets the constant fraction ``order_fractions[m]`` of the disperser in the
  instrument profile (``data/instruments/latiss.yaml``), its groove density N from the
  disperser's tables (`atmospec.spectro.dispersers`);
* the PSF is a Moffat (index ``beta``) of FWHM ``fwhm_px · (λ/λ_ref)^-0.2``
  (Kolmogorov seeing);
* the zeroth order is the sum of such Moffats over wavelength bins (no ADR, so it is
  symmetric and its truth centre is exact);
* a spectrum order is drawn without a loop over pixels: each wavelength sample's light is
  spread along the trace by the PSF's 1D marginal profile (binned by rows, since LATISS
  disperses along -y), then every row is spread across the trace by the same marginal
  profile centred on the trace. For a smooth continuum this equals the 2D convolution
  exactly; around a narrow absorption line the 2D PSF is approximated by the product of
  its marginals.

Nothing here adds sky, noise or detector effects: `atmospec.sim.detector.expose` does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from atmospec.atmosphere import refraction as _refraction
from atmospec.atmosphere import transmission as _atmosphere
from atmospec.camera.spectrograph import DisperserSpec, InstrumentProfile, load_instrument
from atmospec.sim.scenes import moffat_alpha, moffat_stamp, qe_curve
from atmospec.spectro.adr import TraceRefraction, zeroth_order_reference_nm
from atmospec.spectro.calspec import StellarSED, load_sed
from atmospec.spectro.dispersers import (
    grating_offset_px,
    grating_wavelength_nm,
    known_dispersers,
    load_disperser,
)
from atmospec.spectro.units import HC_ERG_NM

__all__ = [
    "DispersedSceneConfig",
    "DispersedSpectrumModel",
    "differential_refraction_arcsec",
    "dispersion_offset_px",
    "electrons_per_nm",
    "model_transmissions",
    "photons_per_nm",
    "render_dispersed",
    "render_dispersed_exposure",
    "star_flux_for_zeroth_peak",
    "stellar_sed",
    "wavelength_from_offset_px",
    "zeroth_order_field_angle",
]

log = logging.getLogger(__name__)

#: Planck's constant × speed of light / Boltzmann constant, in nm·K (hc/k = 1.4388 cm K).
_HC_OVER_K_NM_K = 1.438777e7

@dataclass(frozen=True)
class DispersedSceneConfig:
    """What a simulated dispersed scene contains and how it is drawn."""

    beta: float = 3.0
    """Moffat index of the PSF."""
    wavelength_range_nm: tuple[float, float] = (350.0, 1100.0)
    """Wavelengths drawn, nm (the atmosphere cuts below ~300 nm, the sensor above ~1100)."""
    wavelength_step_nm: float = 0.1
    """Sampling of the spectra, nm: at most ~0.6 px along a holo4_003 second order."""
    reference_wavelength_nm: float = 500.0
    """Wavelength at which ``fwhm_px`` is the PSF FWHM."""
    seeing_exponent: float = -0.2
    """FWHM ∝ λ^exponent (Kolmogorov turbulence: -1/5)."""
    temperature_k: float = 9500.0
    """Blackbody temperature of the SED (an A0 star, like most CALSPEC standards)."""
    absorption_lines: tuple[tuple[float, float, float], ...] = (
        (434.05, 1.5, 0.35), (486.13, 2.0, 0.45), (656.28, 2.0, 0.45), (760.3, 1.5, 0.6),
    )
    """``(centre nm, Gaussian sigma nm, relative depth)``: Hγ, Hβ, Hα and the telluric O₂ A
    band, enough for wavelength-calibration tests."""
    orders: tuple[int, ...] | None = None
    """Orders drawn; None: every order with a non-zero fraction in the instrument profile."""
    n_zeroth_bins: int = 8
    """Wavelength bins whose Moffats (each its own seeing) sum to the zeroth order."""
    stamp_floor_e: float = 0.05
    """Zeroth-order stamps extend until the profile falls below this, e⁻ per pixel."""
    max_stamp_half_px: int = 400
    """Largest zeroth-order stamp half-size, pixels."""
    second_star_flux_ratio: float | None = None
    """Flux of a second star relative to the target (its zeroth order and spectra are drawn
    too); None: no second star."""
    second_star_offset_px: tuple[float, float] | None = None
    """``(dx, dy)`` of the second star from the target, pixels; None: a random direction at
    ``second_star_distance_px`` drawn from ``rng``."""
    second_star_distance_px: tuple[float, float] = (500.0, 900.0)
    """Range of the random second star's distance from the target, pixels."""
    pixel_size_mm: float = 0.010
    """Pixel pitch, mm (LATISS ITL sensor: 10 µm)."""
    plate_scale_arcsec: float = 0.0952
    """Plate scale, arcsec per pixel, for the zeroth order's field angle θ₀."""
    instrument: str = "latiss"
    """Instrument whose profile (`atmospec.camera.spectrograph`) gives the dispersers."""
    truth_step_nm: float = 10.0
    """Spacing of the wavelength → position samples recorded in the truth."""
    truth_spectrum_step_nm: float = 1.0
    """Spacing of the per-order e⁻/nm and atmosphere samples recorded in the truth of
    `render_dispersed_exposure` (the model evaluated there, not binned)."""


# --------------------------------------------------------------------------- dispersion law


def dispersion_offset_px(
    wavelength_nm: np.ndarray | float,
    order: int,
    lines_per_mm: float,
    d2ccd_mm: float,
    pixel_mm: float = 0.010,
    theta0: float = 0.0,
) -> np.ndarray:
    """Distance from the zeroth order, along the dispersion axis, where λ lands in ``order``.

    ``sin θ = sin θ₀ + m N λ`` and ``u = D (tan θ − tan θ₀) / pixel`` (Spectractor's law),
    computed by `atmospec.spectro.dispersers.grating_offset_px`, the one implementation
    of the law in atmospec.

    Parameters
    ----------
    wavelength_nm : array_like
        Wavelengths, nm.
    order : int
        Diffraction order m (negative orders land on the other side of the zeroth order).
    lines_per_mm : float
        Groove density N, lines per mm.
    d2ccd_mm : float
        Disperser-CCD distance D, mm.
    pixel_mm : float
        Pixel pitch, mm.
    theta0 : float
        Field angle of the zeroth order along the dispersion axis, radians.

    Returns
    -------
    numpy.ndarray
        Offsets in pixels (NaN where ``|sin θ| > 1``: the order does not exist).
    """
    return grating_offset_px(wavelength_nm, order, lines_per_mm, d2ccd_mm, pixel_mm, theta0)


def wavelength_from_offset_px(
    offset_px: np.ndarray | float,
    order: int,
    lines_per_mm: float,
    d2ccd_mm: float,
    pixel_mm: float = 0.010,
    theta0: float = 0.0,
) -> np.ndarray:
    """Inverse of `dispersion_offset_px`: the wavelength (nm) landing at ``offset_px``
    (`atmospec.spectro.dispersers.grating_wavelength_nm`).

    Raises
    ------
    ValueError
        For order 0 or a zero groove density (no dispersion).
    """
    return grating_wavelength_nm(offset_px, order, lines_per_mm, d2ccd_mm, pixel_mm, theta0)


def zeroth_order_field_angle(
    x0: float, y0: float, shape: tuple[int, int], direction: tuple[float, float],
    plate_scale_arcsec: float = 0.0952,
) -> float:
    """θ₀: the zeroth order's offset from the detector centre along the dispersion axis,
    as an angle on the sky (radians), as Spectractor takes it."""
    ny, nx = shape
    along = (x0 - (nx - 1) / 2.0) * direction[0] + (y0 - (ny - 1) / 2.0) * direction[1]
    return math.radians(along * plate_scale_arcsec / 3600.0)


# --------------------------------------------------------------------------- SED and PSF


def stellar_sed(wavelength_nm: np.ndarray, config: DispersedSceneConfig) -> np.ndarray:
    """Detected-electron SED (arbitrary scale): blackbody photons × sensor QE × lines.

    Parameters
    ----------
    wavelength_nm : numpy.ndarray
        Wavelengths, nm.
    config : DispersedSceneConfig
        Temperature and absorption lines.

    Returns
    -------
    numpy.ndarray
        Relative electrons per nm.
    """
    lam = np.asarray(wavelength_nm, dtype=np.float64)
    # Photons per unit wavelength: B_λ / (hc/λ) ∝ λ⁻⁴ / (exp(hc/λkT) − 1).
    photons = lam**-4 / np.expm1(_HC_OVER_K_NM_K / (lam * config.temperature_k))
    qe_wl, qe = qe_curve()
    sed = photons * np.interp(lam, qe_wl, qe, left=0.0, right=0.0)
    for centre, sigma, depth in config.absorption_lines:
        sed *= 1.0 - depth * np.exp(-0.5 * ((lam - centre) / sigma) ** 2)
    return sed


def _seeing(wavelength_nm: np.ndarray, fwhm_px: float, config: DispersedSceneConfig):
    return fwhm_px * (np.asarray(wavelength_nm) / config.reference_wavelength_nm) ** (
        config.seeing_exponent)


def _marginal(offset: np.ndarray, fwhm: np.ndarray, beta: float) -> np.ndarray:
    """1D marginal of a 2D Moffat (integrated over the other axis), unnormalised:
    ``(1 + u²/α²)^(1/2 − β)``."""
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    return (1.0 + (offset / alpha) ** 2) ** (0.5 - beta)


# --------------------------------------------------------------------------- physical light


@dataclass(frozen=True)
class DispersedSpectrumModel:
    """The light of one dispersed exposure: which star, through which atmosphere and optics.

    `photons_per_nm` turns it into detected electrons per second and nm in each order;
    `render_dispersed_exposure` draws them.
    """

    target: str | StellarSED = "HD142331"
    """CALSPEC standard (any name `atmospec.spectro.calspec.load_sed` accepts), SED file, or
    an SED itself (e.g. `atmospec.sim.seds.emission_line_sed`: a planetary nebula)."""
    disperser: str = "holo4_003"
    """``GRATING`` name; its order efficiencies come from `atmospec.spectro.dispersers`."""
    exptime_s: float = 30.0
    """Exposure time, s."""
    airmass: float = 1.0
    """Airmass of the line of sight (≥ 1)."""
    pressure_hpa: float | None = None
    """Surface pressure, hPa; None: the instrument's standard pressure
    (`atmospec.camera.spectrograph.InstrumentProfile.standard_pressure_hpa`)."""
    pwv_mm: float = 3.0
    """Precipitable water vapour, mm (libRadtran scale)."""
    ozone_du: float = 300.0
    """Ozone column, Dobson units."""
    vaod: float = 0.03
    """Vertical aerosol optical depth at 500 nm."""
    angstrom: float | None = 1.3
    """Ångström exponent of the aerosols (None: libRadtran's default aerosol shape)."""
    filter_name: str = "empty_1"
    """``FILTER`` name: a filter the instrument has a curve for, or an empty slot (``empty``,
    ``empty_*``, ``none``, ``""``: transmission 1). Other names raise `BadInputError`."""
    instrument: str = "latiss"
    """Instrument: collecting area, throughput, filters, dispersers."""
    orders: tuple[int, ...] = (0, 1, 2, 3)
    """Diffraction orders modelled."""
    zeroth_order_efficiency: float | None = None
    """Fraction of the light in order 0. None: the ``order_fractions[0]`` constant of
    ``data/<instrument>_spectroscopy.yaml`` (15 % for holo4_003, 25 % for the Ronchi
    gratings): no disperser ships a measured zeroth-order table."""
    adr: bool = False
    """Draw atmospheric differential refraction (`differential_refraction_arcsec`)."""
    adr_reference_nm: float = 500.0
    """Wavelength whose position ADR leaves unchanged (the zeroth order's nominal centre)."""
    adr_zenith_angle_deg: float = 90.0
    """Direction of the zenith in the image, degrees counter-clockwise from +x (ADR pushes
    blue light towards it)."""
    temperature_c: float = 10.0
    """Air temperature, °C (ADR only)."""
    relative_humidity: float = 0.0
    """Relative humidity, % (ADR only: water vapour lowers the refractivity slightly)."""
    atmosphere_table: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    """``(wavelength nm, transmission)`` used instead of the atmosphere model, e.g. a
    libRadtran output (linear interpolation, end values held outside the table; ``airmass``,
    ``pressure_hpa``, ``pwv_mm``, ``ozone_du``, ``vaod`` and ``angstrom`` then do not shape
    the light, though ``airmass`` and ``pressure_hpa`` still drive ADR); None: the model
    `atmospec.atmosphere.transmission.transmission`."""

    def __post_init__(self) -> None:
        if self.pressure_hpa is None:
            object.__setattr__(self, "pressure_hpa",
                               load_instrument(self.instrument).standard_pressure_hpa)


def _atmosphere_at(model: DispersedSpectrumModel, lam: np.ndarray) -> np.ndarray:
    """T_atm at ``lam``: ``model.atmosphere_table`` interpolated, else the atmosphere model."""
    if model.atmosphere_table is not None:
        wl, tr = (np.asarray(a, dtype=np.float64) for a in model.atmosphere_table)
        order = np.argsort(wl)
        return np.interp(lam, wl[order], tr[order])
    return np.asarray(_atmosphere.transmission(lam, model.airmass, model.pressure_hpa,
                                               model.pwv_mm, model.ozone_du, model.vaod,
                                               model.angstrom), dtype=np.float64)


def _disperser_efficiency(model: DispersedSpectrumModel, order: int, lam: np.ndarray,
                          profile: InstrumentProfile | None = None) -> np.ndarray:
    """Fraction of the light of wavelength λ sent into ``order`` by the disperser."""
    profile = profile or load_instrument(model.instrument)
    spec = profile.disperser_spec(model.disperser)
    if order == 0:
        frac = (model.zeroth_order_efficiency if model.zeroth_order_efficiency is not None
                else spec.order_fraction(0))
        return np.full(lam.shape, float(frac))
    if model.disperser not in known_dispersers(model.instrument):  # the empty slot
        return np.zeros(lam.shape)
    if order < 0:
        raise ValueError(f"negative orders are not tabulated (order {order})")
    return np.asarray(load_disperser(model.disperser, model.instrument)
                      .order_efficiency(order, lam), dtype=np.float64)


def model_transmissions(model: DispersedSpectrumModel, wavelength_nm: np.ndarray
                        ) -> dict[str, Any]:
    """Every factor of the detected light at ``wavelength_nm``.

    Parameters
    ----------
    model : DispersedSpectrumModel
        Star, atmosphere, instrument and disperser.
    wavelength_nm : numpy.ndarray
        Wavelengths, nm (inside 300–1100 nm, the atmosphere tables).

    Returns
    -------
    dict
        ``sed_photons`` (photons/s/cm²/nm above the atmosphere: F_λ · λ / hc, 0 outside the
        SED), ``collecting_area_cm2``, ``throughput`` (telescope × QE), ``filter``,
        ``atmosphere``, ``efficiency`` (order → disperser efficiency array) and
        ``sed_name``, ``sed_file``.
    """
    lam = np.asarray(wavelength_nm, dtype=np.float64)
    sed = model.target if isinstance(model.target, StellarSED) else load_sed(model.target)
    flux = np.nan_to_num(np.asarray(sed.flux_at(lam), dtype=np.float64), nan=0.0)
    inst = load_instrument(model.instrument)
    atm = _atmosphere_at(model, lam)
    return {
        "sed_photons": flux * lam / HC_ERG_NM,
        "collecting_area_cm2": float(inst.collecting_area_cm2),
        "throughput": np.asarray(inst.throughput(lam), dtype=np.float64),
        "filter": np.asarray(inst.filter_transmission(model.filter_name, lam), dtype=np.float64),
        "atmosphere": np.asarray(atm, dtype=np.float64),
        "efficiency": {m: _disperser_efficiency(model, m, lam, inst) for m in model.orders},
        "sed_name": sed.name,
        "sed_file": sed.source_file,
    }


def photons_per_nm(model: DispersedSpectrumModel, wavelength_nm: np.ndarray
                   ) -> dict[int, np.ndarray]:
    """Detected electrons per second and nm in each order.

    ``N_m(λ) = F_λ(λ) · λ/(hc) · A · T_tel×QE(λ) · T_filter(λ) · η_m(λ) · T_atm(λ)`` with
    F_λ the CALSPEC SED (erg/s/cm²/nm), A the collecting area, η_m the disperser's order
    efficiency (`atmospec.spectro.dispersers.Disperser.order_efficiency` for m = 1–3, the
    zeroth-order constant for m = 0) and T_atm `atmospec.atmosphere.transmission.transmission`.

    Parameters
    ----------
    model : DispersedSpectrumModel
        Star, atmosphere, instrument and disperser.
    wavelength_nm : numpy.ndarray
        Wavelengths, nm.

    Returns
    -------
    dict of int to numpy.ndarray
        Order → e⁻/s/nm at ``wavelength_nm``.
    """
    t = model_transmissions(model, wavelength_nm)
    common = (t["sed_photons"] * t["collecting_area_cm2"] * t["throughput"] * t["filter"]
              * t["atmosphere"])
    return {m: common * eff for m, eff in t["efficiency"].items()}


def electrons_per_nm(model: DispersedSpectrumModel, wavelength_nm: np.ndarray
                     ) -> dict[int, np.ndarray]:
    """`photons_per_nm` × the exposure time: e⁻/nm detected in each order."""
    return {m: v * model.exptime_s for m, v in photons_per_nm(model, wavelength_nm).items()}


def differential_refraction_arcsec(wavelength_nm: np.ndarray, model: DispersedSpectrumModel
                                   ) -> np.ndarray:
    """Atmospheric refraction at λ minus that at ``model.adr_reference_nm``, arcsec.

    The law of `atmospec.atmosphere.refraction.differential_refraction_arcsec` (Edlén's
    refractivity as Filippenko 1982 writes it, plane parallel) at the model's airmass,
    pressure, temperature and relative humidity. Positive: towards the zenith.
    """
    vapour = _refraction.water_vapour_pressure_hpa(model.temperature_c,
                                                   model.relative_humidity)
    return _refraction.differential_refraction_arcsec(
        wavelength_nm, model.adr_reference_nm, model.airmass, model.pressure_hpa,
        model.temperature_c, vapour)


def adr_reference_of_zeroth_order(model: DispersedSpectrumModel,
                                  config: DispersedSceneConfig | None = None) -> float:
    """The wavelength whose refraction is the zeroth order's flux-weighted mean, nm.

    Drawn with ``adr_reference_nm`` at this value, the zeroth order's centroid sits at the
    position given to the renderer (the same rule as the extraction's,
    `atmospec.spectro.adr.zeroth_order_reference_nm`, on the zeroth order's own light).
    """
    cfg = config or DispersedSceneConfig()
    lam, _ = _wavelength_grid(cfg)
    zeroth = electrons_per_nm(replace(model, orders=(0,)), lam)[0]
    refraction = TraceRefraction(
        airmass=model.airmass, pressure_hpa=float(model.pressure_hpa),  # type: ignore[arg-type]
        temperature_c=model.temperature_c, relative_humidity=model.relative_humidity,
        zenith_angle_deg=model.adr_zenith_angle_deg, plate_scale_arcsec=cfg.plate_scale_arcsec,
        reference_nm=model.adr_reference_nm)
    return zeroth_order_reference_nm(refraction, lam, zeroth)


# --------------------------------------------------------------------------- rendering


def star_flux_for_zeroth_peak(
    peak_e: float, fwhm_px: float, disperser: str, config: DispersedSceneConfig | None = None,
    profile: InstrumentProfile | None = None,
) -> float:
    """Star flux (``star_flux_e`` of `render_dispersed`) whose zeroth order peaks at about
    ``peak_e`` e⁻ per pixel: ask for more than the full well (~130 ke⁻) to saturate it.

    Uses the Moffat of FWHM ``fwhm_px`` (the chromatic widths make the real peak a few %
    different).
    """
    cfg = config or DispersedSceneConfig()
    spec = (profile or load_instrument(cfg.instrument)).disperser_spec(disperser)
    alpha = moffat_alpha(fwhm_px, cfg.beta)
    peak_fraction = (cfg.beta - 1.0) / (math.pi * alpha**2)
    return peak_e / (peak_fraction * spec.order_fraction(0))


def render_dispersed(
    shape: tuple[int, int],
    x0: float,
    y0: float,
    star_flux_e: float,
    fwhm_px: float,
    disperser: str,
    linspos_mm: float | None,
    rng: np.random.Generator,
    *,
    config: DispersedSceneConfig | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Noiseless image of a star seen through a disperser (plus an optional second star).

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)`` (assembled, unbinned).
    x0, y0 : float
        Zeroth-order position of the target, 0-based pixel centres.
    star_flux_e : float
        Electrons the star would give over ``config.wavelength_range_nm`` with no disperser
        (before the order fractions; light falling off the chip is lost).
    fwhm_px : float
        PSF FWHM at ``config.reference_wavelength_nm``, pixels.
    disperser : str
        ``GRATING`` name (``holo4_003``, ``ronchi170lpmm``, ``ronchi90lpmm``, ``empty_1``...).
    linspos_mm : float or None
        ``LINSPOS`` of the disperser stage, mm (None: the instrument's default distance).
    rng : numpy.random.Generator
        Draws the second star's position when it is not given.
    config : DispersedSceneConfig, optional
        SED, PSF, orders and second star.

    Returns
    -------
    signal : numpy.ndarray
        float32 image, e⁻.
    truth : dict
        ``x0``, ``y0``, ``disperser``, ``lines_per_mm``, ``d2ccd_mm``, ``theta0_rad``,
        ``direction`` (unit vector of the +1 order), ``tilt_deg``, ``fwhm_px``,
        ``star_flux_e``, ``orders`` (per order: ``fraction``, ``flux_e`` sent into it,
        ``flux_on_chip_e``, and for m ≠ 0 ``wavelength_nm``, ``x``, ``y`` samples of the
        trace), ``zeroth_order_peak_e`` (noiseless brightest pixel) and ``second_star``
        (None, or the same record for the second star).

    Raises
    ------
    KeyError
        If the disperser is not in the spectroscopy table.
    """
    cfg = config or DispersedSceneConfig()
    profile = load_instrument(cfg.instrument)
    spec = profile.disperser_spec(disperser)
    lam, _ = _wavelength_grid(cfg)
    sed = stellar_sed(lam, cfg)
    electrons = star_flux_e * sed / sed.sum()  # per wavelength sample, summing to star_flux_e
    orders = cfg.orders if cfg.orders is not None else tuple(
        m for m, f in spec.order_fractions if f > 0)
    fractions = {m: spec.order_fraction(m) for m in orders if spec.order_fraction(m) > 0}
    per_order = {m: electrons * f for m, f in fractions.items()}
    return _render_scene(shape, x0, y0, lam, per_order, fractions, float(star_flux_e), fwhm_px,
                         _Optics(spec, _groove_density(spec, cfg.instrument),
                                 profile.d2ccd_mm(disperser, linspos_mm)), rng, cfg, None)


def render_dispersed_exposure(
    shape: tuple[int, int],
    x0: float,
    y0: float,
    fwhm_px: float,
    linspos_mm: float | None,
    rng: np.random.Generator,
    model: DispersedSpectrumModel,
    *,
    config: DispersedSceneConfig | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Noiseless image of a CALSPEC star's orders with the physical light of `photons_per_nm`.

    Same drawing as `render_dispersed` (grating law, chromatic Moffat, optional second
    star), but order m of the wavelength sample λ carries
    ``electrons_per_nm(model, λ)[m] · Δλ`` electrons, and with ``model.adr`` each λ is moved
    by `differential_refraction_arcsec` towards ``model.adr_zenith_angle_deg``.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)`` (assembled, unbinned).
    x0, y0 : float
        Zeroth-order position of the target at ``model.adr_reference_nm``, 0-based pixels.
    fwhm_px : float
        PSF FWHM at ``config.reference_wavelength_nm``, pixels.
    linspos_mm : float or None
        ``LINSPOS`` of the disperser stage, mm (None: the default distance).
    rng : numpy.random.Generator
        Draws the second star's position when it is not given.
    model : DispersedSpectrumModel
        Star, atmosphere, instrument, disperser, exposure time and ADR.
    config : DispersedSceneConfig, optional
        Wavelength sampling, PSF, orders drawn (None: ``model.orders``), second star. Its
        SED fields (``temperature_k``, ``absorption_lines``) are not used.

    Returns
    -------
    signal : numpy.ndarray
        float32 image, e⁻.
    truth : dict
        The keys of `render_dispersed` (``star_flux_e``: the e⁻ the star would give without
        disperser over ``config.wavelength_range_nm``; per order ``fraction`` = its e⁻ over
        that) plus ``spectrum_model`` (the model's fields, ``sed_name``, ``sed_file``) and
        ``spectrum``: ``wavelength_nm`` (every ``config.truth_spectrum_step_nm``),
        ``electrons_per_nm`` (order → e⁻/nm there), ``atmosphere_transmission``.

    Raises
    ------
    KeyError
        If the disperser is not in the spectroscopy table.
    """
    cfg = config or DispersedSceneConfig()
    profile = load_instrument(cfg.instrument)
    spec = profile.disperser_spec(model.disperser)
    lam, step = _wavelength_grid(cfg)
    t = model_transmissions(model, lam)
    no_disperser = (t["sed_photons"] * t["collecting_area_cm2"] * t["throughput"]
                    * t["filter"] * t["atmosphere"] * model.exptime_s)
    reference_e = float(no_disperser.sum() * step)
    orders = cfg.orders if cfg.orders is not None else model.orders
    per_order: dict[int, np.ndarray] = {}
    for m in orders:
        eff = t["efficiency"][m] if m in t["efficiency"] else _disperser_efficiency(model, m, lam)
        e = no_disperser * eff * step
        if e.sum() > 0:
            per_order[m] = e
    fractions = {m: float(e.sum() / reference_e) if reference_e > 0 else 0.0
                 for m, e in per_order.items()}
    shift = None
    if model.adr:
        angle = math.radians(model.adr_zenith_angle_deg)
        scale = cfg.plate_scale_arcsec

        def shift(wl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            r = differential_refraction_arcsec(wl, model) / scale
            return r * math.cos(angle), r * math.sin(angle)

    image, truth = _render_scene(shape, x0, y0, lam, per_order, fractions, reference_e,
                                 fwhm_px, _Optics(spec, _groove_density(spec, cfg.instrument),
                                                  profile.d2ccd_mm(model.disperser,
                                                                   linspos_mm)),
                                 rng, cfg, shift)
    lo, hi = cfg.wavelength_range_nm
    grid = np.arange(lo, hi + 0.5 * cfg.truth_spectrum_step_nm, cfg.truth_spectrum_step_nm)
    grid = grid[grid <= hi]
    epn = electrons_per_nm(model, grid)
    # An SED given as such is recorded by name (the truth stays small and serialisable).
    named = replace(model, target=t["sed_name"]) if isinstance(model.target, StellarSED) \
        else model
    truth["spectrum_model"] = {**asdict(named), "orders": list(model.orders),
                               "sed_name": t["sed_name"], "sed_file": t["sed_file"]}
    truth["spectrum"] = {
        "wavelength_nm": grid.round(4).tolist(),
        "electrons_per_nm": {m: epn[m].tolist() for m in model.orders},
        "atmosphere_transmission": _atmosphere_at(model, grid).tolist(),
    }
    return image, truth


def _wavelength_grid(cfg: DispersedSceneConfig) -> tuple[np.ndarray, float]:
    """Centres of the wavelength samples drawn and their width, nm."""
    lo, hi = cfg.wavelength_range_nm
    n = max(round((hi - lo) / cfg.wavelength_step_nm), 2)
    step = (hi - lo) / n
    return lo + (np.arange(n) + 0.5) * step, step


#: λ (nm) → ADR shift ``(dx, dy)`` in pixels, or None for no shift.
Shift = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None


@dataclass(frozen=True)
class _Optics:
    """The disperser as drawn: its slot in the instrument, groove density and distance."""

    spec: DisperserSpec
    """Direction, tilt and order fractions (instrument profile)."""
    lines_per_mm: float
    """Groove density N, lines/mm (0: the empty slot)."""
    d2ccd_mm: float
    """Disperser-CCD distance D, mm."""


def _groove_density(spec: DisperserSpec, instrument: str) -> float:
    """Nominal N of the disperser's tables (``N.txt``/``.ini``); 0 for the empty slot."""
    if spec.name not in known_dispersers(instrument):
        return 0.0
    return float(load_disperser(spec.name, instrument).lines_per_mm)


def _render_scene(shape: tuple[int, int], x0: float, y0: float, lam: np.ndarray,
                  per_order: dict[int, np.ndarray], fractions: dict[int, float],
                  reference_e: float, fwhm_px: float, optics: _Optics,
                  rng: np.random.Generator, cfg: DispersedSceneConfig, shift: Shift
                  ) -> tuple[np.ndarray, dict[str, Any]]:
    """The target and the optional second star (same light scaled by the flux ratio)."""
    image = np.zeros(shape, dtype=np.float32)
    truth = _render_star(image, x0, y0, lam, per_order, fractions, reference_e, fwhm_px,
                         optics, cfg, shift)
    truth["second_star"] = None
    if cfg.second_star_flux_ratio is not None:
        if cfg.second_star_offset_px is not None:
            dx, dy = cfg.second_star_offset_px
        else:
            r = rng.uniform(*cfg.second_star_distance_px)
            phi = rng.uniform(0.0, 2.0 * math.pi)
            dx, dy = r * math.cos(phi), r * math.sin(phi)
        k = cfg.second_star_flux_ratio
        truth["second_star"] = _render_star(
            image, x0 + dx, y0 + dy, lam, {m: e * k for m, e in per_order.items()}, fractions,
            reference_e * k, fwhm_px, optics, cfg, shift)
    spec = optics.spec
    truth.update(disperser=spec.name, lines_per_mm=optics.lines_per_mm,
                 d2ccd_mm=optics.d2ccd_mm, direction=list(spec.direction),
                 tilt_deg=spec.tilt_deg, fwhm_px=fwhm_px)
    return image, truth


def _render_star(image: np.ndarray, x0: float, y0: float, lam: np.ndarray,
                 per_order: dict[int, np.ndarray], fractions: dict[int, float],
                 flux_e: float, fwhm_px: float, optics: _Optics,
                 cfg: DispersedSceneConfig, shift: Shift) -> dict[str, Any]:
    """Add one star's orders (e⁻ per wavelength sample) to ``image``; return its truth."""
    lo, hi = cfg.wavelength_range_nm
    fwhm = _seeing(lam, fwhm_px, cfg)
    direction = optics.spec.direction
    n, d2ccd = optics.lines_per_mm, optics.d2ccd_mm
    theta0 = zeroth_order_field_angle(x0, y0, image.shape, direction, cfg.plate_scale_arcsec)
    sx, sy = shift(lam) if shift is not None else (0.0 * lam, 0.0 * lam)
    record: dict[str, Any] = {"x0": float(x0), "y0": float(y0), "star_flux_e": float(flux_e),
                              "theta0_rad": theta0, "orders": {}, "zeroth_order_peak_e": 0.0}
    for m, electrons in per_order.items():
        frac = fractions[m]
        if m == 0:
            on_chip, peak = _render_zeroth(image, x0, y0, electrons, fwhm, cfg, sx, sy)
            record["zeroth_order_peak_e"] = peak
            record["orders"][0] = {"fraction": frac, "flux_e": float(electrons.sum()),
                                   "flux_on_chip_e": on_chip}
            continue
        if n <= 0:
            continue
        u = dispersion_offset_px(lam, m, n, d2ccd, cfg.pixel_size_mm, theta0)
        xs = x0 + u * direction[0] + sx
        ys = y0 + u * direction[1] + sy
        on_chip = _render_trace(image, xs, ys, electrons, fwhm, direction, cfg)
        t_lam = np.arange(lo, hi + 0.5 * cfg.truth_step_nm, cfg.truth_step_nm)
        t_u = dispersion_offset_px(t_lam, m, n, d2ccd, cfg.pixel_size_mm, theta0)
        keep = np.isfinite(t_u)
        t_lam, t_u = t_lam[keep], t_u[keep]
        tx, ty = shift(t_lam) if shift is not None else (0.0, 0.0)
        record["orders"][m] = {
            "fraction": frac, "flux_e": float(electrons.sum()), "flux_on_chip_e": on_chip,
            "wavelength_nm": t_lam.round(3).tolist(),
            "x": (x0 + t_u * direction[0] + tx).round(3).tolist(),
            "y": (y0 + t_u * direction[1] + ty).round(3).tolist(),
        }
    return record


def _render_zeroth(image: np.ndarray, x0: float, y0: float, electrons: np.ndarray,
                   fwhm: np.ndarray, cfg: DispersedSceneConfig, sx: np.ndarray,
                   sy: np.ndarray) -> tuple[float, float]:
    """Zeroth order: one Moffat stamp per wavelength bin (its own seeing, its own ADR shift
    ``(sx, sy)``)."""
    ny, nx = image.shape
    ix, iy = round(x0), round(y0)
    total = float(electrons.sum())
    if total <= 0:
        return 0.0, 0.0
    # Stamp size from the sharpest PSF: where the profile falls below the floor.
    alpha = moffat_alpha(float(fwhm.min()), cfg.beta)
    peak = total * (cfg.beta - 1.0) / (math.pi * alpha**2)
    ratio = max(peak / cfg.stamp_floor_e, 1.0)
    h = int(np.clip(math.ceil(alpha * math.sqrt(max(ratio ** (1.0 / cfg.beta) - 1.0, 0.0))),
                    math.ceil(4.0 * fwhm.max()), cfg.max_stamp_half_px))
    stamp = np.zeros((2 * h + 1, 2 * h + 1))
    bins = np.array_split(np.arange(electrons.size), cfg.n_zeroth_bins)
    for idx in bins:
        e = float(electrons[idx].sum())
        if e <= 0:
            continue
        w = float(np.average(fwhm[idx], weights=electrons[idx]))
        bx = float(np.average(sx[idx], weights=electrons[idx]))
        by = float(np.average(sy[idx], weights=electrons[idx]))
        stamp += e * moffat_stamp(x0 - ix + bx, y0 - iy + by, w, cfg.beta, h)
    xa, xb = max(ix - h, 0), min(ix + h + 1, nx)
    ya, yb = max(iy - h, 0), min(iy + h + 1, ny)
    if xa >= xb or ya >= yb:
        return 0.0, float(stamp.max())
    part = stamp[ya - iy + h:yb - iy + h, xa - ix + h:xb - ix + h]
    image[ya:yb, xa:xb] += part.astype(np.float32)
    return float(part.sum()), float(stamp.max())


def _render_trace(image: np.ndarray, xs: np.ndarray, ys: np.ndarray, electrons: np.ndarray,
                  fwhm: np.ndarray, direction: tuple[float, float],
                  cfg: DispersedSceneConfig) -> float:
    """A spectrum order running mostly along y: rows, then columns (see the module notes)."""
    ny, nx = image.shape
    if abs(direction[1]) < abs(direction[0]):
        raise ValueError("the trace renderer assumes dispersion mostly along y")
    ok = np.isfinite(ys) & (electrons > 0)
    xs, ys, electrons, fwhm = xs[ok], ys[ok], electrons[ok], fwhm[ok]
    half = math.ceil(4.0 * float(fwhm.max()))
    # Along the trace: spread each sample over rows with the PSF's marginal profile. The
    # trace is tilted by |dx/dy| < 1: the along-trace offset of a row is its y offset over
    # |direction_y|.
    base = np.floor(ys).astype(np.int64)
    j = np.arange(-half, half + 2)
    rows = base[:, None] + j[None, :]
    prof = _marginal((rows - ys[:, None]) / abs(direction[1]), fwhm[:, None], cfg.beta)
    prof /= prof.sum(axis=1, keepdims=True)
    weights = prof * electrons[:, None]
    inside = (rows >= 0) & (rows < ny)
    r = rows[inside]
    w = weights[inside]
    row_flux = np.bincount(r, weights=w, minlength=ny)
    # Flux-weighted trace position and width of each row (the tilt moves x with the row).
    x_at = xs[:, None] + (rows - ys[:, None]) * (direction[0] / direction[1])
    row_x = np.bincount(r, weights=w * x_at[inside], minlength=ny)
    row_w = np.bincount(r, weights=w * np.broadcast_to(fwhm[:, None], rows.shape)[inside],
                        minlength=ny)
    lit = np.nonzero(row_flux > 1e-6)[0]
    if lit.size == 0:
        return 0.0
    f = row_flux[lit]
    xc = row_x[lit] / f
    wc = row_w[lit] / f
    # Across the trace: the same marginal profile centred on the trace in each row.
    k = np.arange(-half, half + 1)
    cols = np.floor(xc).astype(np.int64)[:, None] + k[None, :]
    across = _marginal(cols - xc[:, None], wc[:, None], cfg.beta)
    across /= across.sum(axis=1, keepdims=True)
    values = (across * f[:, None]).astype(np.float32)
    keep = (cols >= 0) & (cols < nx)
    rr = np.broadcast_to(lit[:, None], cols.shape)[keep]
    # Each (row, column) appears once per call, so a fancy-indexed += is exact.
    image[rr, cols[keep]] += values[keep]
    return float(values[keep].sum())
