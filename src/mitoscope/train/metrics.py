"""Small, dependency-free metrics for threshold choice and validation reports."""

from __future__ import annotations

import numpy as np


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (:func:`mitoscope.evaluate.stats.roc_auc`); NaN if one class."""
    from ..evaluate.stats import roc_auc as _roc_auc

    y = np.asarray(y).astype(bool)
    if y.all() or (~y).all():
        return float("nan")
    return _roc_auc(y, score)


def f1_at(y: np.ndarray, score: np.ndarray, threshold: float) -> float:
    """F1 of ``score >= threshold``."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(score) >= threshold
    tp = int((p & y).sum())
    fp = int((p & ~y).sum())
    fn = int((~p & y).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")


def balanced_accuracy_at(y: np.ndarray, score: np.ndarray, threshold: float) -> float:
    """Balanced accuracy of ``score >= threshold`` (:func:`mitoscope.evaluate.stats.balanced_accuracy`)."""
    from ..evaluate.stats import balanced_accuracy

    y = np.asarray(y).astype(bool)
    if y.all() or (~y).all():
        return float("nan")
    return balanced_accuracy(y, np.asarray(score) >= threshold)


def _candidates(score: np.ndarray) -> np.ndarray:
    s = np.unique(np.asarray(score, dtype=np.float64))
    if len(s) > 400:
        s = np.quantile(s, np.linspace(0, 1, 401))
    return s


def best_f1_threshold(y: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """Threshold maximising F1 on (validation) data, and that F1."""
    best = (0.5, -1.0)
    for t in _candidates(score):
        f = f1_at(y, score, t)
        if f > best[1]:
            best = (float(t), f)
    return best


def best_balanced_accuracy_threshold(y: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """Threshold maximising balanced accuracy (Youden's J) on (validation) data.

    The balanced accuracy of ``score >= t`` at every candidate ``t`` at once (sorted scores);
    the same values as :func:`balanced_accuracy_at`, the lowest ``t`` among equal ones.
    """
    y = np.asarray(y).astype(bool).reshape(-1)
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return (0.5, -1.0)
    cand = _candidates(s)
    tp = n_pos - np.searchsorted(np.sort(s[y]), cand, side="left")
    tn = np.searchsorted(np.sort(s[~y]), cand, side="left")
    ba = (tp / n_pos + tn / n_neg) / 2
    k = int(np.argmax(ba))
    return float(cand[k]), float(ba[k])


def threshold_at_recall(y: np.ndarray, score: np.ndarray, recall: float) -> float:
    """The highest threshold at which ``score >= threshold`` keeps at least ``recall`` of the
    positives (the operating point of a count that must not miss more than ``1 - recall``)."""
    y = np.asarray(y).astype(bool).reshape(-1)
    pos = np.sort(np.asarray(score, dtype=np.float64).reshape(-1)[y])[::-1]
    if not len(pos):
        return 0.5
    return float(pos[max(0, int(np.ceil(float(recall) * len(pos))) - 1)])
