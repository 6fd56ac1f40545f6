"""Noiseless dispersed (slitless) LATISS scenes: a star's zeroth order and its spectra.

A disperser in the converging beam sends a fraction of the star's light into each
diffraction order m. Order 0 is an ordinary (if fainter) star image; order m ≠ 0 is a
spectrum whose wavelength λ lands at a distance ``u`` from the zeroth order, along the
dispersion axis, given by the grating equation as Spectractor writes it::

    sin θ − sin θ₀ = m N λ,        u · pixel / D = tan θ − tan θ₀

with N the groove density, D the disperser-CCD distance (``115 mm + LINSPOS`` + the
disperser's offset) and θ₀ the zeroth order's field angle. `dispersion_offset_px` and
`wavelength_from_offset_px` are that law and its inverse, delegated to
`spectractor_bridge.dispersers` (the one implementation of the law in atmospec).

This module is the simple simulator used to test the zeroth-order finder and to give the
night simulator dispersed frames; the spectroscopic forward model (CALSPEC SED × atmosphere
× throughput, measured order ratios, ADR, chromatic PSF shape) will extend it. What it
draws, in the assembled (Rubin) orientation, in electrons:

* the SED: a blackbody photon spectrum (``temperature_k``) × the LATISS sensor QE × a few
  Gaussian absorption lines, normalised so that ``star_flux_e`` electrons would be
  detected over ``wavelength_range_nm`` without the disperser;
* each order m gets the constant fraction ``order_fractions[m]`` of the disperser table
  (``data/latiss_spectroscopy.yaml``);
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
from dataclasses import dataclass
from typing import Any

import numpy as np

from atmospec.camera.spectro import DisperserSpec, SpectroTable, load_spectro_table
from atmospec.sim.scenes import moffat_alpha, moffat_stamp, qe_curve
from spectractor_bridge.dispersers import grating_offset_px, grating_wavelength_nm

__all__ = [
    "DispersedSceneConfig",
    "dispersion_offset_px",
    "render_dispersed",
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
    """Orders drawn; None: every order with a non-zero fraction in the disperser table."""
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
    """Instrument whose spectroscopy table gives the dispersers."""
    truth_step_nm: float = 10.0
    """Spacing of the wavelength → position samples recorded in the truth."""


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
    computed by `spectractor_bridge.dispersers.grating_offset_px`, the one implementation
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
    (`spectractor_bridge.dispersers.grating_wavelength_nm`).

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


# --------------------------------------------------------------------------- rendering


def star_flux_for_zeroth_peak(
    peak_e: float, fwhm_px: float, disperser: str, config: DispersedSceneConfig | None = None,
    table: SpectroTable | None = None,
) -> float:
    """Star flux (``star_flux_e`` of `render_dispersed`) whose zeroth order peaks at about
    ``peak_e`` e⁻ per pixel: ask for more than the full well (~130 ke⁻) to saturate it.

    Uses the Moffat of FWHM ``fwhm_px`` (the chromatic widths make the real peak a few %
    different).
    """
    cfg = config or DispersedSceneConfig()
    spec = (table or load_spectro_table(cfg.instrument)).get(disperser)
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
        ``LINSPOS`` of the disperser stage, mm (None: the table's default distance).
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
    table = load_spectro_table(cfg.instrument)
    spec = table.get(disperser)
    d2ccd = table.d2ccd_mm(disperser, linspos_mm)
    image = np.zeros(shape, dtype=np.float32)
    truth = _render_star(image, x0, y0, star_flux_e, fwhm_px, spec, d2ccd, cfg)
    truth["second_star"] = None
    if cfg.second_star_flux_ratio is not None:
        if cfg.second_star_offset_px is not None:
            dx, dy = cfg.second_star_offset_px
        else:
            r = rng.uniform(*cfg.second_star_distance_px)
            phi = rng.uniform(0.0, 2.0 * math.pi)
            dx, dy = r * math.cos(phi), r * math.sin(phi)
        flux2 = star_flux_e * cfg.second_star_flux_ratio
        truth["second_star"] = _render_star(image, x0 + dx, y0 + dy, flux2, fwhm_px, spec,
                                            d2ccd, cfg)
    truth.update(disperser=spec.name, lines_per_mm=spec.lines_per_mm, d2ccd_mm=d2ccd,
                 direction=list(spec.direction), tilt_deg=spec.tilt_deg, fwhm_px=fwhm_px)
    return image, truth


def _render_star(image: np.ndarray, x0: float, y0: float, flux_e: float, fwhm_px: float,
                 spec: DisperserSpec, d2ccd: float, cfg: DispersedSceneConfig) -> dict[str, Any]:
    """Add one star's orders to ``image``; return its truth record."""
    lo, hi = cfg.wavelength_range_nm
    n = max(round((hi - lo) / cfg.wavelength_step_nm), 2)
    step = (hi - lo) / n
    lam = lo + (np.arange(n) + 0.5) * step
    sed = stellar_sed(lam, cfg)
    electrons = flux_e * sed / sed.sum()  # per wavelength sample, summing to flux_e
    fwhm = _seeing(lam, fwhm_px, cfg)
    direction = spec.direction
    theta0 = zeroth_order_field_angle(x0, y0, image.shape, direction, cfg.plate_scale_arcsec)
    orders = cfg.orders if cfg.orders is not None else tuple(
        m for m, f in spec.order_fractions if f > 0)
    record: dict[str, Any] = {"x0": float(x0), "y0": float(y0), "star_flux_e": float(flux_e),
                              "theta0_rad": theta0, "orders": {}, "zeroth_order_peak_e": 0.0}
    for m in orders:
        frac = spec.order_fraction(m)
        if frac <= 0:
            continue
        if m == 0:
            on_chip, peak = _render_zeroth(image, x0, y0, electrons * frac, fwhm, cfg)
            record["zeroth_order_peak_e"] = peak
            record["orders"][0] = {"fraction": frac, "flux_e": float(flux_e * frac),
                                   "flux_on_chip_e": on_chip}
            continue
        if spec.lines_per_mm <= 0:
            continue
        u = dispersion_offset_px(lam, m, spec.lines_per_mm, d2ccd, cfg.pixel_size_mm, theta0)
        xs = x0 + u * direction[0]
        ys = y0 + u * direction[1]
        on_chip = _render_trace(image, xs, ys, electrons * frac, fwhm, direction, cfg)
        t_lam = np.arange(lo, hi + 0.5 * cfg.truth_step_nm, cfg.truth_step_nm)
        t_u = dispersion_offset_px(t_lam, m, spec.lines_per_mm, d2ccd, cfg.pixel_size_mm, theta0)
        keep = np.isfinite(t_u)
        record["orders"][m] = {
            "fraction": frac, "flux_e": float(flux_e * frac), "flux_on_chip_e": on_chip,
            "wavelength_nm": t_lam[keep].round(3).tolist(),
            "x": (x0 + t_u[keep] * direction[0]).round(3).tolist(),
            "y": (y0 + t_u[keep] * direction[1]).round(3).tolist(),
        }
    return record


def _render_zeroth(image: np.ndarray, x0: float, y0: float, electrons: np.ndarray,
                   fwhm: np.ndarray, cfg: DispersedSceneConfig) -> tuple[float, float]:
    """Zeroth order: one centred Moffat stamp per wavelength bin (its own seeing)."""
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
        stamp += e * moffat_stamp(x0 - ix, y0 - iy, w, cfg.beta, h)
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
