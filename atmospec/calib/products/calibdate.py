"""``CALIBDATE``: the start of a product's validity, written by every builder.

A product is valid from the start of its first input frame, so that it covers its own
frames and every later one (`atmospec.calib.registry` compares it with the exposures' starts).
Both are UTC: LATISS and the LSST Camera date their frames in TAI (``DATE-BEG``, ``TIMESYS =
'TAI'``), 37 s ahead of UTC, and a TAI ``CALIBDATE`` read as UTC made a bias invalid for its
own frames and for the dark taken just after them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

from astropy.time import Time
from erfa import ErfaWarning

__all__ = ["calib_date"]


def calib_date(starts: Iterable[Time | None], day_obs: Iterable[int] = ()) -> str:
    """``CALIBDATE`` of a product built from frames: the earliest start, UTC ISO.

    Parameters
    ----------
    starts : iterable of astropy.time.Time or None
        Start times of the input frames, in any time scale (None: unknown).
    day_obs : iterable of int, optional
        The inputs' observing nights (``YYYYMMDD``), used when no start is known: the night
        starts at day_obs 12:00 UTC (Rubin's day_obs is the date in UTC−12 h).

    Returns
    -------
    str
        ``YYYY-MM-DDTHH:MM:SS.sss`` in UTC, or ``""`` when neither is known.
    """
    known = [t for t in starts if t is not None]
    if known:
        with warnings.catch_warnings():
            # ERFA's "dubious year" past its leap-second table: irrelevant at 1 s.
            warnings.simplefilter("ignore", ErfaWarning)
            return min(known, key=lambda t: t.mjd).utc.isot
    nights = sorted(day_obs)
    if nights:
        d = nights[0]
        return f"{d // 10000:04d}-{d // 100 % 100:02d}-{d % 100:02d}T12:00:00.000"
    return ""
