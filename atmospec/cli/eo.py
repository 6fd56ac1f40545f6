"""``atmospec eo RUNDIR --repo REPO``: the camera team's EO figures per detector and amp,
with their specifications and pass/fail, from a BOT-style acquisition."""

from __future__ import annotations

import argparse

from atmospec.cli._common import EXIT_FAILURE, EXIT_OK, UsageError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``atmospec eo``."""
    p = sub.add_parser(
        "eo", help="EO figures per detector and amp, with specifications and pass/fail",
        description="Reduce a BOT-style EO acquisition (one folder per exposure, named as "
        "the BOT's scripts name them) detector by detector and write, per detector, "
        "REPO/eo/<DET>/eo_figures.ecsv and .json (one row per amp, figure and "
        "specification, with its verdict), the run-wide REPO/eo/eo_figures.ecsv, and "
        "the focal-plane mosaic and histogram of every measured figure in REPO/eo/plots/. "
        "Detectors already measured are skipped. Exit 1 if a detector failed.")
    p.add_argument("rundir", help="the acquisition's folder")
    p.add_argument("--repo", required=True, help="output repository")
    p.add_argument("--detectors", help="comma-separated detectors (default: every detector "
                   "of the run), e.g. R22_S11,R22_S10")
    p.add_argument("--workers", type=int, default=1,
                   help="detectors measured at once (local processes)")
    p.add_argument("--executor", choices=("local", "dask"), default="local",
                   help="local process pool (default) or an existing Dask cluster (one "
                   "task per detector; run and repository on a shared file system)")
    p.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://host:8786")
    p.add_argument("--redo", action="store_true",
                   help="measure again the detectors whose tables exist")
    p.set_defaults(func=_cmd_eo)


def _cmd_eo(args: argparse.Namespace) -> int:
    from atmospec.night.eo import run_eo

    if args.executor == "dask" and not args.scheduler:
        raise UsageError("atmospec eo: --executor dask needs --scheduler ADDR")
    if args.workers < 1:
        raise UsageError("atmospec eo: --workers must be at least 1")
    detectors = None
    if args.detectors is not None:
        detectors = [d.strip() for d in args.detectors.split(",") if d.strip()]
        if not detectors:
            raise UsageError("atmospec eo: --detectors names no detector")
    outcomes = run_eo(args.rundir, args.repo, detectors, workers=args.workers,
                      executor=args.executor, scheduler=args.scheduler, redo=args.redo)
    for outcome in outcomes:
        print(outcome.line)
    return EXIT_FAILURE if any(o.status == "failed" for o in outcomes) else EXIT_OK
