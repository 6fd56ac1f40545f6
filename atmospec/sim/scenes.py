"""Noiseless electron images of what reaches the sensor, with their truth.

Everything here is in electrons, in the assembled (Rubin) orientation of the detector:
stars (Moffat PSFs), sky, cosmic-ray tracks, and the relative flat-field response
(vignetting, dust donuts, pixel response non-uniformity). The electronics (noise, gains,
bias, bleeding, crosstalk) live in `atmospec.sim.detector`.

Two kinds of randomness are kept apart: the *sensor* (PRNU, dust) is drawn from a fixed
seed so that every frame of a night sees the same sensor, while a frame's own generator
only drives what changes from frame to frame (star positions, cosmic rays, noise).
"""

from __future__ import annotations

import logging
import math
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from types import MappingProxyType

import numpy as np
from astropy.table import Table

log = logging.getLogger(__name__)

#: Seed of the simulated sensor's fixed patterns (PRNU, dust, bias structure, hot pixels):
#: the manufacturer serial number of ITL-3800C-068, the LATISS CCD since 2021.
SENSOR_SEED = 20862

#: Nominal wavelength ranges (nm) of the LATISS filters, for the band-averaged QE. The SDSS
#: ranges are the filters' nominal half-power bands; "empty" is the useful range of the
#: unfiltered sensor.
FILTER_BANDS_NM: Mapping[str, tuple[float, float]] = MappingProxyType({
    "u": (320.0, 400.0),
    "g": (400.0, 552.0),
    "r": (552.0, 691.0),
    "i": (691.0, 818.0),
    "z": (818.0, 922.0),
    "y": (948.0, 1060.0),
    "empty": (400.0, 1000.0),
    "BG40": (335.0, 610.0),
    "OG550": (550.0, 1000.0),
    "FELH0600": (600.0, 1000.0),
})


# --------------------------------------------------------------------------- stars


@dataclass(frozen=True)
class StarFieldConfig:
    """How a simulated star field is drawn and rendered."""

    beta: float = 3.0
    """Moffat index of the PSF (about 3 for ground-based seeing-limited images)."""
    flux_min_e_per_s: float = 300.0
    """Faintest star, e⁻/s above the atmosphere (a few thousand e⁻ in 30 s)."""
    flux_max_e_per_s: float = 3.0e5
    """Brightest ordinary star, e⁻/s: keeps its peak below full well at 1″ seeing in 30 s."""
    flux_index: float = 2.0
    """Power-law index ``a`` of the flux distribution ``dN/dF ∝ F^-a``."""
    n_saturated: int = 0
    """Extra very bright stars whose core exceeds full well (bleed trails, crosstalk)."""
    saturated_peak_e: tuple[float, float] = (5.0e5, 3.0e6)
    """Range (log-uniform) of the saturated stars' noiseless peak, e⁻ per pixel."""
    saturated_margin_px: int = 400
    """Saturated stars are kept this far from the image edges so their trails stay on chip."""
    stamp_floor_e: float = 0.05
    """A star's stamp extends until its profile falls below this many e⁻ per pixel."""
    max_stamp_half_px: int = 400
    """Largest stamp half-size, pixels (bounds the cost of the brightest stars)."""


def moffat_alpha(fwhm: float, beta: float) -> float:
    """Moffat core width ``alpha`` (pixels) giving a full width at half maximum ``fwhm``."""
    return fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))


def moffat_peak_fraction(fwhm: float, beta: float = 3.0) -> float:
    """Fraction of a Moffat star's flux in its central pixel (centred star, untruncated)."""
    alpha = moffat_alpha(fwhm, beta)
    return (beta - 1.0) / (math.pi * alpha**2)


