"""Dispersers (gratings, Ronchi rulings, holograms) and the dispersion law.

A `Disperser` is read by `load_disperser` from Spectractor's disperser tables copied in
``data/dispersers/<name>/`` (the ``<name>.ini`` when there is one, as Spectractor prefers,
else ``N.txt``, ``hologram_center.txt``, ``hologram_grooves_per_mm.txt``,
``hologram_rotation_angles.txt``, ``transmission.txt``, ``ratio_order_2over1.txt``,
``ratio_order_3over2.txt``).

Dispersion law (Spectractor's, ``extractor/dispersers.py``)::

    sin θ − sin θ₀ = m N λ,        u · pixel / D = tan θ − tan θ₀

with N the groove density (lines/mm) at the zeroth order, m the order, D the disperser-CCD
distance, θ₀ the zeroth order's field angle along the dispersion axis and u the distance
from the zeroth order along that axis. `grating_offset_px` and `grating_wavelength_nm` are
the only implementation of it in atmospec (`atmospec.sim.dispersed` delegates here).

Frames. The position-dependent tables (groove density and rotation-angle maps, hologram
centre, constant tilt) are in the frame Spectractor works in, in unbinned pixels:

* LATISS: the assembled image turned by ``data.T[::-1, ::-1]`` so that the first order runs
  along +x. A table pixel ``(x_S, y_S)`` is ``(4071 − y_S, 3999 − x_S)`` in our assembled
  (Rubin) frame, and since that map is a reflection a table angle α (counter-clockwise from
  +x_S) is −α in ours, measured counter-clockwise from the +1 order's nominal direction −y.
* CTIO: the detector as read (identity).

`Disperser.lines_per_mm_at` and `Disperser.tilt_deg_at` take positions in the assembled frame
(optionally binned) and convert; `Disperser.to_table_frame` exposes the conversion.

Map interpolation (as Spectractor): inside the convex hull of the measured points a
Clough–Tocher C¹ piecewise-cubic interpolant on their Delaunay triangulation
(`scipy.interpolate.CloughTocher2DInterpolator`); outside it a least-squares quadratic
surface in (x, y) fitted to all the points (Spectractor's ``fit_poly2d(order=2)``).
Two deliberate departures: Spectractor truncates N to an integer inside the map
(``int(N_interp(x))``, up to 1 line/mm ≈ 0.3 % on HoloAmAg) and we do not; Spectractor fills
the angle map outside the hull with the constant tilt (0 for an ``.ini`` disperser) while we
use the quadratic surface, as for N (holo4_003's nominal zeroth order lies just outside its
map, where the map trend gives −0.26°, not 0°).
"""

from __future__ import annotations

import configparser
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
from scipy.interpolate import CloughTocher2DInterpolator

from atmospec.camera.spectrograph import (
    InstrumentProfile,
    load_instrument,
    read_table,
    table_interpolator,
)
from atmospec.errors import BadInputError

__all__ = [
    "Disperser",
    "PositionMap",
    "grating_offset_px",
    "grating_wavelength_nm",
    "known_dispersers",
    "load_disperser",
]


# --------------------------------------------------------------------------- dispersion law


def grating_offset_px(
    wavelength_nm: np.ndarray | float,
    order: int,
    lines_per_mm: float,
    d2ccd_mm: float,
    pixel_mm: float,
    theta0: float = 0.0,
) -> np.ndarray:
    """Distance from the zeroth order, along the dispersion axis, where λ lands in ``order``.

    ``sin θ = sin θ₀ + m N λ`` and ``u = D (tan θ − tan θ₀) / pixel``.

    Parameters
    ----------
    wavelength_nm : array_like
        Wavelengths, nm.
    order : int
        Diffraction order m (negative orders land on the other side; 0 gives 0).
    lines_per_mm : float
        Groove density N, lines per mm.
    d2ccd_mm : float
        Disperser-CCD distance D, mm.
    pixel_mm : float
        Pixel pitch, mm (of the binned image if the offsets are in binned pixels).
    theta0 : float
        Field angle of the zeroth order along the dispersion axis, radians.

    Returns
    -------
    numpy.ndarray
        Offsets in pixels (NaN where ``|sin θ| > 1``: the order does not exist).
    """
    lam_mm = np.asarray(wavelength_nm, dtype=np.float64) * 1e-6
    sin_t = math.sin(theta0) + order * lines_per_mm * lam_mm
    with np.errstate(invalid="ignore"):
        theta = np.arcsin(np.where(np.abs(sin_t) <= 1.0, sin_t, np.nan))
    return d2ccd_mm * (np.tan(theta) - math.tan(theta0)) / pixel_mm


