"""Master bias, dark and flat PipelineTasks (Rubin's cpBias, cpDark, cpFlat): the in-memory
master builders of `atmospec.calib.masters` on the Butler's inputs (raws read one at a time
from their datastore files, the master bias and dark and the certified PTC read in memory),
as the native runner builds its products (`atmospec.night.calibs`)."""

from __future__ import annotations

from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from atmospec.gen3 import require_gen3

require_gen3()

import lsst.pipe.base.connectionTypes as cT  # noqa: E402
from lsst.pipe.base import (  # noqa: E402
    PipelineTask,
    PipelineTaskConfig,
    PipelineTaskConnections,
    Struct,
)

from atmospec.calib.masters import DarkConfig, FlatConfig, MasterConfig  # noqa: E402
from atmospec.gen3.config import config_class_from_dataclass, to_dataclass  # noqa: E402
from atmospec.gen3.tasks._base import (  # noqa: E402
    EXPOSURE_DIMS,
    calibration_input,
    local_paths,
    product_outputs,
)

if TYPE_CHECKING:
    from atmospec.calib.products import Bias, Dark, Ptc

__all__ = [
    "CpBiasTask",
    "CpBiasTaskConfig",
    "CpDarkTask",
    "CpDarkTaskConfig",
    "CpFlatTask",
    "CpFlatTaskConfig",
]


def _ptc_connection() -> Any:
    return cT.PrerequisiteInput(
        name="ptc", doc="PTC (per-amp gains), optional: without one the nominal gains are "
                        "used, as the native runner does.", storageClass="AtmospecFitsTable",
        dimensions=("instrument", "detector"), isCalibration=True, deferLoad=True, minimum=0)


def _raw_paths(stack: ExitStack, butlerQC: Any, inputRefs: Any) -> list[str]:
    """Local files of the raws, in name order: the builder reads them one at a time."""
    return sorted(local_paths(stack, butlerQC.get(inputRefs.inputExpHandles)))


# --------------------------------------------------------------------------- cpBias


class CpBiasConnections(PipelineTaskConnections, dimensions=("instrument", "detector")):
    """Raw biases (and the PTC) in, master bias out."""

    inputExpHandles = cT.Input(
        name="raw", doc="Raw bias exposures to combine.", storageClass="AtmospecRaw",
        dimensions=EXPOSURE_DIMS, multiple=True, deferLoad=True)
    ptc = _ptc_connection()
    outputData = cT.Output(
        name="bias", doc="Master bias (e-), ready to certify.", storageClass="AtmospecExposure",
        dimensions=("instrument", "detector"), isCalibration=True)
    verification = cT.Output(
        name="cpBiasVerify", doc="Verification of the master bias (DMTN-101 tests).",
        storageClass="AtmospecRecord", dimensions=("instrument", "detector"))


class CpBiasTaskConfig(PipelineTaskConfig,
                       config_class_from_dataclass(MasterConfig, name="MasterPexConfig"),
                       pipelineConnections=CpBiasConnections):
    """`atmospec.calib.masters.MasterConfig` as a pex_config ``Config``."""

    def setDefaults(self) -> None:
        """As the night runner builds a bias: skip unusable inputs."""
        super().setDefaults()
        self.skip_bad = True


