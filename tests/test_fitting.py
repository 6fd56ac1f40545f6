"""The least-squares core (`atmospec.fitting`) on problems whose truth is known.

A Gaussian line on a sloped continuum with known parameters and Gaussian noise of known σ:
parameters recovered within their errors, pulls of unit width over realisations, a bound
that binds; the Rosenbrock valley (minimum at (1, 1)) for the iteration bound; problems
whose derivatives are wrong or whose objective fails for the fallbacks; a straight line for
the exact Gauss–Newton solution and its covariance. Whitening of known covariances (full,
banded, diagonal, the fallback) gives unit covariance.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
from scipy.linalg import LinAlgError

from atmospec.fitting import (
    FitStatus,
    LevenbergMarquardtConfig,
    NormalEquations,
    Whitener,
    levenberg_marquardt,
    normal_covariance,
)

#: Line amplitude, centre, width, continuum level and slope.
TRUTH = np.array([50.0, 0.7, 1.8, 5.0, 0.3])
START = np.array([30.0, 0.0, 3.0, 0.0, 0.0])
SIGMA = 2.0
X = np.linspace(-10.0, 10.0, 201)


class GaussianSlope:
    """``y = A exp(−(x − μ)²/2s²) + b + c x`` with analytic derivatives; counts evaluations."""

    def __init__(self, y: np.ndarray, err: np.ndarray) -> None:
        self.y = y
        self.err = err
        self.n_eval = 0

    @staticmethod
    def model(p: np.ndarray) -> np.ndarray:
        a, mu, s, b, c = p
        return a * np.exp(-0.5 * ((X - mu) / s) ** 2) + b + c * X

    def evaluate(self, p: np.ndarray) -> tuple[float, np.ndarray]:
        self.n_eval += 1
        r = (self.y - self.model(p)) / self.err
        return float(r @ r), r

    def normal_equations(self, p: np.ndarray, r: np.ndarray) -> NormalEquations:
        a, mu, s, _, _ = p
        u = (X - mu) / s
        g = np.exp(-0.5 * u * u)
        jac = np.column_stack([g, a * g * u / s, a * g * u * u / s, np.ones_like(X), X])
        jw = jac / self.err[:, None]
        return NormalEquations(jw.T @ jw, jw.T @ r)


def noisy(seed: int) -> GaussianSlope:
    rng = np.random.default_rng(seed)
    err = np.full(X.size, SIGMA)
    return GaussianSlope(GaussianSlope.model(TRUTH) + rng.normal(0.0, SIGMA, X.size), err)


def test_gaussian_and_slope_recovered_within_errors() -> None:
    problem = noisy(1)
    fit = levenberg_marquardt(problem, START)
    assert fit.status is FitStatus.CONVERGED and fit.success, fit.message
    err = np.sqrt(np.diag(fit.covariance))
    assert np.all(np.abs(fit.x - TRUTH) < 4.0 * err), (fit.x, err)
    # The errors are the Fisher ones at the truth (the model is nearly linear at this S/N).
    a, mu, s = TRUTH[:3]
    u = (X - mu) / s
    g = np.exp(-0.5 * u * u)
    jac = np.column_stack([g, a * g * u / s, a * g * u * u / s, np.ones_like(X), X]) / SIGMA
    fisher = np.sqrt(np.diag(np.linalg.inv(jac.T @ jac)))
    np.testing.assert_allclose(err, fisher, rtol=0.05)
    ndof = X.size - TRUTH.size
    assert abs(fit.objective - ndof) < 5.0 * np.sqrt(2.0 * ndof)
    assert fit.objective == problem.evaluate(fit.x)[0]
    assert 1 <= fit.iterations < 20


def test_pull_widths_over_realisations() -> None:
    pulls = []
    for seed in range(300):
        fit = levenberg_marquardt(noisy(100 + seed), START)
        assert fit.success
        pulls.append((fit.x - TRUTH) / np.sqrt(np.diag(fit.covariance)))
    pulls = np.array(pulls)
    mean, width = pulls.mean(axis=0), pulls.std(axis=0)
    assert np.all(np.abs(mean) < 0.2), mean
    assert np.all((width > 0.85) & (width < 1.15)), width


def test_both_step_arithmetics_and_schedules_reach_the_same_minimum() -> None:
    """The forward model's schedule (every trial counted, λ ÷5, normalised LU solve, the
    Gauss–Newton prediction as convergence test) and the default one agree."""
    default = levenberg_marquardt(noisy(2), START)
    ffm_like = levenberg_marquardt(noisy(2), START, LevenbergMarquardtConfig(
        max_iterations=40, tolerance=1e-6, count_rejected=True, step_size_test=False,
        predicted_decrease_test=True, accept_equal=False, step_solver="normalised",
        damping_decrease=5.0, damping_min=1e-7, damping_max=1e6, normal_at_solution=False))
    assert ffm_like.status is FitStatus.CONVERGED, ffm_like.message
    err = np.sqrt(np.diag(default.covariance))
    assert np.all(np.abs(ffm_like.x - default.x) < 1e-2 * err)


def test_bound_that_binds() -> None:
    """An upper bound on the amplitude 10 σ below the truth: the parameter ends just inside
    it (steps go halfway to a bound, never onto it) and the continuum takes up the rest."""
    problem = noisy(3)
    free = levenberg_marquardt(problem, START)
    sigma_a = float(np.sqrt(free.covariance[0, 0]))
    cap = TRUTH[0] - 10.0 * sigma_a
    lower = np.full(5, -np.inf)
    upper = np.array([cap, np.inf, np.inf, np.inf, np.inf])
    fit = levenberg_marquardt(problem, START, bounds=(lower, upper))
    assert fit.success, fit.message
    assert fit.x[0] < cap
    assert cap - fit.x[0] < 0.01 * sigma_a
    assert fit.objective > free.objective + 50.0  # a 10 σ constraint costs ~100 in χ²
    # A start outside the bounds is clipped into them.
    clipped = levenberg_marquardt(problem, np.r_[2 * cap, START[1:]], bounds=(lower, upper))
    assert clipped.x[0] <= cap


class Rosenbrock:
    """Residuals ``(10 (y − x²), 1 − x)``: the curved valley with its minimum χ² = 0 at
    (1, 1)."""

    def evaluate(self, p: np.ndarray) -> tuple[float, None]:
        r = np.array([10.0 * (p[1] - p[0] ** 2), 1.0 - p[0]])
        return float(r @ r), None

    def normal_equations(self, p: np.ndarray, state: None) -> NormalEquations:
        r = np.array([10.0 * (p[1] - p[0] ** 2), 1.0 - p[0]])
        jac = -np.array([[-20.0 * p[0], 10.0], [-1.0, 0.0]])  # derivatives of the model
        return NormalEquations(jac.T @ jac, jac.T @ r)


def test_iteration_bound_returns_best_point_so_far() -> None:
    start = np.array([-1.2, 1.0])
    f0 = Rosenbrock().evaluate(start)[0]
    short = levenberg_marquardt(Rosenbrock(), start,
                                LevenbergMarquardtConfig(max_iterations=3, tolerance=0.0))
    assert short.status is FitStatus.MAX_ITERATIONS and not short.success
    assert short.message == "maximum number of iterations reached"
    assert short.iterations == 3
    assert short.objective < f0
    assert short.objective == Rosenbrock().evaluate(short.x)[0]
    full = levenberg_marquardt(Rosenbrock(), start,
                               LevenbergMarquardtConfig(max_iterations=200, tolerance=1e-14))
    assert full.success
    np.testing.assert_allclose(full.x, [1.0, 1.0], atol=1e-6)


def test_deadline_stops_at_the_best_point_so_far() -> None:
    """A deadline already past: no trial is made, the start is returned, not a success."""
    start = np.array([-1.2, 1.0])
    fit = levenberg_marquardt(Rosenbrock(), start, LevenbergMarquardtConfig(
        max_iterations=200, tolerance=1e-14), deadline=time.monotonic() - 1.0)
    assert fit.status is FitStatus.TIME_LIMIT and not fit.success
    assert fit.message == "time limit reached"
    np.testing.assert_array_equal(fit.x, start)


class WrongSign(GaussianSlope):
    """Derivatives of the wrong sign: every Gauss–Newton step goes uphill."""

    def normal_equations(self, p: np.ndarray, r: np.ndarray) -> NormalEquations:
        normal = super().normal_equations(p, r)
        return NormalEquations(normal.matrix, -normal.gradient)


def test_damping_exhausted_falls_back_to_the_start() -> None:
    problem = WrongSign(noisy(4).y, np.full(X.size, SIGMA))
    f0 = problem.evaluate(START)[0]
    fit = levenberg_marquardt(problem, START)
    assert fit.status is FitStatus.DAMPING_EXHAUSTED and fit.success
    assert fit.iterations == 1
    np.testing.assert_array_equal(fit.x, START)
    assert fit.objective == f0
    # Counting every trial, the bound caps the evaluations.
    capped = WrongSign(problem.y, problem.err)
    fit = levenberg_marquardt(capped, START, LevenbergMarquardtConfig(
        max_iterations=5, count_rejected=True))
    assert fit.status is FitStatus.MAX_ITERATIONS and fit.iterations == 5
    assert capped.n_eval == 1 + 5  # the start and one per trial


class Failing(GaussianSlope):
    """An objective that cannot be computed away from the start (NaN, or a failed
    factorisation)."""

    def __init__(self, y: np.ndarray, err: np.ndarray, start: np.ndarray, how: str) -> None:
        super().__init__(y, err)
        self.start = start
        self.how = how

    def evaluate(self, p: np.ndarray) -> tuple[float, np.ndarray]:
        chi2, r = super().evaluate(p)
        if not np.array_equal(p, self.start):
            if self.how == "raise":
                raise LinAlgError("not positive definite")
            return float("nan"), r
        return chi2, r


@pytest.mark.parametrize("how", ["nan", "raise"])
def test_failed_evaluations_are_rejected(how: str) -> None:
    base = noisy(5)
    fit = levenberg_marquardt(Failing(base.y, base.err, START, how), START)
    assert fit.status is FitStatus.DAMPING_EXHAUSTED
    np.testing.assert_array_equal(fit.x, START)


class Line:
    """A straight line: linear least squares, solved by one Gauss–Newton step."""

    def __init__(self, y: np.ndarray, err: np.ndarray) -> None:
        self.design = np.column_stack([np.ones_like(X), X]) / err[:, None]
        self.yw = y / err

    def evaluate(self, p: np.ndarray) -> tuple[float, np.ndarray]:
        r = self.yw - self.design @ p
        return float(r @ r), r

    def normal_equations(self, p: np.ndarray, r: np.ndarray) -> NormalEquations:
        return NormalEquations(self.design.T @ self.design, self.design.T @ r)


def test_linear_problem_exact_solution_and_covariance() -> None:
    rng = np.random.default_rng(6)
    err = np.linspace(0.5, 2.0, X.size)
    y = 3.0 - 0.25 * X + rng.normal(0.0, 1.0, X.size) * err
    problem = Line(y, err)
    fit = levenberg_marquardt(problem, np.zeros(2))
    best, *_ = np.linalg.lstsq(problem.design, problem.yw, rcond=None)
    np.testing.assert_allclose(fit.x, best, rtol=1e-6)
    expected = np.linalg.inv(problem.design.T @ problem.design)
    np.testing.assert_allclose(fit.covariance, expected, rtol=1e-10)
    sd = np.sqrt(np.diag(fit.covariance))
    assert np.all(np.abs(fit.x - [3.0, -0.25]) < 4.0 * sd)


def test_singular_normal_matrix_gives_pseudo_inverse(caplog) -> None:
    matrix = np.array([[4.0, 2.0], [2.0, 1.0]])  # two parameters, one combination measured
    with caplog.at_level(logging.WARNING):
        cov = normal_covariance(matrix, "degenerate")
    assert "degenerate: singular normal matrix" in caplog.text
    np.testing.assert_allclose(cov, np.linalg.pinv(matrix))


# ---------------------------------------------------------------------- whitening
def ar1(n: int, rho: float, err: np.ndarray) -> np.ndarray:
    lags = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
    return rho ** lags * np.outer(err, err)


def whitened_covariance(whiten: Whitener, cov: np.ndarray) -> np.ndarray:
    """``L⁻¹ C L⁻ᵀ`` (C symmetric: whiten the columns, transpose, whiten again)."""
    return whiten(whiten(cov).T)


def test_full_whitening_gives_unit_covariance() -> None:
    n = 300
    err = np.linspace(1.0, 4.0, n)
    cov = ar1(n, 0.7, err)
    whiten = Whitener(cov, err, True, 0.0, "ar1")
    assert whiten.label == "full"
    np.testing.assert_allclose(whitened_covariance(whiten, cov), np.eye(n), atol=1e-10)
    # Correlated noise drawn from C comes out white with unit variance.
    rng = np.random.default_rng(7)
    draws = np.linalg.cholesky(cov) @ rng.standard_normal((n, 4000))
    white = whiten(draws)
    assert abs(white.var() - 1.0) < 0.01
    lag1 = np.mean(white[1:] * white[:-1])
    assert abs(lag1) < 0.01


def test_banded_whitening_gives_unit_covariance() -> None:
    n = 400
    err = np.linspace(2.0, 1.0, n)
    theta = np.array([1.0, 0.5, -0.3, 0.1])  # a moving average: correlated over 3 lags
    rho = np.correlate(theta, theta, "full")[theta.size - 1:] / (theta @ theta)
    lags = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
    corr = np.where(lags < rho.size, rho[np.minimum(lags, rho.size - 1)], 0.0)
    cov = corr * np.outer(err, err)
    whiten = Whitener(cov, err, True, 0.125, "band")
    assert whiten.label == "banded (lag <= 3)"
    np.testing.assert_allclose(whitened_covariance(whiten, cov), np.eye(n), atol=1e-10)
    # Correlations below a tolerance neglected: unit covariance to that tolerance.
    cov = ar1(n, 0.5, err)
    whiten = Whitener(cov, err, True, 0.125, "ar1", band_tolerance=1e-9)
    assert whiten.label.startswith("banded (lag <= 29;")
    np.testing.assert_allclose(whitened_covariance(whiten, cov), np.eye(n), atol=1e-7)


def test_diagonal_whitening_and_fallback(caplog) -> None:
    n = 50
    err = np.linspace(1.0, 2.0, n)
    x = np.random.default_rng(8).standard_normal((n, 2))
    diag = Whitener(ar1(n, 0.5, err), err, False, 0.125, "off")
    assert diag.label == "diagonal"
    np.testing.assert_array_equal(diag(x), x * (1.0 / err)[:, None])
    np.testing.assert_allclose(whitened_covariance(diag, np.diag(err**2)), np.eye(n),
                               atol=1e-12)
    bad = ar1(n, 0.5, err)
    bad[10, 10] = -1.0
    with caplog.at_level(logging.WARNING):
        fallback = Whitener(bad, err, True, 0.0, "bad.fits")
    assert fallback.label == "diagonal (covariance is not positive definite)"
    assert "bad.fits: covariance is not positive definite" in caplog.text
    np.testing.assert_array_equal(fallback(x[:, 0]), x[:, 0] * (1.0 / err))
    bad[10, 10] = np.nan
    assert Whitener(bad, err, True, 0.125, "nan").label == (
        "diagonal (covariance has NaN or infinite entries)")


def test_schedule_that_would_not_terminate_is_refused() -> None:
    with pytest.raises(ValueError, match="damping_increase > 1"):
        LevenbergMarquardtConfig(damping_increase=1.0)
    with pytest.raises(ValueError, match="damping_start < damping_max"):
        LevenbergMarquardtConfig(damping_start=1e13)
