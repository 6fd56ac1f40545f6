"""The HDU headers of a FITS file, walked and checked without reading the pixels, in a time
proportional to the file size.

Why not astropy's reader alone: ``fits.open`` trusts each header's size cards to find the
next header. One damaged size card (``BITPIX`` 32 → 36, ``NAXIS1`` 576 → 577) sends it into
the pixel data, which it then parses as a header of tens of thousands of garbage "cards",
each one a warning printed through astropy's logger: minutes of work and hundreds of
thousands of lines for one bit. This walk refuses such a file at the first sign instead.
Every header must

* start with its mandatory first card (``SIMPLE``, ``XTENSION``) exactly where the size
  cards of the HDU before it say, so a damaged size card is caught at the next header;
* be printable ASCII, with legal keywords, up to an ``END`` card found within
  `MAX_HEADER_BLOCKS` blocks: binary data read as a header fail on their first byte;
* have cards whose values parse, and size cards of the right type and range (``BITPIX``
  one of the FITS pixel types, ``NAXIS`` ≤ 999, ``NAXISn`` ≥ 0, ``PCOUNT``, ``GCOUNT``);
* have its data inside the file.

The work is one pass over the headers (each bounded; a plain file's data are skipped by
seeking) or, for a gzip-compressed file, over the decompressed stream, which also checks
the gzip CRC. No wall-clock guard is needed, so nothing depends on signals or on being in
the main thread.

Only a header that passed these checks is handed to astropy, with its warnings captured and
never printed (`astropy_warnings_as_errors`): a warning there means damage and becomes the
error. A keyword in lower case is accepted, as astropy reads it (FITS keywords carry no
case: upper-casing it is an exact repair, done when the header is written again).
"""

from __future__ import annotations

import gzip
import os
import re
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyError
from astropy.utils.exceptions import AstropyWarning

from atmospec.errors import BadInputError, short_error

__all__ = [
    "BITPIX_VALUES",
    "BLOCK",
    "MAX_HDUS",
    "MAX_HEADER_BLOCKS",
    "FitsLayout",
    "HduLayout",
    "astropy_warnings_as_errors",
    "check_compressed_sums",
    "check_hdu_sums",
    "data_sum",
    "data_sum_matches",
    "primary_header",
    "scan_fits",
]

#: FITS block size, bytes: headers and data are padded to whole blocks.
BLOCK = 2880
_CARD = 80

#: Longest header accepted, in blocks (2304 cards). A LATISS primary header has ~300 cards
#: (4 blocks), an amplifier header ~100; the bound only stops binary data read as a header.
MAX_HEADER_BLOCKS = 64

#: Most HDUs accepted in one file: a camera raw has 17 (LATISS), a few more with auxiliary
#: tables; more means the file is not a raw, and the walk stays short.
MAX_HDUS = 256

#: The FITS pixel types (``BITPIX``): integers of 8-64 bits, floats of 32 and 64.
BITPIX_VALUES = (8, 16, 32, 64, -32, -64)
_EXTENSIONS = ("IMAGE", "BINTABLE", "TABLE")
_GZIP_MAGIC = b"\x1f\x8b"
# Printable ASCII (0x20-0x7E): the only bytes a FITS header may hold.
_NOT_PRINTABLE = re.compile(rb"[^\x20-\x7e]")
# A keyword (columns 1-8) once upper-cased: letters, digits, '-' and '_', left-justified.
_KEYWORD = re.compile(r"[A-Z0-9_-]*")
_END_CARD = b"END" + b" " * (_CARD - 3)
# Keywords whose cards hold text, not a value.
_COMMENTARY = frozenset({"", "COMMENT", "HISTORY", "CONTINUE"})
# Columns 11-80 of a card whose value is one of the standard's plain forms: a string, a
# logical, an integer or a real (exponent E or D), then spaces and an optional comment.
# astropy reads these without a question; any other text (a complex value, a lower-case
# exponent, no value at all ...) is left to astropy's parser, which decides.
_PLAIN_VALUE = re.compile(r" *(?:'(?:[^']|'')*'|[TF]|[+-]?(?:\d+\.?\d*|\.\d+)"
                          r"(?:[DE][+-]?\d+)?) *(?:/.*)?")
_SKIP_CHUNK = 1 << 20


