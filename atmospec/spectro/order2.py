"""Second- and third-order contamination of an extracted first-order spectrum.

A disperser sends the light of λ into every order m at the distance ``u_m(λ)`` of its
dispersion law (`atmospec.spectro.dispersers`). On LATISS the orders share one trace, so
at a distance ``u`` from the zeroth order the first order of ``λ₁(u)``, the second order
of ``λ₂(u) ≈ λ₁(u)/2`` and the third of ``λ₃(u) ≈ λ₁(u)/3`` land on the same pixels; with
the extraction range 350–1100 nm the second order appears from λ₁ ≈ 700 nm, the third from
λ₁ ≈ 1050 nm. Summed across the trace, the flux per pixel of distance is::

    F_obs(u) = F₁(λ₁) |dλ₁/du| + Σ_{m=2,3} r_m1(λ_m) F₁(λ_m) |dλ_m/du|

with F₁ the true first-order e⁻ per nm, r₂₁ the disperser's order-2/order-1 ratio
(`Disperser.ratio_order_2over1`) and r₃₁ = r₂₁ · r₃₂ (`Disperser.ratio_order_3over2`; the
simulator and Spectractor draw order m as ``r_m1 · order 1``). Per nm of λ₁::

    F_obs(λ₁) = F₁(λ₁) + Σ_m r_m1(λ_m) J_m(u) F₁(λ_m),   J_m = |dλ_m/du| / |dλ₁/du| (≈ 1/m)

`correct_order2` solves this by a fixed point, ``F ← F_obs − Σ_m r_m1 J_m F(λ_m)``, with F at
λ_m interpolated in the spectrum itself. Each step multiplies the error by the ``r J`` of the
contaminating light (a few %), so it converges in a few steps; it is exact where λ_m lies
below the contamination onset (the blue part is uncontaminated) and, by recursion,
everywhere. Order 3 is modelled only for a disperser whose r₃₂ is given (holo4_003's
``ratio_order_3over2.txt``); for the others (``Disperser.has_order3`` false) nothing about it
is computed and the result is the order-2 one.

What the 1D flux holds of it. With differential refraction order m's light at a row is
λ_m, refracted more than λ₁: it lies beside the first order across the dispersion (a few
pixels at airmass 2 beyond 900 nm), where the extraction's profile weights are lower. The
1D flux then holds only a fraction ``c_m`` of it — the extraction's response to the row's
transverse profile moved to order m's centre, over its response to the same profile on the
trace (`capture_fraction`, from the extraction's own weights) — and that fraction is what
is subtracted: ``F₁ = F_obs − Σ_m c_m r_m1 J_m F₁(λ_m)``. Without refraction (or at airmass
1) the orders coincide and ``c_m = 1``. The full light (``order2_per_px``) is what the 2D
model draws (`order2_image`): it places order m where it lies.

Approximations: F₁(λ_m) is the *extracted* first-order spectrum, whose resolution in nm is
about m times coarser than order m's at λ_m (same PSF in pixels, m times the dispersion), so
the subtracted model is slightly smoother than the true contamination near strong lines; no
light is assumed below the bluest extracted wavelength (the contamination from λ_m below it
is left in: with the default 350 nm, order 3's light of 300–350 nm, which lands at
900–1050 nm, is not modelled); the transverse PSF width difference between the orders is
ignored (fluxes summed across the trace do not depend on it; ``c_m`` moves the row's own
profile).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from atmospec.spectro.adr import solve_wavelength
from atmospec.spectro.dispersers import Disperser, load_disperser
from atmospec.spectro.psf import moffat1d
from atmospec.spectro.spectrum import ImageExtension, Spectrum

__all__ = ["Order2Correction", "capture_fraction", "correct_extraction", "correct_order2",
           "order2_image", "with_order2"]

#: Contaminating orders a correction can model (order 3 where the disperser gives r₃₂).
CONTAMINATING_ORDERS = (2, 3)


@dataclass(frozen=True)
class Order2Correction:
    """Result of `correct_order2`; arrays run over the input samples. The ``order3_*``
    arrays are zero (wavelengths NaN) where order 3 is not modelled."""

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
    """Second-order model, e⁻ per pixel: ``r₂₁(λ₂) F₁(λ₂) |dλ₂/du|`` — all of its light,
    as the 2D model draws it; the 1D flux held ``capture2`` of it."""
    order2_err_per_px: np.ndarray
    """Its one-sigma error (propagated from F₁(λ₂)), e⁻ per pixel."""
    flux_per_px: np.ndarray
    """Corrected first-order flux (the captured part of orders 2 and 3 removed), e⁻ per
    pixel."""
    flux_err_per_px: np.ndarray
    """Its one-sigma error, e⁻ per pixel."""
    iterations: int
    """Fixed-point steps done."""
    gain: np.ndarray
    """``r₂₁ J₂`` at each sample: order-2 contamination per nm of λ₁ per e⁻/nm at λ₂ (0
    where λ₂ is outside the spectrum)."""
    wavelength_order3_nm: np.ndarray
    """Third-order wavelength λ₃ landing at each sample, nm (NaN where order 3 does not
    exist or is not modelled)."""
    ratio_3over1: np.ndarray
    """r₃₁ = r₂₁(λ₃) r₃₂(λ₃) used at each sample (0 where λ₃ is outside the spectrum)."""
    dlambda3_du: np.ndarray
    """|dλ₃/du|, nm per pixel (0 where order 3 is not modelled)."""
    order3_per_px: np.ndarray
    """Third-order model, e⁻ per pixel: ``r₃₁(λ₃) F₁(λ₃) |dλ₃/du|``."""
    order3_err_per_px: np.ndarray
    """Its one-sigma error, e⁻ per pixel."""
    gain3: np.ndarray
    """``r₃₁ J₃`` at each sample (0 where order 3 is absent)."""
    capture2: np.ndarray
    """Fraction of the order-2 light at each sample that the input flux held, relative to
    order 1's (`capture_fraction`; 1 where the orders coincide)."""
    capture3: np.ndarray
    """The same for order 3."""

    @property
    def has_order3(self) -> bool:
        """Whether any order-3 light was modelled on these samples."""
        return bool(np.any(self.gain3 > 0))

    def operator(self, captured: bool = True) -> sparse.csr_array:
        """``K`` (samples × samples, input order): the contamination per nm of λ₁ is
        ``K F₁`` with F₁ the first-order flux per nm — ``r_m1 J_m`` times the linear
        interpolation of F₁ at λ_m that `correct_order2` uses (two entries per row and
        contaminating order), times ``capture_m`` when ``captured`` (what the input flux
        held: the 1D subtraction) or not (all the light: the 2D model's)."""
        lam1 = self.wavelength_nm
        n = lam1.size
        order = np.argsort(lam1)
        ls = lam1[order]
        rows, cols, vals = [], [], []
        for gain, lam_m in ((self.gain * self.capture2 if captured else self.gain,
                             self.wavelength_order2_nm),
                            (self.gain3 * self.capture3 if captured else self.gain3,
                             self.wavelength_order3_nm)):
            on = gain > 0
            if not on.any():
                continue
            x = np.clip(np.where(on, lam_m, ls[0]), ls[0], ls[-1])
            j = np.clip(np.searchsorted(ls, x, side="right") - 1, 0, max(n - 2, 0))
            span = ls[np.minimum(j + 1, n - 1)] - ls[j]
            with np.errstate(invalid="ignore", divide="ignore"):
                w = np.where(span > 0, (x - ls[j]) / span, 0.0)
            rows.append(np.repeat(np.flatnonzero(on), 2))
            cols.append(np.stack([order[j[on]], order[np.minimum(j[on] + 1, n - 1)]],
                                 axis=1).ravel())
            vals.append((gain[on, None] * np.stack([1.0 - w[on], w[on]], axis=1)).ravel())
        if not rows:
            return sparse.csr_array((n, n))
        # duplicates (two orders on one sample) are summed by the constructor
        return sparse.csr_array((np.concatenate(vals), (np.concatenate(rows),
                                                        np.concatenate(cols))), shape=(n, n))

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
    def order3_per_nm(self) -> np.ndarray:
        """Third-order contamination per nm of λ₁."""
        return self.order3_per_px / self.dlambda1_du

    @property
    def order2_spectrum_per_nm(self) -> np.ndarray:
        """Second-order spectrum in e⁻ per nm of its own wavelength λ₂:
        ``r₂₁(λ₂) F₁(λ₂)``."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.dlambda2_du > 0, self.order2_per_px / self.dlambda2_du, 0.0)

    def order2_extension(self) -> ImageExtension:
        """Spectractor's ``ORDER2`` HDU: ``(3, N)`` λ₁ (increasing), the order-2
        contamination in e⁻ per nm of λ₁, its error (order 3, when modelled, is not in it:
        ``ORD3CORR`` in the header says it was removed too)."""
        idx = np.argsort(self.wavelength_nm)
        data = np.stack([self.wavelength_nm[idx], self.order2_per_nm[idx],
                         (self.order2_err_per_px / self.dlambda1_du)[idx]])
        from astropy.io import fits
        hdr = fits.Header()
        hdr["BUNIT"] = ("electron/nm", "order-2 flux per nm of the order-1 wavelength")
        return ImageExtension(data=data.astype(np.float64), header=hdr)


def _abs_derivative(law, u: np.ndarray, h: float = 0.5) -> np.ndarray:
    return np.abs(law(u + h) - law(u - h)) / (2.0 * h)


@dataclass(frozen=True)
class _Contaminant:
    """One contaminating order at the samples: its wavelength, |dλ/du| and ``r J``."""

    wavelength_nm: np.ndarray
    dlambda_du: np.ndarray
    ratio: np.ndarray
    gain: np.ndarray
    inside: np.ndarray

    @classmethod
    def absent(cls, n: int) -> _Contaminant:
        z = np.zeros(n)
        return cls(np.full(n, np.nan), z, z, z, np.zeros(n, dtype=bool))


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
    order3_distance_px: np.ndarray | None = None,
    max_order: int = 3,
    capture2: np.ndarray | None = None,
    capture3: np.ndarray | None = None,
) -> Order2Correction:
    """Remove the second order of λ/2 (and the third of λ/3) from a first-order spectrum.

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
        ``GRATING`` name or a loaded `Disperser` (law, r₂₁ and r₃₂).
    d2ccd_mm, pixel_mm, theta0, at, binning
        Dispersion-law parameters, as `Disperser.wavelength_nm`.
    iterations : int
        Fixed-point steps (a bound: the loop stops earlier once a step changes nothing).
    order2_distance_px, order3_distance_px : array_like, optional
        The distances the order-2 and order-3 laws see at the same samples, when they differ
        from ``distance_px`` (the atmosphere refracts λ/2 and λ/3 more than λ:
        `correct_extraction`); None: ``distance_px``.
    max_order : int
        Highest contaminating order modelled: 3 (order 3 where the disperser gives r₃₂,
        `Disperser.has_order3`) or 2.
    capture2, capture3 : array_like, optional
        Fraction of order 2's (3's) light at each sample that ``flux_e_per_px`` holds,
        relative to order 1's (`capture_fraction`: refraction moves it beside the
        extraction's profile); None: 1, all of it.

    Returns
    -------
    Order2Correction
    """
    if max_order not in (2, 3):
        raise ValueError(f"max_order must be 2 or 3, not {max_order}")
    disp = disperser if isinstance(disperser, Disperser) else load_disperser(disperser)
    u = np.asarray(distance_px, dtype=np.float64)
    obs = np.asarray(flux_e_per_px, dtype=np.float64)
    err = np.asarray(flux_err, dtype=np.float64)

    def law(m: int):
        return lambda d: disp.wavelength_nm(d, m, d2ccd_mm, pixel_mm, theta0, at=at,
                                            binning=binning)

    lam1 = law(1)(u)
    d1 = _abs_derivative(law(1), u)
    obs_nm = obs / d1
    err_nm = err / d1
    order = np.argsort(lam1)
    ls = lam1[order]
    lo, hi = ls[0], ls[-1]

    def contaminant(m: int, um: np.ndarray | None) -> _Contaminant:
        um = u if um is None else np.asarray(um, dtype=np.float64)
        lam = law(m)(um)
        inside = np.isfinite(lam) & (lam >= lo) & (lam <= hi)
        safe = np.where(inside, lam, lo)
        ratio = disp.ratio_order_2over1(safe)
        if m == 3:
            ratio = ratio * disp.ratio_order_3over2(safe)
        ratio = np.clip(np.where(inside, ratio, 0.0), 0.0, None)
        dm = _abs_derivative(law(m), um)
        return _Contaminant(lam, dm, ratio, ratio * dm / d1, inside)

    c2 = contaminant(2, order2_distance_px)
    c3 = (contaminant(3, order3_distance_px) if max_order >= 3 and disp.has_order3
          else _Contaminant.absent(u.size))
    zero = np.zeros_like(obs_nm)
    cap2, cap3 = _capture(capture2, u.size), _capture(capture3, u.size)

    def contamination(c: _Contaminant, f_sorted: np.ndarray) -> np.ndarray:
        if not c.inside.any():
            return zero
        return c.gain * np.interp(np.where(c.inside, c.wavelength_nm, lo), ls, f_sorted)

    f = obs_nm.copy()
    n_done = 0
    for _ in range(max(int(iterations), 1)):
        f_new = (obs_nm - cap2 * contamination(c2, f[order])
                 - cap3 * contamination(c3, f[order]))
        change = np.nanmax(np.abs(f_new - f)) if f.size else 0.0
        f = f_new
        n_done += 1
        if change <= 1e-9 * max(float(np.nanmax(np.abs(obs_nm))), 1e-300):
            break
    contam2, contam3 = contamination(c2, f[order]), contamination(c3, f[order])
    contam2_err = contamination(c2, err_nm[order])
    contam3_err = contamination(c3, err_nm[order])
    corr_err_nm = np.sqrt(err_nm**2 + (cap2 * contam2_err)**2 + (cap3 * contam3_err)**2)
    return Order2Correction(
        distance_px=u, wavelength_nm=lam1, wavelength_order2_nm=c2.wavelength_nm,
        ratio_2over1=c2.ratio, dlambda1_du=d1, dlambda2_du=c2.dlambda_du, observed_per_px=obs,
        order2_per_px=contam2 * d1, order2_err_per_px=contam2_err * d1,
        flux_per_px=f * d1, flux_err_per_px=corr_err_nm * d1, iterations=n_done,
        gain=c2.gain, wavelength_order3_nm=c3.wavelength_nm, ratio_3over1=c3.ratio,
        dlambda3_du=c3.dlambda_du, order3_per_px=contam3 * d1,
        order3_err_per_px=contam3_err * d1, gain3=c3.gain, capture2=cap2, capture3=cap3)


def _capture(capture: np.ndarray | None, n: int) -> np.ndarray:
    """A capture fraction per sample (`correct_order2`): ones when not given."""
    if capture is None:
        return np.ones(n)
    out = np.asarray(capture, dtype=np.float64)
    if out.shape != (n,):
        raise ValueError(f"capture fraction of shape {out.shape}, expected ({n},)")
    return out


def correct_extraction(result, disperser: str | Disperser | None = None,
                       **kwargs) -> Order2Correction:
    """`correct_order2` on an `atmospec.spectro.extract.ExtractionResult` (optimal flux).

    The distance of each row is measured along the fitted trace as the extraction does; the
    per-row flux is converted to e⁻ per pixel of distance through the extraction's own
    e⁻/nm, so ``flux_per_nm`` is directly comparable with ``result.flux_per_nm``. With
    refraction each contaminating order is placed with its own: its light at a row is λ/m,
    refracted more than λ, along the dispersion (its law's distance) and across it, where
    the extraction's weights caught only part of it (`capture_fraction`, when the result
    keeps its weights). ``kwargs`` go to `correct_order2` (``max_order``, ``iterations``).
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
    extra: dict[str, np.ndarray] = {}
    if result.refraction is not None:
        order = np.argsort(result.wavelength_nm)
        lam_sorted = result.wavelength_nm[order]
        lo, hi = lam_sorted[0], lam_sorted[-1]
        for m in CONTAMINATING_ORDERS:
            if m == 3 and (kwargs.get("max_order", 3) < 3 or not disp.has_order3):
                continue
            um, lam_m = _refracted_distance(result, disp, m, u, pixel_mm, at)
            extra[f"order{m}_distance_px"] = um
            if result.profile_weights is not None:
                # Where order m's light exists (its gain is zero elsewhere); the PSF of a
                # λ_m just outside the spectrum is its end's.
                on = np.isfinite(lam_m)
                safe = np.clip(np.where(on, lam_m, lo), lo, hi)
                offset = np.zeros(u.shape)
                offset[on] = (result.refraction.trace_offsets(lam_m[on], result.angle_deg)
                              - result.trace_offset_px[on])
                # its PSF where the first order has λ_m, as `order2_image` draws it
                extra[f"capture{m}"] = capture_fraction(
                    result, offset, np.interp(safe, lam_sorted, result.gamma[order]),
                    np.interp(safe, lam_sorted, result.alpha[order]), on)
    return correct_order2(u, result.flux_per_nm * d1, result.flux_per_nm_err * d1, disp,
                          result.d2ccd_mm, pixel_mm, result.theta0_rad, **at, **kwargs,
                          **extra)


