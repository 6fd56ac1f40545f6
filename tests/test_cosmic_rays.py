"""Block-wise cosmic-ray detection against full-frame L.A.Cosmic and the simulator's truth.

One full-size simulated science frame is processed both ways (the full-frame reference
takes ~17 s of this file's ~30 s); a dark frame checks recall and false positives alone.
"""

from __future__ import annotations

from dataclasses import replace

import astroscrappy
import numpy as np
import pytest
from scipy import ndimage

from atmospec.camera.description import load_camera
from atmospec.isr.cosmic_rays import (
    CosmicRayConfig,
    binned_config,
    cosmic_ray_boxes,
    find_cosmic_rays,
    margin_px,
    screen_candidates,
)
from atmospec.isr.driver import IsrCalibrations, IsrConfig, run_isr
from atmospec.sim.night import NightConfig, night_plan, simulate_exposure
from atmospec.sim.rawfile import raw_frame

CAMERA = load_camera("latiss")
NIGHT = NightConfig(n_bias=0, n_dark=1, n_flat=0, n_science=1, compress=False)
PRE_CR = ("overscan", "saturation", "gain")
BLOCKWISE = CosmicRayConfig()
FULL_FRAME = CosmicRayConfig(blockwise=False)


def _simulate(kind: str):
    seq = next(p.seq for p in night_plan(NIGHT) if p.kind == kind)
    segments, truth, cards = simulate_exposure(kind, NIGHT, seq)
    gains = truth.perfect_calibrations().gains

    def isr(*steps):
        # run_isr works on the segments in place: each run gets its own copy.
        raw = raw_frame(segments, cards, CAMERA)
        return run_isr(raw, IsrConfig(steps=steps), IsrCalibrations(gains=gains)).exposure

    return isr, truth, gains


def _recall_false_pos(cr: np.ndarray, truth) -> tuple[float, float]:
    """Pixel recall of the truth, and flagged pixels off the truth's 1-pixel halo per pixel
    (the measures of test_isr_truth.py)."""
    true_cr = truth.cosmic_ray_mask & ~truth.detector.saturated
    halo = ndimage.binary_dilation(true_cr, iterations=1)
    return (cr & true_cr).sum() / true_cr.sum(), (cr & ~halo).sum() / cr.size


@pytest.fixture(scope="module")
def science():
    """A science frame before the cosmic-ray step, both masks, timings and boxes."""
    isr, truth, gains = _simulate("science")
    exposure = isr(*PRE_CR)
    image = exposure.image
    rn2 = float(np.median(gains.read_noise) ** 2)
    exclude = exposure.get_mask("BAD", "SAT", "SUSPECT")
    block, block_clean = find_cosmic_rays(image, rn2, exclude, BLOCKWISE)
    full, full_clean = find_cosmic_rays(image, rn2, exclude, FULL_FRAME)
    boxes = cosmic_ray_boxes(image, rn2, exclude, BLOCKWISE)
    core = np.zeros(image.shape, bool)
    for c, _, _ in boxes:
        core[c] = True
    return {"isr": isr, "truth": truth, "image": image, "rn2": rn2, "exclude": exclude,
            "block": block, "block_clean": block_clean, "full": full,
            "full_clean": full_clean,
            "boxes": boxes, "core": core}


def test_blockwise_equals_full_frame_in_boxes(science):
    """Inside the processed cores the mask and repaired image are those of the full frame;
    outside, nothing is flagged: the block-wise mask is a subset of the full-frame one."""
    s = science
    core = s["core"]
    np.testing.assert_array_equal(s["block"][core], s["full"][core])
    np.testing.assert_array_equal(s["block_clean"][core], s["full_clean"][core])
    assert not (s["block"] & ~core).any()
    assert not (s["block"] & ~s["full"]).any()
    # Outside the CR pixels the image is returned untouched.
    np.testing.assert_array_equal(s["block_clean"][~s["block"]], s["image"][~s["block"]])


def test_blockwise_agrees_on_real_cosmic_rays(science):
    """≥ 99.5 % agreement on the pixels near true cosmic rays; what the full frame flags
    beyond is noise (lone pixels at the 4.5σ Laplacian limit), which the block-wise mask
    drops."""
    s = science
    near = ndimage.binary_dilation(s["truth"].cosmic_ray_mask, iterations=3)
    block, full = s["block"], s["full"]
    agree = (block & full & near).sum() / ((block | full) & near).sum()
    overall = (block & full).sum() / (block | full).sum()
    dropped = full & ~block
    sizes = np.bincount(ndimage.label(dropped, np.ones((3, 3), bool))[0].ravel())[1:]
    print(f"CR agreement near truth {agree:.5f}; overall {overall:.3f}: the full frame "
          f"also flags {dropped.sum()} noise pixels in {sizes.size} groups (largest "
          f"{sizes.max() if sizes.size else 0} px), {(dropped & near).sum()} near truth")
    assert agree >= 0.995
    # The dropped detections are small noise groups, not cosmic-ray tracks.
    assert sizes.size == 0 or sizes.max() <= 6


