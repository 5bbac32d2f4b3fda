"""Mitotic count: the hotspot field, counts per mm² of tissue, atypical ratio, density map.

The **hotspot** is the circular field of a given area (2 mm², Fick et al. / CAP; or 10 HPF =
2.37 mm², the SlideRunner convention) that holds the most mitoses. It is found exactly:
for a disk of radius ``r`` covering a set of points, the disk can always be moved, without
losing a point, until either its centre sits on a point (it covers one point or only points that
stay covered) or two points lie on its boundary. So the maximum over the finitely many centres

- each point itself, and
- for each pair of points closer than ``2r``, the two centres of the circles of radius ``r``
  through both points,

equals the maximum over *all* placements. Circles through two points are counted by an angular
sweep around each pivot point (all circles through the pivot at once, ``O(k log k)`` for ``k``
neighbours within ``2r``); pivots are visited from the most to the least crowded and skipped
once their neighbourhood cannot beat the best count, so dense slides stay fast.
Restricted to tissue (the centre must lie on the tissue mask), the best cell of the disk
arrangement may touch tissue only away from its vertices; then it contains a point of the tissue
boundary, so the boundary pixels of the mask (and one pixel per tissue component) are added as
candidate centres: the restricted maximum is exact up to the mask's pixel size.

About 400 lines: the exact hotspot search (with its proof above) is most of it; counts per
mm², the atypical ratio and the density map are short.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .types import Hotspot
from .units import circle_radius_um, validate_mpp

if TYPE_CHECKING:
    from .slide.tissue import TissueMask

#: The hotspot area of Fick et al. and the CAP guideline (mm²).
HOTSPOT_AREA_MM2 = 2.0
#: 10 high-power fields as SlideRunner counts them (mm²).
HPF10_AREA_MM2 = 2.37

_EPS_REL = 1e-9
_CHUNK = 200_000


def hotspot(
    x_px: np.ndarray,
    y_px: np.ndarray,
    *,
    mpp: float,
    area_mm2: float = HOTSPOT_AREA_MM2,
    tissue: TissueMask | None = None,
    extent_px: tuple[float, float] | None = None,
    candidates_only: bool = False,
) -> Hotspot:
    """The circular field of ``area_mm2`` holding the most points (mitoses).

    Parameters
    ----------
    x_px, y_px : array-like
        Level-0 pixel positions of the mitoses.
    mpp : float
        Level-0 pixel size (um/px).
    area_mm2 : float
        Field area; the radius is ``sqrt(area / pi)`` (2 mm² -> 797.9 um).
    tissue : TissueMask, optional
        Restrict the field centre to tissue.
    extent_px : (width, height), optional
        Size of the slide or region in level-0 pixels; used to say whether the field fits
        (``field_fits=False`` with a note when the region is smaller than the field).
    candidates_only : bool
        Only use the exact arrangement centres (skip the tissue-boundary candidates).

    Returns
    -------
    Hotspot
        ``count``, ``center_px`` (level 0), ``radius_um``, ``area_mm2``, ``field_fits``, ``note``.

    Examples
    --------
    >>> import numpy as np
    >>> h = hotspot(np.array([0.0, 100.0, 10000.0]), np.array([0.0, 0.0, 0.0]), mpp=0.25)
    >>> h.count, round(h.radius_um, 1)
    (2, 797.9)
    """
    from scipy.spatial import cKDTree

    mpp = validate_mpp(mpp)
    radius_um = circle_radius_um(area_mm2)
    r = radius_um / mpp
    pts = np.column_stack(
        [np.asarray(x_px, dtype=np.float64).ravel(), np.asarray(y_px, dtype=np.float64).ravel()]
    )
    fits, note = _field_fits(radius_um, area_mm2, mpp=mpp, tissue=tissue, extent_px=extent_px)

    if len(pts) == 0:
        centre = _default_centre(tissue, extent_px)
        return Hotspot(0, centre, radius_um, float(area_mm2), fits, note)

    tree = cKDTree(pts)
    allowed = None if tissue is None else _on_tissue(tissue)
    # circles centred on the points (the one-point case, and cheap lower bounds)
    own = _count(tree, pts, r)
    ok = np.ones(len(pts), bool) if allowed is None else allowed(pts[:, 0], pts[:, 1])
    best_free = int(own.max())
    best, centre = (
        (int(own[ok].max()), pts[ok][int(np.argmax(own[ok]))]) if ok.any() else (-1, None)
    )
    # circles with two points on the boundary: angular sweep around each pivot point. Many
    # points: first bound the count over a grid of cells (refined where it could beat the best
    # field found so far); only points near cells that could hold a better field are pivots.
    degree = _count(tree, pts, 2.0 * r)
    bound = degree
    if len(pts) > _GRID_MIN_POINTS:
        best, centre, bound = _grid_prune(tree, pts, r, allowed, best, centre)
        bound = np.minimum(bound, degree)
    for i in np.argsort(-bound, kind="stable"):
        if bound[i] <= max(best, 1):
            break  # no circle through this pivot (or any later one) can hold more
        cnt, cen = _pivot_sweep(tree, pts, int(i), r)
        if not len(cnt):
            continue
        best_free = max(best_free, int(cnt.max()))
        ok = np.ones(len(cnt), bool) if allowed is None else allowed(cen[:, 0], cen[:, 1])
        if ok.any():
            j = int(np.argmax(np.where(ok, cnt, -1)))
            if cnt[j] > best:
                best, centre = int(cnt[j]), cen[j]
    if tissue is not None and not candidates_only and best < best_free:
        # the best arrangement cells touch tissue away from their vertices: try the boundary
        edge = _tissue_boundary_centres(tissue)
        if len(edge):
            c_edge = _count(tree, edge, r)
            j = int(np.argmax(c_edge))
            if c_edge[j] > best:
                best, centre = int(c_edge[j]), edge[j]
    if centre is None:  # no tissue at all: fall back to unrestricted placement
        note = (note + "; " if note else "") + "no tissue under the field; placed freely"
        return _free(pts, mpp, area_mm2, fits, note)
    # report the count at the chosen centre as the k-d tree sees it (same tolerance)
    count = int(_count(tree, np.asarray(centre, dtype=np.float64)[None], r)[0])
    return Hotspot(
        max(count, best),
        (float(centre[0]), float(centre[1])),
        radius_um,
        float(area_mm2),
        fits,
        note,
    )


_GRID_MIN_POINTS = 1500


def _grid_prune(
    tree: object, pts: np.ndarray, r: float, allowed: object, best: int, centre: object
) -> tuple[int, object, np.ndarray]:
    """Branch and bound over square cells: a bound on the fields through each point.

    A circle centred anywhere in a cell of half-diagonal ``h`` around ``c`` holds at most the
    points within ``r + h`` of ``c`` (the bound ``U``); the circle centred at ``c`` holds the
    points within ``r`` (a real field when ``c`` is allowed: a new ``best``). Cells with
    ``U <= best`` can hold no better field and are dropped; the others are split in four,
    down to ``r / 1024``. A better field's boundary points lie at distance ``r`` from its
    centre, so within ``r +- h`` of a kept cell's centre; each point's bound is the largest
    ``U`` of such cells (0: no circle through it can beat ``best``).
    """
    lo = pts.min(axis=0) - r
    hi = pts.max(axis=0) + r
    g = r / 2.0
    nx = max(1, int(np.ceil((hi[0] - lo[0]) / g)))
    ny = max(1, int(np.ceil((hi[1] - lo[1]) / g)))
    gx = lo[0] + (np.arange(nx) + 0.5) * g
    gy = lo[1] + (np.arange(ny) + 0.5) * g
    cells = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)
    while True:
        h = g * np.sqrt(0.5)
        upper = _count(tree, cells, r + h)
        cells, upper = cells[upper > best], upper[upper > best]
        if len(cells):
            here = _count(tree, cells, r)
            ok = np.ones(len(cells), bool) if allowed is None else allowed(cells[:, 0], cells[:, 1])  # type: ignore[operator]
            if ok.any():
                j = int(np.argmax(np.where(ok, here, -1)))
                if here[j] > best:
                    best, centre = int(here[j]), cells[j].copy()
            keep = upper > best
            cells = cells[keep]
        if not len(cells) or g <= r / 1024.0:
            break
        g /= 2.0
        q = g / 2.0
        offsets = np.array([[-q, -q], [q, -q], [-q, q], [q, q]])
        cells = (cells[:, None, :] + offsets[None, :, :]).reshape(-1, 2)
    bound = np.zeros(len(pts), np.int64)
    if not len(cells):
        return best, centre, bound
    # a circle through pivot p has its centre at distance r from p, in a kept cell whose centre
    # is within r +- h of p: the largest U of those cells bounds every circle through p
    h = g * np.sqrt(0.5)
    eps = _EPS_REL * max(r, 1.0) + 1e-7
    upper = _count(tree, cells, r + h)
    step = 64  # cells per query: the neighbour lists of all cells at once can take gigabytes
    for s0 in range(0, len(cells), step):
        sub = cells[s0 : s0 + step]
        near = tree.query_ball_point(sub, r + h + eps)  # type: ignore[attr-defined]
        lens = np.fromiter((len(v) for v in near), dtype=np.int64, count=len(near))
        if not lens.sum():
            continue
        idx = np.concatenate([np.asarray(v, dtype=np.int64) for v in near if len(v)])
        cell_of = np.repeat(np.arange(len(sub)), lens)
        d = np.hypot(*(pts[idx] - sub[cell_of]).T)
        ring = d >= r - h - eps
        np.maximum.at(bound, idx[ring], upper[s0 + cell_of[ring]])
    return best, centre, bound


def _free(pts: np.ndarray, mpp: float, area_mm2: float, fits: bool, note: str) -> Hotspot:
    h = hotspot(pts[:, 0], pts[:, 1], mpp=mpp, area_mm2=area_mm2)
    return Hotspot(h.count, h.center_px, h.radius_um, h.area_mm2, fits, note)


def _pivot_sweep(tree: object, pts: np.ndarray, i: int, r: float) -> tuple[np.ndarray, np.ndarray]:
    """Counts and centres of the circles of radius ``r`` through point ``i`` and each neighbour.

    Centres on the circle of radius ``r`` around pivot ``p`` are parametrised by the angle
    ``t``; neighbour ``q`` at distance ``d <= 2r`` and direction ``phi`` is covered for
    ``t`` in ``[phi - a, phi + a]``, ``a = arccos(d / 2r)``. The depth of this arc
    arrangement at each arc's start (where ``q`` enters through the boundary) is the count of
    that circle; it is computed for all starts at once with two sorted searches.
    """
    eps = _EPS_REL * max(r, 1.0) + 1e-7
    nbr = np.asarray(tree.query_ball_point(pts[i], 2.0 * r + eps), dtype=np.int64)  # type: ignore[attr-defined]
    q = pts[nbr] - pts[i]
    d = np.hypot(q[:, 0], q[:, 1])
    same = d <= 1e-9 * max(r, 1.0)
    k0 = int(same.sum())  # the pivot and exact duplicates: always covered
    q, d = q[~same], d[~same]
    if not len(d):
        return np.zeros(0, np.int64), np.zeros((0, 2))
    two_pi = 2.0 * np.pi
    phi = np.arctan2(q[:, 1], q[:, 0])
    a = np.arccos(np.clip(d / (2.0 * r), 0.0, 1.0)) + 1e-9
    start = np.mod(phi - a, two_pi)
    end = start + 2.0 * a
    starts = np.sort(np.concatenate([start, start - two_pi]))
    ends = np.sort(np.concatenate([end, end - two_pi]))
    depth = np.searchsorted(starts, start, side="right") - np.searchsorted(ends, start, side="left")
    centres = pts[i] + r * np.column_stack([np.cos(start), np.sin(start)])
    return depth.astype(np.int64) + k0, centres


def _on_tissue(tissue: TissueMask):
    """Predicate: level-0 points on the tissue mask (and inside the area the mask covers)."""
    h, w = np.asarray(tissue.mask).shape
    w_px, h_px = w * float(tissue.downsample), h * float(tissue.downsample)

    def allowed(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        inside = (x >= 0) & (y >= 0) & (x < w_px) & (y < h_px)
        return inside & tissue.contains(x, y)

    return allowed


def _count(tree: object, centres: np.ndarray, r: float) -> np.ndarray:
    """Number of points within ``r`` (plus a tiny tolerance) of each centre."""
    eps = _EPS_REL * max(r, 1.0) + 1e-7
    out = np.empty(len(centres), dtype=np.int64)
    for s in range(0, len(centres), _CHUNK):
        out[s : s + _CHUNK] = tree.query_ball_point(  # type: ignore[attr-defined]
            centres[s : s + _CHUNK], r + eps, return_length=True
        )
    return out


def _tissue_boundary_centres(tissue: TissueMask) -> np.ndarray:
    """Level-0 centres of tissue-boundary mask pixels, plus one pixel per tissue component."""
    from scipy import ndimage as ndi

    m = np.asarray(tissue.mask, dtype=bool)
    if not m.any():
        return np.zeros((0, 2))
    inner = ndi.binary_erosion(m, border_value=0)
    edge = m & ~inner
    ii, jj = np.nonzero(edge)
    lab, n = ndi.label(m)
    if n:
        ci, cj = _one_pixel_per_label(lab, n)
        ii = np.concatenate([ii, ci])
        jj = np.concatenate([jj, cj])
    ds = float(tissue.downsample)
    return np.column_stack([(jj + 0.5) * ds, (ii + 0.5) * ds])


def _one_pixel_per_label(lab: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    flat = lab.ravel()
    idx = np.flatnonzero(flat)
    _, first = np.unique(flat[idx], return_index=True)
    pos = idx[first]
    return pos // lab.shape[1], pos % lab.shape[1]


def _default_centre(
    tissue: TissueMask | None, extent_px: tuple[float, float] | None
) -> tuple[float, float]:
    if tissue is not None and np.asarray(tissue.mask).any():
        ii, jj = np.nonzero(tissue.mask)
        ds = float(tissue.downsample)
        return (float((jj.mean() + 0.5) * ds), float((ii.mean() + 0.5) * ds))
    if extent_px is not None:
        return (float(extent_px[0]) / 2.0, float(extent_px[1]) / 2.0)
    return (0.0, 0.0)


def _field_fits(
    radius_um: float,
    area_mm2: float,
    *,
    mpp: float,
    tissue: TissueMask | None,
    extent_px: tuple[float, float] | None,
) -> tuple[bool, str]:
    notes = []
    if extent_px is not None:
        w_mm = float(extent_px[0]) * mpp / 1000.0
        h_mm = float(extent_px[1]) * mpp / 1000.0
        diameter_mm = 2.0 * radius_um / 1000.0
        if min(w_mm, h_mm) < diameter_mm:
            notes.append(
                f"the region ({w_mm:.2f} x {h_mm:.2f} mm) is smaller than the {area_mm2:g} mm² "
                f"field (diameter {diameter_mm:.2f} mm); the field extends beyond it"
            )
    if tissue is not None and tissue.area_mm2 < area_mm2:
        notes.append(
            f"tissue area {tissue.area_mm2:.2f} mm² is smaller than the {area_mm2:g} mm² field"
        )
    return (not notes), "; ".join(notes)


def mitoses_per_mm2(n_mitoses: int, tissue_area_mm2: float) -> float | None:
    """Mitoses per mm² of tissue (``None`` when there is no tissue)."""
    if not tissue_area_mm2 or tissue_area_mm2 <= 0:
        return None
    return float(n_mitoses) / float(tissue_area_mm2)


def atypical_ratio(atypical_probability: np.ndarray, *, threshold: float = 0.5) -> float | None:
    """Share of mitoses that are atypical (``atypical_probability >= threshold``).

    ``atypical_probability`` holds one value per *mitosis*. Returns ``None`` when there are no
    mitoses or the model has no atypical head (all values NaN).

    >>> atypical_ratio(np.array([0.9, 0.1, 0.2, 0.7]))
    0.5
    """
    p = np.asarray(atypical_probability, dtype=np.float64).ravel()
    if len(p) == 0 or np.isnan(p).all():
        return None
    return float(np.count_nonzero(p >= threshold)) / float(len(p))


def density_map(
    x_px: np.ndarray,
    y_px: np.ndarray,
    *,
    shape: tuple[int, int],
    downsample: float,
    mpp: float,
    sigma_um: float = 250.0,
) -> np.ndarray:
    """Smoothed mitotic density (mitoses per mm²) on a grid over the slide.

    Parameters
    ----------
    x_px, y_px : array-like
        Level-0 positions.
    shape : (rows, cols)
        Grid shape, e.g. the tissue mask's or a thumbnail's.
    downsample : float
        Level-0 pixels per grid cell.
    mpp : float
        Level-0 pixel size (um/px).
    sigma_um : float
        Gaussian smoothing in micrometres.

    Returns
    -------
    float64 array of ``shape``; its sum times the cell area (mm²) equals the number of points
    (up to what the smoothing pushes over the border).
    """
    from scipy import ndimage as ndi

    rows, cols = int(shape[0]), int(shape[1])
    grid = np.zeros((rows, cols), dtype=np.float64)
    x = np.asarray(x_px, dtype=np.float64).ravel()
    y = np.asarray(y_px, dtype=np.float64).ravel()
    if len(x):
        j = np.clip((x / downsample).astype(np.int64), 0, cols - 1)
        i = np.clip((y / downsample).astype(np.int64), 0, rows - 1)
        np.add.at(grid, (i, j), 1.0)
    cell_mm = downsample * mpp / 1000.0
    grid /= cell_mm * cell_mm
    sigma_cells = sigma_um / (downsample * mpp)
    if sigma_cells > 0.3 and len(x):
        grid = ndi.gaussian_filter(grid, sigma_cells, mode="constant")
    return grid
