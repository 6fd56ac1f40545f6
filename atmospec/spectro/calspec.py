"""CALSPEC standard-star library: target names and spectral energy distributions (SEDs).

The spectroscopy and atmosphere fits compare an observed spectrum with the star's true SED
above the atmosphere. atmospec ships the HST CALSPEC STIS SEDs of the AuxTel/CTIO
standards in ``data/calspec/`` (read through ``importlib.resources``, so installed and
source-tree runs read the same files) and the LSSTDESC/getCalspec index
``getCalspec_calspec_index.csv`` mapping star names, HD numbers and Gaia ids to CALSPEC
files (see ``data/ATTRIBUTION.md``).

* `resolve_target` turns any usual spelling of a shipped standard (``HD111980``,
  ``hd 111980``, ``mu Col``, ``18 Sco``, ``HD146233``, ``eta1 Dor``…) into a
  `CalspecEntry`: matching ignores case, spaces, punctuation and leading zeros of numbers.
* `load_sed` reads a shipped standard by name, or a user-given SED file (CALSPEC-format FITS
  table, or a two/three-column text or ECSV table in nm and erg/s/cm²/nm), into a
  `StellarSED` in nm and erg/s/cm²/nm.

Units. CALSPEC tables are in Å and FLAM (erg/s/cm²/Å); a flux density per Å is ten times
smaller than per nm, so FLAM × 10 = erg/s/cm²/nm.
"""

from __future__ import annotations

import csv
import io
import math
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import Table

from atmospec.errors import BadInputError

#: Wavelength range (nm) an SED must cover for an AuxTel/LATISS atmosphere fit; SEDs that do
#: not cover it still load (with a warning), since a fit restricted to a shorter range can
#: use them (e.g. hd60753, whose CALSPEC SED stops at 1022.5 nm).
REQUIRED_RANGE_NM: tuple[float, float] = (350.0, 1100.0)

#: Range (nm) where the flux must be finite and non-negative. Real CALSPEC files have noisy
#: negative fluxes below 200 nm (STIS far-UV ends, e.g. 18sco_stis_005), which no ground
#: observation uses, so they must not make a real CALSPEC file "bad"; inside the
#: atmospheric window a negative flux is a broken file.
CHECKED_RANGE_NM: tuple[float, float] = (300.0, 1200.0)

#: CALSPEC flux unit (erg/s/cm²/Å) to ours (erg/s/cm²/nm).
FLAM_TO_NM = 10.0

_FLUX_NM = u.erg / u.s / u.cm**2 / u.nm
_INDEX_FILE = "getCalspec_calspec_index.csv"

# Columns of the getCalspec index, by position: the header repeats "STIS" and "PM" and one
# name holds a non-breaking space, so names cannot be used as keys.
_INDEX_HEADER = ("", "Star_name", "Sp_T", "G", "V", "B_V", "Name", "Model", "STIS", "Var_(%)",
                 "STIS", "RA", "Decl", "Vr", "PM", "PM", "Simbad_Name", "Alt Simbad_Name",
                 "Astroquery_Name", "Alt_Star_name", "source_id", "HD_name")
_COL = MappingProxyType({
    "star": 1, "sptype": 2, "v": 4, "b_v": 5, "name": 6, "stis": 8, "ra": 11, "dec": 12,
    "simbad": 16, "alt_simbad": 17, "astroquery": 18, "alt_star": 19, "gaia": 20, "hd": 21})


