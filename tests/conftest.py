"""Shared fixtures: small valid raw files built from the real LATISS header template."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

DATA = Path(__file__).parent / "data"


def make_template_raw(path: Path, *, seed: int = 0, level: float = 20000.0,
                      dtype: type = np.int32) -> Path:
    """Write a raw LATISS file: the real 2018 header structure, bias level plus noise."""
    rng = np.random.default_rng(seed)
    template = resources.files("atmospec.data") / "latiss_raw_template.fits.gz"
    with fits.open(str(template)) as hdul:
        out = fits.HDUList([fits.PrimaryHDU(header=hdul[0].header)])
        for hdu in hdul[1:17]:
            data = (level + rng.normal(0, 8, hdu.data.shape)).astype(dtype)
            out.append(fits.ImageHDU(data, header=hdu.header, name=hdu.name))
    out.writeto(path, overwrite=True)
    return path


@pytest.fixture(scope="session")
def template_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid (if boring) raw LATISS frame."""
    return make_template_raw(tmp_path_factory.mktemp("raw") / "AT_C_20180920_000065.fits")
