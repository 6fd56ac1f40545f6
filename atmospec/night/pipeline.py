"""Pipeline definitions: which tasks run on which exposures, in which order, with which
configuration overrides, read from a YAML file in ``pipelines/`` (in the spirit of Rubin's
pipeline files).

A definition looks like::

    description: Imaging night.
    calibrations:
      build: [bias, dark, flat]     # from the night's own frames when no product is valid
      require: [bias, flat]         # an exposure lacking one fails, saying how to build it
      min_frames: {bias: 3, dark: 2, flat: 2}
      certify: true                 # certify built products whose verification passes
    tasks:
      isr:
        applies_to: [imaging, dispersed]
        config:
          overscan: {method: median_per_row}
      characterize:
        applies_to: [imaging]
        inputs: [isr]

Task names are those of `atmospec.night.tasks.TASKS`; ``config`` entries override fields of
the task's frozen configuration dataclass (nested dataclasses as nested mappings). Exposure
classes: ``imaging`` (science frames without a disperser) and ``dispersed``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from atmospec.errors import BadInputError

#: Exposure classes a task may apply to.
EXPOSURE_CLASSES = ("imaging", "dispersed")

#: Calibration kinds the night runner can build from a night's frames, in build order.
BUILDABLE = ("bias", "dark", "flat")

#: Kinds a pipeline may require (anything the registry selects).
REQUIRABLE = ("bias", "dark", "flat", "defects", "ptc", "linearizer", "crosstalk")


@dataclass(frozen=True)
class CalibrationPolicy:
    """How the night runner gets its calibration products."""

    build: tuple[str, ...] = BUILDABLE
    """Kinds built from the night's own calibration frames when the repository holds no
    product valid for the night's exposures."""
    require: tuple[str, ...] = ("bias", "flat")
    """Kinds without which an exposure is not processed (it fails, naming the product)."""
    min_frames: Mapping[str, int] = field(
        default_factory=lambda: {"bias": 3, "dark": 2, "flat": 2})
    """Fewest raw frames (per filter, for flats) from which a product is built."""
    certify: bool = True
    """Certify a built product when its verification passes (it is registered either way)."""


@dataclass(frozen=True)
class TaskDefinition:
    """One task of a pipeline."""

    name: str
    """Task name (a key of `atmospec.night.tasks.TASKS`)."""
    applies_to: tuple[str, ...]
    """Exposure classes it runs on (`EXPOSURE_CLASSES`)."""
    inputs: tuple[str, ...]
    """Earlier tasks whose outputs it reads; when one of them fails it is not run."""
    config: Any
    """The task's configuration (its frozen dataclass, overrides applied)."""


@dataclass(frozen=True)
class PipelineDefinition:
    """An ordered list of tasks and a calibration policy."""

    name: str
    """File stem of the definition."""
    description: str
    """What the pipeline does."""
    calibrations: CalibrationPolicy
    """Calibration policy."""
    tasks: tuple[TaskDefinition, ...]
    """Tasks in execution order."""

    def tasks_for(self, exposure_class: str) -> tuple[TaskDefinition, ...]:
        """The tasks that run on one class of exposure, in order."""
        return tuple(t for t in self.tasks if exposure_class in t.applies_to)

    def with_task_config(self, name: str, overrides: Mapping[str, Any]) -> PipelineDefinition:
        """A copy with the configuration of task ``name`` overridden (`with_overrides`);
        the same definition when the pipeline has no such task.

        For the options of a command that override the pipeline file (``atmospec night
        --lossless``): they are part of the task's configuration, so its hash, and a
        change re-runs it.
        """
        tasks = tuple(dataclasses.replace(t, config=with_overrides(t.config, overrides,
                                                                   f"tasks.{name}.config"))
                      if t.name == name else t for t in self.tasks)
        return dataclasses.replace(self, tasks=tasks)


def default_pipeline_path() -> Path:
    """``pipelines/night.yaml`` shipped with the package."""
    return Path(str(resources.files("atmospec.pipelines") / "night.yaml"))


def with_overrides(config: Any, overrides: Mapping[str, Any], where: str = "") -> Any:
    """A copy of a frozen dataclass configuration with some fields replaced.

    Parameters
    ----------
    config : dataclass instance
        The configuration to start from.
    overrides : mapping
        Field name to new value; a mapping for a field holding a dataclass overrides that
        dataclass's fields; lists become tuples where the field holds a tuple.
    where : str
        Prefix for error messages (e.g. ``"tasks.isr.config"``).

    Returns
    -------
    dataclass instance
        The new configuration.

    Raises
    ------
    ValueError
        An unknown field, or a value of the wrong kind.
    """
    if not isinstance(overrides, Mapping):
        raise ValueError(f"{where or type(config).__name__}: expected a mapping of options, "
                         f"got {type(overrides).__name__}")
    known = {f.name: f for f in dataclasses.fields(config)}
    hints = typing.get_type_hints(type(config))
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        here = f"{where}.{key}" if where else key
        if key not in known:
            raise ValueError(f"{here}: unknown option of {type(config).__name__} "
                             f"(known: {', '.join(known)})")
        current = getattr(config, key)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            changes[key] = with_overrides(current, value, here)
            continue
        changes[key] = _coerce(value, hints.get(key), here)
    return dataclasses.replace(config, **changes)


