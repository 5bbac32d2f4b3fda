"""Outputs of the label-transfer commands (``curate rescan``, ``curate phh3``).

One output directory, laid out like a ``mitoscope detect`` run so ``mitoscope review OUT
--slides DIR`` opens it and ``mitoscope train`` reads it:

- ``mitoscope.sqlite``: a SlideRunner database with one spot per label on the target slide
  (person ``mitoscope``, classes "Mitotic figure", "Atypical mitotic figure", "Non-mitotic
  figure" or "ignore"; ``description`` holds the measurements, ``mf_probability=...`` when an
  ensemble scored the label). ``train --source sliderunner:OUT/mitoscope.sqlite,images=DIR``.
- ``<target stem>.geojson``: the same labels as QuPath features (a ``Polygon`` for labels with
  a mask, else a ``Point``), measurements in ``properties.measurements``.
- ``review_queue.json``: the flagged labels first (the review app's ``selected`` queue).
- ``<target stem>.<command>.json``: what was done: registration (error in um), counts, settings.

Labels of class "ignore" are left out of training's loss (``train.sources.drop_uncertain``) and
shown in review, where a pathologist can give them a class.

Every file is written only after all the work succeeded; each atomically.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OutputError

IGNORE = "ignore"
COLORS = {IGNORE: "#808080"}
_RGB = {
    "Mitotic figure": [255, 0, 0],
    "Atypical mitotic figure": [255, 0, 255],
    "Non-mitotic figure": [255, 255, 0],
    IGNORE: [128, 128, 128],
}


@dataclass
class OutLabel:
    """One label on the target slide (level-0 px)."""

    x: float
    y: float
    cls: str  # SlideRunner class name
    measurements: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    contour: np.ndarray | None = None  # (K, 2) level-0 px
    flagged: bool = False


def check_out_dir(out: str | os.PathLike[str]) -> Path:
    """The output directory must be creatable (its parent exists) or an existing directory."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise OutputError(f"{p} exists and is not a directory; choose another --out")
    parent = p if p.exists() else p.parent
    if not parent.exists():
        raise OutputError(f"the parent of --out {p} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{parent} is not writable; choose another --out")
    return p


def _stem(name: str) -> str:
    """The file stem the review app looks for (``<stem>.geojson``), ``.ome.tiff`` included."""
    base = Path(name).name
    for suffix in (".ome.tiff", ".ome.tif"):
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return Path(base).stem or base


def _description(lab: OutLabel) -> str:
    parts = []
    for k, v in lab.measurements.items():
        parts.append(f"{k}={'nan' if not math.isfinite(float(v)) else f'{float(v):.4f}'}")
    parts += [f"{k}={v}" for k, v in lab.notes.items()]
    return " ".join(parts)


def _feature(lab: OutLabel, mpp: float) -> dict[str, Any]:
    geom: dict[str, Any] = {"type": "Point", "coordinates": [round(lab.x, 2), round(lab.y, 2)]}
    if lab.contour is not None and len(lab.contour) >= 3:
        ring = np.round(np.asarray(lab.contour, dtype=np.float64), 2).tolist()
        if ring[0] != ring[-1]:
            ring.append(list(ring[0]))
        geom = {"type": "Polygon", "coordinates": [ring]}
    meas = {k: round(float(v), 6) for k, v in lab.measurements.items() if math.isfinite(float(v))}
    meas["x_um"] = round(lab.x * mpp, 3)
    meas["y_um"] = round(lab.y * mpp, 3)
    props: dict[str, Any] = {
        "objectType": "annotation",
        "classification": {"name": lab.cls, "color": _RGB.get(lab.cls, [0, 0, 255])},
        "measurements": meas,
    }
    if lab.notes:
        props["notes"] = dict(lab.notes)
    if lab.flagged:
        props["flagged"] = True
    return {"type": "Feature", "id": str(uuid.uuid4()), "geometry": geom, "properties": props}


def write_transfer_outputs(
    out: str | os.PathLike[str],
    *,
    target: Any,
    labels: list[OutLabel],
    report: dict[str, Any],
    command: str,
) -> dict[str, Path]:
    """Write the database, GeoJSON, review queue and report for labels on ``target`` (an open
    slide reader); returns the written paths by kind."""
    from ..io.atomic import atomic_path, atomic_write_text
    from ..io.sliderunner import SlideRunnerDB

    info = target.info
    out_dir = check_out_dir(out)
    out_dir.mkdir(exist_ok=True)
    stem = _stem(info.path.name)
    paths = {
        "database": out_dir / "mitoscope.sqlite",
        "geojson": out_dir / f"{stem}.geojson",
        "queue": out_dir / "review_queue.json",
        "report": out_dir / f"{stem}.{command}.json",
    }
    with atomic_path(paths["database"]) as tmp:
        with SlideRunnerDB(tmp) as db:
            slide = db.add_labels(
                info.path.name,
                width=info.width,
                height=info.height,
                directory=str(info.path.parent.resolve()),
                classes=[lab.cls for lab in labels],
                x_px=[lab.x for lab in labels],
                y_px=[lab.y for lab in labels],
                descriptions=[_description(lab) for lab in labels],
                colors=COLORS,
            )
        con = sqlite3.connect(str(tmp))
        try:  # annotation uids in insertion order = label order
            rows = con.execute("SELECT uid FROM Annotations WHERE slide = ? ORDER BY uid", (slide,))
            uids = [int(r[0]) for r in rows]
        finally:
            con.close()
    fc = {"type": "FeatureCollection", "features": [_feature(lab, info.mpp) for lab in labels]}
    atomic_write_text(paths["geojson"], json.dumps(fc, separators=(",", ":")) + "\n")
    order = [u for u, lab in zip(uids, labels, strict=True) if lab.flagged]
    order += [u for u, lab in zip(uids, labels, strict=True) if not lab.flagged]
    queue = {
        "version": 1,
        "note": f"mitoscope curate {command}: flagged labels first",
        "items": [{"db": "mitoscope.sqlite", "annotation": u} for u in order],
    }
    atomic_write_text(paths["queue"], json.dumps(queue, indent=1) + "\n")
    report = dict(report, outputs={k: v.name for k, v in paths.items()})
    atomic_write_text(paths["report"], json.dumps(report, indent=2) + "\n")
    return paths


__all__ = ["COLORS", "IGNORE", "OutLabel", "check_out_dir", "write_transfer_outputs"]
