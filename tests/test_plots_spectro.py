"""Tests for atmospec.plots.spectro: diagnostics figures drawn from a Spectrum."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import AxesImage, imread

from atmospec.plots import spectro
from atmospec.plots.spectro import (
    plot_forward_model,
    plot_psf_vs_wavelength,
    plot_spectrogram,
    plot_spectrum,
    plot_spectrum_diagnostics,
    plot_wavelength_residuals,
)
from atmospec.spectro.spectrum import ImageExtension, Spectrogram, Spectrum
from spectractor_bridge.spectrum import read_spectrum

CTIO = (Path(__file__).parent / "data" / "spectractor_ctio"
        / "reduc_20170530_134_spectrum_v2.4_selfcontained.fits.gz")
SUFFIXES = ("spectrogram", "model", "psf", "lines", "spectrum")


# ------------------------------------------------------------------------------ fixtures


def _moffat(x: np.ndarray, xc: np.ndarray, gamma: np.ndarray, alpha: np.ndarray
            ) -> np.ndarray:
    """Unit-integral 1D Moffat profile."""
    norm = (alpha - 1.0) / (math.pi * gamma**2)  # 2D normalisation: fine for a test shape
    return norm * (1.0 + ((x - xc) / gamma) ** 2) ** (-alpha)


@pytest.fixture(scope="module")
def ctio() -> Spectrum:
    return read_spectrum(CTIO)


def make_latiss_spectrum() -> Spectrum:
    """A spectrum in atmospec's layout: tall 600×41 cutout, dispersion along −y."""
    rng = np.random.default_rng(3)
    ny, nx = 600, 41
    rows = np.arange(ny, dtype=float)
    lam = 1000.0 - rows  # LATISS: wavelength increases towards −y
    xc = 20.0 + 0.01 * (rows - 300.0)  # small tilt
    gamma = 2.5 + 1.0 * rows / ny
    alpha = np.full(ny, 2.5)
    fwhm = 2.0 * gamma * np.sqrt(2.0 ** (1.0 / alpha) - 1.0)
    amp = 4000.0 * np.exp(-0.5 * ((lam - 650.0) / 180.0) ** 2)
    amp *= 1.0 - 0.6 * np.exp(-0.5 * ((lam - 760.0) / 3.0) ** 2)
    cols = np.arange(nx, dtype=float)
    model = 20.0 + amp[:, None] * _moffat(cols[None, :], xc[:, None], gamma[:, None],
                                          alpha[:, None])
    err = np.sqrt(model + 25.0)
    data = model + rng.normal(0.0, 1.0, model.shape) * err
    spectrogram = Spectrogram(
        data=ImageExtension(data, fits.Header({"BUNIT": "electron"})),
        err=ImageExtension(err), fit=ImageExtension(model))

    psf = Table({"lambdas": lam, "x_c": xc, "y_c": rows, "gamma": gamma, "alpha": alpha,
                 "fwhm": fwhm})
    psf.sort("lambdas")  # as result_to_spectrum writes it

    brow = np.arange(10.0, ny, 20.0)
    bi = brow.astype(int)
    used = np.ones(brow.size, dtype=bool)
    used[[3, 17]] = False
    bins = Table({"row": brow, "lambdas": lam[bi], "x_c": xc[bi] + rng.normal(0, 0.05, bi.size),
                  "gamma": gamma[bi] + rng.normal(0, 0.05, bi.size),
                  "gamma_err": np.full(bi.size, 0.05), "alpha": alpha[bi],
                  "alpha_err": np.full(bi.size, 0.1), "fwhm": fwhm[bi], "used": used})
    psf_bins = fits.table_to_hdu(bins)
    psf_bins.name = "PSF_BINS"

    tab = np.array([486.135, 656.281, 686.719, 760.3, 822.7])
    det = tab + np.array([0.05, -0.1, 0.2, 0.4, -0.02])
    lines = Table({"Line": ["$H\\beta$", "$H\\alpha$", "$O_2(B)$", "$O_2(A", ""],
                   "Tabulated": tab, "Detected": det, "Err": np.full(tab.size, 0.08),
                   "Residual": det - tab, "Used": [True, True, True, False, True]})
    for col in ("Tabulated", "Detected", "Err", "Residual"):
        lines[col].unit = "nm"

    wl = lam[::-1]
    flux = amp[::-1] / 1.0  # per row = per nm here
    ferr = np.sqrt(flux + 100.0)
    order2 = ImageExtension(np.vstack([wl, 0.05 * flux, 0.05 * ferr]))
    header = fits.Header({"TARGET": "HD185975", "GRATING": "holo4_003", "AIRMASS": 1.42,
                          "DATE-OBS": "2024-05-01T03:04:05.6", "FILTER": "empty"})
    return Spectrum(wavelength=wl, flux=flux, flux_err=ferr, flux_unit="electron/nm",
                    header=header, order2=order2, spectrogram=spectrogram, psf_table=psf,
                    lines=lines, extra_hdus=(psf_bins,))


