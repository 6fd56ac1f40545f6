"""The first-order spectrum of a dispersed exposure, in memory: `Spectrum`.

Its parts mirror the extensions of Spectractor's spectrum file, which is our spectrum file
format: wavelength, flux and error (primary ``(3, N)``), the flux covariance (``SPEC_COV``),
the second order (``ORDER2``), the zeroth-order cutout (``ORDER0``), the spectrogram
(``S_DATA`` …, `Spectrogram`), the trace/PSF table (``PSF_TAB``) and the fitted lines
(``LINES``), with the primary header. `spectractor_bridge.spectrum` reads and writes the
file and documents the layout, HDU by HDU.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import Row, Table
from astropy.units import UnitsWarning

__all__ = [
    "SPECTROGRAM_EXTENSIONS",
    "ImageExtension",
    "Spectrogram",
    "Spectrum",
    "find_line",
]

#: Spectrogram extensions in the order Spectractor writes them, and our attribute names.
SPECTROGRAM_EXTENSIONS: Mapping[str, str] = MappingProxyType({
    "S_DATA": "data",
    "S_ERR": "err",
    "S_BGD": "background",
    "S_BGD_ER": "background_err",
    "S_FIT": "fit",
    "S_RES": "residuals",
})

# Cards astropy regenerates for every HDU: keeping them in our headers would fight the writer
# (CHECKSUM and DATASUM: every FITS file is written with them, atmospec.io.write_hdul_atomic).
_STRUCTURAL = re.compile(
    r"^(SIMPLE|EXTEND|BITPIX|NAXIS\d*|PCOUNT|GCOUNT|XTENSION|EXTNAME|EXTVER|TFIELDS|CHECKSUM|"
    r"DATASUM|"
    r"T(TYPE|FORM|UNIT|DISP|NULL|SCAL|ZERO|DIM)\d+)$"
)
# Spectractor writes its plot labels in LaTeX: 'erg/s/cm$^2$/nm'.
_LATEX_POWER = re.compile(r"\$\^\{?(-?\d+)\}?\$")


def _clean_header(header: fits.Header | None, keep_extname: bool = False) -> fits.Header:
    """Copy of ``header`` without the structural cards astropy rewrites on output.

    ``keep_extname`` keeps a primary HDU's ``EXTNAME`` (2021/2023 Spectractor files call it
    ``SPECTRUM``); an extension's name is set from its role when written.
    """
    out = fits.Header()
    if header is None:
        return out
    for card in header.cards:
        if (card.keyword == "EXTNAME" and keep_extname) or not _STRUCTURAL.match(card.keyword):
            # New Card objects: astropy would otherwise share them between the two headers.
            out.append(fits.Card(card.keyword, card.value, card.comment), end=True)
    return out


def _float_array(value: Any, name: str, ndim: int | None = None) -> np.ndarray:
    if _is_frozen_float(value):
        # Already a frozen private array (another `Spectrum`'s, passed on by
        # `dataclasses.replace`): shared, not copied — a chain's seven replacements copied
        # its 2k × 2k covariance seven times.
        arr = value
    else:
        arr = np.array(value, dtype=np.float64)  # native byte order, a private copy
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    arr.setflags(write=False)  # the dataclass is frozen: so are its arrays
    return arr


def _is_frozen_float(value: Any) -> bool:
    """A float64 array (native byte order) that owns its data and is read-only, as
    `_float_array` makes them."""
    return (isinstance(value, np.ndarray) and value.dtype == np.float64
            and value.dtype.isnative and value.flags.owndata and not value.flags.writeable)


@dataclass(frozen=True)
class ImageExtension:
    """An image HDU's pixels and its own header cards (``IM_X0``, ``UNIT1``, …).

    Parameters
    ----------
    data : numpy.ndarray
        Pixel values (kept in their dtype: Spectractor writes float64).
    header : astropy.io.fits.Header
        Non-structural cards of the extension.
    """

    data: np.ndarray
    header: fits.Header = field(default_factory=fits.Header)

    def __post_init__(self) -> None:
        data = np.asarray(self.data)
        # Native byte order (FITS is big-endian) so comparisons and numba/scipy code are happy.
        object.__setattr__(self, "data", data.astype(data.dtype.newbyteorder("="), copy=True))
        object.__setattr__(self, "header", _clean_header(self.header))


@dataclass(frozen=True)
class Spectrogram:
    """The 2-D cutout around the first order, as Spectractor saves it (``S_*`` extensions).

    Its placement in the (rebinned) detector frame is in the spectrum header (``S_XMIN``,
    ``S_YMIN``, …): see `Spectrum.spectrogram_origin`.
    """

    data: ImageExtension
    err: ImageExtension | None = None
    background: ImageExtension | None = None
    background_err: ImageExtension | None = None
    fit: ImageExtension | None = None
    residuals: ImageExtension | None = None

    def extensions(self) -> list[tuple[str, ImageExtension]]:
        """Present planes as ``(EXTNAME, extension)`` in Spectractor's order."""
        return [(name, getattr(self, attr)) for name, attr in SPECTROGRAM_EXTENSIONS.items()
                if getattr(self, attr) is not None]


