"""The imaging characterization's fast helpers against their slow references.

Each helper in `atmospec.imaging` that replaces a library call or a plain numpy expression
to save time must return the same numbers, bit for bit: these tests compare them on small
synthetic images (flat sky, Gaussian noise, round Moffat stars, masked pixels, sources on
the image edges) with the code they replace (photutils, scipy, numpy on the full frame).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy import units as u
from photutils.aperture import CircularAperture, aperture_photometry
from photutils.segmentation import SegmentationImage, SourceCatalog, detect_sources
from scipy import ndimage
from scipy.optimize import least_squares

from atmospec.exposure import Exposure
from atmospec.imaging import photometry
from atmospec.imaging.background import (
    BackgroundConfig,
    block_sum,
    estimate_background,
    expand_mesh,
    masked_block_sum,
)
from atmospec.imaging.background import _grow_cross as grow_cross
from atmospec.imaging.characterize import _mask_planes, _set_detected
from atmospec.imaging.detection import DetectionConfig, detect
from atmospec.imaging.photometry import (
    CentroidConfig,
    VarianceError,
    circular_photometry,
    gather_stamps,
    psf_centroids,
    segment_properties,
)
from atmospec.imaging.psf import _minpack_fit as minpack_fit
from atmospec.imaging.psf import psf_quadratic_form
from atmospec.sim.scenes import moffat_stamp

STARS = [(40.2, 50.7, 4e4), (150.0, 120.3, 1e5), (163.6, 131.1, 3e4), (2.4, 190.0, 5e4),
         (290.6, 3.1, 6e4), (220.5, 200.2, 2e5), (90.0, 230.0, 8e3)]


def _scene(shape=(240, 300), seed=1, fwhm=7.0):
    """Background-subtracted image (float32), its variance, a mask with bad columns and
    NaN pixels, and a segmentation of the stars (two of them touching)."""
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape)
    for x, y, flux in STARS:
        half = 30
        ix, iy = round(x), round(y)
        stamp = flux * moffat_stamp(x - ix, y - iy, fwhm, 3.0, half)
        y0, x0 = iy - half, ix - half
        ys, xs = slice(max(y0, 0), min(iy + half + 1, shape[0])), slice(
            max(x0, 0), min(ix + half + 1, shape[1]))
        truth[ys, xs] += stamp[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
    variance = truth + 150.0
    data = (truth + rng.normal(size=shape) * np.sqrt(variance)).astype(np.float32)
    mask = np.zeros(shape, bool)
    mask[:, 155] = True
    mask[118:124, 140:149] = True
    mask[60:66, 30:34] = True
    data[200, 10] = np.nan
    labels = detect_sources(data, 40.0, n_pixels=8).data
    # The touching pair split in two segments: each star's Kron ellipses then hold its
    # neighbour's pixels, which photutils replaces by their mirror image.
    pair = labels == labels[120, 150]
    labels[pair & (np.arange(shape[1]) >= 157)] = labels.max() + 1
    return data, variance.astype(np.float32), mask, SegmentationImage(labels)


def test_masked_block_sum_is_the_full_frame_expression():
    rng = np.random.default_rng(2)
    for shape, factor, fill in (((203, 157), 2, 0.0), ((130, 97), 4, np.nan), ((64, 70), 3, 0.0)):
        image = rng.normal(100.0, 10.0, shape)
        bad = rng.random(shape) < 0.05
        for img in (image, image.astype(np.float32)):
            reference = block_sum(np.where(bad, fill, img).astype(np.float32), factor)
            np.testing.assert_array_equal(masked_block_sum(img, bad, factor, fill), reference)


def test_grow_cross_is_binary_dilation():
    rng = np.random.default_rng(3)
    mask = rng.random((90, 71)) < 0.02
    mask[0, 0] = mask[-1, -1] = mask[0, -1] = True
    for iterations in (0, 1, 3):
        grown = grow_cross(mask, iterations)
        reference = ndimage.binary_dilation(mask, iterations=iterations) if iterations else mask
        np.testing.assert_array_equal(grown, reference)
        assert grown is not mask


def test_background_maps_on_demand_equal_the_full_maps():
    data, variance, mask, _ = _scene()
    image = data + np.float32(500.0)
    image[np.isnan(image)] = 500.0
    result = estimate_background(image, mask, BackgroundConfig(box_size=64))
    full = expand_mesh(result.mesh, result.mesh_y, result.mesh_x, image.shape)
    np.testing.assert_array_equal(result.background, full)
    np.testing.assert_array_equal(result.subtract_from(image), image - full)
    rows, cols = np.arange(1, image.shape[0], 2), np.arange(1, image.shape[1], 2)
    rms_full = expand_mesh(result.rms_mesh, result.mesh_y, result.mesh_x, image.shape)
    np.testing.assert_array_equal(result.rms_at(rows, cols), rms_full[np.ix_(rows, cols)])
    # Detection given the estimate (noise interpolated at block centres only) and given
    # the full noise map find the same sources.
    subtracted = result.subtract_from(image)
    config = DetectionConfig(bin_factor=2, min_fwhm_binned=1.0)
    lazy = detect(subtracted, result, mask, None, 7.0, config, variance)
    full_map = detect(subtracted, rms_full, mask, None, 7.0, config, variance)
    np.testing.assert_array_equal(lazy.segmentation.data, full_map.segmentation.data)
    np.testing.assert_array_equal(lazy.snr, full_map.snr)
    assert lazy.segmentation.n_labels >= 5


def test_gather_stamps_equals_pixel_by_pixel():
    rng = np.random.default_rng(4)
    for image, fill in ((rng.normal(size=(50, 60)).astype(np.float32), 0.0),
                        (rng.random((50, 60)) < 0.3, True),
                        (rng.integers(0, 9, (50, 60)).astype(np.int32), 0)):
        x = np.array([30.2, 0.4, 58.9, 10.0, 25.5])
        y = np.array([20.7, 3.0, 48.6, 49.2, 25.5])
        half = 4
        stamps, xs, ys, inside = gather_stamps(image, x, y, half, fill=fill)
        assert stamps.dtype == image.dtype
        for k in range(len(x)):
            cx, cy = round(x[k]), round(y[k])
            for i, yy in enumerate(range(cy - half, cy + half + 1)):
                for j, xx in enumerate(range(cx - half, cx + half + 1)):
                    on = 0 <= yy < image.shape[0] and 0 <= xx < image.shape[1]
                    assert inside[k, i, j] == on
                    assert stamps[k, i, j] == (image[yy, xx] if on else fill)
                    assert xs[k, 0, j] == xx and ys[k, i, 0] == yy


@pytest.mark.parametrize("method", ["exact", "center", "subpixel"])
def test_circular_photometry_is_photutils(method):
    data, variance, mask, _ = _scene()
    error = np.sqrt(variance)
    x = np.array([40.2, 150.3, 2.4, 290.6, 299.4, -3.0, 330.0, 155.0])
    y = np.array([50.7, 120.3, 190.0, 3.1, 239.6, -2.0, 100.0, 121.0])
    for radius in (3.3, 11.0):
        flux, flux_err = circular_photometry(data, error, mask, x, y, radius, method)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = aperture_photometry(data, CircularAperture(np.column_stack([x, y]),
                                                              r=radius),
                                        error=error, mask=mask, method=method)
        np.testing.assert_array_equal(flux, np.asarray(table["aperture_sum"]))
        np.testing.assert_array_equal(flux_err, np.asarray(table["aperture_sum_err"]))
        assert np.isnan(flux[6]) and np.isfinite(flux[:6]).all()
    flux, flux_err = circular_photometry(data, None, None, x, y, 5.0)
    assert np.isnan(flux_err).all() and np.isfinite(flux[:5]).all()


def test_segment_properties_are_photutils():
    """Sums, areas, maxima and Kron fluxes as photutils' `SourceCatalog` gives them (one
    segment wholly masked, NaN pixels, neighbours in each other's Kron aperture)."""
    data, variance, mask, segm = _scene()
    error = np.sqrt(variance)
    hidden = segm.data[50, 40]
    # Without and with a wholly masked segment (whose NaN makes photutils' sums float64).
    for masked in (mask, mask | (segm.data == hidden)):
        ours = segment_properties(data, segm, masked, error)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cat = SourceCatalog(data, segm, mask=masked, error=error)
            for name in ("area", "segment_flux", "segment_flux_err", "max_value"):
                value = getattr(cat, name)
                np.testing.assert_array_equal(
                    ours[name], np.asarray(getattr(value, "value", value), float))
    assert np.isnan(ours["area"][segm.get_index(hidden)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Kron radii and apertures: photutils' numbers.
        radius = photometry._kron_radius(data, masked, segm, cat, ours)
        np.testing.assert_array_equal(radius, cat.kron_radius.value)
        x, y, a, b, theta = photometry._kron_ellipses(cat, ours, radius)
        for k, aperture in enumerate(cat.kron_aperture):
            if aperture is None:
                assert np.isnan(a[k])
                continue
            assert (x[k], y[k]) == tuple(np.ravel(aperture.positions))
            assert (a[k], b[k]) == (aperture.a, aperture.b)
            assert theta[k] == aperture.theta.to_value(u.rad)
        np.testing.assert_allclose(ours["kron_flux"], cat.kron_flux, rtol=1e-12)


def test_minpack_fit_is_least_squares_lm():
    """The same iterates as least_squares(method="lm", x_scale="jac"): equal solutions."""
    rng = np.random.default_rng(5)
    t = np.linspace(0.0, 4.0, 80)
    y = 3.0 * np.exp(-1.3 * t) + 0.5 + rng.normal(0.0, 0.02, t.size)

    def residuals(p):
        return p[0] * np.exp(-p[1] * t) + p[2] - y

    def jacobian_rows(p):
        e = np.exp(-p[1] * t)
        return np.array([e, -p[0] * t * e, np.ones_like(t)])

    p0 = np.array([1.0, 0.5, 0.0])
    ours, fun, success = minpack_fit(residuals, jacobian_rows, p0, 200)
    reference = least_squares(residuals, p0, jac=lambda p: jacobian_rows(p).T, method="lm",
                              x_scale="jac", max_nfev=200)
    assert success == reference.success
    np.testing.assert_array_equal(ours, reference.x)
    np.testing.assert_array_equal(fun, reference.fun)
    with pytest.raises(ValueError, match="not finite"):
        minpack_fit(lambda p: residuals(p) * np.nan, jacobian_rows, p0, 200)


def test_psf_centroids_in_batches_equal_one_batch(monkeypatch):
    data, variance, mask, segm = _scene()
    cat = SourceCatalog(data, segm, mask=mask)
    x, y = np.asarray(cat.x_centroid), np.asarray(cat.y_centroid)
    form = psf_quadratic_form(7.0, 0.0, 0.0, 3.0)
    slope = np.arange(len(x)) % 2 == 0
    args = (data, variance, mask, segm.data, np.asarray(cat.labels), x, y, form, 3.0, 7.0,
            CentroidConfig())
    monkeypatch.setattr(photometry, "_STARS_PER_BATCH", 2)
    batched = psf_centroids(*args, slope=slope)
    monkeypatch.setattr(photometry, "_STARS_PER_BATCH", 1000)
    whole = psf_centroids(*args, slope=slope)
    for ours, reference in zip(batched, whole, strict=True):
        np.testing.assert_array_equal(ours, reference)
    assert whole[2].sum() >= 4


def test_mask_planes_and_detected_plane():
    shape = (40, 50)
    rng = np.random.default_rng(6)
    exposure = Exposure(np.zeros(shape, np.float32), np.zeros(shape, np.int32),
                        np.ones(shape, np.float32))
    for plane in ("BAD", "SAT", "CR", "EDGE", "DETECTED"):
        exposure.set_mask(plane, rng.random(shape) < 0.1)
    wanted = {"a": ("BAD", "CR"), "b": ("CR", "BAD"), "c": ("SAT",), "d": ("NO_DATA",)}
    nonfinite = np.array([7, 300])
    planes, flagged = _mask_planes(exposure, wanted, nonfinite, ("a",))
    reference = exposure.get_mask("BAD", "CR")
    np.testing.assert_array_equal(planes["b"], reference)
    reference.reshape(-1)[nonfinite] = True
    np.testing.assert_array_equal(planes["a"], reference)
    np.testing.assert_array_equal(planes["c"], exposure.get_mask("SAT"))
    assert not planes["d"].any()
    np.testing.assert_array_equal(flagged.select(exposure.bitmask("SAT")),
                                  np.flatnonzero(exposure.get_mask("SAT")))
    # DETECTED: the old footprints replaced by the segments', other planes untouched.
    labels = np.zeros(shape, np.int32)
    labels[5:9, 3:12] = 1
    labels[20:31, 30:33] = 2
    labels[22, 34] = 2
    segm = SegmentationImage(labels)
    values = {"bbox_xmin": np.array([3.0, 30.0]), "bbox_xmax": np.array([11.0, 34.0]),
              "bbox_ymin": np.array([5.0, 20.0]), "bbox_ymax": np.array([8.0, 30.0])}
    before = exposure.mask.copy()
    _set_detected(exposure, flagged, segm, values)
    detected = exposure.bitmask("DETECTED")
    np.testing.assert_array_equal(exposure.mask & ~detected, before & ~detected)
    np.testing.assert_array_equal((exposure.mask & detected) != 0, labels > 0)


def test_error_from_variance():
    """Cut-outs of `VarianceError` are those of the error image; the measurements given it
    equal those given the full error image."""
    data, variance, mask, segm = _scene()
    variance[3:9, 100:140] = -1.0  # no variance: zero error
    error = np.sqrt(np.maximum(variance, 0))
    lazy = VarianceError(variance)
    box = (slice(2, 30), slice(90, 150))
    np.testing.assert_array_equal(lazy[box], error[box])
    assert lazy.shape == error.shape
    ours, reference = (segment_properties(data, segm, mask, e) for e in (lazy, error))
    for name in reference:
        np.testing.assert_array_equal(ours[name], reference[name])
    x, y = np.array([40.2, 150.3, 2.4, 120.0]), np.array([50.7, 120.3, 190.0, 5.0])
    for ours, reference in zip(circular_photometry(data, lazy, mask, x, y, 9.0),
                               circular_photometry(data, error, mask, x, y, 9.0), strict=True):
        np.testing.assert_array_equal(ours, reference)