#: Scalar field types: whether a YAML value fits, and what the message says was expected.
#: (YAML's true/false are Python bools, which are ints: refused as numbers.)
_SCALARS: Mapping[type, tuple[Callable[[Any], bool], str]] = MappingProxyType({
    float: (lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    bool: (lambda v: isinstance(v, bool), "true or false"),
    str: (lambda v: isinstance(v, str), "a string"),
})


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Turn a YAML value into what a field annotated ``hint`` holds (lists → tuples)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, typing.get_args(hint), where)
    if origin is typing.Literal:
        args = typing.get_args(hint)
        if value not in args:
            raise ValueError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is tuple:
        return _coerce_tuple(value, typing.get_args(hint), where)
    scalar = _SCALARS.get(hint) if isinstance(hint, type) else None
    if scalar is not None:
        accepts, expected = scalar
        if not accepts(value):
            raise ValueError(f"{where}: expected {expected}, got {value!r}")
        return float(value) if hint is float else value
    return value  # no annotation, or a type taken as given


def _coerce_union(value: Any, args: tuple[Any, ...], where: str) -> Any:
    """The first member of an ``X | Y | None`` annotation the value fits."""
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(value, arg, where)
        except ValueError as exc:
            errors.append(str(exc))
    raise ValueError(errors[0] if errors else f"{where}: bad value {value!r}")


def _coerce_tuple(value: Any, args: tuple[Any, ...], where: str) -> tuple[Any, ...]:
    """A YAML list as ``tuple[X, ...]`` (any length) or ``tuple[X, Y]`` (that length)."""
    if not isinstance(value, list | tuple):
        raise ValueError(f"{where}: expected a list, got {value!r}")
    if (len(args) == 2 and args[1] is Ellipsis) or len(args) <= 1:
        item = args[0] if args else None
        return tuple(_coerce(v, item, where) for v in value)
    if len(value) != len(args):
        raise ValueError(f"{where}: expected {len(args)} values, got {len(value)}")
    return tuple(_coerce(v, a, where) for v, a in zip(value, args, strict=True))


def load_pipeline(path: str | Path | None = None, *, lossless: bool = False
                  ) -> PipelineDefinition:
    """Read a pipeline definition.

    Parameters
    ----------
    path : path, optional
        YAML file; default `default_pipeline_path`.
    lossless : bool
        A run's ``--lossless`` (``atmospec night``, ``atmospec watch``): the ``isr`` task's
        ``compression.enabled`` set to false whatever the file says (`with_task_config`).

    Returns
    -------
    PipelineDefinition

    Raises
    ------
    BadInputError
        Unreadable file, unknown task, option or exposure class, or a task reading the
        output of a task that does not run before it.
    """
    from atmospec.night.tasks import TASKS

    path = Path(path) if path else default_pipeline_path()
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise BadInputError(path, "no such pipeline file") from None
    except (OSError, yaml.YAMLError) as exc:
        raise BadInputError(path, f"not a readable YAML file ({exc})") from None
    if not isinstance(doc, Mapping) or not isinstance(doc.get("tasks"), Mapping):
        raise BadInputError(path, "a pipeline needs a 'tasks' mapping")
    try:
        policy = _policy(doc.get("calibrations") or {})
        tasks: list[TaskDefinition] = []
        for name, spec in doc["tasks"].items():
            spec = spec or {}
            if name not in TASKS:
                raise ValueError(f"tasks.{name}: unknown task (known: {', '.join(TASKS)})")
            unknown = set(spec) - {"applies_to", "inputs", "config"}
            if unknown:
                raise ValueError(f"tasks.{name}: unknown keys {sorted(unknown)}")
            applies = tuple(spec.get("applies_to", TASKS[name].applies_to))
            bad = set(applies) - set(EXPOSURE_CLASSES)
            if bad:
                raise ValueError(f"tasks.{name}.applies_to: unknown exposure class "
                                 f"{sorted(bad)} (known: {', '.join(EXPOSURE_CLASSES)})")
            inputs = tuple(spec.get("inputs", TASKS[name].inputs))
            earlier = {t.name: t for t in tasks}
            for dep in inputs:
                if dep not in earlier:
                    raise ValueError(f"tasks.{name}.inputs: {dep} does not run before {name}")
                if not set(applies) <= set(earlier[dep].applies_to):
                    raise ValueError(f"tasks.{name}: runs on {list(applies)} but its input "
                                     f"{dep} only on {list(earlier[dep].applies_to)}")
            config = with_overrides(TASKS[name].config_type(), spec.get("config") or {},
                                    f"tasks.{name}.config")
            tasks.append(TaskDefinition(name, applies, inputs, config))
    except ValueError as exc:
        raise BadInputError(path, str(exc)) from None
    pipeline = PipelineDefinition(path.stem, str(doc.get("description", "")).strip(), policy,
                                  tuple(tasks))
    if lossless:
        pipeline = pipeline.with_task_config("isr", {"compression": {"enabled": False}})
    return pipeline


def _policy(doc: Mapping[str, Any]) -> CalibrationPolicy:
    policy = CalibrationPolicy()
    unknown = set(doc) - {f.name for f in dataclasses.fields(policy)}
    if unknown:
        raise ValueError(f"calibrations: unknown keys {sorted(unknown)}")
    build = tuple(doc.get("build", policy.build))
    require = tuple(doc.get("require", policy.require))
    if set(build) - set(BUILDABLE):
        raise ValueError(f"calibrations.build: can build only {', '.join(BUILDABLE)}")
    if set(require) - set(REQUIRABLE):
        raise ValueError(f"calibrations.require: unknown kinds "
                         f"{sorted(set(require) - set(REQUIRABLE))}")
    min_frames = dict(policy.min_frames)
    min_frames.update(doc.get("min_frames") or {})
    return CalibrationPolicy(build=build, require=require, min_frames=min_frames,
                             certify=bool(doc.get("certify", policy.certify)))
