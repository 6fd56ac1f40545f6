"""``atmospec raws``: raw files listed by image type, filter, disperser and detector, from
their headers, as ``atmospec night`` indexes them (used by docs/calibrations.md to sort a
night's frames)."""

from __future__ import annotations

from pathlib import Path

from astropy.io import fits
from conftest import make_template_raw

from atmospec.cli import main


def _raw(folder: Path, seq: int, imgtype: str, filt: str, grating: str) -> Path:
    path = make_template_raw(folder / f"AT_O_20240624_{seq:06d}.fits", seed=seq)
    with fits.open(path, mode="update") as hdul:
        h = hdul[0].header
        h["OBSID"], h["DAYOBS"], h["SEQNUM"] = f"AT_O_20240624_{seq:06d}", "20240624", seq
        h["IMGTYPE"], h["FILTER"], h["GRATING"] = imgtype, filt, grating
    return path


def test_raws_lists_by_type_filter_and_disperser(tmp_path, capsys, caplog):
    night = tmp_path / "night"
    (night / "sub").mkdir(parents=True)
    bias = _raw(night, 1, "BIAS", "empty_1", "empty_1")
    flat_r = _raw(night, 2, "FLAT", "SDSSr_65mm", "empty_1")
    flat_e = _raw(night / "sub", 3, "FLAT", "empty_1", "empty_1")
    science = _raw(night, 4, "OBJECT", "empty_1", "holo4_003")
    (night / "cut.fits").write_bytes(bias.read_bytes()[:5000])

    def listed(*argv: str) -> list[str]:
        assert main(["raws", *argv]) == 0
        return capsys.readouterr().out.split()

    assert listed(str(night), "--type", "bias") == [str(bias)]
    assert listed(str(night), "--type", "flat") == [str(flat_r), str(flat_e)]
    assert listed(str(night), "--type", "flat", "--filter", "SDSSr_65mm") == [str(flat_r)]
    assert listed(str(night), "--disperser", "holo4_003") == [str(science)]
    assert listed(str(night), "--detector", "R22_S11") == []
    # A damaged file found in the folder is skipped, saying why, as the night skips it.
    assert "skipped" in caplog.text and "cut.fits: truncated" in caplog.text
    assert main(["raws", str(flat_r), "--long"]) == 0
    assert capsys.readouterr().out.split() == [
        str(flat_r), "AT_O_20240624_000002", "flat", "SDSSr_65mm", "empty", "27", "s"]
    # Named on the command line, it is bad input: one line, exit 2, the others listed.
    assert main(["raws", str(night / "cut.fits"), str(bias)]) == 2
    out, err = capsys.readouterr()
    assert out.split() == [str(bias)]
    assert err.startswith(f"atmospec: {night / 'cut.fits'}: truncated") and err.count("\n") == 1
