"""Levenberg–Marquardt on the normal equations, with bounds, a damping schedule and a status.

The problem supplies two things (`LeastSquaresProblem`): its objective at a point (a χ²,
possibly with prior or regularisation terms) and, at an accepted point, the Gauss–Newton
normal equations ``H δ = g`` with ``H = Jᵀ W J`` and ``g = Jᵀ W (data − model)``. How it
forms them is its own business (analytic derivatives accumulated block by block, a projected
Jacobian of a variable-projection problem), which is why the core takes the normal equations
rather than residuals and a Jacobian.

One iteration tries the damped (Marquardt: damping proportional to the diagonal of ``H``)
step ``(H + λ diag H) δ = g``. A step that lowers the objective is accepted and ``λ`` is
divided by ``damping_decrease`` (not below ``damping_min``); one that does not, or whose
factorisation or evaluation fails, is rejected and ``λ`` multiplied by ``damping_increase``.
The fit stops with

* ``CONVERGED``: an accepted step lowered the objective by less than ``tolerance``, or moved
  the parameters by less than ``tolerance`` standard deviations (``δᵀ H δ < tolerance²``,
  optional), or (optional) the undamped step predicts a decrease ``δ·g`` below
  ``tolerance``;
* ``DAMPING_EXHAUSTED``: ``λ`` reached ``damping_max`` without an accepted step — no step
  along any direction lowers the objective, i.e. a minimum to the precision of the
  objective (counted as a success);
* ``MAX_ITERATIONS``: the bound on the iterations was reached; the fallback is the best
  point found, with ``success`` False.

Bounds: a step that would cross a bound takes the parameter halfway to it instead (never onto
it), so a parameter approaches a bound geometrically; on the bound some derivatives vanish
(a power law ``x^b`` with ``b < 1``, a width added in quadrature) and Gauss–Newton could not
leave it again.

The damped step has two arithmetic forms, equal in exact arithmetic: ``cholesky`` factors
``H + λ diag H`` (scipy), ``normalised`` solves the system scaled to a unit diagonal by LU
(numpy). Each fit keeps the one its results were computed with, so that they stay the same
to the last bit; likewise the other switches of `LevenbergMarquardtConfig` record each fit's
schedule rather than inviting new ones.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Generic, Literal, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray
from scipy.linalg import LinAlgError, cho_factor, cho_solve

__all__ = [
    "FitStatus",
    "LeastSquaresProblem",
    "LevenbergMarquardtConfig",
    "LevenbergMarquardtResult",
    "NormalEquations",
    "levenberg_marquardt",
    "normal_covariance",
]

log = logging.getLogger(__name__)

S = TypeVar("S")
#: Floor of the diagonal of H in the damping: a parameter without leverage (a zero column of
#: the Jacobian, e.g. pinned at a clip) gets a tiny positive pivot instead of a zero one.
_DIAGONAL_FLOOR = 1e-300


class FitStatus(enum.Enum):
    """Why the iterations stopped."""

    CONVERGED = "converged"
    """A convergence test was met."""
    DAMPING_EXHAUSTED = "damping exhausted"
    """No step lowered the objective up to the largest damping: a minimum to the objective's
    precision."""
    MAX_ITERATIONS = "maximum number of iterations"
    """The iteration bound was reached (the result is the best point found)."""
    TIME_LIMIT = "time limit"
    """The caller's deadline passed (the result is the best point found)."""


@dataclass(frozen=True)
class NormalEquations:
    """The Gauss–Newton normal equations ``matrix · δ = gradient`` at a point."""

    matrix: NDArray[np.float64]
    """``Jᵀ W J`` (symmetric, positive semi-definite)."""
    gradient: NDArray[np.float64]
    """``Jᵀ W (data − model)``: minus half the gradient of the objective."""
    objective: float | None = None
    """The objective recomputed along with the derivatives; when given it replaces the
    evaluation's as the value later trials must beat (and the result's). None: the
    evaluation's stands."""


class LeastSquaresProblem(Protocol[S]):
    """What `levenberg_marquardt` needs of a problem; ``S`` is whatever the problem keeps of
    one evaluation (model, amplitudes, ...), handed back to `normal_equations`."""

    def evaluate(self, x: NDArray[np.float64]) -> tuple[float, S]:
        """Objective at ``x`` and the state of that evaluation (a `LinAlgError` rejects the
        trial)."""
        ...

    def normal_equations(self, x: NDArray[np.float64], state: S) -> NormalEquations:
        """Normal equations at an accepted point ``x`` whose evaluation gave ``state``."""
        ...