def test_prescreen_finds_every_detected_cosmic_ray(science):
    """Every true cosmic ray that full-frame L.A.Cosmic detects has a pre-screen candidate,
    and all its flagged pixels lie in a processed core."""
    s = science
    truth = s["truth"]
    true_cr = truth.cosmic_ray_mask & ~truth.detector.saturated
    labels, n = ndimage.label(true_cr, np.ones((3, 3), bool))
    index = np.arange(1, n + 1)
    detected = ndimage.maximum(s["full"], labels, index) > 0
    ys, xs = screen_candidates(s["image"], s["rn2"], s["exclude"], BLOCKWISE)
    candidates = np.zeros(true_cr.shape, bool)
    candidates[ys, xs] = True
    # Candidates may sit on a track's diffusion wing, just off the truth mask.
    grown = ndimage.grey_dilation(labels, size=(5, 5))
    screened = np.zeros(n + 1, bool)
    screened[np.unique(grown[candidates])] = True
    in_core = ndimage.minimum(s["core"] | ~s["full"], labels, index) > 0
    print(f"{detected.sum()} of {n} true cosmic rays detected by the full frame; "
          f"{(detected & screened[1:]).sum()} screened; {ys.size} candidates")
    assert detected.sum() > 150
    assert np.all(screened[1:][detected])
    assert np.all(in_core[detected])


def test_recall_and_false_positives_science(science):
    """Through run_isr: recall ≥ 0.95 and false positives ≤ 1e-4 of the pixels."""
    exposure = science["isr"](*PRE_CR, "cosmic_rays")
    recall, false_pos = _recall_false_pos(exposure.get_mask("CR"), science["truth"])
    full_recall, full_fp = _recall_false_pos(science["full"], science["truth"])
    print(f"science: CR recall {recall:.4f} (full frame {full_recall:.4f}), false positives "
          f"{false_pos:.2e} (full frame {full_fp:.2e})")
    assert recall >= 0.95
    assert recall == pytest.approx(full_recall, abs=0.002)
    assert false_pos <= 1e-4


def test_star_cores_not_flagged(science):
    """No unsaturated star with S/N > 50 loses its peak pixel to the CR mask (as with the
    full-frame run)."""
    s = science
    truth = s["truth"]
    stars = truth.stars
    npix = np.pi * truth.fwhm_px**2  # aperture of radius one FWHM
    snr = stars["flux_e"] / np.sqrt(stars["flux_e"] + npix * (truth.sky_e + s["rn2"]))
    y = np.rint(stars["y"]).astype(int)
    x = np.rint(stars["x"]).astype(int)
    ny, nx = s["image"].shape
    bright = (snr > 50) & ~stars["saturated"] & (y >= 0) & (y < ny) & (x >= 0) & (x < nx)
    assert bright.sum() > 100
    assert not s["full"][y[bright], x[bright]].any()
    assert not s["block"][y[bright], x[bright]].any()


def test_boxes_cover_a_small_part_of_the_frame(science):
    """The work is proportional to the area processed: the boxes (with their margins) cover
    a small part of the frame. The speed itself is measured in
    benchmarks/bench_cosmic_rays.py, not here."""
    s = science
    area = sum((by.stop - by.start) * (bx.stop - bx.start) for _, by, bx in s["boxes"])
    fraction = area / s["image"].size
    print(f"{len(s['boxes'])} boxes, {fraction:.3f} of the frame")
    assert fraction < 0.12


def test_dark_frame():
    """Dark frame (read noise only, hot pixels): recall, false positives, and the same
    result as the full frame inside the cores of a crop."""
    isr, truth, gains = _simulate("dark")
    exposure = isr(*PRE_CR, "cosmic_rays")
    recall, false_pos = _recall_false_pos(exposure.get_mask("CR"), truth)
    print(f"dark: CR recall {recall:.4f}, false positives {false_pos:.2e}")
    assert recall >= 0.95
    assert false_pos <= 1e-4

    before = isr(*PRE_CR)
    crop = np.s_[1000:2024, 1500:2524]
    image = before.image[crop]
    exclude = before.get_mask("BAD", "SAT", "SUSPECT")[crop]
    rn2 = float(np.median(gains.read_noise) ** 2)
    block, block_clean = find_cosmic_rays(image, rn2, exclude, BLOCKWISE)
    full, full_clean = find_cosmic_rays(image, rn2, exclude, FULL_FRAME)
    boxes = cosmic_ray_boxes(image, rn2, exclude, BLOCKWISE)
    assert len(boxes) > 5
    for c, _, _ in boxes:
        np.testing.assert_array_equal(block[c], full[c])
        np.testing.assert_array_equal(block_clean[c], full_clean[c])
    assert not (block & ~full).any()


