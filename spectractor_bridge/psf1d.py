"""Deprecated: moved to `atmospec.spectro.psf`
(the old name goes in the next release)."""

from spectractor_bridge._moved import alias

alias(__name__)
