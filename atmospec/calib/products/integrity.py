"""Integrity of a product file: complete, and its FITS checksums matching.

Every FITS file atmospec writes carries ``CHECKSUM`` and ``DATASUM`` cards in each HDU
(`atmospec.io.write_hdul_atomic`). `check_fits_file` refuses a file whose sums do not match,
and a truncated or damaged one, with or without sums: products written before checksums
existed have none, so the structure is checked by the bounded header walk raws get too
(`atmospec.fitsscan.scan_fits`: every header sane, every data unit inside the file).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from astropy.io import fits

from atmospec.errors import BadInputError, short_error
from atmospec.fitsscan import scan_fits

__all__ = ["check_fits_file", "is_fits"]

#: First bytes of a plain FITS file (a gzip-compressed one starts with ``1f 8b``).
_FITS_MAGIC = b"SIMPLE"
_GZIP_MAGIC = b"\x1f\x8b"


def is_fits(path: str | Path) -> bool:
    """Whether ``path`` starts like a FITS file (plain or gzip-compressed)."""
    try:
        with open(path, "rb") as stream:
            magic = stream.read(8)
    except OSError:
        return False
    return magic.startswith((_FITS_MAGIC, _GZIP_MAGIC))


def check_fits_file(path: str | Path) -> None:
    """Refuse a FITS file that is truncated or whose checksums do not match.

    An HDU with a ``CHECKSUM`` card is checked over header and data; one with only
    ``DATASUM``, over its data; one with neither (a product written before atmospec wrote
    checksums) only for completeness.

    Parameters
    ----------
    path : path
        The file.

    Raises
    ------
    BadInputError
        One line naming the file: missing, empty, not readable FITS, ``truncated: N bytes,
        the headers need M``, or ``checksum mismatch in HDU i (NAME)``.
    """
    path = Path(path)
    try:
        # The bounded header walk: complete, sane headers and every data unit inside the
        # file (plain or gzip), before astropy reads anything.
        scan_fits(path)
    except FileNotFoundError:
        raise BadInputError(path, "no such file") from None
    except OSError as exc:
        raise BadInputError(path, f"cannot read ({short_error(exc)})") from None
    try:
        # The walk refused what astropy would warn about; what it may still say is noise
        # beside the one-line verdict below.
        with warnings.catch_warnings(), \
                fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
            warnings.simplefilter("ignore")
            for i in range(len(hdul)):
                _check_sums(path, hdul[i], i)
    except BadInputError:
        raise
    except Exception as exc:  # astropy raises many types for damaged files
        raise BadInputError(path, f"not a readable FITS file ({short_error(exc)})") from None


def _check_sums(path: Path, hdu: fits.PrimaryHDU | fits.hdu.base.ExtensionHDU,
                index: int) -> None:
    """Refuse an HDU whose ``CHECKSUM`` (else ``DATASUM``) does not match its bytes."""
    header = hdu.header
    if not hasattr(hdu, "verify_checksum"):
        # astropy's _CorruptedHDU: a header it could not make sense of.
        raise BadInputError(path, f"HDU {index} is corrupt")
    # CHECKSUM covers the header and the data (it includes the data sum): one pass over
    # the data suffices; DATASUM alone is checked only when there is no CHECKSUM.
    if "CHECKSUM" in header:
        valid, what = hdu.verify_checksum(), "header or data"
    elif "DATASUM" in header:
        valid, what = hdu.verify_datasum(), "data"
    else:
        return
    if valid == 0:
        name = hdu.name or "PRIMARY"
        raise BadInputError(path, f"checksum mismatch in HDU {index} ({name}): its {what} "
                                  "changed since it was written")
