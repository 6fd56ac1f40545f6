"""Tile-compressed post-ISR planes: image and variance quantised, the mask lossless.

The file is a standard FITS tile-compressed image (the FITS standard's tiled image
convention, as cfitsio's ``fpack`` writes it): each plane is a binary table of ``RICE_1``
compressed tiles of `CompressionConfig.tile_rows` rows, which astropy, cfitsio and Rubin's
readers decompress on their own. Floating-point planes are quantised as Rubin's lossy
recipes do: a fixed step ``σ / q`` taken from the exposure's own noise, with subtractive
dithering (``SUBTRACTIVE_DITHER_2``: exact zeros stay zeros; NaN pixels stay NaN).

The quantisation is done here, in numpy, not by cfitsio: each value is replaced by the
value any reader decodes from the file (``(i - r + 0.5) · step`` in double precision,
rounded to float32, with ``r`` the standard's dither sequence), so the exposure kept in
memory after a write equals the file bit for bit. A night's tasks after ISR use the exposure
in memory; a resumed night reads the file: both see the same pixels. astropy and cfitsio
(4.06, through fitsio) decode these files to the same float32 values, NaN and zeros
included.

The budget
----------
A dithered quantisation error is uniform over one step, whatever the value: its standard
deviation is ``σ_q = step / √12 = σ / (q √12)``. At the default ``q = 10`` that is 2.9 % of
the pixel noise ``σ`` at the frame's median noise level, and it adds ``1 / (24 q²)`` =
0.042 % to the total noise in quadrature; the per-pixel error is at most ``step / 2`` (plus
the float32 rounding of the value). Pixels quieter than the median (read-noise limited)
see a larger fraction: ``σ_q / σ_pixel = σ / (σ_pixel q √12)``.

The image's ``σ`` is the square root of the median of the variance plane (the expected
pixel noise); the variance plane's is its own pixel-to-pixel scatter, measured robustly
(first differences of a 1-in-8 subsample). The ISR variance is computed from the noisy image,
so that scatter is the image's ``σ`` in units of e⁻² and the variance's relative error is
``σ_q / V``: 0.17 % at a 300 e⁻² sky.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from functools import cache

import numpy as np
from astropy.io import fits

# astropy's RICE_1 coder (cfitsio's, in C) is the one the reader uses; it has no public
# name, hence this single import of a private module.
from astropy.io.fits.hdu.compressed._codecs import Rice1, decompress_rice_1_c

__all__ = [
    "CompressionConfig",
    "compressed_hdu",
    "decompress_rice_image",
    "dither_seed",
    "noise_fraction",
    "plane_noise",
    "quantizable",
    "value_range",
]

#: Length of the FITS standard's dither sequence.
N_RANDOM = 10000
#: Quantised value of an exact zero with ``SUBTRACTIVE_DITHER_2`` (the standard's).
ZERO_VALUE = -2147483646
#: Quantised value of a NaN pixel (``ZBLANK``; cfitsio's choice).
NULL_VALUE = -2147483647
#: Largest ``|value| / step`` quantised: beyond it a plane is kept lossless (the int32 range,
#: with a margin to the two reserved values above).
MAX_LEVELS = 2.0**30
#: Rice coding block, pixels (the standard's default).
RICE_BLOCK = 32


@dataclass(frozen=True)
class CompressionConfig:
    """How post-ISR exposures are written.

    The default, ``q = 10``: quantisation noise ``σ / (q √12)`` = 2.9 % of the pixel noise
    (0.042 % added in quadrature), a 4k×4k LATISS post-ISR file 7.9× smaller than the
    uncompressed planes (25 MB against 195 MB; see `atmospec.compression`).
    """

    enabled: bool = True
    """Quantise image and variance and tile-compress the three planes (RICE_1, the mask
    losslessly). False (``--lossless``): the planes are written as they are, float32 and
    int32, uncompressed (195 MB for a LATISS frame), bit-exact."""
    quantize_level: float = 10.0
    """``q``: the quantisation step is the plane's noise ``σ`` divided by ``q`` (Rubin's
    lossy recipes use 10). The quantisation noise is ``σ / (q √12)``: 2.9 % of ``σ`` at 10,
    5.8 % at 5."""
    tile_rows: int = 100
    """Rows of one compressed tile (a reader of a cutout decompresses whole tiles). 10 to
    100 rows write and read a LATISS frame equally fast; one-row tiles cost +30 % to write
    and 3× to read, 400-row ones more too (the tile's float64 work leaves the cache)."""
    dither_seed: int | None = None
    """``ZDITHER0``, 1-10000: where the dither sequence starts. None: from the image's first
    row (`dither_seed`), so that the same pixels are always written the same way (a resumed
    night's files equal an uninterrupted one's) and two exposures are dithered differently."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.quantize_level) and self.quantize_level > 0):
            raise ValueError(f"quantize_level must be a positive number, got "
                             f"{self.quantize_level!r}")
        if self.tile_rows < 1:
            raise ValueError(f"tile_rows must be at least 1, got {self.tile_rows!r}")
        if self.dither_seed is not None and not 1 <= self.dither_seed <= N_RANDOM:
            raise ValueError(f"dither_seed must be in 1..{N_RANDOM}, got {self.dither_seed!r}")


def noise_fraction(quantize_level: float) -> float:
    """Quantisation noise as a fraction of the pixel noise: ``1 / (q √12)``."""
    return 1.0 / (quantize_level * math.sqrt(12.0))


def plane_noise(image: np.ndarray, variance: np.ndarray) -> tuple[float, float]:
    """The noise of the image and of the variance plane, from which the steps are taken.

    Parameters
    ----------
    image, variance : numpy.ndarray
        The planes (a 1-in-8 subsample of each is used: 250 000 pixels of a 4k×4k frame,
        a noise known to 0.2 %).

    Returns
    -------
    sigma_image, sigma_variance : float
        ``√median(variance)`` over pixels with a positive finite variance (the image's own
        robust scatter when there is none), and the variance plane's robust scatter; 0 when
        a plane has no usable noise (it is then written losslessly).
    """
    var = variance[::_SUBSAMPLE, ::_SUBSAMPLE]
    positive = var[var > 0]  # NaN compares false
    sigma_image = float(np.sqrt(np.median(positive))) if positive.size else _scatter(image)
    return sigma_image, _scatter(variance)


#: Pixels between the samples of `plane_noise`, along each axis.
_SUBSAMPLE = 8


def _scatter(plane: np.ndarray) -> float:
    """Robust pixel-to-pixel scatter: 1.4826 MAD of the differences of neighbours 8 px
    apart on a 1-in-8 subsample, over √2 (smooth structure cancels in the differences)."""
    sub = np.asarray(plane[::_SUBSAMPLE, ::_SUBSAMPLE], dtype=np.float64)
    diff = np.diff(sub, axis=-1).ravel()
    diff = diff[np.isfinite(diff)]
    if diff.size == 0:
        return 0.0
    mad = np.median(np.abs(diff - np.median(diff)))
    return float(1.4826 * mad / math.sqrt(2.0))


def dither_seed(image: np.ndarray) -> int:
    """A seed in 1..10000 from the bytes of the image's first row: the same pixels always
    give the same seed (cfitsio's checksum seed does the same from the first tile)."""
    first = np.ascontiguousarray(image[:1], dtype=np.float32)
    return zlib.crc32(first.tobytes()) % N_RANDOM + 1


@cache
def _dither_table() -> tuple[np.ndarray, np.ndarray]:
    """The standard's 10000 dither values (as float32 promoted to float64, as the decoder
    uses them) and each one's run start ``int(r · 500)``; read-only."""
    # Park & Miller's minimal standard generator (a = 16807, m = 2³¹ - 1, seed 1): the FITS
    # standard fixes it so that every reader rebuilds the same sequence.
    a, m, seed = 16807, 2147483647, 1
    values = np.empty(N_RANDOM, dtype=np.float32)
    for i in range(N_RANDOM):
        seed = (a * seed) % m
        values[i] = seed / m
    if seed != 1043618065:  # the standard's check value of the 10000th seed
        raise RuntimeError("dither sequence differs from the FITS standard's")
    table = values.astype(np.float64)
    starts = (values * 500).astype(np.int64)
    table.flags.writeable = False
    starts.flags.writeable = False
    return table, starts


def _tile_dither(tile: int, seed: int, n: int) -> np.ndarray:
    """The dither values of the ``n`` pixels of tile ``tile`` (0-based).

    The standard: the tile's sequence starts at table entry ``int(r[s] · 500)`` with
    ``s = (tile + seed - 1) mod 10000``, runs to the end of the table, then continues at
    the start of entry ``s + 1``, and so on.
    """
    table, starts = _dither_table()
    s = (tile + seed - 1) % N_RANDOM
    parts = []
    total = 0
    while total < n:
        part = table[starts[s]:]
        parts.append(part)
        total += part.size
        s = (s + 1) % N_RANDOM
    return np.concatenate(parts)[:n] if len(parts) > 1 else parts[0][:n]


def value_range(plane: np.ndarray) -> tuple[float, float, bool]:
    """The smallest and largest non-NaN values of a float plane, and whether it holds a NaN.

    Returns
    -------
    lo, hi : float
        NaN when every pixel is NaN; infinite values count.
    has_nan : bool
        Whether any pixel is NaN (`compressed_hdu` then tests its tiles for them).
    """
    lo, hi = float(plane.min()), float(plane.max())
    if not (math.isnan(lo) or math.isnan(hi)):
        return lo, hi, False
    # NaN pixels (kept as NaN): the range of the others, by the slower NaN-skipping pass.
    return float(np.fmin.reduce(plane, axis=None)), float(np.fmax.reduce(plane, axis=None)), True


def quantizable(plane: np.ndarray, step: float,
                values: tuple[float, float, bool] | None = None) -> bool:
    """Whether every finite value of ``plane`` fits the int32 range at ``step`` (and no
    value is infinite, which has no quantised form); ``values``: the plane's `value_range`,
    if the caller has it."""
    if not (math.isfinite(step) and step > 0):
        return False
    lo, hi, _ = value_range(plane) if values is None else values
    if math.isnan(lo):  # every pixel NaN
        return True
    return math.isfinite(lo) and math.isfinite(hi) and max(-lo, hi) / step < MAX_LEVELS


def compressed_hdu(plane: np.ndarray, header: fits.Header, *, step: float | None,
                   seed: int, tile_rows: int, has_nan: bool = True) -> fits.BinTableHDU:
    """One plane as a RICE_1 tile-compressed HDU.

    Parameters
    ----------
    plane : numpy.ndarray
        2-D float32 plane (quantised: ``step`` given) or int32 plane (lossless). A float
        plane is **overwritten** with its quantised values, those every reader decodes.
    header : astropy.io.fits.Header
        The image HDU's cards (``EXTNAME``, ``BUNIT`` ...): they become the compressed
        HDU's, read back as the image header.
    step : float or None
        Quantisation step of a float plane (it must pass `quantizable`); None for an
        integer plane.
    seed : int
        ``ZDITHER0``.
    tile_rows : int
        Rows per tile.
    has_nan : bool
        False when the caller knows a float plane holds no NaN (`value_range`): its tiles
        are then not tested for NaN pixels (two passes of the eight of a quantisation).

    Returns
    -------
    astropy.io.fits.BinTableHDU
        The tile table with the ``Z*`` cards of the convention; astropy opens it as a
        ``CompImageHDU``.
    """
    ny, nx = plane.shape
    quantised = step is not None
    if quantised and not (plane.dtype == np.float32 and plane.flags.c_contiguous
                          and plane.flags.writeable):
        raise TypeError("a quantised plane must be a writable C-contiguous float32 array")
    if not quantised and plane.dtype.kind != "i":
        raise TypeError(f"a lossless plane must be integer, got {plane.dtype}")
    tiles = []
    any_null = False
    for k, start in enumerate(range(0, ny, tile_rows)):
        rows = plane[start:start + tile_rows]
        if quantised:
            ints, has_null = _quantise_tile(rows, step, _tile_dither(k, seed, rows.size),
                                             has_nan)
            any_null |= has_null
        else:
            ints = np.ascontiguousarray(rows, dtype=np.int32).reshape(-1)
        coder = Rice1(blocksize=RICE_BLOCK, bytepix=4, tilesize=ints.size)
        tiles.append(np.frombuffer(coder.encode(ints), dtype=np.uint8))
    n = len(tiles)
    heap = np.empty(n, dtype=object)
    heap[:] = tiles
    columns = [fits.Column(name="COMPRESSED_DATA", format=f"1PB({max(t.size for t in tiles)})",
                           array=heap)]
    if quantised:
        columns += [fits.Column(name="ZSCALE", format="1D", array=np.full(n, step)),
                    fits.Column(name="ZZERO", format="1D", array=np.zeros(n))]
    hdu = fits.BinTableHDU.from_columns(columns)
    h = hdu.header
    h["ZIMAGE"] = (True, "extension contains a tile-compressed image")
    h["ZTENSION"] = ("IMAGE", "image extension")
    h["ZBITPIX"] = (-32 if quantised else 32, "data type of the image")
    h["ZNAXIS"] = (2, "dimensions of the image")
    h["ZNAXIS1"] = (nx, "length of image axis 1")
    h["ZNAXIS2"] = (ny, "length of image axis 2")
    h["ZTILE1"] = (nx, "tile length along axis 1")
    h["ZTILE2"] = (min(tile_rows, ny), "tile length along axis 2")
    h["ZPCOUNT"] = (0, "image PCOUNT")
    h["ZGCOUNT"] = (1, "image GCOUNT")
    h["ZCMPTYPE"] = ("RICE_1", "compression algorithm")
    h["ZNAME1"] = ("BLOCKSIZE", "Rice block, pixels")
    h["ZVAL1"] = RICE_BLOCK
    h["ZNAME2"] = ("BYTEPIX", "bytes per integer pixel")
    h["ZVAL2"] = 4
    if quantised:
        h["ZQUANTIZ"] = ("SUBTRACTIVE_DITHER_2", "dithered quantisation, zeros kept")
        h["ZDITHER0"] = (seed, "start of the dither sequence")
        if any_null:
            h["ZBLANK"] = (NULL_VALUE, "quantised value of NaN pixels")
    for card in header.cards:
        if card.keyword not in h:
            h.append(card)
    return hdu


def _quantise_tile(rows: np.ndarray, step: float, dither: np.ndarray, has_nan: bool = True
                   ) -> tuple[np.ndarray, bool]:
    """Quantise one tile (``rows``, float32) in place; its integers and whether a pixel is
    NaN (tested only if the plane ``has_nan``).

    ``i = floor(x / step + r)`` is the nearest integer to ``x / step + r - 0.5``, the
    standard's rule; the value written back is the decoder's ``(i - r + 0.5) · step``
    computed in double precision, then rounded to float32.
    """
    x = rows.reshape(-1)  # a view: rows of a C-contiguous plane
    y = np.multiply(x, 1.0 / step, dtype=np.float64)
    y += dither
    np.floor(y, out=y)
    nan = np.isnan(x) if has_nan else None
    has_null = nan is not None and bool(nan.any())
    if has_null:
        y[nan] = 0.0
    ints = y.astype(np.int32)
    y -= dither
    y += 0.5
    zero = x == 0
    np.multiply(y, step, out=x, casting="same_kind")
    if zero.any():  # SUBTRACTIVE_DITHER_2 keeps exact zeros
        ints[zero] = ZERO_VALUE
        x[zero] = 0.0
    if has_null:
        ints[nan] = NULL_VALUE
        x[nan] = np.nan
    return ints, has_null


#: ``TFORM`` of the tile column: a variable-length byte array with 32- (P) or 64-bit (Q)
#: descriptors.
_TILE_FORM = re.compile(r"^1?([PQ])B(\(\d+\))?$")


def decompress_rice_image(data: bytes | memoryview, header: fits.Header) -> np.ndarray | None:
    """The image of a lossless RICE_1 tile-compressed integer HDU, decoded tile by tile.

    The raws of LATISS and of the LSST cameras are compressed so, one row per tile: astropy
    spends ~0.3 s of Python per 4k×4k LATISS raw (~0.8 s per LSSTCam raw) handling the
    32 768 rows of the tile table, around 0.13 s of decoding. Here the table's descriptors
    are read as one array and each tile goes straight to the same C decoder, so the pixels
    are those astropy returns.

    Parameters
    ----------
    data : bytes or memoryview
        The HDU's data: the tile table followed by its heap (``NAXIS1 · NAXIS2 + PCOUNT``
        bytes at least, as the header declares).
    header : astropy.io.fits.Header
        The binary table's header (``ZIMAGE = T``).

    Returns
    -------
    numpy.ndarray or None
        ``(ZNAXIS2, ZNAXIS1)`` int16 or int32; None when the HDU is not of that simple kind
        (another algorithm, quantised or scaled values, null values, tiles not whole rows,
        an extra column): read it with astropy then.

    Raises
    ------
    ValueError
        When the tile table or a tile contradicts the header (a damaged file).
    """
    form = _TILE_FORM.match(str(header.get("TFORM1", "")).strip())
    bitpix = header.get("ZBITPIX")
    settings = {str(header.get(f"ZNAME{i}", "")).strip().upper(): header.get(f"ZVAL{i}")
                for i in range(1, 10) if f"ZNAME{i}" in header}
    simple = (form is not None and header.get("ZIMAGE") is True
              and str(header.get("ZCMPTYPE", "")).strip() in ("RICE_1", "RICE_ONE")
              and header.get("ZNAXIS") == 2 and header.get("TFIELDS") == 1
              and str(header.get("TTYPE1", "")).strip().upper() == "COMPRESSED_DATA"
              and bitpix in (16, 32)
              and settings.get("BYTEPIX", bitpix // 8) == bitpix // 8
              and not any(k in header for k in ("ZBLANK", "ZSCALE", "ZZERO", "ZQUANTIZ",
                                                "BZERO", "BSCALE", "BLANK"))
              and header.get("ZTILE1", header.get("ZNAXIS1")) == header.get("ZNAXIS1"))
    if not simple:
        return None
    nx, ny = int(header["ZNAXIS1"]), int(header["ZNAXIS2"])
    rows = int(header.get("ZTILE2", 1))
    blocksize = int(settings.get("BLOCKSIZE", RICE_BLOCK))
    bytepix = bitpix // 8
    n_tiles = -(-ny // rows) if rows > 0 else -1
    width = 8 if form.group(1) == "P" else 16
    if rows < 1 or header.get("NAXIS2") != n_tiles or header.get("NAXIS1") != width:
        raise ValueError(f"the tile table ({header.get('NAXIS2')} rows of "
                         f"{header.get('NAXIS1')} bytes) does not fit a {ny}x{nx} image in "
                         f"tiles of {rows} rows")
    table = n_tiles * width
    heap_start = int(header.get("THEAP", table))
    heap_end = heap_start + int(header.get("PCOUNT", 0))
    buffer = memoryview(data)
    if heap_start < table or heap_end > len(buffer):
        raise ValueError(f"the heap ({heap_start}-{heap_end}) is not within the "
                         f"{len(buffer)} bytes of data")
    descriptors = np.frombuffer(buffer[:table], dtype=">i4" if width == 8 else ">i8")
    counts, offsets = descriptors.reshape(n_tiles, 2).astype(np.int64).T
    starts = heap_start + offsets
    if (counts <= 0).any() or (offsets < 0).any() or (starts + counts > heap_end).any():
        raise ValueError("a tile lies outside the heap or is empty")
    # Python ints and one output buffer: per tile, one C call and one copy of its bytes.
    out = bytearray(ny * nx * bytepix)
    view = memoryview(out)
    tile_bytes = rows * nx * bytepix
    for k, (start, count) in enumerate(zip(starts.tolist(), counts.tolist(), strict=True)):
        first = k * tile_bytes
        size = min(tile_bytes, len(out) - first)
        decoded = decompress_rice_1_c(bytes(buffer[start:start + count]), blocksize, bytepix,
                                      size // bytepix)
        if len(decoded) != size:
            raise ValueError(f"tile {k + 1} decodes to {len(decoded)} bytes, not {size}")
        view[first:first + size] = decoded
    return np.frombuffer(out, dtype=f"i{bytepix}").reshape(ny, nx)
