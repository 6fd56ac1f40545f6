"""Wavelength calibration of a first-order spectrum, in the order of the chain.

``lines``
    The spectral features (absorption lines and bands) and Spectractor's line catalogue.
``solution``
    The dispersion law with its free D2CCD and pixel shift, and their fit on feature
    positions (prior on D2CCD, outlier rejection).
``template``
    The coarse search: the whole spectrum matched against the expected one.
``features``
    Each feature's shift against the expected spectrum and the fit on those positions.
``calibration``
    The step of the chain: expected spectrum (SED × atmosphere), search, fit, fallback.
"""
