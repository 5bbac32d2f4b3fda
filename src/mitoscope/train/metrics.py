"""Small, dependency-free metrics for threshold choice and validation reports."""

from __future__ import annotations

import numpy as np


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U statistic, ties averaged); NaN if one class."""
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def f1_at(y: np.ndarray, score: np.ndarray, threshold: float) -> float:
    """F1 of ``score >= threshold``."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(score) >= threshold
    tp = int((p & y).sum())
    fp = int((p & ~y).sum())
    fn = int((~p & y).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")


def balanced_accuracy_at(y: np.ndarray, score: np.ndarray, threshold: float) -> float:
    """Mean of sensitivity and specificity of ``score >= threshold``."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(score) >= threshold
    if y.all() or (~y).all():
        return float("nan")
    return float(0.5 * ((p & y).sum() / y.sum() + (~p & ~y).sum() / (~y).sum()))


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
    """Threshold maximising balanced accuracy (Youden's J) on (validation) data."""
    best = (0.5, -1.0)
    for t in _candidates(score):
        b = balanced_accuracy_at(y, score, t)
        if b > best[1]:
            best = (float(t), b)
    return best
