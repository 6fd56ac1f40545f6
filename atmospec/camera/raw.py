"""Reading raw multi-extension camera files into per-amp arrays, with checks.

Every problem with a raw file becomes a `BadInputError` naming the file and the problem.
`check_raw_structure` finds it from the headers alone, before any pixel is read (it is also
the night index's check): a damaged header or size card, a truncated file, another
instrument, a physically impossible header value, a missing or duplicated amplifier HDU, a
wrong segment shape or a float pixel type, a compressed amplifier not matching its
DATASUM. `read_raw` then reads the pixels and refuses non-finite ones.

HDUs are matched to amplifiers by ``EXTNAME``, so their order does not matter. HDUs with a
name the camera does not know (auxiliary tables some camera software writes) are checked
as FITS and otherwise ignored. Two HDUs with the same name are refused: which one holds the
amplifier's pixels cannot be told.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from astropy.io import fits

from atmospec.camera.description import (
    Camera,
    frame_camera,
    load_camera,
    segment_shape_problem,
    with_vendor,
)
from atmospec.camera.translator import ObservationInfo, translate_header
from atmospec.compression import decompress_rice_image
from atmospec.errors import BadInputError, short_error
from atmospec.fitsscan import (
    BITPIX_VALUES,
    FitsLayout,
    HduLayout,
    astropy_warnings_as_errors,
    data_sum_matches,
    scan_fits,
)

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class RawLayout:
    """A raw file checked from its headers (`check_raw_structure`): what `read_raw` needs
    to read its pixels."""

    path: Path
    """The file."""
    header: fits.Header
    """Primary header."""
    info: ObservationInfo
    """Translated primary header."""
    camera: Camera
    """The camera that took the frame, at the frame's binning (`frame_camera`)."""
    segment_shape: tuple[int, int]
    """``(ny, nx)`` of every amplifier segment, at the frame's binning."""
    amp_hdus: tuple[HduLayout, ...]
    """The amplifier HDUs, in the camera's amplifier order."""
    fits: FitsLayout
    """Every HDU of the file."""


def check_raw_structure(path: str | Path, camera: Camera | None = None) -> RawLayout:
    """Check a raw file from its headers, without reading the pixels.

    Every header is walked and checked by `atmospec.fitsscan.scan_fits` (printable,
    parsable cards, legal size cards, data inside the file, gzip stream intact); the primary
    header is translated; every amplifier HDU must be there once, be an image (plain or
    tile-compressed) of the camera's segment shape with an integer pixel type, and, when
    tile-compressed with a ``DATASUM``, match it (`_check_compressed_datasums`). The work is
    proportional to the file size (see `scan_fits`).

    Parameters
    ----------
    path : path
        Raw file: plain FITS, gzip-compressed (``.fits.gz``) or tile-compressed (``.fz``).
    camera : Camera, optional
        Expected camera; by default the one named by the header's instrument.

    Returns
    -------
    RawLayout

    Raises
    ------
    BadInputError
        The first problem found, naming the file.
    OSError
        When the file cannot be opened or read (`scan_fits`).
    """
    path = Path(path)
    found = _AmpFinder(path, camera)
    layout = scan_fits(path, found.check)
    amps = found.amp_hdus()
    assert found.info is not None and found.camera is not None and found.shape is not None
    raw = RawLayout(path, layout.hdus[0].header, found.info, found.camera, found.shape,
                    amps, layout)
    _check_compressed_datasums(raw)
    return raw


