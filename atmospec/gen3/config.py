"""pex_config classes generated from our frozen configuration dataclasses.

Every stage of atmospec has a frozen, typed, documented configuration dataclass (e.g.
`atmospec.isr.driver.IsrConfig`). A Gen3 ``PipelineTask`` needs an ``lsst.pex.config``
``Config`` instead. Rather than copying each dataclass by hand (and letting the copies drift),
`config_class_from_dataclass` builds the ``Config`` class from the dataclass: same field
names, types, defaults and documentation (the docstring written under each field), nested
dataclasses as nested configs. `to_dataclass` turns a (possibly overridden) ``Config`` back
into the dataclass the stage function takes, and `apply_dataclass` does the reverse.

Type mapping:

===============================  =================================================
dataclass annotation             pex_config field
===============================  =================================================
``int``, ``float``, ``str``,     ``Field`` (``optional=True`` with ``| None``)
``bool``
``Literal["a", "b"]``            ``ChoiceField``
``tuple[T, ...]``,               ``ListField`` (``length=n`` for a fixed tuple of n)
``tuple[T, T]``
nested dataclass                 ``ConfigField``
nested dataclass ``| None``      ``ConfigField`` plus a ``do_<name>`` ``bool`` field
===============================  =================================================
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import textwrap
import types
import typing
from typing import Any

from atmospec.gen3 import require_gen3

require_gen3()

import lsst.pex.config as pexConfig  # noqa: E402

__all__ = ["apply_dataclass", "config_class_from_dataclass", "field_docs", "to_dataclass"]

#: Names a pex_config ``Config`` reserves (attributes and methods of the class).
_RESERVED = frozenset(dir(pexConfig.Config)) | {"connections"}

#: Attribute of a generated class naming the dataclass it mirrors.
_SOURCE = "_atmospec_dataclass"


def field_docs(dc: type) -> dict[str, str]:
    """Docstrings written under the fields of a dataclass (and of its dataclass bases).

    Parameters
    ----------
    dc : type
        A dataclass.

    Returns
    -------
    dict
        Field name to its documentation (whitespace normalised); fields without one are
        absent. A subclass's docstring wins over its base's.
    """
    docs: dict[str, str] = {}
    for klass in reversed(dc.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        tree = ast.parse(source)
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, following in itertools.pairwise(body):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(following, ast.Expr)
                    and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _split_optional(hint: Any) -> tuple[Any, bool]:
    """``(inner type, optional)`` of an annotation (``X | None`` -> ``(X, True)``)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        if len(args) == 1:
            return args[0], optional
        raise TypeError(f"unsupported union {hint!r}: only X | None maps onto pex_config")
    return hint, False


_SCALARS = (bool, int, float, str)


def _field_for(name: str, hint: Any, value: Any, doc: str, where: str
               ) -> dict[str, pexConfig.Field]:
    """The pex_config field(s) mirroring one dataclass field."""
    inner, optional = _split_optional(hint)
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    if dataclasses.is_dataclass(inner):
        nested = config_class_from_dataclass(
            inner, default=value if value is not None else inner())
        fields: dict[str, pexConfig.Field] = {
            name: pexConfig.ConfigField(doc=doc, dtype=nested)}
        if optional:
            flag = f"do_{name}"
            fields[flag] = pexConfig.Field(
                doc=f"Use `{name}` (False: the dataclass field is None). {doc}", dtype=bool,
                default=value is not None)
        return fields
    if origin is typing.Literal:
        dtype = type(args[0])
        if not all(type(a) is dtype for a in args):
            raise TypeError(f"{where}: Literal of mixed types {args!r}")
        return {name: pexConfig.ChoiceField(
            doc=doc, dtype=dtype, allowed={a: f"{a!r}" for a in args}, default=value,
            optional=optional)}
    if origin is tuple:
        variadic = len(args) == 2 and args[1] is Ellipsis
        item_types = {args[0]} if variadic else set(args)
        if len(item_types) != 1:
            raise TypeError(f"{where}: tuple of mixed types {inner!r}")
        (item,) = item_types
        item_inner, _ = _split_optional(item)
        if item_inner not in _SCALARS:
            raise TypeError(f"{where}: tuple of {item!r} has no pex_config ListField")
        return {name: pexConfig.ListField(
            doc=doc, dtype=item_inner, default=None if value is None else list(value),
            length=None if variadic else len(args), optional=optional)}
    if inner in _SCALARS:
        return {name: pexConfig.Field(doc=doc, dtype=inner, default=value, optional=optional)}
    raise TypeError(f"{where}: annotation {hint!r} has no pex_config equivalent")