class CpBiasTask(PipelineTask):
    """Master bias from raw biases: `atmospec.calib.masters.build_bias` (ISR of each input,
    clipped-mean combination, verification)."""

    ConfigClass = CpBiasTaskConfig
    _DefaultName = "cpBias"

    def runQuantum(self, butlerQC: Any, inputRefs: Any, outputRefs: Any) -> None:
        """Pass the raw files (local paths in the datastore) and the PTC to `run`.

        Parameters
        ----------
        butlerQC : lsst.pipe.base.QuantumContext
            Butler of the quantum.
        inputRefs, outputRefs : lsst.pipe.base.InputQuantizedConnection
            Dataset references of the connections.
        """
        ptc = calibration_input("ptc", butlerQC, getattr(inputRefs, "ptc", None))
        with ExitStack() as stack:
            outputs = self.run(_raw_paths(stack, butlerQC, inputRefs), ptc)
        butlerQC.put(outputs, outputRefs)

    def run(self, raw_paths: list[str], ptc: Ptc | None = None) -> Struct:
        """Build the master bias.

        Parameters
        ----------
        raw_paths : list of str
            Raw bias files.
        ptc : atmospec.calib.products.Ptc, optional
            Gains of the ISR of the inputs (default: nominal).

        Returns
        -------
        lsst.pipe.base.Struct
            ``outputData`` (`atmospec.exposure.Exposure`), ``verification`` (dict).
        """
        from atmospec.calib.masters import build_bias

        bias, report = build_bias(raw_paths, to_dataclass(self.config), ptc=ptc)
        return product_outputs(bias, report, "bias")


# --------------------------------------------------------------------------- cpDark


class CpDarkConnections(PipelineTaskConnections, dimensions=("instrument", "detector")):
    """Raw darks, the master bias (and the PTC) in, master dark out."""

    inputExpHandles = cT.Input(
        name="raw", doc="Raw dark exposures to combine.", storageClass="AtmospecRaw",
        dimensions=EXPOSURE_DIMS, multiple=True, deferLoad=True)
    bias = cT.PrerequisiteInput(
        name="bias", doc="Master bias.", storageClass="AtmospecExposure",
        dimensions=("instrument", "detector"), isCalibration=True, deferLoad=True)
    ptc = _ptc_connection()
    outputData = cT.Output(
        name="dark", doc="Master dark (e-/s), ready to certify.",
        storageClass="AtmospecExposure", dimensions=("instrument", "detector"),
        isCalibration=True)
    verification = cT.Output(
        name="cpDarkVerify", doc="Verification of the master dark (DMTN-101 tests).",
        storageClass="AtmospecRecord", dimensions=("instrument", "detector"))


class CpDarkTaskConfig(PipelineTaskConfig,
                       config_class_from_dataclass(DarkConfig, name="DarkPexConfig"),
                       pipelineConnections=CpDarkConnections):
    """`atmospec.calib.masters.DarkConfig` as a pex_config ``Config``."""

    def setDefaults(self) -> None:
        """As the night runner builds a dark: skip unusable inputs."""
        super().setDefaults()
        self.skip_bad = True
        self.min_inputs = 2


class CpDarkTask(PipelineTask):
    """Master dark from raw darks: `atmospec.calib.masters.build_dark` with the certified
    bias (and PTC)."""

    ConfigClass = CpDarkTaskConfig
    _DefaultName = "cpDark"

    def runQuantum(self, butlerQC: Any, inputRefs: Any, outputRefs: Any) -> None:
        """Pass the raw files, the master bias and the PTC to `run`.

        Parameters
        ----------
        butlerQC : lsst.pipe.base.QuantumContext
            Butler of the quantum.
        inputRefs, outputRefs : lsst.pipe.base.InputQuantizedConnection
            Dataset references of the connections.
        """
        bias = calibration_input("bias", butlerQC, inputRefs.bias)
        ptc = calibration_input("ptc", butlerQC, getattr(inputRefs, "ptc", None))
        with ExitStack() as stack:
            outputs = self.run(_raw_paths(stack, butlerQC, inputRefs), bias, ptc)
        butlerQC.put(outputs, outputRefs)

    def run(self, raw_paths: list[str], bias: Bias, ptc: Ptc | None = None) -> Struct:
        """Build the master dark.

        Parameters
        ----------
        raw_paths : list of str
            Raw dark files.
        bias : atmospec.calib.products.Bias
            Master bias.
        ptc : atmospec.calib.products.Ptc, optional
            Gains of the ISR of the inputs (default: nominal).

        Returns
        -------
        lsst.pipe.base.Struct
            ``outputData`` (`atmospec.exposure.Exposure`), ``verification`` (dict).
        """
        from atmospec.calib.masters import build_dark

        dark, report = build_dark(raw_paths, bias, to_dataclass(self.config), ptc=ptc)
        return product_outputs(dark, report, "dark")