def moffat_stamp(
    dx: float,
    dy: float,
    fwhm: float,
    beta: float = 3.0,
    half_size: int | None = None,
    oversample: int | None = None,
) -> np.ndarray:
    """Flux-normalised Moffat profile integrated over the pixels of a square stamp.

    Parameters
    ----------
    dx, dy : float
        Offset (pixels, within ±0.5) of the star from the stamp's central pixel centre.
    fwhm : float
        Full width at half maximum, pixels.
    beta : float
        Moffat index.
    half_size : int, optional
        Stamp half-size; the stamp is ``2 * half_size + 1`` pixels wide. Default 4 FWHM.
    oversample : int, optional
        Sub-pixels per pixel side used to integrate the profile; by default 1 for a
        well-sampled PSF and more for a sharp one (FWHM < 4 px), where sampling at pixel
        centres would overestimate the peak.

    Returns
    -------
    numpy.ndarray
        ``(2 h + 1, 2 h + 1)`` float64 stamp summing to 1 (the flux outside the stamp is
        folded back in, so a star's truth flux is exactly what lands on the sensor).
    """
    if half_size is None:
        half_size = math.ceil(4.0 * fwhm)
    if oversample is None:
        oversample = 1 if fwhm >= 4.0 else math.ceil(16.0 / max(fwhm, 0.5))
    n = 2 * half_size + 1
    # Sub-pixel centres of every pixel of the stamp, relative to the star.
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    grid = (np.arange(n)[:, None] - half_size + sub[None, :]).ravel()
    u = grid - dx
    v = grid - dy
    alpha2 = moffat_alpha(fwhm, beta) ** 2
    r2 = v[:, None] ** 2 + u[None, :] ** 2
    profile = (1.0 + r2 / alpha2) ** (-beta)
    if oversample > 1:
        profile = profile.reshape(n, oversample, n, oversample).sum(axis=(1, 3))
    return profile / profile.sum()


def _stamp_half_size(flux: float, fwhm: float, beta: float, cfg: StarFieldConfig) -> int:
    """Half-size at which the star's profile drops below ``cfg.stamp_floor_e``."""
    alpha = moffat_alpha(fwhm, beta)
    peak = flux * moffat_peak_fraction(fwhm, beta)
    ratio = max(peak / cfg.stamp_floor_e, 1.0)
    # Solve peak * (1 + r²/α²)^-β = floor for r.
    radius = alpha * math.sqrt(max(ratio ** (1.0 / beta) - 1.0, 0.0))
    return int(np.clip(math.ceil(radius), math.ceil(3.0 * fwhm), cfg.max_stamp_half_px))


