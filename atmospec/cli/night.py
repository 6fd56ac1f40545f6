"""``atmospec night`` and ``atmospec report``: a whole night, and its HTML report."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from atmospec.cli._common import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, UsageError
from atmospec.errors import short_error

if TYPE_CHECKING:
    from atmospec.night.runner import NightResult

log = logging.getLogger("atmospec")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``atmospec night``, ``atmospec raws`` and ``atmospec report``."""
    _add_night(sub)
    _add_raws(sub)
    _add_report(sub)


def _add_night(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("night", help="reduce a whole night (or acquisition) of raw frames, "
                                     "one job per exposure and detector")
    p.add_argument("rawdir", help="directory of the night's raw files (its sub-folders are "
                                  "searched too)")
    p.add_argument("--pattern", action="append", metavar="GLOB",
                   help="which files are raws, repeatable: a shell pattern of the file name "
                        "('MC_C_*_R22_S11.fits') or, with a '/', of the path below RAWDIR "
                        "('2025*/raw/*.fits'); default: *.fits, *.fits.gz, *.fits.fz, *.fz")
    p.add_argument("--repo", required=True,
                   help="repository: index, calibration products, outputs (created)")
    p.add_argument("--workers", type=int, help="local worker processes (default: all cores)")
    p.add_argument("--executor", choices=("local", "dask"), default="local",
                   help="local process pool (default) or an existing Dask cluster")
    p.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://host:8786")
    p.add_argument("--pipeline", help="pipeline definition (YAML; default pipelines/night.yaml)")
    p.add_argument("--no-retry", action="store_true",
                   help="do not re-run tasks that failed in an earlier run")
    p.add_argument("--no-plots", action="store_true",
                   help="skip the night plots and the HTML report")
    p.add_argument("--no-report", action="store_true",
                   help="skip the HTML report (REPO/report/) at the end")
    p.add_argument("--lossless", action="store_true",
                   help="write the post-ISR images as computed (float32, uncompressed, "
                   "~200 MB a LATISS frame) instead of quantised at noise/10 and "
                   "tile-compressed (~8x smaller); a change re-runs ISR")
    p.set_defaults(func=_cmd_night)


def _cmd_night(args: argparse.Namespace) -> int:
    from atmospec.night.runner import NightRunConfig, run_night

    if args.executor == "dask" and not args.scheduler:
        raise UsageError("atmospec night: --executor dask needs --scheduler ADDR")
    if args.workers is not None and args.workers < 1:
        raise UsageError("atmospec night: --workers must be at least 1")
    config = NightRunConfig(workers=args.workers, executor=args.executor,
                            scheduler=args.scheduler, pipeline=args.pipeline,
                            retry_failed=not args.no_retry, plots=not args.no_plots,
                            figures=not args.no_report, lossless=args.lossless,
                            **({"patterns": tuple(args.pattern)} if args.pattern else {}))
    result = run_night(args.rawdir, args.repo, config)
    if config.plots and config.figures:
        write_night_report(Path(args.repo), result,
                           workers=args.workers if args.executor == "local" else None)
    print(night_report_text(result, args.repo))
    return EXIT_FAILURE if result.n_failed else EXIT_OK


def _add_raws(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("raws", help="list raw files by image type, filter, disperser, detector "
                       "(headers only, as atmospec night indexes them)")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="raw files, or folders searched as atmospec night searches its raw "
                   "folder (sub-folders included)")
    p.add_argument("--type", help="only this image type (bias, dark, flat, science, ...)")
    p.add_argument("--filter", help="only this filter (SDSSr_65mm, or filter~disperser)")
    p.add_argument("--disperser", help="only this disperser (holo4_003; empty: none)")
    p.add_argument("--detector", help="only this detector (R22_S11; LATISS: RXX_S00)")
    p.add_argument("--long", action="store_true",
                   help="one line per file with its OBSID, type, filter, disperser and "
                   "exposure time, instead of the path alone")
    p.set_defaults(func=_cmd_raws)


def _cmd_raws(args: argparse.Namespace) -> int:
    """Print the matching raws, one path per line (for ``$(atmospec raws ...)``).

    A file found in a folder that is not a usable raw is logged (``skipped``), as the night
    skips it; a file named on the command line that is not is bad input (exit status 2, the
    others still listed).
    """
    import sys

    from atmospec.errors import BadInputError
    from atmospec.night.index import check_raw_file, raw_files

    refused = 0
    for given in map(Path, args.paths):
        walked = given.is_dir()
        for path in ([given / p.relative_to(given.absolute()) for p in raw_files(given)]
                     if walked else [given]):
            try:
                info = check_raw_file(path)
            except (BadInputError, OSError) as exc:
                problem = exc.problem if isinstance(exc, BadInputError) else (
                    exc.strerror or short_error(exc))
                if walked:
                    log.warning("skipped %s: %s", path, problem)
                else:
                    print(f"atmospec: {path}: {problem}", file=sys.stderr)
                    refused += 1
                continue
            if _raw_matches(info, args):
                exptime = "-" if info.exposure_time is None else f"{info.exposure_time:g} s"
                print(f"{path}  {info.obs_id}  {info.image_type}  {info.filter}  "
                      f"{info.disperser}  {exptime}" if args.long else path)
    return EXIT_BAD_INPUT if refused else EXIT_OK


def _raw_matches(info, args: argparse.Namespace) -> bool:
    """Whether a translated header passes the ``raws`` options."""
    detector = info.detector or "RXX_S00"
    return ((args.type is None or info.image_type == args.type.strip().lower())
            and (args.filter is None or args.filter in (info.filter, info.physical_filter))
            and (args.disperser is None or info.disperser == args.disperser)
            and (args.detector is None or detector == args.detector))


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="static HTML report of a repository (REPO/report/)")
    p.add_argument("repo", help="repository reduced by atmospec night")
    p.add_argument("--out", help="report directory (default: REPO/report)")
    p.add_argument("--force", action="store_true",
                   help="redraw every figure, even those whose inputs did not change")
    p.add_argument("--workers", type=int,
                   help="processes drawing the exposures' figures (default: all cores)")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from atmospec.report import ReportConfig, build_report

    if args.workers is not None and args.workers < 1:
        raise UsageError("atmospec report: --workers must be at least 1")
    index = build_report(args.repo, ReportConfig(out=args.out, force=args.force,
                                                 workers=args.workers))
    print(f"report: {index}")
    return EXIT_OK


