"""The MIDOG matching protocol: properties, a brute-force twin, and the official tree algorithm."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mitoscope.errors import InvalidInputError
from mitoscope.evaluate import Counts, EvalImage, match_points, score_images

R = 7.5e-3  # the official radius in mm


# --- a deliberately simple second implementation (loops only) ---------------------------------


def brute_force_match(truth, pred, radius):
    """For each truth point in order: the nearest unused prediction within the radius.

    Ties at identical distance go to the lower prediction index; distance <= radius is a hit.
    """
    used = [False] * len(pred)
    tp = 0
    for tx, ty in truth:
        best_j, best_d = -1, None
        for j, (px, py) in enumerate(pred):
            if used[j]:
                continue
            d2 = (px - tx) * (px - tx) + (py - ty) * (py - ty)
            if d2 > radius * radius:
                continue
            d = math.sqrt(d2)
            if best_d is None or d < best_d:
                best_j, best_d = j, d
        if best_j >= 0:
            used[best_j] = True
            tp += 1
    return tp, len(pred) - tp, len(truth) - tp


def official_evalutils(truth, pred, radius):
    """evalutils.scorers.score_detection (comic/evalutils), re-typed with sklearn's BallTree."""
    from sklearn.neighbors import BallTree

    if len(truth) == 0:
        return 0, len(pred), 0
    if len(pred) == 0:
        return 0, 0, len(truth)
    tree = BallTree(np.array(pred))
    hits, _ = tree.query_radius(
        X=np.array(truth), r=radius, return_distance=True, sort_results=True
    )
    tp = fn = 0
    hit = [False] * len(pred)
    for hits_for_target in hits:
        for idx in hits_for_target:
            if not hit[idx]:
                hit[idx] = True
                tp += 1
                break
        else:
            fn += 1
    return tp, hit.count(False), fn


def _counts(truth, pred, radius):
    r = match_points(truth, pred, radius=radius)
    return r.tp, r.fp, r.fn


# --- basic behaviour -----------------------------------------------------------------------------


def test_docstring_case_and_indices():
    r = match_points([[0, 0], [100, 0]], [[1, 0], [2, 0], [500, 0]], radius=30)
    assert (r.tp, r.fp, r.fn) == (1, 2, 1)
    assert r.truth_match.tolist() == [0, -1]
    assert r.pred_is_tp.tolist() == [True, False, False]


def test_no_truth_all_predictions_false_positive():
    assert _counts(np.zeros((0, 2)), [[1, 1], [2, 2]], 5) == (0, 2, 0)
    assert _counts([[1, 1]], np.zeros((0, 2)), 5) == (0, 0, 1)
    assert _counts([], [], 5) == (0, 0, 0)


def test_radius_is_inclusive_like_the_official_tree_query():
    assert _counts([[0.0, 0.0]], [[7.5e-3, 0.0]], R) == (1, 0, 0)
    assert _counts([[0.0, 0.0]], [[7.5e-3 * (1 + 1e-12), 0.0]], R) == (0, 1, 1)
    assert _counts([[0, 0]], [[3, 4]], 5) == (1, 0, 0)  # exactly 5


def test_truth_order_matters_greedy_not_optimal():
    # truth A takes the nearest prediction p0; truth B could only use p0 -> FN.
    truth = [[0.0, 0.0], [6.0, 0.0]]
    pred = [[3.0, 0.0], [-4.0, 0.0]]
    assert _counts(truth, pred, 5) == (1, 1, 1)
    # visiting B first lets both match: the official protocol is order dependent
    assert _counts(truth[::-1], pred, 5) == (2, 0, 0)


def test_ties_go_to_the_lower_prediction_index():
    # truth 0 is equidistant to p0 and p1; truth 1 can only reach p1.
    truth = [[0.0, 0.0], [8.0, 0.0]]
    pred = [[-4.0, 0.0], [4.0, 0.0]]
    assert match_points(truth, pred, radius=5).truth_match.tolist() == [0, 1]
    assert _counts(truth, pred, 5) == (2, 0, 0)
    # the same points in the other order: the tie now picks the one truth 1 needed
    assert _counts(truth, pred[::-1], 5) == (1, 1, 1)


