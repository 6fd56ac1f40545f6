"""Cosmic-ray detection and repair: van Dokkum's (2001) L.A.Cosmic as astroscrappy runs it.

L.A.Cosmic costs ~6 s of CPU per iteration on a full 4000×4072 LATISS frame, although
cosmic rays cover ~2·10⁻⁴ of it. By default (``CosmicRayConfig.blockwise``) a cheap vectorised
pre-screen finds the pixels that could hold a cosmic ray, groups them into clusters, and
L.A.Cosmic runs only on each cluster's bounding box (its core) grown by a margin wide
enough that, inside the core, its result is the same as on the whole frame.

Why the margin makes the core exact (astroscrappy 1.x, ``sepmed=True``,
``fsmode="median"``, ``cleantype="meanmask"``): within one iteration the new detections at
a pixel depend on the current image and noise map within 8 pixels (Laplacian of the 2×
subsampled image: 1; 7×7 median noise map: 3; Laplacian-to-noise minus its 7×7 median: 6;
fine structure, a 5×5 median followed by a 9×9 median: 6; two one-pixel growths of the
detections: 8), and the 5×5 masked-mean repair adds 2, so each iteration reaches 10 pixels
further. The mask after ``niter`` iterations thus depends on the input within
``10·niter − 2`` pixels and the repaired image within ``10·niter``: the filters' own edge
handling (astroscrappy copies border pixels) never reaches a core pixel. The one global
quantity, the image median used to repair a pixel whose whole 5×5 neighbourhood is masked,
is a box median instead (repaired value only, on dense masked areas).

What one iteration hands the next (astroscrappy's ``detect_cosmics``): the union of the
flags so far, and the image and its variance map (the image plus the read-noise variance)
with every flagged pixel replaced by the mean of the pixels of its 5×5 neighbourhood that
are neither flagged nor bad (the bad pixels grown by one pixel before the first
iteration). Earlier flags are not excluded from new detections; only bad pixels are. A
pixel never flagged keeps its value, so a repair reads original values only: the repaired
image after any iteration is that mean over the input with the current mask. astroscrappy
stops when an iteration flags nothing, where the next would find the same.

The block-wise path therefore does not call ``detect_cosmics``: it runs the same steps
with astroscrappy's own filters (``astroscrappy.utils``), in the same float32 operations
and order (but for a clipping at 0 that may differ in the sign of a zero, which no
comparison tells apart: `_detect`), each only where it can reach the core
(`_lacosmic_core`). Iteration ``k`` of ``n`` needs its mask only on the core grown by
``2 + 10·(n − k)`` (the final repair reads 2 pixels around a core pixel, each later
iteration 10), so the first runs on the whole box and the second of two on the core grown
by 10 at most: only around the pixels the first flagged (within 8 pixels of them), as
elsewhere its input is the first's, and not at all when the first flagged nothing within
reach. Within an iteration the median filters (noise map, 7×7 median of the
Laplacian-to-noise ratio ``s``, fine structure) run only around the pixels that can be
seeds, those with ``s`` above ``sigclip`` (the ratio less its median is at most ``s``, as
``s ≥ 0``), found first with a bound on ``s`` (`_detect`). Each window is what is needed
grown by the reach of the filters run on it, or ends at the box's edge, so that edge
handling never reaches a needed pixel either. Mask and repaired values are astroscrappy's
on the box to the bit (tests/test_cosmic_rays.py; ``benchmarks/bench_cosmic_rays.py``
times both), at 0.12 s of CPU instead of 0.46 s on a simulated full-frame science frame
after ISR (217 boxes; the pre-screen, 0.05 s instead of 0.10 s, comes on top).

Full-frame L.A.Cosmic also flags noise: lone pixels whose Laplacian reaches 4.5σ (~3·10⁻⁵
of sky pixels, ~500 per frame; more in darks, with hot pixels). The pre-screen keeps a lone
pixel only at 10σ and otherwise wants a second bright pixel beside it, as a cosmic ray
spreads its charge over several pixels. The block-wise mask is therefore a subset of the
full-frame one that holds the same real detections (on simulated frames, every flagged
pixel within 3 px of a true cosmic ray) and 4–7 times fewer false ones.

astroscrappy runs on one OpenMP thread (`OPENMP_THREADS`). Its parallel loops are too short
on the boxes for a second thread to do more than spin while it waits for work, and
atmospec runs exposures, not pixels, in parallel (`atmospec.parallel`). Measured on
simulated LATISS frames, per amp as the master dark does it, on a shared 2-core machine:
0.20–0.25 s of CPU on one thread against 0.35–0.41 s on two for 0.01–0.02 s less wall
time, and up to 8× the CPU and wall time when the machine is busier, with the same mask
(``benchmarks/bench_cosmic_rays.py --threads 2``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache

import astroscrappy
import numpy as np
from astroscrappy import utils as _ascr
from scipy import ndimage
from threadpoolctl import ThreadpoolController

#: Rows per band of the pre-screen's first stage: its temporaries (~1 MB each) stay in cache.
_BAND_ROWS = 64
#: OpenMP threads of astroscrappy (module docstring); a benchmark's baseline may raise it.
OPENMP_THREADS = 1
#: Offsets of a 5×5 neighbourhood, row by row (astroscrappy's order of summation).
_ROWS_5X5, _COLS_5X5 = (offset.reshape(1, 25) for offset in np.mgrid[-2:3, -2:3])


@dataclass(frozen=True)
class CosmicRayConfig:
    """Parameters of the L.A.Cosmic detection (see astroscrappy.detect_cosmics)."""

    sigclip: float = 4.5
    """Laplacian-to-noise threshold for a cosmic-ray pixel."""
    sigfrac: float = 0.3
    """Fraction of ``sigclip`` for neighbouring pixels of a detected cosmic ray."""
    objlim: float = 5.0
    """Minimum contrast between the Laplacian and the fine structure: larger values keep
    more star cores (LATISS PSFs are well sampled, FWHM ≈ 8–15 px)."""
    niter: int = 2
    """Detection iterations. Each costs ~6 s of CPU on a full LATISS frame (block-wise, the
    whole step takes ~0.2 s); on simulated frames two give a pixel recall of 0.958 against 0.960
    for four. Each iteration widens the margin of the boxes by 10 pixels."""
    blockwise: bool = True
    """Run L.A.Cosmic only on boxes around pre-screened candidates (the same result as on
    the whole frame inside the boxes, ~60–70× faster on LATISS frames); ``False`` runs it
    on the whole frame (the reference)."""
    screen_sigma: float = 4.0
    """Pre-screen, first stage: a pixel is a candidate when its 4-neighbour Laplacian,
    ``(4·v − Σ neighbours) / 4``, exceeds this many times the noise of the darkest pixel
    of its 3×3 neighbourhood (Poisson, gain 1, plus read noise). Below ``sigclip``, which
    thresholds nearly the same ratio, so that every cosmic ray L.A.Cosmic finds passes."""
    screen_single_sigma: float = 10.0
    """Pre-screen, second stage: a candidate whose ratio reaches this is kept alone (a
    cosmic ray whose charge fell in one pixel, a hot pixel). Sky noise does not reach it."""
    screen_neighbour_sigma: float = 4.0
    """Pre-screen, second stage: other candidates are kept when one of their 8 neighbours
    stands this many noise σ above the local background (charge spread over pixels);
    this rejects the lone 4σ noise pixels that would each cost a box."""
    screen_halo: int = 4
    """Pixels around the candidates of a cluster that belong to its box's core, for the
    faint pixels along a track and its diffusion wings that the detection grows into."""
    cluster_px: int = 16
    """Cell size (unbinned pixels) of the grid on which candidates are grouped: candidates
    within three cells of each other along a row or column share a box, four or more cells
    apart never, so that close neighbours do not each pay for a margin while distant ones
    do not make a large box. A binned frame's cells are ``cluster_px`` over the larger
    binning factor (`binned_config`): on a 2×2 LATISS frame 16 binned pixels made boxes
    covering 0.24 of the frame, 8 cover 0.19 (0.20 → 0.11 s of CPU), with the same mask
    but for one false positive pixel (1333 → 1332 flagged, recall 0.9417 both)."""
    max_box_fraction: float = 0.5
    """If the boxes cover more than this fraction of the frame (a crowded field, a frame
    full of sharp features), run on the whole frame instead: one pass is cheaper."""


def binned_config(config: CosmicRayConfig, binning: tuple[int, int]) -> CosmicRayConfig:
    """``config`` for a frame of on-chip ``binning``: its clustering cells in binned pixels
    (`CosmicRayConfig.cluster_px`). The same config for an unbinned frame."""
    factor = max(int(b) for b in binning)
    if factor <= 1:
        return config
    return replace(config, cluster_px=max(int(config.cluster_px) // factor, 4))


def find_cosmic_rays(image: np.ndarray, variance_floor: float, exclude: np.ndarray,
                     config: CosmicRayConfig) -> tuple[np.ndarray, np.ndarray]:
    """Detect cosmic rays on an image in electrons and return a repaired copy.

    Parameters
    ----------
    image : numpy.ndarray
        Post-ISR image in electrons (flat-fielded, background included).
    variance_floor : float
        Read-noise variance (e⁻²) of the image.
    exclude : numpy.ndarray
        Boolean mask of pixels not to use (bad, saturated).
    config : CosmicRayConfig
        Detection parameters.

    Returns
    -------
    mask, cleaned : numpy.ndarray
        Boolean cosmic-ray mask and the image with those pixels replaced.
    """
    image = np.ascontiguousarray(image, dtype=np.float32)
    exclude = np.ascontiguousarray(exclude, dtype=bool)
    variance_floor = max(float(variance_floor), 0.0)
    if not config.blockwise:
        return _lacosmic(image, exclude, variance_floor, config)
    boxes = cosmic_ray_boxes(image, variance_floor, exclude, config)
    area = sum((b[1].stop - b[1].start) * (b[2].stop - b[2].start) for b in boxes)
    if area > config.max_box_fraction * image.size:
        return _lacosmic(image, exclude, variance_floor, config)
    mask = np.zeros(image.shape, dtype=bool)
    cleaned = image.copy()
    limits = _LaCosmicLimits.of(config, variance_floor)
    with _openmp().limit(limits=OPENMP_THREADS, user_api="openmp"):
        for core, box_y, box_x in boxes:
            found = _lacosmic_core(image, exclude, core, (box_y, box_x), limits)
            if found is None:
                continue
            # Cores of different boxes may overlap, and agree there.
            core_mask, core_clean = found
            mask[core] |= core_mask
            cleaned[core] = np.where(core_mask, core_clean, cleaned[core])
    return mask, cleaned


def find_cosmic_rays_by_region(image: np.ndarray, regions: Sequence[tuple[slice, slice]],
                               variance_floors: Sequence[float], exclude: np.ndarray,
                               config: CosmicRayConfig, pad: int = 4) -> np.ndarray:
    """Cosmic-ray mask of an image whose regions (the amps) have their own read noise.

    One read noise for a detector whose amps range from 6 to 9.5 e⁻ under-estimates the
    noisy amps' noise, and L.A.Cosmic flags their noise peaks. Each region is searched
    alone with its own ``variance_floor``, padded by ``pad`` pixels of its median level:
    astroscrappy never flags the outermost pixels of its image, and a neighbour's pixels,
    of another noise, would grow their own false detections into it. A track crossing a
    region's edge is found on both sides (each part is a track).

    Parameters
    ----------
    image : numpy.ndarray
        Image in electrons.
    regions : sequence of (slice, slice)
        Disjoint regions (row and column slices with explicit bounds) covering the pixels
        to search.
    variance_floors : sequence of float
        Read-noise variance of each region, e⁻².
    exclude : numpy.ndarray
        Boolean mask of pixels not to use (bad, saturated).
    config : CosmicRayConfig
        Detection parameters.
    pad : int
        Pixels of padding around each region.

    Returns
    -------
    numpy.ndarray
        Boolean cosmic-ray mask, the image's shape (False outside the regions).
    """
    if len(regions) != len(variance_floors):
        raise ValueError(f"{len(regions)} regions but {len(variance_floors)} variance floors")
    mask = np.zeros(np.shape(image), dtype=bool)
    for region, floor in zip(regions, variance_floors, strict=True):
        sub = np.asarray(image[region], dtype=np.float32)
        if sub.size == 0:
            continue
        level = float(np.median(sub[::4, ::4]))
        found, _ = find_cosmic_rays(np.pad(sub, pad, mode="constant", constant_values=level),
                                    floor, np.pad(exclude[region], pad), config)
        mask[region] = found[pad: pad + sub.shape[0], pad: pad + sub.shape[1]]
    return mask


def margin_px(niter: int) -> int:
    """Margin (pixels) around a core beyond which L.A.Cosmic cannot change the core.

    Parameters
    ----------
    niter : int
        L.A.Cosmic iterations.

    Returns
    -------
    int
        ``10·niter``: each iteration reaches 10 pixels (see the module docstring).
    """
    return 10 * max(int(niter), 1)


def screen_candidates(image: np.ndarray, variance_floor: float, exclude: np.ndarray,
                      config: CosmicRayConfig) -> tuple[np.ndarray, np.ndarray]:
    """Pixels that may hold a cosmic ray: high recall, low precision (hot pixels and the
    cores of bright stars pass too; L.A.Cosmic sorts them out).

    Two vectorised stages:

    1. Over the whole frame, the Laplacian ``(4·v − Σ 4 neighbours) / 4`` against the noise
       ``sqrt(max(min₃ₓ₃, 0) + variance_floor)`` of the darkest pixel around (gain 1): a
       cosmic ray does not raise it, as its neighbours hold sky; a star core does, which
       keeps faint stars out. Bands of `_BAND_ROWS` rows keep the temporaries small;
       in each, the darkest pixel of a column over the band bounds the noise, and only
       the few pixels above that bound are tested with their own 3×3 minimum.
       The threshold ``config.screen_sigma`` is below L.A.Cosmic's ``sigclip``, whose
       Laplacian-to-noise ratio is the same quantity up to its noise estimate (a median
       of the variance over 7×7 pixels) and the clipping of its sub-sampled Laplacian.
    2. On those candidates only: keep a pixel whose ratio reaches
       ``config.screen_single_sigma``, or one of whose 8 neighbours also stands
       ``config.screen_neighbour_sigma`` noise above the local background (median of the
       16-pixel ring at distance 2). Charge spreads over several pixels in a cosmic ray,
       while a 4σ fluctuation of the noise is a lone pixel (full-frame L.A.Cosmic flags
       ~500 of them per frame).

    Parameters
    ----------
    image : numpy.ndarray
        float32 image in electrons.
    variance_floor : float
        Read-noise variance, e⁻².
    exclude : numpy.ndarray
        Boolean mask of pixels L.A.Cosmic ignores: never candidates.
    config : CosmicRayConfig
        Pre-screen thresholds.

    Returns
    -------
    y, x : numpy.ndarray
        Coordinates of the candidates. The outermost rows and columns are never
        candidates themselves: a cosmic ray there is found from its pixels further in.
    """
    ny, nx = image.shape
    # Squared comparison: no square root over the frame.
    scale = np.float32(16.0 * config.screen_sigma**2)
    floor = np.float32(variance_floor)
    # Empty starts: frames under 3 rows have no band.
    found_y, found_x = [np.empty(0, dtype=np.intp)], [np.empty(0, dtype=np.intp)]
    found_r = [np.empty(0, dtype=np.float32)]
    # Bands as runs of the flattened image: whole-row slices are contiguous, ~1.6× faster
    # than the 2-D views. A run's first and last pixels of each row (columns 0 and nx − 1)
    # read the neighbouring rows' ends as neighbours and are dropped.
    flat = np.ascontiguousarray(image).ravel()
    # Flat offsets of a 3×3 neighbourhood.
    around = (np.arange(-1, 2)[:, None] * nx + np.arange(-1, 2)[None, :]).ravel()
    for y0 in range(1, ny - 1, _BAND_ROWS):
        y1 = min(y0 + _BAND_ROWS, ny - 1)
        start, stop = y0 * nx, y1 * nx
        lap = flat[start:stop] * np.float32(4.0)
        lap -= flat[start - nx:stop - nx]
        lap -= flat[start + nx:stop + nx]
        lap -= flat[start - 1:stop - 1]
        lap -= flat[start + 1:stop + 1]
        # First a bound: the darkest pixel of a 3×3 neighbourhood is no darker than the
        # darkest of its three columns over the band's rows and the two beside them, so
        # that noise threshold is at most the pixel's own (the same float32 steps; fmin
        # ignores NaN, which fails the exact test below anyway).
        column = np.fmin.reduce(image[y0 - 1:y1 + 1], axis=0)
        least = column.copy()
        np.fmin(least[1:], column[:-1], out=least[1:])
        np.fmin(least[:-1], column[1:], out=least[:-1])
        bound = (np.maximum(least, 0.0) + floor) * scale
        rows = lap.reshape(y1 - y0, nx)
        maybe = rows > 0.0
        maybe &= np.square(rows) > bound
        # Flat indices: np.nonzero of a 2-D mask costs ~10× more (26 of 100 ms a frame).
        at = np.flatnonzero(maybe)
        ys, xs = np.divmod(at, nx)
        inside = (xs > 0) & (xs < nx - 1)
        at, ys, xs = at[inside], ys[inside], xs[inside]
        # The exact test on those: the darkest pixel of each one's 3×3 neighbourhood.
        var = np.minimum.reduce(flat[(start + at)[:, None] + around], axis=1)
        np.maximum(var, 0.0, out=var)
        var += floor
        value = lap[at]
        hit = np.square(value) > var * scale
        found_y.append(ys[hit] + y0)
        found_x.append(xs[hit])
        found_r.append(value[hit] / (4.0 * np.sqrt(var[hit])))
    ys, xs, ratio = (np.concatenate(a) for a in (found_y, found_x, found_r))
    keep = ~exclude[ys, xs]
    ys, xs, ratio = ys[keep], xs[keep], ratio[keep]
    # Stage 2 in chunks: 25 values per candidate, memory bounded whatever the frame.
    keep = np.empty(ys.size, dtype=bool)
    offsets = np.arange(-2, 3)
    inner = [6, 7, 8, 11, 13, 16, 17, 18]  # 3×3 neighbours in the flattened 5×5 patch
    ring = [i for i in range(25) if i not in (*inner, 12)]
    chunk = 65536
    for i in range(0, ys.size, chunk):
        y = np.clip(ys[i:i + chunk, None, None] + offsets[None, :, None], 0, ny - 1)
        x = np.clip(xs[i:i + chunk, None, None] + offsets[None, None, :], 0, nx - 1)
        patch = image[y, x].reshape(-1, 25)
        background = np.median(patch[:, ring], axis=1)
        noise = np.sqrt(np.maximum(background, 0.0) + variance_floor)
        neighbour = patch[:, inner].max(axis=1) - background
        keep[i:i + chunk] = ((ratio[i:i + chunk] >= config.screen_single_sigma)
                             | (neighbour > config.screen_neighbour_sigma * noise))
    return ys[keep], xs[keep]


def cosmic_ray_boxes(image: np.ndarray, variance_floor: float, exclude: np.ndarray,
                     config: CosmicRayConfig) -> list[tuple[tuple[slice, slice], slice, slice]]:
    """Boxes on which to run L.A.Cosmic: one per cluster of pre-screen candidates.

    Parameters
    ----------
    image : numpy.ndarray
        float32 image in electrons.
    variance_floor : float
        Read-noise variance, e⁻².
    exclude : numpy.ndarray
        Boolean mask of pixels L.A.Cosmic ignores (never candidates).
    config : CosmicRayConfig
        Pre-screen and box parameters.

    Returns
    -------
    list of (core, box_y, box_x)
        ``core`` (a pair of slices) is the cluster's bounding box grown by
        ``config.screen_halo``; ``box_y``, ``box_x`` the core grown by `margin_px`, both
        clipped to the image.
    """
    ny, nx = image.shape
    ys, xs = screen_candidates(image, variance_floor, exclude, config)
    if ys.size == 0:
        return []
    # Cluster on a coarse grid of cells (small, cheap to label), joining cells one apart.
    cell = max(int(config.cluster_px), 1)
    cells = np.zeros((ny // cell + 1, nx // cell + 1), dtype=bool)
    cells[ys // cell, xs // cell] = True
    labels, n = ndimage.label(ndimage.binary_dilation(cells, np.ones((3, 3), bool)))
    which = labels[ys // cell, xs // cell] - 1
    y_lo = np.full(n, ny)
    x_lo = np.full(n, nx)
    y_hi = np.zeros(n, dtype=int)
    x_hi = np.zeros(n, dtype=int)
    np.minimum.at(y_lo, which, ys)
    np.minimum.at(x_lo, which, xs)
    np.maximum.at(y_hi, which, ys + 1)
    np.maximum.at(x_hi, which, xs + 1)
    halo, margin = int(config.screen_halo), margin_px(config.niter)
    boxes = []
    for a, b, c, d in zip(y_lo, y_hi, x_lo, x_hi, strict=True):
        core = (slice(max(a - halo, 0), min(b + halo, ny)),
                slice(max(c - halo, 0), min(d + halo, nx)))
        boxes.append((core,
                      slice(max(core[0].start - margin, 0), min(core[0].stop + margin, ny)),
                      slice(max(core[1].start - margin, 0), min(core[1].stop + margin, nx))))
    return boxes


@dataclass(frozen=True)
class _LaCosmicLimits:
    """The numbers of one L.A.Cosmic run as astroscrappy holds them: its parameters are
    single-precision C floats, rounded to float32 here for the same thresholds and noise
    map to the last bit."""

    sigclip: float
    """Laplacian-to-noise threshold of a cosmic-ray pixel."""
    sigclip_low: float
    """Threshold of the pixels beside one, ``sigfrac·sigclip`` (a float32 product)."""
    objlim: float
    """Minimum contrast between the Laplacian and the fine structure."""
    read_variance: float
    """Read-noise variance added to the image for its noise map: ``rn·rn`` in float32, with
    ``rn`` the float32 square root of the variance floor."""
    niter: int
    """Iterations."""

    @classmethod
    def of(cls, config: CosmicRayConfig, variance_floor: float) -> _LaCosmicLimits:
        """The limits of ``config`` on an image of read-noise variance ``variance_floor``."""
        f32 = np.float32
        read_noise = f32(np.sqrt(variance_floor))
        return cls(sigclip=float(f32(config.sigclip)),
                   sigclip_low=float(f32(config.sigfrac) * f32(config.sigclip)),
                   objlim=float(f32(config.objlim)),
                   read_variance=float(read_noise * read_noise),
                   niter=max(int(config.niter), 1))


@dataclass(frozen=True)
class _Window:
    """Rows ``y0:y1`` and columns ``x0:x1`` of an array of ``shape``."""

    y0: int
    y1: int
    x0: int
    x1: int
    shape: tuple[int, int]

    @property
    def slices(self) -> tuple[slice, slice]:
        """Row and column slices."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def grown(self, margin: int) -> _Window:
        """Grown by ``margin`` pixels on each side, clipped to the array."""
        return _Window(max(self.y0 - margin, 0), min(self.y1 + margin, self.shape[0]),
                       max(self.x0 - margin, 0), min(self.x1 + margin, self.shape[1]),
                       self.shape)

    def within(self, other: _Window) -> _Window:
        """The part inside ``other`` (may be empty)."""
        return _Window(max(self.y0, other.y0), min(self.y1, other.y1),
                       max(self.x0, other.x0), min(self.x1, other.x1), self.shape)

    def local_to(self, outer: _Window) -> _Window:
        """This window in the array cut out by ``outer``, which holds it."""
        return _Window(self.y0 - outer.y0, self.y1 - outer.y0, self.x0 - outer.x0,
                       self.x1 - outer.x0, (outer.y1 - outer.y0, outer.x1 - outer.x0))

    def relative_to(self, outer: _Window) -> tuple[slice, slice]:
        """Slices of this window in the array cut out by ``outer``, which holds it."""
        return (slice(self.y0 - outer.y0, self.y1 - outer.y0),
                slice(self.x0 - outer.x0, self.x1 - outer.x0))

    def bounding(self, mask: np.ndarray) -> _Window | None:
        """Bounding window of the True pixels of ``mask`` cut out by this window, if any."""
        rows = mask.any(axis=1)
        if not rows.any():
            return None
        cols = mask.any(axis=0)
        return _Window(self.y0 + int(rows.argmax()), self.y1 - int(rows[::-1].argmax()),
                       self.x0 + int(cols.argmax()), self.x1 - int(cols[::-1].argmax()),
                       self.shape)


