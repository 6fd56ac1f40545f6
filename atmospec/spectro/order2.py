"""Second-order contamination of an extracted first-order spectrum.

A disperser sends the light of λ into every order m at the distance ``u_m(λ)`` of its
dispersion law (`atmospec.spectro.dispersers`). On LATISS the orders share one trace, so
at a distance ``u`` from the zeroth order the first order of ``λ₁(u)`` and the second order
of ``λ₂(u) ≈ λ₁(u)/2`` land on the same pixels; with the extraction range 350–1100 nm the
second order appears from λ₁ ≈ 700 nm. Summed across the trace, the flux per pixel of
distance is::

    F_obs(u) = F₁(λ₁) |dλ₁/du| + r₂₁(λ₂) F₁(λ₂) |dλ₂/du|

with F₁ the true first-order e⁻ per nm and r₂₁ the disperser's order-2/order-1 ratio
(`Disperser.ratio_order_2over1`; the simulator and Spectractor draw order 2 as
``r₂₁ · order 1``). Per nm of λ₁::

    F_obs(λ₁) = F₁(λ₁) + r₂₁(λ₂) J(u) F₁(λ₂),      J = |dλ₂/du| / |dλ₁/du|  (≈ ½)

`correct_order2` solves this by a fixed point, ``F ← F_obs − r₂₁ J F(λ₂)``, with F at λ₂
interpolated in the spectrum itself. Each step multiplies the error by ``r₂₁ J`` of the
contaminating light (a few %), so it converges in a few steps; it is exact where λ₂ lies below
the contamination onset (the blue part is uncontaminated) and, by recursion, everywhere.

Approximations: F₁(λ₂) is the *extracted* first-order spectrum, whose resolution in nm is
about twice coarser than the second order's at λ₂ (same PSF in pixels, twice the dispersion),
so the subtracted model is slightly smoother than the true contamination near strong lines;
no light is assumed below the bluest extracted wavelength (the contamination from λ₂ below it
is left in); the third order (r₃₂ · r₂₁ of λ/3) is not corrected; the transverse PSF width
difference between the orders is ignored (fluxes summed across the trace do not depend on it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from atmospec.spectro.adr import solve_wavelength
from atmospec.spectro.dispersers import Disperser, load_disperser
from atmospec.spectro.spectrum import ImageExtension, Spectrum

__all__ = ["Order2Correction", "correct_extraction", "correct_order2", "order2_image",
           "with_order2"]


@dataclass(frozen=True)
class Order2Correction:
    """Result of `correct_order2`; arrays run over the input samples."""

    distance_px: np.ndarray
    """Distance from the zeroth order along the dispersion axis, pixels (input)."""
    wavelength_nm: np.ndarray
    """First-order wavelength λ₁ at each sample, nm."""
    wavelength_order2_nm: np.ndarray
    """Second-order wavelength λ₂ landing at each sample, nm (NaN where order 2 does not
    exist)."""
    ratio_2over1: np.ndarray
    """r₂₁(λ₂) used at each sample (0 where λ₂ is outside the spectrum)."""
    dlambda1_du: np.ndarray
    """|dλ₁/du|, nm per pixel."""
    dlambda2_du: np.ndarray
    """|dλ₂/du|, nm per pixel."""
    observed_per_px: np.ndarray
    """Input flux, e⁻ per pixel of distance."""
    order2_per_px: np.ndarray
    """Second-order model, e⁻ per pixel: ``r₂₁(λ₂) F₁(λ₂) |dλ₂/du|``."""
    order2_err_per_px: np.ndarray
    """Its one-sigma error (propagated from F₁(λ₂)), e⁻ per pixel."""
    flux_per_px: np.ndarray
    """Corrected first-order flux, e⁻ per pixel."""
    flux_err_per_px: np.ndarray
    """Its one-sigma error, e⁻ per pixel."""
    iterations: int
    """Fixed-point steps done."""
    gain: np.ndarray
    """``r₂₁ J`` at each sample: contamination per nm of λ₁ per e⁻/nm at λ₂ (0 where
    λ₂ is outside the spectrum)."""

    def operator(self) -> sparse.csr_array:
        """``K`` (samples × samples, input order): the contamination per nm of λ₁ is
        ``K F₁`` with F₁ the first-order flux per nm — ``r₂₁ J`` times the linear
        interpolation of F₁ at λ₂ that `correct_order2` uses (two entries per row)."""
        lam1 = self.wavelength_nm
        n = lam1.size
        order = np.argsort(lam1)
        ls = lam1[order]
        on = self.gain > 0
        x = np.clip(np.where(on, self.wavelength_order2_nm, ls[0]), ls[0], ls[-1])
        j = np.clip(np.searchsorted(ls, x, side="right") - 1, 0, max(n - 2, 0))
        span = ls[np.minimum(j + 1, n - 1)] - ls[j]
        with np.errstate(invalid="ignore", divide="ignore"):
            w = np.where(span > 0, (x - ls[j]) / span, 0.0)
        rows = np.repeat(np.flatnonzero(on), 2)
        cols = np.stack([order[j[on]], order[np.minimum(j[on] + 1, n - 1)]], axis=1).ravel()
        vals = (self.gain[on, None] * np.stack([1.0 - w[on], w[on]], axis=1)).ravel()
        return sparse.csr_array((vals, (rows, cols)), shape=(n, n))

    @property
    def flux_per_nm(self) -> np.ndarray:
        """Corrected first-order flux, e⁻ per nm of λ₁."""
        return self.flux_per_px / self.dlambda1_du

    @property
    def flux_per_nm_err(self) -> np.ndarray:
        """Its one-sigma error, e⁻/nm."""
        return self.flux_err_per_px / self.dlambda1_du

    @property
    def order2_per_nm(self) -> np.ndarray:
        """Second-order contamination per nm of λ₁ (what it added to the observed e⁻/nm)."""
        return self.order2_per_px / self.dlambda1_du

    @property
    def order2_spectrum_per_nm(self) -> np.ndarray:
        """Second-order spectrum in e⁻ per nm of its own wavelength λ₂:
        ``r₂₁(λ₂) F₁(λ₂)``."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.dlambda2_du > 0, self.order2_per_px / self.dlambda2_du, 0.0)

    def order2_extension(self) -> ImageExtension:
        """Spectractor's ``ORDER2`` HDU: ``(3, N)`` λ₁ (increasing), the contamination in e⁻
        per nm of λ₁, its error."""
        idx = np.argsort(self.wavelength_nm)
        data = np.stack([self.wavelength_nm[idx], self.order2_per_nm[idx],
                         (self.order2_err_per_px / self.dlambda1_du)[idx]])
        from astropy.io import fits
        hdr = fits.Header()
        hdr["BUNIT"] = ("electron/nm", "order-2 flux per nm of the order-1 wavelength")
        return ImageExtension(data=data.astype(np.float64), header=hdr)


