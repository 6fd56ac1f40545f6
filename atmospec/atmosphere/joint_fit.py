"""Joint atmosphere fit of the spectra of a night: shared throughput, per-exposure atmosphere.

As Spectractor's multi-spectra fit: N first-order spectra of CALSPEC stars taken with the same
instrument and disperser are fitted together, each with its own atmosphere, and all through one
common correction of the tabulated instrument throughput.

Model
-----
Spectrum ``e`` (airmass X_e) is `atmospec.atmosphere.spectrum_fit.SpectrumForwardModel` with the
throughput multiplied by a correction ``C(λ)`` common to all exposures::

    M_e(λ_i) = g_e · [K_e ⊗ (S_e · C · T_atm(X_e; PWV_e, O3_e, VAOD_e))](λ_i + δλ_e)

with ``S_e`` everything but the atmosphere (`SpectrumForwardModel.static_fine`) and ``K_e``
the kernel of resolution scale ``s_e``. Per exposure: grey ``g_e``, PWV, ozone, VAOD, shift
``δλ_e``, resolution ``s_e`` (ozone and/or VAOD optionally shared by the night).

*Throughput correction.* ``ln C(λ) = Σ_j c_j B_j(λ)``, with the ``B_j`` spanning Legendre
polynomials of degree 0..K in ``x = 2(λ − λ_min)/(λ_max − λ_min) − 1`` (λ_min, λ_max: union
of the fitted ranges) restricted by linear *gauge* conditions ``⟨q, ln C⟩ = 0`` (inner product:
mean over a uniform grid of that range):

* ``q = 1`` always: the geometric mean of C over the range is 1. A constant factor of the
  throughput is exactly the per-exposure grey terms (all ``g_e`` scaled together), so without
  this condition the problem would have an exact degeneracy.
* ``q = τ_aer(λ)`` (libRadtran's aerosol shape, or the fixed Ångström law) when VAOD is free per
  exposure with no prior: ``ln C → ln C − a · τ_aer`` is exactly compensated by
  ``VAOD_e → VAOD_e + a / X_e`` for every exposure (a per-exposure VAOD absorbs any airmass
  dependence), so the throughput is *not identifiable* along the aerosol shape from the spectra
  alone (the grey terms forbid a Langley lever arm). The condition states that the tabulated
  throughput is right along that direction: any aerosol-shaped error of the throughput then
  appears as ``a / X_e`` in every VAOD. Break the degeneracy instead with external knowledge
  (``vaod_priors``: e.g. a photometer's VAOD for one or more exposures) or with one VAOD for
  the night (``share_vaod``: the airmass lever arm then separates VAOD from throughput).
* ``q = τ_O3(λ)`` (ozone cross-section, the broad Chappuis band) when ozone is free per exposure
  with no prior, for the same reason (``O3_e → O3_e + b / X_e``); ``share_ozone`` (ozone is
  stable over a night) or ``ozone_priors`` remove it.

Water bands are too narrow for a low-order correction, so PWV needs no gauge. The correction
multiplies the throughput on the fine grid, before the convolution.

Fit
---
Least squares of the whitened residuals ``L_e⁻¹ (d_e − M_e)`` (`atmospec.fitting.Whitener`:
``C_e = L_e L_eᵀ``, Cholesky of each spectrum's covariance restricted to its fitted samples;
factored as a band matrix when its correlations vanish (below ``covariance_band_tolerance``)
beyond a short lag, else dense; the same fallbacks as `fit_atmosphere`: NaN samples dropped,
a non-positive-definite covariance replaced by its diagonal with a warning), plus Gaussian
prior terms. Levenberg–Marquardt (`atmospec.fitting.levenberg_marquardt`) on the normal
equations with **analytic derivatives** and the **block structure**: each exposure's
parameters touch only its spectrum, so ``JᵀJ`` (``n_free²``, a few hundred) is accumulated
block by block from ``n_e × (6 + n_c)`` whitened Jacobians, never forming the global Jacobian.
A step that would cross a bound takes the parameter halfway to it (never onto it). Errors
are ``(JᵀJ)⁻¹`` at the solution (unscaled).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.linalg import null_space
from scipy.sparse import csr_matrix

from atmospec.atmosphere.spectrum_fit import (
    AtmosphereFitConfig,
    SpectrumForwardModel,
    coverage_fixed,
    errors_label,
    quoted_errors,
    systematic_errors,
)
from atmospec.atmosphere.transmission import AtmosphereModel
from atmospec.errors import BadInputError
from atmospec.fitting import (
    LevenbergMarquardtConfig,
    NormalEquations,
    Whitener,
    bound_reached,
    fit_problems,
    levenberg_marquardt,
    usable_error,
)
from atmospec.spectro.spectrum import Spectrum

__all__ = [
    "EXPOSURE_PARAMETERS",
    "JointAtmosphereFit",
    "JointFitConfig",
    "fit_atmosphere_joint",
]

log = logging.getLogger(__name__)

#: Per-exposure parameters, in the order of each block's local derivative columns.
EXPOSURE_PARAMETERS = ("grey", "pwv_mm", "ozone_du", "vaod", "dlambda_nm", "resolution")
_JOINT = "joint fit"
#: Offset (nm) given to convolution-window positions outside the fine grid: zero weight.
_FAR_NM = 1.0e6


@dataclass(frozen=True)
class JointFitConfig:
    """How `fit_atmosphere_joint` fits the spectra of a night."""

    spectrum: AtmosphereFitConfig = field(default_factory=AtmosphereFitConfig)
    """Per-spectrum settings (range, SED, instrument, starting values, bounds, which of PWV,
    ozone, VAOD, shift, resolution are fitted, covariance use, bad-sample tolerance).
    ``fit_angstrom`` is not supported by the joint fit (the exponent stays fixed)."""
    throughput_degree: int = 5
    """Highest Legendre degree K of ``ln C(λ)``; the correction has K + 1 − (number of gauge
    conditions) free coefficients. 0 disables the correction (a plain simultaneous fit)."""
    share_ozone: bool = False
    """One ozone column for the night instead of one per exposure."""
    share_vaod: bool = False
    """One VAOD for the night instead of one per exposure."""
    vaod_priors: tuple[tuple[int, float, float], ...] = ()
    """Gaussian priors ``(exposure index, VAOD, σ)`` from outside the spectra (photometer);
    with ``share_vaod`` any index constrains the shared value. Any prior removes the aerosol
    gauge condition."""
    ozone_priors: tuple[tuple[int, float, float], ...] = ()
    """Gaussian priors ``(exposure index, ozone DU, σ)`` (e.g. satellite total ozone); any
    prior removes the ozone gauge condition."""
    correction_grid_step_nm: float = 5.0
    """Step of the wavelength grid on which the correction and its errors are reported."""
    max_iterations: int = 60
    """Largest number of Levenberg–Marquardt iterations."""
    tolerance: float = 1e-3
    """Convergence: χ² decrease below ``tolerance`` (absolute) or a step below
    ``tolerance`` standard deviations (``δᵀ JᵀJ δ < tolerance²``)."""
    banded_covariance_fraction: float = 0.125
    """A covariance whose band (see `covariance_band_tolerance`) is narrower than this
    fraction of its size is factored as a band matrix (O(n·b²) time, O(n·b) memory, instead of
    O(n³) and O(n²)); 0: always dense."""
    covariance_band_tolerance: float = 1e-6
    """Correlations ``|ρ_ij|`` below this beyond the last lag that has one above it are
    neglected (0: only exact zeros), so that a dense covariance whose correlations die out
    within a few tens of samples is factored as a band. (The real CTIO HD111980 covariance
    does not qualify: its median |ρ| is 5e-5 at lag 20, but its bluest ~40 samples correlate
    with each other at ≥ 1e-4 over ~270 samples, so it keeps the dense factor.)"""


@dataclass(frozen=True)
class JointAtmosphereFit:
    """Result of `fit_atmosphere_joint` (`to_dict` gives a JSON-able summary)."""

    sources: tuple[str, ...]
    """Name of each exposure (file), in input order."""
    values: tuple[dict[str, float | None], ...]
    """Per exposure: ``grey, pwv_mm, ozone_du, vaod, angstrom, dlambda_nm, resolution`` (shared
    parameters repeated in every exposure; ``angstrom`` None: libRadtran's aerosol shape)."""
    errors: tuple[dict[str, float | None], ...]
    """Per exposure: 1σ errors (None for fixed parameters), marginalised over everything else,
    including the throughput correction."""
    fixed: tuple[dict[str, str], ...]
    """Per exposure: fixed parameters and why."""
    shared: dict[str, tuple[float, float | None]]
    """Night-wide parameters (``ozone_du``, ``vaod`` when shared): value and error (None
    when not estimated)."""
    airmass: tuple[float, ...]
    """Airmass of each exposure."""
    correction_wavelength_nm: NDArray[np.float64]
    """Wavelength grid of `correction` (the union of the fitted ranges)."""
    correction: NDArray[np.float64]
    """Throughput correction C(λ) (multiplies the tabulated throughput; geometric mean 1)."""
    correction_err: NDArray[np.float64]
    """1σ error of `correction`."""
    correction_coefficients: NDArray[np.float64]
    """Coefficients of ``ln C`` on `correction_basis`."""
    correction_covariance: NDArray[np.float64]
    """Covariance of `correction_coefficients`."""
    correction_basis: NDArray[np.float64]
    """Legendre coefficients (degree 0..K in ``x``) of each basis function, shape
    ``(K + 1, n_coefficients)``: ``ln C(x) = legval(x, correction_basis @ c)``."""
    correction_range_nm: tuple[float, float]
    """``(λ_min, λ_max)`` mapped to ``x = −1, 1``."""
    gauge: tuple[str, ...]
    """Gauge conditions imposed on ``ln C`` (``mean``, ``aerosol``, ``ozone``)."""
    chi2: float
    """Total χ² (data and priors)."""
    ndof: int
    """Samples + prior terms − free parameters."""
    chi2_exposure: tuple[float, ...]
    """χ² of each spectrum."""
    n_samples: tuple[int, ...]
    """Fitted samples of each spectrum."""
    covariance_used: tuple[str, ...]
    """Per exposure: ``full``, ``banded``, ``diagonal`` or ``diagonal (reason)``."""
    parameter_names: tuple[str, ...]
    """Free parameters (``c0``…, ``ozone_du``/``vaod`` when shared, ``name[e]``)."""
    parameter_covariance: NDArray[np.float64]
    """Covariance of the free parameters, in `parameter_names` order."""
    success: bool
    """Whether the fit is usable: it converged and `problems` is empty."""
    message: str
    """Why the iterations stopped."""
    n_iterations: int
    """Levenberg–Marquardt iterations."""
    nfev: int
    """Model evaluations of the whole set of spectra."""
    timings: dict[str, float]
    """Wall time of the stages: ``setup`` (forward models, Cholesky factors), ``fit``,
    ``errors``, seconds."""
    info: dict[str, Any] = field(default_factory=dict)
    """Context: instrument, disperser, filters, targets, dropped samples."""
    problems: tuple[str, ...] = ()
    """Why the fit failed (`atmospec.fitting.fit_problems`, the spectrum configuration's
    ``quality``); empty for a usable fit."""
    systematic: dict[str, float] = field(default_factory=dict)
    """Systematic errors of each exposure's parameters, added in quadrature to the quoted
    errors (the spectrum configuration's, `atmospec.atmosphere.spectrum_fit.
    systematic_errors`): the extraction's exposure-to-exposure errors are not averaged
    away by fitting the exposures together."""

    @property
    def chi2_ndof(self) -> float:
        """χ² / ndof (NaN for ndof ≤ 0)."""
        return self.chi2 / self.ndof if self.ndof > 0 else float("nan")

    @property
    def error_scale(self) -> float:
        """√(χ²/ndof) when above 1, else 1 (also for ndof ≤ 0)."""
        if self.ndof <= 0 or not math.isfinite(self.chi2_ndof):
            return 1.0
        return math.sqrt(max(1.0, self.chi2_ndof))

    @property
    def errors_quoted(self) -> tuple[dict[str, float | None], ...]:
        """Per exposure, `errors` × `error_scale` ⊕ `systematic`: what the command prints,
        labelled by `errors_label` (the rule of the single-spectrum fit)."""
        return tuple(quoted_errors(e, self.error_scale, self.systematic) for e in self.errors)

    @property
    def errors_label(self) -> str:
        """How `errors_quoted` were made."""
        return errors_label(self.error_scale, self.chi2_ndof, self.systematic)

    def correction_at(self, wavelength_nm: NDArray[np.float64]
                      ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Correction and its 1σ error at arbitrary wavelengths inside the fitted range."""
        return _correction_curve(wavelength_nm, self.correction_range_nm,
                                 self.correction_basis, self.correction_coefficients,
                                 self.correction_covariance)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dictionary of the whole result."""
        def num(v: Any) -> Any:
            if v is None:
                return None
            if isinstance(v, float | np.floating):
                return float(v) if np.isfinite(v) else None
            return v

        exposures = []
        for e, src in enumerate(self.sources):
            exposures.append({
                "source": src, "airmass": float(self.airmass[e]),
                "values": {k: num(v) for k, v in self.values[e].items()},
                "errors": {k: num(v) for k, v in self.errors[e].items()},
                "errors_quoted": {k: num(v) for k, v in self.errors_quoted[e].items()},
                "fixed": dict(self.fixed[e]), "chi2": num(self.chi2_exposure[e]),
                "n_samples": int(self.n_samples[e]),
                "covariance_used": self.covariance_used[e],
            })
        return {
            "exposures": exposures,
            "shared": {k: {"value": num(v), "error": num(s)}
                       for k, (v, s) in self.shared.items()},
            "throughput_correction": {
                "wavelength_nm": self.correction_wavelength_nm.tolist(),
                "correction": self.correction.tolist(),
                "error": self.correction_err.tolist(),
                "coefficients": self.correction_coefficients.tolist(),
                "covariance": self.correction_covariance.tolist(),
                "legendre_basis": self.correction_basis.tolist(),
                "range_nm": [float(v) for v in self.correction_range_nm],
                "gauge": list(self.gauge),
            },
            "chi2": num(self.chi2), "ndof": int(self.ndof), "chi2_ndof": num(self.chi2_ndof),
            "error_scale": float(self.error_scale),
            "systematic_errors": dict(self.systematic), "errors_label": self.errors_label,
            "success": bool(self.success), "problems": list(self.problems),
            "message": self.message,
            "n_iterations": int(self.n_iterations), "nfev": int(self.nfev),
            "timings": {k: float(v) for k, v in self.timings.items()},
            "info": self.info,
        }


# ---------------------------------------------------------------------- one exposure
class _Block:
    """Model, analytic derivatives and whitening of one spectrum of the joint fit."""

    def __init__(self, model: SpectrumForwardModel, sel: NDArray[np.intp],
                 flux: NDArray[np.float64], whiten: Whitener,
                 basis_fine: NDArray[np.float64] | None, angstrom: float | None) -> None:
        self.static_fine = model.static_fine
        self.fine_wavelength = model.fine_wavelength
        self.wavelength = model.wavelength[sel]
        """Fitted wavelengths, nm."""
        self.airmass = float(model.airmass)
        self.flux = flux
        self.whiten = whiten
        self.wdata = whiten(flux)
        self.basis_fine = (basis_fine if basis_fine is not None
                           else np.zeros((model.fine_wavelength.size, 0)))
        """``ln C`` basis functions on the fine grid (set by the joint fit)."""
        x, p = model.airmass, model.pressure_hpa
        atm = model.atmosphere
        base = atm.optical_depths(x, p, 0.0, 0.0, 0.0, angstrom)
        self.tau_fixed = base["rayleigh"] + base["o2"]
        self.tau_ozone = atm.optical_depths(x, p, 0.0, 1.0, 0.0, angstrom)["ozone"]
        self.tau_aerosol = atm.optical_depths(x, p, 0.0, 0.0, 1.0, angstrom)["aerosol"]
        # Water: τ_w = a · (PWV·X)^b; a at PWV·X = 1, b from PWV·X = e.
        a = atm.optical_depths(x, p, 1.0 / x, 0.0, 0.0, angstrom)["water"]
        ae = atm.optical_depths(x, p, math.e / x, 0.0, 0.0, angstrom)["water"]
        with np.errstate(divide="ignore", invalid="ignore"):
            self.water_b = np.where(a > 0, np.log(np.where(a > 0, ae / a, 1.0)), 0.0)
        self.water_a = a
        # Convolution window (as SpectrumForwardModel's): fine samples around each sample.
        step = model.fine_step_nm
        fine = model.fine_wavelength
        lam = self.wavelength
        half = math.ceil((4.0 * float(np.max(model.sigma_nm(model.max_resolution)))
                          + model.max_shift_nm) / step) + 1
        k = np.arange(-half, half + 1)
        raw = np.rint((lam - fine[0]) / step).astype(np.int64)[:, None] + k[None, :]
        inside = (raw >= 0) & (raw < fine.size)
        self._idx = np.clip(raw, 0, fine.size - 1).astype(np.int32)
        # Window positions beyond the fine grid get an offset so large that their weight
        # underflows to exactly 0 (and so do their derivative terms, u·w and u²·w).
        self._dl = np.where(inside, fine[self._idx] - lam[:, None], _FAR_NM)
        s0 = model.sigma_nm(0.0)[sel]
        s1 = model.sigma_nm(1.0)[sel]
        self._box2 = s0 ** 2
        self._psf2 = np.clip(s1 ** 2 - s0 ** 2, 0.0, None)
        n, w = self._idx.shape
        self._indptr = np.arange(0, n * w + 1, w, dtype=np.int32)
        self._indices = self._idx.ravel()
        self._n_fine = fine.size
        self._key: tuple[float, float] | None = None
        self._kern: tuple[Any, ...] = ()

    @property
    def n(self) -> int:
        return self.flux.size

    def _kernel(self, dlambda: float, resolution: float) -> tuple[Any, ...]:
        """Sparse convolution matrix and the kernel's derivatives in δλ and s."""
        key = (dlambda, resolution)
        if key != self._key:
            sig = np.sqrt(resolution ** 2 * self._psf2 + self._box2)
            u = (self._dl - dlambda) / sig[:, None]
            w = np.exp(-0.5 * u * u)
            w /= w.sum(axis=1, keepdims=True)
            mat = csr_matrix((w.ravel(), self._indices, self._indptr),
                             shape=(w.shape[0], self._n_fine), copy=False)
            self._kern = (mat, w, sig)
            self._key = key
        return self._kern

    def model_flux(self, p: dict[str, float], c: NDArray[np.float64]) -> NDArray[np.float64]:
        """Model (not whitened) at the fitted samples."""
        fine = self.static_fine * np.exp(self._log_fine(p, c)[0])
        mat = self._kernel(p["dlambda_nm"], p["resolution"])[0]
        return p["grey"] * (mat @ fine)

    def _log_fine(self, p: dict[str, float], c: NDArray[np.float64]
                  ) -> tuple[NDArray[np.float64], NDArray[np.float64] | float, float]:
        """``ln(C · T_atm)`` on the fine grid, the water optical depth, and the PWV used."""
        pwv = max(p["pwv_mm"], 0.0)
        w_col = pwv * self.airmass
        tau_w = self.water_a * w_col ** self.water_b if w_col > 0 else 0.0 * self.water_a
        log_corr = self.basis_fine @ c if c.size else 0.0
        tau = (self.tau_fixed + p["ozone_du"] * self.tau_ozone + p["vaod"] * self.tau_aerosol
               + tau_w)
        return log_corr - tau, tau_w, pwv

    def evaluate(self, p: dict[str, float], c: NDArray[np.float64], jac: bool
                 ) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
        """Whitened residuals and (``jac``) whitened derivatives of the model, columns
        `EXPOSURE_PARAMETERS` then one per correction coefficient."""
        log_fine, tau_w, pwv = self._log_fine(p, c)
        fine = self.static_fine * np.exp(log_fine)
        mat, w, sig = self._kernel(p["dlambda_nm"], p["resolution"])
        g = p["grey"]
        if not jac:
            return self.wdata - self.whiten(g * (mat @ fine)), None
        dpwv = -self.water_b * tau_w / max(pwv, 1e-6)
        cols = np.column_stack([fine, fine * dpwv, -fine * self.tau_ozone,
                                -fine * self.tau_aerosol,
                                *(fine[:, None] * self.basis_fine).T])
        conv = mat @ cols
        base = conv[:, 0]
        # Kernel derivatives: w ∝ exp(−u²/2), u = (λ_fine − λ_i − δλ)/σ_i, normalised, so
        # ∂w/∂δλ = w (u − ⟨u⟩_w)/σ and ∂w/∂σ = w (u² − ⟨u²⟩_w)/σ, with ∂σ/∂s = s ψ²/σ.
        u = (self._dl - p["dlambda_nm"]) / sig[:, None]
        wg = w * fine[self._idx]
        wu = w * u
        d_dl = (np.einsum("ij,ij->i", wg, u) - base * wu.sum(axis=1)) / sig
        d_s = (np.einsum("ij,ij->i", wg * u, u) - base * np.einsum("ij,ij->i", wu, u)) * (
            p["resolution"] * self._psf2 / sig ** 2)
        deriv = np.column_stack([base, g * conv[:, 1], g * conv[:, 2], g * conv[:, 3],
                                 g * d_dl, g * d_s, g * conv[:, 4:]])
        resid = self.wdata - self.whiten(g * base)
        return resid, self.whiten(deriv)


# ---------------------------------------------------------------------- basis
def _correction_basis(degree: int, lo: float, hi: float, conditions: list[str],
                      angstrom: float | None, n_grid: int = 1024
                      ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Legendre coefficients of a basis of ``ln C`` satisfying the gauge ``conditions``.

    Returns the ``(degree + 1, m)`` matrix and the gauge shapes sampled on the uniform grid.
    """
    lam = np.linspace(lo, hi, n_grid)
    x = 2.0 * (lam - lo) / (hi - lo) - 1.0
    vander = np.polynomial.legendre.legvander(x, degree)
    atm = AtmosphereModel(lam)
    shapes = []
    for name in conditions:
        if name == "mean":
            shapes.append(np.ones(n_grid))
        elif name == "aerosol":
            shapes.append(atm.optical_depths(1.0, 1.0, 0.0, 0.0, 1.0, angstrom)["aerosol"])
        elif name == "ozone":
            shapes.append(atm.optical_depths(1.0, 1.0, 0.0, 1.0, 0.0, angstrom)["ozone"])
    q = np.column_stack(shapes)
    basis = null_space(q.T @ vander / n_grid)
    # Orthonormal over the grid: the coefficients are comparable in size.
    design = vander @ basis
    _, r = np.linalg.qr(design / math.sqrt(n_grid))
    basis = basis @ np.linalg.inv(r)
    return basis, q


# ---------------------------------------------------------------------- set-up
@dataclass
class _Night:
    """The spectra of the fit, one block each, and what the result reports about them."""

    blocks: list[_Block] = field(default_factory=list)
    """Per exposure: model, derivatives and whitening of its fitted samples."""
    fixed: list[dict[str, str]] = field(default_factory=list)
    """Per exposure: parameters fixed by its coverage or the configuration, and why."""
    dropped: list[int] = field(default_factory=list)
    """Per exposure: samples dropped for a non-finite flux or error."""
    filters: list[str] = field(default_factory=list)
    """Per exposure: filter name."""
    targets: list[str | None] = field(default_factory=list)
    """Per exposure: target name."""
    instrument: str = ""
    """Instrument profile (the same for all)."""
    disperser: str = ""
    """Disperser (the same for all)."""


@dataclass(frozen=True)
class _Correction:
    """Range, gauge conditions and basis of the throughput correction ``ln C``."""

    lo: float
    """λ mapped to x = −1, nm (bluest fitted sample of all spectra)."""
    hi: float
    """λ mapped to x = 1, nm (reddest fitted sample)."""
    conditions: tuple[str, ...]
    """Gauge conditions (``mean``, ``aerosol``, ``ozone``)."""
    basis: NDArray[np.float64]
    """Legendre coefficients of the basis functions, ``(K + 1, n_c)``."""
    vaod_free: bool
    """Whether some exposure fits VAOD."""
    ozone_free: bool
    """Whether some exposure fits ozone."""

    @property
    def n_c(self) -> int:
        return self.basis.shape[1]


@dataclass(frozen=True)
class _Parameters:
    """The free parameters (correction coefficients, shared, then per exposure) and how each
    exposure's model reads them."""

    names: tuple[str, ...]
    """Parameter names (``c0``…, shared ``ozone_du``/``vaod``, ``name[e]``)."""
    start: NDArray[np.float64]
    """Starting values."""
    lower: NDArray[np.float64]
    """Lower bounds."""
    upper: NDArray[np.float64]
    """Upper bounds."""
    index: tuple[tuple[int, ...], ...]
    """Per exposure: the parameter of each local column (`EXPOSURE_PARAMETERS`, then the
    correction coefficients), −1 when the exposure holds it fixed."""
    constant: tuple[dict[str, float], ...]
    """Per exposure: the values of the parameters it does not fit (and the starts)."""
    shared_names: tuple[str, ...]
    """Parameters shared by the night."""
    priors: tuple[tuple[int, float, float], ...]
    """Gaussian priors ``(parameter index, value, σ)``."""

    def of_exposure(self, x: NDArray[np.float64], e: int) -> dict[str, float]:
        """Exposure ``e``'s parameters at ``x``."""
        p = dict(self.constant[e])
        for j, name in enumerate(EXPOSURE_PARAMETERS):
            k = self.index[e][j]
            if k >= 0:
                p[name] = float(x[k])
        return p


def _check_inputs(spectra: Iterable[Spectrum | Callable[[], Spectrum]], config: JointFitConfig,
                  sources: Sequence[str] | None
                  ) -> tuple[list[Spectrum | Callable[[], Spectrum]], tuple[str, ...]]:
    """The spectra as a list and their names, after the checks that need no spectrum."""
    items = list(spectra)
    if not items:
        raise BadInputError(_JOINT, "no spectra given")
    if len(items) < 2:
        raise BadInputError(_JOINT, "a joint fit needs at least two spectra (use "
                                    "fit_atmosphere for one)")
    names = (tuple(sources) if sources is not None
             else tuple(f"spectrum {i}" for i in range(len(items))))
    if len(names) != len(items):
        raise BadInputError(_JOINT, f"{len(names)} names for {len(items)} spectra")
    if config.spectrum.fit_angstrom:
        raise BadInputError(_JOINT, "fit_angstrom is not supported by the joint fit: fix the "
                                    "Ångström exponent (angstrom=...) or use the default shape")
    if config.throughput_degree < 0:
        raise BadInputError(_JOINT, "throughput_degree must be >= 0")
    for name, priors in (("vaod_priors", config.vaod_priors),
                         ("ozone_priors", config.ozone_priors)):
        for prior in priors:
            if len(prior) != 3:
                raise BadInputError(_JOINT, f"{name}: {prior!r} is not (index, value, σ)")
            e, sigma = int(prior[0]), float(prior[2])
            if not 0 <= e < len(items):
                raise BadInputError(_JOINT, f"{name} names exposure {e}: only {len(items)} "
                                            "spectra")
            if not sigma > 0:
                raise BadInputError(_JOINT, f"{name}[{e}]: σ must be positive")
    return items, names


def _read_spectra(items: list[Spectrum | Callable[[], Spectrum]], sources: tuple[str, ...],
                  config: JointFitConfig) -> _Night:
    """One spectrum at a time: its forward model, samples, fixed parameters, whitening and
    block; the block keeps what it needs and the model (with its own convolution windows) is
    released before the next one."""
    cfg = config.spectrum
    night = _Night()
    first: tuple[str, str, bool, str] | None = None
    for e, src in enumerate(sources):
        item = items[e]
        spec = item() if callable(item) else item
        m = SpectrumForwardModel(
            spec, sed_path=cfg.sed_path, instrument=cfg.instrument,
            wavelength_range_nm=cfg.wavelength_range_nm, max_shift_nm=cfg.max_shift_nm,
            max_resolution=cfg.resolution_bounds[1], fine_step_nm=cfg.fine_step_nm,
            source=src)
        if first is None:
            first = (m.instrument, m.disperser.name, m.electrons, m.flux_unit)
        else:
            _check_same_setup(m, first, src, sources[0])
        block, fixed, n_bad = _block(m, spec, src, config)
        night.blocks.append(block)
        night.fixed.append(fixed)
        night.dropped.append(n_bad)
        night.filters.append(m.filter_name)
        night.targets.append(spec.target)
        del m, spec
    assert first is not None
    night.instrument, night.disperser = first[0], first[1]
    return night


def _check_same_setup(m: SpectrumForwardModel, first: tuple[str, str, bool, str], src: str,
                      first_src: str) -> None:
    """Refuse a spectrum whose instrument, disperser or flux unit differ from the first's."""
    if m.instrument != first[0]:
        raise BadInputError(src, f"instrument {m.instrument!r} differs from {first[0]!r} of "
                                 f"{first_src}: a joint fit shares one throughput")
    if m.disperser.name.lower() != first[1].lower():
        raise BadInputError(src, f"disperser {m.disperser.name!r} differs from {first[1]!r} "
                                 f"of {first_src}: a joint fit shares one disperser and "
                                 "throughput")
    if m.electrons != first[2]:
        raise BadInputError(src, f"flux unit {m.flux_unit!r} differs from {first[3]!r} of "
                                 f"{first_src}")


def _block(m: SpectrumForwardModel, spec: Spectrum, src: str, config: JointFitConfig
           ) -> tuple[_Block, dict[str, str], int]:
    """The block of one spectrum (finite samples, whitening), its fixed parameters and the
    number of samples dropped."""
    cfg = config.spectrum
    idx = m.index
    flux, err = spec.flux[idx], spec.flux_err[idx]
    good = np.isfinite(flux) & np.isfinite(err)
    n_bad = int((~good).sum())
    if n_bad > cfg.max_bad_fraction * idx.size:
        raise BadInputError(src, f"{n_bad} of {idx.size} samples have NaN or infinite flux or "
                                 "error")
    if n_bad:
        log.warning("%s: dropping %d samples with NaN or infinite flux or error", src, n_bad)
    if np.any(err[good] <= 0):
        raise BadInputError(src, "flux errors must be positive")
    sel = np.flatnonzero(good)
    lam = m.wavelength[sel]
    static = np.interp(lam, m.fine_wavelength, m.static_fine)
    lit = lam[static > 1e-3 * float(np.max(static))] if np.max(static) > 0 else lam[:0]
    fixed = coverage_fixed(float(lam[0]), float(lam[-1]), lit, cfg)
    fixed.pop("angstrom", None)
    sub = idx[sel]
    cov = (spec.covariance[np.ix_(sub, sub)] if spec.covariance is not None else None)
    whiten = Whitener(cov, spec.flux_err[sub], cfg.use_covariance,
                      config.banded_covariance_fraction, src, config.covariance_band_tolerance)
    del cov
    return _Block(m, sel, spec.flux[sub], whiten, None, cfg.angstrom), fixed, n_bad


def _correction(night: _Night, config: JointFitConfig) -> _Correction:
    """The throughput correction's gauge and basis (set on every block's fine grid)."""
    cfg = config.spectrum
    lo = min(float(b.wavelength[0]) for b in night.blocks)
    hi = max(float(b.wavelength[-1]) for b in night.blocks)
    vaod_free = cfg.fit_vaod and any("vaod" not in f for f in night.fixed)
    ozone_free = cfg.fit_ozone and any("ozone_du" not in f for f in night.fixed)
    conditions = ["mean"]
    if vaod_free and not config.share_vaod and not config.vaod_priors:
        conditions.append("aerosol")
    if ozone_free and not config.share_ozone and not config.ozone_priors:
        conditions.append("ozone")
    degree = config.throughput_degree
    if degree + 1 <= len(conditions):
        basis_leg = np.zeros((degree + 1, 0))
    else:
        basis_leg, _ = _correction_basis(degree, lo, hi, conditions, cfg.angstrom)
    for b in night.blocks:
        x = 2.0 * (b.fine_wavelength - lo) / (hi - lo) - 1.0
        b.basis_fine = np.polynomial.legendre.legvander(x, degree) @ basis_leg
    return _Correction(lo, hi, tuple(conditions), basis_leg, vaod_free, ozone_free)


def _parameters(night: _Night, corr: _Correction, config: JointFitConfig,
                sources: tuple[str, ...]) -> _Parameters:
    """The parameter table: globals (correction, shared), then per exposure, with starts
    (the grey from the data / model ratio at the starting atmosphere), bounds and priors."""
    cfg = config.spectrum
    n_c = corr.n_c
    names: list[str] = []
    start: list[float] = []
    lower: list[float] = []
    upper: list[float] = []
    index = [[-1] * (len(EXPOSURE_PARAMETERS) + n_c) for _ in night.blocks]

    def add(name: str, value: float, bounds: tuple[float, float]) -> int:
        names.append(name)
        start.append(value)
        lower.append(bounds[0])
        upper.append(bounds[1])
        return len(names) - 1

    for j in range(n_c):
        k = add(f"c{j}", 0.0, (-np.inf, np.inf))
        for cols in index:
            cols[len(EXPOSURE_PARAMETERS) + j] = k
    bounds = {"grey": (0.0, np.inf), "pwv_mm": cfg.pwv_bounds, "ozone_du": cfg.ozone_bounds,
              "vaod": cfg.vaod_bounds, "dlambda_nm": (-cfg.max_shift_nm, cfg.max_shift_nm),
              "resolution": cfg.resolution_bounds}
    starts = {"pwv_mm": cfg.pwv_mm, "ozone_du": cfg.ozone_du, "vaod": cfg.vaod,
              "dlambda_nm": 0.0, "resolution": 1.0}
    fit_flags = {"ozone_du": corr.ozone_free, "vaod": corr.vaod_free}
    shared_names = [n for n, s in (("ozone_du", config.share_ozone),
                                   ("vaod", config.share_vaod)) if s and fit_flags[n]]
    for name in shared_names:
        k = add(name, starts[name], bounds[name])
        for e, cols in enumerate(index):
            if name not in night.fixed[e]:
                cols[EXPOSURE_PARAMETERS.index(name)] = k
    constant: list[dict[str, float]] = []
    for e, b in enumerate(night.blocks):
        const = dict(starts)
        m0 = b.model_flux(dict(starts, grey=1.0), np.zeros(n_c))
        ratio = b.flux / np.where(m0 > 0, m0, np.nan)
        grey0 = float(np.nanmedian(ratio)) if np.isfinite(ratio).any() else 1.0
        const["grey"] = grey0 if grey0 > 0 else 1.0
        for j, name in enumerate(EXPOSURE_PARAMETERS):
            if name in shared_names or name in night.fixed[e]:
                continue
            index[e][j] = add(f"{name}[{e}]", const[name], bounds[name])
        constant.append(const)
    priors = _prior_terms(index, config, sources)
    return _Parameters(tuple(names), np.array(start), np.array(lower), np.array(upper),
                       tuple(tuple(cols) for cols in index), tuple(constant),
                       tuple(shared_names), priors)


def _prior_terms(index: list[list[int]], config: JointFitConfig, sources: tuple[str, ...]
                 ) -> tuple[tuple[int, float, float], ...]:
    """The configuration's VAOD and ozone priors as ``(parameter index, value, σ)``."""
    priors: list[tuple[int, float, float]] = []
    for name, table in (("vaod", config.vaod_priors), ("ozone_du", config.ozone_priors)):
        for which, value, sigma in table:
            e = int(which)
            k = index[e][EXPOSURE_PARAMETERS.index(name)]
            if k < 0:
                raise BadInputError(sources[e], f"prior on {name}, which is fixed for it")
            priors.append((k, float(value), float(sigma)))
    return tuple(priors)


# ---------------------------------------------------------------------- the problem
class _JointProblem:
    """The joint fit as a `LeastSquaresProblem`: χ² of the whitened residuals of every
    spectrum plus the priors. Each exposure's parameters touch only its spectrum, so ``JᵀJ``
    (``n_free²``) is accumulated block by block from ``n_e × (6 + n_c)`` whitened Jacobians,
    never forming the global Jacobian."""

    def __init__(self, blocks: list[_Block], params: _Parameters, n_c: int) -> None:
        self.blocks = blocks
        self.params = params
        self.n_c = n_c
        self.nfev = 0
        """Model evaluations of the whole set of spectra (with or without derivatives)."""

    def chi2(self, x: NDArray[np.float64]) -> tuple[float, list[float]]:
        """Total χ² (priors included) and the χ² of each spectrum."""
        self.nfev += 1
        c = x[:self.n_c]
        per = [float(np.sum(b.evaluate(self.params.of_exposure(x, e), c, False)[0] ** 2))
               for e, b in enumerate(self.blocks)]
        return sum(per) + _prior_chi2(x, self.params.priors), per

    def evaluate(self, x: NDArray[np.float64]) -> tuple[float, None]:
        """Objective at ``x`` (`LeastSquaresProblem`)."""
        return self.chi2(x)[0], None

    def normal_equations(self, x: NDArray[np.float64], state: None = None) -> NormalEquations:
        """``JᵀJ``, ``Jᵀr`` and the χ² (as ``r·r``) at ``x`` (`LeastSquaresProblem`)."""
        self.nfev += 1
        c = x[:self.n_c]
        n_free = x.size
        hess = np.zeros((n_free, n_free))
        grad = np.zeros(n_free)
        chi2 = 0.0
        for e, b in enumerate(self.blocks):
            r, jw = b.evaluate(self.params.of_exposure(x, e), c, True)
            cols = np.array(self.params.index[e])
            use = cols >= 0
            jw, cols = jw[:, use], cols[use]
            hess[np.ix_(cols, cols)] += jw.T @ jw
            grad[cols] += jw.T @ r
            chi2 += float(r @ r)
        for k, value, sigma in self.params.priors:
            hess[k, k] += 1.0 / sigma ** 2
            grad[k] += (value - x[k]) / sigma ** 2
        chi2 += _prior_chi2(x, self.params.priors)
        return NormalEquations(hess, grad, chi2)


# ---------------------------------------------------------------------- the fit
def fit_atmosphere_joint(spectra: Iterable[Spectrum | Callable[[], Spectrum]],
                         config: JointFitConfig | None = None,
                         sources: Sequence[str] | None = None) -> JointAtmosphereFit:
    """Fit the spectra of a night together: shared throughput correction, per-exposure
    atmosphere.

    Parameters
    ----------
    spectra : iterable of Spectrum or callable
        First-order spectra of CALSPEC stars (or of stars with ``config.spectrum.sed_path``;
        one SED for all) from one instrument and disperser, at least two; or callables
        returning them (``functools.partial(read_spectrum, path)``), called one at a time and
        released once their block is set up, so that only the fit's own per-spectrum factors
        stay in memory (the way to fit a night from files).
    config : JointFitConfig, optional
        Settings.
    sources : sequence of str, optional
        Names of the spectra, for messages and the result (default: ``spectrum <i>``).

    Returns
    -------
    JointAtmosphereFit

    Raises
    ------
    BadInputError
        No or a single spectrum, different instruments or dispersers, a prior on a missing
        exposure, and any per-spectrum problem `fit_atmosphere` refuses.
    """
    config = config or JointFitConfig()
    items, names = _check_inputs(spectra, config, sources)
    t0 = time.perf_counter()
    night = _read_spectra(items, names, config)
    corr = _correction(night, config)
    params = _parameters(night, corr, config, names)
    n_data = sum(b.n for b in night.blocks)
    n_free = params.start.size
    if n_data + len(params.priors) < n_free + 5:
        raise BadInputError(_JOINT, f"only {n_data} samples for {n_free} parameters")
    t_setup = time.perf_counter() - t0

    t1 = time.perf_counter()
    problem = _JointProblem(night.blocks, params, corr.n_c)
    x0 = np.clip(params.start, params.lower, params.upper)
    normal0 = problem.normal_equations(x0)
    assert normal0.objective is not None
    fit = levenberg_marquardt(
        problem, x0, LevenbergMarquardtConfig(max_iterations=config.max_iterations,
                                              tolerance=config.tolerance),
        bounds=(params.lower, params.upper), start=(normal0.objective, None),
        start_normal=normal0, name=_JOINT)
    t_fit = time.perf_counter() - t1

    t2 = time.perf_counter()
    x, pcov = fit.x, fit.covariance
    sd = np.sqrt(np.clip(np.diag(pcov), 0.0, None))
    _, per_exp = problem.chi2(x)
    grid = np.arange(corr.lo, corr.hi + 0.5 * config.correction_grid_step_nm,
                     config.correction_grid_step_nm)
    grid = grid[grid <= corr.hi]
    n_c = corr.n_c
    curve, curve_err = _correction_curve(grid, (corr.lo, corr.hi), corr.basis, x[:n_c],
                                         pcov[:n_c, :n_c])
    t_err = time.perf_counter() - t2

    ndof = int(n_data + len(params.priors) - n_free)
    problems = _problems(params, names, x, sd, float(fit.objective) / ndof if ndof > 0
                         else math.nan, None if fit.success else fit.message, config)
    # A parameter at a bound has no meaningful symmetric error: reported as None.
    tol = config.spectrum.quality.bound_tolerance
    sd = np.where([bool(bound_reached(v, (lo, hi), tol)) for v, lo, hi
                   in zip(x, params.lower, params.upper, strict=True)], np.nan, sd)
    values, errors = _exposure_values(params, x, sd, config.spectrum.angstrom)
    shared = {name: (float(x[k]), usable_error(sd[k]))
              for name, k in ((n, params.names.index(n)) for n in params.shared_names)}
    result = JointAtmosphereFit(
        sources=names, values=values, errors=errors, fixed=tuple(night.fixed), shared=shared,
        airmass=tuple(b.airmass for b in night.blocks),
        correction_wavelength_nm=grid, correction=curve, correction_err=curve_err,
        correction_coefficients=x[:n_c].copy(), correction_covariance=pcov[:n_c, :n_c].copy(),
        correction_basis=corr.basis, correction_range_nm=(corr.lo, corr.hi),
        gauge=corr.conditions if n_c else (),
        chi2=float(fit.objective), ndof=ndof,
        chi2_exposure=tuple(per_exp), n_samples=tuple(b.n for b in night.blocks),
        covariance_used=tuple(b.whiten.label for b in night.blocks),
        parameter_names=params.names, parameter_covariance=pcov,
        success=fit.success and not problems, problems=problems, message=fit.message,
        n_iterations=fit.iterations, nfev=problem.nfev,
        systematic=systematic_errors(config.spectrum),
        timings={"setup": t_setup, "fit": t_fit, "errors": t_err},
        info={"instrument": night.instrument, "disperser": night.disperser,
              "filters": night.filters, "targets": night.targets,
              "dropped_samples": night.dropped, "n_exposures": len(names), "n_free": n_free})
    log.info("%s: %d spectra, %d parameters, χ²/ndof %.3f, %d iterations (%s), %.1f s",
             _JOINT, len(names), n_free, result.chi2_ndof, fit.iterations, fit.message,
             t_setup + t_fit + t_err)
    if problems:
        log.info("%s failed: %s", _JOINT, "; ".join(problems))
    return result


def _problems(params: _Parameters, sources: tuple[str, ...], x: NDArray[np.float64],
              sd: NDArray[np.float64], chi2_ndof: float, optimiser_failure: str | None,
              config: JointFitConfig) -> tuple[str, ...]:
    """`atmospec.fitting.fit_problems` of the joint fit, a per-exposure parameter named by
    its exposure (``pwv_mm of spec_3.fits``) rather than its index."""
    labels = []
    for name in params.names:
        base, _, rest = name.partition("[")
        labels.append(f"{base} of {Path(sources[int(rest[:-1])]).name}" if rest else name)
    return fit_problems(dict(zip(labels, x.tolist(), strict=True)),
                        dict(zip(labels, sd.tolist(), strict=True)),
                        {k: (float(lo), float(hi)) for k, lo, hi
                         in zip(labels, params.lower, params.upper, strict=True)},
                        chi2_ndof, optimiser_failure, config.spectrum.quality)


def _exposure_values(params: _Parameters, x: NDArray[np.float64], sd: NDArray[np.float64],
                     angstrom: float | None
                     ) -> tuple[tuple[dict[str, float | None], ...],
                                tuple[dict[str, float | None], ...]]:
    """Per exposure: the values of every parameter and the errors of the fitted ones."""
    values, errors = [], []
    for e in range(len(params.index)):
        p = params.of_exposure(x, e)
        v: dict[str, float | None] = {k: float(p[k]) for k in EXPOSURE_PARAMETERS}
        v["angstrom"] = angstrom
        err: dict[str, float | None] = {k: None for k in EXPOSURE_PARAMETERS}
        for j, name in enumerate(EXPOSURE_PARAMETERS):
            k = params.index[e][j]
            if k >= 0:
                err[name] = usable_error(sd[k])
        err["angstrom"] = None
        values.append(v)
        errors.append(err)
    return tuple(values), tuple(errors)


def _prior_chi2(x: NDArray[np.float64], priors: Sequence[tuple[int, float, float]]) -> float:
    return float(sum(((x[k] - v) / s) ** 2 for k, v, s in priors))



def _correction_curve(wavelength_nm: NDArray[np.float64], range_nm: tuple[float, float],
                      basis: NDArray[np.float64], coef: NDArray[np.float64],
                      cov: NDArray[np.float64]
                      ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """C(λ) = exp(Σ c_j B_j(λ)) and its 1σ error (linear propagation of ``cov``)."""
    lo, hi = range_nm
    x = 2.0 * (np.asarray(wavelength_nm, dtype=np.float64) - lo) / (hi - lo) - 1.0
    design = np.polynomial.legendre.legvander(x, basis.shape[0] - 1) @ basis
    corr = np.exp(design @ coef)
    var = np.einsum("ij,jk,ik->i", design, cov, design)
    return corr, corr * np.sqrt(np.clip(var, 0.0, None))