def _lacosmic_core(image: np.ndarray, exclude: np.ndarray, core: tuple[slice, slice],
                   box: tuple[slice, slice], limits: _LaCosmicLimits,
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """L.A.Cosmic on ``box`` of a float32 image, exact inside ``core``: the core's mask and
    repaired image, or None when nothing in the core is flagged.

    astroscrappy's iterations (module docstring) built from its filters, each run only
    where its result can still reach the core. Iteration ``k`` of ``n`` needs its mask on
    the core grown by ``2 + 10·(n − k)``: the final repair reads the mask 2 pixels around a
    core pixel, and each later iteration reads the state 8 pixels around its mask pixels,
    that state the mask 2 pixels further. The first iteration needs the box less 8 pixels.
    A later iteration's input differs from the first's only on the pixels flagged so far
    (the repaired ones), so its detections can differ only within 8 pixels of them: it
    runs on their bounding window grown by 8 (and clipped to what it needs), and not at
    all when none is within reach, where astroscrappy's later iterations would find what
    the earlier found.
    """
    box_y, box_x = box
    original = np.ascontiguousarray(image[box_y, box_x])
    # astroscrappy grows the bad pixels by one before it starts.
    good = ~_ascr.dilate3(np.ascontiguousarray(exclude[box_y, box_x]))
    variance = original + limits.read_variance
    levels = _FallbackLevels(original, variance, good)
    core_w = _Window(core[0].start - box_y.start, core[0].stop - box_y.start,
                     core[1].start - box_x.start, core[1].stop - box_x.start,
                     original.shape)
    flagged = _detect(original, variance, good, core_w.grown(2 + 10 * (limits.niter - 1)),
                      limits)
    for k in range(2, limits.niter + 1):
        need = core_w.grown(2 + 10 * (limits.niter - k))
        reach = need.grown(8)
        changed = reach.bounding(flagged[reach.slices])
        if changed is None:
            break
        target = changed.grown(8).within(need)
        if target.y0 >= target.y1 or target.x0 >= target.x1:
            break
        window = target.grown(8)
        clean = original[window.slices].copy()
        var = variance[window.slices].copy()
        _repair_into(clean, var, original, variance, flagged | ~good, flagged, window,
                     levels)
        found = _detect(clean, var, np.ascontiguousarray(good[window.slices]),
                        target.local_to(window), limits)
        flagged[target.slices] |= found[target.relative_to(window)]
    core_flags = flagged[core_w.slices]
    if not core_flags.any():
        return None
    core_clean = original[core_w.slices].copy()
    _repair_into(core_clean, None, original, variance, flagged | ~good, flagged, core_w,
                 levels)
    return core_flags, core_clean


class _FallbackLevels:
    """The box medians of the image and of its variance over the good pixels, astroscrappy's
    repair of a pixel whose 5×5 neighbourhood is all flagged or bad (computed when first
    asked for: rarely needed)."""

    def __init__(self, image: np.ndarray, variance: np.ndarray, good: np.ndarray) -> None:
        self._arrays = (image, variance)
        self._good = good
        self._levels: dict[int, float] = {}

    def level(self, which: int) -> float:
        """Median of the image (0) or of the variance (1)."""
        if which not in self._levels:
            values = np.ascontiguousarray(self._arrays[which][self._good])
            self._levels[which] = float(_ascr.median(values, values.size))
        return self._levels[which]


def _repair_into(clean: np.ndarray, var: np.ndarray | None, original: np.ndarray,
                 variance: np.ndarray, excluded: np.ndarray, flagged: np.ndarray,
                 window: _Window, levels: _FallbackLevels) -> None:
    """Repair the flagged pixels of ``window`` in ``clean`` (and ``var``), cut-outs of the
    box's ``original`` image (and ``variance``) by ``window``, as astroscrappy's
    ``meanmask`` does: the mean over the 5×5 neighbourhood of the pixels not ``excluded``
    (flagged or bad), summed in float32 row by row (astroscrappy's order), or the box's
    median where none is left. The pixels within 2 of the box's edges are left as they
    are, as astroscrappy leaves them.

    Non-flagged pixels are never repaired, so the neighbours read are always original
    values: the order of the repairs does not matter.
    """
    ny, nx = original.shape
    inner = window.within(_Window(2, ny - 2, 2, nx - 2, original.shape))
    if inner.y0 >= inner.y1 or inner.x0 >= inner.x1:
        return
    ys, xs = np.nonzero(flagged[inner.slices])
    if ys.size == 0:
        return
    ys += inner.y0
    xs += inner.x0
    rows = ys[:, None] + _ROWS_5X5
    cols = xs[:, None] + _COLS_5X5
    usable = ~excluded[rows, cols]
    count = usable.sum(axis=1)
    at = (ys - window.y0, xs - window.x0)
    for which, (out, values) in enumerate(((clean, original), (var, variance))):
        if out is None:
            continue
        # A running float32 sum over the 25 pixels in astroscrappy's order; an excluded
        # pixel adds an exact zero. astroscrappy's sum starts from +0, so a sum of zeros
        # is +0: the final +0 turns a -0 into it and changes nothing else.
        total = np.cumsum(np.where(usable, values[rows, cols], np.float32(0.0)), axis=1,
                          dtype=np.float32)[:, -1] + np.float32(0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            # float32 sum over an integer count in double, rounded once to float32 (as
            # astroscrappy's C division and store).
            mean = (total / count).astype(np.float32)
        if not count.all():
            mean[count == 0] = levels.level(which)
        out[at] = mean


def _detect(clean: np.ndarray, variance: np.ndarray, good: np.ndarray, need: _Window,
            limits: _LaCosmicLimits) -> np.ndarray:
    """One L.A.Cosmic detection (van Dokkum 2001, astroscrappy's ``sepmed`` variant) on
    contiguous float32 arrays: the pixels flagged, exact within ``need`` (False outside
    ``need`` grown by 2).

    Laplacian-to-noise ratio ``s`` of the 2× sub-sampled image (clipped at 0, rebinned)
    over twice the square root of the 7×7 separable median of the variance; ``sp = s −
    median₇ₓ₇(s)``; seeds where ``sp > sigclip`` and ``sp`` over the fine structure
    (5×5 then 9×9 separable medians, over the noise, clipped at 0.01) exceeds ``objlim``;
    grown once among the pixels with ``sp > sigclip``, once more among those with ``sp >
    sigclip_low``, bad pixels never flagged.

    The median filters run only around the pixels that can be seeds, those with ``s >
    sigclip`` (``sp ≤ s`` as ``s ≥ 0``). To find them without the noise map everywhere, a
    bound first: the 7×7 median of the variance is one of its values, at least the
    array's least, so ``s`` computed with that least value (the same float32 steps) is at
    least the true ``s``, pixel by pixel.
    """
    conved = _ascr.laplaceconvolve(_ascr.subsample(clean))
    # astroscrappy sets the negative values to 0: a maximum does the same without
    # branches (~10× faster), but for turning a -0 into +0, which no comparison below
    # tells apart (the ratio and its median are only compared with thresholds).
    np.maximum(conved, np.float32(0.0), out=conved)
    laplacian = _ascr.rebin(conved)
    flagged = np.zeros(clean.shape, dtype=bool)
    # Seeds that can reach ``need``: within 2 pixels of it. fmin ignores NaN: a NaN median
    # gives a NaN ratio, never above the threshold.
    reach = need.grown(2)
    cut = reach.slices
    least = np.fmax(np.fmin.reduce(variance, axis=None), np.float32(0.00001))
    bound = laplacian[cut] / (2.0 * np.sqrt(least))
    maybe = reach.bounding((bound > limits.sigclip) & good[cut])
    if maybe is None:
        return flagged
    # The noise map and ``s`` where the windows below can reach: 6 pixels around.
    noise_w = maybe.grown(6)
    noise_in = noise_w.grown(3)
    noise = _ascr.sepmedfilt7(np.ascontiguousarray(variance[noise_in.slices]))
    noise = noise[noise_w.relative_to(noise_in)]
    noise[noise < 0.00001] = 0.00001
    noise = np.sqrt(noise)
    ratio = laplacian[noise_w.slices] / (2.0 * noise)
    inside = maybe.relative_to(noise_w)
    seeds_at = maybe.bounding((ratio[inside] > limits.sigclip) & good[maybe.slices])
    if seeds_at is None:
        return flagged
    # The first growth keeps pixels with sp > sigclip, so s > sigclip: inside ``seeds_at``
    # (those that can reach ``need``). The second reaches one pixel further, and dilate3
    # copies its array's border pixels instead of growing them: sp on ``seeds_at`` + 2.
    grow = seeds_at.grown(2)
    around = grow.grown(3)
    smooth = _ascr.sepmedfilt7(np.ascontiguousarray(ratio[around.relative_to(noise_w)]))
    sp = ratio[grow.relative_to(noise_w)] - smooth[grow.relative_to(around)]
    fine_w = seeds_at.grown(6)
    fine = _ascr.sepmedfilt5(np.ascontiguousarray(clean[fine_w.slices]))
    fine = (fine - _ascr.sepmedfilt9(fine)) / noise[fine_w.relative_to(noise_w)]
    fine = fine[seeds_at.relative_to(fine_w)]
    fine[fine < 0.01] = 0.01
    good_g = good[grow.slices]
    seeds = np.zeros(sp.shape, dtype=bool)
    inner = seeds_at.relative_to(grow)
    sp_inner = sp[inner]
    seeds[inner] = ((sp_inner > limits.sigclip) & good_g[inner]
                    & (sp_inner / fine > limits.objlim))
    grown = _ascr.dilate3(seeds) & good_g & (sp > limits.sigclip)
    flagged[grow.slices] = _ascr.dilate3(grown) & good_g & (sp > limits.sigclip_low)
    return flagged


@cache
def _openmp() -> ThreadpoolController:
    """The thread pools of this process, astroscrappy's OpenMP runtime among them (looked up
    once: astroscrappy is imported above, so its runtime is loaded)."""
    return ThreadpoolController()


def _lacosmic(image: np.ndarray, exclude: np.ndarray, variance_floor: float,
              config: CosmicRayConfig) -> tuple[np.ndarray, np.ndarray]:
    """astroscrappy on one contiguous array (whole frame or box), on one OpenMP thread
    (module docstring)."""
    with _openmp().limit(limits=OPENMP_THREADS, user_api="openmp"):
        mask, cleaned = astroscrappy.detect_cosmics(
            np.ascontiguousarray(image, dtype=np.float32),
            inmask=np.ascontiguousarray(exclude, dtype=bool),
            sigclip=config.sigclip,
            sigfrac=config.sigfrac,
            objlim=config.objlim,
            gain=1.0,
            readnoise=float(np.sqrt(variance_floor)),
            satlevel=np.inf,
            niter=config.niter,
            sepmed=True,
            cleantype="meanmask",
            fsmode="median",
            verbose=False,
        )
    return mask, cleaned.astype(np.float32)