def _abs_derivative(law, u: np.ndarray, h: float = 0.5) -> np.ndarray:
    return np.abs(law(u + h) - law(u - h)) / (2.0 * h)


def correct_order2(
    distance_px: np.ndarray,
    flux_e_per_px: np.ndarray,
    flux_err: np.ndarray,
    disperser: str | Disperser,
    d2ccd_mm: float,
    pixel_mm: float,
    theta0: float = 0.0,
    *,
    at: tuple[float, float] | None = None,
    binning: int = 1,
    iterations: int = 6,
    order2_distance_px: np.ndarray | None = None,
) -> Order2Correction:
    """Remove the second order of λ/2 from a first-order spectrum.

    Parameters
    ----------
    distance_px : array_like
        Distance u from the zeroth order along the dispersion axis (> 0 for the +1 order),
        pixels; any order, not necessarily evenly spaced.
    flux_e_per_px : array_like
        Observed flux summed across the trace, e⁻ per pixel of distance (for a per-row
        extraction: e⁻/nm × |dλ₁/du|, or the per-row flux if rows and u steps are equal).
    flux_err : array_like
        Its one-sigma error, same unit.
    disperser : str or Disperser
        ``GRATING`` name or a loaded `Disperser` (law and r₂₁).
    d2ccd_mm, pixel_mm, theta0, at, binning
        Dispersion-law parameters, as `Disperser.wavelength_nm`.
    iterations : int
        Fixed-point steps.
    order2_distance_px : array_like, optional
        The distances the order-2 law sees at the same samples, when they differ from
        ``distance_px`` (the atmosphere refracts λ/2 more than λ:
        `correct_extraction`); None: ``distance_px``.

    Returns
    -------
    Order2Correction
    """
    disp = disperser if isinstance(disperser, Disperser) else load_disperser(disperser)
    u = np.asarray(distance_px, dtype=np.float64)
    obs = np.asarray(flux_e_per_px, dtype=np.float64)
    err = np.asarray(flux_err, dtype=np.float64)

    def law(m: int):
        return lambda d: disp.wavelength_nm(d, m, d2ccd_mm, pixel_mm, theta0, at=at,
                                            binning=binning)

    u2 = u if order2_distance_px is None else np.asarray(order2_distance_px, dtype=np.float64)
    lam1 = law(1)(u)
    lam2 = law(2)(u2)
    d1 = _abs_derivative(law(1), u)
    d2 = _abs_derivative(law(2), u2)
    obs_nm = obs / d1
    err_nm = err / d1
    order = np.argsort(lam1)
    ls = lam1[order]
    lo, hi = ls[0], ls[-1]
    inside = np.isfinite(lam2) & (lam2 >= lo) & (lam2 <= hi)
    ratio = np.where(inside, disp.ratio_order_2over1(np.where(inside, lam2, lo)), 0.0)
    ratio = np.clip(ratio, 0.0, None)
    gain = ratio * d2 / d1  # r₂₁ J: contamination per nm of λ₁ per e⁻/nm at λ₂
    lam2_safe = np.where(inside, lam2, lo)

    f = obs_nm.copy()
    n_done = 0
    for _ in range(max(int(iterations), 1)):
        f_new = obs_nm - gain * np.interp(lam2_safe, ls, f[order])
        change = np.nanmax(np.abs(f_new - f)) if f.size else 0.0
        f = f_new
        n_done += 1
        if change <= 1e-9 * max(float(np.nanmax(np.abs(obs_nm))), 1e-300):
            break
    contam_nm = gain * np.interp(lam2_safe, ls, f[order])
    contam_err_nm = gain * np.interp(lam2_safe, ls, err_nm[order])
    corr_err_nm = np.sqrt(err_nm**2 + contam_err_nm**2)
    return Order2Correction(
        distance_px=u, wavelength_nm=lam1, wavelength_order2_nm=lam2, ratio_2over1=ratio,
        dlambda1_du=d1, dlambda2_du=d2, observed_per_px=obs,
        order2_per_px=contam_nm * d1, order2_err_per_px=contam_err_nm * d1,
        flux_per_px=f * d1, flux_err_per_px=corr_err_nm * d1, iterations=n_done,
        gain=gain)


