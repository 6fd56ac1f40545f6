"""Flux units of a spectrum: atmospec's e⁻/nm and Spectractor's erg/s/cm²/nm ("flam").

atmospec measures electrons: a spectrum's flux is e⁻ per nm of wavelength collected during
the exposure (``UNIT2 = 'electron/nm'``). Spectractor writes its spectra in
``UNIT2 = 'erg/s/cm$^2$/nm'``: its ADU/s per pixel divided by
``FLAM_TO_ADURATE · λ · dλ`` with ``FLAM_TO_ADURATE = A · nm² / (h c · gain)``, i.e.::

    F_flam(λ) = F_e(λ) / t_exp · h c / λ / A

with A the telescope's collecting area (`atmospec.camera.spectrograph.InstrumentProfile
.collecting_area_cm2`, Spectractor's ``OBS_SURFACE``) and **no** division by the instrument
throughput: the result is the photon energy flux that reached the detector as counted
electrons, per unit collecting area, not the flux above the telescope. The atmosphere fit
models both (`atmospec.atmosphere.spectrum_fit`).

`to_flam` and `to_electrons` convert the flux, its error, the covariance and the ``ORDER2``
extension, sample by sample; the spectrogram planes (``S_*``) stay in the detector's
electrons, with their own ``BUNIT`` (as Spectractor keeps ``S_DATA`` in ADU/s beside a flam
spectrum).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from atmospec.camera.spectrograph import InstrumentProfile, load_instrument
from atmospec.camera.translator import integration_time
from atmospec.errors import BadInputError
from atmospec.spectro.spectrum import ImageExtension, Spectrum

__all__ = [
    "ELECTRON_UNIT",
    "FLAM_UNIT",
    "FLUX_UNITS",
    "HC_ERG_NM",
    "exposure_time_s",
    "flam_per_electron",
    "instrument_name",
    "is_electron_unit",
    "is_flam_unit",
    "to_electrons",
    "to_flam",
    "with_flux_unit",
]

#: Planck's constant × speed of light, erg·nm (6.62607015e-27 erg s × 2.99792458e17 nm/s).
HC_ERG_NM = 1.98644586e-9
#: ``UNIT2`` of atmospec's spectra.
ELECTRON_UNIT = "electron/nm"
#: ``UNIT2`` of Spectractor's spectra, spelled as Spectractor writes it (its plot label).
FLAM_UNIT = "erg/s/cm$^2$/nm"
#: The flux units a spectrum can be written in (``atmospec extract --units``).
FLUX_UNITS = ("electron", "flam")

_ELECTRON_SPELLINGS = frozenset({"electron/nm", "e-/nm", "electron / nm", "electrons/nm"})
_FLAM_SPELLINGS = frozenset({FLAM_UNIT, "erg/s/cm2/nm", "erg/(s*cm2*nm)", "flam"})


def is_electron_unit(unit: str) -> bool:
    """Whether ``unit`` (a ``UNIT2``) is e⁻/nm."""
    return unit.strip() in _ELECTRON_SPELLINGS


def is_flam_unit(unit: str) -> bool:
    """Whether ``unit`` (a ``UNIT2``) is erg/s/cm²/nm, in any of Spectractor's spellings."""
    return unit.strip().replace(" ", "") in _FLAM_SPELLINGS


def instrument_name(spectrum: Spectrum, instrument: str | None = None) -> str:
    """The instrument profile of a spectrum: ``instrument`` if given, else the header's
    ``INSTRMNT`` (atmospec's), else ``ctio`` if ``TELESCOP`` names CTIO (Spectractor's CTIO
    files), else ``latiss``."""
    if instrument:
        return instrument.strip().lower()
    name = str(spectrum.header.get("INSTRMNT", "") or "").strip().lower()
    if name:
        return name
    if "ctio" in str(spectrum.header.get("TELESCOP", "")).lower():
        return "ctio"
    return "latiss"


def exposure_time_s(spectrum: Spectrum, source: str, needed: bool) -> float | None:
    """``EXPTIME`` in seconds, by the header rule raws obey
    (`atmospec.camera.translator.integration_time`).

    Parameters
    ----------
    spectrum : Spectrum
        Its header's ``EXPTIME``.
    source : str
        The file, for messages.
    needed : bool
        A spectrum in e⁻/nm (or one converted to or from it) needs a positive time: the
        message says whether it is missing or what is wrong with it; otherwise an unusable
        time is None.

    Returns
    -------
    float or None
    """
    raw = spectrum.header.get("EXPTIME")
    if isinstance(raw, str) and not raw.strip():
        raw = None
    try:
        seconds = integration_time("EXPTIME", raw)
    except BadInputError as exc:
        if not needed:
            return None
        raise BadInputError(source, f"{exc.problem}: a spectrum in e-/nm needs a positive "
                                    "exposure time") from None
    if seconds is not None and seconds > 0:
        return seconds
    if not needed:
        return None
    if seconds is None:
        raise BadInputError(source, "EXPTIME missing: needed for a spectrum in e-/nm")
    raise BadInputError(source, f"EXPTIME = {raw!r} s: a spectrum in e-/nm needs a positive "
                                "exposure time")


def flam_per_electron(wavelength_nm: NDArray[np.float64] | float, exptime_s: float,
                      collecting_area_cm2: float) -> NDArray[np.float64]:
    """erg/s/cm²/nm per e⁻/nm at each wavelength: ``h c / λ / (t_exp · A)``.

    Parameters
    ----------
    wavelength_nm : numpy.ndarray or float
        Wavelengths, nm.
    exptime_s : float
        Exposure time, s.
    collecting_area_cm2 : float
        Collecting area of the telescope, cm².

    Returns
    -------
    numpy.ndarray
    """
    lam = np.asarray(wavelength_nm, dtype=np.float64)
    return HC_ERG_NM / lam / (float(exptime_s) * float(collecting_area_cm2))