# --------------------------------------------------------------------------- cpFlat


class CpFlatConnections(PipelineTaskConnections,
                        dimensions=("instrument", "detector", "physical_filter")):
    """Raw flats of one physical filter, master bias and dark (and the PTC) in, master flat
    out."""

    inputExpHandles = cT.Input(
        name="raw", doc="Raw flat exposures of one physical filter.",
        storageClass="AtmospecRaw", dimensions=EXPOSURE_DIMS, multiple=True, deferLoad=True)
    bias = cT.PrerequisiteInput(
        name="bias", doc="Master bias.", storageClass="AtmospecExposure",
        dimensions=("instrument", "detector"), isCalibration=True, deferLoad=True)
    dark = cT.PrerequisiteInput(
        name="dark", doc="Master dark (optional).", storageClass="AtmospecExposure",
        dimensions=("instrument", "detector"), isCalibration=True, deferLoad=True, minimum=0)
    ptc = _ptc_connection()
    outputData = cT.Output(
        name="flat", doc="Master flat (median 1) of the band, ready to certify.",
        storageClass="AtmospecExposure", dimensions=("instrument", "detector", "band"),
        isCalibration=True)
    verification = cT.Output(
        name="cpFlatVerify", doc="Verification of the master flat (DMTN-101 tests).",
        storageClass="AtmospecRecord", dimensions=("instrument", "detector", "band"))


class CpFlatTaskConfig(PipelineTaskConfig,
                       config_class_from_dataclass(FlatConfig, name="FlatPexConfig"),
                       pipelineConnections=CpFlatConnections):
    """`atmospec.calib.masters.FlatConfig` as a pex_config ``Config``."""

    def setDefaults(self) -> None:
        """As the night runner builds a flat: skip unusable inputs."""
        super().setDefaults()
        self.skip_bad = True
        self.min_inputs = 2


class CpFlatTask(PipelineTask):
    """Master flat of one physical filter: `atmospec.calib.masters.build_flat` with the
    certified bias (dark and PTC)."""

    ConfigClass = CpFlatTaskConfig
    _DefaultName = "cpFlat"

    def runQuantum(self, butlerQC: Any, inputRefs: Any, outputRefs: Any) -> None:
        """Pass the raw files, the master bias and dark and the PTC to `run`.

        Parameters
        ----------
        butlerQC : lsst.pipe.base.QuantumContext
            Butler of the quantum.
        inputRefs, outputRefs : lsst.pipe.base.InputQuantizedConnection
            Dataset references of the connections.
        """
        bias = calibration_input("bias", butlerQC, inputRefs.bias)
        dark = calibration_input("dark", butlerQC, getattr(inputRefs, "dark", None))
        ptc = calibration_input("ptc", butlerQC, getattr(inputRefs, "ptc", None))
        with ExitStack() as stack:
            outputs = self.run(_raw_paths(stack, butlerQC, inputRefs), bias, dark, ptc)
        butlerQC.put(outputs, outputRefs)

    def run(self, raw_paths: list[str], bias: Bias, dark: Dark | None = None,
            ptc: Ptc | None = None) -> Struct:
        """Build the master flat.

        Parameters
        ----------
        raw_paths : list of str
            Raw flat files of one physical filter.
        bias : atmospec.calib.products.Bias
            Master bias.
        dark : atmospec.calib.products.Dark, optional
            Master dark.
        ptc : atmospec.calib.products.Ptc, optional
            Gains of the ISR of the inputs (default: nominal).

        Returns
        -------
        lsst.pipe.base.Struct
            ``outputData`` (`atmospec.exposure.Exposure`), ``verification`` (dict).
        """
        from atmospec.calib.masters import build_flat

        flat, report = build_flat(raw_paths, bias, dark, to_dataclass(self.config), ptc=ptc)
        return product_outputs(flat, report, "flat")
