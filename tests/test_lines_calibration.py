"""Issue 19 A: wavelength calibration of any target on the lines its spectrum shows.

Six simulated LATISS exposures of targets that are not CALSPEC standards, drawn by
`render_dispersed_exposure` (SED × atmosphere × throughput × disperser orders 0–3, chromatic
Moffat PSF) with the SEDs of `atmospec.sim.seds`: a planetary nebula (21 lines of known
vacuum wavelength and ratio) without continuum and with a faint one (1e-13 erg/s/cm²/nm, a
few % of Hβ per resolution element), and an early-F star (7500 K blackbody with Balmer,
Ca II and Na D absorption), each through holo4_003 and ronchi170lpmm. The disperser truly
sits at ``LINSPOS = 68.6`` mm while the header says 68.0 (0.6 mm, 0.3 % of every
wavelength), so the calibration must come from the lines. Frames are rendered full size,
binned 2×2 (``CCDSUM = '2 2'``, as LATISS is often read) with sky, Poisson and read noise,
and go through `process_dispersed` without a zeroth-order position (found, not given). The
2D forward model is off in these scenes: it runs after the wavelength calibration and does
not change it (its own regression test is below); that keeps each scene to ~3 s.

Checked against the simulator's law (true D2CCD, true zeroth order, θ₀): for every line of
the ``LINES`` table used by the fit, the spectrum's wavelength at the detector row where the
simulator put that line, minus the line's wavelength — RMS ≤ 0.3 nm; the same over every
sample of 400–1000 nm; D2CCD within 0.5 mm; the zeroth order within 0.1 px.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from atmospec.cli import main
from atmospec.errors import BadInputError
from atmospec.exposure import Exposure
from atmospec.sim.dispersed import (
    DispersedSpectrumModel,
    dispersion_offset_px,
    render_dispersed_exposure,
)
from atmospec.sim.seds import (
    PLANETARY_NEBULA_LINES,
    EmissionLineSED,
    absorption_line_sed,
    emission_line_sed,
)
from atmospec.spectro.chain import SpectroscopyConfig, process_dispersed
from atmospec.spectro.dispersers import load_disperser
from atmospec.spectro.extract import ExtractionConfig, ExtractionResult
from atmospec.spectro.forward_model import ForwardModelConfig
from atmospec.spectro.spectrum import Spectrum
from atmospec.spectro.wavelength.calibration import calibrate_extraction
from atmospec.spectro.wavelength.identify import choose_kinds
from atmospec.spectro.wavelength.lines import air_to_vacuum_nm, rest_lines
from atmospec.spectro.wavelength.peaks import detect_peaks

SHAPE = (4000, 4072)
LINSPOS_TRUE, LINSPOS_HEADER = 68.6, 68.0
X_NOMINAL, Y_NOMINAL = 1750.0, 3699.0
READ_NOISE = 9.0
SKY_E_PER_S = 8.0
RMS_NM = 0.3
D2CCD_TOL_MM = 0.5


@dataclass(frozen=True)
class Scene:
    kind: str
    """``pn`` (lines only), ``pnc`` (lines and a faint continuum) or ``star``."""
    disperser: str
    seed: int

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.disperser}"

    @property
    def expected(self) -> str:
        return "absorption" if self.kind == "star" else "emission"


SCENES = [Scene(k, d, i) for i, (k, d) in enumerate(
    (k, d) for k in ("pn", "pnc", "star") for d in ("holo4_003", "ronchi170lpmm"))]


def _sed(kind: str):
    if kind == "pn":
        return emission_line_sed()
    if kind == "pnc":
        return emission_line_sed(EmissionLineSED(continuum_flux=1.0e-13))
    return absorption_line_sed()


def _observe(scene: Scene, fwhm_px: float = 8.0) -> tuple[Exposure, dict]:
    """Render, bin 2×2, add sky and noise, wrap as a post-ISR exposure with a header."""
    # Exposure times keep the zeroth order well below the full well (peaks 13–70 ke⁻).
    exptime = (30.0 if scene.kind != "star" else 5.0) * (2 if "ronchi" in scene.disperser
                                                           else 1)
    model = DispersedSpectrumModel(target=_sed(scene.kind), disperser=scene.disperser,
                                   exptime_s=exptime, airmass=1.2)
    x0, y0 = X_NOMINAL - 4.8 + 1.7 * scene.seed, Y_NOMINAL + 3.7 - 1.3 * scene.seed
    signal, truth = render_dispersed_exposure(SHAPE, x0, y0, fwhm_px, LINSPOS_TRUE,
                                              np.random.default_rng(scene.seed), model)
    assert truth["zeroth_order_peak_e"] < 100_000.0
    signal += np.float32(SKY_E_PER_S * exptime)
    binned = signal.reshape(SHAPE[0] // 2, 2, SHAPE[1] // 2, 2).sum(axis=(1, 3),
                                                                    dtype=np.float64)
    rng = np.random.default_rng(100 + scene.seed)
    image = rng.poisson(binned).astype(np.float32)
    image += rng.normal(0.0, 2.0 * READ_NOISE, binned.shape).astype(np.float32)
    header = fits.Header({
        "OBSID": f"AT_O_20261123_{scene.seed + 501:06d}", "INSTRUME": "LATISS",
        "DAYOBS": "20261123", "SEQNUM": scene.seed + 501, "DATE-OBS": "2026-11-24T03:00:00",
        "EXPTIME": exptime, "GRATING": scene.disperser, "FILTER": "empty_1",
        "LINSPOS": LINSPOS_HEADER, "OBJECT": "NGC 7009" if scene.kind != "star" else "HD 9999",
        "AMSTART": 1.2, "CCDSUM": "2 2",
    })
    exposure = Exposure.from_image(image, metadata=header)
    exposure.variance[:] = (binned + 4.0 * READ_NOISE**2).astype(np.float32)
    return exposure, truth


@dataclass
class Run:
    scene: Scene
    spectrum: Spectrum
    truth: dict
    centroid: object
    seconds: float

    def true_row(self, wavelength_nm: np.ndarray) -> np.ndarray:
        """Binned detector row where the simulator's order 1 put ``wavelength_nm``."""
        t = self.truth
        u = dispersion_offset_px(wavelength_nm, 1, t["lines_per_mm"], t["d2ccd_mm"], 0.010,
                                 t["theta0_rad"])
        return (t["y0"] + u * t["direction"][1] + 0.5) / 2.0 - 0.5

    def wavelength_at_row(self, rows: np.ndarray) -> np.ndarray:
        """The spectrum's wavelength at detector rows (PSF_TAB ``y_c`` + ``S_YMIN``)."""
        r = np.asarray(self.spectrum.psf_table["y_c"]) + float(self.spectrum.header["S_YMIN"])
        order = np.argsort(r)
        return np.interp(rows, r[order], np.asarray(self.spectrum.wavelength)[order])

    def line_errors(self) -> tuple[Table, np.ndarray]:
        """The lines used and (spectrum λ − true λ) at each one's true row, nm."""
        lines = self.spectrum.lines[np.asarray(self.spectrum.lines["Used"], dtype=bool)]
        lam = np.asarray(lines["Tabulated"], dtype=np.float64)
        return lines, self.wavelength_at_row(self.true_row(lam)) - lam

    def sample_rms(self) -> float:
        lam = np.linspace(400.0, 1000.0, 301)
        return float(np.sqrt(np.mean((self.wavelength_at_row(self.true_row(lam)) - lam) ** 2)))


