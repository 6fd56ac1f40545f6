"""Fit the atmosphere on the 2D spectrogram itself (Spectractor's spectrogram fit).

The 1D fit (`atmospec.atmosphere.spectrum_fit`) compares a model with the *extracted* spectrum,
from which the second order has already been removed with an estimate made from the same
spectrum's blue half. Where that estimate matters — the red end, where on holo4_003 and
HoloAmAg half of the light beyond ~850 nm is order 2 — the 1D fit cannot tell an error of
the order-2 subtraction from water vapour or from the aerosol colour, and its parameters
become strongly correlated. Here the pixels of the spectrogram are modelled directly from
the atmosphere, first, second (and third) order together:

    D(r, c) = B(r, c) + Σ_i [a₁ᵢ(θ) · P(c − x_cᵢ, r − ρᵢ; γ(λᵢ), β(λᵢ))
                              + a₂ᵢ(θ) · P(c − x_cᵢ, r − ρᵢ; γ(λᵢ/2), β(λᵢ/2))]

(+ the third order, below) with one source per row ρᵢ of the cutout (wavelength λᵢ), ``B``
the side-band background (``S_BGD``), ``P`` the truncated 2D Moffat of the 2D forward model
(`atmospec.spectro.forward_model`) with the PSF of the spectrum's ``PSF_TAB`` (γ, α = β − ½ and the
trace centre per sample, as the 2D forward model fitted them), and

* ``a₁ᵢ = A1 ∫ S(λ) T_atm(λ; θ) dλ`` over the row's wavelength interval shifted by δλ — the
  first-order e⁻ of that row, ``S`` everything but the atmosphere
  (`SpectrumForwardModel.static_fine`: SED × area × throughput × filter × η₁ × t_exp);
  ``S T_atm`` is read as linear between the fine grid's cell centres (a quarter of a row
  apart by default), so that the integral, hence the image, is C¹ in δλ;
* ``a₂ᵢ = A2 · r₂₁(λᵢ/2) ∫ S T_atm dλ`` over half the row's shifted interval: the grating
  equation puts order 2 of λ/2 exactly where order 1 of λ lands, the disperser's
  order-2/order-1 ratio ``r₂₁`` scales it (as the simulator and Spectractor draw it) and
  its PSF is the one of its own wavelength λ/2;
* ``a₃ᵢ = A2 · r₂₁(λᵢ/3) r₃₂(λᵢ/3) ∫ S T_atm dλ`` over a third of the row's shifted
  interval, with the PSF of λ/3, for a disperser with an order-3/order-2 ratio
  (holo4_003's ``ratio_order_3over2.txt``, `Disperser.has_order3`): the simulator, the
  chain's order-2 correction and the 2D forward model draw that light (r₃₁ = r₂₁ r₃₂), on
  holo4_003 +56 % of order 1 at 1050–1100 nm. Left out (`SpectrogramFitConfig.order3`),
  it is taken up by A2 (1.018) and through it by the atmosphere: on the chain test's scene
  PWV +0.19 mm and ozone −17 DU biased, against +0.07 mm and −5.7 DU with it drawn.

Orders 2 and 3 are drawn on the rows where λ/m lies inside ``PSF_TAB`` (the chain's order-2
correction likewise assumes no light below the bluest extracted wavelength), whatever the
fitted range: the fine grid reaches λ/3 of the bluest fitted row.

Free: PWV, ozone, VAOD (and the Ångström exponent if asked), the grey scale A1, the
order-2 scale A2 (1 = the disperser table) and the shift δλ; the PSF is held at the
spectrum's (its uncertainty is not propagated here — the 2D forward model's covariance
carries it for the 1D fit). Pixels: those of the PSF windows with a finite ``S_ERR`` and,
when ``S_RES`` is present, a finite residual (the 2D forward model's mask and outliers).
χ² = Σ (D − M)² / S_ERR²; errors from the Jacobian (lmfit, unscaled; its finite
differences need the image in float64 and C¹, see `_PixelModel`). Only spectra written
by atmospec (``S_DATA`` in electrons) can be fitted: Spectractor's own files keep their
spectrogram in ADU/s without the PSF of each row. An atmospec spectrum written in
Spectractor's units (``extract --units flam``) is converted back to e⁻/nm first
(`atmospec.spectro.units.to_electrons`): its spectrogram stays in electrons.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import lmfit
import numpy as np
from numpy.typing import NDArray

from atmospec.atmosphere.spectrum_fit import (
    AtmosphereFit,
    AtmosphereFitConfig,
    SpectrumForwardModel,
    coverage_fixed,
    fit_atmosphere,
    lmfit_parameters,
    lmfit_quality,
    lmfit_summary,
    starting_angstrom,
    systematic_errors,
)
from atmospec.errors import BadInputError
from atmospec.spectro.forward_model import (
    ForwardModelConfig,
    PsfTooWide,
    _Grid,
    _make_grid,
    _Psf,
    _psf,
    _window_model,
    moffat2d_fwhm,
    psf_radius,
)
from atmospec.spectro.spectrum import Spectrum
from atmospec.spectro.units import to_electrons

__all__ = ["SpectrogramFitConfig", "degeneracy", "fit_atmosphere_auto",
           "fit_atmosphere_spectrogram"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpectrogramFitConfig:
    """How `fit_atmosphere_spectrogram` fits a spectrogram."""

    atmosphere: AtmosphereFitConfig = field(default_factory=AtmosphereFitConfig)
    """Fitted wavelength range, starting values, bounds, SED and which atmospheric
    parameters are free (``fit_resolution`` is ignored: the PSF sets the resolution;
    ``fine_step_nm`` None here means a quarter of the narrowest row's wavelength interval,
    within 0.05–0.5 nm: the rows, not the 1D kernel, are what the fine grid must resolve)."""
    fit_order2: bool = True
    """Fit the order-2 scale A2 (else fixed at 1: the disperser's ratio table)."""
    order2_bounds: tuple[float, float] = (0.0, 3.0)
    """Bounds of A2."""
    support_fwhm: float = 3.0
    """Radius of the modelled PSF disc, in units of the largest FWHM (as the 2D forward
    model)."""
    max_radius_px: int = ForwardModelConfig.max_radius_px
    """Largest radius of the disc, pixels (memory and time grow with its square); a PSF
    (read from ``PSF_TAB``) too wide to span 2 FWHM within it is refused (as the 2D forward
    model's `ForwardModelConfig.max_radius_px`)."""
    max_nfev: int = 1000
    """Largest number of model evaluations of the minimiser."""
    order3: bool = True
    """Draw the third order (λ/3 on the first order's λ, scaled by A2 like order 2) when
    the disperser has an order-3/order-2 ratio (`Disperser.has_order3`); False leaves its
    light unmodelled (the fit was biased so before: PWV +0.19 mm, ozone −17 DU on the chain
    test's holo4_003 scene)."""


@dataclass(frozen=True)
class _Spectrogram:
    """The cutout turned so that rows run along the dispersion, restricted to the rows of
    the spectrum's samples, with each row's wavelength, PSF and trace centre."""

    data: NDArray[np.float64]       # (n, n_cols) data − background, e⁻
    weight: NDArray[np.float64]     # (n, n_cols) 1/σ², 0 where unusable
    wavelength: NDArray[np.float64]  # (n,) λ of each row, nm
    edges: NDArray[np.float64]      # (n, 2) the row's wavelength interval, nm
    x_c: NDArray[np.float64]        # (n,) trace centre, cutout column
    gamma: NDArray[np.float64]
    alpha: NDArray[np.float64]


def _plane(spectrum: Spectrum, name: str) -> NDArray[np.float64] | None:
    ext = getattr(spectrum.spectrogram, name, None) if spectrum.spectrogram else None
    return None if ext is None else np.asarray(ext.data, dtype=np.float64)


def _spectrogram(spectrum: Spectrum, source: str) -> _Spectrogram:
    """Read and orient the spectrogram planes and the per-row PSF of ``spectrum``."""
    data = _plane(spectrum, "data")
    err = _plane(spectrum, "err")
    bkg = _plane(spectrum, "background")
    res = _plane(spectrum, "residuals")
    psf = spectrum.psf_table
    if data is None or err is None or bkg is None:
        raise BadInputError(source, "no spectrogram (S_DATA, S_ERR, S_BGD) in the spectrum: "
                                    "the 2D fit needs a spectrum written by atmospec extract")
    if psf is None or not {"lambdas", "x_c", "y_c", "gamma", "alpha"} <= set(psf.colnames):
        raise BadInputError(source, "no PSF_TAB with lambdas, x_c, y_c, gamma, alpha: the 2D "
                                    "fit needs the PSF of every row")
    unit = str(spectrum.spectrogram.data.header.get("BUNIT", "")).strip().lower()
    if unit not in ("electron", "e-", "electrons"):
        raise BadInputError(source, f"S_DATA in {unit or 'unknown units'!r}: the 2D fit "
                                    "models spectrograms in electrons (atmospec's)")
    lam = np.asarray(psf["lambdas"], dtype=np.float64)
    xs = np.asarray(psf["x_c"], dtype=np.float64)
    ys = np.asarray(psf["y_c"], dtype=np.float64)
    along_y = np.ptp(ys) >= np.ptp(xs)
    if not along_y:  # dispersion along x: turn so that rows run along the dispersion
        data, err, bkg = data.T, err.T, bkg.T
        res = None if res is None else res.T
        xs, ys = ys, xs
    ny = data.shape[0]
    ok = np.isfinite(lam) & np.isfinite(xs) & np.isfinite(ys) & \
        np.isfinite(np.asarray(psf["gamma"], dtype=np.float64)) & \
        np.isfinite(np.asarray(psf["alpha"], dtype=np.float64))
    rows = np.rint(ys).astype(np.int64)
    ok &= (rows >= 0) & (rows < ny)
    if np.count_nonzero(ok) < 20:
        raise BadInputError(source, "fewer than 20 usable PSF_TAB rows inside the spectrogram")
    order = np.argsort(rows[ok])
    r_s = rows[ok][order]
    if np.any(np.diff(r_s) == 0):
        raise BadInputError(source, "PSF_TAB has several samples per spectrogram row: the "
                                    "2D fit needs one sample per row")
    r_all = np.arange(r_s[0], r_s[-1] + 1)

    def on_rows(col: str | NDArray[np.float64]) -> NDArray[np.float64]:
        v = np.asarray(psf[col] if isinstance(col, str) else col, dtype=np.float64)
        return np.interp(r_all, r_s, v[ok][order])

    lam_r = on_rows(lam)
    if not (np.all(np.diff(lam_r) > 0) or np.all(np.diff(lam_r) < 0)):
        raise BadInputError(source, "the wavelengths of PSF_TAB are not monotonic along the "
                                    "spectrogram rows")
    mid = 0.5 * (lam_r[1:] + lam_r[:-1])
    lo_edge = np.concatenate([[lam_r[0] - (mid[0] - lam_r[0])], mid])
    hi_edge = np.concatenate([mid, [lam_r[-1] + (lam_r[-1] - mid[-1])]])
    edges = np.sort(np.stack([lo_edge, hi_edge], axis=1), axis=1)
    d = data[r_all]
    var = err[r_all] ** 2
    usable = np.isfinite(d) & np.isfinite(var) & (var > 0) & np.isfinite(bkg[r_all])
    if res is not None:
        usable &= np.isfinite(res[r_all])
    weight = np.where(usable, 1.0 / np.where(usable, var, 1.0), 0.0)
    sub = np.where(usable, d - bkg[r_all], 0.0)
    return _Spectrogram(sub, weight, lam_r, edges, on_rows(xs), on_rows("gamma"),
                        on_rows("alpha"))


@dataclass(frozen=True)
class _HigherOrder:
    """Order m ≥ 2 as the pixel model draws it."""

    m: int
    ratio: NDArray[np.float64]
    """r_m1(λ/m) of every modelled row (r₂₁, or r₂₁ r₃₂), 0 where order m is not drawn."""
    rows: slice
    """Window rows of its grid."""
    grid: _Grid | None
    psf: _Psf | None


class _PixelModel:
    """The rows modelled, the PSF of every order on the window grid and the data there; the
    image of the spectrogram for given atmosphere and nuisance parameters.

    Rows modelled: the first order's interval (at the largest shift) inside the model's fine
    grid and the requested range; orders 2 and 3 are drawn wherever their interval is inside
    too and λ/m inside ``PSF_TAB`` (the grid reaches λ/3 of the bluest row).
    """

    def __init__(self, geo: _Spectrogram, model: SpectrumForwardModel,
                 config: SpectrogramFitConfig, source: str) -> None:
        acfg = config.atmosphere
        self.model = model
        self.acfg = acfg
        fine = model.fine_wavelength
        step = model.fine_step_nm
        f_lo, f_hi = fine[0] - 0.5 * step, fine[-1] + 0.5 * step
        self._nodes = np.concatenate([[f_lo], fine, [f_hi]])
        """Nodes of the piecewise-linear density (`_cumulative`): the cell centres and the
        grid's two outer edges, nm."""
        self._segment = np.diff(self._nodes)
        lo_req, hi_req = acfg.wavelength_range_nm
        margin = acfg.max_shift_nm
        in1 = (geo.edges[:, 0] - margin >= f_lo) & (geo.edges[:, 1] + margin <= f_hi) & \
            (geo.wavelength >= lo_req) & (geo.wavelength <= hi_req)
        if np.count_nonzero(in1) < 20:
            raise BadInputError(source, "fewer than 20 spectrogram rows inside the model's "
                                        "range")
        first, last = np.flatnonzero(in1)[[0, -1]]
        sl = slice(first, last + 1)
        self.wavelength = geo.wavelength[sl]
        """λ of each modelled row, nm."""
        self.edges = geo.edges[sl]
        """Wavelength interval of each row, nm."""
        lam = self.wavelength
        xc, gamma, beta = geo.x_c[sl], geo.gamma[sl], geo.alpha[sl] + 0.5
        # The PSF of order m at each row is the first order's at λ/m (PSF_TAB in wavelength).
        # Order m is drawn where λ/m is inside PSF_TAB, as the chain's order-2 correction
        # assumes no light below the bluest extracted wavelength.
        order_l = np.argsort(geo.wavelength)
        lam_sorted = geo.wavelength[order_l]
        disp = model.disperser
        orders = (2, 3) if config.order3 and disp.has_order3 else (2,)
        higher = []
        for m in orders:
            lam_m = lam / m
            inside = (self.edges[:, 0] / m - margin >= f_lo) & \
                (self.edges[:, 1] / m + margin <= f_hi) & (lam_m >= lam_sorted[0])
            safe = np.where(inside, lam_m, lam.min())
            ratio = disp.ratio_order_2over1(safe)
            if m == 3:
                ratio = ratio * disp.ratio_order_3over2(safe)
            ratio = np.where(inside, np.clip(ratio, 0.0, None), 0.0)
            higher.append((m, ratio, np.interp(lam_m, lam_sorted, geo.gamma[order_l]),
                           np.interp(lam_m, lam_sorted, geo.alpha[order_l]) + 0.5))
        fwhm_all = [moffat2d_fwhm(gamma, beta)] + [
            moffat2d_fwhm(g[r > 0], b[r > 0]) for _, r, g, b in higher]
        fwhm_max = float(max(np.max(f) for f in fwhm_all if f.size))
        try:
            self.radius = psf_radius(np.array([fwhm_max]), config.support_fwhm,
                                     config.max_radius_px,
                                     ForwardModelConfig.min_support_fwhm, source)
        except PsfTooWide as exc:
            raise BadInputError(source, f"PSF_TAB: {str(exc).split(': ', 1)[-1]}") from None
        """Radius of the modelled PSF disc, pixels."""
        self.grid = _make_grid(lam.size, geo.data.shape[1], xc, self.radius)
        # float64, unlike the 2D forward model's float32: lmfit differentiates this model by
        # finite differences of relative step ~1.5e-8, below float32's rounding (6e-8), so a
        # float32 image makes the Jacobian noise and the fit stop σ-scale away from its
        # optimum, wherever the rounding happens to fall.
        self.psf1 = _psf(self.grid, xc, gamma, beta, dtype=np.float64)
        self.higher = tuple(self._higher_order(m, ratio, g, b, xc, geo.data.shape[1])
                            for m, ratio, g, b in higher)
        """Orders 2 (and 3) as drawn."""
        self.data = self.grid.gather(geo.data[sl])
        """Data − background on the window grid, e⁻."""
        self.weight = self.grid.gather(geo.weight[sl])
        """1/σ² on the window grid, 0 where unusable."""
        self.use = self.weight > 0
        """Pixels fitted."""

    def _higher_order(self, m: int, ratio: NDArray[np.float64], gamma: NDArray[np.float64],
                      beta: NDArray[np.float64], xc: NDArray[np.float64], n_cols: int
                      ) -> _HigherOrder:
        """Order ``m`` on its own grid: the rows it lights and R rows each side (on holo4_003
        about half the rows for order 2, a tenth for order 3); the rest of its image is
        zero."""
        lit = np.flatnonzero(ratio > 0)
        if not lit.size:
            return _HigherOrder(m, ratio, slice(0, 0), None, None)
        lo, hi = max(lit[0] - self.radius, 0), min(lit[-1] + self.radius + 1, ratio.size)
        rows = slice(lo, hi)
        grid = _make_grid(hi - lo, n_cols, xc[rows], self.radius)
        return _HigherOrder(m, ratio, rows, grid,
                            _psf(grid, xc[rows], gamma[rows], beta[rows], dtype=np.float64))

    @property
    def has_order2(self) -> bool:
        """Whether any modelled row gets order-2 (or order-3) light."""
        return any(bool(np.any(h.ratio > 0)) for h in self.higher)

    def row_flux(self, values: dict[str, float]
                 ) -> tuple[NDArray[np.float64], dict[int, NDArray[np.float64]]]:
        """First-order e⁻ of every row, and those of each higher order drawn."""
        model, acfg = self.model, self.acfg
        ang = values["angstrom"] if acfg.fit_angstrom else acfg.angstrom
        dens = model.static_fine * model.transmission_fine(values["pwv_mm"],
                                                           values["ozone_du"],
                                                           values["vaod"], ang)
        shift = values["dlambda_nm"]
        c1 = self._cumulative(dens, self.edges + shift)
        a1 = values["grey"] * (c1[:, 1] - c1[:, 0])
        # δλ corrects the wavelength solution: the row's order-1 light is of edges + δλ,
        # its order-m light of 1/m of that (grating equation), not of edges / m + δλ.
        # A2 scales r₂₁, hence order 3's r₃₁ = r₂₁ r₃₂ too.
        am: dict[int, NDArray[np.float64]] = {}
        for h in self.higher:
            cm = self._cumulative(dens, (self.edges + shift) / h.m)
            am[h.m] = values["grey"] * values["order2"] * h.ratio * (cm[:, 1] - cm[:, 0])
        return a1, am

    def _cumulative(self, dens: NDArray[np.float64], x: NDArray[np.float64]
                    ) -> NDArray[np.float64]:
        """∫ from the grid's first edge to ``x`` of the density given at the fine cell
        centres, read as linear between centres (constant over the two outer half cells).

        A piecewise-constant density (cells as steps) makes a row's flux piecewise linear in
        the shift with a jump of its derivative whenever a row edge crosses a cell edge: at
        759 nm (O₂ A band) one such jump changed d(flux)/dδλ of a row by 6000 e⁻/nm, and the
        χ² along δλ had kinks of 0.2 per σ. The linear density makes the integral C¹ in
        ``x``, hence in δλ.
        """
        nodes, seg = self._nodes, self._segment
        d = np.concatenate([dens[:1], dens, dens[-1:]])
        cum = np.concatenate([[0.0], np.cumsum(0.5 * (d[1:] + d[:-1]) * seg)])
        k = np.clip(np.searchsorted(nodes, x, side="right") - 1, 0, seg.size - 1)
        t = x - nodes[k]
        return cum[k] + t * (d[k] + 0.5 * t * (d[k + 1] - d[k]) / seg[k])

    def image(self, values: dict[str, float]) -> NDArray[np.float64]:
        """Model of the window grid, every order drawn, e⁻."""
        a1, am = self.row_flux(values)
        image = _window_model(self.psf1, a1, self.grid)
        for h in self.higher:
            if h.psf is not None and h.grid is not None:
                image[h.rows] += _window_model(h.psf, am[h.m][h.rows], h.grid)
        return image


def fit_atmosphere_spectrogram(spectrum: Spectrum, config: SpectrogramFitConfig | None = None,
                               source: str | None = None) -> AtmosphereFit:
    """Fit PWV, ozone, VAOD, grey, order-2 scale and shift on the spectrogram's pixels.

    Parameters
    ----------
    spectrum : Spectrum
        An atmospec spectrum of a CALSPEC star (or of any star with
        ``config.atmosphere.sed_path``) with its spectrogram (``S_DATA``, ``S_ERR``,
        ``S_BGD``, optionally ``S_RES``) and ``PSF_TAB``.
    config : SpectrogramFitConfig, optional
        Settings.
    source : str, optional
        File name for messages.

    Returns
    -------
    AtmosphereFit
        As `fit_atmosphere`, with ``values["order2"]`` (A2) and without ``resolution``;
        ``wavelength, flux, flux_err, model`` are per row: the windows' summed data and
        model (first + second order) in e⁻/nm, for plots; ``info["fit"] = "spectrogram"``.

    Raises
    ------
    BadInputError
        No spectrogram or PSF table, a spectrogram not in electrons, or what
        `SpectrumForwardModel` refuses.
    """
    config = config or SpectrogramFitConfig()
    acfg = config.atmosphere
    source = source or "spectrum"
    geo = _spectrogram(spectrum, source)  # refuses a spectrogram not in electrons
    # atmospec's flam export: flux in erg/s/cm2/nm beside a spectrogram in electrons.
    spectrum = to_electrons(spectrum, source=source)
    row_width = float(np.min(geo.edges[:, 1] - geo.edges[:, 0]))
    fine_step = acfg.fine_step_nm or float(np.clip(row_width / 4.0, 0.05, 0.5))
    # The fine grid reaches down to λ/3 of the bluest fitted row (as far as the spectrum
    # goes): orders 2 and 3 of that light land on the fitted rows. Cut at the fitted range,
    # a fit of 450-1095 nm drew no order 2 on its 700-900 nm rows (ozone at its bound).
    lo_req, hi_req = acfg.wavelength_range_nm
    model = SpectrumForwardModel(spectrum, sed_path=acfg.sed_path, instrument=acfg.instrument,
                                 wavelength_range_nm=(lo_req / 3.0, hi_req),
                                 max_shift_nm=acfg.max_shift_nm, max_resolution=1.0,
                                 fine_step_nm=fine_step, source=source)
    if not model.electrons:
        raise BadInputError(source, "the 2D fit needs a spectrum in e-/nm (atmospec's)")
    pix = _PixelModel(geo, model, config, source)
    lam, use = pix.wavelength, pix.use
    sqrt_w = np.sqrt(pix.weight[use])
    d_use = pix.data[use]
    n_pix = int(use.sum())

    lit = lam[np.interp(lam, model.fine_wavelength, model.static_fine)
              > 1e-3 * float(np.max(model.static_fine))]
    fixed = coverage_fixed(float(lam.min()), float(lam.max()), np.sort(lit), acfg)
    fixed.pop("resolution", None)
    start = {"grey": 1.0, "pwv_mm": acfg.pwv_mm, "ozone_du": acfg.ozone_du,
             "vaod": acfg.vaod, "angstrom": starting_angstrom(acfg), "dlambda_nm": 0.0,
             "order2": 1.0}
    m0 = pix.image(start)[use]
    grey0 = float(np.sum(m0 * d_use * sqrt_w**2) / max(np.sum(m0 * m0 * sqrt_w**2), 1e-300))
    params = lmfit_parameters(acfg, fixed, grey0 if grey0 > 0 else 1.0)
    has_order2 = pix.has_order2
    params.add("order2", value=1.0, min=config.order2_bounds[0], max=config.order2_bounds[1],
               vary=config.fit_order2 and has_order2)
    if not has_order2:
        fixed["order2"] = "no order-2 light inside the modelled rows"
    elif not config.fit_order2:
        fixed["order2"] = "by configuration"

    def residual(p: lmfit.Parameters) -> NDArray[np.float64]:
        return sqrt_w * (d_use - pix.image(p.valuesdict())[use])

    t0 = time.perf_counter()
    result = lmfit.minimize(residual, params, method="leastsq", scale_covar=False,
                            max_nfev=config.max_nfev)
    elapsed = time.perf_counter() - t0
    best = result.params
    free, values, errors, corr = lmfit_summary(result, acfg, source)
    chi2 = float(np.sum(residual(best) ** 2))
    ndof = n_pix - len(free)
    problems = lmfit_quality(result, errors, chi2 / ndof if ndof > 0 else math.nan,
                             acfg.quality)
    if problems:
        log.info("%s: spectrogram fit failed: %s", source, "; ".join(problems))
    rows = _row_summaries(pix, pix.image(best.valuesdict()))
    log.info("%s: spectrogram fit PWV %.2f mm, ozone %.0f DU, VAOD %.4f, A2 %.3f, χ²/ndof "
             "%.3f (%d pixels, %d evaluations, %.2f s)", source, values["pwv_mm"],
             values["ozone_du"], values["vaod"], values["order2"], chi2 / max(ndof, 1),
             n_pix, result.nfev, elapsed)
    info = {
        "fit": "spectrogram", "source": source, "target": spectrum.target,
        "sed": model.sed.source_file, "instrument": model.instrument,
        "disperser": model.disperser.name, "filter": model.filter_name,
        "airmass": model.airmass, "pressure_hpa": model.pressure_hpa,
        "exptime_s": model.exptime_s, "n_pixels": n_pix, "n_rows": int(lam.size),
        "orders": [1] + [h.m for h in pix.higher if np.any(h.ratio > 0)],
        "psf_radius_px": int(pix.radius),
    }
    return AtmosphereFit(
        values=values, errors=errors, free_parameters=free, correlation=corr, chi2=chi2,
        ndof=ndof, fixed=fixed, wavelength_range_nm=(float(lam.min()), float(lam.max())),
        wavelength=rows[0], flux=rows[1], flux_err=rows[2], model=rows[3],
        flux_unit=spectrum.flux_unit, covariance_used="pixels (S_ERR)",
        success=bool(result.success) and not problems, message=str(result.message),
        nfev=int(result.nfev), fit_time_s=elapsed, info=info, problems=problems,
        systematic=systematic_errors(acfg))


def _row_summaries(pix: _PixelModel, best_image: NDArray[np.float64]
                   ) -> tuple[NDArray[np.float64], ...]:
    """Per row, for plots: wavelength and the windows' data, error and model, per nm, over
    the rows with a fitted pixel, in increasing wavelength."""
    use = pix.use
    dl = np.abs(pix.edges[:, 1] - pix.edges[:, 0])
    row_data = np.where(use, pix.data, 0.0).sum(axis=1) / dl
    row_model = np.where(use, best_image, 0.0).sum(axis=1) / dl
    row_err = np.sqrt(np.where(use, 1.0 / np.where(use, pix.weight, 1.0), 0.0).sum(axis=1)) / dl
    covered = use.sum(axis=1) > 0
    order = np.argsort(pix.wavelength[covered])
    return (pix.wavelength[covered][order], row_data[covered][order],
            row_err[covered][order], row_model[covered][order])


#: Atmospheric parameters whose mutual correlation decides that a 1D fit is degenerate.
_ATMOSPHERIC = ("pwv_mm", "ozone_du", "vaod", "angstrom")


def degeneracy(fit: AtmosphereFit) -> tuple[float, str]:
    """Largest |correlation| between two fitted atmospheric parameters, and the pair (1 with
    ``"no covariance"`` when the fit could not estimate one)."""
    if not np.all(np.isfinite(fit.correlation)):
        return 1.0, "no covariance"
    names = [n for n in fit.free_parameters if n in _ATMOSPHERIC]
    worst, pair = 0.0, ""
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            r = abs(float(fit.correlation[fit.free_parameters.index(a),
                                          fit.free_parameters.index(b)]))
            if r > worst:
                worst, pair = r, f"{a}/{b}"
    return worst, pair


def fit_atmosphere_auto(spectrum: Spectrum, config: SpectrogramFitConfig | None = None,
                        source: str | None = None, max_correlation: float = 0.95
                        ) -> AtmosphereFit:
    """The 1D fit, replaced by the spectrogram fit when it is degenerate.

    Parameters
    ----------
    spectrum : Spectrum
        The spectrum (with its spectrogram for the fallback).
    config : SpectrogramFitConfig, optional
        Settings (``config.atmosphere`` for the 1D fit).
    source : str, optional
        File name for messages.
    max_correlation : float
        The 1D fit is degenerate when two atmospheric parameters correlate beyond this (or
        their covariance could not be estimated).

    Returns
    -------
    AtmosphereFit
        ``info["fit"]`` says which (``spectrum`` or ``spectrogram``) and
        ``info["degeneracy"]`` the 1D fit's largest correlation and its pair.
    """
    config = config or SpectrogramFitConfig()
    source = source or "spectrum"
    fit = fit_atmosphere(spectrum, config.atmosphere, source=source)
    worst, pair = degeneracy(fit)
    note = f"{pair} {worst:.3f}" if pair else "none"
    if worst <= max_correlation:
        fit.info.update({"fit": "spectrum", "degeneracy": note})
        return fit
    if spectrum.spectrogram is None:
        log.warning("%s: the 1D fit is degenerate (%s) and the file has no spectrogram to fit",
                    source, note)
        fit.info.update({"fit": "spectrum", "degeneracy": note})
        return fit
    log.info("%s: the 1D fit is degenerate (%s): fitting the spectrogram", source, note)
    fit2 = fit_atmosphere_spectrogram(spectrum, config, source=source)
    fit2.info["degeneracy"] = note
    return fit2
