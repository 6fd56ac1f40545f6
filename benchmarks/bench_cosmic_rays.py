"""Cosmic-ray step on full-size LATISS frames: block-wise against full-frame L.A.Cosmic.

Run: ``python benchmarks/bench_cosmic_rays.py [--repeat 3] [--full-repeat 1]``.

A simulated science frame and a dark frame go through overscan, saturation and gain (true
gains), then the cosmic-ray step runs on the result three ways, in this process on one core
(thread pools limited to 1 before numpy is imported), CPU times:

* full frame: astroscrappy on the whole 4000×4072 image (``blockwise=False``);
* block-wise: the pre-screen, then L.A.Cosmic on the boxes around its candidates, built
  from astroscrappy's filters and run only where each iteration reaches a box's core
  (`find_cosmic_rays`);
* boxes, detect_cosmics: the same pre-screen and boxes, astroscrappy's ``detect_cosmics``
  on each whole box (the block-wise path before): alternating with the block-wise runs.

Printed per frame: the median CPU time of each path, their ratios, the pre-screen's time,
the fraction of the frame inside the boxes (margins included), recall and false positives
against the simulator's truth (the measures of tests/test_isr_truth.py), the agreement of
the full-frame and block-wise masks, near true cosmic rays and overall, and whether the
block-wise mask and repaired image are those of ``detect_cosmics`` on the boxes, bit for
bit.

``--threads N`` (N > 1) then compares, per frame, the amp-by-amp search of the master dark
(`find_cosmic_rays_by_region`) with astroscrappy on one OpenMP thread (atmospec's setting,
`atmospec.isr.cosmic_rays.OPENMP_THREADS`) and on N threads (what the OpenMP runtime takes
by default on an N-core machine): CPU time of all threads and wall time, alternating runs.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from atmospec.camera.description import load_camera  # noqa: E402
from atmospec.isr import cosmic_rays  # noqa: E402
from atmospec.isr.cosmic_rays import (  # noqa: E402
    CosmicRayConfig,
    cosmic_ray_boxes,
    find_cosmic_rays,
    find_cosmic_rays_by_region,
)
from atmospec.isr.driver import IsrCalibrations, IsrConfig, run_isr  # noqa: E402
from atmospec.sim.night import NightConfig, night_plan, simulate_exposure  # noqa: E402
from atmospec.sim.rawfile import raw_frame  # noqa: E402


def prepare(kind: str, night: NightConfig):
    """One simulated frame after overscan, saturation and gain, with its truth."""
    camera = load_camera("latiss")
    seq = next(p.seq for p in night_plan(night) if p.kind == kind)
    segments, truth, cards = simulate_exposure(kind, night, seq)
    raw = raw_frame(segments, cards, camera)
    gains = truth.perfect_calibrations().gains
    exposure = run_isr(raw, IsrConfig(steps=("overscan", "saturation", "gain")),
                       IsrCalibrations(gains=gains)).exposure
    rn2 = float(np.median(gains.read_noise) ** 2)
    return exposure.image, rn2, exposure.get_mask("BAD", "SAT", "SUSPECT"), truth


def timed(repeat: int, func, *args):
    """Median CPU time of ``repeat`` calls, and the last result."""
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        result = func(*args)
        times.append(time.process_time() - t0)
    return statistics.median(times), result


def detect_cosmics_on_boxes(image: np.ndarray, rn2: float, exclude: np.ndarray,
                            config: CosmicRayConfig) -> tuple[np.ndarray, np.ndarray]:
    """The block-wise path before: astroscrappy's ``detect_cosmics`` on each whole box
    (`cosmic_ray_boxes`), the result kept in its core."""
    image = np.ascontiguousarray(image, dtype=np.float32)
    exclude = np.ascontiguousarray(exclude, dtype=bool)
    mask = np.zeros(image.shape, dtype=bool)
    cleaned = image.copy()
    for core, box_y, box_x in cosmic_ray_boxes(image, rn2, exclude, config):
        box = (box_y, box_x)
        sub_mask, sub_clean = cosmic_rays._lacosmic(image[box], exclude[box], rn2, config)
        local = (slice(core[0].start - box_y.start, core[0].stop - box_y.start),
                 slice(core[1].start - box_x.start, core[1].stop - box_x.start))
        mask[core] |= sub_mask[local]
        cleaned[core] = np.where(sub_mask[local], sub_clean[local], cleaned[core])
    return mask, cleaned


def alternating(repeat: int, funcs: dict, *args) -> tuple[dict, dict]:
    """Median CPU time of each of ``funcs`` over ``repeat`` rounds that call them in turn,
    and their last results."""
    times: dict = {name: [] for name in funcs}
    results = {}
    for _ in range(repeat):
        for name, func in funcs.items():
            t0 = time.process_time()
            results[name] = func(*args)
            times[name].append(time.process_time() - t0)
    return {name: statistics.median(t) for name, t in times.items()}, results


def by_region_threads(image: np.ndarray, rn2: float, exclude: np.ndarray, threads: int,
                      repeat: int) -> None:
    """Print the CPU and wall time of the amp-by-amp search on 1 and on ``threads`` OpenMP
    threads (alternating runs, medians) and whether the masks agree."""
    camera = load_camera("latiss")
    regions = [camera.amp_slices(a) for a in camera.amplifiers]
    floors = [rn2] * len(regions)
    cpu: dict[int, list[float]] = {1: [], threads: []}
    wall: dict[int, list[float]] = {1: [], threads: []}
    masks = {}
    for _ in range(repeat):
        for n in (1, threads):
            cosmic_rays.OPENMP_THREADS = n
            c0, t0 = time.process_time(), time.perf_counter()
            masks[n] = find_cosmic_rays_by_region(image, regions, floors, exclude,
                                                  CosmicRayConfig())
            cpu[n].append(time.process_time() - c0)
            wall[n].append(time.perf_counter() - t0)
    cosmic_rays.OPENMP_THREADS = 1
    c1, ct = statistics.median(cpu[1]), statistics.median(cpu[threads])
    print(f"  by amp, 1 OpenMP thread:  {c1:6.2f} s CPU {statistics.median(wall[1]):6.2f} s wall")
    print(f"  by amp, {threads} OpenMP threads: {ct:6.2f} s CPU "
          f"{statistics.median(wall[threads]):6.2f} s wall  (CPU ratio {ct / c1:.1f}x; "
          f"masks {'identical' if np.array_equal(masks[1], masks[threads]) else 'DIFFER'})")


def scores(cr: np.ndarray, truth) -> tuple[float, float]:
    """Pixel recall, and flagged pixels off the truth's 1-pixel halo per pixel."""
    true_cr = truth.cosmic_ray_mask & ~truth.detector.saturated
    halo = ndimage.binary_dilation(true_cr, iterations=1)
    return (cr & true_cr).sum() / true_cr.sum(), (cr & ~halo).sum() / cr.size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="block-wise runs per frame")
    parser.add_argument("--full-repeat", type=int, default=1,
                        help="full-frame runs per frame (~12 s of CPU each)")
    parser.add_argument("--threads", type=int, default=1,
                        help="also time the by-amp search on this many OpenMP threads")
    args = parser.parse_args()
    night = NightConfig(n_bias=0, n_dark=1, n_flat=0, n_science=1, compress=False)
    block_cfg, full_cfg = CosmicRayConfig(), CosmicRayConfig(blockwise=False)
    ratios = []
    print("cosmic-ray step on one 4000x4072 LATISS frame, one core")
    for kind in ("science", "dark"):
        image, rn2, exclude, truth = prepare(kind, night)
        t_screen, boxes = timed(args.repeat, cosmic_ray_boxes, image, rn2, exclude, block_cfg)
        t_paths, paths = alternating(
            args.repeat, {"block": find_cosmic_rays, "boxes": detect_cosmics_on_boxes},
            image, rn2, exclude, block_cfg)
        t_block, t_boxes = t_paths["block"], t_paths["boxes"]
        block, block_clean = paths["block"]
        boxes_mask, boxes_clean = paths["boxes"]
        identical = (np.array_equal(block, boxes_mask)
                     and np.array_equal(block_clean.view(np.int32), boxes_clean.view(np.int32)))
        t_full, (full, _) = timed(args.full_repeat, find_cosmic_rays, image, rn2, exclude,
                                  full_cfg)
        area = sum((by.stop - by.start) * (bx.stop - bx.start) for _, by, bx in boxes)
        near = ndimage.binary_dilation(truth.cosmic_ray_mask, iterations=3)
        agree_near = (block & full & near).sum() / ((block | full) & near).sum()
        agree_all = (block & full).sum() / (block | full).sum()
        (rec_b, fp_b), (rec_f, fp_f) = scores(block, truth), scores(full, truth)
        ratios.append(t_full / t_block)
        print(f"{kind}: {truth.n_cosmic_rays} cosmic rays, {int(truth.cosmic_ray_mask.sum())} "
              "true CR pixels")
        print(f"  full frame  {t_full:7.2f} s CPU  recall {rec_f:.4f}  false pos {fp_f:.2e}  "
              f"{int(full.sum())} px")
        print(f"  block-wise  {t_block:7.2f} s CPU  recall {rec_b:.4f}  false pos {fp_b:.2e}  "
              f"{int(block.sum())} px  (pre-screen + boxes {t_screen:.2f} s)")
        after_screen = (t_boxes - t_screen) / (t_block - t_screen)
        print(f"  boxes, detect_cosmics {t_boxes:7.2f} s CPU: block-wise "
              f"{t_boxes / t_block:.2f}x faster ({after_screen:.2f}x after the pre-screen), "
              f"results {'bit-identical' if identical else 'DIFFER'}")
        print(f"  speed ratio {t_full / t_block:.1f}x; {len(boxes)} boxes cover "
              f"{area / image.size:.3f} of the frame with margins")
        print(f"  mask agreement: {agree_near:.5f} within 3 px of true cosmic rays, "
              f"{agree_all:.3f} overall (the rest: noise flagged by the full frame only)")
        if args.threads > 1:
            by_region_threads(image, rn2, exclude, args.threads, args.repeat)
    print(f"SUMMARY: block-wise cosmic rays {min(ratios):.1f}-{max(ratios):.1f}x faster than "
          "full-frame astroscrappy (goal >= 4x)")


if __name__ == "__main__":
    main()