def _cores(image, rn2, exclude, config):
    """The boxes of ``config`` on ``image`` and the union of their cores."""
    boxes = cosmic_ray_boxes(image, rn2, exclude, config)
    core = np.zeros(image.shape, bool)
    for c, _, _ in boxes:
        core[c] = True
    return boxes, core


def test_blockwise_iterations_equal_full_frame_in_cores():
    """Each iteration of the block-wise path runs only where it can reach a core; inside the
    cores its mask and repaired image are still those of full-frame L.A.Cosmic, for 2 and 3
    iterations, on a frame where the last iteration flags pixels the earlier ones did not
    (faint wings of tracks and blobs, found once the bright pixels beside them are
    repaired), with a bad column and hits at the frame's edges."""
    rng = np.random.default_rng(11)
    shape = (300, 320)
    image = (rng.poisson(300.0, shape) + rng.normal(0.0, 8.0, shape)).astype(np.float32)
    exclude = np.zeros(shape, bool)
    exclude[:, 151] = True
    starts = [(40, 30), (60, 140), (120, 250), (200, 60), (250, 180), (280, 300), (3, 100),
              (150, 5)]
    for i, (y, x) in enumerate(starts):  # tracks with a faint wing below
        n = 6 + 3 * i
        ys = np.clip(y + (np.arange(n) * 0.4).astype(int), 0, shape[0] - 1)
        xs = np.clip(x + np.arange(n), 0, shape[1] - 1)
        image[ys, xs] += rng.uniform(800.0, 4000.0, n).astype(np.float32)
        image[np.clip(ys + 1, 0, shape[0] - 1), xs] += rng.uniform(60.0, 200.0, n).astype(
            np.float32)
    for y, x in [(90, 90), (180, 240), (230, 120)]:  # 3×3 blobs with a faint halo
        image[y:y + 3, x:x + 3] += rng.uniform(1500.0, 3000.0, (3, 3)).astype(np.float32)
        image[y - 1:y + 4, x - 1:x + 4] += np.float32(150.0)
    # Hits at the edges, which L.A.Cosmic leaves (its 7×7 median copies the border).
    image[1, 200:203] += np.float32(2500.0)
    image[160:162, 318] += np.float32(2500.0)
    rn2 = 64.0
    for niter in (2, 3):
        # max_box_fraction=1: the block-wise path whatever the boxes cover.
        config = CosmicRayConfig(niter=niter, max_box_fraction=1.0)
        boxes, core = _cores(image, rn2, exclude, config)
        area = sum((by.stop - by.start) * (bx.stop - bx.start) for _, by, bx in boxes)
        assert len(boxes) >= 5 and area < 0.8 * image.size
        earlier, _ = find_cosmic_rays(image, rn2, exclude,
                                      replace(config, niter=niter - 1, blockwise=False))
        full, full_clean = find_cosmic_rays(image, rn2, exclude,
                                            replace(config, blockwise=False))
        block, block_clean = find_cosmic_rays(image, rn2, exclude, config)
        added = full & ~earlier & core
        print(f"niter {niter}: {len(boxes)} boxes covering {area / image.size:.2f}; "
              f"{int(block.sum())} px flagged, {int(added.sum())} by the last iteration")
        assert added.sum() >= (20 if niter == 2 else 3)
        np.testing.assert_array_equal(block[core], full[core])
        np.testing.assert_array_equal(block_clean[core], full_clean[core])
        assert not (block & ~core).any()


