"""Source detection: matched filtering, thresholding, segmentation and deblending.

The background-subtracted image is filtered with a Gaussian matched to a first guess of the
PSF FWHM and divided by the noise of the filtered image, so that the detection image is a
matched-filter signal-to-noise map (as in Rubin's SourceDetectionTask): the threshold
`DetectionConfig.nsigma` is then a significance, independent of the kernel width. (photutils'
examples threshold the filtered image in units of the *unfiltered* RMS, which for a 10-pixel
PSF is a 20-σ cut; that would lose the faint stars.)

Masked pixels (`DetectionConfig.mask_planes`: bad columns, cosmic rays, no data) and
non-finite pixels are set to the background before filtering, so they cannot create
sources or spread into their neighbours. Saturated pixels are kept: they belong to stars.
The filter and the threshold run on the image summed in 2×2 blocks (4× less work; a
10-pixel PSF loses nothing), and the segmentation is expanded back to full resolution.

The white-noise prediction of the filtered image's noise is then corrected by its measured
spread (the lower half of the S/N distribution, which sources do not reach): row- and
column-correlated read-out noise left by the overscan correction makes the filtered image
~20 % noisier than white noise would, and would otherwise turn 4-σ noise into 5-σ sources.

Segmentation uses `photutils.segmentation.detect_sources`. Deblending then looks for
peaks segment by segment, on a cutout filtered with DAOFIND's *lowered Gaussian* (a
Gaussian of the PSF's width minus its mean over its support, `peak_filter_fwhm`,
`peak_filter_radius`) and divided by the local noise (from the VARIANCE plane, so the
Poisson noise of bright stars counts). That filter is blind to a sloping background: a
faint star on the wing of a bright one, a mere shoulder after the matched filter, keeps a
peak of its own. A peak counts if it reaches `peak_nsigma` and rises `peak_prominence` σ
above the saddle towards any higher peak (an h-maximum). Masked pixels are filled from
their highest neighbours first, so a masked hole never splits a star.

Two deblenders are available (`DetectionConfig.deblend_method`):

* ``"peaks"`` (default): the significant peaks seed a watershed of the segment
  (scikit-image); children smaller than `DetectionConfig.n_pixels` are merged back.
* ``"photutils"``: `photutils.segmentation.deblend_sources` (multi-thresholding with
  `n_levels` and `contrast`) on the segments that have two or more significant peaks. Its
  contrast test weighs a component by its flux above the separating level, so faint stars
  on the wings of much brighter ones (flux ratio ≳ 3 within 2 FWHM, or stars in the halo of
  a saturated star) stay merged; on the simulated LATISS fields this costs ~1 % of
  completeness, hence the default.

In a segment holding saturated pixels, everything within half a FWHM of them is one star
(a clipped core or bleed trail must not become a row of spurious stars) while stars in the
saturated star's halo are split off. Each deblended child also gets the position of its
peak, a starting point that the neighbour's light does not pull.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from photutils.segmentation import SegmentationImage, deblend_sources, detect_sources
from photutils.utils.exceptions import NoDetectionsWarning
from scipy import ndimage
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from atmospec.imaging.background import BackgroundResult, masked_block_sum

log = logging.getLogger(__name__)

__all__ = [
    "DetectionConfig",
    "DetectionResult",
    "deblend_segments",
    "detect",
    "gaussian_noise_factor",
    "measured_noise",
]

#: FWHM of a Gaussian in units of its standard deviation.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass(frozen=True)
class DetectionConfig:
    """How sources are found."""

    nsigma: float = 5.0
    """Detection threshold: significance in the matched-filter S/N image."""
    fwhm_guess_arcsec: float = 1.0
    """First guess of the PSF FWHM, arcsec, for the matched filter (a factor 1.5 wrong
    costs under 10 % in S/N)."""
    truncate: float = 3.0
    """The Gaussian kernels are cut at this many standard deviations."""
    n_pixels: int = 15
    """Minimum number of connected pixels above the threshold for a source (and for each
    deblended child)."""
    bin_factor: int = 2
    """The matched filter and the thresholding run on the image summed in blocks of this
    size (4× less work for 2), the segmentation is then expanded back to full resolution;
    blocks are used only while the FWHM spans at least `min_fwhm_binned` of them."""
    min_fwhm_binned: float = 3.0
    """Smallest FWHM, in binned pixels, for which binning is used."""
    connectivity: int = 8
    """Pixel connectivity of a segment (4 or 8)."""
    measure_noise: bool = True
    """Rescale the S/N image by its measured noise (see the module notes)."""
    deblend: bool = True
    """Split segments holding several sources."""
    deblend_method: Literal["peaks", "photutils"] = "peaks"
    """Watershed from significant peaks, or photutils' multi-thresholding deblender."""
    peak_filter_fwhm: float = 1.0
    """FWHM of the lowered-Gaussian peak filter used for deblending, in PSF FWHM."""
    peak_filter_radius: float = 1.5
    """Half-width of the peak filter's square support, in its Gaussian σ."""
    peak_nsigma: float = 4.0
    """A deblended peak must reach this significance in the peak-filtered image ..."""
    peak_prominence: float = 3.0
    """... and rise this many σ above the saddle towards any higher peak."""
    n_levels: int = 32
    """Number of multi-thresholding levels (``photutils`` deblender)."""
    contrast: float = 0.005
    """Fraction of a segment's flux a component needs to be split off (``photutils``
    deblender)."""
    mask_planes: tuple[str, ...] = ("BAD", "CR", "NO_DATA")
    """Mask planes set to the background before filtering (cannot create sources)."""


