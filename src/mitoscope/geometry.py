"""Pixel maps and contours: the one place that maps pixel centres between grids.

A pixel index ``i`` of an image covers ``[i, i + 1)`` of its own grid; at ``scale`` grid units
per image pixel its centre lies at ``(i + 0.5) * scale - 0.5`` on the finer grid (level-0
pixels, a work-resolution tile, a mask's bounding box). Every conversion of a candidate, a
detection or a contour between tile images and level-0 pixels goes through
:func:`centre_to`; boxes (half-open ``x0, y0, x1, y1``) through :func:`scale_boxes`.
"""

from __future__ import annotations

import numpy as np


def centre_to(i: np.ndarray | float, scale: float, origin: float = 0.0) -> np.ndarray:
    """Pixel-centre coordinates ``i`` of a grid with ``scale`` target px per px, shifted by
    ``origin`` (the grid's origin in target px).

    Examples
    --------
    >>> centre_to(np.array([0.0, 1.0]), 2.0, 10.0).tolist()
    [10.5, 12.5]
    """
    return (np.asarray(i, dtype=np.float64) + 0.5) * scale - 0.5 + origin


def scale_boxes(bbox: np.ndarray, fx: float, fy: float) -> np.ndarray:
    """Half-open boxes ``(N, 4)`` of ``x0, y0, x1, y1`` on a grid ``fx``, ``fy`` times finer:
    starts floored, ends ceiled (the box still covers every pixel it touched), as float."""
    bb = np.asarray(bbox, dtype=np.float64).reshape(-1, 4)
    return np.column_stack(
        [np.floor(bb[:, 0] * fx), np.floor(bb[:, 1] * fy)]
        + [np.ceil(bb[:, 2] * fx), np.ceil(bb[:, 3] * fy)]
    )


def mask_contour(
    mask: np.ndarray | None,
    bbox: np.ndarray,
    *,
    scale: float,
    x0: float,
    y0: float,
    tolerance_px: float = 0.75,
) -> np.ndarray:
    """Outer contour of a bbox-cropped mask as a level-0 ``(K, 2)`` polygon of ``(x, y)``.

    ``scale`` is level-0 pixels per ``bbox`` pixel, ``(x0, y0)`` the level-0 origin of the
    image the ``bbox`` refers to. A mask coarser than its bbox (``Candidates.mask_downsample``
    > 1) is traced at its own pixel size (``tolerance_px`` is then in those pixels): it holds
    no more detail. A missing or empty mask gives the bounding box.
    """
    from skimage.measure import find_contours

    bx0, by0, bx1, by1 = (float(v) for v in bbox)
    ring = None
    if mask is not None and np.asarray(mask).any():
        m = np.asarray(mask)
        sy = max(by1 - by0, 1.0) / m.shape[0]  # bbox px per mask px
        sx = max(bx1 - bx0, 1.0) / m.shape[1]
        padded = np.pad(np.asarray(m, dtype=np.float32), 1)
        found = find_contours(padded, 0.5)
        if found:
            c = simplify_ring(max(found, key=len) - 1.0, tolerance_px)  # (row, col) in mask px
            if len(c) >= 4:
                ring = np.column_stack([centre_to(c[:, 1], sx, bx0), centre_to(c[:, 0], sy, by0)])
    if ring is None:
        ring = np.array(
            [[bx0, by0], [bx1 - 1, by0], [bx1 - 1, by1 - 1], [bx0, by1 - 1], [bx0, by0]],
            dtype=np.float64,
        )
    return np.column_stack([centre_to(ring[:, 0], scale, x0), centre_to(ring[:, 1], scale, y0)])


def simplify_ring(ring: np.ndarray, tolerance: float) -> np.ndarray:
    """Drop ring vertices closer than ``tolerance / 2`` to the line through their neighbours.

    One vectorised pass over the marching-squares staircase of a small nucleus mask: it removes
    the collinear points of straight and diagonal edges and keeps the ring closed.
    scikit-image's ``approximate_polygon`` (Douglas-Peucker) is a different rule (it measures
    vertices against chords, not neighbours) and would change every written contour, so this
    rule is kept.
    """
    if len(ring) <= 8 or tolerance <= 0:
        return ring
    closed = np.allclose(ring[0], ring[-1])
    pts = ring[:-1] if closed else ring
    prev = np.roll(pts, 1, axis=0)
    nxt = np.roll(pts, -1, axis=0)
    d = nxt - prev
    cross = np.abs((pts[:, 0] - prev[:, 0]) * d[:, 1] - (pts[:, 1] - prev[:, 1]) * d[:, 0])
    dist = cross / np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-9)
    keep = dist > tolerance * 0.5
    if keep.sum() < 4:
        return ring
    pts = pts[keep]
    return np.concatenate([pts, pts[:1]])


__all__ = ["centre_to", "mask_contour", "scale_boxes", "simplify_ring"]