@pytest.fixture(scope="module", params=SCENES, ids=lambda s: s.label)
def run(request: pytest.FixtureRequest) -> Run:
    """One scene through the chain (module scope: built once, shared by the tests)."""
    scene = request.param
    exposure, truth = _observe(scene)
    t = time.perf_counter()
    spectrum, centroid = process_dispersed(
        exposure, config=SpectroscopyConfig(forward_model=None))  # zeroth order found
    out = Run(scene, spectrum, truth, centroid, time.perf_counter() - t)
    lines, err = out.line_errors()
    print(f"\n{scene.label}: {len(lines)} {spectrum.header.get('WAVEMETH')} lines, RMS "
          f"{np.sqrt(np.mean(err**2)):.3f} nm over them, {out.sample_rms():.3f} nm over "
          f"400-1000 nm; D2CCD {spectrum.header['D2CCD']:.3f} mm (truth "
          f"{truth['d2ccd_mm']:.1f}); zeroth order ({centroid.x:.2f}, {centroid.y:.2f}), "
          f"truth ({(truth['x0'] + 0.5) / 2 - 0.5:.2f}, {(truth['y0'] + 0.5) / 2 - 0.5:.2f});"
          f" chain {out.seconds:.2f} s")
    return out


def test_calibrated_on_the_lines_of_the_right_kind(run: Run) -> None:
    h = run.spectrum.header
    assert h["TARGET"] in ("NGC 7009", "HD 9999")  # any name, written as given
    assert h["WAVECAL"] == "lines" and h["WAVEMETH"] == run.scene.expected
    lines = run.spectrum.lines
    assert {"Tabulated", "Detected", "Err", "Pull", "Used"} <= set(lines.colnames)
    used = lines[np.asarray(lines["Used"], dtype=bool)]
    assert len(used) >= 5
    assert np.all(np.isfinite(used["Pull"])) and np.all(np.asarray(used["Err"]) > 0)
    names = " ".join(used["Name"])
    if run.scene.expected == "emission":
        assert "OIII5007" in names and "HALPHA" in names
    else:
        assert "HALPHA" in names and "HBETA" in names and "O2B" in names


