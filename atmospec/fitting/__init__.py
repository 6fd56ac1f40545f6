"""The least-squares core the fits share (numpy and scipy only: foundation-level numerics).

``levenberg_marquardt``
    Levenberg–Marquardt on the normal equations of a problem that supplies its own objective
    and Gauss–Newton matrices (analytic, block-structured or projected Jacobians), with bounds
    (steps go halfway to a bound they would cross), a damping schedule, convergence tests, a
    bound on the iterations and a status; used by the 2D forward model's shape fit
    (`atmospec.spectro.forward_model`) and the joint atmosphere fit
    (`atmospec.atmosphere.joint_fit`).
``quality``
    `fit_problems`: when a fit counts as failed (optimiser failure, a parameter at a bound,
    no uncertainty, χ²/ndof beyond `FitQualityConfig.max_chi2_ndof`), the rule every fitting
    command applies.
``whitening``
    `Whitener`: ``x ↦ L⁻¹ x`` for a data covariance ``L Lᵀ`` (dense, banded or diagonal, with
    the fallback to the diagonal when the covariance is unusable); used by the atmosphere
    fits on spectra.

The 1D and spectrogram atmosphere fits minimise with lmfit (MINPACK with bound transforms and
finite-difference Jacobians); see ``docs/atmosphere.md`` for why they stay there.
"""

from atmospec.fitting.levenberg_marquardt import (
    FitStatus,
    LeastSquaresProblem,
    LevenbergMarquardtConfig,
    LevenbergMarquardtResult,
    NormalEquations,
    levenberg_marquardt,
    normal_covariance,
)
from atmospec.fitting.quality import FitQualityConfig, bound_reached, fit_problems, usable_error
from atmospec.fitting.whitening import Whitener

__all__ = [
    "FitQualityConfig",
    "FitStatus",
    "LeastSquaresProblem",
    "LevenbergMarquardtConfig",
    "LevenbergMarquardtResult",
    "NormalEquations",
    "Whitener",
    "bound_reached",
    "fit_problems",
    "levenberg_marquardt",
    "normal_covariance",
    "usable_error",
]