@pytest.fixture(scope="module")
def latiss() -> Spectrum:
    return make_latiss_spectrum()


def _by_gid(fig, gid: str) -> list:
    return [a for a in fig.findobj() if getattr(a, "get_gid", lambda: None)() == gid]


def _labels(fig) -> list[str]:
    out = []
    for ax in fig.axes:
        out += [ax.get_xlabel(), ax.get_ylabel()]
    return [s for s in out if s]


# --------------------------------------------------------------------------------- tests


def test_ctio_diagnostics_skip_flat_model(ctio: Spectrum, tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="atmospec.plots.spectro"):
        paths = plot_spectrum_diagnostics(ctio, tmp_path / "out", "ctio134")
    names = [p.name for p in paths]
    assert names == ["ctio134_spectrogram.png", "ctio134_psf.png", "ctio134_lines.png",
                     "ctio134_spectrum.png"]
    assert "no model figure" in caplog.text and "flattened" in caplog.text
    for p in paths:
        assert p.stat().st_size < 1_000_000
        assert imread(p).ndim == 3
    assert not (tmp_path / "out" / "ctio134_model.png").exists()


def test_flat_model_raises(ctio: Spectrum) -> None:
    with pytest.raises(ValueError, match="S_FIT has shape"):
        plot_forward_model(ctio)


def test_ctio_spectrogram_orientation(ctio: Spectrum) -> None:
    fig = plot_spectrogram(ctio)
    ax = fig.axes[0]
    img = next(a for a in ax.get_images() if isinstance(a, AxesImage))
    assert img.get_array().shape == ctio.spectrogram.data.data.shape  # horizontal: as is
    lo, hi = ax.get_xlim()
    assert lo < hi  # lambdas grow with x_c in Spectractor's cutouts
    (trace,) = _by_gid(fig, "trace")
    psf = ctio.psf_table
    order = np.argsort(psf["x_c"])
    np.testing.assert_allclose(trace.get_xdata(), np.asarray(psf["x_c"])[order])
    # y_c of this file is in Spectractor's fitting-window frame: drawn on the data's ridge.
    ridge = np.argmax(ctio.spectrogram.data.data[:, 150])
    y_at_150 = np.interp(150, trace.get_xdata(), trace.get_ydata())
    assert abs(y_at_150 - ridge) < 2
    assert "pixel" in ax.get_xlabel() and "pixel" in ax.get_ylabel()


def test_ctio_psf_and_lines_values(ctio: Spectrum) -> None:
    fig = plot_psf_vs_wavelength(ctio)
    (fwhm,) = _by_gid(fig, "fwhm")
    order = np.argsort(ctio.psf_table["lambdas"])
    np.testing.assert_allclose(fwhm.get_ydata(), np.asarray(ctio.psf_table["fwhm"])[order])
    np.testing.assert_allclose(fwhm.get_xdata(), np.asarray(ctio.psf_table["lambdas"])[order])
    (gamma,) = _by_gid(fig, "gamma")
    np.testing.assert_allclose(gamma.get_ydata(), np.asarray(ctio.psf_table["gamma"])[order])
    assert fig.axes[-1].get_xlabel() == "wavelength (nm)"

    fig = plot_wavelength_residuals(ctio)
    (pts,) = _by_gid(fig, "line_residuals")
    lines = ctio.lines
    expected = np.asarray(lines["Detected"], float) - np.asarray(lines["Tabulated"], float)
    np.testing.assert_allclose(pts.get_offsets()[:, 1], expected, rtol=1e-6)
    np.testing.assert_allclose(pts.get_offsets()[:, 0], np.asarray(lines["Tabulated"]))
    ax = fig.axes[0]
    assert "(nm)" in ax.get_xlabel() and "(nm)" in ax.get_ylabel()
    rms = math.sqrt(np.mean(expected**2))
    assert f"RMS {rms:.3f} nm" in ax.get_title(loc="left")