@dataclass(frozen=True)
class LevenbergMarquardtConfig:
    """Iteration bound, convergence tests and damping schedule of `levenberg_marquardt`."""

    max_iterations: int = 60
    """Bound on the iterations; reaching it stops the fit with ``MAX_ITERATIONS`` and the
    best point found."""
    tolerance: float = 1e-3
    """Convergence: an accepted step lowering the objective by less than this (see also
    `step_size_test` and `predicted_decrease_test`)."""
    count_rejected: bool = False
    """True: every trial step is an iteration (the bound caps the objective evaluations);
    False: an iteration is one accepted step with the rejected trials before it."""
    step_size_test: bool = True
    """Also converge when an accepted step ``δ`` is below `tolerance` standard deviations:
    ``δᵀ H δ < tolerance²`` (``H`` at the point it started from)."""
    predicted_decrease_test: bool = False
    """Also converge, before evaluating a trial, when its predicted decrease ``δ·g`` is below
    `tolerance`, tested only while the damping is at most `damping_start` (a strongly
    damped step predicts too little)."""
    accept_equal: bool = True
    """Accept a step that leaves the objective unchanged (False: only a decrease)."""
    step_solver: Literal["cholesky", "normalised"] = "cholesky"
    """Arithmetic of the damped step (see the module notes): ``cholesky`` of
    ``H + λ diag H``, or ``normalised`` (unit diagonal, LU)."""
    damping_start: float = 1e-3
    """λ of the first trial."""
    damping_decrease: float = 10.0
    """λ is divided by this after an accepted step."""
    damping_increase: float = 10.0
    """λ is multiplied by this after a rejected one."""
    damping_min: float = 1e-9
    """Floor of λ."""
    damping_max: float = 1e12
    """The fit stops (``DAMPING_EXHAUSTED``) once λ reaches this without an accepted step."""
    normal_at_solution: bool = True
    """Form the normal equations at the final point even when its step met a convergence
    test (for `LevenbergMarquardtResult.covariance`); False saves that linearisation for a
    caller that does not need it."""

    def __post_init__(self) -> None:
        # The loop is bounded only if rejections drive λ up to damping_max.
        if not (self.damping_increase > 1.0 and self.damping_decrease >= 1.0
                and 0.0 < self.damping_start < self.damping_max and self.max_iterations >= 0):
            raise ValueError("LevenbergMarquardtConfig needs damping_increase > 1, "
                             "damping_decrease >= 1, 0 < damping_start < damping_max and "
                             "max_iterations >= 0")


@dataclass(frozen=True)
class LevenbergMarquardtResult(Generic[S]):
    """What `levenberg_marquardt` found."""

    x: NDArray[np.float64]
    """Best parameters."""
    objective: float
    """Objective at `x`."""
    state: S
    """The problem's state of the evaluation at `x`."""
    normal: NormalEquations | None
    """Normal equations at `x` (None when the fit converged with
    ``normal_at_solution=False``)."""
    iterations: int
    """Iterations done (see `LevenbergMarquardtConfig.count_rejected`)."""
    status: FitStatus
    """Why the iterations stopped."""
    message: str
    """The same in words, with the last step's figures."""
    damping: float
    """Last λ."""
    name: str = "fit"
    """Name of the fit in messages."""

    @property
    def success(self) -> bool:
        """Whether the fit stopped at a minimum (converged or damping exhausted)."""
        return self.status in (FitStatus.CONVERGED, FitStatus.DAMPING_EXHAUSTED)

    @cached_property
    def covariance(self) -> NDArray[np.float64]:
        """Covariance of `x`: ``H⁻¹`` at the solution (unscaled), see `normal_covariance`."""
        if self.normal is None:
            raise ValueError(f"{self.name}: no normal equations at the solution "
                             "(normal_at_solution=False)")
        return normal_covariance(self.normal.matrix, self.name)


def normal_covariance(matrix: NDArray[np.float64], name: str = "fit") -> NDArray[np.float64]:
    """Inverse of a normal matrix, the parameters' covariance (unscaled).

    Parameters
    ----------
    matrix : numpy.ndarray
        ``Jᵀ W J`` at the solution.
    name : str
        Name of the fit for the warning.

    Returns
    -------
    numpy.ndarray
        ``matrix⁻¹``; its pseudo-inverse, with a warning, when the inverse fails or has
        negative or non-finite variances (a parameter without leverage).
    """
    try:
        cov = np.linalg.inv(matrix)
        if not np.all(np.isfinite(cov)) or np.any(np.diag(cov) < 0):
            raise LinAlgError("not positive")
    except LinAlgError:
        log.warning("%s: singular normal matrix: errors from its pseudo-inverse", name)
        cov = np.linalg.pinv(matrix)
    return cov


