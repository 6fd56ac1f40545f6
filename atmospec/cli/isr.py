"""``atmospec isr``: instrument signature removal of raw frames, one file at a time."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from atmospec.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_OK,
    UsageError,
    output_folder,
)
from atmospec.errors import BadInputError, short_error
from atmospec.isr import STEPS

if TYPE_CHECKING:
    from atmospec.calib.isr_inputs import CalibrationFiles
    from atmospec.camera.raw import RawFrame
    from atmospec.isr.driver import IsrCalibrations, IsrConfig

log = logging.getLogger("atmospec")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``atmospec isr``."""
    _add_isr(sub)


def _add_isr(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("isr", help="instrument signature removal of raw frames "
                                   "(LATISS, LSSTCam, ComCam, TS8)")
    p.add_argument("raw", nargs="+", help="raw multi-extension FITS files")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--steps", help="comma list of ISR steps (default: all that apply); "
                   f"known, in the order applied: {','.join(STEPS)}")
    for kind in ("bias", "dark", "flat", "defects", "ptc", "linearizer", "crosstalk"):
        p.add_argument(f"--{kind}", help=f"{kind} product file")
    p.add_argument("--calibs", metavar="REPO",
                   help="calibration repository: products chosen per exposure by date and "
                   "filter (explicit product options take precedence)")
    p.add_argument("--overscan", choices=("median_per_row", "poly", "spline"),
                   default="median_per_row", help="serial overscan model")
    p.add_argument("--plots", action="store_true",
                   help="also write overscan and post-ISR PNG diagnostics")
    p.add_argument("--lossless", action="store_true",
                   help="write the post-ISR planes as computed (float32, uncompressed, "
                   "~200 MB a LATISS frame) instead of quantised at noise/10 and "
                   "tile-compressed (~8x smaller)")
    p.set_defaults(func=_cmd_isr)


def _cmd_isr(args: argparse.Namespace) -> int:
    from atmospec.calib.isr_inputs import CalibrationFiles
    from atmospec.isr.driver import StepConfigError, resolve_steps

    files = CalibrationFiles(bias=args.bias, dark=args.dark, flat=args.flat,
                             defects=args.defects, ptc=args.ptc, linearizer=args.linearizer,
                             crosstalk=args.crosstalk)
    config = _isr_config(args.steps, args.overscan, args.lossless)
    if not args.calibs:
        # Check the step list against the given products before touching any file (with a
        # repository the products are known per exposure only).
        available = {k for k, v in vars(files).items() if v} | {"crosstalk", "defects"}
        try:
            resolve_steps(config.steps, available)
        except StepConfigError as exc:
            raise UsageError(f"atmospec isr: {exc}") from None
    return _isr_files(args.raw, output_folder(args.out), config, files, args.plots,
                      repo=args.calibs)


def _isr_files(raws: Sequence[str], out: str, config, files, plots: bool,
               repo: str | None = None) -> int:
    """Process raw files one by one; a bad file is reported and skipped, and so is a file
    whose OBSID an earlier file of the command has (`_claim_obs_id`).

    Products are loaded once per distinct set of files (with ``repo``, the set chosen for
    each exposure by the registry: a night usually needs one or two sets), then checked
    against each exposure (a flat of another filter is refused). A set that was refused is
    not read again: each exposure that needs it is reported with the same one line.
    """
    from dataclasses import fields, replace

    from atmospec.calib.isr_inputs import (
        check_exposure,
        load_calibrations,
        missing_products,
        missing_products_message,
    )
    from atmospec.camera.raw import read_raw
    from atmospec.isr.driver import StepConfigError

    registry = None
    if repo:
        from atmospec.calib.registry import CalibrationRegistry

        registry = CalibrationRegistry(repo, create=False)
    loaded: dict = {}
    warned: set[tuple[str, ...]] = set()
    claimed: dict[str, str] = {}
    status = EXIT_OK
    for path in raws:
        t0 = time.perf_counter()
        try:
            raw = read_raw(path)
            _claim_obs_id(claimed, raw, path)
            chosen = files
            if registry is not None:
                picked = registry.select_all(raw.info)
                # Products given on the command line win over the registry's choice.
                chosen = replace(picked, **{f.name: getattr(files, f.name)
                                            for f in fields(files) if getattr(files, f.name)})
            # The frame's geometry, not its name: a binned frame needs products of its shape.
            key = (raw.camera, chosen)
            if key not in loaded:
                try:
                    loaded[key] = load_calibrations(chosen, raw.camera)
                except BadInputError as exc:
                    loaded[key] = exc
            calibs = loaded[key]
            if isinstance(calibs, BadInputError):
                raise calibs
            missing = missing_products(calibs, config.steps)
            if missing and missing not in warned:  # once per set, not once per frame
                warned.add(missing)
                log.warning("atmospec isr: %s", missing_products_message(missing, repo))
            check_exposure(calibs, raw.info)
            outputs = _process_raw(raw, out, config, calibs, chosen, plots=plots)
        except BadInputError as exc:
            print(f"atmospec: {exc}", file=sys.stderr)
            status = EXIT_BAD_INPUT
            continue
        except StepConfigError as exc:  # a step needs a product this exposure has not got
            print(f"atmospec: {path}: {exc}", file=sys.stderr)
            status = EXIT_BAD_INPUT
            continue
        except Exception as exc:  # one failed exposure never stops the others
            log.debug("processing failure", exc_info=True)
            print(f"atmospec: {path}: processing failed: {type(exc).__name__}: "
                  f"{short_error(exc)}",
                  file=sys.stderr)
            status = status or EXIT_FAILURE
            continue
        print(f"{path} -> {outputs['postisr']} ({time.perf_counter() - t0:.1f} s)")
    return status


