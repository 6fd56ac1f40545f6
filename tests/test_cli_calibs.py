"""ISR with products chosen from a calibration repository (calib register, isr --calibs)."""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from atmospec.calib.products.detector import detector_cards
from atmospec.camera.description import load_camera
from atmospec.cli import main
from atmospec.exposure import Exposure
from atmospec.io import add_cards


def _bias(path, level, calibdate):
    hdr = fits.Header({"OBSTYPE": "bias", "INSTRUME": "LATISS", "CALIBDATE": calibdate})
    return Exposure.from_image(np.full((4000, 4072), level, np.float32), hdr).write(path)


def test_isr_picks_bias_by_date(tmp_path, template_raw, capsys):
    repo = tmp_path / "repo"
    old = _bias(tmp_path / "bias_old.fits", 5.0, "2018-01-01")
    new = _bias(tmp_path / "bias_new.fits", 50.0, "2019-01-01")  # after the exposure
    for product in (old, new):
        assert main(["calib", "register", str(product), "--repo", str(repo)]) == 0
    assert main(["calib", "list", "--repo", str(repo), "--kind", "bias"]) == 0
    listing = capsys.readouterr().out
    assert listing.count("bias") >= 2

    steps = "overscan,gain,assemble,bias"
    # Lossless: the difference of two quantised images is the bias only to a step.
    assert main(["isr", str(template_raw), "--out", str(tmp_path / "a"), "--steps",
                 "overscan,gain,assemble", "--lossless"]) == 0
    assert main(["isr", str(template_raw), "--out", str(tmp_path / "b"), "--steps", steps,
                 "--calibs", str(repo), "--lossless"]) == 0
    plain = Exposure.read(tmp_path / "a" / "AT_C_20180920_000065_postisr.fits")
    with_bias = Exposure.read(tmp_path / "b" / "AT_C_20180920_000065_postisr.fits")
    # The exposure is of 2018-09-21: the 2018-01-01 bias (5 e-) applies, not the 2019 one.
    assert np.median(plain.image - with_bias.image) == np.float32(5.0)
    assert "bias" in with_bias.metadata["HIERARCH ATM CALIB BIAS"]


def test_missing_product_in_repo_is_reported(tmp_path, template_raw, capsys):
    repo = tmp_path / "repo"
    _bias(tmp_path / "b.fits", 1.0, "2018-01-01")
    assert main(["calib", "register", str(tmp_path / "b.fits"), "--repo", str(repo)]) == 0
    capsys.readouterr()
    status = main(["isr", str(template_raw), "--out", str(tmp_path / "o"), "--steps",
                   "overscan,gain,flat", "--calibs", str(repo)])
    err = capsys.readouterr().err
    assert status == 2
    assert "AT_C_20180920_000065" in err or "raw" in err
    assert "flat" in err and len(err.strip().splitlines()) == 1


def test_unknown_repo(tmp_path, template_raw, capsys):
    status = main(["isr", str(template_raw), "--out", str(tmp_path / "o"), "--calibs",
                   str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert status == 2 and "nowhere" in err and len(err.strip().splitlines()) == 1


def test_calib_usage_errors(tmp_path, capsys):
    assert main(["calib", "defects", "--out", str(tmp_path / "d.ecsv")]) == 2
    assert "give --dark and/or --flat" in capsys.readouterr().err
    assert main(["simulate", "flat-pairs", "--out", str(tmp_path), "--n-pairs", "3"]) == 2
    assert "at least" in capsys.readouterr().err
    assert main(["calib", "list", "--repo", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "none" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing written by refused commands


def test_register_and_list_per_detector(tmp_path, capsys):
    """Two LSSTCam detectors' biases of one date: both certified, listed with their
    detector, and ``--detector`` keeps one."""
    repo = tmp_path / "repo"
    for slot in ("R22_S11", "R22_S12"):
        header = fits.Header({"OBSTYPE": "bias", "CALIBDATE": "2025-05-01"})
        add_cards(header, detector_cards(load_camera("lsstcam", slot)))
        # Tiny: registration checks the values, not the shape.
        path = Exposure.from_image(np.full((8, 8), 0.5 if slot.endswith("1") else 1.5,
                                           np.float32), header).write(tmp_path / f"{slot}.fits")
        assert main(["calib", "register", str(path), "--repo", str(repo), "--instrument",
                     "LSSTCam", "--certify"]) == 0
    capsys.readouterr()
    assert main(["calib", "list", "--repo", str(repo)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["id", "kind", "detector"]
    assert [line.split()[1:3] for line in lines[1:]] == [["bias", "R22_S11"],
                                                         ["bias", "R22_S12"]]
    assert all(" yes " in line for line in lines[1:])
    assert main(["calib", "list", "--repo", str(repo), "--detector", "R22_S12"]) == 0
    [only] = capsys.readouterr().out.splitlines()[1:]
    assert "calib/bias/R22_S12/R22_S12." in only
