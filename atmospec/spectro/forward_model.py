"""2D forward model of a first-order slitless spectrogram (Spectractor's PSF2D / "FFM").

The 1D extraction (`atmospec.spectro.extract`) treats every row of the cutout on its own:
its flux per row is the spectrum *convolved* with the along-trace profile of the PSF, so
narrow lines come out shallower than they are. Here the whole cutout is modelled at once,

    M(r, c) = B(r, c) + Σ_i A_i · P(c − x_c(ρ_i), r − ρ_i; γ(ρ_i), β(ρ_i)),

one point source per cutout row ρ_i (every row of the cutout, also those the 1D result left
out), ``B`` the 1D background and ``P`` a circular 2D Moffat
``(β − 1)/(π γ²) · (1 + (dx² + dy²)/γ²)^(−β)`` **sampled at pixel centres and normalised by
its analytic integral**, truncated to a disc of radius ``support_fwhm × FWHM``. For the
FWHM of 5–11 px of LATISS the samples sum to the integral to < 10⁻⁴, so ``A_i`` is the
total flux of row ρ_i in e⁻, the quantity of ``ExtractionResult.flux_e`` (the light beyond
the disc, ~1 % at 3 FWHM for β = 3, is in ``A_i`` but not in the model image). The 1D
profile ``(1 + x²/γ²)^(−α)`` is this PSF's marginal with ``α = β − ½``: the shape is
parametrised by γ and this α, as in the 1D result.

**Linear amplitudes.** For given shape parameters the ``A_i`` minimise
``χ² + μ Σ_i (A_i − A⁰_i)² / σ⁰_i²`` with ``χ² = Σ W (D − M)²`` (W = 1/VARIANCE, 0 on
masked pixels and outliers) and ``A⁰, σ⁰`` the 1D (Horne) extraction redone with the 2D
fit's pixel mask: the normal matrix ``N = Mᵀ W M`` is banded (sources further apart than
the PSF diameter do not overlap) and is assembled row by row of the image with batched
matrix products, a chunk of rows at a time while the chunk's PSF is in the CPU cache
(`_NormalSum`; masking a few outlier pixels sums again only the columns their rows reach,
`_renormal`), then solved by a banded Cholesky (`scipy.linalg.cholesky_banded`).

*Why this regulariser.* The deconvolution is ill-posed only for the high along-trace
frequencies the PSF wipes out; a ridge toward the 1D extraction fills exactly those modes
with the 1D values (for a smooth spectrum the 1D flux per row *is* the deconvolved flux, at
a line it is the blurred one), and leaves the well-measured modes to the data, so lines
come out at least as deep as in 1D for any μ. A smoothness (second-difference) operator
toward zero would instead flatten lines as μ grows. Redoing the prior with the 2D mask
keeps cosmic-ray residue that the 1D extraction missed out of it.

*Choice of μ.* Generalised cross-validation over the pixels,
``GCV(μ) = n_pix χ²(μ) / (n_pix − τ(μ))²`` with τ the trace of the influence matrix. The
prior is a linear function of the same data (``A⁰ = H D``), so τ includes that path:
``τ = tr[(N + μQ)⁻¹ (N + μ Q G)]`` with ``G = H M`` (the 1D extraction of each unit
source, banded). It is minimised over log μ (bounded Brent); the banded inverse needed for
the trace comes from a block-tridiagonal recursion (blocks of the band width), O(n·band²).

**Covariance.** ``A = K D`` with ``K = (N + μQ)⁻¹ (Mᵀ W + μ Q H)``, so (shape parameters
held fixed) ``Cov(A) = C X C`` with ``C = (N + μQ)⁻¹`` and
``X = N + μ (Gᵀ Q + Q G) + μ² Q Σ⁰ Q`` (Σ⁰ = diag σ⁰², the 1D rows being independent).
That is exact for the estimator used, including the prior's correlation with the data
(neglecting it, as ``C N C`` would, underestimates the scatter of the modes the prior
fills). The diagonal is computed in the fit; the dense matrix on demand.

**Shape parameters.** γ, α and x_c are Legendre polynomials in the normalised row (x_c
plus the fixed bend of the atmosphere's differential refraction that the 1D extraction
modelled, `atmospec.spectro.extract.ExtractionResult.trace_offset_px`); they
are fitted by variable projection: Levenberg–Marquardt (`atmospec.fitting`) on the
regularised χ² after the linear solve, starting from the 1D result, with analytic PSF
derivatives. The gradient is the exact one of the projected objective (``∂M/∂θ · A`` with A
held fixed, A being optimal); the Gauss–Newton matrix uses Kaufman's projected Jacobian
``(1 − M (N + μQ)⁻¹ Mᵀ W) ∂M/∂θ · A`` — the part of a shape change the amplitudes cannot
absorb — without which the steps are far too short (γ trades with the amplitudes).

**Outliers.** Strong spikes (> 2 × ``clip_sigma``) are first masked on the starting model,
so that μ is not chosen to follow them; after each fit, pixels with
``|D − M|/σ > clip_sigma`` are masked and the prior and amplitudes redone (μ and the
shapes too when more than ``refit_fraction`` of the pixels were newly masked), at most
``clip_iterations`` times. χ² and ndof count the unmasked pixels of the PSF windows
(``2R + 3`` columns around the trace, R the PSF radius); ndof subtracts the effective
number of amplitudes τ and the shape parameters.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from numpy.polynomial import legendre
from scipy.linalg import cho_solve_banded, cholesky_banded
from scipy.optimize import minimize_scalar

from atmospec.errors import BadInputError, ProcessingError
from atmospec.exposure import Exposure
from atmospec.fitting import (
    LevenbergMarquardtConfig,
    NormalEquations,
    levenberg_marquardt,
)
from atmospec.spectro.extract import ExtractionResult, horne_profile
from atmospec.spectro.psf import moffat1d_fwhm

__all__ = ["ForwardModelConfig", "ForwardModelResult", "ForwardModelTimeout", "PsfTooWide",
           "fit_forward_model",
           "moffat2d_fwhm", "psf_radius"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ForwardModelConfig:
    """Settings of `fit_forward_model`."""

    support_fwhm: float = 3.0
    """Radius of the disc the 2D PSF is truncated to, in units of the largest starting
    2D FWHM (β = 3 leaves ~1 % of the flux outside 3 FWHM; it stays in the amplitudes)."""
    max_radius_px: int = 60
    """Largest PSF radius drawn, pixels: the model's cost grows faster than the square of
    the radius (2147 rows of a 4k LATISS frame, one core, CPU with the dense covariance:
    28 px 0.7 s, 43 px 1.4 s, 69 px 3.8 s). A wider ``support_fwhm`` disc is cut to this
    radius."""
    min_support_fwhm: float = 2.0
    """Fewest FWHM the disc must still span once cut to `max_radius_px` (β = 3 leaves ~4 %
    of the flux beyond 2 FWHM); a wider PSF raises `PsfTooWide` (the chain then keeps the
    1D extraction)."""
    gamma_degree: int = 3
    """Degree of the Legendre polynomial of γ(row)."""
    alpha_degree: int = 2
    """Degree of the polynomial of α(row) (the 1D-marginal index; β = α + ½)."""
    centre_degree: int = 2
    """Degree of the polynomial of the trace centre x_c(row)."""
    regularisation: float | None = None
    """Fixed μ of the Tikhonov term; None: chosen by generalised cross-validation."""
    log10_mu_bounds: tuple[float, float] = (-5.0, 2.0)
    """Search interval of log10 μ for the cross-validation."""
    log10_mu_tolerance: float = 0.1
    """Precision of the cross-validated log10 μ."""
    clip_sigma: float = 5.0
    """Pixels with ``|data − model| / σ`` above this are masked as outliers."""
    clip_iterations: int = 3
    """Refits after outlier masking, at most (stops early when no new pixel is masked)."""
    max_iterations: int = 12
    """Levenberg–Marquardt iterations per fit of the shape parameters, at most."""
    max_seconds: float = 60.0
    """Wall-time bound of the whole fit, s: past it `ForwardModelTimeout` is raised (the
    chain then keeps the 1D extraction, flagged). A spectrogram of a few narrow emission
    lines can make each evaluation slow; at the default settings a full-frame LATISS
    spectrogram (2147 rows) takes 0.7 s of CPU with its dense covariance at 0.85″ seeing
    (PSF radius 28 px), 1.4 s at 1.3″ (43 px)."""
    tolerance: float = 0.05
    """The shape fit stops when an accepted step lowers the regularised χ² by less than
    this (a shift of the shape parameters well below their errors)."""
    refit_fraction: float = 1e-3
    """After outlier masking the shapes are refitted only if this fraction of the modelled
    pixels was newly masked (otherwise only the amplitudes are redone)."""
    fit_shape: bool = True
    """Fit γ, α, x_c (False: keep the 1D result's, solve only the amplitudes)."""
    gamma_bounds: tuple[float, float] = (0.5, 60.0)
    """Clip of γ(row), pixels: keeps the PSF away from degenerate shapes."""
    alpha_bounds: tuple[float, float] = (0.7, 20.0)
    """Clip of α(row) (β − ½ must stay above ½ for a finite integral)."""
    min_good_fraction: float = 0.3
    """Least fraction of usable pixels in the band one (1D) FWHM wide centred on the trace;
    fewer raise `BadInputError`."""

    def __post_init__(self) -> None:
        if not (self.max_seconds > 0 and self.max_iterations >= 0
                and self.clip_iterations >= 0):
            raise ValueError("ForwardModelConfig: max_seconds must be > 0, max_iterations "
                             "and clip_iterations >= 0")


@dataclass(frozen=True)
class ForwardModelResult:
    """What `fit_forward_model` measured; per-row arrays run over every cutout row."""

    source: str | None
    """Name used in error messages (the exposure's OBSID, else the 1D result's)."""
    rows: np.ndarray
    """Image rows ρ_i of the point sources (all rows of the cutout)."""
    amplitudes: np.ndarray
    """Flux of each row, e⁻ (total of the 2D PSF, comparable to ``flux_e`` in 1D)."""
    amplitude_err: np.ndarray
    """One-sigma errors of ``amplitudes`` (diagonal of `covariance`)."""
    gamma: np.ndarray
    """Moffat γ at each row, pixels."""
    alpha: np.ndarray
    """Index α of the 1D marginal at each row (2D index β = α + ½)."""
    x_c: np.ndarray
    """Trace centre at each row, image column (the refraction's bend included)."""
    shape_coefficients: dict[str, np.ndarray]
    """Legendre coefficients of ``gamma``, ``alpha``, ``x_c`` in ``t = 2 (ρ − ρ₀)/(n − 1)
    − 1`` over the cutout rows (``x_c``'s without the refraction's fixed bend,
    `atmospec.spectro.extract.ExtractionResult.trace_offset_px`)."""
    wavelength_nm: np.ndarray
    """λ of each row from the 1D result (NaN beyond its rows)."""
    dlambda_drow: np.ndarray
    """|dλ/drow| from the 1D result (NaN beyond its rows)."""
    prior_e: np.ndarray
    """The Tikhonov prior: 1D optimal flux per row with the 2D fit's mask, e⁻."""
    prior_err_e: np.ndarray
    """Its one-sigma error, e⁻ (NaN where a row had no usable pixel)."""
    model: np.ndarray
    """Model of the cutout (background included), e⁻, float32."""
    residual: np.ndarray
    """``(data − model)/σ`` over the cutout, float32, NaN where masked."""
    outliers: np.ndarray
    """Pixels masked by the outlier clipping (not those of the mask planes)."""
    chi2: float
    """χ² over the modelled pixels (within the PSF windows, not masked)."""
    ndof: float
    """Modelled pixels − effective number of amplitudes − shape parameters."""
    regularisation: float
    """μ used."""
    effective_parameters: float
    """Trace of the influence matrix of the amplitudes (≤ number of rows)."""
    n_iterations: int
    """Levenberg–Marquardt iterations, all clipping passes together."""
    n_clip_passes: int
    """Fits done (1 + refits after outlier masking)."""
    shape_fit_failure: str | None
    """Why the last fit of the shapes did not reach a minimum (its iteration bound); None
    when it did (or the shapes were not fitted)."""
    timings: dict[str, float]
    """Wall time of the stages, seconds."""
    cutout_origin: tuple[int, int]
    """``(x, y)`` of the cutout's first pixel in the image."""
    config: ForwardModelConfig = field(repr=False)
    """Settings used."""
    _cov_parts: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray, np.ndarray] = \
        field(repr=False, compare=False)
    """``((D, S, S⁻¹), X C, L)``: `covariance` is ``C X C + L Lᵀ`` (regularised estimator
    at fixed shape, plus the PSF-shape uncertainty) with ``C = (N + μQ)⁻¹``, ``N + μQ``
    given by its diagonal and sub-diagonal blocks ``(D, S)`` (`_blocks`) and the inverses
    of its block LU's pivots ``S⁻¹`` (`_schur_inverses`)."""

    @property
    def chi2_ndof(self) -> float:
        """Reduced χ²."""
        return self.chi2 / self.ndof if self.ndof > 0 else math.nan

    @property
    def beta(self) -> np.ndarray:
        """2D Moffat index at each row (α + ½)."""
        return self.alpha + 0.5

    @property
    def fwhm_px(self) -> np.ndarray:
        """FWHM of the 2D PSF at each row, pixels."""
        return moffat2d_fwhm(self.gamma, self.beta)

    @property
    def flux_per_nm(self) -> np.ndarray:
        """Amplitudes per nm, e⁻/nm (NaN beyond the 1D rows)."""
        return self.amplitudes / self.dlambda_drow

    @property
    def flux_per_nm_err(self) -> np.ndarray:
        """Their one-sigma errors, e⁻/nm."""
        return self.amplitude_err / self.dlambda_drow

    @cached_property
    def covariance(self) -> np.ndarray:
        """Dense covariance of ``amplitudes``, e⁻² (computed on first access). ``C (X C)``
        is a block-tridiagonal solve of ``X C`` (O(n² p), p the band width), not the dense
        product by ``C`` (O(n³), ~20 GFLOP for n = 2147 rows): 0.1 s of CPU for 2147 rows
        and R = 43 on one core, solved in place with the block LU the fit already made."""
        (diag, sub, s_inv), xc, shape = self._cov_parts
        n = xc.shape[0]
        rhs = np.zeros((diag.shape[0] * diag.shape[1], n))
        rhs[:n] = xc
        cov = _block_solve(diag, sub, rhs, s_inv=s_inv, overwrite=True)[:n]
        cov = cov + cov.T
        cov *= 0.5
        cov += shape @ shape.T
        return cov


