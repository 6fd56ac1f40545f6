"""Damage builders for the reliability suite: each takes a good file and damages it the way a
disk, a transfer or a careless hand does, at the byte level, so that the damage is exactly the
one named (astropy would refuse to write most of it, or would quietly repair it).

A FITS file is a sequence of HDUs; each is a header of 80-character cards in 2880-byte
blocks, ended by an ``END`` card, then its data padded to a multiple of 2880 bytes. The
helpers here find the cards and the HDUs by scanning those blocks (`hdu_spans`), so that a
case can name the card it damages (``set_card(path, "SEGMENT10", "NAXIS1", "577")``) rather
than a byte offset found by hand.
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

BLOCK = 2880
"""FITS block size, bytes."""
CARD = 80
"""FITS card size, bytes."""

__all__ = [
    "BLOCK",
    "CARD",
    "HduSpan",
    "blank_card",
    "card_offset",
    "copy_file",
    "dangling_symlink",
    "directory",
    "drop_hdu",
    "duplicate_hdu",
    "fifo",
    "flip_bit",
    "flip_card_bit",
    "fpack_copy",
    "gzip_copy",
    "hdu_spans",
    "quoted",
    "rename_card",
    "reorder_hdus",
    "set_card",
    "symlink_loop",
    "truncate",
]


@dataclass(frozen=True)
class HduSpan:
    """Where one HDU lies in the file, byte offsets (``end`` after the data's padding)."""

    header: int
    """Start of the header."""
    data: int
    """Start of the data (end of the header's last block)."""
    end: int
    """End of the padded data: the start of the next HDU."""
    cards: tuple[str, ...]
    """The header's cards, up to and including ``END``."""

    @property
    def extname(self) -> str | None:
        """The ``EXTNAME`` value (upper case), if the header has one."""
        value = _card_value(self.cards, "EXTNAME")
        return value.strip("'").strip().upper() if value is not None else None


def _card_value(cards: tuple[str, ...], key: str) -> str | None:
    """The raw value text of ``key`` (before any comment), or None."""
    for card in cards:
        if card[:8].rstrip() == key and card[8:10] == "= ":
            text = card[10:]
            if text.lstrip().startswith("'"):
                close = text.find("'", text.find("'") + 1)
                return text[: close + 1].strip()
            return text.split("/", 1)[0].strip()
    return None


def _data_size(cards: tuple[str, ...], primary: bool) -> int:
    """Size of an HDU's data in bytes before padding (the FITS standard's formula)."""

    def number(key: str, default: int) -> int:
        value = _card_value(cards, key)
        return default if value is None else int(value)

    naxis = number("NAXIS", 0)
    if naxis == 0:
        return 0
    axes = [number(f"NAXIS{i}", 0) for i in range(1, naxis + 1)]
    bits = abs(number("BITPIX", 8))
    if primary:
        return bits // 8 * math.prod(axes)
    return bits // 8 * number("GCOUNT", 1) * (number("PCOUNT", 0) + math.prod(axes))


def hdu_spans(path: str | Path) -> list[HduSpan]:
    """Every HDU of a well-formed FITS file, found by scanning its header blocks.

    Parameters
    ----------
    path : path
        A FITS file, not yet damaged (the scan trusts ``BITPIX``, ``NAXISn``, ``PCOUNT``).

    Returns
    -------
    list of HduSpan
        In file order.
    """
    data = Path(path).read_bytes()
    spans: list[HduSpan] = []
    pos = 0
    while pos + BLOCK <= len(data):
        start, cards = pos, []
        while True:
            block = data[pos:pos + BLOCK].decode("ascii")
            pos += BLOCK
            cards += [block[i:i + CARD] for i in range(0, BLOCK, CARD)]
            if any(card.rstrip() == "END" for card in cards[-BLOCK // CARD:]):
                break
        cards = cards[: next(i for i, c in enumerate(cards) if c.rstrip() == "END") + 1]
        size = _data_size(tuple(cards), primary=not spans)
        end = pos + -(-size // BLOCK) * BLOCK
        spans.append(HduSpan(start, pos, end, tuple(cards)))
        pos = end
    return spans


def _span(path: Path, hdu: int | str) -> HduSpan:
    """The HDU named by index or by ``EXTNAME`` (case-insensitive)."""
    spans = hdu_spans(path)
    if isinstance(hdu, int):
        return spans[hdu]
    matches = [s for s in spans if s.extname == hdu.upper()]
    if len(matches) != 1:
        raise KeyError(f"{path}: {len(matches)} HDUs named {hdu}")
    return matches[0]


def card_offset(path: str | Path, hdu: int | str, key: str) -> int:
    """Byte offset in the file of the first card ``key`` of an HDU (index or EXTNAME)."""
    span = _span(Path(path), hdu)
    for i, card in enumerate(span.cards):
        if card[:8].rstrip() == key:
            return span.header + i * CARD
    raise KeyError(f"{path}: no card {key} in HDU {hdu}")


def _write_at(path: Path, offset: int, raw: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(raw)


def _card_bytes(text: str) -> bytes:
    """``text`` padded to one card; longer than a card is a mistake in the case."""
    raw = text.encode("latin-1")
    if len(raw) > CARD:
        raise ValueError(f"card longer than {CARD} bytes: {text!r}")
    return raw.ljust(CARD, b" ")


def quoted(text: str) -> str:
    """``text`` as a FITS string value (quotes doubled, padded to 8 characters)."""
    return "'" + text.replace("'", "''").ljust(8) + "'"


def set_card(path: str | Path, hdu: int | str, key: str, value: str) -> Path:
    """Overwrite, in place, the value of card ``key`` with the raw text ``value``.

    The card's bytes are written directly, so any text goes, valid FITS or not: a number
    (``"577"``), a string (``quoted("../x")``), a wrong type (``"'abc'"`` for ``NAXIS1``) or
    plain garbage (``"NAN"``). Numbers are right-aligned to column 30 as FITS writes them;
    the comment is dropped.
    """
    path = Path(path)
    text = value if value.startswith("'") else value.rjust(20)
    _write_at(path, card_offset(path, hdu, key), _card_bytes(f"{key:<8}= {text}"))
    return path


def rename_card(path: str | Path, hdu: int | str, key: str, new_key: str) -> Path:
    """Rename card ``key`` to ``new_key`` in place (its value kept)."""
    path = Path(path)
    offset = card_offset(path, hdu, key)
    with open(path, "rb") as f:
        f.seek(offset)
        card = f.read(CARD)
    _write_at(path, offset, new_key.encode("ascii").ljust(8)[:8] + card[8:])
    return path


def blank_card(path: str | Path, hdu: int | str, key: str) -> Path:
    """Replace card ``key`` by a blank card (the key is then missing; the size unchanged)."""
    path = Path(path)
    _write_at(path, card_offset(path, hdu, key), b" " * CARD)
    return path


def flip_bit(path: str | Path, byte_offset: int, bit: int) -> Path:
    """Flip bit ``bit`` (0 = least significant) of the byte at ``byte_offset``, in place."""
    path = Path(path)
    with open(path, "r+b") as f:
        f.seek(byte_offset)
        byte = f.read(1)[0]
        f.seek(byte_offset)
        f.write(bytes([byte ^ (1 << bit)]))
    return path


def flip_card_bit(path: str | Path, hdu: int | str, key: str, column: int, bit: int) -> Path:
    """Flip one bit of the character in ``column`` (0-based) of card ``key``, in place.

    Columns 0-7 are the keyword, 8 the ``=``, 10-79 the value and comment; a fixed-format
    number ends in column 29 (``BITPIX  =                   32``: the ``2`` is column 29).
    """
    if not 0 <= column < CARD:
        raise ValueError(f"column {column} is outside a card")
    return flip_bit(path, card_offset(path, hdu, key) + column, bit)


def truncate(path: str | Path, offset: int) -> Path:
    """Cut the file at ``offset`` bytes (an interrupted transfer), in place."""
    path = Path(path)
    os.truncate(path, offset)
    return path


def copy_file(source: str | Path, dest: str | Path) -> Path:
    """A plain copy of ``source`` (the damage is then applied to the copy)."""
    shutil.copyfile(source, dest)
    return Path(dest)


def _rewrite(path: Path, order: list[HduSpan], data: bytes) -> Path:
    path.write_bytes(b"".join(data[s.header:s.end] for s in order))
    return path


def drop_hdu(path: str | Path, hdu: int | str) -> Path:
    """Remove one HDU (index or EXTNAME) from the file, byte for byte, in place."""
    path = Path(path)
    data, gone = path.read_bytes(), _span(path, hdu)
    return _rewrite(path, [s for s in hdu_spans(path) if s != gone], data)


def duplicate_hdu(path: str | Path, hdu: int | str, *, at: int | None = None) -> Path:
    """Insert a byte copy of one HDU at position ``at`` (default: right after it), in place."""
    path = Path(path)
    data, spans, twin = path.read_bytes(), hdu_spans(path), _span(path, hdu)
    position = spans.index(twin) + 1 if at is None else at
    return _rewrite(path, [*spans[:position], twin, *spans[position:]], data)


def reorder_hdus(path: str | Path, order: list[int]) -> Path:
    """Rewrite the HDUs in ``order`` (indices into the file's HDUs), in place."""
    path = Path(path)
    data, spans = path.read_bytes(), hdu_spans(path)
    return _rewrite(path, [spans[i] for i in order], data)


def gzip_copy(source: str | Path, dest: str | Path) -> Path:
    """The whole file gzipped (``RAW.fits.gz``, as some archives serve raws)."""
    with open(source, "rb") as fin, gzip.open(dest, "wb", compresslevel=1) as fout:
        shutil.copyfileobj(fin, fout, 1 << 22)
    return Path(dest)


def fpack_copy(source: str | Path, dest: str | Path, compression: str = "RICE_1") -> Path:
    """A tile-compressed copy (what ``fpack`` writes, as LATISS stores raws): every image
    extension becomes an astropy `CompImageHDU` (lossless for integers, one row per tile),
    headers kept, checksums written."""
    with fits.open(source) as hdul:
        out = fits.HDUList([fits.PrimaryHDU(header=hdul[0].header)])
        for hdu in hdul[1:]:
            data = np.asarray(hdu.data)
            out.append(fits.CompImageHDU(data, header=hdu.header, name=hdu.name,
                                         compression_type=compression,
                                         tile_shape=(1, data.shape[1])))
        out.writeto(dest, overwrite=True, checksum=True)
    return Path(dest)


def fifo(path: str | Path) -> Path:
    """A named pipe at ``path`` (opening it for reading would block forever)."""
    os.mkfifo(path)
    return Path(path)


def directory(path: str | Path) -> Path:
    """A directory named like a file (``raw.fits/``)."""
    Path(path).mkdir()
    return Path(path)


def dangling_symlink(path: str | Path, target: str | Path) -> Path:
    """A symbolic link at ``path`` to ``target``, which does not exist."""
    if Path(target).exists():
        raise FileExistsError(f"{target} exists: the link would not dangle")
    os.symlink(target, path)
    return Path(path)


def symlink_loop(path: str | Path) -> Path:
    """A symbolic link pointing at itself."""
    os.symlink(Path(path).name, path)
    return Path(path)
