"""Ensemble policy: how member outputs and test-time views become the probabilities.

Members are averaged (in :class:`~mitoscope.classify.classifier.Classifier`); the atypical
probability can be averaged over dihedral views (:func:`atypical_tta`), for mitoses only during
detection (``atypical_min_mf``); the decision thresholds come with the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def dihedral_views(n: int) -> list[tuple[int, bool]]:
    """The first ``n`` of the 8 flips / rotations, identity first."""
    allv = [(k, f) for f in (False, True) for k in range(4)]
    return allv[: max(1, min(8, int(n)))]


def atypical_tta(
    score: Callable[[np.ndarray, np.ndarray | None], np.ndarray],
    arr: np.ndarray,
    mk: np.ndarray | None,
    *,
    views: int,
    identity: np.ndarray | None = None,
) -> np.ndarray:
    """Atypical probability averaged over the first ``views`` dihedral views.

    ``score(patches, masks)`` gives the atypical probability of one view; ``identity``: the
    patches' probabilities already scored as they are (the first view), so that pass is not
    run again.
    """
    order = dihedral_views(int(views))
    n_views = len(order)
    total = np.zeros(len(arr))
    if identity is not None:
        total += identity
        order = order[1:]  # the identity is always the first view
    for k, flip in order:
        a = np.rot90(arr, k, axes=(1, 2))
        m = None if mk is None else np.rot90(mk, k, axes=(1, 2))
        if flip:
            a = a[:, :, ::-1]
            m = None if m is None else m[:, :, ::-1]
        total += score(np.ascontiguousarray(a), None if m is None else np.ascontiguousarray(m))
    return total / n_views


__all__ = ["atypical_tta", "dihedral_views"]
