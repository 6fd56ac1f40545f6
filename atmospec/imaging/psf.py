"""PSF figures from bright, isolated, unsaturated stars: elliptical Moffat fits.

The model of one star is

    I(x, y) = A · (1 + Q)^(-β) + B,   Q = (l₁ dx + l₂ dy)² + (l₃ dy)²

with ``dx = x - x₀``, ``dy = y - y₀``: the quadratic form ``Q = dᵀ M d`` is written through
its Cholesky factor ``M = L Lᵀ``, ``L = [[l₁, 0], [l₂, l₃]]``, which keeps ``M`` positive
definite without constraints and, unlike semi-axes and an angle, stays well defined for a
round PSF (no degenerate angle). The eigenvalues ``λ`` of ``M`` give the Moffat widths
``α = λ^(-1/2)`` along the principal axes, hence

    FWHM = 2 α sqrt(2^(1/β) - 1)

along each axis; the star's FWHM is the geometric mean of the two (the FWHM of the round
profile of the same area), the ellipticity is ``1 - α_minor / α_major`` (photutils'
definition) and the position angle is that of the major axis, counter-clockwise from +x,
in (-90°, 90°].

The model is evaluated at pixel centres; integrating it over the pixels would widen a
10-pixel FWHM by about 0.2 %. Each fit is MINPACK's Levenberg-Marquardt
(`_minpack_fit`, analytic Jacobian) on a square stamp weighted by the inverse
variance, with masked pixels and pixels of other sources given zero weight: about a
millisecond per star. Outliers in FWHM or ellipticity (a faint companion, the halo of a
saturated star) are dropped before the robust summary (`reject_outliers`).

`fit_blend` uses the summary PSF, shape held fixed, to place the stars of one blend
together.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import leastsq
from scipy.spatial import cKDTree

from atmospec.imaging.photometry import gather_stamps
from atmospec.stats import robust_sigma

log = logging.getLogger(__name__)

__all__ = [
    "MoffatFit",
    "PsfConfig",
    "fit_blend",
    "fit_moffat",
    "moffat_fwhm",
    "psf_quadratic_form",
    "reject_outliers",
    "select_psf_stars",
    "summarize_psf",
]


@dataclass(frozen=True)
class PsfConfig:
    """Selection of PSF stars and the Moffat fits."""

    max_stars: int = 40
    """Largest number of stars fitted (the highest-S/N candidates)."""
    min_snr: float = 50.0
    """Minimum S/N of a candidate (segment flux over its error)."""
    isolation_fwhm: float = 3.0
    """No other detected source within this many FWHM."""
    edge_fwhm: float = 2.0
    """Stars closer than this many FWHM to an image edge are not used."""
    half_size_fwhm: float = 2.0
    """Half-size of the fitted stamp, in FWHM."""
    fit_beta: bool = True
    """Fit the Moffat index; if false it is held at `beta`."""
    beta: float = 3.0
    """Starting (or fixed) Moffat index."""
    max_chi2: float = 5.0
    """Fits with a larger reduced χ² are rejected (residual neighbours, cosmic rays)."""
    max_masked_fraction: float = 0.02
    """Candidates with more masked pixels than this fraction of their stamp are skipped."""
    clip_nsigma: float = 4.0
    """Good fits whose FWHM or ellipticity lie further than this many robust σ from the
    median of the good fits are rejected (a faint companion, a bright star's halo)."""


@dataclass
class MoffatFit:
    """Result of the Moffat fits of a set of stars (one entry per star; NaN where the fit
    failed)."""

    x: np.ndarray
    """Fitted centre, pixels."""
    y: np.ndarray
    """Fitted centre, pixels."""
    amplitude: np.ndarray
    """Peak above the local background, image units."""
    fwhm: np.ndarray
    """Geometric-mean FWHM, pixels."""
    fwhm_major: np.ndarray
    """FWHM along the major axis, pixels."""
    fwhm_minor: np.ndarray
    """FWHM along the minor axis, pixels."""
    ellipticity: np.ndarray
    """``1 - minor / major``."""
    orientation: np.ndarray
    """Position angle of the major axis, degrees counter-clockwise from +x, (-90, 90]."""
    beta: np.ndarray
    """Moffat index."""
    chi2: np.ndarray
    """Reduced χ²."""
    ok: np.ndarray
    """bool: the fit converged and passed the quality cuts."""

    @classmethod
    def empty(cls, n: int) -> MoffatFit:
        """``n`` failed fits (NaN everywhere)."""
        return cls(*(np.full(n, np.nan) for _ in range(10)), ok=np.zeros(n, dtype=bool))


def moffat_fwhm(alpha: np.ndarray | float, beta: np.ndarray | float) -> np.ndarray:
    """FWHM of a Moffat profile of core width ``alpha`` and index ``beta``."""
    return 2.0 * np.asarray(alpha) * np.sqrt(2.0 ** (1.0 / np.asarray(beta)) - 1.0)


def select_psf_stars(
    x: np.ndarray,
    y: np.ndarray,
    snr: np.ndarray,
    usable: np.ndarray,
    shape: tuple[int, int],
    fwhm_px: float,
    config: PsfConfig = PsfConfig(),
) -> np.ndarray:
    """Indices of the stars to fit, highest S/N first.

    Parameters
    ----------
    x, y : numpy.ndarray
        Positions of *all* detected sources (isolation is judged against all of them).
    snr : numpy.ndarray
        S/N of each source.
    usable : numpy.ndarray
        bool: the source may be used (not saturated, not blended, not masked...).
    shape : tuple of int
        Image shape.
    fwhm_px : float
        FWHM guess, pixels.
    config : PsfConfig
        Cuts.

    Returns
    -------
    numpy.ndarray
        Indices into ``x``.
    """
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=int)
    ok = usable & np.isfinite(snr) & (snr >= config.min_snr)
    margin = config.edge_fwhm * fwhm_px
    ny, nx = shape
    ok &= (x >= margin) & (x <= nx - 1 - margin) & (y >= margin) & (y <= ny - 1 - margin)
    if n > 1:
        dist, _ = cKDTree(np.column_stack([x, y])).query(np.column_stack([x, y]), k=2)
        ok &= dist[:, 1] > config.isolation_fwhm * fwhm_px
    idx = np.flatnonzero(ok)
    idx = idx[np.argsort(-snr[idx], kind="stable")]
    return idx[: config.max_stars]