@dataclass(frozen=True)
class Spectrum:
    """A first-order spectrum with everything Spectractor stores beside it.

    Parameters
    ----------
    wavelength : numpy.ndarray
        Wavelengths in nm, strictly increasing, shape ``(N,)``.
    flux : numpy.ndarray
        Flux in `flux_unit`, shape ``(N,)``.
    flux_err : numpy.ndarray
        One-sigma flux uncertainty, shape ``(N,)``.
    flux_unit : str
        ``UNIT2`` as written (Spectractor: ``'erg/s/cm$^2$/nm'`` or ``'ADU/s'``).
    header : astropy.io.fits.Header
        Every primary-header card except the structural ones and ``UNIT1``/``UNIT2``
        (those are `wavelength_unit`/`flux_unit`).
    covariance : numpy.ndarray, optional
        ``(N, N)`` flux covariance (``SPEC_COV``).
    order2 : ImageExtension, optional
        ``ORDER2``: ``(3, N)`` wavelength, flux, error of the second order.
    order0 : ImageExtension, optional
        ``ORDER0``: zeroth-order cutout with ``IM_X0``/``IM_Y0``.
    spectrogram : Spectrogram, optional
        ``S_DATA`` … ``S_RES``.
    psf_table : astropy.table.Table, optional
        ``PSF_TAB``.
    lines : astropy.table.Table, optional
        ``LINES``.
    extra_hdus : tuple of HDU
        Any other extension (e.g. ``CONFIG``), kept verbatim and written back in order.
    wavelength_unit : str
        ``UNIT1``; always ``'nanometer'`` after reading (other length units are converted).
    """

    wavelength: np.ndarray
    flux: np.ndarray
    flux_err: np.ndarray
    flux_unit: str = "erg/s/cm$^2$/nm"
    header: fits.Header = field(default_factory=fits.Header)
    covariance: np.ndarray | None = None
    order2: ImageExtension | None = None
    order0: ImageExtension | None = None
    spectrogram: Spectrogram | None = None
    psf_table: Table | None = None
    lines: Table | None = None
    extra_hdus: tuple[fits.ImageHDU | fits.BinTableHDU | fits.TableHDU, ...] = ()
    wavelength_unit: str = "nanometer"

    def __post_init__(self) -> None:
        wl = _float_array(self.wavelength, "wavelength", 1)
        flux = _float_array(self.flux, "flux", 1)
        err = _float_array(self.flux_err, "flux_err", 1)
        if not (wl.shape == flux.shape == err.shape):
            raise ValueError(f"wavelength, flux and flux_err shapes differ: "
                             f"{wl.shape}, {flux.shape}, {err.shape}")
        if wl.size and not np.all(np.isfinite(wl)):
            raise ValueError("wavelength contains NaN or infinite values")
        if wl.size > 1 and not np.all(np.diff(wl) > 0):
            raise ValueError("wavelength is not strictly increasing")
        object.__setattr__(self, "wavelength", wl)
        object.__setattr__(self, "flux", flux)
        object.__setattr__(self, "flux_err", err)
        if self.covariance is not None:
            cov = _float_array(self.covariance, "covariance", 2)
            if cov.shape != (wl.size, wl.size):
                raise ValueError(f"covariance shape {cov.shape} is not ({wl.size}, {wl.size})")
            object.__setattr__(self, "covariance", cov)
        header = _clean_header(self.header, keep_extname=True)
        for key in ("UNIT1", "UNIT2"):
            header.remove(key, ignore_missing=True, remove_all=True)
        object.__setattr__(self, "header", header)
        object.__setattr__(self, "extra_hdus", tuple(h.copy() for h in self.extra_hdus))

    # --- header values, typed (older files store some numbers as strings) -----------------
    def get_float(self, key: str, default: float | None = None) -> float | None:
        """Header value ``key`` as float (``'0.000517'`` → 0.000517); ``default`` if absent."""
        value = self.header.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            return default
        return float(value)

    @property
    def n_points(self) -> int:
        """Number of wavelength samples N."""
        return int(self.wavelength.size)

    @property
    def target(self) -> str | None:
        """``TARGET`` (falls back to ``OBJECT``)."""
        value = self.header.get("TARGET") or self.header.get("OBJECT")
        return str(value).strip() if value else None

    @property
    def disperser(self) -> str | None:
        """``GRATING`` (Spectractor's key), else ``DISPERSER`` or CTIO's ``FILTER2`` wheel."""
        for key in ("GRATING", "DISPERSER", "FILTER2"):
            if self.header.get(key):
                return str(self.header[key]).strip()
        return None

    @property
    def d2ccd(self) -> float | None:
        """Disperser–CCD distance ``D2CCD`` in mm."""
        return self.get_float("D2CCD")

    @property
    def rotation_angle(self) -> float | None:
        """Dispersion-axis angle ``ROTANGLE`` in degrees."""
        return self.get_float("ROTANGLE")

    @property
    def pixshift(self) -> float | None:
        """``PIXSHIFT``: wavelength-calibration shift in pixels."""
        return self.get_float("PIXSHIFT")

    @property
    def target_xy(self) -> tuple[float, float] | None:
        """Zeroth-order position ``(TARGETX, TARGETY)`` in the (rebinned) image."""
        x, y = self.get_float("TARGETX"), self.get_float("TARGETY")
        return None if x is None or y is None else (x, y)

    @property
    def airmass(self) -> float | None:
        """``AIRMASS``."""
        return self.get_float("AIRMASS")

    @property
    def exptime(self) -> float | None:
        """``EXPTIME`` in seconds."""
        return self.get_float("EXPTIME")

    @property
    def problems(self) -> tuple[str, ...]:
        """Why a fit of the extraction failed (``FITPROBS``, ``; ``-separated, written with
        ``FITOK = F``); empty for a usable spectrum."""
        text = str(self.header.get("FITPROBS", "") or "").strip()
        return tuple(p.strip() for p in text.split(";") if p.strip())

    @property
    def lambda_ref(self) -> float | None:
        """``LBDA_REF`` in nm: reference wavelength of the chromatic PSF/ADR."""
        return self.get_float("LBDA_REF")

    @property
    def spectrogram_origin(self) -> tuple[int, int] | None:
        """``(S_XMIN, S_YMIN)``: lower-left corner of the spectrogram cutout."""
        x, y = self.header.get("S_XMIN"), self.header.get("S_YMIN")
        return None if x is None or y is None else (int(x), int(y))

    @property
    def order0_center(self) -> tuple[float, float] | None:
        """``(IM_X0, IM_Y0)`` of the zeroth-order cutout."""
        if self.order0 is None or "IM_X0" not in self.order0.header:
            return None
        return float(self.order0.header["IM_X0"]), float(self.order0.header["IM_Y0"])

    def flux_unit_astropy(self) -> u.UnitBase:
        """`flux_unit` as an astropy unit (Spectractor's LaTeX ``cm$^2$`` read as ``cm2``)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnitsWarning)  # 'erg/s/cm2/nm': several slashes
            return u.Unit(_LATEX_POWER.sub(r"\1", self.flux_unit))

    def covariance_or_diagonal(self) -> np.ndarray:
        """`covariance` if stored, else ``diag(flux_err²)`` (what Spectractor assumes)."""
        return self.covariance if self.covariance is not None else np.diag(self.flux_err ** 2)




def find_line(lines: Table, tabulated_nm: float, tol_nm: float = 1.0) -> Row | None:
    """Row of a ``LINES`` table whose ``Tabulated`` wavelength is within ``tol_nm`` of a value.

    Parameters
    ----------
    lines : astropy.table.Table
        ``Spectrum.lines``.
    tabulated_nm : float
        Catalogue wavelength, e.g. 656.3 for Hα.
    tol_nm : float
        Tolerance (Spectractor tabulates Hα at its air/vacuum-shifted 656.64 nm).

    Returns
    -------
    astropy.table.Row or None
        The closest row within tolerance.
    """
    tab = np.asarray(lines["Tabulated"], dtype=float)
    if tab.size == 0:
        return None
    i = int(np.argmin(np.abs(tab - tabulated_nm)))
    return lines[i] if abs(tab[i] - tabulated_nm) <= tol_nm else None
