"""Atmospheric differential refraction (ADR) on the spectrogram: where each wavelength of the
trace lands relative to the zeroth order, from the header's observing conditions.

The atmosphere lifts every wavelength towards the zenith by its refraction, blue more than
red (`atmospec.atmosphere.refraction`). The zeroth order is a star image made of all
wavelengths: its centroid sits where the flux-weighted mean refraction puts it. The first
order's light of wavelength λ therefore lands, from the measured zeroth order, at the
grating law's offset plus

    s(λ) = [R(λ) − R(λ_ref)] / plate scale · (cos φ, sin φ)

with R the refraction, λ_ref the wavelength whose refraction equals the zeroth order's mean
(`zeroth_order_reference_nm`, Spectractor's ``LBDA_REF``) and φ the direction of the zenith
in the image (`TraceRefraction.zenith_angle_deg`, counter-clockwise from +x).

The zenith in the image
-----------------------
The zenith is at the parallactic angle q (position angle North through East,
`atmospec.atmosphere.refraction.parallactic_angle_deg`, from the header's altitude and
azimuth and the site's latitude) seen from the star; the instrument profile puts a sky
direction into the image (`atmospec.camera.spectrograph.InstrumentProfile.sky_to_image`:
+y at the position angle ``ROTPA``, the profile's ``sky_parity``; the same convention the
zeroth-order prior uses for pointing offsets). LATISS's parity (+1) is the profile's
assumption, not checked on a real LATISS WCS; Spectractor (``load_AUXTEL_image``: camera
angle ``270° − ROTPA`` in its turned frame, North-up East-left parity) implies the other
parity in Rubin's frame, which flips the along-dispersion component of the ADR and leaves
the across-dispersion one (the bend of the trace) unchanged. An equatorial telescope's
header (CTIO) gives the hour angle and declination instead of the altitude and azimuth
(`atmospec.atmosphere.refraction.parallactic_angle_from_hour_angle_deg`), and a camera that
does not rotate has its fixed position angle in its profile
(`InstrumentProfile.sky_rotation_deg`). An instrument whose profile gives no parity or
latitude gets no ADR.

On the trace
------------
Rows run along the dispersion (the extraction's frame, +1 order along −y, tilt t). The
shift moves λ to the row where ``y_law(λ) + s_y(λ)`` falls and, at that row, the trace
centre by ``s_x − slope · s_y`` (slope = dx/drow of the straight trace; `trace_offsets`).
Along the fitted axis the distance from the zeroth order is the law's plus
``a(λ) = s_x sin t − s_y cos t``: the wavelength of a distance u solves
``u = law⁻¹(λ) + a(λ)`` (`solve_wavelength`, a fixed point: a changes by ≲ 0.03 px per
pixel of u).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from atmospec.atmosphere.refraction import (
    differential_refraction_arcsec,
    parallactic_angle_deg,
    parallactic_angle_from_hour_angle_deg,
    water_vapour_pressure_hpa,
)
from atmospec.camera.spectrograph import InstrumentProfile
from atmospec.camera.translator import ObservationInfo

__all__ = [
    "AdrConfig",
    "TraceRefraction",
    "refraction_from_header",
    "solve_wavelength",
    "zenith_in_image_deg",
    "zeroth_order_reference_nm",
]

log = logging.getLogger(__name__)

#: Fixed-point iterations of `solve_wavelength` (each gains a factor ≳ 30).
_SOLVE_ITERATIONS = 4


@dataclass(frozen=True)
class AdrConfig:
    """Whether and how the differential refraction is modelled in the extraction."""

    enabled: bool = True
    """Model ADR when the header gives the airmass, the pressure and the zenith direction
    (altitude, azimuth, ``ROTPA``); False: never (``ADR = F`` in the spectrum header)."""
    default_temperature_c: float = 10.0
    """Air temperature used when the header has none, °C (1 °C changes the ADR by 0.4 %)."""
    default_relative_humidity: float = 0.0
    """Relative humidity used when the header has none, % (water vapour changes the ADR by
    < 0.3 % at 40 %)."""
    initial_reference_nm: float = 600.0
    """Reference wavelength used to lay the trace before the spectrum is known, nm; replaced
    by the zeroth order's own (`zeroth_order_reference_nm`): a change of reference is a
    constant shift, which the trace fit absorbs across and the wavelengths along."""


@dataclass(frozen=True)
class TraceRefraction:
    """The observing conditions of one exposure and where its zenith is in the image."""

    airmass: float
    """Airmass of the line of sight."""
    pressure_hpa: float
    """Air pressure, hPa."""
    temperature_c: float
    """Air temperature, °C."""
    relative_humidity: float
    """Relative humidity, %."""
    zenith_angle_deg: float
    """Direction of the zenith in the image worked on, degrees counter-clockwise from +x
    (the light of short wavelengths is moved towards it)."""
    plate_scale_arcsec: float
    """Plate scale of the image worked on (binned if it is), arcsec per pixel."""
    reference_nm: float
    """Wavelength whose position the zeroth order marks, nm."""
    parallactic_angle_deg: float | None = None
    """Parallactic angle used, degrees (None: the direction was given, not computed)."""

    def shift_px(self, wavelength_nm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(dx, dy)`` of each wavelength relative to ``reference_nm``, pixels."""
        vapour = water_vapour_pressure_hpa(self.temperature_c, self.relative_humidity)
        r = differential_refraction_arcsec(wavelength_nm, self.reference_nm, self.airmass,
                                           self.pressure_hpa, self.temperature_c, vapour)
        r = np.asarray(r, dtype=np.float64) / self.plate_scale_arcsec
        phi = math.radians(self.zenith_angle_deg)
        return r * math.cos(phi), r * math.sin(phi)

    def along_px(self, wavelength_nm: np.ndarray, angle_deg: float) -> np.ndarray:
        """Shift along the dispersion axis of tilt ``angle_deg`` (the extraction's distance
        ``u = (x − x0) sin t − (y − y0) cos t``), pixels."""
        dx, dy = self.shift_px(wavelength_nm)
        t = math.radians(angle_deg)
        return dx * math.sin(t) - dy * math.cos(t)

    def trace_offsets(self, wavelength_nm: np.ndarray, angle_deg: float) -> np.ndarray:
        """Offset of the trace centre (x) at the row where each wavelength lands from the
        straight trace of tilt ``angle_deg``: ``s_x − slope · s_y``, pixels."""
        dx, dy = self.shift_px(wavelength_nm)
        slope = -math.tan(math.radians(angle_deg))  # dx/drow of the straight trace
        return dx - slope * dy

    def header_cards(self) -> dict[str, tuple[object, str]]:
        """Spectrum header cards of the values used (``ADR = T`` is added by the caller)."""
        cards: dict[str, tuple[object, str]] = {
            "ADRAIRM": (self.airmass, "ADR airmass"),
            "ADRPRESS": (self.pressure_hpa, "[hPa] ADR air pressure"),
            "ADRTEMP": (self.temperature_c, "[deg C] ADR air temperature"),
            "ADRHUM": (self.relative_humidity, "[%] ADR relative humidity"),
            "ADRZENIT": (self.zenith_angle_deg, "[deg] zenith in the image, ccw from +x"),
            "ADRLBREF": (self.reference_nm, "[nm] ADR reference wavelength (order 0)"),
        }
        if self.parallactic_angle_deg is not None:
            cards["PARANGLE"] = (self.parallactic_angle_deg, "[deg] parallactic angle")
        return cards


