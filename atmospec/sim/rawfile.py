"""Writing simulated raw files of any camera: per-amp headers from the camera's geometry,
the primary header of LATISS (`primary_header`) or of an LSST camera detector
(`lsst_primary_header`).

The per-amp headers (`amp_header`) are built from the detector description alone
(`atmospec.camera.description.Camera`): EXTNAME, CHANNEL, CCDSUM, DATASEC, DETSEC, DETSIZE
and the DTV/DTM transformation, in the order and with the values real LATISS, LSSTCam and
ComCam raws carry (tests/test_sim_lsstcam.py compares them card by card with real raws). The
amplifier, CCD, raft and focal-plane WCSs real raws also carry are left out: nothing reads
them, and the raft and focal-plane ones depend on where the detector sits.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.time import Time

from atmospec.camera.description import Amplifier, Camera, load_camera
from atmospec.camera.raw import RawFrame
from atmospec.camera.translator import translate_header
from atmospec.io import write_hdul_atomic

log = logging.getLogger(__name__)

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
    "RUNNUM": "The Run Number",
    "CCD_MANU": "CCD Manufacturer",
    "CCD_TYPE": "CCD Model Number",
    "TESTTYPE": "BIAS, DARK, FLAT, SFLAT, LAMBDA, FE55, ...",
    "DETSIZE": "IRAF detector size",
    "FILENAME": "Original name of the file",
    "BINX": "[pixels] binning along X axis",
    "BINY": "[pixels] binning along Y axis",
    "CCDGAIN": "Rough guess at system gain (e-/DN)",
    "CCDNOISE": "Rough guess at system noise (e- rms)",
    "DATE-TRG": "Date of the image trigger (readout), TAI",
    "MJD-TRG": "Modified Julian Date of image trigger",
    "CCDSLOT": "The CCD Slot",
    "RAFTBAY": "The RAFT Bay",
    "RAFTNAME": "LSST Assigned Raft name",
    "CAMCODE": "The code for AuxTel, ComCam, MainCamera",
    "CONTRLLR": "The controller (e.g. O for OCS, C for CCS)",
    "HEADVER": "Version number of header",
    "TSTAND": "Camera test stand BOT or CCOB",
    "LSST_NUM": "LSST Assigned CCD Number",
    "TSEQNUM": "Sequence number within current test",
    "TIMESYS": "Time scale of the dates",
    "FILTER2": "Neutral density filter of the projector",
    "SIMULATE": "Simulated by atmospec.sim",
    "SIMSEED": "Seed of the simulated frame",
})


def write_raw(
    path: str | Path,
    segments: np.ndarray,
    primary_cards: Mapping[str, Any],
    compress: bool = False,
    *,
    camera: Camera | None = None,
) -> Path:
    """Write a raw file atomically: the primary header and one HDU per amplifier.

    Parameters
    ----------
    path : path
        Destination; written to a temporary file beside it, then renamed.
    segments : numpy.ndarray
        ``(16, 2048, 576)`` integer raw segments in HDU order (``camera.raw_bbox.shape``
        per amp: ``(1024, 288)`` for a 2 × 2 binned camera).
    primary_cards : Mapping
        Primary header values (`primary_header` for LATISS, `lsst_primary_header` for an
        LSST camera detector); a value may also be a ``(value, comment)`` tuple.
    compress : bool
        Tile-compress the amp HDUs with lossless RICE (one row per tile, as LATISS and the
        LSST cameras do).
    camera : Camera, optional
        The detector, at the readout's binning; LATISS by default. Its geometry gives the
        per-amp headers (`amp_header`); the primary BINX/BINY come from ``primary_cards``.

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
    for i, amp in enumerate(camera.amplifiers):
        header = amp_header(camera, amp)
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