class _AmpFinder:
    """The per-HDU checks of `check_raw_structure`, run as `scan_fits` reads each header
    (so that the first problem reported is the first in the file)."""

    def __init__(self, path: Path, camera: Camera | None) -> None:
        self.path = path
        self.camera = camera
        self.info: ObservationInfo | None = None
        self.shape: tuple[int, int] | None = None
        self.by_name: dict[str, HduLayout] = {}

    def check(self, hdu: HduLayout) -> None:
        if hdu.index == 0:
            self._primary(hdu)
            return
        if not hdu.name:
            return
        if hdu.name in self.by_name:
            raise BadInputError(self.path, f"duplicated HDU {hdu.extname}: HDUs "
                                           f"{self.by_name[hdu.name].index} and {hdu.index}")
        self.by_name[hdu.name] = hdu
        assert self.camera is not None
        amp = next((a for a in self.camera.amplifiers if a.extname.upper() == hdu.name), None)
        if amp is None:
            log.debug("%s: HDU %d (%s) is not an amplifier: ignored", self.path, hdu.index,
                      hdu.name)
            return
        self._segment(hdu, amp.extname)

    def _primary(self, hdu: HduLayout) -> None:
        info = translate_header(hdu.header, filename=str(self.path))
        if self.camera is not None:
            if info.instrument.lower() != self.camera.name.lower():
                raise BadInputError(self.path, f"instrument {info.instrument} is not "
                                               f"{self.camera.name}")
            if info.detector is not None and info.detector != self.camera.detector:
                raise BadInputError(self.path, f"detector {info.detector} is not "
                                               f"{self.camera.label}")
        self.camera = camera_for(info, self.path, self.camera)
        check_sensor(self.path, hdu.header, info, self.camera)
        self.info = info
        # The one place deciding the segment shape: the camera at the header's BINX/BINY.
        self.camera = frame_camera(self.camera, info.binning, self.path)
        self.shape = self.camera.raw_bbox.shape

    def _segment(self, hdu: HduLayout, extname: str) -> None:
        """An amplifier HDU must be a 2D image (plain or tile-compressed) of the segment
        shape, with a legal integer pixel type."""
        header = hdu.header
        prefix = "Z" if hdu.is_compressed_image else ""
        if not prefix and header.get("XTENSION") != "IMAGE":
            raise BadInputError(self.path, f"{extname} is a {header.get('XTENSION')} HDU, "
                                            "not an image")
        if prefix:
            bitpix = header.get("ZBITPIX")
            if bitpix not in BITPIX_VALUES or isinstance(bitpix, bool):
                raise BadInputError(self.path, f"damaged header: {extname}: ZBITPIX = "
                                               f"{bitpix!r} is not a FITS pixel type")
        _check_integer_pixels(self.path, extname, f"{prefix}BITPIX", header[f"{prefix}BITPIX"])
        naxis = header.get(f"{prefix}NAXIS")
        axes = [header.get(f"{prefix}NAXIS{i}") for i in (2, 1)]
        if naxis != 2 or not all(isinstance(n, int) and not isinstance(n, bool)
                                 for n in axes):
            raise BadInputError(self.path, f"{extname} is not a 2D image ({prefix}NAXIS = "
                                           f"{naxis!r})")
        if tuple(axes) != self.shape:
            raise BadInputError(self.path, segment_shape_problem(self.camera, extname,
                                                                 tuple(axes)))

    def amp_hdus(self) -> tuple[HduLayout, ...]:
        """The amplifier HDUs in camera order; refuses a missing one."""
        assert self.camera is not None
        hdus = []
        for amp in self.camera.amplifiers:
            hdu = self.by_name.get(amp.extname.upper())
            if hdu is None:
                raise BadInputError(self.path, f"missing amplifier HDU {amp.extname}")
            hdus.append(hdu)
        return tuple(hdus)


#: ``DETSIZE = '[1:4072,1:4000]'``: the assembled detector, 1-based inclusive.
_DETSIZE = re.compile(r"^\[1:(\d+),1:(\d+)\]$")


def check_sensor(path: Path, header: fits.Header, info: ObservationInfo,
                 camera: Camera) -> None:
    """Refuse a raw whose header describes another sensor than the geometry it is read with.

    The vendor (``CCD_MANU``) decides the amplifier geometry (an e2v segment has 10 prescan
    columns and 2002 rows of data, an ITL one 3 and 2000), and ``camera`` already has the
    header vendor's geometry (`camera_for`). A ``DETSIZE`` other than that sensor's
    assembled size means the header contradicts itself (vendor and geometry disagree),
    and reducing the file with either geometry would be wrong without a word. A different
    CCD serial (``LSST_NUM``) is only logged: the nominal values and products follow the
    detector (raft and slot).

    Raises
    ------
    BadInputError
        Naming the file, the header's value and the detector's.
    """
    detsize = header.get("DETSIZE")
    if isinstance(detsize, str) and detsize.strip():
        match = _DETSIZE.match(detsize.strip())
        ny, nx = camera.unbinned.detector_shape
        if match is None or (int(match[1]), int(match[2])) != (nx, ny):
            raise BadInputError(path, f"DETSIZE = {detsize!r} is not the {nx}×{ny} of an "
                                      f"{camera.vendor or camera.name} sensor ("
                                      f"{camera.label}): vendor and geometry disagree")
    if (info.detector_serial and camera.detector_serial
            and info.detector_serial != camera.detector_serial):
        log.info("%s: LSST_NUM %s, the detector table has %s for %s: nominal values and "
                 "products follow the detector", path, info.detector_serial,
                 camera.detector_serial, camera.label)