def zenith_in_image_deg(altitude_deg: float, azimuth_deg: float, rotation_angle_deg: float,
                        profile: InstrumentProfile) -> tuple[float, float]:
    """Direction of the zenith in the images as read, and the parallactic angle.

    Parameters
    ----------
    altitude_deg, azimuth_deg : float
        Telescope altitude and azimuth (North through East), degrees.
    rotation_angle_deg : float
        ``ROTPA``: position angle of the image's +y, degrees.
    profile : InstrumentProfile
        Site latitude and sky orientation (`InstrumentProfile.sky_to_image`).

    Returns
    -------
    zenith_deg : float
        Degrees counter-clockwise from +x, in (−180, 180].
    parallactic_deg : float
        The parallactic angle, degrees.

    Raises
    ------
    ValueError
        Without the profile's latitude or sky parity, or at the zenith.
    """
    if profile.site_latitude_deg is None:
        raise ValueError(f"instrument {profile.name}: site latitude not known")
    parallactic = parallactic_angle_deg(altitude_deg, azimuth_deg, profile.site_latitude_deg)
    return _zenith_direction_deg(parallactic, rotation_angle_deg, profile), parallactic


def _zenith_direction_deg(parallactic_deg: float, rotation_angle_deg: float,
                          profile: InstrumentProfile) -> float:
    """The zenith at position angle ``parallactic_deg`` as a direction in the images as
    read, degrees counter-clockwise from +x."""
    q = math.radians(parallactic_deg)  # the zenith seen from the star: (East, North) = (sin, cos)
    dx, dy = profile.sky_to_image(math.sin(q), math.cos(q), rotation_angle_deg)
    return math.degrees(math.atan2(float(dy), float(dx)))


