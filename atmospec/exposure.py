"""The one image type of the pipeline: image, mask (named bit planes), variance, metadata.

On disk an `Exposure` uses the layout of Rubin's ExposureF files: the primary HDU holds the
metadata (every raw primary key is kept), then the extensions ``IMAGE`` (float32),
``MASK`` (int32, ``MP_<PLANE>`` keys give bit numbers) and ``VARIANCE`` (float32). Post-ISR
exposures are written tile-compressed by default, image and variance quantised
(`atmospec.compression`); `Exposure.read` reads either layout.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.io.fits.verify import VerifyError
from astropy.nddata import CCDData, VarianceUncertainty

from atmospec.compression import (
    CompressionConfig,
    compressed_hdu,
    dither_seed,
    plane_noise,
    quantizable,
    value_range,
)
from atmospec.errors import BadInputError, short_error
from atmospec.fitsscan import (
    FitsLayout,
    astropy_warnings_as_errors,
    check_compressed_sums,
    check_hdu_sums,
    scan_fits,
)
from atmospec.io import add_cards, write_hdul_atomic

log = logging.getLogger(__name__)

#: Rubin's default mask planes and bit numbers.
DEFAULT_MASK_PLANES: Mapping[str, int] = MappingProxyType({
    "BAD": 0,
    "SAT": 1,
    "INTRP": 2,
    "CR": 3,
    "EDGE": 4,
    "DETECTED": 5,
    "DETECTED_NEGATIVE": 6,
    "SUSPECT": 7,
    "NO_DATA": 8,
})


#: Rows of the mask per band in `Exposure.get_mask`.
_MASK_BAND_ROWS = 128


@dataclass
class Exposure:
    """An image with its mask, variance and metadata.

    Arrays are owned (and modified in place) by ISR steps; ``image`` and ``variance`` are
    float32, ``mask`` is int32 with bits named by ``mask_planes``.
    """

    image: np.ndarray
    """Pixel values (electrons after ISR gain; ADU before)."""
    mask: np.ndarray
    """Bit mask, int32, same shape as ``image``."""
    variance: np.ndarray
    """Per-pixel variance in the square of the image unit."""
    metadata: fits.Header = field(default_factory=fits.Header)
    """Header: raw primary keys plus processing keys."""
    mask_planes: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MASK_PLANES))
    """Plane name to bit number."""
    unit: str = "electron"
    """Unit of ``image`` (``electron`` or ``adu``)."""
    compression: CompressionConfig | None = None
    """How `write` stores the planes: None, as they are (calibration products, an exposure
    read from a file); the ISR gives its output its configuration's (`run_isr`)."""

    def __post_init__(self) -> None:
        if self.mask.shape != self.image.shape or self.variance.shape != self.image.shape:
            raise ValueError(
                f"image {self.image.shape}, mask {self.mask.shape} and variance "
                f"{self.variance.shape} must have the same shape"
            )

    @classmethod
    def from_image(
        cls, image: np.ndarray, metadata: fits.Header | None = None, unit: str = "electron"
    ) -> Exposure:
        """Wrap an image with an empty mask and zero variance."""
        image = np.asarray(image, dtype=np.float32)
        return cls(
            image=image,
            mask=np.zeros(image.shape, dtype=np.int32),
            variance=np.zeros(image.shape, dtype=np.float32),
            metadata=fits.Header() if metadata is None else metadata,
            unit=unit,
        )

    @property
    def shape(self) -> tuple[int, ...]:
        """Image shape ``(ny, nx)``."""
        return self.image.shape

    def bitmask(self, *planes: str) -> int:
        """Integer with the bits of ``planes`` set (adds unknown planes to the mask)."""
        value = 0
        for name in planes:
            if name not in self.mask_planes:
                self.mask_planes[name] = max(self.mask_planes.values(), default=-1) + 1
            value |= 1 << self.mask_planes[name]
        return value

    def set_mask(self, plane: str, where: np.ndarray) -> None:
        """Set ``plane`` on the pixels where ``where`` is true (a boolean array of the
        image's shape, or any index of the mask)."""
        bit = np.int32(self.bitmask(plane))
        if isinstance(where, np.ndarray) and where.dtype == bool and where.shape == self.shape:
            # One pass, no gather and scatter of the pixels set: 10x faster than indexing
            # for a sparse plane (SAT, BAD) on a 4k x 4k frame.
            np.bitwise_or(self.mask, bit, out=self.mask, where=where)
        else:
            self.mask[where] |= bit

    def get_mask(self, *planes: str, region: tuple[slice, slice] | None = None
                 ) -> np.ndarray:
        """Boolean array: pixels with any of ``planes`` set, over the whole image or over
        ``region`` (``(rows, columns)`` slices: no full-frame temporary for a cutout)."""
        mask = self.mask if region is None else self.mask[region]
        bits = self.bitmask(*planes)
        if mask.ndim != 2 or not np.can_cast(np.min_scalar_type(bits), mask.dtype):
            return (mask & bits) != 0
        bits = mask.dtype.type(bits)
        # Band by band: the integer temporary stays in cache (2x faster on a 4k x 4k mask
        # than one full-frame temporary of 64 MB).
        out = np.empty(mask.shape, dtype=bool)
        for start in range(0, mask.shape[0], _MASK_BAND_ROWS):
            band = slice(start, start + _MASK_BAND_ROWS)
            np.not_equal(np.bitwise_and(mask[band], bits), 0, out=out[band])
        return out

    # --- FITS I/O -------------------------------------------------------------------------

    def _plane_headers(self) -> tuple[fits.Header, fits.Header, fits.Header]:
        """The cards of the IMAGE, MASK and VARIANCE HDUs (names, types, units, planes)."""
        headers = []
        for exttype in ("IMAGE", "MASK", "VARIANCE"):
            h = fits.Header()
            h["EXTNAME"] = exttype
            h["EXTTYPE"] = exttype
            h["INHERIT"] = True
            headers.append(h)
        image, mask, variance = headers
        image["BUNIT"] = self.unit
        variance["BUNIT"] = f"{self.unit}**2"
        for name, bit in sorted(self.mask_planes.items(), key=lambda kv: kv[1]):
            mask[f"HIERARCH MP_{name}" if len(name) > 5 else f"MP_{name}"] = bit
        return image, mask, variance

    def to_hdulist(self) -> fits.HDUList:
        """Build the Rubin-layout HDU list, uncompressed (no file is written)."""
        primary = fits.PrimaryHDU(header=clean_primary(self.metadata))
        h_image, h_mask, h_variance = self._plane_headers()
        return fits.HDUList([
            primary,
            fits.ImageHDU(self.image.astype(np.float32, copy=False), header=h_image),
            fits.ImageHDU(self.mask.astype(np.int32, copy=False), header=h_mask),
            fits.ImageHDU(self.variance.astype(np.float32, copy=False), header=h_variance),
        ])

    def write(self, path: str | Path, provenance: Sequence[tuple[str, Any, str]] = ()
              ) -> Path:
        """Write atomically to ``path`` in the Rubin ExposureF layout, as `compression` says.

        With `compression` enabled (post-ISR exposures, by default) image and variance are
        quantised, **in this exposure too**: its arrays then hold the values the file holds,
        so that work done on it after the write equals work done on the file; the three
        planes are tile-compressed. The primary header then says ``ATMCMPRS = 'QUANTIZED'``
        with the level ``ATMQLEVL``, each quantised plane its step ``ATMQSTEP`` and the
        noise it was scaled from ``ATMQSIG``. Not enabled (``--lossless``): the planes as
        they are, ``ATMCMPRS = 'LOSSLESS'``. None: the planes as they are, no card.

        Parameters
        ----------
        path : path
            Output file.
        provenance : sequence of (key, value, comment)
            Cards added to the primary header (see `atmospec.io.provenance_cards`).

        Returns
        -------
        pathlib.Path
            ``path``.
        """
        compression = self.compression
        if compression is not None and compression.enabled:
            hdul = self._compressed_hdulist(compression)
        else:
            hdul = self.to_hdulist()
            if compression is not None:
                hdul[0].header["ATMCMPRS"] = ("LOSSLESS", "post-ISR planes stored as computed")
        add_cards(hdul[0].header, provenance)
        return write_hdul_atomic(hdul, path)

    def _compressed_hdulist(self, config: CompressionConfig) -> fits.HDUList:
        """The HDU list with quantised, tile-compressed planes (this exposure's image and
        variance quantised in place)."""
        self.image = _writable_float32(self.image)
        self.variance = _writable_float32(self.variance)
        h_image, h_mask, h_variance = self._plane_headers()
        sigmas = plane_noise(self.image, self.variance)
        q = config.quantize_level
        primary = fits.PrimaryHDU(header=clean_primary(self.metadata))
        planes = {}
        for name, plane, header, sigma in (("IMAGE", self.image, h_image, sigmas[0]),
                                           ("VARIANCE", self.variance, h_variance, sigmas[1])):
            step = sigma / q
            values = value_range(plane)
            if not quantizable(plane, step, values):
                # No noise to scale a step from (a constant plane: the zero variance of an
                # ISR without the variance step), or values no int32 holds at that step:
                # compressed losslessly (GZIP_2), without ATMQSTEP.
                if sigma > 0:
                    log.warning("%s written losslessly: its values do not fit a quantisation "
                                "at step %g (infinite, or beyond 2**30 steps)", name, step)
                planes[name] = fits.CompImageHDU(plane, header=header, compression_type="GZIP_2",
                                                 quantize_level=0.0,
                                                 tile_shape=(config.tile_rows, plane.shape[1]))
                continue
            header["ATMQSTEP"] = (step, f"quantisation step, {header['BUNIT']}: ATMQSIG/q")
            header["ATMQSIG"] = (sigma, f"noise the step is scaled from, {header['BUNIT']}")
            seed = config.dither_seed or dither_seed(plane)
            planes[name] = compressed_hdu(plane, header, step=step, seed=seed,
                                          tile_rows=config.tile_rows, has_nan=values[2])
        mask = np.ascontiguousarray(self.mask, dtype=np.int32)
        planes["MASK"] = compressed_hdu(mask, h_mask, step=None, seed=1,
                                        tile_rows=config.tile_rows)
        quantised = any("ATMQSTEP" in h for h in (h_image, h_variance))
        primary.header["ATMCMPRS"] = ("QUANTIZED" if quantised else "LOSSLESS",
                                      "IMAGE, VARIANCE quantised; MASK lossless")
        primary.header["ATMQLEVL"] = (q, "quantisation level q: step = noise / q")
        return fits.HDUList([primary, planes["IMAGE"], planes["MASK"], planes["VARIANCE"]])

    @classmethod
    def read(cls, path: str | Path, *, load_variance: bool = True,
             check_sums: bool = True) -> Exposure:
        """Read an exposure written by `write` (or by Rubin's ExposureF writer), its planes
        plain or tile-compressed.

        Parameters
        ----------
        path : path
            The file.
        load_variance : bool
            If false the VARIANCE extension is not read and ``variance`` is a read-only
            array of zeros that takes no memory (for calibration products, whose variance
            ISR does not use).
        check_sums : bool
            Check the ``DATASUM`` of the extensions read (~0.03 s per 65 MB plane). False
            for a caller that has just checked the whole file's sums (a calibration
            product: `atmospec.calib.products.integrity.check_fits_file`).

        Raises
        ------
        BadInputError
            If the file is missing, unreadable or lacks the IMAGE/MASK/VARIANCE extensions,
            or the data of an extension read do not match its ``DATASUM`` card (every file
            atmospec writes has one: `atmospec.io.write_hdul_atomic`).
        """
        path = Path(path)
        if not path.is_file():
            raise BadInputError(path, "no such file")
        try:
            # The headers walked first (bounded, whatever the damage), then read by astropy
            # with its warnings kept, not printed: the first one is the reason.
            layout = scan_fits(path)
            with astropy_warnings_as_errors(path, "damaged FITS file"), \
                    fits.open(path, memmap=False) as hdul:
                names = [h.name for h in hdul]
                missing = [n for n in ("IMAGE", "MASK", "VARIANCE") if n not in names]
                if missing:
                    raise BadInputError(path, f"not a post-ISR exposure: no {', '.join(missing)} "
                                              "extension")
                if check_sums:
                    read = ("IMAGE", "MASK", "VARIANCE") if load_variance else ("IMAGE", "MASK")
                    _check_data_sums(path, hdul, read, layout)
                image = np.asarray(hdul["IMAGE"].data, dtype=np.float32)
                mask = np.asarray(hdul["MASK"].data, dtype=np.int32)
                if load_variance:
                    variance = np.asarray(hdul["VARIANCE"].data, dtype=np.float32)
                else:
                    variance = np.broadcast_to(np.float32(0.0), image.shape)
                planes = {
                    k[3:]: int(v) for k, v in hdul["MASK"].header.items() if k.startswith("MP_")
                }
                unit = str(hdul["IMAGE"].header.get("BUNIT", "electron"))
                metadata = hdul[0].header.copy()
        except BadInputError:
            raise
        except Exception as exc:  # astropy raises many types for damaged files
            raise BadInputError(path, f"not a readable FITS file ({short_error(exc)})") from None
        if image.ndim != 2 or mask.shape != image.shape or variance.shape != image.shape:
            raise BadInputError(path, f"IMAGE {image.shape}, MASK {mask.shape} and VARIANCE "
                                      f"{variance.shape} differ in shape")
        return cls(image, mask, variance, metadata, planes or dict(DEFAULT_MASK_PLANES), unit)

    # --- astropy interoperability ---------------------------------------------------------

    def to_ccddata(self) -> CCDData:
        """Convert to `astropy.nddata.CCDData`.

        The integer mask goes to ``flags`` (planes in ``meta['MP_*']``), a boolean ``mask``
        marks any plane set, and the variance becomes a `VarianceUncertainty`.
        """
        meta = self.metadata.copy()
        for name, bit in self.mask_planes.items():
            meta[f"HIERARCH MP_{name}"] = bit
        unit = u.electron if self.unit == "electron" else u.adu
        return CCDData(
            self.image,
            unit=unit,
            mask=self.mask != 0,
            flags=self.mask,
            uncertainty=VarianceUncertainty(self.variance, unit=unit**2),
            meta=meta,
        )

    @classmethod
    def from_ccddata(cls, ccd: CCDData) -> Exposure:
        """Build from `astropy.nddata.CCDData` (inverse of `to_ccddata`)."""
        image = np.asarray(ccd.data, dtype=np.float32)
        meta = fits.Header(ccd.meta) if not isinstance(ccd.meta, fits.Header) else ccd.meta.copy()
        planes = {k[3:]: int(v) for k, v in meta.items() if k.startswith("MP_")}
        for k in [k for k in meta if k.startswith("MP_")]:
            del meta[k]
        planes = planes or dict(DEFAULT_MASK_PLANES)
        if ccd.flags is not None:
            mask = np.asarray(ccd.flags, dtype=np.int32)
        else:
            mask = np.zeros(image.shape, dtype=np.int32)
            if ccd.mask is not None:
                mask[np.asarray(ccd.mask, dtype=bool)] = 1 << planes["BAD"]
        if ccd.uncertainty is not None:
            variance = np.asarray(
                ccd.uncertainty.represent_as(VarianceUncertainty).array, dtype=np.float32
            )
        else:
            variance = np.zeros(image.shape, dtype=np.float32)
        unit = "adu" if ccd.unit == u.adu else "electron"
        return cls(image, mask, variance, meta, planes, unit)


