"""CSV points: read any point table with x/y columns; write mitoscope's detection CSV.

Detection CSV written by ``mitoscope detect`` (one row per mitotic figure)::

    x_px,y_px,x_um,y_um,mf_probability,atypical_probability,area_um2
    1520.4,880.1,380.1,220.025,0.9312,0.1203,41.5
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from .records import PointAnnotations, check_file, str_array
from .registry import register_reader, register_writer

_X = ("x_px", "x", "x_pixel", "col", "column", "centroid_x", "center_x")
_Y = ("y_px", "y", "y_pixel", "row", "centroid_y", "center_y")
_IMAGE = ("image", "file", "filename", "file_name", "slide", "image_id", "image_name")
_LABEL = ("label", "class", "classification", "name", "category")
_SCORE = ("mf_probability", "probability", "score", "confidence", "prob")
_MITOSIS = ("is_mitosis", "mitosis")
_ATYPICAL = ("is_atypical", "atypical")
_UID = ("uid", "id", "annotation_id")
_AGREEMENT = ("agreement",)
_N_RATERS = ("n_raters",)

_TRUE = {"1", "true", "t", "yes", "y"}
_FALSE = {"0", "false", "f", "no", "n", ""}


def _find(cols: dict[str, str], names: tuple[str, ...]) -> str | None:
    for n in names:
        if n in cols:
            return cols[n]
    return None


def _floats(values: list[str], col: str, where: str) -> np.ndarray:
    out = np.empty(len(values))
    for i, v in enumerate(values):
        v = v.strip()
        if v == "" or v.lower() in ("nan", "na", "none"):
            out[i] = math.nan
            continue
        try:
            out[i] = float(v)
        except ValueError:
            raise InvalidInputError(
                f"{where}: column {col!r} row {i + 2} is {v!r}, not a number"
            ) from None
    return out


def _bools(values: list[str], col: str, where: str) -> np.ndarray:
    out = np.empty(len(values), dtype=bool)
    for i, v in enumerate(values):
        key = v.strip().lower()
        if key in _TRUE:
            out[i] = True
        elif key in _FALSE:
            out[i] = False
        else:
            try:
                out[i] = float(key) != 0.0
            except ValueError:
                raise InvalidInputError(
                    f"{where}: column {col!r} row {i + 2} is {v!r}, not true/false"
                ) from None
    return out


@register_reader(
    "csv", suffixes=(".csv", ".tsv", ".txt"), priority=0,
    description="a table with x/y (px or um) columns",
)  # fmt: skip
def read_csv_points(
    path: str | os.PathLike[str],
    *,
    image: str | None = None,
    mpp: float | None = None,
    threshold: float | None = None,
) -> PointAnnotations:
    """Read a CSV table of points (with a header) into :class:`PointAnnotations`.

    Recognised columns (case-insensitive; the delimiter ``,``/``;``/tab is detected):

    - position: ``x_px, y_px`` or ``x, y`` (level-0 px); or ``x_um, y_um`` with ``mpp=``.
    - ``image`` / ``file`` / ``filename`` / ``slide``: image name (else ``image=``, else the file
      name without ``.csv``).
    - ``label`` / ``class`` / ``name``: class name (canonicalised); default "mitotic figure".
    - ``mf_probability`` / ``probability`` / ``score`` / ``confidence``: score.
    - ``is_mitosis``: true/false (overrides the label); without it and without a label,
      ``threshold=`` decides from the score, otherwise every row is a mitosis (as in the
      detection CSV written by :func:`write_detections_csv`).
    - ``is_atypical`` / ``atypical``: 1/0; ``uid`` / ``id``.
    - ``agreement`` (share of raters agreeing, in [0, 1]) and ``n_raters``, as written by
      ``mitoscope curate crowd``.

    All other columns (``x_um``, ``atypical_probability``, ``area_um2``, ...) are kept in
    ``meta`` (as numbers when every value parses).
    """
    p = check_file(path, "CSV")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read {p} as a text CSV: {exc}") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise InvalidInputError(f"{p.name} is empty; expected a header with x_px,y_px (or x,y)")
    delim = max((",", ";", "\t"), key=lines[0].count)
    reader = csv.reader(io.StringIO(text), delimiter=delim)
    header = [h.strip() for h in next(reader)]
    cols = {h.lower(): h for h in header}
    rows = [r for r in reader if any(c.strip() for c in r)]
    for i, r in enumerate(rows):
        if len(r) != len(header):
            raise InvalidInputError(
                f"{p.name}: row {i + 2} has {len(r)} fields, the header has {len(header)}"
            )
    column = {h: [r[j] for r in rows] for j, h in enumerate(header)}
    where = p.name
    xcol, ycol = _find(cols, _X), _find(cols, _Y)
    used: set[str] = set()
    if xcol is not None and ycol is not None:
        x = _floats(column[xcol], xcol, where)
        y = _floats(column[ycol], ycol, where)
        used |= {xcol, ycol}
    elif "x_um" in cols and "y_um" in cols:
        if mpp is None:
            raise InvalidInputError(
                f"{p.name} has x_um/y_um but no pixel columns; pass the pixel size (mpp=0.25)"
            )
        from ..units import validate_mpp

        m = validate_mpp(mpp)
        x = _floats(column[cols["x_um"]], "x_um", where) / m
        y = _floats(column[cols["y_um"]], "y_um", where) / m
    else:
        raise InvalidInputError(
            f"{p.name} needs position columns x_px,y_px (or x,y); found: {', '.join(header)}"
        )
    if len(x) and not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise InvalidInputError(f"{p.name}: every row needs numeric x and y")
    n = len(x)
    icol = _find(cols, _IMAGE)
    if icol is not None:
        images: Any = str_array(v.strip() for v in column[icol])
        used.add(icol)
    else:
        if image is None:
            image = p.name[:-4] if p.name.lower().endswith(".csv") else p.stem
        images = image
    lcol = _find(cols, _LABEL)
    labels = None if lcol is None else [v.strip() for v in column[lcol]]
    scol = _find(cols, _SCORE)
    score = None if scol is None else _floats(column[scol], scol, where)
    mcol = _find(cols, _MITOSIS)
    is_mit = None if mcol is None else _bools(column[mcol], mcol, where)
    if is_mit is None and labels is None and threshold is not None and score is not None:
        is_mit = score >= float(threshold)
        labels = ["mitotic figure" if m else "non-mitotic figure" for m in is_mit]
    acol = _find(cols, _ATYPICAL)
    atyp = None
    if acol is not None:
        vals = column[acol]
        atyp = np.array(
            [math.nan if v.strip() == "" else float(_bools([v], acol, where)[0]) for v in vals]
        )
    ucol = _find(cols, _UID)
    uid = None if ucol is None else [v.strip() for v in column[ucol]]
    gcol, rcol = _find(cols, _AGREEMENT), _find(cols, _N_RATERS)
    agreement = n_raters = None
    if gcol is not None:  # e.g. the table of ``mitoscope curate crowd``
        agreement = _floats(column[gcol], gcol, where)
        bad = np.isfinite(agreement) & ((agreement < 0) | (agreement > 1))
        if bad.any():
            raise InvalidInputError(
                f"{where}: column {gcol!r} row {int(np.flatnonzero(bad)[0]) + 2} is not in [0, 1]"
            )
        agreement = np.where(np.isfinite(agreement), agreement, 1.0)
    if rcol is not None:
        r = _floats(column[rcol], rcol, where)
        n_raters = np.where(np.isfinite(r), r, 1).astype(np.int64)
    used |= {c for c in (lcol, scol, mcol, acol, ucol, gcol, rcol) if c is not None}
    meta: dict[str, Any] = {}
    for h in header:
        if h in used:
            continue
        vals = column[h]
        try:
            meta[h] = np.array([float(v) if v.strip() else math.nan for v in vals])
        except ValueError:
            meta[h] = str_array(v.strip() for v in vals)
    names = list(dict.fromkeys(images.tolist())) if not isinstance(images, str) else [images]
    return PointAnnotations.from_columns(
        image=images,
        x_px=x,
        y_px=y,
        label=labels,
        is_mitosis=is_mit,
        score=score if score is not None else np.full(n, math.nan),
        atypical=atyp,
        agreement=agreement,
        n_raters=n_raters,
        uid=uid,
        meta=meta,
        images_all=names,
        source="csv",
    )


DETECTION_COLUMNS = (
    "x_px",
    "y_px",
    "x_um",
    "y_um",
    "mf_probability",
    "atypical_probability",
    "area_um2",
)


def detections_csv_text(
    detections: Any, *, mpp: float, threshold: float, atypical_model: str | None = None
) -> str:
    """The text written by :func:`write_detections_csv`."""
    from ..units import validate_mpp
    from .records import probability

    mpp = validate_mpp(mpp)
    threshold = probability(threshold, "threshold")
    prob = np.asarray(detections.mf_probability, dtype=np.float64)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(DETECTION_COLUMNS + (("atypical_model",) if atypical_model else ()))
    extra = [str(atypical_model)] if atypical_model else []
    for i in np.flatnonzero(prob >= threshold).tolist():
        x = float(detections.x_px[i])
        y = float(detections.y_px[i])
        a = float(detections.atypical_probability[i])
        area = float(detections.area_um2[i])
        w.writerow(
            [
                f"{x:.2f}",
                f"{y:.2f}",
                f"{x * mpp:.3f}",
                f"{y * mpp:.3f}",
                f"{float(prob[i]):.6f}",
                f"{a:.6f}" if math.isfinite(a) else "",
                f"{area:.3f}" if math.isfinite(area) else "",
                *extra,
            ]
        )
    return buf.getvalue()


@register_writer("csv")
def write_detections_csv(
    path: str | os.PathLike[str],
    detections: Any,
    *,
    mpp: float,
    threshold: float,
    atypical_model: str | None = None,
) -> Path:
    """Write one row per mitotic figure (``mf_probability >= threshold``), atomically.

    Columns: ``x_px,y_px,x_um,y_um,mf_probability,atypical_probability,area_um2`` (level-0
    pixels; micrometres = pixels x ``mpp``; an unknown atypical probability is empty), and
    ``atypical_model`` when a dedicated atypical model made the atypical calls.
    """
    from .atomic import atomic_write_text

    text = detections_csv_text(
        detections, mpp=mpp, threshold=threshold, atypical_model=atypical_model
    )
    return atomic_write_text(path, text)