@dataclass(frozen=True)
class CalspecEntry:
    """One CALSPEC standard shipped with atmospec, as described by the getCalspec index."""

    name: str
    """Canonical name: the index's ``Star_name`` (e.g. ``"HD111980"``, ``"MU COL"``)."""
    hd_number: int | None
    """Henry Draper catalogue number (e.g. 111980), None if the star has none."""
    aliases: tuple[str, ...]
    """Every name of the star in the index (SIMBAD, astroquery, CALSPEC file stem, HD, Gaia)."""
    calspec_file: str
    """Shipped SED's file name in ``atmospec.data/calspec`` (``hd111980_stis_006.fits.gz``)."""
    index_stis_version: str
    """STIS version the index lists as current (e.g. ``"_stis_007"``): it may be newer than the
    shipped file, whose version is in `calspec_file`."""
    ra_deg: float | None
    """Right ascension (ICRS, degrees) from the index, None if absent."""
    dec_deg: float | None
    """Declination (ICRS, degrees) from the index, None if absent."""
    spectral_type: str | None
    """Spectral type from the index (e.g. ``"F7V"``), None if absent."""
    v_mag: float | None
    """Johnson V magnitude from the index, None if absent."""
    b_minus_v: float | None
    """Johnson B−V colour from the index, None if absent."""
    gaia_source_id: int | None
    """Gaia ``source_id`` from the index, None if absent."""