def test_blockwise_equals_astroscrappy_on_its_boxes():
    """Inside each core, the block-wise result is astroscrappy's on the box, to the bit:
    also where a pixel's whole 5×5 neighbourhood is flagged or bad, which astroscrappy
    repairs with the median of the good pixels of the image it is given (the box's)."""
    rng = np.random.default_rng(5)
    shape = (200, 220)
    image = (rng.poisson(300.0, shape) + rng.normal(0.0, 8.0, shape)).astype(np.float32)
    exclude = np.zeros(shape, bool)
    exclude[120:126, 30:60] = True
    for y, x, size in [(50, 60, 9), (140, 150, 11), (2, 200, 5), (127, 40, 5)]:
        image[y:y + size, x:x + size] += rng.uniform(3000.0, 9000.0, (size, size)).astype(
            np.float32)
    rn2 = 64.0
    config = CosmicRayConfig(objlim=1.5, max_box_fraction=1.0)
    mask, cleaned = find_cosmic_rays(image, rn2, exclude, config)
    boxes, core = _cores(image, rn2, exclude, config)
    assert len(boxes) == 4 and not (mask & ~core).any()
    fallback = 0
    for c, box_y, box_x in boxes:
        box = (box_y, box_x)
        ref, ref_clean = astroscrappy.detect_cosmics(
            image[box], inmask=exclude[box], sigclip=config.sigclip, sigfrac=config.sigfrac,
            objlim=config.objlim, gain=1.0, readnoise=float(np.sqrt(rn2)), satlevel=np.inf,
            niter=config.niter, sepmed=True, cleantype="meanmask", fsmode="median")
        local = (slice(c[0].start - box_y.start, c[0].stop - box_y.start),
                 slice(c[1].start - box_x.start, c[1].stop - box_x.start))
        np.testing.assert_array_equal(mask[c], ref[local])
        np.testing.assert_array_equal(cleaned[c], np.where(ref[local], ref_clean[local],
                                                           image[c]))
        good = image[box][~ndimage.binary_dilation(exclude[box], np.ones((3, 3), bool))]
        level = astroscrappy.utils.median(np.ascontiguousarray(good), good.size)
        fallback += int((mask[c] & (cleaned[c] == np.float32(level))).sum())
    # The blob against the bad rows has pixels with nothing usable around them.
    assert fallback >= 1


def test_prescreen_first_stage_is_its_definition():
    """The first stage (``screen_single_sigma=0`` keeps all it finds) selects exactly the
    pixels whose 4-neighbour Laplacian exceeds ``screen_sigma`` times the noise of the
    darkest pixel of their 3×3 neighbourhood, computed here pixel by pixel: its bound on
    that pixel drops none, on frames of stars, hits, bad pixels and NaN, of any shape."""
    rng = np.random.default_rng(2)
    config = CosmicRayConfig(screen_single_sigma=0.0)
    scale = np.float32(16.0 * config.screen_sigma**2)
    for ny, nx in [(3, 3), (5, 80), (70, 4), (150, 130)]:
        yy, xx = np.mgrid[:ny, :nx]
        image = rng.normal(rng.uniform(0.0, 500.0), 20.0, (ny, nx))
        image += 5e4 * np.exp(-((yy - ny / 2) ** 2 + (xx - nx / 3) ** 2) / 8.0)
        image[rng.random((ny, nx)) < 0.02] += 800.0
        image = image.astype(np.float32)
        image[rng.random((ny, nx)) < 0.01] = np.nan
        exclude = rng.random((ny, nx)) < 0.02
        floor = np.float32(49.0)
        expected = []
        for y in range(1, ny - 1):
            for x in range(1, nx - 1):
                v = image[y - 1:y + 2, x - 1:x + 2]
                lap = v[1, 1] * np.float32(4.0) - v[0, 1] - v[2, 1] - v[1, 0] - v[1, 2]
                var = np.maximum(np.min(v), np.float32(0.0)) + floor
                if lap > 0 and np.square(lap) > var * scale and not exclude[y, x]:
                    expected.append((y, x))
        ys, xs = screen_candidates(image, 49.0, exclude, config)
        assert list(zip(ys.tolist(), xs.tolist(), strict=True)) == expected
        assert len(expected) > (200 if ny * nx > 10000 else 0)


def test_small_images_and_fallback():
    """No candidate: nothing flagged; too many boxes: the whole-frame path; tiny frames."""
    rng = np.random.default_rng(3)
    image = (100.0 + rng.normal(0.0, 10.0, (200, 300))).astype(np.float32)
    exclude = np.zeros(image.shape, bool)
    mask, cleaned = find_cosmic_rays(image, 81.0, exclude, BLOCKWISE)
    assert not mask.any()
    np.testing.assert_array_equal(cleaned, image)
    assert cleaned.dtype == np.float32

    image[50, 60:80] += 2000.0  # a track
    image[150, 200] += 3000.0  # a point hit
    mask, _ = find_cosmic_rays(image, 81.0, exclude, BLOCKWISE)
    assert mask[50, 60:80].all() and mask[150, 200]
    # An excluded hit is neither a candidate nor flagged.
    exclude[150, 199:202] = True
    mask, _ = find_cosmic_rays(image, 81.0, exclude, BLOCKWISE)
    assert not mask[150, 200] and mask[50, 60:80].all()
    full, _ = find_cosmic_rays(image, 81.0, exclude, FULL_FRAME)
    fallback, _ = find_cosmic_rays(image, 81.0, exclude, CosmicRayConfig(max_box_fraction=0.0))
    np.testing.assert_array_equal(fallback, full)

    for shape in ((2, 2), (1, 50), (5, 5)):
        tiny = np.full(shape, 100.0, np.float32)
        mask, cleaned = find_cosmic_rays(tiny, 81.0, np.zeros(shape, bool), BLOCKWISE)
        assert mask.shape == shape and not mask.any()
    assert margin_px(2) == 20 and margin_px(4) == 40


