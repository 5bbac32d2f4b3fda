"""The reviewed labels of a run database, with a weight per label (the training side of review).

The class of a reviewed detection is its **latest** human answer (what ``agreedClass`` holds and
what ``mitoscope train``'s ``sliderunner`` source reads). Two kinds of items are uncertain:

- *contested*: someone answered "equivocal", and a later reviewer gave a definite answer (the
  second review decided it). Kept with that answer, at weight ``contested_weight`` (default 1:
  the second reviewer's answer counts fully; e.g. 0.5 halves such items' influence).
- *still equivocal*: the latest answer is "equivocal" (the second reviewer was unsure too, or
  nobody has done the second review yet). Excluded by default (``equivocal_as=None``), as the
  ``sliderunner`` training source does; or kept as ``equivocal_as`` ("mitotic" or "not") at
  weight ``equivocal_weight`` (default 0.25).

``weight`` multiplies a label's share of the training mass (e.g. ``sample_weight`` of a
scikit-learn estimator, or a sampler's per-sample weight).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import InvalidInputError
from ..io.sliderunner import CLASS_AMF, CLASS_MF, CLASS_NON_MF
from .store import CLASS_EQUIVOCAL, ReviewStore

#: what a definite answer means for training: class name -> is a mitotic figure
_IS_MF = {CLASS_MF: True, CLASS_AMF: True, CLASS_NON_MF: False}


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
    for name, w in (("contested_weight", contested_weight), ("equivocal_weight", equivocal_weight)):
        if not 0.0 < float(w) <= 1.0:
            raise InvalidInputError(f"{name} must be in (0, 1], got {w}")
    if equivocal_as not in (None, "mitotic", "not"):
        raise InvalidInputError(
            f"equivocal_as must be 'mitotic', 'not' or None, got {equivocal_as!r}"
        )
    store = db if isinstance(db, ReviewStore) else ReviewStore(db)
    out = []
    for uid, answers in sorted(store.answered().items()):
        item = store.by_uid.get(uid)
        if item is None or not answers:
            continue
        classes = tuple(a[1] for a in answers)
        latest = classes[-1]
        if latest == CLASS_EQUIVOCAL:
            if equivocal_as is None:
                continue
            is_mf, weight = equivocal_as == "mitotic", float(equivocal_weight)
        elif latest in _IS_MF:
            is_mf = _IS_MF[latest]
            weight = float(contested_weight) if CLASS_EQUIVOCAL in classes else 1.0
        else:  # a class this app does not write (edited in SlideRunner): not a training label
            continue
        out.append(
            ReviewedLabel(
                uid=uid, slide=item.slide_name, x=item.x, y=item.y, is_mf=is_mf,
                atypical=latest == CLASS_AMF, weight=weight,
                answers=classes, reviewers=tuple(a[0] for a in answers),
            )
        )  # fmt: skip
    return out