def test_bad_input_is_rejected():
    with pytest.raises(InvalidInputError):
        match_points([[0, 0]], [[0, 0]], radius=0)
    with pytest.raises(InvalidInputError):
        match_points([[0, np.nan]], [[0, 0]], radius=1)
    with pytest.raises(InvalidInputError):
        match_points([1, 2, 3], [[0, 0]], radius=1)


def test_z_column_of_midog_points_is_ignored():
    assert _counts([[0.1, 0.2, 0]], [[0.1, 0.2, 0]], R) == (1, 0, 0)


# --- equivalence with the brute-force twin on many random cases (ties, near-radius) ---------


def test_equivalent_to_brute_force_on_integer_grids_with_ties():
    rng = np.random.default_rng(0)
    n_ties = 0
    for _ in range(1500):
        n, m = rng.integers(0, 9), rng.integers(0, 12)
        truth = rng.integers(0, 16, size=(n, 2)).astype(float)
        pred = rng.integers(0, 16, size=(m, 2)).astype(float)
        radius = float(rng.choice([1.0, 2.0, 5.0, math.sqrt(2), 4.5]))
        assert _counts(truth, pred, radius) == brute_force_match(truth, pred, radius)
        if n and m:
            d = np.sqrt(((truth[:, None] - pred[None]) ** 2).sum(-1))
            n_ties += int(any(len(set(row[row <= radius])) < (row <= radius).sum() for row in d))
    assert n_ties > 100  # the cases really exercise ties


def test_equivalent_to_brute_force_near_the_radius():
    rng = np.random.default_rng(1)
    for _ in range(1000):
        n, m = rng.integers(1, 6), rng.integers(1, 8)
        truth = rng.uniform(0, 0.03, size=(n, 2))
        # predictions at distance within +-1e-12 relative of the radius, in random directions
        base = truth[rng.integers(0, n, size=m)]
        ang = rng.uniform(0, 2 * np.pi, size=m)
        dist = R * (1 + rng.choice([-1e-12, 0.0, 1e-12, -0.3, 0.5], size=m))
        pred = base + np.c_[np.cos(ang), np.sin(ang)] * dist[:, None]
        assert _counts(truth, pred, R) == brute_force_match(truth.tolist(), pred.tolist(), R)