def grating_wavelength_nm(
    offset_px: np.ndarray | float,
    order: int,
    lines_per_mm: float,
    d2ccd_mm: float,
    pixel_mm: float,
    theta0: float = 0.0,
) -> np.ndarray:
    """Inverse of `grating_offset_px`: the wavelength (nm) landing at ``offset_px``.

    Raises
    ------
    ValueError
        For order 0 or a zero groove density (no dispersion).
    """
    if order == 0 or lines_per_mm == 0:
        raise ValueError("the zeroth order (or no grating) does not disperse")
    tan_t = np.asarray(offset_px, dtype=np.float64) * pixel_mm / d2ccd_mm + math.tan(theta0)
    theta = np.arctan(tan_t)
    return (np.sin(theta) - math.sin(theta0)) / (order * lines_per_mm) * 1e6


# --------------------------------------------------------------------------- position maps


@dataclass(frozen=True, eq=False)
class PositionMap:
    """A quantity measured at scattered detector positions (table frame, unbinned pixels)."""

    x: np.ndarray
    """x of the measured points, pixels."""
    y: np.ndarray
    """y of the measured points, pixels."""
    values: np.ndarray
    """Measured values."""
    _inside: CloughTocher2DInterpolator = field(repr=False)
    """Clough–Tocher interpolant (NaN outside the convex hull)."""
    _quadratic: np.ndarray = field(repr=False)
    """Coefficients of the quadratic surface in normalised coordinates (1, u, v, u², uv, v²)."""
    _norm: tuple[float, float, float, float] = field(repr=False)
    """``(x mean, x scale, y mean, y scale)``: normalisation keeping the fit well conditioned."""

    @classmethod
    def from_points(cls, x: np.ndarray, y: np.ndarray, values: np.ndarray) -> PositionMap:
        """Build the interpolant and the quadratic fit of ``values`` at ``(x, y)``."""
        x, y, v = (np.asarray(a, dtype=np.float64).copy() for a in (x, y, values))
        norm = (float(x.mean()), float(np.ptp(x) or 1.0), float(y.mean()), float(np.ptp(y) or 1.0))
        design = _quadratic_terms(x, y, norm)
        coef, *_ = np.linalg.lstsq(design, v, rcond=None)
        inside = CloughTocher2DInterpolator(np.column_stack([x, y]), v)
        return cls(x=x, y=y, values=v, _inside=inside, _quadratic=coef, _norm=norm)

    def __call__(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
        """The map at ``(x, y)`` (table frame): interpolated inside the hull, fitted outside."""
        xb, yb = np.broadcast_arrays(np.asarray(x, dtype=np.float64),
                                     np.asarray(y, dtype=np.float64))
        out = np.asarray(self._inside(xb, yb), dtype=np.float64)
        outside = ~np.isfinite(out)
        if outside.any():
            out[outside] = self.fitted(xb[outside], yb[outside])
        return out

    def fitted(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
        """The quadratic surface at ``(x, y)``."""
        return _quadratic_terms(np.asarray(x, dtype=np.float64),
                                np.asarray(y, dtype=np.float64), self._norm) @ self._quadratic


def _quadratic_terms(x: np.ndarray, y: np.ndarray, norm: tuple[float, float, float, float]):
    u = (x - norm[0]) / norm[1]
    v = (y - norm[2]) / norm[3]
    return np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=-1)


# --------------------------------------------------------------------------- disperser


@dataclass(frozen=True, eq=False)
class Disperser:
    """A disperser with its groove density, tilt, efficiencies and dispersion law."""

    name: str
    """Disperser name as in the ``GRATING`` header keyword (``holo4_003``, ``HoloAmAg``...)."""
    full_name: str
    """Descriptive name from ``full_name.txt`` / the ``.ini``."""
    instrument: InstrumentProfile
    """Instrument carrying it (pixel size, frame of the tables, D2CCD law)."""
    lines_per_mm: float
    """Nominal groove density N, lines/mm (``N.txt`` / ``.ini``; for a hologram the value of
    ``N.txt``, which can differ from the map at a given position)."""
    lines_per_mm_err: float
    """Uncertainty on N, lines/mm."""
    grooves_map: PositionMap | None
    """N(x, y) in the table frame (holograms), or None for a constant N."""
    tilt_deg: float
    """Constant tilt of the dispersion axis in the table frame, degrees counter-clockwise
    (``.ini`` / ``hologram_center.txt``; for an angle map given alone, the map at the
    hologram centre)."""
    tilt_map: PositionMap | None
    """Tilt(x, y) in the table frame, degrees, or None for the constant tilt."""
    center: tuple[float, float] | None
    """Hologram centre in the table frame, unbinned pixels (None if not given)."""
    transmission_table: tuple[np.ndarray, np.ndarray] | None
    """``(λ nm, T)`` efficiency of order 1, or None (T = 1, Spectractor's default)."""
    ratio_2over1_table: tuple[np.ndarray, np.ndarray] | None
    """``(λ nm, ratio)`` of order 2 to order 1, or None (the constant below)."""
    ratio_3over2_table: tuple[np.ndarray, np.ndarray] | None
    """``(λ nm, ratio)`` of order 3 to order 2, or None (the constant below)."""
    ratio_2over1_constant: float
    """Order 2/1 ratio without a table (``.ini`` float, else the instrument default)."""
    ratio_3over2_constant: float
    """Order 3/2 ratio without a table (``.ini`` float, else 0: Spectractor models no third
    order without a table)."""

    # ----------------------------------------------------------------- frames

    def to_table_frame(self, x: np.ndarray | float, y: np.ndarray | float,
                       binning: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Assembled-frame pixel centres (binned by ``binning``) to unbinned table-frame ones.

        A binned pixel i covers unbinned pixels ``b·i … b·i + b − 1``: its centre is
        ``b·i + (b − 1)/2`` (Spectractor divides table coordinates by the binning, 0.5 px
        different for b = 2, negligible for these smooth maps).
        """
        b = int(binning)
        xu = np.asarray(x, dtype=np.float64) * b + 0.5 * (b - 1)
        yu = np.asarray(y, dtype=np.float64) * b + 0.5 * (b - 1)
        if self.instrument.disperser_table_frame == "transpose_flip":
            ny, nx = self.instrument.detector_shape
            return (ny - 1) - yu, (nx - 1) - xu
        return xu, yu

    def from_table_frame(self, x_s: np.ndarray | float, y_s: np.ndarray | float
                         ) -> tuple[np.ndarray, np.ndarray]:
        """Unbinned table-frame pixel centres to unbinned assembled-frame ones."""
        xs = np.asarray(x_s, dtype=np.float64)
        ys = np.asarray(y_s, dtype=np.float64)
        if self.instrument.disperser_table_frame == "transpose_flip":
            ny, nx = self.instrument.detector_shape
            return (nx - 1) - ys, (ny - 1) - xs
        return xs, ys

    @property
    def _angle_sign(self) -> float:
        # A reflection (transpose + flips) turns counter-clockwise angles clockwise.
        return -1.0 if self.instrument.disperser_table_frame == "transpose_flip" else 1.0

    # ----------------------------------------------------------------- maps

    def lines_per_mm_at(self, x: np.ndarray | float, y: np.ndarray | float,
                        binning: int = 1) -> np.ndarray:
        """Groove density N at assembled-frame position(s) ``(x, y)``, lines/mm."""
        if self.grooves_map is None:
            return np.full(np.broadcast(np.asarray(x), np.asarray(y)).shape, self.lines_per_mm)
        return self.grooves_map(*self.to_table_frame(x, y, binning))

    def tilt_deg_at(self, x: np.ndarray | float, y: np.ndarray | float,
                    binning: int = 1) -> np.ndarray:
        """Tilt of the dispersion axis at assembled-frame ``(x, y)``, degrees counter-clockwise
        in the assembled frame (for LATISS, from the +1 order's nominal direction −y)."""
        if self.tilt_map is None:
            table = np.full(np.broadcast(np.asarray(x), np.asarray(y)).shape, self.tilt_deg)
        else:
            table = self.tilt_map(*self.to_table_frame(x, y, binning))
        return self._angle_sign * table

    # ----------------------------------------------------------------- efficiencies

    def transmission(self, wavelength_nm: np.ndarray | float) -> np.ndarray:
        """Efficiency of order 1 (``transmission.txt``; 1 without a table)."""
        return self._curve(self.transmission_table, 1.0)(wavelength_nm)

    def ratio_order_2over1(self, wavelength_nm: np.ndarray | float) -> np.ndarray:
        """Order 2 / order 1 flux ratio at λ."""
        return self._curve(self.ratio_2over1_table, self.ratio_2over1_constant)(wavelength_nm)

    def ratio_order_3over2(self, wavelength_nm: np.ndarray | float) -> np.ndarray:
        """Order 3 / order 2 flux ratio at λ."""
        return self._curve(self.ratio_3over2_table, self.ratio_3over2_constant)(wavelength_nm)

    @property
    def has_order3(self) -> bool:
        """Whether the disperser gives a third order (an r₃₂ table or a non-zero ``.ini``
        constant): without one Spectractor, the simulator and the contamination model draw
        none."""
        return self.ratio_3over2_table is not None or self.ratio_3over2_constant > 0

    def order_efficiency(self, order: int, wavelength_nm: np.ndarray | float) -> np.ndarray:
        """Efficiency of order 1, 2 or 3: T, T·r₂₁, T·r₂₁·r₃₂ (Spectractor's chain)."""
        if order not in (1, 2, 3):
            raise ValueError(f"efficiencies are tabulated for orders 1-3, not {order}")
        eff = self.transmission(wavelength_nm)
        if order >= 2:
            eff = eff * self.ratio_order_2over1(wavelength_nm)
        if order == 3:
            eff = eff * self.ratio_order_3over2(wavelength_nm)
        return eff

    @staticmethod
    def _curve(table: tuple[np.ndarray, np.ndarray] | None, constant: float
               ) -> Callable[[np.ndarray | float], np.ndarray]:
        if table is None:
            return lambda lam: np.full(np.shape(lam), constant, dtype=np.float64)
        return table_interpolator(*table)

    # ----------------------------------------------------------------- dispersion

    def d2ccd_mm(self, info_or_linspos: Any = None) -> float:
        """Disperser-CCD distance D, mm.

        Parameters
        ----------
        info_or_linspos : ObservationInfo, float or None
            An `atmospec.camera.translator.ObservationInfo` (its ``linspos``), a ``LINSPOS``
            in mm, or None. The instrument's law (`InstrumentProfile.d2ccd_mm`): ``base +
            LINSPOS + the disperser's offset``, the default distance without LINSPOS or
            without a disperser stage (CTIO).
        """
        linspos = getattr(info_or_linspos, "linspos", info_or_linspos)
        return self.instrument.d2ccd_mm(self.name, None if linspos is None else float(linspos))

    def _n(self, at: tuple[float, float] | None, binning: int) -> float:
        if at is None:
            return self.lines_per_mm
        return float(self.lines_per_mm_at(at[0], at[1], binning))

    def offset_px(self, wavelength_nm: np.ndarray | float, order: int, d2ccd_mm: float,
                  pixel_mm: float, theta0: float = 0.0, *,
                  at: tuple[float, float] | None = None, binning: int = 1) -> np.ndarray:
        """Distance (pixels) from the zeroth order where λ lands in ``order`` (0 to 3, or
        negative), along the dispersion axis.

        Parameters
        ----------
        wavelength_nm : array_like
            Wavelengths, nm.
        order : int
            Diffraction order.
        d2ccd_mm : float
            Disperser-CCD distance, mm (`d2ccd_mm`).
        pixel_mm : float
            Pixel pitch of the image the offsets are counted in, mm.
        theta0 : float
            Zeroth order's field angle along the dispersion axis, radians.
        at : (x, y), optional
            Zeroth-order position in the assembled frame (binned by ``binning``): N is taken
            from the groove map there, as Spectractor does; None: the nominal N.
        binning : int
            Binning of ``at``.

        Returns
        -------
        numpy.ndarray
            Offsets, pixels (NaN where the order does not exist).
        """
        return grating_offset_px(wavelength_nm, order, self._n(at, binning), d2ccd_mm,
                                 pixel_mm, theta0)

    def wavelength_nm(self, offset_px: np.ndarray | float, order: int, d2ccd_mm: float,
                      pixel_mm: float, theta0: float = 0.0, *,
                      at: tuple[float, float] | None = None, binning: int = 1) -> np.ndarray:
        """Inverse of `offset_px`: the wavelength (nm) landing ``offset_px`` from the zeroth
        order in ``order`` (≠ 0). Same parameters as `offset_px`."""
        return grating_wavelength_nm(offset_px, order, self._n(at, binning), d2ccd_mm,
                                     pixel_mm, theta0)


# --------------------------------------------------------------------------- loading


def known_dispersers(instrument: str = "latiss") -> tuple[str, ...]:
    """Dispersers of ``instrument`` that `load_disperser` accepts."""
    return tuple(load_instrument(instrument).dispersers)


def load_disperser(name: str, instrument: str = "latiss") -> Disperser:
    """Load disperser ``name`` of ``instrument`` from ``data/dispersers/<name>/`` (cached).

    Parameters
    ----------
    name : str
        Disperser name as in the header (``holo4_003``, ``ronchi170lpmm``, ``HoloAmAg``...).
    instrument : str
        ``"latiss"`` or ``"ctio"``.

    Returns
    -------
    Disperser
        The frozen disperser (the same object on every call).

    Raises
    ------
    BadInputError
        If the instrument has no such disperser.
    """
    profile = load_instrument(instrument)
    key = name.strip()
    if key not in profile.dispersers:
        raise BadInputError(name, f"unknown disperser for {profile.name} "
                                  f"(known: {', '.join(profile.dispersers)})")
    return _load(key, profile.name)


def _ref(name: str, filename: str):
    return resources.files("atmospec.data").joinpath("dispersers", name, filename)


def _exists(name: str, filename: str) -> bool:
    return _ref(name, filename).is_file()


def _table(name: str, filename: str) -> np.ndarray:
    return read_table(f"dispersers/{name}/{filename}")


def _map(name: str, filename: str) -> PositionMap:
    a = _table(name, filename)
    return PositionMap.from_points(a[:, 0], a[:, 1], a[:, 2])


def _curve_table(name: str, filename: str) -> tuple[np.ndarray, np.ndarray]:
    a = _table(name, filename)
    return a[:, 0].copy(), a[:, 1].copy()


def _float_or_file(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value.strip()


@cache
def _load(name: str, instrument: str) -> Disperser:
    profile = load_instrument(instrument)
    n_nominal, n_err = (float(v) for v in _table(name, "N.txt").ravel()[:2])
    full_name = (_ref(name, "full_name.txt").read_text().strip()
                 if _exists(name, "full_name.txt") else name)
    grooves_map = tilt_map = None
    tilt = 0.0
    center: tuple[float, float] | None = None
    tables: dict[str, tuple[np.ndarray, np.ndarray] | None] = {
        "transmission": None, "ratio_order_2over1": None, "ratio_order_3over2": None}
    constants = {"ratio_order_2over1": profile.default_ratio_order_2over1,
                 "ratio_order_3over2": 0.0}
    if _exists(name, f"{name}.ini"):
        # Spectractor's preferred description: values are floats or file names.
        ini = configparser.ConfigParser()
        ini.read_string(_ref(name, f"{name}.ini").read_text())
        main = ini["main"]
        full_name = main.get("full_name", full_name).strip()
        n_value = _float_or_file(main["N"])
        if isinstance(n_value, str):
            grooves_map = _map(name, n_value)
        else:
            n_nominal = n_value
        n_err = float(main.get("N_err", n_err))
        center = (float(main["x_center"]), float(main["y_center"]))
        t_value = _float_or_file(main["theta_tilt"])
        if isinstance(t_value, str):
            tilt_map = _map(name, t_value)
            tilt = float(tilt_map(*center))
        else:
            tilt = t_value
        if ini.has_section("transmissions"):
            for key, value in ini["transmissions"].items():
                v = _float_or_file(value)
                if isinstance(v, str):
                    tables[key] = _curve_table(name, v)
                elif key == "transmission":
                    tables[key] = (np.array([0.0, 1e5]), np.array([v, v]))
                else:
                    constants[key] = v
    else:
        if _exists(name, "hologram_center.txt"):
            # Second line: x_center y_center theta_tilt_in_degree.
            row = _table(name, "hologram_center.txt").ravel()
            center, tilt = (float(row[0]), float(row[1])), float(row[2])
        if _exists(name, "hologram_grooves_per_mm.txt"):
            grooves_map = _map(name, "hologram_grooves_per_mm.txt")
        if _exists(name, "hologram_rotation_angles.txt"):
            tilt_map = _map(name, "hologram_rotation_angles.txt")
        for key in tables:
            if _exists(name, f"{key}.txt"):
                tables[key] = _curve_table(name, f"{key}.txt")
    return Disperser(
        name=name, full_name=full_name, instrument=profile, lines_per_mm=n_nominal,
        lines_per_mm_err=n_err, grooves_map=grooves_map, tilt_deg=tilt, tilt_map=tilt_map,
        center=center, transmission_table=tables["transmission"],
        ratio_2over1_table=tables["ratio_order_2over1"],
        ratio_3over2_table=tables["ratio_order_3over2"],
        ratio_2over1_constant=float(constants["ratio_order_2over1"]),
        ratio_3over2_constant=float(constants["ratio_order_3over2"]),
    )
