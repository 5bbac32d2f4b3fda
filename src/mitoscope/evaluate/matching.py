"""Point matching exactly as the official MIDOG evaluation.

The MIDOG challenges (2021, 2022, 2025 track 1) and the MIDOG++ reference code score one image
with ``evalutils.scorers.score_detection(ground_truth=gt, predictions=pred, radius=7.5e-3)``
on coordinates in millimetres. That function

1. returns ``TP = 0, FN = 0, FP = len(pred)`` when the image has no ground truth, and
   ``FN = len(gt)`` when it has no predictions;
2. otherwise queries a ``sklearn.neighbors.BallTree`` of the predictions with every ground-truth
   point (``query_radius(r=radius, sort_results=True)``): all predictions with squared distance
   ``<= radius**2`` (note: ``<=``, the tree compares reduced distances), sorted by distance;
3. walks the ground-truth points **in their given order**; each takes the nearest prediction
   not used yet (a true positive) or, if there is none, counts a false negative;
4. counts the predictions never used as false positives.

:func:`match_points` does exactly this with numpy/scipy. The only freedom is the order of
predictions at *bit-identical* distance from one truth point: scikit-learn sorts them with an
unstable introsort over its tree order (version dependent), we take the lower prediction index
first. See ``docs/evaluation.md`` for the consequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError

#: The MIDOG matching radius in micrometres (7.5 um; 7.5e-3 in the official mm coordinates).
MIDOG_RADIUS_UM = 7.5


@dataclass(frozen=True)
class MatchResult:
    """The outcome of matching one image's predictions to its ground truth.

    Attributes
    ----------
    tp, fp, fn : int
        True positives, false positives, false negatives.
    truth_match : int64 (N,)
        For each truth point the index of the prediction matched to it, or ``-1``.
    pred_is_tp : bool (M,)
        Whether each prediction was matched to a truth point.
    """

    tp: int
    fp: int
    fn: int
    truth_match: np.ndarray
    pred_is_tp: np.ndarray

    @property
    def truth_matched(self) -> np.ndarray:
        """Boolean (N,): truth points that found a prediction."""
        return self.truth_match >= 0


def as_points(xy: object, *, name: str) -> np.ndarray:
    """Validate and return an ``(N, 2)`` float64 array of finite points.

    Extra columns (such as the ``z = 0`` of the MIDOG format) are dropped.
    """
    arr = np.asarray(xy, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise InvalidInputError(f"{name} must be an (N, 2) array of x, y; got shape {arr.shape}")
    arr = arr[:, :2]
    if not np.all(np.isfinite(arr)):
        raise InvalidInputError(f"{name} contains NaN or infinite coordinates")
    return np.ascontiguousarray(arr)


def match_points(truth_xy: object, pred_xy: object, *, radius: float) -> MatchResult:
    """Match predictions to ground truth points as the official MIDOG evaluator.

    Parameters
    ----------
    truth_xy : array-like (N, 2)
        Ground-truth points, in the order the evaluator visits them.
    pred_xy : array-like (M, 2)
        Predicted points (already filtered to the ones that count, e.g. by threshold).
    radius : float
        Maximum distance, in the same unit as the coordinates, of a hit (inclusive:
        a prediction at exactly ``radius`` is a hit, as in the official tree query).

    Returns
    -------
    MatchResult

    Examples
    --------
    >>> r = match_points([[0, 0], [100, 0]], [[1, 0], [2, 0], [500, 0]], radius=30)
    >>> (r.tp, r.fp, r.fn)
    (1, 2, 1)
    >>> r.truth_match.tolist(), r.pred_is_tp.tolist()
    ([0, -1], [True, False, False])
    """
    radius = float(radius)
    if not np.isfinite(radius) or radius <= 0:
        raise InvalidInputError(f"radius must be a positive distance, got {radius!r}")
    truth = as_points(truth_xy, name="truth_xy")
    pred = as_points(pred_xy, name="pred_xy")
    n, m = len(truth), len(pred)
    truth_match = np.full(n, -1, dtype=np.int64)
    pred_is_tp = np.zeros(m, dtype=bool)
    if n == 0 or m == 0:
        return MatchResult(0, m, n, truth_match, pred_is_tp)

    r2 = radius * radius
    hits = _hits_within(truth, pred, radius)
    for i in range(n):
        cand = hits[i]
        if not cand:
            continue
        cand = np.asarray(cand, dtype=np.int64)
        dx = pred[cand, 0] - truth[i, 0]
        dy = pred[cand, 1] - truth[i, 1]
        d2 = dx * dx + dy * dy
        keep = d2 <= r2
        cand, d2 = cand[keep], d2[keep]
        if len(cand) == 0:
            continue
        # sklearn sorts hits by the (square-rooted) distance; ties: lower index first
        order = np.lexsort((cand, np.sqrt(d2)))
        for j in cand[order]:
            if not pred_is_tp[j]:
                pred_is_tp[j] = True
                truth_match[i] = j
                break
    tp = int(pred_is_tp.sum())
    return MatchResult(tp, m - tp, n - tp, truth_match, pred_is_tp)


def _hits_within(truth: np.ndarray, pred: np.ndarray, radius: float) -> list[list[int]]:
    """Candidate predictions per truth point (a superset of the exact ``<= radius`` set)."""
    n, m = len(truth), len(pred)
    if n * m <= 4096:
        d2 = ((truth[:, None, :] - pred[None, :, :]) ** 2).sum(-1)
        # generous superset; the exact test is repeated by the caller
        return [np.flatnonzero(row <= radius * radius * (1 + 1e-9)).tolist() for row in d2]
    from scipy.spatial import cKDTree

    tree = cKDTree(pred)
    return tree.query_ball_point(truth, r=radius * (1 + 1e-9))
