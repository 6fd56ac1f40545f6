"""Products built from files into files, for the command line and the night runner.

Each function reads the input products it is given as paths (`atmospec.calib.products`),
runs the in-memory builder, then writes the product with its provenance and, beside it,
``<stem>.verify.json`` (`write_product`). Nothing else happens here: the Gen3 tasks call the
builders directly, and the figures are drawn by the apps (`atmospec.plots`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from atmospec.calib.defects import FindDefectsConfig, build_defects
from atmospec.calib.linearity import LinearityConfig, build_linearizer
from atmospec.calib.masters import MasterConfig, build_bias, build_dark, build_flat, inputs_camera
from atmospec.calib.products import Bias, Crosstalk, Dark, Defects, Flat, Linearizer, Ptc
from atmospec.calib.ptc import PtcConfig, build_ptc
from atmospec.calib.verification import VerificationReport
from atmospec.camera.description import Camera, load_camera
from atmospec.errors import BadInputError

log = logging.getLogger(__name__)

__all__ = [
    "build_defects_file",
    "build_linearizer_file",
    "build_master_file",
    "build_ptc_file",
    "write_product",
]

Product = Bias | Dark | Flat | Defects | Ptc | Linearizer | Crosstalk


def write_product(product: Product, report: VerificationReport | None, out: str | Path
                  ) -> Path:
    """Write a product built in memory (with its provenance cards) and its verification.

    Parameters
    ----------
    product : Bias, Dark, Flat, Defects, Ptc, Linearizer or Crosstalk
        The product.
    report : VerificationReport or None
        Its verification, written as ``<stem>.verify.json`` under the product's file name
        (``None``: none written).
    out : path
        Product file.

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    out = Path(out)
    t0 = time.perf_counter()
    product.write(out, product.provenance)
    log.info("wrote %s in %.1f s", out, time.perf_counter() - t0)
    if report is not None:
        written = replace(report, file=out.name).write(out)
        if report.passed:
            log.info("%s: verification passed (%s)", out.name, written.name)
        else:
            log.warning("%s: verification FAILED: %s", out.name, ", ".join(report.failures()))
    return out


def build_master_file(kind: str, raws: Sequence[str | Path], out: str | Path, *,
                      bias: str | Path | None = None, dark: str | Path | None = None,
                      ptc: str | Path | None = None,
                      config: MasterConfig | None = None) -> Path:
    """Build a master bias, dark or flat from raw files and write it with its verification.

    Parameters
    ----------
    kind : {"bias", "dark", "flat"}
        Product (a spectroscopic flat: ``flat`` with ``FlatConfig(spectro=True)``).
    raws : sequence of path
        Raw frames of that kind.
    out : path
        Product file; ``<stem>.verify.json`` goes beside it, and the per-input working
        files under its directory unless ``config.workdir`` says otherwise.
    bias, dark : path, optional
        Master bias (required for a dark or flat) and dark (optional for a flat).
    ptc : path, optional
        PTC product giving the gains; ``None``: nominal gains.
    config : MasterConfig, optional
        Settings: a `atmospec.calib.masters.DarkConfig` for a dark, a
        `atmospec.calib.masters.FlatConfig` for a flat.

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    BadInputError
        A bad input raw or product, too few usable inputs, or a product with values its
        kind cannot have (`atmospec.calib.products.MasterImage.check_values`; then nothing
        is written).
    """
    out = Path(out)
    try:
        # The products are read against the raws' detector (a bias of another is refused).
        camera = inputs_camera(kind, raws, config)
    except BadInputError as exc:
        if exc.path is not None:
            raise
        raise BadInputError(out, f"{exc.problem}; not written") from None
    gains = Ptc.read(ptc, camera) if ptc else None
    master_bias = Bias.read(bias, camera, load_variance=False) if bias else None
    master_dark = Dark.read(dark, camera, load_variance=False) if dark else None
    try:
        if kind == "bias":
            product, report = build_bias(raws, config, ptc=gains, workdir=out.parent)
        elif kind == "dark":
            product, report = build_dark(raws, master_bias, config, ptc=gains,
                                         workdir=out.parent)
        elif kind == "flat":
            product, report = build_flat(raws, master_bias, master_dark, config, ptc=gains,
                                         workdir=out.parent)
        else:
            raise ValueError(f"unknown master kind {kind!r}")
    except BadInputError as exc:
        if exc.path is not None:
            raise
        # A problem of the product itself (too few inputs, values out of bounds): name the
        # file that was not written.
        raise BadInputError(out, f"{exc.problem}; not written") from None
    return write_product(product, report, out)


def build_ptc_file(raws: Iterable[str | Path], out: str | Path,
                   config: PtcConfig | None = None, *, camera: Camera | None = None,
                   skip_bad: bool = False, verify: bool = True) -> Path:
    """Measure, fit and write the PTC product from raw flat pairs, with its verification.

    Parameters
    ----------
    raws : iterable of path
        Raw flat files: two per exposure time.
    out : path
        PTC product (``.fits``).
    config : PtcConfig, optional
        Measurement and fit settings.
    camera : Camera, optional
        Expected camera; LATISS by default.
    skip_bad : bool
        Log and leave out unusable files instead of raising.
    verify : bool
        Also write ``<stem>.verify.json``.

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    product, report = build_ptc(raws, config, camera=camera, skip_bad=skip_bad, verify=verify)
    return write_product(product, report, out)


def build_defects_file(dark: str | Path | None, flat: str | Path | None, out: str | Path,
                       config: FindDefectsConfig | None = None,
                       camera: Camera | None = None) -> Path:
    """Find the defects of a master dark and/or flat file and write them with their
    verification.

    Parameters
    ----------
    dark, flat : path or None
        Master dark (e⁻/s) and master flat (normalised); at least one.
    out : path
        Output ECSV file.
    config : FindDefectsConfig, optional
        Thresholds and options.
    camera : Camera, optional
        Detector layout; LATISS by default.

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    BadInputError
        A master unreadable, of the wrong kind or shape, or none given.
    """
    camera = camera or load_camera("latiss")
    if dark is None and flat is None:
        raise BadInputError(None, "defects need a master dark, a master flat or both")
    master_dark = Dark.read(dark, camera, load_variance=False) if dark is not None else None
    master_flat = Flat.read(flat, camera, load_variance=False) if flat is not None else None
    product, report = build_defects(master_dark, master_flat, config, camera)
    return write_product(product, report, out)


def build_linearizer_file(ptc: str | Path, out: str | Path,
                          config: LinearityConfig | None = None, *,
                          camera: Camera | None = None, verify: bool = True) -> Path:
    """Fit the linearizer from a PTC file's ramp and write it with its verification.

    Parameters
    ----------
    ptc : path
        PTC product (`build_ptc_file`).
    out : path
        Linearizer product (``.fits``).
    config : LinearityConfig, optional
        Form and ranges of the correction.
    camera : Camera, optional
        Amp names; LATISS by default.
    verify : bool
        Also write ``<stem>.verify.json``.

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    camera = camera or load_camera("latiss")
    product, report = build_linearizer(Ptc.read(ptc, camera), config, camera=camera,
                                       verify=verify)
    return write_product(product, report, out)