@dataclass
class DetectionResult:
    """Segmentation of one image and what was needed to produce it."""

    segmentation: SegmentationImage | None
    """Segmentation image (None when nothing was detected)."""
    snr: np.ndarray
    """Matched-filter S/N image used for detection (float32; block-binned by
    ``bin_factor``)."""
    bin_factor: int
    """Binning of ``snr`` relative to the image."""
    fwhm_px: float
    """FWHM of the matched filter, pixels."""
    noise_factor: float
    """Noise of the filtered image in units of the unfiltered per-pixel noise (white-noise
    prediction times the measured correction)."""
    noise_correction: float = 1.0
    """Measured noise of the S/N image before rescaling (1 for white noise)."""
    deblended_parents: dict[int, list[int]] = field(default_factory=dict)
    """Labels of the children of each deblended parent segment."""
    peaks: dict[int, tuple[float, float]] = field(default_factory=dict)
    """Peak position ``(x, y)`` of deblended children (see `deblend_segments`)."""

    @property
    def n_sources(self) -> int:
        """Number of segments."""
        return 0 if self.segmentation is None else int(self.segmentation.n_labels)

    @property
    def blended_labels(self) -> set[int]:
        """Labels that are children of a deblended segment."""
        return {c for children in self.deblended_parents.values() for c in children}


def gaussian_noise_factor(sigma: float, truncate: float) -> float:
    """Noise of white noise after `scipy.ndimage.gaussian_filter`, per unit input noise.

    The discrete kernel is the product of two normalised 1D kernels ``k``, so the factor is
    ``sqrt(Σ K²) = Σ k²``.
    """
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=float)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    return float(np.sum(k**2))


def measured_noise(snr: np.ndarray, stride: int = 4) -> float:
    """Standard deviation of the noise of an S/N image, from its lower half.

    The distance between the median and the 15.9th percentile is one sigma for Gaussian
    noise and is barely moved by sources, which only populate the upper tail. A strided
    subsample (``stride`` in each direction) is enough and keeps this cheap.
    """
    sample = snr[::stride, ::stride]
    sample = sample[sample != 0.0]
    if sample.size < 1000:
        return 1.0
    med, low = np.percentile(sample, [50.0, 15.865])
    sigma = float(med - low)
    return sigma if np.isfinite(sigma) and sigma > 0 else 1.0


def _fill_from_above(values: np.ndarray, bad: np.ndarray, max_iterations: int = 8
                     ) -> np.ndarray:
    """Copy of ``values`` with bad pixels set to the largest of their valid neighbours,
    growing inwards (holes wider than ``2 max_iterations`` keep zeros at their centre).

    Filling from above (not with an average) means a masked hole can never become a dip
    between two false peaks, nor a peak of its own higher than its rim.
    """
    out = np.where(bad, -np.inf, values).astype(np.float32)
    todo = bad.copy()
    for _ in range(max_iterations):
        if not todo.any():
            break
        grown = ndimage.maximum_filter(out, size=3)
        fill = todo & np.isfinite(grown)
        out[fill] = grown[fill]
        todo &= ~fill
    out[todo] = 0.0
    return out


def _lowered_gaussian_noise(sigma: float, radius: int) -> float:
    """White-noise factor of a Gaussian minus its mean over a ``2 radius + 1`` square."""
    x = np.arange(-radius, radius + 1, dtype=float)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    kernel = np.outer(k, k)
    return float(np.sqrt(np.sum((kernel - kernel.mean()) ** 2)))


