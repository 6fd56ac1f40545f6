"""The bridge to Spectractor (LSSTDESC), and only that.

``spectrum``
    Spectractor's spectrum FITS layout, both ways: our spectra are written in it, so that
    Spectractor's own tools read them, and Spectractor's files (2021, 2023, 2.4) are read
    into `atmospec.spectro.spectrum.Spectrum`.

The spectroscopy itself (extraction, forward model, wavelength calibration, order 2) lives
in `atmospec.spectro`, the atmosphere and its fits in `atmospec.atmosphere`. Their old
names here (``spectractor_bridge.extract``, ``spectractor_bridge.atmfit``, …) still import,
with a `DeprecationWarning`, for one release (`spectractor_bridge._moved`).

`atmospec` never imports this package but at the edges where spectra are read or written
(the command line, the night's tasks, the report, the Gen3 formatters).
"""
