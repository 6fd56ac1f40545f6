"""Integrity of a product file: a regular file, complete, and its FITS checksums matching.

Every product read starts with `check_product_file`: the path is examined with ``stat``
before anything opens it (a FIFO would block the reader forever; a directory or an empty
file gives astropy's many-line error), then a FITS file is checked whole by
`check_fits_file`.

Every FITS file atmospec writes carries ``CHECKSUM`` and ``DATASUM`` cards in each HDU
(`atmospec.io.write_hdul_atomic`). `check_fits_file` refuses a file whose sums do not match,
and a truncated or damaged one, with or without sums: products written before checksums
existed have none, so the structure is checked by the bounded header walk raws get too
(`atmospec.fitsscan.scan_fits`: every header sane, every data unit inside the file).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from astropy.io import fits

from atmospec.errors import BadInputError, short_error
from atmospec.fitsscan import check_hdu_sums, scan_fits
from atmospec.io import special_file_kind

__all__ = ["check_fits_file", "check_product_file", "check_regular_file", "is_fits"]

#: First bytes of a plain FITS file (a gzip-compressed one starts with ``1f 8b``).
_FITS_MAGIC = b"SIMPLE"
_GZIP_MAGIC = b"\x1f\x8b"

#: What a path that is not a regular file is, by its ``stat`` mode, for the message.
def check_regular_file(path: str | Path) -> os.stat_result:
    """Refuse a path that is not a non-empty regular file, without opening it.

    Opening comes after: a FIFO would block the reader until a writer appears (forever), a
    directory or an empty file make astropy answer with a table of every format it knows.

    Parameters
    ----------
    path : path
        The product file (a symbolic link is followed).

    Returns
    -------
    os.stat_result
        Its ``stat``, for callers that key a cache on size and modification time.

    Raises
    ------
    BadInputError
        ``no such file`` (a dangling link too), ``cannot stat (...)``, ``is a directory``,
        ``is a FIFO (named pipe)``, ... ``not a regular file``, or ``empty file``.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise BadInputError(path, "no such file") from None
    except OSError as exc:
        raise BadInputError(path, f"cannot stat ({short_error(exc)})") from None
    kind = special_file_kind(st.st_mode)
    if kind is not None:
        raise BadInputError(path, kind if kind == "not a regular file"
                            else f"is {kind}, not a regular file")
    if st.st_size == 0:
        raise BadInputError(path, "empty file")
    return st


def check_product_file(path: str | Path) -> bool:
    """The check every product read starts with: `check_regular_file`, then, for a FITS
    file, `check_fits_file`.

    Returns
    -------
    bool
        Whether the file is FITS (plain or gzip-compressed); other files (ECSV) are only
        known to be regular and non-empty.

    Raises
    ------
    BadInputError
        As `check_regular_file` and `check_fits_file`.
    """
    check_regular_file(path)
    if not is_fits(path):
        return False
    check_fits_file(path)
    return True


def is_fits(path: str | Path) -> bool:
    """Whether ``path`` starts like a FITS file (plain or gzip-compressed).

    It opens ``path``: call it on a path `check_regular_file` accepted (a FIFO blocks).
    """
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
        One line naming the file: missing, not a regular file, empty, not readable FITS,
        ``truncated: N bytes, the headers need M``, or ``checksum mismatch in HDU i
        (NAME)``.
    """
    path = Path(path)
    check_regular_file(path)
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
                check_hdu_sums(path, hdul[i], i)
    except BadInputError:
        raise
    except Exception as exc:  # astropy raises many types for damaged files
        raise BadInputError(path, f"not a readable FITS file ({short_error(exc)})") from None

