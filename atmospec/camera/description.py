"""Detector descriptions: amplifier geometry, placement, gains, read noise, saturation.

A `Camera` describes one detector (CCD) of one instrument: everything ISR and the products
need. It is built from three kinds of data file in ``data/cameras/`` and nothing in the
pipeline branches on the instrument name:

* ``sensors.yaml``: per sensor type (ITL, E2V, the ITL wavefront sensor) the amplifier
  geometry and placement (obs_lsst ``cameraHeader.yaml``);
* ``<instrument>.yaml``: pixel, plate scale, default saturation and suspect levels, and the
  detector table;
* ``<instrument>_detectors.ecsv``: one row per amplifier of every detector (name such as
  ``R22_S11``, number, CCD serial, sensor type, nominal gain, read noise, saturation).

LATISS is one instrument of one detector (``RXX_S00``); LSSTCam has 205 (189 science, 8
guide and 8 wavefront sensors), ComCam 9 and the TS8 raft stand 9 per raft.

The file describes the unbinned readout. The geometry of an on-chip binned readout is derived
from it here and nowhere else (`Camera.binned`): binned pixel ``k`` of a segment sums the
unbinned pixels ``b·k … b·k + b − 1`` of the serial register (columns) and of the parallel
transfers (rows), counted from the first pixel read; each box keeps the binned pixels made
only of its own pixels. For LATISS at 2×2 a segment is 288 × 1024, the data section
``[2:256) × [0:1000)`` (254 × 1000: the binned pixel holding the last prescan column and the
first data column belongs to no box), the serial overscan 32 columns, the parallel overscan
24 rows, and the assembled image 2032 × 2000. No binned LATISS raw is public: this follows
the sequencer's readout order (see docs/isr.md, "Binned raws").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType

import numpy as np
import yaml
from astropy.table import Table

from atmospec.errors import BadInputError


@dataclass(frozen=True)
class BBox:
    """A box in 0-based pixel coordinates: ``x0, y0`` lower-left corner, ``nx, ny`` size."""

    x0: int
    """First column."""
    y0: int
    """First row."""
    nx: int
    """Number of columns."""
    ny: int
    """Number of rows."""

    @classmethod
    def from_list(cls, box: list[list[int]]) -> BBox:
        """Build from ``[[x0, y0], [nx, ny]]`` as written in camera files."""
        (x0, y0), (nx, ny) = box
        return cls(int(x0), int(y0), int(nx), int(ny))

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, columns)`` slices selecting the box in a numpy array."""
        return slice(self.y0, self.y0 + self.ny), slice(self.x0, self.x0 + self.nx)

    @property
    def shape(self) -> tuple[int, int]:
        """Numpy shape ``(ny, nx)``."""
        return self.ny, self.nx

    @property
    def fits_section(self) -> str:
        """The box as a 1-based inclusive FITS section, ``[x1:x2,y1:y2]`` (e.g. DATASEC)."""
        return f"[{self.x0 + 1}:{self.x0 + self.nx},{self.y0 + 1}:{self.y0 + self.ny}]"

    def binned(self, bx: int, by: int) -> BBox:
        """The binned pixels made only of this box's pixels.

        Binned pixel ``k`` covers unbinned ``b·k … b·k + b − 1``: the box's start rounds up
        and its end rounds down, so a binned pixel straddling two boxes is in neither (its
        size may be 0 when the box is narrower than a binned pixel).
        """
        x0, y0 = -(-self.x0 // bx), -(-self.y0 // by)
        x1, y1 = (self.x0 + self.nx) // bx, (self.y0 + self.ny) // by
        return BBox(x0, y0, max(x1 - x0, 0), max(y1 - y0, 0))


@dataclass(frozen=True)
class Amplifier:
    """One readout amplifier ("segment") of a CCD."""

    name: str
    """Amplifier name as in Rubin's camera geometry, e.g. ``C10``."""
    extname: str
    """EXTNAME of its HDU in a raw file, e.g. ``Segment10``."""
    hdu: int
    """Index of its HDU in a raw file."""
    flip_x: bool
    """Mirror the data section in x when placing it in the assembled image."""
    flip_y: bool
    """Mirror the data section in y when placing it in the assembled image."""
    ix: int
    """Column of the amp in the assembled grid (units of data-section width)."""
    iy: int
    """Row of the amp in the assembled grid (units of data-section height), 0 = bottom."""
    gain: float
    """Nominal gain, e⁻/ADU."""
    read_noise: float
    """Nominal read noise, e⁻."""
    saturation_adu: float = math.inf
    """Saturation level of this amp, ADU above the overscan level (the detector table's,
    else the instrument's default)."""


@dataclass(frozen=True)
class Camera:
    """Everything the pipeline needs to know about one detector of one instrument."""

    name: str
    """Instrument name, as the header translator reports it (e.g. ``LATISS``)."""
    detector_serial: str
    """Serial number of the CCD (``LSST_NUM``, e.g. ``ITL-3800C-068``)."""
    pixel_size_mm: float
    """Physical pixel pitch, mm."""
    plate_scale: float
    """Arcseconds per unbinned pixel (whatever `binning`; see `pixel_scale`)."""
    raw_bbox: BBox
    """Full raw segment (all amps have the same layout), at `binning`, as are the other
    boxes."""
    data_bbox: BBox
    """Imaging pixels inside a raw segment."""
    serial_prescan_bbox: BBox
    """Serial prescan columns inside a raw segment."""
    serial_overscan_bbox: BBox
    """Serial overscan columns inside a raw segment."""
    parallel_overscan_bbox: BBox
    """Parallel overscan rows inside a raw segment."""
    saturation_adu: float
    """The instrument's default saturation level, ADU above the overscan level, for amps
    whose detector table gives none (binned pixels too: the limit is the output chain's,
    the same for every binning; an assumption, see docs/isr.md). Per amp:
    `saturation_levels`."""
    suspect_adu: float
    """Level above which pixels are flagged SUSPECT (non-linear regime), ADU; infinite when
    the instrument states none."""
    amplifiers: tuple[Amplifier, ...]
    """Amplifiers in raw HDU order."""
    detector: str = ""
    """Detector name, raft and slot (``R22_S11``; LATISS ``RXX_S00``)."""
    detector_id: int = 0
    """Detector number within the instrument (obs_lsst's: R22_S11 of LSSTCam is 94)."""
    vendor: str = ""
    """CCD manufacturer, ``ITL`` or ``E2V`` (as the header's ``CCD_MANU``)."""
    sensor_type: str = ""
    """Sensor type of ``data/cameras/sensors.yaml`` (``ITL``, ``E2V``)."""
    binning: tuple[int, int] = (1, 1)
    """On-chip binning ``(x, y)`` of the boxes and of `detector_shape`."""
    base: Camera | None = field(default=None, repr=False, compare=False)
    """The unbinned description this one was derived from (None: this one is unbinned)."""

    @property
    def unbinned(self) -> Camera:
        """The description of the unbinned readout."""
        return self.base or self

    def binned(self, bx: int, by: int) -> Camera:
        """The description of a raw read out with on-chip binning ``bx`` × ``by``.

        Derived from the unbinned geometry (`BBox.binned`); amplifiers, gains, read noise
        and saturation levels are unchanged (a binned pixel is read once).

        Parameters
        ----------
        bx, by : int
            Binning along x (serial) and y (parallel), ≥ 1.

        Returns
        -------
        Camera
            ``self.unbinned`` for 1 × 1; cached, so the same object for the same binning.

        Raises
        ------
        ValueError
            If the binning leaves a segment region (data, an overscan) without pixels.
        """
        return _binned_camera(self.unbinned, int(bx), int(by))

    @property
    def pixel_scale(self) -> float:
        """Arcseconds per pixel of this binning: `plate_scale` × √(bx·by) (the side of a
        square of the binned pixel's area)."""
        return self.plate_scale * math.sqrt(self.binning[0] * self.binning[1])

    @property
    def n_amps(self) -> int:
        """Number of amplifiers."""
        return len(self.amplifiers)

    @property
    def amp_names(self) -> tuple[str, ...]:
        """Amplifier names in raw HDU order."""
        return tuple(a.name for a in self.amplifiers)

    @property
    def detector_shape(self) -> tuple[int, int]:
        """Assembled image shape ``(ny, nx)``."""
        nx = 1 + max(a.ix for a in self.amplifiers)
        ny = 1 + max(a.iy for a in self.amplifiers)
        return ny * self.data_bbox.ny, nx * self.data_bbox.nx

    @property
    def nominal_gains(self) -> np.ndarray:
        """Nominal gains (e⁻/ADU) in HDU order."""
        return np.array([a.gain for a in self.amplifiers])

    @property
    def nominal_read_noise(self) -> np.ndarray:
        """Nominal read noise (e⁻) in HDU order."""
        return np.array([a.read_noise for a in self.amplifiers])

    @property
    def saturation_levels(self) -> np.ndarray:
        """Saturation level per amp (ADU above the overscan) in HDU order."""
        return np.array([a.saturation_adu for a in self.amplifiers])

    @property
    def label(self) -> str:
        """``<instrument> <detector>`` for messages (``LSSTCam R22_S11``)."""
        return f"{self.name} {self.detector}" if self.detector else self.name

    def amp_index(self, name: str) -> int:
        """Index (HDU order) of the amplifier called ``name``."""
        try:
            return self.amp_names.index(name)
        except ValueError:
            raise KeyError(f"{self.name} has no amplifier {name!r}") from None

    def amp_slices(self, amp: Amplifier) -> tuple[slice, slice]:
        """``(rows, columns)`` of the amp's data section in the assembled image."""
        ny, nx = self.data_bbox.shape
        return slice(amp.iy * ny, (amp.iy + 1) * ny), slice(amp.ix * nx, (amp.ix + 1) * nx)

    def amp_map(self) -> np.ndarray:
        """Assembled-image array of amplifier indices (HDU order), for per-amp arithmetic."""
        out = np.empty(self.detector_shape, dtype=np.int8)
        for i, amp in enumerate(self.amplifiers):
            out[self.amp_slices(amp)] = i
        return out


_BINNED_BOXES = ("raw_bbox", "data_bbox", "serial_prescan_bbox", "serial_overscan_bbox",
                 "parallel_overscan_bbox")
#: Regions ISR reads: a binning leaving one of them empty is not a usable readout.
_NEEDED_BOXES = ("data_bbox", "serial_overscan_bbox", "parallel_overscan_bbox")


@cache
def _binned_camera(unbinned: Camera, bx: int, by: int) -> Camera:
    if (bx, by) == (1, 1):
        return unbinned
    if bx < 1 or by < 1:
        raise ValueError(f"binning {bx}×{by}: factors must be at least 1")
    boxes = {name: getattr(unbinned, name).binned(bx, by) for name in _BINNED_BOXES}
    empty = [name.removesuffix("_bbox") for name in _NEEDED_BOXES if 0 in boxes[name].shape]
    if empty:
        raise ValueError(f"binning {bx}×{by} leaves no {', '.join(empty)} pixels")
    return replace(unbinned, **boxes, binning=(bx, by), base=unbinned)


def frame_camera(camera: Camera, binning: tuple[int, int], source: str | Path) -> Camera:
    """The geometry of one raw: ``camera`` at the binning its header states.

    Parameters
    ----------
    camera : Camera
        The instrument (any binning: its unbinned description is used).
    binning : tuple of int
        ``(BINX, BINY)`` of the frame (`ObservationInfo.binning`).
    source : path or str
        The frame, for the message.

    Returns
    -------
    Camera

    Raises
    ------
    BadInputError
        When no readout of ``camera`` can have that binning.
    """
    try:
        return camera.binned(*binning)
    except ValueError as exc:
        raise BadInputError(source, f"BINX={binning[0]}, BINY={binning[1]}: {exc}") from None


def segment_shape_problem(camera: Camera, extname: str, shape: tuple[int, ...] | None) -> str:
    """The one-line message for an amplifier HDU whose shape is not ``camera``'s segment."""
    bx, by = camera.binning
    return (f"{extname} has shape {shape}, expected {camera.raw_bbox.shape} for "
            f"BINX={bx}, BINY={by}")


def load_camera(name: str = "latiss", detector: str | None = None) -> Camera:
    """The description of one detector of an instrument shipped with atmospec.

    Parameters
    ----------
    name : str
        Instrument name, case-insensitive (``latiss``, ``lsstcam``, ``lsstcomcam``,
        ``lsst-ts8``): ``data/cameras/<name>.yaml``.
    detector : str, optional
        Detector name (``R22_S11``); may be omitted for an instrument of one detector.

    Returns
    -------
    Camera
        The frozen description (cached: the same object on every call).

    Raises
    ------
    BadInputError
        Without a file (the caller names it): unknown instrument, unknown detector, a
        detector omitted for an instrument of several, or a sensor the pipeline does not
        reduce (the wavefront sensors), each with the reason.
    """
    instrument = _load_instrument(name.lower())
    if detector is None:
        if len(instrument.detectors) != 1:
            raise BadInputError(None, f"{instrument.name} has {len(instrument.detectors)} "
                                      "detectors: name one (e.g. R22_S11)")
        detector = next(iter(instrument.detectors))
    return _load_detector(instrument.name.lower(), detector)


def list_detectors(name: str) -> tuple[str, ...]:
    """Names of an instrument's detectors, in detector-number order (all of them, the
    wavefront sensors included: `load_camera` refuses those)."""
    detectors = _load_instrument(name.lower()).detectors
    return tuple(sorted(detectors, key=lambda d: detectors[d].detector_id))


@dataclass(frozen=True)
class DetectorEntry:
    """One detector of an instrument's table (``data/cameras/<instrument>_detectors.ecsv``)."""

    detector_id: int
    """Detector number within the instrument."""
    serial: str
    """CCD serial (``LSST_NUM``)."""
    sensor_type: str
    """Sensor type of ``sensors.yaml`` (``ITL``, ``E2V``, ``ITL_WF``)."""
    amps: dict[str, tuple[float, float, float]] = field(repr=False)
    """Amp name → (gain, read noise, saturation ADU or NaN)."""

    @property
    def vendor(self) -> str:
        """CCD manufacturer (``ITL``, ``E2V``)."""
        return str(_sensor_types()[self.sensor_type]["vendor"])


def detector_table(name: str) -> Mapping[str, DetectorEntry]:
    """Every detector of an instrument, by name (``R22_S11``), read-only.

    Parameters
    ----------
    name : str
        Instrument name, case-insensitive (`load_camera`).

    Raises
    ------
    BadInputError
        For an instrument without a camera description.
    """
    return MappingProxyType(_load_instrument(name.lower()).detectors)


@dataclass(frozen=True)
class _Instrument:
    name: str
    pixel_size_mm: float
    plate_scale: float
    saturation_adu: float
    suspect_adu: float
    detectors: dict[str, DetectorEntry]
    shipped: Mapping[str, Mapping[str, str]]
    """Detector → product kind → file in ``data/`` (``shipped_products``)."""


def _data_file(name: str):
    return resources.files("atmospec.data") / "cameras" / name


@cache
def _sensor_types() -> dict:
    return yaml.safe_load(_data_file("sensors.yaml").read_text())


@cache
def _load_instrument(name: str) -> _Instrument:
    ref = _data_file(f"{name}.yaml")
    if not _safe_name(name) or not ref.is_file():
        raise BadInputError(None, f"no camera description for instrument {name!r} (known: "
                                  f"{', '.join(_known_instruments())}): its raws cannot be "
                                  "reduced")
    doc = yaml.safe_load(ref.read_text())
    table = Table.read(_data_file(doc["detectors"]).read_text(), format="ascii.ecsv")
    detectors: dict[str, DetectorEntry] = {}
    for row in table:
        det = str(row["detector"])
        entry = detectors.get(det)
        if entry is None:
            entry = detectors[det] = DetectorEntry(int(row["detector_id"]), str(row["serial"]),
                                                  str(row["sensor_type"]), {})
        entry.amps[str(row["amp"])] = (float(row["gain"]), float(row["read_noise"]),
                                       float(row["saturation_adu"]))
    suspect = doc.get("suspect_adu")
    plate_scale = doc.get("plate_scale_arcsec_per_pixel")
    return _Instrument(
        name=doc["name"], pixel_size_mm=float(doc["pixel_size_mm"]),
        plate_scale=math.nan if plate_scale is None else float(plate_scale),
        saturation_adu=float(doc["saturation_adu"]),
        suspect_adu=math.inf if suspect is None else float(suspect),
        detectors=detectors, shipped=doc.get("shipped_products") or {})


def shipped_product(camera: Camera, kind: str) -> Path | None:
    """The product of ``kind`` shipped for ``camera``'s detector, or None.

    LATISS ships its measured crosstalk matrix and defect list (``shipped_products`` of
    ``data/cameras/latiss.yaml``); the LSST cameras ship none, and ISR then applies no
    crosstalk correction and masks no defect until products are given.

    Parameters
    ----------
    camera : Camera
        The detector.
    kind : str
        ``crosstalk`` or ``defects``.
    """
    shipped = _load_instrument(camera.name.lower()).shipped.get(camera.detector, {})
    name = shipped.get(kind)
    return None if name is None else Path(str(resources.files("atmospec.data") / name))


def _known_instruments() -> list[str]:
    folder = resources.files("atmospec.data") / "cameras"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir()
                  if p.name.endswith(".yaml") and p.name != "sensors.yaml")


