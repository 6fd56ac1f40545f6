"""Rubin Gen3 middleware path: our stages as ``PipelineTask``\\ s on a Butler repository.

Optional: it needs the ``gen3`` extra (``pip install 'atmospec[gen3]'``: ``lsst-daf-butler``,
``lsst-pipe-base``, ``lsst-ctrl-mpexec``, ``lsst-ctrl-bps``, ``lsst-ctrl-bps-parsl``). The
native runner (`atmospec.night`) stays the default and shares every algorithm with this
path: the tasks here only move data between the Butler and the same functions.

Importing this package never imports the middleware; the submodules call `require_gen3`
first, so a missing extra is one clear line (`BadInputError`, CLI exit status 2).

Modules
-------
``config``
    pex_config classes generated from our frozen configuration dataclasses.
``formatters``
    Butler formatters (and the storage-class definitions) of our file formats.
``repo``
    ``init_repo``, ``ingest_raws``, ``certify_files``, ``certify_run``.
``tasks``
    The PipelineTasks (cpBias, cpDark, cpFlat, cpPtc, ISR, characterize, zeroth order,
    extraction, atmosphere), one submodule each, imported on first use of their names.
``cli``
    ``atmospec butler ...`` and ``atmospec bps submit ...``.
"""

from __future__ import annotations

import importlib.util

from atmospec.errors import BadInputError

__all__ = ["GEN3_HINT", "gen3_available", "require_gen3"]

#: The one-line message when the extra is missing.
GEN3_HINT = "the Gen3 path needs the [gen3] extra: pip install 'atmospec[gen3]'"

_MODULES = ("lsst.daf.butler", "lsst.pipe.base", "lsst.pex.config")


def gen3_available() -> bool:
    """Whether the Gen3 middleware can be imported.

    Returns
    -------
    bool
        True when ``lsst.daf.butler``, ``lsst.pipe.base`` and ``lsst.pex.config`` are installed.
    """
    try:
        return all(importlib.util.find_spec(name) is not None for name in _MODULES)
    except (ImportError, ValueError):  # "lsst" itself missing, or a broken namespace
        return False


def require_gen3() -> None:
    """Raise the clear one-line error when the ``gen3`` extra is not installed.

    Raises
    ------
    BadInputError
        ``the Gen3 path needs the [gen3] extra: pip install 'atmospec[gen3]'`` (the CLI
        prints it on one line and exits with status 2).
    """
    if not gen3_available():
        raise BadInputError(None, GEN3_HINT)
