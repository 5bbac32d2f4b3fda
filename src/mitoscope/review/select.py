"""``mitoscope select``: which detections to review next (active learning).

Each unanswered detection of the runs scores ``u = |p - threshold|`` (small = the model is
unsure). Picking is greedy over all runs and slides: the next item has the smallest
``u * (1 + k)``, where ``k`` is how many items its slide already has in the selection
(diversity across slides), and an item within ``min_dist_px`` of one already chosen on the same
slide is skipped (no near-duplicates). The result is a review queue file: the review app shows
its items for a run as the ``selected`` queue.
"""

from __future__ import annotations

import heapq
import json
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from .store import QUEUE_FILE, ReviewStore


def select_for_review(
    runs: list[str | os.PathLike[str]],
    *,
    budget: int,
    min_dist_px: float = 50.0,
    threshold: float | None = None,
) -> list[dict[str, Any]]:
    """The ``budget`` detections to review next across ``runs`` (dicts, in review order)."""
    if budget < 1:
        raise InvalidInputError("--budget must be at least 1")
    pool: list[tuple[float, int, Any, Path]] = []
    for run in runs:
        store = ReviewStore(run, threshold=threshold)
        answered = set(store.answered())
        for it in store.items:
            if it.uid in answered or not math.isfinite(it.probability):
                continue
            pool.append((abs(it.probability - it.threshold), len(pool), it, store.path))
    picked: dict[tuple[Path, int], list[Any]] = defaultdict(list)
    heap = [(u, k, 0) for u, k, _, _ in pool]  # (score, index, slide count when scored)
    heapq.heapify(heap)
    out: list[dict[str, Any]] = []
    while heap and len(out) < budget:
        score, k, seen = heapq.heappop(heap)
        u, _, it, db = pool[k]
        key = (db, it.slide)
        if len(picked[key]) != seen:  # its slide gained items since: rescore
            heapq.heappush(heap, (u * (1 + len(picked[key])), k, len(picked[key])))
            continue
        if any(math.hypot(it.x - o.x, it.y - o.y) < min_dist_px for o in picked[key]):
            continue
        picked[key].append(it)
        out.append(
            {
                "db": str(db.resolve()),
                "annotation": it.uid,
                "slide": it.slide_name,
                "x": it.x,
                "y": it.y,
                "probability": it.probability,
                "threshold": it.threshold,
                "uncertainty": round(u, 6),
                "score": round(score, 6),
            }
        )
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
