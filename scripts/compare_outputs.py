#!/usr/bin/env python
"""Compare two reductions of the same data, e.g. the demo night before and after a refactor.

    python scripts/compare_outputs.py BEFORE AFTER [--skip raw flat_pairs] [--rtol 0]

Every FITS plane (pixels and header cards), every table value (ECSV, Parquet, FITS
tables), every JSON number and string, and every row of the SQLite databases are compared;
the files present must be the same. What is allowed to differ between two runs of the same
code is left out:

- provenance: ``ATMVERS``, ``ATMDATE``, ``ATMIN<n>``, ``DATE``, ``CHECKSUM``, ``DATASUM``
  header cards, the ``HISTORY`` cards holding the configuration (``atmospec config: ...``),
  the ``provenance`` entries of tables and JSON documents, content hashes (``sha256``) and
  the hashes of task configurations and inputs (``config_hash``);
- timings: keys and columns named ``timings_s``, ``*_time_s``, ``duration_s``, ``wall_s``,
  ``started``, ``*_at``, ``mtime`` and the like, and the report's figure cache keys (input
  sizes and modification times in ``figures.json``);
- where things were: absolute paths are compared by file name, and the 12-hex-digit content
  hashes in registered products' names (``bias.1a2b3c4d5e6f.fits``) are replaced by ``SHA``
  (a product's hash covers its provenance cards);
- pictures and pages (``.png``, ``.html``): compared by presence only;
- damaged FITS files (the simulator writes a truncated and an empty one): compared byte by
  byte, their ``CHECKSUM`` and ``DATASUM`` cards left out.

Exit status 0 when the two trees hold the same results, 1 otherwise (each difference is
printed, at most ``--max-report`` of them), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sqlite3
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table

#: Header cards that record provenance, not results.
PROVENANCE_CARDS = re.compile(r"^(ATMVERS|ATMSTAGE|ATMDATE|ATMIN\d+|DATE|CHECKSUM|DATASUM)$")
#: Keys (JSON), columns (tables, SQLite) and meta entries that hold timings or provenance.
VOLATILE_KEYS = re.compile(
    r"^(provenance|timings?(_s)?|.*_time_s|duration_s|wall_s|.*_s_per_.*|started|finished|"
    r"registered|created|updated|.*_at|mtime|atmdate|date|sha256|config_hash)$",
    re.IGNORECASE)
#: Places in JSON documents that identify input files by size and modification time (the
#: report's figure cache), not results.
VOLATILE_PLACES = re.compile(r"figures\.json\.(.*\.inputs|_calibs\.postisr)$")
#: Content hashes in stored file names.
HASH = re.compile(r"\.[0-9a-f]{12}(?=[./]|$)")
#: Files compared by presence only.
PRESENCE_ONLY = {".png", ".html", ".lock"}


def normalise_name(relative: str) -> str:
    """A file's path relative to its tree, with content hashes replaced by ``SHA``."""
    return HASH.sub(".SHA", relative)


def normalise_string(value: str) -> str:
    """Absolute paths by their file name, content hashes by ``SHA``."""
    if value.startswith("/") and "\n" not in value:
        value = Path(value).name
    return HASH.sub(".SHA", value)


class Differences:
    """The differences found, printed as they come (up to a limit)."""

    def __init__(self, limit: int) -> None:
        self.count = 0
        self.limit = limit

    def add(self, where: str, what: str) -> None:
        """Record one difference."""
        self.count += 1
        if self.count <= self.limit:
            print(f"DIFF {where}: {what}")
        elif self.count == self.limit + 1:
            print("... (more differences not printed)")


def _equal_numbers(a: Any, b: Any, rtol: float) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        fa, fb = float(a), float(b)
        if math.isnan(fa) and math.isnan(fb):
            return True
        return fa == fb or (rtol > 0 and math.isclose(fa, fb, rel_tol=rtol, abs_tol=0.0))
    return a == b


def compare_values(a: Any, b: Any, where: str, diffs: Differences, rtol: float) -> None:
    """Recursive comparison of JSON-like values."""
    if VOLATILE_PLACES.search(where):
        return
    if isinstance(a, dict) and isinstance(b, dict):
        keys_a = {k for k in a if not VOLATILE_KEYS.match(str(k))}
        keys_b = {k for k in b if not VOLATILE_KEYS.match(str(k))}
        for k in sorted(keys_a ^ keys_b, key=str):
            diffs.add(where, f"key {k!r} only in {'before' if k in keys_a else 'after'}")
        for k in sorted(keys_a & keys_b, key=str):
            compare_values(a[k], b[k], f"{where}.{k}", diffs, rtol)
    elif isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            diffs.add(where, f"length {len(a)} != {len(b)}")
            return
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            compare_values(x, y, f"{where}[{i}]", diffs, rtol)
    elif isinstance(a, str) and isinstance(b, str):
        if normalise_string(a) != normalise_string(b):
            diffs.add(where, f"{a!r} != {b!r}")
    elif isinstance(a, int | float) and isinstance(b, int | float) and not (
            isinstance(a, bool) or isinstance(b, bool)):
        if not _equal_numbers(a, b, rtol):
            diffs.add(where, f"{a!r} != {b!r}")
    elif a != b:
        diffs.add(where, f"{a!r} != {b!r}")


