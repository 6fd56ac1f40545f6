"""Placing amplifier data sections into a detector image (and back, for the simulator).

Rubin's orientation for LATISS is used: it comes from the camera geometry (flips and grid
positions), not from the raw DETSEC keywords, which give a y-flipped image for ITL sensors.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

from atmospec.camera.description import Camera


def _oriented(section: np.ndarray, flip_x: bool, flip_y: bool) -> np.ndarray:
    """View of ``section`` (last two axes y, x) mirrored as the amp requires."""
    return section[..., :: -1 if flip_y else 1, :: -1 if flip_x else 1]


def assemble(segments: np.ndarray, camera: Camera, *, trimmed: bool = False) -> np.ndarray:
    """Assemble per-amp segments into one detector image in Rubin's orientation.

    Parameters
    ----------
    segments : numpy.ndarray
        ``(n_amps, ny, nx)`` in raw HDU order: full raw segments (overscans included) or,
        with ``trimmed=True``, data sections only.
    camera : Camera
        Geometry of the detector.
    trimmed : bool
        Whether ``segments`` already hold only the data sections.

    Returns
    -------
    numpy.ndarray
        Assembled image, shape ``camera.detector_shape``, dtype of ``segments``.
    """
    if segments.shape[0] != camera.n_amps:
        raise ValueError(f"expected {camera.n_amps} segments, got {segments.shape[0]}")
    out = np.empty(camera.detector_shape, dtype=segments.dtype)
    data = camera.data_bbox.slices
    for i, amp in enumerate(camera.amplifiers):
        section = segments[i] if trimmed else segments[i][data]
        out[camera.amp_slices(amp)] = _oriented(section, amp.flip_x, amp.flip_y)
    return out


def disassemble(image: np.ndarray, camera: Camera) -> np.ndarray:
    """Cut an assembled image into per-amp data sections in readout orientation.

    The inverse of ``assemble(..., trimmed=True)``.

    Parameters
    ----------
    image : numpy.ndarray
        Assembled image of shape ``camera.detector_shape``.
    camera : Camera
        Geometry of the detector.

    Returns
    -------
    numpy.ndarray
        ``(n_amps, data_ny, data_nx)`` in raw HDU order.
    """
    if image.shape != camera.detector_shape:
        raise ValueError(f"expected shape {camera.detector_shape}, got {image.shape}")
    out = np.empty((camera.n_amps, *camera.data_bbox.shape), dtype=image.dtype)
    for i, amp in enumerate(camera.amplifiers):
        out[i] = _oriented(image[camera.amp_slices(amp)], amp.flip_x, amp.flip_y)
    return out


#: How the unbinned pixels of a binned pixel combine: charge sums, levels and fractions
#: average, flags spread to the binned pixel.
_REDUCERS = MappingProxyType({"sum": np.sum, "mean": np.mean, "any": np.any})


def bin_segments(segments: np.ndarray, bx: int, by: int, how: str = "sum") -> np.ndarray:
    """Combine blocks of ``by`` × ``bx`` pixels of readout-ordered segments, as on chip.

    Blocks start at the first pixel read (index 0 of both axes); trailing pixels that do
    not fill a block are dropped, as a binned readout of the same length does.

    Parameters
    ----------
    segments : numpy.ndarray
        ``(..., ny, nx)`` in readout orientation.
    bx, by : int
        Binning along x and y.
    how : str
        ``sum`` (charge), ``mean`` (levels, relative responses) or ``any`` (flags).

    Returns
    -------
    numpy.ndarray
        ``(..., ny // by, nx // bx)``.
    """
    reduce = _REDUCERS[how]
    ny, nx = segments.shape[-2] // by, segments.shape[-1] // bx
    blocks = segments[..., : ny * by, : nx * bx].reshape(
        *segments.shape[:-2], ny, by, nx, bx)
    return reduce(blocks, axis=(-3, -1))


def bin_image(image: np.ndarray, binned: Camera, how: str = "sum") -> np.ndarray:
    """The assembled image a ``binned`` readout makes of an unbinned assembled ``image``.

    Each amp's data section is placed back in its raw segment (readout orientation), the
    segments are binned (`bin_segments`) and the binned data sections assembled: binned
    pixels straddling the data section's edge are not in the result, as they are not in a
    binned raw's data section.

    Parameters
    ----------
    image : numpy.ndarray
        Unbinned assembled image (``binned.unbinned.detector_shape``); bool for ``any``.
    binned : Camera
        The binned geometry (`Camera.binned`).
    how : str
        As `bin_segments`.

    Returns
    -------
    numpy.ndarray
        Shape ``binned.detector_shape``.
    """
    unbinned = binned.unbinned
    sections = disassemble(image, unbinned)
    full = np.zeros((unbinned.n_amps, *unbinned.raw_bbox.shape), dtype=image.dtype)
    full[(slice(None), *unbinned.data_bbox.slices)] = sections
    segments = bin_segments(full, *binned.binning, how=how)
    return assemble(segments, binned)
