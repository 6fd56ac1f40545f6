"""Master bias, dark and flat: an `Exposure` whose primary header says what it is.

``OBSTYPE`` (bias, dark or flat), ``INSTRUME``, ``FILTER`` (the physical filter of a flat,
``NONE`` otherwise), ``CALIBDATE`` (start of the first input), ``NCOMBINE``; the builders
(`atmospec.calib.masters`) add how it was combined. The bias is in e⁻, the dark in e⁻/s, the
flat normalised to about 1.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from atmospec.camera.description import Camera, load_camera
from atmospec.camera.translator import canonical_instrument
from atmospec.errors import BadInputError
from atmospec.exposure import Exposure
from atmospec.io import add_cards

log = logging.getLogger(__name__)

Card = tuple[str, Any, str]

#: Instrument names a LATISS product may carry (the second is Rubin's older spelling).


@dataclass(frozen=True)
class MasterImage:
    """A master calibration image (use `Bias`, `Dark` or `Flat`)."""

    kind: ClassVar[str] = ""
    """``OBSTYPE`` of the product."""
    fill_value: ClassVar[float] = 0.0
    """Value given to non-finite pixels (which are flagged BAD)."""

    exposure: Exposure
    """Image (and mask, variance, header) of the product."""
    source: str = ""
    """Where it was read from (file, or a Gen3 dataset), for messages and provenance; empty
    when built in memory."""
    provenance: tuple[Card, ...] = ()
    """Provenance cards of a product built in memory (stage, inputs, configuration)."""

    @classmethod
    def read(cls, path: str | Path, camera: Camera | None = None, *,
             physical_filter: str | None = None, load_variance: bool = True) -> Self:
        """Read a product file and check it fits ``camera`` (see `checked`).

        Parameters
        ----------
        path : path
            Product written by `write`.
        camera : Camera, optional
            Camera of the exposures it serves; LATISS by default.
        physical_filter : str, optional
            Filter of the exposures it serves; a flat of another filter is used with a
            warning.
        load_variance : bool
            Read the VARIANCE plane. ISR does not use it: leaving it out saves 65 MB per
            product (``variance`` is then a read-only array of zeros).

        Returns
        -------
        MasterImage
            Of the class called.

        Raises
        ------
        BadInputError
            Unreadable file, or a product of another kind, instrument or shape.
        """
        return cls.checked(Exposure.read(path, load_variance=load_variance), str(path), camera,
                           physical_filter=physical_filter)

    @classmethod
    def checked(cls, exposure: Exposure, source: str, camera: Camera | None = None, *,
                physical_filter: str | None = None) -> Self:
        """Wrap an exposure already in memory (e.g. read by a Butler) after the checks of
        `read`.

        Parameters
        ----------
        exposure : Exposure
            The product; its non-finite pixels are set in place to 0 (1 for a flat) and
            flagged BAD.
        source : str
            Where it came from, for messages.
        camera : Camera, optional
            Camera of the exposures it serves; LATISS by default.
        physical_filter : str, optional
            Filter of the exposures it serves (flats: another filter only warns).

        Returns
        -------
        MasterImage

        Raises
        ------
        BadInputError
            Wrong shape, instrument or product type.
        """
        camera = camera or load_camera("latiss")
        kind = cls.kind
        if exposure.shape != camera.detector_shape:
            raise BadInputError(source, f"{kind} has shape {exposure.shape}, expected "
                                        f"{camera.detector_shape} for {camera.name}")
        instrument = exposure.metadata.get("INSTRUME")
        same = canonical_instrument(str(instrument)) == canonical_instrument(camera.name)
        if instrument and not same:
            raise BadInputError(source, f"{kind} is for instrument {instrument}, not "
                                        f"{camera.name}")
        obstype = str(exposure.metadata.get("OBSTYPE", kind)).strip().lower()
        if obstype != kind:
            raise BadInputError(source, f"product is a {obstype}, not a {kind}")
        if kind == "flat" and physical_filter:
            flat_filter = exposure.metadata.get("FILTER")
            if flat_filter and str(flat_filter) != physical_filter:
                log.warning("%s: flat is for %s, exposure is %s", source, flat_filter,
                            physical_filter)
        bad = ~np.isfinite(exposure.image)
        if bad.any():
            exposure.image[bad] = cls.fill_value
            exposure.set_mask("BAD", bad)
        return cls(exposure, source)

    @property
    def name(self) -> str:
        """File (or dataset) name of `source`, as provenance records it."""
        return Path(self.source).name

    @property
    def instrument(self) -> str:
        """``INSTRUME`` of the header."""
        return str(self.exposure.metadata.get("INSTRUME", ""))

    @property
    def physical_filter(self) -> str | None:
        """``FILTER`` of the header (``None`` when absent or ``NONE``)."""
        value = str(self.exposure.metadata.get("FILTER", "")).strip()
        return value if value and value.upper() != "NONE" else None

    @property
    def calib_date(self) -> str:
        """``CALIBDATE`` of the header (start of the first input), empty when absent."""
        return str(self.exposure.metadata.get("CALIBDATE", ""))

    def write(self, path: str | Path, provenance: Sequence[Card] = ()) -> Path:
        """Write the product atomically (Rubin ExposureF layout).

        Parameters
        ----------
        path : path
            Output file.
        provenance : sequence of (key, value, comment)
            Cards added to the primary header (e.g. ``self.provenance``).

        Returns
        -------
        pathlib.Path
        """
        return self.exposure.write(path, provenance)

    def as_stored(self, provenance: Sequence[Card] = ()) -> Exposure:
        """The exposure as `write` stores it: ``provenance`` in a copy of the header, the
        pixel arrays shared (for a Gen3 Butler, whose formatter writes it).

        Parameters
        ----------
        provenance : sequence of (key, value, comment)
            Cards added to the header.

        Returns
        -------
        Exposure
        """
        header = self.exposure.metadata.copy()
        add_cards(header, provenance)
        e = self.exposure
        return Exposure(e.image, e.mask, e.variance, header, dict(e.mask_planes), e.unit)


@dataclass(frozen=True)
class Bias(MasterImage):
    """Master bias, e⁻."""

    kind: ClassVar[str] = "bias"


@dataclass(frozen=True)
class Dark(MasterImage):
    """Master dark, e⁻/s (``DARKTIME``: mean dark time of the inputs)."""

    kind: ClassVar[str] = "dark"


@dataclass(frozen=True)
class Flat(MasterImage):
    """Master flat of one physical filter (``FILTER``), normalised to median 1."""

    kind: ClassVar[str] = "flat"
    fill_value: ClassVar[float] = 1.0
