"""File-writing helpers shared by every stage: atomic writes and provenance keys."""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from astropy.io import fits

import atmospec


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    A reader never sees a half-written file and a crash leaves nothing behind: the
    temporary file is removed if the block raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates the file 0600; outputs are shared, so give them the usual umask mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_hdul_atomic(hdul: fits.HDUList, path: str | Path) -> Path:
    """Write an HDU list to ``path`` atomically (temporary file + rename), with checksums.

    Every HDU gets the FITS ``CHECKSUM`` and ``DATASUM`` cards (``hdul``'s headers are
    updated in place), so that a reader can tell a damaged or truncated file from a good
    one (`atmospec.calib.products.integrity.check_fits_file` refuses calibration products
    whose sums do not match). Cost: ~0.35 s more for a 4k×4k post-ISR exposure (195 MB:
    0.44 s without, 0.78 s with, medians of 10 writes).
    """
    with atomic_path(path) as tmp:
        hdul.writeto(tmp, overwrite=True, checksum=True)
    return Path(path)


def write_text_atomic(text: str, path: str | Path) -> Path:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def provenance_cards(
    stage: str, inputs: Sequence[str | Path] = (), config: Mapping[str, Any] | Any = None
) -> list[tuple[str, Any, str]]:
    """Header cards recording what produced a file.

    Parameters
    ----------
    stage : str
        Producing stage, e.g. ``isr``.
    inputs : sequence of path
        Input files (their base names are recorded, as printable ASCII: `_ascii_name`).
    config : mapping or dataclass, optional
        Configuration used; stored as compact JSON split over ``HISTORY`` cards.

    Returns
    -------
    list of (key, value, comment)
        Cards to append to a header (keys starting ``ATM``; ``HISTORY`` for the config).
    """
    cards: list[tuple[str, Any, str]] = [
        ("ATMVERS", atmospec.__version__, "atmospec version"),
        ("ATMSTAGE", stage, "atmospec stage that wrote this file"),
        ("ATMDATE", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"), "UTC write time"),
    ]
    for i, p in enumerate(inputs):
        cards.append((f"ATMIN{i}", _ascii_name(Path(p).name), "input file"))
    if config is not None:
        text = json.dumps(to_jsonable(config), separators=(",", ":"), sort_keys=True)
        cards.extend(("HISTORY", f"atmospec config: {text[i:i + 50]}", "") for i in
                     range(0, len(text), 50))
    return cards


#: Characters a FITS string value may hold as they are: printable ASCII, but the escape '%'.
_CARD_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def _ascii_name(name: str, limit: int = 68) -> str:
    """A file name as a FITS card can hold it: printable ASCII, at most ``limit`` characters
    (one card).

    Other characters, and '%', are percent-encoded as UTF-8 (RFC 3986), so a name such as
    ``AT_é.fits`` is stored as ``AT_%C3%A9.fits`` and `urllib.parse.unquote` gives it back
    (a name's bytes that are not UTF-8 are encoded as they are); a printable-ASCII name
    without '%' is stored unchanged. A cut never splits a character's escape.
    """
    out = ""
    for char in name:
        piece = quote(char, safe=_CARD_SAFE, errors="surrogateescape")
        if len(out) + len(piece) > limit:
            break
        out += piece
    return out


def to_jsonable(obj: Any) -> Any:
    """A JSON-serialisable copy: dataclasses and mappings become dicts, sequences and numpy
    arrays lists, numpy scalars Python numbers; anything else its ``str``."""
    from dataclasses import asdict, is_dataclass

    import numpy as np

    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    return str(obj)


def add_cards(header: fits.Header, cards: Sequence[tuple[str, Any, str]]) -> None:
    """Append cards to ``header`` (HISTORY cards are added, others set)."""
    for key, value, comment in cards:
        if key == "HISTORY":
            header.add_history(value)
        else:
            header[key] = (value, comment)


#: Name of a temporary file `atomic_path` makes beside ``<name>``: ``tempfile.mkstemp`` with
#: prefix ``.<name>.`` and suffix ``.tmp`` adds 8 random characters (letters, digits, ``_``).
_ATOMIC_TEMPORARY = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")


def is_atomic_temporary(path: str | Path) -> bool:
    """Whether ``path`` is named as the temporary files of `atomic_path`
    (``.<name>.<8 random characters>.tmp``)."""
    return _ATOMIC_TEMPORARY.fullmatch(Path(path).name) is not None


def remove_stale_temporaries(root: str | Path, older_than_s: float = 60.0) -> list[Path]:
    """Remove the temporary files that writers killed inside `atomic_path` left under ``root``.

    A process killed while writing (SIGKILL, power loss) cannot remove its temporary file:
    a killed night leaves post-ISR images of ~200 MB behind, hidden by their leading dot.
    Only regular files named as `atomic_path` names them (`is_atomic_temporary`) and not
    modified for ``older_than_s`` seconds are removed: a live writer touches its file
    continuously. The caller must know no other process is writing there (the night runner
    holds the repository's lock).

    Parameters
    ----------
    root : path
        Directory searched recursively (symbolic links are not followed).
    older_than_s : float
        Minimum age of a temporary file's last modification, s.

    Returns
    -------
    list of pathlib.Path
        The files removed.
    """
    cutoff = time.time() - older_than_s
    removed: list[Path] = []
    for folder, _, names in os.walk(root):
        for name in names:
            if _ATOMIC_TEMPORARY.fullmatch(name) is None:
                continue
            path = Path(folder) / name
            try:
                st = path.lstat()
                if not stat.S_ISREG(st.st_mode) or st.st_mtime > cutoff:
                    continue
                path.unlink()
            except OSError:  # gone meanwhile, or not ours to remove
                continue
            removed.append(path)
    return removed


def special_file_kind(mode: int) -> str | None:
    """What a file that is not a regular file is (``a directory``, ``a FIFO (named pipe)``,
    ``a socket``, ``a device``, ``not a regular file``), from its ``stat`` mode; None for a
    regular file.

    Every reader looks before it opens: a FIFO would block it until a writer appears.
    """
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device")):
        if test(mode):
            return kind
    return None if stat.S_ISREG(mode) else "not a regular file"
