"""MIDOG formats: the MIDOG++ COCO-like label JSON (+ split CSV) and the official MIDOG points
result/truth JSON (millimetres).

MIDOG++ JSON (``MIDOGpp.json``)::

    {"images": [{"id": 1, "file_name": "001.tiff", "width": ..., "height": ...,
                 "tumor_type": "human breast cancer"}, ...],
     "categories": [{"id": 1, "name": "mitotic figure"}, {"id": 2, "name": "not mitotic figure"}],
     "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [x1, y1, x2, y2],
                      "labels": [2, 2]}, ...]}

``bbox`` is ``[x1, y1, x2, y2]`` (50x50 px around the figure), **not** COCO ``[x, y, w, h]``;
``labels`` are the individual rater votes (category ids).

MIDOG points (result and truth of the challenge)::

    {"type": "Multiple points",
     "points": [{"point": [x_mm, y_mm, 0], "probability": 0.93, "name": "mitotic figure"}, ...],
     "version": {"major": 1, "minor": 0}}

Over 400 lines: both MIDOG formats (the MIDOG++ label JSON with its split table, and the
challenge's points JSON, read and written) live together because they share the label rules
and the millimetre checks (MIDOG++ ~260 lines, the points format ~140).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..units import validate_mpp
from .records import (
    MITOTIC,
    NON_MITOTIC,
    PointAnnotations,
    canonical_label,
    check_file,
    load_json,
    probability,
    str_array,
)
from .registry import Peek, register_reader, register_writer

#: coordinates above this many millimetres cannot be on a glass slide (75 x 25 mm; 200 mm
#: leaves room for any scanner's coordinate frame) -- they are pixels given as millimetres
MAX_PLAUSIBLE_MM = 200.0

_MIDOGPP_CACHE: dict[tuple[str, int, int], PointAnnotations] = {}
_CACHE_MAX = 4


def _is_midogpp(peek: Peek) -> bool:
    data = peek.json
    return isinstance(data, dict) and "images" in data and "annotations" in data


def _is_midog_points(peek: Peek) -> bool:
    data = peek.json
    return isinstance(data, dict) and (
        "points" in data or data.get("type") in ("Multiple points", "Point")
    )


def _needs_mpp(path: Path, kwargs: dict[str, Any]) -> None:
    if "mpp" not in kwargs:
        raise InvalidInputError(
            f"{path.name} is in the MIDOG points format (millimetres); pass the pixel size "
            "(mpp=0.25 / --mpp 0.25) to convert it to pixels"
        )


@register_reader(
    "midogpp", suffixes=(".json",), sniff=_is_midogpp, priority=30,
    description="MIDOG++ COCO-like JSON: images/annotations",
)  # fmt: skip
def read_midogpp_json(
    path: str | os.PathLike[str],
    *,
    split_csv: str | os.PathLike[str] | None = None,
    split: str | None = None,
    bbox_format: str = "xyxy",
) -> PointAnnotations:
    """Read a MIDOG++ COCO-like label file into :class:`PointAnnotations`.

    Parameters
    ----------
    path : path-like
        ``MIDOGpp.json``.
    split_csv : path-like, optional
        ``MIDOGpp_datasets_xvalidation.csv`` (``;``-separated
        ``Slide;Dataset;Tumor;Scanner;Origin;Species``). Joined by slide number (the numeric
        file-name stem, e.g. ``007.tiff`` -> 7; the image id otherwise) into the meta columns
        ``split``, ``tumor``, ``scanner``, ``origin``, ``species``. Images missing from the CSV get
        ``split == ""``.
    split : str, optional
        Keep only images whose ``Dataset`` is this value (``"train"`` or ``"test"``); needs
        ``split_csv``.
    bbox_format : {"xyxy", "xywh"}
        Box convention of ``bbox``. MIDOG++ uses ``xyxy``; pass ``xywh`` for true COCO files.

    Returns
    -------
    PointAnnotations
        One row per annotation; ``x_px, y_px`` the box centre; ``agreement`` the share of rater
        votes equal to the category; ``meta`` has ``image_id``, ``tumor_type`` (and the split
        columns); ``images_all`` lists every image, including the ones without labels.

    Examples
    --------
    >>> ann = read_midogpp_json("MIDOGpp.json")  # doctest: +SKIP
    >>> int(ann.is_mitosis.sum()), len(ann.images())  # doctest: +SKIP
    (11937, 553)
    """
    p = check_file(path, "MIDOG++ JSON")
    if bbox_format not in ("xyxy", "xywh"):
        raise InvalidInputError(f"bbox_format must be 'xyxy' or 'xywh', got {bbox_format!r}")
    st = p.stat()
    key = (str(p.resolve()) + "|" + bbox_format, st.st_mtime_ns, st.st_size)
    base = _MIDOGPP_CACHE.get(key)
    if base is None:
        base = _parse_midogpp(p, bbox_format)
        if len(_MIDOGPP_CACHE) >= _CACHE_MAX:
            _MIDOGPP_CACHE.pop(next(iter(_MIDOGPP_CACHE)))
        _MIDOGPP_CACHE[key] = base
    ann = base.copy()
    if split is not None and split_csv is None:
        raise InvalidInputError(
            "split= needs the split table; pass split_csv=MIDOGpp_datasets_xvalidation.csv "
            "(--split CSV)"
        )
    if split_csv is not None:
        ann = _join_split(ann, split_csv)
        if split is not None:
            available = sorted({m.get("split", "") for m in ann.image_meta.values()} - {""})
            if split not in available:
                raise InvalidInputError(
                    f"split {split!r} is not in {Path(split_csv).name}; choose one of "
                    f"{', '.join(available)}"
                )
            names = [n for n in ann.images() if ann.image_meta[n].get("split") == split]
            ann = ann.for_images(names)
    return ann


def midogpp_images(
    path: str | os.PathLike[str],
    *,
    split_csv: str | os.PathLike[str] | None = None,
    split: str | None = None,
) -> list[str]:
    """All image names of a MIDOG++ file (optionally of one split), labelled or not."""
    return read_midogpp_json(path, split_csv=split_csv, split=split).images()


def _parse_midogpp(p: Path, bbox_format: str) -> PointAnnotations:
    data = load_json(p, "MIDOG++ (COCO-like)")
    if not isinstance(data, dict):
        raise InvalidInputError(
            f"{p.name} is not a MIDOG++ file: top level is a {type(data).__name__}, expected an "
            "object with 'images', 'categories' and 'annotations'"
        )
    missing = [k for k in ("images", "categories", "annotations") if k not in data]
    if missing:
        raise InvalidInputError(
            f"{p.name} is not a MIDOG++ file: missing {', '.join(repr(m) for m in missing)}"
        )
    images, categories, annotations = data["images"], data["categories"], data["annotations"]
    if not all(isinstance(v, list) for v in (images, categories, annotations)):
        raise InvalidInputError(f"{p.name}: 'images', 'categories' and 'annotations' must be lists")
    try:
        cat_name = {int(c["id"]): str(c["name"]) for c in categories}
        img_by_id: dict[int, dict[str, Any]] = {int(im["id"]): im for im in images}
        names_all = [str(im["file_name"]) for im in images]
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: an id of inf
        raise InvalidInputError(
            f"{p.name}: malformed image or category entry ({type(exc).__name__}: {exc}); each "
            "image needs 'id' and 'file_name', each category 'id' and 'name'"
        ) from None
    image_meta: dict[str, dict[str, Any]] = {}
    for im in images:
        meta = {k: v for k, v in im.items() if k not in ("file_name", "license")}
        image_meta[str(im["file_name"])] = meta
    n = len(annotations)
    try:  # fast path: well-formed file
        bbox = np.array([a["bbox"] for a in annotations], dtype=np.float64).reshape(n, 4)
        cat = np.array([a["category_id"] for a in annotations], dtype=np.int64).reshape(n)
        image_id = np.array([a["image_id"] for a in annotations], dtype=np.int64).reshape(n)
        image = [str(img_by_id[i]["file_name"]) for i in image_id.tolist()]
        ok = bool(np.isin(cat, list(cat_name)).all())
    except (KeyError, TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        _raise_first_bad_annotation(p.name, annotations, img_by_id, cat_name)
    if bbox_format == "xywh":
        bbox[:, 2:] += bbox[:, :2]
    else:
        bad = np.flatnonzero((bbox[:, 2] < bbox[:, 0]) | (bbox[:, 3] < bbox[:, 1]))
        if len(bad):
            i = int(bad[0])
            raise InvalidInputError(
                f"{p.name}: annotation #{i} bbox {annotations[i]['bbox']} is not [x1, y1, x2, y2];"
                " for COCO [x, y, w, h] boxes pass bbox_format='xywh'"
            )
    x = 0.5 * (bbox[:, 0] + bbox[:, 2])
    y = 0.5 * (bbox[:, 1] + bbox[:, 3])
    agreement = np.ones(n)
    n_raters = np.ones(n, dtype=np.int64)
    for i, (a, c) in enumerate(zip(annotations, cat.tolist(), strict=True)):
        votes = a.get("labels")
        if not votes:
            continue
        if not isinstance(votes, list):
            votes = [votes]
        n_raters[i] = len(votes)
        agreement[i] = sum(1 for v in votes if _int_or_none(v) == c) / len(votes)
    uid = [str(a.get("id", i)) for i, a in enumerate(annotations)]
    tumor = [str(img_by_id[i].get("tumor_type", "")) for i in image_id.tolist()]
    canon = {cid: canonical_label(name) for cid, name in cat_name.items()}
    label = str_array([canon[c][0] for c in cat.tolist()])
    is_mit = np.array([canon[c][1] for c in cat.tolist()], dtype=bool)
    atyp = np.array([canon[c][2] for c in cat.tolist()], dtype=np.float64)
    return PointAnnotations(
        image=str_array(image),
        x_px=x,
        y_px=y,
        label=label,
        is_mitosis=is_mit,
        score=np.full(n, np.nan),
        atypical=atyp,
        agreement=agreement,
        n_raters=n_raters,
        uid=str_array(uid),
        bbox=bbox,
        meta={"image_id": image_id, "tumor_type": str_array(tumor)},
        images_all=names_all,
        image_meta=image_meta,
        source="midog++",
    )


def _raise_first_bad_annotation(
    name: str, annotations: list[Any], img_by_id: dict[int, Any], cat_name: dict[int, str]
) -> None:
    for i, a in enumerate(annotations):
        try:
            b = [float(v) for v in a["bbox"]]
            if len(b) != 4:
                raise ValueError("bbox needs 4 numbers")
            c = int(a["category_id"])
            img_by_id[int(a["image_id"])]
        except KeyError as exc:
            raise InvalidInputError(
                f"{name}: annotation #{i} lacks {exc} or refers to an unknown image; "
                "each needs 'bbox', 'category_id' and 'image_id'"
            ) from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidInputError(f"{name}: annotation #{i} is malformed ({exc})") from None
        if c not in cat_name:
            raise InvalidInputError(f"{name}: annotation #{i} has unknown category_id {c}")
    raise InvalidInputError(f"{name}: malformed annotations")


def _int_or_none(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError, OverflowError):
        return None


def read_split_csv(path: str | os.PathLike[str]) -> dict[int, dict[str, str]]:
    """Read the MIDOG++ split table: slide number -> ``{"split", "tumor", "scanner", ...}``.

    The delimiter (``;`` in the official file, ``,`` or tab accepted) is detected from the
    header; column names are matched case-insensitively; ``Dataset`` becomes ``split``.
    """
    p = check_file(path, "split CSV")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read split CSV {p}: {exc}") from None
    lines = text.splitlines()
    if not lines:
        raise InvalidInputError(f"split CSV {p.name} is empty")
    head = lines[0]
    delim = max((";", ",", "\t"), key=head.count)
    reader = csv.DictReader(lines, delimiter=delim)
    fields = {f.strip().lower(): f for f in (reader.fieldnames or [])}
    if "slide" not in fields or "dataset" not in fields:
        raise InvalidInputError(
            f"split CSV {p.name} needs the columns Slide and Dataset "
            f"(found: {', '.join(reader.fieldnames or [])})"
        )
    out: dict[int, dict[str, str]] = {}
    for row in reader:
        raw = (row.get(fields["slide"]) or "").strip()
        try:
            slide = int(Path(raw).stem) if raw else None
        except ValueError:
            raise InvalidInputError(
                f"split CSV {p.name}: slide {raw!r} is not a slide number"
            ) from None
        if slide is None:
            continue
        rec = {}
        for low, orig in fields.items():
            if low == "slide":
                continue
            rec["split" if low == "dataset" else low] = (row.get(orig) or "").strip()
        out[slide] = rec
    return out


def _slide_number(name: str, image_id: Any) -> int | None:
    stem = Path(name).stem
    if stem.isdigit():
        return int(stem)
    return _int_or_none(image_id)


def _join_split(ann: PointAnnotations, split_csv: str | os.PathLike[str]) -> PointAnnotations:
    table = read_split_csv(split_csv)
    columns = sorted({k for rec in table.values() for k in rec})
    per_image: dict[str, dict[str, str]] = {}
    for name in ann.images():
        num = _slide_number(name, ann.image_meta.get(name, {}).get("id"))
        rec = table.get(num, {}) if num is not None else {}
        per_image[name] = {c: rec.get(c, "") for c in columns}
        ann.image_meta.setdefault(name, {}).update(per_image[name])
    empty = dict.fromkeys(columns, "")
    for c in columns:
        ann.meta[c] = str_array([per_image.get(im, empty)[c] for im in ann.image.tolist()])
    return ann


# -- MIDOG points (official result / truth format) -------------------------------------------
@register_reader(
    "midog", suffixes=(".json",), sniff=_is_midog_points, priority=20, check=_needs_mpp,
    description="MIDOG points JSON in mm: {'type': 'Multiple points', 'points': [...]}",
)  # fmt: skip
def read_midog_points_json(
    path: str | os.PathLike[str],
    *,
    mpp: float,
    image: str | None = None,
) -> PointAnnotations:
    """Read the official MIDOG points JSON (coordinates in mm) into pixels.

    Parameters
    ----------
    path : path-like
        ``{"type": "Multiple points", "points": [{"point": [x_mm, y_mm, z], "probability": p,
        "name": ...}]}``; a single ``{"type": "Point", "point": [...]}`` is accepted too.
    mpp : float
        Pixel size in um/px of the image the points belong to (``px = mm * 1000 / mpp``).
    image : str, optional
        Image name for the ``image`` column (default: the file name without ``.json`` and
        without a ``.midog`` infix, e.g. ``case1.midog.json`` -> ``case1``).

    Raises
    ------
    InvalidInputError
        Wrong structure, or coordinates larger than 200 mm (pixels written as millimetres).
    """
    mpp = validate_mpp(mpp)
    p = check_file(path, "MIDOG points JSON")
    data = load_json(p, "MIDOG points")
    if isinstance(data, dict) and data.get("type") == "Point" and "point" in data:
        points = [data]
    elif isinstance(data, dict) and isinstance(data.get("points"), list):
        points = data["points"]
    else:
        raise InvalidInputError(
            f"{p.name} is not a MIDOG points file: expected an object "
            "{'type': 'Multiple points', 'points': [{'point': [x_mm, y_mm, 0], ...}]}"
        )
    n = len(points)
    xy = np.empty((n, 2))
    prob = np.full(n, np.nan)
    names: list[str] = []
    for i, pt in enumerate(points):
        try:
            coords = pt["point"]
            if not isinstance(coords, (list, tuple)) or len(coords) < 2:
                raise ValueError("'point' must be [x_mm, y_mm, z]")
            xy[i] = [float(coords[0]), float(coords[1])]
            if "probability" in pt and pt["probability"] is not None:
                prob[i] = float(pt["probability"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"{p.name}: point #{i} is malformed ({exc}); each point needs "
                "'point': [x_mm, y_mm, 0]"
            ) from None
        names.append(str(pt.get("name", MITOTIC)) if isinstance(pt, dict) else MITOTIC)
    if n and not np.isfinite(xy).all():
        raise InvalidInputError(f"{p.name}: coordinates must be finite numbers")
    if n and float(np.abs(xy).max()) > MAX_PLAUSIBLE_MM:
        raise InvalidInputError(
            f"{p.name}: coordinates up to {float(np.abs(xy).max()):g} are too large for "
            f"millimetres (> {MAX_PLAUSIBLE_MM:g} mm); they look like pixels -- write "
            "x_px * mpp / 1000 in the MIDOG format, or give a pixel CSV/GeoJSON instead"
        )
    if image is None:
        image = p.name
        for suffix in (".json", ".midog"):
            if image.lower().endswith(suffix):
                image = image[: -len(suffix)]
    px = xy * 1000.0 / mpp
    return PointAnnotations.from_columns(
        image=image,
        x_px=px[:, 0],
        y_px=px[:, 1],
        label=names,
        score=prob,
        source="midog-points",
        images_all=[image],
    )


def midog_points_dict(
    detections: Any,
    *,
    mpp: float,
    threshold: float,
    floor: float = 0.0,
) -> dict[str, Any]:
    """The MIDOG result structure for ``detections`` (see :func:`write_midog_json`)."""
    mpp = validate_mpp(mpp)
    threshold = probability(threshold, "threshold")
    floor = probability(floor, "floor")
    prob = np.asarray(detections.mf_probability, dtype=np.float64)
    keep = np.flatnonzero(prob >= floor)
    keep = keep[np.argsort(-prob[keep], kind="stable")]
    scale = mpp / 1000.0
    points = []
    for i in keep.tolist():
        p = float(prob[i])
        points.append(
            {
                "name": MITOTIC if p >= threshold else NON_MITOTIC,
                "point": [
                    float(detections.x_px[i]) * scale,
                    float(detections.y_px[i]) * scale,
                    0,
                ],
                "probability": p,
            }
        )
    return {"type": "Multiple points", "points": points, "version": {"major": 1, "minor": 0}}


@register_writer("midog")
def write_midog_json(
    path: str | os.PathLike[str],
    detections: Any,
    *,
    mpp: float,
    threshold: float,
    floor: float = 0.05,
) -> Path:
    """Write detections in the official MIDOG result format (coordinates in millimetres).

    Every candidate with ``mf_probability >= floor`` is written, highest probability first,
    with its probability; it is named ``"mitotic figure"`` when ``>= threshold`` and
    ``"non-mitotic figure"`` otherwise (the evaluator counts only the former for F1 and uses
    all points for AP). The write is atomic.

    Parameters
    ----------
    path : path-like
    detections : mitoscope.types.Detections
    mpp : float
        Pixel size in um/px (``x_mm = x_px * mpp / 1000``).
    threshold : float
        Decision threshold on ``mf_probability``.
    floor : float
        Lowest probability written.
    """
    from .atomic import atomic_write_text

    data = midog_points_dict(detections, mpp=mpp, threshold=threshold, floor=floor)
    return atomic_write_text(path, json.dumps(data, indent=1) + "\n")