def test_zeroth_order_found(run: Run) -> None:
    t = run.truth
    assert abs(run.centroid.x - ((t["x0"] + 0.5) / 2 - 0.5)) < 0.1
    assert abs(run.centroid.y - ((t["y0"] + 0.5) / 2 - 0.5)) < 0.1


def test_wavelength_error_over_the_lines_used(run: Run) -> None:
    """RMS of (spectrum − truth) at the lines used ≤ 0.3 nm; every sample of 400–1000 nm
    too; D2CCD within 0.5 mm of the truth (the header is 0.6 mm off)."""
    _, err = run.line_errors()
    assert float(np.sqrt(np.mean(err**2))) <= RMS_NM, err
    assert run.sample_rms() <= RMS_NM
    assert abs(float(run.spectrum.header["D2CCD"]) - run.truth["d2ccd_mm"]) < D2CCD_TOL_MM


# --------------------------------------------------------------------------- 2D model


def test_forward_model_on_a_spiky_emission_spectrogram_is_bounded(caplog) -> None:
    """Narrow emission lines (PSF FWHM 6 px, 0.57″: lines 3 px wide once binned) over a faint
    continuum: the 2D forward model either converges within its bounds or falls back to the
    1D extraction (``FFMSKIP``), in seconds; with a wall-time bound it cannot meet, the
    fallback is taken and said in one warning."""
    exposure, _ = _observe(Scene("pnc", "holo4_003", 7), fwhm_px=6.0)
    t = time.perf_counter()
    spectrum, _ = process_dispersed(exposure)
    seconds = time.perf_counter() - t
    h = spectrum.header
    print(f"\nspiky emission spectrogram: chain with the 2D model {seconds:.1f} s, "
          f"SPECTYPE {h['SPECTYPE']}, FFMCONV {h.get('FFMCONV')}, CHI2_FIT "
          f"{h.get('CHI2_FIT')}, FFMSKIP {h.get('FFMSKIP')}")
    assert seconds < 30.0
    assert h["WAVECAL"] == "lines"
    if "FFMSKIP" in h:
        assert h["SPECTYPE"] == "optimal_1d"
    else:
        assert h["SPECTYPE"] == "forward_model" and np.isfinite(h["CHI2_FIT"])
    with caplog.at_level(logging.WARNING):
        t = time.perf_counter()
        bounded, _ = process_dispersed(exposure, config=SpectroscopyConfig(
            forward_model=ForwardModelConfig(max_seconds=0.05)))
        seconds = time.perf_counter() - t
    assert seconds < 10.0
    assert "FFMSKIP" in bounded.header and bounded.header["SPECTYPE"] == "optimal_1d"
    assert sum("1D optimal extraction is kept" in r.getMessage() for r in caplog.records) == 1
    np.testing.assert_array_equal(bounded.wavelength, spectrum.wavelength)


# --------------------------------------------------------------------------- pieces


def test_rest_lines_are_air_and_reproduce_the_sdss_vacuum_values() -> None:
    """The shipped list is in air like Spectractor's catalogue; moved to vacuum it gives the
    SDSS line list's vacuum wavelengths (the simulator's) to 0.003 nm."""
    by = {ln.name: ln.wavelength_nm for ln in rest_lines("emission")}
    sdss = {"HBETA": 486.268, "OIII4959": 496.030, "OIII5007": 500.824, "HALPHA": 656.461,
            "NII6548": 654.986, "NII6583": 658.527, "SII6716": 671.829, "SII6731": 673.267,
            "OI6300": 630.205}
    for name, vac in sdss.items():
        assert air_to_vacuum_nm(by[name]) == pytest.approx(vac, abs=0.003), name
    assert {ln.name for ln in rest_lines("absorption")} >= {"HALPHA", "HBETA", "CAIIK", "CAIIH"}
    sim = {n: lam for n, lam, _ in PLANETARY_NEBULA_LINES}
    assert air_to_vacuum_nm(by["OIII5007"]) == pytest.approx(sim["[O III] 5007"], abs=0.003)
    with pytest.raises(ValueError, match="not one of"):
        rest_lines("neon")


