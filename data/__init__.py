"""Instrument tables shipped with atmospec (installed as ``atmospec.data``); see ATTRIBUTION.md."""
