"""Defects product: boxes of bad pixels, integer columns ``x0, y0, width, height`` in
assembled-image pixels (Rubin's "Simple" defects schema), as ECSV (or FITS)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from atmospec.calib.products._tables import ecsv_text, read_table, require_columns
from atmospec.calib.products.detector import check_detector
from atmospec.camera.description import Camera, load_camera, shipped_product
from atmospec.io import write_text_atomic
from atmospec.isr.defects import defect_mask

Card = tuple[str, Any, str]

_COLUMNS = ("x0", "y0", "width", "height")


@dataclass(frozen=True)
class Defects:
    """A defects table."""

    table: Table
    """``x0, y0, width, height`` boxes; meta: ``OBSTYPE``, counts (see
    `atmospec.calib.defects.find_defects`)."""
    source: str = ""
    """Where it was read from; empty when built in memory."""
    provenance: tuple[Card, ...] = ()
    """Provenance cards of a product built in memory."""

    @classmethod
    def read(cls, path: str | Path | None = None, *, camera: Camera | None = None
             ) -> Defects:
        """Read a defects table (ECSV, or any format astropy recognises).

        Parameters
        ----------
        path : path, optional
            The file; ``None``: the list shipped for LATISS (`shipped_product`; the
            default of any detector is `default`).
        camera : Camera, optional
            The detector it is to serve; a file given must be for it.

        Raises
        ------
        BadInputError
            Unreadable, without the box columns, or a file for another instrument or
            detector than ``camera``'s.
        """
        if path is None:
            latiss = load_camera("latiss")
            path, camera = shipped_product(latiss, "defects"), camera or latiss
        path = Path(path)
        table = read_table(path, "defects", "ascii.ecsv" if path.suffix == ".ecsv" else None)
        return cls.checked(table, str(path), camera=camera)

    @classmethod
    def default(cls, camera: Camera) -> Defects:
        """The list shipped for ``camera``'s detector, else an empty list (no box masked)."""
        path = shipped_product(camera, "defects")
        if path is not None:
            return cls.read(path, camera=camera)
        table = Table({name: np.zeros(0, dtype=int) for name in _COLUMNS})
        table.meta["OBSTYPE"] = "DEFECTS"
        return cls(table, f"none ({camera.label} ships no defect list)")

    @classmethod
    def checked(cls, table: Table, source: str, *, camera: Camera | None = None) -> Defects:
        """Wrap a table already in memory after the checks of `read` (its detector only
        when ``camera`` is given)."""
        require_columns(table, _COLUMNS, source, "defects table")
        if camera is not None:
            check_detector(table.meta, camera, source or None, "defects")
        return cls(table, source)

    @property
    def name(self) -> str:
        """File name of `source`."""
        return Path(self.source).name

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """Boolean mask of the boxes on an image of ``shape``."""
        return defect_mask(self.table, shape)

    def write(self, path: str | Path, provenance: Sequence[Card] = ()) -> Path:
        """Write the table as ECSV, atomically, with ``provenance`` in its metadata.

        Returns
        -------
        pathlib.Path
        """
        return write_text_atomic(ecsv_text(self.table, provenance), path)
