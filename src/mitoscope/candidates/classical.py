"""The weight-free classical proposer: haematoxylin threshold + watershed + a darkness path.

Method (all sizes in micrometres, converted with the tile's pixel size):

1. **Colour deconvolution** (Ruifrok-Johnston, :mod:`mitoscope.stain.hed`): haematoxylin
   concentration ``H`` and mean optical density ``OD`` (darkness) per pixel, both Gaussian-smoothed
   over ``smooth_um``.
2. **Nuclei path.** Foreground ``H > t`` with ``t`` = Otsu's threshold of ``H`` over tissue
   pixels (``OD > background_od``; near-black pixels with every channel below ``void_max_rgb``,
   i.e. scanner borders and padding, count as empty), clipped to ``h_threshold_bounds`` so an all-glass or
   all-dark tile cannot produce an absurd threshold. Holes are filled; components larger than
   ``max_component_um2`` (folds, dark debris, a black tile) are dropped. Touching nuclei are
   split by a marker watershed on the distance transform (markers: distance maxima at least
   ``split_distance_um`` apart and ``split_min_radius_um`` deep).
3. **Darkness path** (recall on mitotic figures): condensed chromatin is the darkest thing in
   H&E. Components of ``OD > d`` for each level ``d`` in ``dark_levels`` (absolute OD, plus one
   level relative to the tile's nuclei, ``t_rel = quantile(OD in nuclei, dark_quantile)``) are
   added as candidates too, so a small dark clump merged into a larger blob is never lost.
4. **Filtering and merging**: area 2.25-225 um² (OMG-Net), then centroid / mask NMS
   (:func:`~mitoscope.candidates.merge.nms_indices`, ``merge_radius_um``): a nuclei-path object
   wins over the dark-path objects it duplicates (the whole nucleus is the better mask), then
   darker levels in order.

``score`` is the candidate's mean optical density (darkness, 0 to 2.4): mitotic figures score
high, pale nuclei and stroma low.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..types import Candidates
from ..units import validate_mpp
from .base import MAX_AREA_UM2, MIN_AREA_UM2, check_image, objects_from_labels
from .merge import nms_indices


@dataclass(frozen=True)
class ClassicalConfig:
    """Options of :class:`ClassicalProposer` (sizes in um, densities in decadic OD)."""

    min_area_um2: float = MIN_AREA_UM2
    max_area_um2: float = MAX_AREA_UM2
    smooth_um: float = 0.4
    background_od: float = 0.06
    void_max_rgb: int = 8
    h_threshold_bounds: tuple[float, float] = (0.2, 0.6)
    max_component_um2: float = 3000.0
    split_distance_um: float = 4.0
    split_min_radius_um: float = 0.8
    dark_levels: tuple[float, ...] = (0.55, 0.75)
    dark_quantile: float | None = 0.9
    merge_radius_um: float = 2.5
    merge_iou: float = 0.5


class ClassicalProposer:
    """Nucleus-sized objects from the haematoxylin channel (no weights, CPU, fast).

    Parameters
    ----------
    config : ClassicalConfig, optional
    **overrides
        Fields of :class:`ClassicalConfig` to change, e.g. ``dark_levels=(0.5,)``.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.full((64, 64, 3), 240, dtype=np.uint8)
    >>> img[20:30, 20:30] = (60, 30, 90)
    >>> c = ClassicalProposer().propose(img, mpp=0.25)
    >>> len(c), 5.0 < float(c.area_um2[0]) < 6.5  # 10 x 10 px at 0.25 um/px = 6.25 um²
    (1, True)
    """

    name = "classical"

    def __init__(self, config: ClassicalConfig | None = None, **overrides: object) -> None:
        cfg = config or ClassicalConfig()
        self.config = replace(cfg, **overrides) if overrides else cfg

    def __repr__(self) -> str:
        return f"ClassicalProposer({self.config})"

    def propose(self, image: np.ndarray, *, mpp: float) -> Candidates:
        """Candidates of one RGB tile at pixel size ``mpp`` (um/px), in image pixels."""
        from scipy import ndimage as ndi

        from ..stain.hed import HED_FROM_RGB, rgb_to_od

        mpp = validate_mpp(mpp)
        cfg = self.config
        rgb = check_image(image)
        if rgb.shape[0] < 2 or rgb.shape[1] < 2:
            return Candidates.empty(self.name)
        od3 = rgb_to_od(rgb)
        # one BLAS pass for both: haematoxylin (deconvolution column) and the mean OD
        w = np.stack([HED_FROM_RGB[:, 0], np.full(3, 1.0 / 3.0)], axis=1).astype(np.float32)
        ho = od3 @ w
        del od3
        h = np.maximum(ho[..., 0], 0.0)
        od = np.ascontiguousarray(ho[..., 1])
        del ho
        # near-black pixels (scanner borders, padding, ink) are not stain: no nucleus there
        void = np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2]) < cfg.void_max_rgb
        if void.any():
            h[void] = 0.0
            od[void] = 0.0
        sigma = cfg.smooth_um / mpp
        if sigma >= 0.3:
            h = ndi.gaussian_filter(h, sigma, mode="nearest")
            od = ndi.gaussian_filter(od, sigma, mode="nearest")

        parts = []
        # -- nuclei path ------------------------------------------------------------------
        tissue = od > cfg.background_od
        t_h = _bounded_otsu(h, tissue, cfg.h_threshold_bounds)
        fg = h > t_h
        fg = _fill_holes(fg)
        labels = _split(fg, mpp=mpp, cfg=cfg)
        parts.append(
            objects_from_labels(
                labels,
                mpp=mpp,
                score_image=od,
                min_area_um2=cfg.min_area_um2,
                max_area_um2=cfg.max_area_um2,
                proposer=self.name,
            )
        )
        # -- darkness path ----------------------------------------------------------------
        levels = list(cfg.dark_levels)
        if cfg.dark_quantile is not None and fg.any() and levels:
            # a level relative to this tile's nuclei helps faint scans; above the absolute
            # levels it would only cut uniformly dark regions (folds, ink) into noise blobs
            rel = float(np.quantile(od[fg], cfg.dark_quantile))
            if rel < max(levels):
                levels.append(rel)
        for d in sorted(set(round(v, 3) for v in levels if v > cfg.background_od)):
            dark = _fill_holes(od > d)
            lab, n = ndi.label(dark)
            if n == 0:
                continue
            parts.append(
                objects_from_labels(
                    lab,
                    mpp=mpp,
                    score_image=od,
                    min_area_um2=cfg.min_area_um2,
                    max_area_um2=cfg.max_area_um2,
                    proposer=self.name,
                )
            )
        cands = Candidates.cat(parts)
        cands.proposer = self.name
        if len(cands) == 0:
            return Candidates.empty(self.name)
        # nuclei-path objects (whole nuclei) win over the dark cores found inside them
        priority = np.concatenate([np.full(len(p), -k) for k, p in enumerate(parts)])
        keep = nms_indices(
            cands,
            mpp=mpp,
            radius_um=cfg.merge_radius_um,
            iou_threshold=cfg.merge_iou,
            priority=priority,
        )
        return cands.filter(keep)


def _bounded_otsu(values: np.ndarray, where: np.ndarray, bounds: tuple[float, float]) -> float:
    """Otsu's threshold of ``values[where]`` clipped to ``bounds`` (upper bound if undefined)."""
    from skimage.filters import threshold_otsu

    lo, hi = bounds
    v = values[where]
    if v.size > 200_000:  # a regular subsample is enough for a histogram threshold
        v = v[:: v.size // 200_000 + 1]
    if v.size < 16 or float(np.ptp(v)) < 1e-3:
        return float(hi)
    return float(np.clip(threshold_otsu(v), lo, hi))


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions not connected to the image border (faster than scipy's)."""
    from scipy import ndimage as ndi

    bg, n = ndi.label(~mask)
    if n <= 1:
        return mask if n == 1 and _touches_border(bg, 1) else np.ones_like(mask)
    border = np.zeros(n + 1, dtype=bool)
    for edge in (bg[0], bg[-1], bg[:, 0], bg[:, -1]):
        border[edge] = True
    border[0] = True  # the mask itself
    return ~border[bg] | mask


def _touches_border(lab: np.ndarray, k: int) -> bool:
    return bool(
        (lab[0] == k).any()
        or (lab[-1] == k).any()
        or (lab[:, 0] == k).any()
        or (lab[:, -1] == k).any()
    )


def _split(fg: np.ndarray, *, mpp: float, cfg: ClassicalConfig) -> np.ndarray:
    """Label image of ``fg`` with touching nuclei split by a distance-transform watershed."""
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    lab, n = ndi.label(fg)
    if n == 0:
        return lab
    sizes = np.bincount(lab.ravel(), minlength=n + 1).astype(np.float64) * mpp * mpp
    small_enough = sizes <= cfg.max_component_um2
    small_enough[0] = False
    fg = small_enough[lab]
    dist = ndi.distance_transform_edt(fg).astype(np.float32)
    dist = ndi.gaussian_filter(dist, 1.0)
    size = max(3, int(round(cfg.split_distance_um / mpp)) | 1)
    peaks = (dist == ndi.maximum_filter(dist, size=size)) & (dist >= cfg.split_min_radius_um / mpp)
    peaks &= fg
    markers, m = ndi.label(peaks)
    if m == 0:
        return lab * fg
    # only components holding two or more markers need a watershed
    owner = np.zeros(m + 1, dtype=np.int64)
    owner[markers[peaks]] = lab[peaks]  # the component each marker lies in
    multi = np.bincount(owner[1:], minlength=n + 1) >= 2
    multi[0] = False
    out = np.where(fg, lab + m, 0)
    if multi.any():
        region = multi[lab]
        markers[~region] = 0
        ws = watershed(-dist, markers, mask=region)
        out[region] = ws[region]
    return out
