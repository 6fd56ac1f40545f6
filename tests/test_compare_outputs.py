"""scripts/compare_outputs.py: two reductions with the same results compare equal whatever
their provenance, timings and locations; a changed pixel, table value or JSON number does
not."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_outputs.py"


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("compare_outputs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reduction(root: Path, *, stamp: str, pixel: float = 1.0, fwhm: float = 4.2,
               pwv: float = 3.1) -> Path:
    """A tiny repository: an image, a table, a JSON record, a database, a picture."""
    sha = {"a": "0123456789ab", "b": "ba9876543210"}[stamp]
    out = root / stamp
    (out / "calib").mkdir(parents=True)
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    image[1, 2] = pixel
    primary = fits.PrimaryHDU()
    primary.header["OBSID"] = "AT_O_20261123_000013"
    primary.header["ATMDATE"] = f"2026-12-0{1 if stamp == 'a' else 2}T00:00:00"
    primary.header["ATMIN0"] = f"bias.{sha}.fits"
    primary.header["HISTORY"] = f"atmospec config: {{\"workdir\":\"/tmp/{stamp}\"}}"
    fits.HDUList([primary, fits.ImageHDU(image, name="IMAGE")]).writeto(
        out / "calib" / f"bias.{sha}.fits")
    Table({"obs_id": ["x"], "fwhm_px": [fwhm], "duration_s": [1.0 if stamp == "a" else 9.0]},
          meta={"provenance": {"ATMDATE": stamp}}).write(out / "summary.ecsv")
    (out / "fit.json").write_text(json.dumps({
        "values": {"pwv_mm": pwv}, "fit_time_s": 0.1 if stamp == "a" else 0.7,
        "info": {"source": f"/tmp/{stamp}/repo/spectrum.fits"}}))
    with sqlite3.connect(out / "index.sqlite3") as db:
        db.execute("CREATE TABLE tasks (obs_id TEXT, status TEXT, started TEXT, sha256 TEXT)")
        db.execute("INSERT INTO tasks VALUES ('x', 'done', ?, ?)", (stamp, stamp * 8))
    (out / "plot.png").write_bytes(b"\x89PNG" + stamp.encode())
    return out


def test_same_results_compare_equal(compare, tmp_path, capsys):
    a, b = _reduction(tmp_path, stamp="a"), _reduction(tmp_path, stamp="b")
    assert compare.main([str(a), str(b)]) == 0
    assert "5 files compared, 0 differences" in capsys.readouterr().out


@pytest.mark.parametrize("change", [{"pixel": 1.5}, {"fwhm": 4.2000001}, {"pwv": 3.0}])
def test_a_changed_result_is_found(compare, tmp_path, capsys, change):
    a, b = _reduction(tmp_path, stamp="a"), _reduction(tmp_path, stamp="b", **change)
    assert compare.main([str(a), str(b)]) == 1
    assert "1 differences" in capsys.readouterr().out


def test_a_missing_file_is_found(compare, tmp_path, capsys):
    a, b = _reduction(tmp_path, stamp="a"), _reduction(tmp_path, stamp="b")
    (b / "fit.json").unlink()
    assert compare.main([str(a), str(b)]) == 1
    assert "fit.json: only in before" in capsys.readouterr().out
