"""Post-ISR compression (`atmospec.compression`): the quantisation budget, the file, and
what the night computes from it.

The frames are simulated, so the lossless pixels are the truth the quantised ones are
held to: per pixel within half a step, the statistics within what a uniform error of one
step (``σ_q = step / √12``, 2.9 % of the pixel noise at ``q = 10``) allows, the mask
bit for bit. Downstream, a characterization and an extraction of the quantised frame agree
with the lossless ones within 5 × 2.9 % of each result's own statistical error: the
quantisation adds an independent noise of that relative size, no bias.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from astropy.io import fits

from atmospec.compression import CompressionConfig, dither_seed, noise_fraction
from atmospec.errors import BadInputError
from atmospec.exposure import Exposure
from atmospec.sim.scenes import moffat_stamp

Q = CompressionConfig().quantize_level
#: Quantisation noise over the pixel noise at the frame's median noise (0.0289).
F = noise_fraction(Q)
SKY, READ_NOISE = 300.0, 9.0
#: Tolerance of a derived quantity, in units of its own statistical error: 5 σ of the
#: noise the quantisation adds.
K = 5.0 * F


def _frame(shape=(256, 512), seed=7, stars=((100.3, 80.6, 2e5), (300.8, 170.2, 8e5),
                                           (420.1, 60.9, 5e4))) -> Exposure:
    """Sky, Moffat stars, Poisson-like and read noise; ISR's variance (image clipped at 0 +
    read noise²); a mask using high bits; NaN pixels and exact zeros."""
    rng = np.random.default_rng(seed)
    truth = np.full(shape, SKY)
    for x, y, flux in stars:
        half = 30
        ix, iy = round(x), round(y)
        truth[iy - half:iy + half + 1, ix - half:ix + half + 1] += \
            flux * moffat_stamp(x - ix, y - iy, 8.0, 3.0, half)
    image = (truth + rng.standard_normal(shape) * np.sqrt(truth + READ_NOISE**2)
             ).astype(np.float32)
    variance = (np.maximum(image, 0) + READ_NOISE**2).astype(np.float32)
    exp = Exposure(image, np.zeros(shape, np.int32), variance,
                   fits.Header({"OBSID": "AT_O_20990101_000007"}),
                   compression=CompressionConfig())
    exp.set_mask("BAD", np.s_[:, 37])
    exp.set_mask("EDGE", np.s_[:4])
    exp.mask[50, 60:70] |= 1 << 30  # a high plane bit must survive
    exp.image[10, 20:25] = np.nan
    exp.image[11, 30:40] = 0.0
    return exp


def _lossless(exp: Exposure) -> Exposure:
    return Exposure(exp.image.copy(), exp.mask.copy(), exp.variance.copy(),
                    exp.metadata.copy(), dict(exp.mask_planes),
                    compression=CompressionConfig(enabled=False))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One frame written quantised and losslessly: (truth, its copy quantised in memory,
    the exposure read back, the quantised file, the lossless file)."""
    tmp = tmp_path_factory.mktemp("compression")
    exp = _frame()
    truth = _lossless(exp)
    lossless = truth.write(tmp / "lossless.fits")
    path = exp.write(tmp / "quantised.fits")
    return truth, exp, Exposure.read(path), path, lossless


def test_file_at_least_3x_smaller(written):
    _, _, _, path, lossless = written
    ratio = lossless.stat().st_size / path.stat().st_size
    assert ratio >= 3.0, ratio
    with fits.open(lossless) as hdul:
        assert hdul[0].header["ATMCMPRS"] == "LOSSLESS"
        assert not isinstance(hdul["IMAGE"], fits.CompImageHDU)


def test_standard_tile_compressed_layout(written):
    """astropy opens the planes as tile-compressed images of the convention's keywords;
    the headers name the level and each step."""
    truth, _, _, path, _ = written
    with fits.open(path, disable_image_compression=True) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "IMAGE", "MASK", "VARIANCE"]
        assert hdul[0].header["ATMCMPRS"] == "QUANTIZED"
        assert hdul[0].header["ATMQLEVL"] == Q
        for name in ("IMAGE", "VARIANCE"):
            h = hdul[name].header
            assert (h["ZCMPTYPE"], h["ZQUANTIZ"], h["ZBITPIX"]) == \
                ("RICE_1", "SUBTRACTIVE_DITHER_2", -32)
            assert h["ATMQSTEP"] == pytest.approx(h["ATMQSIG"] / Q)
        assert (hdul["MASK"].header["ZCMPTYPE"], hdul["MASK"].header["ZBITPIX"]) == \
            ("RICE_1", 32)
        assert "ZQUANTIZ" not in hdul["MASK"].header
    with fits.open(path) as hdul:
        assert all(isinstance(hdul[n], fits.CompImageHDU) for n in ("IMAGE", "MASK", "VARIANCE"))
        assert hdul["IMAGE"].data.dtype.kind == "f" and hdul["MASK"].data.dtype.kind == "i"
        assert hdul["MASK"].header["MP_BAD"] == 0 and hdul["IMAGE"].header["BUNIT"] == "electron"
        # The image's step is its median noise over q: √median(variance) / 10 (the median
        # of a subsample, within its sampling error: 1 % here).
        sigma = math.sqrt(float(np.median(truth.variance)))
        assert hdul["IMAGE"].header["ATMQSIG"] == pytest.approx(sigma, rel=0.01)


