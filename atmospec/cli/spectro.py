"""``atmospec extract`` and ``atmospec fit-atmosphere``: the spectrum of a dispersed
exposure and the atmosphere fitted on it."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from atmospec.cli._common import EXIT_FAILURE, EXIT_OK, UsageError
from atmospec.errors import BadInputError
from atmospec.spectro.units import FLUX_UNITS
from atmospec.spectro.wavelength.lines import LINE_MODES

log = logging.getLogger("atmospec")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``atmospec extract`` and ``atmospec fit-atmosphere``."""
    _add_extract(sub)
    _add_fit_atmosphere(sub)


def _add_extract(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="first-order spectrum of a dispersed exposure")
    p.add_argument("image", help="post-ISR image, a raw LATISS file (ISR is run first) or, "
                   "with --instrument ctio, a reduced CTIO image in ADU")
    p.add_argument("--target", help="target name (default: the header's OBJECT): any name; a "
                   "CALSPEC standard is calibrated on its SED's template, any other target on "
                   "the lines its spectrum shows")
    p.add_argument("--disperser", help="disperser (default: the header's GRATING)")
    p.add_argument("--instrument", choices=("latiss", "ctio"), default="latiss",
                   help="instrument of IMAGE")
    p.add_argument("--xy", help="zeroth-order position X,Y (0-based pixel centres of IMAGE); "
                   "default: found around the header prior")
    p.add_argument("--calibs", metavar="REPO", help="with a raw input: calibration repository")
    p.add_argument("--sed", metavar="FILE",
                   help="SED of the target (text: wavelength nm, flux erg/s/cm2/nm; or a "
                   "CALSPEC-format FITS table): wavelengths calibrated on its template, as "
                   "for a CALSPEC standard")
    p.add_argument("--lines", choices=LINE_MODES, default="auto",
                   help="wavelength calibration: auto (default: the SED's template for a "
                   "CALSPEC standard or --sed, otherwise the lines the spectrum shows, emission "
                   "or absorption as detected), emission or absorption (the lines of that "
                   "kind, whatever the target)")
    p.add_argument("--no-adr", action="store_true",
                   help="do not model the atmospheric differential refraction (default: "
                   "modelled when the header gives airmass, pressure and the zenith "
                   "direction)")
    p.add_argument("--any-target", action="store_true",
                   help="deprecated, no effect: every target is accepted")
    p.add_argument("--units", choices=FLUX_UNITS, default="electron",
                   help="flux unit of the spectrum: electron (default: e-/nm collected in "
                   "the exposure, what the night writes) or flam (Spectractor's erg/s/cm2/nm: "
                   "e-/s/nm x hc/lambda / collecting area, not divided by the instrument "
                   "throughput, with Spectractor's header keys)")
    p.add_argument("--out", required=True, help="spectrum file (Spectractor's FITS layout)")
    p.add_argument("--plots", action="store_true",
                   help="also draw the spectrum diagnostics beside the spectrum file")
    p.set_defaults(func=_cmd_extract)


def _cmd_extract(args: argparse.Namespace) -> int:
    from atmospec.camera.reduced import read_reduced_image
    from atmospec.exposure import Exposure
    from atmospec.fitsscan import scan_fits
    from atmospec.io import provenance_cards
    from atmospec.spectro.adr import AdrConfig
    from atmospec.spectro.calspec import load_sed
    from atmospec.spectro.chain import SpectroscopyConfig, process_dispersed
    from atmospec.spectro.units import with_flux_unit
    from spectractor_bridge.spectrum import write_spectrum

    xy = _parse_xy(args.xy) if args.xy is not None else None
    for option, value in (("--target", args.target), ("--disperser", args.disperser)):
        if value is not None and not value.strip():
            raise UsageError(f"atmospec extract: {option} is empty (leave it out to use the "
                             "header's)")
    if args.sed is not None:
        if not args.sed.strip():
            raise UsageError("atmospec extract: --sed is empty (give an SED file)")
        load_sed(Path(args.sed))  # a bad SED is one line before any work (BadInputError)
    if args.any_target:
        log.warning("atmospec extract: --any-target is deprecated and has no effect: every "
                    "target is accepted")
    path = Path(args.image)
    if not path.is_file():
        raise BadInputError(path, "no such file")
    try:
        # The bounded walk of the headers: a damaged size card is one line, not astropy
        # parsing the pixels as a header for minutes.
        names = {hdu.name for hdu in scan_fits(path).hdus}
    except OSError as exc:
        raise BadInputError(path, f"cannot read ({exc.strerror})") from None
    if "IMAGE" in names:
        exposure = Exposure.read(path)
    elif args.instrument == "latiss":
        exposure = _isr_in_memory(path, args.calibs)
    else:
        exposure = read_reduced_image(path, args.instrument)
    if xy is not None:
        _check_xy_in_frame(xy, exposure.image.shape)
    config = SpectroscopyConfig(sed_path=args.sed, lines=args.lines,
                                adr=AdrConfig(enabled=not args.no_adr))
    spectrum, centroid = process_dispersed(exposure, target=args.target,
                                           disperser=args.disperser, xy=xy, config=config,
                                           source=str(path), instrument=args.instrument)
    spectrum = with_flux_unit(spectrum, args.units, source=str(path))
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
          f"D2CCD {h['D2CCD']:.2f} mm ({_wavelength_source(spectrum)})")
    return _fit_outcome(path, out, spectrum.problems)


