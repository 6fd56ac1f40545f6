"""Deprecated: moved to `atmospec.atmosphere.spectrogram_fit`
(the old name goes in the next release)."""

from spectractor_bridge._moved import alias

alias(__name__)
