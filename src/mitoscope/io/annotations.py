"""Read any annotation or prediction file: :func:`read_annotations` sniffs the format.

The record type and its helpers live in :mod:`mitoscope.io.records` (re-exported here); each
format has its own module (``midog``, ``geojson``, ``sliderunner``, ``csvpoints``, ``amibr``,
``tupac``), imported when its format is read. The readers are importable from here and from
:mod:`mitoscope.io`:

>>> from mitoscope.io.annotations import read_annotations  # doctest: +SKIP
>>> ann = read_annotations("MIDOGpp.json", split_csv="MIDOGpp_datasets_xvalidation.csv",
...                        split="test")  # doctest: +SKIP
>>> ann.mitoses().for_image("001.tiff")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from .records import (
    MITOTIC,
    NON_MITOTIC,
    PointAnnotations,
    canonical_label,
    load_json,
    polygon_centroid,
)

_SQLITE_SUFFIXES = {".sqlite", ".sqlite3", ".db"}


def read_annotations(path: str | os.PathLike[str], **kwargs: Any) -> PointAnnotations:
    """Read any supported annotation or prediction file, choosing the reader by content.

    - ``.json``: MIDOG++ COCO-like (has ``images`` and ``annotations``) ->
      :func:`read_midogpp_json`; MIDOG points (``"type": "Multiple points"`` / ``"Point"``) ->
      :func:`read_midog_points_json` (needs ``mpp=``); a GeoJSON FeatureCollection ->
      :func:`read_geojson`.
    - ``.geojson``: :func:`read_geojson`.
    - ``.sqlite``, ``.sqlite3``, ``.db``: :func:`read_sliderunner`.
    - ``.csv`` / ``.tsv`` / ``.txt``: AMi-Br label table (``file,label,...,expert1_atypical``) ->
      :func:`read_amibr_labels`; headerless numbers -> :func:`read_icpr_tupac`; otherwise
      :func:`read_csv_points`.
    - a directory: TUPAC/ICPR CSV files inside it -> :func:`read_icpr_tupac`.

    Keyword arguments are passed to the chosen reader.
    """
    p = Path(path)
    if not p.exists():
        raise InvalidInputError(f"annotation file not found: {p}")
    if p.is_dir():
        from .tupac import read_icpr_tupac

        return read_icpr_tupac(p, **kwargs)
    suffix = p.suffix.lower()
    if suffix == ".geojson":
        from .geojson import read_geojson

        return read_geojson(p, **kwargs)
    if suffix in _SQLITE_SUFFIXES:
        from .sliderunner import read_sliderunner

        return read_sliderunner(p, **kwargs)
    if suffix == ".json":
        data = load_json(p, "annotation")
        if isinstance(data, dict) and "images" in data and "annotations" in data:
            from .midog import read_midogpp_json

            return read_midogpp_json(p, **kwargs)
        if isinstance(data, dict) and (
            "points" in data or data.get("type") in ("Multiple points", "Point")
        ):
            from .midog import read_midog_points_json

            if "mpp" not in kwargs:
                raise InvalidInputError(
                    f"{p.name} is in the MIDOG points format (millimetres); pass the pixel size "
                    "(mpp=0.25 / --mpp 0.25) to convert it to pixels"
                )
            return read_midog_points_json(p, **kwargs)
        if (isinstance(data, dict) and data.get("type") in ("FeatureCollection", "Feature")) or (
            isinstance(data, list) and data and isinstance(data[0], dict) and "geometry" in data[0]
        ):
            from .geojson import read_geojson

            return read_geojson(p, **kwargs)
        raise InvalidInputError(
            f"{p.name}: unrecognised JSON structure; expected MIDOG++ (images/annotations), "
            "MIDOG points ({'type': 'Multiple points', 'points': [...]}) or GeoJSON"
        )
    if suffix in (".csv", ".tsv", ".txt"):
        try:
            with open(p, encoding="utf-8-sig") as fh:
                head = fh.readline().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"cannot read {p} as text: {exc}") from None
        cols = {c.strip().lower() for c in re.split(r"[,;\t]", head)}
        if {"file", "label", "expert1_atypical"} <= cols:
            from .amibr import read_amibr_labels

            return read_amibr_labels(p, **kwargs)
        if head and all(_is_number(c) for c in re.split(r"[,;\t\s]+", head) if c):
            from .tupac import read_icpr_tupac

            return read_icpr_tupac(p, **kwargs)
        from .csvpoints import read_csv_points

        return read_csv_points(p, **kwargs)
    raise InvalidInputError(
        f"unsupported annotation file type {suffix or '(none)'} for {p.name}; use .json, "
        ".geojson, .sqlite or .csv"
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_LAZY = {
    "read_midogpp_json": "midog",
    "read_midog_points_json": "midog",
    "midogpp_images": "midog",
    "read_sliderunner": "sliderunner",
    "read_geojson": "geojson",
    "read_csv_points": "csvpoints",
    "read_amibr_labels": "amibr",
    "read_icpr_tupac": "tupac",
}


__all__ = [
    "MITOTIC",
    "NON_MITOTIC",
    "PointAnnotations",
    "canonical_label",
    "polygon_centroid",
    "read_annotations",
    *_LAZY,
]


def __getattr__(name: str) -> Any:  # PEP 562: readers importable from this module too
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__package__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
