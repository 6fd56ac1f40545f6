"""atmospec: reduction pipeline for the Rubin Auxiliary Telescope (AuxTel, camera LATISS)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("atmospec")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