_STRUCTURAL = frozenset({"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "XTENSION",
               "PCOUNT", "GCOUNT", "CHECKSUM", "DATASUM", "BSCALE", "BZERO", "EXTNAME"})


def clean_primary(header: fits.Header) -> fits.Header:
    """Copy of ``header`` without the structural keys astropy must write itself, every card
    writable.

    A raw header may hold cards that read well but are not standard FITS, e.g. a keyword in
    lower case (`atmospec.camera.raw` accepts it: FITS keywords carry no case): written as
    they are, astropy would refuse the whole file at the end of the work. Such a card is
    written again from its keyword, value and comment (an exact repair), or dropped when
    its value does not parse; either way a ``HISTORY`` card of the output says so, and one
    warning is logged.
    """
    out = fits.Header()
    notes = []
    for card in header.cards:
        if card.keyword in _STRUCTURAL:
            continue
        writable, note = _writable_card(card)
        if writable is not None:
            out.append(writable)
        if note is not None:
            notes.append(note)
    for note in notes:
        out.add_history(note)
    if notes:
        log.warning("%d non-standard header card(s) repaired or dropped (HISTORY notes "
                    "them): %s", len(notes), notes[0])
    return out


def _writable_card(card: fits.Card) -> tuple[fits.Card | None, str | None]:
    """``(card, None)`` for a standard card; ``(repaired, note)``, a new card of the same
    keyword, value and comment, when that one is standard; ``(None, note)`` when the card
    cannot be written faithfully (its value does not parse)."""
    # The verification's report goes to warnings; its outcome is the note returned instead.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            card.verify("exception")
            return card, None
        except VerifyError:
            pass
        name = card.keyword
        try:
            repaired = fits.Card(card.keyword, card.value, card.comment)
            repaired.verify("exception")
            return repaired, f"atmospec: repaired non-standard card {name}"
        except (VerifyError, ValueError):
            pass
    return None, f"atmospec: dropped invalid card {name}"


def _check_data_sums(path: Path, hdul: fits.HDUList, names: Sequence[str],
                     layout: FitsLayout) -> None:
    """Refuse the file when the data of an HDU of ``names`` do not match its ``DATASUM``.

    Only the data sum: a header edited by hand since (a keyword added) is still a valid
    exposure, a changed pixel is not. An HDU without the card (a file from elsewhere) is
    not checked. A tile-compressed plane's sum is that of its compressed table and heap
    (`atmospec.fitsscan.check_compressed_sums`).
    """
    indices = [hdul.index_of(name) for name in names]
    check_compressed_sums(path, [layout.hdus[i] for i in indices
                                 if layout.hdus[i].is_compressed_image])
    for name, index in zip(names, indices, strict=True):
        if not layout.hdus[index].is_compressed_image:
            check_hdu_sums(path, hdul[name], index, header=False)


def _writable_float32(plane: np.ndarray) -> np.ndarray:
    """``plane`` itself when it is a writable C-contiguous float32 array, else a copy that
    is (a read-only zero variance, another dtype)."""
    if plane.dtype == np.float32 and plane.flags.c_contiguous and plane.flags.writeable:
        return plane
    return np.array(plane, dtype=np.float32, order="C")
