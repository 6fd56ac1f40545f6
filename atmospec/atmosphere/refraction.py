"""Atmospheric refraction and its chromatic part, the differential refraction (ADR).

The one implementation of the refraction law in atmospec: the simulator draws ADR with it
(`atmospec.sim.dispersed`) and the extraction models it (`atmospec.spectro.adr`). It
imports nothing of `atmospec.spectro` (the spectroscopy may import it, as it does the
transmission model).

The law
-------
The refractivity of air, ``n − 1``, is Edlén's (1953) dispersion formula for dry air at
15 °C and 760 mmHg,

    (n − 1)·10⁶ = 64.328 + 29498.1 / (146 − σ²) + 255.4 / (41 − σ²)

(σ = 1/λ in µm⁻¹), brought to the pressure P (mmHg) and temperature T (°C) of the site by

    × P [1 + (1.049 − 0.0157 T)·10⁻⁶ P] / [720.883 (1 + 0.003661 T)]

and lowered by the water vapour of partial pressure f (mmHg) by

    − f (0.0624 − 0.000680 σ²) / (1 + 0.003661 T) · 10⁻⁶

as Filippenko (1982, PASP 94, 715, eqs. 1–3) writes them. The refraction of a star at
zenith distance z is, plane parallel, ``R = (n − 1) tan z`` with ``tan z = √(X² − 1)``
for the airmass X (sec z); the neglected curvature term changes the *differential*
refraction by < 0.2 % below airmass 2.5. Positive R lifts the star towards the zenith; blue
light is lifted more than red.

The water vapour pressure comes from the relative humidity and the saturation pressure over
water of Buck (1981, J. Appl. Meteor. 20, 1527): ``6.1121 exp((18.678 − T/234.5) T /
(257.14 + T))`` hPa.

Checked against Filippenko's Table 1 (2 km altitude: 600 mmHg, 7 °C, f = 8 mmHg) in
``tests/test_adr.py``.

Where the zenith is
-------------------
`parallactic_angle_deg` gives the position angle of the zenith seen from the star (North
through East) from the telescope's altitude and azimuth and the site's latitude
(`parallactic_angle_from_hour_angle_deg` from the hour angle and declination, for an
equatorial telescope's header); the instrument turns it into a direction in the image
(`atmospec.spectro.adr`).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "ARCSEC_PER_RAD",
    "differential_refraction_arcsec",
    "parallactic_angle_deg",
    "parallactic_angle_from_hour_angle_deg",
    "refraction_arcsec",
    "refractivity",
    "saturation_vapour_pressure_hpa",
    "water_vapour_pressure_hpa",
]

#: Arcseconds in one radian.
ARCSEC_PER_RAD = 180.0 * 3600.0 / math.pi
#: mmHg per hPa (1 mmHg = 133.322 Pa).
_MMHG_PER_HPA = 100.0 / 133.322387415


def saturation_vapour_pressure_hpa(temperature_c: float) -> float:
    """Saturation pressure of water vapour over water, hPa (Buck 1981).

    Parameters
    ----------
    temperature_c : float
        Air temperature, °C.

    Returns
    -------
    float
        hPa (6.11 at 0 °C, 23.4 at 20 °C).
    """
    t = float(temperature_c)
    return 6.1121 * math.exp((18.678 - t / 234.5) * t / (257.14 + t))


def water_vapour_pressure_hpa(temperature_c: float, relative_humidity: float) -> float:
    """Partial pressure of water vapour, hPa, from the relative humidity in percent."""
    rh = min(max(float(relative_humidity), 0.0), 100.0)
    return rh / 100.0 * saturation_vapour_pressure_hpa(temperature_c)


def refractivity(wavelength_nm: ArrayLike, pressure_hpa: float, temperature_c: float,
                 vapour_pressure_hpa: float = 0.0) -> NDArray[np.float64]:
    """``n − 1`` of air at ``wavelength_nm`` (Edlén 1953 as Filippenko 1982 writes it).

    Parameters
    ----------
    wavelength_nm : array_like
        Wavelengths, nm (vacuum; the air–vacuum difference changes ``n − 1`` by < 10⁻⁹).
    pressure_hpa : float
        Air pressure, hPa.
    temperature_c : float
        Air temperature, °C.
    vapour_pressure_hpa : float
        Partial pressure of water vapour, hPa (`water_vapour_pressure_hpa`); 0: dry air.

    Returns
    -------
    numpy.ndarray
        ``n − 1`` (2.79·10⁻⁴ at 500 nm, 1013.25 hPa, 15 °C, dry).
    """
    s2 = (1e3 / np.asarray(wavelength_nm, dtype=np.float64)) ** 2
    dry15 = 64.328 + 29498.1 / (146.0 - s2) + 255.4 / (41.0 - s2)
    p = float(pressure_hpa) * _MMHG_PER_HPA
    t = float(temperature_c)
    scale = p * (1.0 + (1.049 - 0.0157 * t) * 1e-6 * p) / (720.883 * (1.0 + 0.003661 * t))
    f = float(vapour_pressure_hpa) * _MMHG_PER_HPA
    wet = f * (0.0624 - 0.000680 * s2) / (1.0 + 0.003661 * t)
    return 1e-6 * (dry15 * scale - wet)


def _tan_zenith(airmass: float) -> float:
    """tan z of the plane-parallel airmass sec z (0 for airmass ≤ 1)."""
    return math.sqrt(max(float(airmass) ** 2 - 1.0, 0.0))


def refraction_arcsec(wavelength_nm: ArrayLike, airmass: float, pressure_hpa: float,
                      temperature_c: float, vapour_pressure_hpa: float = 0.0
                      ) -> NDArray[np.float64]:
    """Refraction ``(n − 1) tan z`` at ``wavelength_nm``, arcsec (towards the zenith).

    Parameters
    ----------
    wavelength_nm : array_like
        Wavelengths, nm.
    airmass : float
        Airmass sec z of the line of sight (≥ 1).
    pressure_hpa, temperature_c, vapour_pressure_hpa : float
        As `refractivity`.

    Returns
    -------
    numpy.ndarray
        Arcsec.
    """
    return ARCSEC_PER_RAD * _tan_zenith(airmass) * refractivity(
        wavelength_nm, pressure_hpa, temperature_c, vapour_pressure_hpa)


def differential_refraction_arcsec(wavelength_nm: ArrayLike, reference_nm: float,
                                   airmass: float, pressure_hpa: float,
                                   temperature_c: float, vapour_pressure_hpa: float = 0.0
                                   ) -> NDArray[np.float64]:
    """Refraction at λ minus that at ``reference_nm``, arcsec: positive towards the zenith.

    Parameters
    ----------
    wavelength_nm : array_like
        Wavelengths, nm.
    reference_nm : float
        Wavelength whose position is kept, nm.
    airmass, pressure_hpa, temperature_c, vapour_pressure_hpa : float
        As `refraction_arcsec`.

    Returns
    -------
    numpy.ndarray
        Arcsec (−1.34″ … at 350 nm vs 500 nm, airmass 1.5, 800 hPa: Filippenko's Table 1).
    """
    tan_z = _tan_zenith(airmass)
    n = refractivity(np.append(np.asarray(wavelength_nm, dtype=np.float64).ravel(),
                               float(reference_nm)),
                     pressure_hpa, temperature_c, vapour_pressure_hpa)
    out = ARCSEC_PER_RAD * tan_z * (n[:-1] - n[-1])
    return out.reshape(np.shape(wavelength_nm))


def parallactic_angle_deg(altitude_deg: float, azimuth_deg: float,
                          latitude_deg: float) -> float:
    """Position angle of the zenith seen from the star, degrees North through East.

    Computed with unit vectors in the horizon frame (x North, y East, z up): the star
    ``s``, the celestial pole ``p`` and the zenith ``ẑ``; East at the star is ``s × p``,
    North ``(s × p) × s``, and the angle is that of ``ẑ`` projected on the sky there.
    The same as ``atan2(sin H, cos δ tan φ − sin δ cos H)`` from the hour angle H, without
    H's sign conventions (azimuth North through East, as the headers write it).

    Parameters
    ----------
    altitude_deg, azimuth_deg : float
        Altitude and azimuth of the star, degrees (azimuth from North through East).
    latitude_deg : float
        Latitude of the site, degrees (South negative).

    Returns
    -------
    float
        Degrees in (−180, 180]; 0 on the meridian towards the pole (star below the pole),
        180 on the meridian on the equator's side.

    Raises
    ------
    ValueError
        At the zenith or the pole, where the angle is undefined.
    """
    alt, az, lat = (math.radians(v) for v in (altitude_deg, azimuth_deg, latitude_deg))
    star = np.array([math.cos(alt) * math.cos(az), math.cos(alt) * math.sin(az),
                     math.sin(alt)])
    pole = np.array([math.cos(lat), 0.0, math.sin(lat)])
    east = np.cross(star, pole)
    norm = float(np.linalg.norm(east))
    zenith = np.array([0.0, 0.0, 1.0])
    up = zenith - float(zenith @ star) * star
    if norm < 1e-12 or float(np.linalg.norm(up)) < 1e-12:
        raise ValueError("the parallactic angle is undefined at the zenith and the pole")
    east /= norm
    north = np.cross(east, star)
    return math.degrees(math.atan2(float(up @ east), float(up @ north)))


def parallactic_angle_from_hour_angle_deg(hour_angle_deg: float, declination_deg: float,
                                          latitude_deg: float) -> float:
    """Parallactic angle from the hour angle and declination (an equatorial mount's header).

    ``q = atan2(sin H, cos δ tan φ − sin δ cos H)``: the position angle (North through
    East) of the zenith seen from the star, as `parallactic_angle_deg` gives it from the
    altitude and azimuth.

    Parameters
    ----------
    hour_angle_deg : float
        Hour angle, degrees (West of the meridian positive).
    declination_deg : float
        Declination of the star, degrees.
    latitude_deg : float
        Latitude of the site, degrees (South negative).

    Returns
    -------
    float
        Degrees in (−180, 180].

    Raises
    ------
    ValueError
        At the zenith or the pole, where the angle is undefined.
    """
    h, d, p = (math.radians(v) for v in (hour_angle_deg, declination_deg, latitude_deg))
    y = math.sin(h)
    x = math.cos(d) * math.tan(p) - math.sin(d) * math.cos(h)
    if math.hypot(x, y) < 1e-12:
        raise ValueError("the parallactic angle is undefined at the zenith or the pole")
    return math.degrees(math.atan2(y, x))
