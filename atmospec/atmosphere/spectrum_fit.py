"""Fit precipitable water vapour, ozone and aerosols from one extracted spectrum.

Forward model
-------------
For a spectrum in e⁻/nm (atmospec's, ``flux_unit = 'electron/nm'``)::

    M(λ_i) = A1 · [K_i ⊗ (F_λ · λ/hc · A · T_inst · T_filter · η₁ · T_atm · t_exp)](λ_i + δλ)

with F_λ the star's SED above the atmosphere (CALSPEC or a user file, erg/s/cm²/nm), A the
collecting area, T_inst the full-instrument throughput (telescope × QE), T_filter the
filter, η₁ the disperser's first-order efficiency, T_atm
`atmospec.atmosphere.transmission.AtmosphereModel` (libRadtran scale) and t_exp the exposure
time: exactly `atmospec.sim.dispersed.electrons_per_nm` (order 1) before the convolution.
Spectractor's own spectra (``UNIT2 = 'erg/s/cm$^2$/nm'``) are e⁻/s/nm × hc/λ / A, **not**
divided by the throughput: on the real CTIO HD111980 file (HoloAmAg, X = 1.131) the ratio
``flux / (CALSPEC · T_inst · η₁ · T_atm)`` is 1.00 ± 0.03 from 420 to 900 nm. Their model
is therefore ``A1 · K ⊗ (F_λ · T_inst · T_filter · η₁ · T_atm)`` (no area, no exposure time).

Second order: both atmospec's spectra (order 2 subtracted by `atmospec.spectro.chain`)
and Spectractor's (order 2 modelled in its 2D fit; ``ORDER2`` holds it for reference) are
first-order spectra, so no order-2 term is added.

*Resolution.* ``K_i`` is a Gaussian of standard deviation
``σ_i = sqrt((s · FWHM_i · |dλ/dpix|_i / 2.3548)² + dλ_i² / 12)``: the PSF table's FWHM
(pixels, interpolated in λ) times the local dispersion (one sample per pixel), scaled by
the resolution nuisance ``s``, in quadrature with the pixel's own width (a box of width
``dλ_i``). ``s`` is free by default in [0, 3]: a 2D forward-model extraction partly
deconvolves the spectrum (s < 1), a 1D extraction does not (s ≈ 1). Everything but the
atmosphere is computed once on a fine uniform grid (the SED averaged over each fine cell);
one model evaluation is ``T_atm`` on that grid, a product, and a gather-and-sum over a fixed
window of fine samples per data sample (``n × K`` operations, K ~ 8σ / step).

*Nuisance parameters.* ``A1`` (grey, achromatic: clouds, absolute calibration), ``δλ``
(``dlambda_nm``: the model is evaluated at λ_i + δλ, i.e. the spectrum's wavelengths are
too blue by δλ) and ``s`` (``resolution``).

*Atmosphere.* PWV (mm), ozone (DU), VAOD at 500 nm, with the pressure from the header
(``OUTPRESS``, ``PRESSURE``; else the site's standard pressure, with a warning) and the
airmass ``AIRMASS`` fixed. The aerosol shape is by default **libRadtran's default aerosol**
(``angstrom=None``, local Ångström exponent ~0.8 at 350 nm to ~1.3 at 1050 nm), fixed:
that is what Spectractor's libRadtran simulations (and the CTIO grid) use, so VAOD compares
one to one with theirs; and with a free grey term the exponent is nearly degenerate with
VAOD for VAOD ≲ 0.05 (only the curvature of τ_a(λ) separates them). ``fit_angstrom=True``
frees a power-law exponent (start 1.3, bounds 0–3) for thick aerosol.

Fit
---
Weighted least squares with the spectrum's covariance restricted to the fitted range:
``χ² = rᵀ C⁻¹ r`` computed as ``|L⁻¹ r|²`` with C = L Lᵀ (Cholesky,
`atmospec.fitting.Whitener`). A covariance that is
absent uses ``flux_err²``; one with NaNs or not positive definite is **replaced by its
diagonal with a warning** (``AtmosphereFit.covariance_used`` says so): the fit is still
meaningful, its errors ignore correlations. Samples with non-finite flux or error are
dropped with a warning; more than ``max_bad_fraction`` of them, or non-positive errors,
raise `BadInputError`. lmfit (Levenberg–Marquardt with bound transforms), bounds PWV 0–20 mm,
ozone 100–700 DU, VAOD 0–1, grey > 0. Errors are the unscaled ones of the covariance
(``(JᵀC⁻¹J)⁻¹``); ``errors_scaled`` multiplies them by sqrt(χ²/ndof) when that exceeds 1.

A parameter whose feature lies outside the fitted range is fixed at its starting value and
reported in ``AtmosphereFit.fixed`` with the reason (`FEATURE_WINDOWS`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import lmfit
import numpy as np
from numpy.typing import NDArray

from atmospec.atmosphere.transmission import AtmosphereModel, load_tables
from atmospec.camera.spectrograph import load_instrument
from atmospec.errors import BadInputError
from atmospec.fitting import (
    FitQualityConfig,
    Whitener,
    bound_reached,
    fit_problems,
    usable_error,
)
from atmospec.spectro.calspec import StellarSED, load_sed, resolve_target
from atmospec.spectro.dispersers import load_disperser
from atmospec.spectro.spectrum import Spectrum
from atmospec.spectro.units import (
    FLAM_UNIT,
    HC_ERG_NM,
    exposure_time_s,
    instrument_name,
    is_electron_unit,
    is_flam_unit,
)

__all__ = [
    "ATMOSPHERE_PARAMETERS",
    "FEATURE_WINDOWS",
    "AtmosphereFit",
    "AtmosphereFitConfig",
    "NoReferenceSED",
    "SpectrumForwardModel",
    "coverage_fixed",
    "fit_atmosphere",
    "lmfit_quality",
]

log = logging.getLogger(__name__)

#: FWHM / σ of a Gaussian.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
#: Atmospheric parameters, in the order they are reported.
ATMOSPHERE_PARAMETERS = ("pwv_mm", "ozone_du", "vaod", "angstrom")
#: Nuisance parameters.
NUISANCE_PARAMETERS = ("grey", "dlambda_nm", "resolution")
#: Wavelength window (nm) the fitted range must cover for a parameter to be fitted.
FEATURE_WINDOWS: Mapping[str, tuple[float, float, str]] = MappingProxyType({
    "pwv_mm": (900.0, 980.0, "the H2O band at 930-980 nm and its blue continuum"),
    "ozone_du": (520.0, 680.0, "the ozone Chappuis band (520-680 nm)"),
    "vaod": (420.0, 800.0, "the aerosol colour lever arm (420-800 nm)"),
    "angstrom": (400.0, 950.0, "the aerosol colour lever arm (400-950 nm)"),
    "dlambda_nm": (755.0, 770.0, "the O2 A band (760 nm)"),
})


@dataclass(frozen=True)
class AtmosphereFitConfig:
    """How `fit_atmosphere` fits one spectrum."""

    wavelength_range_nm: tuple[float, float] = (350.0, 1095.0)
    """Fitted range, nm, further limited to the spectrum, the SED and the atmosphere tables
    (300–1100 nm, minus the kernel margin)."""
    sed_path: str | None = None
    """User SED file (any `load_sed` format) for a target that is not a shipped CALSPEC
    standard; None: the CALSPEC standard named by ``TARGET``."""
    instrument: str | None = None
    """Instrument profile (``latiss``, ``ctio``); None: header ``INSTRMNT``, else ``ctio`` if
    ``TELESCOP`` names CTIO, else ``latiss``."""
    pwv_mm: float = 3.0
    """Starting (or fixed) precipitable water vapour, mm."""
    ozone_du: float = 300.0
    """Starting (or fixed) ozone column, DU."""
    vaod: float = 0.03
    """Starting (or fixed) vertical aerosol optical depth at 500 nm."""
    angstrom: float | None = None
    """Aerosol Ångström exponent when fixed; None: libRadtran's default aerosol shape (what
    Spectractor's libRadtran simulations use)."""
    fit_angstrom: bool = False
    """Free a power-law Ångström exponent (start ``angstrom`` or 1.3, bounds 0–3)."""
    fit_pwv: bool = True
    """Fit PWV (it is fixed anyway when the range misses the H2O band)."""
    fit_ozone: bool = True
    """Fit ozone (fixed anyway when the range misses the Chappuis band)."""
    fit_vaod: bool = True
    """Fit VAOD (fixed anyway when the range is too narrow for the aerosol colour)."""
    fit_shift: bool = True
    """Fit the wavelength shift ``dlambda_nm``."""
    fit_resolution: bool = True
    """Fit the resolution scale ``resolution`` (else fixed at 1: the PSF table's FWHM)."""
    pwv_bounds: tuple[float, float] = (0.0, 20.0)
    """PWV bounds, mm."""
    ozone_bounds: tuple[float, float] = (100.0, 700.0)
    """Ozone bounds, DU."""
    vaod_bounds: tuple[float, float] = (0.0, 1.0)
    """VAOD bounds."""
    angstrom_bounds: tuple[float, float] = (0.0, 3.0)
    """Ångström exponent bounds (when fitted)."""
    max_shift_nm: float = 3.0
    """Bound on ``|dlambda_nm|``, nm (also the margin of the fine grid)."""
    resolution_bounds: tuple[float, float] = (0.0, 3.0)
    """Bounds of the resolution scale (0: only the pixel width)."""
    fine_step_nm: float | None = None
    """Step of the internal fine grid, nm; None: a third of the smallest kernel σ at
    resolution 1, within 0.05–0.5 nm."""
    max_bad_fraction: float = 0.1
    """Largest fraction of non-finite samples in the fitted range that are dropped (with a
    warning) rather than refused."""
    use_covariance: bool = True
    """Weight with the full covariance (``SPEC_COV``); False: ``flux_err²`` only."""
    max_nfev: int = 2000
    """Largest number of model evaluations of the minimiser."""
    systematic_pwv_mm: float = 0.039
    """Systematic error of PWV, mm, added in quadrature to the quoted errors
    (`AtmosphereFit.errors_quoted`); 0: none. See `SYSTEMATICS_NOTE`."""
    systematic_ozone_du: float = 3.6
    """Systematic error of the ozone column, DU (as ``systematic_pwv_mm``)."""
    systematic_vaod: float = 0.0062
    """Systematic error of the VAOD (as ``systematic_pwv_mm``)."""
    quality: FitQualityConfig = field(default_factory=FitQualityConfig)
    """When the fit counts as failed (`atmospec.fitting.fit_problems`: optimiser failure, a
    free parameter at a bound, no uncertainty, χ²/ndof beyond the limit); used by the 1D,
    spectrogram and joint fits alike."""


