"""SlideRunner SQLite databases: read labels (CCMCT, CMC, TUPAC alternative labels, MIDOG) and
write detections that open in SlideRunner.

Schema (copied exactly from a real SlideRunner database; one row per object in ``Annotations``)::

    Slides(uid, filename, width, height, directory, uuid, exactImageID, EXACTUSER)
    Classes(uid, name, color)            Persons(uid, name, isExactUser)
    Annotations(uid, slide, guid, lastModified, deleted, type, agreedClass, description)
    Annotations_coordinates(uid, coordinateX, coordinateY, slide, annoId, orderIdx, coordinateZ)
    Annotations_label(uid, person, class, exact_id, annoId)      Log(uid, dateTime, labelId)

Annotation ``type``: 1 spot, 2 rectangle ("area"), 3 polygon, 4 special spot, 5 circle.
``agreedClass`` is the consensus class; ``Annotations_label`` holds each person's vote.

Over 400 lines: the reader and :class:`SlideRunnerDB` (an atomic, resumable writer) share
the verbatim schema and class names; the writer is about half of it.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sqlite3
import time
import uuid as _uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError, OutputError
from .records import (
    PointAnnotations,
    canonical_label,
    check_file,
    polygon_centroid,
    str_array,
)
from .registry import register_reader

#: the CREATE TABLE statements of a real SlideRunner database, verbatim
SCHEMA = (
    "CREATE TABLE `Annotations_label` (\t`uid`\tINTEGER PRIMARY KEY AUTOINCREMENT UNIQUE,\t"
    "`person`\tINTEGER,\t`class`\tINTEGER,   `exact_id` INTEGER,\t`annoId`\tINTEGER)",
    "CREATE TABLE `Annotations_coordinates` (`uid`\tINTEGER PRIMARY KEY AUTOINCREMENT UNIQUE,"
    "`coordinateX`\tINTEGER,`coordinateY`\tINTEGER,`slide`\tINTEGER,`annoId`\tINTEGER,"
    "`orderIdx`\tINTEGER, `coordinateZ` INTEGER DEFAULT 0)",
    "CREATE TABLE `Annotations` (`uid`\tINTEGER PRIMARY KEY AUTOINCREMENT UNIQUE,`slide`\t"
    "INTEGER,`guid`\tTEXT,`lastModified`\tREAL DEFAULT 1591251450.2519374,`deleted`\tINTEGER "
    "DEFAULT 0,`type`\tINTEGER,`agreedClass`\tINTEGER,`description` TEXT)",
    "CREATE TABLE `Classes` (`uid`\tINTEGER PRIMARY KEY AUTOINCREMENT UNIQUE,`name`\tTEXT,"
    "`color` TEXT)",
    "CREATE TABLE `Persons` (`uid`\tINTEGER PRIMARY KEY AUTOINCREMENT UNIQUE,`name`\tTEXT,"
    "`isExactUser` INTEGER DEFAULT 0)",
    "CREATE TABLE `Slides` (`uid`\tINTEGER PRIMARY KEY AUTOINCREMENT UNIQUE,`filename`\tTEXT,"
    "`width`\tINTEGER,`height`\tINTEGER,`directory` TEXT,`uuid` TEXT,`exactImageID` TEXT, "
    "`EXACTUSER` INTEGER DEFAULT 0)",
    "CREATE TABLE `Log` (`uid` INTEGER PRIMARY KEY AUTOINCREMENT,`dateTime` FLOAT,`labelId` "
    "INTEGER)",
)

_REQUIRED = ("Slides", "Annotations", "Annotations_coordinates", "Classes")
SPOT, AREA, POLYGON, SPECIAL_SPOT, CIRCLE = 1, 2, 3, 4, 5

#: class names and colours written by :class:`SlideRunnerDB`
CLASS_MF = "Mitotic figure"
CLASS_AMF = "Atypical mitotic figure"
CLASS_NON_MF = "Non-mitotic figure"
CLASS_COLORS = {CLASS_MF: "#ff0000", CLASS_AMF: "#ff00ff", CLASS_NON_MF: "#ffff00"}

_PROB_RE = re.compile(r"mf_probability=([0-9.eE+\-]+|nan)")
_ATYP_RE = re.compile(r"atypical_probability=([0-9.eE+\-]+|nan)")


def connect_readonly(p: Path) -> sqlite3.Connection:
    """Open a SlideRunner database read-only, checking it has the tables every reader needs.

    Raises :class:`~mitoscope.errors.InvalidInputError` when ``p`` is not a SQLite database or
    lacks ``Slides``, ``Annotations``, ``Annotations_coordinates`` or ``Classes``.
    """
    try:
        con = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise InvalidInputError(f"{p.name} is not a SQLite database ({exc})") from None
    missing = [t for t in _REQUIRED if t not in tables]
    if missing:
        con.close()
        raise InvalidInputError(
            f"{p.name} is not a SlideRunner database: missing table(s) {', '.join(missing)}"
        )
    return con


@register_reader(
    "sliderunner", suffixes=(".sqlite", ".sqlite3", ".db"),
    description="SlideRunner SQLite database",
)  # fmt: skip
def read_sliderunner(
    path: str | os.PathLike[str],
    *,
    exclude_persons: tuple[str, ...] = ("consensus",),
    include_deleted: bool = False,
) -> PointAnnotations:
    """Read a SlideRunner SQLite database into :class:`PointAnnotations`.

    Parameters
    ----------
    path : path-like
        The ``.sqlite`` file (opened read-only).
    exclude_persons : tuple of str
        Persons (matched case-insensitively by name) whose labels are not counted as rater
        votes -- by default the pseudo-rater "Consensus", whose label is the outcome of the
        discussion rather than an independent vote.
    include_deleted : bool
        Also return annotations flagged ``deleted``.

    Returns
    -------
    PointAnnotations
        ``label`` from ``agreedClass`` (canonicalised: "Mitose" -> "mitotic figure", "Hard
        negative" -> "non-mitotic figure"); position = the spot, the centre of a rectangle or
        circle, or the centroid of a polygon; ``agreement`` = share of the remaining persons'
        latest votes equal to ``agreedClass``; ``image`` = ``Slides.filename``; ``meta`` has
        ``slide`` (Slides.uid), ``class_name`` (raw), ``type``, ``guid``; ``score`` is parsed from
        ``description`` when it holds ``mf_probability=...`` (as written by
        :class:`SlideRunnerDB`); ``images_all`` lists all slides.
    """
    p = check_file(path, "SlideRunner database")
    con = connect_readonly(p)
    try:
        return _read(con, p, exclude_persons, include_deleted)
    except sqlite3.DatabaseError as exc:
        raise InvalidInputError(f"{p.name}: unreadable SlideRunner tables ({exc})") from None
    finally:
        con.close()


def annotation_vertices(con: sqlite3.Connection) -> dict[int, list[tuple[float, float]]]:
    """Each annotation's vertices in drawing order (``Annotations_coordinates``), by its uid."""
    coords: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for anno, x, y in con.execute(
        "SELECT annoId, coordinateX, coordinateY FROM Annotations_coordinates "
        "ORDER BY annoId, orderIdx, uid"
    ):
        if anno is not None:
            coords[int(anno)].append((float(x), float(y)))
    return coords


def _read(
    con: sqlite3.Connection, p: Path, exclude_persons: tuple[str, ...], include_deleted: bool
) -> PointAnnotations:
    slides = con.execute("SELECT uid, filename, width, height, directory FROM Slides ORDER BY uid")
    slide_name: dict[int, str] = {}
    image_meta: dict[str, dict[str, Any]] = {}
    for uid, filename, width, height, directory in slides:
        slide_name[uid] = str(filename)
        image_meta[str(filename)] = {
            "slide": uid,
            "width": width,
            "height": height,
            "directory": directory,
        }
    classes = {uid: str(name) for uid, name in con.execute("SELECT uid, name FROM Classes")}
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    excluded: set[int] = set()
    if "Persons" in tables:
        low = tuple(e.lower() for e in exclude_persons)
        excluded = {
            uid
            for uid, name in con.execute("SELECT uid, name FROM Persons")
            if str(name).strip().lower() in low
        }
    where = "" if include_deleted else "WHERE deleted = 0 OR deleted IS NULL"
    annos = con.execute(
        f"SELECT uid, slide, guid, type, agreedClass, description FROM Annotations {where} "
        "ORDER BY uid"
    ).fetchall()
    coords = annotation_vertices(con)
    votes: dict[int, dict[int, int]] = defaultdict(dict)
    if "Annotations_label" in tables:
        for anno, person, cls in con.execute(
            "SELECT annoId, person, class FROM Annotations_label ORDER BY uid"
        ):
            votes[anno][person] = cls  # later labels by the same person replace earlier ones

    rows: list[tuple[Any, ...]] = []
    has_box = False
    for uid, slide, guid, atype, agreed, description in annos:
        pts = coords.get(uid)
        if not pts:
            continue
        x, y, box = annotation_position(pts, atype)
        has_box |= box is not None
        person_votes = {k: v for k, v in votes.get(uid, {}).items() if k not in excluded}
        cls = agreed
        if not cls:  # no consensus stored: majority of votes, else the last label
            all_votes = list(person_votes.values()) or list(votes.get(uid, {}).values())
            cls = max(set(all_votes), key=all_votes.count) if all_votes else None
        if person_votes:
            agreement = sum(1 for v in person_votes.values() if v == cls) / len(person_votes)
            n_raters = len(person_votes)
        else:
            agreement, n_raters = 1.0, 1
        rows.append(
            (slide, x, y, box, classes.get(cls, "" if cls is None else str(cls)), agreement,
             n_raters, uid, guid, atype, description or "")
        )  # fmt: skip
    n = len(rows)
    raw_class = [r[4] for r in rows]
    canon = [canonical_label(c) for c in raw_class]
    score = np.full(n, np.nan)
    atyp_prob = np.full(n, np.nan)
    for i, r in enumerate(rows):
        m = _PROB_RE.search(r[10])
        if m:
            score[i] = float(m.group(1))
        m = _ATYP_RE.search(r[10])
        if m:
            atyp_prob[i] = float(m.group(1))
    meta: dict[str, Any] = {
        "slide": np.array([r[0] for r in rows], dtype=np.int64),
        "class_name": str_array(raw_class),
        "type": np.array([r[9] for r in rows], dtype=np.int64),
        "guid": str_array(r[8] for r in rows),
    }
    if np.isfinite(atyp_prob).any():
        meta["atypical_probability"] = atyp_prob
    bbox = None
    if has_box:
        bbox = np.array(
            [r[3] if r[3] is not None else (np.nan,) * 4 for r in rows], dtype=np.float64
        ).reshape(-1, 4)
    return PointAnnotations(
        image=str_array(slide_name.get(r[0], str(r[0])) for r in rows),
        x_px=np.array([r[1] for r in rows], dtype=np.float64),
        y_px=np.array([r[2] for r in rows], dtype=np.float64),
        label=str_array(c[0] for c in canon),
        is_mitosis=np.array([c[1] for c in canon], dtype=bool),
        score=score,
        atypical=np.array([c[2] for c in canon], dtype=np.float64),
        agreement=np.array([r[5] for r in rows], dtype=np.float64),
        n_raters=np.array([r[6] for r in rows], dtype=np.int64),
        uid=str_array(r[7] for r in rows),
        bbox=bbox,
        meta=meta,
        images_all=list(image_meta),
        image_meta=image_meta,
        source="sliderunner",
    )


def annotation_position(
    pts: list[tuple[float, float]], atype: int | None
) -> tuple[float, float, tuple[float, float, float, float] | None]:
    """An annotation's position ``(x, y, box)`` from its vertices and SlideRunner ``type``.

    A spot (or a single vertex) is itself, with no box; otherwise ``box`` is the vertices'
    ``(x0, y0, x1, y1)`` and the position is a polygon's centroid (three or more vertices) or
    the box centre (rectangle, circle). The one rule every SlideRunner reader places by.
    """
    arr = np.asarray(pts, dtype=np.float64)
    if atype in (SPOT, SPECIAL_SPOT) or len(arr) == 1:
        return float(arr[0, 0]), float(arr[0, 1]), None
    x0, y0 = arr.min(axis=0)
    x1, y1 = arr.max(axis=0)
    box = (float(x0), float(y0), float(x1), float(y1))
    if atype == POLYGON and len(arr) >= 3:
        cx, cy = polygon_centroid(arr)
        return cx, cy, box
    return 0.5 * (x0 + x1), 0.5 * (y0 + y1), box


# -- writer ----------------------------------------------------------------------------------
class SlideRunnerDB:
    """Create or append to a SlideRunner-compatible SQLite database of detections.

    One database holds a whole run: :meth:`add_slide` registers a slide (or finds it by file
    name) and replaces the annotations this writer made for it before, so re-running a slide
    never duplicates its detections; each call is one transaction. Human annotations in an
    existing database are left alone.

    Detections become type-1 (spot) annotations at the detection centre with class
    "Mitotic figure" or "Atypical mitotic figure" (and, with ``include_negatives``,
    "Non-mitotic figure" for candidates below the threshold), one label by the person
    ``"mitoscope"``, and ``description`` ``"mf_probability=0.931 atypical_probability=0.120"``.

    The triggers of SlideRunner's own databases call Python functions that SlideRunner
    registers when it opens a file; this writer registers the same functions (so appending to such
    a database works) but creates new files without triggers -- it fills ``guid`` and
    ``lastModified`` itself -- so they stay writable by plain ``sqlite3``.

    Examples
    --------
    >>> with SlideRunnerDB("run.sqlite") as db:  # doctest: +SKIP
    ...     db.add_slide("slide1.svs", width=40000, height=30000, directory="/data",
    ...                  detections=dets, threshold=0.5)
    """

    def __init__(self, path: str | os.PathLike[str], *, person: str = "mitoscope") -> None:
        self.path = Path(path)
        self.person = person
        if not self.path.exists():
            self._create()
        try:
            # autocommit mode; writes use explicit BEGIN IMMEDIATE (see _transaction)
            self._con = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None)
            self._con.execute("PRAGMA foreign_keys = OFF")
            tables = {
                r[0] for r in self._con.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        except sqlite3.DatabaseError as exc:
            raise OutputError(
                f"{self.path} is not a SQLite database ({exc}); choose a new file"
            ) from None
        missing = [t for t in (*_REQUIRED, "Persons", "Annotations_label") if t not in tables]
        if missing:
            self._con.close()
            raise OutputError(
                f"{self.path} exists but is not a SlideRunner database (missing "
                f"{', '.join(missing)}); choose a new file"
            )
        self._install_functions()
        with self._transaction():
            self._person_uid = self._get_or_create("Persons", self.person)

    def _create(self) -> None:
        """Create the schema in a temporary file and move it into place without ever
        replacing a database another process created meanwhile (parallel cohort workers)."""
        import tempfile

        from .atomic import prepare_dir, temp_prefix

        parent = prepare_dir(self.path)
        try:
            fd, name = tempfile.mkstemp(
                prefix=temp_prefix(self.path.name), suffix=".tmp", dir=parent
            )
        except OSError as exc:
            raise OutputError(f"cannot write in {parent}: {exc.strerror}") from None
        os.close(fd)
        tmp = Path(name)
        try:
            con = sqlite3.connect(str(tmp))
            try:
                with con:
                    for stmt in SCHEMA:
                        con.execute(stmt)
            finally:
                con.close()
            try:
                os.link(tmp, self.path)  # atomic, fails if the database exists by now
            except FileExistsError:
                pass
            except OSError:  # filesystems without hard links
                if not self.path.exists():
                    os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _install_functions(self) -> None:
        # SlideRunner's own databases carry triggers that call these; provide them so appending
        # to such a file (e.g. one opened in SlideRunner before) works.
        self._con.create_function("pycurrent_time", 0, time.time)
        self._con.create_function("generate_uuid", 0, lambda: str(_uuid.uuid4()))
        self._con.create_function("randcolor", 0, lambda: "#%06x" % (_uuid.uuid4().int & 0xFFFFFF))

    # -- context manager ----------------------------------------------------------------------
    def __enter__(self) -> SlideRunnerDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        con = getattr(self, "_con", None)
        if con is not None:
            con.close()
            self._con = None  # type: ignore[assignment]

    # -- helpers ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction holding the database's write lock from its start, so parallel
        writers (cohort workers) never both insert the same person, class or slide."""
        try:
            self._con.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise OutputError(f"cannot write to {self.path}: {exc}") from None
        try:
            yield
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")

    def _get_or_create(self, table: str, name: str, color: str | None = None) -> int:
        row = self._con.execute(
            f"SELECT uid FROM {table} WHERE name = ? ORDER BY uid LIMIT 1", (name,)
        ).fetchone()
        if row:
            return int(row[0])
        if table == "Classes":
            cur = self._con.execute(
                "INSERT INTO Classes (name, color) VALUES (?, ?)", (name, color or "#ff0000")
            )
        else:
            cur = self._con.execute(
                "INSERT INTO Persons (name, isExactUser) VALUES (?, 0)", (name,)
            )
        return int(cur.lastrowid)

    def class_uid(self, name: str) -> int:
        """Uid of class ``name``, created (with its colour) when missing."""
        with self._transaction():
            return self._get_or_create("Classes", name, CLASS_COLORS.get(name))

    def slides(self) -> dict[str, int]:
        """File name -> slide uid of all slides in the database."""
        return {str(f): int(u) for u, f in self._con.execute("SELECT uid, filename FROM Slides")}

    # -- public API ---------------------------------------------------------------------------
    def add_slide(
        self,
        filename: str,
        *,
        width: int,
        height: int,
        directory: str = "",
        detections: Any = None,
        threshold: float = 0.5,
        atypical_threshold: float = 0.5,
        include_negatives: bool = False,
        floor: float = 0.0,
    ) -> int:
        """Add (or update) a slide and replace this writer's annotations on it.

        Parameters
        ----------
        filename : str
            Slide file name as SlideRunner shows it (e.g. ``"case1.svs"``); the slide is matched
            by this name.
        width, height : int
            Level-0 size in pixels.
        directory : str
            Folder of the slide file (SlideRunner looks there first).
        detections : mitoscope.types.Detections, optional
            Detections in level-0 px; ``None`` only registers the slide.
        threshold : float
            ``mf_probability`` at or above which a detection is a mitotic figure.
        atypical_threshold : float
            ``atypical_probability`` at or above which a mitotic figure is "Atypical mitotic
            figure" (NaN -> "Mitotic figure").
        include_negatives : bool
            Also store candidates with ``floor <= p < threshold`` as "Non-mitotic figure".
        floor : float
            Lowest probability stored with ``include_negatives``.

        Returns
        -------
        int
            The slide uid.
        """
        filename = str(filename)
        if not filename:
            raise InvalidInputError("SlideRunnerDB.add_slide needs a slide file name")
        rows = []
        if detections is not None and len(detections):
            p = np.asarray(detections.mf_probability, dtype=np.float64)
            a = np.asarray(detections.atypical_probability, dtype=np.float64)
            for i in range(len(p)):
                if p[i] >= threshold:
                    cname = (
                        CLASS_AMF
                        if (np.isfinite(a[i]) and a[i] >= atypical_threshold)
                        else CLASS_MF
                    )
                elif include_negatives and p[i] >= floor:
                    cname = CLASS_NON_MF
                else:
                    continue
                desc = f"mf_probability={_fmt(p[i])} atypical_probability={_fmt(a[i])}"
                x = int(round(float(detections.x_px[i])))
                y = int(round(float(detections.y_px[i])))
                rows.append((cname, x, y, desc))
        classes = (CLASS_MF, CLASS_AMF) + ((CLASS_NON_MF,) if include_negatives else ())
        return self._write_slide(filename, width, height, directory, rows, classes)

    def add_labels(
        self,
        filename: str,
        *,
        width: int,
        height: int,
        directory: str = "",
        classes: Any,
        x_px: Any,
        y_px: Any,
        descriptions: Any = None,
        colors: dict[str, str] | None = None,
    ) -> int:
        """Add (or update) a slide and replace this writer's annotations on it by labels.

        One spot annotation per label at ``x_px, y_px`` (level-0 px) with class name
        ``classes[i]`` (created when missing, coloured from ``colors``) and ``descriptions[i]``;
        labelled by this writer's person, like :meth:`add_slide`. Returns the slide uid.
        """
        filename = str(filename)
        if not filename:
            raise InvalidInputError("SlideRunnerDB.add_labels needs a slide file name")
        names = [str(c) for c in classes]
        desc = [""] * len(names) if descriptions is None else [str(d) for d in descriptions]
        xs, ys = np.asarray(x_px, dtype=np.float64), np.asarray(y_px, dtype=np.float64)
        if not (len(names) == len(desc) == len(xs) == len(ys)):
            raise InvalidInputError(
                "add_labels: classes, positions and descriptions differ in length"
            )
        rows = [
            (c, int(round(float(x))), int(round(float(y))), d)
            for c, x, y, d in zip(names, xs, ys, desc, strict=True)
        ]
        return self._write_slide(
            filename, width, height, directory, rows, tuple(dict.fromkeys(names)), colors
        )

    def _write_slide(
        self,
        filename: str,
        width: int,
        height: int,
        directory: str,
        rows: list[tuple[str, int, int, str]],
        classes: tuple[str, ...],
        colors: dict[str, str] | None = None,
    ) -> int:
        """One transaction: the slide (found by name or added), this writer's old annotations on
        it removed, ``rows`` of ``(class name, x, y, description)`` inserted."""
        now = time.time()
        try:
            with self._transaction():  # all or nothing
                class_uids = {
                    c: self._get_or_create("Classes", c, {**CLASS_COLORS, **(colors or {})}.get(c))
                    for c in classes
                }
                row = self._con.execute(
                    "SELECT uid FROM Slides WHERE filename = ? ORDER BY uid LIMIT 1", (filename,)
                ).fetchone()
                if row:
                    slide = int(row[0])
                    self._con.execute(
                        "UPDATE Slides SET width = ?, height = ?, directory = ? WHERE uid = ?",
                        (int(width), int(height), str(directory), slide),
                    )
                    self._delete_own(slide)
                else:
                    cur = self._con.execute(
                        "INSERT INTO Slides (filename, width, height, directory, uuid) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (filename, int(width), int(height), str(directory), str(_uuid.uuid4())),
                    )
                    slide = int(cur.lastrowid)
                for cname, x, y, desc in rows:
                    cls = class_uids[cname]
                    cur = self._con.execute(
                        "INSERT INTO Annotations (slide, guid, lastModified, deleted, type, "
                        "agreedClass, description) VALUES (?, ?, ?, 0, ?, ?, ?)",
                        (slide, str(_uuid.uuid4()), now, SPOT, cls, desc),
                    )
                    anno = int(cur.lastrowid)
                    self._con.execute(
                        "INSERT INTO Annotations_coordinates (coordinateX, coordinateY, slide, "
                        "annoId, orderIdx, coordinateZ) VALUES (?, ?, ?, ?, 1, 0)",
                        (x, y, slide, anno),
                    )
                    self._con.execute(
                        "INSERT INTO Annotations_label (person, class, annoId) VALUES (?, ?, ?)",
                        (self._person_uid, cls, anno),
                    )
        except sqlite3.OperationalError as exc:
            raise OutputError(f"cannot write to {self.path}: {exc}") from None
        return slide

    def _delete_own(self, slide: int) -> None:
        own = [
            r[0]
            for r in self._con.execute(
                "SELECT DISTINCT a.uid FROM Annotations a JOIN Annotations_label l "
                "ON l.annoId = a.uid JOIN Persons p ON p.uid = l.person "
                "WHERE a.slide = ? AND p.name = ?",
                (slide, self.person),
            )
        ]
        for start in range(0, len(own), 500):
            chunk = own[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for table, col in (
                ("Annotations_coordinates", "annoId"),
                ("Annotations_label", "annoId"),
                ("Annotations", "uid"),
            ):
                self._con.execute(f"DELETE FROM {table} WHERE {col} IN ({marks})", chunk)


def _fmt(v: float) -> str:
    return "nan" if not math.isfinite(float(v)) else f"{float(v):.4f}"
