"""``atmospec calib ...``: build, verify and register calibration products."""

from __future__ import annotations

import argparse
from pathlib import Path

from atmospec.cli._common import EXIT_OK, Parser, UsageError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``atmospec calib bias|dark|flat|spectro-flat|defects|ptc|linearity|crosstalk|eo|
    register|list|certify``."""
    _add_calib(sub)


def _add_calib(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calib", help="calibration products: build, verify, register")
    csub = p.add_subparsers(dest="calib_command", required=True, parser_class=Parser)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, help="product file to write")
    common.add_argument("--ptc", help="PTC product giving the gains (default: nominal)")
    common.add_argument("--skip-bad", action="store_true",
                        help="log and exclude unusable inputs instead of stopping")
    for kind, helptext in (("bias", "master bias from raw biases"),
                           ("dark", "master dark (e-/s) from raw darks"),
                           ("flat", "master flat from raw flats of one filter"),
                           ("spectro-flat", "flat without large-scale illumination, for "
                                            "dispersed exposures")):
        b = csub.add_parser(kind, help=helptext, parents=[common])
        b.add_argument("raw", nargs="+", help="raw calibration frames")
        if kind != "bias":
            b.add_argument("--bias", required=True, help="master bias")
        if kind in ("flat", "spectro-flat"):
            b.add_argument("--dark", help="master dark")
        b.set_defaults(func=_cmd_calib_master, kind=kind)
    d = csub.add_parser("defects", help="defects (hot, cold pixels and columns) from masters")
    d.add_argument("--dark", help="master dark (hot pixels)")
    d.add_argument("--flat", help="master flat (cold pixels)")
    d.add_argument("--out", required=True, help="defects table (.ecsv)")
    d.set_defaults(func=_cmd_calib_defects)
    pt = csub.add_parser("ptc", help="photon-transfer curve from flat pairs")
    pt.add_argument("raw", nargs="+", help="raw flats, two per exposure time")
    pt.add_argument("--out", required=True, help="PTC table (.fits)")
    pt.add_argument("--skip-bad", action="store_true",
                    help="log and exclude unusable inputs (and an unpaired flat) instead of "
                    "stopping")
    pt.set_defaults(func=_cmd_calib_ptc)
    li = csub.add_parser("linearity", help="linearizer from a PTC product's ramp")
    li.add_argument("ptc", help="PTC product")
    li.add_argument("--out", required=True, help="linearizer table (.fits)")
    li.set_defaults(func=_cmd_calib_linearity)
    xt = csub.add_parser("crosstalk", help="crosstalk matrix from frames with bright stars")
    xt.add_argument("raw", nargs="+", help="raw science frames with saturated stars")
    xt.add_argument("--out", required=True, help="crosstalk table (.ecsv)")
    xt.set_defaults(func=_cmd_calib_crosstalk)
    eo = csub.add_parser("eo", help="electro-optical figures of the sensor, per amp")
    eo.add_argument("--bias", nargs="+", required=True, help="raw biases (read noise)")
    eo.add_argument("--flat", nargs="+", required=True, help="raw flats (EPER CTI)")
    eo.add_argument("--dark-master", help="master dark (dark current, bright defects)")
    eo.add_argument("--flat-master", help="master flat (dark defects)")
    eo.add_argument("--ptc", help="PTC product (gain, full well, linearity residual)")
    eo.add_argument("--out", required=True, help="output directory")
    eo.add_argument("--skip-bad", action="store_true",
                    help="log and exclude unusable raw frames instead of stopping")
    eo.set_defaults(func=_cmd_calib_eo)
    r = csub.add_parser("register", help="store a product in a calibration repository")
    r.add_argument("product", help="product file (bias/dark/flat/defects/ptc/...)")
    r.add_argument("--repo", required=True, help="calibration repository directory")
    r.add_argument("--valid-from", help="start of validity (default: the product's CALIBDATE)")
    r.add_argument("--valid-to", help="end of validity, exclusive (default: open)")
    r.add_argument("--certify", action="store_true", help="make it the default of its kind")
    r.add_argument("--instrument", help="instrument of a new repository (default: LATISS); "
                   "an existing one keeps its own")
    r.set_defaults(func=_cmd_calib_register)
    ls = csub.add_parser("list", help="list the products of a repository")
    ls.add_argument("--repo", required=True, help="calibration repository directory")
    ls.add_argument("--kind", help="only this kind")
    ls.add_argument("--detector", help="only this detector's products (e.g. R22_S11)")
    ls.set_defaults(func=_cmd_calib_list)
    c = csub.add_parser("certify", help="make a registered product the default of its kind")
    c.add_argument("id", type=int, help="product id (see calib list)")
    c.add_argument("--repo", required=True, help="calibration repository directory")
    c.set_defaults(func=_cmd_calib_certify)


def print_verification(product: Path, plot: bool = False) -> None:
    """Print the verdict of a product's ``.verify.json`` (and draw it as ``.verify.png``)."""
    import json

    from atmospec.calib.verification import verification_name

    report = product.with_name(verification_name(product))
    if report.is_file():
        doc = json.loads(report.read_text())
        verdict = "PASS" if doc["pass"] else "FAIL: " + ", ".join(doc.get("failures", []))
        print(f"verification {report}: {verdict}")
        if plot:
            from atmospec.plots.verify import plot_verification_file

            plot_verification_file(report)


