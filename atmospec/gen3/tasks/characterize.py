"""Imaging characterization PipelineTask: background, sources, PSF and photometry
(`atmospec.imaging.characterize.characterize`)."""

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
from atmospec.imaging.characterize import CharacterizeConfig  # noqa: E402

__all__ = ["CharacterizeTask", "CharacterizeTaskConfig"]


class CharacterizeConnections(PrunedByClass, PipelineTaskConnections, dimensions=EXPOSURE_DIMS):
    """Post-ISR exposure in, source catalogue out."""

    exposure = cT.Input(name="post_isr_image", doc="Post-ISR imaging exposure.",
                        storageClass="AtmospecExposure", dimensions=EXPOSURE_DIMS)
    sourceCat = cT.Output(
        name="initial_stars_detector",
        doc="Sources with PSF photometry; image quality in the table meta (ECSV).",
        storageClass="AtmospecCatalog", dimensions=EXPOSURE_DIMS)


class CharacterizeTaskConfig(
        PipelineTaskConfig,
        config_class_from_dataclass(CharacterizeConfig, name="CharacterizePexConfig"),
        pipelineConnections=CharacterizeConnections):
    """`atmospec.imaging.characterize.CharacterizeConfig` as a pex_config ``Config``."""

    applies_to = applies_to_field(("imaging",))


class CharacterizeTask(PipelineTask):
    """Background, sources, PSF and photometry: `atmospec.imaging.characterize.characterize`."""

    ConfigClass = CharacterizeTaskConfig
    _DefaultName = "characterize"

    def runQuantum(self, butlerQC: Any, inputRefs: Any, outputRefs: Any) -> None:
        """Characterize one exposure.

        Parameters
        ----------
        butlerQC : lsst.pipe.base.QuantumContext
            Butler of the quantum.
        inputRefs, outputRefs : lsst.pipe.base.InputQuantizedConnection
            Dataset references of the connections.
        """
        check_applies(self, butlerQC)
        exposure = butlerQC.get(inputRefs.exposure)
        source = f"{obs_id(butlerQC.quantum.dataId)}_postisr"
        butlerQC.put(self.run(exposure, source), outputRefs)

    def run(self, exposure: Any, source: str = "post_isr_image") -> Struct:
        """Characterize a post-ISR exposure.

        Parameters
        ----------
        exposure : atmospec.exposure.Exposure
            Post-ISR imaging exposure.
        source : str
            Name recorded as the input in the provenance.

        Returns
        -------
        lsst.pipe.base.Struct
            ``sourceCat`` (`astropy.table.Table`).
        """
        from atmospec.imaging.catalog import catalog_table
        from atmospec.imaging.characterize import characterize
        from atmospec.io import provenance_cards

        config: CharacterizeConfig = to_dataclass(self.config)
        result = characterize(exposure, config)
        table = catalog_table(result, provenance_cards("characterize", [source], config))
        return Struct(sourceCat=table)