def _normalise(name: str) -> str:
    """Matching key of a star name: lower case, letters and digits only, numbers without
    leading zeros (so ``HD074000`` = ``HD 74000`` and ``ETA01 DOR`` = ``eta1 Dor``)."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    return re.sub(r"(?<![0-9])0+(?=[0-9])", "", key)


def _sexagesimal(text: str, scale: float) -> float | None:
    """``"hh mm ss.s"`` or ``"±dd mm ss.s"`` to degrees (× `scale`: 15 for hours)."""
    parts = text.split()
    if len(parts) != 3:
        return None
    # The sign belongs to the whole angle; read it from the text so "-00 12 00" stays negative.
    sign = -1.0 if parts[0].strip().startswith("-") else 1.0
    d, m, s = (abs(float(p)) for p in parts)
    return sign * scale * (d + m / 60.0 + s / 3600.0)


def _float_or_none(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _data_dir() -> resources.abc.Traversable:
    return resources.files("atmospec.data") / "calspec"


@cache
def _index_rows() -> dict[str, list[str]]:
    """Rows of the getCalspec index keyed by CALSPEC file stem (``Name`` column)."""
    text = (_data_dir() / _INDEX_FILE).read_text(encoding="utf-8")
    reader = csv.reader(io.StringIO(text))
    header = tuple(h.replace("\xa0", " ") for h in next(reader))
    if header != _INDEX_HEADER:
        # A different index version could move columns; failing loudly beats wrong aliases.
        raise RuntimeError(f"{_INDEX_FILE}: unexpected columns {header}")
    return {row[_COL["name"]].strip().lower(): row for row in reader if row}


def _entry_from(row: list[str], calspec_file: str) -> CalspecEntry:
    hd_text = row[_COL["hd"]].strip()
    hd_match = re.fullmatch(r"HD\s*0*(\d+)", hd_text, flags=re.IGNORECASE)
    gaia_text = row[_COL["gaia"]].strip()
    gaia = int(gaia_text) if gaia_text.isdigit() else None
    aliases: list[str] = []
    for key in ("star", "name", "simbad", "alt_simbad", "astroquery", "alt_star", "hd"):
        alias = " ".join(row[_COL[key]].split())
        if alias and alias not in aliases:
            aliases.append(alias)
    if gaia is not None:
        aliases.append(f"Gaia {gaia}")
    return CalspecEntry(
        name=" ".join(row[_COL["star"]].split()),
        hd_number=int(hd_match.group(1)) if hd_match else None,
        aliases=tuple(aliases),
        calspec_file=calspec_file,
        index_stis_version=row[_COL["stis"]].strip(),
        ra_deg=_sexagesimal(row[_COL["ra"]], 15.0),
        dec_deg=_sexagesimal(row[_COL["dec"]], 1.0),
        spectral_type=row[_COL["sptype"]].strip() or None,
        v_mag=_float_or_none(row[_COL["v"]]),
        b_minus_v=_float_or_none(row[_COL["b_v"]]),
        gaia_source_id=gaia,
    )


@cache
def shipped_standards() -> tuple[CalspecEntry, ...]:
    """The CALSPEC standards whose SED ships with atmospec, sorted by canonical name.

    Returns
    -------
    tuple of CalspecEntry
        One entry per ``*_stis_*.fits.gz`` file in ``atmospec.data/calspec``.
    """
    rows = _index_rows()
    entries = []
    for item in _data_dir().iterdir():
        match = re.fullmatch(r"(.+?)_stis_\d+\.fits\.gz", item.name)
        if match is None:
            continue
        stem = match.group(1).lower()
        if stem not in rows:
            raise RuntimeError(f"{item.name}: not in {_INDEX_FILE}")
        entries.append(_entry_from(rows[stem], item.name))
    return tuple(sorted(entries, key=lambda e: e.name))


@cache
def _alias_table() -> dict[str, CalspecEntry]:
    table: dict[str, CalspecEntry] = {}
    for entry in shipped_standards():
        keys = {_normalise(a) for a in entry.aliases}
        if entry.hd_number is not None:
            keys.add(f"hd{entry.hd_number}")
        if entry.gaia_source_id is not None:
            keys.update({str(entry.gaia_source_id), f"gaiadr3{entry.gaia_source_id}"})
        for key in keys:
            other = table.get(key)
            # Two stars answering to one name would make target resolution a coin toss.
            if other is not None and other is not entry:
                raise RuntimeError(f"alias {key!r} names both {other.name} and {entry.name}")
            table[key] = entry
    return table


def resolve_target(name: str) -> CalspecEntry:
    """Find the shipped CALSPEC standard a target name refers to.

    Parameters
    ----------
    name : str
        Any name of the star in the index: ``"HD111980"``, ``"hd 111980"``, ``"HD-111980"``,
        ``"mu Col"``, ``"MUCOL"``, ``"HD38666"``, ``"18 Sco"``, ``"eta1 Dor"``, a Gaia
        ``source_id``… Case, spaces, punctuation and leading zeros are ignored.

    Returns
    -------
    CalspecEntry
        The standard.

    Raises
    ------
    BadInputError
        If no shipped standard has that name (the message lists the known ones).
    """
    entry = _alias_table().get(_normalise(name))
    if entry is None:
        known = ", ".join(e.name for e in shipped_standards())
        raise BadInputError(name, f"not a CALSPEC standard shipped with atmospec (known: "
                                  f"{known}); give a SED file with --sed")
    return entry


@dataclass(frozen=True, eq=False)
class StellarSED:
    """A star's spectral energy distribution above the atmosphere (arrays are read-only)."""

    wavelength_nm: np.ndarray
    """Wavelengths (nm, vacuum for CALSPEC), strictly increasing."""
    flux: np.ndarray
    """Flux density, erg/s/cm²/nm."""
    stat_error: np.ndarray
    """1σ statistical error of `flux`, erg/s/cm²/nm (0 where the source gives none)."""
    sys_error: np.ndarray
    """1σ systematic error of `flux`, erg/s/cm²/nm (0 where the source gives none)."""
    source_file: str
    """File the SED was read from."""
    name: str
    """Star name: the canonical CALSPEC name, or the file stem for a user SED."""
    _cumulative: np.ndarray = field(init=False, repr=False)
    """Integral of the linear interpolant from the first sample to each sample (for binning)."""

    def __post_init__(self) -> None:
        arrays = {}
        for key in ("wavelength_nm", "flux", "stat_error", "sys_error"):
            arr = np.array(getattr(self, key), dtype=float)
            arr.setflags(write=False)  # frozen means frozen: no caller may edit a shared SED
            arrays[key] = arr
            object.__setattr__(self, key, arr)
        w, f = arrays["wavelength_nm"], arrays["flux"]
        if not (w.ndim == 1 and w.shape == f.shape == arrays["stat_error"].shape
                == arrays["sys_error"].shape and w.size >= 2):
            raise ValueError("StellarSED arrays must be 1-D, of one length, at least 2")
        cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(w))])
        cumulative.setflags(write=False)
        object.__setattr__(self, "_cumulative", cumulative)

    @property
    def coverage_nm(self) -> tuple[float, float]:
        """First and last wavelength (nm) of the SED."""
        return float(self.wavelength_nm[0]), float(self.wavelength_nm[-1])

    def flux_at(self, wavelength_nm: float | np.ndarray) -> float | np.ndarray:
        """Flux (erg/s/cm²/nm) linearly interpolated at `wavelength_nm`.

        Parameters
        ----------
        wavelength_nm : float or array
            Wavelengths (nm).

        Returns
        -------
        float or ndarray
            Flux; NaN outside `coverage_nm` (no extrapolation: a fit must not silently use
            invented flux).
        """
        out = np.interp(wavelength_nm, self.wavelength_nm, self.flux, left=np.nan,
                        right=np.nan)
        return float(out) if np.ndim(out) == 0 else out

    def _integral_to(self, x: np.ndarray) -> np.ndarray:
        """Integral of the linear interpolant from the first sample to `x` (inside coverage)."""
        w, f = self.wavelength_nm, self.flux
        i = np.clip(np.searchsorted(w, x, side="right") - 1, 0, w.size - 2)
        dx = x - w[i]
        slope = (f[i + 1] - f[i]) / (w[i + 1] - w[i])
        return self._cumulative[i] + f[i] * dx + 0.5 * slope * dx**2

    def binned(self, wavelength_edges_nm: Iterable[float] | np.ndarray) -> np.ndarray:
        """Mean flux over wavelength bins: integral of the SED over each bin / bin width.

        The SED is integrated exactly as its linear interpolant (the model `flux_at` uses), so
        ``sum(binned(edges) * diff(edges))`` equals the SED's integral over the whole grid:
        what a lower-resolution spectrum is to be compared with.

        Parameters
        ----------
        wavelength_edges_nm : array
            Strictly increasing bin edges (nm), at least 2.

        Returns
        -------
        ndarray
            One value per bin (erg/s/cm²/nm); NaN for bins not entirely inside `coverage_nm`.

        Raises
        ------
        ValueError
            If the edges are not a strictly increasing 1-D array of at least 2 values.
        """
        edges = np.asarray(wavelength_edges_nm, dtype=float)
        if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) > 0):
            raise ValueError("wavelength_edges_nm must be strictly increasing, at least 2 values")
        lo, hi = self.coverage_nm
        inside = (edges >= lo) & (edges <= hi)
        integral = np.full(edges.shape, np.nan)
        integral[inside] = self._integral_to(edges[inside])
        return np.diff(integral) / np.diff(edges)


