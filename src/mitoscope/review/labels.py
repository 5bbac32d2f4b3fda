"""The reviewed labels of a run database, with a weight per label (the training side of review).

The rules (latest answer wins; *contested* items, once called equivocal and then decided, at
``contested_weight``; items still *equivocal* left out or kept as ``equivocal_as`` at
``equivocal_weight``) are :func:`mitoscope.io.reviewed.read_reviewed`'s, the reader the
``reviewed`` source of ``mitoscope train`` uses too; this module returns them as records of the
detections under review.

``weight`` multiplies a label's share of the training mass (e.g. ``sample_weight`` of a
scikit-learn estimator; ``mitoscope train`` with ``mf_loss = "agreement"``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

from ..io.reviewed import read_reviewed
from .store import ReviewStore


@dataclass(frozen=True)
class ReviewedLabel:
    """One reviewed detection as a training label (level-0 px)."""

    uid: int
    slide: str
    x: float
    y: float
    is_mf: bool
    atypical: bool
    weight: float
    answers: tuple[str, ...]  # class names, oldest first
    reviewers: tuple[str, ...]  # who gave them, same order


def reviewed_labels(
    db: str | os.PathLike[str] | ReviewStore,
    *,
    contested_weight: float = 1.0,
    equivocal_as: str | None = None,
    equivocal_weight: float = 0.25,
) -> list[ReviewedLabel]:
    """The human-reviewed detections of a run database as weighted training labels.

    Parameters
    ----------
    db : path or ReviewStore
        A run directory, its ``mitoscope.sqlite``, or an open :class:`ReviewStore`.
    contested_weight : float
        Weight of items called equivocal once and decided by a later answer (0 < w <= 1).
    equivocal_as : {None, "mitotic", "not"}
        What an item whose latest answer is equivocal counts as; ``None`` leaves it out.
    equivocal_weight : float
        Its weight when ``equivocal_as`` is given (0 < w <= 1).
    """
    from ..io.reviewed import check_review_weights

    check_review_weights(contested_weight, equivocal_as, equivocal_weight)
    store = db if isinstance(db, ReviewStore) else ReviewStore(db)
    ann = read_reviewed(
        store.path, machine=store.machine, contested_weight=contested_weight,
        equivocal_as=equivocal_as, equivocal_weight=equivocal_weight,
    )  # fmt: skip
    out = []
    for i in range(len(ann)):
        uid = int(ann.uid[i])
        if uid not in store.by_uid:  # only the detections under review
            continue
        aty = float(ann.atypical[i])
        out.append(
            ReviewedLabel(
                uid=uid, slide=str(ann.image[i]), x=float(ann.x_px[i]), y=float(ann.y_px[i]),
                is_mf=bool(ann.is_mitosis[i]), atypical=not math.isnan(aty) and aty == 1.0,
                weight=float(ann.agreement[i]),
                answers=tuple(json.loads(str(ann.meta["answers"][i]))),
                reviewers=tuple(json.loads(str(ann.meta["reviewers"][i]))),
            )
        )  # fmt: skip
    return sorted(out, key=lambda lb: lb.uid)
