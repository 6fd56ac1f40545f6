"""The spectroscopy chain of one dispersed exposure, as far as it is built: zeroth order →
extraction (rotation, background, chromatic PSF, optimal 1D extraction, wavelengths from
the dispersion law) → order-2 correction → `Spectrum`.

One function, `process_dispersed`, used by ``atmospec extract`` and by the night runner's
``extract`` task, so both give the same spectrum for the same post-ISR exposure.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from astropy.io import fits

from atmospec.camera.description import load_camera
from atmospec.camera.spectro import load_spectro_table
from atmospec.camera.translator import ObservationInfo, translate_header
from atmospec.characterize.zeroth_order import (
    ZerothOrderConfig,
    ZerothOrderResult,
    find_zeroth_order,
    zeroth_order_prior,
)
from atmospec.errors import BadInputError
from atmospec.exposure import Exposure
from spectractor_bridge.calspec import resolve_target, shipped_standards
from spectractor_bridge.extract import ExtractionConfig, extract_spectrum, result_to_spectrum
from spectractor_bridge.order2 import correct_extraction, with_order2
from spectractor_bridge.spectrum import Spectrum

log = logging.getLogger(__name__)

#: Primary-header keys copied from the exposure into the spectrum (Spectractor keeps them).
_COPIED = ("OBSID", "DAYOBS", "SEQNUM", "DATE-OBS", "DATE-BEG", "DATE-END", "EXPTIME",
           "DARKTIME", "FILTER", "GRATING", "LINSPOS", "RA", "DEC", "ROTPA", "ELSTART",
           "AZSTART", "PRESSURE", "AIRTEMP", "HUMIDITY", "INSTRUME", "OBJECT", "CCDSUM")


@dataclass(frozen=True)
class SpectroscopyConfig:
    """Configuration of the spectroscopy chain of one exposure."""

    zeroth_order: ZerothOrderConfig = field(default_factory=ZerothOrderConfig)
    """Finding the target's zeroth order (used when no position is given)."""
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    """Trace, background, PSF and 1D extraction."""
    order2_correction: bool = True
    """Remove the second-order light falling on the first order (modelled with the
    disperser's order-2/order-1 ratio table) and write it as the ``ORDER2`` extension."""
    require_calspec: bool = True
    """Refuse a target that is not a shipped CALSPEC standard (the atmosphere fit needs its
    SED); ``False`` extracts any star and writes its name as given."""


def process_dispersed(exposure: Exposure, *, target: str | None = None,
                      disperser: str | None = None, xy: tuple[float, float] | None = None,
                      config: SpectroscopyConfig | None = None,
                      source: str | None = None) -> tuple[Spectrum, ZerothOrderResult | None]:
    """Extract the first-order spectrum of the target of a dispersed post-ISR exposure.

    Parameters
    ----------
    exposure : Exposure
        Post-ISR exposure (electrons, mask and variance planes).
    target : str, optional
        Target name; default: the header's ``OBJECT``.
    disperser : str, optional
        Disperser name; default: the header's ``GRATING``. A name that contradicts the header
        is used, with a warning (a header may be wrong; the user knows better).
    xy : tuple of float, optional
        Zeroth-order position, 0-based pixel centres of this image; default: found by
        `find_zeroth_order` around the header prior.
    config : SpectroscopyConfig, optional
        Settings.
    source : str, optional
        File name for error messages.

    Returns
    -------
    spectrum : Spectrum
        Wavelength (nm), flux (e⁻/nm) and errors, with the PSF table and the header keys of
        Spectractor's layout (``TARGET``, ``AIRMASS``, ``EXPTIME``, ``TARGETX/Y``,
        ``ROTANGLE``, ``D2CCD``, ...).
    zeroth_order : ZerothOrderResult or None
        The centroid found (None when ``xy`` was given).

    Raises
    ------
    BadInputError
        Not a dispersed exposure, unknown disperser or target, no star, spectrum off the
        detector.
    """
    config = config or SpectroscopyConfig()
    name = source or str(exposure.metadata.get("OBSID", "exposure"))
    info = translate_header(exposure.metadata, name)
    disperser = disperser or info.disperser
    if disperser.lower() in ("empty", "empty_1", "none", "unknown", ""):
        raise BadInputError(name, f"not a dispersed exposure (GRATING={info.disperser}); "
                                  "give --disperser if the header is wrong")
    if disperser != info.disperser and info.disperser not in ("unknown", ""):
        log.warning("%s: header GRATING is %s; using %s as asked", name, info.disperser,
                    disperser)
    target_name = target or info.target_name
    if not target_name:
        raise BadInputError(name, "no target: the header has no OBJECT; give --target")
    if config.require_calspec:
        try:
            target_name = resolve_target(target_name).name
        except BadInputError:
            known = ", ".join(e.name for e in shipped_standards())
            raise BadInputError(name, f"target {target_name!r} is not a CALSPEC standard "
                                      f"shipped with atmospec (known: {known}); --any-target "
                                      "extracts it anyway") from None
    centroid = None
    if xy is None:
        camera = load_camera("latiss")
        table = load_spectro_table("latiss")
        try:
            table.get(disperser)
        except KeyError as exc:
            raise BadInputError(name, str(exc).strip("'\"")) from None
        prior = zeroth_order_prior(_with_disperser(info, disperser), camera, table)
        centroid = find_zeroth_order(exposure, config.zeroth_order, prior, source=name)
        xy = (centroid.x, centroid.y)
    result = extract_spectrum(exposure, xy[0], xy[1], disperser, info.linspos,
                              config.extraction, source=name)
    header = fits.Header()
    for key in _COPIED:
        if key in exposure.metadata:
            header[key] = exposure.metadata[key]
    header["TARGET"] = (target_name, "target name")
    if info.airmass is not None:
        header["AIRMASS"] = (float(info.airmass), "airmass at the start")
    header["LBDA_REF"] = (_reference_wavelength(result), "reference wavelength, nm")
    spectrum = result_to_spectrum(result, header)
    if config.order2_correction:
        spectrum = with_order2(spectrum, correct_extraction(result))
    return spectrum, centroid


def _with_disperser(info: ObservationInfo, disperser: str) -> ObservationInfo:
    from dataclasses import replace

    return info if info.disperser == disperser else replace(info, disperser=disperser)


def _reference_wavelength(result) -> float:
    """Spectractor's LBDA_REF: the middle of the extracted range."""
    lam = result.wavelength_nm
    return float(0.5 * (lam.min() + lam.max()))
