"""The transverse (1D) Moffat profile of a spectrum trace and its batched fit.

Spectractor's ``Moffat1D``: ``f(x) = A (1 + ((x − c)/γ)²)^(−α)``, of FWHM
``2 γ √(2^(1/α) − 1)``. The 1D marginal of a 2D Moffat of index β is such a profile with
the same γ and ``α = β − ½``.

`fit_moffat_batch` fits many profiles at once (one per along-trace bin) with a vectorised
Levenberg–Marquardt: every iteration solves all the 4×4 normal equations together
(`numpy.linalg.solve` on a stack), so there is no Python loop over bins or pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MoffatFit", "fit_moffat_batch", "moffat1d", "moffat1d_fwhm"]

#: Bounds on (γ, α) applied after each step: keeps the fit away from degenerate shapes.
_GAMMA_BOUNDS = (0.3, 60.0)
_ALPHA_BOUNDS = (0.6, 20.0)


def moffat1d(x: np.ndarray, amplitude: np.ndarray, centre: np.ndarray, gamma: np.ndarray,
             alpha: np.ndarray) -> np.ndarray:
    """``A (1 + ((x − c)/γ)²)^(−α)`` with broadcasting of every argument."""
    q = 1.0 + ((x - centre) / gamma) ** 2
    return amplitude * q ** (-alpha)


def moffat1d_fwhm(gamma: np.ndarray | float, alpha: np.ndarray | float) -> np.ndarray:
    """FWHM of `moffat1d`: ``2 γ √(2^(1/α) − 1)``."""
    return 2.0 * np.asarray(gamma) * np.sqrt(2.0 ** (1.0 / np.asarray(alpha)) - 1.0)


@dataclass(frozen=True)
class MoffatFit:
    """Result of `fit_moffat_batch` for ``n`` profiles."""

    params: np.ndarray
    """``(n, 4)``: amplitude, centre, γ, α."""
    errors: np.ndarray
    """``(n, 4)`` one-sigma errors (from the inverse normal matrix; NaN if singular)."""
    chi2: np.ndarray
    """``(n,)`` χ² of each fit."""
    ndof: np.ndarray
    """``(n,)`` degrees of freedom (valid pixels − 4)."""

    @property
    def fwhm(self) -> np.ndarray:
        """FWHM of each fitted profile, pixels."""
        return moffat1d_fwhm(self.params[:, 2], self.params[:, 3])


def _model_jac(x: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, c, g, al = (p[:, i:i + 1] for i in range(4))
    d = x - c
    q = 1.0 + (d / g) ** 2
    qa = q ** (-al)
    f = a * qa
    common = 2.0 * a * al * qa / q
    jac = np.stack([qa, common * d / g**2, common * d**2 / g**3, -f * np.log(q)], axis=-1)
    return f, jac


def fit_moffat_batch(x: np.ndarray, data: np.ndarray, weight: np.ndarray, p0: np.ndarray,
                     n_iter: int = 40) -> MoffatFit:
    """Fit ``n`` 1D Moffat profiles at once by weighted Levenberg–Marquardt.

    Parameters
    ----------
    x : numpy.ndarray
        ``(n, m)`` or ``(m,)`` pixel positions.
    data : numpy.ndarray
        ``(n, m)`` values (background subtracted); NaN where not usable.
    weight : numpy.ndarray
        ``(n, m)`` inverse variances (0 for masked pixels).
    p0 : numpy.ndarray
        ``(n, 4)`` starting amplitude, centre, γ, α.
    n_iter : int
        Iterations (each adapts a per-profile damping factor).

    Returns
    -------
    MoffatFit
    """
    x = np.broadcast_to(np.asarray(x, dtype=np.float64), data.shape)
    w = np.where(np.isfinite(data), weight, 0.0)
    y = np.where(w > 0, data, 0.0)
    p = np.array(p0, dtype=np.float64, copy=True)
    lam = np.full(p.shape[0], 1e-3)
    eye = np.eye(4)
    # The model and Jacobian of each profile's current point are kept from the trial that
    # moved it there (one evaluation per iteration, not two).
    f, jac = _model_jac(x, p)
    chi2 = np.sum(w * (y - f) ** 2, axis=1)
    for _ in range(n_iter):
        r = y - f
        jtw = jac * w[..., None]
        a_mat = np.transpose(jtw, (0, 2, 1)) @ jac  # batched GEMM: 20x einsum's speed
        b_vec = np.einsum("nmi,nm->ni", jtw, r)
        diag = np.einsum("nii->ni", a_mat)
        damped = a_mat + (lam[:, None, None] * eye) * diag[:, None, :] + 1e-12 * eye
        step = np.linalg.solve(damped, b_vec[..., None])[..., 0]
        trial = p + step
        trial[:, 2] = np.clip(np.abs(trial[:, 2]), *_GAMMA_BOUNDS)
        trial[:, 3] = np.clip(trial[:, 3], *_ALPHA_BOUNDS)
        f_trial, jac_trial = _model_jac(x, trial)
        new = np.sum(w * (y - f_trial) ** 2, axis=1)
        better = np.isfinite(new) & (new < chi2)
        p[better] = trial[better]
        f[better] = f_trial[better]
        jac[better] = jac_trial[better]
        chi2 = np.where(better, new, chi2)
        lam = np.where(better, lam * 0.3, lam * 10.0).clip(1e-7, 1e7)
    a_mat = np.transpose(jac * w[..., None], (0, 2, 1)) @ jac
    det_ok = np.abs(np.linalg.det(a_mat)) > 0
    cov = np.full_like(a_mat, np.nan)
    if det_ok.any():
        cov[det_ok] = np.linalg.inv(a_mat[det_ok])
    errors = np.sqrt(np.clip(np.einsum("nii->ni", cov), 0.0, None))
    ndof = np.count_nonzero(w > 0, axis=1) - 4
    return MoffatFit(p, errors, chi2, ndof)
