"""The specifications of the electro-optical figures, and each figure's verdict.

The limits are shipped once, in ``data/eo/specs.ecsv`` (attribution in
``data/ATTRIBUTION.md``): the LSST Camera sensor specifications as the camera team's eotest
judges them (``EOTestPlots.CcdSpecs``: CCD-007 read noise … CCD-027 PRNU) and cp_verify's PTC
checks (DMTN-101: gain and noise within 5 % of nominal, turnoff above 90 000 e⁻, a00 in the
vendor's range). One row per (specification, figure column, vendor): a figure must lie
above ``lower`` and below ``upper`` (NaN: open on that side). A specification measured on
several figures (CCD-010 on the high- and the low-flux superflats) has one row for each.

`verdict_table` turns a per-amp table of figures (`atmospec.calib.eo.eo_figures`, widened by
`atmospec.calib.eo_run.detector_figures`) into the long table the camera team's summaries
and the focal-plane views read: one row per (detector, amp, figure, specification).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources

import numpy as np
from astropy.table import Table

__all__ = [
    "DETECTOR_AMP",
    "SPECS_FILE",
    "STATUSES",
    "Spec",
    "load_specs",
    "spec_by_id",
    "specs_for",
    "verdict_table",
]

#: The shipped table, under the package's data folder.
SPECS_FILE = "eo/specs.ecsv"

#: Values of the ``status`` column of `verdict_table`.
STATUSES = ("pass", "fail", "not measured", "no spec")

#: ``amp`` of the rows of `verdict_table` that judge the whole detector: eotest judges
#: CCD-012 on the defect fraction of the CCD, beside which the per-amp rows show where the
#: defects are.
DETECTOR_AMP = "CCD"


@dataclass(frozen=True)
class Spec:
    """One specification limit on one figure."""

    spec: str
    """Identifier (``CCD-007``, ``PTC-GAIN``)."""
    figure: str
    """Column of the figure it applies to (``read_noise``)."""
    lower: float
    """The figure must exceed this (NaN: no lower limit)."""
    upper: float
    """The figure must stay below this (NaN: no upper limit)."""
    unit: str
    """Unit of the figure and the limits (``electron``, ``percent``; empty: none)."""
    vendor: str
    """Vendor the limit applies to (``ITL``, ``e2v``); empty: every vendor."""
    title: str
    """What the specification says, e.g. ``read noise < 8 e-``."""
    source: str
    """Where the number comes from."""

    def applies_to(self, vendor: str | None) -> bool:
        """Whether the limit holds for a sensor of ``vendor`` (None: vendor unknown, only
        the limits of every vendor hold)."""
        if not self.vendor:
            return True
        return vendor is not None and vendor.lower() == self.vendor.lower()

    def passes(self, value: float) -> bool | None:
        """``lower < value < upper``; None for a value not measured (NaN)."""
        if value is None or not math.isfinite(value):
            return None
        return ((math.isnan(self.lower) or value > self.lower)
                and (math.isnan(self.upper) or value < self.upper))

    @property
    def comparison(self) -> str:
        """``<``, ``>`` or ``in`` (both limits)."""
        if math.isnan(self.lower):
            return "<"
        return ">" if math.isnan(self.upper) else "in"

    @property
    def threshold(self) -> float:
        """The one limit of a one-sided specification (the upper one of a range)."""
        return self.lower if math.isnan(self.upper) else self.upper


@functools.cache
def load_specs() -> tuple[Spec, ...]:
    """Every row of the shipped specification table (read once).

    Returns
    -------
    tuple of Spec
        In file order.
    """
    path = resources.files("atmospec.data") / SPECS_FILE
    table = Table.read(str(path), format="ascii.ecsv")

    def text(value: object) -> str:
        # An empty ECSV string reads back masked: the empty string.
        return "" if np.ma.is_masked(value) else str(value)

    return tuple(Spec(text(r["spec"]), text(r["figure"]), float(r["lower"]),
                      float(r["upper"]), text(r["unit"]), text(r["vendor"]),
                      text(r["title"]), text(r["source"])) for r in table)


def specs_for(figure: str, vendor: str | None = None) -> tuple[Spec, ...]:
    """The limits on ``figure`` that hold for a sensor of ``vendor``."""
    return tuple(s for s in load_specs() if s.figure == figure and s.applies_to(vendor))


def spec_by_id(spec: str, vendor: str | None = None) -> Spec:
    """The first row of specification ``spec`` holding for ``vendor``.

    Raises
    ------
    KeyError
        For an identifier the table does not have.
    """
    for s in load_specs():
        if s.spec == spec and s.applies_to(vendor):
            return s
    raise KeyError(f"no specification {spec!r}" + (f" for {vendor}" if vendor else ""))


def _float(value: object) -> float:
    """A table cell as a float, NaN where masked."""
    if np.ma.is_masked(value):
        return float("nan")
    return float(value)  # type: ignore[arg-type]


def _status(spec: Spec, value: float) -> str:
    verdict = spec.passes(value)
    return "not measured" if verdict is None else "pass" if verdict else "fail"


def verdict_table(figures: Table, detector: str, vendor: str | None,
                  skip: Iterable[str] = ("amp",), not_measured: Iterable[str] = (),
                  detector_values: Mapping[str, float] | None = None) -> Table:
    """The long table of one detector's figures with their specifications and verdicts.

    Parameters
    ----------
    figures : astropy.table.Table
        One row per amp: column ``amp`` then numeric figure columns (with units).
    detector : str
        Detector name (``R22_S11``), repeated on every row.
    vendor : str or None
        Sensor vendor (selects the vendor-specific limits).
    skip : iterable of str
        Columns that are not figures.
    not_measured : iterable of str
        Figures the run could not measure (a run without flats has no CTI): those with a
        specification keep their rows, status ``not measured``, even when NaN on every amp.
    detector_values : mapping, optional
        Figure → its value over the whole detector (``defect_fraction`` of the CCD, as
        eotest judges CCD-012): one row each per specification, ``amp`` `DETECTOR_AMP`,
        after the figure's amp rows.

    Returns
    -------
    astropy.table.Table
        Columns ``detector, vendor, amp, figure, value, unit, spec, lower, upper, status``,
        one row per (amp, figure, applicable specification); a figure with no
        specification has one row with ``spec`` empty and status ``no spec``; a figure
        not measured on any amp of the detector (all NaN or masked) is left out, unless
        named in ``not_measured`` and specified. Status:
        ``pass``, ``fail``, ``not measured`` (NaN for this amp), ``no spec``. Rows of
        ``detector_values`` have ``amp`` `DETECTOR_AMP`.
    """
    skipped = set(skip)
    missing = set(not_measured)
    rows: list[tuple] = []
    for name in figures.colnames:
        if name in skipped:
            continue
        column = figures[name]
        values = [_float(v) for v in column]
        limits = specs_for(name, vendor)
        if not any(math.isfinite(v) for v in values) and not (name in missing and limits):
            continue
        unit = "" if column.unit is None else column.unit.to_string()
        for amp, value in zip(figures["amp"], values, strict=True):
            if not limits:
                rows.append((detector, vendor or "", str(amp), name, value, unit, "",
                             float("nan"), float("nan"), "no spec"))
            for s in limits:
                rows.append((detector, vendor or "", str(amp), name, value, unit, s.spec,
                             s.lower, s.upper, _status(s, value)))
        if detector_values and name in detector_values:
            value = float(detector_values[name])
            rows.extend((detector, vendor or "", DETECTOR_AMP, name, value, unit, s.spec,
                         s.lower, s.upper, _status(s, value)) for s in limits)
    names = ("detector", "vendor", "amp", "figure", "value", "unit", "spec", "lower",
             "upper", "status")
    if not rows:
        return Table(names=names, dtype=(str, str, str, str, float, str, str, float, float,
                                          str))
    return Table(rows=rows, names=names)