def camera_for(info: ObservationInfo, path: str | Path, camera: Camera | None = None
               ) -> Camera:
    """The (unbinned) description a frame is read with, from its translated header.

    The detector of the header (``camera`` when given: a caller's expected detector), with
    the geometry of the header's vendor (`with_vendor`: the 2019 engineering rafts held ITL
    CCDs in bays the focal plane fills with e2v ones; such a frame keeps its detector, its
    products and the slot's nominal values, and is logged).

    Raises
    ------
    BadInputError
        Naming ``path``: an instrument or detector without a description, a sensor atmospec
        does not reduce, an unknown vendor.
    """
    try:
        camera = (camera or load_camera(info.instrument, info.detector)).unbinned
        if info.vendor and camera.vendor and info.vendor.upper() != camera.vendor:
            # Logged, not warned: every frame of such a run says it (9 per exposure).
            log.info("%s: CCD_MANU %s in %s, whose table has an %s CCD (%s): reduced with the "
                     "%s geometry and the slot's nominal values", path, info.vendor,
                     camera.label, camera.vendor, camera.detector_serial, info.vendor)
            swapped = with_vendor(camera, info.vendor)
            camera = replace(swapped, detector_serial=info.detector_serial
                             or swapped.detector_serial)
    except BadInputError as exc:
        raise BadInputError(path, exc.problem) from None
    return camera


def _check_integer_pixels(path: Path, extname: str, key: str, bitpix: int) -> None:
    """Refuse an amplifier HDU whose pixel type is a float.

    A camera digitises integer ADU counts and writes them as integers (LATISS: BITPIX 32,
    or ZBITPIX 32 tile-compressed). A float type on an amplifier means a damaged BITPIX
    card: astropy would read the integer bytes as floats (20000 ADU as 2.8e-41) and the
    reduction would run on garbage without a complaint.
    """
    if bitpix < 0:
        raise BadInputError(path, f"{extname}: {key} = {bitpix} is a float pixel type; a "
                                  "camera raw holds integer ADU (BITPIX 8, 16, 32 or 64)")


def _check_compressed_datasums(layout: RawLayout) -> None:
    """Verify the ``DATASUM`` of every tile-compressed amplifier HDU that has one.

    The compressed heap is not checked by the header walk, and a changed byte in it
    decompresses to other pixels (or fails late, in the middle of the reduction). The
    compressor writes the table's ``DATASUM`` over the heap it wrote, so a mismatch is
    damage; unless it equals the ``ZDATASUM`` (the uncompressed image's sum): then it is that
    card copied over by the writer, and says nothing of the heap. Plain amplifier HDUs are
    not checked: their ``DATASUM`` is the camera's, and
    tools that rewrite the pixels keep it stale (the test template raw does), so a mismatch
    there does not tell damage from a rewrite.

    Raises
    ------
    BadInputError
        Naming the first HDU whose data do not match their ``DATASUM``.
    """
    # A DATASUM equal to the ZDATASUM is the image's card copied into the table header
    # (a real BOT raw of obs_lsst's test data has them so), not the heap's: not a check.
    checked = [hdu for hdu in layout.amp_hdus
               if hdu.is_compressed_image and "DATASUM" in hdu.header
               and hdu.header.get("DATASUM") != hdu.header.get("ZDATASUM")]
    if not checked:
        return
    source = _fits_source(layout)
    with open(source, "rb") if isinstance(source, Path) else contextlib.nullcontext(source) as f:
        for hdu in checked:
            if data_sum_matches(layout.path, f, hdu) is False:
                raise BadInputError(layout.path, f"damaged compressed data: {hdu.label} does "
                                                 "not match its DATASUM")