def compare_arrays(a: np.ndarray, b: np.ndarray, where: str, diffs: Differences,
                   rtol: float) -> None:
    """Exact (or ``rtol``) equality of two arrays, NaN equal to NaN."""
    if a.shape != b.shape or a.dtype.kind != b.dtype.kind:
        diffs.add(where, f"shape/dtype {a.shape} {a.dtype} != {b.shape} {b.dtype}")
        return
    if a.dtype.kind in "fc":
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        if rtol > 0:
            same |= np.isclose(a, b, rtol=rtol, atol=0.0)
    elif a.dtype.kind in "OSU":
        same = np.array([normalise_string(str(x)) == normalise_string(str(y))
                         for x, y in zip(a.ravel(), b.ravel(), strict=True)]).reshape(a.shape)
    else:
        same = a == b
    if not np.all(same):
        n = int(np.size(same) - np.count_nonzero(same))
        first = np.argwhere(~np.asarray(same))[0]
        diffs.add(where, f"{n} of {a.size} values differ (first at {tuple(first)}: "
                         f"{a[tuple(first)]!r} != {b[tuple(first)]!r})")


def compare_tables(a: Table, b: Table, where: str, diffs: Differences, rtol: float) -> None:
    """Columns (not the volatile ones), values and meta of two tables."""
    cols_a = [c for c in a.colnames if not VOLATILE_KEYS.match(c)]
    cols_b = [c for c in b.colnames if not VOLATILE_KEYS.match(c)]
    if cols_a != cols_b:
        diffs.add(where, f"columns {cols_a} != {cols_b}")
        return
    if len(a) != len(b):
        diffs.add(where, f"{len(a)} rows != {len(b)}")
        return
    for c in cols_a:
        va = np.ma.filled(a[c], np.nan) if a[c].dtype.kind == "f" else np.asarray(a[c])
        vb = np.ma.filled(b[c], np.nan) if b[c].dtype.kind == "f" else np.asarray(b[c])
        compare_arrays(np.asarray(va), np.asarray(vb), f"{where}[{c}]", diffs, rtol)
    compare_values(_plain(dict(a.meta)), _plain(dict(b.meta)), f"{where}.meta", diffs, rtol)


def _plain(value: Any) -> Any:
    """Meta values as JSON-like data (numpy scalars, tuples, OrderedDicts)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _cards(header: fits.Header) -> list[tuple[str, Any]]:
    return [(c.keyword, c.value) for c in header.cards
            if not PROVENANCE_CARDS.match(c.keyword)
            and not (c.keyword == "HISTORY" and str(c.value).startswith("atmospec config:"))]


def compare_fits(a: Path, b: Path, where: str, diffs: Differences, rtol: float) -> None:
    """HDU by HDU: names, header cards (not the provenance ones) and data."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(a) as ha, fits.open(b) as hb:
            if [h.name for h in ha] != [h.name for h in hb]:
                diffs.add(where, f"HDUs {[h.name for h in ha]} != {[h.name for h in hb]}")
                return
            for i, (x, y) in enumerate(zip(ha, hb, strict=True)):
                here = f"{where}[{i}:{x.name}]"
                compare_values(_cards(x.header), _cards(y.header), f"{here}.header", diffs,
                               rtol)
                if isinstance(x, fits.BinTableHDU | fits.TableHDU):
                    compare_tables(Table(x.data), Table(y.data), here, diffs, rtol)
                elif x.data is not None or y.data is not None:
                    if x.data is None or y.data is None:
                        diffs.add(here, "data in one file only")
                    else:
                        compare_arrays(np.asarray(x.data), np.asarray(y.data), here, diffs,
                                       rtol)