def test_agrees_with_the_official_balltree_algorithm():
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(2)
    compared = 0
    for _ in range(400):
        n, m = rng.integers(0, 30), rng.integers(0, 40)
        truth = rng.uniform(0, 0.2, size=(n, 2))  # mm, like a MIDOG field
        pred = np.concatenate(
            [
                truth[rng.integers(0, max(n, 1), size=m // 2)] + rng.normal(0, 0.004, (m // 2, 2))
                if n
                else np.zeros((0, 2)),
                rng.uniform(0, 0.2, size=(m - m // 2, 2)),
            ]
        )
        assert _counts(truth, pred, R) == official_evalutils(truth, pred, R)
        compared += 1
    # integer grids: exact-radius hits; skip cases with distance ties (tree order there)
    for _ in range(400):
        n, m = rng.integers(1, 8), rng.integers(1, 10)
        truth = rng.integers(0, 12, size=(n, 2)).astype(float)
        pred = rng.integers(0, 12, size=(m, 2)).astype(float)
        d = np.sqrt(((truth[:, None] - pred[None]) ** 2).sum(-1))
        if any(len(set(row[row <= 5.0])) < (row <= 5.0).sum() for row in d):
            continue
        assert _counts(truth, pred, 5.0) == official_evalutils(truth, pred, 5.0)
        compared += 1
    assert compared > 500


# --- hypothesis properties -------------------------------------------------------------------

coord = st.floats(min_value=0, max_value=0.5, allow_nan=False, allow_infinity=False)
points = st.lists(st.tuples(coord, coord), min_size=0, max_size=25)


@settings(max_examples=150, deadline=None)
@given(points)
def test_identical_truth_and_predictions_give_f1_one(pts):
    arr = np.array(pts, dtype=float).reshape(-1, 2)
    r = match_points(arr, arr.copy(), radius=R)
    c = Counts(r.tp, r.fp, r.fn)
    assert c.fp == 0 and c.fn == 0
    assert c.f1 == 1.0


@settings(max_examples=150, deadline=None)
@given(
    st.sets(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=40),
    st.lists(st.tuples(st.floats(0, 0.999), st.floats(0, 2 * math.pi)), min_size=40, max_size=40),
)
def test_moving_each_prediction_less_than_radius_keeps_all_tps(cells, moves):
    # truth on a grid with spacing 3 radii: a moved prediction is within the radius of its own
    # truth point only, so every truth keeps a hit whatever the visiting order.
    truth = np.array(sorted(cells), dtype=float) * 3 * R
    frac = np.array([m[0] for m in moves[: len(truth)]])
    ang = np.array([m[1] for m in moves[: len(truth)]])
    pred = truth + np.c_[np.cos(ang), np.sin(ang)] * (frac * R)[:, None]
    r = match_points(truth, pred, radius=R)
    assert (r.tp, r.fp, r.fn) == (len(truth), 0, 0)


@settings(max_examples=100, deadline=None)
@given(coord, coord, st.floats(0, 0.99), st.floats(0, 2 * math.pi))
def test_duplicate_prediction_on_one_figure_is_one_tp_one_fp(x, y, frac, ang):
    p = [x + math.cos(ang) * frac * R, y + math.sin(ang) * frac * R]
    assert _counts([[x, y]], [p, p], R) == (1, 1, 0)


@settings(max_examples=100, deadline=None)
@given(points, points, points, points)
def test_images_are_independent(t1, p1, t2, p2):
    a = EvalImage("a", np.array(t1).reshape(-1, 2), np.array(p1).reshape(-1, 2))
    b = EvalImage("b", np.array(t2).reshape(-1, 2), np.array(p2).reshape(-1, 2))
    together = Counts.total(score_images([a, b]))
    alone = Counts.total(score_images([a])) + Counts.total(score_images([b]))
    assert together == alone
    # predictions sitting on the other image's figures never match across images
    cross = EvalImage("c", np.array(t1).reshape(-1, 2), np.zeros((0, 2)))
    cross_pred = EvalImage("d", np.zeros((0, 2)), np.array(t1).reshape(-1, 2))
    c = Counts.total(score_images([cross, cross_pred]))
    assert c.tp == 0 and c.fn == len(t1) and c.fp == len(t1)


@settings(max_examples=200, deadline=None)
@given(points, points, st.randoms(use_true_random=False))
def test_counts_do_not_depend_on_prediction_order_without_distance_ties(truth, pred, rnd):
    # Exactly true only when no truth point has two predictions at bit-identical distance
    # (see test_ties_go_to_the_lower_prediction_index for the counterexample with a tie).
    t = np.array(truth, dtype=float).reshape(-1, 2)
    p = np.array(pred, dtype=float).reshape(-1, 2)
    if len(t) and len(p):
        d = np.sqrt(((t[:, None] - p[None]) ** 2).sum(-1))
        assume(all(len(set(row[row <= R])) == (row <= R).sum() for row in d))
    perm = list(range(len(p)))
    rnd.shuffle(perm)
    assert _counts(t, p, R) == _counts(t, p[perm] if len(p) else p, R)


def test_from_px_uses_mpp_for_mm():
    # 29 px at 0.25 um/px = 7.25 um (a hit), 31 px = 7.75 um (a miss). Exactly 30 px lands on
    # 7.5 um only up to the rounding of px -> mm, as in the official evaluator (see the docs).
    img = EvalImage.from_px("x", [[1000, 1000]], [[1029, 1000], [1000, 1031]], mpp=0.25)
    assert np.allclose(img.truth_xy, [[0.25, 0.25]])
    c = Counts.total(score_images([img], radius_um=7.5))
    assert (c.tp, c.fp, c.fn) == (1, 1, 0)
    far = EvalImage.from_px("x", [[1000, 1000]], [[1031, 1000]], mpp=0.25)
    assert Counts.total(score_images([far])) == Counts(0, 1, 1)
    with pytest.raises(InvalidInputError):
        EvalImage.from_px("x", [[0, 0]], [[0, 0]], mpp=250)