def capture_fraction(result, offset_px: np.ndarray, gamma: np.ndarray | None = None,
                     alpha: np.ndarray | None = None, rows: np.ndarray | None = None
                     ) -> np.ndarray:
    """The share of a light beside the trace that the optimal 1D extraction holds.

    At each row, the extraction's response (its weights, `ExtractionResult.
    profile_weights`) to the light's transverse profile (a Moffat γ, α: the extraction's
    own profile model) centred ``offset_px`` from the trace centre, over its response to
    the same profile on the trace: 1 at zero offset, exactly (the same sums), falling as
    the light moves off the weights' core and out of the window.

    Parameters
    ----------
    result : atmospec.spectro.extract.ExtractionResult
        The extraction, with its ``profile_weights``.
    offset_px : array_like
        Offset across the dispersion (x, cutout columns) of the light's centre from the
        trace centre at each of ``result.rows``, pixels.
    gamma, alpha : array_like, optional
        The light's Moffat γ (pixels) and α at each row; default the row's own
        (``result.gamma``, ``result.alpha``). Order m's light of λ_m has the PSF the
        extraction measured where the first order has λ_m (`correct_extraction`): at the
        row itself the fit blends both orders and comes out wider.
    rows : array_like of bool, optional
        Rows to compute (the others get 1); default all.

    Returns
    -------
    numpy.ndarray
        One fraction per row (1 where the row has no usable weights).
    """
    weights = result.profile_weights
    if weights is None:
        raise ValueError("the extraction kept no profile weights")
    offset = np.asarray(offset_px, dtype=np.float64)
    on = np.ones(offset.shape, dtype=bool) if rows is None else np.asarray(rows, dtype=bool)
    out = np.ones(offset.shape)
    if not on.any():
        return out
    cols = result.cutout_origin[0] + np.arange(weights.shape[1], dtype=np.float64)
    w = weights[on]
    g = np.asarray(result.gamma if gamma is None else gamma, dtype=np.float64)[on, None]
    a = np.asarray(result.alpha if alpha is None else alpha, dtype=np.float64)[on, None]
    xc = result.x_trace[on, None]
    on_trace = np.sum(w * moffat1d(cols[None, :], 1.0, xc, g, a), axis=1)
    beside = np.sum(w * moffat1d(cols[None, :], 1.0, xc + offset[on, None], g, a), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = beside / on_trace
    out[on] = np.where(np.isfinite(frac) & (on_trace > 0), frac, 1.0)
    return out


def _refracted_distance(result, disp: Disperser, m: int, u: np.ndarray, pixel_mm: float,
                        at: dict) -> tuple[np.ndarray, np.ndarray]:
    """The distance order ``m``'s law sees at each row, and the wavelength λ_m of order
    m's light there: λ_m ≈ λ/m, refracted by its own amount, so its law sees the measured
    distance minus the refraction at λ_m (NaN where it lies well below the spectrum: none
    of its light is there, and at the ~170 nm of order 2's blue end the solve diverges —
    it gave −61 nm, whose distance landed order 2 of 373 nm on a 353 nm row)."""
    lam_m = solve_wavelength(
        lambda d: disp.wavelength_nm(d, m * result.order, result.d2ccd_mm, pixel_mm,
                                     result.theta0_rad, **at),
        result.measured_distance_px - result.pixel_shift, result.refraction,
        result.angle_deg)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(lam_m) & (lam_m >= 0.95 * np.nanmin(result.wavelength_nm))
    lam_m = np.where(ok, lam_m, np.nan)
    um = u + result.refraction.along_px(result.wavelength_nm, result.angle_deg)
    um[ok] -= result.refraction.along_px(lam_m[ok], result.angle_deg)
    return um, lam_m


def with_order2(spectrum: Spectrum, correction: Order2Correction,
                subtract: bool = True) -> Spectrum:
    """``spectrum`` (e⁻/nm, as `result_to_spectrum`, same samples as ``correction``) with the
    ``ORDER2`` extension and the contamination's error propagated into the covariance.

    ``subtract=True`` replaces the flux by the corrected one (a 1D extraction, which
    contains the order-2 and order-3 light); ``False`` keeps the flux (a forward model that
    already modelled that light, `order2_image`).

    The contamination is a linear map ``K`` of the spectrum's own blue part
    (`Order2Correction.operator`: the part the 1D flux held when ``subtract``, all of the
    light for the forward model, whose background drew it all), so its error is not
    independent of the first-order noise: the corrected flux is ``(I + K)⁻¹ F_obs``
    (``subtract=True``) or, for a forward model whose background held ``K F_1D``,
    ``F − K F_1D`` with the 1D and 2D fluxes of the same photons taken as equally noisy at
    the scales ``K`` spreads them over (≈ 2 samples). The covariance becomes ``A C Aᵀ``
    with ``A = (I + K)⁻¹`` or ``I − K``: besides the contamination's own variance at the
    red end it carries the negative red–blue correlation that a diagonal term leaves out,
    which matters for broadband quantities such as the aerosol depth.
    """
    from dataclasses import replace
    idx = np.argsort(correction.wavelength_nm)
    # the 1D flux held the captured part of the light; a 2D model's background all of it
    k = correction.operator(captured=subtract)[idx][:, idx]
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
    hdr["ORD3CORR"] = (correction.has_order3, "order-3 light (r32 table) modelled too")
    return replace(spectrum, wavelength=correction.wavelength_nm[idx], flux=flux, flux_err=err,
                   covariance=cov, order2=correction.order2_extension(), header=hdr)


def _inverse_of_identity_plus(k: sparse.csr_array, max_terms: int = 16) -> sparse.csr_array:
    """``(I + K)⁻¹ = I − K + K² − …`` for a contamination operator: K maps λ to λ/2 and λ/3,
    so its powers vanish once λ/2ⁿ leaves the spectrum (K² = 0 for 350–1100 nm)."""
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
    """The second- and third-order light on the extraction cutout, e⁻ per pixel.

    Each row's contamination of order m (``correction``, from `correct_extraction`) is drawn
    as a normalised circular 2D Moffat centred on the trace (order m of λ/m lands where
    order 1 of λ does, refracted by its own amount across) with the PSF of its own
    wavelength λ_m — read from the extraction's PSF at the row where the first order has
    λ_m — truncated at ``support_fwhm`` FWHM. A forward model given ``background +
    order2_image`` then fits the first order alone, with the first order's PSF where half
    of the light is order 2 (holo4_003 and HoloAmAg beyond ~850 nm).

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
    image = np.zeros(result.background.shape)
    for per_px, lam_m in ((correction.order2_per_px, correction.wavelength_order2_nm),
                          (correction.order3_per_px, correction.wavelength_order3_nm)):
        per_row = per_px * result.dlambda_drow / correction.dlambda1_du
        _draw_order(image, result, per_row, lam_m, support_fwhm)
    return image


def _draw_order(image: np.ndarray, result, per_row: np.ndarray, lam_m: np.ndarray,
                support_fwhm: float) -> None:
    """Add one contaminating order's light (e⁻ per row, at wavelengths ``lam_m``) to
    ``image`` (`order2_image`)."""
    ny, nx = image.shape
    c0, r0 = result.cutout_origin
    on = np.isfinite(per_row) & (per_row > 0) & np.isfinite(lam_m)
    if not on.any():
        return
    order = np.argsort(result.wavelength_nm)
    lam_sorted = result.wavelength_nm[order]
    gamma = np.interp(lam_m[on], lam_sorted, result.gamma[order])
    beta = np.interp(lam_m[on], lam_sorted, result.alpha[order]) + 0.5
    flux = per_row[on]
    xc = result.x_trace[on] - c0
    if result.refraction is not None:
        # Order m's light is λ_m: its refraction bends it by its own amount across.
        xc = xc + (result.refraction.trace_offsets(lam_m[on], result.angle_deg)
                   - result.trace_offset_px[on])
    rc = np.rint(result.rows[on] - r0).astype(int)
    fwhm = 2.0 * gamma * np.sqrt(2.0 ** (1.0 / beta) - 1.0)
    radius = max(math.ceil(support_fwhm * float(fwhm.max())), 1)
    # Each source's columns within the disc (not the cutout's whole width): the PSF is
    # evaluated on the pixels it reaches only.
    cols = (np.rint(xc).astype(int) - radius - 1)[:, None] + np.arange(2 * radius + 3)
    in_cut = (cols >= 0) & (cols < nx)
    norm = flux * (beta - 1.0) / (math.pi * gamma**2)
    limit2 = (support_fwhm * fwhm[:, None]) ** 2
    # Every source's window row at once, the power only where the disc reaches (``where``),
    # added to an image padded to hold every window (rows and columns off the cutout get
    # zeros, then are cut away): no gathering of the drawn pixels' parameters, and the same
    # numbers, added in the same order, as drawing them one by one. Each row of the cutout
    # holds one source and a window's columns are distinct: no pixel is indexed twice.
    c_pad = max(0, -int(cols.min()))
    padded = np.zeros((ny + 2 * radius, max(nx, int(cols.max()) + 1) + c_pad))
    padded[radius:radius + ny, c_pad:c_pad + nx] = image
    cols_pad = cols + c_pad
    neg_beta = -beta[:, None]
    gamma2 = (gamma**2)[:, None]
    dxx = (cols - xc[:, None]) ** 2
    base = np.empty(cols.shape)
    stamp = np.empty(cols.shape)
    for dy in range(-radius, radius + 1):
        target = rc + dy
        r2 = dxx + float(dy) ** 2
        drawn = in_cut & (r2 <= limit2) & ((target >= 0) & (target < ny))[:, None]
        np.divide(r2, gamma2, out=base)
        base += 1.0
        stamp[...] = 0.0
        np.power(base, neg_beta, out=stamp, where=drawn)
        stamp *= norm[:, None]
        padded[(target + radius)[:, None], cols_pad] += stamp
    image[:] = padded[radius:radius + ny, c_pad:c_pad + nx]
