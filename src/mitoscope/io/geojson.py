"""GeoJSON (QuPath) points and contours: read annotations/detections, write detections.

QuPath exports objects as a GeoJSON ``FeatureCollection`` (or a bare list of features) in
level-0 pixel coordinates; each feature has ``geometry`` and ``properties`` with
``objectType`` (``"annotation"``, ``"detection"``, ``"cell"``), ``classification``
(``{"name": ..., "color": [r, g, b]}``) and ``measurements`` (a name -> number mapping since
QuPath 0.4; a list of ``{"name", "value"}`` before). See docs/formats.md.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from .records import (
    MITOTIC,
    PointAnnotations,
    check_file,
    load_json,
    polygon_centroid,
    str_array,
)
from .registry import Peek, register_reader, register_writer

#: measurement names recognised as the mitosis probability (case-insensitive, in this order)
SCORE_KEYS = (
    "mf_probability",
    "mitosis probability",
    "mitotic figure probability",
    "probability",
    "score",
    "confidence",
)
ATYPICAL_KEYS = ("atypical_probability", "atypical probability")

#: colours of the classes written by :func:`write_qupath_geojson`
MF_COLOR = (220, 20, 60)
AMF_COLOR = (255, 0, 255)
NON_MF_COLOR = (255, 200, 0)


def _measurements(props: dict[str, Any]) -> dict[str, float]:
    raw = props.get("measurements")
    out: dict[str, float] = {}
    if isinstance(raw, dict):
        items = raw.items()
    elif isinstance(raw, list):  # QuPath <= 0.3: [{"name": ..., "value": ...}]
        items = [(m.get("name"), m.get("value")) for m in raw if isinstance(m, dict)]
    else:
        items = []
    for k, v in items:
        try:
            out[str(k)] = float(v) if v is not None else math.nan
        except (TypeError, ValueError):
            continue
    # a bare top-level probability/score property is common in non-QuPath exports
    for k in ("probability", "score", "mf_probability", "atypical_probability"):
        if k in props and k not in out:
            try:
                out[k] = float(props[k])
            except (TypeError, ValueError):
                pass
    return out


def _pick(meas: dict[str, float], keys: tuple[str, ...]) -> float:
    low = {k.lower(): v for k, v in meas.items()}
    for k in keys:
        if k in low:
            return low[k]
    return math.nan


def _class_name(props: dict[str, Any], default: str) -> str:
    c = props.get("classification")
    if isinstance(c, dict) and c.get("name") is not None:
        return str(c["name"])
    if isinstance(c, str):
        return c
    for k in ("class", "label"):  # QuPath's "name" is the object's name, not its class
        if isinstance(props.get(k), str):
            return str(props[k])
    return default


def _geometry_points(geom: Any, where: str) -> list[tuple[float, float, tuple | None]]:
    """Representative points (and boxes) of a geometry: one per point / polygon."""
    if not isinstance(geom, dict) or "type" not in geom:
        raise InvalidInputError(
            f"{where}: geometry must be an object with 'type' and 'coordinates'"
        )
    gtype = geom["type"]
    coords = geom.get("coordinates")
    try:
        if gtype == "Point":
            return [(float(coords[0]), float(coords[1]), None)]
        if gtype == "MultiPoint":
            return [(float(c[0]), float(c[1]), None) for c in coords]
        if gtype == "Polygon":
            return [_polygon_point(coords)]
        if gtype == "MultiPolygon":
            parts = [_polygon_point(poly) + (_ring_area(poly[0]),) for poly in coords]
            if not parts:
                raise ValueError("no polygon")
            total = sum(p[3] for p in parts)
            if total <= 0:
                cx = float(np.mean([p[0] for p in parts]))
                cy = float(np.mean([p[1] for p in parts]))
            else:
                cx = sum(p[0] * p[3] for p in parts) / total
                cy = sum(p[1] * p[3] for p in parts) / total
            boxes = np.array([p[2] for p in parts])
            box = (boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max())
            return [(cx, cy, tuple(float(b) for b in box))]
        if gtype == "GeometryCollection":
            out = []
            for g in geom.get("geometries", []):
                out += _geometry_points(g, where)
            return out
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise InvalidInputError(f"{where}: malformed {gtype} coordinates ({exc})") from None
    raise InvalidInputError(
        f"{where}: unsupported geometry type {gtype!r}; use Point, MultiPoint, Polygon or "
        "MultiPolygon"
    )


def _polygon_point(rings: Any) -> tuple[float, float, tuple]:
    ring = np.asarray(rings[0], dtype=np.float64)
    if ring.ndim != 2 or not len(ring) or ring.shape[1] < 2:
        raise ValueError("a ring must be a non-empty list of [x, y] vertices")
    ring = ring[:, :2]
    cx, cy = polygon_centroid(ring)
    x0, y0 = ring.min(axis=0)
    x1, y1 = ring.max(axis=0)
    return cx, cy, (float(x0), float(y0), float(x1), float(y1))


def _ring_area(ring: Any) -> float:
    r = np.asarray(ring, dtype=np.float64)[:, :2]
    x, y = r[:, 0] - r[:, 0].mean(), r[:, 1] - r[:, 1].mean()
    return float(abs(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)) / 2.0)


def _is_geojson(peek: Peek) -> bool:
    if peek.suffix == ".geojson":
        return True
    data = peek.json
    return (isinstance(data, dict) and data.get("type") in ("FeatureCollection", "Feature")) or (
        isinstance(data, list)
        and bool(data)
        and isinstance(data[0], dict)
        and "geometry" in data[0]
    )


@register_reader(
    "geojson", suffixes=(".geojson", ".json"), sniff=_is_geojson, priority=10,
    description="GeoJSON FeatureCollection (QuPath)",
)  # fmt: skip
def read_geojson(
    path: str | os.PathLike[str],
    *,
    image: str | None = None,
    default_label: str = MITOTIC,
) -> PointAnnotations:
    """Read a GeoJSON FeatureCollection (e.g. a QuPath export) as points.

    Parameters
    ----------
    path : path-like
        ``.geojson`` / ``.json`` with a ``FeatureCollection``, a single ``Feature`` or a list
        of features. Coordinates are level-0 pixels.
    image : str, optional
        Value of the ``image`` column (default: the file name without ``.geojson``/``.json``).
    default_label : str
        Label of features without a classification (default: mitotic figure, i.e. an
        unclassified point export counts as a list of mitoses).

    Returns
    -------
    PointAnnotations
        One row per Point / MultiPoint member / Polygon (its area centroid) / MultiPolygon
        (area-weighted centroid). ``label`` from ``properties.classification.name``;
        ``score`` from a measurement named like a probability (``mf_probability``,
        ``probability``, ``score``, ...); ``atypical`` is 1 for "Atypical mitotic figure" classes;
        ``uid`` from the feature ``id``; ``bbox`` the polygon bounds (NaN for points);
        ``meta`` has ``object_type`` and, when present, ``atypical_probability`` and
        ``area_um2``.
    """
    p = check_file(path, "GeoJSON")
    data = load_json(p, "GeoJSON")
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features")
        if not isinstance(features, list):
            raise InvalidInputError(f"{p.name}: FeatureCollection needs a 'features' list")
    elif isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    elif isinstance(data, list):
        features = data
    else:
        raise InvalidInputError(
            f"{p.name} is not GeoJSON: expected a FeatureCollection, a Feature or a list of "
            "features"
        )
    if image is None:
        image = p.name
        for suffix in (".geojson", ".json"):
            if image.lower().endswith(suffix):
                image = image[: -len(suffix)]
    xs: list[float] = []
    ys: list[float] = []
    boxes: list[tuple] = []
    labels: list[str] = []
    scores: list[float] = []
    aty_prob: list[float] = []
    area: list[float] = []
    uids: list[str] = []
    otype: list[str] = []
    for i, feat in enumerate(features):
        if not isinstance(feat, dict):
            raise InvalidInputError(f"{p.name}: feature #{i} is not an object")
        geom = feat.get("geometry")
        if geom is None:
            continue
        props = feat.get("properties") or {}
        if not isinstance(props, dict):
            raise InvalidInputError(f"{p.name}: feature #{i} 'properties' must be an object")
        pts = _geometry_points(geom, f"{p.name}: feature #{i}")
        meas = _measurements(props)
        name = _class_name(props, default_label)
        fid = feat.get("id", props.get("id", i))
        for j, (x, y, box) in enumerate(pts):
            xs.append(x)
            ys.append(y)
            boxes.append(box if box is not None else (math.nan,) * 4)
            labels.append(name)
            scores.append(_pick(meas, SCORE_KEYS))
            aty_prob.append(_pick(meas, ATYPICAL_KEYS))
            area.append(_pick(meas, ("area_um2", "area µm^2", "area um^2")))
            uids.append(str(fid) if len(pts) == 1 else f"{fid}:{j}")
            otype.append(str(props.get("objectType", "")))
    meta: dict[str, Any] = {"object_type": str_array(otype)}
    if np.isfinite(aty_prob).any():
        meta["atypical_probability"] = np.asarray(aty_prob, dtype=np.float64)
    if np.isfinite(area).any():
        meta["area_um2"] = np.asarray(area, dtype=np.float64)
    bbox = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return PointAnnotations.from_columns(
        image=image,
        x_px=xs,
        y_px=ys,
        label=labels,
        score=scores,
        uid=uids,
        bbox=bbox if np.isfinite(bbox).any() else None,
        meta=meta,
        images_all=[image],
        source="geojson",
    )


# -- writer ----------------------------------------------------------------------------------
def qupath_feature_collection(
    detections: Any,
    *,
    threshold: float,
    atypical_threshold: float = 0.5,
    mpp: float | None = None,
    include_negatives: bool = False,
    floor: float = 0.0,
    atypical_model: str | None = None,
) -> dict[str, Any]:
    """The FeatureCollection written by :func:`write_qupath_geojson` (as a dict)."""
    from .records import probability

    threshold = probability(threshold, "threshold")
    atypical_threshold = probability(atypical_threshold, "atypical_threshold")
    prob = np.asarray(detections.mf_probability, dtype=np.float64)
    atyp = np.asarray(detections.atypical_probability, dtype=np.float64)
    keep = prob >= threshold
    if include_negatives:
        keep |= prob >= floor
    features = []
    for i in np.flatnonzero(keep).tolist():
        p = float(prob[i])
        a = float(atyp[i])
        if p < threshold:
            name, color = "Non-mitotic figure", NON_MF_COLOR
        elif math.isfinite(a) and a >= atypical_threshold:
            name, color = "Atypical mitotic figure", AMF_COLOR
        else:
            name, color = "Mitotic figure", MF_COLOR
        contour = None if detections.contours is None else detections.contours[i]
        geometry = _geometry(contour, float(detections.x_px[i]), float(detections.y_px[i]))
        measurements: dict[str, float] = {"mf_probability": round(p, 6)}
        if math.isfinite(a):
            measurements["atypical_probability"] = round(a, 6)
        area = float(detections.area_um2[i])
        if math.isfinite(area):
            measurements["area_um2"] = round(area, 4)
        if mpp is not None:
            measurements["x_um"] = round(float(detections.x_px[i]) * float(mpp), 3)
            measurements["y_um"] = round(float(detections.y_px[i]) * float(mpp), 3)
        features.append(
            {
                "type": "Feature",
                "id": _feature_id(detections, i),
                "geometry": geometry,
                "properties": {
                    "objectType": "detection",
                    "classification": {"name": name, "color": list(color)},
                    "measurements": measurements,
                },
            }
        )
    fc: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if atypical_model:  # a foreign member (RFC 7946 6.1): which model made the atypical calls
        fc["atypical_model"] = str(atypical_model)
    return fc


_ID_NAMESPACE = uuid.UUID("0b6f3c1e-7d0a-4c59-9a57-6d1f0c3f5e21")


def _feature_id(detections: Any, i: int) -> str:
    """A UUID (QuPath >= 0.4 keeps only UUID ids), stable for the same detection."""
    key = f"{i}:{float(detections.x_px[i]):.2f}:{float(detections.y_px[i]):.2f}"
    return str(uuid.uuid5(_ID_NAMESPACE, key))


def _geometry(contour: Any, x: float, y: float) -> dict[str, Any]:
    if contour is not None:
        ring = np.asarray(contour, dtype=np.float64).reshape(-1, 2)
        ring = ring[np.isfinite(ring).all(axis=1)]
        if len(ring) >= 3:
            pts = np.round(ring, 2).tolist()
            if pts[0] != pts[-1]:
                pts.append(list(pts[0]))
            if len(pts) >= 4:
                return {"type": "Polygon", "coordinates": [pts]}
    return {"type": "Point", "coordinates": [round(x, 2), round(y, 2)]}


@register_writer("geojson")
def write_qupath_geojson(
    path: str | os.PathLike[str],
    detections: Any,
    *,
    threshold: float,
    atypical_threshold: float = 0.5,
    mpp: float | None = None,
    include_negatives: bool = False,
    floor: float = 0.0,
    atypical_model: str | None = None,
) -> Path:
    """Write mitoses as a QuPath-importable GeoJSON FeatureCollection (atomically).

    Each detection with ``mf_probability >= threshold`` becomes a ``Feature`` with an ``id``,
    its contour as a closed ``Polygon`` ring in level-0 pixels (a ``Point`` when it has no
    contour), and ``properties``: ``objectType: "detection"``, ``classification``
    ``{"name": "Mitotic figure" | "Atypical mitotic figure", "color": [r, g, b]}`` (atypical
    when ``atypical_probability >= atypical_threshold``) and flat ``measurements``
    (``mf_probability``, ``atypical_probability`` when known, ``area_um2``, and ``x_um``,
    ``y_um`` when ``mpp`` is given). With ``include_negatives`` candidates with
    ``floor <= p < threshold`` are added as "Non-mitotic figure".

    Parameters
    ----------
    path : path-like
    detections : mitoscope.types.Detections
    threshold : float
    atypical_threshold : float
    mpp : float, optional
        Pixel size (um/px), only for the ``x_um``/``y_um`` measurements.
    include_negatives : bool
    floor : float
    atypical_model : str, optional
        The dedicated model that made the atypical calls: written as the collection's
        ``atypical_model`` member.
    """
    from .atomic import atomic_write_text

    fc = qupath_feature_collection(
        detections,
        threshold=threshold,
        atypical_threshold=atypical_threshold,
        mpp=mpp,
        include_negatives=include_negatives,
        floor=floor,
        atypical_model=atypical_model,
    )
    return atomic_write_text(path, json.dumps(fc, separators=(",", ":")) + "\n")
