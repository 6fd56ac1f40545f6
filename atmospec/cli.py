"""Command-line interface: ``atmospec <command> ...``.

Exit status: 0 success, 2 bad input or usage (one line on stderr naming the file and the
problem, no traceback), 1 processing failure. With several inputs, a bad one is reported
and skipped; the others are still processed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from atmospec import __version__
from atmospec.errors import BadInputError
from atmospec.isr import STEPS

log = logging.getLogger("atmospec")

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


class _UsageError(Exception):
    """Raised instead of argparse's own exit so every usage error is one line, status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message}")


def _add_isr(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("isr", help="instrument signature removal of raw LATISS frames")
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
    p.set_defaults(func=_cmd_isr)


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="write realistic simulated LATISS raw frames")
    p.add_argument("what", choices=("night", "flat-pairs"),
                   help="night: biases, darks, flats, star fields; flat-pairs: two flats "
                   "per level from 100 e- to beyond full well, for a PTC")
    p.add_argument("--out", required=True, help="output directory for the raw files")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--day-obs", type=int, default=20261123, help="YYYYMMDD of the night")
    p.add_argument("--n-bias", type=int, default=5)
    p.add_argument("--n-dark", type=int, default=3)
    p.add_argument("--n-flat", type=int, default=3, help="flats per filter")
    p.add_argument("--n-science", type=int, default=4, help="imaging frames of a star field")
    p.add_argument("--n-dispersed", type=int, default=0,
                   help="dispersed (holo4_003) exposures of a standard star, interleaved")
    p.add_argument("--dispersed-every", type=int, default=3,
                   help="imaging frames between two dispersed exposures (default 3)")
    p.add_argument("--n-corrupt", type=int, default=0,
                   help="damaged files to add (truncated, empty, foreign), default 0")
    p.add_argument("--flat-filters", default="SDSSr_65mm",
                   help="comma list of flat filters (add empty_1 for dispersed exposures)")
    p.add_argument("--n-pairs", type=int, default=25,
                   help="flat-pairs: number of levels (pairs), default 25")
    p.add_argument("--no-compress", action="store_true",
                   help="write uncompressed FITS (default: lossless RICE tiles)")
    p.set_defaults(func=_cmd_simulate)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="simulate a small night and reduce it (atmospec night)")
    p.add_argument("--out", default="atmospec-demo", help="working directory")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=_cmd_demo)


