"""Stain augmentation: Tellez HED jitter on Ruifrok-Johnston colour deconvolution.

Each image is deconvolved into haematoxylin, eosin and DAB concentrations, every channel is
perturbed as ``c' = alpha * c + beta`` with ``alpha ~ U(1 - sigma, 1 + sigma)`` and
``beta ~ U(-sigma, sigma)`` (Tellez et al. 2018; OMG-Net uses ``sigma = 0.14``) and RGB is
reconstructed. ``beta`` is expressed in scikit-image's ``rgb2hed`` concentration units (the
convention of the published HED-jitter implementations); :mod:`mitoscope.stain.hed` works in
decadic optical density, 6 x larger, so ``beta`` is scaled by :data:`SKIMAGE_TO_OD`.

Examples
--------
>>> import numpy as np
>>> img = np.full((4, 4, 3), 200, np.uint8)
>>> out = hed_jitter(img, sigma=0.14, rng=0)
>>> out.shape, out.dtype
((4, 4, 3), dtype('uint8'))
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError

#: decadic optical density per unit of ``skimage.color.rgb2hed`` concentration (ln(1e6)/ln(10))
SKIMAGE_TO_OD = 6.0


def hed_jitter(
    images: np.ndarray,
    *,
    sigma: float = 0.14,
    beta_sigma: float | None = None,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Randomly perturb the stain concentrations of one image or a batch.

    Parameters
    ----------
    images : (H, W, 3) or (N, H, W, 3) uint8
        RGB image(s); each image of a batch gets its own random ``alpha`` and ``beta``.
    sigma : float
        Half-width of the multiplicative perturbation ``alpha ~ U(1 - sigma, 1 + sigma)``.
    beta_sigma : float, optional
        Half-width of the additive perturbation (skimage units); default ``sigma``.
    rng : numpy Generator or int seed, optional
        Source of randomness (same seed -> same output).

    Returns
    -------
    ndarray
        ``uint8`` image(s) of the same shape, always within ``[0, 255]``.
    """
    from .hed import _OD_LUT, HED_FROM_RGB, RGB_FROM_HED

    arr = np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or arr.shape[-1] != 3:
        raise InvalidInputError(
            f"hed_jitter expects uint8 (H, W, 3) or (N, H, W, 3) RGB, got {arr.dtype} {arr.shape}"
        )
    if not 0 <= float(sigma) < 1:
        raise InvalidInputError(f"sigma must be in [0, 1), got {sigma}")
    bsig = float(sigma if beta_sigma is None else beta_sigma)
    single = arr.ndim == 3
    batch = arr[None] if single else arr
    gen = np.random.default_rng(rng)
    n = batch.shape[0]
    alpha = gen.uniform(1 - sigma, 1 + sigma, size=(n, 1, 1, 3)).astype(np.float32)
    beta = gen.uniform(-bsig, bsig, size=(n, 1, 1, 3)).astype(np.float32) * SKIMAGE_TO_OD
    od = _OD_LUT[batch]
    hed = od @ HED_FROM_RGB.astype(np.float32)
    hed = hed * alpha + beta
    od2 = hed @ RGB_FROM_HED.astype(np.float32)
    rgb = 255.0 * np.power(np.float32(10.0), -np.maximum(od2, 0.0))
    out = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    return out[0] if single else out


def flip_rotate(
    images: np.ndarray, *, p_flip: float = 0.4, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """Random horizontal flip (probability ``p_flip``, OMG-Net) and a random 90-degree rotation.

    Works on ``(H, W, ...)`` arrays (the same transform for every trailing channel).
    """
    gen = np.random.default_rng(rng)
    out = np.asarray(images)
    if gen.random() < p_flip:
        out = out[:, ::-1]
    k = int(gen.integers(0, 4))
    if k:
        out = np.rot90(out, k, axes=(0, 1))
    return np.ascontiguousarray(out)


__all__ = ["SKIMAGE_TO_OD", "flip_rotate", "hed_jitter"]
