"""Imaging-mode characterization of one post-ISR exposure.

``task``
    `characterize` (the driver), `CharacterizeConfig`, `CharacterizeResult` and the
    `ImageQuality` summary.
``background``, ``detection``, ``photometry``, ``psf``
    The stages: sky level and noise, matched-filter detection with deblending, segment
    properties, centroids and aperture photometry, Moffat PSF fits.
``catalog``
    Source catalogues on disk (ECSV with units and provenance), ``<OBSID>_sources.ecsv``.

Nothing is imported here, so that importing one module (e.g. the zeroth-order centroid of
dispersed exposures) does not pull in the imaging stack.
"""