def _safe_name(name: str) -> bool:
    return all(c.isalnum() or c in "-_" for c in name) and bool(name)


@cache
def _load_detector(instrument_name: str, detector: str) -> Camera:
    instrument = _load_instrument(instrument_name)
    row = instrument.detectors.get(detector)
    if row is None:
        raise BadInputError(None, f"{instrument.name} has no detector {detector!r} (raft "
                                  "and slot such as R22_S11)")
    return _with_geometry(instrument, detector, row, row.sensor_type)


def _with_geometry(instrument: _Instrument, detector: str, row: DetectorEntry,
                   sensor_type: str) -> Camera:
    sensor = _sensor_types()[sensor_type]
    if "unsupported" in sensor:
        raise BadInputError(None, f"{instrument.name} {detector} is "
                                  f"{sensor['unsupported']}")
    amps = []
    for hdu, (amp, extname, flip_x, flip_y, ix, iy) in enumerate(sensor["amplifiers"], 1):
        gain, read_noise, saturation = row.amps[amp]
        amps.append(Amplifier(
            name=amp, extname=extname, hdu=hdu, flip_x=bool(flip_x), flip_y=bool(flip_y),
            ix=int(ix), iy=int(iy), gain=gain, read_noise=read_noise,
            saturation_adu=instrument.saturation_adu if math.isnan(saturation)
            else saturation))
    return Camera(
        name=instrument.name,
        detector_serial=row.serial,
        pixel_size_mm=instrument.pixel_size_mm,
        plate_scale=instrument.plate_scale,
        raw_bbox=BBox.from_list(sensor["raw_bbox"]),
        data_bbox=BBox.from_list(sensor["data_bbox"]),
        serial_prescan_bbox=BBox.from_list(sensor["serial_prescan_bbox"]),
        serial_overscan_bbox=BBox.from_list(sensor["serial_overscan_bbox"]),
        parallel_overscan_bbox=BBox.from_list(sensor["parallel_overscan_bbox"]),
        saturation_adu=instrument.saturation_adu,
        suspect_adu=instrument.suspect_adu,
        amplifiers=tuple(amps),
        detector=detector,
        detector_id=row.detector_id,
        vendor=str(sensor["vendor"]),
        sensor_type=sensor_type,
    )


