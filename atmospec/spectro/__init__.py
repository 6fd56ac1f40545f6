"""Slitless spectroscopy of one dispersed exposure, Spectractor's method in our own code.

In the order of the data flow:

``zeroth_order``
    Where the target's undispersed image is (and the prior from the pointing).
``dispersers``, ``calspec``
    The disperser tables (groove density, hologram maps, order ratios) and the CALSPEC
    standard stars' spectra.
``extract``, ``psf``
    Rotation, trace, background, chromatic PSF (per-column Moffat fits) and the 1D
    extraction.
``forward_model``
    The 2D forward model of the spectrogram (PSF parameters smooth in wavelength).
``wavelength``
    Wavelength calibration: the dispersion law fitted on spectral features.
``order2``
    The second-order contamination, modelled and subtracted.
``spectrum``
    `Spectrum`, the in-memory result (its file layout is Spectractor's:
    `spectractor_bridge.spectrum` reads and writes it).
``chain``
    The chain of one exposure, `process_dispersed`.

Nothing is imported here, so that importing one stage does not pull in the others.
"""