def _cmd_calib_master(args: argparse.Namespace) -> int:
    from atmospec.calib.files import build_master_file
    from atmospec.calib.masters import DarkConfig, FlatConfig, MasterConfig

    if args.kind == "bias":
        kind, config = "bias", MasterConfig(skip_bad=args.skip_bad)
    elif args.kind == "dark":
        kind, config = "dark", DarkConfig(skip_bad=args.skip_bad)
    else:
        kind = "flat"
        config = FlatConfig(skip_bad=args.skip_bad, spectro=args.kind == "spectro-flat")
    out = build_master_file(kind, args.raw, args.out, bias=getattr(args, "bias", None),
                            dark=getattr(args, "dark", None), ptc=args.ptc, config=config)
    print(f"wrote {out}")
    print_verification(Path(out), plot=True)
    return EXIT_OK


def _cmd_calib_defects(args: argparse.Namespace) -> int:
    from atmospec.calib.files import build_defects_file

    if not (args.dark or args.flat):
        raise UsageError("atmospec calib defects: give --dark and/or --flat")
    out = build_defects_file(args.dark, args.flat, args.out)
    print(f"wrote {out}")
    print_verification(Path(out))
    return EXIT_OK


def _cmd_calib_ptc(args: argparse.Namespace) -> int:
    from atmospec.calib.files import build_ptc_file

    out = build_ptc_file(args.raw, args.out, skip_bad=args.skip_bad)
    print(f"wrote {out}")
    print_verification(Path(out))
    return EXIT_OK


def _cmd_calib_linearity(args: argparse.Namespace) -> int:
    from atmospec.calib.files import build_linearizer_file

    out = build_linearizer_file(args.ptc, args.out)
    print(f"wrote {out}")
    print_verification(Path(out))
    return EXIT_OK


def _cmd_calib_crosstalk(args: argparse.Namespace) -> int:
    import io

    from atmospec.calib.crosstalk import compare_crosstalk, measure_crosstalk
    from atmospec.io import write_text_atomic

    measured = measure_crosstalk(args.raw)
    out = measured.product().write(args.out)
    comparison = compare_crosstalk(measured)
    print(f"wrote {out} ({int(measured.valid.sum())} amp pairs measured)")
    buf = io.StringIO()
    comparison.write(buf, format="ascii.ecsv")
    write_text_atomic(buf.getvalue(), Path(out).with_suffix(".compare.ecsv"))
    return EXIT_OK


def _cmd_calib_eo(args: argparse.Namespace) -> int:
    from atmospec.calib.eo import eo_figures, write_eo
    from atmospec.calib.products import Dark, Flat, Ptc
    from atmospec.camera.description import load_camera
    from atmospec.plots.eo import plot_eo_summary

    camera = load_camera("latiss")
    dark = (Dark.read(args.dark_master, camera, load_variance=False).exposure
            if args.dark_master else None)
    flat = (Flat.read(args.flat_master, camera, load_variance=False).exposure
            if args.flat_master else None)
    ptc = Ptc.read(args.ptc, camera) if args.ptc else None
    table = eo_figures(args.bias, args.flat, dark_master=dark, flat_master=flat, ptc=ptc,
                       skip_bad=args.skip_bad)
    ecsv = write_eo(table, args.out)
    png = plot_eo_summary(table, ecsv.with_suffix(".png"))
    print(f"wrote {ecsv} and {png}")
    return EXIT_OK


def _cmd_calib_register(args: argparse.Namespace) -> int:
    from atmospec.calib.registry import CalibrationRegistry

    rec = CalibrationRegistry(args.repo, instrument=args.instrument).register(
        args.product, valid_from=args.valid_from, valid_to=args.valid_to, certify=args.certify)
    print(f"registered {args.product} as #{rec.id} ({rec.kind}, {rec.detector}"
          f"{', ' + rec.physical_filter if rec.physical_filter else ''}, valid from "
          f"{rec.valid_from}{', certified' if rec.certified else ''})")
    return EXIT_OK


def _cmd_calib_list(args: argparse.Namespace) -> int:
    from atmospec.calib.registry import KINDS, CalibrationRegistry

    if args.kind and args.kind not in KINDS:
        raise UsageError(f"atmospec calib list: unknown kind {args.kind!r} "
                          f"(known: {', '.join(KINDS)})")
    records = CalibrationRegistry(args.repo, create=False).list(args.kind, args.detector)
    print(f"{'id':>4} {'kind':<10} {'detector':<11} {'filter':<24} {'valid from':<23} "
          f"{'valid to':<23} {'cert':<4} {'verify':<6} file")
    for r in records:
        verdict = {True: "pass", False: "FAIL", None: "-"}[r.verification_passed]
        print(f"{r.id:>4} {r.kind:<10} {r.detector:<11} {r.physical_filter or '-':<24} "
              f"{r.valid_from:<23} {r.valid_to or '-':<23} {'yes' if r.certified else '':<4} "
              f"{verdict:<6} {r.path}")
    return EXIT_OK


def _cmd_calib_certify(args: argparse.Namespace) -> int:
    from atmospec.calib.registry import CalibrationRegistry

    rec = CalibrationRegistry(args.repo, create=False).certify(args.id)
    print(f"#{rec.id} ({rec.kind}) is now the certified default")
    return EXIT_OK
