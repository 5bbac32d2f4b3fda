"""Tiny review runs for the review tests: a synthetic H&E PNG, its SlideRunner database (as
``mitoscope detect`` writes it), a summary.json and outlines in a GeoJSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import synthetic_he
from mitoscope.io.sliderunner import SlideRunnerDB
from mitoscope.types import Detections

PROBS = (0.95, 0.52, 0.81, 0.47, 0.66, 0.99)


def make_run(
    root: Path, *, slide_name: str = "slide.png", probs: tuple[float, ...] = PROBS, size: int = 400
) -> tuple[Path, Path]:
    """(run dir, slides dir) with one slide and ``len(probs)`` detections (threshold 0.5)."""
    slides = root / "slides"
    run = root / "run"
    slides.mkdir(parents=True, exist_ok=True)
    run.mkdir(parents=True, exist_ok=True)
    Image.fromarray(synthetic_he(size, size, seed=3)).save(slides / slide_name)
    n = len(probs)
    xs = np.linspace(60, size - 60, n)
    ys = np.linspace(size - 80, 80, n)
    dets = Detections(
        x_px=xs, y_px=ys, mf_probability=np.array(probs), atypical_probability=np.full(n, 0.1),
        area_um2=np.full(n, 20.0),
    )  # fmt: skip
    with SlideRunnerDB(run / "mitoscope.sqlite") as db:
        db.add_slide(
            slide_name, width=size, height=size, directory=str(slides), detections=dets,
            threshold=0.3,
        )  # fmt: skip
    stem = Path(slide_name).stem
    summary = {
        "slide": slide_name, "mpp": 0.25, "threshold": 0.5,
        "hotspot_2mm2": {"center_px": [float(xs[-1]), float(ys[-1])], "radius_um": 10.0},
    }  # fmt: skip
    (run / f"{stem}.summary.json").write_text(json.dumps(summary))
    feats = []
    for x, y in zip(xs, ys, strict=True):
        ring = [[x + 8 * np.cos(t), y + 6 * np.sin(t)] for t in np.linspace(0, 2 * np.pi, 12)]
        feats.append(
            {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
             "properties": {}}
        )  # fmt: skip
    (run / f"{stem}.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": feats})
    )
    return run, slides
