"""Reducing without calibrations is said, once: ``atmospec isr`` and ``atmospec extract`` of a
raw frame with no products (none given, none valid in the repository) warn in one line naming
what is missing and what that means, instead of running silently (issue 21, item 3)."""

from __future__ import annotations

from pathlib import Path

from astropy.io import fits
from conftest import make_template_raw

from atmospec.calib.isr_inputs import CalibrationFiles, load_calibrations, missing_products
from atmospec.calib.registry import CalibrationRegistry
from atmospec.camera.description import load_camera
from atmospec.cli import main


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "not fully calibrated" in r.getMessage()]


def test_isr_without_products_warns_once(template_raw: Path, tmp_path: Path, caplog) -> None:
    """Two frames, no product: one warning, naming what is missing."""
    second = make_template_raw(tmp_path / "AT_C_20180920_000066.fits", seed=1)
    with fits.open(second, mode="update") as hdul:
        hdul[0].header["OBSID"] = "AT_C_20180920_000066"
        hdul[0].header["SEQNUM"] = 66
    status = main(["isr", str(template_raw), str(second), "--out", str(tmp_path / "out")])
    assert status == 0
    assert _warnings(caplog) == ["atmospec isr: no bias, dark, flat, ptc (none given "
                                 "(--calibs REPO or --bias ...)): the bias, dark, flat steps "
                                 "skipped and nominal gains used; the result is not fully "
                                 "calibrated"]
    caplog.clear()
    # Steps asked without bias, dark and flat: nothing is missing (nominal gains are said
    # only with a missing image product).
    status = main(["isr", str(template_raw), "--out", str(tmp_path / "out2"),
                   "--steps", "overscan,gain,assemble"])
    assert status == 0 and _warnings(caplog) == []


def test_isr_with_an_empty_repository_names_it(template_raw: Path, tmp_path: Path,
                                               caplog) -> None:
    repo = tmp_path / "repo"
    CalibrationRegistry(repo, create=True)
    status = main(["isr", str(template_raw), "--out", str(tmp_path / "out"), "--calibs",
                   str(repo)])
    assert status == 0
    assert _warnings(caplog) == [f"atmospec isr: no bias, dark, flat, ptc (none valid in {repo}): "
                              "the bias, dark, flat steps skipped and nominal gains used; the "
                              "result is not fully calibrated"]


def test_missing_products_follows_the_steps_asked() -> None:
    calibs = load_calibrations(CalibrationFiles(), load_camera("latiss"))
    assert missing_products(calibs) == ("bias", "dark", "flat", "ptc")
    assert missing_products(calibs, ("overscan", "assemble")) == ()
    assert missing_products(calibs, ("overscan", "bias", "gain")) == ("bias", "ptc")
    assert missing_products(calibs, ("overscan", "gain")) == ()
