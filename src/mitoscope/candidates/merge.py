"""Duplicate removal: centroid-distance and mask-overlap non-maximum suppression."""

from __future__ import annotations

import numpy as np

from ..types import Candidates, Detections
from ..units import validate_mpp

#: Diameter (um) of a circle of 225 um² (the largest candidate), bounding possible overlaps.
_MAX_DIAMETER_UM = 17.0


def merge_candidates(
    c: Candidates,
    *,
    mpp: float,
    radius_um: float = 4.0,
    iou_threshold: float = 0.5,
    groups: np.ndarray | None = None,
) -> Candidates:
    """Remove duplicate candidates, keeping the higher score (greedy NMS).

    Two candidates are duplicates when their centroids are within ``radius_um`` or, when both
    have masks, their masks overlap with an intersection-over-union above ``iou_threshold``.
    Candidates are visited from the highest score down; each kept candidate suppresses its
    duplicates. The result is ordered by decreasing score.

    Parameters
    ----------
    c : Candidates
        Positions in pixels of size ``mpp`` (level 0 for slide-level candidates).
    mpp : float
        Pixel size (um/px) of the coordinates of ``c``.
    radius_um : float
        Centroid distance (um) under which two candidates are one object.
    iou_threshold : float
        Mask IoU above which two candidates are one object (masks at ``c.mask_downsample``).
    groups : array, optional
        One id per candidate (e.g. its tile): only candidates of different groups can be
        duplicates (each group was de-duplicated already).

    Examples
    --------
    >>> import numpy as np
    >>> c = Candidates(x_px=[10, 12, 80], y_px=[10, 10, 80], bbox=np.zeros((3, 4)),
    ...                area_um2=[20, 20, 20], score=[0.5, 0.9, 0.1])
    >>> [round(float(s), 2) for s in merge_candidates(c, mpp=0.25, radius_um=4.0).score]
    [0.9, 0.1]
    """
    keep = nms_indices(c, mpp=mpp, radius_um=radius_um, iou_threshold=iou_threshold, groups=groups)
    return c.filter(keep)


def nms_indices(
    c: Candidates,
    *,
    mpp: float,
    radius_um: float = 4.0,
    iou_threshold: float = 0.5,
    priority: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Indices kept by :func:`merge_candidates`, best first.

    ``priority`` (optional, one integer per candidate) ranks candidates before the score: a
    higher priority always wins over a higher score. ``groups`` (optional, one id per
    candidate, e.g. the tile) restricts suppression to pairs from *different* groups.
    """
    from scipy.spatial import cKDTree

    mpp = validate_mpp(mpp)
    n = len(c)
    score = c.score.astype(np.float64)
    if priority is None:
        order = np.argsort(-score, kind="stable")
    else:
        order = np.lexsort((-score, -np.asarray(priority, dtype=np.float64)))
    if n <= 1:
        return order
    pts = np.column_stack([c.x_px, c.y_px])
    radius_px = float(radius_um) / mpp
    use_masks = c.masks is not None and iou_threshold < 1.0
    search_px = max(radius_px, _MAX_DIAMETER_UM / mpp) if use_masks else radius_px
    tree = cKDTree(pts)
    pairs = tree.query_pairs(search_px, output_type="ndarray")
    if len(pairs):
        i, j = pairs[:, 0], pairs[:, 1]
        d = np.hypot(*(pts[i] - pts[j]).T)
        dup = d <= radius_px
        if groups is not None:
            g = np.asarray(groups)
            cross = g[i] != g[j]
            dup &= cross
        if use_masks:
            todo = ~dup if groups is None else ~dup & cross
            dup[todo] = _mask_iou_over(c, i[todo], j[todo], iou_threshold)
        pairs = pairs[dup]
    if not len(pairs):
        return order
    # adjacency lists (CSR) of duplicate pairs
    a = np.concatenate([pairs[:, 0], pairs[:, 1]])
    b = np.concatenate([pairs[:, 1], pairs[:, 0]])
    srt = np.argsort(a, kind="stable")
    a, b = a[srt], b[srt]
    starts = np.searchsorted(a, np.arange(n + 1))
    suppressed = np.zeros(n, dtype=bool)
    has_dup = np.diff(starts) > 0
    keep = []
    for k in order:
        if suppressed[k]:
            continue
        keep.append(k)
        if has_dup[k]:
            suppressed[b[starts[k] : starts[k + 1]]] = True
    return np.asarray(keep, dtype=np.int64)


def _mask_iou_over(c: Candidates, i: np.ndarray, j: np.ndarray, thr: float) -> np.ndarray:
    """Whether the masks of pairs ``(i, j)`` overlap with IoU > ``thr``."""
    out = np.zeros(len(i), dtype=bool)
    masks = c.masks
    assert masks is not None
    bb = c.bbox
    ix = np.minimum(bb[i, 2], bb[j, 2]) - np.maximum(bb[i, 0], bb[j, 0])
    iy = np.minimum(bb[i, 3], bb[j, 3]) - np.maximum(bb[i, 1], bb[j, 1])
    inter_box = (np.clip(ix, 0, None) * np.clip(iy, 0, None)).astype(np.float64)
    cand = np.flatnonzero(inter_box > 0)
    if not len(cand):
        return out
    # IoU <= intersection / larger mask <= box intersection / larger mask (level-0 px)
    ds = float(c.mask_downsample) or 1.0
    sizes = np.array([np.count_nonzero(m) for m in masks], dtype=np.float64) * ds * ds
    bound = inter_box[cand] / np.maximum(np.maximum(sizes[i[cand]], sizes[j[cand]]), 1.0)
    cand = cand[bound > thr]
    for k in cand:
        p, q = int(i[k]), int(j[k])
        out[k] = _iou(masks[p], bb[p], masks[q], bb[q], ds) > thr
    return out


def _iou(ma: np.ndarray, ba: np.ndarray, mb: np.ndarray, bb: np.ndarray, ds: float) -> float:
    """IoU of two bbox-cropped masks at the same resolution (``ds`` level-0 px per pixel)."""
    oy = int(round((bb[1] - ba[1]) / ds))
    ox = int(round((bb[0] - ba[0]) / ds))
    ha, wa = ma.shape
    hb, wb = mb.shape
    y0, y1 = max(0, oy), min(ha, oy + hb)
    x0, x1 = max(0, ox), min(wa, ox + wb)
    if y1 <= y0 or x1 <= x0:
        return 0.0
    inter = np.count_nonzero(ma[y0:y1, x0:x1] & mb[y0 - oy : y1 - oy, x0 - ox : x1 - ox])
    union = np.count_nonzero(ma) + np.count_nonzero(mb) - inter
    return inter / union if union else 0.0


def merge_detections(dets: Detections, *, mpp: float, radius_um: float) -> Detections:
    """Remove duplicate detections (centroids within ``radius_um``), keeping the higher MF
    probability; the kept rows stay in their input order."""
    if len(dets) <= 1:
        return dets
    c = Candidates(
        x_px=dets.x_px,
        y_px=dets.y_px,
        bbox=np.zeros((len(dets), 4)),
        area_um2=dets.area_um2,
        score=dets.mf_probability,
    )
    keep = nms_indices(c, mpp=mpp, radius_um=radius_um, iou_threshold=1.0)
    return dets.filter(np.sort(keep))
