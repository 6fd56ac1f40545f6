"""LATISS as a Gen3 ``Instrument``: its dimension records, built from our own data.

obs_lsst (Rubin's LSST camera package) is not a dependency: the instrument, detector and
filter records of LATISS and the exposure records of its raws are made here, from the camera
description (`atmospec.camera.description`), the instrument profile
(``data/instruments/latiss.yaml``) and our header translator
(`atmospec.camera.translator`).

Conventions (those of obs_lsst for LATISS where it has one):

- instrument ``LATISS``, one detector: id 0, ``RXX_S00``;
- exposure id ``day_obs * 100000 + seq_num`` (e.g. ``2025030100012``);
- physical filter ``<filter>~<disperser>`` as our translator writes it; its band is the
  filter name (``SDSSr_65mm~holo4_003`` -> band ``SDSSr_65mm``), so flats, which are looked
  up by band, serve the dispersed exposures of the same filter as the native runner's
  fallback does;
- ``day_obs`` records span day_obs 12:00 UTC to the next day 12:00 UTC (the night's
  validity of `atmospec.night.calibs.night_window`); ``group`` is the exposure's OBSID.
"""

from __future__ import annotations

from typing import Any

from atmospec.gen3 import require_gen3

require_gen3()

from lsst.daf.butler import Timespan  # noqa: E402
from lsst.pipe.base import Instrument  # noqa: E402

__all__ = [
    "DETECTOR_ID",
    "DETECTOR_NAME",
    "INSTRUMENT",
    "Latiss",
    "day_obs_record",
    "exposure_id",
    "exposure_record",
    "physical_filter_record",
]

INSTRUMENT = "LATISS"
DETECTOR_ID = 0
DETECTOR_NAME = "RXX_S00"

#: Largest exposure id (obs_lsst's for LATISS: YYYYMMDD * 100000 + seq_num).
_EXPOSURE_MAX = 99_999_999_999_999


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


def physical_filter_record(physical_filter: str) -> dict[str, Any]:
    """Record of a physical filter ``<filter>~<disperser>`` (band: the filter name).

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
    return {"instrument": INSTRUMENT, "name": physical_filter, "band": band}


def day_obs_record(day_obs: int) -> dict[str, Any]:
    """Record of one observing day (12:00 UTC to 12:00 UTC the next day).

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

    from atmospec.night.calibs import night_window

    start, end = night_window(int(day_obs))
    return {"instrument": INSTRUMENT, "id": int(day_obs),
            "timespan": Timespan(Time(start, scale="utc"), Time(end, scale="utc"))}


def exposure_record(info: Any) -> dict[str, Any]:
    """Exposure record of one raw, from its translated header.

    Parameters
    ----------
    info : atmospec.camera.translator.ObservationInfo
        `atmospec.camera.translator.translate_header` of the raw's primary header.

    Returns
    -------
    dict
        Fields of the ``exposure`` dimension record (times in TAI, as the header).
    """
    from astropy import units as u

    timespan = None
    if info.datetime_begin is not None:
        begin = info.datetime_begin
        timespan = Timespan(begin, begin + (info.exposure_time or 0.0) * u.s)
    zenith = 90.0 - info.altitude if info.altitude is not None else None
    science = info.image_type == "science"
    return {
        "instrument": INSTRUMENT,
        "id": exposure_id(info.day_obs, info.seq_num),
        "day_obs": int(info.day_obs),
        "group": info.obs_id,
        "physical_filter": info.physical_filter,
        "obs_id": info.obs_id,
        "exposure_time": float(info.exposure_time or 0.0),
        "dark_time": float(info.dark_time if info.dark_time is not None
                           else (info.exposure_time or 0.0)),
        "observation_type": info.image_type,
        "observation_reason": "dispersed" if science and info.is_dispersed else (
            "imaging" if science else info.image_type),
        "seq_num": int(info.seq_num),
        "seq_start": int(info.seq_num),
        "seq_end": int(info.seq_num),
        "target_name": info.target_name or "UNKNOWN",
        "science_program": "unknown",
        "tracking_ra": info.ra,
        "tracking_dec": info.dec,
        "sky_angle": info.rotation_angle,
        "azimuth": info.azimuth,
        "zenith_angle": zenith,
        "has_simulated": False,
        "can_see_sky": science,
        "timespan": timespan,
    }


def _dispersers() -> list[str]:
    """Disperser names of our LATISS instrument profile, and ``empty``."""
    from atmospec.camera.spectrograph import load_instrument

    return sorted({"empty", *load_instrument("latiss").dispersers})


class Latiss(Instrument):
    """LATISS on the Rubin Auxiliary Telescope, described from atmospec's own data.

    Parameters
    ----------
    collection_prefix : str, optional
        Prefix of the instrument's collections (default ``LATISS``).
    """

    policyName = "latiss"
    raw_definition = ("raw", ("instrument", "detector", "exposure"), "AtmospecRaw")

    @classmethod
    def getName(cls) -> str:
        """The instrument's dimension name.

        Returns
        -------
        str
            ``LATISS``.
        """
        return INSTRUMENT

    def register(self, registry: Any, *, update: bool = False) -> None:
        """Insert the instrument, detector and base filter records (idempotent).

        Parameters
        ----------
        registry : lsst.daf.butler.Registry
            Registry of a writeable repository.
        update : bool, optional
            Replace existing records that differ.
        """
        with registry.transaction():
            registry.syncDimensionData("instrument", {
                "name": INSTRUMENT, "detector_max": 1, "visit_max": _EXPOSURE_MAX,
                "exposure_max": _EXPOSURE_MAX, "visit_system": 0,
                "class_name": f"{__name__}.Latiss"}, update=update)
            registry.syncDimensionData("detector", {
                "instrument": INSTRUMENT, "id": DETECTOR_ID, "full_name": DETECTOR_NAME,
                "raft": "RXX", "name_in_raft": "S00", "purpose": "SCIENCE"}, update=update)
            for disperser in _dispersers():
                registry.syncDimensionData(
                    "physical_filter", physical_filter_record(f"empty~{disperser}"),
                    update=update)

    def getRawFormatter(self, dataId: Any) -> type:
        """Formatter of LATISS raws.

        Parameters
        ----------
        dataId : DataId
            Unused: every LATISS raw is read the same way.

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
        raise NotImplementedError("atmospec's LATISS has no Gen2 data ID translator")