class _Memo:
    """A model-and-Jacobian function that remembers its last evaluation: the solver asks
    for the residuals and then the Jacobian at the same parameters, which one evaluation
    gives (half the model evaluations of the PSF and blend fits)."""

    def __init__(self, func: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> None:
        self.func = func
        self.p: np.ndarray | None = None
        self.value: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.value is None or self.p is None or not np.array_equal(p, self.p):
            self.value = self.func(p)
            self.p = np.array(p, copy=True)
        return self.value


def _minpack_fit(
    residuals: Callable[[np.ndarray], np.ndarray],
    jacobian: Callable[[np.ndarray], np.ndarray],
    p0: np.ndarray,
    max_nfev: int,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Unbounded least squares by MINPACK's ``lmder``, as
    ``scipy.optimize.least_squares(method="lm", x_scale="jac")`` runs it.

    The same routine with the same tolerances (1e-8), step bound and scaling, hence the
    same iterates, reached through `scipy.optimize.leastsq`: ``least_squares`` wraps the
    functions in objects that copy the parameters and the Jacobian at every call (~0.3 ms
    a fit, 15 % of a PSF star's). Not `atmospec.fitting.levenberg_marquardt`, the
    project's solver on normal equations: these fits keep MINPACK's iterates, so their
    results are those of the ``least_squares`` call they replace, to the bit.

    Parameters
    ----------
    residuals : callable
        ``residuals(p)``: the weighted residuals, shape ``(m,)``.
    jacobian : callable
        ``jacobian(p)``: their derivatives, one row per parameter, shape ``(n, m)`` (the
        layout MINPACK takes without a transposed copy; rows are written faster too).
    p0 : numpy.ndarray
        Start, shape ``(n,)``.
    max_nfev : int
        Largest number of evaluations of ``residuals``.

    Returns
    -------
    p : numpy.ndarray
        Solution.
    fun : numpy.ndarray
        The residuals there.
    success : bool
        A convergence test was met (not the evaluation limit).

    Raises
    ------
    ValueError
        If the residuals are not finite at the start or fewer than the parameters (as
        ``least_squares`` raises).
    """
    p0 = np.atleast_1d(p0).astype(float)
    f0 = np.atleast_1d(residuals(p0))
    if not np.all(np.isfinite(f0)):
        raise ValueError("residuals are not finite at the start")
    if f0.size < p0.size:
        raise ValueError("fewer residuals than parameters")
    p, _, info, _, status = leastsq(residuals, p0, Dfun=jacobian, full_output=True,
                                    col_deriv=True, ftol=1e-8, xtol=1e-8, gtol=1e-8,
                                    maxfev=max_nfev, factor=100.0, diag=None)
    return p, info["fvec"], status in (1, 2, 3, 4)


def _model_and_jacobian(p: np.ndarray, dx0: np.ndarray, dy0: np.ndarray,
                        fit_beta: bool, beta0: float) -> tuple[np.ndarray, np.ndarray]:
    """Moffat model on the stamp and its Jacobian (one row per parameter, in order)."""
    amp, x0, y0, bkg, l1, l2, l3 = p[:7]
    beta = p[7] if fit_beta else beta0
    dx = dx0 - x0
    dy = dy0 - y0
    s = l1 * dx + l2 * dy
    t = l3 * dy
    u = 1.0 + s * s + t * t
    ub = u ** (-beta)
    model = amp * ub + bkg
    g = -beta * amp * ub / u  # d model / d Q
    cols = [
        ub,                               # amplitude
        g * (-2.0 * s * l1),              # x0
        g * (-2.0 * s * l2 - 2.0 * t * l3),  # y0
        np.ones_like(u),                  # background
        g * 2.0 * s * dx,                 # l1
        g * 2.0 * s * dy,                 # l2
        g * 2.0 * t * dy,                 # l3
    ]
    if fit_beta:
        cols.append(-amp * ub * np.log(u))
    return model, np.array(cols)


def fit_moffat(
    data: np.ndarray,
    variance: np.ndarray,
    masked: np.ndarray,
    segmentation: np.ndarray | None,
    labels: np.ndarray | None,
    x: np.ndarray,
    y: np.ndarray,
    fwhm_px: float,
    config: PsfConfig = PsfConfig(),
) -> MoffatFit:
    """Fit an elliptical Moffat profile to each star.

    Parameters
    ----------
    data : numpy.ndarray
        Background-subtracted image.
    variance : numpy.ndarray
        Per-pixel variance (the exposure's VARIANCE plane); where it is not positive the
        model itself plus the median positive variance stands in.
    masked : numpy.ndarray
        bool: pixels given zero weight. A star whose stamp has more than
        `PsfConfig.max_masked_fraction` of them is not fitted.
    segmentation : numpy.ndarray, optional
        Segmentation labels: pixels of other sources get zero weight.
    labels : numpy.ndarray, optional
        Label of each star in ``segmentation``.
    x, y : numpy.ndarray
        Starting centres.
    fwhm_px : float
        Starting FWHM, pixels; sets the stamp size.
    config : PsfConfig
        Stamp size, Moffat index, quality cuts.

    Returns
    -------
    MoffatFit
    """
    n = len(x)
    out = MoffatFit.empty(n)
    if n == 0:
        return out
    half = max(math.ceil(config.half_size_fwhm * fwhm_px), 4)
    stamps, xs, ys, inside = gather_stamps(data, x, y, half)
    var, *_ = gather_stamps(variance, x, y, half, fill=np.inf)
    bad, *_ = gather_stamps(masked, x, y, half, fill=True)
    bad = bad.astype(bool) | ~np.isfinite(stamps)
    masked_fraction = bad.mean(axis=(1, 2))
    if segmentation is not None and labels is not None:
        seg, *_ = gather_stamps(segmentation, x, y, half)
        own = np.asarray(labels)[:, None, None]
        bad |= (seg != 0) & (seg != own)
    positive = variance[::8, ::8]
    positive = positive[positive > 0]
    var_floor = float(np.median(positive)) if positive.size else 1.0
    var = np.where(np.isfinite(var) & (var > 0), var, var_floor + np.maximum(stamps, 0))
    alpha0 = fwhm_px / (2.0 * math.sqrt(2.0 ** (1.0 / config.beta) - 1.0))
    for k in range(n):
        valid = inside[k] & ~bad[k]
        if valid.sum() < 20 or masked_fraction[k] > config.max_masked_fraction:
            continue
        w = np.where(valid, 1.0 / np.sqrt(var[k]), 0.0).ravel()
        img = np.where(valid, stamps[k], 0.0).astype(float).ravel()
        dx0 = np.broadcast_to(xs[k], stamps[k].shape).astype(float).ravel()
        dy0 = np.broadcast_to(ys[k], stamps[k].shape).astype(float).ravel()
        peak = float(np.max(img[valid.ravel()]))
        p0 = [max(peak, 1e-3), float(x[k]), float(y[k]), 0.0, 1.0 / alpha0, 0.0, 1.0 / alpha0]
        if config.fit_beta:
            p0.append(config.beta)

        evaluate = _Memo(lambda p, dx0=dx0, dy0=dy0: _model_and_jacobian(
            p, dx0, dy0, config.fit_beta, config.beta))

        def resid(p, img=img, w=w, evaluate=evaluate):
            return (evaluate(p)[0] - img) * w

        def jac(p, w=w, evaluate=evaluate):
            return evaluate(p)[1] * w

        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                # Levenberg-Marquardt from a close start: bounds are checked afterwards.
                p, fun, success = _minpack_fit(resid, jac, np.asarray(p0), 200)
            except (ValueError, np.linalg.LinAlgError) as exc:
                log.debug("Moffat fit of star %d failed: %s", k, exc)
                continue
        dof = max(int(valid.sum()) - len(p), 1)
        chi2 = float(np.sum(fun**2) / dof)
        l1, l2, l3 = p[4:7]
        m = np.array([[l1 * l1, l1 * l2], [l1 * l2, l2 * l2 + l3 * l3]])
        lam, vec = np.linalg.eigh(m)  # ascending: lam[0] belongs to the major axis
        beta = float(p[7]) if config.fit_beta else config.beta
        if not (success and np.all(lam > 0) and p[0] > 0 and 1.01 <= beta <= 20.0):
            continue
        a_major, a_minor = 1.0 / math.sqrt(lam[0]), 1.0 / math.sqrt(lam[1])
        angle = math.degrees(math.atan2(vec[1, 0], vec[0, 0]))
        angle = (angle + 90.0) % 180.0 - 90.0
        if angle == -90.0:
            angle = 90.0
        f_major = float(moffat_fwhm(a_major, beta))
        f_minor = float(moffat_fwhm(a_minor, beta))
        out.x[k], out.y[k], out.amplitude[k] = p[1], p[2], p[0]
        out.fwhm[k] = math.sqrt(f_major * f_minor)
        out.fwhm_major[k], out.fwhm_minor[k] = f_major, f_minor
        out.ellipticity[k] = 1.0 - a_minor / a_major
        out.orientation[k] = angle
        out.beta[k] = beta
        out.chi2[k] = chi2
        shift = math.hypot(p[1] - x[k], p[2] - y[k])
        out.ok[k] = (chi2 <= config.max_chi2 and shift < 0.5 * fwhm_px
                     and 0.25 * fwhm_px < out.fwhm[k] < 4.0 * fwhm_px)
    return out


def reject_outliers(fit: MoffatFit, nsigma: float) -> int:
    """Clear ``fit.ok`` (in place) for stars whose FWHM or ellipticity is an outlier.

    The scatter is `atmospec.stats.robust_sigma` of the good fits, floored at 0.5 % of the
    median FWHM and 0.005 in ellipticity so that a very uniform set keeps its members.

    Returns
    -------
    int
        Number of stars rejected.
    """
    ok = fit.ok & np.isfinite(fit.fwhm) & np.isfinite(fit.ellipticity)
    if ok.sum() < 5:
        return 0
    rejected = np.zeros_like(ok)
    for values, floor in ((fit.fwhm, 0.005 * float(np.median(fit.fwhm[ok]))),
                          (fit.ellipticity, 0.005)):
        median = float(np.median(values[ok]))
        scatter = max(float(robust_sigma(values[ok])), floor)
        rejected |= ok & (np.abs(values - median) > nsigma * scatter)
    fit.ok &= ~rejected
    return int(rejected.sum())


def summarize_psf(fit: MoffatFit) -> dict[str, float]:
    """Robust summary of the PSF over the good fits.

    The FWHM (pixels), ellipticity and Moffat index are medians over the stars. The
    position angle is axial (defined modulo 180°), so it is taken from the median of the
    ellipticity components ``e cos 2θ`` and ``e sin 2θ``.

    Returns
    -------
    dict
        ``fwhm_px``, ``ellipticity``, ``position_angle_deg``, ``beta``, ``n_stars``
        (NaN figures when no fit is good).
    """
    ok = fit.ok & np.isfinite(fit.fwhm)
    n = int(ok.sum())
    if n == 0:
        return {"fwhm_px": math.nan, "ellipticity": math.nan,
                "position_angle_deg": math.nan, "beta": math.nan, "n_stars": 0}
    theta = np.radians(fit.orientation[ok])
    e = fit.ellipticity[ok]
    e1 = float(np.median(e * np.cos(2 * theta)))
    e2 = float(np.median(e * np.sin(2 * theta)))
    angle = 0.5 * math.degrees(math.atan2(e2, e1))
    return {
        "fwhm_px": float(np.median(fit.fwhm[ok])),
        "ellipticity": float(np.median(e)),
        "position_angle_deg": angle,
        "beta": float(np.median(fit.beta[ok])),
        "n_stars": n,
    }


def psf_quadratic_form(fwhm_px: float, ellipticity: float, angle_deg: float,
                       beta: float) -> np.ndarray:
    """Matrix ``M`` of the Moffat profile ``(1 + dᵀ M d)^-β`` with the given figures."""
    e = ellipticity if np.isfinite(ellipticity) else 0.0
    theta = math.radians(angle_deg) if np.isfinite(angle_deg) else 0.0
    alpha = fwhm_px / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    a_major = alpha / math.sqrt(max(1.0 - e, 1e-3))
    a_minor = alpha * math.sqrt(max(1.0 - e, 1e-3))
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    return rot @ np.diag([a_major**-2, a_minor**-2]) @ rot.T


def fit_blend(
    data: np.ndarray,
    variance: np.ndarray,
    masked: np.ndarray,
    box: tuple[slice, slice],
    x: np.ndarray,
    y: np.ndarray,
    form: np.ndarray,
    beta: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Joint fit of the stars of one blend with a fixed PSF: positions and amplitudes.

    Every star is ``A_k (1 + d_kᵀ M d_k)^-β`` with the exposure's PSF shape (``M``,
    ``β``), on a common constant background; fitting them together removes the pull of
    each star's neighbours on its position, which no single-star centroid can.

    Parameters
    ----------
    data, variance : numpy.ndarray
        Background-subtracted image and its variance.
    masked : numpy.ndarray
        bool: pixels given zero weight.
    box : tuple of slice
        Region fitted (the blend's footprint with a margin).
    x, y : numpy.ndarray
        Starting positions of the stars (full-image pixel coordinates).
    form : numpy.ndarray
        ``(2, 2)`` quadratic form of the PSF (`psf_quadratic_form`).
    beta : float
        Moffat index.

    Returns
    -------
    x, y, amplitude : numpy.ndarray
        Fitted positions and peak amplitudes.
    ok : bool
        The fit converged.
    """
    img = np.asarray(data[box], dtype=float)
    var = np.asarray(variance[box], dtype=float)
    valid = ~masked[box] & np.isfinite(img) & np.isfinite(var) & (var > 0)
    n = len(x)
    if valid.sum() < 4 * n + 1:
        return x, y, np.full(n, np.nan), False
    yy, xx = np.nonzero(valid)
    px = xx + box[1].start
    py = yy + box[0].start
    values = img[valid]
    w = 1.0 / np.sqrt(var[valid])
    m11, m12, m22 = form[0, 0], form[0, 1], form[1, 1]

    def model(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        amp, cx, cy, bkg = p[0:n], p[n:2 * n], p[2 * n:3 * n], p[3 * n]
        dx = px[None, :] - cx[:, None]
        dy = py[None, :] - cy[:, None]
        u = 1.0 + m11 * dx * dx + 2.0 * m12 * dx * dy + m22 * dy * dy
        ub = u ** (-beta)
        g = 2.0 * beta * amp[:, None] * ub / u
        # One row per parameter (`_minpack_fit`): written whole, not by columns.
        jac = np.empty((3 * n + 1, len(values)))
        jac[0:n] = ub
        np.multiply(g, m11 * dx + m12 * dy, out=jac[n:2 * n])
        np.multiply(g, m12 * dx + m22 * dy, out=jac[2 * n:3 * n])
        jac[3 * n] = 1.0
        return (amp[:, None] * ub).sum(axis=0) + bkg, jac

    ix = np.clip(np.rint(x).astype(int) - box[1].start, 0, img.shape[1] - 1)
    iy = np.clip(np.rint(y).astype(int) - box[0].start, 0, img.shape[0] - 1)
    amp0 = np.maximum(img[iy, ix], 1e-3)
    p0 = np.concatenate([amp0, x, y, [0.0]])
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            # Levenberg-Marquardt (MINPACK): no bounds needed from a good start, and much
            # cheaper per iteration than the bounded trust-region solver.
            evaluate = _Memo(model)
            p, _, success = _minpack_fit(
                lambda p: (evaluate(p)[0] - values) * w, lambda p: evaluate(p)[1] * w, p0, 100)
        except (ValueError, np.linalg.LinAlgError) as exc:
            log.debug("blend fit failed: %s", exc)
            return x, y, np.full(n, np.nan), False
    ok = success and bool(np.all(p[0:n] > 0))
    return p[n:2 * n], p[2 * n:3 * n], p[0:n], ok
