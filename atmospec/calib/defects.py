"""Defects product: hot pixels from a master dark, cold pixels from a master flat, as boxes.

The search follows Rubin's cp_pipe (MeasureDefectsTask), amplifier by amplifier:

* the master dark (e⁻/s) and the master flat (normalised) are compared with their
  background: the amp's median for the dark, a sigma-clipped local mean (a box of
  `FindDefectsConfig.flat_background_box` pixels) for the flat, so that vignetting and dust
  shadows are not taken for cold pixels;
* ``threshold_type="sigma"``: hot pixels lie more than ``n_sigma_hot`` (4.8) robust σ above
  the background of the dark, cold pixels more than ``n_sigma_cold`` (−5) σ below that of
  the flat (σ from the median absolute deviation of the amp's residuals);
  ``threshold_type="value"``: the camera team's definitions (LCA-128, eotest, cp_pipe's
  ``VALUE`` mode): dark current above ``hot_threshold_e_per_s``, or a response below
  ``cold_fraction`` of the amp's median;
* columns: an amp column with more than ``bad_column_fraction`` of its pixels defective, or
  whose median residual is a ``n_sigma_column`` outlier among the amp's columns and at least
  half as far from the background as a defective pixel (a faint hot or cold column that
  few single pixels reveal), becomes a full-column defect;
* optionally the ``edge_pixels`` outermost rows and columns of the detector are defects;
* the union is cut into boxes (runs along rows, merged over consecutive rows with the same
  extent): a column is one box, an isolated pixel another.

The product (`atmospec.calib.products.Defects`) is an ECSV table with integer columns ``x0,
y0, width, height`` in assembled pixels (Rubin's "Simple" defects schema); `build_defects`
returns it with its verification, in memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import numpy as np
from astropy.table import Table
from astropy.time import Time
from scipy import ndimage

from atmospec.calib.products import Dark, Defects, Flat
from atmospec.calib.products.calibdate import calib_date
from atmospec.calib.products.detector import check_detector, detector_meta
from atmospec.calib.verification import TestResult, VerificationReport
from atmospec.camera.description import Camera, load_camera
from atmospec.errors import BadInputError
from atmospec.exposure import Exposure
from atmospec.io import provenance_cards
from atmospec.isr.defects import defect_mask
from atmospec.stats import robust_sigma

log = logging.getLogger(__name__)

__all__ = [
    "DefectMaps",
    "FindDefectsConfig",
    "build_defects",
    "detect_defects",
    "find_defects",
    "mask_to_boxes",
    "verify_defects",
]


@dataclass(frozen=True)
class FindDefectsConfig:
    """How hot and cold pixels are found and turned into defect boxes."""

    threshold_type: Literal["sigma", "value"] = "sigma"
    """``sigma``: thresholds in robust σ of each amp's residuals; ``value``: absolute
    thresholds (dark current in e⁻/s, fraction of the amp's median response)."""
    n_sigma_hot: float = 4.8
    """Hot pixels: residual of the dark above this many σ (cp_pipe's ``nSigmaBright``)."""
    n_sigma_cold: float = -5.0
    """Cold pixels: residual of the flat below this many σ (negative; cp_pipe's
    ``nSigmaDark``)."""
    hot_threshold_e_per_s: float = 5.0
    """``value`` mode: dark current above which a pixel is hot, e⁻/s (LCA-128 / eotest bright
    pixel definition; cp_pipe's LATISS pipeline uses 3)."""
    cold_fraction: float = 0.8
    """``value`` mode: response below this fraction of the amp's median is cold (LCA-128)."""
    dark_background_box: int = 0
    """Box (pixels) of the clipped local mean removed from the dark; 0: the amp's median
    (a dark has no large-scale structure worth following)."""
    flat_background_box: int = 7
    """Box (pixels) of the clipped local mean the flat is divided by; 0: the amp's median.
    Small enough to follow the soft edges of dust shadows (a few pixels)."""
    background_clip_sigma: float = 4.0
    """Pixels further than this many σ from the local background are left out of it."""
    background_iterations: int = 2
    """Clipping passes of the local background."""
    bad_column_fraction: float = 0.25
    """An amp column with more than this fraction of its pixels defective is masked whole."""
    min_column_pixels: int | None = None
    """An amp column with at least this many defective pixels is masked whole as well (the
    camera team's bright and dark columns: 20 pixels, eotest); ``None``: no such rule."""
    n_sigma_column: float | None = 10.0
    """A column whose median residual is this many σ (of the amp's column medians) above
    (dark) or below (flat) the others is masked whole; ``None``: no column test."""
    column_min_depth: float = 0.5
    """...and whose median residual is also at least this fraction of the pixel threshold's
    distance from the background: the ordinary column-to-column response structure of a
    flat (a few 0.1 %, corrected by the flat itself) is then not a defect."""
    edge_pixels: int = 0
    """Outermost rows and columns of the detector declared defective (0: none)."""
    use_product_bad: bool = True
    """Pixels already flagged BAD (or non-finite) in the masters are defects."""
    max_defect_fraction: float = 0.01
    """Verification: largest acceptable fraction of defective pixels per amp (and overall)."""
    max_boxes_per_amp: int = 5000
    """Verification: more boxes than this in one amp points at a wrong threshold."""


@dataclass
class DefectMaps:
    """Defective pixels found in the masters, by kind, in assembled-image pixels."""

    hot: np.ndarray
    """bool: hot pixels of the dark (isolated pixels and hot columns)."""
    cold: np.ndarray
    """bool: cold pixels of the flat (isolated pixels and cold columns)."""
    hot_columns: np.ndarray
    """bool: pixels of the columns masked whole because of the dark."""
    cold_columns: np.ndarray
    """bool: pixels of the columns masked whole because of the flat."""
    edge: np.ndarray
    """bool: the detector border (`FindDefectsConfig.edge_pixels`)."""
    product_bad: np.ndarray
    """bool: pixels unusable in the masters (BAD or non-finite)."""
    amp_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per amp: thresholds used and pixel counts (``n_hot``, ``n_cold``, ``n_hot_columns``,
    ``n_cold_columns``, ``n_defective``, ``defect_fraction``)."""

    @property
    def mask(self) -> np.ndarray:
        """bool: every defective pixel."""
        return self.hot | self.cold | self.edge | self.product_bad


def _clipped_local_mean(image: np.ndarray, good: np.ndarray, box: int, clip: float,
                        iterations: int) -> np.ndarray:
    """Local mean over a ``box``-pixel square of the good pixels, with outliers removed.

    A normalised convolution (mean of the weights-times-image over mean of the weights)
    gives the local mean of the pixels still in ``good``; pixels further than ``clip``
    robust σ from it are dropped and the mean recomputed. Two passes are enough to keep a
    cold pixel from depressing the background of its neighbours. Much faster than a median
    filter, which would take tens of seconds on a full detector.
    """
    weight = good.astype(np.float32)
    values = np.where(good, image, np.float32(0.0)).astype(np.float32)
    fallback = np.float32(np.median(image[good])) if good.any() else np.float32(0.0)
    background = np.full(image.shape, fallback, dtype=np.float32)
    for it in range(iterations + 1):
        num = ndimage.uniform_filter(values * weight, box, mode="nearest")
        den = ndimage.uniform_filter(weight, box, mode="nearest")
        # A box with no usable pixel (inside a large defect) keeps the amp's median.
        background = np.where(den > 1e-3, num / np.maximum(den, 1e-3), fallback)
        if it == iterations:
            break
        resid = image - background
        # Every third row is plenty for the clipping scale and three times cheaper.
        sigma = float(robust_sigma(resid[::3][good[::3]]))
        weight = (good & (np.abs(resid) <= clip * max(sigma, 1e-12))).astype(np.float32)
    return background.astype(np.float32)


def _amp_residual(image: np.ndarray, good: np.ndarray, box: int, relative: bool,
                  config: FindDefectsConfig) -> tuple[np.ndarray, float]:
    """Residual of one amp's image about its background, and the amp's median level."""
    level = float(np.median(image[good])) if good.any() else float("nan")
    if box > 0:
        background = _clipped_local_mean(image, good, box, config.background_clip_sigma,
                                          config.background_iterations)
    else:
        background = np.full(image.shape, level, dtype=np.float32)
    if relative:
        with np.errstate(divide="ignore", invalid="ignore"):
            resid = image / background - np.float32(1.0)
    else:
        resid = image - background
    return np.where(good, resid, np.float32(0.0)), level


def _column_outliers(resid: np.ndarray, good: np.ndarray, n_sigma: float, sign: int,
                     min_depth: float) -> np.ndarray:
    """Columns whose median residual is a ``n_sigma`` outlier (in direction ``sign``) and
    at least ``min_depth`` (residual units) from zero.

    Unusable pixels count as zero residual (the background): a plain median is ~20 times
    faster than a NaN-aware one, and this only pulls mostly-unusable columns towards normal.
    """
    medians = np.median(np.where(good, resid, np.float32(0.0)), axis=0)
    finite = good.any(axis=0) & np.isfinite(medians)
    if finite.sum() < 10:
        return np.zeros(resid.shape[1], dtype=bool)
    centre = np.median(medians[finite])
    sigma = float(robust_sigma(medians[finite]))
    # The floor keeps a noiseless (simulated) column pattern from flagging everything.
    sigma = max(sigma, 1e-9)
    return finite & (sign * (medians - centre) > n_sigma * sigma) & (sign * medians > min_depth)


def _find_in_amp(image: np.ndarray, good: np.ndarray, kind: Literal["dark", "flat"],
                 config: FindDefectsConfig) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Defective pixels and whole defective columns of one amp of one master."""
    is_dark = kind == "dark"
    box = config.dark_background_box if is_dark else config.flat_background_box
    resid, level = _amp_residual(image, good, box, relative=not is_dark, config=config)
    sigma = float(robust_sigma(resid[good])) if good.any() else float("nan")
    sign = 1 if is_dark else -1
    # ``depth``: how far from the background (in residual units) a defective pixel lies.
    if config.threshold_type == "sigma":
        n_sigma = config.n_sigma_hot if is_dark else config.n_sigma_cold
        threshold = n_sigma * sigma
        depth = abs(threshold)
        pixels = good & (sign * resid > sign * threshold)
    elif is_dark:
        # Absolute dark current, as in the camera team's bright-pixel definition.
        threshold = config.hot_threshold_e_per_s
        depth = threshold - level
        pixels = good & (image > threshold)
    else:
        threshold = config.cold_fraction * level
        depth = 1.0 - config.cold_fraction
        pixels = good & (image < threshold)

    ny = image.shape[0]
    counts = pixels.sum(axis=0)
    columns = counts > config.bad_column_fraction * ny
    if config.min_column_pixels is not None:
        columns |= counts >= config.min_column_pixels
    if config.n_sigma_column is not None:
        columns |= _column_outliers(resid, good, config.n_sigma_column, sign,
                                    config.column_min_depth * depth)
    stats = {"level": level, "sigma": sigma, "threshold": float(threshold)}
    return pixels, columns, stats


def detect_defects(dark: Exposure | None = None, flat: Exposure | None = None,
                   config: FindDefectsConfig | None = None,
                   camera: Camera | None = None) -> DefectMaps:
    """Find hot pixels in a master dark and cold pixels in a master flat, per amplifier.

    Parameters
    ----------
    dark : Exposure, optional
        Master dark in e⁻/s (assembled).
    flat : Exposure, optional
        Master flat, normalised to about 1 (assembled).
    config : FindDefectsConfig, optional
        Thresholds, background, columns, edges.
    camera : Camera, optional
        Detector layout; LATISS by default.

    Returns
    -------
    DefectMaps
        Boolean maps of each kind of defect and per-amp statistics.

    Raises
    ------
    ValueError
        If neither master is given or a master has the wrong shape.
    """
    config = config or FindDefectsConfig()
    camera = camera or load_camera("latiss")
    if dark is None and flat is None:
        raise ValueError("detect_defects needs a master dark, a master flat or both")
    shape = camera.detector_shape
    for name, product in (("dark", dark), ("flat", flat)):
        if product is not None and product.shape != shape:
            raise ValueError(f"master {name} has shape {product.shape}, expected {shape}")

    empty = np.zeros(shape, dtype=bool)
    hot, cold = empty.copy(), empty.copy()
    hot_cols, cold_cols = empty.copy(), empty.copy()
    edge = empty.copy()
    n = config.edge_pixels
    if n > 0:
        edge[:n, :] = edge[-n:, :] = True
        edge[:, :n] = edge[:, -n:] = True
    product_bad = empty.copy()
    for product in (dark, flat):
        if product is None:
            continue
        product_bad |= ~np.isfinite(product.image)
        if config.use_product_bad and "BAD" in product.mask_planes:
            product_bad |= (product.mask & (1 << product.mask_planes["BAD"])) != 0

    stats: dict[str, dict[str, float]] = {}
    for amp in camera.amplifiers:
        sl = camera.amp_slices(amp)
        good = ~(edge[sl] | product_bad[sl])
        amp_stats: dict[str, float] = {}
        for kind, product, pix_map, col_map in (("dark", dark, hot, hot_cols),
                                                ("flat", flat, cold, cold_cols)):
            if product is None:
                continue
            image = np.asarray(product.image[sl], dtype=np.float32)
            pixels, columns, s = _find_in_amp(image, good, kind, config)
            col_block = np.zeros_like(pixels)
            col_block[:, columns] = True
            col_block &= ~edge[sl]
            pix_map[sl] = pixels | col_block
            col_map[sl] = col_block
            amp_stats.update({f"{kind}_{k}": v for k, v in s.items()})
        amp_hot, amp_cold = hot[sl], cold[sl]
        amp_stats["n_hot"] = int((amp_hot & ~hot_cols[sl]).sum())
        amp_stats["n_cold"] = int((amp_cold & ~cold_cols[sl]).sum())
        amp_stats["n_hot_columns"] = int(hot_cols[sl].any(axis=0).sum())
        amp_stats["n_cold_columns"] = int(cold_cols[sl].any(axis=0).sum())
        defective = amp_hot | amp_cold | edge[sl] | product_bad[sl]
        amp_stats["n_defective"] = int(defective.sum())
        amp_stats["defect_fraction"] = float(defective.mean())
        stats[amp.name] = amp_stats
        log.debug("%s: %d hot, %d cold pixels, %d hot and %d cold columns", amp.name,
                  amp_stats["n_hot"], amp_stats["n_cold"], amp_stats["n_hot_columns"],
                  amp_stats["n_cold_columns"])
    maps = DefectMaps(hot, cold, hot_cols, cold_cols, edge, product_bad, stats)
    log.info("defects: %d hot and %d cold pixels (%d pixels in columns), %d edge pixels",
             int(hot.sum()), int(cold.sum()), int((hot_cols | cold_cols).sum()),
             int(edge.sum()))
    return maps


def _run_boxes(mask: np.ndarray) -> tuple[np.ndarray, ...]:
    """``x0, y0, width, height`` arrays of the boxes covering ``mask`` (see `mask_to_boxes`)."""
    ny, nx = mask.shape
    padded = np.zeros((ny, nx + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    # Row-major order: starts and stops come out paired within every row.
    rows, starts = np.nonzero(edges == 1)
    _, stops = np.nonzero(edges == -1)
    widths = stops - starts
    order = np.lexsort((rows, widths, starts))
    y, x, w = rows[order], starts[order], widths[order]
    new = np.ones(y.size, dtype=bool)
    new[1:] = (x[1:] != x[:-1]) | (w[1:] != w[:-1]) | (y[1:] != y[:-1] + 1)
    first = np.nonzero(new)[0]
    heights = np.diff(np.append(first, y.size))
    return x[first], y[first], w[first], heights


def mask_to_boxes(*masks: np.ndarray) -> Table:
    """Cover the true pixels of boolean maps exactly with boxes.

    Each row is cut into runs of consecutive true pixels; runs with the same start and width
    in consecutive rows are merged into one box. A rectangle is one box, an isolated pixel
    another. Several maps are boxed one after the other (pixels already covered by an
    earlier map are skipped): giving the whole-column defects first keeps each column one
    box even where a hot pixel touches it.

    Parameters
    ----------
    *masks : numpy.ndarray
        2-d boolean maps of the same shape.

    Returns
    -------
    astropy.table.Table
        Integer columns ``x0, y0, width, height`` (pixels), sorted by ``y0`` then ``x0``.
    """
    covered = np.zeros(np.shape(masks[0]), dtype=bool)
    parts = []
    for mask in masks:
        mask = np.asarray(mask, dtype=bool) & ~covered
        parts.append(_run_boxes(mask))
        covered |= mask
    x0, y0, width, height = (np.concatenate(p).astype(np.int32) for p in zip(*parts,
                                                                              strict=True))
    table = Table({"x0": x0, "y0": y0, "width": width, "height": height})
    table.sort(["y0", "x0"])
    for name, doc in (("x0", "X coordinate of bottom left corner of box"),
                      ("y0", "Y coordinate of bottom left corner of box"),
                      ("width", "X extent of box"), ("height", "Y extent of box")):
        table[name].unit = "pix"
        table[name].description = doc
    return table


def _calib_date(*products: Exposure | None) -> str:
    """CALIBDATE of the product: the earliest of the masters' (UTC, the start of their first
    input), else now. Not DATE-OBS: a frame's DATE-OBS is TAI on Rubin's cameras."""
    dates = [str(p.metadata.get("CALIBDATE")) for p in products
             if p is not None and p.metadata.get("CALIBDATE")]
    if dates:
        return min(dates)
    # A master from elsewhere may carry only its frame's date, in its TIMESYS (Rubin: TAI).
    for product in products:
        value = None if product is None else (product.metadata.get("DATE-BEG")
                                              or product.metadata.get("DATE-OBS"))
        scale = str(product.metadata.get("TIMESYS", "TAI")).lower() if product else "tai"
        if value:
            try:
                return calib_date([Time(str(value), scale=scale if scale in ("tai", "utc")
                                        else "tai")])
            except ValueError:
                continue
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def find_defects(dark: Exposure | None = None, flat: Exposure | None = None,
                 config: FindDefectsConfig | None = None,
                 camera: Camera | None = None, maps: DefectMaps | None = None) -> Table:
    """Defect boxes from a master dark and/or a master flat.

    Parameters
    ----------
    dark : Exposure, optional
        Master dark in e⁻/s.
    flat : Exposure, optional
        Normalised master flat.
    config : FindDefectsConfig, optional
        Thresholds and options.
    camera : Camera, optional
        Detector layout; LATISS by default.
    maps : DefectMaps, optional
        Result of `detect_defects` on these masters, if already computed (not recomputed).

    Returns
    -------
    astropy.table.Table
        ``x0, y0, width, height`` boxes (assembled pixels) with metadata: ``OBSTYPE``
        (``defects``), ``INSTRUME``, ``DETECTOR``, ``DETSER`` (`detector_meta`: ``camera``'s),
        ``CALIBDATE``, the Simple schema keys, total counts
        (``N_HOT``, ``N_COLD``, ``N_HOT_COLUMNS``, ``N_COLD_COLUMNS``, ``N_EDGE``,
        ``N_DEFECTIVE``) and per-amp counts in ``AMP_COUNTS``.

    Raises
    ------
    BadInputError
        A master of another instrument or detector than ``camera``
        (`atmospec.calib.products.detector.check_detector`).
    """
    config = config or FindDefectsConfig()
    camera = camera or load_camera("latiss")
    for kind, product in (("dark", dark), ("flat", flat)):
        if product is not None:
            # The table names ``camera``'s detector: masters of another one would make it lie.
            check_detector(product.metadata, camera, None, f"master {kind}",
                           target="the camera")
    if maps is None:
        maps = detect_defects(dark, flat, config, camera)
    table = mask_to_boxes(maps.hot_columns | maps.cold_columns, maps.mask)
    amp_counts = {
        name: {k: int(s[k]) for k in ("n_hot", "n_cold", "n_hot_columns", "n_cold_columns",
                                      "n_defective")}
        for name, s in maps.amp_stats.items()
    }
    table.meta.update({
        "OBSTYPE": "defects",
        **detector_meta(camera),
        "CALIBDATE": _calib_date(dark, flat),
        "DEFECTS_SCHEMA": "Simple",
        "DEFECTS_SCHEMA_VERSION": 1,
        "THRESHOLD_TYPE": config.threshold_type,
        "N_HOT": sum(c["n_hot"] for c in amp_counts.values()),
        "N_COLD": sum(c["n_cold"] for c in amp_counts.values()),
        "N_HOT_COLUMNS": sum(c["n_hot_columns"] for c in amp_counts.values()),
        "N_COLD_COLUMNS": sum(c["n_cold_columns"] for c in amp_counts.values()),
        "N_EDGE": int(maps.edge.sum()),
        "N_DEFECTIVE": int(maps.mask.sum()),
        "AMP_COUNTS": amp_counts,
    })
    return table


def verify_defects(table: Table, product_file: str, config: FindDefectsConfig | None = None,
                   camera: Camera | None = None) -> VerificationReport:
    """Verification tests of a defects table: defective fraction and box count per amp.

    Parameters
    ----------
    table : astropy.table.Table
        Defect boxes (``x0, y0, width, height``).
    product_file : str
        File name recorded in the report.
    config : FindDefectsConfig, optional
        Limits (``max_defect_fraction``, ``max_boxes_per_amp``).
    camera : Camera, optional
        Detector layout; LATISS by default.

    Returns
    -------
    VerificationReport
    """
    config = config or FindDefectsConfig()
    camera = camera or load_camera("latiss")
    mask = defect_mask(table, camera.detector_shape)
    report = VerificationReport("defects", product_file)
    x0 = np.asarray(table["x0"])
    y0 = np.asarray(table["y0"])
    amp_of_box = camera.amp_map()[np.clip(y0, 0, None), np.clip(x0, 0, None)] if len(
        table) else np.array([], dtype=int)
    for i, amp in enumerate(camera.amplifiers):
        fraction = float(mask[camera.amp_slices(amp)].mean())
        report.add(amp.name, TestResult("defect_fraction", fraction,
                                        config.max_defect_fraction, "value <= threshold"))
        n_boxes = int(np.sum(amp_of_box == i))
        report.add(amp.name, TestResult("n_defects", n_boxes, config.max_boxes_per_amp,
                                        "value <= threshold", "boxes"))
    report.add(None, TestResult("defect_fraction", float(mask.mean()),
                                config.max_defect_fraction, "value <= threshold"))
    return report


def build_defects(dark: Dark | None, flat: Flat | None,
                  config: FindDefectsConfig | None = None, camera: Camera | None = None
                  ) -> tuple[Defects, VerificationReport]:
    """Build the defects product from a master dark and/or flat, and verify it.

    Parameters
    ----------
    dark : Dark or None
        Master dark (e⁻/s).
    flat : Flat or None
        Master flat (normalised).
    config : FindDefectsConfig, optional
        Thresholds and options.
    camera : Camera, optional
        Detector layout; LATISS by default.

    Returns
    -------
    defects : Defects
        The product, its provenance cards (the masters' sources) in ``defects.provenance``.
    report : VerificationReport
        `verify_defects` of it (``file`` empty: set it when writing).

    Raises
    ------
    BadInputError
        If neither master is given.
    """
    config = config or FindDefectsConfig()
    camera = camera or load_camera("latiss")
    if dark is None and flat is None:
        raise BadInputError(None, "defects need a master dark, a master flat or both")
    table = find_defects(dark.exposure if dark else None, flat.exposure if flat else None,
                         config, camera)
    inputs = [p.source for p in (dark, flat) if p is not None]
    product = Defects(table, provenance=tuple(provenance_cards("defects", inputs, config)))
    report = verify_defects(table, "", config, camera)
    if not report.passed:
        log.warning("defects verification failed: %s", ", ".join(report.failures()))
    log.info("defects: %d boxes, %d defective pixels", len(table), table.meta["N_DEFECTIVE"])
    return product, report