def _add_calib(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calib", help="calibration products: build, verify, register")
    csub = p.add_subparsers(dest="calib_command", required=True, parser_class=_Parser)
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
    pt.add_argument("--skip-bad", action="store_true")
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
    eo.set_defaults(func=_cmd_calib_eo)
    r = csub.add_parser("register", help="store a product in a calibration repository")
    r.add_argument("product", help="product file (bias/dark/flat/defects/ptc/...)")
    r.add_argument("--repo", required=True, help="calibration repository directory")
    r.add_argument("--valid-from", help="start of validity (default: the product's CALIBDATE)")
    r.add_argument("--valid-to", help="end of validity, exclusive (default: open)")
    r.add_argument("--certify", action="store_true", help="make it the default of its kind")
    r.set_defaults(func=_cmd_calib_register)
    ls = csub.add_parser("list", help="list the products of a repository")
    ls.add_argument("--repo", required=True)
    ls.add_argument("--kind", help="only this kind")
    ls.set_defaults(func=_cmd_calib_list)
    c = csub.add_parser("certify", help="make a registered product the default of its kind")
    c.add_argument("id", type=int, help="product id (see calib list)")
    c.add_argument("--repo", required=True)
    c.set_defaults(func=_cmd_calib_certify)


def _print_verification(product: Path) -> None:
    import json

    from atmospec.cpp.report import verification_name

    report = product.with_name(verification_name(product))
    if report.is_file():
        doc = json.loads(report.read_text())
        verdict = "PASS" if doc["pass"] else "FAIL: " + ", ".join(doc.get("failures", []))
        print(f"verification {report}: {verdict}")


def _cmd_calib_master(args: argparse.Namespace) -> int:
    from atmospec.cpp import masters

    if args.kind == "bias":
        out = masters.build_bias(args.raw, args.out, masters.MasterConfig(
            ptc=args.ptc, skip_bad=args.skip_bad))
    elif args.kind == "dark":
        out = masters.build_dark(args.raw, args.out, args.bias, masters.DarkConfig(
            ptc=args.ptc, skip_bad=args.skip_bad))
    else:
        build = masters.build_flat if args.kind == "flat" else masters.build_spectro_flat
        out = build(args.raw, args.out, args.bias, args.dark,
                    masters.FlatConfig(ptc=args.ptc, skip_bad=args.skip_bad))
    print(f"wrote {out}")
    _print_verification(Path(out))
    return EXIT_OK


def _cmd_calib_defects(args: argparse.Namespace) -> int:
    from atmospec.cpp.defects import build_defects

    if not (args.dark or args.flat):
        raise _UsageError("atmospec calib defects: give --dark and/or --flat")
    out = build_defects(args.dark, args.flat, args.out)
    print(f"wrote {out}")
    _print_verification(Path(out))
    return EXIT_OK


def _cmd_calib_ptc(args: argparse.Namespace) -> int:
    from atmospec.cpp.ptc import build_ptc

    out = build_ptc(args.raw, args.out, skip_bad=args.skip_bad)
    print(f"wrote {out}")
    _print_verification(Path(out))
    return EXIT_OK


def _cmd_calib_linearity(args: argparse.Namespace) -> int:
    from atmospec.cpp.linearity import build_linearizer

    out = build_linearizer(args.ptc, args.out)
    print(f"wrote {out}")
    _print_verification(Path(out))
    return EXIT_OK


def _cmd_calib_crosstalk(args: argparse.Namespace) -> int:
    import io

    from atmospec.cpp.crosstalk import compare_crosstalk, measure_crosstalk, write_crosstalk
    from atmospec.io import write_text_atomic

    measured = measure_crosstalk(args.raw)
    out = write_crosstalk(measured, args.out)
    comparison = compare_crosstalk(measured)
    print(f"wrote {out} ({int(measured.valid.sum())} amp pairs measured)")
    buf = io.StringIO()
    comparison.write(buf, format="ascii.ecsv")
    write_text_atomic(buf.getvalue(), Path(out).with_suffix(".compare.ecsv"))
    return EXIT_OK


def _cmd_calib_eo(args: argparse.Namespace) -> int:
    from atmospec.camera.description import load_camera
    from atmospec.cpp.eo import eo_figures, write_eo
    from atmospec.isr.calibs import load_calibration

    camera = load_camera("latiss")
    dark = load_calibration(args.dark_master, "dark", camera) if args.dark_master else None
    flat = load_calibration(args.flat_master, "flat", camera) if args.flat_master else None
    table = eo_figures(args.bias, args.flat, dark_master=dark, flat_master=flat, ptc=args.ptc)
    ecsv, png = write_eo(table, args.out)
    print(f"wrote {ecsv} and {png}")
    return EXIT_OK


def _cmd_calib_register(args: argparse.Namespace) -> int:
    from atmospec.cpp.registry import CalibrationRegistry

    rec = CalibrationRegistry(args.repo).register(
        args.product, valid_from=args.valid_from, valid_to=args.valid_to, certify=args.certify)
    print(f"registered {args.product} as #{rec.id} ({rec.kind}"
          f"{', ' + rec.physical_filter if rec.physical_filter else ''}, valid from "
          f"{rec.valid_from}{', certified' if rec.certified else ''})")
    return EXIT_OK


def _cmd_calib_list(args: argparse.Namespace) -> int:
    from atmospec.cpp.registry import KINDS, CalibrationRegistry

    if args.kind and args.kind not in KINDS:
        raise _UsageError(f"atmospec calib list: unknown kind {args.kind!r} "
                          f"(known: {', '.join(KINDS)})")
    records = CalibrationRegistry(args.repo, create=False).list(args.kind)
    print(f"{'id':>4} {'kind':<10} {'filter':<24} {'valid from':<23} {'valid to':<23} "
          f"{'cert':<4} {'verify':<6} file")
    for r in records:
        verdict = {True: "pass", False: "FAIL", None: "-"}[r.verification_passed]
        print(f"{r.id:>4} {r.kind:<10} {r.physical_filter or '-':<24} {r.valid_from:<23} "
              f"{r.valid_to or '-':<23} {'yes' if r.certified else '':<4} {verdict:<6} "
              f"{r.path}")
    return EXIT_OK


def _cmd_calib_certify(args: argparse.Namespace) -> int:
    from atmospec.cpp.registry import CalibrationRegistry

    rec = CalibrationRegistry(args.repo, create=False).certify(args.id)
    print(f"#{rec.id} ({rec.kind}) is now the certified default")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The ``atmospec`` argument parser."""
    parser = _Parser(prog="atmospec", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"atmospec {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_isr(sub)
    _add_calib(sub)
    _add_detect(sub)
    _add_extract(sub)
    _add_fit_atmosphere(sub)
    _add_night(sub)
    _add_report(sub)
    _add_simulate(sub)
    _add_demo(sub)
    from atmospec.gen3.cli import add_bps_parser, add_butler_parser

    add_butler_parser(sub)  # the Gen3 path: its commands say so when the extra is missing
    add_bps_parser(sub)
    return parser


def _add_detect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="source catalogue and PSF figures of a post-ISR image")
    p.add_argument("postisr", help="post-ISR image (atmospec isr output)")
    p.add_argument("--out", required=True, help="catalogue file (.ecsv)")
    p.add_argument("--plots", action="store_true",
                   help="also draw source positions and PSF figures beside the catalogue")
    p.set_defaults(func=_cmd_detect)


def _add_extract(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="first-order spectrum of a dispersed exposure")
    p.add_argument("image", help="post-ISR image, a raw LATISS file (ISR is run first) or, "
                   "with --instrument ctio, a reduced CTIO image in ADU")
    p.add_argument("--target", help="target name (default: the header's OBJECT); a CALSPEC "
                   "standard")
    p.add_argument("--disperser", help="disperser (default: the header's GRATING)")
    p.add_argument("--instrument", choices=("latiss", "ctio"), default="latiss")
    p.add_argument("--xy", help="zeroth-order position X,Y (0-based pixel centres of IMAGE); "
                   "default: found around the header prior")
    p.add_argument("--calibs", metavar="REPO", help="with a raw input: calibration repository")
    p.add_argument("--any-target", action="store_true",
                   help="accept a target that is not a shipped CALSPEC standard")
    p.add_argument("--out", required=True, help="spectrum file (Spectractor's FITS layout)")
    p.add_argument("--plots", action="store_true",
                   help="also draw the spectrum diagnostics beside the spectrum file")
    p.set_defaults(func=_cmd_extract)


def _add_fit_atmosphere(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit-atmosphere",
                       help="fit water vapour, ozone and aerosols on a CALSPEC star's spectrum")
    p.add_argument("spectrum", nargs="+", help="spectrum file(s) (Spectractor's layout: ours "
                   "or Spectractor's own); several with --joint")
    p.add_argument("--out", required=True, help="fit results (JSON)")
    p.add_argument("--joint", action="store_true",
                   help="joint fit of several spectra: a shared throughput correction and "
                   "one atmosphere per exposure")
    p.add_argument("--share-ozone", action="store_true", help="--joint: one ozone column")
    p.add_argument("--share-vaod", action="store_true",
                   help="--joint: one aerosol optical depth (stable aerosols)")
    p.add_argument("--vaod-prior", nargs=3, type=float, action="append", default=[],
                   metavar=("INDEX", "VAOD", "SIGMA"),
                   help="--joint: external VAOD of spectrum INDEX (0-based), repeatable")
    p.add_argument("--throughput-degree", type=int, default=5,
                   help="--joint: Legendre degree of the throughput correction")
    p.add_argument("--sed", help="SED file of a non-CALSPEC target (nm, erg/s/cm2/nm)")
    p.add_argument("--instrument", choices=("latiss", "ctio"),
                   help="instrument (default: from the spectrum's header)")
    p.add_argument("--range", nargs=2, type=float, metavar=("LO", "HI"),
                   help="wavelength range fitted, nm (default 350 1095)")
    p.add_argument("--fit-angstrom", action="store_true",
                   help="also fit the aerosol Angstrom exponent (default: libRadtran's "
                   "aerosol shape)")
    p.add_argument("--mode", choices=("1d", "2d", "auto"), default="1d",
                   help="fit the extracted spectrum (1d, default), the spectrogram's pixels "
                   "with orders 1 and 2 modelled together (2d; atmospec spectra only), or the "
                   "spectrum and then the spectrogram if two atmospheric parameters "
                   "correlate beyond 0.95 (auto)")
    p.add_argument("--plot", action="store_true",
                   help="also draw data, model, residuals and correlations beside the JSON")
    p.set_defaults(func=_cmd_fit_atmosphere)


def _cmd_fit_atmosphere(args: argparse.Namespace) -> int:
    import json
    from dataclasses import replace

    from atmospec.io import write_text_atomic
    from spectractor_bridge.atmfit import AtmosphereFitConfig, fit_atmosphere
    from spectractor_bridge.spectrum import read_spectrum

    config = AtmosphereFitConfig(sed_path=args.sed, instrument=args.instrument,
                                 fit_angstrom=args.fit_angstrom)
    if args.range:
        config = replace(config, wavelength_range_nm=(args.range[0], args.range[1]))
    if args.joint:
        return _fit_atmosphere_joint(args, config)
    if len(args.spectrum) > 1:
        raise _UsageError("atmospec fit-atmosphere: several spectra need --joint")
    path = args.spectrum[0]
    spectrum = read_spectrum(path)
    if args.mode == "1d":
        fit = fit_atmosphere(spectrum, config, source=str(path))
    else:
        from spectractor_bridge.atmfit2d import (
            SpectrogramFitConfig,
            fit_atmosphere_auto,
            fit_atmosphere_spectrogram,
        )

        fit2d = fit_atmosphere_spectrogram if args.mode == "2d" else fit_atmosphere_auto
        fit = fit2d(spectrum, SpectrogramFitConfig(atmosphere=config), source=str(path))
    out = write_text_atomic(json.dumps(fit.to_dict(), indent=2) + "\n", args.out)
    v, e = fit.values, fit.errors_scaled
    print(f"wrote {out}: PWV {v['pwv_mm']:.2f} ± {e['pwv_mm'] or 0:.2f} mm, ozone "
          f"{v['ozone_du']:.0f} ± {e['ozone_du'] or 0:.0f} DU, VAOD {v['vaod']:.4f} ± "
          f"{e['vaod'] or 0:.4f}, chi2/ndof {fit.chi2_ndof:.2f}"
          + (f", order-2 scale {v['order2']:.3f}" if "order2" in v else "")
          + f" ({fit.info.get('fit', 'spectrum')} fit)")
    for name, reason in fit.fixed.items():
        print(f"  {name} fixed: {reason}")
    if args.plot:
        from atmospec.plots.atmosphere import plot_atmosphere_fit

        print(f"wrote {plot_atmosphere_fit(fit, Path(out).with_suffix('.png'))}")
    return EXIT_OK


def _fit_atmosphere_joint(args: argparse.Namespace, config) -> int:
    import json

    from atmospec.io import to_jsonable, write_text_atomic
    from spectractor_bridge.atmfit_joint import JointFitConfig, fit_atmosphere_joint

    joint = JointFitConfig(spectrum=config, throughput_degree=args.throughput_degree,
                           share_ozone=args.share_ozone, share_vaod=args.share_vaod,
                           vaod_priors=tuple((int(i), v, s) for i, v, s in args.vaod_prior))
    fit = fit_atmosphere_joint(list(args.spectrum), joint,
                               sources=[str(p) for p in args.spectrum])
    out = write_text_atomic(json.dumps(to_jsonable(fit.to_dict()), indent=2) + "\n",
                            args.out)
    print(f"wrote {out}: {len(args.spectrum)} spectra, chi2/ndof {fit.chi2_ndof:.2f}, "
          f"throughput correction gauge: {', '.join(fit.gauge) or 'none'}")
    for path, values, errors in zip(args.spectrum, fit.values, fit.errors, strict=True):
        print(f"  {Path(path).name}: PWV {values['pwv_mm']:.2f} ± {errors['pwv_mm'] or 0:.2f}"
              f" mm, ozone {values['ozone_du']:.0f} ± {errors['ozone_du'] or 0:.0f} DU, "
              f"VAOD {values['vaod']:.4f} ± {errors['vaod'] or 0:.4f}")
    return EXIT_OK


def _add_night(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("night", help="reduce a whole night of raw LATISS frames")
    p.add_argument("rawdir", help="directory of the night's raw files")
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
    p.set_defaults(func=_cmd_night)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="static HTML report of a repository (REPO/report/)")
    p.add_argument("repo", help="repository reduced by atmospec night")
    p.add_argument("--out", help="report directory (default: REPO/report)")
    p.add_argument("--force", action="store_true",
                   help="redraw every figure, even those whose inputs did not change")
    p.add_argument("--workers", type=int,
                   help="processes drawing the exposures' figures (default: all cores)")
    p.set_defaults(func=_cmd_report)


def _cmd_detect(args: argparse.Namespace) -> int:
    from atmospec.characterize.catalog import write_catalog
    from atmospec.characterize.task import CharacterizeConfig, characterize
    from atmospec.exposure import Exposure
    from atmospec.io import provenance_cards

    if not Path(args.postisr).is_file():
        raise BadInputError(args.postisr, "no such file")
    exposure = Exposure.read(args.postisr)
    config = CharacterizeConfig()
    result = characterize(exposure, config)
    out = write_catalog(result, args.out,
                        provenance=provenance_cards("characterize", [args.postisr], config))
    q = result.image_quality
    print(f"wrote {out}: {q.n_sources} sources, FWHM {q.fwhm_arcsec:.2f}\" "
          f"({q.fwhm_px:.2f} px), ellipticity {q.ellipticity:.3f}, sky {q.sky_e:.1f} e-")
    if args.plots:
        from atmospec.plots.characterize import plot_psf, plot_sources

        stem = Path(args.out).with_suffix("")
        shape = exposure.image.shape
        for path in (plot_sources(result.catalog, f"{stem}_sources.png", shape),
                     plot_psf(result.catalog, f"{stem}_psf.png", shape)):
            print(f"wrote {path}")
    return EXIT_OK


def _cmd_extract(args: argparse.Namespace) -> int:
    from astropy.io import fits

    from atmospec.exposure import Exposure
    from atmospec.io import provenance_cards
    from spectractor_bridge.chain import SpectroscopyConfig, process_dispersed
    from spectractor_bridge.spectrum import write_spectrum

    xy = None
    if args.xy:
        try:
            x, y = (float(v) for v in args.xy.split(","))
        except ValueError:
            raise _UsageError(f"atmospec extract: --xy wants X,Y, got {args.xy!r}") from None
        xy = (x, y)
    path = Path(args.image)
    if not path.is_file():
        raise BadInputError(path, "no such file")
    try:
        with fits.open(path) as hdul:
            names = {hdu.name for hdu in hdul}
    except Exception as exc:  # astropy raises many types for damaged files
        raise BadInputError(path, f"not a readable FITS file ({type(exc).__name__})") from None
    if "IMAGE" in names:
        exposure = Exposure.read(path)
    elif args.instrument == "latiss":
        exposure = _isr_in_memory(path, args.calibs)
    else:
        exposure = _reduced_image(path, args.instrument)
    config = SpectroscopyConfig(require_calspec=not args.any_target)
    spectrum, centroid = process_dispersed(exposure, target=args.target,
                                           disperser=args.disperser, xy=xy, config=config,
                                           source=str(path), instrument=args.instrument)
    out = write_spectrum(spectrum, args.out, provenance_cards("extract", [path], config))
    if args.plots:
        from atmospec.plots.spectro import plot_spectrum_diagnostics

        for png in plot_spectrum_diagnostics(spectrum, out.parent, out.with_suffix("").name):
            print(f"wrote {png}")
    h = spectrum.header
    where = (f"found at ({centroid.x:.2f}, {centroid.y:.2f})" if centroid is not None
             else "given")
    print(f"wrote {out}: {h['TARGET']} through {h['GRATING']}, zeroth order {where}, "
          f"{spectrum.n_points} points {spectrum.wavelength[0]:.0f}-"
          f"{spectrum.wavelength[-1]:.0f} nm, rotation {h['ROTANGLE']:.3f} deg, "
          f"D2CCD {h['D2CCD']:.2f} mm")
    return EXIT_OK


def _reduced_image(path: Path, instrument: str):
    """A reduced single-image FITS file in ADU (as Spectractor's CTIO inputs) as an exposure:
    electrons with the instrument's gain, Poisson + read-noise variance, NaN pixels masked
    NO_DATA and pixels at the instrument's saturation masked SAT."""
    import numpy as np
    from astropy.io import fits

    from atmospec.exposure import Exposure
    from spectractor_bridge.instrument import load_instrument

    profile = load_instrument(instrument)
    with fits.open(path) as hdul:
        image_hdus = [h for h in hdul if h.data is not None and np.ndim(h.data) == 2]
        if not image_hdus:
            raise BadInputError(path, "no 2-D image in the file")
        data = np.asarray(image_hdus[0].data, dtype=np.float32)
        header = hdul[0].header.copy()
    gain = profile.gain_e_per_adu or 1.0
    exposure = Exposure.from_image(data * gain, metadata=header)
    finite = np.isfinite(exposure.image)
    exposure.variance[:] = np.where(finite, np.clip(exposure.image, 0.0, None)
                                    + (profile.read_noise_e or 0.0) ** 2, np.inf)
    exposure.set_mask("NO_DATA", ~finite)
    if profile.max_adu:
        exposure.set_mask("SAT", finite & (data >= 0.99 * profile.max_adu))
    return exposure


def _isr_in_memory(path: Path, repo: str | None):
    """ISR of one raw file with the repository's products (or nominal gains), in memory."""
    from atmospec.camera.raw import read_raw
    from atmospec.isr.driver import IsrConfig, run_isr
    from atmospec.isr.runner import CalibrationFiles, load_calibrations

    raw = read_raw(path)
    files = CalibrationFiles()
    if repo:
        from atmospec.cpp.registry import CalibrationRegistry

        files = CalibrationRegistry(repo, create=False).select_all(raw.info)
    return run_isr(raw, IsrConfig(), load_calibrations(files, raw.camera)).exposure


def _cmd_night(args: argparse.Namespace) -> int:
    from atmospec.night.runner import NightRunConfig, run_night

    if args.executor == "dask" and not args.scheduler:
        raise _UsageError("atmospec night: --executor dask needs --scheduler ADDR")
    if args.workers is not None and args.workers < 1:
        raise _UsageError("atmospec night: --workers must be at least 1")
    config = NightRunConfig(workers=args.workers, executor=args.executor,
                            scheduler=args.scheduler, pipeline=args.pipeline,
                            retry_failed=not args.no_retry, plots=not args.no_plots,
                            report=not args.no_report)
    result = run_night(args.rawdir, args.repo, config)
    print(night_report_text(result))
    return EXIT_FAILURE if result.n_failed else EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from atmospec.report import ReportConfig, build_report

    if args.workers is not None and args.workers < 1:
        raise _UsageError("atmospec report: --workers must be at least 1")
    index = build_report(args.repo, ReportConfig(out=args.out, force=args.force,
                                                 workers=args.workers))
    print(f"report: {index}")
    return EXIT_OK


def night_report_text(result) -> str:
    """The lines ``atmospec night`` prints at the end of a run."""
    lines = [f"{result.n_exposures} exposures: {result.n_run} processed now, "
             f"{result.n_skipped} already done, {result.n_failed} with a failure "
             f"({result.wall_s:.0f} s)"]
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


def _isr_files(raws: Sequence[str], out: str, config, files, plots: bool,
               repo: str | None = None) -> int:
    """Process raw files one by one; a bad file is reported and skipped.

    Products are loaded once per distinct set of files (with ``repo``, the set chosen for
    each exposure by the registry: a night usually needs one or two sets).
    """
    from dataclasses import fields, replace

    from atmospec.camera.raw import read_raw
    from atmospec.isr.driver import StepConfigError
    from atmospec.isr.runner import load_calibrations, process_raw

    registry = None
    if repo:
        from atmospec.cpp.registry import CalibrationRegistry

        registry = CalibrationRegistry(repo, create=False)
    loaded: dict = {}
    status = EXIT_OK
    for path in raws:
        t0 = time.perf_counter()
        try:
            raw = read_raw(path)
            chosen = files
            if registry is not None:
                picked = registry.select_all(raw.info)
                # Products given on the command line win over the registry's choice.
                chosen = replace(picked, **{f.name: getattr(files, f.name)
                                            for f in fields(files) if getattr(files, f.name)})
            key = (raw.camera.name, chosen)
            if key not in loaded:
                loaded[key] = load_calibrations(chosen, raw.camera)
            outputs = process_raw(raw, out, config, loaded[key], chosen, plots=plots)
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
            print(f"atmospec: {path}: processing failed: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            status = status or EXIT_FAILURE
            continue
        print(f"{path} -> {outputs['postisr']} ({time.perf_counter() - t0:.1f} s)")
    return status


def _isr_config(steps: str | None, overscan: str):
    from atmospec.isr.driver import IsrConfig
    from atmospec.isr.overscan import OverscanConfig

    step_list = tuple(s.strip() for s in steps.split(",") if s.strip()) if steps else None
    return IsrConfig(steps=step_list, overscan=OverscanConfig(method=overscan))


def _cmd_isr(args: argparse.Namespace) -> int:
    from atmospec.isr.driver import StepConfigError, resolve_steps
    from atmospec.isr.runner import CalibrationFiles

    files = CalibrationFiles(bias=args.bias, dark=args.dark, flat=args.flat,
                             defects=args.defects, ptc=args.ptc, linearizer=args.linearizer,
                             crosstalk=args.crosstalk)
    config = _isr_config(args.steps, args.overscan)
    if not args.calibs:
        # Check the step list against the given products before touching any file (with a
        # repository the products are known per exposure only).
        available = {k for k, v in vars(files).items() if v} | {"crosstalk", "defects"}
        try:
            resolve_steps(config.steps, available)
        except StepConfigError as exc:
            raise _UsageError(f"atmospec isr: {exc}") from None
    return _isr_files(args.raw, args.out, config, files, args.plots, repo=args.calibs)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from atmospec.sim.night import NightConfig, simulate_night

    if args.what == "flat-pairs":
        from atmospec.sim.sequences import PtcSequenceConfig, write_flat_pairs

        dense = PtcSequenceConfig().n_dense_levels
        if args.n_pairs < dense + 2:
            raise _UsageError(f"atmospec simulate flat-pairs: --n-pairs must be at least "
                              f"{dense + 2}")
        # The default linear grid above 80 ke- steps over the last few per cent below full
        # well (slow to simulate, and where the turnoff is found anyway); the extra pairs
        # go to the log-spaced low levels.
        seq_config = PtcSequenceConfig(n_log_levels=args.n_pairs - dense, day_obs=args.day_obs,
                                       start=_day_start_iso(args.day_obs), seed=args.seed)
        paths = write_flat_pairs(args.out, seq_config, compress=not args.no_compress)
        print(f"wrote {len(paths)} raw flats ({len(paths) // 2} pairs) to {args.out}")
        return EXIT_OK

    config = NightConfig(day_obs=args.day_obs, seed=args.seed, n_bias=args.n_bias,
                         n_dark=args.n_dark, n_flat=args.n_flat, n_science=args.n_science,
                         n_dispersed=args.n_dispersed, n_corrupt=args.n_corrupt,
                         dispersed_every=args.dispersed_every,
                         flat_filters=tuple(f.strip() for f in args.flat_filters.split(",")
                                            if f.strip()),
                         compress=not args.no_compress)
    paths = simulate_night(args.out, config)
    print(f"wrote {len(paths)} raw files to {args.out}")
    return EXIT_OK


def _day_start_iso(day_obs: int) -> str:
    """ISO time of 19:00 UTC on ``day_obs`` (an afternoon calibration slot)."""
    d = str(day_obs)
    return f"{d[:4]}-{d[4:6]}-{d[6:]}T19:00:00.000"


def _cmd_demo(args: argparse.Namespace) -> int:
    """Simulate a small night, build a PTC, then reduce the whole night with the runner."""
    from atmospec.cpp.ptc import build_ptc
    from atmospec.cpp.registry import CalibrationRegistry
    from atmospec.night.runner import NightRunConfig, run_night
    from atmospec.sim.night import NightConfig, simulate_night
    from atmospec.sim.sequences import PtcSequenceConfig, write_flat_pairs

    out = Path(args.out)
    raw_dir, repo = out / "raw", out / "repo"
    config = NightConfig(day_obs=20261123, seed=args.seed, n_bias=3, n_dark=3, n_flat=3,
                         flat_filters=("SDSSr_65mm", "empty_1"), n_science=4, n_dispersed=2,
                         n_corrupt=2)
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
            pairs = write_flat_pairs(pair_dir, PtcSequenceConfig(
                n_log_levels=5, n_dense_levels=1, min_level_e=1000.0,
                dense_from_e=115_000.0, max_level_e=115_000.0, day_obs=20261123,
                first_seq=200, start=_day_start_iso(20261123), seed=args.seed,
                detector=config.detector))
        ptc = build_ptc(pairs, out / "ptc.fits")
        _print_verification(ptc)
        registry.register(ptc, valid_from="2026-11-01", certify=True)
    else:
        print(f"2/3 using the PTC already registered in {repo}")
    print(f"3/3 reducing the night: atmospec night {raw_dir} --repo {repo}")
    result = run_night(raw_dir, repo, NightRunConfig())
    print(night_report_text(result))
    print(f"\nsummary table: {result.summary['ecsv']}\n"
          f"calibration products: atmospec calib list --repo {repo}\n"
          f"per-exposure outputs: {repo / 'exposures'}")
    # Last, so it is what the reader sees: the page to open in a browser.
    report = result.summary.get("report")
    print(f"report: {report}" if report else
          f"report: not written (see the warning above; retry: atmospec report {repo})")
    return EXIT_FAILURE if result.n_failed else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except _UsageError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    except BadInputError as exc:
        print(f"atmospec: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("atmospec: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        log.debug("processing failure", exc_info=True)
        print(f"atmospec: processing failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
