"""A damaged raw given to any ``atmospec calib`` builder is named the same way (one line,
exit 2; ``atmospec.calib.inputs``), and ``--skip-bad`` leaves it out of every one of them,
``calib eo`` included."""

from __future__ import annotations

import logging

import pytest
from astropy.io import fits
from astropy.table import Table
from conftest import make_template_raw

from atmospec.cli import main


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def _damaged(tmp_path, template_raw) -> dict[str, tuple]:
    data = template_raw.read_bytes()
    cut_header = tmp_path / "cut_header.fits"
    cut_header.write_bytes(data[:2000])
    empty = tmp_path / "empty.fits"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"\x00" * 5000)
    return {"cut_header": (cut_header, "truncated: the file ends inside the header of HDU 0"),
            "empty": (empty, "empty file"),
            "junk": (junk, "not a readable FITS file"),
            "missing": (tmp_path / "missing.fits", "no such file")}


@pytest.mark.parametrize("case", ["cut_header", "empty", "junk", "missing"])
def test_every_calib_builder_names_a_damaged_raw_alike(case, tmp_path, template_raw, capsys):
    bad, problem = _damaged(tmp_path, template_raw)[case]
    expected = f"atmospec: {bad}: {problem}"
    out = tmp_path / "out"
    commands = {
        "isr": ["isr", str(bad), "--out", str(out)],
        "bias": ["calib", "bias", str(bad), "--out", str(out / "bias.fits")],
        "dark": ["calib", "dark", str(bad), "--bias", "b.fits", "--out", str(out / "d.fits")],
        "ptc": ["calib", "ptc", str(bad), "--out", str(out / "ptc.fits")],
        "eo bias": ["calib", "eo", "--bias", str(bad), "--flat", str(bad), "--out", str(out)],
    }
    for name, argv in commands.items():
        assert main(argv) == 2, name
        assert _one_line(capsys).startswith(expected), name
    assert not out.exists() or not any(out.iterdir())


def test_calib_eo_skip_bad(tmp_path, template_raw, capsys, caplog):
    """``calib eo --skip-bad`` logs the damaged bias and measures the good one."""
    good = make_template_raw(tmp_path / "AT_O_20180920_000065.fits")
    with fits.open(good, mode="update") as hdul:
        hdul[0].header["IMGTYPE"] = "BIAS"
    bad, _ = _damaged(tmp_path, template_raw)["cut_header"]
    argv = ["calib", "eo", "--bias", str(bad), str(good), "--flat", str(template_raw),
            "--out", str(tmp_path / "eo")]
    assert main(argv) == 2
    err = _one_line(capsys)
    assert err.startswith(f"atmospec: {bad}: truncated") and "also bad" not in err
    with caplog.at_level(logging.WARNING, logger="atmospec.calib"):
        assert main([*argv, "--skip-bad"]) == 0
    logged = caplog.text
    assert f"skipping {bad}: truncated" in logged
    # The template frame is no flat: skipped too, so no CTI, and one bias measured.
    assert f"skipping {template_raw}: image type unknown, expected flat" in logged
    table = Table.read(tmp_path / "eo" / "eo_figures.ecsv")
    assert table.meta["N_BIAS"] == 1 and table.meta["N_FLAT"] == 0
    assert "wrote" in capsys.readouterr().out
