"""Spectral line catalogue (Spectractor's lines) and the features used for calibration.

The catalogue ``data/lines/spectractor_line_catalog.csv`` is a data-only transcription of the
line lists of Spectractor (LSSTDESC, ``extractor/spectroscopy.py``, BSD-3-Clause): hydrogen
(Balmer), stellar (Fraunhofer Ca II, Fe I, Mg I), atmospheric (O₂ A as two components, O₂ B,
Y, Z, the H₂O 935 nm band), interstellar and HgAr lamp lines.

Wavelengths are in nm, **in air**, as Spectractor tabulates them (Hα 656.3 vs air 656.28 and
vacuum 656.46; Hg 546.074 and Ar 696.543 are the air values), rounded to 0.1 nm for most
stellar lines (Hβ 486.3 lies between air 486.13 and vacuum 486.27: the rounding is
Spectractor's). Stellar and interstellar lines move with the target's radial velocity;
atmospheric lines do not — Spectractor's ``LINES`` table of HD111980 shows Hα tabulated at
656.639 = 656.3 × (1 + 5.17·10⁻⁴) while O₂ B stays at 687.472. The calibration measures each
feature against the template's own shape (`atmospec.spectro.wavelength.features`): a
catalogue wavelength only names the window.

Blends (`CALIBRATION_FEATURES`): at AuxTel/CTIO resolution (≥ 1 nm) the O₂ A doublet
(760.3, 763.1) is one dip; it is treated as one feature ``O2A`` at the *mean* of the two
components, 761.7 nm. (Spectractor fits two Gaussians and found 760.02 and 762.88 on the CTIO
spectrum, mean 761.45; the absorption-weighted centroid of libRadtran's O₂ optical depth on
a 1 nm grid is 762.2.) The H₂O band is one broad feature at Spectractor's 935.0 nm with its
width bounds 5–30 nm; its effective centre depends on PWV and resolution (±1–2 nm), which is
why it is not flagged for calibration in the catalogue; against the template (which has the
band's shape) it is measured like the others.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources

__all__ = [
    "CALIBRATION_FEATURES",
    "LINE_KINDS",
    "LINE_MODES",
    "TELLURIC_FEATURES",
    "Line",
    "air_to_vacuum_nm",
    "in_vacuum",
    "line_catalog",
    "merge_blend",
    "rest_lines",
]

_CATALOG = "lines/spectractor_line_catalog.csv"
_REST_LINES = "lines/rest_lines.csv"
#: The kinds of spectra `rest_lines` has lines for.
LINE_KINDS = ("emission", "absorption")
#: What the wavelength calibration's ``lines`` setting (``--lines``) accepts: the kind chosen
#: from what the spectrum shows, or forced.
LINE_MODES = ("auto", *LINE_KINDS)


@dataclass(frozen=True)
class Line:
    """One catalogue line (or a blended feature treated as one line)."""

    name: str
    """Catalogue key (``HALPHA``, ``O2B``, ``O2A``...)."""
    wavelength_nm: float
    """Tabulated wavelength, nm, in air (Spectractor's convention)."""
    label: str = ""
    """Spectractor's LaTeX label (written in the ``Line`` column of ``LINES``)."""
    atmospheric: bool = False
    """Telluric feature: not shifted by the target's radial velocity."""
    use_for_calibration: bool = False
    """Spectractor's flag: good enough to calibrate wavelengths on."""
    width_bounds_nm: tuple[float, float] | None = None
    """Spectractor's allowed FWHM range, nm, of broad features (H₂O band); None: a line."""
    catalogs: tuple[str, ...] = ()
    """Spectractor lists the line belongs to (``HYDROGEN_LINES``, ``ATMOSPHERIC_LINES``...)."""
    components: tuple[str, ...] = ()
    """Names of the blended catalogue lines for a merged feature (empty for a single line)."""


def _data_rows(relative: str) -> list[dict[str, str]]:
    """Rows of a shipped CSV table (``#`` lines are comments)."""
    ref = resources.files("atmospec.data").joinpath(*relative.split("/"))
    text = ref.read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO("".join(
        ln for ln in text.splitlines(keepends=True) if not ln.startswith("#")))))


def _parse_bounds(text: str) -> tuple[float, float] | None:
    text = text.strip()
    if not text:
        return None
    lo, hi = (float(v) for v in text.split(","))
    return (lo, hi)


@cache
def line_catalog() -> tuple[Line, ...]:
    """All lines of the shipped catalogue, in file order (cached, immutable).

    Returns
    -------
    tuple of Line
        The 89 lines of ``data/lines/spectractor_line_catalog.csv``.
    """
    out = []
    for row in _data_rows(_CATALOG):
        catalogs = tuple(c for c in row["catalog"].split(";") if c)
        out.append(Line(
            name=row["name"],
            wavelength_nm=float(row["wavelength_nm"]),
            label=row["label"],
            atmospheric=row["atmospheric"].strip() == "True",
            use_for_calibration=row["use_for_calibration"].strip() == "True",
            width_bounds_nm=_parse_bounds(row["width_bounds_nm"]),
            catalogs=catalogs,
        ))
    return tuple(out)


