"""``atmospec simulate`` and ``atmospec demo``: simulated LATISS data and BOT acquisitions of
LSST camera detectors, and the whole chain on a small simulated night."""

from __future__ import annotations

import argparse
from pathlib import Path

from atmospec.cli._common import EXIT_FAILURE, EXIT_OK, UsageError
from atmospec.cli.calib import print_verification
from atmospec.cli.night import night_report_text, write_night_report
from atmospec.errors import BadInputError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``atmospec simulate`` and ``atmospec demo``."""
    _add_simulate(sub)
    _add_demo(sub)


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="write realistic simulated raw frames (LATISS, or "
                       "LSST camera detectors on the BOT)")
    p.add_argument("what", choices=("night", "flat-pairs", "bot"),
                   help="night: biases, darks, flats, star fields; flat-pairs: two flats "
                   "per level from 100 e- to beyond full well, for a PTC; bot: an EO "
                   "acquisition of LSST camera detectors (biases, darks, flat pairs, "
                   "superflats, photodiode records) laid out as the BOT writes it")
    p.add_argument("--out", required=True, help="output directory for the raw files")
    p.add_argument("--seed", type=int, default=1, help="random seed")
    p.add_argument("--day-obs", type=int, default=20261123, help="YYYYMMDD of the night")
    p.add_argument("--n-bias", type=int, default=5, help="bias frames")
    p.add_argument("--n-dark", type=int, default=3, help="dark frames")
    p.add_argument("--n-flat", type=int, default=3, help="flats per filter")
    p.add_argument("--n-science", type=int, default=4, help="imaging frames of a star field")
    p.add_argument("--n-dispersed", type=int, default=0,
                   help="dispersed (holo4_003) exposures of a standard star, interleaved")
    p.add_argument("--dispersed-target", default="HD142331",
                   help="target of the dispersed exposures: a CALSPEC standard (default "
                   "HD142331) or a simulated non-CALSPEC target: planetary-nebula, "
                   "planetary-nebula+continuum, star")
    p.add_argument("--dispersed-every", type=int, default=3,
                   help="imaging frames between two dispersed exposures")
    p.add_argument("--science-cadence", type=float, default=900.0, metavar="S",
                   help="seconds between the starts of two on-sky exposures (default 900); "
                   "the target must stay above the horizon over the night")
    p.add_argument("--n-corrupt", type=int, default=0,
                   help="damaged files to add (truncated, empty, foreign)")
    p.add_argument("--flat-filters", default="SDSSr_65mm",
                   help="comma list of flat filters (add empty_1 for dispersed exposures)")
    p.add_argument("--n-pairs", type=int, default=25,
                   help="flat-pairs: number of levels (pairs), from 100 e- to 168 ke-, beyond "
                   "the full well")
    p.add_argument("--quick", action="store_true",
                   help="flat-pairs: 6 pairs from 1 ke- to 115 ke-, below the full well (the "
                   "demo's: quick to simulate, enough for gains and read noise)")
    p.add_argument("--no-compress", action="store_true",
                   help="write uncompressed FITS (default: lossless RICE tiles)")
    bot = p.add_argument_group("bot")
    bot.add_argument("--instrument", default="LSSTCam",
                     help="bot: LSSTCam, LSSTComCam or LSST-TS8")
    bot.add_argument("--detectors", default="R22_S11",
                     help="bot: comma list of detectors and rafts (R22 = its 9 CCDs)")
    bot.add_argument("--levels", default=None,
                     help="bot: comma list of flat-pair levels, e- (default 1000,2000,5000,"
                     "10000,20000,50000,100000; empty for none)")
    bot.add_argument("--n-sflat", type=int, default=2,
                     help="bot: low (1 ke-) and high (50 ke-) superflats each")
    bot.add_argument("--run", default="13162", help="bot: run number, RUNNUM")
    bot.add_argument("--interleaved-biases", action="store_true",
                     help="bot: a bias before every dark, flat pair and superflat")
    bot.add_argument("--tearing", default="",
                     help="bot: comma list of detectors whose flats show tearing (4 %% of "
                          "the edge columns' charge moved in the first 400 rows read)")
    bot.add_argument("--brighter-fatter", default=None, metavar="AX,AY",
                     help="bot: charge redistribution alpha_x,alpha_y (1/e-): "
                          "a10 = 2 alpha_x, a01 = 2 alpha_y, a00 = -4 (alpha_x + alpha_y)")
    bot.add_argument("--n-xtalk", type=int, default=0,
                     help="bot: sets of crosstalk spot frames, one per amp (xtalk_<amp>_NNN: "
                          "a 100 ke- spot in that amp only); default none")
    bot.add_argument("--crosstalk", type=float, default=0.0, metavar="C",
                     help="bot: inject crosstalk, neighbouring amps coupled by ~C (ADU "
                          "ratio, e.g. 3e-4; each detector its own matrix, in truth.json); "
                          "default the detector's shipped matrix (none for LSST cameras)")
    p.set_defaults(func=_cmd_simulate)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from atmospec.sim.night import NightConfig, night_plan, simulate_night

    if args.what == "bot":
        return _cmd_simulate_bot(args)
    if args.what == "flat-pairs":
        from atmospec.sim.sequences import PtcSequenceConfig, quick_sequence, write_flat_pairs

        where = {"day_obs": args.day_obs, "start": _day_start_iso(args.day_obs),
                 "seed": args.seed}
        if args.quick:
            seq_config = quick_sequence(**where)
        else:
            dense = PtcSequenceConfig().n_dense_levels
            if args.n_pairs < dense + 2:
                raise UsageError(f"atmospec simulate flat-pairs: --n-pairs must be at least "
                                 f"{dense + 2} (or --quick: 6 pairs below the full well)")
            # The default linear grid above 80 ke- steps over the last few per cent below
            # full well (slow to simulate, and where the turnoff is found anyway); the extra
            # pairs go to the log-spaced low levels.
            seq_config = PtcSequenceConfig(n_log_levels=args.n_pairs - dense, **where)
        paths = write_flat_pairs(args.out, seq_config, compress=not args.no_compress)
        print(f"wrote {len(paths)} raw flats ({len(paths) // 2} pairs) to {args.out}")
        return EXIT_OK

    config = NightConfig(day_obs=args.day_obs, seed=args.seed, n_bias=args.n_bias,
                         n_dark=args.n_dark, n_flat=args.n_flat, n_science=args.n_science,
                         n_dispersed=args.n_dispersed, n_corrupt=args.n_corrupt,
                         dispersed_every=args.dispersed_every,
                         dispersed_target=_dispersed_target(args.dispersed_target),
                         flat_filters=tuple(f.strip() for f in args.flat_filters.split(",")
                                            if f.strip()),
                         science_cadence_s=args.science_cadence,
                         compress=not args.no_compress)
    if not args.science_cadence > 0:
        raise UsageError(f"atmospec simulate night: --science-cadence must be positive, got "
                         f"{args.science_cadence:g}")
    try:
        night_plan(config)  # a night the sky cannot hold is a usage error, before any work
    except ValueError as exc:
        raise UsageError(f"atmospec simulate night: {exc}") from None
    paths = simulate_night(args.out, config)
    print(f"wrote {len(paths)} raw files to {args.out}")
    return EXIT_OK


def _cmd_simulate_bot(args: argparse.Namespace) -> int:
    """``atmospec simulate bot``: one frame per detector and exposure, one line each."""
    from atmospec.errors import BadInputError
    from atmospec.sim.bot import BotConfig, BotFrame, bot_plan, expand_detectors, write_bot_run
    from atmospec.sim.detector import DetectorSimConfig

    try:
        detectors = expand_detectors(args.instrument, args.detectors.split(","))
        levels = (BotConfig().flat_levels_e if args.levels is None else
                  tuple(float(v) for v in args.levels.split(",") if v.strip()))
        tearing = expand_detectors(args.instrument, args.tearing.split(","))
        sensor = DetectorSimConfig()
        if args.brighter_fatter is not None:
            ax, ay = (float(v) for v in args.brighter_fatter.split(","))
            sensor = DetectorSimConfig(brighter_fatter=(ax, ay))
        config = BotConfig(
            instrument=args.instrument, detectors=detectors, run=args.run,
            day_obs=args.day_obs, start=_day_start_iso(args.day_obs), n_bias=args.n_bias,
            n_dark=args.n_dark, flat_levels_e=levels, n_sflat_low=args.n_sflat,
            n_sflat_high=args.n_sflat, interleaved_biases=args.interleaved_biases,
            seed=args.seed, compress=not args.no_compress, tearing=tearing, detector=sensor,
            n_xtalk=args.n_xtalk, crosstalk=args.crosstalk)
        plan = bot_plan(config)
    except (ValueError, BadInputError) as exc:
        raise UsageError(f"atmospec simulate bot: {exc}") from None
    total = len(plan) * len(detectors)
    print(f"{len(plan)} exposure(s) x {len(detectors)} detector(s) of {args.instrument} "
          f"-> {args.out}")
    done = 0

    def progress(frame: BotFrame, path: Path) -> None:
        nonlocal done
        done += 1
        print(f"[{done}/{total}] {frame.exposure.folder}/{path.name}", flush=True)

    run = write_bot_run(args.out, config, on_frame=progress)
    print(f"wrote {len(run.raws)} raw files and {len(run.photodiode_files)} photodiode "
          f"records; truth: {run.truth}")
    return EXIT_OK


def _dispersed_target(name: str) -> str:
    """``--dispersed-target`` checked before any work: a simulated target or a shipped
    CALSPEC standard (its canonical name), else a usage error (one line, exit 2)."""
    from atmospec.sim.seds import SIMULATED_TARGETS
    from atmospec.spectro.calspec import resolve_target

    if name in SIMULATED_TARGETS:
        return name
    try:
        return resolve_target(name).name
    except BadInputError:
        raise UsageError(f"atmospec simulate: --dispersed-target {name!r} is neither a "
                         f"shipped CALSPEC standard nor one of {', '.join(SIMULATED_TARGETS)}"
                         ) from None


def _day_start_iso(day_obs: int) -> str:
    """ISO time of 19:00 UTC on ``day_obs`` (an afternoon calibration slot)."""
    d = str(day_obs)
    return f"{d[:4]}-{d[4:6]}-{d[6:]}T19:00:00.000"


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="simulate a small night and reduce it (atmospec night)")
    p.add_argument("--out", default="atmospec-demo", help="working directory")
    p.add_argument("--seed", type=int, default=1, help="random seed of the simulated night")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    """Simulate a small night, build a PTC, then reduce the whole night with the runner."""
    from atmospec.calib.files import build_ptc_file
    from atmospec.calib.registry import CalibrationRegistry
    from atmospec.night.runner import NightRunConfig, run_night
    from atmospec.sim.night import demo_night_config, demo_ptc_config, simulate_night
    from atmospec.sim.sequences import write_flat_pairs

    out = Path(args.out)
    raw_dir, repo = out / "raw", out / "repo"
    config = demo_night_config(args.seed)
    raws = sorted(raw_dir.glob("AT_O_*.fits")) if raw_dir.is_dir() else []
    if not raws:
        print(f"1/3 simulating a small LATISS night in {raw_dir}: biases, darks, flats, "
              f"{config.n_science} star fields, {config.n_dispersed} dispersed exposures and "
              f"{config.n_corrupt} damaged files ...")
        simulate_night(raw_dir, config)
    else:
        print(f"1/3 using the raw files already in {raw_dir}")
    pair_dir = out / "flat_pairs"
    registry = CalibrationRegistry(repo, create=True)
    if not registry.list("ptc"):
        print(f"2/3 6 flat pairs in {pair_dir} -> photon-transfer curve (gains, read noise) "
              f"registered in {repo} ...")
        pairs = sorted(pair_dir.glob("AT_*.fits")) if pair_dir.is_dir() else []
        if not pairs:
            pairs = write_flat_pairs(pair_dir, demo_ptc_config(config))
        ptc = build_ptc_file(pairs, out / "ptc.fits")
        print_verification(ptc)
        registry.register(ptc, valid_from="2026-11-01", certify=True)
    else:
        print(f"2/3 using the PTC already registered in {repo}")
    print(f"3/3 reducing the night: atmospec night {raw_dir} --repo {repo}")
    result = run_night(raw_dir, repo, NightRunConfig())
    write_night_report(repo, result)
    print(night_report_text(result, repo))
    print(f"\nsummary table: {result.summary['ecsv']}\n"
          f"calibration products: atmospec calib list --repo {repo}\n"
          f"per-exposure outputs: {repo / 'exposures'}")
    # Last, so it is what the reader sees: the page to open in a browser.
    report = result.summary.get("report")
    print(f"report: {report}" if report else
          f"report: not written (see the warning above; retry: atmospec report {repo})")
    return EXIT_FAILURE if result.n_failed else EXIT_OK
