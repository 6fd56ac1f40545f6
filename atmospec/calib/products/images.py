"""Master bias, dark and flat: an `Exposure` whose primary header says what it is.

``OBSTYPE`` (bias, dark or flat), ``INSTRUME``, ``DETECTOR``, ``DETSER`` (the detector:
`atmospec.calib.products.detector`), ``FILTER`` (the physical filter of a flat, ``NONE``
otherwise), ``CALIBDATE`` (start of the first input), ``NCOMBINE``; the builders
(`atmospec.calib.masters`) add how it was combined. The bias is in e⁻, the dark in e⁻/s, the
flat normalised to about 1.

A product is refused (`atmospec.errors.BadInputError` naming it) when its file is damaged
(`atmospec.calib.products.integrity`) or its values cannot be those of its kind
(`MasterImage.check_values`: the bounds are class attributes, each saying why), or when it
is for another detector than the frames it is to serve; a flat serves only the exposures of
its filter (`check_flat_serves`, the rule the registry's selection follows too:
`flat_configurations`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from astropy.io import fits

from atmospec.calib.products.detector import check_detector
from atmospec.calib.products.integrity import check_fits_file
from atmospec.camera.description import Camera, load_camera
from atmospec.camera.translator import (
    HeaderTranslator,
    ObservationInfo,
    canonical_instrument,
)
from atmospec.errors import BadInputError
from atmospec.exposure import Exposure
from atmospec.io import add_cards

log = logging.getLogger(__name__)

Card = tuple[str, Any, str]

#: Mask planes marking pixels a product knows to be unusable (`MasterImage.check_values`).
_FLAGGED_PLANES = ("BAD", "NO_DATA")

#: Every how many pixels the median of `MasterImage.check_values` is taken: 1 M pixels of a
#: LATISS image give it to ~0.1 % of the spread, far inside the bounds, in 1/16 of the time.
_MEDIAN_STRIDE = 16


@dataclass(frozen=True)
class MasterImage:
    """A master calibration image (use `Bias`, `Dark` or `Flat`)."""

    kind: ClassVar[str] = ""
    """``OBSTYPE`` of the product."""
    fill_value: ClassVar[float] = 0.0
    """Value given to non-finite pixels (which are flagged BAD)."""
    median_bounds: ClassVar[tuple[float, float]] = (-np.inf, np.inf)
    """Open interval the median of the usable pixels must lie in (product units); set per
    kind, each subclass saying why."""
    max_unflagged_fraction: ClassVar[float] = 1e-3
    """Largest fraction of pixels that may be unusable (non-finite; for a flat also ≤ 0)
    without being flagged BAD or NO_DATA in the product's own mask. A master marks the
    pixels it could not combine (its defects) and gives them a neutral value, so an
    unflagged unusable pixel is one a combination or a foreign writer left behind: a few
    (they are then set to `fill_value` and flagged) are tolerated, 0.1 % (16 000 pixels of
    LATISS, four full-height columns) is not, and an all-NaN or all-zero flat is far beyond."""
    min_usable_fraction: ClassVar[float] = 0.5
    """Smallest fraction of pixels that must be usable and not flagged: the shipped LATISS
    defects cover one amplifier of 16 (6 %); a product masking half the detector serves no
    exposure (a NaN-filled product whose mask says so is refused here)."""

    exposure: Exposure
    """Image (and mask, variance, header) of the product."""
    source: str = ""
    """Where it was read from (file, or a Gen3 dataset), for messages and provenance; empty
    when built in memory."""
    provenance: tuple[Card, ...] = ()
    """Provenance cards of a product built in memory (stage, inputs, configuration)."""

    @classmethod
    def read(cls, path: str | Path, camera: Camera | None = None, *,
             load_variance: bool = True) -> Self:
        """Read a product file, check it is intact and fits ``camera`` (see `checked`).

        Parameters
        ----------
        path : path
            Product written by `write`.
        camera : Camera, optional
            Camera of the exposures it serves; LATISS by default.
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
            A truncated file or one whose checksums do not match
            (`atmospec.calib.products.integrity.check_fits_file`), an unreadable file, a
            product of another kind, instrument, detector or shape, or values it cannot have
            (`check_values`).
        """
        check_fits_file(path)
        # Its sums were just checked whole: reading must not check them a second time.
        exposure = Exposure.read(path, load_variance=load_variance, check_sums=False)
        return cls.checked(exposure, str(path), camera)

    @classmethod
    def checked(cls, exposure: Exposure, source: str, camera: Camera | None = None) -> Self:
        """Wrap an exposure already in memory (e.g. read by a Butler) after the checks of
        `read` (but the file's integrity).

        Parameters
        ----------
        exposure : Exposure
            The product; its few non-finite pixels are set in place to `fill_value` and
            flagged BAD.
        source : str
            Where it came from, for messages.
        camera : Camera, optional
            Camera of the exposures it serves; LATISS by default.

        Returns
        -------
        MasterImage

        Raises
        ------
        BadInputError
            Wrong instrument, detector (`atmospec.calib.products.detector.check_detector`),
            shape or product type, or values outside the bounds of its kind
            (`check_values`).
        """
        camera = camera or load_camera("latiss")
        kind = cls.kind
        instrument = exposure.metadata.get("INSTRUME")
        same = canonical_instrument(str(instrument)) == canonical_instrument(camera.name)
        if instrument and not same:
            raise BadInputError(source, f"{kind} is for instrument {instrument}, not "
                                        f"{camera.name}")
        # Before the shape: two detectors of one vendor have the same shape, and a product
        # of another vendor's detector is better named by its detector than by its shape.
        check_detector(exposure.metadata, camera, source, kind)
        if exposure.shape != camera.detector_shape:
            raise BadInputError(source, f"{kind} has shape {exposure.shape}, expected "
                                        f"{camera.detector_shape} for {camera.label}")
        obstype = str(exposure.metadata.get("OBSTYPE", kind)).strip().lower()
        if obstype != kind:
            raise BadInputError(source, f"product is a {obstype}, not a {kind}")
        cls.check_values(exposure, source)
        bad = ~np.isfinite(exposure.image)
        if bad.any():
            exposure.image[bad] = cls.fill_value
            exposure.set_mask("BAD", bad)
        return cls(exposure, source)

    @classmethod
    def unusable(cls, image: np.ndarray) -> np.ndarray:
        """Pixels whose value this kind cannot use: non-finite (a flat: also ≤ 0)."""
        return ~np.isfinite(image)

    @classmethod
    def check_values(cls, exposure: Exposure, source: str | None) -> None:
        """Refuse values a product of this kind cannot have (the bounds: class attributes).

        Parameters
        ----------
        exposure : Exposure
            The product's image and mask (not modified).
        source : str or None
            Its file or dataset, for the message (None: built in memory).

        Raises
        ------
        BadInputError
            ``<kind> refused: ...`` with the count or median and the bound, when more
            unusable pixels than `max_unflagged_fraction` lie outside its BAD/NO_DATA mask,
            fewer than `min_usable_fraction` are usable, or the median of the usable pixels
            lies outside `median_bounds`.
        """
        image = exposure.image
        n_pixels = image.size
        if n_pixels == 0:
            raise BadInputError(source or None, f"{cls.kind} refused: empty image")
        unusable = cls.unusable(image)
        flagged = exposure.get_mask(*[p for p in _FLAGGED_PLANES if p in exposure.mask_planes])
        stray = int(np.count_nonzero(unusable & ~flagged))
        what = "NaN or <= 0" if cls.kind == "flat" else "not finite"
        if stray > cls.max_unflagged_fraction * n_pixels:
            raise BadInputError(source or None,
                                f"{cls.kind} refused: {stray} pixels ({stray / n_pixels:.1%}) "
                                f"are {what} outside its BAD mask (at most "
                                f"{cls.max_unflagged_fraction:.1%})")
        usable = ~(unusable | flagged)
        n_usable = int(np.count_nonzero(usable))
        if n_usable < cls.min_usable_fraction * n_pixels:
            raise BadInputError(source or None,
                                f"{cls.kind} refused: only {n_usable / n_pixels:.1%} of its "
                                f"pixels are usable (at least {cls.min_usable_fraction:.0%})")
        sample = image.ravel()[::_MEDIAN_STRIDE][usable.ravel()[::_MEDIAN_STRIDE]]
        if sample.size == 0:
            sample = image[usable]
        median = float(np.median(sample))
        low, high = cls.median_bounds
        if not low < median < high:
            raise BadInputError(source or None,
                                f"{cls.kind} refused: median {median:.4g} {exposure.unit} "
                                f"outside ({low:g}, {high:g})")

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
    median_bounds: ClassVar[tuple[float, float]] = (-100.0, 100.0)
    """|median| < 100 e⁻: after overscan subtraction a master bias is ~0 e⁻ (what remains
    is a 2D structure of a few e⁻), so 100 e⁻ is over ten times LATISS's read noise (6–8
    e⁻) and still 200 times below the ~20 000 ADU pedestal of a bias whose overscan was
    not subtracted. LATISS's gain is ~1 e⁻/ADU, so a bias in ADU has the same bound."""


