"""``atmospec watch``: reduce a night as it is taken, with a live page."""

from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path

from atmospec.cli._common import EXIT_OK, UsageError
from atmospec.cli.night import night_report_text, write_night_report

log = logging.getLogger("atmospec")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``atmospec watch``."""
    p = sub.add_parser("watch", help="reduce a night as its raw files arrive, with a live "
                       "page (REPO/report/live.html); Ctrl-C stops, a later watch or night "
                       "resumes")
    p.add_argument("rawdir", help="directory the raw files arrive in (sub-folders too)")
    p.add_argument("--repo", required=True,
                   help="repository: index, calibration products, outputs (created)")
    p.add_argument("--workers", type=int, help="local worker processes (default: all cores)")
    p.add_argument("--pattern", action="append", metavar="GLOB",
                   help="which files are raws, repeatable (as for atmospec night); default: "
                        "*.fits, *.fits.gz, *.fits.fz, *.fz")
    p.add_argument("--pipeline", help="pipeline definition (YAML; default pipelines/night.yaml)")
    p.add_argument("--poll", action="store_true",
                   help="poll the directory instead of waiting for file-system events (NFS "
                        "and other network file systems send none)")
    p.add_argument("--poll-interval", type=float, default=1.0, metavar="SECONDS",
                   help="time between two polls with --poll")
    p.add_argument("--incomplete-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="a file still incomplete or damaged this long after its last change "
                        "is skipped as damaged (looked at again if it changes)")
    p.add_argument("--stop-after", type=int, metavar="N",
                   help="stop once N exposures were reduced")
    p.add_argument("--idle-exit", type=float, metavar="SECONDS",
                   help="stop after SECONDS with no new file and nothing running")
    p.add_argument("--serve", type=int, metavar="PORT",
                   help="also serve REPO/report on http://127.0.0.1:PORT/ (this machine "
                        "only; 0: a free port)")
    p.add_argument("--refresh", type=float, default=2.0, metavar="SECONDS",
                   help="how often an open live page looks for an update")
    p.add_argument("--no-report", action="store_true",
                   help="skip the full HTML report when the watch stops")
    p.add_argument("--lossless", action="store_true",
                   help="write the post-ISR images uncompressed, as atmospec night "
                   "--lossless (a night and its watch should agree: a change re-runs ISR)")
    p.set_defaults(func=_cmd_watch)


def _check_args(args: argparse.Namespace) -> None:
    positive = (("--workers", args.workers), ("--stop-after", args.stop_after))
    for name, value in positive:
        if value is not None and value < 1:
            raise UsageError(f"atmospec watch: {name} must be at least 1")
    for name, seconds in (("--poll-interval", args.poll_interval),
                          ("--incomplete-timeout", args.incomplete_timeout),
                          ("--idle-exit", args.idle_exit), ("--refresh", args.refresh)):
        if seconds is not None and not seconds > 0:
            raise UsageError(f"atmospec watch: {name} must be a positive number of seconds")
    if args.serve is not None and not 0 <= args.serve <= 65535:
        raise UsageError("atmospec watch: --serve needs a port between 0 and 65535")


def _cmd_watch(args: argparse.Namespace) -> int:
    from atmospec.layout import live_file, report_dir
    from atmospec.night.runner import check_raw_folder
    from atmospec.night.watch import WatchConfig, watch_night
    from atmospec.report.live import LiveConfig, LivePage, serve_report

    _check_args(args)
    check_raw_folder(args.rawdir)  # before the server starts: bad input starts nothing
    config = WatchConfig(workers=args.workers, pipeline=args.pipeline, poll=args.poll,
                         lossless=args.lossless,
                         poll_interval_s=args.poll_interval,
                         incomplete_timeout_s=args.incomplete_timeout,
                         stop_after=args.stop_after, idle_exit_s=args.idle_exit,
                         **({"patterns": tuple(args.pattern)} if args.pattern else {}))
    repo = Path(args.repo)
    page = LivePage(repo, LiveConfig(refresh_s=args.refresh))
    with contextlib.ExitStack() as stack:
        if args.serve is not None:
            url = stack.enter_context(serve_report(report_dir(repo), args.serve))
        else:
            url = live_file(report_dir(repo).absolute(), "page").as_uri()
        print(f"live page: {url}", flush=True)
        result = watch_night(args.rawdir, repo, config, publish=page)
    if not args.no_report:
        write_night_report(repo, result, workers=args.workers)
    print(night_report_text(result, repo))
    return EXIT_OK