def test_latiss_all_figures(latiss: Spectrum, tmp_path: Path) -> None:
    paths = plot_spectrum_diagnostics(latiss, tmp_path, "AT_O_20240501_000123")
    assert [p.name.rsplit("_", 1)[1] for p in paths] == [f"{s}.png" for s in SUFFIXES]
    for p in paths:
        assert 0 < p.stat().st_size < 1_000_000
        image = imread(p)
        assert image.shape[0] < 1400 and image.shape[1] < 1400


def test_latiss_spectrogram_is_horizontal(latiss: Spectrum) -> None:
    fig = plot_spectrogram(latiss)
    ax = fig.axes[0]
    (img,) = ax.get_images()
    ny, nx = latiss.spectrogram.data.data.shape
    assert img.get_array().shape == (nx, ny)  # transposed: dispersion horizontal
    FigureCanvasAgg(fig).draw()
    box = ax.get_window_extent()
    assert box.width > 2 * box.height
    lo, hi = ax.get_xlim()
    assert lo > hi  # wavelength decreases with row: axis inverted, red to the right
    (trace,) = _by_gid(fig, "trace")
    psf = latiss.psf_table
    order = np.argsort(psf["y_c"])
    np.testing.assert_allclose(trace.get_xdata(), np.asarray(psf["y_c"])[order])
    np.testing.assert_allclose(trace.get_ydata(), np.asarray(psf["x_c"])[order])  # no shift
    assert "electron" in fig.axes[1].get_ylabel()  # colour bar: S_DATA's BUNIT


def test_latiss_forward_model(latiss: Spectrum) -> None:
    fig = plot_forward_model(latiss)
    (res,) = _by_gid(fig, "normalised")
    sg = latiss.spectrogram
    expected = ((sg.data.data - sg.fit.data) / sg.err.data).T
    np.testing.assert_allclose(res.get_array(), expected, rtol=1e-5, atol=1e-5)
    assert res.get_clim() == (-5.0, 5.0)
    (gauss,) = _by_gid(fig, "unit_gaussian")
    x, y = gauss.get_xdata(), gauss.get_ydata()
    np.testing.assert_allclose(y, np.exp(-0.5 * x**2) / math.sqrt(2 * math.pi))
    labels = _labels(fig)
    assert "normalised residual (σ)" in labels
    assert all("(" in s for s in labels)


def test_latiss_psf_bins(latiss: Spectrum) -> None:
    fig = plot_psf_vs_wavelength(latiss)
    psf = latiss.psf_table
    (fwhm,) = _by_gid(fig, "fwhm")
    np.testing.assert_allclose(fwhm.get_ydata(), np.asarray(psf["fwhm"]))
    (trace,) = _by_gid(fig, "trace")
    xc = np.asarray(psf["x_c"])
    np.testing.assert_allclose(trace.get_ydata(), xc - np.median(xc))
    used = _by_gid(fig, "bins_gamma_used")
    rejected = _by_gid(fig, "bins_gamma_rejected")
    assert used and rejected
    n_used = len(used[0].get_xdata())
    n_rej = len(rejected[0].get_xdata())
    assert (n_used, n_rej) == (28, 2)
    assert all("(" in s for s in _labels(fig))


