"""Writing simulated LATISS raw files: real per-amp headers, a modern primary header.

The per-amp headers (EXTNAME, DATASEC, DETSEC, DTV/DTM, the amplifier WCSs) are copied
from a real LATISS raw shipped as ``data/latiss_raw_template.fits.gz``; the primary
header follows the keywords and units of 2023–2024 LATISS raws, plus ``SIMULATE``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.time import Time

from atmospec.camera.description import Camera, load_camera
from atmospec.camera.raw import RawFrame
from atmospec.camera.translator import translate_header
from atmospec.io import write_hdul_atomic

log = logging.getLogger(__name__)

#: Statistics of the template's 2018 pixels and its checksums: wrong for simulated pixels.
_DROPPED_AMP_KEYS = ("AVERAGE", "AVGBIAS", "STDVBIAS", "STDEV", "CHECKSUM", "DATASUM")

#: Site of the Auxiliary Telescope (as in LATISS headers).
_SITE = MappingProxyType({"OBS-LONG": -70.7476862, "OBS-LAT": -30.2447889, "OBS-ELEV": 2663.0})

#: Comments written with the primary cards (values come from `primary_header`).
_COMMENTS: Mapping[str, str] = MappingProxyType({
    "INSTRUME": "Instrument",
    "TELESCOP": "Telescope",
    "OBSID": "The image name or obs-id",
    "DAYOBS": "Observation day as in the image name",
    "SEQNUM": "The sequence number from the image name",
    "IMGTYPE": "BIAS, DARK, FLAT, OBJECT",
    "EXPTIME": "Exposure time in seconds",
    "DARKTIME": "Dark time in seconds",
    "SHUTTIME": "Shutter exposure time in seconds",
    "FILTER": "Name of the filter",
    "GRATING": "Name of the disperser",
    "DATE-OBS": "Start of the exposure (TAI)",
    "DATE-BEG": "Start of the exposure (TAI)",
    "DATE-END": "End of the exposure (TAI)",
    "MJD-OBS": "MJD of the start of the exposure (TAI)",
    "MJD-BEG": "MJD of the start of the exposure (TAI)",
    "MJD-END": "MJD of the end of the exposure (TAI)",
    "AMSTART": "Airmass at the start of the exposure",
    "ELSTART": "Telescope elevation at the start, deg",
    "AZSTART": "Telescope azimuth at the start, deg",
    "PRESSURE": "Outside pressure, Pa",
    "AIRTEMP": "Outside air temperature, deg C",
    "HUMIDITY": "Outside relative humidity, %",
    "SIMULATE": "Simulated by atmospec.sim",
    "SIMSEED": "Seed of the simulated frame",
})


@cache
def _template_headers() -> dict[str, fits.Header]:
    """Per-amp headers of the shipped real raw, keyed by EXTNAME, cleaned for reuse."""
    ref = resources.files("atmospec.data") / "latiss_raw_template.fits.gz"
    out: dict[str, fits.Header] = {}
    with fits.open(str(ref)) as hdul:
        for hdu in hdul[1:]:
            if not isinstance(hdu, fits.ImageHDU):
                continue
            header = hdu.header.copy()
            # Structural keys are rewritten by astropy for the actual data type; BSCALE and
            # BZERO would turn the int32 pixels into scaled ones.
            for key in (*_DROPPED_AMP_KEYS, "XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2",
                        "PCOUNT", "GCOUNT", "BSCALE", "BZERO"):
                header.remove(key, ignore_missing=True, remove_all=True)
            out[hdu.name.upper()] = header
    return out


def write_raw(
    path: str | Path,
    segments: np.ndarray,
    primary_cards: Mapping[str, Any],
    compress: bool = False,
    *,
    camera: Camera | None = None,
) -> Path:
    """Write a raw LATISS file atomically.

    Parameters
    ----------
    path : path
        Destination; written to a temporary file beside it, then renamed.
    segments : numpy.ndarray
        ``(16, 2048, 576)`` integer raw segments in HDU order (``camera.raw_bbox.shape``
        per amp: ``(1024, 288)`` for a 2 × 2 binned camera).
    primary_cards : Mapping
        Primary header values (e.g. from `primary_header`); a value may also be a
        ``(value, comment)`` tuple.
    compress : bool
        Tile-compress the amp HDUs with lossless RICE (one row per tile, as LATISS does).
    camera : Camera, optional
        Geometry; LATISS by default. A binned one (`Camera.binned`) rewrites the per-amp
        DATASEC, DETSEC, CCDSUM and DTV/DTM cards for its binning (the primary BINX/BINY
        come from ``primary_cards``: `primary_header`).

    Returns
    -------
    pathlib.Path
        The written file.
    """
    camera = camera or load_camera("latiss")
    expected = (camera.n_amps, *camera.raw_bbox.shape)
    if segments.shape != expected:
        raise ValueError(f"segments have shape {segments.shape}, expected {expected}")
    primary = fits.PrimaryHDU()
    for key, value in primary_cards.items():
        if isinstance(value, tuple):
            primary.header[key] = value
        else:
            primary.header[key] = (value, _COMMENTS.get(key, ""))
    hdus: list[fits.hdu.base.ExtensionHDU] = []
    templates = _template_headers()
    for i, amp in enumerate(camera.amplifiers):
        header = _binned_amp_header(templates[amp.extname.upper()], camera)
        data = np.ascontiguousarray(segments[i], dtype=np.int32)
        if compress:
            hdu = fits.CompImageHDU(data, header=header, compression_type="RICE_1",
                                    tile_shape=(1, data.shape[1]))
        else:
            hdu = fits.ImageHDU(data, header=header)
        hdus.append(hdu)
    hdul = fits.HDUList([primary, *hdus])
    path = Path(path)
    write_hdul_atomic(hdul, path)
    log.debug("wrote %s (compress=%s)", path, compress)
    return path


def _binned_amp_header(template: fits.Header, camera: Camera) -> fits.Header:
    """A copy of a real (unbinned) amp header describing ``camera``'s binned readout.

    IRAF mosaic conventions: DATASEC in binned pixels of the segment, DETSEC and DETSIZE in
    unbinned detector pixels (the part of the detector the binned data section covers),
    CCDSUM ``"bx by"``, and the transformation DTM·(binned pixel) + DTV to detector pixels.
    """
    header = template.copy()
    bx, by = camera.binning
    if (bx, by) == (1, 1):
        return header
    data = camera.data_bbox
    header["DATASEC"] = data.fits_section
    header["CCDSUM"] = f"{bx} {by}"
    dtm = (float(header["DTM1_1"]), float(header["DTM2_2"]))
    dtv = (float(header["DTV1"]), float(header["DTV2"]))
    ends = []
    for k, (b, lo, n) in enumerate(((bx, data.x0, data.nx), (by, data.y0, data.ny))):
        # Unbinned 1-based pixels b·lo + 1 … b·(lo + n) of the segment, on the detector.
        first, last = (dtm[k] * (b * lo + 1) + dtv[k], dtm[k] * (b * (lo + n)) + dtv[k])
        ends.append(f"{first:.0f}:{last:.0f}")
        # A binned pixel's centre is the mean of its b unbinned pixels' positions.
        header[f"DTM{k + 1}_{k + 1}"] = dtm[k] * b
        header[f"DTV{k + 1}"] = dtv[k] - dtm[k] * (b - 1) / 2.0
    header["DETSEC"] = f"[{ends[0]},{ends[1]}]"
    return header


def _isot(time: Time) -> str:
    """TAI ISO time with milliseconds, as LATISS writes it."""
    tai = time.tai
    tai.precision = 3
    return str(tai.isot)


def filter_band_name(filter_name: str) -> str:
    """``FILTBAND`` of a filter: ``r`` for ``SDSSr_65mm``, ``EMPTY`` for an empty slot."""
    match = re.fullmatch(r"SDSS([ugrizy])(_65mm)?", filter_name)
    if match:
        return match[1]
    if re.fullmatch(r"(?i)empty(_\d+)?", filter_name):
        return "EMPTY"
    return filter_name.split("_")[0]


def primary_header(
    obs_id: str,
    image_type: str,
    exptime: float,
    darktime: float,
    filter_name: str = "SDSSr_65mm",
    disperser: str = "empty_1",
    date: Time | str = "2024-06-25T01:00:00.000",
    airmass: float | None = None,
    ra: float | None = None,
    dec: float | None = None,
    target: str = "",
    *,
    elevation: float | None = None,
    azimuth: float = 0.0,
    rotpa: float = 0.0,
    pressure_pa: float = 74_000.0,
    air_temp_c: float = 10.0,
    humidity: float = 20.0,
    linspos: float = 67.0,
    seed: int | None = None,
    readout_s: float = 2.3,
    binning: tuple[int, int] = (1, 1),
) -> dict[str, Any]:
    """Primary header of a simulated modern (2024) LATISS raw.

    Parameters
    ----------
    obs_id : str
        ``AT_O_YYYYMMDD_NNNNNN``; DAYOBS and SEQNUM are taken from it.
    image_type : str
        ``BIAS``, ``DARK``, ``FLAT`` or ``OBJECT`` (any case).
    exptime, darktime : float
        Exposure and dark time, s.
    filter_name, disperser : str
        ``FILTER`` (e.g. ``SDSSr_65mm``) and ``GRATING`` (``empty_1``, ``holo4_003``, ...).
    date : astropy.time.Time or str
        Start of the exposure (a string is read as TAI ISO time).
    airmass : float, optional
        ``AMSTART``; the elevation is derived from it (secant law) unless given.
    ra, dec : float, optional
        Commanded pointing, deg (also written as RASTART/DECSTART).
    target : str
        ``OBJECT``.
    elevation, azimuth, rotpa : float
        Telescope elevation and azimuth at the start and sky position angle, deg.
    pressure_pa, air_temp_c, humidity : float
        Weather: pressure in Pa (as LATISS writes it since 2023), °C, %.
    linspos : float
        Linear stage position, mm.
    seed : int, optional
        Recorded as ``SIMSEED``.
    readout_s : float
        Readout time, s, between the end of the exposure and the file date.
    binning : tuple of int
        On-chip binning ``(x, y)``: BINX, BINY and CCDSUM.

    Returns
    -------
    dict
        Keyword → value, in the order of a real header.
    """
    match = re.fullmatch(r"([A-Z]{2})_([A-Z])_(\d{8})_(\d{6})", obs_id)
    if match is None:
        raise ValueError(f"obs_id {obs_id!r} is not of the form AT_O_YYYYMMDD_NNNNNN")
    start = Time(date, scale="tai") if isinstance(date, str) else date.tai
    end = start + exptime * u.s
    written = end + readout_s * u.s
    if elevation is None and airmass is not None and airmass >= 1.0:
        elevation = 90.0 - math.degrees(math.acos(1.0 / airmass))
    kind = image_type.upper()
    shutter_open = kind not in ("BIAS", "DARK")
    cards: dict[str, Any] = {
        "CCD_MANU": "ITL",
        "CCD_TYPE": "3800C",
        "BINX": int(binning[0]),
        "BINY": int(binning[1]),
        "CCDGAIN": 1.0,
        "CCDNOISE": 10.0,
        "CCDSLOT": "S00",
        "RAFTBAY": "R00",
        "LSST_NUM": "ITL-3800C-068",
        "CCD_SERN": "20862",
        "CCDTEMP": -101.0,
        "TEMP_SET": -104.15,
        "DATE": _isot(written),
        "MJD": float(written.mjd),
        "IMGTYPE": kind,
        "DATE-OBS": _isot(start),
        "MJD-OBS": float(start.mjd),
        "OBSID": obs_id,
        "DATE-BEG": _isot(start),
        "MJD-BEG": float(start.mjd),
        "DATE-END": _isot(end),
        "MJD-END": float(end.mjd),
        "BUNIT": "adu",
        "TIMESYS": "TAI",
        "INSTRUME": "LATISS",
        "TELESCOP": "LSST AuxTelescope",
        **_SITE,
        "FACILITY": "Vera C. Rubin Observatory",
        "RA": ra,
        "DEC": dec,
        "RASTART": ra,
        "DECSTART": dec,
        "ROTPA": rotpa,
        "ROTCOORD": "sky",
        "ELSTART": elevation,
        "AZSTART": azimuth,
        "AMSTART": airmass,
        "RADESYS": "ICRS",
        "OBJECT": target,
        "SHUTLOWR": 0.0,
        "SHUTUPPR": 100.0 if shutter_open else 0.0,
        "TESTTYPE": kind,
        "CAMCODE": match[1],
        "CONTRLLR": match[2],
        "DAYOBS": match[3],
        "SEQNUM": int(match[4]),
        "GRATING": disperser,
        "GRATBAND": "EMPTY" if re.fullmatch(r"(?i)empty(_\d+)?", disperser) else disperser,
        "LINSPOS": linspos,
        "FILTBAND": filter_band_name(filter_name),
        "FILTER": filter_name,
        "EXPTIME": float(exptime),
        "DARKTIME": float(darktime),
        "SHUTTIME": float(exptime) if shutter_open else 0.0,
        "AIRTEMP": air_temp_c,
        "PRESSURE": pressure_pa,
        "HUMIDITY": humidity,
        "FILENAME": f"{obs_id}.fits",
        "HEADVER": 2,
        "CCDSUM": f"{int(binning[0])} {int(binning[1])}",
        "DETSIZE": "[1:4072,1:4000]",
        "SIMULATE": True,
        "SIMSEED": seed,
    }
    return cards


def raw_frame(segments: np.ndarray, primary_cards: Mapping[str, Any] | fits.Header,
              camera: Camera | None = None) -> RawFrame:
    """The frame `atmospec.camera.raw.read_raw` would return for a file written from
    ``segments`` and ``primary_cards``, without writing it (tests and benchmarks).

    Parameters
    ----------
    segments : numpy.ndarray
        ``(16, 2048, 576)`` raw segments (copied to float32: ISR works on them in place).
    primary_cards : Mapping or astropy.io.fits.Header
        Primary header (e.g. from `primary_header`).
    camera : Camera, optional
        Geometry; LATISS by default, at the header's binning as `read_raw` does.

    Returns
    -------
    RawFrame
        Named ``<OBSID>.fits``, with the translated header.
    """
    header = (primary_cards if isinstance(primary_cards, fits.Header)
              else fits.Header(dict(primary_cards)))
    info = translate_header(header)
    camera = (camera or load_camera("latiss")).binned(*info.binning)
    return RawFrame(Path(f"{header['OBSID']}.fits"), header, [],
                    np.array(segments, dtype=np.float32), info, camera)
