"""Patch extraction: square crops centred on candidates, with their binary masks.

Patches that reach over the image border are filled by reflection (``numpy.pad`` mode
``reflect``), so a candidate near a tile edge still sees plausible tissue; images too small to
reflect are padded with white (glass).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..types import Candidates


def _pad_image(image: np.ndarray, pad: int) -> np.ndarray:
    h, w = image.shape[:2]
    if pad <= 0:
        return image
    if pad < h and pad < w:
        return np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    return np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="constant", constant_values=255)


def extract_patches(
    image: np.ndarray,
    x_px: np.ndarray,
    y_px: np.ndarray,
    size_px: int,
    *,
    candidates: Candidates | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Cut ``size_px`` x ``size_px`` patches centred on the given points.

    Parameters
    ----------
    image : (H, W, 3) uint8
        RGB image; points are in its pixel coordinates.
    x_px, y_px : (N,) array
        Patch centres. The patch covers ``[round(x) - size_px // 2, ... + size_px)``.
    size_px : int
        Side of the square patch.
    candidates : Candidates, optional
        If given (and it has masks), the ``i``-th candidate's mask (cropped to its ``bbox``) is
        pasted into the ``i``-th mask patch; it must have the same length as ``x_px``.

    Returns
    -------
    patches : (N, size_px, size_px, 3) uint8
    masks : (N, size_px, size_px) bool or None
        ``None`` when no candidate masks were given.

    Examples
    --------
    >>> img = np.zeros((10, 10, 3), np.uint8)
    >>> p, m = extract_patches(img, np.array([5.0]), np.array([5.0]), 4)
    >>> p.shape, m
    ((1, 4, 4, 3), None)
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[-1] < 3:
        raise InvalidInputError(f"expected an (H, W, 3) RGB image, got shape {img.shape}")
    img = img[..., :3]
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    size = int(size_px)
    if size < 1:
        raise InvalidInputError(f"size_px must be positive, got {size_px}")
    xs = np.asarray(x_px, dtype=np.float64).reshape(-1)
    ys = np.asarray(y_px, dtype=np.float64).reshape(-1)
    if len(xs) != len(ys):
        raise InvalidInputError(f"x_px and y_px differ in length ({len(xs)} vs {len(ys)})")
    n = len(xs)
    half = size // 2
    pad = size + 1
    padded = _pad_image(img, pad)
    x0 = np.round(xs).astype(np.int64) - half
    y0 = np.round(ys).astype(np.int64) - half
    h, w = img.shape[:2]
    x0 = np.clip(x0, -pad, w + pad - size)
    y0 = np.clip(y0, -pad, h + pad - size)
    patches = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        patches[i] = padded[y0[i] + pad : y0[i] + pad + size, x0[i] + pad : x0[i] + pad + size]
    masks = None
    if candidates is not None and candidates.masks is not None:
        if len(candidates) != n:
            raise InvalidInputError(
                f"candidates has {len(candidates)} rows but {n} patch centres were given"
            )
        masks = np.zeros((n, size, size), dtype=bool)
        for i in range(n):
            m = mask_at_bbox(candidates.masks[i], candidates.bbox[i])
            bx0 = int(candidates.bbox[i, 0]) - int(x0[i])
            by0 = int(candidates.bbox[i, 1]) - int(y0[i])
            paste_mask(masks[i], m, bx0, by0)
    return patches, masks


def mask_at_bbox(mask: np.ndarray, bbox: np.ndarray) -> np.ndarray:
    """A candidate's mask at its ``bbox``'s pixel size (nearest neighbour).

    Masks kept at a coarser pixel size than their bounding box (``Candidates.mask_downsample``
    > 1, e.g. proposed on a downsampled tile) are resized here, only when a patch needs them:
    each bbox pixel takes the mask pixel its centre falls in.
    """
    m = np.asarray(mask, dtype=bool)
    bw = max(1, int(bbox[2] - bbox[0]))
    bh = max(1, int(bbox[3] - bbox[1]))
    if m.shape == (bh, bw) or m.size == 0:
        return m if m.size else np.zeros((bh, bw), bool)
    ys = np.minimum(((np.arange(bh) + 0.5) * (m.shape[0] / bh)).astype(np.int64), m.shape[0] - 1)
    xs = np.minimum(((np.arange(bw) + 0.5) * (m.shape[1] / bw)).astype(np.int64), m.shape[1] - 1)
    return m[ys[:, None], xs[None, :]]


def paste_mask(target: np.ndarray, mask: np.ndarray, x0: int, y0: int) -> None:
    """OR ``mask`` into ``target`` with its top-left corner at ``(x0, y0)`` (clipped)."""
    th, tw = target.shape
    mh, mw = mask.shape
    tx0, ty0 = max(x0, 0), max(y0, 0)
    tx1, ty1 = min(x0 + mw, tw), min(y0 + mh, th)
    if tx1 <= tx0 or ty1 <= ty0:
        return
    target[ty0:ty1, tx0:tx1] |= mask[ty0 - y0 : ty1 - y0, tx0 - x0 : tx1 - x0]


def disc_mask(size_px: int, radius_px: float) -> np.ndarray:
    """A centred disc: the fallback mask when no proposer object covers a labelled point."""
    yy, xx = np.mgrid[0:size_px, 0:size_px]
    c = (size_px - 1) / 2.0
    return (yy - c) ** 2 + (xx - c) ** 2 <= radius_px**2


def centre_crop(arr: np.ndarray, size_px: int, *, axes: tuple[int, int] = (1, 2)) -> np.ndarray:
    """Centre-crop the two spatial ``axes`` of ``arr`` to ``size_px`` (no-op if equal)."""
    h, w = arr.shape[axes[0]], arr.shape[axes[1]]
    if h < size_px or w < size_px:
        raise InvalidInputError(
            f"patches are {h}x{w} px but the model needs {size_px}x{size_px} px; "
            "extract larger patches"
        )
    y0, x0 = (h - size_px) // 2, (w - size_px) // 2
    sl = [slice(None)] * arr.ndim
    sl[axes[0]] = slice(y0, y0 + size_px)
    sl[axes[1]] = slice(x0, x0 + size_px)
    return arr[tuple(sl)]


def rgb_patches(patches: Any) -> np.ndarray:
    """``patches`` as an ``(N, H, W, 3)`` array (the input every patch classifier takes)."""
    arr = np.asarray(patches)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise InvalidInputError(f"patches must be (N, H, W, 3) RGB, got shape {arr.shape}")
    return arr


def predict_candidates(
    model: Any,
    image: np.ndarray,
    candidates: Candidates,
    size_px: int,
    *,
    batch_size: int = 256,
    atypical_min_mf: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``size_px`` patches (with masks when ``model.uses_mask``) at every candidate of an
    image (candidates in image px) and score them with ``model.predict_patches``: the one
    candidate-scoring path of the classifier and of a classifier with a dedicated atypical model."""
    if len(candidates) == 0:
        return np.zeros(0), np.zeros(0)
    patches, masks = extract_patches(
        image,
        candidates.x_px,
        candidates.y_px,
        size_px,
        candidates=candidates if model.uses_mask else None,
    )
    return model.predict_patches(
        patches, masks, batch_size=batch_size, atypical_min_mf=atypical_min_mf
    )


class CandidateScoring:
    """``predict_candidates`` for a patch classifier: :func:`predict_candidates` with patches of
    its ``cut_size_px`` (shared by the classifier and the classifier with a dedicated atypical
    model)."""

    #: side of the patch cut per candidate (px at ``input_mpp``), given by the class
    cut_size_px: int

    def predict_candidates(
        self,
        image: np.ndarray,
        candidates: Candidates,
        *,
        batch_size: int = 256,
        atypical_min_mf: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score every candidate of an image at :attr:`input_mpp` (candidates in image px)."""
        return predict_candidates(
            self,
            image,
            candidates,
            self.cut_size_px,
            batch_size=batch_size,
            atypical_min_mf=atypical_min_mf,
        )
