"""``atmospec detect``: sources, photometry and PSF of a post-ISR image."""

from __future__ import annotations

import argparse
from pathlib import Path

from atmospec.cli._common import EXIT_OK
from atmospec.errors import BadInputError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``atmospec detect``."""
    _add_detect(sub)


def _add_detect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="source catalogue and PSF figures of a post-ISR image")
    p.add_argument("postisr", help="post-ISR image (atmospec isr output)")
    p.add_argument("--out", required=True, help="catalogue file (.ecsv)")
    p.add_argument("--plots", action="store_true",
                   help="also draw source positions and PSF figures beside the catalogue")
    p.set_defaults(func=_cmd_detect)


def _cmd_detect(args: argparse.Namespace) -> int:
    from atmospec.exposure import Exposure
    from atmospec.imaging.catalog import write_catalog
    from atmospec.imaging.characterize import CharacterizeConfig, characterize
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
