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
    from .hed import HED_FROM_RGB, OD_LUT, RGB_FROM_HED

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
    od = OD_LUT[batch]
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


#: the domain augmentations :func:`domain_augment` knows (each applied with probability ``p``)
DOMAIN_AUGMENTATIONS = ("scale", "blur", "jpeg", "color")


def domain_augment(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    ops: tuple[str, ...] | list[str] = DOMAIN_AUGMENTATIONS,
    p: float = 0.5,
    mpp: float = 0.25,
    rng: np.random.Generator | int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Imitate other scanners, resolutions, preparations and stains on one patch.

    Each op in ``ops`` is applied with probability ``p``:

    - ``"scale"``: the scan's true pixel size drawn log-uniformly in [0.23, 0.5] um/px: the patch
      is reduced to that resolution and read back at ``mpp`` (as a 20x slide is read at 40x),
      plus a +-10 % zoom (scanners' pixel-size metadata differ); the mask is zoomed with it.
    - ``"blur"``: Gaussian blur, sigma up to 1.5 px (focus, frozen sections).
    - ``"jpeg"``: JPEG compression at quality 30-90 (scanners' tile codecs).
    - ``"color"``: brightness, contrast and saturation x[0.75, 1.25], hue shift +-0.04 turns
      (other stains and scanners' colour profiles).

    Parameters
    ----------
    image : (H, W, 3) uint8
    mask : (H, W) bool, optional
        Candidate mask, transformed with the geometry.
    mpp : float
        Pixel size of ``image`` (um/px).

    Returns
    -------
    (image, mask)
    """
    import io

    from PIL import Image, ImageEnhance, ImageFilter

    unknown = sorted(set(ops) - set(DOMAIN_AUGMENTATIONS))
    if unknown:
        raise InvalidInputError(
            f"unknown augmentation(s) {', '.join(unknown)}; known: {', '.join(DOMAIN_AUGMENTATIONS)}"
        )
    gen = np.random.default_rng(rng)
    arr = np.asarray(image)
    h, w = arr.shape[:2]
    im = Image.fromarray(arr)
    msk = mask
    if "scale" in ops and gen.random() < p:
        zoom = float(np.exp(gen.uniform(np.log(0.9), np.log(1.1))))
        if abs(zoom - 1) > 1e-3:
            zw, zh = max(1, round(w * zoom)), max(1, round(h * zoom))
            big = im.resize((zw, zh), Image.BILINEAR)
            x0, y0 = (zw - w) // 2, (zh - h) // 2
            if zoom >= 1:
                im = big.crop((x0, y0, x0 + w, y0 + h))
            else:  # smaller: reflect-pad back to the patch size
                a = np.asarray(big)
                py, px = h - zh, w - zw
                a = np.pad(
                    a, ((py // 2, py - py // 2), (px // 2, px - px // 2), (0, 0)), mode="reflect"
                )
                im = Image.fromarray(a)
            if msk is not None:
                mm = Image.fromarray(np.asarray(msk, dtype=np.uint8) * 255).resize(
                    (zw, zh), Image.NEAREST
                )
                if zoom >= 1:
                    msk = np.asarray(mm.crop((x0, y0, x0 + w, y0 + h))) > 127
                else:
                    b = np.asarray(mm) > 127
                    py, px = h - zh, w - zw
                    msk = np.pad(b, ((py // 2, py - py // 2), (px // 2, px - px // 2)))
        true_mpp = float(np.exp(gen.uniform(np.log(0.23), np.log(0.5))))
        f = mpp / true_mpp
        if f < 0.95:
            small = im.resize((max(1, round(w * f)), max(1, round(h * f))), Image.BILINEAR)
            im = small.resize((w, h), Image.BILINEAR)
    if "blur" in ops and gen.random() < p:
        im = im.filter(ImageFilter.GaussianBlur(radius=float(gen.uniform(0.3, 1.5))))
    if "color" in ops and gen.random() < p:
        for enh in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            im = enh(im).enhance(float(gen.uniform(0.75, 1.25)))
        hsv = np.asarray(im.convert("HSV")).copy()
        hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(gen.uniform(-0.04, 0.04) * 255)) % 256
        im = Image.fromarray(hsv, "HSV").convert("RGB")
    if "jpeg" in ops and gen.random() < p:
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=int(gen.integers(30, 91)))
        buf.seek(0)
        with Image.open(buf) as j:
            im = j.convert("RGB")
    out = np.asarray(im, dtype=np.uint8)
    if msk is not None:
        msk = np.asarray(msk, dtype=bool)
    return out, msk


__all__ = ["DOMAIN_AUGMENTATIONS", "SKIMAGE_TO_OD", "domain_augment", "flip_rotate", "hed_jitter"]