def moffat2d_fwhm(gamma: np.ndarray | float, beta: np.ndarray | float) -> np.ndarray:
    """FWHM of a 2D Moffat ``(1 + r²/γ²)^(−β)``: ``2 γ √(2^(1/β) − 1)``."""
    return 2.0 * np.asarray(gamma) * np.sqrt(2.0 ** (1.0 / np.asarray(beta)) - 1.0)


# --------------------------------------------------------------------------- geometry


@dataclass
class _Grid:
    """Fixed geometry: per image row ``r`` (of the cutout), the sources ``s = r − d``
    (``|d| ≤ R``) and a window of ``Wc`` columns starting at ``c0[r]`` (cutout columns)."""

    n: int
    radius: int
    c0: np.ndarray
    cols: np.ndarray            # (n, Wc) cutout columns
    in_cut: np.ndarray          # (n, Wc) column inside the cutout
    src: np.ndarray             # (n, 2R+1) source index, clipped
    src_ok: np.ndarray          # (n, 2R+1) source inside the cutout

    @property
    def width(self) -> int:
        return self.cols.shape[1]

    def gather(self, image: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Window values of a cutout-shaped array."""
        nc = image.shape[1]
        rows = np.arange(self.n)[:, None]
        out = image[rows, np.clip(self.cols, 0, nc - 1)]
        return np.where(self.in_cut, out, fill)


def _make_grid(n: int, n_cols: int, xc_cut: np.ndarray, radius: int) -> _Grid:
    width = 2 * radius + 3  # one spare column each side for the drift of x_c over ±R rows
    c0 = np.round(xc_cut).astype(np.int64) - radius - 1
    cols = c0[:, None] + np.arange(width)[None, :]
    in_cut = (cols >= 0) & (cols < n_cols)
    d = np.arange(-radius, radius + 1)
    src = np.arange(n)[:, None] - d[None, :]
    src_ok = (src >= 0) & (src < n)
    return _Grid(n, radius, c0, cols, in_cut, np.clip(src, 0, n - 1), src_ok)


# --------------------------------------------------------------------------- PSF


@dataclass
class _Psf:
    """The truncated 2D Moffat of every source on the window grid, shape (n, 2R+1, Wc)."""

    p: np.ndarray
    dx: np.ndarray
    q: np.ndarray


#: Elements of the (rows, 2R+1, Wc) arrays worked on at once (4 MB in float32): a chunk of
#: window rows whose temporaries stay in the CPU cache, instead of a dozen passes over
#: arrays of 66 MB (2147 rows, R = 43) that each go through main memory. Every element is
#: computed by the same operations as in one piece: the results are the same bits.
_CHUNK_ELEMENTS = 1 << 20


def _row_chunks(grid: _Grid, lo: int = 0, hi: int | None = None
                ) -> Iterator[tuple[int, int]]:
    """``(lo, hi)`` of the chunks of the window rows ``lo:hi`` (`_CHUNK_ELEMENTS`)."""
    hi = grid.n if hi is None else hi
    step = max(1, _CHUNK_ELEMENTS // ((2 * grid.radius + 1) * grid.width))
    for start in range(lo, hi, step):
        yield start, min(start + step, hi)


def _psf(grid: _Grid, xc_cut: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
         dtype: type[np.floating] = np.float32,
         each: Callable[[int, int, np.ndarray], None] | None = None) -> _Psf:
    """The PSF of every source on the window grid, computed chunk by chunk of window rows;
    ``each(lo, hi, p)`` is called with every chunk's PSF while it is in the cache (the
    normal matrix is summed there, `_NormalSum`)."""
    # float32 by default for the big (n, 2R+1, Wc) arrays: half the memory traffic. Only the
    # per-row products (≤ 2R + 3 terms) are float32; the normal matrix sums them in float64.
    # A model differentiated by finite differences (the spectrogram atmosphere fit) needs
    # float64: float32 rounding (6e-8) is larger than the model's change over lmfit's step.
    r = grid.radius
    s = grid.src
    ft = dtype
    dy2 = (np.arange(-r, r + 1, dtype=ft) ** 2)[None, :, None]
    cols = grid.cols.astype(ft)[:, None, :]
    xs = xc_cut.astype(ft)[s][:, :, None]
    inv_g2 = (1.0 / gamma**2).astype(ft)[s][:, :, None]
    neg_b = -beta.astype(ft)[s][:, :, None]
    norm = ((beta - 1.0) / (math.pi * gamma**2)).astype(ft)[s][:, :, None]
    shape = (grid.n, 2 * r + 1, grid.width)
    p, dx, q = np.empty(shape, ft), np.empty(shape, ft), np.empty(shape, ft)
    for lo, hi in _row_chunks(grid):
        dxc, qc, pc = dx[lo:hi], q[lo:hi], p[lo:hi]
        np.subtract(cols[lo:hi], xs[lo:hi], out=dxc)
        np.multiply(dxc, dxc, out=qc)
        qc += dy2
        outside = qc > r * r
        outside |= ~(grid.src_ok[lo:hi, :, None] & grid.in_cut[lo:hi, None, :])
        qc *= inv_g2[lo:hi]
        qc += ft(1.0)
        np.log(qc, out=pc)
        pc *= neg_b[lo:hi]
        np.exp(pc, out=pc)
        pc *= norm[lo:hi]
        np.copyto(pc, 0.0, where=outside)
        if each is not None:
            each(lo, hi, pc)
    return _Psf(p, dx, q)


# --------------------------------------------------------------------------- linear algebra


def _band_matvec(ab: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Symmetric banded (lower storage ``ab[u, j] = A[j+u, j]``) matrix times vector."""
    y = ab[0] * x
    n = x.size
    for u in range(1, ab.shape[0]):  # loop over the band's diagonals, not over pixels
        y[u:] += ab[u, :n - u] * x[:n - u]
        y[:n - u] += ab[u, :n - u] * x[u:]
    return y


