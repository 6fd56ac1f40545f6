"""SEDs of targets that are not CALSPEC standards, for the dispersed simulator.

`emission_line_sed` draws an emission-line object — a planetary nebula by default — as
Gaussian lines of known vacuum wavelength and flux ratio over an optional faint continuum;
`absorption_line_sed` a star that is not a standard: a blackbody with Balmer, Ca II H and K
and Na D absorption lines. Both return a `atmospec.spectro.calspec.StellarSED` (erg/s/cm²/nm,
vacuum wavelengths), which `atmospec.sim.dispersed.DispersedSpectrumModel` takes as its
``target``.

The line wavelengths here are the vacuum values of the SDSS line list where it has the line
(and NIST air values moved to vacuum otherwise), typed independently of the calibration's
list (``data/lines/rest_lines.csv``, air): the truth does not borrow the code's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atmospec.spectro.calspec import StellarSED

__all__ = [
    "PLANETARY_NEBULA_LINES",
    "SIMULATED_TARGETS",
    "STELLAR_ABSORPTION_LINES",
    "AbsorptionLineSED",
    "EmissionLineSED",
    "absorption_line_sed",
    "emission_line_sed",
    "simulated_sed",
]

#: Planck's constant × speed of light / Boltzmann constant, nm·K.
_HC_OVER_K_NM_K = 1.438777e7

PLANETARY_NEBULA_LINES: tuple[tuple[str, float, float], ...] = (
    ("[Ne III] 3869", 386.986, 0.8),
    ("Hdelta", 410.289, 0.26),
    ("Hgamma", 434.168, 0.47),
    ("[O III] 4363", 436.444, 0.08),
    ("He I 4471", 447.273, 0.05),
    ("He II 4686", 468.701, 0.3),
    ("Hbeta", 486.268, 1.0),
    ("[O III] 4959", 496.030, 3.5),
    ("[O III] 5007", 500.824, 10.5),
    ("He I 5876", 587.725, 0.15),
    ("[O I] 6300", 630.205, 0.05),
    ("[N II] 6548", 654.986, 0.3),
    ("Halpha", 656.461, 2.86),
    ("[N II] 6583", 658.527, 0.9),
    ("He I 6678", 667.999, 0.04),
    ("[S II] 6716", 671.829, 0.06),
    ("[S II] 6731", 673.267, 0.08),
    ("He I 7065", 706.714, 0.05),
    ("[Ar III] 7136", 713.776, 0.2),
    ("[S III] 9069", 907.109, 0.3),
    ("[S III] 9531", 953.321, 0.8),
)
"""``(name, vacuum wavelength nm, flux relative to Hβ)`` of a bright, high-excitation
planetary nebula (ratios typical of NGC 7009-like objects, rounded; Hα/Hβ the case-B 2.86,
[O III] and [N II] doublets in their 1 : 2.98 atomic ratio)."""

STELLAR_ABSORPTION_LINES: tuple[tuple[str, float, float, float], ...] = (
    ("Ca II K", 393.478, 0.45, 0.4),
    ("Ca II H", 396.959, 0.35, 0.4),
    ("Hepsilon", 397.120, 0.35, 1.2),
    ("Hdelta", 410.289, 0.45, 1.5),
    ("Hgamma", 434.168, 0.5, 1.5),
    ("Hbeta", 486.268, 0.5, 1.4),
    ("Na I D2", 589.158, 0.15, 0.15),
    ("Na I D1", 589.756, 0.12, 0.15),
    ("Halpha", 656.461, 0.45, 1.2),
)
"""``(name, vacuum wavelength nm, central depth, Lorentzian half width nm)`` of an early-F
star's strongest lines (depths and widths illustrative)."""


@dataclass(frozen=True)
class EmissionLineSED:
    """An emission-line object for `emission_line_sed`."""

    lines: tuple[tuple[str, float, float], ...] = PLANETARY_NEBULA_LINES
    """``(name, vacuum wavelength nm, flux relative to the reference)`` of each line."""
    reference_flux: float = 1.0e-11
    """Flux of a line of ratio 1 (Hβ), erg/s/cm² (a bright planetary nebula)."""
    sigma_nm: float = 0.1
    """Intrinsic Gaussian width of the lines, nm (≈ 60 km/s: expansion and thermal width,
    far below the instrument's resolution)."""
    continuum_flux: float = 0.0
    """Continuum at 500 nm, erg/s/cm²/nm (0: lines only). A faint one (~1 % of Hβ's flux per
    nm) is the nebular continuum and the central star."""
    continuum_temperature_k: float = 30000.0
    """Blackbody temperature of the continuum's shape."""
    name: str = "PN_sim"
    """Name of the SED (``StellarSED.name``)."""
    step_nm: float = 0.02
    """Sampling of the SED, nm (five samples per line sigma)."""
    range_nm: tuple[float, float] = (300.0, 1200.0)
    """Wavelengths covered, nm."""