def test_memory_equals_file(written):
    """The exposure written holds, after the write, the file's values bit for bit: what a
    night computes from it equals what a resumed night computes from the file."""
    _, exp, back, _, _ = written
    for plane in ("image", "variance"):
        assert np.array_equal(getattr(back, plane), getattr(exp, plane), equal_nan=True)
    assert back.mask_planes == exp.mask_planes


@pytest.mark.parametrize("plane", ["image", "variance"])
def test_per_pixel_error_within_half_a_step(written, plane):
    """|quantised - true| ≤ step / 2 (plus float32 rounding); the error is uniform over one
    step (σ = step / √12) and unbiased."""
    truth, _, back, path, _ = written
    with fits.open(path) as hdul:
        step = hdul[plane.upper()].header["ATMQSTEP"]
    a, b = getattr(truth, plane).astype(np.float64), getattr(back, plane).astype(np.float64)
    ok = np.isfinite(a)
    err = b[ok] - a[ok]
    ulp = np.spacing(np.abs(a[ok]).astype(np.float32)).astype(np.float64)
    assert np.all(np.abs(err) <= step / 2 + ulp)
    n = err.size
    assert err.std() / step == pytest.approx(1 / math.sqrt(12), rel=0.02)
    assert abs(err.mean()) <= 5 * step / math.sqrt(12 * n)


def test_image_statistics_within_the_budget(written):
    """Mean, median and σ of the image: the mean moves by less than 5 σ_q / √N, every
    order statistic by at most step / 2 (each value does), the variance of the pixels
    grows by σ_q² (5 σ of its sampling noise allowed)."""
    truth, _, back, path, _ = written
    with fits.open(path) as hdul:
        step = hdul["IMAGE"].header["ATMQSTEP"]
    sigma_q = step / math.sqrt(12)
    good = np.isfinite(truth.image) & (truth.mask == 0)
    a, b = truth.image[good].astype(np.float64), back.image[good].astype(np.float64)
    n = a.size
    assert abs(b.mean() - a.mean()) <= 5 * sigma_q / math.sqrt(n)
    assert abs(np.median(b) - np.median(a)) <= step / 2 + np.spacing(np.float32(np.median(a)))
    sigma = a.std()
    assert abs((b.var() - a.var()) - sigma_q**2) <= 5 * 2 * sigma * sigma_q / math.sqrt(n)
    # σ_q is the promised fraction of the median pixel noise (the step comes from the
    # median of a subsample: within its sampling error, 1 % here).
    assert sigma_q / math.sqrt(np.median(truth.variance)) == pytest.approx(F, rel=0.01)


def test_variance_relative_error_small(written):
    """The variance plane: relative error ≤ step / (2 V) per pixel, ~0.17 % rms at this sky
    (σ_q / V); the sum of the variance (the error of an aperture flux²) unchanged within
    5 σ_q √N."""
    truth, _, back, path, _ = written
    with fits.open(path) as hdul:
        step = hdul["VARIANCE"].header["ATMQSTEP"]
    a, b = truth.variance.astype(np.float64), back.variance.astype(np.float64)
    rel = (b - a) / a
    assert np.abs(rel).max() <= step / 2 / a.min() + 1e-6
    assert np.sqrt(np.mean(rel**2)) < 0.003
    assert abs(b.sum() - a.sum()) <= 5 * step / math.sqrt(12) * math.sqrt(a.size)


def test_mask_nan_and_zeros_exact(written):
    truth, _, back, _, _ = written
    assert np.array_equal(back.mask, truth.mask)
    assert np.isnan(back.image[10, 20:25]).all()
    assert np.array_equal(np.isnan(back.image), np.isnan(truth.image))
    assert (back.image[11, 30:40] == 0.0).all()  # SUBTRACTIVE_DITHER_2 keeps zeros


