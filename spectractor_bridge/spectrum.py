"""Spectra in Spectractor's FITS layout, both ways: `write_spectrum`, `read_spectrum`.

This is atmospec's spectrum file format, so that Spectractor's own tools read our spectra and
we read theirs; the in-memory type is `atmospec.spectro.spectrum.Spectrum`.

The layout is the one Spectractor 2.4 writes for a self-contained spectrum (DESIGN.md, "Contracts"):

=========== ================================================================================
HDU         content
=========== ================================================================================
primary     float64 ``(3, N)``: wavelength (``UNIT1``, nanometer), flux (``UNIT2``), error;
            header ``TARGET, GRATING, D2CCD, PIXSHIFT, ROTANGLE, TARGETX, TARGETY, AIRMASS,
            EXPTIME, LBDA_REF, UNIT1, UNIT2, S_XMIN, S_YMIN …``
``SPEC_COV`` float64 ``(N, N)`` covariance of the flux
``ORDER2``  float64 ``(3, N)``: wavelength, flux, error of the second-order contamination
``ORDER0``  zeroth-order cutout; ``IM_X0, IM_Y0`` give the star's centre in it
``S_DATA``  spectrogram cutout (``UNIT1`` = its unit), then ``S_ERR``, ``S_BGD``, ``S_BGD_ER``,
            ``S_FIT``, ``S_RES``
``PSF_TAB`` binary table of the per-column trace/PSF parameters
``LINES``   binary table ``Line, Tabulated, Detected, Shift, Err, FWHM, …`` of fitted lines
others      kept verbatim in their order (Spectractor 2.4 writes its configuration as ``CONFIG``)
=========== ================================================================================

Older Spectractor versions write fewer extensions (2021: ``SPEC_COV`` and ``ORDER2`` only;
late 2023 branch output: plus ``ORDER0``), name the primary HDU ``SPECTRUM`` and store some
numbers as strings (``REDSHIFT = '0.000517'``); the reader takes all of them.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import Table
from astropy.units import UnitsWarning

from atmospec.errors import BadInputError
from atmospec.io import add_cards, provenance_cards, write_hdul_atomic
from atmospec.spectro.spectrum import (
    SPECTROGRAM_EXTENSIONS,
    ImageExtension,
    Spectrogram,
    Spectrum,
    find_line,
)
from atmospec.spectro.units import is_flam_unit

__all__ = [
    # The in-memory types, here too: a spectrum is what this module reads and writes (and
    # Gen3 repositories made before atmospec 0.2 name this module as its storage class).
    "ImageExtension",
    "Spectrogram",
    "Spectrum",
    "find_line",
    "read_spectrum",
    "spectractor_cards",
    "to_hdulist",
    "write_spectrum",
]

# Provenance of the previous write is replaced, not accumulated, when a spectrum is rewritten.
_PROVENANCE = re.compile(r"^ATM(VERS|STAGE|DATE|IN\d+)$")
_KNOWN = frozenset({"SPEC_COV", "ORDER2", "ORDER0", "PSF_TAB", "LINES", *SPECTROGRAM_EXTENSIONS})
_DEFAULT_COMMENTS = ("First column gives the wavelength in unit UNIT1, second column gives the "
                     "spectrum in unit UNIT2, third column the corresponding errors.")


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
def _image_hdu(name: str, ext: ImageExtension) -> fits.ImageHDU:
    hdu = fits.ImageHDU(np.asarray(ext.data), name=name)
    for card in ext.header.cards:
        hdu.header.append(card, end=True)
    return hdu


def _table_hdu(name: str, table: Table) -> fits.BinTableHDU:
    table = Table(table, copy=False)
    table.meta = {k: v for k, v in table.meta.items() if k.upper() != "EXTNAME"}
    with warnings.catch_warnings():
        # Spectractor's unit strings ('erg/s/cm$^2$/nm', 'reduced') are not FITS units; they
        # are written back as the strings they were, which is what its readers expect.
        warnings.simplefilter("ignore", UnitsWarning)
        hdu = fits.table_to_hdu(table)
    hdu.name = name
    return hdu


def to_hdulist(spectrum: Spectrum,
               provenance: Sequence[tuple[str, Any, str]] | None = None) -> fits.HDUList:
    """Build the HDU list `write_spectrum` writes (see the module docstring for the layout).

    Parameters
    ----------
    spectrum : Spectrum
        What to write.
    provenance : sequence of (key, value, comment), optional
        Cards added to the primary header; default ``provenance_cards("spectrum")``.

    Returns
    -------
    astropy.io.fits.HDUList
    """
    data = np.vstack([spectrum.wavelength, spectrum.flux, spectrum.flux_err])
    primary = fits.PrimaryHDU(data)
    header = primary.header
    for card in spectrum.header.cards:
        if not _PROVENANCE.match(card.keyword):
            header.append(card, end=True)
    header["UNIT1"] = spectrum.wavelength_unit
    header["UNIT2"] = spectrum.flux_unit
    if is_flam_unit(spectrum.flux_unit):
        # A file in Spectractor's units is meant for its tools: the keys its reader takes
        # from the primary header (Spectrum.load_spectrum's mapping) that ours derive.
        for key, value, comment in spectractor_cards(spectrum):
            if key not in header:
                header[key] = (value, comment)
    if "COMMENTS" not in header:
        header["COMMENTS"] = _DEFAULT_COMMENTS
    add_cards(header, provenance if provenance is not None else provenance_cards("spectrum"))

    hdul = fits.HDUList([primary])
    if spectrum.covariance is not None:
        hdul.append(fits.ImageHDU(spectrum.covariance, name="SPEC_COV"))
    if spectrum.order2 is not None:
        hdul.append(_image_hdu("ORDER2", spectrum.order2))
    if spectrum.order0 is not None:
        hdul.append(_image_hdu("ORDER0", spectrum.order0))
    if spectrum.spectrogram is not None:
        hdul.extend(_image_hdu(name, ext) for name, ext in spectrum.spectrogram.extensions())
    if spectrum.psf_table is not None:
        hdul.append(_table_hdu("PSF_TAB", spectrum.psf_table))
    if spectrum.lines is not None:
        hdul.append(_table_hdu("LINES", spectrum.lines))
    hdul.extend(h.copy() for h in spectrum.extra_hdus)
    return hdul


def spectractor_cards(spectrum: Spectrum) -> list[tuple[str, Any, str]]:
    """Primary-header cards Spectractor's reader takes that atmospec's header implies
    under other names: the spectrogram's size (``S_NX``, ``S_NY``: columns and rows of
    ``S_DATA``), the zeroth order in the spectrogram's frame (``S_X0 = TARGETX − S_XMIN``,
    ``S_Y0``), the order (``S_ORDER``), the binning (``CCDREBIN``) and the humidity
    (``OUTHUM``); a card whose source is absent is left out.

    Parameters
    ----------
    spectrum : Spectrum
        Its header and spectrogram.

    Returns
    -------
    list of (key, value, comment)
    """
    h = spectrum.header
    cards: list[tuple[str, Any, str]] = []
    if spectrum.spectrogram is not None and spectrum.spectrogram.data.data.ndim == 2:
        ny, nx = spectrum.spectrogram.data.data.shape
        cards += [("S_NX", int(nx), "spectrogram columns"), ("S_NY", int(ny), "spectrogram rows")]
    xy, origin = spectrum.target_xy, spectrum.spectrogram_origin
    if xy is not None and origin is not None:
        cards += [("S_X0", xy[0] - origin[0], "zeroth order x in the spectrogram (px)"),
                  ("S_Y0", xy[1] - origin[1], "zeroth order y in the spectrogram (px)")]
    if "SPECORD" in h:
        cards.append(("S_ORDER", int(h["SPECORD"]), "diffraction order of the spectrum"))
    if "REBIN" in h:
        cards.append(("CCDREBIN", int(h["REBIN"]), "binning of the image"))
    if "HUMIDITY" in h:
        cards.append(("OUTHUM", h["HUMIDITY"], "outside humidity (%)"))
    return cards


def write_spectrum(spectrum: Spectrum, path: str | Path,
                   provenance: Sequence[tuple[str, Any, str]] | None = None) -> Path:
    """Write ``spectrum`` in Spectractor's layout, atomically, with atmospec provenance cards.

    Parameters
    ----------
    spectrum : Spectrum
        What to write.
    path : str or Path
        Output file (parent folders are created; an existing file is replaced only once the
        new one is complete).
    provenance : sequence of (key, value, comment), optional
        Primary-header provenance (`atmospec.io.provenance_cards`); default records stage
        ``spectrum``. Provenance cards of a previous write are dropped, not accumulated.

    Returns
    -------
    Path
        ``path``.
    """
    hdul = to_hdulist(spectrum, provenance)
    with warnings.catch_warnings():
        # Long COMMENTS strings become CONTINUE cards, as in Spectractor's own files.
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        return write_hdul_atomic(hdul, path)


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
def _image_ext(hdu: fits.ImageHDU | fits.PrimaryHDU) -> ImageExtension:
    data = hdu.data if hdu.data is not None else np.zeros((0,))
    return ImageExtension(np.asarray(data), hdu.header)


def _read_table(hdu: fits.BinTableHDU) -> Table:
    table = Table.read(hdu, unit_parse_strict="silent")
    table.meta.pop("EXTNAME", None)
    return table


def _wavelength_in_nm(wavelength: np.ndarray, unit: str | None, path: Path) -> np.ndarray:
    if unit is None or unit.strip().lower() in ("nanometer", "nm", ""):
        return wavelength
    try:
        return (wavelength * u.Unit(unit.strip())).to_value(u.nm)
    except (ValueError, u.UnitConversionError):
        raise BadInputError(path, f"wavelength unit UNIT1={unit!r} is not a length") from None


def read_spectrum(path: str | Path) -> Spectrum:
    """Read a spectrum written by `write_spectrum` or by Spectractor (2021, 2023, 2.4 files).

    Parameters
    ----------
    path : str or Path
        FITS file (``.fits`` or compressed ``.fits.gz``).

    Returns
    -------
    Spectrum
        Missing optional extensions are ``None``; unknown extensions land in ``extra_hdus``.

    Raises
    ------
    atmospec.errors.BadInputError
        Missing or non-FITS file, primary data not ``(3, N)``, non-finite or non-increasing
        wavelengths, or a ``SPEC_COV`` that is not ``(N, N)``.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "no such file")
    try:
        hdul = fits.open(path, memmap=False)
    except (OSError, ValueError) as exc:
        raise BadInputError(path, f"not a readable FITS file ({exc})".splitlines()[0]) from None
    with hdul:
        try:
            return _from_hdulist(hdul, path)
        except BadInputError:
            raise
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise BadInputError(path, f"cannot read spectrum: {exc}".splitlines()[0]) from None