def test_astroscrappy_runs_on_one_openmp_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """astroscrappy's OpenMP runtime is held at one thread while its filters run, block-wise
    (its ``utils`` filters) or on the whole frame (``detect_cosmics``), and given back its
    setting after: on the boxes a second thread only spins (measured 1.7–8.4× the CPU time on
    a loaded 2-core machine, benchmarks/bench_cosmic_rays.py --threads 2)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    def openmp_threads() -> list[int]:
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "openmp"]

    seen: dict[str, list[list[int]]] = {"filter": [], "frame": []}

    def spy(kind, real):
        def wrapped(*args, **kwargs):
            seen[kind].append(openmp_threads())
            return real(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(astroscrappy.utils, "sepmedfilt7",
                        spy("filter", astroscrappy.utils.sepmedfilt7))
    monkeypatch.setattr(astroscrappy, "detect_cosmics", spy("frame", astroscrappy.detect_cosmics))
    rng = np.random.default_rng(5)
    image = rng.normal(100.0, 5.0, (200, 200)).astype(np.float32)
    image[50, 60:63] += 2000.0  # a short track
    exclude = np.zeros(image.shape, bool)
    with threadpool_limits(limits=2, user_api="openmp"):
        before = openmp_threads()
        mask, _ = find_cosmic_rays(image, 25.0, exclude, BLOCKWISE)
        full, _ = find_cosmic_rays(image, 25.0, exclude, FULL_FRAME)
        after = openmp_threads()
    assert before and set(before) == {2}  # astroscrappy's runtime is loaded and seen
    for calls in seen.values():
        assert calls and all(set(s) == {1} for s in calls)
    assert after == before
    assert mask[50, 60:63].all() and mask.sum() < 10 and full[50, 60:63].all()


def test_binned_frame_cells_in_binned_pixels():
    """On a 2×2-binned frame the clustering cells are ``cluster_px / 2`` binned pixels
    (`binned_config`): boxes covering less of the frame, the same recall against the truth
    and no more false positives than with 16-pixel cells."""
    night = NightConfig(n_bias=0, n_dark=0, n_flat=0, n_science=1, compress=False,
                        binning=(2, 2))
    camera = CAMERA.binned(2, 2)
    seq = next(p.seq for p in night_plan(night) if p.kind == "science")
    segments, truth, cards = simulate_exposure("science", night, seq)
    gains = truth.perfect_calibrations().gains
    exposure = run_isr(raw_frame(segments, cards, camera), IsrConfig(steps=PRE_CR),
                       IsrCalibrations(gains=gains)).exposure
    rn2 = float(np.median(gains.read_noise) ** 2)
    exclude = exposure.get_mask("BAD", "SAT", "SUSPECT")
    binned = binned_config(BLOCKWISE, camera.binning)
    assert binned.cluster_px == BLOCKWISE.cluster_px // 2
    assert binned_config(BLOCKWISE, (1, 1)) is BLOCKWISE

    def area(config):
        boxes = cosmic_ray_boxes(exposure.image, rn2, exclude, config)
        return sum((by.stop - by.start) * (bx.stop - bx.start) for _, by, bx in boxes)

    assert area(binned) < 0.9 * area(BLOCKWISE)
    old, _ = find_cosmic_rays(exposure.image, rn2, exclude, BLOCKWISE)
    new, _ = find_cosmic_rays(exposure.image, rn2, exclude, binned)
    recall_old, fp_old = _recall_false_pos(old, truth)
    recall_new, fp_new = _recall_false_pos(new, truth)
    print(f"2×2: recall {recall_old:.4f} → {recall_new:.4f}, false positives {fp_old:.2e} → "
          f"{fp_new:.2e}, box area {area(BLOCKWISE)} → {area(binned)} px")
    assert recall_new == pytest.approx(recall_old, abs=0.002)
    assert recall_new >= 0.93
    assert fp_new <= fp_old * 1.01