def _wavelength_source(spectrum) -> str:
    """What the wavelengths rest on, for the summary line: the template, N lines of a kind,
    or the header's distance (``WAVECAL = 'prior'``)."""
    h = spectrum.header
    if h.get("WAVECAL") != "lines":
        return "header distance: no wavelength calibration"
    method = h.get("WAVEMETH", "template")
    if method == "template" or spectrum.lines is None:
        return "calibrated on the SED's template"
    n = int(sum(bool(u) for u in spectrum.lines["Used"])) if "Used" in \
        spectrum.lines.colnames else len(spectrum.lines)
    return f"calibrated on {n} {method} lines"


def _parse_xy(text: str) -> tuple[float, float]:
    """``--xy X,Y`` as two finite, non-negative numbers (a usage error otherwise)."""
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        x, y = (float(v) for v in parts)
    except ValueError:
        raise UsageError(f"atmospec extract: --xy wants two numbers X,Y, got {text!r}"
                         ) from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise UsageError(f"atmospec extract: --xy {text!r} is not a finite position")
    if x < 0 or y < 0:
        raise UsageError(f"atmospec extract: --xy {text!r} is negative (0-based pixel "
                         "centres)")
    return x, y


def _check_xy_in_frame(xy: tuple[float, float], shape: Sequence[int]) -> None:
    """A usage error unless ``xy`` is a pixel centre of an image of ``shape`` (ny, nx)."""
    ny, nx = int(shape[0]), int(shape[1])
    if not (xy[0] <= nx - 1 and xy[1] <= ny - 1):
        raise UsageError(f"atmospec extract: --xy {xy[0]:g},{xy[1]:g} is outside the image "
                         f"({nx} x {ny} px: X 0-{nx - 1}, Y 0-{ny - 1})")


def _fit_outcome(source: str | Path, out: str | Path, problems: Sequence[str]) -> int:
    """Exit status of a command whose result ``out`` was written: 0, or 1 with ONE stderr
    line naming the input and why its fit failed (the file says so too)."""
    if not problems:
        return EXIT_OK
    print(f"atmospec: {source}: fit failed ({'; '.join(problems)}); written to {out} "
          "flagged as failed", file=sys.stderr)
    return EXIT_FAILURE


def _pm(value: float | None, fmt: str) -> str:
    """``± err`` or ``± n/a`` when there is no uncertainty (never a fake 0)."""
    return f"± {value:{fmt}}" if value is not None else "± n/a"


