"""The flat-field figures of an EO acquisition: pixel response non-uniformity, the
response at the amp boundaries (divisadero) and tearing.

PRNU (CCD-027, eotest's ``prnuTask``)
    the pixel-to-pixel scatter of the response, σ/mean of the master superflat of each amp
    (bias-subtracted and gain-corrected by its ISR), after the large-scale illumination
    (the projector's fall-off, smooth structure over ≳ 100 pixels) is divided out and with
    the defects left out; the noise the master still carries (the shot and read noise of
    its inputs, averaged) is subtracted in quadrature, as eotest's "excess variance" does.
    `prnu_percent`.
divisadero (eo_pipe's ``divisaderoTearingTask``)
    the response of the columns next to each boundary between two amps side by side: the
    clipped mean of each column over the first rows read, normalised by the amp's median
    and divided by a straight line fitted to the amp's columns away from its edges; the
    figure is the largest |response − 1| of the columns within a few of the boundary, the
    larger of an amp's two boundaries (its only one at a CCD edge). `divisadero_response`.
tearing (Pierre Antilogus' statistic, eotest's ``tearing_statistics``)
    on each raw high-flux superflat, the ratio of the two outermost imaging columns at each
    edge of an amp (second/first at the first edge, second-to-last/last at the other),
    averaged in windows of 100 rows at the start, middle and end of the readout; an edge
    whose three means span more than ``cut`` (5 %) beyond their error is torn, and an amp
    counts one detection per torn edge (the other edge passing the loose cut of −1 %). A
    frame whose amps total more than ``min_detections`` (10) has tearing. `tearing_counts`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from atmospec.calib.masters import large_scale_response
from atmospec.camera.description import Camera
from atmospec.stats import clipped_mean_var

log = logging.getLogger(__name__)

__all__ = [
    "DivisaderoConfig",
    "PrnuConfig",
    "TearingConfig",
    "divisadero_response",
    "master_flat_noise",
    "prnu_percent",
    "tearing_counts",
]


# --------------------------------------------------------------------------- PRNU


@dataclass(frozen=True)
class PrnuConfig:
    """How the PRNU of a master flat is measured."""

    smooth_bin: int = 16
    """Bin side, pixels, of the large-scale illumination model
    (`atmospec.calib.masters.large_scale_response`)."""
    smooth_size: int = 7
    """Median-filter width of that model, bins: 16 × 7 px, structure larger than ~100
    pixels is illumination, not pixel response."""
    clip_sigma: float = 5.0
    """Pixels further than this many σ from the amp's mean are left out (defects the maps
    missed, cosmic rays)."""


def master_flat_noise(level_e: np.ndarray, read_noise_e: np.ndarray, n_combined: int,
                      median_combined: bool = False) -> np.ndarray:
    """Relative noise variance of a master flat's pixels, per amp.

    One input pixel at ``L`` e⁻ has variance ``L + RN²``; the master averages ``n`` of
    them (a median of more than two costs π/2 in variance), and is scaled by ``1/L``.

    Parameters
    ----------
    level_e : numpy.ndarray
        Mean signal of each amp in one input flat, e⁻.
    read_noise_e : numpy.ndarray
        Read noise of each amp, e⁻.
    n_combined : int
        Flats combined.
    median_combined : bool
        Whether they were combined by a median.

    Returns
    -------
    numpy.ndarray
        ``(L + RN²) / (n·L²)`` (× π/2 for a median of more than two).
    """
    level_e = np.asarray(level_e, dtype=float)
    efficiency = np.pi / 2 if median_combined and n_combined > 2 else 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        return efficiency * (level_e + np.asarray(read_noise_e, float) ** 2) / (
            max(n_combined, 1) * level_e**2)


def prnu_percent(flat: np.ndarray, good: np.ndarray, camera: Camera,
                 noise_variance: np.ndarray | None = None,
                 config: PrnuConfig | None = None) -> np.ndarray:
    """Pixel response non-uniformity of every amp of a master flat, %.

    Parameters
    ----------
    flat : numpy.ndarray
        Assembled master flat (bias-subtracted, gain-corrected, any normalisation).
    good : numpy.ndarray
        bool, assembled: pixels to use (not defects, with data).
    camera : Camera
        Amp layout.
    noise_variance : numpy.ndarray, optional
        Per amp, the variance of the master's pixels from its inputs' noise, relative to
        the amp's level squared (`master_flat_noise`); subtracted in quadrature. None:
        nothing subtracted.
    config : PrnuConfig, optional
        Large-scale model and clipping.

    Returns
    -------
    numpy.ndarray
        ``100 · √(σ² − noise) / mean`` of each amp's flat over its large-scale model (0
        when the noise explains all the scatter), NaN for an amp with too few good pixels.
    """
    config = config or PrnuConfig()
    large = large_scale_response(flat, good, camera, config.smooth_bin, config.smooth_size)
    n = camera.n_amps
    out = np.full(n, np.nan)
    noise = np.zeros(n) if noise_variance is None else np.asarray(noise_variance, float)
    for i, amp in enumerate(camera.amplifiers):
        sl = camera.amp_slices(amp)
        ok = good[sl] & (large[sl] > 0)
        if ok.sum() < 100:
            continue
        ratio = (flat[sl][ok] / large[sl][ok]).astype(np.float64)[None, :]
        mean, var, _ = clipped_mean_var(ratio, config.clip_sigma, sigma_floor=1e-6)
        excess = float(var[0] / mean[0] ** 2) - noise[i]
        out[i] = 100.0 * np.sqrt(max(excess, 0.0))
    return out


# --------------------------------------------------------------------------- divisadero


@dataclass(frozen=True)
class DivisaderoConfig:
    """How the response at the amp boundaries is measured (eo_pipe's defaults)."""

    rows: tuple[int, int] = (10, 210)
    """Rows, counted from the first read, whose column means make the profile."""
    n_edge_fit: int = 25
    """Columns at either end of an amp left out of the straight line the profile is divided
    by."""
    n_boundary: int = 3
    """Columns on each side of a boundary searched for the largest deviation."""
    clip_sigma: float = 3.0
    """Clipping of each column's mean, σ."""


def divisadero_response(flat: np.ndarray, camera: Camera,
                        config: DivisaderoConfig | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Largest deviation from 1 of the column response at each amp's side boundaries.

    Parameters
    ----------
    flat : numpy.ndarray
        Assembled master flat.
    camera : Camera
        Amp layout: amps of the same grid row ``iy`` and consecutive ``ix`` share a
        boundary.
    config : DivisaderoConfig, optional
        Rows, fit and boundary widths.

    Returns
    -------
    maximum : numpy.ndarray
        Per amp (HDU order), max |response − 1| within ``n_boundary`` columns either side
        of its boundaries with its neighbours (fraction); NaN for an amp without one.
    profiles : numpy.ndarray
        ``(n_amps, data columns)`` the normalised, detrended column response of each amp, in
        assembled column order.
    """
    config = config or DivisaderoConfig()
    n = camera.n_amps
    nx = camera.data_bbox.nx
    profiles = np.full((n, nx), np.nan)
    lo, hi = config.rows
    x = np.arange(nx, dtype=float)
    fit = slice(config.n_edge_fit, nx - config.n_edge_fit)
    for i, amp in enumerate(camera.amplifiers):
        image = flat[camera.amp_slices(amp)]
        # Rows counted from the first read (the serial register's side).
        if amp.flip_y:
            image = image[::-1]
        columns = np.ascontiguousarray(image[lo:hi].T, dtype=np.float64)
        mean, _, count = clipped_mean_var(columns, config.clip_sigma, sigma_floor=1e-6)
        mean[count < 2] = np.nan
        median = np.nanmedian(mean)
        if not np.isfinite(median) or median <= 0:
            continue
        profile = mean / median
        ok = np.isfinite(profile[fit])
        if ok.sum() < 2:
            continue
        slope, intercept = np.polyfit(x[fit][ok], profile[fit][ok], 1)
        profiles[i] = profile / (slope * x + intercept)
    where = {(a.iy, a.ix): i for i, a in enumerate(camera.amplifiers)}
    maximum = np.full(n, np.nan)
    k = config.n_boundary
    for (iy, ix), left in where.items():
        right = where.get((iy, ix + 1))
        if right is None:
            continue
        near = np.concatenate([profiles[left, nx - k:], profiles[right, :k]])
        if not np.isfinite(near).any():
            continue
        value = float(np.nanmax(np.abs(near - 1.0)))
        for i in (left, right):
            maximum[i] = value if np.isnan(maximum[i]) else max(maximum[i], value)
    return maximum, profiles


# --------------------------------------------------------------------------- tearing


@dataclass(frozen=True)
class TearingConfig:
    """Pierre Antilogus' tearing statistic (eotest's ``tearing_statistics`` defaults)."""

    row_centres: tuple[int, int, int] = (150, 1000, 1950)
    """Centres of the three windows of the readout, rows of the imaging section from the
    first read."""
    half_window: int = 50
    """Half height of each window, rows."""
    cut: float = 0.05
    """A torn edge: its window means span more than this beyond their error."""
    cut_other: float = -0.01
    """The amp's other edge must span more than this beyond its error (a loose check that
    its ratios were measurable)."""
    n_sigma: float = 1.0
    """Errors the spans must exceed the cuts by."""
    overscan_skip: int = 10
    """Serial-overscan columns skipped at either end for each row's bias."""
    min_detections: int = 10
    """A frame has tearing when its amps total more detections than this."""


