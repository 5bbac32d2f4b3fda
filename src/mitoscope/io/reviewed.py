"""Reviewed SlideRunner databases (``mitoscope review``'s answers) as weighted labels.

The class of a reviewed detection is its **latest** human answer (what ``agreedClass`` holds).
Two kinds of items are uncertain:

- *contested*: someone answered "equivocal", and a later reviewer gave a definite answer (the
  second review decided it). Kept with that answer, at weight ``contested_weight`` (default 1:
  the second reviewer's answer counts fully; e.g. 0.5 halves such items' influence).
- *still equivocal*: the latest answer is "equivocal" (the second reviewer was unsure too, or
  nobody has done the second review yet). Left out by default (``equivocal_as=None``); or kept
  as ``equivocal_as`` ("mitotic" or "not") at weight ``equivocal_weight`` (default 0.25).

Only human answers count: the detector's own label (person ``machine``, ``"mitoscope"``) is the
prediction under review, not a label, and detections nobody answered are not returned. A
definite answer is one of the review app's classes (``Mitotic figure`` = normal, ``Atypical
mitotic figure``, ``Non-mitotic figure``) or another name :func:`~mitoscope.io.records.
canonical_label` recognises; other class names (edited in SlideRunner) are not labels.

The weight is stored as the label's ``agreement``: ``mitoscope train`` feeds it to the loss
(``mf_loss = "agreement"``), :func:`mitoscope.review.labels.reviewed_labels` returns it as
``weight``. Read only; the database is never changed.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from collections import defaultdict
from pathlib import Path

from ..errors import InvalidInputError
from .records import MITOTIC, NON_MITOTIC, PointAnnotations, canonical_label, str_array
from .sliderunner import (
    CLASS_AMF,
    CLASS_MF,
    annotation_position,
    annotation_vertices,
    connect_readonly,
)

#: the review app's answer "equivocal" (a class of the run database)
CLASS_EQUIVOCAL = "Equivocal"
#: the run database of a run directory
RUN_DATABASE = "mitoscope.sqlite"
#: what ``equivocal_as`` may be
EQUIVOCAL_AS = ("mitotic", "not")


def run_database(path: str | os.PathLike[str]) -> Path:
    """A run directory (holding ``mitoscope.sqlite``) or a database file -> the database."""
    p = Path(path)
    if p.is_dir():
        p = p / RUN_DATABASE
    if not p.is_file():
        raise InvalidInputError(
            f"{path}: no SlideRunner database (a run directory with {RUN_DATABASE}, or a "
            ".sqlite file); run mitoscope detect first"
        )
    return p


def check_review_weights(
    contested_weight: float, equivocal_as: str | None, equivocal_weight: float
) -> None:
    """The down-weighting options must be weights in (0, 1] and a known ``equivocal_as``."""
    for name, w in (("contested_weight", contested_weight), ("equivocal_weight", equivocal_weight)):
        try:
            ok = 0.0 < float(w) <= 1.0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InvalidInputError(f"{name} must be in (0, 1], got {w}")
    if equivocal_as not in (None, *EQUIVOCAL_AS):
        raise InvalidInputError(
            f"equivocal_as must be 'mitotic', 'not' or None, got {equivocal_as!r}"
        )


def _definite(name: str) -> tuple[bool, float] | None:
    """``(is_mf, atypical)`` of a definite answer's class name, else None."""
    if name == CLASS_AMF:
        return True, 1.0
    if name == CLASS_MF:  # the app's key `m`: "mitotic figure, normal"
        return True, 0.0
    label, is_mf, atypical = canonical_label(name)
    if label in (MITOTIC, NON_MITOTIC):
        return is_mf, atypical
    return None