def draw_star_catalog(
    shape: tuple[int, int],
    n_stars: int,
    rng: np.random.Generator,
    *,
    fwhm: float = 11.0,
    exptime: float = 30.0,
    config: StarFieldConfig | None = None,
) -> Table:
    """Draw positions and count rates of a star field (nothing rendered).

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)``.
    n_stars : int
        Number of ordinary stars (``config.n_saturated`` saturated ones come on top).
    rng : numpy.random.Generator
        Source of randomness.
    fwhm : float
        PSF FWHM (pixels) used to turn the saturated stars' peaks into fluxes.
    exptime : float
        Exposure time (s) in which the saturated stars reach ``config.saturated_peak_e``.
    config : StarFieldConfig, optional
        Flux distribution and saturated stars.

    Returns
    -------
    astropy.table.Table
        Columns ``x``, ``y`` (0-based pixel centres, assembled image), ``flux_e_per_s``
        and ``saturated`` (bool: one of the deliberately saturated stars).
    """
    cfg = config or StarFieldConfig()
    ny, nx = shape
    # Inverse-CDF sampling of dN/dF ∝ F^-a between the two flux limits.
    a = cfg.flux_index
    lo, hi = cfg.flux_min_e_per_s, cfg.flux_max_e_per_s
    u = rng.random(n_stars)
    if abs(a - 1.0) < 1e-9:
        flux = lo * (hi / lo) ** u
    else:
        e = 1.0 - a
        flux = (lo**e + u * (hi**e - lo**e)) ** (1.0 / e)
    x = rng.uniform(-0.5, nx - 0.5, n_stars)
    y = rng.uniform(-0.5, ny - 0.5, n_stars)

    m = max(0, min(cfg.saturated_margin_px, (min(nx, ny) - 1) // 2 - 1))
    n_sat = cfg.n_saturated
    peak = np.exp(rng.uniform(*np.log(cfg.saturated_peak_e), n_sat))
    sat_rate = peak / moffat_peak_fraction(fwhm, cfg.beta) / exptime
    sat_x = rng.uniform(m, nx - 1 - m, n_sat)
    sat_y = rng.uniform(m, ny - 1 - m, n_sat)

    table = Table()
    table["x"] = np.concatenate([x, sat_x])
    table["y"] = np.concatenate([y, sat_y])
    table["flux_e_per_s"] = np.concatenate([flux, sat_rate])
    table["saturated"] = np.concatenate([np.zeros(n_stars, bool), np.ones(n_sat, bool)])
    return table


def render_stars(
    shape: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    flux_e: np.ndarray,
    *,
    fwhm: float,
    beta: float = 3.0,
    config: StarFieldConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render point sources on an empty image.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)``.
    x, y : numpy.ndarray
        0-based pixel-centre coordinates of the stars.
    flux_e : numpy.ndarray
        Total flux of each star, e⁻ (the part falling off the image is lost).
    fwhm, beta : float
        Moffat PSF.
    config : StarFieldConfig, optional
        Stamp sizing.

    Returns
    -------
    image : numpy.ndarray
        float32 image of the stars, e⁻.
    peak : numpy.ndarray
        Noiseless value of each star's brightest pixel, e⁻ (before adding the other stars).
    """
    cfg = config or StarFieldConfig()
    ny, nx = shape
    image = np.zeros(shape, dtype=np.float32)
    peak = np.zeros(len(x))
    for k in range(len(x)):
        ix, iy = int(np.rint(x[k])), int(np.rint(y[k]))
        h = _stamp_half_size(float(flux_e[k]), fwhm, beta, cfg)
        x0, x1 = max(ix - h, 0), min(ix + h + 1, nx)
        y0, y1 = max(iy - h, 0), min(iy + h + 1, ny)
        if x0 >= x1 or y0 >= y1:
            continue
        stamp = flux_e[k] * moffat_stamp(x[k] - ix, y[k] - iy, fwhm, beta, h)
        peak[k] = stamp.max()
        image[y0:y1, x0:x1] += stamp[y0 - iy + h : y1 - iy + h, x0 - ix + h : x1 - ix + h]
    return image, peak


def star_field(
    shape: tuple[int, int],
    n_stars: int,
    rng: np.random.Generator,
    fwhm: float = 11.0,
    sky_e: float = 100.0,
    exptime: float = 30.0,
    config: StarFieldConfig | None = None,
) -> tuple[np.ndarray, Table]:
    """Noiseless image of a star field on a flat sky.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)``.
    n_stars : int
        Number of ordinary stars; ``config.n_saturated`` saturated ones are added.
    rng : numpy.random.Generator
        Source of the star positions and fluxes.
    fwhm : float
        PSF FWHM, pixels (1.1″ seeing is 11.6 px on LATISS).
    sky_e : float
        Sky level over the exposure, e⁻ per pixel.
    exptime : float
        Exposure time, s: the ordinary stars' e⁻/s rates are multiplied by it.
    config : StarFieldConfig, optional
        Flux distribution, PSF index and saturated stars.

    Returns
    -------
    image : numpy.ndarray
        float32 image in e⁻ (stars + sky).
    table : astropy.table.Table
        Truth: ``x``, ``y`` (0-based pixel centres), ``flux_e`` (total e⁻), ``peak_e``
        (noiseless brightest pixel of the star alone) and ``saturated``.
    """
    cfg = config or StarFieldConfig()
    cat = draw_star_catalog(shape, n_stars, rng, fwhm=fwhm, exptime=exptime, config=cfg)
    flux = np.asarray(cat["flux_e_per_s"]) * exptime
    image, peak = render_stars(shape, cat["x"], cat["y"], flux, fwhm=fwhm, beta=cfg.beta,
                               config=cfg)
    image += np.float32(sky_e)
    table = Table({"x": cat["x"], "y": cat["y"], "flux_e": flux, "peak_e": peak,
                   "saturated": cat["saturated"]})
    return image, table


# --------------------------------------------------------------------------- cosmic rays


@dataclass(frozen=True)
class CosmicRayConfig:
    """Physics of the simulated cosmic rays (muon tracks and point-like hits)."""

    thickness_um: float = 100.0
    """Depleted silicon thickness of the ITL sensor, µm."""
    pixel_um: float = 10.0
    """Pixel pitch, µm."""
    electrons_per_um: float = 80.0
    """Ionisation yield of a minimum-ionising particle in silicon, e⁻ per µm of path."""
    landau_sigma: float = 0.3
    """Relative spread (log-normal) of the deposit along a track (Landau-like straggling)."""
    max_length_px: float = 400.0
    """Longest projected track, pixels (grazing muons)."""
    point_fraction: float = 0.2
    """Fraction of events that are point-like hits (low-energy electrons, radioactivity)."""
    point_charge_e: tuple[float, float] = (1_000.0, 10_000.0)
    """Range (log-uniform) of the charge of a point-like hit, e⁻."""
    diffusion_px: float = 0.3
    """Lateral charge diffusion (Gaussian sigma), pixels."""
    point_size_px: float = 0.3
    """Extra size (Gaussian sigma) of a point-like hit: the range of the ionising electron."""
    samples_per_px: float = 10.0
    """Deposit samples per pixel of projected track length."""
    mask_threshold_e: float = 45.0
    """Truth mask: pixels receiving more than this (5 × a 9 e⁻ read noise)."""


def cosmic_rays(
    shape: tuple[int, int],
    n: int,
    rng: np.random.Generator,
    config: CosmicRayConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Charge deposited by ``n`` cosmic-ray events.

    Muon tracks have a zenith angle ``θ`` with ``cos θ`` distributed as ``cos³`` (flux
    through a horizontal sensor) and a random azimuth; their projected length is
    ``thickness · tan θ`` and their total charge ``yield · thickness / cos θ``, i.e. at
    least ``yield · pixel`` (800 e⁻) per pixel of track. Point-like hits deposit a few
    thousand e⁻ in one to a few pixels.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)``.
    n : int
        Number of events (tracks may start off the image and enter it).
    rng : numpy.random.Generator
        Source of randomness.
    config : CosmicRayConfig, optional
        Physics constants.

    Returns
    -------
    image : numpy.ndarray
        float32 deposited charge, e⁻.
    mask : numpy.ndarray
        bool truth of the pixels that received more than ``config.mask_threshold_e``.
    """
    cfg = config or CosmicRayConfig()
    ny, nx = shape
    image = np.zeros(shape, dtype=np.float32)
    if n <= 0:
        return image, np.zeros(shape, dtype=bool)
    thick_px = cfg.thickness_um / cfg.pixel_um
    point = rng.random(n) < cfg.point_fraction
    cos_t = rng.random(n) ** 0.25
    cos_t = np.maximum(cos_t, thick_px / np.hypot(cfg.max_length_px, thick_px))
    length = np.where(point, 0.0, thick_px * np.sqrt(1.0 - cos_t**2) / cos_t)
    charge = np.where(
        point,
        np.exp(rng.uniform(*np.log(cfg.point_charge_e), n)),
        cfg.electrons_per_um * cfg.thickness_um / cos_t,
    )
    phi = rng.uniform(0.0, 2.0 * np.pi, n)
    # Start points spread a little beyond the image so that tracks can cross its edges.
    x0 = rng.uniform(-0.5 - length / 2, nx - 0.5 + length / 2)
    y0 = rng.uniform(-0.5 - length / 2, ny - 0.5 + length / 2)

    n_samp = np.maximum(np.ceil(length * cfg.samples_per_px).astype(int), 8)
    event = np.repeat(np.arange(n), n_samp)
    # Position of each sample along its track, 0..1, at the centre of equal sub-segments.
    start = np.cumsum(n_samp) - n_samp
    t = (np.arange(event.size) - start[event] + 0.5) / n_samp[event]
    xs = x0[event] + (t - 0.5) * length[event] * np.cos(phi[event])
    ys = y0[event] + (t - 0.5) * length[event] * np.sin(phi[event])
    sigma = cfg.diffusion_px + np.where(point[event], cfg.point_size_px, 0.0)
    xs += rng.normal(0.0, 1.0, event.size) * sigma
    ys += rng.normal(0.0, 1.0, event.size) * sigma
    # Straggling: a mean-one log-normal weight per sample.
    s = cfg.landau_sigma
    weight = rng.lognormal(-0.5 * s * s, s, event.size)
    q = charge[event] / n_samp[event] * weight

    _deposit(image, xs, ys, q)
    mask = image > cfg.mask_threshold_e
    return image, mask


def _deposit(image: np.ndarray, x: np.ndarray, y: np.ndarray, q: np.ndarray) -> None:
    """Add charges ``q`` to the pixels containing ``(x, y)`` (in place).

    The positions already carry the diffusion jitter, so nearest-pixel deposition of many
    samples is a Monte-Carlo of the charge cloud (bilinear sharing would blur it further).
    """
    ny, nx = image.shape
    cx = np.rint(x).astype(np.int64)
    cy = np.rint(y).astype(np.int64)
    ok = (cx >= 0) & (cx < nx) & (cy >= 0) & (cy < ny)
    flat = cy[ok] * nx + cx[ok]
    # Sum over the touched pixels only: a full-frame bincount would cost more than the CRs.
    pix, inverse = np.unique(flat, return_inverse=True)
    image.ravel()[pix] += np.bincount(inverse, weights=q[ok]).astype(np.float32)


# --------------------------------------------------------------------------- flat field


@dataclass(frozen=True)
class IlluminationConfig:
    """Ingredients of the relative flat-field response."""

    vignetting: float = 0.04
    """Fractional loss of light in the detector corners relative to the optical centre."""
    vignetting_offset_px: float = 150.0
    """Scale of the per-filter shift of the vignetting centre, pixels (filter tilt)."""
    n_donuts: int = 6
    """Dust donuts on the sensor window (same for every filter)."""
    n_filter_donuts: int = 2
    """Extra donuts from dust on the filter itself (depend on the filter)."""
    donut_radius_px: tuple[float, float] = (30.0, 80.0)
    """Range of the donuts' outer radius, pixels."""
    donut_depth: tuple[float, float] = (0.01, 0.04)
    """Range of the donuts' fractional depth."""
    obscuration: float = 0.4
    """Inner/outer radius of a donut: the telescope's central obscuration ratio."""
    donut_edge_px: float = 1.5
    """Softness of the donut edges, pixels."""
    prnu: float = 0.007
    """Pixel response non-uniformity, Gaussian sigma (fraction)."""


def _filter_seed(filter_name: str) -> int:
    """Stable integer seed for a filter name (hash() is salted per process)."""
    return zlib.crc32(filter_name.strip().encode())


def vignetting(shape: tuple[int, int], filter_name: str,
               config: IlluminationConfig | None = None) -> np.ndarray:
    """Smooth radial vignetting of one filter, 1 at its optical centre.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)``.
    filter_name : str
        Filter; its name fixes a small shift of the optical centre and depth.
    config : IlluminationConfig, optional
        Depth and shift scale.

    Returns
    -------
    numpy.ndarray
        float32 relative response.
    """
    cfg = config or IlluminationConfig()
    ny, nx = shape
    frng = np.random.default_rng(_filter_seed(filter_name))
    cx = (nx - 1) / 2 + frng.normal(0.0, cfg.vignetting_offset_px)
    cy = (ny - 1) / 2 + frng.normal(0.0, cfg.vignetting_offset_px)
    depth = cfg.vignetting * frng.uniform(0.8, 1.2)
    r_corner2 = ((nx - 1) / 2) ** 2 + ((ny - 1) / 2) ** 2
    yy = ((np.arange(ny, dtype=np.float32) - cy) ** 2)[:, None]
    xx = ((np.arange(nx, dtype=np.float32) - cx) ** 2)[None, :]
    rho2 = (yy + xx) / np.float32(r_corner2)
    # Cos⁴-like falloff: quadratic with a gentle quartic term, `depth` lost at the corners.
    return (1.0 - depth * (0.7 * rho2 + 0.3 * rho2 * rho2)).astype(np.float32)


def _add_donuts(image: np.ndarray, n: int, rng: np.random.Generator,
                cfg: IlluminationConfig) -> None:
    """Multiply annular dust shadows into ``image`` (in place)."""
    ny, nx = image.shape
    for _ in range(n):
        r_out = rng.uniform(*cfg.donut_radius_px)
        depth = rng.uniform(*cfg.donut_depth)
        xc, yc = rng.uniform(0, nx - 1), rng.uniform(0, ny - 1)
        h = math.ceil(r_out + 4 * cfg.donut_edge_px)
        x0, x1 = max(int(xc) - h, 0), min(int(xc) + h + 1, nx)
        y0, y1 = max(int(yc) - h, 0), min(int(yc) + h + 1, ny)
        r = np.hypot(np.arange(y0, y1)[:, None] - yc, np.arange(x0, x1)[None, :] - xc)
        w = cfg.donut_edge_px
        # Defocused shadow of a dust grain = image of the (centrally obscured) pupil.
        inside_outer = 1.0 / (1.0 + np.exp((r - r_out) / w))
        outside_inner = 1.0 / (1.0 + np.exp((cfg.obscuration * r_out - r) / w))
        image[y0:y1, x0:x1] *= (1.0 - depth * inside_outer * outside_inner).astype(np.float32)


def illumination(
    shape: tuple[int, int],
    filter_name: str,
    rng: np.random.Generator | None = None,
    *,
    config: IlluminationConfig | None = None,
    sensor_seed: int = SENSOR_SEED,
) -> np.ndarray:
    """Relative flat-field response: vignetting × dust donuts × PRNU, median 1.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)``.
    filter_name : str
        Filter in the beam: fixes the vignetting and the filter's own dust.
    rng : numpy.random.Generator, optional
        Generator for the sensor's patterns (window dust, PRNU). By default they come from
        ``sensor_seed`` and the result is cached: every frame of a night sees the same
        sensor. Never pass a frame's generator here.
    config : IlluminationConfig, optional
        Amplitudes.
    sensor_seed : int
        Seed of the sensor patterns when ``rng`` is None.

    Returns
    -------
    numpy.ndarray
        float32 response normalised to median 1 (read-only when cached).
    """
    cfg = config or IlluminationConfig()
    if rng is None:
        return _cached_illumination(tuple(shape), filter_name, cfg, sensor_seed)
    return _illumination(tuple(shape), filter_name, cfg, rng)


@lru_cache(maxsize=4)
def _cached_illumination(shape: tuple[int, int], filter_name: str, cfg: IlluminationConfig,
                         sensor_seed: int) -> np.ndarray:
    log.debug("computing the %s flat-field response of sensor %d", filter_name, sensor_seed)
    out = _illumination(shape, filter_name, cfg, np.random.default_rng(sensor_seed))
    out.flags.writeable = False
    return out


def _illumination(shape: tuple[int, int], filter_name: str, cfg: IlluminationConfig,
                  rng: np.random.Generator) -> np.ndarray:
    image = vignetting(shape, filter_name, cfg)
    _add_donuts(image, cfg.n_donuts, rng, cfg)
    frng = np.random.default_rng([_filter_seed(filter_name), 1])
    _add_donuts(image, cfg.n_filter_donuts, frng, cfg)
    prnu = rng.standard_normal(shape, dtype=np.float32)
    prnu *= np.float32(cfg.prnu)
    prnu += np.float32(1.0)
    image *= prnu
    image /= np.median(image)
    return image


# --------------------------------------------------------------------------- QE


@cache
def qe_curve() -> tuple[np.ndarray, np.ndarray]:
    """Amp-averaged QE curve of the LATISS sensor: wavelength (nm), efficiency (fraction)."""
    ref = resources.files("atmospec.data") / "latiss_sensor_qe.ecsv"
    table = Table.read(str(ref), format="ascii.ecsv")
    wl = np.asarray(table["wavelength"], dtype=float)
    eff = np.asarray(table["efficiency"], dtype=float) / 100.0
    grid = np.unique(np.round(wl, 0))
    # Amps are measured at almost the same wavelengths: average them on a common grid.
    amps = np.unique(np.asarray(table["amp_name"]))
    curves = []
    for amp in amps:
        sel = np.asarray(table["amp_name"]) == amp
        order = np.argsort(wl[sel])
        curves.append(np.interp(grid, wl[sel][order], eff[sel][order]))
    return grid, np.mean(curves, axis=0)


def filter_band(filter_name: str) -> tuple[float, float]:
    """Nominal wavelength range (nm) of a LATISS filter name such as ``SDSSr_65mm``."""
    name = filter_name.strip()
    if re.fullmatch(r"(?i)(empty(_\d+)?)?|none", name):
        return FILTER_BANDS_NM["empty"]
    match = re.fullmatch(r"SDSS([ugrizy])(_65mm)?", name)
    if match:
        return FILTER_BANDS_NM[match[1]]
    for key, band in FILTER_BANDS_NM.items():
        if len(key) > 1 and name.upper().startswith(key.upper()):
            return band
    raise KeyError(f"no wavelength range known for filter {filter_name!r}")


def filter_qe_scale(filter_name: str) -> float:
    """Mean sensor QE over a filter's band, from the measured LATISS QE curve.

    Parameters
    ----------
    filter_name : str
        ``SDSSu_65mm`` ... ``SDSSy_65mm``, ``empty``/``empty_1`` (400–1000 nm), ``BG40``,
        ``OG550``, ``FELH0600``.

    Returns
    -------
    float
        Band-averaged QE as a fraction (0–1); ratios of it scale flat and sky levels
        between filters.
    """
    lo, hi = filter_band(filter_name)
    wl, eff = qe_curve()
    fine = np.linspace(lo, hi, 512)
    return float(np.mean(np.interp(fine, wl, eff)))