#: Where the default systematic errors of `AtmosphereFitConfig` come from (issue 21).
SYSTEMATICS_NOTE = (
    "measured on 40 simulated full-frame holo4_003 exposures of two demo nights through the "
    "night's chain (ISR with the night's masters, 2D extraction, this fit): beyond the "
    "covariance's errors, the extraction leaves broadband (colour) flux errors that vary "
    "from exposure to exposure (VAOD scatter 0.0037-0.0055 against 0.0027 without the detector, "
    "the same with perfect calibration products) and the 2D model's line-spread shape "
    "biases PWV by -0.03 to -0.05 mm even without noise; see docs/atmosphere.md")


def systematic_errors(config: AtmosphereFitConfig) -> dict[str, float]:
    """The per-parameter systematic errors of ``config`` (zeros left out).

    Parameters
    ----------
    config : AtmosphereFitConfig
        The fit's settings.

    Returns
    -------
    dict
        ``pwv_mm``, ``ozone_du``, ``vaod`` → error.
    """
    terms = {"pwv_mm": config.systematic_pwv_mm, "ozone_du": config.systematic_ozone_du,
             "vaod": config.systematic_vaod}
    return {k: float(v) for k, v in terms.items() if v > 0}


def quoted_errors(errors: dict[str, float | None], scale: float,
                  systematic: dict[str, float]) -> dict[str, float | None]:
    """``errors × scale ⊕ systematic`` per parameter (None stays None: fixed, or no
    error); the one rule every fit's quoted errors follow.

    Parameters
    ----------
    errors : dict
        Statistical errors (from the covariance).
    scale : float
        √(χ²/ndof) when above 1, else 1.
    systematic : dict
        Systematic errors by parameter (`systematic_errors`).

    Returns
    -------
    dict
    """
    return {k: (None if v is None else math.hypot(v * scale, systematic.get(k, 0.0)))
            for k, v in errors.items()}


