"""Spectroscopy commands never hang and failed fits say so (issue 16, items 4 and 12).

Item 4: ``atmospec extract`` on a dispersed exposure whose PSF is wide (bad seeing) spent
more than 400 s in the 2D forward model (its cost grows as the cube of the PSF radius; the
old radius was 3 × the widest 1D FWHM, unbounded) — what looked like a hang. The radius is
now bounded (`ForwardModelConfig.max_radius_px`); a PSF too wide for it keeps the 1D
optimal extraction, written flagged as failed (exit 1, one line). An empty ``--target`` is
a usage error.

Item 12: ``--xy`` values that are not a pixel of the image are usage errors; a spectrum
whose EXPTIME is negative says so; a fit that ends at its bounds is written with
``success: false``, its problems and null uncertainties, and the command exits 1 with one
line.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from atmospec.atmosphere.spectrum_fit import AtmosphereFitConfig, SpectrumForwardModel
from atmospec.cli import main
from atmospec.exposure import Exposure
from atmospec.fitting import FitQualityConfig, fit_problems
from atmospec.sim.dispersed import (
    DispersedSceneConfig,
    DispersedSpectrumModel,
    electrons_per_nm,
    render_dispersed_exposure,
)
from atmospec.spectro.spectrum import Spectrum
from spectractor_bridge.spectrum import read_spectrum, write_spectrum

pytestmark = pytest.mark.reliability

SHAPE = (4000, 4072)
X0, Y0 = 1745.2, 3702.7
"""Zeroth order: near holo4_003's nominal position, as a pointing puts it."""


