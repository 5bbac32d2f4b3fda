"""The review state of a run: detections to review, queues, and the reviewers' answers, all in
the run's SlideRunner database (so SlideRunner opens the result).

Every answer is one ``Annotations_label`` row (the reviewer's ``Persons`` uid, the answer's
class) plus one ``Log`` row (``dateTime`` = when, ``labelId`` = the label), and the annotation's
``agreedClass`` / ``lastModified`` become the latest answer. Each answer is its own
``BEGIN IMMEDIATE`` transaction on its own connection, in WAL mode: committed before the
request returns, so a browser refresh or a killed server loses nothing answered, and
reviewers answering at once never overwrite each other.

An item is *open* until a human answered it; an item whose latest answer is "equivocal" and
that only one human answered goes to the ``second`` queue, which the first reviewer never
sees; after a second reviewer it is done.

Over 400 lines: :class:`ReviewStore` (about 340 lines) is the one owner of the run database's
review state: every query and every answer transaction goes through it, so the locking and WAL
rules stay in one class. A future split would separate the read-only queue queries from the answer
transactions.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..io.reviewed import CLASS_EQUIVOCAL
from ..io.reviewed import run_database as resolve_database
from ..io.sliderunner import (
    CLASS_AMF,
    CLASS_COLORS,
    CLASS_MF,
    CLASS_NON_MF,
    SCHEMA,
    annotation_position,
    annotation_vertices,
)

#: answer key -> SlideRunner class name
ANSWERS = {
    "mitotic": CLASS_MF,
    "atypical": CLASS_AMF,
    "not": CLASS_NON_MF,
    "equivocal": CLASS_EQUIVOCAL,
}
_COLORS = {**CLASS_COLORS, CLASS_EQUIVOCAL: "#00bfff"}
PRIMARY_QUEUES = ("uncertainty", "hotspot", "slide")
QUEUE_FILE = "review_queue.json"
#: a claimed item is skipped by other reviewers for this long (seconds)
CLAIM_S = 600.0
_PROB_RE = re.compile(r"mf_probability=([0-9.eE+\-]+|nan)")
_ATYP_RE = re.compile(r"atypical_probability=([0-9.eE+\-]+|nan)")
_NAME_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")


def _float(pattern: re.Pattern[str], text: str | None) -> float:
    m = pattern.search(text or "")
    return float(m.group(1)) if m else math.nan


def _mpp(value: Any) -> float | None:
    """A summary's ``mpp`` as a pixel size in um/px, or None when absent or not one."""
    try:
        mpp = float(value)
    except (TypeError, ValueError):
        return None
    return mpp if math.isfinite(mpp) and mpp > 0 else None


def check_reviewer(name: str, machine: str = "mitoscope") -> str:
    """A reviewer name: 1-64 printable characters, not the detector's own person."""
    name = str(name or "").strip()
    if not _NAME_RE.match(name):
        raise InvalidInputError("reviewer name must be 1-64 printable characters")
    if name.lower() == machine.lower():
        raise InvalidInputError(f"reviewer name {name!r} is the detector's; choose your own")
    return name