def config_class_from_dataclass(dc: type, *, default: Any = None, name: str | None = None,
                                base: type | None = None) -> type:
    """Build the ``lsst.pex.config.Config`` subclass mirroring a configuration dataclass.

    Parameters
    ----------
    dc : type
        A frozen dataclass whose fields all have defaults.
    default : dc instance, optional
        The values used as defaults (``dc()`` when omitted), e.g. the instance a parent's
        ``default_factory`` builds, so that nested defaults follow the parent's.
    name : str, optional
        Class name; default ``<dc name>PexConfig``.
    base : type, optional
        Base class (default ``lsst.pex.config.Config``).

    Returns
    -------
    type
        The ``Config`` subclass; its ``_atmospec_dataclass`` attribute is ``dc``.

    Raises
    ------
    TypeError
        A field whose annotation has no pex_config equivalent, or a reserved name.
    """
    if not dataclasses.is_dataclass(dc):
        raise TypeError(f"{dc!r} is not a dataclass")
    default = dc() if default is None else default
    hints = typing.get_type_hints(dc)
    docs = field_docs(dc)
    attrs: dict[str, Any] = {"__doc__": (dc.__doc__ or dc.__name__).strip(),
                             "__module__": __name__, _SOURCE: dc}
    for f in dataclasses.fields(dc):
        if not f.init:
            continue
        if f.name in _RESERVED or f.name.startswith("_"):
            raise TypeError(f"{dc.__name__}.{f.name}: name reserved by lsst.pex.config")
        doc = docs.get(f.name) or f.name
        attrs.update(_field_for(f.name, hints[f.name], getattr(default, f.name), doc,
                                f"{dc.__name__}.{f.name}"))
    return type(name or f"{dc.__name__}PexConfig", (base or pexConfig.Config,), attrs)


def _from_value(hint: Any, value: Any) -> Any:
    inner, _ = _split_optional(hint)
    if value is None:
        return None
    if typing.get_origin(inner) is tuple:
        return tuple(value)
    if inner is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def to_dataclass(config: Any, dc: type | None = None) -> Any:
    """The dataclass instance a (generated) ``Config`` describes.

    Parameters
    ----------
    config : lsst.pex.config.Config
        An instance of a class from `config_class_from_dataclass` (or of a subclass).
    dc : type, optional
        The dataclass; default the one the class was generated from.

    Returns
    -------
    dataclass instance
        Frozen configuration for the stage function.
    """
    dc = dc or getattr(type(config), _SOURCE)
    hints = typing.get_type_hints(dc)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(dc):
        if not f.init:
            continue
        inner, optional = _split_optional(hints[f.name])
        if dataclasses.is_dataclass(inner):
            if optional and not getattr(config, f"do_{f.name}"):
                values[f.name] = None
            else:
                values[f.name] = to_dataclass(getattr(config, f.name), inner)
        else:
            values[f.name] = _from_value(hints[f.name], getattr(config, f.name))
    return dc(**values)


def apply_dataclass(config: Any, value: Any) -> None:
    """Set the fields of a generated ``Config`` from a dataclass instance (in place).

    Parameters
    ----------
    config : lsst.pex.config.Config
        Instance of a class from `config_class_from_dataclass`.
    value : dataclass instance
        Values to copy (nested dataclasses recursively; None for an optional nested
        dataclass sets ``do_<name>`` False).
    """
    hints = typing.get_type_hints(type(value))
    for f in dataclasses.fields(value):
        if not f.init:
            continue
        inner, optional = _split_optional(hints[f.name])
        v = getattr(value, f.name)
        if dataclasses.is_dataclass(inner):
            if optional:
                setattr(config, f"do_{f.name}", v is not None)
            if v is not None:
                apply_dataclass(getattr(config, f.name), v)
        else:
            setattr(config, f.name, list(v) if isinstance(v, tuple) else v)
