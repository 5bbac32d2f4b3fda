"""The statistics that now come from scikit-learn / scipy agree with their definitions, and the
vectorised threshold search picks what the one-threshold-at-a-time loop picked."""

from __future__ import annotations

import numpy as np
import pytest

from mitoscope.evaluate.metrics import Counts
from mitoscope.evaluate.stats import balanced_accuracy, bootstrap_ci, roc_auc, roc_curve
from mitoscope.train.metrics import (
    _candidates,
    balanced_accuracy_at,
    best_balanced_accuracy_threshold,
)


def _loop_threshold(y: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    best = (0.5, -1.0)
    for t in _candidates(score):
        b = balanced_accuracy_at(y, score, t)
        if b > best[1]:
            best = (float(t), b)
    return best


@pytest.mark.parametrize("n", [7, 60, 900])
def test_threshold_search_equals_the_loop(n: int) -> None:
    rng = np.random.default_rng(n)
    for decimals in (1, 3, 8):  # many ties, some, none; 900 distinct scores -> quantiles
        y = rng.integers(0, 2, n)
        y[:2] = [0, 1]
        s = np.round(rng.uniform(0, 1, n), decimals)
        assert best_balanced_accuracy_threshold(y, s) == _loop_threshold(y, s)
    assert best_balanced_accuracy_threshold(np.ones(5), np.linspace(0, 1, 5)) == (0.5, -1.0)


def test_roc_curve_and_auc_by_hand() -> None:
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.4, 0.8, 0.8, 0.9])  # ties across classes
    fpr, tpr, thr = roc_curve(y, s)
    assert thr[0] == np.inf and thr[1:].tolist() == [0.9, 0.8, 0.4, 0.1]
    assert tpr.tolist() == [0, 1 / 3, 2 / 3, 1, 1]
    assert fpr.tolist() == [0, 0, 1 / 3, 2 / 3, 1]
    # AUC over the 9 (pos, neg) pairs, a tie counting 1/2: pos 0.4 -> 1 + 0.5 + 0,
    # pos 0.8 -> 1 + 1 + 0.5, pos 0.9 -> 3; (1.5 + 2.5 + 3) / 9
    assert roc_auc(y, s) == pytest.approx(7 / 9)
    assert balanced_accuracy([1, 1, 1], [1, 0, 1]) == pytest.approx(2 / 3)  # one class: its recall


def test_bootstrap_ci_resamples_images() -> None:
    """scipy's percentile bootstrap over images: the interval holds the estimate, shrinks with
    more images of the same kind and is zero-width for one image or identical images."""
    rng = np.random.default_rng(3)
    few = [Counts(*rng.integers(0, 10, 3)) for _ in range(10)]
    many = few * 10
    a = bootstrap_ci(few, n_boot=400, rng=0)
    b = bootstrap_ci(many, n_boot=400, rng=0)
    assert a.low <= a.estimate <= a.high and b.low <= b.estimate <= b.high
    assert a.estimate == pytest.approx(b.estimate)
    assert (b.high - b.low) < (a.high - a.low)
    one = bootstrap_ci([Counts(3, 1, 2)], n_boot=50)
    assert one.low == one.high == one.estimate == pytest.approx(6 / 9)
    for metric in ("precision", "recall"):
        ci = bootstrap_ci(few, metric=metric, n_boot=200, rng=1)
        assert ci.low <= ci.estimate <= ci.high