@dataclass
class Item:
    """One detection to review (level-0 px; ``x``, ``y``: its centre)."""

    uid: int
    slide: int
    slide_name: str
    x: float
    y: float
    probability: float
    atypical_probability: float
    threshold: float
    model_class: str
    outline: list[list[float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def num(v: float) -> float | None:
            return None if not math.isfinite(v) else round(float(v), 4)

        return {
            "id": self.uid,
            "slide_id": self.slide,
            "slide": self.slide_name,
            "x": self.x,
            "y": self.y,
            "probability": num(self.probability),
            "atypical_probability": num(self.atypical_probability),
            "threshold": num(self.threshold),
            "model_class": self.model_class,
            "outline": self.outline,
        }


class ReviewStore:
    """Items, queues and answers of one run database (thread-safe: one connection per call).

    Parameters
    ----------
    db_path : path-like
        The run's SlideRunner database (``mitoscope.sqlite``).
    machine : str
        The person whose labels are the detections under review (the writer's ``"mitoscope"``).
    threshold : float, optional
        Decision threshold for the uncertainty queue; default: the ``threshold`` of each slide's
        ``*.summary.json`` beside the database, else 0.5.
    queue_file : path-like, optional
        A ``review_queue.json`` written by ``mitoscope select``; default: the one beside the
        database when present. Its items for this database form the ``selected`` queue.

    Attributes
    ----------
    slide_mpp : dict
        Slide uid -> its pixel size (um/px) from its ``*.summary.json``, None when unknown
        (the SlideRunner database does not record it).
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        *,
        machine: str = "mitoscope",
        threshold: float | None = None,
        queue_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.path = resolve_database(db_path)
        self.machine = machine
        self._lock = threading.Lock()
        self._claims: dict[int, tuple[str, float]] = {}
        con = self._connect()
        try:
            _wal(con)
            tables = {
                r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            missing = [
                t
                for t in ("Slides", "Annotations", "Annotations_coordinates", "Classes")
                if t not in tables
            ]
            if missing:
                raise InvalidInputError(
                    f"{self.path.name} is not a SlideRunner database (missing {', '.join(missing)})"
                )
            with _write(con):
                for stmt in SCHEMA:  # Persons / Annotations_label / Log of older files
                    name = re.search(r"TABLE `(\w+)`", stmt)
                    if name and name.group(1) not in tables:
                        con.execute(stmt)
                self.class_uid = {c: _get_class(con, c) for c in ANSWERS.values()}
            self.items = self._load_items(con, threshold)
        except sqlite3.DatabaseError as exc:
            raise InvalidInputError(f"{self.path.name}: not a usable database ({exc})") from None
        finally:
            con.close()
        self.by_uid = {it.uid: it for it in self.items}
        self.class_name = {v: k for k, v in self.class_uid.items()}
        self.queues: dict[str, list[int]] = {
            "uncertainty": [
                it.uid
                for it in sorted(
                    self.items,
                    key=lambda it: (
                        abs(it.probability - it.threshold)
                        if math.isfinite(it.probability)
                        else math.inf,
                        it.uid,
                    ),
                )
            ],
            "hotspot": self._hotspot_order(),
            "slide": [
                it.uid for it in sorted(self.items, key=lambda it: (it.slide_name, it.y, it.x))
            ],
        }
        selected = self._selected(queue_file)
        if selected:
            self.queues["selected"] = selected

    # -- loading ------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None)
        con.execute("PRAGMA busy_timeout = 60000")
        return con

    def slide_summaries(self) -> dict[str, dict[str, Any]]:
        """The run's ``*.summary.json`` files next to the database, by slide file name.

        A file that cannot be read or parsed, or whose ``slide`` is not a string, is skipped.
        """
        out: dict[str, dict[str, Any]] = {}
        for f in sorted(self.path.parent.glob("*.summary.json")):
            try:
                d = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(d, dict) and isinstance(d.get("slide"), str):
                out[d["slide"]] = d
        return out

    def _load_items(self, con: sqlite3.Connection, threshold: float | None) -> list[Item]:
        machine = con.execute("SELECT uid FROM Persons WHERE name = ?", (self.machine,)).fetchall()
        if not machine:
            return []
        marks = ",".join("?" * len(machine))
        # every annotation's vertices in one pass (a correlated subquery per annotation is
        # quadratic: these tables have no index on annoId)
        coords = annotation_vertices(con)
        rows = con.execute(
            "SELECT a.uid, a.slide, s.filename, a.description, c.name, a.type "
            "FROM Annotations a JOIN Slides s ON s.uid = a.slide "
            "LEFT JOIN Classes c ON c.uid = a.agreedClass "
            "WHERE (a.deleted = 0 OR a.deleted IS NULL) AND a.uid IN "
            f"(SELECT annoId FROM Annotations_label WHERE person IN ({marks})) "
            "ORDER BY a.uid",
            [m[0] for m in machine],
        ).fetchall()
        model_class = dict(
            con.execute(
                "SELECT l.annoId, c.name FROM Annotations_label l JOIN Classes c "
                f"ON c.uid = l.class WHERE l.person IN ({marks}) ORDER BY l.uid",
                [m[0] for m in machine],
            ).fetchall()
        )
        summaries = self.slide_summaries()
        self.hotspots: dict[int, tuple[float, float, float]] = {}
        self.slide_mpp: dict[int, float | None] = {}
        items = []
        for uid, slide, fname, desc, _cls, atype in rows:
            pts = coords.get(int(uid))
            if not pts:
                continue
            # the detection's centre: the spot itself, a polygon's centroid, a box's centre
            # (the reader's one rule), never a polygon's first vertex
            x, y, _ = annotation_position(pts, atype)
            summ = summaries.get(str(fname), {})
            if int(slide) not in self.slide_mpp:
                self.slide_mpp[int(slide)] = _mpp(summ.get("mpp"))
            thr = threshold if threshold is not None else float(summ.get("threshold", 0.5))
            items.append(
                Item(
                    uid=int(uid),
                    slide=int(slide),
                    slide_name=str(fname),
                    x=float(x),
                    y=float(y),
                    probability=_float(_PROB_RE, desc),
                    atypical_probability=_float(_ATYP_RE, desc),
                    threshold=thr,
                    model_class=str(model_class.get(uid, "")),
                )
            )
            hs = summ.get("hotspot_2mm2") or {}
            mpp = self.slide_mpp[int(slide)]
            if int(slide) not in self.hotspots and hs.get("center_px") and mpp:
                cx, cy = hs["center_px"]
                self.hotspots[int(slide)] = (float(cx), float(cy), hs["radius_um"] / mpp)
        _attach_outlines(items, self.path.parent)
        return items

    def _hotspot_order(self) -> list[int]:
        """Detections in each slide's hotspot field (from ``*.summary.json``) first, nearest to
        its centre first; then the rest by local density (detections within 500 px)."""
        import numpy as np

        inside, rest = [], []
        by_slide: dict[int, list[Item]] = {}
        for it in self.items:
            by_slide.setdefault(it.slide, []).append(it)
        for slide, its in by_slide.items():
            xy = np.array([[it.x, it.y] for it in its])
            d2 = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1) if len(its) < 5000 else None
            hs = self.hotspots.get(slide)
            for i, it in enumerate(its):
                density = int((d2[i] < 500.0**2).sum()) if d2 is not None else 0
                if hs is not None:
                    dist = math.hypot(it.x - hs[0], it.y - hs[1])
                    if dist <= hs[2]:
                        inside.append((dist, it.uid))
                        continue
                rest.append((-density, it.uid))
        return [u for _, u in sorted(inside)] + [u for _, u in sorted(rest)]

    def _selected(self, queue_file: str | os.PathLike[str] | None) -> list[int]:
        qf = Path(queue_file) if queue_file else self.path.parent / QUEUE_FILE
        if not qf.is_file():
            if queue_file:
                raise InvalidInputError(f"{qf}: queue file not found")
            return []
        try:
            data = json.loads(qf.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"{qf.name}: not a review queue file ({exc})") from None
        me = self.path.resolve()
        out = []
        for entry in data.get("items", []) if isinstance(data, dict) else []:
            try:
                db = Path(entry["db"])
                if not db.is_absolute():
                    db = qf.parent / db
                uid = int(entry["annotation"])
            except (KeyError, TypeError, ValueError):
                continue
            if db.resolve() == me and uid in self.by_uid:
                out.append(uid)
        return out

    # -- state --------------------------------------------------------------------------------
    def _answers(self, con: sqlite3.Connection) -> dict[int, list[tuple[str, str, int]]]:
        """annotation uid -> [(person, class name, label uid)] of human answers, oldest first."""
        out: dict[int, list[tuple[str, str, int]]] = {}
        for anno, person, cls, label in con.execute(
            "SELECT l.annoId, p.name, c.name, l.uid FROM Annotations_label l "
            "JOIN Persons p ON p.uid = l.person JOIN Classes c ON c.uid = l.class "
            "WHERE p.name != ? ORDER BY l.uid",
            (self.machine,),
        ):
            out.setdefault(int(anno), []).append((str(person), str(cls), int(label)))
        return out

    def answered(self) -> dict[int, list[tuple[str, str, int]]]:
        """Annotation uid -> its human answers ``(person, class name, label uid)``, oldest
        first."""
        con = self._connect()
        try:
            return self._answers(con)
        finally:
            con.close()

    @staticmethod
    def _needs_second(answers: list[tuple[str, str, int]]) -> bool:
        people = {a[0] for a in answers}
        return bool(answers) and answers[-1][1] == CLASS_EQUIVOCAL and len(people) < 2

    def progress(self) -> dict[str, dict[str, int]]:
        """Per queue: ``total`` items and ``done`` (answered; second queue: second answer)."""
        con = self._connect()
        try:
            answers = self._answers(con)
        finally:
            con.close()
        out = {}
        for name, uids in self.queues.items():
            out[name] = {"total": len(uids), "done": sum(1 for u in uids if u in answers)}
        equivocal = [
            u
            for u, a in answers.items()
            if u in self.by_uid and any(c[1] == CLASS_EQUIVOCAL for c in a)
        ]
        out["second"] = {
            "total": len(equivocal),
            "done": sum(1 for u in equivocal if not self._needs_second(answers[u])),
        }
        return out

    def next_item(self, queue: str, reviewer: str, *, skip: tuple[int, ...] = ()) -> Item | None:
        """The first open item of ``queue`` for ``reviewer`` (claimed for them for a while, so
        a second reviewer on the same queue gets another one)."""
        if queue != "second" and queue not in self.queues:
            raise InvalidInputError(f"unknown queue {queue!r}")
        con = self._connect()
        try:
            answers = self._answers(con)
        finally:
            con.close()
        if queue == "second":
            order = [
                u
                for u in self.queues["uncertainty"]
                if u in answers
                and self._needs_second(answers[u])
                and reviewer not in {a[0] for a in answers[u]}
            ]
        else:
            order = [u for u in self.queues[queue] if u not in answers]
        now = time.monotonic()
        with self._lock:
            for u in order:
                if u in skip:
                    continue
                claim = self._claims.get(u)
                if claim and claim[0] != reviewer and now - claim[1] < CLAIM_S:
                    continue
                for k, (who, _) in list(self._claims.items()):
                    if who == reviewer:
                        del self._claims[k]
                self._claims[u] = (reviewer, now)
                return self.by_uid[u]
        return None

    def history(self, uid: int) -> list[dict[str, Any]]:
        """The human answers on one item, oldest first: person, answer, time."""
        con = self._connect()
        try:
            rows = con.execute(
                "SELECT p.name, c.name, (SELECT MAX(dateTime) FROM Log g WHERE g.labelId = l.uid) "
                "FROM Annotations_label l JOIN Persons p ON p.uid = l.person "
                "JOIN Classes c ON c.uid = l.class WHERE l.annoId = ? AND p.name != ? "
                "ORDER BY l.uid",
                (int(uid), self.machine),
            ).fetchall()
        finally:
            con.close()
        keys = {v: k for k, v in ANSWERS.items()}
        return [{"reviewer": p, "answer": keys.get(c, c), "time": t} for p, c, t in rows]

    def answer(self, uid: int, reviewer: str, answer: str) -> int:
        """Store one answer now (own transaction, committed before returning); the label uid."""
        reviewer = check_reviewer(reviewer, self.machine)
        if answer not in ANSWERS:
            raise InvalidInputError(f"unknown answer {answer!r}; one of {', '.join(ANSWERS)}")
        if uid not in self.by_uid:
            raise InvalidInputError(f"no detection {uid} under review in this run")
        cls = self.class_uid[ANSWERS[answer]]
        now = time.time()
        con = self._connect()
        try:
            with _write(con):
                row = con.execute("SELECT uid FROM Persons WHERE name = ?", (reviewer,)).fetchone()
                if row:
                    person = int(row[0])
                else:
                    person = int(
                        con.execute(
                            "INSERT INTO Persons (name, isExactUser) VALUES (?, 0)", (reviewer,)
                        ).lastrowid
                    )
                label = int(
                    con.execute(
                        "INSERT INTO Annotations_label (person, class, annoId) VALUES (?, ?, ?)",
                        (person, cls, int(uid)),
                    ).lastrowid
                )
                con.execute("INSERT INTO Log (dateTime, labelId) VALUES (?, ?)", (now, label))
                con.execute(
                    "UPDATE Annotations SET agreedClass = ?, lastModified = ? WHERE uid = ?",
                    (cls, now, int(uid)),
                )
        finally:
            con.close()
        with self._lock:
            self._claims.pop(uid, None)
        return label


class _write:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con = con

    def __enter__(self) -> sqlite3.Connection:
        self.con.execute("BEGIN IMMEDIATE")
        return self.con

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.con.execute("ROLLBACK" if exc_type else "COMMIT")


def _wal(con: sqlite3.Connection) -> None:
    """Switch the database to WAL (readers never block the writer; survives a kill); the
    switch needs the database to itself, so it is retried while others use it."""
    for attempt in range(100):
        try:
            if con.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            con.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            if attempt == 99:
                raise
            time.sleep(0.05)


def _get_class(con: sqlite3.Connection, name: str) -> int:
    row = con.execute("SELECT uid FROM Classes WHERE name = ? ORDER BY uid LIMIT 1", (name,))
    found = row.fetchone()
    if found:
        return int(found[0])
    cur = con.execute(
        "INSERT INTO Classes (name, color) VALUES (?, ?)", (name, _COLORS.get(name, "#808080"))
    )
    return int(cur.lastrowid)


def _stem(name: str) -> str:
    base = Path(name).name
    for suffix in (".ome.tiff", ".ome.tif"):
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return Path(base).stem or base


def _attach_outlines(items: list[Item], run_dir: Path, max_px: float = 4.0) -> None:
    """Outlines from the run's ``<slide stem>.geojson``: the polygon whose centroid is nearest
    the detection (within ``max_px``)."""
    import numpy as np

    by_slide: dict[str, list[Item]] = {}
    for it in items:
        by_slide.setdefault(it.slide_name, []).append(it)
    for name, its in by_slide.items():
        f = run_dir / f"{_stem(name)}.geojson"
        if not f.is_file():
            continue
        try:
            feats = json.loads(f.read_text()).get("features", [])
        except (OSError, ValueError, AttributeError):
            continue
        polys, cents = [], []
        for feat in feats:
            geom = (feat or {}).get("geometry") or {}
            if geom.get("type") != "Polygon" or not geom.get("coordinates"):
                continue
            ring = np.asarray(geom["coordinates"][0], dtype=np.float64)
            if ring.ndim != 2 or len(ring) < 3:
                continue
            polys.append(ring)
            cents.append(ring.mean(axis=0))
        if not polys:
            continue
        c = np.asarray(cents)
        for it in its:
            d = np.hypot(c[:, 0] - it.x, c[:, 1] - it.y)
            k = int(d.argmin())
            if d[k] <= max_px + 0.5 * float(np.ptp(polys[k], axis=0).max()):
                it.outline = [[round(float(a), 1), round(float(b), 1)] for a, b in polys[k]]