def _copy_without_sums(hdu: fits.hdu.base.ExtensionHDU) -> fits.hdu.base.ExtensionHDU:
    """A copy of an extension without ``CHECKSUM``/``DATASUM``: they describe the file read;
    the writer computes new ones."""
    out = hdu.copy()
    for key in ("CHECKSUM", "DATASUM"):
        out.header.remove(key, ignore_missing=True)
    return out


def _from_hdulist(hdul: fits.HDUList, path: Path) -> Spectrum:
    primary = hdul[0]
    raw = primary.data
    if raw is None or raw.ndim != 2 or raw.shape[0] != 3:
        shape = None if raw is None else raw.shape
        raise BadInputError(path, f"primary data shape {shape} is not (3, N) "
                                  "(wavelength, flux, error): not a spectrum file")
    raw = np.asarray(raw, dtype=np.float64)
    header = primary.header
    wl = raw[0]
    if not np.all(np.isfinite(wl)):
        raise BadInputError(path, f"wavelength has {int(np.sum(~np.isfinite(wl)))} NaN or "
                                  "infinite values")
    if wl.size > 1 and not np.all(np.diff(wl) > 0):
        raise BadInputError(path, "wavelength is not strictly increasing")
    unit1 = header.get("UNIT1")
    wl = _wavelength_in_nm(wl, None if unit1 is None else str(unit1), path)

    names = [h.name.upper() for h in hdul]
    cov = None
    if "SPEC_COV" in names:
        cov = np.asarray(hdul["SPEC_COV"].data, dtype=np.float64)
        if cov.shape != (wl.size, wl.size):
            raise BadInputError(path, f"SPEC_COV shape {cov.shape} is not "
                                      f"({wl.size}, {wl.size})")
    order2 = _image_ext(hdul["ORDER2"]) if "ORDER2" in names else None
    order0 = _image_ext(hdul["ORDER0"]) if "ORDER0" in names else None
    spectrogram = None
    if "S_DATA" in names:
        spectrogram = Spectrogram(**{attr: _image_ext(hdul[name])
                                     for name, attr in SPECTROGRAM_EXTENSIONS.items()
                                     if name in names})
    psf = _read_table(hdul["PSF_TAB"]) if "PSF_TAB" in names else None
    lines = _read_table(hdul["LINES"]) if "LINES" in names else None
    extra = tuple(_copy_without_sums(h) for h, n in zip(hdul[1:], names[1:], strict=True)
                  if n not in _KNOWN)
    try:
        return Spectrum(wavelength=wl, flux=raw[1], flux_err=raw[2],
                        flux_unit=str(header.get("UNIT2", "")),
                        header=header, covariance=cov, order2=order2, order0=order0,
                        spectrogram=spectrogram, psf_table=psf, lines=lines, extra_hdus=extra)
    except ValueError as exc:
        raise BadInputError(path, str(exc)) from None