def refraction_from_header(info: ObservationInfo, profile: InstrumentProfile, binning: int,
                           config: AdrConfig | None = None, source: str | None = None,
                           to_frame: Callable[[float, float], tuple[float, float]] | None
                           = None) -> tuple[TraceRefraction | None, str | None]:
    """The exposure's refraction from its translated header, or why there is none.

    Parameters
    ----------
    info : ObservationInfo
        Translated header: airmass, pressure, temperature, humidity, altitude, azimuth,
        ``ROTPA``.
    profile : InstrumentProfile
        Plate scale, sky parity and site latitude.
    binning : int
        Binning of the image worked on.
    config : AdrConfig, optional
        Settings (default temperature and humidity, initial reference).
    source : str, optional
        Name for the log.
    to_frame : callable, optional
        Turns an image vector ``(dx, dy)`` of the input image into the frame worked on
        (the chain's turn of a ``+x`` instrument); None: the same frame.

    Returns
    -------
    refraction : TraceRefraction or None
        None when ADR is switched off or the header lacks what it needs.
    reason : str or None
        Why there is no refraction (None when there is one).
    """
    cfg = config or AdrConfig()
    if not cfg.enabled:
        return None, "switched off"
    missing = [k for k, v in (("airmass", info.airmass), ("pressure", info.pressure))
               if v is None]
    if missing:
        return None, f"no {' or '.join(missing)} in the header"
    airmass = float(info.airmass)  # type: ignore[arg-type]
    if not math.isfinite(airmass) or airmass < 1.0:
        return None, f"airmass {airmass} is not ≥ 1"
    if profile.sky_parity is None or profile.site_latitude_deg is None:
        return None, f"the {profile.name} profile gives no sky orientation or latitude"
    temperature = info.temperature if info.temperature is not None \
        else cfg.default_temperature_c
    humidity = info.relative_humidity if info.relative_humidity is not None \
        else cfg.default_relative_humidity
    parallactic = None
    zenith = 0.0
    rotation = profile.rotation_angle(info.rotation_angle)
    if airmass > 1.0 + 1e-9:
        hadec = info.hour_angle is not None and info.dec is not None
        if rotation is None or not ((info.altitude is not None and info.azimuth is not None)
                                    or hadec):
            return None, ("no altitude and azimuth (nor hour angle and declination) or ROTPA "
                          "in the header (zenith direction)")
        try:
            if info.altitude is not None and info.azimuth is not None:
                zenith, parallactic = zenith_in_image_deg(info.altitude, info.azimuth,
                                                          rotation, profile)
            else:
                parallactic = parallactic_angle_from_hour_angle_deg(
                    info.hour_angle, info.dec, profile.site_latitude_deg)  # type: ignore[arg-type]
                zenith = _zenith_direction_deg(parallactic, rotation, profile)
        except ValueError as exc:
            return None, str(exc)
        if to_frame is not None:
            phi = math.radians(zenith)
            vx, vy = to_frame(math.cos(phi), math.sin(phi))
            zenith = math.degrees(math.atan2(vy, vx))
    log.debug("%s: ADR at airmass %.3f, %.1f hPa, %.1f °C, zenith at %.1f° in the image",
              source, airmass, info.pressure, temperature, zenith)
    return TraceRefraction(airmass=airmass, pressure_hpa=float(info.pressure),  # type: ignore[arg-type]
                           temperature_c=float(temperature),
                           relative_humidity=float(humidity), zenith_angle_deg=zenith,
                           plate_scale_arcsec=profile.plate_scale_at(binning),
                           reference_nm=cfg.initial_reference_nm,
                           parallactic_angle_deg=parallactic), None