def test_peaks_found_with_their_sign() -> None:
    """Three emission lines and two dips on a sloped continuum: found, positions within
    half a pixel (a 7 px resolution: enough to identify them), the kind chosen from their
    significance."""
    rng = np.random.default_rng(4)
    u = np.arange(0.0, 1500.0)
    cont = 2000.0 + 0.5 * u
    sigma = 3.0
    flux = cont.copy()
    for c, a in ((300.3, 800.0), (700.8, 1500.0), (1100.1, 600.0)):
        flux += a * np.exp(-0.5 * ((u - c) / sigma) ** 2)
    for c, a in ((500.6, -500.0), (900.2, -400.0)):
        flux += a * np.exp(-0.5 * ((u - c) / sigma) ** 2)
    err = np.sqrt(flux)
    flux += rng.normal(size=u.size) * err
    peaks, continuum = detect_peaks(u, flux, err, 2.355 * sigma)
    assert np.max(np.abs(continuum - cont)[50:-50] / cont[50:-50]) < 0.02
    emission, absorption = peaks.of_sign(1), peaks.of_sign(-1)
    for found, truth in ((emission, (300.3, 700.8, 1100.1)), (absorption, (500.6, 900.2))):
        assert found.size == len(truth)
        np.testing.assert_allclose(np.sort(found.position_px), truth, atol=0.5)
    assert choose_kinds(peaks, "auto") == ("emission", "absorption")
    assert choose_kinds(peaks, "absorption") == ("absorption",)


def _extraction(flux: np.ndarray) -> ExtractionResult:
    """A synthetic holo4_003 extraction: a trace along −y through (1750, 3501), the prior
    distance, a 9 px FWHM Moffat PSF."""
    disp = load_disperser("holo4_003")
    rows = np.arange(501.0, 2501.0)
    dist = 3501.0 - rows
    lam = disp.wavelength_nm(dist, 1, 187.0, 0.010, 2.0e-3, at=(1750.0, 3501.0))
    n = rows.size
    gamma = np.full(n, 9.0 / (2.0 * np.sqrt(2.0 ** (1.0 / 2.5) - 1.0)))
    err = np.sqrt(np.abs(flux) + 30.0**2)
    return ExtractionResult(
        source="synthetic", disperser=disp.name, order=1, x0=1750.0, y0=3501.0,
        d2ccd_mm=187.0, theta0_rad=2.0e-3, angle_prior_deg=0.0, angle_deg=0.0,
        angle_err_deg=0.01, rows=rows, x_trace=np.full(n, 1750.0), gamma=gamma,
        alpha=np.full(n, 2.5), wavelength_nm=lam, dlambda_drow=np.abs(np.gradient(lam, rows)),
        flux_e=flux, flux_err_e=err, aperture_flux_e=flux, aperture_err_e=err,
        psf_bins=Table({"row": rows[5::10], "lambdas": lam[5::10]}),
        background=np.zeros((n, 20)), cutout_origin=(1740, 501), config=ExtractionConfig(),
        dispersion=disp)


def test_too_few_lines_keep_the_header_distance_flagged(caplog) -> None:
    """Two emission lines only (fewer than the two unknowns + 1): the header's distance is
    kept, ``WAVECAL = 'prior'``, one warning line."""
    from atmospec.spectro.extract import result_to_spectrum

    base = _extraction(np.zeros(2000))
    lam = base.wavelength_nm
    flux = 50.0 + sum(a * (1.0 + ((lam - c) / 1.2) ** 2) ** -2.5
                      for c, a in ((500.8, 5e4), (656.5, 3e4)))
    flux = flux + np.random.default_rng(2).normal(size=flux.size) * np.sqrt(flux + 900.0)
    extraction = _extraction(flux)
    with caplog.at_level(logging.WARNING):
        result, solution = calibrate_extraction(extraction, None, 1.2, 743.0,
                                                d2ccd_sigma_mm=2.0)
    assert solution is None and result is extraction and not result.wavelength_calibrated
    warnings_ = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings_) == 1 and "\n" not in warnings_[0]
    assert "calibration on the spectrum's lines failed" in warnings_[0]
    assert "D2CCD 187.00 mm from the instrument kept" in warnings_[0]
    assert result_to_spectrum(result).header["WAVECAL"] == "prior"
    with pytest.raises(ValueError, match="lines 'neon' is not one of"):
        calibrate_extraction(extraction, None, 1.2, 743.0, d2ccd_sigma_mm=2.0, lines="neon")


