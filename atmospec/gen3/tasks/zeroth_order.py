"""Zeroth-order centroid PipelineTask of dispersed exposures
(`atmospec.night.tasks.zeroth_order_result`)."""

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
from atmospec.spectro.zeroth_order import ZerothOrderConfig  # noqa: E402

__all__ = ["ZerothOrderTask", "ZerothOrderTaskConfig"]


class ZerothOrderConnections(PrunedByClass, PipelineTaskConnections, dimensions=EXPOSURE_DIMS):
    """Post-ISR dispersed exposure in, zeroth-order centroid out."""

    exposure = cT.Input(name="post_isr_image", doc="Post-ISR dispersed exposure.",
                        storageClass="AtmospecExposure", dimensions=EXPOSURE_DIMS)
    centroid = cT.Output(name="atmospecCentroid", doc="Zeroth-order position (JSON).",
                         storageClass="AtmospecRecord", dimensions=EXPOSURE_DIMS)


class ZerothOrderTaskConfig(
        PipelineTaskConfig,
        config_class_from_dataclass(ZerothOrderConfig, name="ZerothOrderPexConfig"),
        pipelineConnections=ZerothOrderConnections):
    """`atmospec.spectro.zeroth_order.ZerothOrderConfig` as a pex_config ``Config``."""

    applies_to = applies_to_field(("dispersed",))


class ZerothOrderTask(PipelineTask):
    """Zeroth order of a dispersed exposure around its header prior
    (`atmospec.night.tasks.zeroth_order_result`)."""

    ConfigClass = ZerothOrderTaskConfig
    _DefaultName = "zerothOrder"

    def runQuantum(self, butlerQC: Any, inputRefs: Any, outputRefs: Any) -> None:
        """Find the zeroth order of one exposure.

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
        """Find the zeroth order.

        Parameters
        ----------
        exposure : atmospec.exposure.Exposure
            Post-ISR dispersed exposure.
        source : str
            Name for messages and provenance.

        Returns
        -------
        lsst.pipe.base.Struct
            ``centroid`` (dict: the ``atmospecCentroid`` record).
        """
        from atmospec.io import provenance_cards
        from atmospec.night.tasks import zeroth_order_result
        from atmospec.spectro.zeroth_order import centroid_record

        config: ZerothOrderConfig = to_dataclass(self.config)
        result = zeroth_order_result(exposure, config, source)
        return Struct(centroid=centroid_record(
            result, provenance_cards("zeroth_order", [source], config)))