@dataclass(frozen=True)
class Dark(MasterImage):
    """Master dark, e⁻/s (``DARKTIME``: mean dark time of the inputs)."""

    kind: ClassVar[str] = "dark"
    median_bounds: ClassVar[tuple[float, float]] = (-10.0, 10.0)
    """|median| < 10 e⁻/s: LATISS's cooled CCD has ~0.002 e⁻/s of dark current, so a dark
    near 10 e⁻/s is not a dark of this camera: one not bias-subtracted (~20 000 e⁻ over
    tens of seconds: hundreds of e⁻/s), a flat or a light leak."""


@dataclass(frozen=True)
class Flat(MasterImage):
    """Master flat of one physical filter (``FILTER``), normalised to median 1."""

    kind: ClassVar[str] = "flat"
    fill_value: ClassVar[float] = 1.0
    median_bounds: ClassVar[tuple[float, float]] = (0.1, 10.0)
    """0.1 < median < 10: a flat is normalised to median 1; the interval leaves room for a
    flat normalised elsewhere (to an amplifier's or a region's mean) and refuses one left
    in e⁻ (thousands) or nearly empty, by which ISR would scale the exposure wrongly."""

    @classmethod
    def unusable(cls, image: np.ndarray) -> np.ndarray:
        """Pixels ISR cannot divide by: non-finite or ≤ 0."""
        with np.errstate(invalid="ignore"):
            return ~(image > 0)


