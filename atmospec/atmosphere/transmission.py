"""Atmospheric transmission on libRadtran's scale without running libRadtran.

``T(λ) = exp(−[τ_Rayleigh + τ_O2 + τ_O3 + τ_aerosol + τ_H2O])`` along the line of sight,
built from compact tables in ``atmospec.data/atmosphere/atmosphere_tables.npz`` (derived by
``scripts/build_atmosphere_tables.py``; sources in ``data/ATTRIBUTION.md``):

* Rayleigh: getObsAtmo LSST grid (libRadtran). Its optical depth is exactly linear in airmass
  (relative deviation < 4e-5), so one zenith curve ``τ_R(λ)`` at ``P_ref = 731.5 hPa`` is kept
  and scaled as ``τ_R · X · P / P_ref`` (the Rayleigh optical depth is proportional to the
  column of air, i.e. to the surface pressure).
* O₂: libRadtran O₂-only transmissions at airmass 1.0–2.5 (1 nm grid, PhotomCorrectAuxTel).
  The O₂ column is also proportional to ``P`` (constant mixing ratio), and its bands are
  saturated, so the optical depth is not linear in airmass: ``τ_O2`` is interpolated in
  *effective airmass* ``X · P / P_ref`` (the slant O₂ column in units of the reference vertical
  column), i.e. exponent 1 on pressure. Pressure broadening (which would add a weak extra
  ``P`` dependence in the saturated cores) is neglected; the CTIO check at 784 hPa bounds it.
  Beyond the tabulated airmasses ``τ_O2`` is extrapolated linearly.
* O₃: getObsAtmo ozone grid. ``τ_O3`` is linear in ozone column × airmass to 1.4e-3 in
  transmission over the whole 0–625 DU × 1–2.6 grid, so one least-squares cross-section per
  DU is kept: ``τ_O3 = k(λ) · O3[DU] · X``.
* Aerosols: ``τ_a = VAOD · (λ / 500 nm)^(−α) · X`` (Ångström law, VAOD at 500 nm), or with
  ``angstrom=None`` the spectral shape of libRadtran's default aerosol fitted on the 365
  atmospheres (its local Ångström exponent runs from ~0.8 at 350 nm to ~1.3 at 1050 nm).
* Water vapour: the transmission of saturated lines depends on the slant column
  ``w = PWV · X`` only (plane-parallel libRadtran) but not linearly. A per-wavelength power
  law ``τ_w = a(λ) · w^b(λ)`` was fitted to the 365 libRadtran atmospheres (w = 2–27 mm)
  after dividing out the other components. Residuals over 350–1100 nm on those atmospheres:
  per-atmosphere RMS 0.15 % (median), 0.5 % (worst), largest single-pixel error 3 % in the
  940 nm band core.

All tables are on a 1 nm grid 300–1100 nm; `AtmosphereModel` interpolates them once onto the
caller's wavelengths so an evaluation costs a few vector operations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["AtmosphereModel", "AtmosphereTables", "load_tables", "transmission"]

#: Reference wavelength of the vertical aerosol optical depth [nm].
AEROSOL_REF_NM = 500.0


@dataclass(frozen=True)
class AtmosphereTables:
    """Compact libRadtran-derived tables on a common wavelength grid."""

    wavelength_nm: NDArray[np.float64]
    """Wavelength grid [nm], 1 nm steps 300–1100."""
    rayleigh_tau: NDArray[np.float64]
    """Zenith Rayleigh optical depth at `p_ref_hpa`."""
    p_ref_hpa: float
    """Reference surface pressure of the Rayleigh and O2 tables [hPa]."""
    o2_airmass: NDArray[np.float64]
    """Airmasses (at `p_ref_hpa`) of the columns of `o2_tau`."""
    o2_tau: NDArray[np.float64]
    """O2 slant optical depth, shape (n_wavelength, n_airmass)."""
    ozone_tau_per_du: NDArray[np.float64]
    """Ozone optical depth per Dobson unit at airmass 1."""
    aerosol_shape: NDArray[np.float64]
    """Zenith optical depth of libRadtran's default aerosol per unit VAOD (500 nm)."""
    water_a: NDArray[np.float64]
    """Water curve of growth: ``τ_w = water_a · (PWV·X [mm]) ** water_b``."""
    water_b: NDArray[np.float64]
    """Exponent of the water curve of growth."""


@cache
def load_tables() -> AtmosphereTables:
    """Read the shipped tables (``atmospec.data/atmosphere/atmosphere_tables.npz``)."""
    ref = resources.files("atmospec.data") / "atmosphere" / "atmosphere_tables.npz"
    with ref.open("rb") as fh, np.load(fh) as z:
        arrays = {k: np.array(z[k]) for k in z.files}
    arrays["p_ref_hpa"] = float(arrays["p_ref_hpa"])
    for v in arrays.values():
        if isinstance(v, np.ndarray):
            v.setflags(write=False)
    return AtmosphereTables(**arrays)


