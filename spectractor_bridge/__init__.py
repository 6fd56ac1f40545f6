"""Spectractor-like fitter for dispersed AuxTel exposures (see DESIGN.md; built in later issues)."""
