"""The raw inputs of a calibration build: their header checks and what becomes of a bad one.

Every builder of ``atmospec calib`` (masters, PTC, EO figures) checks its raw inputs' headers
with `raw_info` before reading any pixel, and hands the bad ones to `handle_bad_inputs`:
without ``skip_bad`` the first is refused in one line naming it (and listing the others),
with it each is logged and left out. So a damaged file is named the same way by every
``atmospec calib`` command, and as ``atmospec isr`` and the night index name it
(`atmospec.fitsscan`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from atmospec.camera.translator import ObservationInfo, translate_header
from atmospec.errors import BadInputError, short_error
from atmospec.fitsscan import primary_header

log = logging.getLogger(__name__)

__all__ = ["frames_of_kind", "handle_bad_inputs", "raw_info"]


def raw_info(path: str | Path) -> ObservationInfo:
    """The translated primary header of one raw input, checked without reading pixels.

    Parameters
    ----------
    path : path
        A raw file (plain, gzip- or tile-compressed).

    Returns
    -------
    ObservationInfo

    Raises
    ------
    BadInputError
        Naming the file: missing, unreadable, empty, not FITS, a damaged or truncated
        primary header (`atmospec.fitsscan.primary_header`), a header the translator
        refuses.
    """
    path = Path(path)
    try:
        header = primary_header(path)
    except FileNotFoundError:
        raise BadInputError(path, "no such file") from None
    except IsADirectoryError:
        raise BadInputError(path, "is a directory, not a raw file") from None
    except OSError as exc:
        raise BadInputError(path, f"cannot read ({exc.strerror or short_error(exc)})"
                            ) from None
    return translate_header(header, filename=str(path))


def frames_of_kind(paths: Sequence[str | Path], kind: str
                   ) -> tuple[list[tuple[Path, ObservationInfo]], list[tuple[Path, str]]]:
    """Header checks of a builder's inputs: `raw_info` of each and its image type.

    Parameters
    ----------
    paths : sequence of path
        The raw inputs, in order.
    kind : str
        The image type they must have (``bias``, ``dark``, ``flat``).

    Returns
    -------
    usable : list of (pathlib.Path, ObservationInfo)
        The inputs whose header reads and says ``kind``, in input order.
    issues : list of (pathlib.Path, str)
        The others and their problems, for `handle_bad_inputs`.
    """
    usable: list[tuple[Path, ObservationInfo]] = []
    issues: list[tuple[Path, str]] = []
    for item in paths:
        path = Path(item)
        try:
            info = raw_info(path)
        except BadInputError as exc:
            issues.append((path, exc.problem))
            continue
        if info.image_type != kind:
            issues.append((path, f"image type {info.image_type}, expected {kind}"))
        else:
            usable.append((path, info))
    return usable, issues


def handle_bad_inputs(issues: Sequence[tuple[Path, str]], skip_bad: bool,
                      logger: logging.Logger | None = None) -> None:
    """Refuse the first bad input (listing the others), or log each one as skipped.

    Parameters
    ----------
    issues : sequence of (pathlib.Path, str)
        The bad inputs and their problems, in input order.
    skip_bad : bool
        Log (``skipping FILE: PROBLEM``, at WARNING) instead of raising.
    logger : logging.Logger, optional
        Where the skipped inputs are logged (default: this module's).

    Raises
    ------
    BadInputError
        Naming the first bad input, unless ``skip_bad``.
    """
    if not issues:
        return
    if not skip_bad:
        path, problem = issues[0]
        if len(issues) > 1:
            others = "; ".join(f"{p}: {why}" for p, why in issues[1:])
            problem = f"{problem} (also bad: {others})"
        raise BadInputError(path, problem)
    for path, problem in issues:
        (logger or log).warning("skipping %s: %s", path, problem)
