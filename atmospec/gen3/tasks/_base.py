"""What every atmospec ``PipelineTask`` shares: exposure classes, data-ID helpers, local
files of deferred datasets, calibration products in and out, missing-product messages.

Only the middleware and the standard library are imported here; the algorithms are imported
inside the functions that need them, so a quantum process pays only for its own task.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

from atmospec.gen3 import require_gen3
from atmospec.memory import keep_freed_memory

require_gen3()
# The processes that load the tasks (pipetask's quanta) reduce full frames: keep their freed
# memory for reuse, as the command line and the night's workers do (atmospec.memory).
keep_freed_memory()

import lsst.pex.config as pexConfig  # noqa: E402
from lsst.pipe.base import NoWorkFound, PipelineTask, Struct  # noqa: E402

__all__ = [
    "EXPOSURE_DIMS",
    "applies_to_field",
    "calibration_input",
    "check_applies",
    "exposure_class",
    "local_path",
    "local_paths",
    "missing_calibration",
    "obs_id",
    "product_outputs",
    "prune_other_classes",
    "single_ref",
]

#: Dimensions of a per-exposure quantum.
EXPOSURE_DIMS = ("instrument", "exposure", "detector")

def applies_to_field(default: tuple[str, ...]) -> Any:
    """The ``applies_to`` config field of a per-exposure task (as in the night pipeline).

    Parameters
    ----------
    default : tuple of str
        Exposure classes the task runs on by default.

    Returns
    -------
    lsst.pex.config.ListField
    """
    from atmospec.night.pipeline import EXPOSURE_CLASSES

    return pexConfig.ListField[str](
        doc="Exposure classes the task runs on (imaging, dispersed). Quanta of other "
            "exposures of the data query (calibration frames included) are left out of the "
            "quantum graph, and the tasks after them with them, as the night runner's "
            "applies_to; should one still run, it does nothing (NoWorkFound).",
        default=list(default), itemCheck=lambda v: v in EXPOSURE_CLASSES)


def exposure_class(data_id: Any) -> str | None:
    """``imaging`` or ``dispersed`` for a science exposure's data ID, None for anything else.

    Parameters
    ----------
    data_id : lsst.daf.butler.DataCoordinate
        Expanded data ID of an exposure quantum.

    Returns
    -------
    str or None
        As `atmospec.night.runner.exposure_class` says for the same raw.
    """
    from atmospec.camera.translator import _NOT_DISPERSED

    try:
        if data_id.records["exposure"].observation_type != "science":
            return None
    except (AttributeError, KeyError, TypeError):
        pass  # a data ID without records: the data query chose science exposures
    disperser = str(data_id["physical_filter"]).partition("~")[2]
    return "imaging" if disperser.lower() in _NOT_DISPERSED else "dispersed"


def prune_other_classes(connections: Any, adjuster: Any) -> None:
    """Drop, while the graph is built, the quanta of exposures the task does not apply to.

    Without this each such quantum would still cost a process start to say NoWorkFound
    (and its downstream quanta their own), several seconds each with ``pipetask -j``.

    Parameters
    ----------
    connections : lsst.pipe.base.PipelineTaskConnections
        Connections of a task whose config has ``applies_to``.
    adjuster : lsst.pipe.base.QuantaAdjuster
        The graph builder's helper (``adjust_all_quanta``).
    """
    applies = tuple(connections.config.applies_to)
    for data_id in list(adjuster.iter_data_ids()):
        if exposure_class(adjuster.expand_quantum_data_id(data_id)) not in applies:
            adjuster.remove_quantum(data_id)


class PrunedByClass:
    """Mixin for the connections of a task with ``applies_to``: leaves out, while the graph
    is built, the quanta of exposures of other classes (`prune_other_classes`)."""

    def adjust_all_quanta(self, adjuster: Any) -> None:
        """Leave out the exposures of classes not in ``applies_to``.

        Parameters
        ----------
        adjuster : lsst.pipe.base.QuantaAdjuster
            The graph builder's helper.
        """
        prune_other_classes(self, adjuster)


def check_applies(task: PipelineTask, butlerQC: Any) -> None:
    """Raise ``NoWorkFound`` when the quantum's exposure is not of the task's classes.

    Parameters
    ----------
    task : lsst.pipe.base.PipelineTask
        Task with an ``applies_to`` config field.
    butlerQC : lsst.pipe.base.QuantumContext
        Butler of the quantum.

    Raises
    ------
    lsst.pipe.base.NoWorkFound
        For an exposure of another class (a graph built without `prune_other_classes`).
    """
    cls = exposure_class(butlerQC.quantum.dataId)
    if cls not in task.config.applies_to:
        raise NoWorkFound(f"{obs_id(butlerQC.quantum.dataId)} is "
                          f"{cls or 'not a science exposure'}; {task.getName()} runs on "
                          f"{', '.join(task.config.applies_to)}")


def obs_id(data_id: Any) -> str:
    """OBSID of an exposure data ID (its record when expanded), for messages and provenance.

    Parameters
    ----------
    data_id : lsst.daf.butler.DataCoordinate
        Exposure data ID.

    Returns
    -------
    str
    """
    try:
        return str(data_id.records["exposure"].obs_id)
    except (AttributeError, KeyError, TypeError):
        return f"exposure {data_id['exposure']}"


def single_ref(ref: Any) -> Any:
    """The one dataset reference of an optional prerequisite connection, or None.

    Parameters
    ----------
    ref : lsst.daf.butler.DatasetRef, list or None
        What ``getattr(inputRefs, connection, None)`` gives: the attribute is absent when
        nothing was found, and may be a list of one.

    Returns
    -------
    lsst.daf.butler.DatasetRef or None
    """
    if isinstance(ref, list | tuple):
        return ref[0] if ref else None
    return ref


def local_paths(stack: ExitStack, handles: list[Any]) -> list[str]:
    """Local files of deferred dataset handles (kept for the life of ``stack``).

    Parameters
    ----------
    stack : contextlib.ExitStack
        Holds the local copies of remote files until it closes.
    handles : list of lsst.daf.butler.DeferredDatasetHandle
        Datasets.

    Returns
    -------
    list of str
    """
    return [stack.enter_context(h.butler.getURI(h.ref).as_local()).ospath for h in handles]


def local_path(stack: ExitStack, butlerQC: Any, ref: Any) -> str | None:
    """Local file of an optional prerequisite (None when none was found).

    Parameters
    ----------
    stack : contextlib.ExitStack
        Holds a local copy of a remote file until it closes.
    butlerQC : lsst.pipe.base.QuantumContext
        Butler of the quantum.
    ref : lsst.daf.butler.DatasetRef, list or None
        ``getattr(inputRefs, connection, None)`` of a deferred-load prerequisite.

    Returns
    -------
    str or None
    """
    ref = single_ref(ref)
    return local_paths(stack, [butlerQC.get(ref)])[0] if ref is not None else None


def missing_calibration(kind: str, info: Any, path: str | Path) -> Exception:
    """The native runner's error for an exposure lacking a required product.

    Parameters
    ----------
    kind : str
        Product kind (``bias``, ``flat``, ...).
    info : atmospec.camera.translator.ObservationInfo
        The exposure (its filter and time are named).
    path : path
        Its raw file (named first, as the native runner does).

    Returns
    -------
    atmospec.errors.BadInputError
        ``<raw>: missing calibration: no <kind> valid at <time> in the input collections
        (build it: ...; then atmospec butler certify REPO <kind> FILE)``.
    """
    from atmospec.errors import BadInputError
    from atmospec.night.calibs import missing_message

    return BadInputError(path, missing_message(
        kind, info, "the input collections",
        register=f"atmospec butler certify REPO {kind} FILE"))


def calibration_input(kind: str, butlerQC: Any, ref: Any) -> Any:
    """A calibration product of the quantum's inputs, read in memory and checked, or None.

    Parameters
    ----------
    kind : {"bias", "dark", "flat", "ptc"}
        Product kind.
    butlerQC : lsst.pipe.base.QuantumContext
        Butler of the quantum.
    ref : lsst.daf.butler.DatasetRef, list or None
        ``getattr(inputRefs, connection, None)`` of a deferred-load prerequisite.

    Returns
    -------
    atmospec.calib.products.MasterImage or atmospec.calib.products.Ptc or None
        A master image without its variance (ISR does not use it), named
        ``<kind>@<dataset id>``; a PTC named by its file (what the products built with its
        gains record as ``GAINSRC``, as with the native runner).

    Raises
    ------
    atmospec.errors.BadInputError
        A product of another kind, instrument or shape.
    """
    ref = single_ref(ref)
    if ref is None:
        return None
    handle = butlerQC.get(ref)
    if kind == "ptc":
        from atmospec.calib.products import Ptc

        return Ptc.checked(handle.get(), handle.butler.getURI(handle.ref).basename())
    from atmospec.calib.isr_inputs import MASTER_CLASSES

    return MASTER_CLASSES[kind].checked(handle.get(parameters={"load_variance": False}),
                                        f"{kind}@{ref.id}")


def product_outputs(product: Any, report: Any, name: str) -> Struct:
    """The outputs of a calibration task from a product built in memory.

    Parameters
    ----------
    product : atmospec.calib.products.MasterImage or atmospec.calib.products.Ptc
        The product; stored as its file holds it, provenance cards included.
    report : atmospec.calib.verification.VerificationReport or None
        Its verification.
    name : str
        Output dataset type, recorded as the report's ``file``.

    Returns
    -------
    lsst.pipe.base.Struct
        ``outputData`` (`atmospec.exposure.Exposure`, or `astropy.table.Table` for a PTC)
        and ``verification`` (dict, empty without a report).
    """
    verification = replace(report, file=name).to_dict() if report is not None else {}
    return Struct(outputData=product.as_stored(product.provenance), verification=verification)