def correct_extraction(result, disperser: str | Disperser | None = None,
                       **kwargs) -> Order2Correction:
    """`correct_order2` on an `atmospec.spectro.extract.ExtractionResult` (optimal flux).

    The distance of each row is measured along the fitted trace as the extraction does; the
    per-row flux is converted to e⁻ per pixel of distance through the extraction's own
    e⁻/nm, so ``flux_per_nm`` is directly comparable with ``result.flux_per_nm``.
    """
    disp = disperser if isinstance(disperser, Disperser) else load_disperser(
        disperser or result.disperser, result.instrument)
    # Distances from the zeroth order as the wavelength calibration placed it.
    u = result.distance_px - result.pixel_shift
    pixel_mm = disp.instrument.pixel_size_mm(result.binning)
    at = {"at": (result.x0, result.y0), "binning": result.binning}
    d1 = _abs_derivative(
        lambda d: disp.wavelength_nm(d, result.order, result.d2ccd_mm, pixel_mm,
                                     result.theta0_rad, **at), u)
    u2 = None
    if result.refraction is not None:
        # Order 2's light at a row is λ₂ ≈ λ/2, refracted by its own amount: its law
        # sees the measured distance minus the refraction at λ₂.
        lam2 = solve_wavelength(
            lambda d: disp.wavelength_nm(d, 2 * result.order, result.d2ccd_mm, pixel_mm,
                                         result.theta0_rad, **at),
            result.measured_distance_px - result.pixel_shift, result.refraction,
            result.angle_deg)
        ok = np.isfinite(lam2)
        u2 = u + result.refraction.along_px(result.wavelength_nm, result.angle_deg)
        u2[ok] -= result.refraction.along_px(lam2[ok], result.angle_deg)
    return correct_order2(u, result.flux_per_nm * d1, result.flux_per_nm_err * d1, disp,
                          result.d2ccd_mm, pixel_mm, result.theta0_rad, **at, **kwargs,
                          order2_distance_px=u2)


def with_order2(spectrum: Spectrum, correction: Order2Correction,
                subtract: bool = True) -> Spectrum:
    """``spectrum`` (e⁻/nm, as `result_to_spectrum`, same samples as ``correction``) with the
    ``ORDER2`` extension and the contamination's error propagated into the covariance.

    ``subtract=True`` replaces the flux by the corrected one (a 1D extraction, which
    contains the order-2 light); ``False`` keeps the flux (a forward model that already
    modelled the order-2 light, `order2_image`).

    The contamination is a linear map ``K`` of the spectrum's own blue part
    (`Order2Correction.operator`), so its error is not independent of the first-order
    noise: the corrected flux is ``(I + K)⁻¹ F_obs`` (``subtract=True``) or, for a forward
    model whose background held ``K F_1D``, ``F − K F_1D`` with the 1D and 2D fluxes of the
    same photons taken as equally noisy at the scales ``K`` spreads them over (≈ 2 samples).
    The covariance becomes ``A C Aᵀ`` with ``A = (I + K)⁻¹`` or ``I − K``: besides the
    contamination's own variance at the red end it carries the negative red–blue
    correlation that a diagonal term leaves out, which matters for broadband quantities
    such as the aerosol depth.
    """
    from dataclasses import replace
    idx = np.argsort(correction.wavelength_nm)
    k = correction.operator()[idx][:, idx]
    if subtract:
        flux = correction.flux_per_nm[idx]
        a = _inverse_of_identity_plus(k)
    else:
        flux = spectrum.flux
        a = sparse.eye_array(idx.size, format="csr") - k
    cov = spectrum.covariance
    if cov is None or cov.shape != (idx.size, idx.size):
        cov = np.diag(np.asarray(spectrum.flux_err, dtype=np.float64) ** 2)
    # A C Aᵀ with A sparse: two sparse × dense products, O(nnz · N) instead of O(N³)
    ac = a @ cov
    cov = (a @ ac.T).T
    cov = 0.5 * (cov + cov.T)
    err = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    hdr = spectrum.header.copy()
    hdr["ORD2CORR"] = (True, "order-2 contamination subtracted" if subtract
                       else "order-2 light modelled in the 2D fit")
    return replace(spectrum, wavelength=correction.wavelength_nm[idx], flux=flux, flux_err=err,
                   covariance=cov, order2=correction.order2_extension(), header=hdr)


