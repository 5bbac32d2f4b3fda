"""Read any annotation or prediction file: :func:`read_annotations` sniffs the format.

The record type and its helpers live in :mod:`mitoscope.io.records` (re-exported here); each
format has its own module (``midog``, ``geojson``, ``sliderunner``, ``csvpoints``, ``amibr``,
``tupac``) that registers its reader and writer in :mod:`mitoscope.io.registry`, where one lookup
by name (``get_format("geojson").reader``) or by content (``sniff_format(path)``) finds them.
The readers are importable from here and from :mod:`mitoscope.io`:

>>> from mitoscope.io.annotations import read_annotations  # doctest: +SKIP
>>> ann = read_annotations("MIDOGpp.json", split_csv="MIDOGpp_datasets_xvalidation.csv",
...                        split="test")  # doctest: +SKIP
>>> ann.mitoses().for_image("001.tiff")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from .records import (
    MITOTIC,
    NON_MITOTIC,
    PointAnnotations,
    canonical_label,
    polygon_centroid,
)
from .registry import get_format, sniff_format


def read_annotations(
    path: str | os.PathLike[str], *, format: str | None = None, **kwargs: Any
) -> PointAnnotations:
    """Read any supported annotation or prediction file, choosing the reader by content.

    ``format`` names the reader (:func:`mitoscope.io.registry.formats`); without it the
    registry sniffs the file (:func:`mitoscope.io.registry.sniff_format`):

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
    if format is None:
        fmt = sniff_format(p)
    else:
        fmt = get_format(format)
        if fmt.reader is None:
            raise InvalidInputError(f"format {fmt.name!r} has no reader")
        if not p.exists():
            raise InvalidInputError(f"annotation file not found: {p}")
    if fmt.check is not None:
        fmt.check(p, kwargs)
    return fmt.reader(p, **kwargs)


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
