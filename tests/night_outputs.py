"""Comparing the outputs of two night runs: the check that a run killed and resumed (or run
on another executor) produced exactly what the uninterrupted run did.

Shared by the night-runner tests (`tests/test_night_run.py`) and the reliability suite's
kill test (`tests/reliability/test_kill.py`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

#: The per-exposure outputs compared, relative to the repository.
OUTPUT_GLOBS = ("exposures/*/*_postisr.fits", "exposures/*/*_preview.fits",
                "exposures/*/*_sources.ecsv",
                "exposures/*/*_centroid.json", "exposures/*/*_spectrum.fits")

#: Header cards that differ between two runs of the same reduction (time, checksums).
VOLATILE_CARDS = frozenset({"ATMDATE", "CHECKSUM", "DATASUM", "HISTORY"})

#: The content hash in a registered product's stored name (``bias.2741b884e29c.fits``).
_STORED_HASH = re.compile(r"\.[0-9a-f]{12}(?=\.fits)")


def night_outputs(repo: Path) -> dict[str, Path]:
    """The per-exposure outputs of a repository, by file name."""
    return {p.name: p for g in OUTPUT_GLOBS for p in Path(repo).glob(g)}


def assert_same_outputs(repo_a: Path, repo_b: Path, *, rebuilt_calibrations: bool = False,
                        subset: bool = False) -> None:
    """The same output files in both repositories, equal plane by plane, card by card
    (leaving out `VOLATILE_CARDS`), column by column and, for JSON, value by value
    (leaving out the provenance).

    With ``rebuilt_calibrations`` (each run built its own calibration products, equal but
    written at another time), a card naming a registered product is compared without the
    content hash in the stored name. With ``subset``, ``repo_a`` reduced some of the
    exposures of ``repo_b``: its outputs are those of ``repo_b`` for them."""
    a, b = night_outputs(repo_a), night_outputs(repo_b)
    if subset:
        exposures = {name.rsplit("_", 1)[0] for name in a}
        b = {name: path for name, path in b.items() if name.rsplit("_", 1)[0] in exposures}
        assert a, f"{repo_a} holds no output"
    assert sorted(a) == sorted(b)
    for name, path in a.items():
        other = b[name]
        if name.endswith(".fits"):
            _assert_same_fits(path, other, name, rebuilt_calibrations)
        elif name.endswith(".ecsv"):
            ta, tb = Table.read(path), Table.read(other)
            assert ta.colnames == tb.colnames, name
            for col in ta.colnames:
                np.testing.assert_array_equal(ta[col], tb[col], err_msg=f"{name}:{col}")
        else:
            da, db = json.loads(path.read_text()), json.loads(other.read_text())
            for doc in (da, db):
                doc.pop("provenance", None)
            assert da == db, name


def _card_values(header: fits.Header, rebuilt_calibrations: bool) -> dict[str, object]:
    values = {k: header[k] for k in header if k not in VOLATILE_CARDS}
    if rebuilt_calibrations:
        values = {k: _STORED_HASH.sub("", v) if isinstance(v, str) else v
                  for k, v in values.items()}
    return values


def _assert_same_fits(path: Path, other: Path, name: str, rebuilt_calibrations: bool) -> None:
    with fits.open(path) as ha, fits.open(other) as hb:
        for x, y in zip(ha, hb, strict=True):
            if x.data is not None:
                np.testing.assert_array_equal(x.data, y.data, err_msg=name)
            assert _card_values(x.header, rebuilt_calibrations) == \
                _card_values(y.header, rebuilt_calibrations), name


def assert_same_calibrations(repo_a: Path, repo_b: Path) -> None:
    """The products built from the night (``REPO/calib/night/<day_obs>/*.fits``) hold the
    same pixels in both repositories."""
    a = {p.relative_to(repo_a): p for p in Path(repo_a).glob("calib/night/*/*.fits")}
    b = {p.relative_to(repo_b): p for p in Path(repo_b).glob("calib/night/*/*.fits")}
    assert sorted(a) == sorted(b)
    for rel, path in a.items():
        with fits.open(path) as ha, fits.open(b[rel]) as hb:
            for x, y in zip(ha, hb, strict=True):
                if x.data is not None:
                    np.testing.assert_array_equal(x.data, y.data, err_msg=str(rel))
