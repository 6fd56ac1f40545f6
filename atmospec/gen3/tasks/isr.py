"""Instrument signature removal PipelineTask: `atmospec.isr.driver.run_isr` with every
calibration product the input CALIBRATION collections hold for the exposure, used as the
native runner uses them (`atmospec.calib.isr_inputs.CalibrationFiles` → ``load_calibrations``)."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from atmospec.gen3 import require_gen3

require_gen3()

import lsst.pex.config as pexConfig  # noqa: E402
import lsst.pipe.base.connectionTypes as cT  # noqa: E402
from lsst.pipe.base import (  # noqa: E402
    PipelineTask,
    PipelineTaskConfig,
    PipelineTaskConnections,
    Struct,
)

from atmospec.gen3.config import config_class_from_dataclass, to_dataclass  # noqa: E402
from atmospec.gen3.tasks._base import (  # noqa: E402
    EXPOSURE_DIMS,
    PrunedByClass,
    applies_to_field,
    calibration_input,
    check_applies,
    local_path,
    missing_calibration,
    single_ref,
)
from atmospec.isr.driver import IsrConfig  # noqa: E402

__all__ = ["FILE_PRODUCTS", "IMAGE_PRODUCTS", "IsrTask", "IsrTaskConfig"]

#: Master images, read through the Butler (without their variance, as the native runner) and
#: checked as the native runner checks its files.
IMAGE_PRODUCTS = ("bias", "dark", "flat")
#: Table products, handed to the native loaders as local files.
FILE_PRODUCTS = ("ptc", "defects", "linearizer", "crosstalk")

_DETECTOR = ("instrument", "detector")


def _product(name: str, doc: str, storage: str, dimensions: tuple[str, ...] = _DETECTOR
             ) -> Any:
    """An optional calibration prerequisite: a missing one is the quantum's business
    (`IsrTask.run` fails only the exposures that require it), not the graph's."""
    return cT.PrerequisiteInput(name=name, doc=doc, storageClass=storage,
                                dimensions=dimensions, isCalibration=True, deferLoad=True,
                                minimum=0)


class IsrConnections(PrunedByClass, PipelineTaskConnections, dimensions=EXPOSURE_DIMS):
    """Raw and calibration products in, post-ISR exposure out."""

    ccdExposure = cT.Input(name="raw", doc="Raw exposure.", storageClass="AtmospecRaw",
                           dimensions=EXPOSURE_DIMS)
    bias = _product("bias", "Master bias.", "AtmospecExposure")
    dark = _product("dark", "Master dark.", "AtmospecExposure")
    flat = _product("flat", "Master flat of the exposure's band.", "AtmospecExposure",
                    ("instrument", "detector", "band"))
    ptc = _product("ptc", "PTC: per-amp gains (default: nominal gains).", "AtmospecFitsTable")
    defects = _product("defects", "Defects table (default: the shipped LATISS list).",
                       "AtmospecCatalog")
    linearizer = _product("linearizer", "Linearizer (default: no linearity correction).",
                          "AtmospecFitsTable")
    crosstalk = _product("crosstalk", "Crosstalk matrix (default: the shipped LATISS one).",
                         "AtmospecCatalog")
    outputExposure = cT.Output(
        name="post_isr_image", doc="Post-ISR exposure (e-, mask, variance).",
        storageClass="AtmospecExposure", dimensions=EXPOSURE_DIMS)
    outputStatistics = cT.Output(
        name="isrStatistics", doc="Per-amp ISR statistics and overscan profiles.",
        storageClass="AtmospecRecord", dimensions=EXPOSURE_DIMS)


class IsrTaskConfig(PipelineTaskConfig,
                    config_class_from_dataclass(IsrConfig, name="IsrPexConfig"),
                    pipelineConnections=IsrConnections):
    """`atmospec.isr.driver.IsrConfig` as a pex_config ``Config``, and which products an
    exposure must have (the night pipeline's ``calibrations.require``)."""

    applies_to = applies_to_field(("imaging", "dispersed"))

    require = pexConfig.ListField[str](
        doc="Products an exposure must have: without one its quantum fails with the native "
            "runner's one-line 'missing calibration' message and its downstream quanta are "
            "skipped; the other exposures still run. Products found but not required are "
            "used too.",
        default=["bias", "flat"],
        itemCheck=lambda v: v in IMAGE_PRODUCTS + FILE_PRODUCTS)