def _blocks(ab: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Block-tridiagonal view (blocks of size ``p`` ≥ the half bandwidth) of a symmetric
    banded matrix: diagonal blocks (m, p, p), sub-diagonal blocks (m − 1, p, p); the
    matrix is padded with the identity to ``m p`` rows."""
    n = ab.shape[1]
    m = -(-n // p)
    pad = np.zeros((p + 1, m * p))
    k = min(ab.shape[0], p + 1)
    pad[:k, :n] = ab[:k]
    pad[0, n:] = 1.0
    i, j = np.indices((p, p))
    start = (np.arange(m) * p)[:, None, None]
    diag = pad[np.abs(i - j)[None], start + np.minimum(i, j)[None]]
    u = p + i - j
    sub = np.where((u <= p)[None], pad[np.minimum(u, p)[None], start[:-1] + j[None]], 0.0)
    return diag, sub, m


def _block_inverse(diag: np.ndarray, sub: np.ndarray, full: bool,
                   s_inv: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Inverse of a block-tridiagonal SPD matrix (recursive Green's function).

    Returns its diagonal blocks, its sub-diagonal blocks ``C[k+1, k]`` and, if ``full``,
    the dense inverse; ``s_inv``: its `_schur_inverses` when already made.
    ``S_k = D_k − L_{k−1} S_{k−1}⁻¹ L_{k−1}ᵀ`` forward, then
    ``C_kk = S_k⁻¹ + T_k C_{k+1,k+1} T_kᵀ`` and ``C_{k,k+1:} = −T_k C_{k+1,k+1:}`` with
    ``T_k = S_k⁻¹ L_kᵀ`` backward: O(n p²) for the band, O(n² p) for the dense matrix.
    """
    m, p, _ = diag.shape
    if s_inv is None:
        s_inv = _schur_inverses(diag, sub)
    cd = np.empty_like(diag)
    co = np.empty_like(sub)
    cd[m - 1] = s_inv[m - 1]
    dense = None
    if full:
        dense = np.empty((m * p, m * p))
        dense[(m - 1) * p:, (m - 1) * p:] = cd[m - 1]
    for k in range(m - 2, -1, -1):
        t = s_inv[k] @ sub[k].T
        co[k] = -(t @ cd[k + 1]).T
        cd[k] = s_inv[k] + t @ cd[k + 1] @ t.T
        if dense is not None:
            lo, hi = k * p, (k + 1) * p
            dense[lo:hi, hi:] = -t @ dense[hi:hi + p, hi:]
            dense[lo:hi, lo:hi] = cd[k]
            dense[hi:, lo:hi] = dense[lo:hi, hi:].T
    return cd, co, dense


def _schur_inverses(diag: np.ndarray, sub: np.ndarray) -> np.ndarray:
    """``S_k⁻¹`` of the block LU of a block-tridiagonal SPD matrix:
    ``S_k = D_k − L_{k−1} S_{k−1}⁻¹ L_{k−1}ᵀ`` (``L_k = sub[k]``)."""
    s_inv = np.empty_like(diag)
    prev = None
    for k in range(diag.shape[0]):  # loop over blocks (n / band width of them)
        s = diag[k] if prev is None else diag[k] - sub[k - 1] @ prev @ sub[k - 1].T
        prev = np.linalg.inv(s)
        s_inv[k] = prev
    return s_inv


def _block_solve(diag: np.ndarray, sub: np.ndarray, rhs: np.ndarray,
                 s_inv: np.ndarray | None = None, overwrite: bool = False) -> np.ndarray:
    """``A⁻¹ B`` for a block-tridiagonal SPD ``A`` (blocks of `_blocks`) and a dense ``B``
    of ``m p`` rows: block LU forward, then back substitution, four ``p × p`` by
    ``p × ncol`` products per block (O(m p² ncol)). ``s_inv``: `_schur_inverses` of ``A``
    when already made; ``overwrite``: solve in ``rhs``'s own memory (C-contiguous), its
    blocks replaced one by one (Z_k, then Y_k) as the recursions no longer need them."""
    m, p, _ = diag.shape
    if s_inv is None:
        s_inv = _schur_inverses(diag, sub)
    z = rhs.reshape(m, p, -1)
    if not overwrite or not np.shares_memory(z, rhs):
        z = z.copy()
    for k in range(1, m):  # forward: Z_k = B_k − L_{k−1} S_{k−1}⁻¹ Z_{k−1}
        z[k] -= sub[k - 1] @ (s_inv[k - 1] @ z[k - 1])
    z[m - 1] = s_inv[m - 1] @ z[m - 1]
    for k in range(m - 2, -1, -1):  # back: Y_k = S_k⁻¹ (Z_k − L_kᵀ Y_{k+1})
        z[k] = s_inv[k] @ (z[k] - sub[k].T @ z[k + 1])
    return z.reshape(m * p, -1)


def _block_matmul(diag: np.ndarray, sub: np.ndarray, dense: np.ndarray) -> np.ndarray:
    """Block-tridiagonal matrix (padded size) times a dense matrix with as many rows."""
    m, p, _ = diag.shape
    y = dense.reshape(m, p, -1)
    out = diag @ y
    out[1:] += sub @ y[:-1]
    out[:-1] += np.transpose(sub, (0, 2, 1)) @ y[1:]
    return out.reshape(m * p, -1)


# --------------------------------------------------------------------------- the fit


@dataclass
class _Problem:
    """Data on the window grid and the fixed parts of the regularised problem."""

    grid: _Grid
    data: np.ndarray       # (n, Wc) data − background
    weight: np.ndarray     # (n, Wc) 1/variance, 0 where masked
    bases: dict[str, np.ndarray]
    prior: np.ndarray
    prior_q: np.ndarray    # 1/σ⁰² (a weak fallback where a row has no 1D value)
    prior_var: np.ndarray  # σ⁰², 0 on the fallback rows
    horne: np.ndarray      # (n, Wc) Horne weights of the prior on the window grid
    mu: float = 1e-2
    x_offset: np.ndarray | float = 0.0  # (n,) fixed refraction bend of x_c (1D result's)


@dataclass
class _Eval:
    theta: np.ndarray
    amplitudes: np.ndarray
    objective: float
    chi2: float
    model: np.ndarray
    band: np.ndarray
    rhs: np.ndarray
    psf: _Psf
    weight: np.ndarray     # the problem's weights ``band`` and ``rhs`` were formed with
    jtj: np.ndarray | None = None
    jtr: np.ndarray | None = None
    damp: np.ndarray | None = None  # (n, n_theta) (N + μQ)⁻¹ Mᵀ W ∂M/∂θ·A


def _shapes(theta: np.ndarray, prob: _Problem, cfg: ForwardModelConfig
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ng = prob.bases["gamma"].shape[1]
    na = prob.bases["alpha"].shape[1]
    g_raw = prob.bases["gamma"] @ theta[:ng]
    a_raw = prob.bases["alpha"] @ theta[ng:ng + na]
    xc = prob.bases["x_c"] @ theta[ng + na:] + prob.x_offset
    gamma = np.clip(g_raw, *cfg.gamma_bounds)
    alpha = np.clip(a_raw, *cfg.alpha_bounds)
    free_g = (g_raw > cfg.gamma_bounds[0]) & (g_raw < cfg.gamma_bounds[1])
    free_a = (a_raw > cfg.alpha_bounds[0]) & (a_raw < cfg.alpha_bounds[1])
    return gamma, alpha, xc, free_g, free_a


class _NormalSum:
    """Lower band of ``Mᵀ W M`` and ``Mᵀ W D`` from the window rows ``lo:hi``, summed
    chunk by chunk of rows (`add`) while each chunk's PSF is in the cache.

    Band column ``j`` (and source ``j`` of ``Mᵀ W D``) sums the rows ``j − R … j + R``: it
    is complete when they are all in ``lo:hi`` (`complete`)."""

    def __init__(self, prob: _Problem, lo: int = 0, hi: int | None = None) -> None:
        g = prob.grid
        self.prob = prob
        self.rows = (lo, g.n if hi is None else hi)
        nd = 2 * g.radius + 1
        # band columns shifted by nd: a chunk's skewed diagonals reach up to nd − 1 columns
        # beyond the cutout's sources on each side (they carry zeros: sources outside)
        self._band = np.zeros((nd, g.n + 2 * nd))
        self._pwd = np.zeros((g.n, nd), np.float32)

    def add(self, lo: int, hi: int, p: np.ndarray) -> None:
        """Add the window rows ``lo:hi`` (in increasing order) whose PSF is ``p``."""
        prob = self.prob
        r = prob.grid.radius
        nd = 2 * r + 1
        pw = p * prob.weight[lo:hi].astype(np.float32)[:, None, :]
        blk = pw @ np.transpose(p, (0, 2, 1))
        self._pwd[lo:hi] = (pw @ prob.data[lo:hi].astype(np.float32)[:, :, None])[..., 0]
        # blk[r, a, b] pairs sources r − (a − R) and r − (b − R): for b = a + u it lands on
        # the lower band at (u, j = r − b + R). Column b of every row's block goes, reversed,
        # to diagonals 0 … b of band columns lo − b + R …: each band element is summed over
        # increasing rows, as one sum along its skewed diagonal would (loop over the 2R + 1
        # columns of the blocks, not over pixels).
        band = self._band
        m = hi - lo
        for b in range(nd):
            j0 = lo - b + r + nd
            band[:b + 1, j0:j0 + m] += blk[:, b::-1, b].T

    def complete(self) -> slice:
        """Band columns (sources) whose rows were all added."""
        g = self.prob.grid
        lo, hi = self.rows
        return slice(lo + g.radius if lo > 0 else 0, hi - g.radius if hi < g.n else g.n)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(band, rhs)`` once the rows were added (exact in the `complete` columns)."""
        g = self.prob.grid
        nd = self._band.shape[0]
        lo, hi = self.rows
        band = np.ascontiguousarray(self._band[:, nd:nd + g.n])
        rhs = np.bincount(g.src[lo:hi].ravel(), weights=self._pwd[lo:hi].ravel(),
                          minlength=g.n)
        return band, rhs


def _normal(prob: _Problem, psf: _Psf, lo: int = 0, hi: int | None = None
            ) -> tuple[np.ndarray, np.ndarray, slice]:
    """Lower band of ``Mᵀ W M`` and ``Mᵀ W D`` from the window rows ``lo:hi`` and the
    columns they complete (`_NormalSum`)."""
    acc = _NormalSum(prob, lo, hi)
    lo, hi = acc.rows
    for a, b in _row_chunks(prob.grid, lo, hi):
        acc.add(a, b, psf.p[a:b])
    return *acc.result(), acc.complete()


def _renormal(prob: _Problem, like: _Eval) -> tuple[np.ndarray, np.ndarray]:
    """``Mᵀ W M`` and ``Mᵀ W D`` of ``like``'s PSF with the weights of ``prob``: only the
    band columns and sources that see a window row whose weights changed are summed again
    (from the rows ±2R around it), the rest kept. Masking a few outlier pixels then costs
    a few hundred rows, not all of them; the numbers are those of the full sum."""
    g = prob.grid
    r = g.radius
    changed = np.flatnonzero(np.any(like.weight != prob.weight, axis=1))
    # rows to sum again: ±2R around each changed row, overlapping ranges merged
    starts = np.maximum(changed - 2 * r, 0)
    ends = np.minimum(changed + 2 * r + 1, g.n)
    first = np.r_[True, starts[1:] > ends[:-1]]
    last = np.r_[first[1:], True]
    ranges = list(zip(starts[first].tolist(), ends[last].tolist(), strict=True))
    if sum(hi - lo for lo, hi in ranges) > g.n // 2:
        band, rhs, _ = _normal(prob, like.psf)
        return band, rhs
    band, rhs = like.band.copy(), like.rhs.copy()
    for lo, hi in ranges:
        part_band, part_rhs, done = _normal(prob, like.psf, lo, hi)
        band[:, done] = part_band[:, done]
        rhs[done] = part_rhs[done]
    return band, rhs


def _solve(band: np.ndarray, rhs: np.ndarray, prob: _Problem, mu: float) -> np.ndarray:
    ab = band.copy()
    ab[0] += mu * prob.prior_q
    factor = cholesky_banded(ab, lower=True)
    return cho_solve_banded((factor, True), rhs + mu * prob.prior_q * prob.prior)


def _window_model(psf: _Psf, amplitudes: np.ndarray, grid: _Grid) -> np.ndarray:
    a = (amplitudes[grid.src] * grid.src_ok).astype(psf.p.dtype)
    model = (np.transpose(psf.p, (0, 2, 1)) @ a[:, :, None])[..., 0]
    return model.astype(np.float64, copy=False)


def _evaluate(theta: np.ndarray, prob: _Problem, cfg: ForwardModelConfig,
              like: _Eval | None = None) -> _Eval:
    """Amplitudes, model and objective at the shape parameters ``theta``. ``like``: an
    earlier evaluation; at the same ``theta`` its PSF is reused, and its normal matrix too
    when it was formed with the same weights (only μ or the prior changed): the same
    numbers, without the two costliest steps of an evaluation."""
    same_shape = like is not None and np.array_equal(like.theta, theta)
    if same_shape:
        assert like is not None
        psf = like.psf
        if like.weight is prob.weight or np.array_equal(like.weight, prob.weight):
            band, rhs = like.band, like.rhs
        else:
            band, rhs = _renormal(prob, like)
    else:
        gamma, alpha, xc, _, _ = _shapes(theta, prob, cfg)
        acc = _NormalSum(prob)
        psf = _psf(prob.grid, xc, gamma, alpha + 0.5, each=acc.add)
        band, rhs = acc.result()
    amp = _solve(band, rhs, prob, prob.mu)
    model = _window_model(psf, amp, prob.grid)
    res = prob.data - model
    chi2 = float(np.sum(prob.weight * res * res))
    obj = chi2 + prob.mu * float(np.sum(prob.prior_q * (amp - prob.prior) ** 2))
    return _Eval(theta, amp, obj, chi2, model, band, rhs, psf, prob.weight)


def _jacobian(ev: _Eval, prob: _Problem, cfg: ForwardModelConfig) -> None:
    """Kaufman's Jacobian ``∂M/∂θ · A`` and the Gauss–Newton matrices (in place)."""
    gamma, alpha, _, free_g, free_a = _shapes(ev.theta, prob, cfg)
    beta = alpha + 0.5
    g = prob.grid
    s = g.src
    f4 = np.float32
    a = (ev.amplitudes[s] * g.src_ok)[:, :, None]
    p, dx, q = ev.psf.p, ev.psf.dx, ev.psf.q
    gs = gamma.astype(f4)[s][:, :, None]
    bs = beta.astype(f4)[s][:, :, None]
    # ∂P/∂γ = P (2β (q − 1)/(q γ) − 2/γ), ∂P/∂β = P (1/(β − 1) − ln q),
    # ∂P/∂x_c = P 2β dx/(γ² q); each (n, Wc, 2R+1) @ (n, 2R+1, deg + 1), chunk by chunk
    # of window rows (`_CHUNK_ELEMENTS`)
    fg, two_g = f4(2.0) * bs / gs, f4(2.0) / gs
    inv_b1 = (1.0 / (beta - 1.0)).astype(f4)[s][:, :, None]
    fx = f4(2.0) * bs / (gs * gs)
    # each basis times the amplitudes at the sources, gathered chunk by chunk below
    coefs = [prob.bases["gamma"] * free_g[:, None], prob.bases["alpha"] * free_a[:, None],
             prob.bases["x_c"]]
    edges = np.cumsum([0] + [c.shape[1] for c in coefs])
    n_theta = int(edges[-1])
    jmat = np.empty((g.n, g.width, n_theta))
    per_src = np.empty((g.n, 2 * g.radius + 1, n_theta), f4)
    for lo, hi in _row_chunks(g):
        pc, qc = p[lo:hi], q[lo:hi]
        bases = [(c[s[lo:hi]] * a[lo:hi]).astype(f4) for c in coefs]
        tmp = (qc - f4(1.0)) / qc
        tmp *= fg[lo:hi]
        tmp -= two_g[lo:hi]
        tmp *= pc
        tmp_t = np.transpose(tmp, (0, 2, 1))
        jmat[lo:hi, :, edges[0]:edges[1]] = tmp_t @ bases[0]
        np.log(qc, out=tmp)
        np.subtract(inv_b1[lo:hi], tmp, out=tmp)
        tmp *= pc
        jmat[lo:hi, :, edges[1]:edges[2]] = tmp_t @ bases[1]
        np.divide(dx[lo:hi], qc, out=tmp)
        tmp *= fx[lo:hi]
        tmp *= pc
        jmat[lo:hi, :, edges[2]:edges[3]] = tmp_t @ bases[2]
        # Mᵀ W J of these rows' sources while their PSF is in the cache (see below)
        per_src[lo:hi] = pc @ (jmat[lo:hi] * prob.weight[lo:hi, :, None]).astype(f4)
    jw = jmat * prob.weight[:, :, None]
    # Gradient of the projected objective: exact with A held fixed (A is optimal).
    ev.jtr = jw.reshape(-1, n_theta).T @ (prob.data - ev.model).ravel()
    # Kaufman: the Gauss–Newton matrix uses the part of ∂M/∂θ·A the amplitudes cannot
    # absorb, J − M (N + μQ)⁻¹ Mᵀ W J; without it the steps are far too short. Mᵀ W J sums
    # each window row's terms onto its sources (zero for the sources outside the cutout,
    # whose PSF is zero).
    per_src = per_src.reshape(-1, n_theta)
    src = s.ravel()
    mtwj = np.column_stack([np.bincount(src, weights=per_src[:, i], minlength=g.n)
                            for i in range(n_theta)])
    ab = ev.band.copy()
    ab[0] += prob.mu * prob.prior_q
    dA = cho_solve_banded((cholesky_banded(ab, lower=True), True), mtwj)
    ev.damp = dA
    da = (dA[s] * g.src_ok[:, :, None]).astype(f4)
    for lo, hi in _row_chunks(g):
        jmat[lo:hi] -= np.transpose(p[lo:hi], (0, 2, 1)) @ da[lo:hi]
    jflat = jmat.reshape(-1, n_theta)
    ev.jtj = (jflat * prob.weight.reshape(-1, 1)).T @ jflat


class _ShapeProblem:
    """The fit of the shape parameters as a `LeastSquaresProblem` (variable projection): the
    objective is the regularised χ² after the linear solve of the amplitudes, the normal
    equations Kaufman's (`_jacobian`)."""

    def __init__(self, prob: _Problem, cfg: ForwardModelConfig) -> None:
        self.prob = prob
        self.cfg = cfg

    def evaluate(self, theta: np.ndarray) -> tuple[float, _Eval]:
        ev = _evaluate(theta, self.prob, self.cfg)
        return ev.objective, ev

    def normal_equations(self, theta: np.ndarray, ev: _Eval) -> NormalEquations:
        _jacobian(ev, self.prob, self.cfg)
        assert ev.jtj is not None and ev.jtr is not None
        return NormalEquations(ev.jtj, ev.jtr)


def _fit_shapes(ev: _Eval, prob: _Problem, cfg: ForwardModelConfig, deadline: float
                ) -> tuple[_Eval, int, str | None]:
    """Levenberg–Marquardt on the shape parameters from ``ev``: the best evaluation, the
    number of trial steps and, when it stopped short of a minimum, why."""
    # The schedule this fit has always used: every trial counts against max_iterations (each
    # costs a full evaluation), λ ÷5 on success, trials up to λ = 1e6, the Gauss–Newton
    # prediction trusted as a convergence test; the unit-diagonal (LU) arithmetic.
    schedule = LevenbergMarquardtConfig(
        max_iterations=cfg.max_iterations, tolerance=cfg.tolerance, count_rejected=True,
        step_size_test=False, predicted_decrease_test=True, accept_equal=False,
        step_solver="normalised", damping_decrease=5.0, damping_min=1e-7,
        damping_max=math.nextafter(1e6, math.inf), normal_at_solution=False)
    fit = levenberg_marquardt(_ShapeProblem(prob, cfg), ev.theta, schedule,
                              start=(ev.objective, ev), name="FFM", deadline=deadline)
    return fit.state, fit.iterations, None if fit.success else fit.message


class _Influence:
    """Trace of the influence matrix and the blocks of ``N + μQ`` as functions of μ, for one
    normal matrix ``N``: its blocks (`_blocks`) and the indices that read the band of
    ``(N + μQ)⁻¹`` and the trace are made once, for all of the cross-validation's values of
    μ (each then adds ``μQ`` to the diagonal, as ``N + μQ`` would have it)."""

    def __init__(self, band: np.ndarray, prob: _Problem, horne_g: np.ndarray) -> None:
        n = band.shape[1]
        p = band.shape[0] - 1
        self.prob = prob
        self.n = n
        self.diag0, self.sub, self.m = _blocks(band, p)
        rows = np.arange(n)
        self._dpos = (rows // p, rows % p, rows % p)
        # band [u, j] = C[j+u, j] (u ≤ R) of the inverse, read from its diagonal blocks or
        # from its sub-diagonal ones
        r = prob.grid.radius
        u = np.arange(r + 1)[:, None]
        j = rows[None, :]
        i = np.minimum(j + u, n - 1)
        bj = j // p
        self._same = (i // p) == bj
        self._inside = j + u < n
        self._d_idx = (bj * p + i % p) * p + j % p
        self._o_idx = (np.minimum(bj, max(self.m - 2, 0)) * p + i % p) * p + j % p
        # tr(C Q G) = Σ_{r,d} q_r G[r, r−d] C[r−d, r]: C[r−d, r] is band [|d|, min(r, r−d)]
        g = prob.grid
        d = np.arange(-r, r + 1)
        self._c_idx = (np.abs(d)[None, :], np.minimum(rows[:, None], g.src))
        self._qg = prob.prior_q[:, None] * horne_g

    def __call__(self, mu: float) -> tuple[np.ndarray, float,
                                            tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Diagonal of ``(N + μQ)⁻¹``, trace of the influence matrix and the blocks of
        ``N + μQ`` with its `_schur_inverses`."""
        prob = self.prob
        diag = self.diag0.copy()
        diag[self._dpos] += mu * prob.prior_q
        s_inv = _schur_inverses(diag, self.sub)
        cd, co, _ = _block_inverse(diag, self.sub, False, s_inv)
        other = co.ravel()[self._o_idx] if co.shape[0] else 0.0
        cband = np.where(self._inside, np.where(self._same, cd.ravel()[self._d_idx], other),
                         0.0)
        c_diag = cband[0]
        c_rs = cband[self._c_idx]
        tr_qg = float(np.sum(self._qg * c_rs * prob.grid.src_ok))
        tau = self.n - mu * float(np.sum(prob.prior_q * c_diag)) + mu * tr_qg
        return c_diag, tau, (diag, self.sub, s_inv)


def _influence(band: np.ndarray, prob: _Problem, mu: float, horne_g: np.ndarray
               ) -> tuple[np.ndarray, float, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Diagonal of ``(N + μQ)⁻¹``, trace of the influence matrix and the blocks of
    ``N + μQ`` with its `_schur_inverses` (`_Influence`)."""
    return _Influence(band, prob, horne_g)(mu)


def _choose_mu(ev: _Eval, prob: _Problem, cfg: ForwardModelConfig, rhs: np.ndarray,
               horne_g: np.ndarray, dwd: float, n_pix: int) -> tuple[float, float]:
    """μ minimising the generalised cross-validation of the pixels."""

    influence = _Influence(ev.band, prob, horne_g)

    def gcv(log_mu: float) -> float:
        mu = 10.0 ** log_mu
        amp = _solve(ev.band, rhs, prob, mu)
        chi2 = dwd - 2.0 * float(amp @ rhs) + float(amp @ _band_matvec(ev.band, amp))
        _, tau, _ = influence(mu)
        return n_pix * chi2 / max(n_pix - tau, 1.0) ** 2

    lo, hi = cfg.log10_mu_bounds
    opt = minimize_scalar(gcv, bounds=(lo, hi), method="bounded",
                          options={"xatol": cfg.log10_mu_tolerance})
    mu = 10.0 ** float(opt.x)
    return mu, float(opt.fun)


def _horne_prior(sub: np.ndarray, weight: np.ndarray, result: ExtractionResult,
                 rows: np.ndarray, c_lo: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1D optimal extraction of every cutout row with the 1D result's smoothed profile (as
    `extract_spectrum` does) and the given weights: flux, variance, Horne weights."""
    xc = np.interp(rows, result.rows, result.x_trace) - c_lo
    gamma = np.interp(rows, result.rows, result.gamma)
    alpha = np.interp(rows, result.rows, result.alpha)
    _, prof = horne_profile(np.arange(sub.shape[1], dtype=np.float64), xc, gamma, alpha,
                            result.config.extraction_half_fwhm)
    pw = prof * weight
    denom = np.sum(prof * pw, axis=1)
    ok = denom > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        h = np.where(ok[:, None], pw / denom[:, None], 0.0)
        var = np.where(ok, 1.0 / denom, np.nan)
    flux = np.where(ok, np.sum(h * sub, axis=1), np.nan)
    return flux, var, h


@dataclass(frozen=True)
class _Cutout:
    """The exposure's pixels on the extraction's cutout."""

    source: str | None
    """Name used in error messages."""
    origin: tuple[int, int]
    """``(x, y)`` of the cutout's first pixel in the image."""
    data: np.ndarray
    """Image, e⁻."""
    var: np.ndarray
    """Variance, e⁻²."""
    good: np.ndarray
    """Usable pixels: not in a bad mask plane, finite, positive variance."""
    sub: np.ndarray
    """``data − background``, 0 where not usable."""
    rows: np.ndarray
    """Image row of each cutout row."""


def _read_cutout(exposure: Exposure, result: ExtractionResult) -> _Cutout:
    """The cutout of ``result`` in ``exposure``, after the checks that they match."""
    meta = exposure.metadata or {}
    src = next((str(meta[k]) for k in ("OBSID", "FILENAME") if meta.get(k)), result.source)
    c_lo, r_lo = result.cutout_origin
    n, n_cols = result.background.shape
    if r_lo < 0 or c_lo < 0 or r_lo + n > exposure.image.shape[0] or \
            c_lo + n_cols > exposure.image.shape[1]:
        raise BadInputError(src, "the extraction's cutout does not fit in the exposure")
    if result.rows.size < 2:
        raise BadInputError(src, "too few usable pixels along the trace (no extracted row)")
    sl = (slice(r_lo, r_lo + n), slice(c_lo, c_lo + n_cols))
    data = np.asarray(exposure.image[sl], dtype=np.float64)
    var = np.asarray(exposure.variance[sl], dtype=np.float64)
    good = (~exposure.get_mask(*result.config.bad_planes)[sl]) & np.isfinite(data) \
        & np.isfinite(var) & (var > 0)
    sub = np.where(good, data - result.background, 0.0)
    rows = np.arange(r_lo, r_lo + n, dtype=np.float64)
    return _Cutout(src, (c_lo, r_lo), data, var, good, sub, rows)


def _starting_shape(cut: _Cutout, result: ExtractionResult, cfg: ForwardModelConfig
                    ) -> tuple[dict[str, np.ndarray], np.ndarray, _Grid, np.ndarray]:
    """Legendre bases of the shape polynomials, their starting coefficients (the 1D result's
    γ, α, x_c, flat beyond its rows as the 1D smoothing does), the window grid and the
    refraction's fixed bend of the trace (`ExtractionResult.trace_offset_px`, flat beyond
    the 1D rows: the polynomial of x_c is the optics, the bend the atmosphere); refuses a
    trace with too few usable pixels."""
    n, n_cols = cut.good.shape
    c_lo = cut.origin[0]
    t = 2.0 * np.arange(n) / max(n - 1, 1) - 1.0
    x1 = np.interp(cut.rows, result.rows, result.x_trace) - c_lo
    g1 = np.interp(cut.rows, result.rows, result.gamma)
    a1 = np.interp(cut.rows, result.rows, result.alpha)
    core = np.abs(np.arange(n_cols)[None, :] - x1[:, None]) <= 0.5 * moffat1d_fwhm(
        g1, a1)[:, None]
    n_core = int(np.count_nonzero(core))
    frac = np.count_nonzero(cut.good & core) / max(n_core, 1)
    degrees = {"gamma": cfg.gamma_degree, "alpha": cfg.alpha_degree, "x_c": cfg.centre_degree}
    n_theta = sum(d + 1 for d in degrees.values())
    if frac < cfg.min_good_fraction or np.count_nonzero(cut.good & core) < 10 * n_theta:
        raise BadInputError(cut.source, f"too few usable pixels along the trace for the 2D "
                                        f"model ({100 * frac:.0f} % of the central pixels "
                                        "usable)")
    bases = {k: legendre.legvander(t, d) for k, d in degrees.items()}
    bend = np.interp(cut.rows, result.rows, result.trace_offset_px)
    theta0 = np.concatenate([np.linalg.lstsq(bases[k], v, rcond=None)[0]
                             for k, v in (("gamma", g1), ("alpha", a1), ("x_c", x1 - bend))])
    radius = psf_radius(moffat2d_fwhm(g1, a1 + 0.5), cfg.support_fwhm, cfg.max_radius_px,
                        cfg.min_support_fwhm, cut.source)
    return bases, theta0, _make_grid(n, n_cols, x1, radius), bend


class ForwardModelTimeout(ProcessingError):
    """The 2D model did not finish within `ForwardModelConfig.max_seconds`."""


class PsfTooWide(ProcessingError):
    """The PSF is too wide for the 2D model at a bounded cost (`ForwardModelConfig`)."""


def psf_radius(fwhm_px: np.ndarray, support_fwhm: float, max_radius_px: int,
               min_support_fwhm: float, source: str | None = None) -> int:
    """Radius of the PSF disc a 2D model draws, pixels: ``support_fwhm`` × the largest
    2D FWHM, cut to ``max_radius_px`` (see `ForwardModelConfig`).

    Parameters
    ----------
    fwhm_px : numpy.ndarray
        2D FWHM of every row, pixels.
    support_fwhm : float
        Radius wanted, in FWHM.
    max_radius_px : int
        Largest radius, pixels.
    min_support_fwhm : float
        Fewest FWHM the radius may be cut to.
    source : str, optional
        Name for the message.

    Returns
    -------
    int

    Raises
    ------
    PsfTooWide
        When the cut disc would span fewer than ``min_support_fwhm`` FWHM (or the FWHM is not
        finite): the model's cost is bounded by refusing it, not by waiting.
    """
    fwhm_max = float(np.max(fwhm_px)) if np.size(fwhm_px) else math.nan
    if not math.isfinite(fwhm_max) or min_support_fwhm * fwhm_max > max_radius_px:
        raise PsfTooWide(f"{source or 'spectrum'}: PSF FWHM up to {fwhm_max:.1f} px is too "
                         f"wide for a 2D model (a disc of {min_support_fwhm:g} FWHM exceeds "
                         f"{max_radius_px} px)")
    wanted = max(math.ceil(support_fwhm * fwhm_max), 2)
    if wanted > max_radius_px:
        log.info("%s: PSF disc cut from %d to %d px (%.1f FWHM)", source, wanted,
                 max_radius_px, max_radius_px / fwhm_max)
    return min(wanted, max_radius_px)


class _Setup:
    """The data on the window grid, and the regularised problem for a selection of pixels."""

    def __init__(self, cut: _Cutout, result: ExtractionResult, grid: _Grid,
                 bases: dict[str, np.ndarray], bend: np.ndarray) -> None:
        self.cut = cut
        self.result = result
        self.grid = grid
        self.bases = bases
        self.bend = bend
        self.win_data = grid.gather(cut.sub)
        win_var = grid.gather(cut.var, 1.0)
        win_good0 = grid.gather(cut.good.astype(np.float64)) > 0
        self.ivar_win = np.where(win_good0, 1.0 / np.where(win_good0, win_var, 1.0), 0.0)

    def problem(self, use: np.ndarray, mu: float) -> _Problem:
        """The regularised problem for the pixels ``use``: weights and the 1D prior."""
        cut, grid = self.cut, self.grid
        n = grid.n
        weight_cut = np.where(use, 1.0 / np.where(use, cut.var, 1.0), 0.0)
        prior, prior_var, h = _horne_prior(cut.sub, weight_cut, self.result, cut.rows,
                                           cut.origin[0])
        ok = np.isfinite(prior)
        if np.count_nonzero(ok) < 2:
            raise BadInputError(cut.source, "too few usable pixels along the trace")
        q = 1.0 / np.where(ok, prior_var, 1.0)
        # rows without a 1D value: prior interpolated from the neighbours, weakly weighted
        prior_f = np.where(ok, prior, np.interp(np.arange(n), np.flatnonzero(ok), prior[ok]))
        q_f = np.where(ok, q, 1e-3 * float(np.min(q[ok])))
        weight = np.where(grid.gather(use.astype(np.float64)) > 0, self.ivar_win, 0.0)
        return _Problem(grid, self.win_data, weight, self.bases, prior_f, q_f,
                        np.where(ok, prior_var, 0.0), grid.gather(h), mu, self.bend)

    def model_cutout(self, ev: _Eval) -> np.ndarray:
        """Model of the cutout, background included, e⁻."""
        return _to_cutout(ev.model, self.grid, self.cut.good.shape[1]) + self.result.background

    def outliers(self, ev: _Eval, masked: np.ndarray, clip: float) -> np.ndarray:
        """Usable pixels not yet ``masked`` whose residual exceeds ``clip`` σ."""
        cut = self.cut
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.abs(cut.data - self.model_cutout(ev)) / np.sqrt(cut.var)
        return cut.good & ~masked & (z > clip)


@dataclass(frozen=True)
class _Passes:
    """Where the clipping passes ended."""

    ev: _Eval
    """Evaluation at the final shapes and μ."""
    prob: _Problem
    """The problem of the last pass (its pixels, prior and μ)."""
    outliers: np.ndarray
    """Pixels masked by the clipping."""
    n_iterations: int
    """Levenberg–Marquardt iterations, all passes together."""
    failure: str | None
    """Why the last shape fit stopped short of a minimum; None when it did not."""
    passes: int
    """Fits done."""


def _clip_passes(setup: _Setup, theta0: np.ndarray, cfg: ForwardModelConfig,
                 timings: dict[str, float], deadline: float) -> _Passes:
    """μ, shapes and amplitudes, refitted after each round of outlier masking.

    Raises `ForwardModelTimeout` once the `time.monotonic` ``deadline`` has passed (checked
    between the passes' steps and between the shape fit's trials)."""

    def check_time(where: str) -> None:
        if time.monotonic() > deadline:
            raise ForwardModelTimeout(f"{setup.cut.source or 'spectrum'}: the 2D model did not "
                                      f"finish in {cfg.max_seconds:g} s ({where})")

    theta = theta0
    mu = cfg.regularisation if cfg.regularisation is not None else 1e-2
    good = setup.cut.good
    # Strong spikes (cosmic-ray residue, star cores) are masked on the starting model
    # first, with a lenient threshold (the starting shape is only the 1D one): otherwise
    # the cross-validation would choose a small μ to follow them.
    ev = _evaluate(theta, setup.problem(good, mu), cfg)
    outliers = setup.outliers(ev, np.zeros_like(good), 2.0 * cfg.clip_sigma)
    n_new = int(np.count_nonzero(outliers))
    n_iter = 0
    failure = None
    passes = 0
    t_gcv = t_fit = 0.0
    prob = None
    for passes in range(1, cfg.clip_iterations + 2):  # loop over clipping passes
        check_time(f"clipping pass {passes}")
        prob = setup.problem(good & ~outliers, mu)
        # a handful of new outliers cannot move μ or the few shape parameters: only the
        # amplitudes are redone then
        major = passes == 1 or n_new > cfg.refit_fraction * np.count_nonzero(prob.weight)
        tick = time.perf_counter()
        ev = _evaluate(theta, prob, cfg, like=ev)
        if cfg.regularisation is None and major:
            horne_g = _horne_of_sources(ev, prob)
            mu, _ = _choose_mu(ev, prob, cfg, ev.rhs, horne_g,
                               float(np.sum(prob.weight * setup.win_data**2)),
                               int(np.count_nonzero(prob.weight > 0)))
            prob.mu = mu
            ev = _evaluate(theta, prob, cfg, like=ev)
        t_gcv += time.perf_counter() - tick
        check_time(f"regularisation of pass {passes}")
        tick = time.perf_counter()
        if cfg.fit_shape and major:
            ev, it, failure = _fit_shapes(ev, prob, cfg, deadline)
            n_iter += it
            theta = ev.theta
            check_time(f"shape fit of pass {passes}, {n_iter} iterations")
        t_fit += time.perf_counter() - tick
        new = setup.outliers(ev, outliers, cfg.clip_sigma)
        n_new = int(np.count_nonzero(new))
        if passes > cfg.clip_iterations or n_new == 0:
            break
        log.debug("FFM pass %d: %d new outlier pixels", passes, n_new)
        outliers |= new
    timings["regularisation"] = t_gcv
    timings["shape_fit"] = t_fit
    assert prob is not None
    return _Passes(ev, prob, outliers, n_iter, failure, passes)


def _amplitude_covariance(ev: _Eval, prob: _Problem, cfg: ForwardModelConfig
                          ) -> tuple[float, np.ndarray,
                                     tuple[tuple[np.ndarray, np.ndarray, np.ndarray],
                                           np.ndarray, np.ndarray]]:
    """Trace of the influence matrix, variances of the amplitudes and the parts of their
    dense covariance ``((D, S, S⁻¹), X C, L)`` (see `ForwardModelResult`) at the converged
    shapes."""
    n = prob.grid.n
    mu = prob.mu
    horne_g = _horne_of_sources(ev, prob)
    _, tau, (diag, sub_blk, s_inv) = _influence(ev.band, prob, mu, horne_g)
    _, _, c_dense = _block_inverse(diag, sub_blk, True, s_inv)
    xband = _x_band(ev.band, prob, horne_g, mu)
    xd, xs, _ = _blocks(xband, diag.shape[1])
    xc_dense = _block_matmul(xd, xs, c_dense)[:n, :n]
    c_dense = c_dense[:n, :n]
    amp_var = np.einsum("ji,ji->i", xc_dense, c_dense)  # diag(C X C), C symmetric
    shape_part = _shape_covariance_factor(ev, prob, cfg)
    amp_var += np.einsum("ij,ij->i", shape_part, shape_part)
    return tau, amp_var, ((diag, sub_blk, s_inv), xc_dense, shape_part)


def fit_forward_model(exposure: Exposure, result: ExtractionResult,
                      config: ForwardModelConfig | None = None) -> ForwardModelResult:
    """Fit the 2D forward model of the first-order spectrogram extracted in ``result``.

    Parameters
    ----------
    exposure : Exposure
        The exposure `extract_spectrum` was run on (e⁻, VARIANCE in e⁻², mask planes).
    result : ExtractionResult
        The 1D extraction: cutout, background, starting trace and PSF, prior amplitudes.
    config : ForwardModelConfig, optional
        Settings.

    Returns
    -------
    ForwardModelResult

    Raises
    ------
    BadInputError
        Too few usable pixels along the trace, or a result that does not match the
        exposure.
    PsfTooWide
        A PSF too wide to model within `ForwardModelConfig.max_radius_px`.
    ForwardModelTimeout
        Not finished within `ForwardModelConfig.max_seconds`.
    """
    cfg = config or ForwardModelConfig()
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    cut = _read_cutout(exposure, result)
    bases, theta0, grid, bend = _starting_shape(cut, result, cfg)
    setup = _Setup(cut, result, grid, bases, bend)
    timings["setup"] = time.perf_counter() - t_start
    log.debug("FFM: %d rows, PSF radius %d px, window %d columns", grid.n, grid.radius,
              grid.width)
    fit = _clip_passes(setup, theta0, cfg, timings,
                       deadline=time.monotonic() - (time.perf_counter() - t_start)
                       + cfg.max_seconds)
    ev, prob = fit.ev, fit.prob
    theta, mu = ev.theta, prob.mu

    # final amplitudes, covariance and statistics at the converged shapes
    tick = time.perf_counter()
    gamma, alpha, xc, _, _ = _shapes(theta, prob, cfg)
    tau, amp_var, cov_parts = _amplitude_covariance(ev, prob, cfg)
    timings["covariance"] = time.perf_counter() - tick

    n = grid.n
    c_lo = cut.origin[0]
    model_cut = setup.model_cutout(ev).astype(np.float32)
    use = cut.good & ~fit.outliers
    with np.errstate(invalid="ignore", divide="ignore"):
        resid = np.where(use, (cut.data - model_cut) / np.sqrt(cut.var), np.nan
                         ).astype(np.float32)
    n_pix = int(np.count_nonzero(prob.weight > 0))
    ndof = n_pix - tau - theta.size
    rows = cut.rows
    lam = np.interp(rows, result.rows, result.wavelength_nm, left=np.nan, right=np.nan)
    dlam = np.interp(rows, result.rows, result.dlambda_drow, left=np.nan, right=np.nan)
    ng, na = cfg.gamma_degree + 1, cfg.alpha_degree + 1
    coeffs = {"gamma": theta[:ng].copy(), "alpha": theta[ng:ng + na].copy(),
              "x_c": theta[ng + na:] + np.r_[c_lo, np.zeros(cfg.centre_degree)]}
    timings["total"] = time.perf_counter() - t_start
    log.info("FFM: %d rows, χ²/ndof %.3f, μ %.3g, τ %.0f, %d LM iterations, %.2f s",
             n, ev.chi2 / ndof, mu, tau, fit.n_iterations, timings["total"])
    return ForwardModelResult(
        source=cut.source, rows=rows, amplitudes=ev.amplitudes,
        amplitude_err=np.sqrt(np.clip(amp_var, 0.0, None)), gamma=gamma, alpha=alpha,
        x_c=xc + c_lo, shape_coefficients=coeffs, wavelength_nm=lam, dlambda_drow=dlam,
        prior_e=prob.prior, prior_err_e=np.sqrt(np.where(prob.prior_var > 0,
                                                         prob.prior_var, np.nan)),
        model=model_cut, residual=resid, outliers=fit.outliers, chi2=ev.chi2,
        ndof=float(ndof), regularisation=float(mu), effective_parameters=float(tau),
        n_iterations=fit.n_iterations, n_clip_passes=fit.passes,
        shape_fit_failure=fit.failure, timings=timings,
        cutout_origin=cut.origin, config=cfg, _cov_parts=cov_parts)


def _shape_covariance_factor(ev: _Eval, prob: _Problem, cfg: ForwardModelConfig
                             ) -> np.ndarray:
    """``L`` with ``L Lᵀ`` the amplitudes' covariance from the PSF-shape uncertainty.

    The amplitudes follow the shape: ``∂Â/∂θ = −(N + μQ)⁻¹ Mᵀ W ∂M/∂θ·A`` (``damp``), and
    the shape's own covariance is the inverse of Kaufman's Gauss–Newton matrix (the Schur
    complement of the amplitudes in the joint Fisher matrix). Their product is the
    second term of the joint fit's amplitude covariance, ``C + D S⁻¹ Dᵀ``: without it a
    broadband error (a slightly wrong β moves the flux of every row together) is missed.
    Zero columns when the shapes were not fitted.
    """
    if not cfg.fit_shape:
        return np.zeros((prob.grid.n, 0))
    if ev.jtj is None or ev.damp is None:
        _jacobian(ev, prob, cfg)
    assert ev.jtj is not None and ev.damp is not None
    # Parameters pinned at a bound have zero columns: the pseudo-inverse leaves them out.
    w, v = np.linalg.eigh(ev.jtj)
    keep = w > w.max() * 1e-12
    return ev.damp @ (v[:, keep] / np.sqrt(w[keep]))


def _x_band(band: np.ndarray, prob: _Problem, horne_g: np.ndarray, mu: float) -> np.ndarray:
    """Lower band of ``X = N + μ (Gᵀ Q + Q G) + μ² Q Σ⁰ Q`` (see the module notes)."""
    n = band.shape[1]
    r = prob.grid.radius
    q = prob.prior_q
    x = band.copy()
    x[0] += 2.0 * mu * q * horne_g[:, r] + mu**2 * q * q * prob.prior_var
    for u in range(1, r + 1):  # G reaches R rows off the diagonal: loop over diagonals
        j = np.arange(n - u)
        # G[j+u, j] sits at (r = j+u, d = u); G[j, j+u] at (r = j, d = −u)
        x[u, :n - u] += mu * (q[j + u] * horne_g[j + u, r + u] + q[j] * horne_g[j, r - u])
    return x


def _horne_of_sources(ev: _Eval, prob: _Problem) -> np.ndarray:
    """``G = H M`` in the (row, offset) layout: the 1D extraction of each unit source."""
    hw = prob.horne.astype(np.float32)[:, :, None]
    return (ev.psf.p @ hw)[..., 0].astype(np.float64)


def _to_cutout(window: np.ndarray, grid: _Grid, n_cols: int) -> np.ndarray:
    out = np.zeros((grid.n, n_cols))
    rows = np.broadcast_to(np.arange(grid.n)[:, None], grid.cols.shape)
    keep = grid.in_cut
    out[rows[keep], grid.cols[keep]] = window[keep]
    return out
