"""A calibration registry: products stored in a repository and chosen per exposure.

Layout of a repository directory ``REPO`` (paths from `atmospec.layout`)::

    REPO/calib/registry.sqlite3          index (SQLite, WAL mode)
    REPO/calib/<kind>/<stem>.<sha12><ext> the stored products (copies or hard links)
    REPO/calib/<kind>/<stem>.<sha12>.verify.json   their verification reports, if any
    REPO/calib/<kind>/<detector>/...     the same per detector, for an instrument of several

`CalibrationRegistry.register` reads what a product is from its own metadata (``OBSTYPE``,
``INSTRUME``, ``DETECTOR``, ``FILTER``, ``CALIBDATE``), stores it under a unique name and
indexes it with a validity interval. `CalibrationRegistry.select` picks, for one exposure,
the product of a kind that matches the exposure's instrument, detector and filter
configuration and whose validity contains the exposure's start time;
`CalibrationRegistry.select_all` does that for every kind and returns the `CalibrationFiles`
ISR takes.

Safety: a product is first written under a hidden temporary name, renamed to its final
name, and only then indexed, all in one write transaction; so the index never names a
file that is not (yet) there. Readers never block (WAL), writers are serialised.

Times are stored as fixed-width UTC ISO strings (``YYYY-MM-DDTHH:MM:SS.sss``, no zone),
so that string order is time order and intervals can be compared in SQL. Validity
intervals are half-open, ``valid_from <= t < valid_to``; a NULL ``valid_to`` never ends.

Modules, by concern:

* `times`: the registry's UTC strings, the time an exposure's products must be valid at;
* `identify`: what a product file is (kinds, metadata, provenance, verification report);
* `staging`: placing files in the repository durably (temporary name, hash, fsync);
* `store`: the SQLite index (schema, transactions, `CalibRecord`);
* `repository`: `CalibrationRegistry`, which ties them together, and the selection rules.
"""

from atmospec.calib.registry.identify import KINDS
from atmospec.calib.registry.repository import CalibrationRegistry
from atmospec.calib.registry.store import SCHEMA_VERSION, CalibRecord
from atmospec.calib.registry.times import exposure_time_utc, to_utc_iso

__all__ = [
    "KINDS",
    "SCHEMA_VERSION",
    "CalibRecord",
    "CalibrationRegistry",
    "exposure_time_utc",
    "to_utc_iso",
]
