"""Reduced single-image FITS files (one 2-D image in ADU, as Spectractor's CTIO inputs) read
as an `Exposure`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from atmospec.camera.spectrograph import load_instrument
from atmospec.errors import BadInputError
from atmospec.exposure import Exposure
from atmospec.fitsscan import astropy_warnings_as_errors, scan_fits

__all__ = ["read_reduced_image"]


def read_reduced_image(path: str | Path, instrument: str) -> Exposure:
    """Read a reduced image in ADU as an exposure in electrons.

    Parameters
    ----------
    path : path
        FITS file; its first 2-D image is used, its primary header is the metadata.
    instrument : str
        Instrument profile (`atmospec.camera.spectrograph.load_instrument`): its gain
        converts ADU to electrons, its read noise enters the variance, its saturation level
        sets the SAT mask.

    Returns
    -------
    Exposure
        Image in electrons (gain 1 when the profile gives none), Poisson + read-noise
        variance, NaN pixels masked NO_DATA (infinite variance), pixels at 99 % of the
        saturation level masked SAT. A binned image (``BINX``/``BINY``, else ``CCDSUM "x
        y"``: Spectractor rebins its CTIO images so) sums ``x × y`` pixels, each read once:
        its read-noise variance and saturation level are that many times the profile's
        (a 2 × 2 pixel saturates at 4 × 60 000 ADU).

    Raises
    ------
    BadInputError
        If the file holds no 2-D image.
    """
    profile = load_instrument(instrument)
    try:
        scan_fits(path)  # bounded: a damaged size card is one line, not a parse of the pixels
        with astropy_warnings_as_errors(path, "damaged FITS file"), fits.open(path) as hdul:
            image_hdus = [h for h in hdul if h.data is not None and np.ndim(h.data) == 2]
            if not image_hdus:
                raise BadInputError(path, "no 2-D image in the file")
            data = np.asarray(image_hdus[0].data, dtype=np.float32)
            header = hdul[0].header.copy()
    except OSError as exc:
        raise BadInputError(path, f"cannot read ({exc.strerror})") from None
    gain = profile.gain_e_per_adu or 1.0
    n_summed = int(np.prod(_binning(header)))
    exposure = Exposure.from_image(data * gain, metadata=header)
    finite = np.isfinite(exposure.image)
    exposure.variance[:] = np.where(finite, np.clip(exposure.image, 0.0, None)
                                    + n_summed * (profile.read_noise_e or 0.0) ** 2, np.inf)
    exposure.set_mask("NO_DATA", ~finite)
    if profile.max_adu:
        exposure.set_mask("SAT", finite & (data >= 0.99 * profile.max_adu * n_summed))
    return exposure


def _binning(header: fits.Header) -> tuple[int, int]:
    """``(x, y)`` pixels summed per image pixel: ``BINX``/``BINY``, else ``CCDSUM``, else 1."""
    binx, biny = header.get("BINX"), header.get("BINY")
    if isinstance(binx, int) and isinstance(biny, int) and binx > 0 and biny > 0:
        return binx, biny
    parts = str(header.get("CCDSUM", "")).split()
    if len(parts) == 2 and all(p.isdigit() and int(p) > 0 for p in parts):
        return int(parts[0]), int(parts[1])
    return 1, 1