def _isr_in_memory(path: Path, repo: str | None):
    """ISR of one raw file with the repository's products (or nominal gains), in memory;
    a missing product is said in one warning."""
    from atmospec.calib.isr_inputs import (
        CalibrationFiles,
        load_calibrations,
        missing_products,
        missing_products_message,
    )
    from atmospec.camera.raw import read_raw
    from atmospec.isr.driver import IsrConfig, run_isr

    raw = read_raw(path)
    files = CalibrationFiles()
    if repo:
        from atmospec.calib.registry import CalibrationRegistry

        files = CalibrationRegistry(repo, create=False).select_all(raw.info)
    calibs = load_calibrations(files, raw.camera, exposure=raw.info)
    config = IsrConfig()
    missing = missing_products(calibs, config.steps)
    if missing:
        log.warning("atmospec extract: %s", missing_products_message(missing, repo))
    return run_isr(raw, config, calibs).exposure


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

    from atmospec.atmosphere.spectrum_fit import AtmosphereFitConfig, fit_atmosphere
    from atmospec.io import write_text_atomic
    from spectractor_bridge.spectrum import read_spectrum

    config = AtmosphereFitConfig(sed_path=args.sed, instrument=args.instrument,
                                 fit_angstrom=args.fit_angstrom)
    if args.range:
        config = replace(config, wavelength_range_nm=(args.range[0], args.range[1]))
    if args.joint:
        return _fit_atmosphere_joint(args, config)
    if len(args.spectrum) > 1:
        raise UsageError("atmospec fit-atmosphere: several spectra need --joint")
    path = args.spectrum[0]
    spectrum = read_spectrum(path)
    if args.mode == "1d":
        fit = fit_atmosphere(spectrum, config, source=str(path))
    else:
        from atmospec.atmosphere.spectrogram_fit import (
            SpectrogramFitConfig,
            fit_atmosphere_auto,
            fit_atmosphere_spectrogram,
        )

        fit2d = fit_atmosphere_spectrogram if args.mode == "2d" else fit_atmosphere_auto
        fit = fit2d(spectrum, SpectrogramFitConfig(atmosphere=config), source=str(path))
    out = write_text_atomic(json.dumps(fit.to_dict(), indent=2) + "\n", args.out)
    v, e = fit.values, fit.errors_quoted
    print(f"wrote {out}: PWV {v['pwv_mm']:.2f} {_pm(e['pwv_mm'], '.2f')} mm, ozone "
          f"{v['ozone_du']:.0f} {_pm(e['ozone_du'], '.0f')} DU, VAOD {v['vaod']:.4f} "
          f"{_pm(e['vaod'], '.4f')}, chi2/ndof {fit.chi2_ndof:.2f}"
          + (f", order-2 scale {v['order2']:.3f}" if "order2" in v else "")
          + f" ({fit.info.get('fit', 'spectrum')} fit; {fit.errors_label})")
    for name, reason in fit.fixed.items():
        print(f"  {name} fixed: {reason}")
    if args.plot:
        from atmospec.plots.atmosphere import plot_atmosphere_fit

        print(f"wrote {plot_atmosphere_fit(fit, Path(out).with_suffix('.png'))}")
    return _fit_outcome(path, out, fit.problems)


def _fit_atmosphere_joint(args: argparse.Namespace, config) -> int:
    import json

    from atmospec.atmosphere.joint_fit import JointFitConfig, fit_atmosphere_joint
    from atmospec.io import to_jsonable, write_text_atomic
    from spectractor_bridge.spectrum import read_spectrum

    joint = JointFitConfig(spectrum=config, throughput_degree=args.throughput_degree,
                           share_ozone=args.share_ozone, share_vaod=args.share_vaod,
                           vaod_priors=tuple((int(i), v, s) for i, v, s in args.vaod_prior))
    # Read one at a time by the fit (a night of spectra need not be in memory at once).
    fit = fit_atmosphere_joint([partial(read_spectrum, p) for p in args.spectrum], joint,
                               sources=[str(p) for p in args.spectrum])
    out = write_text_atomic(json.dumps(to_jsonable(fit.to_dict()), indent=2) + "\n",
                            args.out)
    print(f"wrote {out}: {len(args.spectrum)} spectra, chi2/ndof {fit.chi2_ndof:.2f}, "
          f"throughput correction gauge: {', '.join(fit.gauge) or 'none'}; "
          f"{fit.errors_label}")
    for path, values, errors in zip(args.spectrum, fit.values, fit.errors_quoted, strict=True):
        print(f"  {Path(path).name}: PWV {values['pwv_mm']:.2f} "
              f"{_pm(errors['pwv_mm'], '.2f')} mm, ozone {values['ozone_du']:.0f} "
              f"{_pm(errors['ozone_du'], '.0f')} DU, VAOD {values['vaod']:.4f} "
              f"{_pm(errors['vaod'], '.4f')}")
    return _fit_outcome(", ".join(Path(p).name for p in args.spectrum), out, fit.problems)
