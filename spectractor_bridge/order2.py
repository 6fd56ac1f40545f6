"""Deprecated: moved to `atmospec.spectro.order2`
(the old name goes in the next release)."""

from spectractor_bridge._moved import alias

alias(__name__)