def flat_configurations(info: ObservationInfo) -> tuple[str, ...]:
    """Flat configurations (``filter~disperser``) that may serve an exposure, best first.

    An imaging exposure: the flat of its filter without disperser. A dispersed one: the
    flat of its filter and disperser, then the imaging flat of its filter (the pixel
    response is the same; only the illumination through the disperser differs).

    Parameters
    ----------
    info : ObservationInfo
        The exposure.

    Returns
    -------
    tuple of str
    """
    imaging = f"{info.filter}~empty"
    if info.is_dispersed:
        return (f"{info.filter}~{info.disperser}", imaging)
    return (imaging,)


def _normalise_optic(name: str) -> str:
    """``empty`` for an empty slot (``""``, ``EMPTY``, ``empty_1``), else the name unchanged."""
    # The same rule the header translator applies to exposures, so the two compare equal.
    return "empty" if HeaderTranslator.empty_optic_pattern.match(name.strip()) else name.strip()


def flat_configuration(meta: Mapping[str, Any]) -> tuple[str, str] | None:
    """Normalised ``filter~disperser`` of a flat and its disperser, from its metadata.

    ``FILTER`` is ``filter~disperser`` as the builders write it; a ``FILTER`` without
    ``~`` is a raw-style header (a product that kept its inputs' keys), whose disperser is
    then in ``GRATING`` (none: empty).

    Parameters
    ----------
    meta : mapping
        Header or table metadata (``FILTER``, ``GRATING``).

    Returns
    -------
    (str, str) or None
        None when there is no ``FILTER`` (or it is ``NONE``).
    """
    value = _text(meta.get("FILTER"))
    if value is None or value.upper() == "NONE":
        return None
    band, tilde, grating = value.partition("~")
    if not tilde:
        grating = _text(meta.get("GRATING")) or ""
    disperser = _normalise_optic(grating)
    return f"{_normalise_optic(band)}~{disperser}", disperser


def check_flat_serves(meta: Mapping[str, Any], source: str | None,
                      info: ObservationInfo) -> None:
    """Refuse a flat of another filter than the exposure's (`flat_configurations`).

    A flat without ``FILTER`` cannot be compared and is accepted.

    Parameters
    ----------
    meta : mapping
        The flat's header.
    source : str or None
        The flat, for the message.
    info : ObservationInfo
        The exposure.

    Raises
    ------
    BadInputError
        ``flat is for <its filter~disperser>; exposure <OBSID> is <filter~disperser>``.
    """
    configuration = flat_configuration(meta)
    if configuration is None:
        return
    allowed = flat_configurations(info)
    if configuration[0] not in allowed:
        raise BadInputError(source or None, f"flat is for {configuration[0]}; exposure "
                                            f"{info.obs_id} is {info.filter}~{info.disperser}")


def _text(value: Any) -> str | None:
    """A metadata value as stripped text; None when missing, undefined or blank."""
    if value is None or isinstance(value, fits.card.Undefined):
        return None
    return str(value).strip() or None
