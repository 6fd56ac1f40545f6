"""Cosmic-ray detection and repair with astroscrappy (van Dokkum 2001 L.A.Cosmic)."""

from __future__ import annotations

from dataclasses import dataclass

import astroscrappy
import numpy as np


@dataclass(frozen=True)
class CosmicRayConfig:
    """Parameters of the L.A.Cosmic detection (see astroscrappy.detect_cosmics)."""

    sigclip: float = 4.5
    """Laplacian-to-noise threshold for a cosmic-ray pixel."""
    sigfrac: float = 0.3
    """Fraction of ``sigclip`` for neighbouring pixels of a detected cosmic ray."""
    objlim: float = 5.0
    """Minimum contrast between the Laplacian and the fine structure: larger values keep
    more star cores (LATISS PSFs are well sampled, FWHM ≈ 8–15 px)."""
    niter: int = 2
    """Detection iterations. Each costs ~5 s on a full LATISS frame; on simulated frames
    two give a pixel recall of 0.958 against 0.960 for four."""


def find_cosmic_rays(image: np.ndarray, variance_floor: float, exclude: np.ndarray,
                     config: CosmicRayConfig) -> tuple[np.ndarray, np.ndarray]:
    """Detect cosmic rays on an image in electrons and return a repaired copy.

    Parameters
    ----------
    image : numpy.ndarray
        Post-ISR image in electrons (flat-fielded, background included).
    variance_floor : float
        Read-noise variance (e⁻²) of the image.
    exclude : numpy.ndarray
        Boolean mask of pixels not to use (bad, saturated).
    config : CosmicRayConfig
        Detection parameters.

    Returns
    -------
    mask, cleaned : numpy.ndarray
        Boolean cosmic-ray mask and the image with those pixels replaced.
    """
    mask, cleaned = astroscrappy.detect_cosmics(
        np.ascontiguousarray(image, dtype=np.float32),
        inmask=np.ascontiguousarray(exclude, dtype=bool),
        sigclip=config.sigclip,
        sigfrac=config.sigfrac,
        objlim=config.objlim,
        gain=1.0,
        readnoise=float(np.sqrt(max(variance_floor, 0.0))),
        satlevel=np.inf,
        niter=config.niter,
        sepmed=True,
        cleantype="meanmask",
        fsmode="median",
        verbose=False,
    )
    return mask, cleaned.astype(np.float32)