def with_vendor(camera: Camera, vendor: str) -> Camera:
    """``camera``'s detector holding a CCD of another vendor than its table's.

    The 2019 BOT runs held engineering rafts: bay R22 carried ITL CCDs (ITL-3800C-139 in
    slot S21) where the focal plane now has e2v ones, and their raws are ITL readouts. The
    frame keeps its detector (raft and slot), products and nominal values (those of the
    table's CCD: only approximate for this one), and takes the geometry of its own
    vendor's sensor.

    Parameters
    ----------
    camera : Camera
        The detector as its instrument's table describes it (unbinned).
    vendor : str
        ``ITL`` or ``E2V`` (the header's ``CCD_MANU``).

    Raises
    ------
    BadInputError
        Without a file (the caller names it): a vendor with no sensor description.
    """
    vendor = vendor.upper()
    if vendor == camera.vendor.upper():
        return camera
    if vendor not in _sensor_types():
        raise BadInputError(None, f"CCD_MANU = {vendor!r} is not a sensor vendor atmospec "
                                  f"knows (ITL, E2V)")
    return _vendor_camera(camera.name.lower(), camera.detector, vendor)


@cache
def _vendor_camera(instrument_name: str, detector: str, sensor_type: str) -> Camera:
    instrument = _load_instrument(instrument_name)
    return _with_geometry(instrument, detector, instrument.detectors[detector], sensor_type)