def _check(path: Path, name: str, wavelength_nm: np.ndarray, flux: np.ndarray,
                     stat: np.ndarray, sys: np.ndarray) -> StellarSED:
    """Validate an SED read from `path` (BadInputError naming the file and the problem)."""
    if wavelength_nm.size < 2:
        raise BadInputError(path, "SED has fewer than 2 rows")
    if not np.all(np.isfinite(wavelength_nm)):
        raise BadInputError(path, "SED wavelengths contain NaN or infinity")
    steps = np.diff(wavelength_nm)
    if not np.all(steps > 0):
        row = int(np.argmax(steps <= 0)) + 1
        raise BadInputError(path, f"SED wavelengths are not strictly increasing (row {row}: "
                                  f"{wavelength_nm[row]:g} nm after "
                                  f"{wavelength_nm[row - 1]:g} nm)")
    lo, hi = CHECKED_RANGE_NM
    checked = (wavelength_nm >= lo) & (wavelength_nm <= hi)
    if np.any(~np.isfinite(flux[checked])):
        raise BadInputError(path, f"SED flux is NaN or infinite between {lo:g} and {hi:g} nm")
    if np.any(flux[checked] < 0):
        bad = wavelength_nm[checked][flux[checked] < 0]
        raise BadInputError(path, f"SED flux is negative at {bad.size} wavelength(s) between "
                                  f"{lo:g} and {hi:g} nm (first at {bad[0]:g} nm)")
    if np.any(np.isnan(flux)):
        raise BadInputError(path, "SED flux contains NaN")
    for label, err in (("statistical", stat), ("systematic", sys)):
        if np.any(~np.isfinite(err[checked])) or np.any(err[checked] < 0):
            raise BadInputError(path, f"SED {label} error is negative or not finite")
    return StellarSED(wavelength_nm, flux, stat, sys, str(path), name)