@dataclass(frozen=True)
class HduLayout:
    """Where one HDU lies in the (uncompressed) FITS stream, and its parsed header."""

    index: int
    """Position in the file, 0 for the primary HDU."""
    header: fits.Header
    """The header, checked as described in the module docstring."""
    header_start: int
    """Byte offset of the header's first card."""
    data_start: int
    """Byte offset of the data (the header's end)."""
    data_size: int
    """Bytes of data the size cards declare, without the padding to a whole block."""

    @property
    def name(self) -> str:
        """``EXTNAME``, upper-cased and stripped (FITS compares names without case); empty
        when the HDU has none."""
        value = self.header.get("EXTNAME")
        return value.strip().upper() if isinstance(value, str) else ""

    @property
    def extname(self) -> str:
        """``EXTNAME`` as written, stripped; empty when the HDU has none."""
        value = self.header.get("EXTNAME")
        return value.strip() if isinstance(value, str) else ""

    @property
    def label(self) -> str:
        """``HDU <index>`` with the name, for messages: ``HDU 3 (Segment12)``."""
        return _label(self.index, self.header)

    @property
    def data_end(self) -> int:
        """Byte offset just past the data and their padding: where the next HDU starts."""
        return self.data_start + -(-self.data_size // BLOCK) * BLOCK

    @property
    def is_compressed_image(self) -> bool:
        """True for a tile-compressed image (a ``BINTABLE`` with ``ZIMAGE = T``, fpack)."""
        return self.header.get("XTENSION") == "BINTABLE" and self.header.get("ZIMAGE") is True


@dataclass(frozen=True)
class FitsLayout:
    """Every HDU of a FITS file, as `scan_fits` found them."""

    path: Path
    """The file."""
    compression: str
    """``"gzip"`` for a gzip-compressed file, else ``"none"`` (tile compression, ``.fz``,
    is inside the FITS structure: ``"none"`` too)."""
    hdus: tuple[HduLayout, ...]
    """The HDUs in file order."""
    size: int
    """Length of the FITS stream, bytes (decompressed for gzip)."""


def _label(index: int, header: fits.Header) -> str:
    """``HDU <index>``, with its ``EXTNAME`` when it has one: for messages."""
    name = header.get("EXTNAME")
    return f"HDU {index} ({name.strip()})" if isinstance(name, str) and name.strip() \
        else f"HDU {index}"


class _Stream:
    """A file read forward, plain or gzip-compressed (decided by its first bytes, not its
    name), keeping the position in the FITS stream and turning gzip damage into
    `BadInputError`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO = open(path, "rb")  # closed by close()
        self.size: int | None = os.fstat(self._file.fileno()).st_size
        self.compression = "none"
        if self._file.read(2) == _GZIP_MAGIC:
            self.compression = "gzip"
            self._file.seek(0)
            self._file = gzip.GzipFile(fileobj=self._file, mode="rb")
            self.size = None  # known only once the stream has been read
        self._file.seek(0)
        self.pos = 0

    def close(self) -> None:
        fileobj = getattr(self._file, "fileobj", None)
        self._file.close()
        if fileobj is not None:
            fileobj.close()

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; fewer only at the end of the stream."""
        parts = []
        while n > 0:
            part = self._guarded(self._file.read, n)
            if not part:
                break
            parts.append(part)
            n -= len(part)
            self.pos += len(part)
        return b"".join(parts)

    def skip(self, n: int) -> int:
        """Move ``n`` bytes forward (fewer at the end of the stream); the bytes moved."""
        if self.size is not None:
            n = max(0, min(n, self.size - self.pos))
            self._file.seek(self.pos + n)
            self.pos += n
            return n
        done = 0
        while done < n:
            part = self.read(min(_SKIP_CHUNK, n - done))
            if not part:
                break
            done += len(part)
        return done

    def _guarded(self, read: Callable[[int], bytes], n: int) -> bytes:
        try:
            return read(n)
        except EOFError:
            raise BadInputError(self.path, f"truncated gzip stream: it ends after {self.pos} "
                                           "bytes of FITS data") from None
        except (gzip.BadGzipFile, zlib.error) as exc:  # before OSError: BadGzipFile is one
            raise BadInputError(self.path, f"damaged gzip stream ({short_error(exc)})") from None


def scan_fits(path: str | Path, check: Callable[[HduLayout], None] | None = None) -> FitsLayout:
    """Walk and check every HDU header of a FITS file without reading its pixels.

    Parameters
    ----------
    path : path
        A FITS file, plain or gzip-compressed (tile-compressed HDUs are plain FITS).
    check : callable, optional
        Called with each HDU as soon as its header is read, before its data are checked to
        lie inside the file, so that the caller's own checks (e.g. of the image shape) report
        the first problem in file order; it raises `BadInputError` to refuse the file.

    Returns
    -------
    FitsLayout

    Raises
    ------
    BadInputError
        The first problem found: empty, not FITS, a damaged header or size card, truncated,
        a damaged gzip stream, bytes that are not a header after the last HDU.
    OSError
        When the file cannot be opened or read (gone, permission denied, an I/O error): the
        caller knows whether that is bad input or a missing file to record.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise BadInputError(path, "empty file")
    stream = _Stream(path)
    try:
        hdus: list[HduLayout] = []
        while True:
            start = stream.pos
            first = stream.read(BLOCK)
            if not first:
                break
            if hdus and not first.strip(b"\0"):
                _check_padding(stream, hdus[-1])
                break
            if len(hdus) == MAX_HDUS:
                raise BadInputError(path, f"more than {MAX_HDUS} HDUs: not a camera raw")
            hdu = _read_hdu(stream, first, len(hdus), start, hdus[-1] if hdus else None)
            hdus.append(hdu)
            if check is not None:
                check(hdu)
            _skip_data(stream, hdu)
        if not hdus:
            raise BadInputError(path, "empty file (no FITS data)")
        return FitsLayout(path, stream.compression, tuple(hdus), stream.pos)
    finally:
        stream.close()


def primary_header(path: str | Path) -> fits.Header:
    """The primary header of a FITS file, read and checked as `scan_fits` reads every header,
    without going further into the file.

    For the cheap header checks of a command's inputs (their image type, detector): a
    damaged or truncated primary header is refused with the message `scan_fits` (and so
    ``atmospec isr`` and the night index) gives; damage further in is found when the
    pixels are read.

    Parameters
    ----------
    path : path
        A FITS file, plain or gzip-compressed.

    Returns
    -------
    astropy.io.fits.Header

    Raises
    ------
    BadInputError
        Empty, not FITS, a damaged or truncated primary header.
    OSError
        When the file cannot be opened or read.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise BadInputError(path, "empty file")
    stream = _Stream(path)
    try:
        return _read_hdu(stream, stream.read(BLOCK), 0, 0, None).header
    finally:
        stream.close()


def _read_hdu(stream: _Stream, first: bytes, index: int, start: int,
              previous: HduLayout | None) -> HduLayout:
    """Read and check the header starting with block ``first`` at byte ``start``."""
    path = stream.path
    keyword = b"SIMPLE  " if index == 0 else b"XTENSION"
    if not first.startswith(keyword):
        if previous is None:
            raise BadInputError(path, "not a readable FITS file (it does not start with "
                                      "a SIMPLE card)")
        raise BadInputError(path, f"damaged: no HDU starts at byte {start}, where the data "
                                  f"of {previous.label} end (one of its size cards BITPIX, "
                                  "NAXISn, PCOUNT, GCOUNT is wrong, or what follows is not "
                                  "FITS)")
    text = _header_text(stream, first, index, start)
    header = _parse_header(path, text, f"HDU {index}")
    size = _data_size(path, header, _label(index, header), primary=index == 0)
    return HduLayout(index, header, start, start + -(-len(text) // BLOCK) * BLOCK, size)


def _header_text(stream: _Stream, first: bytes, index: int, start: int) -> str:
    """The header's cards up to and including END, as text; checked to be printable ASCII,
    complete and at most `MAX_HEADER_BLOCKS` blocks long."""
    block, blocks = first, 0
    text = bytearray()
    while True:
        if len(block) < BLOCK:
            raise BadInputError(stream.path, f"truncated: the file ends inside the header "
                                             f"of HDU {index} (byte {stream.pos})")
        for at in range(0, BLOCK, _CARD):
            card = block[at:at + _CARD]
            bad = _NOT_PRINTABLE.search(card)
            if bad is not None:
                number = (len(text) + at) // _CARD + 1
                raise BadInputError(stream.path, f"damaged header: HDU {index} card {number} "
                                                 f"({_show(card[:8])}) holds byte "
                                                 f"0x{card[bad.start()]:02x}, not printable "
                                                 "ASCII (or its END card is missing)")
            if card == _END_CARD:
                text += block[:at + _CARD]
                return text.decode("ascii")
        text += block
        blocks += 1
        if blocks == MAX_HEADER_BLOCKS:
            raise BadInputError(stream.path, f"damaged header: HDU {index} (byte {start}) has "
                                             f"no END card in {MAX_HEADER_BLOCKS} blocks")
        block = stream.read(BLOCK)


def _show(raw: bytes) -> str:
    """Bytes of a card, quoted, with any unprintable byte escaped: for a one-line message."""
    return "'" + raw.decode("latin-1").encode("unicode_escape").decode("ascii").rstrip() + "'"


def _parse_header(path: Path, text: str, where: str) -> fits.Header:
    """The header of ``text`` (printable ASCII ending in END), every card checked."""
    images = [text[i:i + _CARD] for i in range(0, len(text) - _CARD, _CARD)]
    with astropy_warnings_as_errors(path, f"damaged header: {where}"):
        for number, image in enumerate(images, start=1):
            problem = _card_problem(image)
            if problem is not None:
                raise BadInputError(path, f"damaged header: {where} card {number} {problem}")
        return fits.Header.fromstring(text)


def _card_problem(image: str) -> str | None:
    """What is wrong with one card (printable ASCII, 80 characters), or None."""
    keyword = image[:8].rstrip()
    # Any case and spaces are legal in the name of a HIERARCH card.
    if not image.startswith("HIERARCH "):
        if not _KEYWORD.fullmatch(keyword.upper()):
            return f"({keyword!r}): illegal keyword"
        # Only commentary cards may go without a value; astropy would warn on the others.
        if image[8:10] != "= " and keyword.upper() not in _COMMENTARY:
            return f"({keyword}): no '= ' value indicator in columns 9-10"
        # A plain value needs no parse (astropy's costs ~20 µs a card: 700 cards a raw).
        if image[8:10] == "= " and _PLAIN_VALUE.fullmatch(image, 10):
            return None
    try:
        fits.Card.fromstring(image).value  # noqa: B018 - astropy parses a value when read
    except (VerifyError, ValueError):
        return f"({keyword}): unparsable value {image[10:].strip()!r}"
    return None


def _data_size(path: Path, header: fits.Header, label: str, *, primary: bool) -> int:
    """Bytes of data the size cards declare, each card checked for type and range."""
    where = f"damaged header: {label}"
    if primary:
        if header.get("SIMPLE") is not True:
            raise BadInputError(path, f"not a readable FITS file (SIMPLE = "
                                      f"{header.get('SIMPLE')!r}, not T)")
    elif header.get("XTENSION") not in _EXTENSIONS:
        raise BadInputError(path, f"{where}: XTENSION = {header.get('XTENSION')!r} is not "
                                  f"one of {', '.join(_EXTENSIONS)}")
    bitpix = _int_card(path, header, "BITPIX", where, low=-64)
    if bitpix not in BITPIX_VALUES:
        raise BadInputError(path, f"{where}: BITPIX = {bitpix} is not a FITS pixel type "
                                  f"({', '.join(map(str, BITPIX_VALUES))})")
    naxis = _int_card(path, header, "NAXIS", where, high=999)
    axes = [_int_card(path, header, f"NAXIS{i}", where) for i in range(1, naxis + 1)]
    pcount = _int_card(path, header, "PCOUNT", where, default=0 if primary else None)
    gcount = _int_card(path, header, "GCOUNT", where, low=1, default=1 if primary else None)
    # The standard fixes them for extensions; only a binary table has a heap (PCOUNT).
    if not primary and (gcount != 1 or (pcount != 0 and header["XTENSION"] != "BINTABLE")):
        raise BadInputError(path, f"{where}: {header['XTENSION']} extension with PCOUNT = "
                                  f"{pcount}, GCOUNT = {gcount} (the standard: PCOUNT 0 but "
                                  "for a BINTABLE's heap, GCOUNT 1)")
    if naxis == 0:
        return 0
    return abs(bitpix) // 8 * gcount * (pcount + prod(axes))


def _int_card(path: Path, header: fits.Header, key: str, where: str, *, low: int = 0,
              high: int | None = None, default: int | None = None) -> int:
    """The integer value of a size card, refused when missing, not an integer or out of
    ``[low, high]``."""
    value: Any = header.get(key, default)
    if value is None:
        raise BadInputError(path, f"{where}: no {key} card")
    # bool is an int subclass, but T is not a size.
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadInputError(path, f"{where}: {key} = {value!r} is not an integer")
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise BadInputError(path, f"{where}: {key} = {value} is not {bound}")
    return value


def _skip_data(stream: _Stream, hdu: HduLayout) -> None:
    """Move past the data of ``hdu`` and their padding; refuse a stream that ends first."""
    end = hdu.data_start + hdu.data_size
    if stream.size is not None and end > stream.size:
        raise BadInputError(stream.path, f"truncated: {stream.size} bytes, the data of "
                                         f"{hdu.label} end at byte {end}")
    wanted = end - stream.pos
    if stream.skip(wanted) < wanted:
        raise BadInputError(stream.path, f"truncated: the FITS data end at byte {stream.pos}, "
                                         f"inside the data of {hdu.label} (they end at byte "
                                         f"{hdu.data_start + hdu.data_size})")
    # The standard pads every HDU; a file that ends inside the padding was cut short (and
    # cut exactly there, it would seem to end cleanly without its last HDUs).
    wanted = hdu.data_end - stream.pos
    if stream.skip(wanted) < wanted:
        raise BadInputError(stream.path, f"truncated: the FITS data end at byte {stream.pos}, "
                                         f"inside the padding of {hdu.label} (it ends at byte "
                                         f"{hdu.data_end})")


def _check_padding(stream: _Stream, last: HduLayout) -> None:
    """After the last HDU a block of zeros was read: some writers pad the file so; anything
    but zeros to the end is refused."""
    while block := stream.read(_SKIP_CHUNK):
        if block.strip(b"\0"):
            raise BadInputError(stream.path, f"damaged: bytes after {last.label} (from byte "
                                             f"{last.data_end}) are neither zeros nor FITS")


@contextmanager
def astropy_warnings_as_errors(path: str | Path, what: str) -> Iterator[None]:
    """Capture the warnings of the block; an astropy warning means the file is damaged and
    becomes ``BadInputError(path, "<what>: <first warning>")``.

    Warnings are recorded, never printed, so that a damaged file gives one line at most;
    callers keep the block's work bounded (a header of at most `MAX_HEADER_BLOCKS` blocks,
    the pixels of one file), which bounds the record too. Other warnings (numpy's, ...) are
    issued again after the block, each distinct one once.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    others = {}
    for item in caught:
        if issubclass(item.category, AstropyWarning):
            raise BadInputError(path, f"{what}: {short_error(item.message)}")
        others.setdefault((item.category, str(item.message)), item)
    for item in others.values():
        warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)


def check_hdu_sums(path: str | Path, hdu: fits.PrimaryHDU | fits.hdu.base.ExtensionHDU,
                   index: int, *, header: bool = True) -> None:
    """Refuse an HDU whose FITS checksums do not match its bytes.

    Parameters
    ----------
    path : path
        The file, for the message.
    hdu : astropy HDU
        The HDU as `astropy.io.fits.open` gives it (its data are read here if not yet).
    index : int
        Its position in the file, for the message.
    header : bool
        Check ``CHECKSUM`` (header and data) when the HDU has it; false: only ``DATASUM``
        (the data), so that a header edited since (a keyword added by hand) is accepted
        while a changed pixel is not. An HDU without the card is not checked (files from
        elsewhere, or written before atmospec wrote sums).

    Raises
    ------
    BadInputError
        ``checksum mismatch in HDU i (NAME): its <header or data|data> changed since it
        was written``, or ``HDU i is corrupt`` for a header astropy could not parse.
    """
    if not hasattr(hdu, "verify_checksum"):
        # astropy's _CorruptedHDU: a header it could not make sense of.
        raise BadInputError(path, f"HDU {index} is corrupt")
    cards = hdu.header
    # CHECKSUM covers the header and the data (it includes the data sum): one pass over
    # the data suffices; DATASUM alone is checked only when there is no CHECKSUM.
    if header and "CHECKSUM" in cards:
        valid, what = hdu.verify_checksum(), "header or data"
    elif "DATASUM" in cards:
        valid, what = hdu.verify_datasum(), "data"
    else:
        return
    if valid == 0:
        name = hdu.name or "PRIMARY"
        raise BadInputError(path, f"checksum mismatch in HDU {index} ({name}): its {what} "
                                  "changed since it was written")


def data_sum(data: bytes | memoryview) -> int:
    """The FITS ``DATASUM`` of an HDU's data: its bytes as 32-bit big-endian words added in
    ones' complement arithmetic (the standard's checksum convention; the zeros padding the
    last block add nothing, a last partial word is padded with zeros).

    Parameters
    ----------
    data : bytes
        The data bytes (up to 16 GB: the words are summed in 64 bits, then folded).

    Returns
    -------
    int
        The sum, as the ``DATASUM`` card states it.
    """
    whole = len(data) // 4
    total = int(np.frombuffer(data, dtype=">u4", count=whole).sum(dtype=np.uint64))
    if len(data) > 4 * whole:
        total += int.from_bytes(bytes(data[4 * whole:]).ljust(4, b"\0"), "big")
    while total >> 32:  # end-around carry
        total = (total & 0xFFFFFFFF) + (total >> 32)
    return total


def data_sum_matches(path: str | Path, source: str | Path | BinaryIO, hdu: HduLayout
                     ) -> bool | None:
    """Whether the data of ``hdu`` match its ``DATASUM`` card; None without the card.

    The bytes are read from ``source`` at the HDU's offsets (`scan_fits`): no header is
    parsed again. ~0.4 ms per MB, 2× less CPU than astropy's ``verify_datasum`` on a
    LATISS raw, which opens the file and reads every header again.

    Parameters
    ----------
    path : path
        The file, for the message.
    source : path or binary file object
        Where its (uncompressed) FITS stream is read: the file, or a gzip file's stream in
        memory.
    hdu : HduLayout
        The HDU.

    Raises
    ------
    BadInputError
        ``DATASUM`` is not a number, or the file ends inside the HDU's data.
    """
    card = hdu.header.get("DATASUM")
    if card is None:
        return None
    try:
        expected = int(str(card).strip())
    except ValueError:
        raise BadInputError(path, f"damaged header: {hdu.label}: DATASUM = {card!r} is not "
                                  "a number") from None
    if isinstance(source, str | Path):
        with open(source, "rb") as f:
            f.seek(hdu.data_start)
            data = f.read(hdu.data_size)
    else:
        source.seek(hdu.data_start)
        data = source.read(hdu.data_size)
    if len(data) != hdu.data_size:
        raise BadInputError(path, f"truncated: the file ends inside the data of {hdu.label}")
    return data_sum(data) == expected


def check_compressed_sums(path: str | Path, hdus: Sequence[HduLayout]) -> None:
    """Refuse a file whose tile-compressed HDUs' data do not match their ``DATASUM``.

    astropy opens a tile-compressed image as the image it holds, without the sums of the
    table that stores it: the table's ``DATASUM``, over the compressed tiles and their heap,
    is checked here on the file's bytes (`data_sum_matches`), as `check_hdu_sums` checks a
    plain HDU's (``header=False``). A changed byte of a tile would otherwise decompress to
    other pixels, or fail in the middle of the work.

    Parameters
    ----------
    path : path
        A plain (not gzip-compressed) FITS file.
    hdus : sequence of HduLayout
        Its tile-compressed HDUs to check, as `scan_fits` found them.

    Raises
    ------
    BadInputError
        ``checksum mismatch in HDU i (NAME): its data changed since it was written``.
    """
    if not hdus:
        return
    with open(path, "rb") as f:  # once for all the HDUs
        for hdu in hdus:
            if data_sum_matches(path, f, hdu) is False:
                raise BadInputError(path, f"checksum mismatch in HDU {hdu.index} "
                                          f"({hdu.name or 'PRIMARY'}): its data changed "
                                          "since it was written")
