"""Photon-transfer curve PipelineTask (Rubin's cpPtc): the in-memory `atmospec.calib.ptc.build_ptc`
over the raw flat pairs of the data query (read a pair at a time from their datastore files),
one quantum per detector."""

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

from atmospec.calib.ptc import PtcConfig  # noqa: E402
from atmospec.gen3.config import config_class_from_dataclass, to_dataclass  # noqa: E402
from atmospec.gen3.tasks._base import (  # noqa: E402
    EXPOSURE_DIMS,
    local_paths,
    product_outputs,
)

__all__ = ["CpPtcTask", "CpPtcTaskConfig"]


class CpPtcConnections(PipelineTaskConnections, dimensions=("instrument", "detector")):
    """Raw flat pairs in, PTC product out."""

    inputExpHandles = cT.Input(
        name="raw", doc="Raw flats, two per exposure time (the pairs of a PTC sequence).",
        storageClass="AtmospecRaw", dimensions=EXPOSURE_DIMS, multiple=True, deferLoad=True)
    outputData = cT.Output(
        name="ptc", doc="PTC product: one row per amp, GAIN, READ_NOISE, TURNOFF, ... "
                        "(FITS binary table), ready to certify.",
        storageClass="AtmospecFitsTable", dimensions=("instrument", "detector"),
        isCalibration=True)
    verification = cT.Output(
        name="cpPtcVerify", doc="Verification of the PTC (DMTN-101: gain and read noise "
                                "near nominal, turnoff).",
        storageClass="AtmospecRecord", dimensions=("instrument", "detector"))


class CpPtcTaskConfig(PipelineTaskConfig,
                      config_class_from_dataclass(PtcConfig, name="PtcPexConfig"),
                      pipelineConnections=CpPtcConnections):
    """`atmospec.calib.ptc.PtcConfig` as a pex_config ``Config``, and how inputs are taken."""

    skip_bad = pexConfig.Field[bool](
        doc="Log and leave out unusable inputs (unreadable, not a flat, no partner of the "
            "same exposure time) instead of failing, as atmospec calib ptc --skip-bad.",
        default=False)


class CpPtcTask(PipelineTask):
    """PTC from raw flat pairs: `atmospec.calib.ptc.build_ptc` (per pair: overscan and
    crosstalk removal, clipped means and pair-difference variances; per amp: the Astier+19
    fit, read noise from the overscans, turnoff; then the verification)."""

    ConfigClass = CpPtcTaskConfig
    _DefaultName = "cpPtc"

    def runQuantum(self, butlerQC: Any, inputRefs: Any, outputRefs: Any) -> None:
        """Pass the raw flats (local paths in the datastore) to `run` and put its outputs.

        Parameters
        ----------
        butlerQC : lsst.pipe.base.QuantumContext
            Butler of the quantum.
        inputRefs, outputRefs : lsst.pipe.base.InputQuantizedConnection
            Dataset references of the connections.
        """
        with ExitStack() as stack:
            outputs = self.run(sorted(local_paths(
                stack, butlerQC.get(inputRefs.inputExpHandles))))
        butlerQC.put(outputs, outputRefs)

    def run(self, raw_paths: list[str]) -> Struct:
        """Measure, fit and verify the PTC.

        Parameters
        ----------
        raw_paths : list of str
            Raw flat files, two per exposure time.

        Returns
        -------
        lsst.pipe.base.Struct
            ``outputData`` (`astropy.table.Table`, the product as its file holds it:
            `atmospec.calib.products.Ptc.as_stored`) and ``verification`` (dict, as
            ``<stem>.verify.json``).
        """
        from atmospec.calib.ptc import build_ptc

        config: PtcConfig = to_dataclass(self.config)
        ptc, report = build_ptc(raw_paths, config, skip_bad=self.config.skip_bad)
        return product_outputs(ptc, report, "ptc")