def _by_name(name: str) -> Line:
    for line in line_catalog():
        if line.name == name:
            return line
    raise KeyError(f"no line {name!r} in the catalogue")


def merge_blend(name: str, components: tuple[str, ...], label: str | None = None) -> Line:
    """One feature standing for blended catalogue lines, at their mean wavelength.

    Parameters
    ----------
    name : str
        Name of the feature.
    components : tuple of str
        Catalogue names of the blended lines (all atmospheric or all not).
    label : str, optional
        Label of the feature; default the first component's.

    Returns
    -------
    Line
        Flags from the first component; calibration flag if any component has it; width
        bounds widened by the spread of the components.
    """
    parts = [_by_name(c) for c in components]
    if len({p.atmospheric for p in parts}) != 1:
        raise ValueError("a blend mixes atmospheric and stellar lines")
    wl = [p.wavelength_nm for p in parts]
    return replace(
        parts[0], name=name, wavelength_nm=sum(wl) / len(wl),
        label=parts[0].label if label is None else label,
        use_for_calibration=any(p.use_for_calibration for p in parts),
        components=tuple(components))


def _features() -> tuple[Line, ...]:
    o2a = merge_blend("O2A", ("O2_1", "O2_2"), label="$O_2(A)$")
    h2o = _by_name("H2O_1")
    names = ("HGAMMA", "HBETA", "HALPHA", "O2B")
    singles = [_by_name(n) for n in names]
    return tuple(sorted([*singles, o2a, h2o], key=lambda ln: ln.wavelength_nm))


CALIBRATION_FEATURES: tuple[Line, ...] = _features()
"""The features the wavelength calibration uses: Hγ, Hβ, Hα, O₂ B, O₂ A (blend at 761.7 nm)
and the H₂O 935 nm band (broad)."""


TELLURIC_FEATURES: tuple[Line, ...] = tuple(ln for ln in CALIBRATION_FEATURES if ln.atmospheric)
"""The atmosphere's features of `CALIBRATION_FEATURES`: O₂ B, O₂ A (blend) and H₂O 935 nm,
measured against the atmosphere model's shape (no tabulated centre describes a band)."""


@cache
def rest_lines(kind: str) -> tuple[Line, ...]:
    """Lines of one kind of spectrum from ``data/lines/rest_lines.csv``, by wavelength.

    The list holds accurate air wavelengths (NIST ASD, 0.001 nm; the Spectractor
    catalogue rounds most stellar lines to 0.1 nm, which the template calibration does not
    mind but a line-centre fit does): Balmer lines, [O II], [Ne III], [O III], He I, He II,
    [N II], [O I], [S II], [S III], [Ar III] and Paschen lines for ``emission``; Balmer,
    Ca II H and K and Na I D for ``absorption``.

    Parameters
    ----------
    kind : str
        ``emission`` or ``absorption`` (`LINE_KINDS`).

    Returns
    -------
    tuple of Line
        Wavelengths in air (`in_vacuum` moves them), ``use_for_calibration`` True,
        ``catalogs`` the kinds the line belongs to.

    Raises
    ------
    ValueError
        For another kind.
    """
    if kind not in LINE_KINDS:
        raise ValueError(f"line kind {kind!r} is not one of {', '.join(LINE_KINDS)}")
    out = []
    for row in _data_rows(_REST_LINES):
        kinds = tuple(k for k in row["kinds"].split(";") if k)
        if kind in kinds:
            out.append(Line(name=row["name"], wavelength_nm=float(row["wavelength_nm"]),
                            label=row["label"], use_for_calibration=True, catalogs=kinds))
    return tuple(sorted(out, key=lambda ln: ln.wavelength_nm))


def air_to_vacuum_nm(wavelength_air_nm: float) -> float:
    """Vacuum wavelength of a standard-air wavelength, nm (Ciddor 1996 dispersion of air in
    the form of Morton 2000, eq. 8; σ from the air wavelength, good to 10⁻⁸ here)."""
    sigma2 = (1e3 / wavelength_air_nm) ** 2  # (1/µm)²
    n = 1.0 + 8.34254e-5 + 2.406147e-2 / (130.0 - sigma2) + 1.5998e-4 / (38.9 - sigma2)
    return float(wavelength_air_nm * n)


def in_vacuum(lines: tuple[Line, ...]) -> tuple[Line, ...]:
    """The lines with their wavelengths moved from air to vacuum (`air_to_vacuum_nm`): the
    scale of CALSPEC SEDs and of the atmosphere model, on which atmospec's spectra are."""
    return tuple(replace(ln, wavelength_nm=air_to_vacuum_nm(ln.wavelength_nm)) for ln in lines)
