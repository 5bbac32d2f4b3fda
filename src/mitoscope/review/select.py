"""``mitoscope select``: which detections to review next (active learning).

Two strategies score each unanswered detection of the runs:

- ``uncertainty`` (default): ``u = |p - threshold|``, small = the model is unsure.
- ``disagreement``: ``d`` = the spread (standard deviation) of the MF probability over the
  classifier's members and test-time views (:mod:`mitoscope.review.disagreement`), large = the
  ensemble disagrees. The averaged probability hides this: a mean of 0.6 comes from members
  that agree (0.6, 0.6) or that split (0.2, 1.0).

Picking is greedy over all runs and slides. The next item has the smallest ``u * (1 + k)``
(``uncertainty``) or the largest ``d / (1 + k)`` (``disagreement``), where ``k`` is how many
items its slide already has in the selection (diversity across slides); an item within
``min_dist_um`` of one already chosen on the same slide is skipped (no near-duplicates). The
distance is in micrometres, converted with each slide's pixel size from its ``*.summary.json``
beside the run database (``mitoscope detect`` writes it); a slide without one is refused rather
than given an assumed pixel size, unless ``min_dist_um=0`` (no distance rule). The result is a
review queue file: the review app shows its items for a run as the ``selected`` queue.
"""

from __future__ import annotations

import heapq
import json
import math
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from .store import QUEUE_FILE, ReviewStore

#: the selection strategies
STRATEGIES = ("uncertainty", "disagreement")
#: default minimum distance (um) between chosen detections of one slide (50 px at 0.25 um/px)
MIN_DIST_UM = 12.5

#: ``scorer(store, uids) -> {uid: disagreement}`` for the ``disagreement`` strategy
DisagreementScorer = Callable[[ReviewStore, list[int]], dict[int, float]]


def _key(strategy: str, base: float, k: int) -> float:
    """Heap key (smaller first) of an item whose slide already has ``k`` chosen items."""
    if strategy == "disagreement":
        return -base / (1 + k)
    return base * (1 + k)


def select_for_review(
    runs: list[str | os.PathLike[str]],
    *,
    budget: int,
    min_dist_um: float = MIN_DIST_UM,
    threshold: float | None = None,
    strategy: str = "uncertainty",
    disagreement: DisagreementScorer | None = None,
) -> list[dict[str, Any]]:
    """The ``budget`` detections to review next across ``runs`` (dicts, in review order).

    ``strategy="disagreement"`` needs ``disagreement``: a function of a run's
    :class:`ReviewStore` and the uids of its unanswered detections returning each one's
    disagreement (e.g. :func:`mitoscope.review.disagreement.classifier_disagreement`).

    ``min_dist_um``: detections of one slide closer than this (micrometres, with the slide's
    ``mpp`` from its ``*.summary.json``) to one already chosen are skipped; 0 turns the rule
    off. With the rule on, a slide of unknown pixel size is an :class:`InvalidInputError`.
    """
    if budget < 1:
        raise InvalidInputError("--budget must be at least 1")
    if not (math.isfinite(min_dist_um) and min_dist_um >= 0):
        raise InvalidInputError(f"--min-dist-um must be 0 or more (got {min_dist_um})")
    if strategy not in STRATEGIES:
        raise InvalidInputError(
            f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
        )
    if strategy == "disagreement" and disagreement is None:
        raise InvalidInputError("the disagreement strategy needs a classifier to score with")
    pool: list[tuple[float, int, Any, Path, float | None]] = []
    min_dist_px: dict[tuple[Path, int], float] = {}  # (database, slide) -> the rule in px
    for run in runs:
        store = ReviewStore(run, threshold=threshold)
        answered = set(store.answered())
        todo = [
            it for it in store.items if it.uid not in answered and math.isfinite(it.probability)
        ]
        if min_dist_um > 0:
            unknown = sorted(
                {it.slide_name for it in todo if store.slide_mpp.get(it.slide) is None}
            )
            if unknown:
                raise InvalidInputError(
                    f"{store.path}: pixel size unknown for {', '.join(map(repr, unknown))} (no "
                    "'mpp' in its .summary.json beside the database); --min-dist-um needs it "
                    "(--min-dist-um 0 chooses without the distance rule)"
                )
            for it in todo:
                min_dist_px[(store.path, it.slide)] = min_dist_um / store.slide_mpp[it.slide]
        spread = disagreement(store, [it.uid for it in todo]) if strategy == "disagreement" else {}
        for it in todo:
            u = abs(it.probability - it.threshold)
            d = spread.get(it.uid) if strategy == "disagreement" else None
            if strategy == "disagreement" and (d is None or not math.isfinite(d)):
                continue
            base = float(d) if d is not None else u
            pool.append((base, len(pool), it, store.path, d))
    picked: dict[tuple[Path, int], list[Any]] = defaultdict(list)
    heap = [(_key(strategy, b, 0), k, 0) for b, k, *_ in pool]  # (key, index, slide count)
    heapq.heapify(heap)
    out: list[dict[str, Any]] = []
    while heap and len(out) < budget:
        score, k, seen = heapq.heappop(heap)
        base, _, it, db, d = pool[k]
        key = (db, it.slide)
        if len(picked[key]) != seen:  # its slide gained items since: rescore
            heapq.heappush(heap, (_key(strategy, base, len(picked[key])), k, len(picked[key])))
            continue
        near = min_dist_px.get(key, 0.0)
        if near > 0 and any(math.hypot(it.x - o.x, it.y - o.y) < near for o in picked[key]):
            continue
        picked[key].append(it)
        entry = {
            "db": str(db.resolve()),
            "annotation": it.uid,
            "slide": it.slide_name,
            "x": it.x,
            "y": it.y,
            "probability": it.probability,
            "threshold": it.threshold,
            "uncertainty": round(abs(it.probability - it.threshold), 6),
            "strategy": strategy,
            "score": round(abs(score), 6),
        }
        if d is not None:
            entry["disagreement"] = round(float(d), 6)
        out.append(entry)
    return out


def write_queue(items: list[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write a review queue file (atomic)."""
    from ..io.atomic import atomic_write_text

    return atomic_write_text(path, json.dumps({"version": 1, "items": items}, indent=1) + "\n")


def write_queues(items: list[dict[str, Any]], out: str | os.PathLike[str] | None) -> list[Path]:
    """One file ``out`` with all items, or (``out=None``) ``review_queue.json`` beside each
    run's database with that run's items (which ``mitoscope review`` picks up by itself)."""
    if out is not None:
        return [write_queue(items, out)]
    by_db: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        by_db[item["db"]].append(item)
    return [write_queue(its, Path(db).parent / QUEUE_FILE) for db, its in by_db.items()]
