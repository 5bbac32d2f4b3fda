"""Inputs for classifying crops that are each centred on one object (``mitoscope classify``).

Each crop is resampled to the model's pixel size; when the model uses candidate masks, the
classical proposer segments the crop and the object nearest to the centre (within 4 um) gives
the mask — the same rule used to build the training samples (a 3 um disc when nothing is found).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError

MATCH_UM = 4.0
FALLBACK_RADIUS_UM = 3.0


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as ``uint8 (H, W, 3)`` or raise :class:`InvalidInputError`."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"image not found: {p}")
    try:
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidInputError(
            f"cannot read image {p}: {exc.__class__.__name__}; give a PNG/JPEG/TIFF crop"
        ) from None


def centred_input(
    image: np.ndarray, *, mpp: float, input_mpp: float, size_px: int, with_mask: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Resample a centred crop to ``input_mpp`` and cut the centred patch (+ object mask)."""
    from .patches import disc_mask, extract_patches, paste_mask

    img = np.asarray(image)[..., :3]
    scale = float(mpp) / float(input_mpp)
    if abs(scale - 1.0) > 1e-3:
        from skimage.transform import rescale

        img = rescale(
            img, scale, order=1, channel_axis=-1, preserve_range=True, anti_aliasing=scale < 1
        )
        img = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    h, w = img.shape[:2]
    cx, cy = w / 2.0, h / 2.0
    patch, _ = extract_patches(img, np.array([cx]), np.array([cy]), size_px)
    if not with_mask:
        return patch[0], None
    from ..candidates import get_proposer

    cands = get_proposer("classical").propose(img, mpp=float(input_mpp))
    mask = np.zeros((size_px, size_px), dtype=bool)
    if len(cands):
        d = np.hypot(cands.x_px - cx, cands.y_px - cy)
        k = int(np.argmin(d))
        if d[k] <= MATCH_UM / input_mpp:
            b = cands.bbox[k]
            half = size_px // 2
            paste_mask(
                mask,
                cands.masks[k],
                int(b[0]) - (int(round(cx)) - half),
                int(b[1]) - (int(round(cy)) - half),
            )
            return patch[0], mask
    return patch[0], disc_mask(size_px, FALLBACK_RADIUS_UM / input_mpp)


def crop_inputs(
    paths: Sequence[str | Path], classifier: Any, *, mpp: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Patches ``(N, S, S, 3)`` and masks ``(N, S, S)`` for crop files, ready for the classifier."""
    from ..units import validate_mpp

    if not paths:
        raise InvalidInputError("give at least one image")
    crop_mpp = classifier.input_mpp if mpp is None else validate_mpp(mpp, name="--mpp")
    patches, masks = [], []
    for p in paths:
        patch, mask = centred_input(
            read_rgb(p),
            mpp=crop_mpp,
            input_mpp=classifier.input_mpp,
            size_px=classifier.patch_size_px,
            with_mask=classifier.uses_mask,
        )
        patches.append(patch)
        masks.append(mask if mask is not None else np.zeros(patch.shape[:2], dtype=bool))
    return np.stack(patches), np.stack(masks)