def test_deterministic(written, tmp_path):
    """The same pixels written twice give the same compressed bytes (the dither seed comes
    from the pixels): a resumed night's files equal an uninterrupted one's."""
    truth, _, _, path, _ = written
    again = _lossless(truth)
    again.compression = CompressionConfig()
    other = again.write(tmp_path / "again.fits")
    with fits.open(path, disable_image_compression=True) as a, \
            fits.open(other, disable_image_compression=True) as b:
        for name in ("IMAGE", "MASK", "VARIANCE"):
            assert a[name].header["DATASUM"] == b[name].header["DATASUM"]
            assert a[name].header.get("ZDITHER0") == b[name].header.get("ZDITHER0")
    assert a["IMAGE"].header["ZDITHER0"] == dither_seed(truth.image)


def test_plane_without_noise_stays_lossless(tmp_path, caplog):
    """A plane with no noise to scale a step from (a constant variance, the zero one of an
    ISR without the variance step) is compressed losslessly, without a step in its header
    or a warning; one with values no int32 holds at its step, losslessly with a warning."""
    exp = _frame(shape=(64, 96), stars=())
    exp.variance[:] = 100.0
    exp.write(tmp_path / "e.fits")
    back = Exposure.read(tmp_path / "e.fits")
    assert np.array_equal(back.variance, np.full((64, 96), 100.0, np.float32))
    with fits.open(tmp_path / "e.fits") as hdul:
        assert isinstance(hdul["VARIANCE"], fits.CompImageHDU)
        assert "ATMQSTEP" not in hdul["VARIANCE"].header
        assert "ATMQSTEP" in hdul["IMAGE"].header
    assert "losslessly" not in caplog.text
    exp = _frame(shape=(64, 96), stars=())
    exp.image[5, 5] = np.inf
    truth = exp.image.copy()
    exp.write(tmp_path / "inf.fits")
    assert np.array_equal(Exposure.read(tmp_path / "inf.fits").image, truth, equal_nan=True)
    assert "IMAGE written losslessly" in caplog.text


def test_uncompressed_files_still_read(written):
    """The old layout (plain float32 planes) reads as before, bit for bit."""
    truth, _, _, _, lossless = written
    back = Exposure.read(lossless)
    for plane in ("image", "mask", "variance"):
        assert np.array_equal(getattr(back, plane), getattr(truth, plane), equal_nan=True)


def test_damaged_tile_refused(written, tmp_path):
    """A changed byte of a compressed tile is refused by its DATASUM, naming the file."""
    _, _, _, path, _ = written
    data = bytearray(path.read_bytes())
    with fits.open(path, disable_image_compression=True) as hdul:
        table = hdul["IMAGE"].header
        offset = hdul.fileinfo(1)["datLoc"] + table["NAXIS1"] * table["NAXIS2"] + 500
    data[offset] ^= 0x10
    bad = tmp_path / "bad.fits"
    bad.write_bytes(bytes(data))
    with pytest.raises(BadInputError, match=r"bad\.fits.*checksum mismatch in HDU 1 \(IMAGE\)"):
        Exposure.read(bad)


def test_config_checked():
    with pytest.raises(ValueError, match="quantize_level"):
        CompressionConfig(quantize_level=0)
    with pytest.raises(ValueError, match="tile_rows"):
        CompressionConfig(tile_rows=0)
    with pytest.raises(ValueError, match="dither_seed"):
        replace(CompressionConfig(), dither_seed=10001)


# ------------------------------------------------------------------------- downstream


def _written_both(exp: Exposure, tmp) -> tuple[Exposure, Exposure]:
    """The exposure through a lossless and a quantised file, read back (``exp`` is
    quantised by the second write)."""
    exp.compression = CompressionConfig(enabled=False)
    lossless = exp.write(tmp / "lossless.fits")
    exp.compression = CompressionConfig()
    quantised = exp.write(tmp / "quantised.fits")
    return Exposure.read(lossless), Exposure.read(quantised)