def _edge_spans(segments: np.ndarray, camera: Camera, config: TearingConfig
                ) -> tuple[np.ndarray, np.ndarray]:
    """Span of the windowed edge ratios and its error: ``(n_amps, 2)`` each."""
    data = camera.data_bbox
    sov = camera.serial_overscan_bbox
    k = config.overscan_skip
    rows = slice(data.y0, data.y0 + data.ny)
    bias = np.mean(segments[:, rows, sov.x0 + k: sov.x0 + sov.nx - k], axis=2,
                   dtype=np.float64)
    x0, x1 = data.x0, data.x0 + data.nx
    edges = [(segments[:, rows, x0 + 1], segments[:, rows, x0]),
             (segments[:, rows, x1 - 2], segments[:, rows, x1 - 1])]
    spans = np.zeros((camera.n_amps, 2))
    errors = np.zeros((camera.n_amps, 2))
    h = config.half_window
    for e, (num, den) in enumerate(edges):
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = (num - bias) / (den - bias)
        means = np.stack([ratio[:, c - h: c + h].mean(axis=1) for c in config.row_centres],
                         axis=1)
        sigmas = np.stack([ratio[:, c - h: c + h].std(axis=1) for c in config.row_centres],
                          axis=1)
        hi, lo = np.argmax(means, axis=1), np.argmin(means, axis=1)
        idx = np.arange(camera.n_amps)
        spans[:, e] = means[idx, hi] - means[idx, lo]
        # The error of a window's mean: its σ over √100 rows (eotest's "/ 10").
        errors[:, e] = np.hypot(sigmas[idx, hi], sigmas[idx, lo]) / np.sqrt(2 * h)
    return spans, errors