# --------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def post_isr(tmp_path_factory: pytest.TempPathFactory) -> Exposure:
    exposure, _ = _observe(Scene("pnc", "holo4_003", 2))
    return exposure


def test_extract_cli_any_target_and_bad_input(post_isr: Exposure, tmp_path, capsys,
                                              caplog) -> None:
    """``atmospec extract`` of a planetary nebula by name (``--any-target`` accepted as a
    no-op), in Spectractor's units; bad ``--target``, ``--sed``, ``--lines`` and ``--units``:
    one line naming the problem, exit 2."""
    from spectractor_bridge.spectrum import read_spectrum

    image = post_isr.write(tmp_path / "pn_postisr.fits")
    out = tmp_path / "pn_spectrum.fits"
    assert main(["extract", str(image), "--target", "NGC 7009", "--any-target",
                 "--units", "flam", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    written = read_spectrum(out)
    assert written.flux_unit == "erg/s/cm$^2$/nm" and written.header["S_NX"] > 0
    assert "NGC 7009 through holo4_003" in captured.out
    assert "emission lines)" in captured.out
    assert "--any-target is deprecated" in caplog.text
    empty = tmp_path / "empty.txt"
    empty.write_text("# wavelength flux\n")
    nan = tmp_path / "nan.txt"
    nan.write_text("400 1e-13\n500 nan\n600 1e-13\n")
    for args, message in (
            (["--target", ""], "--target is empty"),
            (["--target", "  "], "--target is empty"),
            (["--sed", str(empty)], "empty.txt: SED file has no data rows"),
            (["--sed", str(nan)], "nan.txt: SED flux is NaN or infinite"),
            (["--sed", str(tmp_path / "none.txt")], "none.txt: SED file not found"),
            (["--sed", ""], "--sed is empty"),
            (["--lines", "neon"], "argument --lines: invalid choice: 'neon'"),
            (["--units", "kelvin"], "argument --units: invalid choice: 'kelvin'")):
        assert main(["extract", str(image), *args, "--out", str(out)]) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_atmosphere_fit_refused_without_sed(post_isr: Exposure, tmp_path, capsys) -> None:
    """A non-standard target's spectrum: ``fit-atmosphere`` says so in one line, exit 2."""
    from spectractor_bridge.spectrum import write_spectrum

    spectrum, _ = process_dispersed(post_isr, config=SpectroscopyConfig(forward_model=None))
    path = write_spectrum(spectrum, tmp_path / "pn_spectrum.fits")
    assert main(["fit-atmosphere", str(path), "--out", str(tmp_path / "fit.json")]) == 2
    err = capsys.readouterr().err
    assert "'NGC 7009' is not a CALSPEC standard" in err and "--sed" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "fit.json").exists()


def test_chain_refuses_an_unknown_lines_mode(post_isr: Exposure) -> None:
    with pytest.raises(BadInputError, match="lines 'neon' is not one of auto, emission, "
                                            "absorption"):
        process_dispersed(post_isr, config=SpectroscopyConfig(lines="neon"))


def test_simulated_targets_and_their_cli_names(tmp_path, capsys) -> None:
    """The simulator's non-CALSPEC SEDs: lines of the stated flux at the stated vacuum
    wavelength; ``atmospec simulate night --dispersed-target`` takes their names or a
    CALSPEC standard, nothing else (one line, exit 2)."""
    from atmospec.sim.seds import SIMULATED_TARGETS, simulated_sed

    pn = simulated_sed("planetary-nebula")
    lam, flux = pn.wavelength_nm, pn.flux
    near = np.abs(lam - 486.268) < 1.0
    assert np.sum(flux[near]) * (lam[1] - lam[0]) == pytest.approx(1.0e-11, rel=1e-3)
    assert lam[near][np.argmax(flux[near])] == pytest.approx(486.268, abs=0.011)
    assert np.all(flux[(lam > 520.0) & (lam < 580.0)] < 1e-20)  # no continuum
    with_continuum = simulated_sed("planetary-nebula+continuum")
    assert with_continuum.flux_at(550.0) > 5e-14
    star = simulated_sed("star")
    assert star.flux_at(656.461) < 0.6 * star.flux_at(640.0)  # Hα in absorption
    assert simulated_sed("HD142331") is None and len(SIMULATED_TARGETS) == 3
    assert main(["simulate", "night", "--out", str(tmp_path / "n"), "--dispersed-target",
                 "vega"]) == 2
    err = capsys.readouterr().err
    assert "--dispersed-target 'vega' is neither" in err and err.count("\n") == 1
    assert not (tmp_path / "n").exists()