def test_characterize_equal_within_the_budget(tmp_path):
    """One imaging frame (30 Moffat stars, FWHM 8 px, on a 300 e⁻ sky) characterized from
    the lossless and the quantised file: the same sources; centroids within 5 × 2.9 % of
    their statistical error (FWHM / (2.355 S/N)); the median PSF FWHM within 5 × 2.9 % of
    one star's FWHM error (the scatter over the PSF stars: the median may move to another
    star's value, not by the error of the median)."""
    from atmospec.imaging.characterize import characterize

    rng = np.random.default_rng(11)
    stars = [(x, y, f) for x, y, f in zip(rng.uniform(50, 750, 30), rng.uniform(50, 550, 30),
                                          10 ** rng.uniform(4.3, 5.8, 30), strict=True)]
    exp = _frame(shape=(600, 800), seed=5, stars=stars)
    exp.image[10, 20:25] = 0.0  # no NaN here: the characterization needs finite sky pixels
    exp.metadata["EXPTIME"] = 30.0
    ra, rb = (characterize(e) for e in _written_both(exp, tmp_path))
    a, b = ra.catalog, rb.catalog
    assert len(a) == len(b) >= 25
    assert ra.image_quality.n_sources == rb.image_quality.n_sources
    distance = np.hypot(a["xcentroid"][:, None] - b["xcentroid"][None],
                        a["ycentroid"][:, None] - b["ycentroid"][None])
    match = distance.argmin(axis=1)
    assert len(set(match)) == len(a)
    b = b[match]
    centroid_err = a["fwhm"] / (2.355 * a["snr"])
    assert np.all(np.abs(b["xcentroid"] - a["xcentroid"]) <= K * centroid_err)
    assert np.all(np.abs(b["ycentroid"] - a["ycentroid"]) <= K * centroid_err)
    psf = a["psf_star"]
    assert psf.sum() >= 10 and np.array_equal(psf, b["psf_star"])
    star_err = float(np.std(a["psf_fwhm"][psf]))
    assert abs(rb.image_quality.fwhm_px - ra.image_quality.fwhm_px) <= K * star_err
    assert ra.image_quality.fwhm_px == pytest.approx(8.0, rel=0.03)  # the truth, both runs


def test_extraction_equal_within_the_budget(tmp_path):
    """A full-frame holo4_003 exposure (orders 0 and 1, 300 e⁻ sky) extracted from the
    lossless and the quantised file: the same rows, the dispersion angle within 5 × 2.9 %
    of its error, the spectrum per row within 5 × 2.9 % of its error and its total within
    5 × 2.9 % of the total's error."""
    from atmospec.sim.dispersed import DispersedSceneConfig, render_dispersed
    from atmospec.spectro.extract import extract_spectrum

    x0, y0, linspos = 1750.3, 3699.6, 72.1
    signal, _ = render_dispersed((4000, 4072), x0, y0, 2e7, 6.0, "holo4_003", linspos,
                                 np.random.default_rng(1),
                                 config=DispersedSceneConfig(orders=(0, 1)))
    total = signal.astype(np.float32)
    total += np.float32(SKY)
    noise = np.random.default_rng(2).standard_normal(total.shape, dtype=np.float32)
    noise *= np.sqrt(total + np.float32(READ_NOISE**2))
    variance = np.maximum(total + noise, 0) + np.float32(READ_NOISE**2)
    total += noise
    del signal, noise
    exp = Exposure(total, np.zeros(total.shape, np.int32), variance,
                   fits.Header({"OBSID": "AT_O_20990101_000042"}))
    a, b = (extract_spectrum(e, x0, y0, "holo4_003", linspos)
            for e in _written_both(exp, tmp_path))
    assert np.array_equal(a.rows, b.rows)
    assert abs(b.angle_deg - a.angle_deg) <= K * a.angle_err_deg
    ok = np.isfinite(a.flux_e) & np.isfinite(b.flux_e) & (a.flux_err_e > 0)
    assert ok.sum() > 1000
    assert np.all(np.abs(b.flux_e[ok] - a.flux_e[ok]) <= K * a.flux_err_e[ok])
    total_err = math.sqrt(np.sum(a.flux_err_e[ok] ** 2))
    assert abs(b.flux_e[ok].sum() - a.flux_e[ok].sum()) <= K * total_err


# ------------------------------------------------------------------------- the options