def _one_line(err: str, *needles: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _dispersed_postisr(path: Path, fwhm_px: float, exptime_s: float = 20.0
                       ) -> tuple[Path, DispersedSpectrumModel]:
    """A post-ISR holo4_003 exposure of HD142331 (full LATISS frame, sky, Poisson and read
    noise, exact variance), its PSF ``fwhm_px`` wide at 500 nm."""
    model = DispersedSpectrumModel(target="HD142331", disperser="holo4_003",
                                   exptime_s=exptime_s, airmass=1.0)
    signal, _ = render_dispersed_exposure(SHAPE, X0, Y0, fwhm_px, 68.6,
                                          np.random.default_rng(1), model,
                                          config=DispersedSceneConfig())
    signal += np.float32(48.0)
    rng = np.random.default_rng(2)
    image = rng.poisson(signal).astype(np.float32)
    image += rng.normal(0.0, 9.0, SHAPE).astype(np.float32)
    header = fits.Header({
        "OBSID": "AT_O_20261123_000201", "INSTRUME": "LATISS", "DAYOBS": "20261123",
        "SEQNUM": 201, "DATE-OBS": "2026-11-24T03:00:00", "EXPTIME": exptime_s,
        "GRATING": "holo4_003", "FILTER": "empty_1", "LINSPOS": 68.0, "OBJECT": "HD142331",
        "AIRMASS": 1.0})
    exposure = Exposure.from_image(image, metadata=header)
    exposure.variance[:] = signal + np.float32(81.0)
    return exposure.write(path), model


@pytest.fixture(scope="module")
def wide_psf_exposure(tmp_path_factory) -> tuple[Path, DispersedSpectrumModel]:
    """3″ seeing (32 px FWHM): the 2D model of the old chain did not finish in 400 s."""
    return _dispersed_postisr(tmp_path_factory.mktemp("wide") / "wide_postisr.fits", 32.0)


# ---------------------------------------------------------------------- item 4


@pytest.mark.timeout(120)
def test_issue16_item4_wide_psf_extract_does_not_hang(wide_psf_exposure, tmp_path, capsys):
    """Bounded time, and a one-line failure: the 1D spectrum is written but flagged (its
    flux is ~20 % high at this seeing, measured here against the simulator's truth)."""
    path, model = wide_psf_exposure
    out = tmp_path / "spec.fits"
    t0 = time.perf_counter()
    status = main(["extract", str(path), "--out", str(out)])
    seconds = time.perf_counter() - t0
    _, err = capsys.readouterr()
    print(f"\nextract of a 32 px FWHM exposure: {seconds:.1f} s")
    assert status == 1, err
    _one_line(err, "wide_postisr.fits", "fit failed", "2D model not drawn", "too wide",
              "spec.fits")
    spectrum = read_spectrum(out)
    assert spectrum.header["SPECTYPE"] == "optimal_1d" and not spectrum.header["FITOK"]
    assert spectrum.problems and "too wide" in spectrum.problems[0]
    # Why it is flagged: the order-1 e⁻/nm over 500-700 nm (10 nm bins) is off the truth
    # by more than the 1 % the 2D model reaches at ordinary seeing.
    lam = spectrum.wavelength
    truth = electrons_per_nm(model, lam)[1]
    ratios = [spectrum.flux[(lam >= lo) & (lam < hi)].sum()
              / truth[(lam >= lo) & (lam < hi)].sum()
              for lo, hi in itertools.pairwise(np.arange(500.0, 701.0, 10.0))]
    print(f"1D flux / truth at 32 px FWHM: {np.median(ratios):.3f}")
    assert abs(np.median(ratios) - 1.0) > 0.05


@pytest.mark.timeout(60)
@pytest.mark.parametrize("option", ["--target", "--disperser"])
def test_issue16_item4_empty_target_is_a_usage_error(tmp_path, capsys, option):
    image = tmp_path / "never_read.fits"
    status = main(["extract", str(image), option, "", "--out", str(tmp_path / "s.fits")])
    _, err = capsys.readouterr()
    assert status == 2
    _one_line(err, option, "empty")
    assert not (tmp_path / "s.fits").exists()


# ---------------------------------------------------------------------- item 12: --xy


@pytest.fixture(scope="module")
def small_postisr(tmp_path_factory) -> Path:
    """A post-ISR image 200 × 300 px: --xy is checked against its size."""
    rng = np.random.default_rng(0)
    exposure = Exposure.from_image(rng.normal(100.0, 5.0, (200, 300)).astype(np.float32),
                                   metadata=fits.Header({"INSTRUME": "LATISS"}))
    return exposure.write(tmp_path_factory.mktemp("xy") / "small_postisr.fits")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("xy, problem", [
    ("nan,nan", "not a finite position"),
    ("inf,10", "not a finite position"),
    ("10,-inf", "not a finite position"),
    ("-1,5", "negative"),
    ("5,-0.5", "negative"),
    ("300,10", "outside the image"),
    ("10,200", "outside the image"),
    ("1e9,1e9", "outside the image"),
    ("1,2,3", "two numbers"),
    ("7", "two numbers"),
    ("a,b", "two numbers"),
    ("", "two numbers"),
])
def test_issue16_item12_bad_xy_is_a_usage_error(small_postisr, tmp_path, capsys, xy, problem):
    out = tmp_path / "s.fits"
    status = main(["extract", str(small_postisr), f"--xy={xy}", "--out", str(out)])
    _, err = capsys.readouterr()
    assert status == 2
    _one_line(err, "--xy", problem)
    assert not out.exists()


# ---------------------------------------------------------------------- item 12: fits


def _electron_spectrum(pwv_mm: float, exptime_s: float = 30.0, n: int = 1500) -> Spectrum:
    """A LATISS holo4_003 spectrum of HD142331 in e⁻/nm: the fit's own model at PWV
    ``pwv_mm``, ozone 300 DU, VAOD 0.03, with Poisson and background noise."""
    lam = np.linspace(372.0, 1085.0, n)
    header = fits.Header()
    for key, value in (("TARGET", "HD142331"), ("AIRMASS", 1.2), ("OUTPRESS", 743.0),
                       ("EXPTIME", 30.0), ("GRATING", "holo4_003"), ("FILTER", "empty_1"),
                       ("INSTRMNT", "latiss")):
        header[key] = value
    psf = Table({"lambdas": lam[::10], "fwhm": np.full(lam[::10].size, 5.0)})
    layout = Spectrum(wavelength=lam, flux=np.ones(n), flux_err=np.ones(n),
                      flux_unit="electron/nm", header=header, psf_table=psf)
    model = SpectrumForwardModel(layout)
    flux = model(pwv_mm, 300.0, 0.03)
    err = np.sqrt(np.clip(flux, 0.0, None) + 400.0)
    noise = np.random.default_rng(1).normal(0.0, 1.0, flux.size) * err
    header = header.copy()
    header["EXPTIME"] = exptime_s
    return Spectrum(wavelength=model.wavelength, flux=flux + noise, flux_err=err,
                    flux_unit="electron/nm", header=header, psf_table=psf)


@pytest.mark.timeout(120)
def test_issue16_item12_fit_at_a_bound_is_flagged_and_exits_1(tmp_path, capsys):
    """The truth (PWV 40 mm) lies beyond the PWV bound (20 mm): the fit ends on it."""
    spec = write_spectrum(_electron_spectrum(40.0), tmp_path / "wet_spectrum.fits")
    out = tmp_path / "fit.json"
    status = main(["fit-atmosphere", str(spec), "--out", str(out)])
    stdout, err = capsys.readouterr()
    assert status == 1
    line = _one_line(err, "wet_spectrum.fits", "fit failed", "pwv_mm at its upper bound 20",
                     "fit.json")
    assert line.startswith("atmospec: ")
    doc = json.loads(out.read_text())
    assert doc["success"] is False
    assert "pwv_mm at its upper bound 20" in doc["problems"]
    assert doc["values"]["pwv_mm"] == pytest.approx(20.0, abs=1e-6)
    # No uncertainty for a parameter on its bound: null, never 0.
    assert doc["errors"]["pwv_mm"] is None and doc["errors_scaled"]["pwv_mm"] is None
    for name in ("pwv_mm", "ozone_du", "vaod"):
        assert doc["errors"][name] is None or doc["errors"][name] > 0
    assert "± 0.00 mm" not in stdout and "PWV 20.00 ± n/a mm" in stdout


@pytest.mark.timeout(120)
def test_issue16_item12_good_fit_still_succeeds(tmp_path, capsys):
    """The same spectrum at PWV 3 mm: success, no problems, exit 0, errors > 0."""
    spec = write_spectrum(_electron_spectrum(3.0), tmp_path / "dry_spectrum.fits")
    out = tmp_path / "fit.json"
    status = main(["fit-atmosphere", str(spec), "--out", str(out)])
    _, err = capsys.readouterr()
    assert status == 0, err
    doc = json.loads(out.read_text())
    assert doc["success"] is True and doc["problems"] == []
    assert doc["values"]["pwv_mm"] == pytest.approx(3.0, abs=0.05)
    assert all(doc["errors"][k] > 0 for k in ("pwv_mm", "ozone_du", "vaod"))


@pytest.mark.timeout(120)
def test_issue16_item12_narrowed_bounds_through_the_config(tmp_path):
    """Bounds narrowed by the configuration (PWV ≤ 2 mm, truth 3 mm): the library result
    says so too."""
    from atmospec.atmosphere.spectrum_fit import fit_atmosphere

    fit = fit_atmosphere(_electron_spectrum(3.0), AtmosphereFitConfig(pwv_mm=1.0,
                                                                      pwv_bounds=(0.0, 2.0)))
    assert not fit.success
    assert "pwv_mm at its upper bound 2" in fit.problems
    assert fit.errors["pwv_mm"] is None and fit.to_dict()["errors"]["pwv_mm"] is None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("exptime, problem", [
    (-20.0, "EXPTIME = -20.0 s is negative"),
    (0.0, "EXPTIME = 0.0 s: a spectrum in e-/nm needs a positive exposure time"),
    ("soon", "EXPTIME = 'soon' is not a time in seconds"),
    (1e300, "EXPTIME = 1e+300 s is longer than a day"),
])
def test_issue16_item12_negative_exptime_says_what_is_wrong(tmp_path, capsys, exptime,
                                                             problem):
    spec = _electron_spectrum(3.0)
    spec.header["EXPTIME"] = exptime
    path = write_spectrum(spec, tmp_path / "neg_exptime.fits")
    status = main(["fit-atmosphere", str(path), "--out", str(tmp_path / "fit.json")])
    _, err = capsys.readouterr()
    assert status == 2
    line = _one_line(err, "neg_exptime.fits", problem)
    assert "missing" not in line
    assert not (tmp_path / "fit.json").exists()


def test_quality_rule_findings():
    """`fit_problems` names each failure once, with the parameter and the bound."""
    bounds = {"a": (0.0, 20.0), "b": (-1.0, 1.0)}
    assert fit_problems({"a": 3.0, "b": 0.2}, {"a": 0.1, "b": 0.01}, bounds, 1.1) == ()
    assert fit_problems({"a": 20.0, "b": 0.2}, {"a": 0.1, "b": 0.01}, bounds, 1.1) == (
        "a at its upper bound 20",)
    assert fit_problems({"a": 3.0, "b": 0.2}, {"a": None, "b": 0.0}, bounds, 1.1) == (
        "no covariance",)
    assert fit_problems({"a": 3.0, "b": 0.2}, {"a": 0.1, "b": float("nan")}, bounds,
                        1.1) == ("no uncertainty for b",)
    assert fit_problems({"a": 3.0}, {"a": 0.1}, bounds, 60.0) == ("chi2/ndof 60 above 50",)
    assert fit_problems({"a": 3.0}, {"a": 0.1}, bounds, 60.0,
                        config=FitQualityConfig(max_chi2_ndof=100.0)) == ()
    assert fit_problems({}, {}, {}, float("nan"), "maximum number of\niterations") == (
        "optimiser failed: maximum number of iterations", "chi2/ndof not finite")