def _peak_markers(
    snr: np.ndarray, inside: np.ndarray, threshold: float, prominence: float,
    saturated: np.ndarray | None, sat_radius: int, window: int = 3,
) -> np.ndarray:
    """Markers of the significant peaks of a segment (int32, 0 elsewhere).

    Peaks are h-maxima of ``snr`` (height ``prominence``) inside the segment and above
    ``threshold``; with saturated pixels, all of them and everything within
    ``sat_radius`` pixels is one marker (label 1). Segments with fewer than two maxima of
    a ``window``-pixel neighbourhood are skipped before the (costlier) h-maximum transform.
    """
    has_sat = saturated is not None and bool((saturated & inside).any())
    if not has_sat:
        above = inside & (snr > threshold)
        rows, cols = np.nonzero(above)
        if rows.size < 2:
            return np.zeros(snr.shape, dtype=np.int32)
        # Local maxima are needed only where the segment is above the threshold: filter
        # the box of those pixels with a half-window margin (within which every window
        # is whole, or meets the cutout's edge as it would in the whole cutout).
        h = window // 2
        box = (slice(max(rows.min() - h, 0), rows.max() + h + 1),
               slice(max(cols.min() - h, 0), cols.max() + h + 1))
        sub = snr[box]
        candidates = (sub == ndimage.maximum_filter(sub, size=window)) & above[box]
        if np.count_nonzero(candidates) < 2:
            # One local maximum: nothing to split (the costly h-maximum transform is
            # skipped).
            return np.zeros(snr.shape, dtype=np.int32)
    # The h-maxima of the segment, the rest of the cutout held at its minimum: computed on
    # the segment's box with a one-pixel margin, the same transform at a fraction of the
    # cost (outside pixels, all at that minimum, connect nothing the margin does not).
    fill = np.min(snr)
    rows = np.flatnonzero(inside.any(axis=1))
    cols = np.flatnonzero(inside.any(axis=0))
    crop = (slice(max(rows[0] - 1, 0), rows[-1] + 2), slice(max(cols[0] - 1, 0), cols[-1] + 2))
    if inside[crop].all():
        crop = (slice(None), slice(None))  # no margin pixel: the range needs the minimum
    peaks = np.zeros(snr.shape, dtype=bool)
    peaks[crop] = h_maxima(np.where(inside[crop], snr[crop], fill), prominence)
    peaks &= inside & (snr > threshold)
    markers = np.zeros(snr.shape, dtype=np.int32)
    first = 1
    if has_sat:
        core = saturated & inside
        near = ndimage.binary_dilation(core, iterations=sat_radius) & inside
        peaks &= ~near
        markers[core] = 1
        first = 2
    labelled, n = ndimage.label(peaks, structure=np.ones((3, 3)))
    if n:
        markers[labelled > 0] = labelled[labelled > 0] + first - 1
    return markers


def _watershed_children(image: np.ndarray, inside: np.ndarray, markers: np.ndarray,
                        n_pixels: int) -> np.ndarray:
    """Watershed of ``-image`` in the segment from the markers; too-small children are
    dropped and the watershed redone, so their pixels go to their neighbours."""
    children = markers
    for _ in range(3):
        children = watershed(-image, markers, mask=inside, connectivity=2)
        sizes = np.bincount(children.ravel())
        small = np.flatnonzero(sizes[1:] < n_pixels) + 1
        if len(small) == 0 or len(small) == len(sizes) - 1:
            return children
        markers = np.where(np.isin(markers, small), 0, markers)
    return children


def _peak_position(image: np.ndarray, region: np.ndarray) -> tuple[float, float]:
    """Sub-pixel position (x, y) of the maximum of ``image`` within ``region``: the pixel
    maximum refined by a parabola through it and its two neighbours along each axis."""
    flat = np.where(region, image, -np.inf)
    iy, ix = np.unravel_index(int(np.argmax(flat)), image.shape)
    out = []
    for axis, i, n in ((1, ix, image.shape[1]), (0, iy, image.shape[0])):
        offset = 0.0
        if 0 < i < n - 1:
            idx = [iy, ix]
            idx[axis] = i - 1
            lo = image[tuple(idx)]
            idx[axis] = i + 1
            hi = image[tuple(idx)]
            mid = image[iy, ix]
            curvature = lo - 2.0 * mid + hi
            if curvature < 0:
                offset = float(np.clip(0.5 * (lo - hi) / curvature, -0.5, 0.5))
        out.append(i + offset)
    return out[0], out[1]


