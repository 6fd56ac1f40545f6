"""No value read from a file decides where we write (issue 16, item 2), and Python warnings
never flood stderr (item 11): header-derived names are confined to the output folder, and a
command's warnings are counted and logged once each."""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import pytest
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st

from atmospec.cli import main
from atmospec.layout import EXPOSURE_FILES, exposure_figure_dir, exposure_file, safe_component
from atmospec.warnings_log import MAX_DISTINCT, collect_warnings

pytestmark = pytest.mark.reliability


def _tree(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("obs_id", ["../../etc/passwd", "/etc/passwd", "a/b", "..",
                                    ".hidden", "-rf", "", "AT_O_2025\x00", "AT_O_é",
                                    "x" * 200])
def test_issue16_item2_header_obsid_cannot_choose_the_output_path(tmp_path, capsys, obs_id,
                                                                   template_raw):
    raw = tmp_path / "in" / "raw.fits"
    raw.parent.mkdir()
    shutil.copyfile(template_raw, raw)
    with fits.open(raw, mode="update") as hdul:
        # astropy refuses NUL and non-ASCII values: write them as the card bytes would be.
        hdul[0].header["OBSID"] = obs_id.encode("ascii", "replace").decode().replace(
            "\x00", "?")
    before = _tree(tmp_path)
    out = tmp_path / "deep" / "out"
    status = main(["isr", str(raw), "--out", str(out), "--steps", "overscan,gain,assemble"])
    _, err = capsys.readouterr()
    assert status == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "raw.fits" in lines[0] and "OBSID" in lines[0], err
    assert "Traceback" not in err
    assert _tree(tmp_path) - before <= {Path("deep"), Path("deep/out")}


@given(st.text(max_size=150))
@settings(max_examples=300, deadline=None)
def test_safe_names_stay_inside_the_directory(text):
    directory = Path("/repo/exposures/20250301")
    try:
        name = safe_component(text, "OBSID")
    except ValueError as exc:
        assert "OBSID" in str(exc)
        return
    assert name == text and "/" not in name and "\\" not in name and ".." not in name
    for role in EXPOSURE_FILES:
        path = exposure_file(directory, name, role)
        assert path.parent == directory
        assert path.resolve().parent == directory.resolve()
    assert exposure_figure_dir(directory, name).parent == directory / "exposures"


@pytest.mark.parametrize("good", ["AT_O_20250301_000012", "AT_C_20180920_000065",
                                  "MC_O_20240101_000001", "CC_O_20220101_000001", "a.b+c-d"])
def test_real_obsids_are_safe(good):
    assert safe_component(good) == good


def test_warnings_are_counted_not_flooded(caplog):
    with caplog.at_level(logging.INFO, logger="atmospec.warnings"), \
            collect_warnings() as tally:
        for _ in range(100_000):
            warnings.warn("Card 'NAXIS1' is not FITS standard", UserWarning, stacklevel=1)
        for i in range(MAX_DISTINCT + 10):
            warnings.warn(f"distinct {i}", RuntimeWarning, stacklevel=1)
    assert tally.total == 100_000 + MAX_DISTINCT + 10
    assert tally.counts[("UserWarning", "Card 'NAXIS1' is not FITS standard")] == 100_000
    assert len(caplog.records) == MAX_DISTINCT + 1  # the kept ones and one "more" line
    assert "(×100000)" in caplog.records[0].getMessage()


def test_cli_failure_is_one_line_even_for_a_multi_line_message(tmp_path, capsys):
    # A pipeline file whose YAML error message spans several lines.
    bad = tmp_path / "pipe.yaml"
    bad.write_text("tasks: [\n  - : :\n")
    status = main(["night", str(tmp_path), "--repo", str(tmp_path / "repo"),
                   "--pipeline", str(bad)])
    _, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert status == 2 and len(lines) == 1 and "pipe.yaml" in lines[0], err


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_unusable_output_folder_is_bad_input(tmp_path, capsys, template_raw, where):
    # A regular file where the output folder should be (permissions cannot be tested
    # reliably: CI runs as root, which writes anywhere).
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    out = blocker if where == "file" else blocker / "out"
    status = main(["isr", str(template_raw), "--out", str(out), "--steps",
                   "overscan,gain,assemble"])
    _, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert status == 2 and len(lines) == 1 and "blocker" in lines[0], err
    assert "Traceback" not in err
    assert blocker.read_text() == "not a folder"