def read_raw(path: str | Path, camera: Camera | None = None) -> RawFrame:
    """Read a raw multi-extension file.

    Parameters
    ----------
    path : path
        Raw file: plain FITS, gzip-compressed (``.fits.gz``) or tile-compressed (``.fz``).
    camera : Camera, optional
        Expected camera; by default the one named by the header's instrument.

    Returns
    -------
    RawFrame

    Raises
    ------
    BadInputError
        For any file the pipeline cannot use; the message names the file. The headers are
        checked first (`check_raw_structure`), so a damaged file is refused before its
        pixels are read.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "no such file")
    try:
        layout = check_raw_structure(path, camera)
    except OSError as exc:
        raise BadInputError(path, f"cannot be read ({exc.strerror or short_error(exc)})"
                            ) from None
    segments, floating = _read_segments(layout)
    camera = layout.camera
    if floating:  # integer pixels are always finite
        bad = ~np.isfinite(segments)
        if bad.any():
            amps = sorted({camera.amplifiers[i].extname
                           for i in np.nonzero(bad.any(axis=(1, 2)))[0]})
            raise BadInputError(layout.path, f"{int(bad.sum())} non-finite (NaN/inf) raw "
                                             f"pixels in {', '.join(amps)}")
    return RawFrame(layout.path, layout.header, [h.header.copy() for h in layout.amp_hdus],
                    segments, layout.info, camera)


def _read_segments(layout: RawLayout) -> tuple[np.ndarray, bool]:
    """The amplifier pixels of a checked raw, ``(n_amps, ny, nx)`` float32, camera order,
    and whether any amp's pixels were floating-point values (integers need no test for
    NaN and infinities).

    Lossless RICE tiles (how LATISS and the LSST cameras write raws) are decoded by
    `atmospec.compression.decompress_rice_image`, with 2.7× less CPU than astropy and the same
    pixels; any other HDU is read by astropy.
    """
    path = layout.path
    segments = np.empty((len(layout.amp_hdus), *layout.segment_shape), dtype=np.float32)
    source = _fits_source(layout)
    floating = False
    try:
        with astropy_warnings_as_errors(path, "damaged pixel data"), \
                fits.open(source, memmap=False, lazy_load_hdus=True) as hdul:
            for i, amp in enumerate(layout.amp_hdus):
                data = _decoded_tiles(source, amp) if amp.is_compressed_image else None
                if data is None:
                    data = hdul[amp.index].data
                if data is None or data.shape != layout.segment_shape:
                    shape = None if data is None else data.shape
                    raise BadInputError(path, segment_shape_problem(layout.camera,
                                                                    amp.extname, shape))
                segments[i] = data
                floating |= data.dtype.kind not in "iub"
    except BadInputError:
        raise
    except Exception as exc:  # astropy raises many types for damaged (e.g. tile) data
        raise BadInputError(path, f"not a readable FITS file ({short_error(exc)})") from None
    return segments, floating


def _decoded_tiles(source: Path | io.BytesIO, hdu: HduLayout) -> np.ndarray | None:
    """The image of a tile-compressed HDU of a file if `decompress_rice_image` decodes its
    kind; None leaves the HDU to astropy: a gzip stream in memory (rare, and read once
    already), another kind of compression, or a tile table the fast path finds inconsistent,
    so that what is accepted or refused, and with which message, stays astropy's (the
    zeroed real LSSTCam raws of the test data have garbage tile descriptors that astropy
    reads as zeros)."""
    if isinstance(source, io.BytesIO):
        return None
    with open(source, "rb") as f:
        f.seek(hdu.data_start)
        data = f.read(hdu.data_size)
    try:
        return decompress_rice_image(data, hdu.header)
    except ValueError:
        return None


def _fits_source(layout: RawLayout) -> Path | io.BytesIO:
    """What astropy reads the pixels from: the file, or for gzip its FITS stream in memory.

    Astropy reads a gzip file's HDUs through seeks on the compressed stream, which restart
    the decompression: 5-8 s for a LATISS raw against 0.3 s for one pass. The stream was
    checked, so its length is known and bounds the read.
    """
    if layout.fits.compression != "gzip":
        return layout.path
    with gzip.open(layout.path, "rb") as stream:
        return io.BytesIO(stream.read(layout.fits.size))


def as_raw(item: RawFrame | str | Path, camera: Camera | None = None) -> RawFrame:
    """``item`` if it is already a `RawFrame`, else the frame read from that file."""
    return item if isinstance(item, RawFrame) else read_raw(item, camera)
