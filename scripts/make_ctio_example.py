"""Build ``data/examples/ctio_20170530_134_HD111980_HoloAmAg.fits.gz``, the real CTIO
dispersed image ``atmospec extract --instrument ctio`` runs on in docs/spectroscopy.md.

Run from the repository root::

    python scripts/make_ctio_example.py

No raw CTIO image is public (Spectractor's ``reduc_*.fits`` inputs are too large for its
repository), but Spectractor 2.4 saved, beside its spectrum of exposure
``reduc_20170530_134`` (HD111980 through the HoloAmAg hologram, CTIO 0.9 m, 2017-05-31), the
real pixels it fitted: the 2×2-rebinned spectrogram cutout ``S_DATA`` (sky included, placed
in the frame by ``S_XMIN``, ``S_YMIN``) and the zeroth-order cutout ``ORDER0``
(background-subtracted, the star at ``IM_X0, IM_Y0`` on ``TARGETX, TARGETY``), both in
ADU/s. This script puts them back where they were in the 1024 × 1024 rebinned frame, in ADU
(× ``EXPTIME``), on a constant sky at the spectrogram's median background elsewhere (no
invented noise: the pixels that are not Spectractor's say so by being flat), and keeps the
exposure's header without Spectractor's answers (``ROTANGLE``, ``D2CCD``, ``TARGETX``…; the
target and disperser are given on the command line). As ``tests/test_ctio_real.py`` rebuilds
the frame, but small: the constant sky compresses to nothing. The input is the
BSD-3-Clause file of ``tests/data/spectractor_ctio/`` (``data/ATTRIBUTION.md``).
"""

from __future__ import annotations

import gzip
import io
import sys
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
SOURCE = (ROOT / "tests" / "data" / "spectractor_ctio"
          / "reduc_20170530_134_spectrum_v2.4_selfcontained.fits.gz")
OUT = ROOT / "data" / "examples" / "ctio_20170530_134_HD111980_HoloAmAg.fits.gz"
#: Seed of the sky noise around the real pixels.
SEED = 0
#: ADU the invented sky is rounded to (its noise is ~12 ADU): it compresses better.
ADU_STEP = 4.0
#: Header keys holding Spectractor's results, or the inputs given on the command line.
ANSWERS = ("ROTANGLE", "D2CCD", "TARGETX", "TARGETY", "PIXSHIFT", "THETAFIT", "THETAINT",
           "LBDA_REF", "PSF_REG", "TRACE_R", "MEANFWHM", "CHI2_FIT", "A2_FIT", "AM_FIT",
           "GRATING", "TARGET", "REDSHIFT", "UNIT1", "UNIT2", "VERSION", "REBIN", "CCDREBIN")


def build(source: Path = SOURCE) -> fits.HDUList:
    """The example frame (module docstring) as an HDU list."""
    with fits.open(source) as hdul:
        header = hdul[0].header.copy()
        s_data = np.asarray(hdul["S_DATA"].data, dtype=np.float64)
        s_bgd = np.asarray(hdul["S_BGD"].data, dtype=np.float64)
        s_err = np.asarray(hdul["S_ERR"].data, dtype=np.float64)
        order0 = np.asarray(hdul["ORDER0"].data, dtype=np.float64)
        im_x0, im_y0 = hdul["ORDER0"].header["IM_X0"], hdul["ORDER0"].header["IM_Y0"]
    exptime = float(header["EXPTIME"])
    n = int(header["XLENGTH"]) // int(header["REBIN"])
    sky = float(np.median(s_bgd))
    sky_sigma = float(np.median(s_err[s_data < np.percentile(s_data, 50)]))
    # In ADU. The sky around the real pixels, with its noise, in whole steps of ADU_STEP.
    noise = np.random.default_rng(SEED).normal(0.0, sky_sigma, (n, n))
    image = np.round((sky + noise) * exptime / ADU_STEP) * ADU_STEP
    y0, x0 = int(header["S_YMIN"]), int(header["S_XMIN"])
    image[y0:y0 + s_data.shape[0], x0:x0 + s_data.shape[1]] = s_data * exptime
    # The zeroth-order cutout on the star, at its sub-pixel position.
    tx, ty = float(header["TARGETX"]), float(header["TARGETY"])
    placed = np.zeros((n, n))
    oy, ox = order0.shape
    cy, cx = round(ty - im_y0), round(tx - im_x0)
    placed[cy:cy + oy, cx:cx + ox] = order0
    placed = ndimage.shift(placed, (ty - im_y0 - cy, tx - im_x0 - cx), order=1)
    star = placed != 0.0
    image[star] += placed[star] * exptime
    image = image.astype(np.float32)
    for key in ANSWERS + tuple(k for k in header if k.startswith("S_")):
        header.remove(key, ignore_missing=True, remove_all=True)
    header["BUNIT"] = ("adu", "ADU: ADU/s of Spectractor's cutouts x EXPTIME")
    header["CCDSUM"] = ("2 2", "2x2 rebinned, as Spectractor's cutouts")
    header.add_history("atmospec example: Spectractor 2.4's S_DATA and ORDER0 cutouts of")
    header.add_history("reduc_20170530_134 placed back in the rebinned frame, a sky with")
    header.add_history("its noise elsewhere (scripts/make_ctio_example.py)")
    return fits.HDUList([fits.PrimaryHDU(image, header=header)])


def main(out: Path = OUT) -> Path:
    """Write the example gzip-compressed (reproducibly: no time stamp in the gzip header)."""
    buf = io.BytesIO()
    build().writeto(buf)  # no CHECKSUM: astropy dates its comment, the bytes would vary
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9,
                                               mtime=0, filename="") as gz:
        gz.write(buf.getvalue())
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} kB)")
    return out


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
