"""Source catalogues on disk: ECSV with units, image-quality summary and provenance.

`write_catalog` writes atomically (temporary file, then rename) through `atmospec.io`; the
table's ``meta`` keeps ``OBSID``, the ``image_quality`` summary and the aperture radii, and
gains a ``provenance`` mapping (software version, stage, write time, inputs and the
configuration as a mapping). Callers choose file names; the night runner uses
``<OBSID>_sources.ecsv`` (`atmospec.layout.exposure_file`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from astropy.table import Table

from atmospec.errors import BadInputError
from atmospec.imaging.characterize import CharacterizeResult
from atmospec.io import atomic_path, provenance_cards

log = logging.getLogger(__name__)

__all__ = ["catalog_table", "read_catalog", "write_catalog"]

#: Prefix of the HISTORY cards in which `atmospec.io.provenance_cards` stores the config.
_CONFIG_PREFIX = "atmospec config: "


def _provenance_meta(cards: Sequence[tuple[str, Any, str]]) -> dict[str, Any]:
    """Turn provenance header cards into a YAML-friendly mapping.

    Keyed cards become entries; the configuration, which `provenance_cards` splits over
    HISTORY cards, is joined and decoded back into a mapping under ``config``.
    """
    meta: dict[str, Any] = {}
    config_text = ""
    history = []
    for key, value, _comment in cards:
        if key == "HISTORY":
            text = str(value)
            if text.startswith(_CONFIG_PREFIX):
                config_text += text[len(_CONFIG_PREFIX):]
            else:
                history.append(text)
        else:
            meta[key] = value
    if config_text:
        try:
            meta["config"] = json.loads(config_text)
        except json.JSONDecodeError:
            meta["config"] = config_text
    if history:
        meta["history"] = history
    return meta


def catalog_table(
    result_or_table: CharacterizeResult | Table,
    provenance: Sequence[tuple[str, Any, str]] | None = None,
    inputs: Sequence[str | Path] = (),
) -> Table:
    """The table `write_catalog` writes: the catalogue with its provenance in ``meta``.

    Parameters
    ----------
    result_or_table : CharacterizeResult or astropy.table.Table
        What `atmospec.imaging.characterize.characterize` returned, or its catalogue.
    provenance : sequence of (key, value, comment), optional
        Cards from `atmospec.io.provenance_cards`; by default built here for stage
        ``characterize`` with ``inputs`` and, for a result, its configuration.
    inputs : sequence of path
        Input files recorded when ``provenance`` is not given.

    Returns
    -------
    astropy.table.Table
        A shallow copy (the columns are shared) with ``meta["provenance"]`` set.
    """
    if isinstance(result_or_table, CharacterizeResult):
        table = result_or_table.catalog
        config = result_or_table.config
    else:
        table = result_or_table
        config = None
    if provenance is None:
        provenance = provenance_cards("characterize", inputs, config)
    out = table.copy(copy_data=False)
    out.meta = dict(table.meta)
    out.meta["provenance"] = _provenance_meta(provenance)
    return out


def write_catalog(
    result_or_table: CharacterizeResult | Table,
    path: str | Path,
    provenance: Sequence[tuple[str, Any, str]] | None = None,
    inputs: Sequence[str | Path] = (),
) -> Path:
    """Write a source catalogue as ECSV, atomically, with provenance in its metadata.

    Parameters
    ----------
    result_or_table : CharacterizeResult or astropy.table.Table
        What `atmospec.imaging.characterize.characterize` returned, or its catalogue.
    path : path
        Output file (parent directories are created).
    provenance : sequence of (key, value, comment), optional
        Cards from `atmospec.io.provenance_cards`; by default built here for stage
        ``characterize`` with ``inputs`` and, for a result, its configuration.
    inputs : sequence of path
        Input files recorded when ``provenance`` is not given.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    out = catalog_table(result_or_table, provenance, inputs)
    path = Path(path)
    with atomic_path(path) as tmp:
        out.write(tmp, format="ascii.ecsv", overwrite=True)
    log.info("wrote %s (%d sources)", path, len(out))
    return path


def read_catalog(path: str | Path) -> Table:
    """Read a catalogue written by `write_catalog` (units and metadata restored).

    Raises
    ------
    BadInputError
        If the file is missing or not an ECSV table.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "no such file")
    try:
        return Table.read(path, format="ascii.ecsv")
    except Exception as exc:  # astropy raises many types for damaged files
        raise BadInputError(path, f"not a readable ECSV catalogue ({exc})") from None
