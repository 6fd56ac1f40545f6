"""Times as the registry stores them: fixed-width UTC ISO strings.

``YYYY-MM-DDTHH:MM:SS.sss``, no zone: string order is time order, so validity intervals
compare in SQL. `exposure_time_utc` is the instant at which an exposure's products must be
valid.
"""

from __future__ import annotations

import warnings
from datetime import UTC, date, datetime, timedelta

from astropy.time import Time
from erfa import ErfaWarning

from atmospec.camera.translator import ObservationInfo
from atmospec.errors import BadInputError

__all__ = ["exposure_time_utc", "format_utc", "now_utc", "to_datetime", "to_utc_iso"]


def to_utc_iso(value: str | date | datetime | Time) -> str:
    """Normalise a time to the registry's UTC ISO form ``YYYY-MM-DDTHH:MM:SS.sss``.

    Parameters
    ----------
    value : str, datetime.date, datetime.datetime or astropy.time.Time
        An ISO 8601 string (``2024-06-24``, ``20240624``, ``2024-06-24T03:00:00Z``, ...; no
        zone means UTC), a date (its midnight UTC), a datetime (naive means UTC) or a
        `~astropy.time.Time` in any scale (converted to UTC).

    Returns
    -------
    str
        Fixed-width UTC string; string order is time order.

    Raises
    ------
    BadInputError
        If a string is not an ISO date.
    """
    return format_utc(to_datetime(value))


def exposure_time_utc(info: ObservationInfo) -> datetime:
    """The time at which an exposure's products must be valid, as a naive UTC datetime.

    Parameters
    ----------
    info : ObservationInfo
        The exposure.

    Returns
    -------
    datetime.datetime
        ``datetime_begin`` converted to UTC; without it, the middle of the observing night
        ``day_obs``: Rubin's day_obs is the date in UTC-12h, so the night runs from day_obs
        12:00 UTC to the next day 12:00 UTC and its middle is the next day 00:00 UTC.
    """
    if info.datetime_begin is not None:
        return to_datetime(info.datetime_begin)
    night = datetime.strptime(f"{info.day_obs:08d}", "%Y%m%d")
    return night + timedelta(days=1)


def to_datetime(value: str | date | datetime | Time) -> datetime:
    """Convert to a naive UTC datetime (the forms `to_utc_iso` accepts).

    Raises
    ------
    BadInputError
        If a string is not an ISO date.
    """
    if isinstance(value, Time):
        with warnings.catch_warnings():
            # ERFA warns of a "dubious year" past its leap-second table; a second of error
            # is irrelevant to calibration validity.
            warnings.simplefilter("ignore", ErfaWarning)
            text = value.utc.isot
        # A time inside a leap second (hh:mm:60) has no datetime; the second before will do.
        return to_datetime(text.replace(":60.", ":59."))
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    try:
        return to_datetime(datetime.fromisoformat(str(value).strip()))
    except ValueError:
        raise BadInputError(None, f"{value!r} is not an ISO date or time") from None


def format_utc(value: datetime) -> str:
    """Fixed-width UTC ISO string of a naive UTC datetime."""
    return value.isoformat(timespec="milliseconds")


def now_utc() -> str:
    """The current time in the registry's form."""
    return format_utc(datetime.now(UTC).replace(tzinfo=None))