def _with_bins(spectrum: Spectrum, bins: Table, **header: object) -> Spectrum:
    """``spectrum`` with another PSF_BINS table (and header keys)."""
    hdu = fits.table_to_hdu(bins)
    hdu.name = "PSF_BINS"
    out = Spectrum(spectrum.wavelength, spectrum.flux, spectrum.flux_err,
                   flux_unit=spectrum.flux_unit, header=spectrum.header.copy(),
                   order2=spectrum.order2, spectrogram=spectrum.spectrogram,
                   psf_table=spectrum.psf_table, lines=spectrum.lines, extra_hdus=(hdu,))
    for key, value in header.items():
        out.header[key] = value
    return out


def test_psf_axes_robust_to_a_failed_bin(latiss: Spectrum) -> None:
    """One failed bin (γ 50 ± 170, α 20 ± 130: issue 21) does not set the γ and α ranges:
    they span the other bins and PSF_TAB, and the failed bin is an arrow on the top edge."""
    bins = Table.read(next(h for h in latiss.extra_hdus if h.name == "PSF_BINS"))
    bins["gamma"][0], bins["gamma_err"][0] = 50.0, 170.0
    bins["alpha"][0], bins["alpha_err"][0] = 20.0, 130.0
    fig = plot_psf_vs_wavelength(_with_bins(latiss, bins))
    psf = latiss.psf_table
    for key in ("gamma", "alpha"):
        (curve,) = _by_gid(fig, key)
        low, high = curve.axes.get_ylim()
        others = np.asarray(bins[key])[1:]
        assert low <= min(others.min(), np.min(psf[key])) and high >= max(
            others.max(), np.max(psf[key]))
        assert high - low < 3.0, (key, low, high)  # not ±150: the trend stays readable
        (arrow,) = _by_gid(fig, f"bins_{key}_outside_above")
        assert arrow.get_xdata() == pytest.approx([bins["lambdas"][0]])
        assert arrow.get_ydata()[0] < high
    # The data artists keep the true values (the arrow only marks them).
    used = _by_gid(fig, "bins_gamma_used")[0]
    assert 50.0 in used.get_ydata()
    assert "bins outside the axis (arrow at the edge)" in [
        t.get_text() for t in fig.legends[0].get_texts()]


def test_psf_bins_and_trace_in_one_frame(latiss: Spectrum) -> None:
    """The trace panel draws PSF_TAB and the bins in the same cutout pixels; a file written
    before PSF_BINS had y_c (x_c in the image's columns, a ``row`` column) is moved there
    with S_XMIN."""
    bins = Table.read(next(h for h in latiss.extra_hdus if h.name == "PSF_BINS"))
    legacy = bins.copy()
    legacy["x_c"] = legacy["x_c"] + 1674.0  # the extraction frame: cutout origin + x_c
    for spectrum in (latiss, _with_bins(latiss, legacy, S_XMIN=1674)):
        fig = plot_psf_vs_wavelength(spectrum)
        (trace,) = _by_gid(fig, "trace")
        points = _by_gid(fig, "bins_trace_used")[0]
        on_curve = np.interp(points.get_xdata(), trace.get_xdata(), trace.get_ydata())
        assert np.abs(points.get_ydata() - on_curve).max() < 0.3
        low, high = trace.axes.get_ylim()
        assert high - low < 20.0
        assert "cutout pixel" in trace.axes.get_ylabel()


def test_psf_order2_region_shaded(latiss: Spectrum) -> None:
    """Where ORDER2 exceeds 5 % of the first order the panels are shaded and say why;
    without it, nothing is shaded."""
    wl = latiss.wavelength
    ratio = np.where(wl > 850.0, 0.3, 0.0)
    order2 = ImageExtension(np.vstack([wl, ratio * latiss.flux, 0.01 * latiss.flux]))
    shaded = Spectrum(wl, latiss.flux, latiss.flux_err, header=latiss.header.copy(),
                      order2=order2, psf_table=latiss.psf_table,
                      extra_hdus=latiss.extra_hdus)
    fig = plot_psf_vs_wavelength(shaded)
    (span,) = _by_gid(fig, "order2_fwhm")
    assert span.get_x() == pytest.approx(wl[wl > 850.0][0])
    assert span.get_x() + span.get_width() == pytest.approx(wl.max())
    assert any("order 2 > 5% of order 1" in t.get_text() for t in fig.legends[0].get_texts())
    weak = ImageExtension(np.vstack([wl, 0.04 * latiss.flux, 0.01 * latiss.flux]))
    faint = Spectrum(wl, latiss.flux, latiss.flux_err, header=latiss.header.copy(),
                     order2=weak, psf_table=latiss.psf_table, extra_hdus=latiss.extra_hdus)
    assert not _by_gid(plot_psf_vs_wavelength(faint), "order2_fwhm")