@dataclass(frozen=True)
class DetectorPlace:
    """Where a detector sits: its raft's bay in the focal plane and its slot in the raft.

    The LSST Camera names a detector ``R<row><column>_S<row><column>``: the raft's bay in
    the 5 × 5 grid of the focal plane and the CCD's slot in the raft's 3 × 3 grid, both
    counted from the lower left (obs_lsst's raft geometry: ``S01`` is right of ``S00``,
    ``S10`` above it). This is the one reading of those names.
    """

    raft: str
    """Raft part of the name (``R22``; a TS8 raft's ``RTM-010``; LATISS ``RXX``)."""
    slot: str
    """Slot part of the name (``S11``; a corner raft's ``SG0``)."""
    bay: tuple[int, int] | None
    """``(column, row)`` of the raft's bay in the focal plane; None for a raft that names
    no bay (a TS8 raft, LATISS's ``RXX``)."""
    cell: tuple[int, int] | None
    """``(column, row)`` of the slot in its raft; None for the corner rafts' guide and
    wavefront sensors (``SG0``, ``SG1``, ``SW0``, ``SW1``), whose placement in a rotated
    corner raft is not described here."""


def _grid_digits(text: str, letter: str) -> tuple[int, int] | None:
    """``(column, row)`` of ``R<row><column>`` / ``S<row><column>``, or None."""
    if len(text) == 3 and text[0] == letter and text[1:].isdigit():
        return int(text[2]), int(text[1])
    return None


