"""What the table products share: reading with one-line errors, column and amplifier checks,
and their two file layouts (a FITS binary table with commented columns, or ECSV)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table

from atmospec.calib.products.integrity import check_product_file
from atmospec.errors import BadInputError, short_error
from atmospec.io import add_cards

Card = tuple[str, Any, str]


def read_table(path: str | Path, what: str, table_format: str | None = None) -> Table:
    """Read a table file; any failure is a one-line `BadInputError` naming it.

    Parameters
    ----------
    path : path
        The file.
    what : str
        The product, for messages (``PTC``).
    table_format : str, optional
        astropy's format name; ``"fits"`` refuses any other file as ``not a FITS file``;
        None lets astropy tell from the name and content.

    Raises
    ------
    BadInputError
        Not a non-empty regular file, a damaged FITS file (`check_product_file`:
        truncated, checksum mismatch), ``not a FITS file``, or ``not a <what> table (...)``
        with the first line of astropy's reason.
    """
    is_fits = check_product_file(path)
    if table_format == "fits" and not is_fits:
        raise BadInputError(path, "not a FITS file")
    try:
        table = Table.read(path, format=table_format)
    except Exception as exc:  # astropy raises many types for foreign files
        # Its first line only: the rest may be a table of every format it knows.
        raise BadInputError(path, f"not a {what} table ({short_error(exc)})") from None
    # The sums describe the file just read, not the table: a product built from this one
    # must not carry them on.
    for key in ("CHECKSUM", "DATASUM"):
        table.meta.pop(key, None)
    return table


def require_columns(table: Table, columns: Iterable[str], source: str, what: str) -> None:
    """Raise ``<what> lacks column(s) ...`` when any of ``columns`` is missing."""
    missing = set(columns) - set(table.colnames)
    if missing:
        raise BadInputError(source or None,
                            f"{what} lacks column(s) {', '.join(sorted(missing))}")


def require_numeric(table: Table, columns: Iterable[str], source: str, what: str) -> None:
    """Raise ``<what> column <name> holds <dtype>, not numbers`` for a column of ``columns``
    that is not real-valued (strings from a foreign writer would fail later, deep in ISR,
    as a processing error instead of bad input)."""
    for name in columns:
        dtype = table[name].dtype
        if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
            raise BadInputError(source or None,
                                f"{what} column {name} holds {dtype}, not numbers")


def amp_rows(table: Table, amp_names: Sequence[str], source: str, what: str) -> list[int]:
    """Row index of every amplifier (column ``AMP``), in ``amp_names`` order.

    Raises
    ------
    BadInputError
        ``<what> has no row for amplifier <name>``.
    """
    rows = {str(a).strip(): i for i, a in enumerate(table["AMP"])}
    for name in amp_names:
        if name not in rows:
            raise BadInputError(source or None, f"{what} has no row for amplifier {name}")
    return [rows[name] for name in amp_names]


def table_hdu(table: Table, extname: str, comments: Mapping[str, str],
              provenance: Sequence[Card] = ()) -> fits.BinTableHDU:
    """A FITS binary table of ``table``: meta keys of more than 8 characters as HIERARCH
    cards, each column's ``comments`` entry (cut to 40 characters) as its TTYPE comment,
    then the provenance cards."""
    out = table.copy(copy_data=False)
    # FITS keys over 8 characters need HIERARCH: set explicitly, so astropy does not warn.
    long_keys = {k: out.meta.pop(k) for k in list(out.meta) if len(k) > 8}
    hdu = fits.table_to_hdu(out)
    hdu.name = extname
    for key, value in long_keys.items():
        hdu.header[f"HIERARCH {key}"] = value
    # Units go in the column comments: FITS has no unit "electron" and astropy would warn.
    for i, name in enumerate(out.colnames, start=1):
        hdu.header.comments[f"TTYPE{i}"] = comments.get(name, "")[:40]
    add_cards(hdu.header, provenance)
    return hdu


def ecsv_text(table: Table, provenance: Sequence[Card] = ()) -> str:
    """ECSV text of ``table``, the provenance cards added to (a copy of) its metadata."""
    out = table.copy(copy_data=False) if provenance else table
    add_meta_provenance(out.meta, provenance)
    buf = io.StringIO()
    out.write(buf, format="ascii.ecsv")
    return buf.getvalue()


def add_meta_provenance(meta: MutableMapping[str, Any], cards: Sequence[Card]) -> None:
    """Put provenance cards in a table's metadata (HISTORY lines as one list)."""
    history = [str(v) for k, v, _ in cards if k == "HISTORY"]
    for key, value, _ in cards:
        if key != "HISTORY":
            meta[key] = value
    if history:
        meta["HISTORY"] = history
