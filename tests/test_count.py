"""Hotspot exactness, counts per mm², atypical ratio and density map."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mitoscope.count import (
    HPF10_AREA_MM2,
    atypical_ratio,
    density_map,
    hotspot,
    mitoses_per_mm2,
)
from mitoscope.slide.tissue import TissueMask


def _count_at(pts: np.ndarray, centre: tuple[float, float], r: float) -> int:
    d = np.hypot(pts[:, 0] - centre[0], pts[:, 1] - centre[1])
    return int(np.count_nonzero(d <= r * (1 + 1e-6)))


def _grid_max(pts: np.ndarray, r: float, step: float, lo: float, hi: float) -> int:
    g = np.arange(lo, hi + step, step)
    gx, gy = np.meshgrid(g, g)
    c = np.column_stack([gx.ravel(), gy.ravel()])
    d2 = (c[:, None, 0] - pts[None, :, 0]) ** 2 + (c[:, None, 1] - pts[None, :, 1]) ** 2
    return int((d2 <= r * r).sum(axis=1).max())


def test_radius_of_standard_fields() -> None:
    h2 = hotspot(np.zeros(0), np.zeros(0), mpp=0.25)
    assert h2.radius_um == pytest.approx(797.88, abs=0.01)
    h10 = hotspot(np.zeros(0), np.zeros(0), mpp=0.25, area_mm2=HPF10_AREA_MM2)
    assert h10.radius_um == pytest.approx(math.sqrt(2.37 / math.pi) * 1000)
    assert h10.area_mm2 == 2.37
    assert h2.count == 0


@pytest.mark.parametrize("seed", range(6))
def test_exact_beats_dense_grid_search(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    # clustered + uniform points in a 4 x 4 mm square at 1 um/px
    centres = rng.uniform(0, 4000, (3, 2))
    pts = np.concatenate(
        [
            rng.uniform(0, 4000, (n, 2)),
            centres[rng.integers(0, 3, n)] + rng.normal(0, 500, (n, 2)),
        ]
    )
    h = hotspot(pts[:, 0], pts[:, 1], mpp=1.0)
    r = h.radius_um
    grid = _grid_max(pts, r, step=40.0, lo=-800, hi=4800)
    assert h.count >= grid
    assert _count_at(pts, h.center_px, r) == h.count  # the reported centre really holds it


def test_two_points_on_boundary_only_reachable_by_pair_centres() -> None:
    # three points on a circle of radius r: only a centre at the circle's centre covers all,
    # which is neither a point nor (generally) found by a coarse grid
    r = math.sqrt(2.0 / math.pi) * 1000.0
    ang = np.array([0.0, 2.0, 4.0])
    pts = np.column_stack([5000 + r * np.cos(ang), 5000 + r * np.sin(ang)])
    h = hotspot(pts[:, 0], pts[:, 1], mpp=1.0)
    assert h.count == 3
    assert _count_at(pts, h.center_px, r) == 3


def test_cluster_wins_over_scattered_points() -> None:
    rng = np.random.default_rng(1)
    cluster = rng.normal(0, 50, (12, 2)) + (20000, 20000)
    scattered = rng.uniform(0, 60000, (30, 2))
    pts = np.concatenate([cluster, scattered])
    h = hotspot(pts[:, 0], pts[:, 1], mpp=0.25)
    assert h.count >= 12
    assert math.hypot(h.center_px[0] - 20000, h.center_px[1] - 20000) < h.radius_um / 0.25


def test_centre_restricted_to_tissue() -> None:
    # 10 points clustered over glass at the left, 6 over tissue at the right
    mask = np.zeros((100, 200), dtype=bool)
    mask[:, 120:] = True  # tissue: x >= 120 * 40 = 4800 px
    tissue = TissueMask(mask=mask, downsample=40.0, mpp=40.0)
    left = np.column_stack([np.full(10, 1000.0), np.linspace(1000, 1200, 10)])
    right = np.column_stack([np.full(6, 7000.0), np.linspace(1000, 1100, 6)])
    pts = np.concatenate([left, right])
    free = hotspot(pts[:, 0], pts[:, 1], mpp=1.0)
    assert free.count == 10
    h = hotspot(pts[:, 0], pts[:, 1], mpp=1.0, tissue=tissue)
    assert bool(tissue.contains(np.array([h.center_px[0]]), np.array([h.center_px[1]]))[0])
    # r = 798 px: from tissue (x >= 4800) the left cluster is out of reach; the right one fits
    assert h.count == 6


def test_tissue_restricted_uses_boundary_when_vertices_are_off_tissue() -> None:
    # one point on glass 790 px left of the tissue edge and one on tissue 50 px right of it
    # (840 px apart, r = 798 px): the pair centres lie on glass and a centre on the right point
    # misses the left one; only centres near the tissue edge cover both
    mask = np.zeros((50, 100), dtype=bool)
    mask[:, 50:] = True  # tissue from x = 500 px (downsample 10)
    tissue = TissueMask(mask=mask, downsample=10.0, mpp=10.0)
    pts = np.array([[500.0 - 790.0, 250.0], [500.0 + 50.0, 250.0]])
    only_exact = hotspot(pts[:, 0], pts[:, 1], mpp=1.0, tissue=tissue, candidates_only=True)
    assert only_exact.count == 1
    h = hotspot(pts[:, 0], pts[:, 1], mpp=1.0, tissue=tissue)
    assert h.count == 2
    assert bool(tissue.contains(np.array([h.center_px[0]]), np.array([h.center_px[1]]))[0])


def test_region_smaller_than_field_is_stated() -> None:
    h = hotspot(np.array([10.0, 20.0]), np.array([10.0, 20.0]), mpp=0.5, extent_px=(2220, 2967))
    assert h.field_fits is False
    assert "smaller than" in h.note
    big = hotspot(np.array([10.0]), np.array([10.0]), mpp=0.25, extent_px=(40000, 40000))
    assert big.field_fits is True and big.note == ""


def test_mitoses_per_mm2_and_atypical_ratio() -> None:
    assert mitoses_per_mm2(10, 2.5) == 4.0
    assert mitoses_per_mm2(3, 0.0) is None
    assert atypical_ratio(np.array([0.9, 0.1, 0.6, 0.2]), threshold=0.5) == 0.5
    assert atypical_ratio(np.array([np.nan, np.nan])) is None
    assert atypical_ratio(np.zeros(0)) is None


def test_density_map_integrates_to_count() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(2000, 8000, 50)
    y = rng.uniform(2000, 6000, 50)
    ds, mpp = 32.0, 0.25
    dens = density_map(x, y, shape=(250, 320), downsample=ds, mpp=mpp, sigma_um=100)
    cell_mm2 = (ds * mpp / 1000.0) ** 2
    assert dens.sum() * cell_mm2 == pytest.approx(50, rel=1e-3)
    assert dens.max() > 0 and dens[0, 0] == 0


def _reference_max(pts: np.ndarray, r: float) -> int:
    """Brute force: count at every point and at both centres of every pair within 2r."""
    cands = [pts]
    for i in range(len(pts)):
        for j in range(i + 1, len(pts)):
            a, b = pts[i], pts[j]
            d = float(np.hypot(*(b - a)))
            if 0 < d <= 2 * r:
                mid = (a + b) / 2
                h = math.sqrt(max(r * r - d * d / 4, 0.0))
                perp = np.array([-(b - a)[1], (b - a)[0]]) / d
                cands.append(np.array([mid + h * perp, mid - h * perp]))
    c = np.concatenate(cands)
    d2 = ((c[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
    return int((d2 <= r * r * (1 + 1e-9)).sum(1).max())


@pytest.mark.parametrize("seed", range(8))
def test_sweep_equals_brute_force_pair_enumeration(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(2, 40))
    pts = rng.uniform(0, 3000, (n, 2))
    if seed % 2:  # exact duplicates and integer lattice points (ties on the boundary)
        pts = np.round(pts / 400) * 400
        pts = np.concatenate([pts, pts[:3]])
    h = hotspot(pts[:, 0], pts[:, 1], mpp=1.0)
    assert h.count == _reference_max(pts, h.radius_um)


def test_dense_slide_is_fast() -> None:
    import time

    rng = np.random.default_rng(0)
    pts = rng.normal(0, 1500, (1500, 2)) + 20000  # 1500 mitoses within ~1 mm at 0.25 um/px
    t = time.perf_counter()
    h = hotspot(pts[:, 0], pts[:, 1], mpp=0.25)
    assert time.perf_counter() - t < 10.0
    assert h.count >= _count_at(pts, (20000.0, 20000.0), h.radius_um / 0.25)


def test_centre_stays_on_the_mask_not_beyond_the_slide() -> None:
    # all tissue; two points near the left edge whose pair centres fall outside the slide
    tissue = TissueMask(mask=np.ones((20, 20), bool), downsample=100.0, mpp=100.0)
    pts = np.array([[10.0, 500.0], [10.0, 1900.0], [1500.0, 1000.0]])
    h = hotspot(pts[:, 0], pts[:, 1], mpp=1.0, tissue=tissue)
    assert 0 <= h.center_px[0] < 2000 and 0 <= h.center_px[1] < 2000
    assert h.count == 2  # the two edge points (1400 px apart, r = 798 px); the third is too far


@pytest.mark.parametrize("seed", [0, 1])
def test_grid_pruning_gives_the_exact_answer(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many points (grid branch-and-bound on) == the plain pivot sweep (grid off)."""
    import mitoscope.count as count_mod

    rng = np.random.default_rng(seed)
    uniform = rng.random((1800, 2)) * 20000
    cluster = rng.normal((6000, 9000), 900, (500, 2))
    pts = np.concatenate([uniform, cluster])
    mask = np.zeros((50, 50), bool)
    mask[5:45, 5:30] = True  # the centre must lie on this tissue
    tissue = TissueMask(mask=mask, downsample=400.0, mpp=100.0)
    for t in (None, tissue):
        fast = hotspot(pts[:, 0], pts[:, 1], mpp=0.25, tissue=t)
        monkeypatch.setattr(count_mod, "_GRID_MIN_POINTS", 10**9)
        slow = hotspot(pts[:, 0], pts[:, 1], mpp=0.25, tissue=t)
        monkeypatch.undo()
        assert fast.count == slow.count > 0
