"""When a fit counts as failed: the one quality rule every fitting command applies.

A fit fails when the optimiser itself says so, when a free parameter ends at one of its
bounds (the data want a value the model does not allow, and the covariance there means
nothing), when a free parameter has no uncertainty (no covariance, or a zero or non-finite
variance), or when χ²/ndof exceeds `FitQualityConfig.max_chi2_ndof` (the model does not
describe the data). `fit_problems` turns a fit into the list of those findings, each a short
string for a JSON ``problems`` list, a FITS card or a one-line message; an empty list is a
usable fit. The uncertainty of a parameter at a bound (`bound_reached`) is reported as None
(null), like one that could not be estimated: never a 0 that reads as a perfect measurement.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["FitQualityConfig", "bound_reached", "fit_problems", "usable_error"]


@dataclass(frozen=True)
class FitQualityConfig:
    """Limits of `fit_problems`."""

    max_chi2_ndof: float = 50.0
    """Largest χ²/ndof of a usable fit. Real data are not described to their noise by the
    tabulated throughput: the real CTIO HD111980 spectrum (Spectractor 2.4) fits with
    χ²/ndof ≈ 21 and values inside libRadtran's best region; simulated spectra give ≈ 1. A
    spectrum of another star than its SED, or one that is not a star, gives thousands."""
    bound_tolerance: float = 1e-6
    """A free parameter within this fraction of its range (``upper − lower``; of
    ``max(1, |bound|)`` when the range is infinite) of a bound is at that bound."""

    def __post_init__(self) -> None:
        if not (self.max_chi2_ndof > 0 and self.bound_tolerance >= 0):
            raise ValueError("FitQualityConfig needs max_chi2_ndof > 0 and "
                             "bound_tolerance >= 0")


def usable_error(value: float | None) -> float | None:
    """An uncertainty, or None when there is none to report (absent, zero, negative or not
    finite): written as null, never as 0."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) and value > 0 else None


def fit_problems(values: Mapping[str, float], errors: Mapping[str, float | None],
                 bounds: Mapping[str, tuple[float, float]], chi2_ndof: float,
                 optimiser_failure: str | None = None,
                 config: FitQualityConfig | None = None) -> tuple[str, ...]:
    """What is wrong with a fit; empty when it is usable.

    Parameters
    ----------
    values : Mapping
        Best value of every free parameter, by name.
    errors : Mapping
        Their 1σ uncertainties (None or missing: not estimated).
    bounds : Mapping
        ``(lower, upper)`` of the free parameters that have bounds (``±inf`` for none).
    chi2_ndof : float
        χ² per degree of freedom at the best fit.
    optimiser_failure : str, optional
        The optimiser's own message when it did not succeed; None when it did.
    config : FitQualityConfig, optional
        Limits.

    Returns
    -------
    tuple of str
        Short findings, e.g. ``"optimiser failed: …"``, ``"pwv_mm at its upper bound 20"``,
        ``"no covariance"``, ``"no uncertainty for vaod"``, ``"chi2/ndof 73.1 above 50"``.
    """
    cfg = config or FitQualityConfig()
    problems: list[str] = []
    if optimiser_failure is not None:
        problems.append(f"optimiser failed: {' '.join(str(optimiser_failure).split())}")
    for name, value in values.items():
        at = bound_reached(float(value), bounds.get(name), cfg.bound_tolerance)
        if at:
            problems.append(f"{name} at its {at}")
    missing = [name for name in values if usable_error(errors.get(name)) is None]
    if missing and len(missing) == len(values):
        problems.append("no covariance")
    elif missing:
        problems.append(f"no uncertainty for {', '.join(missing)}")
    if not math.isfinite(chi2_ndof):
        problems.append("chi2/ndof not finite")
    elif chi2_ndof > cfg.max_chi2_ndof:
        problems.append(f"chi2/ndof {chi2_ndof:.3g} above {cfg.max_chi2_ndof:g}")
    return tuple(problems)


def bound_reached(value: float, bounds: tuple[float, float] | None,
                  tolerance: float = FitQualityConfig.bound_tolerance) -> str:
    """``"lower bound 0"`` / ``"upper bound 20"`` when ``value`` sits on one of ``bounds``
    (within ``tolerance`` of the range, see `FitQualityConfig.bound_tolerance`), else ``""``.
    A parameter there has no meaningful symmetric uncertainty: fits report None for it."""
    if bounds is None:
        return ""
    lo, hi = float(bounds[0]), float(bounds[1])
    span = hi - lo if math.isfinite(hi - lo) else None
    for which, bound in (("lower", lo), ("upper", hi)):
        if not math.isfinite(bound):
            continue
        scale = span if span is not None else max(1.0, abs(bound))
        if abs(value - bound) <= tolerance * scale:
            return f"{which} bound {bound:g}"
    return ""