def _isr_config(steps: str | None, overscan: str, lossless: bool = False) -> IsrConfig:
    """The ISR configuration of the command line.

    Parameters
    ----------
    steps : str or None
        ``--steps``, a comma list; None (not given) for every step that applies.
    overscan : str
        ``--overscan``, the serial overscan model.
    lossless : bool
        ``--lossless``: the post-ISR planes written as computed, not quantised.

    Returns
    -------
    IsrConfig

    Raises
    ------
    UsageError
        When ``--steps`` is given but names no step (``--steps ,`` or ``--steps ""``):
        an empty list would silently run assembly alone, not what anyone asks for.
    """
    from atmospec.compression import CompressionConfig
    from atmospec.isr.driver import IsrConfig
    from atmospec.isr.overscan import OverscanConfig

    step_list = None
    if steps is not None:
        step_list = tuple(s.strip() for s in steps.split(",") if s.strip())
        if not step_list:
            raise UsageError(f"atmospec isr: --steps {steps!r} names no ISR step; known: "
                             f"{','.join(STEPS)}")
    return IsrConfig(steps=step_list, overscan=OverscanConfig(method=overscan),
                     compression=CompressionConfig(enabled=not lossless))


def _claim_obs_id(claimed: dict[str, str], raw: RawFrame, path: str) -> None:
    """Record that ``path`` writes the outputs of its OBSID in this command; refuse it when
    an earlier file of the command has that OBSID.

    Outputs are named after the OBSID (`atmospec.layout.exposure_file`), so the second
    file would silently overwrite the first's. The first keeps its outputs (its fate is
    its own); the second is bad input naming both.

    Raises
    ------
    BadInputError
        Naming ``path`` and the earlier file.
    """
    obs_id = raw.info.obs_id
    if obs_id in claimed:
        raise BadInputError(path, f"duplicate OBSID {obs_id}: also in {claimed[obs_id]}, "
                                  "given earlier in this command (its outputs would be "
                                  "overwritten)")
    claimed[obs_id] = path


def _process_raw(path: str | Path | RawFrame, out_dir: str | Path, config: IsrConfig,
                 calibs: IsrCalibrations, files: CalibrationFiles | None = None,
                 plots: bool = False) -> dict[str, Path]:
    """ISR one raw file and write its outputs.

    Parameters
    ----------
    path : path or RawFrame
        Raw LATISS file (or the frame already read from it).
    out_dir : path
        Output directory (created if needed).
    config : IsrConfig
        ISR configuration.
    calibs : IsrCalibrations
        Products, loaded once by `load_calibrations`.
    files : CalibrationFiles, optional
        Their file names, for provenance.
    plots : bool
        Also draw the diagnostics (overscan profiles, post-ISR image) as PNG.

    Returns
    -------
    dict
        ``postisr``, ``stats`` (and ``overscan_plot``, ``image_plot``) paths.
    """
    from atmospec.camera.raw import RawFrame, read_raw
    from atmospec.io import provenance_cards, write_text_atomic
    from atmospec.isr.driver import run_isr
    from atmospec.isr.statistics import stats_document, stats_json
    from atmospec.layout import exposure_file

    out_dir = Path(out_dir)
    raw = path if isinstance(path, RawFrame) else read_raw(path)
    result = run_isr(raw, config, calibs)
    obs_id = raw.info.obs_id
    inputs = [raw.path] + [p for p in (vars(files).values() if files else []) if p]
    out = {
        "postisr": result.exposure.write(
            exposure_file(out_dir, obs_id, "postisr"),
            provenance_cards("isr", inputs, {"steps": result.steps, "config": config}),
        ),
    }
    doc = stats_document(raw, result)
    out["stats"] = write_text_atomic(stats_json(doc),
                                     exposure_file(out_dir, obs_id, "isrstats"))
    if plots:
        from atmospec.plots.isr import plot_overscan_profiles, plot_postisr

        if result.overscan:
            out["overscan_plot"] = plot_overscan_profiles(
                doc, exposure_file(out_dir, obs_id, "overscan_plot"), camera=raw.camera)
        out["image_plot"] = plot_postisr(result.exposure,
                                         exposure_file(out_dir, obs_id, "postisr_plot"))
    return out
