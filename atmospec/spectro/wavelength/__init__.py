"""Wavelength calibration of a first-order spectrum.

``lines``
    The spectral features (absorption lines and bands, emission lines) used.
``calibration``
    The dispersion law and its fit on the features of a spectrum.
"""
