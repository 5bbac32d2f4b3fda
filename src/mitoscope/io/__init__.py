"""Annotation readers and result writers.

Readers return one record format, :class:`~mitoscope.io.annotations.PointAnnotations`:

- :func:`read_midogpp_json` -- MIDOG++ COCO-like JSON (+ split CSV)
- :func:`read_midog_points_json` -- official MIDOG points JSON (mm)
- :func:`read_sliderunner` -- SlideRunner SQLite
- :func:`read_geojson` -- GeoJSON / QuPath
- :func:`read_csv_points` -- CSV with x/y columns
- :func:`read_amibr_labels` -- AMi-Br crop table
- :func:`read_icpr_tupac` -- TUPAC16 / ICPR 2012 CSV
- :func:`read_annotations` -- any of the above, chosen by extension and content
  (or ``format="geojson"``); the formats are registered in :mod:`mitoscope.io.registry`
  (:func:`get_format`, :func:`formats`)

Writers (all atomic): :func:`write_qupath_geojson`, :func:`write_midog_json`,
:func:`write_detections_csv`, :class:`SlideRunnerDB`; helpers in :mod:`mitoscope.io.atomic`.
See docs/formats.md.
"""

from __future__ import annotations

from .amibr import read_amibr_labels
from .annotations import (
    MITOTIC,
    NON_MITOTIC,
    PointAnnotations,
    canonical_label,
    read_annotations,
)
from .atomic import atomic_path, atomic_write_bytes, atomic_write_text
from .csvpoints import read_csv_points, write_detections_csv
from .geojson import read_geojson, write_qupath_geojson
from .midog import midogpp_images, read_midog_points_json, read_midogpp_json, write_midog_json
from .registry import Format, formats, get_format, sniff_format
from .sliderunner import SlideRunnerDB, read_sliderunner
from .tupac import read_icpr_tupac

__all__ = [
    "MITOTIC",
    "NON_MITOTIC",
    "Format",
    "PointAnnotations",
    "SlideRunnerDB",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "canonical_label",
    "formats",
    "get_format",
    "midogpp_images",
    "read_amibr_labels",
    "read_annotations",
    "read_csv_points",
    "read_geojson",
    "read_icpr_tupac",
    "read_midog_points_json",
    "read_midogpp_json",
    "read_sliderunner",
    "sniff_format",
    "write_detections_csv",
    "write_midog_json",
    "write_qupath_geojson",
]
