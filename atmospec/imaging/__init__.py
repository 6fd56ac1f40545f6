"""Imaging mode: sources, photometry and PSF of one post-ISR exposure.

``characterize``
    The driver `characterize`, `CharacterizeConfig`, `CharacterizeResult` and the
    `ImageQuality` summary.
``background``, ``detection``, ``photometry``, ``psf``
    The stages: sky level and noise, matched-filter detection with deblending, segment
    properties, centroids and aperture photometry, Moffat PSF fits.
``catalog``
    Source catalogues on disk (ECSV with units and provenance), ``<OBSID>_sources.ecsv``.

Nothing is imported here, so that importing one stage does not pull in the others.
"""