@dataclass(frozen=True)
class AtmosphereModel:
    """Atmospheric transmission precomputed on a fixed wavelength grid.

    Examples
    --------
    >>> model = AtmosphereModel(np.arange(350.0, 1100.0, 1.0))
    >>> t = model.transmission(1.2, 731.5, pwv_mm=4.0, ozone_du=300.0, vaod=0.05)
    """

    wavelength_nm: NDArray[np.float64]
    """Wavelengths [nm] at which transmissions are returned (inside 300–1100 nm)."""
    tables: AtmosphereTables = field(default_factory=load_tables, repr=False)
    """Source tables (the shipped ones by default)."""
    _cache: dict[str, NDArray[np.float64]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )
    """Tables interpolated onto `wavelength_nm` (filled once in ``__post_init__``)."""

    def __post_init__(self) -> None:
        lam = np.atleast_1d(np.asarray(self.wavelength_nm, dtype=float))
        t = self.tables
        if lam.min() < t.wavelength_nm[0] or lam.max() > t.wavelength_nm[-1]:
            raise ValueError(
                f"wavelengths must lie within {t.wavelength_nm[0]:g}–{t.wavelength_nm[-1]:g} nm"
            )
        object.__setattr__(self, "wavelength_nm", lam)
        grid = t.wavelength_nm

        def on(y: NDArray[np.float64]) -> NDArray[np.float64]:
            return np.interp(lam, grid, y)

        self._cache.update(
            rayleigh=on(t.rayleigh_tau),
            ozone=on(t.ozone_tau_per_du),
            aerosol=on(t.aerosol_shape),
            water_a=on(t.water_a),
            water_b=on(t.water_b),
            o2=np.stack([on(c) for c in t.o2_tau.T], axis=0),
            log_lam=np.log(lam / AEROSOL_REF_NM),
        )

    def o2_tau(self, airmass: float, pressure_hpa: float) -> NDArray[np.float64]:
        """O2 slant optical depth at effective airmass ``airmass · P / P_ref``."""
        x = airmass * pressure_hpa / self.tables.p_ref_hpa
        grid = self.tables.o2_airmass
        o2 = self._cache["o2"]
        j = int(np.clip(np.searchsorted(grid, x) - 1, 0, grid.size - 2))
        f = (x - grid[j]) / (grid[j + 1] - grid[j])
        return np.clip((1.0 - f) * o2[j] + f * o2[j + 1], 0.0, None)

    def optical_depths(
        self,
        airmass: float,
        pressure_hpa: float,
        pwv_mm: float,
        ozone_du: float,
        vaod: float,
        angstrom: float | None = 1.3,
    ) -> dict[str, NDArray[np.float64]]:
        """Slant optical depth of each component (keys rayleigh, o2, ozone, aerosol, water)."""
        c = self._cache
        if angstrom is None:
            aer_shape = c["aerosol"]
        else:
            aer_shape = np.exp(-angstrom * c["log_lam"])
        w = max(pwv_mm, 0.0) * airmass
        return {
            "rayleigh": c["rayleigh"] * (airmass * pressure_hpa / self.tables.p_ref_hpa),
            "o2": self.o2_tau(airmass, pressure_hpa),
            "ozone": c["ozone"] * (ozone_du * airmass),
            "aerosol": aer_shape * (vaod * airmass),
            "water": c["water_a"] * np.power(w, c["water_b"]) if w > 0 else 0.0 * c["water_a"],
        }

    def transmission(
        self,
        airmass: float,
        pressure_hpa: float,
        pwv_mm: float,
        ozone_du: float,
        vaod: float,
        angstrom: float | None = 1.3,
    ) -> NDArray[np.float64]:
        """Transmission on `wavelength_nm`.

        Parameters
        ----------
        airmass
            Airmass of the line of sight (plane-parallel, ≥ 1).
        pressure_hpa
            Surface pressure [hPa] (AuxTel ~ 731–745 hPa).
        pwv_mm
            Precipitable water vapour, vertical column [mm].
        ozone_du
            Ozone vertical column [Dobson units].
        vaod
            Vertical aerosol optical depth at 500 nm.
        angstrom
            Ångström exponent of the aerosol power law; ``None`` uses the spectral shape of
            libRadtran's default aerosol.

        Returns
        -------
        numpy.ndarray
            Transmission in [0, 1] at each wavelength.
        """
        if airmass < 1.0 or pressure_hpa <= 0 or pwv_mm < 0 or ozone_du < 0 or vaod < 0:
            raise ValueError(
                "need airmass ≥ 1, pressure > 0 and non-negative pwv, ozone and vaod; got "
                f"airmass={airmass}, pressure={pressure_hpa}, pwv={pwv_mm}, ozone={ozone_du}, "
                f"vaod={vaod}"
            )
        taus = self.optical_depths(airmass, pressure_hpa, pwv_mm, ozone_du, vaod, angstrom)
        return np.exp(-sum(taus.values()))


def transmission(
    wavelength_nm: ArrayLike,
    airmass: float,
    pressure_hpa: float,
    pwv_mm: float,
    ozone_du: float,
    vaod: float,
    angstrom: float | None = 1.3,
) -> NDArray[np.float64]:
    """Atmospheric transmission at `wavelength_nm` (see `AtmosphereModel.transmission`).

    For repeated evaluations on the same wavelengths build one `AtmosphereModel`.
    """
    model = AtmosphereModel(np.asarray(wavelength_nm, dtype=float))
    t = model.transmission(airmass, pressure_hpa, pwv_mm, ozone_du, vaod, angstrom)
    return t.reshape(np.shape(wavelength_nm))
