"""First-order spectrum PipelineTask of dispersed exposures: extraction, wavelength
calibration, order 2 and forward model (`atmospec.spectro.chain.process_dispersed`)."""

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

from atmospec.gen3.config import config_class_from_dataclass, to_dataclass  # noqa: E402
from atmospec.gen3.tasks._base import (  # noqa: E402
    EXPOSURE_DIMS,
    PrunedByClass,
    applies_to_field,
    check_applies,
    obs_id,
)
from atmospec.spectro.chain import SpectroscopyConfig  # noqa: E402

__all__ = ["SpectractorTask", "SpectractorTaskConfig"]


class SpectractorConnections(PrunedByClass, PipelineTaskConnections, dimensions=EXPOSURE_DIMS):
    """Post-ISR exposure and zeroth order in, first-order spectrum out."""

    exposure = cT.Input(name="post_isr_image", doc="Post-ISR dispersed exposure.",
                        storageClass="AtmospecExposure", dimensions=EXPOSURE_DIMS)
    centroid = cT.Input(name="atmospecCentroid", doc="Zeroth-order position.",
                        storageClass="AtmospecRecord", dimensions=EXPOSURE_DIMS)
    spectrum = cT.Output(name="spectractorSpectrum",
                         doc="First-order spectrum in Spectractor's FITS layout.",
                         storageClass="AtmospecSpectrum", dimensions=EXPOSURE_DIMS)


class SpectractorTaskConfig(
        PipelineTaskConfig,
        config_class_from_dataclass(SpectroscopyConfig, name="SpectroscopyPexConfig"),
        pipelineConnections=SpectractorConnections):
    """`atmospec.spectro.chain.SpectroscopyConfig` as a pex_config ``Config``."""

    applies_to = applies_to_field(("dispersed",))


class SpectractorTask(PipelineTask):
    """Extraction, wavelength calibration, order 2 and forward model of one dispersed
    exposure: `atmospec.spectro.chain.process_dispersed` at the given zeroth order."""

    ConfigClass = SpectractorTaskConfig
    _DefaultName = "spectractor"

    def runQuantum(self, butlerQC: Any, inputRefs: Any, outputRefs: Any) -> None:
        """Extract the spectrum of one exposure.

        Parameters
        ----------
        butlerQC : lsst.pipe.base.QuantumContext
            Butler of the quantum.
        inputRefs, outputRefs : lsst.pipe.base.InputQuantizedConnection
            Dataset references of the connections.
        """
        check_applies(self, butlerQC)
        inputs = butlerQC.get(inputRefs)
        source = f"{obs_id(butlerQC.quantum.dataId)}_postisr"
        butlerQC.put(self.run(inputs["exposure"], inputs["centroid"], source), outputRefs)

    def run(self, exposure: Any, centroid: dict[str, Any] | None = None,
            source: str = "post_isr_image") -> Struct:
        """Extract the first-order spectrum.

        Parameters
        ----------
        exposure : atmospec.exposure.Exposure
            Post-ISR dispersed exposure.
        centroid : dict, optional
            ``atmospecCentroid`` record (its ``centroid`` is the zeroth order); None: search.
        source : str
            Name for messages and provenance.

        Returns
        -------
        lsst.pipe.base.Struct
            ``spectrum`` (`spectractor_bridge.spectrum.Spectrum`, provenance cards in its
            header).
        """
        from atmospec.io import add_cards, provenance_cards
        from atmospec.spectro.chain import process_dispersed

        config: SpectroscopyConfig = to_dataclass(self.config)
        xy = tuple(centroid["centroid"]) if centroid else None
        spectrum, _ = process_dispersed(exposure, xy=xy, config=config, source=source)
        add_cards(spectrum.header, provenance_cards("extract", [source], config))
        return Struct(spectrum=spectrum)
