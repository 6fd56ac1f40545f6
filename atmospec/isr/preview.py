"""A binned preview of a post-ISR exposure: what its quick look draws, in ~1 % of the file.

The quick look of an exposure (`atmospec.plots.isr.plot_postisr_thumbnail`) shows block means
of the image, the bitwise OR of the mask bits in each block, and the full-resolution pixel
count of each mask plane. Computing them from a 4k×4k post-ISR file means decompressing its
IMAGE and MASK planes (~1.2 s of CPU); from the exposure in memory ~0.1 s. The night's ISR
task therefore keeps them, computed once from the exposure it just wrote, in
``<OBSID>_preview.fits``: the live page draws from the preview in memory, and a report of a
night reduced with ``--no-report`` reads ~0.3 MB instead of 25 MB.

The preview's file: a primary HDU with the exposure's primary header and the preview's own
cards (``PVFACTOR`` block size, ``PVNAXIS1``/``PVNAXIS2`` the full-resolution shape,
``PVCNT_<plane>`` the plane counts), then ``IMAGE`` (block means, float32, ``BUNIT``;
stored as computed, so that a figure drawn from the file equals one drawn from the exposure:
GZIP_2 would save ~0.3 MB for 0.035 s of CPU per exposure) and ``MASK`` (the per-block OR,
RICE tile-compressed, lossless, with the ``MP_`` plane cards): any FITS viewer opens it. A
LATISS frame's preview: ~1.05 MB, 4 % of its post-ISR file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from atmospec.compression import compressed_hdu
from atmospec.errors import BadInputError
from atmospec.exposure import clean_primary
from atmospec.io import add_cards, write_hdul_atomic

__all__ = [
    "PREVIEW_WIDTH",
    "Preview",
    "block_any",
    "block_mean",
    "block_or",
    "make_preview",
    "plane_counts",
    "preview_factor",
    "read_preview",
    "write_preview",
]

#: Default width (pixels) of the quick-look PNG the preview is binned for.
PREVIEW_WIDTH = 1000
#: Mask pixels histogrammed at a time by `plane_counts`.
_COUNT_CHUNK = 1 << 20
#: Rows of blocks averaged at a time by `block_mean` (bounded float64 temporaries).
_MEAN_BAND = 64


@dataclass(frozen=True)
class Preview:
    """Block means and mask of a post-ISR exposure, as its quick look shows them."""

    image: np.ndarray
    """Mean of the finite pixels of each ``factor``×``factor`` block (NaN if none), float32."""
    mask: np.ndarray
    """Bitwise OR of the mask bits in each block, int32."""
    factor: int
    """Block size, pixels."""
    shape: tuple[int, int]
    """Full-resolution image shape ``(ny, nx)``."""
    bits: dict[str, int]
    """Mask plane name → bit."""
    counts: dict[str, int]
    """Full-resolution pixel count of every plane of `bits`."""
    unit: str
    """Image unit."""
    metadata: Any
    """Primary header of the exposure (a `astropy.io.fits.Header` or a mapping)."""


def preview_factor(shape: tuple[int, int], max_width: int = PREVIEW_WIDTH) -> int:
    """Block size of the preview of an image of ``shape`` for a PNG ``max_width`` wide.

    The quick-look figure gives the image ~0.66 of its width: no need for more displayed
    pixels than that. A factor dividing both sides is preferred (no padding, a copy of the
    whole plane): LATISS's 4072×4000 takes 8 where 7 would do.
    """
    ny, nx = shape
    factor = max(1, math.ceil(max(ny, nx) / (0.66 * max_width)))
    return next((f for f in range(factor, factor + 3) if ny % f == 0 and nx % f == 0), factor)


def _pad_to_blocks(a: np.ndarray, factor: int, fill: Any) -> np.ndarray:
    """Pad ``a`` at the top/right with ``fill`` so both sides are multiples of ``factor``."""
    ny, nx = a.shape
    pad_y, pad_x = (-ny) % factor, (-nx) % factor
    if pad_y == 0 and pad_x == 0:
        return a
    return np.pad(a, ((0, pad_y), (0, pad_x)), constant_values=fill)


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean of the finite pixels in each ``factor``×``factor`` block (NaN if none are).

    The image is padded rather than cropped so that no edge row or column is dropped; the
    padding is non-finite and so does not enter the means. Blocks are summed in float64,
    band by band; only bands whose sums are not finite (a NaN or infinite pixel) are summed
    again pixel by pixel over the finite ones.
    """
    if factor == 1:
        return np.where(np.isfinite(image), image, np.nan).astype(np.float32)
    padded = _pad_to_blocks(np.asarray(image, dtype=np.float32), factor, np.nan)
    ny, nx = padded.shape[0] // factor, padded.shape[1] // factor
    out = np.empty((ny, nx), dtype=np.float32)
    inv = 1.0 / factor**2
    for j0 in range(0, ny, _MEAN_BAND):
        j1 = min(j0 + _MEAN_BAND, ny)
        band = padded[j0 * factor:j1 * factor]
        # Along rows first (contiguous), then across the block's rows.
        rows = band.reshape(-1, nx, factor).sum(axis=2, dtype=np.float64)
        total = rows.reshape(j1 - j0, factor, nx).sum(axis=1)
        if np.isfinite(total).all():
            out[j0:j1] = total * inv
            continue
        blocks = band.reshape(j1 - j0, factor, nx, factor)
        finite = np.isfinite(blocks)
        count = finite.sum(axis=(1, 3))
        total = np.where(finite, blocks, 0).sum(axis=(1, 3), dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[j0:j1] = total / count
    return out


def block_any(flags: np.ndarray, factor: int) -> np.ndarray:
    """True for each ``factor``×``factor`` block holding at least one true pixel."""
    if factor == 1:
        return flags.astype(bool, copy=False)
    return block_or(np.asarray(flags, dtype=bool).view(np.uint8), factor).astype(bool)


def block_or(mask: np.ndarray, factor: int) -> np.ndarray:
    """Bitwise OR of the mask values in each ``factor``×``factor`` block.

    ``factor`` whole-array ORs of strided rows, then of strided columns of the result:
    two passes over the mask in long contiguous runs (a reduction over the block axes
    runs ``factor``-long inner loops, 5× slower on a 4k×4k mask).
    """
    mask = np.asarray(mask)
    if factor == 1:
        return mask.copy()
    padded = _pad_to_blocks(mask, factor, 0)
    rows = padded[0::factor].copy()
    for k in range(1, factor):
        rows |= padded[k::factor]
    out = np.ascontiguousarray(rows[:, 0::factor])
    for k in range(1, factor):
        out |= rows[:, k::factor]
    return out


def plane_counts(mask: np.ndarray, planes: Mapping[str, int]) -> dict[str, int]:
    """Full-resolution pixel count of every plane, from one histogram of the mask values
    (one pass, rather than one pass per plane)."""
    flat = np.asarray(mask).reshape(-1)
    top = int(flat.max(initial=0))
    if int(flat.min(initial=0)) < 0 or top >= 1 << 16:  # bit 31 or high planes: per plane
        return {p: int(np.count_nonzero(flat & (1 << b))) for p, b in planes.items()}
    # In chunks, of the flagged pixels only (a few % of a frame): bincount copies its input
    # to int64 (128 MB for a whole 4k×4k mask); zeros count in no plane (5× less CPU).
    histogram = np.zeros(top + 1, dtype=np.int64)
    for start in range(0, flat.size, _COUNT_CHUNK):
        chunk = flat[start:start + _COUNT_CHUNK]
        histogram += np.bincount(chunk[chunk != 0], minlength=top + 1)
    values = np.arange(histogram.size)
    return {p: int(histogram[(values & (1 << b)) != 0].sum()) for p, b in planes.items()}


def make_preview(image: np.ndarray, mask: np.ndarray, bits: Mapping[str, int], unit: str,
                 metadata: Any, max_width: int = PREVIEW_WIDTH) -> Preview:
    """The preview of a post-ISR exposure's planes.

    Parameters
    ----------
    image, mask : numpy.ndarray
        The exposure's image and integer mask planes.
    bits : mapping
        Mask plane name → bit (every plane is counted).
    unit : str
        Image unit.
    metadata : astropy.io.fits.Header or mapping
        Primary header, kept for the figure's title and legend.
    max_width : int
        Width of the PNG the preview is for (`preview_factor`).

    Returns
    -------
    Preview
    """
    shape = (int(image.shape[0]), int(image.shape[1]))
    factor = preview_factor(shape, max_width)
    return Preview(block_mean(image, factor), block_or(mask, factor), factor, shape,
                   dict(bits), plane_counts(mask, dict(bits)), str(unit), metadata)


def write_preview(preview: Preview, path: str | Path,
                  provenance: Sequence[tuple[str, Any, str]] = ()) -> Path:
    """Write ``preview`` atomically to ``path`` (layout in the module docstring).

    Parameters
    ----------
    preview : Preview
        What to write.
    path : path
        Output file.
    provenance : sequence of (key, value, comment)
        Cards added to the primary header (`atmospec.io.provenance_cards`).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    primary = fits.PrimaryHDU(header=clean_primary(preview.metadata))
    h = primary.header
    h["PVFACTOR"] = (preview.factor, "preview block size, pixels")
    h["PVNAXIS1"] = (preview.shape[1], "full-resolution image width")
    h["PVNAXIS2"] = (preview.shape[0], "full-resolution image height")
    for name, count in preview.counts.items():
        h[f"HIERARCH PVCNT_{name}"] = (count, f"full-resolution {name} pixels")
    add_cards(h, provenance)
    h_image = fits.Header([("EXTNAME", "IMAGE"), ("BUNIT", preview.unit)])
    h_mask = fits.Header([("EXTNAME", "MASK")])
    for name, bit in sorted(preview.bits.items(), key=lambda kv: kv[1]):
        h_mask[f"HIERARCH MP_{name}" if len(name) > 5 else f"MP_{name}"] = bit
    image_hdu = fits.ImageHDU(np.asarray(preview.image, dtype=np.float32), header=h_image)
    mask_hdu = compressed_hdu(np.ascontiguousarray(preview.mask, dtype=np.int32), h_mask,
                              step=None, seed=1, tile_rows=16)
    return write_hdul_atomic(fits.HDUList([primary, image_hdu, mask_hdu]), path)


def read_preview(path: str | Path) -> Preview:
    """Read a preview written by `write_preview`.

    Raises
    ------
    BadInputError
        The file is missing, damaged, or not a preview.
    """
    try:
        with fits.open(path) as hdul:
            h = hdul[0].header
            factor, nx, ny = int(h["PVFACTOR"]), int(h["PVNAXIS1"]), int(h["PVNAXIS2"])
            h_mask = hdul["MASK"].header
            bits = {k[3:]: int(v) for k, v in h_mask.items() if k.startswith("MP_")}
            counts = {k[6:]: int(v) for k, v in h.items() if k.startswith("PVCNT_")}
            image = np.asarray(hdul["IMAGE"].data, dtype=np.float32)
            mask = np.asarray(hdul["MASK"].data, dtype=np.int32)
            unit = str(hdul["IMAGE"].header.get("BUNIT", "electron"))
            metadata = h.copy()
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise BadInputError(path, f"not a readable preview ({exc})") from None
    expected = (-(-ny // factor), -(-nx // factor))
    if image.shape != expected or mask.shape != expected:
        raise BadInputError(path, f"preview planes {image.shape} and {mask.shape} do not "
                            f"match {nx}×{ny} pixels in {factor}×{factor} blocks")
    return Preview(image, mask, factor, (ny, nx), bits, counts, unit, metadata)