def amp_header(camera: Camera, amp: Amplifier) -> fits.Header:
    """The header of one amplifier HDU of a raw from ``camera``, as the camera writes it.

    IRAF mosaic conventions, 1-based inclusive sections: DATASEC is the data section in
    segment pixels; DETSEC the part of the detector it covers, its first and last pixel in
    readout order (so a mirrored amp reads ``[512:1,...]``); DETSIZE the detector; DTM/DTV
    the map from segment to detector pixels, ``detector = DTM · segment + DTV`` along each
    axis. The placement is the camera's (`Camera.amp_slices` and the amp's flips) with the
    rows counted from the other edge: real LSST raws' DETSEC describe Rubin's assembled
    image mirrored top to bottom, for ITL and e2v sensors alike (see
    `atmospec.camera.assembly`), and the cards reproduce theirs exactly.

    Parameters
    ----------
    camera : Camera
        The detector, at the readout's binning (a binned one gets the binned cards of
        `_binned_amp_header`).
    amp : Amplifier
        One of ``camera.amplifiers``.

    Returns
    -------
    astropy.io.fits.Header
        CHANNEL, EXTNAME, CCDSUM, DATASEC, DETSEC, DETSIZE, DTV1, DTV2, DTM1_1, DTM2_2,
        DTM1_2, DTM2_1.
    """
    unbinned = camera.unbinned
    data = unbinned.data_bbox
    ny_det, nx_det = unbinned.detector_shape
    rows, cols = unbinned.amp_slices(amp)
    # Where the first data pixel read (segment column x0, row y0) lands in the assembled
    # image: at the far edge of the amp's cell when the amp is mirrored along that axis.
    x_first = cols.stop - 1 if amp.flip_x else cols.start
    y_first = ny_det - 1 - (rows.stop - 1 if amp.flip_y else rows.start)
    dtm1 = -1.0 if amp.flip_x else 1.0
    # Rows counted from the other edge: a mirror in y of the assembled image is none in
    # DETSEC, and the reverse.
    dtm2 = 1.0 if amp.flip_y else -1.0
    dtv1 = round((x_first + 1) - dtm1 * (data.x0 + 1))
    dtv2 = round((y_first + 1) - dtm2 * (data.y0 + 1))
    x_last = round(x_first + 1 + dtm1 * (data.nx - 1))
    y_last = round(y_first + 1 + dtm2 * (data.ny - 1))
    header = fits.Header()
    header["CHANNEL"] = (amp.hdu, "amplifier number (HDU order)")
    header["EXTNAME"] = amp.extname
    header["CCDSUM"] = "1 1"
    header["DATASEC"] = data.fits_section
    header["DETSEC"] = f"[{x_first + 1}:{x_last},{y_first + 1}:{y_last}]"
    header["DETSIZE"] = f"[1:{nx_det},1:{ny_det}]"
    header["DTV1"] = (dtv1, "detector transformation vector")
    header["DTV2"] = (dtv2, "detector transformation vector")
    header["DTM1_1"] = (dtm1, "detector transformation matrix")
    header["DTM2_2"] = (dtm2, "detector transformation matrix")
    header["DTM1_2"] = (0.0, "detector transformation matrix")
    header["DTM2_1"] = (0.0, "detector transformation matrix")
    return _binned_amp_header(header, camera)


def _binned_amp_header(template: fits.Header, camera: Camera) -> fits.Header:
    """A copy of an unbinned amp header (`amp_header`) describing ``camera``'s binned
    readout.

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


@dataclass(frozen=True)
class LsstInstrument:
    """How the headers of one LSST camera name it."""

    instrume: str
    """``INSTRUME`` as the camera writes it (``lsstCam``, ``ComCam``, ``LSST-TS8``)."""
    camcode: str
    """Two-letter code starting the OBSID (``MC``, ``CC``, ``TS``), also ``CAMCODE``."""
    test_stand: str
    """Default ``TSTAND``: where the lab acquisitions this simulates were taken."""


#: The LSST cameras `lsst_primary_header` writes for, by `Camera.name` (upper case). Values
#: as in real raws (tests/data/lsstcam/headers): the BOT for LSSTCam, the 2019 Tucson
#: stand for ComCam, the raft test stand for TS8.
LSST_INSTRUMENTS: Mapping[str, LsstInstrument] = MappingProxyType({
    "LSSTCAM": LsstInstrument("lsstCam", "MC", "BOT"),
    "LSSTCOMCAM": LsstInstrument("ComCam", "CC", "EOCCv0_IR2"),
    "LSST-TS8": LsstInstrument("LSST-TS8", "TS", "TS8"),
})

#: CCD_TYPE of each vendor when the serial does not say (``ITL-3800C-083`` does).
_CCD_TYPES = MappingProxyType({"ITL": "3800C", "E2V": "CCD250"})


def lsst_instrument(camera: Camera) -> LsstInstrument:
    """The header names of ``camera``'s instrument; ValueError for LATISS or another."""
    try:
        return LSST_INSTRUMENTS[camera.name.upper()]
    except KeyError:
        raise ValueError(f"{camera.name} is not an LSST camera (known: "
                         f"{', '.join(LSST_INSTRUMENTS)})") from None


