"""Mitotic count: the hotspot field, counts per mm² of tissue, atypical ratio, density map.

The **hotspot** is the circular field of a given area (2 mm², Fick et al. / CAP; or 10 HPF =
2.37 mm², the SlideRunner convention) that holds the most mitoses. It is found exactly:
for a disk of radius ``r`` covering a set of points, the disk can always be moved, without
losing a point, until either its centre sits on a point (it covers one point or only points that
stay covered) or two points lie on its boundary. So the maximum over the finitely many centres

- each point itself, and
- for each pair of points closer than ``2r``, the two centres of the circles of radius ``r``
  through both points,

equals the maximum over *all* placements. Each candidate centre is counted with a k-d tree.
Restricted to tissue (the centre must lie on the tissue mask), the best cell of the disk
arrangement may touch tissue only away from its vertices; then it contains a point of the tissue
boundary, so the boundary pixels of the mask (and one pixel per tissue component) are added as
candidate centres: the restricted maximum is exact up to the mask's pixel size.
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

    centres = [pts]
    tree = cKDTree(pts)
    if len(pts) > 1:
        pairs = tree.query_pairs(2.0 * r, output_type="ndarray")
        if len(pairs):
            centres.append(_pair_centres(pts[pairs[:, 0]], pts[pairs[:, 1]], r))
    cand = np.concatenate(centres)
    if tissue is not None:
        cand = cand[tissue.contains(cand[:, 0], cand[:, 1])]
        if not candidates_only:
            cand = np.concatenate([cand, _tissue_boundary_centres(tissue)])
    if len(cand) == 0:  # no tissue at all: fall back to unrestricted placement
        cand = np.concatenate(centres)
        note = (note + "; " if note else "") + "no tissue under the field; placed freely"
    counts = _count(tree, cand, r)
    best = int(np.argmax(counts))
    cx, cy = cand[best]
    return Hotspot(
        int(counts[best]), (float(cx), float(cy)), radius_um, float(area_mm2), fits, note
    )


def _count(tree: object, centres: np.ndarray, r: float) -> np.ndarray:
    """Number of points within ``r`` (plus a tiny tolerance) of each centre."""
    eps = _EPS_REL * max(r, 1.0) + 1e-7
    out = np.empty(len(centres), dtype=np.int64)
    for s in range(0, len(centres), _CHUNK):
        out[s : s + _CHUNK] = tree.query_ball_point(  # type: ignore[attr-defined]
            centres[s : s + _CHUNK], r + eps, return_length=True
        )
    return out


def _pair_centres(a: np.ndarray, b: np.ndarray, r: float) -> np.ndarray:
    """Both centres of the circles of radius ``r`` through points ``a`` and ``b`` (rows)."""
    mid = (a + b) / 2.0
    d = b - a
    dist = np.hypot(d[:, 0], d[:, 1])
    ok = dist > 0
    mid, d, dist = mid[ok], d[ok], dist[ok]
    h = np.sqrt(np.clip(r * r - (dist / 2.0) ** 2, 0.0, None))
    perp = np.column_stack([-d[:, 1], d[:, 0]]) / dist[:, None]
    return np.concatenate([mid + perp * h[:, None], mid - perp * h[:, None]])


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