def _factor(spectrum: Spectrum, source: str, profile: InstrumentProfile | None
            ) -> tuple[float, InstrumentProfile]:
    if profile is None:
        try:
            profile = load_instrument(instrument_name(spectrum))
        except BadInputError as exc:
            raise BadInputError(source, exc.problem) from None
    return exposure_time_s(spectrum, source, needed=True), profile


def _scaled(spectrum: Spectrum, scale: NDArray[np.float64], unit: str,
            order2_scale: NDArray[np.float64] | None, order2_unit: str) -> Spectrum:
    """``spectrum`` with flux, error and covariance multiplied by ``scale`` (per sample),
    ``ORDER2``'s flux and error by ``order2_scale``, the units renamed."""
    cov = spectrum.covariance
    if cov is not None:
        cov = cov * np.outer(scale, scale)
    order2 = spectrum.order2
    if order2 is not None and order2_scale is not None:
        data = np.array(order2.data, dtype=np.float64)
        data[1:3] *= order2_scale
        header = order2.header.copy()
        header["BUNIT"] = (order2_unit, header.comments["BUNIT"] if "BUNIT" in header
                           else "order-2 flux")
        order2 = ImageExtension(data, header)
    return replace(spectrum, flux=spectrum.flux * scale, flux_err=spectrum.flux_err * scale,
                   covariance=cov, order2=order2, flux_unit=unit)


def _order2_scale(spectrum: Spectrum, exptime: float, area: float) -> NDArray | None:
    """Per-sample factor of the ``ORDER2`` extension (a ``(3, N)`` wavelength, flux, error
    table; its flux is per nm of its own wavelength row, the order-1 wavelength)."""
    order2 = spectrum.order2
    if order2 is None or order2.data.ndim != 2 or order2.data.shape[0] != 3:
        return None
    return flam_per_electron(order2.data[0], exptime, area)


def to_flam(spectrum: Spectrum, profile: InstrumentProfile | None = None,
            source: str = "spectrum") -> Spectrum:
    """The spectrum in Spectractor's erg/s/cm²/nm (module docstring).

    Parameters
    ----------
    spectrum : Spectrum
        In e⁻/nm (a spectrum already in erg/s/cm²/nm is returned as it is).
    profile : InstrumentProfile, optional
        Instrument (its collecting area); default the spectrum's (`instrument_name`).
    source : str
        The file, for messages.

    Returns
    -------
    Spectrum
        Flux, error, covariance and ``ORDER2`` converted, ``flux_unit = FLAM_UNIT``.

    Raises
    ------
    BadInputError
        A flux unit that is neither, or no usable ``EXPTIME``.
    """
    if is_flam_unit(spectrum.flux_unit):
        return spectrum
    if not is_electron_unit(spectrum.flux_unit):
        raise BadInputError(source, f"flux unit {spectrum.flux_unit!r} is not e-/nm: cannot "
                                    "convert it to erg/s/cm2/nm")
    exptime, profile = _factor(spectrum, source, profile)
    area = profile.collecting_area_cm2
    return _scaled(spectrum, flam_per_electron(spectrum.wavelength, exptime, area),
                   FLAM_UNIT, _order2_scale(spectrum, exptime, area), FLAM_UNIT)


def to_electrons(spectrum: Spectrum, profile: InstrumentProfile | None = None,
                 source: str = "spectrum") -> Spectrum:
    """The spectrum in e⁻/nm: the inverse of `to_flam`.

    Parameters
    ----------
    spectrum : Spectrum
        In erg/s/cm²/nm with its ``EXPTIME`` (a spectrum already in e⁻/nm is returned as
        it is).
    profile : InstrumentProfile, optional
        Instrument; default the spectrum's (`instrument_name`).
    source : str
        The file, for messages.

    Returns
    -------
    Spectrum
        ``flux_unit = ELECTRON_UNIT``.

    Raises
    ------
    BadInputError
        A flux unit that is neither, or no usable ``EXPTIME``.
    """
    if is_electron_unit(spectrum.flux_unit):
        return spectrum
    if not is_flam_unit(spectrum.flux_unit):
        raise BadInputError(source, f"flux unit {spectrum.flux_unit!r} is not "
                                    "erg/s/cm2/nm: cannot convert it to e-/nm")
    exptime, profile = _factor(spectrum, source, profile)
    area = profile.collecting_area_cm2
    o2 = _order2_scale(spectrum, exptime, area)
    return _scaled(spectrum, 1.0 / flam_per_electron(spectrum.wavelength, exptime, area),
                   ELECTRON_UNIT, None if o2 is None else 1.0 / o2, ELECTRON_UNIT)


def with_flux_unit(spectrum: Spectrum, units: str, source: str = "spectrum") -> Spectrum:
    """The spectrum in ``units`` (one of `FLUX_UNITS`: ``electron`` or ``flam``).

    Raises
    ------
    BadInputError
        An unknown ``units``, or a conversion `to_flam`/`to_electrons` refuses.
    """
    if units == "electron":
        return to_electrons(spectrum, source=source)
    if units == "flam":
        return to_flam(spectrum, source=source)
    raise BadInputError(source, f"units {units!r} is not one of {', '.join(FLUX_UNITS)}")