def zeroth_order_reference_nm(refraction: TraceRefraction, wavelength_nm: np.ndarray,
                              weights: np.ndarray) -> float:
    """The wavelength whose refraction is the zeroth order's flux-weighted mean.

    The zeroth order's centroid is the mean of its wavelengths' positions weighted by their
    light; its light per nm is the first order's divided by the disperser's order-1
    efficiency (the zeroth order's is flat), which the caller gives as ``weights``.

    Parameters
    ----------
    refraction : TraceRefraction
        The conditions (its ``reference_nm`` is irrelevant here).
    wavelength_nm : numpy.ndarray
        Wavelengths of the samples, nm.
    weights : numpy.ndarray
        Zeroth-order light of each sample (any scale; non-finite or negative: left out).

    Returns
    -------
    float
        nm; the current ``reference_nm`` when no sample has light.
    """
    lam = np.asarray(wavelength_nm, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    ok = np.isfinite(lam) & np.isfinite(w) & (w > 0)
    if np.count_nonzero(ok) < 2:
        return refraction.reference_nm
    # R(λ) up to a positive factor: the refractivity at any zenith distance does.
    vapour = water_vapour_pressure_hpa(refraction.temperature_c, refraction.relative_humidity)
    r = differential_refraction_arcsec(lam[ok], refraction.reference_nm, 2.0,
                                       refraction.pressure_hpa, refraction.temperature_c,
                                       vapour)
    mean = float(np.sum(w[ok] * r) / np.sum(w[ok]))
    order = np.argsort(r)  # refraction decreases with λ: invert by interpolation
    return float(np.interp(mean, r[order], lam[ok][order]))


def solve_wavelength(law: Callable[[np.ndarray], np.ndarray], distance_px: np.ndarray,
                     refraction: TraceRefraction | None, angle_deg: float,
                     start_nm: np.ndarray | None = None) -> np.ndarray:
    """λ at measured distances ``u`` along the axis when the trace is refracted:
    ``λ = law(u − a(λ))`` with ``a`` the along-axis shift (`TraceRefraction.along_px`).

    Parameters
    ----------
    law : callable
        Distance (pixels, without refraction) → λ (nm).
    distance_px : numpy.ndarray
        Measured distances from the zeroth order, pixels.
    refraction : TraceRefraction or None
        None: ``law(u)``.
    angle_deg : float
        Tilt of the dispersion axis, degrees.
    start_nm : numpy.ndarray, optional
        Starting wavelengths (default: ``law(u)``).

    Returns
    -------
    numpy.ndarray
        nm. A fixed number of iterations (`_SOLVE_ITERATIONS`): the map contracts by
        ≳ 30 per step, so the last step moves λ by < 10⁻⁵ nm.
    """
    u = np.asarray(distance_px, dtype=np.float64)
    if refraction is None:
        return law(u)
    lam = law(u) if start_nm is None else np.asarray(start_nm, dtype=np.float64)
    for _ in range(_SOLVE_ITERATIONS):
        lam_ok = np.where(np.isfinite(lam), lam, refraction.reference_nm)
        lam = law(u - refraction.along_px(lam_ok, angle_deg))
    return lam