def deblend_segments(
    data: np.ndarray,
    masked: np.ndarray,
    segmentation: SegmentationImage,
    noise2: np.ndarray,
    saturated: np.ndarray | None,
    fwhm_px: float,
    noise_correction: float,
    config: DetectionConfig,
    *,
    in_place: bool = False,
) -> tuple[SegmentationImage, dict[int, list[int]], dict[int, tuple[float, float]]]:
    """Split blended segments (see the module notes).

    Parameters
    ----------
    data : numpy.ndarray
        Background-subtracted image.
    masked : numpy.ndarray
        bool: pixels without a usable value (filled from their highest neighbours here).
    segmentation : SegmentationImage
        Segments from the matched-filter detection.
    noise2 : numpy.ndarray
        Per-pixel noise variance (the VARIANCE plane, or the background RMS squared).
    saturated : numpy.ndarray, optional
        bool: saturated pixels.
    fwhm_px : float
        PSF FWHM guess, pixels.
    noise_correction : float
        Measured over predicted noise of filtered images (applied to the peak filter too).
    config : DetectionConfig
        Deblending settings.
    in_place : bool
        Write the children's labels into ``segmentation.data`` rather than into a copy
        (for a caller that owns the array: saves a full-frame copy).

    Returns
    -------
    segmentation : SegmentationImage
        New segmentation (the input is not modified unless ``in_place``); children get
        new labels.
    parents : dict of int to list of int
        Children labels of each parent that was split.
    peaks : dict of int to tuple of float
        Position ``(x, y)`` of each child's peak in the peak-filtered image (not for the
        saturated child): a centroid that the neighbour's light does not pull.
    """
    sigma = config.peak_filter_fwhm * fwhm_px / FWHM_PER_SIGMA
    radius = max(math.ceil(config.peak_filter_radius * sigma), 2)
    factor = _lowered_gaussian_noise(sigma, radius) * noise_correction
    sat_radius = max(math.ceil(0.5 * fwhm_px), 1)
    # Two stars closer than ~1.2 FWHM are not separable anyway: a window of half a FWHM
    # keeps every separable pair while noise wiggles rarely pass it.
    window = 2 * max(math.ceil(0.25 * fwhm_px), 1) + 1
    seg = segmentation.data
    new = None
    # Bounding boxes of the result's labels, kept up to date here: a full-frame
    # `find_objects` (and `np.unique` for the labels) would cost ~0.05 s a LATISS frame.
    boxes = dict(zip((int(v) for v in segmentation.labels), segmentation.slices, strict=True))
    parents: dict[int, list[int]] = {}
    peaks: dict[int, tuple[float, float]] = {}
    next_label = int(segmentation.max_label) + 1
    pad = 2 * radius
    ny, nx = seg.shape
    for label, sl in zip(segmentation.labels, segmentation.slices, strict=True):
        label = int(label)
        if sl is None or np.count_nonzero(seg[sl] == label) < 2 * config.n_pixels:
            continue
        # Pad so that the filters see the pixels around the segment too.
        y0, y1 = max(sl[0].start - pad, 0), min(sl[0].stop + pad, ny)
        x0, x1 = max(sl[1].start - pad, 0), min(sl[1].stop + pad, nx)
        box = (slice(y0, y1), slice(x0, x1))
        inside = seg[box] == label
        bad = masked[box]
        cut = _fill_from_above(data[box], bad) if bad.any() else data[box]
        gauss = ndimage.gaussian_filter(cut, sigma, radius=radius)
        mean = ndimage.uniform_filter(cut, 2 * radius + 1)
        # Gaussian minus its mean (DAOFIND's lowered Gaussian): blind to a sloping
        # background, so a faint star on the wing of a bright one keeps its own peak.
        noise = np.sqrt(np.maximum(noise2[box], 0.0)) * np.float32(factor)
        with np.errstate(divide="ignore", invalid="ignore"):
            peak_snr = np.where(noise > 0, (gauss - mean) / noise, 0.0)
        sat = saturated[box] if saturated is not None else None
        markers = _peak_markers(peak_snr, inside, config.peak_nsigma,
                                config.peak_prominence, sat, sat_radius, window)
        if len(np.unique(markers[markers > 0])) < 2:
            continue
        if config.deblend_method == "photutils":
            child = _photutils_children(gauss, inside, config)
            if sat is not None and (sat & inside).any():
                # Children touching saturated pixels are one star (core and bleed trail).
                touching = np.unique(child[sat & inside])
                touching = touching[touching > 0]
                if len(touching) > 1:
                    child = np.where(np.isin(child, touching), touching[0], child)
        else:
            # Basins of the peak-filtered image: a shoulder of the smooth profile is a
            # basin of its own there.
            child = _watershed_children(peak_snr, inside, markers, config.n_pixels)
        kids = np.unique(child[child > 0])
        if len(kids) < 2:
            continue
        if new is None:
            # Safe in place too: later segments look only for their own (older) labels.
            new = seg if in_place else seg.copy()
        view = new[box]
        children = []
        has_sat = sat is not None and bool((sat & inside).any())
        child_boxes = ndimage.find_objects(child)
        del boxes[label]
        for c in kids:
            region = child == c
            view[region] = next_label
            cy, cx = child_boxes[c - 1]
            boxes[next_label] = (slice(cy.start + y0, cy.stop + y0),
                                 slice(cx.start + x0, cx.stop + x0))
            children.append(next_label)
            if not (has_sat and (sat & region).any()):
                seeds = region & (markers > 0)
                px, py = _peak_position(peak_snr, seeds if seeds.any() else region)
                peaks[next_label] = (px + x0, py + y0)
            next_label += 1
        parents[label] = children
    if new is None:
        return segmentation, parents, peaks
    return _known_segmentation(new, boxes), parents, peaks


