"""Crosstalk of a BOT acquisition's spot frames: CCD-013 and cp_verify's residual check.

Each spot frame (``xtalk_*``) lights one amp (the aggressor, or source) with a bright
spot; the other amps (the victims, or targets) receive its ghosts. The matrix is measured
with `atmospec.calib.crosstalk.measure_crosstalk` (ratios at every source pixel above its
threshold, per pair the median, ``[target, source]`` ADU ratios). The camera team's
CCD-013 judges each aggressor amp by its largest coupling to another amp, in percent
(``crosstalk_max``).

Verification (cp_verify / DMTN-101: "no significant residual after correction"): the
measured matrix is removed from the same frames by `atmospec.isr.crosstalk`, as ISR removes
it from every frame, and the ratios are measured again. A pair's residual is significant
when it lies more than ``max_sigma`` of its error from zero; an aggressor amp passes when
none of its pairs is significant, the detector when at most ``max_significant`` pairs are
(``max_sigma`` = 3 leaves 0.27 % of the pairs of a perfect correction beyond it by
chance: 0.65 of a detector's 240; at most 2 of them is a false alarm 3 % of the time). On
the frames the matrix was measured on, this checks the correction as ISR applies it (its
order of indices, units and sign), not the matrix's validity on other frames.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.table import Table

from atmospec.calib.crosstalk import (
    CrosstalkExtractConfig,
    CrosstalkMeasurement,
    measure_crosstalk,
    measure_crosstalk_and_residual,
)
from atmospec.camera.description import Camera

log = logging.getLogger(__name__)

__all__ = ["EoCrosstalk", "EoCrosstalkConfig", "eo_crosstalk"]


def _spot_extract() -> CrosstalkExtractConfig:
    # Spot frames hold no light of the victims' own: no star zones to leave out (their
    # smoothing and growth are half the cost of a frame's ratios).
    return CrosstalkExtractConfig(star_zone_px=0)


@dataclass(frozen=True)
class EoCrosstalkConfig:
    """Crosstalk measurement and residual check of the spot frames."""

    extract: CrosstalkExtractConfig = field(default_factory=_spot_extract)
    """Extraction of the ratios (`measure_crosstalk`)."""
    max_sigma: float = 3.0
    """A residual ratio further than this many errors from zero is significant."""
    max_significant: int = 2
    """The detector passes with at most this many significant pairs."""


@dataclass(frozen=True)
class EoCrosstalk:
    """One detector's crosstalk from its spot frames."""

    measurement: CrosstalkMeasurement
    """The matrix, ``[target, source]`` ADU ratios, with errors and counts."""
    residual: CrosstalkMeasurement | None
    """The same ratios after the measured matrix is removed; None when not checked."""
    max_sigma: float
    """Significance of a residual (`EoCrosstalkConfig.max_sigma`)."""
    max_significant: int
    """Significant pairs the detector may have (`EoCrosstalkConfig.max_significant`)."""

    def crosstalk_max(self) -> np.ndarray:
        """Per aggressor amp (HDU order): the largest absolute coefficient to another amp,
        percent (CCD-013); NaN for an amp with no measured pair."""
        m = self.measurement
        out = np.where(m.valid, np.abs(m.coeffs), -np.inf).max(axis=0)
        return np.where(np.isfinite(out), 100.0 * out, np.nan)

    def residual_sigma(self) -> np.ndarray:
        """``[target, source]`` |residual| / its error (NaN where not measured)."""
        if self.residual is None:
            return np.full(self.measurement.coeffs.shape, np.nan)
        r = self.residual
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.abs(r.coeffs) / r.errors
        return np.where(r.valid & self.measurement.valid, z, np.nan)

    def significant(self) -> np.ndarray:
        """bool ``[target, source]``: residuals beyond ``max_sigma``."""
        return np.nan_to_num(self.residual_sigma(), nan=0.0) > self.max_sigma

    def n_checked(self) -> int:
        """Pairs whose residual was measured."""
        return int(np.isfinite(self.residual_sigma()).sum())

    def passed(self) -> bool | None:
        """The detector's verdict; None when nothing was checked."""
        if self.n_checked() == 0:
            return None
        return int(self.significant().sum()) <= self.max_significant

    def amp_pass(self) -> np.ndarray:
        """Per aggressor amp: 1 when none of its pairs has a significant residual, 0 when
        one has, NaN when none was checked (cp_verify's per-amp column)."""
        checked = np.isfinite(self.residual_sigma()).any(axis=0)
        ok = ~self.significant().any(axis=0)
        return np.where(checked, ok.astype(float), np.nan)

    def summary(self) -> dict[str, object]:
        """The check in numbers: pairs checked, significant, largest |r|/σ, verdict."""
        z = self.residual_sigma()
        finite = z[np.isfinite(z)]
        return {"n_pairs": self.n_checked(), "n_significant": int(self.significant().sum()),
                "max_sigma": float(finite.max()) if finite.size else None,
                "threshold_sigma": self.max_sigma, "max_significant": self.max_significant,
                "passed": self.passed(), "n_frames": self.measurement.n_frames}

    def pairs(self, camera: Camera) -> Table:
        """One row per measured pair: ``target``, ``source`` (amp names), ``coeff``,
        ``error`` (ADU ratios), ``count``, ``residual``, ``residual_error``,
        ``residual_sigma`` (|residual| / error), ``significant``."""
        m = self.measurement
        t, s = np.nonzero(m.valid)
        names = np.array(camera.amp_names)
        res = self.residual
        return Table({
            "target": names[t], "source": names[s], "coeff": m.coeffs[t, s],
            "error": m.errors[t, s], "count": m.counts[t, s],
            "residual": (res.coeffs[t, s] if res is not None else np.full(t.size, np.nan)),
            "residual_error": (res.errors[t, s] if res is not None
                               else np.full(t.size, np.nan)),
            "residual_sigma": self.residual_sigma()[t, s],
            "significant": self.significant()[t, s]})


def eo_crosstalk(spots: Sequence[str | Path], camera: Camera,
                 config: EoCrosstalkConfig | None = None, *, correct: bool = True
                 ) -> EoCrosstalk:
    """Measure a detector's crosstalk on its spot frames, then the residual after removing
    it from them.

    Parameters
    ----------
    spots : sequence of path
        The spot frames (``xtalk_*``), each read once: the band of rows around its spot is
        kept for the residual (`measure_crosstalk_and_residual`; ~13 MB a 4k × 4k frame).
    camera : Camera
        The detector.
    config : EoCrosstalkConfig, optional
        Extraction and the residual's thresholds.
    correct : bool
        Remove the measured matrix before measuring the residual (False: the residual is
        measured without correction; a check that must then fail where there is crosstalk).

    Returns
    -------
    EoCrosstalk
    """
    config = config or EoCrosstalkConfig()
    if correct:
        measured, residual = measure_crosstalk_and_residual(spots, config.extract, camera)
    else:
        # Uncorrected, the residual is the measurement itself (a zero correction changes
        # no pixel): no second pass.
        measured = residual = measure_crosstalk(spots, config.extract, camera)
    result = EoCrosstalk(measured, residual, config.max_sigma, config.max_significant)
    largest = result.crosstalk_max()
    log.info("%s: crosstalk of %d spot frames, largest %.3g %%; residual: %s",
             camera.detector, len(spots),
             float(np.nanmax(largest)) if np.isfinite(largest).any() else float("nan"),
             result.summary())
    return result
