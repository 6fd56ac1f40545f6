"""``atmospec raws``: raw files listed by image type, filter, disperser and detector, from
their headers, as ``atmospec night`` indexes them (used by docs/calibrations.md to sort a
night's frames)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
from astropy.io import fits

from atmospec.cli import main


def _raw(folder: Path, seq: int, imgtype: str, filt: str, grating: str) -> Path:
    """A raw of the real LATISS header template, with these keys (constant pixels: only the
    headers are read)."""
    path = folder / f"AT_O_20240624_{seq:06d}.fits"
    with fits.open(resources.files("atmospec.data") / "latiss_raw_template.fits.gz") as hdul:
        h = hdul[0].header.copy()
        h["OBSID"], h["DAYOBS"], h["SEQNUM"] = f"AT_O_20240624_{seq:06d}", "20240624", seq
        h["IMGTYPE"], h["FILTER"], h["GRATING"] = imgtype, filt, grating
        out = fits.HDUList([fits.PrimaryHDU(header=h)])
        out += [fits.ImageHDU(np.full(hdu.data.shape, 20000, np.int32), header=hdu.header,
                              name=hdu.name) for hdu in hdul[1:17]]
    out.writeto(path, output_verify="fix")
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
