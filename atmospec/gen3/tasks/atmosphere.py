"""Atmosphere fit PipelineTask: PWV, ozone and aerosols of a spectrum
(`atmospec.atmosphere.spectrum_fit.fit_atmosphere`)."""

from __future__ import annotations

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

from atmospec.atmosphere.spectrum_fit import AtmosphereFitConfig  # noqa: E402
from atmospec.gen3.config import config_class_from_dataclass, to_dataclass  # noqa: E402
from atmospec.gen3.tasks._base import (  # noqa: E402
    EXPOSURE_DIMS,
    PrunedByClass,
    applies_to_field,
    check_applies,
    obs_id,
)

__all__ = ["AtmosphereFitTask", "AtmosphereFitTaskConfig"]


class AtmosphereFitConnections(PrunedByClass, PipelineTaskConnections, dimensions=EXPOSURE_DIMS):
    """Spectrum in, atmospheric parameters out."""

    spectrum = cT.Input(name="spectractorSpectrum", doc="First-order spectrum.",
                        storageClass="AtmospecSpectrum", dimensions=EXPOSURE_DIMS)
    fitParameters = cT.Output(
        name="spectrumAtmosphereFitParameters",
        doc="PWV, ozone, aerosols with errors and correlations (JSON).",
        storageClass="AtmospecRecord", dimensions=EXPOSURE_DIMS)


class AtmosphereFitTaskConfig(
        PipelineTaskConfig,
        config_class_from_dataclass(AtmosphereFitConfig, name="AtmosphereFitPexConfig"),
        pipelineConnections=AtmosphereFitConnections):
    """`atmospec.atmosphere.spectrum_fit.AtmosphereFitConfig` as a pex_config ``Config``."""

    applies_to = applies_to_field(("dispersed",))


class AtmosphereFitTask(PipelineTask):
    """Atmosphere fit of one spectrum: `atmospec.atmosphere.spectrum_fit.fit_atmosphere`."""

    ConfigClass = AtmosphereFitTaskConfig
    _DefaultName = "atmosphereFit"

    def runQuantum(self, butlerQC: Any, inputRefs: Any, outputRefs: Any) -> None:
        """Fit the atmosphere on one spectrum.

        Parameters
        ----------
        butlerQC : lsst.pipe.base.QuantumContext
            Butler of the quantum.
        inputRefs, outputRefs : lsst.pipe.base.InputQuantizedConnection
            Dataset references of the connections.
        """
        check_applies(self, butlerQC)
        spectrum = butlerQC.get(inputRefs.spectrum)
        source = f"{obs_id(butlerQC.quantum.dataId)}_spectrum"
        butlerQC.put(self.run(spectrum, source), outputRefs)

    def run(self, spectrum: Any, source: str = "spectractorSpectrum") -> Struct:
        """Fit PWV, ozone and aerosols.

        Parameters
        ----------
        spectrum : spectractor_bridge.spectrum.Spectrum
            First-order spectrum.
        source : str
            Name for messages.

        Returns
        -------
        lsst.pipe.base.Struct
            ``fitParameters`` (dict, as ``<OBSID>_atmosphere.json``).
        """
        from atmospec.atmosphere.spectrum_fit import fit_atmosphere
        from atmospec.io import to_jsonable

        config: AtmosphereFitConfig = to_dataclass(self.config)
        fit = fit_atmosphere(spectrum, config, source=source)
        return Struct(fitParameters=to_jsonable(fit.to_dict()))
