"""The spectrograph of an instrument, read from ``data/instruments/<name>.yaml``: every
spectroscopic fact once.

A profile holds what the spectroscopy needs of a telescope + camera: pixel size and plate
scale, detector shape, the disperser-CCD distance law, the site's standard pressure,
collecting area, gain and read-noise defaults, the full-instrument throughput (telescope ×
camera QE, without the disperser and the filter) and the filter curves, and the dispersers
it carries (`DisperserSpec`: distance offset, tilt, where the acquisition puts the target,
order fractions of the simulator). The numbers and their sources are in the YAML files
(Spectractor's ``config/<instrument>.ini`` and ``ts_observatory_control`` mostly). The
disperser tables themselves (groove density, tilt maps, efficiencies) are read by
`atmospec.spectro.dispersers`.

Binning: the YAML numbers are for unbinned pixels; `InstrumentProfile.pixel_size_mm` and
`InstrumentProfile.plate_scale_at` scale them by the binning factor, so that a distance in
binned pixels × the binned pixel size is the same length in mm.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType

import numpy as np
import yaml

from atmospec.errors import BadInputError

__all__ = ["DisperserSpec", "InstrumentProfile", "known_instruments", "load_instrument",
           "read_table", "table_interpolator"]

#: Instruments with a profile in ``data/instruments/``.
_KNOWN = ("latiss", "ctio")
#: Disperser names meaning "nothing in the beam" (``empty``, ``empty_1``, ``none``, "").
_EMPTY = re.compile(r"(?i)^(empty(_\d+)?|none|unknown)?$")
#: ``first_order_direction`` to the unit vector ``(dx, dy)`` of the +1 order.
_DIRECTIONS = MappingProxyType({"-y": (0.0, -1.0), "+y": (0.0, 1.0), "+x": (1.0, 0.0),
                                "-x": (-1.0, 0.0)})


def read_table(relative_path: str) -> np.ndarray:
    """Read a whitespace-separated text table shipped in ``atmospec.data``.

    Parameters
    ----------
    relative_path : str
        Path below the ``atmospec.data`` package, e.g. ``"dispersers/holo4_003/N.txt"``.

    Returns
    -------
    numpy.ndarray
        2D float array (one row per line; ``#`` lines are comments).
    """
    ref = resources.files("atmospec.data").joinpath(*relative_path.split("/"))
    with ref.open("r") as f:
        return np.atleast_2d(np.loadtxt(f, dtype=np.float64, comments="#"))


def table_interpolator(wavelength_nm: np.ndarray, values: np.ndarray
                       ) -> Callable[[np.ndarray | float], np.ndarray]:
    """Linear interpolator of a tabulated curve of wavelength, holding the edge values.

    Spectractor fills transmissions with 0 outside their table and extrapolates order
    ratios linearly; holding the edge value instead keeps a forward model alive at
    1100 nm for tables ending at 1099 nm, and never makes a ratio negative.

    Parameters
    ----------
    wavelength_nm : numpy.ndarray
        Tabulated wavelengths, nm (any order: sorted here; some vendor files descend).
    values : numpy.ndarray
        Tabulated values.

    Returns
    -------
    callable
        ``f(wavelength_nm) -> numpy.ndarray`` of float64.
    """
    order = np.argsort(wavelength_nm, kind="stable")
    x = np.asarray(wavelength_nm, dtype=np.float64)[order].copy()
    y = np.asarray(values, dtype=np.float64)[order].copy()

    def interp(lam: np.ndarray | float) -> np.ndarray:
        return np.interp(np.asarray(lam, dtype=np.float64), x, y)

    return interp


@dataclass(frozen=True)
class DisperserSpec:
    """One slot of the disperser wheel as the instrument places it (``dispersers`` and
    ``empty_slot`` of ``data/instruments/<name>.yaml``)."""

    name: str
    """Disperser name as in the ``GRATING`` header keyword (``holo4_003``; ``empty`` for the
    empty slot)."""
    distance_offset_mm: float
    """Added to ``base + LINSPOS`` to give the disperser-CCD distance, mm (holo4_003's
    window)."""
    dispersion_direction: tuple[float, float]
    """Unit vector ``(dx, dy)`` of the +1 order in the assembled image, before the tilt (the
    instrument's ``first_order_direction``)."""
    tilt_deg: float | None
    """Counter-clockwise rotation of the dispersion axis in the assembled image, degrees: the
    simulator's constant tilt (None: not given)."""
    nominal_zeroth_order: tuple[float, float] | None
    """Where the acquisition puts the target's zeroth order, ``(x, y)`` unbinned pixel
    centres (None: not known; the zeroth order is then searched over the frame)."""
    order_fractions: tuple[tuple[int, float], ...]
    """``(order, fraction of the star's light)`` pairs, the simulator's simple transmission
    (empty when not given)."""

    @property
    def direction(self) -> tuple[float, float]:
        """Unit vector ``(dx, dy)`` of the +1 order after the tilt.

        Raises
        ------
        ValueError
            If the profile gives no tilt for this disperser.
        """
        if self.tilt_deg is None:
            raise ValueError(f"{self.name}: no tilt in the instrument profile")
        dx, dy = self.dispersion_direction
        t = math.radians(self.tilt_deg)
        c, s = math.cos(t), math.sin(t)
        norm = math.hypot(dx, dy)
        return ((c * dx - s * dy) / norm, (s * dx + c * dy) / norm)

    def order_fraction(self, order: int) -> float:
        """Fraction of the light in ``order`` (0 when the profile does not list it)."""
        return dict(self.order_fractions).get(order, 0.0)


@dataclass(frozen=True)
class InstrumentProfile:
    """A telescope + camera as the spectroscopy sees it (``data/instruments/<name>.yaml``)."""

    name: str
    """Instrument name, lower case (``latiss``, ``ctio``)."""
    pixel_size_um: float
    """Unbinned pixel pitch, µm."""
    plate_scale_arcsec: float
    """Unbinned plate scale, arcsec per pixel."""
    detector_shape: tuple[int, int]
    """Unbinned imaging area ``(ny, nx)`` of the assembled image."""
    telescope_diameter_m: float
    """Primary mirror diameter, m."""
    collecting_area_cm2: float
    """Effective collecting area (obscuration removed), cm² (Spectractor ``OBS_SURFACE``)."""
    gain_e_per_adu: float | None
    """Default gain, e⁻/ADU (None: not given)."""
    read_noise_e: float | None
    """Default read noise, e⁻ (None: not given; see the camera description)."""
    max_adu: float | None
    """Approximate saturation, ADU (Spectractor ``CCD_MAXADU``)."""
    standard_pressure_hpa: float
    """Surface pressure of the site used when a header has none, hPa."""
    d2ccd_base_mm: float | None
    """Disperser-CCD distance at ``LINSPOS = 0`` before the disperser offset, mm; None for
    an instrument with a fixed disperser distance."""
    d2ccd_default_mm: float
    """Disperser-CCD distance without ``LINSPOS`` (or the fixed one), mm."""
    d2ccd_error_mm: float
    """Uncertainty on the disperser-CCD distance, mm."""
    default_ratio_order_2over1: float
    """Order 2 / order 1 ratio used for a disperser without a measured table."""
    disperser_table_frame: str
    """``"transpose_flip"``: disperser tables are in Spectractor's frame, the assembled image
    turned by ``data.T[::-1, ::-1]`` (LATISS); ``"identity"``: the assembled frame (CTIO)."""
    first_order_direction: str
    """Direction of the +1 order in the images as read: ``"-y"`` (LATISS assembled frame,
    what the extraction works in) or ``"+x"`` (CTIO: the image is turned by
    ``data.T[::-1, ::-1]`` before extraction, Spectractor's own frame)."""
    sky_parity: int | None
    """+1: with the position angle 0 (+y North) East is towards -x; -1: towards +x; None:
    not known (no pointing offset is applied to the zeroth-order prior, no differential
    refraction is modelled)."""
    site_latitude_deg: float | None
    """Latitude of the site, degrees (South negative): the parallactic angle of the
    differential refraction; None: not known."""
    sky_rotation_deg: float | None
    """Position angle of the images' +y (North through East), degrees, for an instrument
    whose camera does not rotate and whose headers give no ``ROTPA`` (CTIO: 180°, North
    towards −y); None: the header's ``ROTPA`` (`rotation_angle`)."""
    typical_fwhm_arcsec: float
    """Typical seeing FWHM, arcsec: the starting width of the zeroth-order search."""
    throughput_file: str
    """Full-instrument throughput table, relative to ``data/instruments/``."""
    filter_files: Mapping[str, str]
    """Filter name to transmission table, relative to ``data/instruments/``."""
    dispersers: Mapping[str, DisperserSpec]
    """Dispersers of the instrument (folders of ``data/dispersers/``), in the file's order."""
    empty_slot: DisperserSpec | None
    """The empty slot (imaging: ``empty``, ``empty_1`` ...), None when not described."""

    @property
    def filters(self) -> tuple[str, ...]:
        """Names of the filters with a transmission curve."""
        return tuple(self.filter_files)

    def pixel_size_mm(self, binning: int = 1) -> float:
        """Pixel pitch in mm of a ``binning``×``binning`` binned image."""
        return self.pixel_size_um * 1e-3 * _check_binning(binning)

    def plate_scale_at(self, binning: int = 1) -> float:
        """Plate scale in arcsec per pixel of a ``binning``×``binning`` binned image."""
        return self.plate_scale_arcsec * _check_binning(binning)

    def shape_at(self, binning: int = 1) -> tuple[int, int]:
        """Detector shape ``(ny, nx)`` after binning (partial edge pixels dropped)."""
        b = _check_binning(binning)
        return (self.detector_shape[0] // b, self.detector_shape[1] // b)

    def sky_to_image(self, east: float | np.ndarray, north: float | np.ndarray,
                     rotation_angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
        """A vector on the sky (towards East and North) as ``(dx, dy)`` in the images as read.

        The one place of the sky orientation of the images: +y points at the position angle
        ``rotation_angle_deg`` (``ROTPA``, North through East) and +x at
        ``rotation_angle_deg − 90°`` for `sky_parity` +1 (East towards −x when North is
        +y, as on the sky seen from the ground), ``+ 90°`` for −1. Units are kept (arcsec in,
        arcsec out).

        Raises
        ------
        ValueError
            When the profile does not know its parity (`sky_parity` None).
        """
        if self.sky_parity is None:
            raise ValueError(f"instrument {self.name}: sky parity not known")
        pa = math.radians(rotation_angle_deg)
        e = np.asarray(east, dtype=np.float64)
        n = np.asarray(north, dtype=np.float64)
        dx = self.sky_parity * (-e * math.cos(pa) + n * math.sin(pa))
        dy = e * math.sin(pa) + n * math.cos(pa)
        return dx, dy

    def rotation_angle(self, header_rotation_deg: float | None) -> float | None:
        """Position angle of the images' +y: the header's ``ROTPA`` when it gives one, else
        the profile's fixed `sky_rotation_deg` (None when neither is known)."""
        return header_rotation_deg if header_rotation_deg is not None \
            else self.sky_rotation_deg

    def to_pixels(self, distance_mm: float | np.ndarray, binning: int = 1) -> np.ndarray:
        """A distance on the detector, mm, in (binned) pixels."""
        return np.asarray(distance_mm, dtype=np.float64) / self.pixel_size_mm(binning)

    def disperser_spec(self, name: str) -> DisperserSpec:
        """The slot of disperser ``name`` (``empty_1`` and the like: the empty slot).

        Raises
        ------
        KeyError
            If the instrument has no such disperser (or no described empty slot).
        """
        key = name.strip()
        if _EMPTY.match(key) and self.empty_slot is not None:
            return self.empty_slot
        try:
            return self.dispersers[key]
        except KeyError:
            known = ", ".join(sorted([*self.dispersers,
                                      *(("empty",) if self.empty_slot else ())]))
            raise KeyError(f"unknown disperser {name!r} (known: {known})") from None

    def d2ccd_mm(self, disperser: str, linspos_mm: float | None = None) -> float:
        """Disperser-CCD distance D, mm: the one place of the law.

        ``base + LINSPOS + offset(disperser)`` when the instrument has a disperser stage and
        ``linspos_mm`` is given; the default distance otherwise.

        Raises
        ------
        KeyError
            For a stage distance of a disperser the instrument does not have.
        """
        if self.d2ccd_base_mm is None or linspos_mm is None:
            return self.d2ccd_default_mm
        return (self.d2ccd_base_mm + float(linspos_mm)
                + self.disperser_spec(disperser).distance_offset_mm)

    def throughput(self, wavelength_nm: np.ndarray | float) -> np.ndarray:
        """Full-instrument throughput (telescope × camera QE, no disperser, no filter).

        Linear in the table, edge values held outside it.
        """
        return _interpolator(f"instruments/{self.throughput_file}")(wavelength_nm)

    def filter_transmission(self, name: str, wavelength_nm: np.ndarray | float) -> np.ndarray:
        """Transmission of filter ``name`` at ``wavelength_nm`` (1 for an empty slot).

        Raises
        ------
        BadInputError
            If the instrument has no curve for this filter.
        """
        if name.strip().lower() in ("", "empty", "none") or name.lower().startswith("empty_"):
            return np.ones_like(np.asarray(wavelength_nm, dtype=np.float64))
        try:
            path = self.filter_files[name]
        except KeyError:
            known = ", ".join(sorted(self.filter_files))
            raise BadInputError(name, f"unknown filter for {self.name} (known: {known})") from None
        return _interpolator(f"instruments/{path}")(wavelength_nm)


def _check_binning(binning: int) -> int:
    b = int(binning)
    if b < 1 or b != binning:
        raise ValueError(f"binning must be a positive integer, got {binning!r}")
    return b


@cache
def _interpolator(relative_path: str) -> Callable[[np.ndarray | float], np.ndarray]:
    # Tables are small; caching keeps repeated forward-model calls from re-reading them.
    table = read_table(relative_path)
    return table_interpolator(table[:, 0], table[:, 1])


def known_instruments() -> tuple[str, ...]:
    """Names accepted by `load_instrument`."""
    return _KNOWN


def load_instrument(name: str = "latiss") -> InstrumentProfile:
    """Load the instrument profile ``data/instruments/<name>.yaml`` (cached).

    Parameters
    ----------
    name : str
        ``"latiss"`` or ``"ctio"``, case-insensitive.

    Returns
    -------
    InstrumentProfile
        The frozen profile (the same object on every call).

    Raises
    ------
    BadInputError
        If no profile is shipped for ``name``.
    """
    key = name.strip().lower()
    if key not in _KNOWN:
        raise BadInputError(name, f"unknown instrument (known: {', '.join(_KNOWN)})")
    return _load(key)


def _opt(value: object) -> float | None:
    return None if value is None else float(value)


def _slot(name: str, raw: Mapping | None, direction: tuple[float, float]) -> DisperserSpec:
    """A disperser of the YAML; absent facts are None (or no offset, no order fractions)."""
    raw = raw or {}
    xy = raw.get("nominal_zeroth_order_xy")
    return DisperserSpec(
        name=name,
        distance_offset_mm=float(raw.get("distance_offset_mm", 0.0)),
        dispersion_direction=direction,
        tilt_deg=_opt(raw.get("tilt_deg")),
        nominal_zeroth_order=None if xy is None else (float(xy[0]), float(xy[1])),
        order_fractions=tuple(sorted((int(k), float(v))
                                     for k, v in (raw.get("order_fractions") or {}).items())),
    )


@cache
def _load(name: str) -> InstrumentProfile:
    ref = resources.files("atmospec.data").joinpath("instruments", f"{name}.yaml")
    raw = yaml.safe_load(ref.read_text())
    d2 = raw["disperser_to_ccd"]
    first = str(raw["first_order_direction"])
    direction = _DIRECTIONS[first]
    empty = raw.get("empty_slot")
    parity = raw.get("sky_parity")
    return InstrumentProfile(
        name=str(raw["name"]),
        pixel_size_um=float(raw["pixel_size_um"]),
        plate_scale_arcsec=float(raw["plate_scale_arcsec"]),
        detector_shape=(int(raw["detector_shape"][0]), int(raw["detector_shape"][1])),
        telescope_diameter_m=float(raw["telescope_diameter_m"]),
        collecting_area_cm2=float(raw["collecting_area_cm2"]),
        gain_e_per_adu=_opt(raw.get("gain_e_per_adu")),
        read_noise_e=_opt(raw.get("read_noise_e")),
        max_adu=_opt(raw.get("max_adu")),
        standard_pressure_hpa=float(raw["standard_pressure_hpa"]),
        d2ccd_base_mm=_opt(d2.get("base_mm")),
        d2ccd_default_mm=float(d2["default_mm"]),
        d2ccd_error_mm=float(d2["error_mm"]),
        default_ratio_order_2over1=float(raw["default_ratio_order_2over1"]),
        disperser_table_frame=str(raw["disperser_table_frame"]),
        first_order_direction=first,
        sky_parity=None if parity is None else int(parity),
        site_latitude_deg=_opt(raw.get("site_latitude_deg")),
        sky_rotation_deg=_opt(raw.get("sky_rotation_deg")),
        typical_fwhm_arcsec=float(raw["typical_fwhm_arcsec"]),
        throughput_file=str(raw["throughput_file"]),
        filter_files=MappingProxyType({str(k): str(v) for k, v in raw["filters"].items()}),
        dispersers=MappingProxyType({str(k): _slot(str(k), v, direction)
                                     for k, v in raw["dispersers"].items()}),
        empty_slot=None if empty is None else _slot("empty", empty, direction),
    )
