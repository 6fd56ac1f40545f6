"""Variance plane from Poisson and read noise."""

from __future__ import annotations

import numpy as np

from atmospec.camera.description import Camera


def variance_plane(image: np.ndarray, camera: Camera, read_noise: np.ndarray,
                   gains: np.ndarray | None = None) -> np.ndarray:
    """Per-pixel variance of a bias-subtracted assembled image.

    Parameters
    ----------
    image : numpy.ndarray
        Assembled, bias-subtracted image, in electrons (or ADU if ``gains`` is given).
    camera : Camera
        Amp placement.
    read_noise : numpy.ndarray
        Read noise per amp (HDU order), e⁻.
    gains : numpy.ndarray, optional
        If the image is still in ADU: gains (e⁻/ADU) to express the variance in ADU².

    Returns
    -------
    numpy.ndarray
        float32 variance: signal (clipped at 0) plus read noise squared, per amp.
    """
    var = np.maximum(image, 0, dtype=np.float32)
    for i, amp in enumerate(camera.amplifiers):
        sl = camera.amp_slices(amp)
        if gains is None:
            var[sl] += np.float32(read_noise[i] ** 2)
        else:
            g = np.float32(gains[i])
            var[sl] /= g
            var[sl] += np.float32((read_noise[i] / gains[i]) ** 2)
    return var
