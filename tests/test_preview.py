"""Tests for atmospec.isr.preview: block means and ORs, plane counts, the preview file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from atmospec.errors import BadInputError
from atmospec.isr.preview import (
    block_any,
    block_mean,
    block_or,
    make_preview,
    plane_counts,
    preview_factor,
    read_preview,
    write_preview,
)


def _reference_mean(image: np.ndarray, f: int) -> np.ndarray:
    ny, nx = -(-image.shape[0] // f), -(-image.shape[1] // f)
    out = np.full((ny, nx), np.nan)
    for j in range(ny):
        for i in range(nx):
            block = image[j * f:(j + 1) * f, i * f:(i + 1) * f]
            good = block[np.isfinite(block)]
            if good.size:
                out[j, i] = good.astype(np.float64).mean()
    return out


def test_block_mean_against_loops() -> None:
    """Block means of finite pixels, padded edges kept, NaN/inf pixels left out (bands of
    the fast path and of the pixel-by-pixel path), NaN for an all-NaN block."""
    rng = np.random.default_rng(3)
    image = rng.normal(1000.0, 30.0, (203, 517)).astype(np.float32)
    np.testing.assert_allclose(block_mean(image, 4), _reference_mean(image, 4), rtol=1e-6)
    image[150, 9] = np.nan
    image[7, 500] = np.inf
    image[200:, 512:] = np.nan  # a whole (padded) corner block
    mean = block_mean(image, 4)
    assert mean.shape == (51, 130)
    np.testing.assert_allclose(mean, _reference_mean(image, 4), rtol=1e-6)
    assert np.isnan(mean[50, 128]) and np.isfinite(mean[37, 2])

    small = np.arange(35, dtype=np.float32).reshape(5, 7)
    small[0, 0] = np.nan
    mean = block_mean(small, 3)
    assert mean.shape == (2, 3)  # padded, not cropped: the edge pixels are kept
    np.testing.assert_allclose(mean[0, 0], np.nanmean(small[:3, :3]))
    np.testing.assert_allclose(mean[1, 2], small[3:5, 6].mean())
    assert np.isnan(block_mean(np.full((4, 4), np.nan), 2)).all()


def test_block_or_and_any() -> None:
    """The bitwise OR per block equals a reduction over the block axes, padding included."""
    rng = np.random.default_rng(5)
    mask = (1 << rng.integers(0, 12, (101, 203))).astype(np.int32)
    mask[rng.random(mask.shape) < 0.9] = 0
    f = 8
    padded = np.pad(mask, ((0, (-101) % f), (0, (-203) % f)))
    blocks = padded.reshape(padded.shape[0] // f, f, padded.shape[1] // f, f)
    expected = np.bitwise_or.reduce(np.bitwise_or.reduce(blocks, axis=3), axis=1)
    np.testing.assert_array_equal(block_or(mask, f), expected)
    np.testing.assert_array_equal(block_or(mask, 1), mask)

    flags = np.zeros((5, 7), dtype=bool)
    flags[4, 6] = True
    flagged = block_any(flags, 3)
    assert flagged.shape == (2, 3) and flagged.dtype == bool
    assert flagged.sum() == 1 and flagged[1, 2]
    np.testing.assert_array_equal(block_any(flags, 1), flags)


def test_plane_counts_over_chunks() -> None:
    """The per-plane pixel counts, histogrammed in chunks, equal a count per plane (a mask
    of more than one chunk, and one with bits beyond the histogram's range)."""
    rng = np.random.default_rng(4)
    mask = rng.integers(0, 64, (1100, 1000)).astype(np.int32)  # 1.1 chunks
    planes = {"BAD": 0, "CR": 3, "EDGE": 5}
    expected = {p: int(np.count_nonzero(mask & (1 << b))) for p, b in planes.items()}
    assert plane_counts(mask, planes) == expected
    mask[0, 0] = 1 << 20  # a high plane: counted plane by plane
    planes["HIGH"] = 20
    expected = {p: int(np.count_nonzero(mask & (1 << b))) for p, b in planes.items()}
    assert expected["HIGH"] == 1 and plane_counts(mask, planes) == expected


def test_preview_factor() -> None:
    """LATISS's 4072×4000 at 1000 px: 8 (divides both sides; 7 would need padding)."""
    assert preview_factor((4000, 4072), 1000) == 8
    assert preview_factor((2000, 2036), 1000) == 4
    assert preview_factor((300, 400), 1000) == 1


def test_preview_file_round_trip(tmp_path: Path) -> None:
    """The preview read back equals the one written: block means bit for bit (lossless),
    mask, counts, bits, shape and the exposure's header."""
    from astropy.io import fits

    rng = np.random.default_rng(8)
    image = rng.normal(500.0, 20.0, (400, 524)).astype(np.float32)
    image[3, 3] = np.nan
    mask = np.zeros(image.shape, dtype=np.int32)
    mask[10:20, 30:35] = 1 << 3
    mask[300, :] |= 1 << 0
    bits = {"BAD": 0, "CR": 3, "DETECTED_NEGATIVE": 6}
    header = fits.Header([("OBSID", "AT_O_20250301_000042"), ("FILTER", "SDSSr_65mm")])
    preview = make_preview(image, mask, bits, "electron", header, max_width=200)
    assert preview.factor == preview_factor(image.shape, 200) == 4
    assert preview.counts == {"BAD": 524, "CR": 50, "DETECTED_NEGATIVE": 0}
    path = write_preview(preview, tmp_path / "x_preview.fits")
    back = read_preview(path)
    np.testing.assert_array_equal(back.image, preview.image)
    np.testing.assert_array_equal(back.mask, preview.mask)
    assert (back.factor, back.shape, back.bits, back.counts, back.unit) == \
        (4, (400, 524), bits, preview.counts, "electron")
    assert back.metadata["OBSID"] == "AT_O_20250301_000042"


def test_preview_refuses_other_files(tmp_path: Path) -> None:
    from astropy.io import fits

    path = tmp_path / "not_a_preview.fits"
    fits.PrimaryHDU(np.zeros((4, 4), dtype=np.float32)).writeto(path)
    with pytest.raises(BadInputError, match="not a readable preview"):
        read_preview(path)
    with pytest.raises(BadInputError, match="not a readable preview"):
        read_preview(tmp_path / "missing.fits")