def tearing_counts(segments: np.ndarray, camera: Camera,
                   config: TearingConfig | None = None) -> np.ndarray:
    """Tearing detections of every amp of one raw flat: 0, 1 or 2 (one per torn edge).

    Parameters
    ----------
    segments : numpy.ndarray
        ``(n_amps, ny, nx)`` raw segments of a high-flux flat (readout orientation, ADU; not
        modified).
    camera : Camera
        Data section and serial overscan.
    config : TearingConfig, optional
        Windows and cuts.

    Returns
    -------
    numpy.ndarray
        int per amp (HDU order); the frame has tearing when they total more than
        ``config.min_detections``.

    Raises
    ------
    ValueError
        If a window does not fit in the imaging section.
    """
    config = config or TearingConfig()
    ny = camera.data_bbox.ny
    h = config.half_window
    if min(config.row_centres) < h or max(config.row_centres) + h > ny:
        raise ValueError(f"{camera.label}: tearing windows {config.row_centres} ± {h} do not "
                         f"fit in {ny} rows")
    spans, errors = _edge_spans(segments, camera, config)
    torn = spans - config.cut > config.n_sigma * errors
    measurable = spans - config.cut_other > config.n_sigma * errors
    counts = (torn[:, 0] & measurable[:, 1]).astype(int) + (torn[:, 1] & measurable[:, 0])
    return counts