def _raft_and_slot(camera: Camera) -> dict[str, str]:
    """RAFTBAY, CCDSLOT (and RAFTNAME for a TS8 raft) of the camera's detector."""
    raft, _, slot = camera.detector.partition("_")
    if not raft or not slot:
        raise ValueError(f"{camera.label}: detector {camera.detector!r} is not RAFT_SLOT")
    if raft.startswith("RTM-"):
        # A raft on the TS8 stand sits in its one bay; its name is the raft's serial.
        return {"CCDSLOT": slot, "RAFTBAY": "R22", "RAFTNAME": f"LCA-11021_{raft}"}
    return {"CCDSLOT": slot, "RAFTBAY": raft}


def lsst_primary_header(
    camera: Camera,
    obs_id: str,
    image_type: str,
    exptime: float,
    darktime: float,
    *,
    test_type: str | None = None,
    date: Time | str = "2021-12-13T04:00:00.000",
    run: str = "13162",
    test_stand: str | None = None,
    filter_name: str = "SDSSi",
    filter2: str = "empty",
    test_seq: int = 0,
    seed: int | None = None,
    readout_s: float = 2.0,
    binning: tuple[int, int] = (1, 1),
) -> dict[str, Any]:
    """Primary header of a simulated lab raw of one LSST camera detector (LSSTCam on the
    BOT, ComCam, a TS8 raft).

    The keywords and their order are those of real BOT raws (2021–2023, e.g.
    tests/data/lsstcam/headers/lsstCam_MC_C_20231125_000600_R12_S10.yaml), without what a
    simulation cannot know (DAQ and firmware versions, REB and CCD manufacturer serials,
    lamp and projector telemetry); dates are TAI (``TIMESYS``), DATE-OBS = DATE-BEG the
    start of the integration, DATE-END = DATE-TRG its end (start + dark time, as the BOT
    writes them), DATE the file's (after the readout).

    Parameters
    ----------
    camera : Camera
        The detector: instrument, raft and slot, serial (``LSST_NUM``), vendor
        (``CCD_MANU``, ``CCD_TYPE``), size (``DETSIZE``).
    obs_id : str
        The exposure's ``MC_C_YYYYMMDD_NNNNNN`` (``CC_…`` for ComCam, ``TS_…`` for TS8);
        DAYOBS, SEQNUM, CAMCODE and CONTRLLR are taken from it.
    image_type : str
        ``IMGTYPE``: ``BIAS``, ``DARK``, ``FLAT`` … (any case).
    exptime, darktime : float
        Exposure and dark time, s.
    test_type : str, optional
        ``TESTTYPE`` (``BIAS``, ``DARK``, ``FLAT``, ``SFLAT``, ``LAMBDA``, ``FE55`` …);
        the image type by default.
    date : astropy.time.Time or str
        Start of the integration (a string is read as TAI ISO time).
    run : str
        ``RUNNUM``, the acquisition run.
    test_stand : str, optional
        ``TSTAND``; the instrument's lab stand by default (`LSST_INSTRUMENTS`).
    filter_name, filter2 : str
        ``FILTER`` (colour filter of the flat projector) and ``FILTER2`` (its neutral
        density filter).
    test_seq : int
        ``TSEQNUM``: the image's number within the acquisition.
    seed : int, optional
        Recorded as ``SIMSEED``.
    readout_s : float
        Time from the end of the integration to the file's DATE, s.
    binning : tuple of int
        On-chip binning ``(x, y)``: BINX, BINY.

    Returns
    -------
    dict
        Keyword → value, in the order of a real header.

    Raises
    ------
    ValueError
        For a camera that is not an LSST camera, or an ``obs_id`` not of its form.
    """
    names = lsst_instrument(camera)
    match = re.fullmatch(r"([A-Z]{2})_([A-Z])_(\d{8})_(\d{6})", obs_id)
    if match is None or match[1] != names.camcode:
        raise ValueError(f"obs_id {obs_id!r} is not of the form "
                         f"{names.camcode}_C_YYYYMMDD_NNNNNN ({camera.name})")
    start = Time(date, scale="tai") if isinstance(date, str) else date.tai
    end = start + darktime * u.s
    written = end + readout_s * u.s
    serial_type = camera.detector_serial.split("-")
    ccd_type = (serial_type[1] if len(serial_type) == 3 and serial_type[0] == camera.vendor
                else _CCD_TYPES.get(camera.vendor, ""))
    ny, nx = camera.unbinned.detector_shape
    kind = image_type.upper()
    location = _raft_and_slot(camera)
    cards: dict[str, Any] = {
        "DATE": _isot(written),
        "MJD": float(written.mjd),
        "RUNNUM": str(run),
        "CCD_MANU": camera.vendor,
        "CCD_TYPE": ccd_type,
        "TESTTYPE": (test_type or kind).upper(),
        "IMGTYPE": kind,
        "DETSIZE": f"[1:{nx},1:{ny}]",
        "EXPTIME": float(exptime),
        "FILENAME": f"{obs_id}_{camera.detector}.fits",
        "BINX": int(binning[0]),
        "BINY": int(binning[1]),
        "CCDGAIN": 1.0,
        "CCDNOISE": 10.0,
        "DATE-OBS": _isot(start),
        "MJD-OBS": float(start.mjd),
        "DATE-TRG": _isot(end),
        "MJD-TRG": float(end.mjd),
        "CCDSLOT": location["CCDSLOT"],
        "RAFTBAY": location["RAFTBAY"],
        "OBSID": obs_id,
        "CAMCODE": match[1],
        "CONTRLLR": match[2],
        "DAYOBS": match[3],
        "SEQNUM": int(match[4]),
        "HEADVER": 2,
        "INSTRUME": names.instrume,
        "TELESCOP": "LSST",
        "TSTAND": test_stand or names.test_stand,
        "LSST_NUM": camera.detector_serial,
    }
    if "RAFTNAME" in location:
        cards["RAFTNAME"] = location["RAFTNAME"]
    cards.update({
        "DARKTIME": float(darktime),
        "TSEQNUM": int(test_seq),
        "DATE-BEG": _isot(start),
        "MJD-BEG": float(start.mjd),
        "DATE-END": _isot(end),
        "MJD-END": float(end.mjd),
        "TIMESYS": "TAI",
        "FILTER": filter_name,
        "FILTER2": filter2,
        "SIMULATE": True,
        "SIMSEED": seed,
    })
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
        Geometry; by default the header's instrument and detector (`load_camera`), at the
        header's binning as `read_raw` does.

    Returns
    -------
    RawFrame
        Named ``<obs_id>.fits`` (``OBSID``, followed by ``_<detector>`` for an instrument of
        several detectors), with the translated header.
    """
    header = (primary_cards if isinstance(primary_cards, fits.Header)
              else fits.Header(dict(primary_cards)))
    info = translate_header(header)
    camera = (camera or load_camera(info.instrument, info.detector)).binned(*info.binning)
    return RawFrame(Path(f"{info.obs_id}.fits"), header, [],
                    np.array(segments, dtype=np.float32), info, camera)