def detector_place(detector: str) -> DetectorPlace:
    """The raft bay and slot of a detector named ``<raft>_<slot>``.

    Parameters
    ----------
    detector : str
        ``R22_S11``, ``RTM-010_S11`` (TS8), ``RXX_S00`` (LATISS).

    Returns
    -------
    DetectorPlace

    Raises
    ------
    ValueError
        For a name without a raft and a slot.
    """
    raft, sep, slot = detector.rpartition("_")
    if not sep or not raft or not slot:
        raise ValueError(f"{detector!r} names no raft and slot (such as R22_S11)")
    return DetectorPlace(raft, slot, _grid_digits(raft, "R"), _grid_digits(slot, "S"))


def amp_grid(vendor: str | None) -> Mapping[str, tuple[int, int]]:
    """Where each amplifier of a sensor sits in its assembled image.

    Parameters
    ----------
    vendor : str or None
        Sensor vendor or type, case-insensitive (``ITL``, ``e2v``); None or unknown: the
        first 16-amplifier sensor type of ``sensors.yaml`` (the ITL and e2v grids are the
        same: C10 … C17 along the top from the left, C07 … C00 along the bottom from the
        right).

    Returns
    -------
    Mapping
        Amplifier name → ``(ix, iy)``, in units of the data section, ``iy = 0`` at the
        bottom (`Amplifier.ix`, `Amplifier.iy`).
    """
    types = _sensor_types()
    key = (vendor or "").upper()
    if key not in types or "amplifiers" not in types[key]:
        key = next(k for k, v in types.items() if "amplifiers" in v)
    return MappingProxyType({str(a[0]): (int(a[4]), int(a[5]))
                             for a in types[key]["amplifiers"]})
