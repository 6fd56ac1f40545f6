"""PTC product: a FITS binary table (extension ``PTC``), one row per amp (`PTC_COLUMNS`):
gain, read noise, turnoff and the photon-transfer curve itself."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
from astropy.io import fits
from astropy.table import Table

from atmospec.calib.products._tables import (
    amp_rows,
    read_table,
    require_columns,
    require_numeric,
    table_hdu,
)
from atmospec.calib.products.detector import check_detector
from atmospec.camera.description import Camera, load_camera
from atmospec.errors import BadInputError
from atmospec.io import write_hdul_atomic
from atmospec.isr.gain import AmpGains

Card = tuple[str, Any, str]

#: Columns of the PTC product: name → (unit, description), written as the TTYPEn comments.
PTC_COLUMNS: Mapping[str, tuple[str, str]] = MappingProxyType({
    "AMP": ("", "amplifier name"),
    "GAIN": ("e/adu", "gain from the PTC fit"),
    "GAIN_ERR": ("e/adu", "1-sigma error of GAIN"),
    "READ_NOISE": ("e", "read noise (source: RNSOURCE)"),
    "READ_NOISE_ERR": ("e", "1-sigma error of READ_NOISE"),
    "TURNOFF": ("adu", "largest mean used by the fit"),
    "TURNOFF_E": ("e", "TURNOFF x GAIN"),
    "A00": ("1/e", "a00, Astier+2019 model"),
    "A00_ERR": ("1/e", "1-sigma error of A00"),
    "NOISE_FIT": ("e", "sqrt(n) of the fit"),
    "OVERSCAN_NOISE": ("adu", "read noise in the overscan"),
    "FIT_CHI2": ("", "reduced chi-square of the fit"),
    "PTC_MEAN": ("adu", "mean signal per pair"),
    "PTC_VAR": ("adu2", "variance per pair (diff var/2)"),
    "PTC_EXPTIME": ("s", "exposure time per pair"),
    "PTC_NPIX": ("", "pixels in each variance"),
    "PTC_USED": ("", "pair used by the fit"),
    "PTC_COV": ("adu2", "covariances per pair, lag [x, y]"),
})

#: What ISR needs of a PTC.
_REQUIRED = ("AMP", "GAIN", "READ_NOISE")


@dataclass(frozen=True)
class Ptc:
    """A photon-transfer-curve product."""

    table: Table
    """One row per amp (`PTC_COLUMNS`; a PTC from elsewhere may hold only ``AMP``,
    ``GAIN``, ``READ_NOISE``); meta ``OBSTYPE``, ``INSTRUME``, ``CALIBDATE``, ..."""
    source: str = ""
    """Where it was read from; empty when built in memory."""
    provenance: tuple[Card, ...] = ()
    """Provenance cards of a product built in memory."""

    gain_bounds: ClassVar[tuple[float, float]] = (0.1, 100.0)
    """Open interval a gain must lie in, e⁻/ADU. CCD amplifiers are built for a gain of
    ~0.5-5 e⁻/ADU (LATISS's ITL sensor: ~1): the ADC's range must hold the full well
    (~10⁵ e⁻) at a step below the read noise. Beyond this interval by a factor of ten or
    more, the value is a fit gone wrong or the wrong column, not an amplifier."""
    read_noise_bounds: ClassVar[tuple[float, float]] = (0.0, 1000.0)
    """Half-open interval [low, high) the read noise must lie in, e⁻: it cannot be negative
    (0 is what a PTC from elsewhere writes when it did not measure it), and LATISS's is
    ~5-10 e⁻; a thousand electrons would swamp any signal the camera is used for."""

    @classmethod
    def read(cls, path: str | Path, camera: Camera | None = None) -> Ptc:
        """Read a PTC table and check it (see `checked`).

        Raises
        ------
        BadInputError
            Not a FITS file, unreadable, without ``AMP``, ``GAIN``, ``READ_NOISE`` (or
            those not numbers), or for another instrument or detector
            (`atmospec.calib.products.detector.check_detector`).
        """
        return cls.checked(read_table(path, "PTC", "fits"), str(path), camera)

    @classmethod
    def checked(cls, table: Table, source: str, camera: Camera | None = None) -> Ptc:
        """Wrap a table already in memory after the checks of `read` (the per-amp values
        are checked by `gains`)."""
        camera = camera or load_camera("latiss")
        require_columns(table, _REQUIRED, source, "PTC table")
        require_numeric(table, _REQUIRED[1:], source, "PTC table")
        instrument = table.meta.get("INSTRUME")
        if instrument and str(instrument).upper() != camera.name.upper():
            raise BadInputError(source or None, f"PTC is for {instrument}, not {camera.name}")
        check_detector(table.meta, camera, source or None, "PTC")
        return cls(table, source)

    @property
    def name(self) -> str:
        """File name of `source` (what the products built with these gains record)."""
        return Path(self.source).name

    def gains(self, camera: Camera | None = None) -> AmpGains:
        """Gain and read noise of every amplifier, in camera HDU order.

        Raises
        ------
        BadInputError
            An amplifier without a row, or a value outside `gain_bounds` or
            `read_noise_bounds` (a NaN too), naming the amplifier.
        """
        camera = camera or load_camera("latiss")
        rows = amp_rows(self.table, camera.amp_names, self.source, "PTC table")
        gain = np.array([float(self.table["GAIN"][r]) for r in rows])
        noise = np.array([float(self.table["READ_NOISE"][r]) for r in rows])
        low, high = self.gain_bounds
        self._check_bounds(camera, gain, low < gain, gain < high,
                           f"gains must be finite and positive, within ({low:g}, {high:g}) "
                           "e-/adu")
        low, high = self.read_noise_bounds
        self._check_bounds(camera, noise, low <= noise, noise < high,
                           f"read noise must be within [{low:g}, {high:g}) e-")
        return AmpGains(gain, noise, self.name)

    def _check_bounds(self, camera: Camera, values: np.ndarray, above: np.ndarray,
                      below: np.ndarray, rule: str) -> None:
        """Refuse the first amplifier (camera order) whose value is not above and below
        its bounds (comparisons with NaN are false: a NaN is refused too)."""
        bad = np.flatnonzero(~(above & below))
        if bad.size:
            i = bad[0]
            raise BadInputError(self.source or None,
                                f"PTC {rule}: amplifier {camera.amp_names[i]} has "
                                f"{values[i]:g}")

    def hdu(self, provenance: Sequence[Card] = ()) -> fits.BinTableHDU:
        """The ``PTC`` extension as `write` stores it."""
        comments = {name: f"[{unit}] {text}" if unit else text
                    for name, (unit, text) in PTC_COLUMNS.items()}
        return table_hdu(self.table, "PTC", comments, provenance)

    def write(self, path: str | Path, provenance: Sequence[Card] = ()) -> Path:
        """Write the product atomically (empty primary HDU, then the ``PTC`` table).

        Parameters
        ----------
        path : path
            Destination ``.fits`` file.
        provenance : sequence of (key, value, comment)
            Cards added to the table's header (e.g. ``self.provenance``).

        Returns
        -------
        pathlib.Path
        """
        return write_hdul_atomic(fits.HDUList([fits.PrimaryHDU(), self.hdu(provenance)]), path)

    def as_stored(self, provenance: Sequence[Card] = ()) -> Table:
        """The table as reading the file `write` stores gives it (header keys in ``meta``,
        provenance included), serialised in memory: for a Gen3 Butler."""
        buffer = io.BytesIO()
        fits.HDUList([fits.PrimaryHDU(), self.hdu(provenance)]).writeto(buffer)
        buffer.seek(0)
        return Table.read(buffer, format="fits")
