"""Crosstalk measurement from frames with saturated stars (as Rubin's CrosstalkExtract/Solve).

Crosstalk arises in the readout chain, pixel by pixel in readout order, so everything here
works on the raw segments in readout orientation (no flips), after overscan subtraction:

1. in each amp, the *source* pixels are those above ``source_threshold_adu`` (saturated
   cores and bleed trails, bright star wings) at positions where no other amp is bright (a
   bleed trail crossing the middle of the CCD is at the same readout position in the two
   facing amps, and would send two ghosts to every target);
2. every other amp (*target*) is background-subtracted with a map of block medians that
   leaves out every position where any amp is bright (the ghosts being measured) and the
   target's own stars;
3. at each source pixel, the ratio target / source is taken; ratios larger than
   ``max_ratio`` in size (the target's own stars and trails) are dropped, and so are those
   at positions next to faint light of the target's own (star halos under a ghost);
4. per (target, source) pair, over all pixels of all frames: the median ratio is the
   coefficient; its error is the statistical one (1.2533 × robust σ / √n), or the scatter
   of the per-frame values over √(number of frames) if larger.

A source landing on a star of the target biases the pair by up to a few 1e-5 in one field:
frames of several fields are needed for coefficients below ~1e-4.

The matrix is ``coeffs[target, source]`` in ADU ratios, the convention of
`atmospec.isr.crosstalk`. `CrosstalkMeasurement.product` makes it the crosstalk product
(`atmospec.calib.products.Crosstalk`, the layout of Rubin's CrosstalkCalib ECSV: ``CT_COEFFS``
in [source, target] order, 256 values for LATISS), whose ``matrix()`` is the same matrix.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import numpy as np
from astropy.table import Table
from scipy import ndimage

from atmospec.calib.products.calibdate import calib_date
from atmospec.calib.products.crosstalk import Crosstalk
from atmospec.calib.products.detector import detector_meta
from atmospec.camera.description import Camera, load_camera
from atmospec.camera.raw import RawFrame, as_raw
from atmospec.camera.translator import ObservationInfo
from atmospec.isr.crosstalk import CrosstalkMatrix, subtract_crosstalk
from atmospec.isr.overscan import OverscanConfig, subtract_overscan
from atmospec.stats import robust_sigma

log = logging.getLogger(__name__)

__all__ = [
    "CrosstalkExtractConfig",
    "CrosstalkMeasurement",
    "compare_crosstalk",
    "crosstalk_ratios",
    "measure_crosstalk",
    "measure_crosstalk_and_residual",
]


#: Standard deviation of a unit Gaussian truncated at ±k σ (to undo the shrinking of σ by
#: the clipping): sqrt(1 - 2 k φ(k) / (2 Φ(k) - 1)).
_CLIPPED_STD = MappingProxyType({2.0: 0.8796, 2.5: 0.9546, 3.0: 0.9866})


#: Block rows kept either side of the source pixels' rows for the targets' background.
_BAND_MARGIN_BLOCKS = 3


@dataclass(frozen=True)
class CrosstalkExtractConfig:
    """How crosstalk ratios are extracted and combined."""

    source_threshold_adu: float = 30_000.0
    """Source pixels: overscan-subtracted level above this, ADU: far above sky and ordinary
    stars, so that ghosts (≥ 3 ADU for a 1e-4 coupling) stand out of the noise."""
    bright_level_adu: float = 1_000.0
    """Pixel positions where any amp exceeds this (ADU) are left out of the targets'
    background: the largest coefficients (~1e-3) make ghosts of ~1 ADU there."""
    own_sigma: float = 5.0
    """Pixels of a target more than this many robust σ above its median (its own stars) are
    left out of its background too."""
    star_zone_px: int = 10
    """Source pixels within this distance of light of the target's own (outside the bright
    positions) give no ratio for that target; 0: no such rejection."""
    star_zone_box: int = 7
    """Box (pixels) of the smoothing that finds faint own light of the targets."""
    bright_grow_px: int = 3
    """Growth (pixels) of the pixels left out of the background (PSF and trail edges)."""
    background_block: tuple[int, int] = (50, 64)
    """Rows and columns of the blocks of the targets' background map (block medians,
    bilinearly interpolated)."""
    max_ratio: float = 0.01
    """Ratios larger than this in size are dropped: no crosstalk is near 1 %; such pixels
    hold the target's own stars or trails."""
    estimator: Literal["median", "clipped_mean"] = "median"
    """How the ratios of a pair are combined."""
    clip_sigma: float = 2.5
    """``clipped_mean``: ratios further than this many σ from the centre are rejected."""
    clip_iterations: int = 3
    """``clipped_mean``: rejection passes."""
    min_pixels: int = 100
    """A pair is valid with at least this many ratios."""
    overscan: OverscanConfig = field(default_factory=OverscanConfig)
    """Overscan subtraction of the raw segments."""


