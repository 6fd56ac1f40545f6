"""Crosstalk product: ECSV in the layout of Rubin's CrosstalkCalib.

``CT_COEFFS`` holds the n×n matrix flattened in Rubin's [source, target] order (256 values
for LATISS), with ``CT_ERRORS``, ``CT_COUNTS``, ``CT_VALID`` from a measurement; meta
``CROSSTALK_RATIOS_UNITS`` says whether the coefficients are ratios of ADU or of electrons.
ISR uses the [target, source] matrix of `atmospec.isr.crosstalk.CrosstalkMatrix`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from atmospec.calib.products._tables import ecsv_text, read_table
from atmospec.calib.products.detector import check_detector
from atmospec.camera.description import Camera, load_camera, shipped_product
from atmospec.errors import BadInputError
from atmospec.io import write_text_atomic
from atmospec.isr.crosstalk import CrosstalkMatrix

Card = tuple[str, Any, str]


@dataclass(frozen=True)
class Crosstalk:
    """A crosstalk product."""

    table: Table
    """One row: ``CT_COEFFS`` (and, when measured here, ``CT_ERRORS``, ``CT_COUNTS``,
    ``CT_VALID``), Rubin's [source, target] order."""
    source: str = ""
    """Where it was read from; empty when built in memory."""
    provenance: tuple[Card, ...] = ()
    """Provenance cards of a product built in memory."""

    @classmethod
    def read(cls, path: str | Path | None = None, n_amps: int = 16, *,
             camera: Camera | None = None) -> Crosstalk:
        """Read a crosstalk table and check its matrix (see `checked`).

        Parameters
        ----------
        path : path, optional
            The file; ``None``: the matrix shipped for LATISS (`shipped_product`; the
            default of any detector is `default`).
        n_amps : int
            Expected number of amplifiers.
        camera : Camera, optional
            The detector it is to serve; a file given must be for it.

        Raises
        ------
        BadInputError
            Unreadable, without ``CT_COEFFS``, a matrix of another size, or a file for
            another instrument or detector than ``camera``'s.
        """
        if path is None:
            latiss = load_camera("latiss")
            path, camera = shipped_product(latiss, "crosstalk"), camera or latiss
        return cls.checked(read_table(path, "crosstalk", "ascii.ecsv"), str(path), n_amps,
                           camera=camera)

    @classmethod
    def default(cls, camera: Camera) -> Crosstalk:
        """The matrix shipped for ``camera``'s detector, else a zero matrix (no correction).

        A matrix measured on one CCD says nothing of another's: the LATISS matrix must never
        correct an LSSTCam frame, so detectors without a shipped matrix get none.
        """
        path = shipped_product(camera, "crosstalk")
        if path is not None:
            return cls.read(path, camera.n_amps, camera=camera)
        n = camera.n_amps
        table = Table({"CT_COEFFS": np.zeros((1, n * n))})
        table.meta.update({"OBSTYPE": "CROSSTALK", "INSTRUME": camera.name,
                           "CROSSTALK_RATIOS_UNITS": "adu"})
        return cls(table, f"none ({camera.label} ships no crosstalk matrix)")

    @classmethod
    def checked(cls, table: Table, source: str, n_amps: int = 16, *,
                camera: Camera | None = None) -> Crosstalk:
        """Wrap a table already in memory after the checks of `read` (its detector only
        when ``camera`` is given)."""
        if camera is not None:
            check_detector(table.meta, camera, source or None, "crosstalk")
        product = cls(table, source)
        product.matrix(n_amps)
        return product

    @property
    def name(self) -> str:
        """File name of `source`."""
        return Path(self.source).name

    def matrix(self, n_amps: int = 16) -> CrosstalkMatrix:
        """The ``[target, source]`` matrix ISR applies (zero diagonal, NaN as 0).

        Raises
        ------
        BadInputError
            Without ``CT_COEFFS``, or a matrix of another size than ``n_amps``².
        """
        try:
            coeffs = np.asarray(self.table["CT_COEFFS"][0], dtype=float)
        except Exception as exc:  # a table of another kind
            raise BadInputError(self.source or None,
                                f"not a crosstalk table ({exc})") from None
        if coeffs.size != n_amps * n_amps:
            raise BadInputError(self.source or None,
                                f"crosstalk matrix has {coeffs.size} terms, expected "
                                f"{n_amps}x{n_amps}")
        # Rubin's CrosstalkCalib stores coeffs[i][j] as the crosstalk from source amp i into
        # target amp j; transposed here to the [target, source] order of the matrix product.
        coeffs = np.nan_to_num(coeffs.reshape(n_amps, n_amps).T)
        np.fill_diagonal(coeffs, 0.0)
        units = str(self.table.meta.get("CROSSTALK_RATIOS_UNITS", "adu")).lower()
        return CrosstalkMatrix(coeffs, "electron" if units.startswith("electron") else "adu")

    def write(self, path: str | Path, provenance: Sequence[Card] = ()) -> Path:
        """Write the table as ECSV, atomically (``provenance`` in its metadata).

        Returns
        -------
        pathlib.Path
        """
        return write_text_atomic(ecsv_text(self.table, provenance), path)