class _KnownSegmentation(SegmentationImage):
    """A `SegmentationImage` whose labels and their bounding boxes are given.

    photutils finds them with passes over the whole image (``np.unique`` when the data are
    set, and again for ``labels``; ``find_objects`` for ``slices``: ~0.07 s a LATISS
    frame); detection knows them already. ``labels`` and ``slices`` are photutils'
    settable cached properties; the data are set directly, skipping the setter's check
    (non-negative integers), which holds by construction.
    """

    def __init__(self, data: np.ndarray, boxes: dict[int, tuple[slice, slice]]) -> None:
        if not np.issubdtype(data.dtype, np.integer):
            raise TypeError("segmentation data must have integer type")
        self._data = data
        self._deblend_label_map = {}
        labels = sorted(boxes)
        self.labels = np.array(labels, dtype=data.dtype)
        self.slices = [boxes[label] for label in labels]


def _known_segmentation(data: np.ndarray, boxes: dict[int, tuple[slice, slice]]
                        ) -> SegmentationImage:
    """`_KnownSegmentation` of ``data``; photutils' own `SegmentationImage` (labels and
    boxes found again, ~0.07 s a LATISS frame) if a photutils release no longer takes the
    attributes it sets: the same segmentation either way."""
    try:
        segm = _KnownSegmentation(data, boxes)
        if segm.data is data:
            return segm
    except (AttributeError, TypeError):
        pass
    log.debug("this photutils takes no given labels: segmentation labels found again")
    return SegmentationImage(data)


def _photutils_children(light: np.ndarray, inside: np.ndarray,
                        config: DetectionConfig) -> np.ndarray:
    """photutils' multi-thresholding deblender on one segment cutout."""
    with warnings.catch_warnings():
        # Mode switches to "linear" (non-positive pixels in a faint segment) are fine.
        warnings.simplefilter("ignore")
        children = deblend_sources(
            np.where(inside, light, 0.0), SegmentationImage(inside.astype(np.int32)),
            n_pixels=config.n_pixels, n_levels=config.n_levels, contrast=config.contrast,
            connectivity=config.connectivity, progress_bar=False)
    return children.data


