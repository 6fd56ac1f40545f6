"""Bad input: one line naming the file and the problem, exit status 2, nothing half-written."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest import make_template_raw

from atmospec.cli import main
from atmospec.exposure import Exposure


def _run(capsys, *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def _assert_one_line(err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


def _outputs(out_dir: Path) -> list[Path]:
    return sorted(out_dir.glob("*")) if out_dir.exists() else []


FAST = ["--steps", "overscan,gain,assemble"]


def test_truncated_fits(tmp_path, template_raw, capsys):
    bad = tmp_path / "truncated.fits"
    data = template_raw.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    status, _, err = _run(capsys, "isr", str(bad), "--out", str(tmp_path / "o"), *FAST)
    assert status == 2
    _assert_one_line(err, "truncated.fits")
    assert _outputs(tmp_path / "o") == []


def test_not_fits(tmp_path, capsys):
    bad = tmp_path / "notes.fits"
    bad.write_text("this is not a FITS file\n")
    status, _, err = _run(capsys, "isr", str(bad), "--out", str(tmp_path / "o"), *FAST)
    assert status == 2
    _assert_one_line(err, "notes.fits", "not a readable FITS file")


def test_missing_file(tmp_path, capsys):
    status, _, err = _run(capsys, "isr", str(tmp_path / "nope.fits"), "--out", str(tmp_path))
    assert status == 2
    _assert_one_line(err, "nope.fits", "no such file")


def test_missing_amp_hdu(tmp_path, template_raw, capsys):
    bad = tmp_path / "missing_amp.fits"
    with fits.open(template_raw) as hdul:
        del hdul["Segment07"]
        hdul.writeto(bad)
    status, _, err = _run(capsys, "isr", str(bad), "--out", str(tmp_path / "o"), *FAST)
    assert status == 2
    _assert_one_line(err, "missing_amp.fits", "missing amplifier HDU Segment07")


def test_wrong_segment_shape(tmp_path, template_raw, capsys):
    bad = tmp_path / "shape.fits"
    with fits.open(template_raw) as hdul:
        hdul["Segment03"] = fits.ImageHDU(hdul["Segment03"].data[:, :500],
                                          header=hdul["Segment03"].header, name="Segment03")
        hdul.writeto(bad)
    status, _, err = _run(capsys, "isr", str(bad), "--out", str(tmp_path / "o"), *FAST)
    assert status == 2
    _assert_one_line(err, "shape.fits", "Segment03 has shape (2048, 500), expected (2048, 576)")


def test_non_latiss(tmp_path, template_raw, capsys):
    bad = tmp_path / "decam.fits"
    with fits.open(template_raw) as hdul:
        hdul[0].header["INSTRUME"] = "DECam"
        hdul.writeto(bad)
    status, _, err = _run(capsys, "isr", str(bad), "--out", str(tmp_path / "o"), *FAST)
    assert status == 2
    _assert_one_line(err, "decam.fits", "DECam")


def test_float_raw_refused(tmp_path, capsys):
    # The camera writes integer ADU: float pixels (where a NaN could hide) are not a raw.
    bad = make_template_raw(tmp_path / "nan.fits", dtype=np.float32)
    with fits.open(bad, mode="update") as hdul:
        hdul["Segment12"].data[100, 100] = np.nan
    status, _, err = _run(capsys, "isr", str(bad), "--out", str(tmp_path / "o"), *FAST)
    assert status == 2
    _assert_one_line(err, "nan.fits", "float pixel type")


def test_calibration_wrong_shape(tmp_path, template_raw, capsys):
    bias = tmp_path / "bias_small.fits"
    exp = Exposure.from_image(np.zeros((100, 100)), fits.Header({"OBSTYPE": "bias",
                                                                 "INSTRUME": "LATISS"}))
    exp.write(bias)
    status, _, err = _run(capsys, "isr", str(template_raw), "--out", str(tmp_path / "o"),
                          "--bias", str(bias))
    assert status == 2
    _assert_one_line(err, "bias_small.fits", "shape (100, 100)")
    assert _outputs(tmp_path / "o") == []


def test_calibration_wrong_instrument_and_kind(tmp_path, template_raw, capsys):
    hdr = fits.Header({"OBSTYPE": "bias", "INSTRUME": "LSSTCam"})
    bias = Exposure.from_image(np.zeros((4000, 4072), np.float32), hdr).write(
        tmp_path / "bias_lsstcam.fits")
    status, _, err = _run(capsys, "isr", str(template_raw), "--out", str(tmp_path / "o"),
                          "--bias", str(bias))
    assert status == 2
    _assert_one_line(err, "bias_lsstcam.fits", "LSSTCam")
    flat = Exposure.from_image(np.ones((4000, 4072), np.float32),
                               fits.Header({"OBSTYPE": "flat", "INSTRUME": "LATISS"}))
    flat_path = flat.write(tmp_path / "a_flat.fits")
    status, _, err = _run(capsys, "isr", str(template_raw), "--out", str(tmp_path / "o"),
                          "--bias", str(flat_path))
    assert status == 2
    _assert_one_line(err, "a_flat.fits", "is a flat, not a bias")


def test_unknown_step_is_usage_error(tmp_path, template_raw, capsys):
    status, _, err = _run(capsys, "isr", str(template_raw), "--out", str(tmp_path),
                          "--steps", "overscan,fringe")
    assert status == 2
    _assert_one_line(err, "unknown ISR step", "fringe")
    status, _, err = _run(capsys, "isr", str(template_raw), "--out", str(tmp_path),
                          "--steps", "overscan,bias")
    assert status == 2
    _assert_one_line(err, "bias")


def test_bad_file_does_not_stop_the_others(tmp_path, template_raw, capsys):
    """One bad exposure is reported; the good one is still processed and written whole."""
    bad = tmp_path / "broken.fits"
    bad.write_bytes(b"SIMPLE  =                    T" + b" " * 100)
    good = tmp_path / "good.fits"
    shutil.copy(template_raw, good)
    out = tmp_path / "o"
    status, _, err = _run(capsys, "isr", str(bad), str(good), "--out", str(out), *FAST)
    assert status == 2
    _assert_one_line(err, "broken.fits")
    written = _outputs(out)
    assert [p.name for p in written] == ["AT_C_20180920_000065_isrstats.json",
                                         "AT_C_20180920_000065_postisr.fits"]
    assert not list(out.glob("*.tmp"))
    assert Exposure.read(out / "AT_C_20180920_000065_postisr.fits").shape == (4000, 4072)


@pytest.mark.parametrize("argv", [["isr"], ["nosuchcommand"], ["isr", "x.fits"]])
def test_usage_errors(argv, capsys):
    status, _, err = _run(capsys, *argv)
    assert status == 2
    _assert_one_line(err, "atmospec")


def test_bad_input_error_survives_pickling():
    """Worker processes return it pickled: path and problem must come back intact."""
    import pickle

    from atmospec.errors import BadInputError

    err = pickle.loads(pickle.dumps(BadInputError("/x/raw.fits", "truncated")))
    assert (err.path, err.problem, str(err)) == ("/x/raw.fits", "truncated",
                                                  "/x/raw.fits: truncated")