def levenberg_marquardt(problem: LeastSquaresProblem[S], x0: NDArray[np.float64],
                        config: LevenbergMarquardtConfig | None = None, *,
                        bounds: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None,
                        start: tuple[float, S] | None = None,
                        start_normal: NormalEquations | None = None,
                        name: str = "fit", deadline: float | None = None
                        ) -> LevenbergMarquardtResult[S]:
    """Minimise ``problem``'s objective from ``x0`` (see the module notes).

    Parameters
    ----------
    problem : LeastSquaresProblem
        Objective and normal equations.
    x0 : numpy.ndarray
        Starting parameters (clipped into ``bounds``).
    config : LevenbergMarquardtConfig, optional
        Iteration bound, tests and damping schedule.
    bounds : tuple of numpy.ndarray, optional
        Lower and upper bounds (``±inf`` for none); None: unbounded.
    start : tuple, optional
        ``(objective, state)`` at ``x0`` when the caller has evaluated it already.
    start_normal : NormalEquations, optional
        Normal equations at ``x0`` when the caller has formed them already.
    name : str
        Name of the fit in messages.
    deadline : float, optional
        `time.monotonic` value after which no new trial starts (status ``TIME_LIMIT``): a
        bound in wall time, for problems whose evaluations can be slow.

    Returns
    -------
    LevenbergMarquardtResult
    """
    cfg = config or LevenbergMarquardtConfig()
    x = np.asarray(x0, dtype=np.float64)
    lower = upper = None
    if bounds is not None:
        lower = np.asarray(bounds[0], dtype=np.float64)
        upper = np.asarray(bounds[1], dtype=np.float64)
        x = np.clip(x, lower, upper)
    objective, state = start if start is not None else problem.evaluate(x)
    normal = start_normal
    if normal is None:
        normal, objective = _linearise(problem, x, state, objective)
    lam = cfg.damping_start
    iterations = 0
    fresh = True  # the next trial opens an iteration
    status, message = FitStatus.MAX_ITERATIONS, "maximum number of iterations reached"
    while True:  # bounded: by max_iterations, and λ grows to damping_max between acceptances
        if fresh or cfg.count_rejected:
            if iterations >= cfg.max_iterations:
                break
            iterations += 1
            fresh = False
        if deadline is not None and time.monotonic() > deadline:
            status, message = FitStatus.TIME_LIMIT, "time limit reached"
            break
        assert normal is not None
        step = _damped_step(normal, lam, cfg.step_solver)
        trial = None
        if step is not None:
            if cfg.predicted_decrease_test and lam <= cfg.damping_start:
                predicted = float(step @ normal.gradient)
                if predicted < cfg.tolerance:
                    status = FitStatus.CONVERGED
                    message = f"converged: predicted χ² decrease {predicted:.2g}"
                    break
            x_new = _interior_step(x, step, lower, upper)
            try:
                trial = problem.evaluate(x_new)
            except LinAlgError:
                trial = None
        if trial is None or not _better(trial[0], objective, cfg.accept_equal):
            lam *= cfg.damping_increase
            if lam >= cfg.damping_max:
                status = FitStatus.DAMPING_EXHAUSTED
                message = "no further decrease of χ² (damping exhausted)"
                break
            continue
        taken = x_new - x
        size2 = float(taken @ normal.matrix @ taken)
        decrease = objective - trial[0]
        log.debug("%s: objective %.6g (−%.3g), λ %.1e", name, trial[0], decrease, lam)
        x, (objective, state) = x_new, trial
        lam = max(lam / cfg.damping_decrease, cfg.damping_min)
        converged = decrease < cfg.tolerance or (cfg.step_size_test
                                                 and size2 < cfg.tolerance ** 2)
        normal = None
        if not converged or cfg.normal_at_solution:
            normal, objective = _linearise(problem, x, state, objective)
        if converged:
            status = FitStatus.CONVERGED
            message = (f"converged: χ² decrease {decrease:.2g}, step "
                       f"{math.sqrt(size2):.2g} σ")
            break
        fresh = True
    return LevenbergMarquardtResult(x=x, objective=objective, state=state, normal=normal,
                                    iterations=iterations, status=status, message=message,
                                    damping=lam, name=name)


def _linearise(problem: LeastSquaresProblem[S], x: NDArray[np.float64], state: S,
               objective: float) -> tuple[NormalEquations, float]:
    normal = problem.normal_equations(x, state)
    return normal, (normal.objective if normal.objective is not None else objective)


def _better(new: float, current: float, accept_equal: bool) -> bool:
    """Whether a trial objective is an improvement (never when it is not finite)."""
    if not math.isfinite(new):
        return False
    return new <= current if accept_equal else new < current


def _damped_step(normal: NormalEquations, damping: float,
                 solver: Literal["cholesky", "normalised"]) -> NDArray[np.float64] | None:
    """``(H + λ diag H)⁻¹ g`` in the arithmetic ``solver`` names; None when it fails."""
    h, g = normal.matrix, normal.gradient
    try:
        if solver == "normalised":
            scale = np.sqrt(np.maximum(np.diag(h), _DIAGONAL_FLOOR))
            hn = h / np.outer(scale, scale)
            return np.linalg.solve(hn + damping * np.eye(h.shape[0]), g / scale) / scale
        diag = np.clip(np.diag(h), _DIAGONAL_FLOOR, None)
        return cho_solve(cho_factor(h + damping * np.diag(diag)), g)
    except LinAlgError:
        return None


def _interior_step(x: NDArray[np.float64], step: NDArray[np.float64],
                   lower: NDArray[np.float64] | None, upper: NDArray[np.float64] | None
                   ) -> NDArray[np.float64]:
    """``x + step``, except that a parameter whose step would cross a bound goes halfway to
    it (see the module notes)."""
    new = x + step
    if lower is None or upper is None:
        return new
    below, above = new < lower, new > upper
    new[below] = 0.5 * (x[below] + lower[below])
    new[above] = 0.5 * (x[above] + upper[above])
    return new