def test_lossless_options_reach_the_isr_config():
    """``atmospec isr --lossless`` and ``atmospec night --lossless`` (`NightRunConfig`,
    applied by `load_pipeline`, which ``atmospec watch`` calls too) turn the quantisation
    off; the setting is part of the ISR task's hash, so changing it re-runs ISR, and of
    nothing else."""
    from atmospec.cli import build_parser
    from atmospec.cli.isr import _isr_config
    from atmospec.night.pipeline import load_pipeline
    from atmospec.night.runner import NightRunConfig
    from atmospec.night.tasks import task_hash

    args = build_parser().parse_args(["isr", "raw.fits", "--out", "o", "--lossless"])
    assert not _isr_config(args.steps, args.overscan, args.lossless).compression.enabled
    args = build_parser().parse_args(["isr", "raw.fits", "--out", "o"])
    assert _isr_config(args.steps, args.overscan, args.lossless).compression.enabled
    args = build_parser().parse_args(["night", "raw", "--repo", "r", "--lossless"])
    assert args.lossless and NightRunConfig(lossless=args.lossless).lossless

    default = {t.name: t.config for t in load_pipeline().tasks}
    lossless = {t.name: t.config for t in load_pipeline(lossless=True).tasks}
    assert default["isr"].compression.enabled and not lossless["isr"].compression.enabled
    assert task_hash("isr", default["isr"], {}) != task_hash("isr", lossless["isr"], {})
    assert {k: v for k, v in default.items() if k != "isr"} == \
        {k: v for k, v in lossless.items() if k != "isr"}


# --------------------------------------------------------------------------- raw tiles


def _hdu_bytes(path, index: int) -> tuple[bytes, fits.Header]:
    """The data (tile table and heap) and the header of HDU ``index`` of ``path``."""
    from atmospec.fitsscan import scan_fits

    hdu = scan_fits(path).hdus[index]
    with open(path, "rb") as f:
        f.seek(hdu.data_start)
        return f.read(hdu.data_size), hdu.header


@pytest.mark.parametrize(("dtype", "tile_rows"), [(np.int32, 1), (np.int32, 7), (np.int16, 1)])
def test_rice_tiles_decoded_as_astropy_does(tmp_path, dtype, tile_rows):
    """Lossless RICE images (LATISS and LSST raws: one row per tile) decode to astropy's
    pixels, with a last tile shorter than the others and negative values."""
    from atmospec.compression import decompress_rice_image

    rng = np.random.default_rng(3)
    info = np.iinfo(dtype)
    image = rng.normal(0.0, 900.0, (101, 37)).astype(dtype)
    image[0, :3] = (info.min, info.max, 0)
    path = tmp_path / "rice.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(
        image, compression_type="RICE_1", tile_shape=(tile_rows, 37))]).writeto(path)
    data, header = _hdu_bytes(path, 1)
    decoded = decompress_rice_image(data, header)
    with fits.open(path) as hdul:
        expected = hdul[1].data
    assert decoded is not None and decoded.dtype == expected.dtype.newbyteorder("=")
    assert np.array_equal(decoded, expected) and np.array_equal(decoded, image)


def test_rice_fast_path_declines_other_kinds_and_refuses_bad_tables(tmp_path):
    """Quantised floats, GZIP tiles and tiles that are not whole rows go to astropy (None);
    a descriptor pointing outside the heap is a ValueError."""
    from atmospec.compression import decompress_rice_image

    rng = np.random.default_rng(4)
    ints = rng.integers(0, 5000, (40, 30)).astype(np.int32)
    cases = {"float": fits.CompImageHDU(ints.astype(np.float32), compression_type="RICE_1"),
             "gzip": fits.CompImageHDU(ints, compression_type="GZIP_2"),
             "blocks": fits.CompImageHDU(ints, compression_type="RICE_1", tile_shape=(8, 10))}
    for name, hdu in cases.items():
        path = tmp_path / f"{name}.fits"
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
        assert decompress_rice_image(*_hdu_bytes(path, 1)) is None, name
    path = tmp_path / "rows.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(
        ints, compression_type="RICE_1", tile_shape=(1, 30))]).writeto(path)
    data, header = _hdu_bytes(path, 1)
    damaged = bytearray(data)
    damaged[4:8] = (10**6).to_bytes(4, "big")  # first tile's heap offset
    with pytest.raises(ValueError, match="outside the heap"):
        decompress_rice_image(bytes(damaged), header)


def test_raw_read_equals_astropy(tmp_path, monkeypatch):
    """A simulated RICE-compressed LATISS raw reads to the same pixels through the fast
    path and through astropy alone."""
    from atmospec.camera import raw as raw_module
    from atmospec.sim.night import NightConfig, simulate_night

    night = NightConfig(n_bias=1, n_dark=0, n_flat=0, n_science=0, n_dispersed=0,
                        compress=True)
    path = next(p for p in simulate_night(tmp_path, night) if p.suffix == ".fits")
    layout = raw_module.check_raw_structure(path)
    fast, floating = raw_module._read_segments(layout)
    assert not floating  # integer pixels: read_raw skips its NaN test
    monkeypatch.setattr(raw_module, "_decoded_tiles", lambda source, hdu: None)
    assert np.array_equal(fast, raw_module._read_segments(layout)[0])