def errors_label(scale: float, chi2_ndof: float, systematic: dict[str, float]) -> str:
    """How quoted errors were made (`quoted_errors`), for a title, a table or a line."""
    text = (f"errors scaled by √(χ²/ndof) = {scale:.2f}" if scale > 1.0
            else f"errors unscaled (χ²/ndof = {chi2_ndof:.2f} ≤ 1)")
    if systematic:
        parts = {"pwv_mm": "PWV {:.3g} mm", "ozone_du": "O3 {:.3g} DU", "vaod": "VAOD {:.2g}"}
        text += " ⊕ systematic " + ", ".join(parts[k].format(v) for k, v in systematic.items()
                                              if k in parts)
    return text


@dataclass(frozen=True)
class _Params:
    """One point of parameter space (internal)."""

    grey: float
    pwv_mm: float
    ozone_du: float
    vaod: float
    angstrom: float | None
    dlambda_nm: float
    resolution: float


class SpectrumForwardModel:
    """Expected flux of a spectrum as a function of the atmosphere and nuisance parameters.

    Parameters
    ----------
    spectrum : Spectrum
        The spectrum (its wavelengths, header, PSF table and flux unit define the model).
    sed_path : str or Path, optional
        User SED file; default the CALSPEC standard ``TARGET`` names.
    instrument : str, optional
        Instrument profile; default from the header (see `AtmosphereFitConfig.instrument`).
    wavelength_range_nm : tuple of float, optional
        Samples modelled; default every sample the tables allow.
    max_shift_nm : float
        Largest wavelength shift the model will be asked for, nm.
    max_resolution : float
        Largest resolution scale the model will be asked for.
    fine_step_nm : float, optional
        Fine-grid step, nm (see `AtmosphereFitConfig.fine_step_nm`).
    source : str, optional
        Name for error messages (the file).

    Raises
    ------
    BadInputError
        Non-CALSPEC target without SED, unknown disperser/filter/instrument, missing
        ``AIRMASS`` (or ``EXPTIME`` for e⁻ spectra), an unknown flux unit, or no sample left.
    """

    def __init__(self, spectrum: Spectrum, sed_path: str | Path | None = None,
                 instrument: str | None = None,
                 wavelength_range_nm: tuple[float, float] | None = None,
                 max_shift_nm: float = 3.0, max_resolution: float = 3.0,
                 fine_step_nm: float | None = None, source: str | None = None) -> None:
        self.source = source or str(spectrum.header.get("FILENAME", "spectrum"))
        self.spectrum = spectrum
        self.instrument = instrument_name(spectrum, instrument)
        self.flux_unit = spectrum.flux_unit
        unit = spectrum.flux_unit.strip()
        if is_electron_unit(unit):
            self.electrons = True
        elif is_flam_unit(unit):
            self.electrons = False
        else:
            raise BadInputError(self.source, f"flux unit {unit!r} is neither e-/nm nor "
                                             f"{FLAM_UNIT}: cannot model it")
        self.sed = _load_sed(spectrum, sed_path, self.source)
        airmass = spectrum.airmass
        if airmass is None or not airmass >= 1.0:
            raise BadInputError(self.source, f"AIRMASS {airmass!r} missing or < 1")
        self.airmass = float(airmass)
        pressure = spectrum.get_float("OUTPRESS") or spectrum.get_float("PRESSURE")
        if pressure is None or not pressure > 0:
            pressure = load_instrument(self.instrument).standard_pressure_hpa
            log.warning("%s: no OUTPRESS/PRESSURE in the header: using %.1f hPa",
                        self.source, pressure)
        self.pressure_hpa = float(pressure)
        self.exptime_s = exposure_time_s(spectrum, self.source, needed=self.electrons)
        name = spectrum.disperser
        if not name:
            raise BadInputError(self.source, "no GRATING/DISPERSER in the header")
        try:
            self.disperser = load_disperser(name, self.instrument)
            self.profile = load_instrument(self.instrument)
        except BadInputError as exc:
            raise BadInputError(self.source, exc.problem) from None
        self.filter_name = str(spectrum.header.get("FILTER", "") or "").strip()
        try:
            self.profile.filter_transmission(self.filter_name, np.array([500.0]))
        except BadInputError as exc:
            raise BadInputError(self.source, f"FILTER {self.filter_name!r}: {exc.problem}"
                                ) from None

        self.max_shift_nm = float(max_shift_nm)
        self.max_resolution = float(max_resolution)
        sig_max, margin = self._select_samples(spectrum, wavelength_range_nm)
        self._build_fine_grid(fine_step_nm, sig_max, margin)
        self._kernel_key: tuple[float, float] | None = None
        self._kernel: NDArray[np.float64] | None = None

    # ------------------------------------------------------------------ set-up
    def _select_samples(self, spectrum: Spectrum,
                        wavelength_range_nm: tuple[float, float] | None
                        ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Kernel widths of every sample and the samples modelled: inside the requested range
        with their widest kernel (largest shift and resolution) inside the tables and the
        SED. Returns that widest σ and the margin of the modelled samples, nm."""
        lam_all = spectrum.wavelength
        pix_nm = np.abs(np.gradient(lam_all)) if lam_all.size > 1 else np.ones(1)
        self._psf_sigma_all = _psf_fwhm_px(spectrum, lam_all) * pix_nm / FWHM_PER_SIGMA
        self._box_sigma_all = pix_nm / math.sqrt(12.0)
        sig_max = np.sqrt((self.max_resolution * self._psf_sigma_all) ** 2
                          + self._box_sigma_all ** 2)
        margin = 4.0 * sig_max + self.max_shift_nm + 0.5
        tables = load_tables()
        lo_tab, hi_tab = float(tables.wavelength_nm[0]), float(tables.wavelength_nm[-1])
        sed_lo, sed_hi = self.sed.coverage_nm
        lo_req, hi_req = wavelength_range_nm or (-np.inf, np.inf)
        keep = ((lam_all >= lo_req) & (lam_all <= hi_req)
                & (lam_all - margin >= max(lo_tab, sed_lo))
                & (lam_all + margin <= min(hi_tab, sed_hi)))
        if keep.sum() < 10:
            raise BadInputError(self.source, f"fewer than 10 samples inside {lo_req:g}-"
                                             f"{hi_req:g} nm and the tables' "
                                             f"{max(lo_tab, sed_lo):g}-"
                                             f"{min(hi_tab, sed_hi):g} nm")
        self.index = np.flatnonzero(keep)
        """Indices of the modelled samples in the spectrum."""
        self.wavelength = lam_all[keep]
        """Modelled wavelengths, nm."""
        self._psf_sigma = self._psf_sigma_all[keep]
        self._box_sigma = self._box_sigma_all[keep]
        return sig_max[keep], margin[keep]

    def _build_fine_grid(self, fine_step_nm: float | None, sig_max: NDArray[np.float64],
                         margin: NDArray[np.float64]) -> None:
        """Fine uniform grid covering every kernel at the largest shift and resolution,
        everything but the atmosphere on it, and each sample's window of fine cells."""
        if fine_step_nm is None:
            s1 = np.sqrt(self._psf_sigma ** 2 + self._box_sigma ** 2)
            fine_step_nm = float(np.clip(np.min(s1) / 3.0, 0.05, 0.5))
        self.fine_step_nm = float(fine_step_nm)
        f_lo = float(np.min(self.wavelength - margin))
        f_hi = float(np.max(self.wavelength + margin))
        # Floor, not ceil: the grid must not step past the tables' last wavelength.
        n_fine = math.floor((f_hi - f_lo) / self.fine_step_nm + 1e-9) + 1
        self.fine_wavelength = f_lo + self.fine_step_nm * np.arange(n_fine)
        """Fine grid (cell centres), nm."""
        edges = np.concatenate([self.fine_wavelength - 0.5 * self.fine_step_nm,
                                [self.fine_wavelength[-1] + 0.5 * self.fine_step_nm]])
        sed_fine = np.nan_to_num(self.sed.binned(edges), nan=0.0)
        self.static_fine = sed_fine * self._static_factor(self.fine_wavelength)
        """Everything but the atmosphere on the fine grid (SED averaged over each cell)."""
        self.atmosphere = AtmosphereModel(self.fine_wavelength)
        """Atmosphere evaluated on the fine grid."""
        half = math.ceil((4.0 * float(np.max(sig_max)) + self.max_shift_nm)
                         / self.fine_step_nm) + 1
        self._k = np.arange(-half, half + 1)
        centre = np.rint((self.wavelength - f_lo) / self.fine_step_nm).astype(np.int64)
        raw = centre[:, None] + self._k[None, :]
        self._idx = np.clip(raw, 0, n_fine - 1)
        # Window positions beyond the fine grid (samples with a narrower margin than the
        # widest kernel) get no weight, rather than the repeated edge value.
        self._outside = (raw < 0) | (raw >= n_fine)
        self._dl = np.where(self._outside, np.inf,
                            self.fine_wavelength[self._idx] - self.wavelength[:, None])

    # ------------------------------------------------------------------ pieces
    def _static_factor(self, lam: NDArray[np.float64]) -> NDArray[np.float64]:
        """Instrument factor multiplying F_λ: e⁻/nm per erg/s/cm²/nm, or 1 × T for erg."""
        lam = np.asarray(lam, dtype=np.float64)
        t = (np.asarray(self.profile.throughput(lam), dtype=np.float64)
             * np.asarray(self.profile.filter_transmission(self.filter_name, lam),
                          dtype=np.float64)
             * np.asarray(self.disperser.order_efficiency(1, lam), dtype=np.float64))
        if self.electrons:
            return t * lam / HC_ERG_NM * self.profile.collecting_area_cm2 * self.exptime_s
        return t

    def unconvolved(self, wavelength_nm: NDArray[np.float64], pwv_mm: float,
                    ozone_du: float, vaod: float, angstrom: float | None = None,
                    grey: float = 1.0) -> NDArray[np.float64]:
        """The model at full resolution at arbitrary wavelengths (SED interpolated, no cell
        average): for e⁻ spectra, `atmospec.sim.dispersed.electrons_per_nm` order 1 × grey.

        Parameters
        ----------
        wavelength_nm : numpy.ndarray
            Wavelengths, nm (300–1100).
        pwv_mm, ozone_du, vaod, angstrom : float
            Atmosphere (``angstrom=None``: libRadtran's default aerosol shape).
        grey : float
            Grey scale.

        Returns
        -------
        numpy.ndarray
            Flux in the spectrum's unit (0 outside the SED).
        """
        lam = np.asarray(wavelength_nm, dtype=np.float64)
        sed = np.nan_to_num(np.asarray(self.sed.flux_at(lam), dtype=np.float64), nan=0.0)
        atm = AtmosphereModel(lam).transmission(self.airmass, self.pressure_hpa, pwv_mm,
                                                ozone_du, vaod, angstrom)
        return grey * sed * self._static_factor(lam) * atm

    def sigma_nm(self, resolution: float = 1.0) -> NDArray[np.float64]:
        """Kernel standard deviation at each modelled sample, nm."""
        return np.sqrt((resolution * self._psf_sigma) ** 2 + self._box_sigma ** 2)

    def kernel(self, dlambda_nm: float = 0.0, resolution: float = 1.0
               ) -> NDArray[np.float64]:
        """Normalised weights ``(n_samples, K)`` of the fine samples `convolve` sums."""
        key = (float(dlambda_nm), float(resolution))
        if key != self._kernel_key or self._kernel is None:
            sig = self.sigma_nm(resolution)[:, None]
            w = np.exp(-0.5 * ((self._dl - dlambda_nm) / sig) ** 2)
            w /= w.sum(axis=1, keepdims=True)
            self._kernel, self._kernel_key = w, key
        return self._kernel

    def convolve(self, fine_values: NDArray[np.float64], dlambda_nm: float = 0.0,
                 resolution: float = 1.0) -> NDArray[np.float64]:
        """Convolve values on `fine_wavelength` to the modelled samples.

        Parameters
        ----------
        fine_values : numpy.ndarray
            Flux density on `fine_wavelength`.
        dlambda_nm : float
            Wavelength shift: the kernel of sample i is centred at λ_i + dlambda_nm.
        resolution : float
            Resolution scale (1: the PSF table's FWHM).

        Returns
        -------
        numpy.ndarray
            One value per modelled sample.
        """
        if abs(dlambda_nm) > self.max_shift_nm + 1e-9 or resolution > self.max_resolution:
            raise ValueError("shift or resolution beyond the model's precomputed margins")
        w = self.kernel(dlambda_nm, resolution)
        return np.einsum("ij,ij->i", w, np.asarray(fine_values)[self._idx])

    def transmission_fine(self, pwv_mm: float, ozone_du: float, vaod: float,
                          angstrom: float | None = None) -> NDArray[np.float64]:
        """Atmospheric transmission on `fine_wavelength`."""
        return self.atmosphere.transmission(self.airmass, self.pressure_hpa, pwv_mm,
                                            ozone_du, vaod, angstrom)

    def __call__(self, pwv_mm: float, ozone_du: float, vaod: float,
                 angstrom: float | None = None, grey: float = 1.0,
                 dlambda_nm: float = 0.0, resolution: float = 1.0) -> NDArray[np.float64]:
        """Expected flux at the modelled samples (`wavelength`), in the spectrum's unit."""
        fine = self.static_fine * self.transmission_fine(pwv_mm, ozone_du, vaod, angstrom)
        return grey * self.convolve(fine, dlambda_nm, resolution)

    def with_transmission(self, transmission_fine: NDArray[np.float64], grey: float = 1.0,
                          dlambda_nm: float = 0.0, resolution: float = 1.0
                          ) -> NDArray[np.float64]:
        """Expected flux for any transmission given on `fine_wavelength` (e.g. libRadtran)."""
        return grey * self.convolve(self.static_fine * transmission_fine, dlambda_nm,
                                    resolution)


@dataclass(frozen=True)
class AtmosphereFit:
    """Result of `fit_atmosphere` (`to_dict` gives a JSON-able summary)."""

    values: dict[str, float | None]
    """Best (or fixed) value of every parameter: ``pwv_mm, ozone_du, vaod, angstrom, grey,
    dlambda_nm, resolution`` (``angstrom`` None: libRadtran's default aerosol shape)."""
    errors: dict[str, float | None]
    """1σ errors from the covariance (unscaled); None for fixed parameters or when lmfit
    could not estimate them (no covariance, or a zero variance at a bound)."""
    free_parameters: tuple[str, ...]
    """Fitted parameters, in the order of `correlation`."""
    correlation: NDArray[np.float64]
    """Correlation matrix of the free parameters."""
    chi2: float
    """χ² at the best fit (with the covariance used)."""
    ndof: int
    """Degrees of freedom: samples − free parameters."""
    fixed: dict[str, str]
    """Fixed parameters and why (range not covering the feature, or configuration)."""
    wavelength_range_nm: tuple[float, float]
    """First and last fitted wavelength, nm."""
    wavelength: NDArray[np.float64]
    """Fitted wavelengths, nm."""
    flux: NDArray[np.float64]
    """Fitted data, in `flux_unit`."""
    flux_err: NDArray[np.float64]
    """1σ errors of the data (diagonal of the covariance)."""
    model: NDArray[np.float64]
    """Best-fit model at `wavelength`."""
    flux_unit: str
    """Unit of `flux` and `model`."""
    covariance_used: str
    """``full``, ``diagonal`` or ``diagonal (reason)`` when the covariance was unusable."""
    success: bool
    """Whether the fit is usable: the minimiser succeeded and `problems` is empty."""
    message: str
    """lmfit's message."""
    nfev: int
    """Number of model evaluations."""
    fit_time_s: float
    """Wall time of the minimisation, s."""
    info: dict[str, Any] = field(default_factory=dict)
    """Context: source, target, SED file, instrument, disperser, filter, airmass,
    pressure_hpa, exptime_s, dropped samples."""
    problems: tuple[str, ...] = ()
    """Why the fit failed (`atmospec.fitting.fit_problems`); empty for a usable fit."""
    systematic: dict[str, float] = field(default_factory=dict)
    """Systematic errors added in quadrature to the quoted errors (`systematic_errors`)."""

    @property
    def chi2_ndof(self) -> float:
        """χ² / ndof (NaN for ndof ≤ 0)."""
        return self.chi2 / self.ndof if self.ndof > 0 else float("nan")

    @property
    def residuals(self) -> NDArray[np.float64]:
        """Data − model at `wavelength`."""
        return self.flux - self.model

    @property
    def error_scale(self) -> float:
        """The factor from `errors` to `errors_scaled`: √(χ²/ndof) when that exceeds 1,
        else 1 (also for ndof ≤ 0)."""
        if self.ndof <= 0 or not math.isfinite(self.chi2_ndof):
            return 1.0
        return math.sqrt(max(1.0, self.chi2_ndof))

    @property
    def errors_scaled(self) -> dict[str, float | None]:
        """`errors` × `error_scale`: for data the model does not describe to noise."""
        scale = self.error_scale
        return {k: (None if v is None else v * scale) for k, v in self.errors.items()}

    @property
    def errors_quoted(self) -> dict[str, float | None]:
        """`errors_scaled` ⊕ `systematic` (`quoted_errors`): the errors every output quotes
        (the command's line, the plot's title, the night's summary table), labelled by
        `errors_label`."""
        return quoted_errors(self.errors, self.error_scale, self.systematic)

    @property
    def errors_label(self) -> str:
        """How the quoted errors (`errors_quoted`) were made, for a title or a table."""
        return errors_label(self.error_scale, self.chi2_ndof, self.systematic)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dictionary of the whole result."""
        def num(v: float | None) -> float | None:
            return None if v is None or not np.isfinite(v) else float(v)

        return {
            "values": {k: num(v) for k, v in self.values.items()},
            "errors": {k: num(v) for k, v in self.errors.items()},
            "errors_scaled": {k: num(v) for k, v in self.errors_scaled.items()},
            "error_scale": float(self.error_scale),
            "systematic_errors": dict(self.systematic),
            "errors_quoted": {k: num(v) for k, v in self.errors_quoted.items()},
            "errors_label": self.errors_label,
            "free_parameters": list(self.free_parameters),
            "correlation": np.where(np.isfinite(self.correlation), self.correlation,
                                    None).tolist(),
            "chi2": num(self.chi2),
            "ndof": int(self.ndof),
            "chi2_ndof": num(self.chi2_ndof),
            "fixed": dict(self.fixed),
            "wavelength_range_nm": [float(v) for v in self.wavelength_range_nm],
            "covariance_used": self.covariance_used,
            "success": bool(self.success),
            "problems": list(self.problems),
            "message": self.message,
            "nfev": int(self.nfev),
            "fit_time_s": float(self.fit_time_s),
            "flux_unit": self.flux_unit,
            "info": {k: (num(v) if isinstance(v, float) else v) for k, v in self.info.items()},
            "residuals": {
                "wavelength_nm": self.wavelength.tolist(),
                "flux": self.flux.tolist(),
                "flux_err": self.flux_err.tolist(),
                "model": self.model.tolist(),
            },
        }


# ---------------------------------------------------------------------- helpers
class NoReferenceSED(BadInputError):
    """The spectrum's target has no SED to fit the atmosphere against: no target name, or
    not a shipped CALSPEC standard, and no SED file given. The command refuses it (exit 2);
    a night records its atmosphere fit as skipped with this note, not as a failure."""


def _load_sed(spectrum: Spectrum, sed_path: str | Path | None, source: str) -> StellarSED:
    if sed_path is not None:
        try:
            return load_sed(Path(sed_path))
        except BadInputError as exc:
            raise BadInputError(sed_path, exc.problem) from None
    target = spectrum.target
    if not target:
        raise NoReferenceSED(source, "no TARGET/OBJECT in the header: give the star's SED "
                                     "file")
    try:
        entry = resolve_target(target)
    except BadInputError:
        raise NoReferenceSED(source, f"target {target!r} is not a CALSPEC standard shipped "
                                    "with atmospec: the atmosphere fit needs the star's SED "
                                    "above the atmosphere; give it as a file (sed_path, "
                                    "--sed)") from None
    return load_sed(entry.name)


def _psf_fwhm_px(spectrum: Spectrum, lam: NDArray[np.float64]) -> NDArray[np.float64]:
    """PSF FWHM (pixels) at each wavelength from ``PSF_TAB`` (interpolated in λ)."""
    table = spectrum.psf_table
    if table is None or "fwhm" not in table.colnames or "lambdas" not in table.colnames:
        fwhm = spectrum.get_float("MEANFWHM")
        if fwhm is None:
            log.warning("no PSF table and no MEANFWHM: resolution from the pixel width only")
            fwhm = 0.0
        return np.full(lam.shape, float(fwhm))
    tl = np.asarray(table["lambdas"], dtype=np.float64)
    tf = np.asarray(table["fwhm"], dtype=np.float64)
    ok = np.isfinite(tl) & np.isfinite(tf) & (tf > 0)
    if ok.sum() < 2:
        return np.full(lam.shape, float(np.nanmedian(tf)) if ok.any() else 0.0)
    order = np.argsort(tl[ok])
    return np.interp(lam, tl[ok][order], tf[ok][order])


def _covers(lit_nm: NDArray[np.float64], w_lo: float, w_hi: float,
            max_gap_nm: float = 10.0, edge_nm: float = 0.0) -> bool:
    """Whether the lit samples ``lit_nm`` span ``[w_lo, w_hi]`` without a gap > max_gap_nm;
    a first (last) sample at most ``edge_nm`` inside the window reaches its edge."""
    if lit_nm.size < 2 or lit_nm[0] > w_lo + edge_nm or lit_nm[-1] < w_hi - edge_nm:
        return False
    inside = lit_nm[(lit_nm >= w_lo - max_gap_nm) & (lit_nm <= w_hi + max_gap_nm)]
    return inside.size >= 2 and float(np.max(np.diff(inside))) <= max_gap_nm


def coverage_fixed(lo: float, hi: float, lit_nm: NDArray[np.float64],
                   config: AtmosphereFitConfig) -> dict[str, str]:
    """Parameters to fix because the fitted range ``[lo, hi]`` or the lit samples
    ``lit_nm`` (light through the filter) do not cover their feature window, with the
    reason, among those ``config`` asks to fit.

    ``lo`` and ``hi`` are the first and last samples fitted: they lie up to one sampling
    step inside the range asked for (``--range 400 1000`` on a spectrum sampled every 2.4
    nm starts at 400.3 nm), so a window edge counts as covered by a sample within one step
    (the median spacing of ``lit_nm``) of it. A reason reads after ``<name> fixed:``.
    """
    step = float(np.median(np.diff(lit_nm))) if lit_nm.size > 1 else 0.0
    wanted = {"pwv_mm": config.fit_pwv, "ozone_du": config.fit_ozone,
              "vaod": config.fit_vaod, "angstrom": config.fit_angstrom,
              "dlambda_nm": config.fit_shift}
    fixed: dict[str, str] = {}
    for name, fit in wanted.items():
        if not fit:
            if name == "angstrom":
                fixed[name] = ("by configuration" if config.angstrom is not None else
                               "libRadtran's default aerosol shape (--fit-angstrom fits an "
                               "Ångström exponent)")
            else:
                fixed[name] = "by configuration"
            continue
        w_lo, w_hi, what = FEATURE_WINDOWS[name]
        if lo > w_lo + step or hi < w_hi - step:
            fixed[name] = (f"fitted range {lo:.0f}-{hi:.0f} nm does not cover {what}: "
                           "held at its starting value")
        elif not _covers(lit_nm, w_lo, w_hi, edge_nm=step):
            fixed[name] = (f"no light through the instrument/filter over {what}: held at "
                           "its starting value")
    if not config.fit_resolution:
        fixed["resolution"] = "by configuration"
    return fixed


def starting_angstrom(config: AtmosphereFitConfig) -> float:
    """Starting Ångström exponent when it is fitted: the configuration's, else 1.3."""
    return config.angstrom if config.angstrom is not None else 1.3


def lmfit_parameters(config: AtmosphereFitConfig, fixed: Mapping[str, str], grey: float
                     ) -> lmfit.Parameters:
    """The lmfit parameters the spectrum and spectrogram fits share, in this order: grey,
    PWV, ozone, VAOD, Ångström exponent, shift, with the configuration's starts and bounds;
    those in ``fixed`` (and the exponent unless ``fit_angstrom``) held at their start."""
    params = lmfit.Parameters()
    params.add("grey", value=grey, min=0.0)
    params.add("pwv_mm", value=config.pwv_mm, min=config.pwv_bounds[0],
               max=config.pwv_bounds[1], vary="pwv_mm" not in fixed)
    params.add("ozone_du", value=config.ozone_du, min=config.ozone_bounds[0],
               max=config.ozone_bounds[1], vary="ozone_du" not in fixed)
    params.add("vaod", value=config.vaod, min=config.vaod_bounds[0],
               max=config.vaod_bounds[1], vary="vaod" not in fixed)
    params.add("angstrom", value=starting_angstrom(config), min=config.angstrom_bounds[0],
               max=config.angstrom_bounds[1],
               vary=config.fit_angstrom and "angstrom" not in fixed)
    params.add("dlambda_nm", value=0.0, min=-config.max_shift_nm, max=config.max_shift_nm,
               vary="dlambda_nm" not in fixed)
    return params


def lmfit_summary(result: lmfit.minimizer.MinimizerResult, config: AtmosphereFitConfig,
                  source: str) -> tuple[tuple[str, ...], dict[str, float | None],
                                        dict[str, float | None], NDArray[np.float64]]:
    """Free parameters, values, 1σ errors (None when fixed or not estimated) and the
    correlation matrix of the free parameters, from an lmfit result; ``angstrom`` is
    reported as the configuration's (None: libRadtran's shape) unless it was fitted."""
    best = result.params
    free = tuple(name for name in best if best[name].vary)
    values: dict[str, float | None] = {k: float(best[k].value) for k in best}
    if not config.fit_angstrom:
        values["angstrom"] = config.angstrom
    errors: dict[str, float | None] = {k: None for k in best}
    corr = np.full((len(free), len(free)), np.nan)
    if result.covar is not None and len(result.var_names) == len(free):
        cv = np.asarray(result.covar)
        sd = np.sqrt(np.clip(np.diag(cv), 0.0, None))
        for i, name in enumerate(result.var_names):
            errors[name] = usable_error(sd[i])
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = cv / np.outer(sd, sd)
        order = [result.var_names.index(n) for n in free]
        corr = corr[np.ix_(order, order)]
    else:
        log.warning("%s: lmfit could not estimate the parameter covariance", source)
    return free, values, errors, corr


def lmfit_quality(result: lmfit.minimizer.MinimizerResult, errors: dict[str, float | None],
                  chi2_ndof: float, config: FitQualityConfig) -> tuple[str, ...]:
    """`atmospec.fitting.fit_problems` of an lmfit result (its free parameters, their bounds
    and errors, its own success flag); the ``errors`` of parameters at a bound are set to
    None in place."""
    best = result.params
    free = [name for name in best if best[name].vary]
    values = {n: float(best[n].value) for n in free}
    bounds = {n: (float(best[n].min), float(best[n].max)) for n in free}
    problems = fit_problems(values, errors, bounds, chi2_ndof,
                            None if result.success else str(result.message), config)
    for name in free:
        if bound_reached(values[name], bounds[name], config.bound_tolerance):
            errors[name] = None
    return problems


def _log_problems(source: str, problems: tuple[str, ...]) -> None:
    if problems:
        log.info("%s: fit failed: %s", source, "; ".join(problems))


# ---------------------------------------------------------------------- the fit
def fit_atmosphere(spectrum: Spectrum, config: AtmosphereFitConfig | None = None,
                   source: str | None = None) -> AtmosphereFit:
    """Fit PWV, ozone, VAOD (and grey, shift, resolution) to one first-order spectrum.

    Parameters
    ----------
    spectrum : Spectrum
        atmospec's (e⁻/nm) or Spectractor's (erg/s/cm²/nm) spectrum of a CALSPEC star (or of
        any star with ``config.sed_path``).
    config : AtmosphereFitConfig, optional
        Settings.
    source : str, optional
        File name for messages.

    Returns
    -------
    AtmosphereFit

    Raises
    ------
    BadInputError
        Non-CALSPEC target without SED, too many non-finite samples, non-positive errors,
        missing header values (see `SpectrumForwardModel`).
    """
    config = config or AtmosphereFitConfig()
    source = source or "spectrum"
    model = SpectrumForwardModel(
        spectrum, sed_path=config.sed_path, instrument=config.instrument,
        wavelength_range_nm=config.wavelength_range_nm, max_shift_nm=config.max_shift_nm,
        max_resolution=config.resolution_bounds[1], fine_step_nm=config.fine_step_nm,
        source=source)
    idx = model.index
    flux = spectrum.flux[idx]
    err = spectrum.flux_err[idx]
    good = np.isfinite(flux) & np.isfinite(err)
    n_bad = int((~good).sum())
    if n_bad > config.max_bad_fraction * idx.size:
        raise BadInputError(source, f"{n_bad} of {idx.size} samples in "
                                    f"{model.wavelength[0]:.0f}-{model.wavelength[-1]:.0f} nm "
                                    "have NaN or infinite flux or error")
    if n_bad:
        log.warning("%s: dropping %d samples with NaN or infinite flux or error", source, n_bad)
    if np.any(err[good] <= 0):
        raise BadInputError(source, "flux errors must be positive")
    sel = np.flatnonzero(good)
    flux, err = flux[sel], err[sel]
    cov = None
    if spectrum.covariance is not None:
        cov = spectrum.covariance[np.ix_(idx[sel], idx[sel])]
    whiten = Whitener(cov, err, config.use_covariance, source=source)
    lam = model.wavelength[sel]
    lo, hi = float(lam[0]), float(lam[-1])
    static = np.interp(lam, model.fine_wavelength, model.static_fine)
    lit = lam[static > 1e-3 * float(np.max(static))] if np.max(static) > 0 else lam[:0]
    fixed = coverage_fixed(lo, hi, lit, config)

    fixed_angstrom = (starting_angstrom(config) if config.fit_angstrom else config.angstrom)

    # Starting grey: the data / model ratio at the starting atmosphere.
    m0 = model(config.pwv_mm, config.ozone_du, config.vaod, fixed_angstrom)[sel]
    ratio = flux / np.where(m0 > 0, m0, np.nan)
    grey0 = float(np.nanmedian(ratio[np.isfinite(ratio)])) if np.isfinite(ratio).any() else 1.0
    if not grey0 > 0:
        grey0 = 1.0

    n_free = 1 + sum(name not in fixed for name in
                     ("pwv_mm", "ozone_du", "vaod", "angstrom", "dlambda_nm", "resolution"))
    if sel.size < n_free + 5:
        raise BadInputError(source, f"only {sel.size} usable samples for {n_free} parameters")
    params = lmfit_parameters(config, fixed, grey0)
    params.add("resolution", value=1.0, min=config.resolution_bounds[0],
               max=config.resolution_bounds[1], vary="resolution" not in fixed)

    def evaluate(p: lmfit.Parameters) -> NDArray[np.float64]:
        v = p.valuesdict()
        ang = v["angstrom"] if config.fit_angstrom else config.angstrom
        return model(v["pwv_mm"], v["ozone_du"], v["vaod"], ang, v["grey"],
                     v["dlambda_nm"], v["resolution"])[sel]

    def residual(p: lmfit.Parameters) -> NDArray[np.float64]:
        return whiten(flux - evaluate(p))

    t0 = time.perf_counter()
    result = lmfit.minimize(residual, params, method="leastsq", scale_covar=False,
                            max_nfev=config.max_nfev)
    elapsed = time.perf_counter() - t0
    best = result.params
    free, values, errors, corr = lmfit_summary(result, config, source)
    best_model = evaluate(best)
    chi2 = float(np.sum(residual(best) ** 2))
    ndof = int(sel.size - len(free))
    log.info("%s: PWV %.2f mm, ozone %.0f DU, VAOD %.4f, χ²/ndof %.2f (%d evaluations, %.2f s)",
             source, values["pwv_mm"], values["ozone_du"], values["vaod"],
             chi2 / max(ndof, 1), result.nfev, elapsed)
    problems = lmfit_quality(result, errors, chi2 / ndof if ndof > 0 else math.nan,
                             config.quality)
    _log_problems(source, problems)
    info = {
        "source": source, "target": spectrum.target, "sed": model.sed.source_file,
        "instrument": model.instrument, "disperser": model.disperser.name,
        "filter": model.filter_name, "airmass": model.airmass,
        "pressure_hpa": model.pressure_hpa, "exptime_s": model.exptime_s,
        "dropped_samples": n_bad, "n_samples": int(sel.size),
    }
    return AtmosphereFit(
        values=values, errors=errors, free_parameters=free, correlation=corr, chi2=chi2,
        ndof=ndof, fixed=fixed, wavelength_range_nm=(lo, hi), wavelength=lam, flux=flux,
        flux_err=err, model=best_model, flux_unit=spectrum.flux_unit,
        covariance_used=whiten.label, success=bool(result.success) and not problems,
        message=str(result.message), nfev=int(result.nfev), fit_time_s=elapsed, info=info,
        problems=problems, systematic=systematic_errors(config))