def _expand_labels(labels: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Full-resolution segmentation from a block-binned one (pixels beyond the last whole
    block belong to no source)."""
    out = np.zeros(shape, dtype=labels.dtype)
    ny, nx = labels.shape[0] * factor, labels.shape[1] * factor
    for i in range(factor):
        for j in range(factor):
            out[i:ny:factor, j:nx:factor] = labels
    return out


def _full_rms(rms: np.ndarray | BackgroundResult, shape: tuple[int, ...]) -> np.ndarray:
    """The noise at every pixel (float32, read-only: a broadcast view for a scalar)."""
    if isinstance(rms, BackgroundResult):
        return rms.rms
    return np.broadcast_to(np.asarray(rms, dtype=np.float32), shape)


def detect(
    data: np.ndarray,
    rms: np.ndarray | BackgroundResult,
    masked: np.ndarray,
    saturated: np.ndarray | None,
    fwhm_px: float,
    config: DetectionConfig = DetectionConfig(),
    variance: np.ndarray | None = None,
) -> DetectionResult:
    """Detect sources on a background-subtracted image.

    Parameters
    ----------
    data : numpy.ndarray
        Background-subtracted image (float32); not modified.
    rms : numpy.ndarray or BackgroundResult
        Per-pixel background noise, same shape (or broadcastable); or the background
        estimate, whose noise map is then interpolated only where it is needed.
    masked : numpy.ndarray
        bool: pixels that must not contribute (set to zero before filtering).
    saturated : numpy.ndarray, optional
        bool: saturated pixels (their segments are deblended with the bleed trail kept
        whole).
    fwhm_px : float
        FWHM of the matched filter, pixels.
    config : DetectionConfig
        Threshold, minimum size and deblending.
    variance : numpy.ndarray, optional
        Per-pixel variance including the sources' Poisson noise (the exposure's VARIANCE
        plane), used to judge peaks when deblending; ``rms²`` when not given or empty.

    Returns
    -------
    DetectionResult
    """
    b = max(int(config.bin_factor), 1)
    if fwhm_px / b < config.min_fwhm_binned:
        b = 1
    if b > 1:
        # Block means, the masked pixels zeroed (the noise of a mean of b² pixels is
        # rms / b).
        work = masked_block_sum(data, masked, b, 0.0)
        # Non-finite pixels left unmasked make their block's sum, and so the total, non-
        # finite: zero them too (the usual finite image costs one reduction, not a boolean
        # image of the non-finite pixels).
        if not np.isfinite(np.sum(work)):
            masked = masked | ~np.isfinite(data)
            work = masked_block_sum(data, masked, b, 0.0)
        work *= np.float32(1.0 / b**2)
        # The noise at the centre of each block (interpolated only there from a mesh).
        rows = np.arange(work.shape[0]) * b + b // 2
        cols = np.arange(work.shape[1]) * b + b // 2
        if isinstance(rms, BackgroundResult):
            rms_small = rms.rms_at(rows, cols) / np.float32(b)
        else:
            rms = np.broadcast_to(np.asarray(rms, dtype=np.float32), data.shape)
            rms_small = rms[np.ix_(rows, cols)] / np.float32(b)
    else:
        work = np.where(masked, np.float32(0.0), data).astype(np.float32, copy=False)
        if not np.isfinite(np.sum(work)):
            invalid = ~np.isfinite(work)
            work[invalid] = 0.0
            masked = masked | invalid
        rms_small = _full_rms(rms, data.shape)
    sigma = fwhm_px / FWHM_PER_SIGMA / b
    snr = ndimage.gaussian_filter(work, sigma, truncate=config.truncate)
    del work
    factor = gaussian_noise_factor(sigma, config.truncate)
    # Divide in place: the filtered image becomes the S/N image without another copy.
    with np.errstate(divide="ignore", invalid="ignore"):
        snr /= rms_small * np.float32(factor)
    snr[~np.isfinite(snr)] = 0.0
    correction = measured_noise(snr) if config.measure_noise else 1.0
    if correction != 1.0:
        snr *= np.float32(1.0 / correction)
    log.debug("filtered-image noise %.3f x the white-noise prediction", correction)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDetectionsWarning)
        segm = detect_sources(snr, config.nsigma,
                              n_pixels=max(math.ceil(config.n_pixels / b**2), 1),
                              connectivity=config.connectivity)
    if segm is not None and b > 1:
        # A label's box grows with its blocks: no search of the full-resolution image.
        boxes = {int(label): (slice(sy.start * b, sy.stop * b), slice(sx.start * b, sx.stop * b))
                 for label, (sy, sx) in zip(segm.labels, segm.slices, strict=True)}
        segm = _known_segmentation(_expand_labels(segm.data, b, data.shape), boxes)
    result = DetectionResult(segm, snr, b, fwhm_px, factor * correction, correction)
    if segm is None:
        log.debug("no source above %.1f sigma", config.nsigma)
        return result
    if config.deblend:
        n_before = segm.n_labels
        noise2 = variance if variance is not None else np.square(_full_rms(rms, data.shape))
        result.segmentation, result.deblended_parents, result.peaks = deblend_segments(
            data, masked, segm, noise2, saturated, fwhm_px, correction, config,
            in_place=True)  # the segmentation was made here
        log.debug("%d segments, %d split, %d after", n_before, len(result.deblended_parents),
                  result.segmentation.n_labels)
    return result