def read_reviewed(
    path: str | os.PathLike[str],
    *,
    machine: str = "mitoscope",
    contested_weight: float = 1.0,
    equivocal_as: str | None = None,
    equivocal_weight: float = 0.25,
) -> PointAnnotations:
    """The human-reviewed detections of a run database as weighted point labels.

    Parameters
    ----------
    path : path-like
        A run directory or its ``mitoscope.sqlite`` (any SlideRunner database).
    machine : str
        The person whose labels are the detector's predictions (not answers).
    contested_weight : float
        Weight of items called equivocal once and decided by a later answer (0 < w <= 1).
    equivocal_as : {None, "mitotic", "not"}
        What an item whose latest answer is equivocal counts as; ``None`` leaves it out.
    equivocal_weight : float
        Its weight when ``equivocal_as`` is given (0 < w <= 1).

    Returns
    -------
    PointAnnotations
        One row per reviewed detection: position as :func:`read_sliderunner` gives it, ``label``
        / ``is_mitosis`` / ``atypical`` from the latest answer, ``agreement`` = the weight,
        ``n_raters`` = distinct reviewers, ``uid`` = annotation uid; ``meta`` ``answers`` and
        ``reviewers`` (JSON lists, oldest first) and ``contested`` / ``equivocal`` (bool).
    """
    check_review_weights(contested_weight, equivocal_as, equivocal_weight)
    db = run_database(path)
    con = connect_readonly(db)
    try:
        slides = {int(u): str(f) for u, f in con.execute("SELECT uid, filename FROM Slides")}
        classes = {int(u): str(n) for u, n in con.execute("SELECT uid, name FROM Classes")}
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"Persons", "Annotations_label"} <= tables:
            return PointAnnotations.empty(
                images_all=sorted(set(slides.values())), source="reviewed"
            )
        persons = {int(u): str(n) for u, n in con.execute("SELECT uid, name FROM Persons")}
        answers: dict[int, list[tuple[str, str]]] = defaultdict(list)
        for anno, person, cls in con.execute(
            "SELECT annoId, person, class FROM Annotations_label ORDER BY uid"
        ):
            who = persons.get(int(person)) if person is not None else None
            if who is None or who == machine or anno is None:
                continue
            answers[int(anno)].append((who, classes.get(int(cls), "") if cls is not None else ""))
        annos = con.execute(
            "SELECT uid, slide, type FROM Annotations WHERE deleted = 0 OR deleted IS NULL "
            "ORDER BY uid"
        ).fetchall()
        coords = annotation_vertices(con)
    except sqlite3.DatabaseError as exc:
        raise InvalidInputError(f"{db.name}: unreadable SlideRunner tables ({exc})") from None
    finally:
        con.close()
    rows = []
    for uid, slide, atype in annos:
        given = answers.get(int(uid))
        pts = coords.get(int(uid))
        if not given or not pts:
            continue
        names = [c for _, c in given]
        latest = names[-1]
        equivocal = [c.strip().lower() == CLASS_EQUIVOCAL.lower() for c in names]
        if equivocal[-1]:
            if equivocal_as is None:
                continue
            is_mf, atypical, weight = equivocal_as == "mitotic", math.nan, float(equivocal_weight)
        else:
            found = _definite(latest)
            if found is None:
                continue
            is_mf, atypical = found
            weight = float(contested_weight) if any(equivocal) else 1.0
        x, y, _ = annotation_position(pts, atype)
        rows.append(
            (slides.get(int(slide), str(slide)), x, y, is_mf, atypical, weight,
             len({p for p, _ in given}), int(uid), json.dumps(names), json.dumps([p for p, _ in given]),
             any(equivocal) and not equivocal[-1], equivocal[-1])
        )  # fmt: skip
    return PointAnnotations.from_columns(
        image=str_array(r[0] for r in rows),
        x_px=[r[1] for r in rows],
        y_px=[r[2] for r in rows],
        label=[MITOTIC if r[3] else NON_MITOTIC for r in rows],
        is_mitosis=[r[3] for r in rows],
        atypical=[r[4] for r in rows],
        agreement=[r[5] for r in rows],
        n_raters=[r[6] for r in rows],
        uid=[r[7] for r in rows],
        meta={
            "answers": str_array(r[8] for r in rows),
            "reviewers": str_array(r[9] for r in rows),
            "contested": [r[10] for r in rows],
            "equivocal": [r[11] for r in rows],
        },
        images_all=sorted(set(slides.values())),
        source="reviewed",
    )