def _inverse_of_identity_plus(k: sparse.csr_array, max_terms: int = 16) -> sparse.csr_array:
    """``(I + K)⁻¹ = I − K + K² − …`` for a contamination operator: K maps λ to λ/2, so its
    powers vanish once λ/2ⁿ leaves the spectrum (K² = 0 for 350–1100 nm)."""
    out = sparse.eye_array(k.shape[0], format="csr")
    term = out
    for _ in range(max_terms):
        term = -(term @ k)
        term.eliminate_zeros()
        if term.nnz == 0:
            return out
        out = out + term
    raise ValueError("order-2 operator: the series (I + K)⁻¹ does not terminate")


def order2_image(result, correction: Order2Correction, support_fwhm: float = 3.0
                 ) -> np.ndarray:
    """The second-order light on the extraction cutout, e⁻ per pixel.

    Each row's contamination (``correction``, from `correct_extraction`) is drawn as a
    normalised circular 2D Moffat centred on the trace (order 2 of λ/2 lands where order 1
    of λ does) with the PSF of its own wavelength λ₂ — read from the extraction's PSF at the
    row where the first order has λ₂ — truncated at ``support_fwhm`` FWHM. A forward model
    given ``background + order2_image`` then fits the first order alone, with the first
    order's PSF where half of the light is order 2 (holo4_003 and HoloAmAg beyond ~850 nm).

    Parameters
    ----------
    result : atmospec.spectro.extract.ExtractionResult
        The extraction (cutout, trace, PSF per row).
    correction : Order2Correction
        `correct_extraction` of that result.
    support_fwhm : float
        Radius of the drawn PSF, in FWHM.

    Returns
    -------
    numpy.ndarray
        Image of ``result.background``'s shape.
    """
    ny, nx = result.background.shape
    c0, r0 = result.cutout_origin
    image = np.zeros((ny, nx))
    per_row = correction.order2_per_px * result.dlambda_drow / correction.dlambda1_du
    lam2 = correction.wavelength_order2_nm
    on = np.isfinite(per_row) & (per_row > 0) & np.isfinite(lam2)
    if not on.any():
        return image
    order = np.argsort(result.wavelength_nm)
    lam_sorted = result.wavelength_nm[order]
    gamma = np.interp(lam2[on], lam_sorted, result.gamma[order])
    beta = np.interp(lam2[on], lam_sorted, result.alpha[order]) + 0.5
    flux = per_row[on]
    xc = result.x_trace[on] - c0
    if result.refraction is not None:
        # Order 2's light is λ₂: its refraction bends it by its own amount across.
        xc = xc + (result.refraction.trace_offsets(lam2[on], result.angle_deg)
                   - result.trace_offset_px[on])
    rc = np.rint(result.rows[on] - r0).astype(int)
    fwhm = 2.0 * gamma * np.sqrt(2.0 ** (1.0 / beta) - 1.0)
    radius = max(math.ceil(support_fwhm * float(fwhm.max())), 1)
    cols = np.arange(nx, dtype=np.float64)
    norm = flux * (beta - 1.0) / (math.pi * gamma**2)
    for dy in range(-radius, radius + 1):
        target = rc + dy
        ok = (target >= 0) & (target < ny)
        r2 = (cols[None, :] - xc[ok, None]) ** 2 + float(dy) ** 2
        stamp = norm[ok, None] * (1.0 + r2 / gamma[ok, None] ** 2) ** (-beta[ok, None])
        stamp[r2 > (support_fwhm * fwhm[ok, None]) ** 2] = 0.0
        image[target[ok]] += stamp  # one source per row: the target rows are distinct
    return image
