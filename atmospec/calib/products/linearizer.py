"""Linearizer product: a FITS binary table (extension ``LINEARIZER``), one row per amp.

``AMP``, ``TYPE`` (``POLYNOMIAL`` or ``SPLINE``) and ``COEFFS`` (float array) are what ISR
applies (`atmospec.isr.linearity.Linearizer`); the builder adds its diagnostics
(`LINEARIZER_COLUMNS`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table

from atmospec.calib.products._tables import (
    amp_rows,
    read_table,
    require_columns,
    table_hdu,
)
from atmospec.calib.products.detector import check_detector
from atmospec.camera.description import Camera, load_camera
from atmospec.errors import BadInputError
from atmospec.io import write_hdul_atomic
from atmospec.isr.linearity import Linearizer as LinearityCorrection

Card = tuple[str, Any, str]

#: Columns of the linearizer product (written as the TTYPEn comments).
LINEARIZER_COLUMNS: Mapping[str, str] = MappingProxyType({
    "AMP": "amplifier name",
    "TYPE": "POLYNOMIAL or SPLINE",
    "COEFFS": "c2,c3..; or knots, corrections [adu]",
    "LIN_SLOPE": "[adu/s] linear ramp slope",
    "LIN_MAXDEV": "max |mu/(s t) - 1| before correction",
    "LIN_RESID": "max |mu'/(s t) - 1| after correction",
    "LIN_RMS": "rms of mu'/(s t) - 1 after correction",
    "LIN_MAX_ADU": "[adu] highest ramp point fitted",
    "LIN_USED": "ramp point used by the fit",
})


@dataclass(frozen=True)
class Linearizer:
    """A linearizer product."""

    table: Table
    """One row per amp: ``AMP``, ``TYPE``, ``COEFFS`` and diagnostics."""
    source: str = ""
    """Where it was read from; empty when built in memory."""
    provenance: tuple[Card, ...] = ()
    """Provenance cards of a product built in memory."""

    @classmethod
    def read(cls, path: str | Path, camera: Camera | None = None) -> Linearizer:
        """Read a linearizer table; every amplifier of ``camera`` (LATISS by default) must
        have a valid row.

        Raises
        ------
        BadInputError
            Not a FITS file, unreadable, a column or an amplifier missing, an unknown
            correction type, coefficient count or coefficients that are not numbers, or a
            product of another instrument or detector
            (`atmospec.calib.products.detector.check_detector`).
        """
        return cls.checked(read_table(path, "linearizer", "fits"), str(path), camera)

    @classmethod
    def checked(cls, table: Table, source: str, camera: Camera | None = None) -> Linearizer:
        """Wrap a table already in memory after the checks of `read`."""
        camera = camera or load_camera("latiss")
        product = cls(table, source)
        require_columns(table, ("AMP", "TYPE", "COEFFS"), source, "linearizer")
        check_detector(table.meta, camera, source or None, "linearizer")
        product.correction(camera)
        return product

    @property
    def name(self) -> str:
        """File name of `source`."""
        return Path(self.source).name

    def correction(self, camera: Camera | None = None) -> LinearityCorrection:
        """The per-amp correction ISR applies, in camera HDU order.

        Raises
        ------
        BadInputError
            An amplifier without a row, or an unknown type, coefficient count or
            coefficients that are not numbers.
        """
        camera = camera or load_camera("latiss")
        rows = amp_rows(self.table, camera.amp_names, self.source, "linearizer")
        kinds, coeffs = [], []
        for name, row in zip(camera.amp_names, rows, strict=True):
            kind = str(self.table["TYPE"][row]).strip().upper()
            try:
                # Per row, not by the column's dtype: spline knots make it a
                # variable-length (object) column.
                c = np.asarray(self.table["COEFFS"][row], dtype=float).ravel()
            except (TypeError, ValueError):
                raise BadInputError(self.source or None,
                                    f"linearizer column COEFFS of amplifier {name} holds "
                                    "values that are not numbers") from None
            if kind not in ("POLYNOMIAL", "SPLINE") or (kind == "SPLINE" and c.size % 2):
                raise BadInputError(self.source or None,
                                    f"amplifier {name}: bad linearity type {kind!r} or "
                                    "coefficient count")
            kinds.append(kind)
            coeffs.append(c)
        return LinearityCorrection(tuple(kinds), tuple(coeffs))

    def write(self, path: str | Path, provenance: Sequence[Card] = ()) -> Path:
        """Write the product atomically (empty primary HDU, then the ``LINEARIZER`` table).

        Parameters
        ----------
        path : path
            Destination ``.fits`` file.
        provenance : sequence of (key, value, comment)
            Cards added to the table's header (e.g. ``self.provenance``).

        Returns
        -------
        pathlib.Path
        """
        hdu = table_hdu(self.table, "LINEARIZER", LINEARIZER_COLUMNS, provenance)
        return write_hdul_atomic(fits.HDUList([fits.PrimaryHDU(), hdu]), path)
