"""Translate raw instrument FITS headers into one typed, instrument-neutral record.

Raw LATISS headers changed a lot between 2018 and today: keywords appeared late, units
changed (pressure went from hPa to Pa in 2023), some were filled with placeholders (a 1970
start date, a zero airmass or a zero dark time). Everything downstream reads an
`ObservationInfo` instead of the header, so those quirks are handled here once.

Each instrument is a subclass of `HeaderTranslator`. The base class owns the generic logic
(first non-null keyword, float sanitising, time parsing, airmass from altitude, ...) and
the order in which fields are built; a subclass only sets keyword tuples and overrides the
few ``to_<field>`` methods where its headers differ. `translate_header` picks the first
translator in `TRANSLATORS` that claims the header:

* `LatissTranslator`: LATISS, AuxTel's imager and slitless spectrograph (``LATISS``,
  ``LSST_ATISS``);
* `CtioTranslator`: the CTIO 0.9 m imager of Spectractor's 2017 data (``cfccd``);
* the LSST Camera family, one frame per CCD (`LsstCameraTranslator`: ``obs_id`` is the
  exposure's OBSID and the detector, ``MC_C_20190319_000001_R22_S21``; never dispersed):
  `LsstCamTranslator` (``LSSTCam``: BOT lab, summit and simulated frames),
  `ComCamTranslator` (``LSSTComCam``), `LsstCamSimTranslator` (``LSSTCamSim``),
  `LsstTs8Translator` (``LSST-TS8``, the raft stand, also files of 2017-2018 without
  INSTRUME), and the single-sensor stands `Ts3Translator` (``LSST-TS3``, BNL) and
  `UcdCamTranslator` (``LSST-UCDCam``, UC Davis).

`RubinTranslator` holds what LATISS and the LSST cameras share (OBSID/DAYOBS/SEQNUM, the
header service's pointing and pressure).
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from types import MappingProxyType
from typing import Any, ClassVar

import astropy.units as u
from astropy.io import fits
from astropy.time import Time

from atmospec.camera.description import DetectorEntry, detector_table
from atmospec.errors import BadInputError
from atmospec.layout import safe_component

__all__ = [
    "TRANSLATORS",
    "ComCamTranslator",
    "CtioTranslator",
    "HeaderTranslator",
    "LatissTranslator",
    "LsstCamSimTranslator",
    "LsstCamTranslator",
    "LsstCameraTranslator",
    "LsstTs8Translator",
    "ObservationInfo",
    "RubinTranslator",
    "Ts3Translator",
    "UcdCamTranslator",
    "canonical_instrument",
    "integration_time",
    "is_dispersed_name",
    "kasten_young_airmass",
    "optic_name",
    "translate_header",
]

#: Disperser (or filter) names meaning "no optical element in the beam".
_NOT_DISPERSED = frozenset({"empty", "unknown", "none"})


def is_dispersed_name(disperser: str) -> bool:
    """Whether a disperser name (a header's or the night summary's) means a dispersed
    exposure: False for ``"empty"``, ``"unknown"`` and ``"none"`` (any case)."""
    return str(disperser).lower() not in _NOT_DISPERSED


#: Any start time before this is a placeholder, not an observation (LATISS wrote the Unix
#: epoch, 1970-01-01, in early 2020). 51544.0 is the MJD of 2000-01-01T00:00.
_EARLIEST_PLAUSIBLE_MJD = 51544.0

#: Longest believable exposure or dark time, s: one day. An exposure is taken within one
#: night, so a longer integration is a damaged or placeholder value, never a measurement
#: (LATISS exposures and darks last seconds to minutes); the bound is loose on purpose so
#: that it never refuses a real frame.
_MAX_INTEGRATION_S = 86400.0

#: Image types whose pixels must have collected light: a 0 s exposure cannot be one.
_LIGHT_IMAGE_TYPES = frozenset({"science"})

#: Text header writers put in a card whose value they do not know. Such a card is treated
#: as missing; any other text that does not parse as the card's kind of value is damage.
_PLACEHOLDERS = frozenset({"", "n/a", "na", "none", "null", "unknown", "nan"})

#: A FITS date without a time of day (``YYYY-MM-DD``): a legal value, but not a start time.
_FITS_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

#: Above this a "pressure" cannot be in hPa (the record at sea level is ~1084 hPa), so it is
#: in Pa: since 2023 the LATISS header service writes e.g. 77780.0 for 777.8 hPa.
_MAX_PRESSURE_HPA = 2000.0

#: A Rubin observation id, ``AT_O_20240624_000106``: camera code (AT LATISS, MC LSSTCam,
#: CC ComCam, TS test stands), controller, day_obs, sequence number.
_OBSID_PATTERN = re.compile(r"^(?P<tel>[A-Z]{2})_(?P<ctrl>[A-Z])_(?P<day>\d{8})_(?P<seq>\d+)$")

#: A raft of the LSST Camera in ``RAFTNAME`` (``LCA-11021_RTM-010-Dev``).
_RAFT_PATTERN = re.compile(r"RTM-\d{3}")

#: The readout board of a raft on the TS8 stand (``REBNAME = 'R00.Reb0'``).
_TS8_REB_PATTERN = re.compile(r"R\d\d\.Reb\d")

#: An ISO start time, read to 0.1 s (the groups concatenate to ``YYYYMMDDhhmmss[t]``).
_ISO_TENTHS = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d)\d*)?")


def integration_time(key: str, value: Any) -> float | None:
    """A header's exposure or dark time in seconds, refused when no exposure can last it.

    Parameters
    ----------
    key : str
        The keyword, for the message (``EXPTIME``, ``DARKTIME``).
    value : Any
        Its value; None (missing) and NaN give None, as for every float of a header
        (header dumps write NaN for null; a FITS card cannot hold one).

    Returns
    -------
    float or None
        Seconds, in ``[0, 86400]``.

    Raises
    ------
    BadInputError
        With a None path (the caller names the file): not a number, negative, or longer
        than a day (`_MAX_INTEGRATION_S`; infinities included).
    """
    if value is None or isinstance(value, fits.card.Undefined):
        return None
    seconds = None
    if not isinstance(value, bool):  # an int subclass, but a T/F flag is not a time
        try:
            seconds = float(value)
        except (TypeError, ValueError, OverflowError):
            pass
    if seconds is None:
        raise BadInputError(None, f"{key} = {value!r} is not a time in seconds")
    if math.isnan(seconds):
        return None
    if seconds < 0.0:
        raise BadInputError(None, f"{key} = {value!r} s is negative")
    if seconds > _MAX_INTEGRATION_S:
        raise BadInputError(None, f"{key} = {value!r} s is longer than a day "
                                  f"({_MAX_INTEGRATION_S:.0f} s): not an exposure")
    return seconds


def _is_placeholder(value: Any) -> bool:
    """True for a text value meaning "not known" (`_PLACEHOLDERS`, any case, or blank)."""
    return isinstance(value, str) and value.strip().lower() in _PLACEHOLDERS


def _file_name_safe(obs_id: str) -> str:
    """The OBSID, refused when it cannot name an output file (it becomes part of every
    output name: `atmospec.layout.safe_component`)."""
    try:
        return safe_component(obs_id, "OBSID")
    except ValueError as exc:
        raise BadInputError(None, str(exc)) from None


@dataclass(frozen=True)
class ObservationInfo:
    """Instrument-neutral description of one exposure, built from its primary header.

    Times are in the scale of the header (TAI for LATISS); angles in degrees.
    """

    instrument: str
    """Canonical instrument name, e.g. ``"LATISS"``."""
    obs_id: str
    """Unique identifier of this raw frame, which names every output: the exposure's
    `exposure_id` for an instrument of one detector (``"AT_O_20240624_000106"``), followed
    by ``_<detector>`` for an instrument of several (``"MC_C_20190319_000001_R22_S11"``)."""
    day_obs: int
    """Observing day as ``YYYYMMDD`` (the night's local date, not the UTC date)."""
    seq_num: int
    """Sequence number of the exposure within ``day_obs``."""
    image_type: str
    """Lower-case type: ``"bias"``, ``"dark"``, ``"flat"``, ``"science"``, ``"engtest"``,
    ``"cwfs"``, ... or ``"unknown"`` when the header does not say."""
    target_name: str | None
    """Object name (``OBJECT``), stripped; None when absent or empty."""
    exposure_time: float | None
    """Requested exposure time in seconds; None when the header lacks it."""
    dark_time: float | None
    """Time the sensor integrated dark current, in seconds (falls back to the exposure time)."""
    datetime_begin: Time | None
    """Start of the exposure (TAI for LATISS); None when no usable time is in the header."""
    physical_filter: str
    """``"<filter>~<disperser>"``, e.g. ``"SDSSr_65mm~empty"``; for the LSST cameras, which have
    no disperser, ``"<filter>~<second filter>"`` (the BOT's ``"SDSSi~ND_OD0.5"``)."""
    filter: str
    """Filter name, e.g. ``"SDSSr_65mm"``, ``"empty"`` or ``"unknown"``."""
    disperser: str
    """Disperser name, e.g. ``"holo4_003"``, ``"ronchi90lpmm"``, ``"empty"`` or ``"unknown"``."""
    airmass: float | None
    """Airmass at the start of the exposure; None when neither given nor computable."""
    altitude: float | None
    """Telescope altitude (elevation) at the start, in degrees."""
    azimuth: float | None
    """Telescope azimuth at the start, in degrees, wrapped into [0, 360)."""
    ra: float | None
    """Right ascension of the pointing, in degrees (commanded, else measured at start)."""
    dec: float | None
    """Declination of the pointing, in degrees (commanded, else measured at start)."""
    rotation_angle: float | None
    """Sky position angle of the instrument (``ROTPA``), in degrees."""
    pressure: float | None
    """Outside air pressure in hPa."""
    temperature: float | None
    """Outside air temperature in degrees Celsius."""
    relative_humidity: float | None
    """Outside relative humidity in percent."""
    linspos: float | None
    """Position of the linear stage carrying the disperser, in mm."""
    binning: tuple[int, int]
    """On-chip binning ``(x, y)``; ``(1, 1)`` when the header does not say."""
    detector_serial: str | None
    """Detector serial (``LSST_NUM`` for LATISS, e.g. ``"ITL-3800C-068"``); None if empty."""
    exposure_id: str | None = None
    """The exposure's identifier (``OBSID``), shared by all its detectors' frames; None is
    filled with `obs_id` (an instrument of one detector)."""
    detector: str | None = None
    """Detector name, raft and slot (``"R22_S11"``; a TS8 raft's ``"RTM-010_S11"``), for
    instruments of several detectors; None for an instrument of one (LATISS)."""
    detector_id: int | None = None
    """Detector number within the instrument (obs_lsst's; R22_S11 of LSSTCam is 94)."""
    vendor: str | None = None
    """CCD manufacturer from ``CCD_MANU``, upper-case (``"ITL"``, ``"E2V"``); None if absent."""
    test_stand: str | None = None
    """Test stand or camera configuration (``TSTAND``: ``"BOT"``, ``"TS8"``,
    ``"TMAMCv1_SUM"``); None if absent."""
    run: str | None = None
    """Test or acquisition run (``RUNNUM``, e.g. ``"6489D"``, ``"13162"``); None if absent."""
    test_type: str | None = None
    """EO test type (``TESTTYPE``), upper-case: ``"BIAS"``, ``"DARK"``, ``"FLAT"``,
    ``"SFLAT"``, ``"LAMBDA"``, ``"FE55"``, ``"SPOT"``, ``"PPUMP"`` …; None if absent."""
    controller: str | None = None
    """Controller code of the observation id (``CONTRLLR``: ``O`` on sky, ``C`` camera
    control in the lab, ``H`` simulated, ``S`` simulator); None if absent."""
    hour_angle: float | None = None
    """Hour angle of the pointing at the start, degrees (West of the meridian positive);
    None when the header does not give it (LATISS gives altitude and azimuth instead)."""

    def __post_init__(self) -> None:
        if self.exposure_id is None:
            object.__setattr__(self, "exposure_id", self.obs_id)

    @property
    def is_dispersed(self) -> bool:
        """True when a disperser (grating, hologram, ronchi) was in the beam.

        Returns
        -------
        bool
            False for ``"empty"``, ``"unknown"`` and ``"none"`` dispersers.
        """
        return is_dispersed_name(self.disperser)

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-serialisable dictionary.

        Returns
        -------
        dict
            One entry per field. ``datetime_begin`` becomes an ISO-8601 string in its own
            time scale (TAI for LATISS) or None; ``binning`` becomes a two-element list.
        """
        out: dict[str, Any] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, Time):
                value = value.isot
            elif isinstance(value, tuple):
                value = list(value)
            out[field.name] = value
        return out


def kasten_young_airmass(altitude: float) -> float:
    """Airmass for an apparent altitude, from Kasten & Young (1989).

    ``X = 1 / (cos z + 0.50572 (96.07995 - z)^-1.6364)`` with the zenith distance ``z`` in
    degrees (F. Kasten & A. T. Young, "Revised optical air mass tables and approximation
    formula", Applied Optics 28, 4735, 1989). It matches sec(z) near the zenith and stays
    finite (~38) at the horizon, unlike the plane-parallel sec(z).

    Parameters
    ----------
    altitude : float
        Altitude above the horizon in degrees, 0 < altitude <= 90.

    Returns
    -------
    float
        Relative air mass (1.0 at the zenith).

    Raises
    ------
    ValueError
        If ``altitude`` is outside (0, 90].
    """
    if not 0.0 < altitude <= 90.0:
        raise ValueError(f"altitude {altitude} deg is outside (0, 90]")
    zenith = 90.0 - altitude
    return 1.0 / (math.cos(math.radians(zenith)) + 0.50572 * (96.07995 - zenith) ** -1.6364)


class HeaderTranslator(ABC):
    """Base class turning one instrument's raw primary header into an `ObservationInfo`.

    Subclasses set `name` and `instrument_aliases`, implement the identity methods
    (`to_obs_id`, `to_day_obs`, `to_seq_num`) and override any other ``to_<field>``
    method, or keyword tuple, where their headers differ from the defaults below.

    Every ``to_<field>`` method takes the header and returns the value of that field;
    a method may raise `BadInputError` with a None path, to which `translate` adds the file.
    """

    name: ClassVar[str] = ""
    """Canonical instrument name written to `ObservationInfo.instrument`."""
    instrument_aliases: ClassVar[tuple[str, ...]] = ()
    """``INSTRUME`` values (compared case-insensitively) this translator claims."""
    default_time_scale: ClassVar[str] = "utc"
    """Time scale assumed when ``TIMESYS`` is absent or not an astropy scale."""
    image_type_aliases: ClassVar[Mapping[str, str]] = MappingProxyType({"object": "science"})
    """Lower-case header image types renamed to the pipeline vocabulary."""
    empty_optic_pattern: ClassVar[re.Pattern[str]] = re.compile(r"(?i)^(empty(_\d+)?)?$")
    """Filter/disperser names meaning an empty slot (an empty string matches too)."""

    image_type_keys: ClassVar[tuple[str, ...]] = ("IMGTYPE", "IMAGETYP")
    target_name_keys: ClassVar[tuple[str, ...]] = ("OBJECT",)
    exposure_time_keys: ClassVar[tuple[str, ...]] = ("EXPTIME",)
    dark_time_keys: ClassVar[tuple[str, ...]] = ("DARKTIME",)
    # Best first: explicit start of integration, then the generic observation date.
    datetime_keys: ClassVar[tuple[str, ...]] = ("DATE-BEG", "DATE-OBS")
    mjd_keys: ClassVar[tuple[str, ...]] = ("MJD-BEG", "MJD-OBS")
    file_date_keys: ClassVar[tuple[str, ...]] = ("DATE",)
    filter_keys: ClassVar[tuple[str, ...]] = ("FILTER",)
    disperser_keys: ClassVar[tuple[str, ...]] = ("GRATING",)
    airmass_keys: ClassVar[tuple[str, ...]] = ("AIRMASS",)
    altitude_keys: ClassVar[tuple[str, ...]] = ("ELEVATIO", "ALT")
    azimuth_keys: ClassVar[tuple[str, ...]] = ("AZIMUTH", "AZ")
    ra_dec_keys: ClassVar[tuple[str, str]] = ("RA", "DEC")
    rotation_angle_keys: ClassVar[tuple[str, ...]] = ("ROTPA",)
    pressure_keys: ClassVar[tuple[str, ...]] = ("PRESSURE",)
    temperature_keys: ClassVar[tuple[str, ...]] = ("AIRTEMP",)
    humidity_keys: ClassVar[tuple[str, ...]] = ("HUMIDITY",)
    linspos_keys: ClassVar[tuple[str, ...]] = ("LINSPOS",)
    detector_serial_keys: ClassVar[tuple[str, ...]] = ("DETSER",)
    vendor_keys: ClassVar[tuple[str, ...]] = ("CCD_MANU",)
    test_stand_keys: ClassVar[tuple[str, ...]] = ("TSTAND",)
    run_keys: ClassVar[tuple[str, ...]] = ("RUNNUM",)
    test_type_keys: ClassVar[tuple[str, ...]] = ("TESTTYPE",)
    controller_keys: ClassVar[tuple[str, ...]] = ("CONTRLLR",)

    # ------------------------------------------------------------------ entry points

    @classmethod
    def can_translate(cls, header: Mapping[str, Any]) -> bool:
        """Tell whether this translator understands ``header``.

        Parameters
        ----------
        header : Mapping[str, Any]
            Raw primary header (an `astropy.io.fits.Header` or a plain mapping).

        Returns
        -------
        bool
            True when ``INSTRUME`` is one of `instrument_aliases` (case-insensitive).
        """
        instrument = cls._get(header, "INSTRUME")
        if not isinstance(instrument, str):
            return False
        aliases = {alias.upper() for alias in cls.instrument_aliases}
        return instrument.strip().upper() in aliases

    def translate(self, header: Mapping[str, Any], filename: str | None = None) -> ObservationInfo:
        """Build the `ObservationInfo` of one exposure.

        Parameters
        ----------
        header : Mapping[str, Any]
            Raw primary header; values may be None.
        filename : str, optional
            File the header came from, only used in error messages.

        Returns
        -------
        ObservationInfo
            The translated record.

        Raises
        ------
        BadInputError
            If the header lacks what identifies the exposure (e.g. no ``OBSID``) or holds a
            value no exposure can have (``EXPTIME`` negative, longer than a day, or 0 s on
            a science frame; likewise ``DARKTIME``).
        """
        try:
            ra, dec = self.to_ra_dec(header)
            exposure_id = self.to_exposure_id(header)
            info = ObservationInfo(
                instrument=self.to_instrument(header),
                obs_id=_file_name_safe(self.to_obs_id(header)),
                day_obs=self.to_day_obs(header),
                seq_num=self.to_seq_num(header),
                image_type=self.to_image_type(header),
                target_name=self.to_target_name(header),
                exposure_time=self.to_exposure_time(header),
                dark_time=self.to_dark_time(header),
                datetime_begin=self.to_datetime_begin(header),
                physical_filter=self.to_physical_filter(header),
                filter=self.to_filter(header),
                disperser=self.to_disperser(header),
                airmass=self.to_airmass(header),
                altitude=self.to_altitude(header),
                azimuth=self.to_azimuth(header),
                ra=ra,
                dec=dec,
                rotation_angle=self.to_rotation_angle(header),
                pressure=self.to_pressure(header),
                temperature=self.to_temperature(header),
                relative_humidity=self.to_relative_humidity(header),
                linspos=self.to_linspos(header),
                binning=self.to_binning(header),
                detector_serial=self.to_detector_serial(header),
                # Shared by the exposure's frames and a prefix of obs_id, it must name
                # files as safely.
                exposure_id=None if exposure_id is None else _file_name_safe(exposure_id),
                detector=self.to_detector(header),
                detector_id=self.to_detector_id(header),
                vendor=self.to_vendor(header),
                test_stand=self.to_test_stand(header),
                run=self.to_run(header),
                test_type=self.to_test_type(header),
                controller=self.to_controller(header),
                hour_angle=self.to_hour_angle(header),
            )
            self.check_physical(info)
            return info
        except BadInputError as exc:
            # The to_* methods do not know the file; name it here so the CLI message does.
            if exc.path is None and filename is not None:
                raise BadInputError(filename, exc.problem) from exc
            raise

    def check_physical(self, info: ObservationInfo) -> None:
        """Refuse combinations of values that cannot describe a real exposure.

        Each value is checked where it is read (e.g. `to_exposure_time`); this is for rules
        that need several: a science frame of 0 s collected no light.

        Parameters
        ----------
        info : ObservationInfo
            The translated record.

        Raises
        ------
        BadInputError
            With a None path (`translate` names the file).
        """
        if info.image_type in _LIGHT_IMAGE_TYPES and info.exposure_time == 0.0:
            key = self.exposure_time_keys[0]
            raise BadInputError(None, f"{key} = 0 s on a {info.image_type} frame: it "
                                      "collected no light")

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _get(header: Mapping[str, Any], *keys: str) -> Any:
        """Return the value of the first of ``keys`` present with a non-null value.

        Parameters
        ----------
        header : Mapping[str, Any]
            Raw header.
        *keys : str
            Keywords to try, best first.

        Returns
        -------
        Any
            The value, or None when every keyword is missing or null.
        """
        for key in keys:
            value = header.get(key)
            # astropy marks a FITS card without a value with Undefined rather than None.
            if value is None or isinstance(value, fits.card.Undefined):
                continue
            return value
        return None

    @classmethod
    def _get_given(cls, header: Mapping[str, Any], key: str) -> Any:
        """The value of ``key`` when the header gives one: None when the card is missing,
        null or a placeholder for "not known" (`_is_placeholder`), so that only a value
        actually written can be refused as damaged."""
        value = cls._get(header, key)
        return None if _is_placeholder(value) else value

    @staticmethod
    def _as_float(value: Any) -> float | None:
        """Convert a header value to a finite float, or None (missing, text, NaN, inf)."""
        # bool is an int subclass, but a True flag is not a measurement.
        if value is None or isinstance(value, bool):
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        return number if math.isfinite(number) else None

    @classmethod
    def _get_float(cls, header: Mapping[str, Any], *keys: str) -> float | None:
        """Return the first of ``keys`` that holds a finite number, as a float, or None."""
        for key in keys:
            number = cls._as_float(cls._get(header, key))
            if number is not None:
                return number
        return None

    @staticmethod
    def _as_int(value: Any) -> int | None:
        """Convert an integral header value (int or digit string) to int, or None."""
        if value is None or isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return int(value) if value.is_integer() else None
        text = str(value).strip()
        return int(text) if re.fullmatch(r"[+-]?\d+", text) else None

    @classmethod
    def _get_duration(cls, header: Mapping[str, Any], *keys: str) -> float | None:
        """The first of ``keys`` with a value, as a time in seconds (`integration_time`), or
        None when all are missing or NaN."""
        for key in keys:
            seconds = integration_time(key, cls._get(header, key))
            if seconds is not None:
                return seconds
        return None

    @classmethod
    def _get_str(cls, header: Mapping[str, Any], *keys: str) -> str | None:
        """Return the first of ``keys`` as a stripped string, or None when missing/empty."""
        value = cls._get(header, *keys)
        if value is None:
            return None
        text = str(value).strip()
        return text or None

    @staticmethod
    def _parse_day_obs(value: Any) -> int | None:
        """Parse a ``YYYYMMDD`` day (int or string) that is a real calendar date, or None."""
        if value is None or isinstance(value, bool):
            return None
        text = str(value).strip()
        if not re.fullmatch(r"\d{8}", text):
            return None
        try:
            datetime.strptime(text, "%Y%m%d")
        except ValueError:
            return None
        return int(text)

    def _time_scale(self, header: Mapping[str, Any]) -> str:
        """Time scale of the header's dates: ``TIMESYS`` if astropy knows it, else default."""
        timesys = self._get_str(header, "TIMESYS")
        if timesys is not None and timesys.lower() in Time.SCALES:
            return timesys.lower()
        return self.default_time_scale

    @staticmethod
    def _is_plausible(time: Time) -> bool:
        """Reject placeholder dates (e.g. the Unix epoch) written instead of a real time."""
        return bool(time.mjd >= _EARLIEST_PLAUSIBLE_MJD)

    def _normalise_optic(self, value: Any) -> str:
        """Map a filter/disperser header value to ``"unknown"``, ``"empty"`` or its name."""
        return _optic(value, (self.empty_optic_pattern,))

    # ------------------------------------------------------------------ identity

    def to_instrument(self, header: Mapping[str, Any]) -> str:
        """Canonical instrument name (`name`), whatever alias the header uses."""
        return self.name

    @abstractmethod
    def to_obs_id(self, header: Mapping[str, Any]) -> str:
        """Unique observation identifier; raise `BadInputError` when there is none."""

    @abstractmethod
    def to_day_obs(self, header: Mapping[str, Any]) -> int:
        """Observing day ``YYYYMMDD``; raise `BadInputError` when it cannot be found."""

    @abstractmethod
    def to_seq_num(self, header: Mapping[str, Any]) -> int:
        """Sequence number within the day; raise `BadInputError` when it cannot be found."""

    def to_exposure_id(self, header: Mapping[str, Any]) -> str | None:
        """Identifier of the exposure, shared by its detectors' frames; None (the default)
        for an instrument of one detector, whose `ObservationInfo` then uses `obs_id`."""
        return None

    # ------------------------------------------------------------------ exposure

    def to_image_type(self, header: Mapping[str, Any]) -> str:
        """Lower-case image type mapped through `image_type_aliases`; ``"unknown"`` if absent."""
        raw = self._get_str(header, *self.image_type_keys)
        if raw is None:
            return "unknown"
        kind = raw.lower()
        return self.image_type_aliases.get(kind, kind)

    def to_target_name(self, header: Mapping[str, Any]) -> str | None:
        """Target name, stripped; None when absent or blank."""
        return self._get_str(header, *self.target_name_keys)

    def to_exposure_time(self, header: Mapping[str, Any]) -> float | None:
        """Exposure time in seconds; None when missing.

        Raises
        ------
        BadInputError
            When it is not a number, negative, or longer than a day (`_get_duration`).
        """
        return self._get_duration(header, *self.exposure_time_keys)

    def to_dark_time(self, header: Mapping[str, Any]) -> float | None:
        """Dark time in seconds; the exposure time when the header's value is missing or 0.

        A zero dark time is a placeholder (LATISS wrote 0.0 in 2020), never a measurement:
        the sensor always integrates at least for the exposure time. A dark time that is not
        a number, negative or longer than a day is an error (`_get_duration`).
        """
        dark = self._get_duration(header, *self.dark_time_keys)
        if dark is not None and dark > 0.0:
            return dark
        return self.to_exposure_time(header)

    def to_datetime_begin(self, header: Mapping[str, Any]) -> Time | None:
        """Start of the exposure, in the header's time scale.

        Tries the ISO dates in `datetime_keys`, then the MJDs in `mjd_keys`, keeping the first
        that parses and is not a placeholder (before 2000). Failing that, the file-write date
        (`file_date_keys`) minus the exposure time: the file is written right after readout,
        so this is late by the readout time only (a few seconds).
        """
        scale = self._time_scale(header)
        candidates: list[tuple[str, str]] = [(key, "isot") for key in self.datetime_keys]
        candidates += [(key, "mjd") for key in self.mjd_keys]
        for key, fmt in candidates:
            time = self._parse_time(key, self._get(header, key), fmt, scale)
            if time is not None and self._is_plausible(time):
                return time
        exposure = self.to_exposure_time(header)
        for key in self.file_date_keys:
            written = self._parse_time(key, self._get(header, key), "isot", scale)
            if written is not None and exposure is not None and self._is_plausible(written):
                return written - exposure * u.s
        return None

    @classmethod
    def _parse_time(cls, key: str, value: Any, fmt: str, scale: str) -> Time | None:
        """Parse the time card ``key`` (an ``"isot"`` string or an ``"mjd"`` number).

        Returns None when the card gives no value (missing, a placeholder such as ``n/a``,
        or NaN: header dumps write NaN for null) or gives only a date (FITS allows
        ``YYYY-MM-DD``; it cannot say when an exposure began).

        Raises
        ------
        BadInputError
            With a None path, when the card holds a value that is not a time: a damaged
            card (``DATE-OBS = 'yesterday'``) must not be passed over for the next key.
        """
        if value is None or _is_placeholder(value):
            return None
        if fmt == "mjd":
            return cls._parse_mjd(key, value, scale)
        text = str(value).strip()
        try:
            return Time(text, format="isot", scale=scale)
        except ValueError:
            pass
        if not isinstance(value, bool) and _FITS_DATE.fullmatch(text):
            return None
        raise BadInputError(None, f"{key} = {value!r} is not a time (ISO 8601 "
                                  "YYYY-MM-DDThh:mm:ss)")

    @classmethod
    def _parse_mjd(cls, key: str, value: Any, scale: str) -> Time | None:
        """Parse an MJD card: None for NaN (null), refused when not a finite number."""
        if isinstance(value, float) and math.isnan(value):
            return None
        number = cls._as_float(value)
        try:
            if number is not None:
                return Time(number, format="mjd", scale=scale)
        except (ValueError, OverflowError):
            pass
        raise BadInputError(None, f"{key} = {value!r} is not a modified Julian date")

    # ------------------------------------------------------------------ optics

    def to_filter(self, header: Mapping[str, Any]) -> str:
        """Filter name, ``"empty"`` for an empty slot, ``"unknown"`` when absent."""
        return self._normalise_optic(self._get(header, *self.filter_keys))

    def to_disperser(self, header: Mapping[str, Any]) -> str:
        """Disperser name, ``"empty"`` for an empty slot, ``"unknown"`` when absent."""
        return self._normalise_optic(self._get(header, *self.disperser_keys))

    def to_physical_filter(self, header: Mapping[str, Any]) -> str:
        """The optical path, ``"<filter>~<disperser>"`` (`to_filter`, `to_disperser`)."""
        return f"{self.to_filter(header)}~{self.to_disperser(header)}"

    def to_linspos(self, header: Mapping[str, Any]) -> float | None:
        """Linear-stage position in mm."""
        return self._get_float(header, *self.linspos_keys)

    # ------------------------------------------------------------------ pointing

    def to_altitude(self, header: Mapping[str, Any]) -> float | None:
        """Telescope altitude at the start, in degrees."""
        return self._get_float(header, *self.altitude_keys)

    def to_azimuth(self, header: Mapping[str, Any]) -> float | None:
        """Telescope azimuth at the start, in degrees, wrapped into [0, 360)."""
        azimuth = self._get_float(header, *self.azimuth_keys)
        if azimuth is None:
            return None
        wrapped = azimuth % 360.0
        # A tiny negative azimuth rounds to exactly 360.0 under %, outside the promised range.
        return 0.0 if wrapped >= 360.0 else wrapped

    def to_airmass(self, header: Mapping[str, Any]) -> float | None:
        """Airmass: the header's when physical (>= 1), else computed from the altitude.

        Headers with the telescope parked or a failed lookup carry 0.0; an airmass below 1
        cannot happen, so it is recomputed with `kasten_young_airmass` when the altitude
        is above the horizon, and None otherwise.
        """
        airmass = self._get_float(header, *self.airmass_keys)
        if airmass is not None and airmass >= 1.0:
            return airmass
        altitude = self.to_altitude(header)
        if altitude is not None and 0.0 < altitude <= 90.0:
            return kasten_young_airmass(altitude)
        return None

    def to_ra_dec(self, header: Mapping[str, Any]) -> tuple[float | None, float | None]:
        """Right ascension and declination of the pointing, in degrees.

        Uses the keyword pair `ra_dec_keys`; subclasses with a measured fallback override.
        """
        ra_key, dec_key = self.ra_dec_keys
        return self._get_float(header, ra_key), self._get_float(header, dec_key)

    def to_rotation_angle(self, header: Mapping[str, Any]) -> float | None:
        """Instrument position angle on the sky, in degrees."""
        return self._get_float(header, *self.rotation_angle_keys)

    def to_hour_angle(self, header: Mapping[str, Any]) -> float | None:
        """Hour angle of the pointing, degrees; None unless a subclass reads one."""
        return None

    # ------------------------------------------------------------------ weather

    def to_pressure(self, header: Mapping[str, Any]) -> float | None:
        """Outside pressure in hPa (header assumed in hPa)."""
        return self._get_float(header, *self.pressure_keys)

    def to_temperature(self, header: Mapping[str, Any]) -> float | None:
        """Outside air temperature in degrees Celsius."""
        return self._get_float(header, *self.temperature_keys)

    def to_relative_humidity(self, header: Mapping[str, Any]) -> float | None:
        """Outside relative humidity in percent."""
        return self._get_float(header, *self.humidity_keys)

    # ------------------------------------------------------------------ detector

    def to_binning(self, header: Mapping[str, Any]) -> tuple[int, int]:
        """On-chip binning ``(x, y)``: ``BINX``/``BINY``, else ``CCDSUM "x y"``, else (1, 1)."""
        binx = self._as_int(self._get(header, "BINX"))
        biny = self._as_int(self._get(header, "BINY"))
        if binx is not None and biny is not None and binx > 0 and biny > 0:
            return binx, biny
        ccdsum = self._get_str(header, "CCDSUM")
        if ccdsum is not None:
            parts = ccdsum.split()
            if len(parts) == 2 and all(part.isdigit() and int(part) > 0 for part in parts):
                return int(parts[0]), int(parts[1])
        return 1, 1

    def to_detector_serial(self, header: Mapping[str, Any]) -> str | None:
        """Detector serial number; None when absent or blank."""
        return self._get_str(header, *self.detector_serial_keys)

    def to_detector(self, header: Mapping[str, Any]) -> str | None:
        """Detector name (``"R22_S11"``); None (the default) for an instrument of one."""
        return None

    def to_detector_id(self, header: Mapping[str, Any]) -> int | None:
        """Detector number within the instrument; None (the default) for an instrument of one."""
        return None

    def to_vendor(self, header: Mapping[str, Any]) -> str | None:
        """CCD manufacturer (`vendor_keys`), upper-case; None when absent or blank."""
        vendor = self._get_str(header, *self.vendor_keys)
        return None if vendor is None else vendor.upper()

    # ------------------------------------------------------------------ test stands

    def to_test_stand(self, header: Mapping[str, Any]) -> str | None:
        """Test stand or camera configuration (`test_stand_keys`); None when absent."""
        return self._get_str(header, *self.test_stand_keys)

    def to_run(self, header: Mapping[str, Any]) -> str | None:
        """Test or acquisition run (`run_keys`) as text (some headers write a number)."""
        return self._get_str(header, *self.run_keys)

    def to_test_type(self, header: Mapping[str, Any]) -> str | None:
        """EO test type (`test_type_keys`), upper-case; None when absent or blank."""
        test_type = self._get_str(header, *self.test_type_keys)
        return None if test_type is None else test_type.upper()

    def to_controller(self, header: Mapping[str, Any]) -> str | None:
        """Controller code of the observation id (`controller_keys`); None when absent."""
        return self._get_str(header, *self.controller_keys)


class RubinTranslator(HeaderTranslator):
    """Keywords shared by Rubin Observatory instruments (LATISS and the LSST Camera family).

    The exposure is named by ``OBSID`` (``AT_O_20240624_000106``: camera, controller, day,
    sequence number), with ``DAYOBS`` and ``SEQNUM`` read from it when missing. On the
    summit the header service writes the pointing at the start of the exposure
    (``RASTART``/``DECSTART``, ``ELSTART``, ``AZSTART``, ``AMSTART``) and the weather, with
    ``PRESSURE`` in Pa since 2023; lab headers have none of these, which are then None.
    """

    airmass_keys: ClassVar[tuple[str, ...]] = ("AMSTART",)
    # The 2020 header comments ELSTART as "Telescope zenith distance", but keyword and values
    # are elevations (in 2021 ELSTART 70.31 comes with AMSTART 1.063 = sec(19.7 deg)):
    # trust the value, not the comment.
    altitude_keys: ClassVar[tuple[str, ...]] = ("ELSTART",)
    azimuth_keys: ClassVar[tuple[str, ...]] = ("AZSTART",)
    detector_serial_keys: ClassVar[tuple[str, ...]] = ("LSST_NUM",)
    day_obs_offset_hours: ClassVar[float | None] = None
    """Hours subtracted from the start of the exposure to give ``day_obs`` (the local date at
    the start of the night) when neither DAYOBS nor OBSID does; None: they must."""

    # ------------------------------------------------------------------ identity

    def _obsid(self, header: Mapping[str, Any]) -> str | None:
        """``OBSID`` stripped, None when absent or blank.

        Raises
        ------
        BadInputError
            When it is a number (``OBSID = 42``): Rubin cameras write a name, never a
            number, so a number is a damaged card, not an identifier.
        """
        value = self._get(header, "OBSID")
        if value is not None and not isinstance(value, str):
            raise BadInputError(None, f"OBSID = {value!r} is not a string")
        return self._get_str(header, "OBSID")

    def _obsid_match(self, header: Mapping[str, Any]) -> re.Match[str] | None:
        """Match ``OBSID`` against the Rubin naming scheme (None if absent or unusual)."""
        obs_id = self._get_str(header, "OBSID")
        return None if obs_id is None else _OBSID_PATTERN.match(obs_id)

    def to_day_obs(self, header: Mapping[str, Any]) -> int:
        """``DAYOBS`` (int or string), else, when it is missing, the date in ``OBSID``, else
        the start time minus `day_obs_offset_hours` (when set).

        Raises
        ------
        BadInputError
            When ``DAYOBS`` is given but is not a calendar date ``YYYYMMDD`` (a damaged
            card is refused, not replaced by the OBSID's date), or nothing gives a date.
        """
        given = self._get_given(header, "DAYOBS")
        if given is not None:
            day_obs = self._parse_day_obs(given)
            if day_obs is None:
                raise BadInputError(None, f"cannot determine day_obs: DAYOBS = {given!r} "
                                          "is not a date YYYYMMDD")
            return day_obs
        match = self._obsid_match(header)
        day_obs = self._parse_day_obs(match["day"]) if match else None
        if day_obs is None and self.day_obs_offset_hours is not None:
            start = self.to_datetime_begin(header)
            if start is not None:
                day_obs = int((start - self.day_obs_offset_hours * u.hour).strftime("%Y%m%d"))
        if day_obs is None:
            raise BadInputError(None, f"cannot determine day_obs: no DAYOBS, OBSID="
                                      f"{self._get(header, 'OBSID')!r}")
        return day_obs

    def to_seq_num(self, header: Mapping[str, Any]) -> int:
        """``SEQNUM``, else, when it is missing, the sequence number at the end of ``OBSID``.

        Raises
        ------
        BadInputError
            When ``SEQNUM`` is given but is not a non-negative integer, or neither gives one.
        """
        given = self._get_given(header, "SEQNUM")
        if given is not None:
            seq_num = self._as_int(given)
            if seq_num is None or seq_num < 0:
                raise BadInputError(None, f"cannot determine seq_num: SEQNUM = {given!r} "
                                          "is not a non-negative integer")
            return seq_num
        match = self._obsid_match(header)
        if match is None:
            raise BadInputError(None, f"cannot determine seq_num: no SEQNUM, OBSID="
                                      f"{self._get(header, 'OBSID')!r}")
        return int(match["seq"])

    # ------------------------------------------------------------------ pointing, weather

    def to_ra_dec(self, header: Mapping[str, Any]) -> tuple[float | None, float | None]:
        """Commanded RA/DEC, replaced by the measured RASTART/DECSTART when unusable.

        RA/DEC are the commanded target (what the observer asked for) and so preferred,
        but they are missing in some files and both 0.0 when nothing was commanded (2020
        engineering data, 2024 darks, LSSTCam frames tracking in az/el) although the
        telescope pointing was recorded.
        """
        ra, dec = super().to_ra_dec(header)
        unusable = ra is None or dec is None or (ra == 0.0 and dec == 0.0)
        if unusable:
            ra_start = self._get_float(header, "RASTART")
            dec_start = self._get_float(header, "DECSTART")
            if ra_start is not None and dec_start is not None:
                return ra_start, dec_start
        return ra, dec

    def to_pressure(self, header: Mapping[str, Any]) -> float | None:
        """``PRESSURE`` in hPa: values above 2000 are in Pa (2023+ headers) and divided by 100."""
        pressure = super().to_pressure(header)
        if pressure is not None and pressure > _MAX_PRESSURE_HPA:
            return pressure / 100.0
        return pressure


class LatissTranslator(RubinTranslator):
    """Translator for LATISS, the AuxTel imager/slitless spectrograph (2018 onwards).

    Quirks handled, by header era:

    * 2018 test-stand files call the instrument ``LSST_ATISS``, have no ``TIMESYS``
      (their times are still TAI), no ``IMGTYPE`` and no filter/grating keywords.
    * 2020-01 files have a 1970 ``DATE-OBS``/``DATE-BEG``, ``DARKTIME = 0.0``, RA/DEC
      both 0.0 with the real pointing in RASTART/DECSTART, and a negative azimuth.
    * 2023+ files give ``PRESSURE`` in Pa instead of hPa.
    * 2024 darks have ``AMSTART = 0.0`` and RA/DEC 0.0.
    * ``SHUTTIME`` is ignored: 2022 files hold a bogus 0.03 s.
    """

    name: ClassVar[str] = "LATISS"
    instrument_aliases: ClassVar[tuple[str, ...]] = ("LATISS", "LSST_ATISS")
    # Every LATISS time keyword is TAI; the 2018 files just do not say so.
    default_time_scale: ClassVar[str] = "tai"

    def to_obs_id(self, header: Mapping[str, Any]) -> str:
        """``OBSID``, a string card; a header without it cannot be indexed, so that is an
        error, and so is a number (``OBSID = 42``): LATISS writes a name, never a number,
        so a number is a damaged card, not an identifier."""
        obs_id = self._obsid(header)
        if obs_id is None:
            raise BadInputError(None, "LATISS header has no OBSID keyword")
        return obs_id

    def check_physical(self, info: ObservationInfo) -> None:
        """The base rules, and: an OBSID of the LATISS form agrees with the day and sequence
        number.

        The OBSID embeds both (``AT_O_20240624_000106``) and names every output, so a
        disagreement means one card is damaged, and which one cannot be told: the file is
        refused. (When DAYOBS or SEQNUM is missing it was read from the OBSID, so they
        agree.) An OBSID of another form names no day or number and is not compared.

        Raises
        ------
        BadInputError
            With a None path (`translate` names the file).
        """
        super().check_physical(info)
        match = _OBSID_PATTERN.match(info.obs_id)
        if match is None:
            return
        if (match["day"], int(match["seq"])) != (str(info.day_obs), info.seq_num):
            raise BadInputError(None, f"OBSID {info.obs_id} disagrees with DAYOBS = "
                                      f"{info.day_obs}, SEQNUM = {info.seq_num}")


def _sexagesimal(text: str, unit_deg: float) -> float | None:
    """``'±a:b:c'`` as ``±(a + b/60 + c/3600) × unit_deg`` degrees; None when malformed."""
    parts = text.strip().split(":")
    try:
        a, b, c = (float(v) for v in [*parts, "0", "0"][:3])
    except ValueError:
        return None
    if len(parts) > 3 or not all(math.isfinite(v) for v in (a, b, c)):
        return None
    sign = -1.0 if text.strip().startswith("-") else 1.0
    return sign * (abs(a) + b / 60.0 + c / 3600.0) * unit_deg


class CtioTranslator(HeaderTranslator):
    """Translator for the CTIO 0.9 m Cassegrain imager (``INSTRUME = 'cfccd'``, Tek2K CCD),
    the bench of Spectractor's 2017 holographic-disperser data.

    Its headers have no observation id or sequence number: the NOAO archive record
    ``RECID`` (``ct36.20170531.025352``) is the id, its time part the sequence number, and
    the observing day is the local date at the start of the night (UTC − 12 h, as Rubin's
    ``day_obs``). The disperser sits in filter wheel 2 (``FILTER2``, also ``GRATING`` once
    Spectractor has seen the file); ``FILTER1 = 'dia'`` is the open diaphragm. Weather comes
    as ``OUTPRESS`` (hPa), ``OUTTEMP`` (°C) and ``OUTHUM`` (%). ``OBJECT`` was typed by the
    observer (``'HD11980'`` for HD111980): Spectractor's ``TARGET`` is preferred when present.
    """

    name: ClassVar[str] = "CTIO"
    instrument_aliases: ClassVar[tuple[str, ...]] = ("cfccd", "CTIO")

    target_name_keys: ClassVar[tuple[str, ...]] = ("TARGET", "OBJECT")
    filter_keys: ClassVar[tuple[str, ...]] = ("FILTER1",)
    disperser_keys: ClassVar[tuple[str, ...]] = ("GRATING", "FILTER2")
    pressure_keys: ClassVar[tuple[str, ...]] = ("OUTPRESS",)
    temperature_keys: ClassVar[tuple[str, ...]] = ("OUTTEMP",)
    humidity_keys: ClassVar[tuple[str, ...]] = ("OUTHUM",)
    detector_serial_keys: ClassVar[tuple[str, ...]] = ("DETECTOR",)
    # ALT holds a string such as '-45.84' in the real files: not a usable elevation.
    altitude_keys: ClassVar[tuple[str, ...]] = ()
    empty_optic_pattern: ClassVar[re.Pattern[str]] = re.compile(r"(?i)^(dia|empty|open)?$")

    def to_hour_angle(self, header: Mapping[str, Any]) -> float | None:
        """``HA`` in degrees: a sexagesimal string is hours (``'01:52:42.9'``, the
        telescope's), a number is degrees (as Spectractor writes ``HA`` in its spectra and
        the frames rebuilt from them: 28.1788 for 1 h 52 m 43 s)."""
        value = self._get(header, "HA")
        if isinstance(value, str) and ":" in value:
            return _sexagesimal(value, 15.0)
        return self._as_float(value)

    def to_ra_dec(self, header: Mapping[str, Any]) -> tuple[float | None, float | None]:
        """``RA`` (``'12:53:8.10'``: hours) and ``DEC`` (a number, or ``'-18:33:27.8'``:
        degrees), in degrees."""
        ra, dec = self._get(header, "RA"), self._get(header, "DEC")
        ra_deg = _sexagesimal(ra, 15.0) if isinstance(ra, str) and ":" in ra \
            else self._as_float(ra)
        dec_deg = _sexagesimal(dec, 1.0) if isinstance(dec, str) and ":" in dec \
            else self._as_float(dec)
        return ra_deg, dec_deg

    def _record(self, header: Mapping[str, Any]) -> re.Match[str] | None:
        recid = self._get_str(header, "RECID")
        return None if recid is None else re.match(
            r"^(?P<tel>\w+)\.(?P<day>\d{8})\.(?P<time>\d{6})$", recid)

    def to_obs_id(self, header: Mapping[str, Any]) -> str:
        """``RECID``, else ``OBSID``; an error without either."""
        obs_id = self._get_str(header, "RECID", "OBSID")
        if obs_id is None:
            raise BadInputError(None, "CTIO header has no RECID or OBSID keyword")
        return obs_id

    def to_day_obs(self, header: Mapping[str, Any]) -> int:
        """Local date at the start of the night: ``DATE-OBS`` − 12 h."""
        start = self.to_datetime_begin(header)
        if start is None:
            raise BadInputError(None, f"cannot determine day_obs: DATE-OBS="
                                      f"{self._get(header, 'DATE-OBS')!r}")
        return int((start - 12 * u.hour).strftime("%Y%m%d"))

    def to_seq_num(self, header: Mapping[str, Any]) -> int:
        """``SEQNUM``, else the ``hhmmss`` of ``RECID``."""
        seq_num = self._as_int(self._get(header, "SEQNUM"))
        if seq_num is None:
            match = self._record(header)
            seq_num = int(match["time"]) if match else None
        if seq_num is None:
            raise BadInputError(None, "cannot determine seq_num: no SEQNUM and no RECID")
        return seq_num


class LsstCameraTranslator(RubinTranslator):
    """Rules shared by the LSST Camera family: LSSTCam, ComCam and the simulated LSSTCam, the
    TS8 raft stand, and the single-sensor TS3 and UCD stands.

    A frame is one CCD of an exposure: ``exposure_id`` is the exposure's ``OBSID``
    (``MC_C_20190319_000001``) and ``obs_id`` adds the detector (``..._R22_S21``), the raft
    and slot of the instrument's detector table (`detector_table_name`, checked there).
    ``DAYOBS`` is taken as written even when the OBSID's date differs (a real CCS header
    has DAYOBS 20290319 for OBSID MC_C_20190319_000001), then the OBSID, then the start time
    minus `day_obs_offset_hours`. Times are TAI unless ``TIMESYS`` says otherwise (obs_lsst
    reads every LSST camera time as TAI). ``IMGTYPE`` ``object`` and ``skyexp`` are science
    frames. No camera of the family has a disperser: ``disperser`` is always ``"empty"``,
    so no frame is ever routed to spectroscopy, and ``physical_filter`` is
    ``"<FILTER>~<FILTER2>"`` (the BOT's second wheel holds neutral densities, ``ND_OD0.5``).
    Lab frames have no pointing or weather: those fields are None.
    """

    default_time_scale: ClassVar[str] = "tai"
    day_obs_offset_hours: ClassVar[float | None] = 12.0
    image_type_aliases: ClassVar[Mapping[str, str]] = MappingProxyType(
        {"object": "science", "skyexp": "science"})
    # "NONE" (2023 BOT) and "unspecified" (2022 TS8) are written for an empty wheel too.
    empty_optic_pattern: ClassVar[re.Pattern[str]] = re.compile(
        r"(?i)^(empty(_\d+)?|none|unspecified)?$")
    second_filter_keys: ClassVar[tuple[str, ...]] = ("FILTER2",)
    raft_keys: ClassVar[tuple[str, ...]] = ("RAFTBAY",)
    slot_keys: ClassVar[tuple[str, ...]] = ("CCDSLOT",)

    detector_table_name: ClassVar[str | None] = None
    """Instrument whose `atmospec.camera.description.detector_table` names the detectors;
    None for a stand of one sensor (``detector`` None, ``obs_id`` the exposure id)."""
    exposure_id_fallback: ClassVar[tuple[str, str] | None] = None
    """``(prefix, keyword)`` naming the exposure of a header without ``OBSID`` as
    ``<prefix>_<keyword value>_<DATE-OBS to 0.1 s>``; None: ``OBSID`` is required."""
    generic_instruments: ClassVar[tuple[str, ...]] = ()
    """``INSTRUME`` values that do not name this instrument alone (a controller's or the
    whole camera's name; ``""`` for a header without ``INSTRUME``): such a header is claimed
    only when `claims_by_keys` recognises it."""

    @classmethod
    def can_translate(cls, header: Mapping[str, Any]) -> bool:
        """True for an ``INSTRUME`` of `instrument_aliases`, or one of `generic_instruments`
        on a header `claims_by_keys` recognises."""
        if super().can_translate(header):
            return True
        instrument = cls._get_str(header, "INSTRUME") or ""
        generic = {name.upper() for name in cls.generic_instruments}
        return instrument.upper() in generic and cls.claims_by_keys(header)

    @classmethod
    def claims_by_keys(cls, header: Mapping[str, Any]) -> bool:
        """Whether a header of a generic ``INSTRUME`` comes from this instrument (never, by
        default)."""
        return False

    # ------------------------------------------------------------------ identity

    def to_exposure_id(self, header: Mapping[str, Any]) -> str:
        """``OBSID``, else (stands without one) built from `exposure_id_fallback`.

        Raises
        ------
        BadInputError
            When neither is possible, or ``DATE-OBS`` is not an ISO time.
        """
        obs_id = self._obsid(header)
        if obs_id is not None:
            return obs_id
        if self.exposure_id_fallback is None:
            raise BadInputError(None, f"{self.name} header has no OBSID keyword")
        prefix, key = self.exposure_id_fallback
        part = self._get_str(header, key)
        stamp = self._date_obs_tenths(header)
        if part is None or stamp is None:
            raise BadInputError(None, f"{self.name} header has no OBSID, nor {key} and "
                                      "DATE-OBS to name the exposure")
        return f"{prefix}_{part}_{stamp}"

    @classmethod
    def _date_obs_tenths(cls, header: Mapping[str, Any]) -> str | None:
        """``DATE-OBS`` as digits to 0.1 s (``201807241028453``), None when absent.

        Test stands number their exposures within a run, not a day (obs_lsst: SEQNUM is not
        unique per day in TS8 data), so the start to 0.1 s tells two exposures apart; the
        digits are read from the card, not from a parsed time, to stay the same whatever the
        time scale.
        """
        value = cls._get(header, "DATE-OBS")
        if value is None or _is_placeholder(value):
            return None
        match = _ISO_TENTHS.fullmatch(str(value).strip())
        if match is None:
            raise BadInputError(None, f"DATE-OBS = {value!r} is not a time (ISO 8601 "
                                      "YYYY-MM-DDThh:mm:ss)")
        return "".join(part or "0" for part in match.groups())

    def to_obs_id(self, header: Mapping[str, Any]) -> str:
        """The exposure id, followed by ``_<detector>`` for an instrument of several."""
        exposure_id = self.to_exposure_id(header)
        detector = self.to_detector(header)
        return exposure_id if detector is None else f"{exposure_id}_{detector}"

    # ------------------------------------------------------------------ detector

    def _raft_slot(self, header: Mapping[str, Any]) -> tuple[str | None, str | None]:
        """Raft and slot of the frame's CCD (`raft_keys`, `slot_keys`), None when absent."""
        return self._get_str(header, *self.raft_keys), self._get_str(header, *self.slot_keys)

    def _detector_entry(self, header: Mapping[str, Any]) -> tuple[str, DetectorEntry] | None:
        """Name and table entry of the frame's detector; None for a stand of one sensor.

        Raises
        ------
        BadInputError
            When the raft and slot name no detector of the table.
        """
        if self.detector_table_name is None:
            return None
        raft, slot = self._raft_slot(header)
        name = f"{raft}_{slot}"
        entry = detector_table(self.detector_table_name).get(name)
        if raft is None or slot is None or entry is None:
            raft_key, slot_key = self.raft_keys[0], self.slot_keys[0]
            raise BadInputError(None, f"{raft_key} = {self._get(header, raft_key)!r}, "
                                      f"{slot_key} = {self._get(header, slot_key)!r}: no "
                                      f"such {self.name} detector (raft and slot as R22_S11)")
        return name, entry

    def to_detector(self, header: Mapping[str, Any]) -> str | None:
        """``<raft>_<slot>`` (``R22_S11``), a detector of `detector_table_name`."""
        found = self._detector_entry(header)
        return None if found is None else found[0]

    def to_detector_id(self, header: Mapping[str, Any]) -> int | None:
        """The detector's number in `detector_table_name` (R22_S11 of LSSTCam is 94)."""
        found = self._detector_entry(header)
        return None if found is None else found[1].detector_id

    def to_detector_serial(self, header: Mapping[str, Any]) -> str | None:
        """``LSST_NUM`` without the ``-Dev`` suffix some lab files append to it at random
        (obs_lsst strips it too); None when absent."""
        serial = super().to_detector_serial(header)
        return None if serial is None else serial.removesuffix("-Dev").strip() or None

    # ------------------------------------------------------------------ time

    def to_datetime_begin(self, header: Mapping[str, Any]) -> Time | None:
        """The base rules, and: a ``DATE-OBS`` equal to ``DATE-TRG`` is the end.

        ``DATE-TRG`` is the readout trigger, which ends the exposure; some TS8 and UCD files
        wrote it as ``DATE-OBS`` too (obs_lsst fixes the TS8 ones the same way). Without a
        ``DATE-BEG`` the start is then ``DATE-OBS`` minus the exposure time.
        """
        start = super().to_datetime_begin(header)
        date_obs = self._get_str(header, "DATE-OBS")
        written_at_end = (date_obs is not None and date_obs == self._get_str(header, "DATE-TRG")
                          and self._get_given(header, "DATE-BEG") is None)
        exposure = self.to_exposure_time(header)
        if start is not None and written_at_end and exposure:
            return start - exposure * u.s
        return start

    # ------------------------------------------------------------------ optics

    def to_filter(self, header: Mapping[str, Any]) -> str:
        """``FILTER``; ``"empty"`` also when absent (lab frames without a filter wheel)."""
        value = self._get(header, *self.filter_keys)
        return "empty" if value is None else self._normalise_optic(value)

    def to_disperser(self, header: Mapping[str, Any]) -> str:
        """Always ``"empty"``: no LSST camera has a disperser."""
        return "empty"

    def to_physical_filter(self, header: Mapping[str, Any]) -> str:
        """``"<filter>~<FILTER2>"``, the second filter ``"empty"`` unless it names a real
        element (the BOT's ``ND_OD0.5``)."""
        second = self._get(header, *self.second_filter_keys)
        second_name = "empty" if second is None else self._normalise_optic(second)
        return f"{self.to_filter(header)}~{second_name}"


class LsstCamTranslator(LsstCameraTranslator):
    """Translator for LSSTCam, the LSST Camera: lab frames of the BOT (``TSTAND = 'BOT'``,
    controller C, 2019-2024 at SLAC), summit frames (``TSTAND = 'TMAMCv1_SUM'``, controller O
    on sky, C for calibrations) and simulated ones (controller H).

    The 2019 BOT held engineering rafts (``RAFTNAME`` ``..._ETU1``): its CCD in a bay may be
    another one, of another vendor, than the table's (R22_S21 is an ITL CCD in 2019 and an
    e2v one in the camera); ``detector_serial`` and ``vendor`` are the header's.
    """

    name: ClassVar[str] = "LSSTCam"
    instrument_aliases: ClassVar[tuple[str, ...]] = ("LSSTCam",)
    detector_table_name: ClassVar[str | None] = "LSSTCam"


class ComCamTranslator(LsstCameraTranslator):
    """Translator for LSSTComCam, the commissioning camera (one raft, R22, of 9 ITL CCDs).

    ``INSTRUME`` is ``ComCam`` (any case); lab files of 2019 say ``LSST_CAMERA``, a name
    any LSST camera could write, and are claimed by their ``CC_`` OBSID.
    """

    name: ClassVar[str] = "LSSTComCam"
    instrument_aliases: ClassVar[tuple[str, ...]] = ("LSSTComCam", "ComCam")
    generic_instruments: ClassVar[tuple[str, ...]] = ("LSST_CAMERA",)
    detector_table_name: ClassVar[str | None] = "LSSTComCam"

    @classmethod
    def claims_by_keys(cls, header: Mapping[str, Any]) -> bool:
        """An ``OBSID`` of the ComCam camera code, ``CC_``."""
        obs_id = cls._get(header, "OBSID")
        return isinstance(obs_id, str) and obs_id.strip().startswith("CC_")


class LsstCamSimTranslator(LsstCameraTranslator):
    """Translator for LSSTCamSim, LSSTCam simulated by the camera's own software (controller
    S): LSSTCam's detectors and rules."""

    name: ClassVar[str] = "LSSTCamSim"
    instrument_aliases: ClassVar[tuple[str, ...]] = ("LSSTCamSim",)
    detector_table_name: ClassVar[str | None] = "LSSTCam"


class LsstTs8Translator(LsstCameraTranslator):
    """Translator for LSST-TS8, the raft test stand at SLAC: one raft of 9 CCDs at a time.

    Detectors are ``<raft>_<slot>`` with the raft of ``RAFTNAME`` (``RTM-010`` from
    ``LCA-11021_RTM-010-Dev``; ``RAFTBAY`` is where the raft would sit in the camera, not the
    raft). Files before 2022 have no ``INSTRUME``, ``OBSID``, ``DAYOBS`` nor ``CCDSLOT``
    (and up to 2017 no ``TSTAND``): they are recognised by their raft and readout board
    (``REBNAME = 'R00.Reb0'``), the slot is the one whose CCD has the file's ``LSST_NUM`` in
    the raft, the exposure is ``TS8_<RUNNUM>_<DATE-OBS to 0.1 s>`` and ``day_obs`` the date
    of the start minus 8 h (obs_lsst's test-stand day, near the Pacific date). Times are UTC
    (obs_lsst) unless ``TIMESYS`` says otherwise (TAI in 2023).
    """

    name: ClassVar[str] = "LSST-TS8"
    instrument_aliases: ClassVar[tuple[str, ...]] = ("LSST-TS8",)
    generic_instruments: ClassVar[tuple[str, ...]] = ("",)
    default_time_scale: ClassVar[str] = "utc"
    day_obs_offset_hours: ClassVar[float | None] = 8.0
    detector_table_name: ClassVar[str | None] = "LSST-TS8"
    exposure_id_fallback: ClassVar[tuple[str, str] | None] = ("TS8", "RUNNUM")
    raft_keys: ClassVar[tuple[str, ...]] = ("RAFTNAME",)

    @classmethod
    def claims_by_keys(cls, header: Mapping[str, Any]) -> bool:
        """``TSTAND = 'TS8'``, or no ``TSTAND`` but a raft in ``RAFTNAME`` and a TS8 readout
        board in ``REBNAME``."""
        test_stand = cls._get_str(header, "TSTAND")
        if test_stand is not None:
            return test_stand.upper() == "TS8"
        raft_name = cls._get_str(header, "RAFTNAME") or ""
        reb_name = cls._get_str(header, "REBNAME") or ""
        return bool(_RAFT_PATTERN.search(raft_name) and _TS8_REB_PATTERN.fullmatch(reb_name))

    def _raft_slot(self, header: Mapping[str, Any]) -> tuple[str | None, str | None]:
        """The ``RTM-NNN`` of ``RAFTNAME``, and ``CCDSLOT`` or else the slot of ``LSST_NUM``.

        Raises
        ------
        BadInputError
            When the raft has no CCD of that serial in the detector table.
        """
        match = _RAFT_PATTERN.search(self._get_str(header, *self.raft_keys) or "")
        raft = match.group(0) if match else None
        slot = self._get_str(header, *self.slot_keys)
        if raft is None or slot is not None:
            return raft, slot
        serial = self.to_detector_serial(header)
        for name, entry in detector_table(str(self.detector_table_name)).items():
            if serial is not None and entry.serial == serial and name.startswith(f"{raft}_"):
                return raft, name.removeprefix(f"{raft}_")
        raise BadInputError(None, f"RAFTNAME = {self._get(header, 'RAFTNAME')!r}, LSST_NUM = "
                                  f"{self._get(header, 'LSST_NUM')!r}: raft {raft} of "
                                  f"{self.name} has no CCD of that serial")


class Ts3Translator(LsstCameraTranslator):
    """Translator for LSST-TS3, the single-sensor test stand at BNL (2016-2018).

    Its files have ``INSTRUME = 'ArchonCCDController'`` (the controller) or none, and are
    recognised by ``TSTAND`` (``BNL-TS3-2-Janeway``). One sensor: no detector; no ``OBSID``:
    the frame is ``TS3_<LSST_NUM>_<DATE-OBS to 0.1 s>``. Times are UTC and ``day_obs`` is
    the start minus 8 h, as obs_lsst reads them.
    """

    name: ClassVar[str] = "LSST-TS3"
    generic_instruments: ClassVar[tuple[str, ...]] = ("", "ArchonCCDController")
    default_time_scale: ClassVar[str] = "utc"
    day_obs_offset_hours: ClassVar[float | None] = 8.0
    exposure_id_fallback: ClassVar[tuple[str, str] | None] = ("TS3", "LSST_NUM")

    @classmethod
    def claims_by_keys(cls, header: Mapping[str, Any]) -> bool:
        """A ``TSTAND`` of the BNL stand, ``BNL-TS3...``."""
        test_stand = cls._get_str(header, "TSTAND") or ""
        return test_stand.upper().startswith("BNL-TS3")


class UcdCamTranslator(LsstCameraTranslator):
    """Translator for LSST-UCDCam, the single-sensor beam simulator at UC Davis (an e2v or,
    ``LSST-UCDCam-ITL``, an ITL sensor). One sensor: no detector (its ``RAFTBAY`` and
    ``CCDSLOT`` are the bay the sensor was destined for); ``obs_id`` is ``OBSID``. obs_lsst
    offsets its day by 0 h."""

    name: ClassVar[str] = "LSST-UCDCam"
    instrument_aliases: ClassVar[tuple[str, ...]] = ("LSST-UCDCam", "LSST-UCDCam-ITL")
    day_obs_offset_hours: ClassVar[float | None] = 0.0


#: Translators tried in order by `translate_header`; append new instruments here.
TRANSLATORS: tuple[type[HeaderTranslator], ...] = (
    LatissTranslator, CtioTranslator, LsstCamTranslator, ComCamTranslator,
    LsstCamSimTranslator, LsstTs8Translator, Ts3Translator, UcdCamTranslator,
)


def _optic(value: Any, empty_patterns: Sequence[re.Pattern[str]]) -> str:
    """``"unknown"`` for no value, ``"empty"`` when a pattern matches, else the name."""
    if value is None:
        return "unknown"
    name = str(value).strip()
    if any(p.match(name) for p in empty_patterns):
        return "empty"
    return name


def optic_name(value: Any, instrument: str | None = None) -> str:
    """The name a filter or disperser is shown by: the one `translate_header` gives it.

    A raw or post-ISR header keeps the instrument's own spelling (LATISS writes ``empty_1``
    for its empty filter slot) while the night summary holds the translated one
    (``empty``); every title, legend, colour and table goes through this one function so a
    configuration has one name across the report.

    Parameters
    ----------
    value : Any
        A ``FILTER``/``GRATING`` header value or a summary's ``filter``/``disperser``.
    instrument : str, optional
        ``INSTRUME`` of the header (any alias): its translator's empty-slot spellings;
        None: any translator's.

    Returns
    -------
    str
        ``"empty"`` for an empty slot, ``"unknown"`` for None, else the stripped name.
    """
    known = [t for t in TRANSLATORS
             if instrument is not None and t.name == canonical_instrument(str(instrument))]
    return _optic(value, [t.empty_optic_pattern for t in known or TRANSLATORS])


def canonical_instrument(name: str) -> str:
    """Map an ``INSTRUME`` alias (e.g. the 2018 ``LSST_ATISS``) to the canonical name.

    Parameters
    ----------
    name : str
        An ``INSTRUME`` value, any case.

    Returns
    -------
    str
        The translator's name (``LATISS``, ``CTIO``, ``LSSTCam`` for ``lsstCam``), else
        ``name`` upper-cased.
    """
    upper = name.strip().upper()
    for translator in TRANSLATORS:
        names = {translator.name, *translator.instrument_aliases}
        if upper in {known.upper() for known in names}:
            return translator.name
    return upper


def translate_header(header: Mapping[str, Any], filename: str | None = None) -> ObservationInfo:
    """Translate a raw primary header with the first translator that accepts it.

    Parameters
    ----------
    header : Mapping[str, Any]
        Raw primary header (`astropy.io.fits.Header` or any mapping; values may be None).
    filename : str, optional
        File the header came from, used in error messages.

    Returns
    -------
    ObservationInfo
        The translated record.

    Raises
    ------
    BadInputError
        If no translator in `TRANSLATORS` accepts the header, or the header lacks the
        keywords identifying the exposure.
    """
    for translator in TRANSLATORS:
        if translator.can_translate(header):
            return translator().translate(header, filename)
    instrument = HeaderTranslator._get(header, "INSTRUME")
    known = ", ".join(alias for cls in TRANSLATORS for alias in cls.instrument_aliases)
    raise BadInputError(
        filename, f"unsupported instrument INSTRUME={instrument!r} (known: {known})"
    )