@dataclass
class CrosstalkMeasurement:
    """A measured crosstalk matrix with its errors and pixel counts."""

    coeffs: np.ndarray
    """``(n_amps, n_amps)`` median ratios, ``[target, source]``, ADU/ADU (0 where invalid
    and on the diagonal)."""
    errors: np.ndarray
    """Standard errors of the coefficients (NaN where invalid)."""
    counts: np.ndarray
    """Number of ratios per pair."""
    valid: np.ndarray
    """bool: pairs with enough ratios."""
    n_frames: int
    """Frames used."""
    units: str = "adu"
    """Unit of the ratios (always ``adu``: ratios of raw signals)."""
    calib_date: str = ""
    """Start of the first frame, UTC ISO (`calib_date`): the product's ``CALIBDATE``, so
    that it is valid for the frames it was measured on; ``""`` when unknown."""

    def matrix(self) -> CrosstalkMatrix:
        """As the matrix type used by ISR."""
        return CrosstalkMatrix(self.coeffs.copy(), self.units)

    def product(self, camera: Camera | None = None) -> Crosstalk:
        """The crosstalk product of this measurement (Rubin CrosstalkCalib-like), dated by its
        first frame (`calib_date`; now when unknown).

        The n×n arrays are stored flattened in Rubin's [source, target] order (the
        transpose of `coeffs`), as `atmospec.calib.products.Crosstalk.matrix` expects.

        Parameters
        ----------
        camera : Camera, optional
            Instrument and detector metadata; LATISS by default.

        Returns
        -------
        Crosstalk
        """
        camera = camera or load_camera("latiss")
        n = camera.n_amps

        def stored(a: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(a.T).reshape(1, n * n)

        table = Table()
        table["CT_COEFFS"] = stored(self.coeffs.astype(np.float64))
        table["CT_ERRORS"] = stored(np.nan_to_num(self.errors, nan=0.0))
        table["CT_COUNTS"] = stored(self.counts.astype(np.int64))
        table["CT_VALID"] = stored(self.valid.astype(bool))
        table.meta.update({
            "OBSTYPE": "CROSSTALK",
            **detector_meta(camera),
            "CALIBDATE": self.calib_date or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            "CROSSTALK_SCHEMA": "Gen3 Crosstalk",
            "CROSSTALK_SHAPE": [n, n],
            "CROSSTALK_RATIOS_UNITS": self.units,
            "HAS_CROSSTALK": True,
            "NAMP": n,
            "N_FRAMES": self.n_frames,
            "AMP_NAMES": list(camera.amp_names),
        })
        return Crosstalk(table)


def _fill_empty_blocks(grid: np.ndarray, fallback: np.ndarray, max_iter: int = 50) -> np.ndarray:
    """Replace NaN blocks by the mean of their valid neighbours, growing inwards.

    A block fully covered by bright pixels (a saturated star and its trail) then gets the
    level of the sky around it rather than the amp-wide median. Blocks still empty after
    ``max_iter`` passes (an amp with no valid block at all) take ``fallback``.
    """
    grid = grid.copy()
    kernel = np.zeros((1, 3, 3))
    kernel[0] = [[0, 1, 0], [1, 0, 1], [0, 1, 0]]
    for _ in range(max_iter):
        empty = ~np.isfinite(grid)
        if not empty.any():
            break
        valid = (~empty).astype(float)
        total = ndimage.convolve(np.where(empty, 0.0, grid), kernel, mode="constant")
        count = ndimage.convolve(valid, kernel, mode="constant")
        fill = empty & (count > 0)
        if not fill.any():
            break
        grid[fill] = total[fill] / count[fill]
    return np.where(np.isfinite(grid), grid, fallback[:, None, None])


def _block_background(data: np.ndarray, exclude: np.ndarray,
                      block: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median of the non-excluded pixels of each block of every amp.

    Parameters
    ----------
    data : numpy.ndarray
        ``(n_amps, ny, nx)`` overscan-subtracted data sections.
    exclude : numpy.ndarray
        bool, same shape: pixels left out of the background.
    block : tuple of int
        Block size (rows, columns).

    Returns
    -------
    grid, yc, xc : numpy.ndarray
        ``(n_amps, n_by, n_bx)`` block medians (empty blocks filled from their neighbours)
        and the row and column coordinates of the block centres.
    """
    n_amp, ny, nx = data.shape
    by, bx = block
    n_by, n_bx = -(-ny // by), -(-nx // bx)
    padded = np.full((n_amp, n_by * by, n_bx * bx), np.nan, dtype=np.float32)
    padded[:, :ny, :nx] = np.where(exclude, np.nan, data)
    blocks = padded.reshape(n_amp, n_by, by, n_bx, bx).transpose(0, 1, 3, 2, 4)
    blocks = blocks.reshape(n_amp, n_by, n_bx, by * bx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN (fully bright) blocks
        grid = np.nanmedian(blocks, axis=3)
        amp_median = np.nanmedian(padded.reshape(n_amp, -1), axis=1)
    grid = _fill_empty_blocks(grid, np.where(np.isfinite(amp_median), amp_median, 0.0))

    def centres(n_pix: int, size: int, n_blocks: int) -> np.ndarray:
        # The last block may be partial: its centre is that of its real pixels.
        starts = np.arange(n_blocks) * size
        return (starts + np.minimum(starts + size, n_pix) - 1) / 2.0

    return grid, centres(ny, by, n_by), centres(nx, bx, n_bx)


def _bilinear(grid: np.ndarray, yc: np.ndarray, xc: np.ndarray, y: np.ndarray,
              x: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of ``(n_amps, n_by, n_bx)`` grids at pixels ``(y, x)``
    (held constant beyond the outer block centres)."""

    def weights(c: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if c.size == 1:
            return np.zeros(v.size, dtype=int), np.zeros(v.size)
        i = np.clip(np.searchsorted(c, v) - 1, 0, c.size - 2)
        w = np.clip((v - c[i]) / (c[i + 1] - c[i]), 0.0, 1.0)
        return i, w

    iy, wy = weights(yc, y.astype(float))
    ix, wx = weights(xc, x.astype(float))
    iy1 = np.minimum(iy + 1, yc.size - 1)
    ix1 = np.minimum(ix + 1, xc.size - 1)
    return ((1 - wy) * (1 - wx) * grid[:, iy, ix] + (1 - wy) * wx * grid[:, iy, ix1]
            + wy * (1 - wx) * grid[:, iy1, ix] + wy * wx * grid[:, iy1, ix1])


def _noise_stats(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each amp's median and robust σ (from one pixel in 64), shaped ``(n_amps, 1, 1)``."""
    sub = data[:, ::8, ::8].reshape(data.shape[0], -1)
    return np.median(sub, axis=1)[:, None, None], robust_sigma(sub, axis=1)[:, None, None]


def _masks(data: np.ndarray, config: CrosstalkExtractConfig,
           stats: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Pixels left out of each amp's background, and each amp's own-star zones.

    The background leaves out positions where *any* amp is bright (they hold the ghosts
    being measured) and each amp's own significant pixels. The own-star zones are where an
    amp has light of its own outside the bright positions, found on a box-smoothed image
    (faint halos too) and grown by ``star_zone_px``: a ghost measured there would sit on
    the halo of one of the target's stars.

    Returns
    -------
    exclude, zones : numpy.ndarray
        bool ``(n_amps, ny, nx)`` each.
    """
    level, sigma = stats
    bright = (data > config.bright_level_adu).any(axis=0)
    # Grow within each amp only: no connectivity along the amp axis.
    plane = np.zeros((3, 3, 3), dtype=bool)
    plane[1] = ndimage.generate_binary_structure(2, 2)
    bright = ndimage.binary_dilation(bright, plane[1], iterations=config.bright_grow_px)
    exclude = bright[None] | ndimage.binary_dilation(
        data > level + config.own_sigma * sigma, plane, iterations=config.bright_grow_px)
    if config.star_zone_px <= 0:
        return exclude, np.zeros_like(exclude)
    box = config.star_zone_box
    smooth = ndimage.uniform_filter(np.where(bright[None], level, data), (1, box, box))
    # The mean of box² pixels has box times less noise than one pixel.
    own = (smooth > level + config.own_sigma * sigma / box) & ~bright[None]
    zones = ndimage.binary_dilation(own, plane, iterations=config.star_zone_px)
    return exclude, zones


def crosstalk_ratios(raw: RawFrame, config: CrosstalkExtractConfig | None = None,
                     correction: np.ndarray | None = None
                     ) -> dict[tuple[int, int], np.ndarray]:
    """Crosstalk ratios of one frame, per (target, source) pair.

    Parameters
    ----------
    raw : RawFrame
        Raw frame with bright (saturated) sources; not modified.
    config : CrosstalkExtractConfig, optional
        Thresholds and background.
    correction : numpy.ndarray, optional
        ``[target, source]`` ADU matrix removed from the overscan-subtracted segments
        (`atmospec.isr.crosstalk.subtract_crosstalk`, as ISR removes it) before the ratios
        are taken: the ratios are then the crosstalk left after that correction.

    Returns
    -------
    dict
        ``(target, source)`` (HDU indices) → float array of target/source ratios, one per
        source pixel kept; pairs without source pixels are absent.
    """
    config = config or CrosstalkExtractConfig()
    band = _SourceBand.of(raw, config)
    if correction is not None:
        band.correct(correction)
    out = band.ratios(config)
    log.debug("%s: crosstalk sources in %d amps", raw.path.name,
              len({s for _, s in out}))
    return out


@dataclass
class _SourceBand:
    """The rows of a frame's overscan-subtracted data sections that hold its sources, with
    a margin of background blocks (`_BAND_MARGIN_BLOCKS`), and the frame's noise statistics.

    Everything the ratios need lies in the band: the sources, the background blocks
    around them (the band starts on a block boundary, so its blocks are the frame's), the
    masks' growth. A spot frame's band is a tenth of its rows, small enough to keep in
    memory for a second pass (the residual after correction) without reading it again.
    """

    data: np.ndarray
    """``(n_amps, rows, nx)`` float32 overscan-subtracted data sections of the band."""
    stats: tuple[np.ndarray, np.ndarray]
    """Each amp's median and robust σ over the whole frame (`_noise_stats`)."""

    @classmethod
    def of(cls, raw: RawFrame, config: CrosstalkExtractConfig) -> _SourceBand:
        camera = raw.camera
        segments = np.array(raw.segments, dtype=np.float32, copy=True)
        subtract_overscan(segments, camera, config.overscan)
        data = segments[(slice(None), *camera.data_bbox.slices)]
        by = config.background_block[0]
        rows = np.flatnonzero((data > config.source_threshold_adu).any(axis=(0, 2)))
        r0, r1 = 0, 0  # no source: an empty band
        if rows.size:
            r1 = data.shape[1]
            margin = _BAND_MARGIN_BLOCKS * by
            r0 = max(0, (int(rows[0]) - margin) // by * by)
            r1 = min(r1, -(-(int(rows[-1]) + 1 + margin) // by) * by)
        band = data[:, r0:r1] if (r0, r1) == (0, data.shape[1]) else data[:, r0:r1].copy()
        return cls(band, _noise_stats(data))

    def correct(self, coeffs: np.ndarray) -> None:
        """Remove crosstalk ``[target, source]`` (ADU ratios) as ISR does
        (`atmospec.isr.crosstalk.subtract_crosstalk`: pixel by pixel in readout order, so a
        band of rows is corrected as in the whole frame)."""
        subtract_crosstalk(self.data, np.asarray(coeffs, dtype=np.float64))

    def ratios(self, config: CrosstalkExtractConfig) -> dict[tuple[int, int], np.ndarray]:
        """Target / source ratios per ``(target, source)`` pair (`crosstalk_ratios`)."""
        data = self.data
        n_amp = data.shape[0]
        if data.shape[1] == 0:
            return {}
        exclude, zones = _masks(data, config, self.stats)
        grid, yc, xc = _block_background(data, exclude, config.background_block)
        flat = data.reshape(n_amp, -1)
        # A position bright in two amps (a bleed trail crossing the middle of the CCD lands
        # at the same readout coordinates in the two amps facing each other) sends both
        # ghosts to every target: only positions where the source alone is bright are used.
        alone = (flat > config.bright_level_adu).sum(axis=0) == 1
        out: dict[tuple[int, int], np.ndarray] = {}
        for source in range(n_amp):
            idx = np.flatnonzero((flat[source] > config.source_threshold_adu) & alone)
            if idx.size == 0:
                continue
            y, x = np.divmod(idx, data.shape[2])
            src = flat[source, idx].astype(np.float64)
            target_signal = flat[:, idx] - _bilinear(grid, yc, xc, y, x)
            ratios = target_signal / src[None, :]
            on_star = zones.reshape(n_amp, -1)[:, idx]
            for target in range(n_amp):
                if target == source:
                    continue
                r = ratios[target]
                out[(target, source)] = r[(np.abs(r) < config.max_ratio) & ~on_star[target]]
        return out


def _combine(ratios: np.ndarray, config: CrosstalkExtractConfig) -> tuple[float, float]:
    """Coefficient and its statistical error from the ratios of one pair.

    ``median``: the median, error 1.2533 σ/√n (σ from the MAD). ``clipped_mean``: the mean
    of the ratios within ``clip_sigma`` σ of the running centre, iterated (σ of the kept
    ratios, corrected for the truncation).
    """
    centre = float(np.median(ratios))
    sigma = float(robust_sigma(ratios))
    if config.estimator == "median" or sigma == 0.0:
        return centre, 1.2533 * sigma / np.sqrt(ratios.size)
    keep = ratios
    for _ in range(config.clip_iterations):
        keep = ratios[np.abs(ratios - centre) < config.clip_sigma * sigma]
        if keep.size < 2:
            break
        centre = float(np.mean(keep))
        shrink = _CLIPPED_STD.get(config.clip_sigma)
        sigma = float(np.std(keep)) / shrink if shrink else float(robust_sigma(keep))
    return centre, sigma / np.sqrt(max(keep.size, 1))


def measure_crosstalk(raws: Sequence[RawFrame | str | Path],
                      config: CrosstalkExtractConfig | None = None,
                      camera: Camera | None = None,
                      correction: np.ndarray | None = None) -> CrosstalkMeasurement:
    """Measure the crosstalk matrix from frames with saturated stars.

    The ratios of all frames are pooled per pair. The error of a coefficient is the larger
    of its statistical error (pixels taken as independent) and, when at least three frames
    contribute, the scatter of the per-frame estimates over √(number of frames): a source
    that lands on a star of the target biases all the ratios of one frame together, which
    the pixel statistics do not see.

    Parameters
    ----------
    raws : sequence of RawFrame or path
        Raw frames (science frames with bright stars, or dedicated spot frames), ideally of
        different fields.
    config : CrosstalkExtractConfig, optional
        Extraction settings.
    camera : Camera, optional
        Camera of path inputs; LATISS by default.
    correction : numpy.ndarray, optional
        ``[target, source]`` ADU matrix removed from every frame first (`crosstalk_ratios`):
        the residual crosstalk after that correction.

    Returns
    -------
    CrosstalkMeasurement
        ``[target, source]`` ratios with errors, counts and validity.
    """
    config = config or CrosstalkExtractConfig()
    camera = camera or load_camera("latiss")
    n = camera.n_amps
    pooled: dict[tuple[int, int], list[np.ndarray]] = {}
    infos = []
    for item in raws:
        raw = as_raw(item, camera)
        infos.append(raw.info)
        for pair, r in crosstalk_ratios(raw, config, correction).items():
            pooled.setdefault(pair, []).append(r)
    return _pooled_measurement(pooled, n, config, infos)


def _pooled_measurement(pooled: dict[tuple[int, int], list[np.ndarray]], n: int,
                        config: CrosstalkExtractConfig, infos: Sequence[ObservationInfo]
                        ) -> CrosstalkMeasurement:
    """The matrix from each pair's ratios of every frame (`measure_crosstalk`)."""
    coeffs = np.zeros((n, n))
    errors = np.full((n, n), np.nan)
    counts = np.zeros((n, n), dtype=np.int64)
    for (target, source), parts in pooled.items():
        r = np.concatenate(parts)
        counts[target, source] = r.size
        if r.size < config.min_pixels:
            continue
        coeff, error = _combine(r, config)
        per_frame = [_combine(p, config)[0] for p in parts if p.size >= config.min_pixels]
        if len(per_frame) >= 3:
            error = max(error, float(np.std(per_frame, ddof=1)) / np.sqrt(len(per_frame)))
        coeffs[target, source], errors[target, source] = coeff, error
    valid = counts >= config.min_pixels
    np.fill_diagonal(valid, False)
    coeffs[~valid] = 0.0
    log.info("crosstalk from %d frames: %d of %d pairs measured", len(infos),
             int(valid.sum()), n * (n - 1))
    return CrosstalkMeasurement(coeffs, errors, counts, valid, len(infos), calib_date=calib_date(
        [i.datetime_begin for i in infos], [i.day_obs for i in infos]))


def measure_crosstalk_and_residual(
        raws: Sequence[RawFrame | str | Path], config: CrosstalkExtractConfig | None = None,
        camera: Camera | None = None, *, max_band_rows: int | None = None,
) -> tuple[CrosstalkMeasurement, CrosstalkMeasurement]:
    """The crosstalk matrix of ``raws`` (`measure_crosstalk`) and what is left of it once
    that matrix is removed from them (`atmospec.isr.crosstalk.subtract_crosstalk`, as ISR
    removes it): cp_verify's residual after correction.

    Each frame is read once: the band of rows holding its sources (with the background
    blocks around them) is kept for the second pass, where it is corrected and measured
    again, the same as reading the frame again (`measure_crosstalk` with ``correction``)
    but for the noise statistics of the own-light masks, taken before the correction.
    A frame whose band is taller than ``max_band_rows`` (sources all over it: saturated
    stars) is read again instead.

    Parameters
    ----------
    raws : sequence of RawFrame or path
        Spot frames (or frames with saturated stars).
    config : CrosstalkExtractConfig, optional
        Extraction settings.
    camera : Camera, optional
        Camera of path inputs; LATISS by default.
    max_band_rows : int, optional
        Tallest band kept in memory; a quarter of the data section's rows by default.

    Returns
    -------
    measured, residual : CrosstalkMeasurement
    """
    config = config or CrosstalkExtractConfig()
    camera = camera or load_camera("latiss")
    n = camera.n_amps
    limit = max_band_rows if max_band_rows is not None else camera.data_bbox.shape[0] // 4
    pooled: dict[tuple[int, int], list[np.ndarray]] = {}
    kept: list[_SourceBand | RawFrame | str | Path] = []
    infos = []
    for item in raws:
        raw = as_raw(item, camera)
        infos.append(raw.info)
        band = _SourceBand.of(raw, config)
        for pair, r in band.ratios(config).items():
            pooled.setdefault(pair, []).append(r)
        kept.append(band if band.data.shape[1] <= limit else item)
        del raw
    measured = _pooled_measurement(pooled, n, config, infos)
    pooled = {}
    for entry in kept:
        if not isinstance(entry, _SourceBand):
            entry = _SourceBand.of(as_raw(entry, camera), config)
        entry.correct(measured.coeffs)
        for pair, r in entry.ratios(config).items():
            pooled.setdefault(pair, []).append(r)
    return measured, _pooled_measurement(pooled, n, config, infos)


def compare_crosstalk(measured: CrosstalkMeasurement, reference: CrosstalkMatrix | None = None,
                      camera: Camera | None = None) -> Table:
    """Compare a measured matrix with a reference one (by default the shipped LATISS one).

    Parameters
    ----------
    measured : CrosstalkMeasurement
        Measurement.
    reference : CrosstalkMatrix, optional
        Reference matrix; the shipped LATISS one (`atmospec.calib.products.Crosstalk`) by
        default. Must be in ADU ratios.
    camera : Camera, optional
        Amp names; LATISS by default.

    Returns
    -------
    astropy.table.Table
        One row per valid pair, strongest reference first: ``target``, ``source`` (amp
        names), ``measured``, ``error``, ``reference``, ``ratio`` (measured / reference),
        ``n_sigma`` ((measured − reference) / error), ``count``.
    """
    camera = camera or load_camera("latiss")
    reference = reference or Crosstalk.default(camera).matrix(camera.n_amps)
    if reference.units != "adu":
        raise ValueError("the reference matrix must be in ADU ratios")
    t, s = np.nonzero(measured.valid)
    ref = reference.coeffs[t, s]
    meas = measured.coeffs[t, s]
    err = measured.errors[t, s]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(ref != 0, meas / ref, np.nan)
        n_sigma = (meas - ref) / err
    names = np.array(camera.amp_names)
    table = Table({"target": names[t], "source": names[s], "measured": meas, "error": err,
                   "reference": ref, "ratio": ratio, "n_sigma": n_sigma,
                   "count": measured.counts[t, s]})
    table.sort("reference", reverse=True)
    return table