def test_psf_fwhm_from_gamma_alpha(latiss: Spectrum) -> None:
    psf = latiss.psf_table.copy()
    psf.remove_column("fwhm")
    spectrum = Spectrum(latiss.wavelength, latiss.flux, latiss.flux_err, psf_table=psf)
    fig = plot_psf_vs_wavelength(spectrum)
    (fwhm,) = _by_gid(fig, "fwhm")
    g, a = np.asarray(psf["gamma"]), np.asarray(psf["alpha"])
    np.testing.assert_allclose(fwhm.get_ydata(), 2 * g * np.sqrt(2 ** (1 / a) - 1))


def test_latiss_lines_and_spectrum(latiss: Spectrum) -> None:
    fig = plot_wavelength_residuals(latiss)
    (pts,) = _by_gid(fig, "line_residuals")
    lines = latiss.lines
    np.testing.assert_allclose(pts.get_offsets()[:, 1],
                               np.asarray(lines["Detected"]) - np.asarray(lines["Tabulated"]))
    # RMS over the used lines only
    used = np.asarray(lines["Used"])
    rms = math.sqrt(np.mean(np.asarray(lines["Residual"])[used] ** 2))
    assert f"RMS {rms:.3f} nm over 4 used lines" in fig.axes[0].get_title(loc="left")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "$H\\alpha$" in texts and "O2(A" in texts  # unparsable mathtext made plain
    assert "822.7" in texts  # unnamed line: its wavelength

    fig = plot_spectrum(latiss)
    ax = fig.axes[0]
    (flux,) = _by_gid(fig, "flux")
    np.testing.assert_allclose(flux.get_ydata(), latiss.flux)
    (o2,) = _by_gid(fig, "order2")
    np.testing.assert_allclose(o2.get_xdata(), latiss.order2.data[0])
    np.testing.assert_allclose(o2.get_ydata(), latiss.order2.data[1])
    markers = _by_gid(fig, "line_marker")
    np.testing.assert_allclose(sorted(m.get_xdata()[0] for m in markers),
                               np.sort(np.asarray(lines["Detected"])))
    assert ax.get_ylabel() == "flux (electron/nm)"
    assert ax.get_xlabel() == "wavelength (nm)"
    title = ax.get_title(loc="left")
    for part in ("HD185975", "holo4_003", "1.420", "2024-05-01"):
        assert part in title


def test_missing_inputs_are_skipped(latiss: Spectrum, tmp_path: Path) -> None:
    bare = Spectrum(latiss.wavelength, latiss.flux, latiss.flux_err, flux_unit="erg/s/cm$^2$/nm")
    paths = plot_spectrum_diagnostics(bare, tmp_path, "bare")
    assert [p.name for p in paths] == ["bare_spectrum.png"]
    assert plot_spectrum(bare).axes[0].get_ylabel() == "flux (erg/s/cm$^2$/nm)"
    for function in (plot_spectrogram, plot_forward_model, plot_psf_vs_wavelength,
                     plot_wavelength_residuals):
        with pytest.raises(ValueError):
            function(bare)


def test_draws_into_given_axes(latiss: Spectrum) -> None:
    fig = Figure(figsize=(12, 8))
    top, bottom = fig.subplots(2, 1)
    assert plot_spectrogram(latiss, ax=top) is fig
    assert plot_spectrum(latiss, ax=bottom) is fig
    assert plot_wavelength_residuals(latiss, ax=fig.add_subplot(3, 3, 9)) is fig
    assert len(top.get_images()) == 1


def test_tex_fallback() -> None:
    assert spectro._tex("$O_2(B)$") == "$O_2(B)$"
    assert spectro._tex("$\\notacommand$") == "notacommand"
    assert spectro._tex("$O_2(") == "O2("