def _warn_coverage(sed: StellarSED) -> None:
    """Warn (not fail: a fit over a shorter range can still use it) if `sed` does not cover
    `REQUIRED_RANGE_NM`; done on every load, outside the cache, so no caller misses it."""
    lo, hi = sed.coverage_nm
    need_lo, need_hi = REQUIRED_RANGE_NM
    if lo > need_lo or hi < need_hi:
        warnings.warn(f"{sed.source_file}: SED of {sed.name} covers only {lo:.1f}–{hi:.1f} nm, "
                      f"not all of {need_lo:g}–{need_hi:g} nm; its flux outside is NaN",
                      UserWarning, stacklevel=3)


def _unit_of(column_unit: str | u.UnitBase | None, default: u.UnitBase, path: Path,
             what: str) -> u.UnitBase:
    """Astropy unit of a column, accepting CALSPEC's spellings (``ANGSTROMS``, ``FLAM``)."""
    if column_unit is None or str(column_unit).strip() == "":
        return default
    text = str(column_unit).strip()
    aliases = {"angstroms": u.AA, "angstrom": u.AA, "a": u.AA, "nm": u.nm,
               "flam": u.erg / u.s / u.cm**2 / u.AA}
    if text.lower() in aliases:
        return aliases[text.lower()]
    try:
        return u.Unit(text)
    except ValueError as exc:
        raise BadInputError(path, f"unknown {what} unit {text!r}") from exc


def _converted(values: np.ndarray, unit: u.UnitBase, target: u.UnitBase, path: Path,
               what: str) -> np.ndarray:
    try:
        return (np.asarray(values, dtype=float) * unit).to_value(target)
    except u.UnitConversionError as exc:
        raise BadInputError(path, f"{what} unit {unit} is not convertible to {target}") from exc


def _read_fits(path: Path) -> tuple[np.ndarray, ...]:
    """CALSPEC-format FITS: first table HDU with WAVELENGTH and FLUX (Å and FLAM unless the
    columns say otherwise), optional STATERROR and SYSERROR in the flux unit."""
    try:
        with fits.open(path) as hdul:
            table = next((h for h in hdul if isinstance(h, fits.BinTableHDU | fits.TableHDU)),
                         None)
            if table is None:
                raise BadInputError(path, "FITS file has no table extension")
            names = [n.upper() for n in table.columns.names]
            if "WAVELENGTH" not in names or "FLUX" not in names:
                raise BadInputError(path, f"FITS table lacks WAVELENGTH/FLUX columns "
                                          f"(has {', '.join(table.columns.names)})")
            units = {c.name.upper(): c.unit for c in table.columns}
            data = {n: np.array(table.data[n], dtype=float)
                    for n in ("WAVELENGTH", "FLUX", "STATERROR", "SYSERROR") if n in names}
    except BadInputError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        raise BadInputError(path, f"unreadable FITS file ({exc})") from exc
    w_unit = _unit_of(units["WAVELENGTH"], u.AA, path, "wavelength")
    f_unit = _unit_of(units["FLUX"], u.erg / u.s / u.cm**2 / u.AA, path, "flux")
    wavelength = _converted(data["WAVELENGTH"], w_unit, u.nm, path, "wavelength")
    flux = _converted(data["FLUX"], f_unit, _FLUX_NM, path, "flux")
    errors = []
    for key in ("STATERROR", "SYSERROR"):
        if key in data:
            e_unit = _unit_of(units[key], f_unit, path, "error")
            errors.append(_converted(data[key], e_unit, _FLUX_NM, path, "error"))
        else:
            errors.append(np.zeros_like(flux))
    return wavelength, flux, errors[0], errors[1]


