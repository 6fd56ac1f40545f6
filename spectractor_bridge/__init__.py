"""Bridge to Spectractor (LSSTDESC): its spectrum FITS layout, so Spectractor's tools read our
spectra and we read theirs (`spectractor_bridge.spectrum`); the Spectractor-like fitter for
dispersed AuxTel exposures comes in later issues (see DESIGN.md)."""