def write_night_report(repo: Path, result: NightResult, workers: int | None = None
                       ) -> Path | None:
    """The HTML report at the end of a night, added to ``result.summary`` as ``report``; None
    (with a warning) when it cannot be written: the reduction is done and recorded, a report
    problem must not fail it."""
    from atmospec.report import ReportConfig, build_report

    t0 = time.perf_counter()
    try:
        report = build_report(repo, ReportConfig(workers=workers))
    except Exception as exc:
        log.warning("no HTML report (%s: %s); retry with: atmospec report %s",
                    type(exc).__name__, short_error(exc), repo)
        log.debug("report failure", exc_info=True)
        return None
    finally:
        result.wall_s += time.perf_counter() - t0
    result.summary["report"] = report
    return report


def night_report_text(result: NightResult, repo: str | Path | None = None) -> str:
    """The lines ``atmospec night`` prints at the end of a run.

    Parameters
    ----------
    result : NightResult
        The run.
    repo : path, optional
        Its repository: the first line then counts the exposures as the summary table and
        the report do (every indexed frame, calibration frames included), and says how many
        of them the pipeline reduces.

    Returns
    -------
    str
    """
    counts = f"{result.n_exposures} exposures"
    if repo is not None:
        from atmospec.night.index import NightIndex

        types = [r.info.image_type for r in NightIndex(repo, create=False).raws()]
        n_calib = sum(t in ("bias", "dark", "flat") for t in types)
        other = len(types) - n_calib - result.n_exposures
        counts = (f"{len(types)} exposures ({n_calib} calibration frames, "
                  f"{result.n_exposures} science" + (f", {other} other" if other > 0 else "")
                  + ")")
    lines = [f"{counts}: {result.n_run} processed now, {result.n_skipped} already done, "
             f"{result.n_failed} with a failure ({result.wall_s:.0f} s)"]
    if result.no_raw:
        lines.append(result.no_raw)
    for product in result.calibrations:
        lines.append(f"calibration {product.path.name}: {product.status} ({product.detail})")
    for path, reason in result.rejected:
        lines.append(f"skipped {path.name}: {reason}")
    failures = {}
    for o in result.outcomes:
        if o.status == "failed" and o.obs_id not in failures:
            failures[o.obs_id] = f"{o.task}: {o.reason}"
    lines += [f"failed {obs_id}: {reason}" for obs_id, reason in failures.items()]
    for key, path in result.summary.items():
        lines.append(f"{key}: {path}")
    return "\n".join(lines)
