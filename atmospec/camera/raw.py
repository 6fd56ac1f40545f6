"""Reading raw multi-extension camera files into per-amp arrays, with checks.

Every problem with a raw file becomes a `BadInputError` naming the file and the problem:
unreadable or truncated FITS, another instrument, a missing amplifier HDU, a wrong
segment shape, non-finite pixels.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from atmospec.camera.description import (
    Camera,
    frame_camera,
    load_camera,
    segment_shape_problem,
)
from atmospec.camera.translator import ObservationInfo, translate_header
from atmospec.errors import BadInputError, short_error


@dataclass
class RawFrame:
    """One raw exposure: the untouched primary header and all amp segments."""

    path: Path
    """File the frame was read from."""
    header: fits.Header
    """Primary header."""
    amp_headers: list[fits.Header]
    """Per-amp headers in camera HDU order."""
    segments: np.ndarray
    """``(n_amps, ny, nx)`` float32 raw pixel values in ADU, camera HDU order."""
    info: ObservationInfo
    """Translated metadata."""
    camera: Camera
    """Description of the camera that took the frame, at the frame's binning."""


def read_raw(path: str | Path, camera: Camera | None = None) -> RawFrame:
    """Read a raw multi-extension file.

    Parameters
    ----------
    path : path
        Raw file (plain or tile-compressed FITS).
    camera : Camera, optional
        Expected camera; by default the one named by the header's instrument.

    Returns
    -------
    RawFrame

    Raises
    ------
    BadInputError
        For any file the pipeline cannot use; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "no such file")
    try:
        with warnings.catch_warnings():
            # astropy only warns on a truncated file and pads it: that must be an error.
            warnings.simplefilter("error", fits.verify.VerifyWarning)
            warnings.filterwarnings("error", message=".*truncated.*")
            with fits.open(path, memmap=False) as hdul:
                header = hdul[0].header.copy()
                info = translate_header(header, filename=str(path))
                if camera is None:
                    camera = load_camera(info.instrument)
                elif info.instrument.lower() != camera.name.lower():
                    raise BadInputError(path, f"instrument {info.instrument} is not "
                                              f"{camera.name}")
                camera = frame_camera(camera, info.binning, path)  # BINX/BINY geometry
                by_name = {h.name.upper(): h for h in hdul[1:]}
                segments = np.empty((camera.n_amps, *camera.raw_bbox.shape), dtype=np.float32)
                amp_headers = []
                for i, amp in enumerate(camera.amplifiers):
                    hdu = by_name.get(amp.extname.upper())
                    if hdu is None:
                        raise BadInputError(path, f"missing amplifier HDU {amp.extname}")
                    data = hdu.data
                    if data is None or data.shape != camera.raw_bbox.shape:
                        shape = None if data is None else data.shape
                        raise BadInputError(path, segment_shape_problem(camera, amp.extname,
                                                                        shape))
                    segments[i] = data
                    amp_headers.append(hdu.header.copy())
    except BadInputError:
        raise
    except Exception as exc:  # astropy raises many types for damaged files
        raise BadInputError(path, f"not a readable FITS file ({short_error(exc)})") from None
    bad = ~np.isfinite(segments)
    if bad.any():
        amps = sorted({camera.amplifiers[i].extname for i in np.nonzero(bad.any(axis=(1, 2)))[0]})
        raise BadInputError(path, f"{int(bad.sum())} non-finite (NaN/inf) raw pixels in "
                                  f"{', '.join(amps)}")
    return RawFrame(path, header, amp_headers, segments, info, camera)


def as_raw(item: RawFrame | str | Path, camera: Camera | None = None) -> RawFrame:
    """``item`` if it is already a `RawFrame`, else the frame read from that file."""
    return item if isinstance(item, RawFrame) else read_raw(item, camera)