class IsrTask(PipelineTask):
    """Instrument signature removal: `atmospec.isr.driver.run_isr` with the products found
    in the input calibration collections (checked as the native runner checks its files)."""

    ConfigClass = IsrTaskConfig
    _DefaultName = "isr"

    def runQuantum(self, butlerQC: Any, inputRefs: Any, outputRefs: Any) -> None:
        """Read the raw and the master images (without their variance, as the native
        runner, and checked as its files are), find the table products' local files, and
        put the outputs.

        Parameters
        ----------
        butlerQC : lsst.pipe.base.QuantumContext
            Butler of the quantum.
        inputRefs, outputRefs : lsst.pipe.base.InputQuantizedConnection
            Dataset references of the connections.
        """
        check_applies(self, butlerQC)
        raw = butlerQC.get(inputRefs.ccdExposure)
        self.check_required(raw, {k for k in IMAGE_PRODUCTS + FILE_PRODUCTS
                                  if single_ref(getattr(inputRefs, k, None)) is not None})
        products = {kind: product for kind in IMAGE_PRODUCTS if (product := calibration_input(
            kind, butlerQC, getattr(inputRefs, kind, None))) is not None}
        with ExitStack() as stack:
            files = {kind: local_path(stack, butlerQC, getattr(inputRefs, kind, None))
                     for kind in FILE_PRODUCTS}
            outputs = self.run(raw, products, files)
        butlerQC.put(outputs, outputRefs)

    def check_required(self, raw: Any, found: set[str]) -> None:
        """Fail as the native runner does when a required product was not found.

        Parameters
        ----------
        raw : atmospec.camera.raw.RawFrame
            The raw frame (named in the message, with its filter and time).
        found : set of str
            Kinds of the products found.

        Raises
        ------
        atmospec.errors.BadInputError
            ``<raw>: missing calibration: no <kind> valid at <time> in the input collections
            (build it: ...; then atmospec butler certify REPO <kind> FILE)``, for the first
            required kind missing.
        """
        for kind in self.config.require:
            if kind not in found:
                raise missing_calibration(kind, raw.info, raw.path)

    def run(self, ccdExposure: Any, products: dict[str, Any] | None = None,
            files: dict[str, str | None] | None = None) -> Struct:
        """ISR of one raw frame.

        Parameters
        ----------
        ccdExposure : atmospec.camera.raw.RawFrame
            The raw frame.
        products : dict, optional
            ``bias``/``dark``/``flat`` (`atmospec.calib.products.MasterImage`, checked).
        files : dict, optional
            ``ptc``/``defects``/``linearizer``/``crosstalk`` files (None or absent: the
            native default, i.e. nominal gains, shipped defects and crosstalk, no
            linearizer).

        Returns
        -------
        lsst.pipe.base.Struct
            ``outputExposure`` (post-ISR `atmospec.exposure.Exposure`, provenance cards in
            its metadata) and ``outputStatistics`` (dict, as ``<OBSID>_isrstats.json``).

        Raises
        ------
        atmospec.errors.BadInputError
            A required product missing (`check_required`), or a product that is not usable.
        """
        from atmospec.calib.isr_inputs import CalibrationFiles, load_calibrations
        from atmospec.io import add_cards, provenance_cards
        from atmospec.isr.driver import run_isr
        from atmospec.isr.statistics import stats_document

        products = products or {}
        files = {k: v for k, v in (files or {}).items() if v}
        self.check_required(ccdExposure, set(products) | set(files))
        config: IsrConfig = to_dataclass(self.config)
        calibs = load_calibrations(CalibrationFiles(**files), ccdExposure.camera, products)
        result = run_isr(ccdExposure, config, calibs)
        inputs = ([ccdExposure.path] + [product.source for product in products.values()]
                  + list(files.values()))
        add_cards(result.exposure.metadata,
                  provenance_cards("isr", inputs, {"steps": result.steps, "config": config}))
        return Struct(outputExposure=result.exposure,
                      outputStatistics=stats_document(ccdExposure, result))