@dataclass(frozen=True)
class AbsorptionLineSED:
    """A star that is not a CALSPEC standard, for `absorption_line_sed`."""

    temperature_k: float = 7500.0
    """Blackbody temperature of the continuum, K."""
    flux_550_nm: float = 3.6e-12
    """Flux density at 550 nm, erg/s/cm²/nm (V ≈ 9)."""
    lines: tuple[tuple[str, float, float, float], ...] = STELLAR_ABSORPTION_LINES
    """``(name, vacuum wavelength nm, central depth, Lorentzian half width nm)``."""
    name: str = "star_sim"
    """Name of the SED."""
    step_nm: float = 0.05
    """Sampling, nm."""
    range_nm: tuple[float, float] = (300.0, 1200.0)
    """Wavelengths covered, nm."""


def _planck_shape(lam: np.ndarray, temperature_k: float, at_nm: float) -> np.ndarray:
    """Blackbody F_λ ∝ λ⁻⁵ / (exp(hc/λkT) − 1), 1 at ``at_nm``."""
    def b(x: np.ndarray) -> np.ndarray:
        return x**-5.0 / np.expm1(_HC_OVER_K_NM_K / (x * temperature_k))
    return b(lam) / b(np.asarray(at_nm, dtype=np.float64))


def emission_line_sed(config: EmissionLineSED = EmissionLineSED()) -> StellarSED:
    """The SED of an emission-line object: Gaussian lines over an optional continuum.

    Parameters
    ----------
    config : EmissionLineSED
        Lines, fluxes, widths and continuum.

    Returns
    -------
    StellarSED
        Vacuum wavelengths, erg/s/cm²/nm; each line integrates to its flux.
    """
    lam = np.arange(config.range_nm[0], config.range_nm[1] + 0.5 * config.step_nm,
                    config.step_nm)
    flux = np.zeros_like(lam)
    if config.continuum_flux > 0:
        flux += config.continuum_flux * _planck_shape(lam, config.continuum_temperature_k,
                                                      500.0)
    norm = config.reference_flux / (np.sqrt(2.0 * np.pi) * config.sigma_nm)
    for _, centre, ratio in config.lines:
        flux += ratio * norm * np.exp(-0.5 * ((lam - centre) / config.sigma_nm) ** 2)
    zero = np.zeros_like(lam)
    return StellarSED(lam, flux, zero, zero, "simulated", config.name)


def absorption_line_sed(config: AbsorptionLineSED = AbsorptionLineSED()) -> StellarSED:
    """The SED of a star without a CALSPEC SED: blackbody × Lorentzian absorption lines.

    Parameters
    ----------
    config : AbsorptionLineSED
        Temperature, brightness and lines.

    Returns
    -------
    StellarSED
        Vacuum wavelengths, erg/s/cm²/nm.
    """
    lam = np.arange(config.range_nm[0], config.range_nm[1] + 0.5 * config.step_nm,
                    config.step_nm)
    flux = config.flux_550_nm * _planck_shape(lam, config.temperature_k, 550.0)
    for _, centre, depth, hwhm in config.lines:
        flux *= 1.0 - depth / (1.0 + ((lam - centre) / hwhm) ** 2)
    zero = np.zeros_like(lam)
    return StellarSED(lam, flux, zero, zero, "simulated", config.name)


#: Names of the simulated non-CALSPEC targets `simulated_sed` knows (``atmospec simulate
#: night --dispersed-target``), each bright enough for the night's 20 s dispersed exposures
#: without saturating.
SIMULATED_TARGETS = ("planetary-nebula", "planetary-nebula+continuum", "star")


def simulated_sed(name: str) -> StellarSED | None:
    """The SED of a simulated non-CALSPEC target by name, or None for another name (a
    CALSPEC standard or an SED file, which `atmospec.spectro.calspec.load_sed` reads).

    Parameters
    ----------
    name : str
        ``planetary-nebula`` (lines only), ``planetary-nebula+continuum`` (with a faint
        continuum, 1e-13 erg/s/cm²/nm at 500 nm) or ``star`` (the 7500 K star of
        `AbsorptionLineSED` at V ≈ 10.4).

    Returns
    -------
    StellarSED or None
    """
    if name == "planetary-nebula":
        return emission_line_sed(EmissionLineSED(name=name))
    if name == "planetary-nebula+continuum":
        return emission_line_sed(EmissionLineSED(continuum_flux=1.0e-13, name=name))
    if name == "star":
        return absorption_line_sed(AbsorptionLineSED(flux_550_nm=1.0e-12, name=name))
    return None