def _read_text(path: Path) -> tuple[np.ndarray, ...]:
    """ECSV (units honoured when given) or whitespace/comma text: wavelength (nm), flux
    (erg/s/cm²/nm) and an optional third column, the 1σ (statistical) error."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
        head = text[:2000]
    except OSError as exc:
        raise BadInputError(path, f"cannot read file ({exc})") from exc
    units: list[u.UnitBase | None] = [None, None, None]
    try:
        if head.startswith("# %ECSV"):
            table = Table.read(path, format="ascii.ecsv")
            columns = [np.array(table[c], dtype=float) for c in table.colnames]
            units = [table[c].unit for c in table.colnames] + [None] * 3
        else:
            # Comma-separated if the first data line (not a comment) has a comma.
            data_lines = [ln for ln in head.splitlines() if ln.strip()
                          and not ln.lstrip().startswith("#")]
            delimiter = "," if data_lines and "," in data_lines[0] else None
            if not data_lines and not any(ln.strip() and not ln.lstrip().startswith("#")
                                          for ln in text.splitlines()):
                # Before numpy's own "empty input" warning and a misleading column count.
                raise BadInputError(path, "SED file has no data rows (empty or comments only)")
            array = np.loadtxt(path, comments="#", delimiter=delimiter, ndmin=2)
            columns = list(array.T)
    except (ValueError, TypeError, OSError) as exc:
        raise BadInputError(path, f"unparsable SED table ({exc})") from exc
    if len(columns) not in (2, 3):
        raise BadInputError(path, f"SED table has {len(columns)} columns; expected 2 or 3 "
                                  "(wavelength nm, flux erg/s/cm²/nm[, error])")
    wavelength = _converted(columns[0], _unit_of(units[0], u.nm, path, "wavelength"), u.nm,
                            path, "wavelength")
    f_unit = _unit_of(units[1], _FLUX_NM, path, "flux")
    flux = _converted(columns[1], f_unit, _FLUX_NM, path, "flux")
    stat = (_converted(columns[2], _unit_of(units[2], f_unit, path, "error"), _FLUX_NM, path,
                       "error") if len(columns) == 3 else np.zeros_like(flux))
    return wavelength, flux, stat, np.zeros_like(flux)


@cache
def _load_shipped(calspec_file: str, name: str) -> StellarSED:
    resource = _data_dir() / calspec_file
    with resources.as_file(resource) as path:
        wavelength, flux, stat, sys = _read_fits(Path(path))
        return _check(Path(path), name, wavelength, flux, stat, sys)


def load_sed(name_or_path: str | Path) -> StellarSED:
    """Read a star's SED: a shipped CALSPEC standard by name, or a user-given file.

    Parameters
    ----------
    name_or_path : str or Path
        A standard's name (anything `resolve_target` accepts) or the path of an SED file:
        a CALSPEC-format FITS table (``.fits``, ``.fit``, ``.fits.gz``; WAVELENGTH in Å and
        FLUX, STATERROR, SYSERROR in FLAM unless the column units say otherwise), or a text
        / ECSV table of two or three columns: wavelength (nm), flux (erg/s/cm²/nm) and an
        optional 1σ error (ECSV column units are honoured).

    Returns
    -------
    StellarSED
        Wavelengths in nm, fluxes and errors in erg/s/cm²/nm (CALSPEC FLAM × 10).

    Raises
    ------
    BadInputError
        Unknown name, or a bad file: missing, unparsable, wavelengths not strictly
        increasing, flux NaN or negative between 300 and 1200 nm.

    Warns
    -----
    UserWarning
        If the SED does not cover 350–1100 nm (the message gives the covered range).
    """
    path = Path(name_or_path)
    if path.is_file():
        name = path.name.split(".")[0]
        if path.name.lower().endswith((".fits", ".fit", ".fits.gz", ".fit.gz", ".fts")):
            wavelength, flux, stat, sys = _read_fits(path)
        else:
            wavelength, flux, stat, sys = _read_text(path)
        sed = _check(path, name, wavelength, flux, stat, sys)
    elif isinstance(name_or_path, str) and _normalise(name_or_path) in _alias_table():
        entry = resolve_target(name_or_path)
        sed = _load_shipped(entry.calspec_file, entry.name)
    elif isinstance(name_or_path, Path) or path.suffix or len(path.parts) > 1:
        # Looks like a path (a name has no directory or extension): say the file is missing
        # rather than "unknown star".
        raise BadInputError(path, "SED file not found")
    else:
        resolve_target(str(name_or_path))  # raises BadInputError listing the known stars
        raise AssertionError("unreachable")
    _warn_coverage(sed)
    return sed
