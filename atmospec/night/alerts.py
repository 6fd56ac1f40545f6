"""Alerts in plain words for the people at the telescope, from the night summary's rows.

`live_alerts` is a pure function of the summary rows (`atmospec.night.summary.summary_row`,
or the rows of the summary table) in time order: ``atmospec watch`` logs each new alert as
it appears and the live page (`atmospec.report.live`) lists them. Each alert is one
sentence naming the exposure and the figures behind it, so that it can be acted on without
opening anything else.

What is looked at:

* **seeing jump**: the latest imaging exposure's PSF FWHM is more than
  `AlertConfig.seeing_jump` above the median of the imaging exposures before it in the same
  filter (seeing varies with wavelength, so filters are not mixed);
* **focus drift**: the FWHM rose from each exposure to the next over the last
  `AlertConfig.drift_frames` imaging exposures of a filter, by more than
  `AlertConfig.focus_drift` in all (seeing wanders up and down; a steady climb is the
  telescope);
* **no star found in a dispersed frame**: a recent dispersed exposure whose zeroth-order
  task failed;
* **saturated target**: a recent dispersed exposure whose zeroth order had saturated pixels
  (its flux and centroid are then biased: shorten the exposure);
* **failed task**: a recent science exposure with a failed task, with the task's reason.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from atmospec.camera.translator import is_dispersed_name

__all__ = ["AlertConfig", "live_alerts"]


@dataclass(frozen=True)
class AlertConfig:
    """When the live alerts speak."""

    seeing_jump: float = 0.25
    """Seeing jump: the latest imaging exposure's FWHM above the median of the earlier ones
    (same filter) by more than this fraction (0.25: 25 %)."""
    history: int = 5
    """Earlier imaging exposures (same filter) whose median FWHM the latest is compared
    with."""
    min_history: int = 3
    """Fewest earlier imaging exposures (same filter) for a seeing-jump verdict."""
    drift_frames: int = 4
    """Focus drift: imaging exposures in a row (same filter) over which the FWHM rose each
    time."""
    focus_drift: float = 0.10
    """Focus drift: least total rise of the FWHM over those exposures, as a fraction of the
    first (0.10: 10 %)."""
    recent: int = 10
    """Latest science exposures whose failures, missed zeroth orders and saturated targets
    are reported (older ones are in the report)."""


def _float(row: Mapping[str, Any], name: str) -> float:
    """A row's number, NaN when absent, masked or not a number."""
    try:
        value = row[name]
    except (KeyError, IndexError):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):  # masked values, text
        return math.nan


def _text(row: Mapping[str, Any], name: str) -> str:
    try:
        return str(row[name])
    except (KeyError, IndexError):
        return ""


def live_alerts(rows: Sequence[Mapping[str, Any]], config: AlertConfig | None = None
                ) -> list[str]:
    """The alerts of a night so far, in plain words, most important first.

    Parameters
    ----------
    rows : sequence of mapping
        Night summary rows in time order (`atmospec.night.summary.summary_row` dicts, or
        the rows of the summary table): ``obs_id``, ``image_type``, ``filter``,
        ``disperser``, ``status``, ``reason``, ``fwhm_arcsec``, ``zeroth_order_x``,
        ``zeroth_order_saturated`` are read.
    config : AlertConfig, optional
        Thresholds.

    Returns
    -------
    list of str
        One sentence per alert: the recent exposures' failures (a dispersed frame whose
        zeroth order was not found says so) and saturated targets, in time order, then the
        image quality; empty when all is well.
    """
    config = config or AlertConfig()
    science = [r for r in rows if _text(r, "image_type") == "science"]
    recent = science[-config.recent:] if config.recent > 0 else []
    alerts = []
    for r in recent:
        dispersed = is_dispersed_name(_text(r, "disperser"))
        if _text(r, "status") == "failed":
            task, _, why = (_text(r, "reason") or "no reason recorded").partition(": ")
            if dispersed and task == "zeroth_order":
                alerts.append(f"No star found in dispersed exposure {_text(r, 'obs_id')}: "
                              f"{why}; check the pointing and the target.")
            elif why:
                alerts.append(f"Task {task} failed on {_text(r, 'obs_id')}: {why}")
            else:
                alerts.append(f"{_text(r, 'obs_id')} failed: {task}")
        elif dispersed and _float(r, "zeroth_order_saturated") > 0:
            alerts.append(f"Saturated target in {_text(r, 'obs_id')}: the zeroth order of "
                          f"{_text(r, 'target') or 'the target'} has saturated pixels "
                          "(centroid from the wings, flux biased); shorten the exposure.")
    imaging = [r for r in science if _text(r, "status") == "done"
               and not is_dispersed_name(_text(r, "disperser"))
               and math.isfinite(_float(r, "fwhm_arcsec"))]
    if imaging:
        latest = imaging[-1]
        same = [r for r in imaging if _text(r, "filter") == _text(latest, "filter")]
        alerts += _seeing_jump(same, config) + _focus_drift(same, config)
    return alerts


def _seeing_jump(same: Sequence[Mapping[str, Any]], config: AlertConfig) -> list[str]:
    """The latest exposure of ``same`` (imaging, one filter, time order) against the median
    of the `AlertConfig.history` before it."""
    before = same[:-1][-config.history:] if config.history > 0 else []
    if len(before) < max(config.min_history, 1):
        return []
    latest = same[-1]
    fwhm = _float(latest, "fwhm_arcsec")
    median = statistics.median(_float(r, "fwhm_arcsec") for r in before)
    if not median > 0 or fwhm <= median * (1 + config.seeing_jump):
        return []
    return [f"Seeing jump on {_text(latest, 'obs_id')}: PSF FWHM {fwhm:.2f}″, "
            f"{100 * (fwhm / median - 1):.0f} % above the median {median:.2f}″ of the "
            f"{len(before)} exposures before it in {_text(latest, 'filter')}."]


def _focus_drift(same: Sequence[Mapping[str, Any]], config: AlertConfig) -> list[str]:
    """A steady FWHM climb over the last `AlertConfig.drift_frames` exposures of ``same``."""
    n = config.drift_frames
    if n < 2 or len(same) < n:
        return []
    fwhm = [_float(r, "fwhm_arcsec") for r in same[-n:]]
    rising = all(b > a for a, b in itertools.pairwise(fwhm))
    if not rising or fwhm[-1] <= fwhm[0] * (1 + config.focus_drift):
        return []
    return [f"Focus drift? The PSF FWHM rose in each of the last {n} exposures in "
            f"{_text(same[-1], 'filter')}, from {fwhm[0]:.2f}″ to {fwhm[-1]:.2f}″ "
            f"(+{100 * (fwhm[-1] / fwhm[0] - 1):.0f} %, up to {_text(same[-1], 'obs_id')}): "
            "check the focus."]
