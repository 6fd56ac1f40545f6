"""atmospec's instruments as Gen3 ``Instrument``\\ s: their dimension records, built from our
own data.

obs_lsst (Rubin's LSST camera package) is not a dependency: the instrument, detector and
filter records and the exposure records of the raws are made here, from the camera
descriptions (`atmospec.camera.description.detector_table`), the LATISS instrument profile
(``data/instruments/latiss.yaml``) and our header translator (`atmospec.camera.translator`).

One small `AtmospecInstrument` subclass per instrument, each only data (its name, the
detector table it takes its detectors from, its largest exposure id, its day boundary and
its exposure-id rule):

===============  ==================  =========  ==========================================
class            instrument          detectors  exposure id
===============  ==================  =========  ==========================================
`Latiss`         ``LATISS``          1          ``day_obs * 100000 + seq_num``
`LsstCam`        ``LSSTCam``         205        obs_lsst's (`lsst_exposure_id`)
`LsstComCam`     ``LSSTComCam``      9          obs_lsst's (`lsst_exposure_id`)
`LsstCamSim`     ``LSSTCamSim``      205        obs_lsst's (`lsst_exposure_id`)
`LsstTs8`        ``LSST-TS8``        225        ``DATE-OBS`` digits (`stand_exposure_id`),
                                                obs_lsst's after 2023-05-24 (``TS_C_``)
===============  ==================  =========  ==========================================

Conventions (those of obs_lsst where it has one):

- detector records: ``<raft>_<name_in_raft>`` (``R22_S11``, a TS8 raft's ``RTM-010_S11``),
  purpose ``SCIENCE``, ``GUIDER`` for the corner ``SG0``/``SG1`` sensors, ``WAVEFRONT`` for
  ``SW0``/``SW1``; ``detector_max`` is one more than the largest detector id;
- exposure records: ``obs_id`` and ``group`` are the exposure's OBSID (`ObservationInfo.
  exposure_id`, shared by all detectors of the exposure, not the frame's ``obs_id``);
- physical filter ``<filter>~<disperser>`` (LATISS) or ``<filter>~<second filter>`` (the LSST
  cameras) as our translator writes it; its band is the filter name
  (``SDSSr_65mm~holo4_003`` -> band ``SDSSr_65mm``), so flats, which are looked up by band,
  serve the dispersed exposures of the same filter as the native runner's fallback does;
- ``day_obs`` records span the observing day: day_obs 12:00 UTC to the next day 12:00 UTC
  (the night's validity of `atmospec.night.calibs.night_window`), 08:00 UTC for the SLAC
  test stand (obs_lsst's test-stand day).

LATISS keeps the records, names and exposure ids it always had (no controller offset: a
LATISS repository made before the LSST cameras came is unchanged).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, ClassVar

from atmospec.errors import BadInputError
from atmospec.gen3 import require_gen3

require_gen3()

from lsst.daf.butler import Timespan  # noqa: E402
from lsst.pipe.base import Instrument  # noqa: E402

__all__ = [
    "DETECTOR_ID",
    "DETECTOR_NAME",
    "INSTRUMENT",
    "INSTRUMENTS",
    "AtmospecInstrument",
    "Latiss",
    "LsstCam",
    "LsstCamSim",
    "LsstComCam",
    "LsstTs8",
    "day_obs_record",
    "detector_purpose",
    "exposure_id",
    "exposure_record",
    "instrument_for",
    "lsst_exposure_id",
    "physical_filter_record",
    "stand_exposure_id",
]

INSTRUMENT = "LATISS"
DETECTOR_ID = 0
DETECTOR_NAME = "RXX_S00"

#: Largest exposure id of LATISS (YYYYMMDD * 100000 + seq_num).
_EXPOSURE_MAX = 99_999_999_999_999

#: obs_lsst's controller codes, in the order that sets the exposure-id offset (O on sky,
#: C camera control, then the simulated H, P, Q, S): never reorder.
CONTROLLERS = "OCHPQS"

#: One thousand years of day_obs per controller after ``O`` (MC_C_20190319 -> 30190319).
_CONTROLLER_INCREMENT = 1000_00_00

#: Since this day_obs the C controller shares the O sequence counter (no offset) ...
_UNIFIED_C_AFTER = 20231004
#: ... and the simulated P, Q, S controllers theirs.
_UNIFIED_PQS_AFTER = 20250417

#: Digits of the sequence number in an exposure id: at most 99,999 exposures a day.
_SEQ_DIGITS = 5

#: obs_lsst's largest exposure id of the LSST cameras: 2050-12-31, seq 99999, 6 controllers.
_LSST_EXPOSURE_MAX = 7050123199999

#: obs_lsst's largest exposure id of TS8 (the digits of ``2050-12-31T23:59.999``).
_TS8_EXPOSURE_MAX = 205012312359999


def exposure_id(day_obs: int, seq_num: int) -> int:
    """Gen3 exposure id of a LATISS exposure: ``day_obs * 100000 + seq_num``.

    Parameters
    ----------
    day_obs : int
        ``YYYYMMDD``.
    seq_num : int
        Sequence number in that day.

    Returns
    -------
    int
    """
    return int(day_obs) * 100_000 + int(seq_num)


def lsst_exposure_id(day_obs: int, seq_num: int, controller: str | None) -> int:
    """Gen3 exposure id of an LSST camera exposure, by obs_lsst's rule.

    ``day_obs * 100000 + seq_num``, with one thousand years added to ``day_obs`` per
    controller after ``O`` (`CONTROLLERS`: ``C`` +1000, ``H`` +2000, ``P``, ``Q``, ``S``),
    because each controller once had its own sequence counter and their exposures of a day
    would otherwise share ids. No offset for ``C`` after 2023-10-04 nor for ``P``, ``Q``,
    ``S`` after 2025-04-17, when their counters were unified with the sky's, nor without a
    controller. ``MC_C_20190319_000001`` -> ``3019031900001``.

    Parameters
    ----------
    day_obs : int
        ``YYYYMMDD`` (``DAYOBS`` as written).
    seq_num : int
        Sequence number in that day.
    controller : str or None
        ``CONTRLLR`` (`ObservationInfo.controller`).

    Returns
    -------
    int

    Raises
    ------
    BadInputError
        A sequence number above 99999, a day_obs that is not ``YYYYMMDD`` or an unknown
        controller (no file named: the caller names it).
    """
    day, seq = int(day_obs), int(seq_num)
    if not 10_000_000 <= day <= 99_999_999:
        raise BadInputError(None, f"day_obs {day_obs} is not YYYYMMDD: no exposure id")
    if not 0 <= seq < 10**_SEQ_DIGITS:
        raise BadInputError(None, f"sequence number {seq_num} is not in 0..99999: no "
                                  "exposure id")
    if (controller == "C" and day > _UNIFIED_C_AFTER) or (
            controller in ("P", "Q", "S") and day > _UNIFIED_PQS_AFTER):
        controller = None
    if controller is not None:
        index = CONTROLLERS.find(controller) if len(controller) == 1 else -1
        if index < 0:
            raise BadInputError(None, f"controller CONTRLLR = {controller!r} is not one of "
                                      f"{', '.join(CONTROLLERS)}: no exposure id")
        day += _CONTROLLER_INCREMENT * index
    return day * 10**_SEQ_DIGITS + seq


def stand_exposure_id(date_obs: str) -> int:
    """Gen3 exposure id of a test-stand exposure, by obs_lsst's rule: the digits of the
    first 21 characters of ``DATE-OBS`` (to 0.1 s).

    Test stands number their exposures within a run, not a day, so the start time is what
    tells two exposures apart. ``2018-07-24T10:28:45.342`` -> ``201807241028453``.

    Parameters
    ----------
    date_obs : str
        The ``DATE-OBS`` card as written (not a parsed time: the digits must not depend on
        the time scale).

    Returns
    -------
    int

    Raises
    ------
    BadInputError
        Not an ISO time.
    """
    text = str(date_obs).strip()
    if not re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d", text):
        raise BadInputError(None, f"DATE-OBS = {date_obs!r} is not a time (ISO 8601): no "
                                  "exposure id")
    return int(re.sub(r"\D", "", text[:21]))


def detector_purpose(name_in_raft: str) -> str:
    """Purpose of a detector by its name in the raft (obs_lsst's detector types).

    Parameters
    ----------
    name_in_raft : str
        ``S11``, ``SG0``, ``SW1`` ...

    Returns
    -------
    str
        ``GUIDER`` for the corner rafts' guide sensors ``SG0``/``SG1``, ``WAVEFRONT`` for
        their wavefront sensors ``SW0``/``SW1``, else ``SCIENCE``.
    """
    if name_in_raft.startswith("SG"):
        return "GUIDER"
    if name_in_raft.startswith("SW"):
        return "WAVEFRONT"
    return "SCIENCE"


def _dispersers() -> list[str]:
    """Disperser names of our LATISS instrument profile, and ``empty``."""
    from atmospec.camera.spectrograph import load_instrument

    return sorted({"empty", *load_instrument("latiss").dispersers})


class AtmospecInstrument(Instrument):
    """An atmospec instrument described from atmospec's own data (base of `Latiss`,
    `LsstCam` ...): a subclass only sets the class attributes.

    Parameters
    ----------
    collection_prefix : str, optional
        Prefix of the instrument's collections (default: its name).
    """

    instrument_name: ClassVar[str] = ""
    """Dimension name: the translator's (`atmospec.camera.translator.ObservationInfo.
    instrument`)."""
    detector_table_name: ClassVar[str] = ""
    """Instrument whose camera description lists the detectors (LSSTCamSim: LSSTCam's)."""
    exposure_max: ClassVar[int] = _LSST_EXPOSURE_MAX
    """Largest exposure (and visit) id."""
    day_obs_offset_hours: ClassVar[float] = 12.0
    """A ``day_obs`` starts this many hours after 00:00 UTC of its date."""
    raw_definition = ("raw", ("instrument", "detector", "exposure"), "AtmospecRaw")

    @classmethod
    def getName(cls) -> str:
        """The instrument's dimension name.

        Returns
        -------
        str
            `instrument_name` (``LATISS``, ``LSSTCam`` ...).
        """
        return cls.instrument_name

    # ------------------------------------------------------------------ records

    @classmethod
    def instrument_record(cls) -> dict[str, Any]:
        """The ``instrument`` record.

        Returns
        -------
        dict
            ``detector_max`` is one more than the largest detector id.
        """
        detector_max = 1 + max(r["id"] for r in cls.detector_records())
        return {"name": cls.instrument_name, "detector_max": detector_max,
                "visit_max": cls.exposure_max, "exposure_max": cls.exposure_max,
                "visit_system": 0, "class_name": f"{cls.__module__}.{cls.__qualname__}"}

    @classmethod
    def detector_records(cls) -> list[dict[str, Any]]:
        """One ``detector`` record per detector of the camera description, by id.

        Returns
        -------
        list of dict
            Fields ``instrument``, ``id``, ``full_name``, ``raft``, ``name_in_raft``,
            ``purpose`` (`detector_purpose`).
        """
        from atmospec.camera.description import detector_table

        records = []
        for name, entry in detector_table(cls.detector_table_name).items():
            # The slot is after the last "_": a TS8 raft is "RTM-010", not "RTM-010_S11".
            raft, _, slot = name.rpartition("_")
            records.append({"instrument": cls.instrument_name, "id": entry.detector_id,
                            "full_name": name, "raft": raft, "name_in_raft": slot,
                            "purpose": detector_purpose(slot)})
        return sorted(records, key=lambda r: r["id"])

    @classmethod
    def base_physical_filters(cls) -> tuple[str, ...]:
        """Physical filters registered with the instrument (others arrive with the raws).

        Returns
        -------
        tuple of str
            None by default.
        """
        return ()

    @classmethod
    def physical_filter_record(cls, physical_filter: str) -> dict[str, Any]:
        """Record of a physical filter ``<filter>~<second element>`` (band: the filter name).

        Parameters
        ----------
        physical_filter : str
            As `atmospec.camera.translator.ObservationInfo.physical_filter`.

        Returns
        -------
        dict
            Fields ``instrument``, ``name``, ``band``.
        """
        band = physical_filter.split("~", 1)[0] or "unknown"
        return {"instrument": cls.instrument_name, "name": physical_filter, "band": band}

    @classmethod
    def day_obs_record(cls, day_obs: int) -> dict[str, Any]:
        """Record of one observing day (`day_obs_offset_hours` after 00:00 UTC of its date,
        for 24 h).

        Parameters
        ----------
        day_obs : int
            ``YYYYMMDD``.

        Returns
        -------
        dict
            Fields ``instrument``, ``id``, ``timespan``.
        """
        from astropy.time import Time

        start = (datetime.strptime(f"{int(day_obs):08d}", "%Y%m%d")
                 + timedelta(hours=cls.day_obs_offset_hours))
        return {"instrument": cls.instrument_name, "id": int(day_obs),
                "timespan": Timespan(Time(start, scale="utc"),
                                     Time(start + timedelta(days=1), scale="utc"))}

    @classmethod
    def exposure_number(cls, info: Any, date_obs: str | None = None) -> int:
        """Gen3 exposure id of a raw (obs_lsst's `lsst_exposure_id` by default).

        Parameters
        ----------
        info : atmospec.camera.translator.ObservationInfo
            The raw's translated primary header.
        date_obs : str, optional
            Its ``DATE-OBS`` card, as written (the test stands' rule needs it).

        Returns
        -------
        int

        Raises
        ------
        BadInputError
            When the header does not make an id (no file named).
        """
        return lsst_exposure_id(info.day_obs, info.seq_num, info.controller)

    @classmethod
    def exposure_record(cls, info: Any, date_obs: str | None = None) -> dict[str, Any]:
        """Exposure record of one raw, from its translated header.

        Parameters
        ----------
        info : atmospec.camera.translator.ObservationInfo
            `atmospec.camera.translator.translate_header` of the raw's primary header.
        date_obs : str, optional
            Its ``DATE-OBS`` card, as written (`exposure_number`).

        Returns
        -------
        dict
            Fields of the ``exposure`` dimension record (times in the header's scale);
            ``obs_id`` and ``group`` are the exposure's OBSID (``info.exposure_id``), which
            all the detectors of the exposure share.
        """
        from astropy import units as u

        timespan = None
        if info.datetime_begin is not None:
            begin = info.datetime_begin
            timespan = Timespan(begin, begin + (info.exposure_time or 0.0) * u.s)
        zenith = 90.0 - info.altitude if info.altitude is not None else None
        science = info.image_type == "science"
        seq_num = int(info.seq_num)
        return {
            "instrument": cls.instrument_name,
            "id": cls.exposure_number(info, date_obs),
            "day_obs": int(info.day_obs),
            "group": info.exposure_id,
            "physical_filter": info.physical_filter,
            "obs_id": info.exposure_id,
            "exposure_time": float(info.exposure_time or 0.0),
            "dark_time": float(info.dark_time if info.dark_time is not None
                               else (info.exposure_time or 0.0)),
            "observation_type": info.image_type,
            "observation_reason": "dispersed" if science and info.is_dispersed else (
                "imaging" if science else info.image_type),
            "seq_num": seq_num,
            "seq_start": seq_num,
            "seq_end": seq_num,
            "target_name": info.target_name or "UNKNOWN",
            # A lab exposure's program is its test run (obs_lsst: RUNNUM).
            "science_program": info.run or "unknown",
            "tracking_ra": info.ra,
            "tracking_dec": info.dec,
            "sky_angle": info.rotation_angle,
            "azimuth": info.azimuth,
            "zenith_angle": zenith,
            # obs_lsst: the H, P, Q, S controllers write simulated data.
            "has_simulated": info.controller in ("H", "P", "Q", "S"),
            "can_see_sky": science,
            "timespan": timespan,
        }

    # ------------------------------------------------------------------ Instrument API

    def register(self, registry: Any, *, update: bool = False) -> None:
        """Insert the instrument, detector and base filter records (idempotent).

        Parameters
        ----------
        registry : lsst.daf.butler.Registry
            Registry of a writeable repository.
        update : bool, optional
            Replace existing records that differ.
        """
        name = self.getName()
        with registry.transaction():
            registry.syncDimensionData("instrument", self.instrument_record(), update=update)
            # One insert of the new detectors (a sync each costs ~7 ms: 1.5 s for LSSTCam's
            # 205); an existing one is synced only when it differs, which fails without
            # ``update`` as a sync does.
            existing = {r.id: r.toDict() for r in registry.queryDimensionRecords(
                "detector", instrument=name)}
            new = []
            for record in self.detector_records():
                known = existing.get(record["id"])
                if known is None:
                    new.append(record)
                elif any(known.get(k) != v for k, v in record.items()):
                    registry.syncDimensionData("detector", record, update=update)
            if new:
                registry.insertDimensionData("detector", *new)
            for physical in self.base_physical_filters():
                registry.syncDimensionData("physical_filter",
                                           self.physical_filter_record(physical),
                                           update=update)

    def getRawFormatter(self, dataId: Any) -> type:
        """Formatter of the raws.

        Parameters
        ----------
        dataId : DataId
            Unused: `atmospec.camera.raw.read_raw` reads every raw of every instrument.

        Returns
        -------
        type
            `atmospec.gen3.formatters.RawFormatter`.
        """
        from atmospec.gen3.formatters import RawFormatter

        return RawFormatter

    def makeDataIdTranslatorFactory(self) -> Any:  # pragma: no cover - Gen2 conversion only
        """Not supported (no Gen2 repositories to convert).

        Raises
        ------
        NotImplementedError
            Always.
        """
        raise NotImplementedError(f"atmospec's {self.getName()} has no Gen2 data ID "
                                  "translator")


class Latiss(AtmospecInstrument):
    """LATISS on the Rubin Auxiliary Telescope: one detector (0, ``RXX_S00``), exposure id
    ``day_obs * 100000 + seq_num``, a physical filter ``empty~<disperser>`` per disperser.

    Parameters
    ----------
    collection_prefix : str, optional
        Prefix of the instrument's collections (default ``LATISS``).
    """

    instrument_name = INSTRUMENT
    detector_table_name = INSTRUMENT
    policyName = "latiss"
    exposure_max = _EXPOSURE_MAX

    @classmethod
    def base_physical_filters(cls) -> tuple[str, ...]:
        """``empty~<disperser>`` for each disperser of our LATISS profile (and ``empty``).

        Returns
        -------
        tuple of str
        """
        return tuple(f"empty~{disperser}" for disperser in _dispersers())

    @classmethod
    def exposure_number(cls, info: Any, date_obs: str | None = None) -> int:
        """``day_obs * 100000 + seq_num``, whatever the controller (as LATISS repositories
        always had it).

        Parameters
        ----------
        info : atmospec.camera.translator.ObservationInfo
            The raw's translated primary header.
        date_obs : str, optional
            Unused.

        Returns
        -------
        int
        """
        return exposure_id(info.day_obs, info.seq_num)


class LsstCam(AtmospecInstrument):
    """LSSTCam, the LSST Camera: 189 science CCDs (ids 0-188), and the guide (``SG0``,
    ``SG1``) and wavefront (``SW0``, ``SW1``) sensors of the four corner rafts (189-204)."""

    instrument_name = "LSSTCam"
    detector_table_name = "LSSTCam"
    policyName = "lsstCam"


class LsstComCam(AtmospecInstrument):
    """LSSTComCam, the commissioning camera: raft R22, 9 CCDs (ids 0-8)."""

    instrument_name = "LSSTComCam"
    detector_table_name = "LSSTComCam"
    policyName = "comCam"


class LsstCamSim(AtmospecInstrument):
    """LSSTCamSim, LSSTCam simulated by the camera's software: LSSTCam's detectors."""

    instrument_name = "LSSTCamSim"
    detector_table_name = "LSSTCam"
    policyName = "lsstCamSim"


#: The first TS8 exposure with an obs_lsst exposure id of the cameras' kind is
#: TS_C_20230524_000906; earlier ones (whatever their OBSID) keep the DATE-OBS digits.
_TS8_ID_CHANGE = "2023-05-24T23:00:00.0"


class LsstTs8(AtmospecInstrument):
    """LSST-TS8, the raft test stand at SLAC: 25 rafts of 9 CCDs (``RTM-010_S11``); the
    day starts at 08:00 UTC; exposure id the ``DATE-OBS`` digits (`stand_exposure_id`), or
    obs_lsst's camera rule for ``TS_C_`` exposures after 2023-05-24, as obs_lsst numbers
    them."""

    instrument_name = "LSST-TS8"
    detector_table_name = "LSST-TS8"
    policyName = "ts8"
    exposure_max = _TS8_EXPOSURE_MAX
    day_obs_offset_hours = 8.0

    @classmethod
    def exposure_number(cls, info: Any, date_obs: str | None = None) -> int:
        """`stand_exposure_id` of ``DATE-OBS``, or `lsst_exposure_id` for an exposure
        ``TS_C_...`` that began after 2023-05-24 23:00 TAI.

        Parameters
        ----------
        info : atmospec.camera.translator.ObservationInfo
            The raw's translated primary header.
        date_obs : str, optional
            Its ``DATE-OBS`` card; without it, the start our translator put in the exposure
            id of a file without OBSID (``TS8_6006D_201807241028453``).

        Returns
        -------
        int

        Raises
        ------
        BadInputError
            Neither a ``DATE-OBS`` nor an exposure id holding one.
        """
        from astropy.time import Time

        begin = info.datetime_begin
        if (str(info.exposure_id).startswith("TS_C_") and begin is not None
                and begin > Time(_TS8_ID_CHANGE, scale="tai")):
            return lsst_exposure_id(info.day_obs, info.seq_num, info.controller)
        if date_obs is not None:
            return stand_exposure_id(date_obs)
        stamp = str(info.exposure_id).rpartition("_")[2]
        if str(info.exposure_id).startswith("TS8_") and stamp.isdigit():
            return int(stamp)
        raise BadInputError(None, f"exposure {info.exposure_id}: the TS8 exposure id needs "
                                  "the DATE-OBS card")


#: Every instrument with Gen3 records, by its translator name.
INSTRUMENTS: Mapping[str, type[AtmospecInstrument]] = MappingProxyType({
    cls.instrument_name: cls for cls in (Latiss, LsstCam, LsstComCam, LsstCamSim, LsstTs8)})


def instrument_for(name: str) -> type[AtmospecInstrument]:
    """The `AtmospecInstrument` class of a translated instrument name.

    Parameters
    ----------
    name : str
        `atmospec.camera.translator.ObservationInfo.instrument` (``LATISS``, ``LSSTCam``,
        ``LSSTComCam``, ``LSSTCamSim``, ``LSST-TS8``).

    Returns
    -------
    type

    Raises
    ------
    BadInputError
        An instrument without Gen3 records (the single-sensor stands LSST-TS3 and
        LSST-UCDCam, which have no detector table; CTIO), in one line.
    """
    cls = INSTRUMENTS.get(name)
    if cls is None:
        raise BadInputError(None, f"no Gen3 instrument for {name!r} (known: "
                                  f"{', '.join(INSTRUMENTS)})")
    return cls


def physical_filter_record(physical_filter: str, instrument: str = INSTRUMENT
                           ) -> dict[str, Any]:
    """Record of a physical filter of an instrument (`AtmospecInstrument.
    physical_filter_record`).

    Parameters
    ----------
    physical_filter : str
        As `atmospec.camera.translator.ObservationInfo.physical_filter`.
    instrument : str, optional
        Instrument name (default ``LATISS``).

    Returns
    -------
    dict
        Fields ``instrument``, ``name``, ``band``.
    """
    return instrument_for(instrument).physical_filter_record(physical_filter)


def day_obs_record(day_obs: int, instrument: str = INSTRUMENT) -> dict[str, Any]:
    """Record of one observing day of an instrument (`AtmospecInstrument.day_obs_record`).

    Parameters
    ----------
    day_obs : int
        ``YYYYMMDD``.
    instrument : str, optional
        Instrument name (default ``LATISS``).

    Returns
    -------
    dict
        Fields ``instrument``, ``id``, ``timespan``.
    """
    return instrument_for(instrument).day_obs_record(day_obs)


def exposure_record(info: Any, date_obs: str | None = None) -> dict[str, Any]:
    """Exposure record of one raw, by the instrument of its header
    (`AtmospecInstrument.exposure_record`).

    Parameters
    ----------
    info : atmospec.camera.translator.ObservationInfo
        The raw's translated primary header.
    date_obs : str, optional
        Its ``DATE-OBS`` card, as written.

    Returns
    -------
    dict
        Fields of the ``exposure`` dimension record.
    """
    return instrument_for(info.instrument).exposure_record(info, date_obs)
