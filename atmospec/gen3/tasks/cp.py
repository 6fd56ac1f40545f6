"""Master bias, dark and flat PipelineTasks (Rubin's cpBias, cpDark, cpFlat): the master
builders of `atmospec.calib.masters`, with the certified PTC's gains when one is found, as the
native runner builds its products (`atmospec.night.calibs`)."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import replace
from typing import Any

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
    build_master,
    local_path,
    local_paths,
)

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


def _with_ptc(config: Any, stack: ExitStack, butlerQC: Any, inputRefs: Any) -> Any:
    """The builder's dataclass config, its ``ptc`` set to the certified PTC when found."""
    ptc = local_path(stack, butlerQC, getattr(inputRefs, "ptc", None))
    dc = to_dataclass(config)
    return replace(dc, ptc=ptc) if ptc else dc


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
        with ExitStack() as stack:
            raws = sorted(local_paths(stack, butlerQC.get(inputRefs.inputExpHandles)))
            outputs = self.run(raws, _with_ptc(self.config, stack, butlerQC, inputRefs))
        butlerQC.put(outputs, outputRefs)

    def run(self, raw_paths: list[str], config: MasterConfig | None = None) -> Struct:
        """Build the master bias.

        Parameters
        ----------
        raw_paths : list of str
            Raw bias files.
        config : MasterConfig, optional
            Builder settings (default: this task's config).

        Returns
        -------
        lsst.pipe.base.Struct
            ``outputData`` (`atmospec.exposure.Exposure`), ``verification`` (dict).
        """
        from atmospec.calib.masters import build_bias

        config = config or to_dataclass(self.config)
        return build_master("bias", lambda out: build_bias(raw_paths, out, config),
                            config.workdir)


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
        """Pass the raw, bias and PTC files to `atmospec.calib.masters.build_dark`.

        Parameters
        ----------
        butlerQC : lsst.pipe.base.QuantumContext
            Butler of the quantum.
        inputRefs, outputRefs : lsst.pipe.base.InputQuantizedConnection
            Dataset references of the connections.
        """
        from atmospec.calib.masters import build_dark

        with ExitStack() as stack:
            raws = sorted(local_paths(stack, butlerQC.get(inputRefs.inputExpHandles)))
            bias = local_path(stack, butlerQC, inputRefs.bias)
            config = _with_ptc(self.config, stack, butlerQC, inputRefs)
            outputs = build_master(
                "dark", lambda out: build_dark(raws, out, bias, config), config.workdir)
        butlerQC.put(outputs, outputRefs)


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
        """Pass the raw, bias, dark and PTC files to `atmospec.calib.masters.build_flat`.

        Parameters
        ----------
        butlerQC : lsst.pipe.base.QuantumContext
            Butler of the quantum.
        inputRefs, outputRefs : lsst.pipe.base.InputQuantizedConnection
            Dataset references of the connections.
        """
        from atmospec.calib.masters import build_flat

        with ExitStack() as stack:
            raws = sorted(local_paths(stack, butlerQC.get(inputRefs.inputExpHandles)))
            bias = local_path(stack, butlerQC, inputRefs.bias)
            dark = local_path(stack, butlerQC, getattr(inputRefs, "dark", None))
            config = _with_ptc(self.config, stack, butlerQC, inputRefs)
            outputs = build_master(
                "flat", lambda out: build_flat(raws, out, bias, dark, config), config.workdir)
        butlerQC.put(outputs, outputRefs)
