"""Calibration products as classes that own their FITS I/O and validation.

================== ============================ ===================================================
class              file                         what ISR takes from it
================== ============================ ===================================================
`Bias`             `Exposure`, e⁻               ``.exposure``
`Dark`             `Exposure`, e⁻/s             ``.exposure``
`Flat`             `Exposure`, median 1         ``.exposure``
`Defects`          ECSV boxes ``x0 y0 w h``     ``.table`` (`atmospec.isr.defects.defect_mask`)
`Ptc`              FITS table, one row per amp  ``.gains(camera)`` → `AmpGains`
`Linearizer`       FITS table, one row per amp  ``.correction(camera)`` → the ISR's correction
`Crosstalk`        ECSV, Rubin CrosstalkCalib   ``.matrix()`` → `CrosstalkMatrix`
================== ============================ ===================================================

Every class has ``read(path, ...)`` (the file's kind, instrument and shape checked, a problem
raised as `atmospec.errors.BadInputError` naming the file), ``checked(data, source, ...)``
(the same checks on data already in memory, e.g. from a Gen3 Butler) and ``write(path,
provenance)`` (atomic). A product built in memory carries its own provenance cards
(``provenance``: stage, inputs, configuration), which ``write`` and ``as_stored`` add.
"""

from atmospec.calib.products.crosstalk import Crosstalk
from atmospec.calib.products.defects import Defects
from atmospec.calib.products.images import Bias, Dark, Flat, MasterImage
from atmospec.calib.products.linearizer import Linearizer
from atmospec.calib.products.ptc import Ptc

__all__ = ["Bias", "Crosstalk", "Dark", "Defects", "Flat", "Linearizer", "MasterImage", "Ptc"]
