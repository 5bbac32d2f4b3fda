"""Tissue detection on a thumbnail.

Method (documented in ``docs/tissue.md``):

1. Read a thumbnail at about ``thumb_mpp`` um/px (default 8 um/px; never finer than level 0).
2. Per pixel, compute HSV saturation and value. Background glass is bright and unsaturated;
   stained tissue is saturated. Threshold saturation with Otsu's method, bounded to
   ``[0.05, 0.25]`` so that an all-tissue or all-glass thumbnail does not get an absurd threshold.
3. Remove artefacts: very dark pixels (value < 0.12: folds, dirt, scanner black borders) and pen
   marks (saturated green/blue hues, 0.2-0.66 in HSV, which H&E does not produce: eosin is pink,
   haematoxylin purple).
4. Morphological closing over ~``close_um``, filling of holes smaller than ``max_hole_um2``
   (larger lumina and tears stay background), and removal of components smaller than
   ``min_area_um2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .reader import SlideReader


@dataclass(frozen=True)
class TissueMask:
    """A boolean tissue mask over the slide at ``downsample`` (level-0 px per mask px)."""

    mask: np.ndarray
    downsample: float
    mpp: float  # um per mask pixel

    @property
    def area_mm2(self) -> float:
        return float(self.mask.sum()) * (self.mpp / 1000.0) ** 2

    def fraction_in(self, x0: float, y0: float, x1: float, y1: float) -> float:
        """Share of tissue pixels in a level-0 rectangle."""
        h, w = self.mask.shape
        i0 = int(np.clip(np.floor(y0 / self.downsample), 0, h))
        i1 = int(np.clip(np.ceil(y1 / self.downsample), 0, h))
        j0 = int(np.clip(np.floor(x0 / self.downsample), 0, w))
        j1 = int(np.clip(np.ceil(x1 / self.downsample), 0, w))
        if i1 <= i0 or j1 <= j0:
            return 0.0
        return float(self.mask[i0:i1, j0:j1].mean())

    def contains(self, x_px: np.ndarray, y_px: np.ndarray) -> np.ndarray:
        """Whether level-0 points lie on tissue."""
        h, w = self.mask.shape
        i = np.clip((np.asarray(y_px) / self.downsample).astype(np.int64), 0, h - 1)
        j = np.clip((np.asarray(x_px) / self.downsample).astype(np.int64), 0, w - 1)
        return self.mask[i, j]


def tissue_mask_from_rgb(
    rgb: np.ndarray,
    *,
    mpp: float,
    min_area_um2: float = 2000.0,
    close_um: float = 40.0,
    max_hole_um2: float = 20000.0,
) -> np.ndarray:
    """Boolean tissue mask of an RGB image with pixel size ``mpp`` (um/px)."""
    from scipy import ndimage as ndi
    from skimage.color import rgb2hsv
    from skimage.filters import threshold_otsu
    from skimage.morphology import disk

    if rgb.size == 0:
        return np.zeros(rgb.shape[:2], dtype=bool)
    hsv = rgb2hsv(rgb[..., :3])
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    # background ("glass") is bright and grey; exclude pure white/black padding
    try:
        t = float(threshold_otsu(sat)) if np.ptp(sat) > 1e-3 else 0.1
    except ValueError:
        t = 0.1
    t = float(np.clip(t, 0.05, 0.25))
    tissue = sat > t
    tissue &= val > 0.12  # dark artefacts
    pen = (hue > 0.2) & (hue < 0.66) & (sat > 0.3)
    tissue &= ~pen
    r = max(1, int(round(close_um / mpp / 2)))
    if min(tissue.shape) > 2 * r:
        tissue = ndi.binary_closing(tissue, structure=disk(r), border_value=0) | tissue
    tissue = _fill_small_holes(tissue, max(1, int(max_hole_um2 / (mpp * mpp))))
    min_px = max(1, int(min_area_um2 / (mpp * mpp)))
    tissue = _remove_small(tissue, min_px)
    return tissue.astype(bool)


def _fill_small_holes(mask: np.ndarray, max_px: int) -> np.ndarray:
    """Fill background holes smaller than ``max_px`` (lumina larger than that stay background)."""
    from scipy import ndimage as ndi

    holes = ndi.binary_fill_holes(mask) & ~mask
    lab, n = ndi.label(holes)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())
    small = sizes <= max_px
    small[0] = False
    return mask | small[lab]


def _remove_small(mask: np.ndarray, min_px: int) -> np.ndarray:
    from scipy import ndimage as ndi

    lab, n = ndi.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())
    keep = sizes >= min_px
    keep[0] = False
    return keep[lab]


def detect_tissue(
    reader: SlideReader, *, thumb_mpp: float = 8.0, max_size: int = 4096
) -> TissueMask:
    """Detect tissue on a thumbnail of ``reader`` (see module docstring for the method)."""
    info = reader.info
    target = max(thumb_mpp, info.mpp)
    longest = max(info.width, info.height)
    size = int(min(max_size, max(1, round(longest * info.mpp / target))))
    thumb = reader.get_thumbnail(size)
    ds = info.width / thumb.shape[1]
    mask_mpp = info.mpp * ds
    mask = tissue_mask_from_rgb(thumb, mpp=mask_mpp)
    return TissueMask(mask=mask, downsample=ds, mpp=mask_mpp)


#: the note of a region image no larger than one tile (counted as tissue everywhere)
WHOLE_REGION_NOTE = "region smaller than one tile: the whole image counts as tissue"


def tissue_for_detection(
    reader: SlideReader, *, tile_um: float, thumb_mpp: float = 8.0
) -> tuple[TissueMask, float, list[str]]:
    """The tissue detection runs over: mask, tissue area (mm²) and notes.

    Region images no larger than one tile (``tile_um``) count as tissue everywhere (a crop is
    chosen by a person; thumbnail-based tissue detection is meaningless at that size) unless
    they are blank (glass, black or one flat colour, :func:`is_blank`); larger images go through :func:`detect_tissue`.
    """
    import math

    info = reader.info
    thumb = reader.get_thumbnail(512)
    if is_greyscale(thumb):
        from ..errors import InvalidInputError

        raise InvalidInputError(
            f"{info.path.name} is a greyscale image; mitoscope needs colour (RGB) H&E"
        )
    w_um, h_um = info.width * info.mpp, info.height * info.mpp
    if w_um <= tile_um and h_um <= tile_um:
        ds = max(1.0, max(info.width, info.height) / 256.0)
        mw = max(1, int(math.ceil(info.width / ds)))
        mh = max(1, int(math.ceil(info.height / ds)))
        blank = is_blank(thumb)
        mask = np.full((mh, mw), not blank, dtype=bool)
        tissue = TissueMask(mask=mask, downsample=info.width / mw, mpp=info.mpp * info.width / mw)
        area = 0.0 if blank else info.area_mm2
        return tissue, area, [] if blank else [WHOLE_REGION_NOTE]
    tissue = detect_tissue(reader, thumb_mpp=thumb_mpp)
    return tissue, tissue.area_mm2, []


def is_greyscale(rgb: np.ndarray) -> bool:
    """Whether an image with content (not glass, not black) has no colour at all: under
    0.5 % of its non-white, non-black pixels differ by more than 8 levels between channels
    (H&E tissue is pink and purple)."""
    if rgb.ndim != 3 or rgb.shape[-1] < 3 or rgb.size == 0:
        return True
    px = rgb[..., :3].reshape(-1, 3).astype(np.int16)
    lo, hi = px.min(axis=1), px.max(axis=1)
    content = (lo < 220) & (hi > 30)
    if content.mean() < 0.005:
        return False  # glass or black: is_blank decides
    return float(((hi - lo)[content] > 8).mean()) < 0.005


def is_blank(rgb: np.ndarray) -> bool:
    """Whether an image holds no tissue: glass only (under 0.5 % of pixels stained or
    mid-dark), black (pixels darker than 0.12 in value are artefacts or padding, as in
    :func:`tissue_mask_from_rgb`), or one flat colour without any structure."""
    from skimage.color import rgb2hsv

    if rgb.size == 0:
        return True
    hsv = rgb2hsv(rgb[..., :3])
    val = hsv[..., 2]
    stained = ((hsv[..., 1] > 0.08) | (val < 0.7)) & (val >= 0.12)
    if float(stained.mean()) < 0.005:
        return True
    return float(np.std(val)) < 0.005 and float(np.std(hsv[..., 1])) < 0.005