def compare_sqlite(a: Path, b: Path, where: str, diffs: Differences, rtol: float) -> None:
    """Every table's rows, sorted, without the volatile columns."""
    def dump(path: Path) -> dict[str, list[list[Any]]]:
        out = {}
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            names = [r[0] for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
            for name in names:
                cursor = db.execute(f'SELECT * FROM "{name}"')
                cols = [d[0] for d in cursor.description]
                keep = [i for i, c in enumerate(cols) if not VOLATILE_KEYS.match(c)]
                rows = [[_json_or_value(r[i]) for i in keep] for r in cursor]
                out[name] = sorted(rows, key=lambda r: json.dumps(r, sort_keys=True,
                                                                  default=str))
        return out

    compare_values(dump(a), dump(b), where, diffs, rtol)


def _json_or_value(value: Any) -> Any:
    """A JSON text stored in a column, parsed (so volatile keys inside are skipped)."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _read_parquet(path: Path) -> Table:
    """A Parquet file as a table (through pyarrow: astropy's reader wants pandas)."""
    import pyarrow.parquet as pq

    data = pq.read_table(path)
    table = Table({name: data.column(name).to_numpy(zero_copy_only=False)
                   for name in data.column_names})
    meta = data.schema.metadata or {}
    table.meta = {k.decode(): v.decode(errors="replace") for k, v in meta.items()
                  if not k.startswith(b"table_meta") and k != b"ARROW:schema"}
    return table


def _without_checksums(data: bytes) -> bytes:
    """The bytes of a FITS file with its ``CHECKSUM`` and ``DATASUM`` cards blanked (80-byte
    cards: they hold the write time)."""
    cards = [data[i:i + 80] for i in range(0, len(data), 80)]
    return b"".join(b" " * len(c) if c.startswith((b"CHECKSUM=", b"DATASUM =")) else c
                    for c in cards)


def compare_file(a: Path, b: Path, where: str, diffs: Differences, rtol: float) -> None:
    """Dispatch on the file type."""
    name = a.name.lower()
    if name.endswith((".fits", ".fits.gz", ".fits.fz", ".fz")):
        try:
            compare_fits(a, b, where, diffs, rtol)
        except (OSError, TypeError, ValueError):
            # A damaged file (the simulator writes truncated and empty ones on purpose):
            # the same damage is the same bytes.
            if _without_checksums(a.read_bytes()) != _without_checksums(b.read_bytes()):
                diffs.add(where, "unreadable FITS files, and not the same bytes")
    elif name.endswith(".ecsv"):
        compare_tables(Table.read(a, format="ascii.ecsv"), Table.read(b, format="ascii.ecsv"),
                       where, diffs, rtol)
    elif name.endswith(".parquet"):
        compare_tables(_read_parquet(a), _read_parquet(b), where, diffs, rtol)
    elif name.endswith(".json"):
        compare_values(json.loads(a.read_text()), json.loads(b.read_text()), where, diffs,
                       rtol)
    elif name.endswith((".sqlite3", ".sqlite", ".db")):
        compare_sqlite(a, b, where, diffs, rtol)
    elif a.suffix.lower() in PRESENCE_ONLY:
        return
    elif a.read_bytes() != b.read_bytes():
        diffs.add(where, "contents differ")


def tree(root: Path, skip: set[str]) -> dict[str, Path]:
    """Files below ``root`` by normalised relative name (SQLite side files left out)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or rel.parts[0] in skip:
            continue
        if path.name.endswith(("-wal", "-shm", "-journal")):
            continue
        out[normalise_name(rel.as_posix())] = path
    return out


def walk(before: Path, after: Path, skip: set[str]) -> Iterator[tuple[str, Path | None,
                                                                      Path | None]]:
    """``(name, before file, after file)`` for every file of either tree."""
    a, b = tree(before, skip), tree(after, skip)
    for name in sorted(set(a) | set(b)):
        yield name, a.get(name), b.get(name)


def main(argv: list[str] | None = None) -> int:
    """Compare two trees; exit status 0 when their results are the same."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--skip", nargs="*", default=[],
                        help="top-level folders left out (e.g. raw: the inputs)")
    parser.add_argument("--rtol", type=float, default=0.0,
                        help="relative tolerance on numbers (default 0: identical)")
    parser.add_argument("--max-report", type=int, default=50)
    args = parser.parse_args(argv)
    for root in (args.before, args.after):
        if not root.is_dir():
            print(f"compare_outputs: {root}: no such directory", file=sys.stderr)
            return 2
    diffs = Differences(args.max_report)
    n = 0
    for name, a, b in walk(args.before, args.after, set(args.skip)):
        if a is None or b is None:
            diffs.add(name, f"only in {'after' if a is None else 'before'}")
            continue
        n += 1
        try:
            compare_file(a, b, name, diffs, args.rtol)
        except Exception as exc:  # an unreadable file is a difference, not a crash
            diffs.add(name, f"cannot compare ({type(exc).__name__}: {exc})")
    print(f"{n} files compared, {diffs.count} differences")
    return 1 if diffs.count else 0


if __name__ == "__main__":
    sys.exit(main())
