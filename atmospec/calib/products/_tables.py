"""What the table products share: reading with one-line errors, column and amplifier checks,
and their two file layouts (a FITS binary table with commented columns, or ECSV)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from astropy.io import fits
from astropy.table import Table

from atmospec.calib.products.integrity import check_fits_file, is_fits
from atmospec.errors import BadInputError
from atmospec.io import add_cards

Card = tuple[str, Any, str]


def read_table(path: str | Path, what: str, table_format: str | None = None) -> Table:
    """Read a table file; any failure is a `BadInputError` ``not a <what> table (...)``.

    A FITS file is first checked whole (`check_fits_file`: truncated, checksum mismatch).
    """
    if is_fits(path):
        check_fits_file(path)
    try:
        table = Table.read(path, format=table_format)
    except Exception as exc:  # astropy raises many types for foreign files
        raise BadInputError(path, f"not a {what} table ({exc})") from None
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
